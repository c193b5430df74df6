"""Shared helpers for the benchmark scripts: result files and machine facts."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fmnist.devices import environment, select_device  # noqa: E402


def device_tag(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def write_result(stem: str, device: torch.device, payload: dict[str, Any],
                 folder: Path = RESULTS) -> Path:
    """Write ``<folder>/<stem>-<device>.json`` (default: results/) with the machine and a
    timestamp."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{device_tag(device)}.json"
    doc = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
           "command": " ".join(["python", *sys.argv]),
           "machine": environment(device), **payload}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


__all__ = ["RESULTS", "write_result", "device_tag", "select_device"]
