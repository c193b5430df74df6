"""`fmnist train` as a user runs it, in a fresh process: nothing that only the report,
the benchmarks or export use is imported before training starts, and the report is
written at the end, from the model and data still in memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_report import PLOTS, SECTIONS

# fmnist train, with training.fit wrapped to print what is imported when training starts
TRAIN = """
import sys
import fmnist.training as T
from fmnist.cli import main

HEAVY = ("matplotlib", "scipy", "sklearn", "PIL", "onnx", "onnxruntime", "fastapi")
real_fit = T.fit

def fit(*args, **kwargs):
    print("imported before training:", sorted(m for m in HEAVY if m in sys.modules))
    return real_fit(*args, **kwargs)

T.fit = fit
sys.exit(main(sys.argv[1:]))
"""


def test_train_imports_nothing_heavy_before_training_and_writes_the_report(
        learnable_csv_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--recipe", "fast", "--model", "baseline-small", "--epochs", "1",
            "--batch-size", "64", "--train-limit", "600", "--data-dir", str(learnable_csv_dir),
            "--out", str(run), "--device", "cpu"]
    out = subprocess.run([sys.executable, "-c", TRAIN, *args], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "imported before training: []" in out.stdout, out.stdout
    assert "test accuracy" in out.stdout and "(fast, 1 epoch, " in out.stdout
    # after the last epoch, each silent phase says what it is doing (fast: 2 TTA views)
    phases = [line for line in out.stderr.replace("\r", "\n").splitlines()
              if line.startswith(("fmnist: calibrating", "fmnist: evaluating",
                                  "fmnist: report written"))]
    assert len(phases) == 3, phases
    assert phases[0].startswith("fmnist: calibrating on "), phases
    assert phases[0].endswith(" held-out images, 2 views each"), phases
    assert phases[1] == "fmnist: evaluating the 500 test images, 2 views each", phases
    assert phases[2].startswith("fmnist: report written to "), phases
    page = (run / "report.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert "Temperature " in page  # the calibrated run's before/after reliability
    for name in (*PLOTS[:-5], "reliability_before", "reliability_after", *PLOTS[-4:]):
        assert (run / "plots" / f"{name}.png").is_file(), name
