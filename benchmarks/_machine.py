"""Machine details printed by every benchmark (shared by the scripts here)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import skdknn

__all__ = ["cpu_model", "load_average", "skdknn_revision"]


def cpu_model() -> str:
    """CPU model from /proc/cpuinfo where present, else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    """1, 5 and 15 minute load averages: other processes sharing the cores."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):  # not available on Windows
        return "unknown"


def skdknn_revision() -> str:
    """skdknn's version, with the git commit when run from a checkout."""
    root = Path(skdknn.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return skdknn.__version__
    commit = out.stdout.strip()
    return f"{skdknn.__version__} (git {commit})" if commit else skdknn.__version__
