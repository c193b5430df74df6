"""Device and precision choice, and a record of the machine a result came from."""

from __future__ import annotations

import os
import platform
import subprocess
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError


def select_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; otherwise the named device, checked."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu.")
    return device


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checker = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool((checker and checker()) or (amx and amx()))
    return False


def use_bf16(device: torch.device, precision: str) -> bool:
    """Whether to train/infer under bf16 autocast for a recipe's ``precision`` setting."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    return bf16_supported(device)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when enabled, else a no-op context."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, machine and device facts for config.json and benchmark results."""
    import numpy

    from . import __version__

    env: dict[str, Any] = {
        "fmnist": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "bf16_supported": bf16_supported(device),
        "git_sha": git_sha(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
