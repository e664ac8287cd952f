"""The split of the training data into index and calibration rows.

Two splits: class-balanced (the DkNN paper: the same count per class) and
stratified (proportional to the class frequencies, so that the calibration set
is distributed like the training data and, on exchangeable data, like the test
data). :func:`label_shift` measures how far the calibration set's class
frequencies are from the training set's: the most by which the marginal coverage
of the prediction sets can miss its guarantee on data distributed like the
training set.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedShuffleSplit

__all__ = [
    "CALIBRATION_SPLITS",
    "IMBALANCE_THRESHOLD",
    "balanced_calibration_split",
    "class_imbalance",
    "label_shift",
    "stratified_calibration_split",
]

#: Values of ``DeepKNNClassifier(calibration_split=...)``.
CALIBRATION_SPLITS = ("balanced", "stratified")

#: Classes whose :func:`class_imbalance` exceeds this are "imbalanced": with a
#: balanced calibration set, the coverage may be off by more than 5 points.
IMBALANCE_THRESHOLD = 0.05


def _per_class_sizes(total: int, n_classes: int, rng: np.random.RandomState) -> NDArray:
    """Split ``total`` into ``n_classes`` sizes differing by at most one."""
    sizes = np.full(n_classes, total // n_classes)
    # the remainder goes to randomly chosen classes, not always the first ones
    sizes[rng.permutation(n_classes)[: total % n_classes]] += 1
    return sizes


def _count(n: int, noun: str) -> str:
    """``"1 sample"``, ``"3 samples"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
    total = _calibration_total(calibration_size, n_samples)
    sizes = _per_class_sizes(total, n_classes, rng)
    counts = np.bincount(y, minlength=n_classes)
    short = np.flatnonzero(counts <= sizes)
    if short.size:
        j = int(short[0])
        raise ValueError(
            f"Class {_name(j, classes)!r} has {_count(counts[j], 'sample')}, too few "
            "for its "
            f"share of {sizes[j]} class-balanced calibration points plus at least one "
            f"indexed point; lower calibration_size (now {calibration_size!r}) or add "
            "samples."
        )
    calibration = np.concatenate(
        [
            rng.choice(np.flatnonzero(y == j), size=sizes[j], replace=False)
            for j in range(n_classes)
        ]
    )
    return _complement(n_samples, calibration)


def stratified_calibration_split(
    y: NDArray[np.intp],
    calibration_size: float,
    rng: np.random.RandomState,
    classes: NDArray | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Hold out a calibration set with the class proportions of ``y``.

    The per-class counts are those of
    :class:`sklearn.model_selection.StratifiedShuffleSplit` (the class
    frequencies times the size, rounded so that they add up).

    Parameters
    ----------
    y : ndarray of int, shape (n_samples,)
        Encoded labels ``0 .. C - 1``.
    calibration_size : int or float
        Number of calibration points (int), or fraction of the samples (float in
        (0, 1)).
    rng : numpy.random.RandomState
        Source of randomness.
    classes : ndarray, default=None
        The user's class labels, only to name a class in error messages.

    Returns
    -------
    index_rows, calibration_rows : ndarray of int
        Sorted row indices of the points to index and of the calibration points.
        A class so rare that its share rounds to zero has no calibration point.

    Raises
    ------
    ValueError
        When the calibration set would be empty or hold fewer points than there
        are classes, would leave fewer indexed points than classes, or a class
        has a single sample (it cannot be both indexed and calibrated).
    """
    n_samples = y.shape[0]
    total = _calibration_total(calibration_size, n_samples)
    counts = np.bincount(y)
    n_classes = counts.size
    if counts.min() < 2:
        j = int(np.argmin(counts))
        raise ValueError(
            f"Class {_name(j, classes)!r} has {_count(counts[j], 'sample')}; "
            "calibration_split='stratified' needs at least 2 per class (to index "
            "and to calibrate). Use calibration_split='balanced' or add samples."
        )
    if min(total, n_samples - total) < n_classes:
        raise ValueError(
            f"calibration_size={calibration_size!r} splits {n_samples} samples into "
            f"{n_samples - total} indexed and {total} calibration points; "
            f"calibration_split='stratified' needs at least one point per class "
            f"({n_classes}) on each side."
        )
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=total, random_state=rng)
    _, calibration = next(splitter.split(np.zeros((n_samples, 1)), y))
    return _complement(n_samples, calibration)


def label_shift(y: NDArray[np.intp], calibration_rows: NDArray[np.intp]) -> float:
    """Total variation distance between the class frequencies of ``y`` and of the
    calibration rows: half the sum over classes of their absolute differences,
    computed exactly (in integers) and rounded to 12 decimal places.

    Prediction sets calibrated on one class mix and used on data with another
    (each class's inputs distributed alike) cover within this distance of the
    guarantee: the coverage is the class frequencies' average of the per-class
    coverages, and moving a share ``d`` of the mass changes it by at most ``d``.

    Examples
    --------
    A 90/10 training set calibrated on 50/50:

    >>> y = np.array([0] * 90 + [1] * 10)
    >>> label_shift(y, np.r_[0:5, 90:95])
    0.4
    """
    n_classes = int(y.max()) + 1
    train = np.bincount(y, minlength=n_classes)
    calibration = np.bincount(y[calibration_rows], minlength=n_classes)
    n, n_calibration = int(train.sum()), int(calibration.sum())
    # |a/n - b/m| = |a m - b n| / (n m): a sum of integers, then one division, so
    # the result is the exact distance correctly rounded (a float sum of the
    # frequencies depends on its summation order in the last bits, which the
    # rounding to 12 places does not always hide)
    gap = int(np.abs(train * n_calibration - calibration * n).sum())
    return round(gap / (2 * n * n_calibration), 12)


def class_imbalance(y: NDArray[np.intp]) -> float:
    """Total variation distance between the class frequencies of ``y`` and equal
    frequencies (those of a class-balanced calibration set), computed exactly
    and rounded to 12 decimal places.

    Unlike :func:`label_shift` of an actual balanced split, it ignores the
    rounding of small calibration sets (4 points over 3 classes are 2/1/1).

    Examples
    --------
    >>> class_imbalance(np.array([0] * 90 + [1] * 10))
    0.4
    """
    counts = np.bincount(y)
    n, n_classes = int(counts.sum()), counts.size
    # |c/n - 1/C| = |c C - n| / (n C): exact, as in label_shift
    gap = int(np.abs(counts * n_classes - n).sum())
    return round(gap / (2 * n * n_classes), 12)


def _calibration_total(calibration_size: float, n_samples: int) -> int:
    """Number of calibration points; raise unless it leaves some to index."""
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
    return total


def _complement(
    n_samples: int, calibration: NDArray[np.intp]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    mask = np.zeros(n_samples, dtype=bool)
    mask[calibration] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _name(j: int, classes: NDArray | None) -> object:
    # a plain Python value (not np.int64(1)), whatever the dtype of classes
    return np.asarray(classes)[[j]].tolist()[0] if classes is not None else j
