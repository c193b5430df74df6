"""fmnist ensemble: two tiny trained runs averaged into one run folder that evaluate, report,
export (one ONNX graph, int8 too), predict and serve take like a single run; bad member
lists refused with one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.checkpoints import load_model, read_model_file, save_model
from fmnist.cli import main
from fmnist.ensemble import EnsembleNet, build_ensemble
from fmnist.errors import ConfigError
from fmnist.evaluation import predict_probs
from fmnist.models import create_model, list_models
from fmnist.runs import evaluate_run, read_config
from fmnist.training import train

TINY = dict(model="baseline-small", optimizer="adam", lr=3e-3, epochs=1, batch_size=64,
            train_limit=600, augment=[], precision="fp32")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, learnable_dataset) -> list[Path]:
    """Two tiny runs on the learnable data, different seeds (so different models)."""
    root = tmp_path_factory.mktemp("members")
    for seed in (0, 1):
        train(data=learnable_dataset, out=root / f"m{seed}", seed=seed, **TINY)
    return [root / "m0", root / "m1"]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, members, learnable_dataset) -> Path:
    out = tmp_path_factory.mktemp("ens") / "ens"
    build_ensemble(members, out, data=learnable_dataset, device="cpu")
    return out


def _images(ds, n: int = 200) -> np.ndarray:
    return ds.test.images[:n]


def test_probabilities_are_the_mean_of_the_members_tempered_ones(
        members, ensemble_dir, learnable_dataset) -> None:
    images = _images(learnable_dataset)
    expected = []
    for run in members:
        model, meta = load_model(run)
        assert meta.temperature_for(False) != 1.0  # calibrated members: the test means it
        expected.append(predict_probs(model, images, mean=meta.mean, std=meta.std,
                                      temperature=meta.temperature_for(False)))
    model, meta = load_model(ensemble_dir)
    got = predict_probs(model, images, mean=meta.mean, std=meta.std,
                        temperature=meta.temperature_for(False))
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-5)
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # two different members


def test_run_folder_records_members_and_test_metrics(members, ensemble_dir) -> None:
    config = read_config(ensemble_dir)
    info = config["ensemble"]
    assert [Path(r["run"]) for r in info["members"]] == [m.absolute() for m in members]
    assert info["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in
                                                      info["members"]), abs=1e-3)
    assert info["train_seconds"] > 0
    assert config["recipe"]["model"] == "ensemble"
    state, meta = read_model_file(ensemble_dir / "model.pt")
    assert meta.arch == "ensemble" and len(meta.arch_kwargs["members"]) == 2
    assert meta.metrics["test_acc"] > 0.5  # the learnable data: members learn it in an epoch
    assert "ensemble" not in list_models()  # built by `fmnist ensemble`, not trained


def test_evaluate_report_export_predict_serve_take_the_ensemble(
        ensemble_dir, learnable_csv_dir, learnable_dataset, tmp_path) -> None:
    from fmnist.export import export_onnx, onnx_probs, onnx_session
    from fmnist.inference import Predictor
    from fmnist.report import write_report

    m = evaluate_run(ensemble_dir, data_dir=learnable_csv_dir, device="cpu", write=False)
    assert m["accuracy"] == pytest.approx(read_model_file(ensemble_dir / "model.pt")[1]
                                          .metrics["test_acc"])
    assert write_report(ensemble_dir, dataset=learnable_dataset, device="cpu").is_file()
    r = export_onnx(ensemble_dir, tmp_path / "ens.onnx", dataset=learnable_dataset,
                    quantize="int8")
    assert r.agreement >= 0.999 and r.accuracy_int8 is not None
    model, meta = load_model(ensemble_dir)
    images = _images(learnable_dataset)
    torch_p = predict_probs(model, images, mean=meta.mean, std=meta.std)
    np.testing.assert_allclose(onnx_probs(onnx_session(r.path), images), torch_p, atol=1e-4)
    for source in (ensemble_dir, r.path):
        top = Predictor.from_path(source, device="cpu").predict_top_k(images[:8])
        assert [t[0][0] for t in top] == [meta.classes[i] for i in torch_p[:8].argmax(1)]
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fmnist.serve import create_app

    with TestClient(create_app(ensemble_dir, device="cpu")) as client:
        assert client.get("/api/model").status_code == 200


def test_cli_prints_members_and_the_ensemble(members, learnable_csv_dir, tmp_path,
                                             capsys) -> None:
    out = tmp_path / "cli-ens"
    argv = ["ensemble", *map(str, members), "--out", str(out), "--data-dir",
            str(learnable_csv_dir), "--device", "cpu"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ensemble" in text and str(out) in text and "%" in text
    assert (out / "metrics.json").is_file()
    assert main(argv) == 2  # the folder now holds a run: refused, not replaced
    assert "not empty" in capsys.readouterr().err


def _copy_with(run: Path, dst: Path, **meta_changes) -> Path:
    """A copy of ``run`` whose model.pt says something else (other classes, channels)."""
    shutil.copytree(run, dst)
    state, meta = read_model_file(dst / "model.pt")
    changes = dict(meta_changes)
    model = create_model(meta.arch, num_classes=len(changes.get("classes", meta.classes)),
                         in_channels=changes.pop("in_channels", 1))
    if model.state_dict().keys() == state.keys() and all(
            model.state_dict()[k].shape == v.shape for k, v in state.items()):
        model.load_state_dict(state)
    meta = type(meta).from_dict({**meta.to_dict(), **changes,
                                 "arch_kwargs": model.arch_kwargs})
    save_model(dst / "model.pt", model, meta)
    return dst


@pytest.mark.parametrize("case", ["one", "missing", "classes", "channels", "dataset"])
def test_bad_member_lists_are_refused_with_one_line(case, members, tmp_path, capsys) -> None:
    runs = [str(m) for m in members]
    if case == "one":
        runs, expected = runs[:1], "at least 2 runs"
    elif case == "missing":
        runs, expected = [runs[0], str(tmp_path / "nope")], "no such run folder"
    elif case == "classes":
        other = _copy_with(members[1], tmp_path / "c", classes=tuple("abcdefghij"))
        runs, expected = [runs[0], str(other)], "classes differ"
    elif case == "channels":
        other = _copy_with(members[1], tmp_path / "rgb", in_channels=3)
        runs, expected = [runs[0], str(other)], "input channels"
    else:
        other = tmp_path / "d"
        shutil.copytree(members[1], other)
        cfg = read_config(other)
        cfg["dataset"]["sha256"]["test_images"] = "0" * 64
        (other / "config.json").write_text(__import__("json").dumps(cfg))
        runs, expected = [runs[0], str(other)], "dataset differ"
    out = tmp_path / "ens"
    assert main(["ensemble", *runs, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing written for a refused list


def test_ensemble_net_needs_two_members_and_returns_log_mean_probs() -> None:
    torch.manual_seed(0)
    nets = [create_model("baseline-small").eval() for _ in range(2)]
    with pytest.raises(ConfigError, match="at least 2"):
        EnsembleNet(nets[:1], [1.0])
    ens = EnsembleNet(nets, [1.0, 2.0]).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        want = (torch.softmax(nets[0](x), 1) + torch.softmax(nets[1](x) / 2.0, 1)) / 2
        torch.testing.assert_close(torch.softmax(ens(x), 1), want)
    with pytest.raises(ConfigError, match="at least 2"):
        create_model("ensemble")
