"""No import cycle: every module of fmnist imports on its own in a fresh interpreter, first
and after all the others in reverse order, so a circle of top-level imports fails here."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import fmnist

SRC = Path(fmnist.__file__).parent


def _modules() -> list[str]:
    names = ["fmnist"]
    for info in pkgutil.walk_packages([str(SRC)], prefix="fmnist."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def _import(names: list[str]) -> subprocess.CompletedProcess:
    code = f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_every_module_is_listed() -> None:
    assert {"fmnist.runs", "fmnist.training", "fmnist.report", "fmnist.evaluation",
            "fmnist.serve.app"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_alone(name: str) -> None:
    out = _import([name])
    assert out.returncode == 0, out.stderr[-2000:]


def test_all_modules_import_in_reverse_order() -> None:
    out = _import(MODULES[::-1])
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    """The check can fail: two modules importing each other's names at top level."""
    pkg = tmp_path / "circle"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n\ndef f():\n    return 1\n")
    (pkg / "b.py").write_text("from .a import f\n\ndef g():\n    return 2\n")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import circle.a"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "ImportError" in out.stderr


def test_light_modules_do_not_import_torch() -> None:
    """The run folder and the datasets stay free of torch: `fmnist runs` and `fmnist data`
    start fast."""
    code = ("import sys, fmnist.runs, fmnist.datasets, fmnist.fileio; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
