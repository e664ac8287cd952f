"""The command line's engine: ``skdknn report``, ``train``, ``attack``, ``explain``."""

from ._commands import ATTACKS, attack, explain, train
from ._config import DATASETS, ReportConfig
from ._run import run_report

__all__ = [
    "ATTACKS",
    "DATASETS",
    "ReportConfig",
    "attack",
    "explain",
    "run_report",
    "train",
]
