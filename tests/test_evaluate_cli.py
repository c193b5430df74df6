"""``fmnist evaluate`` and ``fmnist runs`` on small trained runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist.cli import main
from fmnist.runs import COLUMNS, evaluate_run, list_runs
from fmnist.training import read_history, train

METRIC_KEYS = ("accuracy", "loss", "top2_accuracy", "ece", "per_class", "confusion_matrix",
               "most_confused", "reliability", "seconds")


@pytest.fixture(scope="module")
def runs_root(learnable_dataset, tmp_path_factory) -> Path:
    """Two tiny runs: ``with-val`` (20% validation, 2 epochs) and ``no-val`` (1 epoch)."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(data=learnable_dataset, model="baseline-small", optimizer="adam", lr=2e-3,
                  augment=(), device="cpu")
    train(out=root / "with-val", epochs=2, val_fraction=0.2, **common)
    train(out=root / "no-val", epochs=1, **common)
    return root


def fmnist(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmnist", *args], capture_output=True,
                          text=True, timeout=120)


def test_evaluate_writes_complete_metrics_and_prints_report(runs_root: Path) -> None:
    run = runs_root / "with-val"
    trained = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    res = fmnist("evaluate", str(run), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics, key
    assert metrics["split"] == "test" and metrics["n"] == 500
    assert len(metrics["confusion_matrix"]) == 10
    # same model, same data, same precision: the numbers training wrote, up to one image:
    # another process may use another thread count, and a near-tie image can flip (seen
    # on a loaded machine: 0.760 against 0.762 with the losses equal to 1e-5)
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"], abs=1 / metrics["n"] + 1e-9)
    # another process: bf16 kernels may sum in another order (observed: 1.3e-7 relative)
    assert metrics["loss"] == pytest.approx(trained["loss"], rel=1e-5)
    out = res.stdout
    assert "precision" in out and "recall" in out and "f1-score" in out
    for name in ("T-shirt/top", "Ankle boot", "macro avg", "weighted avg"):
        assert name in out
    assert f"accuracy {metrics['accuracy']:.2%}" in out
    assert "ECE" in out and "top-2" in out


def test_evaluate_val_split_recreates_training_split(runs_root: Path) -> None:
    run = runs_root / "with-val"
    before = (run / "metrics.json").read_text() if (run / "metrics.json").exists() else None
    # --no-tta: training's per-epoch validation has no TTA, whatever the recipe says
    res = fmnist("evaluate", str(run), "--split", "val", "--device", "cpu", "--no-tta")
    assert res.returncode == 0, res.stderr
    assert "val split" in res.stdout
    val = json.loads((run / "metrics-val.json").read_text())
    assert val["split"] == "val"
    assert val["n"] == 400  # 20% of the 2,000 training images
    # the last epoch's validation accuracy was measured on the same images
    assert val["accuracy"] == pytest.approx(read_history(run)[-1]["val_acc"])
    after = (run / "metrics.json").read_text() if (run / "metrics.json").exists() else None
    assert after == before  # test metrics untouched


def test_evaluate_val_without_validation_split(runs_root: Path, capsys) -> None:
    assert main(["evaluate", str(runs_root / "no-val"), "--split", "val",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "without a validation split" in err


def test_evaluate_bad_run_path(tmp_path: Path) -> None:
    res = fmnist("evaluate", str(tmp_path / "nope"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "nope" in lines[0] and "Traceback" not in res.stderr


def test_evaluate_run_api_no_write(runs_root: Path) -> None:
    run = runs_root / "no-val"
    stamp = (run / "metrics.json").stat().st_mtime_ns
    m = evaluate_run(run, device="cpu", write=False)
    assert m["split"] == "test" and set(METRIC_KEYS) <= set(m)
    assert (run / "metrics.json").stat().st_mtime_ns == stamp


def test_list_runs(runs_root: Path) -> None:
    rows = {r["name"]: r for r in list_runs(runs_root)}
    assert set(rows) == {"with-val", "no-val"}
    assert rows["with-val"]["epochs"] == 2 and rows["no-val"]["epochs"] == 1
    assert rows["with-val"]["best_val_acc"] is not None
    assert rows["no-val"]["best_val_acc"] is None
    assert rows["no-val"]["status"] == "finished"
    assert rows["no-val"]["recipe"] == "fast"
    assert rows["no-val"]["params"] > 0 and rows["no-val"]["test_acc"] > 0
    for r in rows.values():
        assert set(COLUMNS) <= set(r)


def test_runs_command_sorts(runs_root: Path, capsys) -> None:
    assert main(["runs", str(runs_root), "--sort", "epochs"]) == 0
    out = capsys.readouterr().out
    assert out.index("no-val") < out.index("with-val")
    assert main(["runs", str(runs_root), "--sort", "epochs", "--reverse"]) == 0
    out = capsys.readouterr().out
    assert out.index("with-val") < out.index("no-val")
    assert main(["runs", str(runs_root), "--sort", "name", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["no-val", "with-val"]


def test_runs_bad_column(runs_root: Path, capsys) -> None:
    assert main(["runs", str(runs_root), "--sort", "speed"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'speed'" in err
    for column in COLUMNS:
        assert column in err
