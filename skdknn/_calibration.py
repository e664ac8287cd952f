"""The class-balanced split of the training data into index and calibration rows."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from numpy.typing import NDArray

__all__ = ["balanced_calibration_split"]


def _per_class_sizes(total: int, n_classes: int, rng: np.random.RandomState) -> NDArray:
    """Split ``total`` into ``n_classes`` sizes differing by at most one."""
    sizes = np.full(n_classes, total // n_classes)
    # the remainder goes to randomly chosen classes, not always the first ones
    sizes[rng.permutation(n_classes)[: total % n_classes]] += 1
    return sizes


def balanced_calibration_split(
    y: NDArray[np.intp],
    calibration_size: float,
    rng: np.random.RandomState,
    classes: NDArray | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Hold out a class-balanced calibration set.

    Parameters
    ----------
    y : ndarray of int, shape (n_samples,)
        Encoded labels ``0 .. C - 1``.
    calibration_size : int or float
        Number of calibration points (int), or fraction of the samples (float in
        (0, 1)). Split as evenly as possible between the classes (750 points over 10
        classes gives 75 per class, as in the DkNN paper).
    rng : numpy.random.RandomState
        Source of randomness.
    classes : ndarray, default=None
        The user's class labels, only to name a class in error messages.

    Returns
    -------
    index_rows, calibration_rows : ndarray of int
        Sorted row indices of the points to index and of the calibration points.

    Raises
    ------
    ValueError
        When the calibration set would be empty, would not leave every class at
        least one indexed point, or a class has too few samples for its share.
    """
    n_samples = y.shape[0]
    n_classes = int(y.max()) + 1
    if isinstance(calibration_size, Integral):
        total = int(calibration_size)
    else:
        total = int(np.floor(calibration_size * n_samples))
    if total < 1:
        raise ValueError(
            f"calibration_size={calibration_size!r} leaves no calibration point for "
            f"{n_samples} samples; use a larger size."
        )
    if total >= n_samples:
        raise ValueError(
            f"calibration_size={calibration_size!r} asks for {total} calibration "
            f"points but there are only {n_samples} samples; the calibration set must "
            "leave samples for the neighbour indexes."
        )
    sizes = _per_class_sizes(total, n_classes, rng)
    counts = np.bincount(y, minlength=n_classes)
    short = np.flatnonzero(counts <= sizes)
    if short.size:
        j = int(short[0])
        name = np.asarray(classes)[j].tolist() if classes is not None else j
        raise ValueError(
            f"Class {name!r} has {counts[j]} samples, too few for its share of "
            f"{sizes[j]} class-balanced calibration points plus at least one indexed "
            f"point; lower calibration_size (now {calibration_size!r}) or add samples."
        )
    calibration = np.concatenate(
        [
            rng.choice(np.flatnonzero(y == j), size=sizes[j], replace=False)
            for j in range(n_classes)
        ]
    )
    mask = np.zeros(n_samples, dtype=bool)
    mask[calibration] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)
