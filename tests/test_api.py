"""The top-level public API: everything reachable from `import fmnist`, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import fmnist


def test_import_is_light():
    code = "import sys, fmnist; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_public_name_resolves():
    for name in fmnist.__all__:
        assert getattr(fmnist, name) is not None, name
    assert fmnist.evaluate.__name__ == "evaluate_run"
    assert "fast" in fmnist.list_recipes() and "fashion-mnist" in fmnist.list_datasets()


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        fmnist.trian  # noqa: B018
