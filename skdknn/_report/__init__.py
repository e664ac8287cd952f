"""The command line's engine: ``skdknn report``, ``train``, ``attack``, ``explain``."""

from ._commands import ATTACKS, attack, explain, train
from ._config import DATASETS, NETS, SECTIONS, ReportConfig, parse_sections
from ._run import run_report

__all__ = [
    "ATTACKS",
    "DATASETS",
    "NETS",
    "SECTIONS",
    "ReportConfig",
    "attack",
    "explain",
    "parse_sections",
    "run_report",
    "train",
]
