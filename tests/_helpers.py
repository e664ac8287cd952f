"""Helpers shared by the test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from typing import Any

from skdknn import DeepKNNClassifier

TINY = dict(
    n_neighbors=5, calibration_size=40, max_epochs=10, batch_size=64, random_state=0
)


def tiny(**params: Any) -> DeepKNNClassifier:
    """A DkNN small enough to train in a second on tabular data (``TINY`` defaults,
    overridden by ``params``)."""
    return DeepKNNClassifier(**{**TINY, **params})


# a report of a few seconds: tiny data, 1 epoch, small k (the --quick eps values)
TINY_REPORT = [
    "--quick",
    "--epochs",
    "1",
    "--train-size",
    "600",
    "--test-size",
    "60",
    "--calibration-size",
    "100",
    "--n-neighbors",
    "10",
]
