"""Conformal maths of the Deep k-Nearest Neighbours (DkNN) as pure functions.

These functions implement Papernot & McDaniel (2018), "Deep k-Nearest Neighbors:
Towards Confident, Interpretable and Robust Deep Learning", Algorithm 1, on plain
arrays so that each step can be checked against numbers computed by hand.

Notation (see ``docs/dknn.md``): ``n`` queries, ``L`` layers, ``k`` neighbours per
layer and ``C`` classes; ``counts[i, l, j]`` is the number of the ``k`` neighbours of
query ``i`` in layer ``l`` whose label is ``j``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "calibration_scores",
    "confidence",
    "credibility",
    "neighbor_label_counts",
    "neighbor_proba",
    "nonconformity",
    "p_values",
    "predict_from_counts",
    "prediction_sets",
]


def neighbor_label_counts(
    neighbor_labels: ArrayLike, n_classes: int
) -> NDArray[np.int64]:
    """Count the labels of the neighbours of each query in each layer.

    Parameters
    ----------
    neighbor_labels : array-like of int, shape (n_queries, n_layers, n_neighbors)
        Encoded labels (``0 .. n_classes - 1``) of the neighbours.
    n_classes : int
        Number of classes ``C``.

    Returns
    -------
    counts : ndarray of int64, shape (n_queries, n_layers, n_classes)
        ``counts[i, l, j]`` = n_{l,j}(x_i), the number of neighbours with label ``j``.

    Examples
    --------
    >>> neighbor_label_counts([[[0, 0, 1], [2, 2, 2]]], n_classes=3)
    array([[[2, 1, 0],
            [0, 0, 3]]])
    """
    labels = np.asarray(neighbor_labels)
    if labels.ndim != 3:
        raise ValueError(
            "neighbor_labels must have shape (n_queries, n_layers, n_neighbors); "
            f"got an array with {labels.ndim} dimension(s)."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"neighbor_labels must be encoded as integers in [0, {n_classes - 1}]."
        )
    n, n_layers, _ = labels.shape
    # Offsetting each (query, layer) row by a multiple of C turns the per-row
    # histograms into one bincount over the flattened array.
    offsets = np.arange(n * n_layers, dtype=np.int64).reshape(n, n_layers, 1)
    flat = (labels.astype(np.int64) + offsets * n_classes).ravel()
    counts = np.bincount(flat, minlength=n * n_layers * n_classes)
    return counts.reshape(n, n_layers, n_classes)


def _check_counts(counts: ArrayLike) -> NDArray[np.int64]:
    counts_arr = np.asarray(counts, dtype=np.int64)
    if counts_arr.ndim != 3:
        raise ValueError(
            "counts must have shape (n_queries, n_layers, n_classes); got an array "
            f"with {counts_arr.ndim} dimension(s)."
        )
    return counts_arr


def nonconformity(counts: ArrayLike, n_neighbors: int) -> NDArray[np.int64]:
    """Nonconformity of every candidate label: alpha_j(x) = sum_l (k - n_{l,j}(x)).

    Parameters
    ----------
    counts : array-like of int, shape (n_queries, n_layers, n_classes)
        Neighbour label counts from :func:`neighbor_label_counts`.
    n_neighbors : int
        Number of neighbours ``k`` per layer.

    Returns
    -------
    alpha : ndarray of int64, shape (n_queries, n_classes)

    Examples
    --------
    Two layers, k = 3: layer 1 has labels (0, 0, 1), layer 2 has (0, 1, 1).

    >>> nonconformity([[[2, 1], [1, 2]]], n_neighbors=3)
    array([[3, 3]])
    """
    counts_arr = _check_counts(counts)
    n_layers = counts_arr.shape[1]
    return n_layers * int(n_neighbors) - counts_arr.sum(axis=1)


def calibration_scores(counts: ArrayLike, y: ArrayLike, n_neighbors: int) -> NDArray:
    """Nonconformity of the true label of each calibration point: alpha_y(x).

    Zero scores (all neighbours in every layer agree with the label) are kept, as in
    the paper's definition.

    Parameters
    ----------
    counts : array-like of int, shape (n_calibration, n_layers, n_classes)
        Neighbour label counts of the calibration points.
    y : array-like of int, shape (n_calibration,)
        Encoded true labels of the calibration points.
    n_neighbors : int
        Number of neighbours ``k`` per layer.

    Returns
    -------
    scores : ndarray of int64, shape (n_calibration,)
        Sorted in increasing order (the form :func:`p_values` searches).

    Examples
    --------
    >>> counts = [[[3, 0]], [[1, 2]], [[0, 3]]]
    >>> calibration_scores(counts, y=[0, 0, 1], n_neighbors=3)
    array([0, 0, 2])
    """
    alpha = nonconformity(counts, n_neighbors)
    y_arr = np.asarray(y, dtype=np.int64)
    if y_arr.shape != (alpha.shape[0],):
        raise ValueError(
            f"y must have shape ({alpha.shape[0]},) to match counts; got {y_arr.shape}."
        )
    if y_arr.size and (y_arr.min() < 0 or y_arr.max() >= alpha.shape[1]):
        raise ValueError(f"y must be encoded as integers in [0, {alpha.shape[1] - 1}].")
    return np.sort(alpha[np.arange(alpha.shape[0]), y_arr])


def p_values(alpha: ArrayLike, calibration: ArrayLike) -> NDArray[np.float64]:
    """Empirical p-values: p_j(x) = |{a in A : a >= alpha_j(x)}| / |A|.

    Parameters
    ----------
    alpha : array-like, shape (n_queries, n_classes)
        Nonconformity of every candidate label, from :func:`nonconformity`.
    calibration : array-like, shape (n_calibration,)
        Calibration nonconformity scores ``A`` (need not be sorted).

    Returns
    -------
    p : ndarray of float64, shape (n_queries, n_classes)

    Examples
    --------
    With A = {0, 0, 2, 5}: a label with alpha = 2 is matched or exceeded by two of the
    four scores (``>=``), alpha = 0 by all four and alpha = 6 by none.

    >>> p_values([[2, 0, 6]], calibration=[5, 0, 2, 0])
    array([[0.5, 1. , 0. ]])
    """
    scores = np.sort(np.asarray(calibration).ravel())
    if scores.size == 0:
        raise ValueError("calibration must hold at least one nonconformity score.")
    alpha_arr = np.asarray(alpha)
    # number of scores strictly below alpha; the rest are >= alpha
    below = np.searchsorted(scores, alpha_arr, side="left")
    return (scores.size - below) / scores.size


def predict_from_counts(counts: ArrayLike) -> NDArray[np.intp]:
    """Encoded DkNN prediction: the class with most neighbours over all layers.

    This is argmax_j p_j(x) (p-values are non-increasing in alpha_j, which is
    decreasing in the total count). Ties go to the class with the lowest index, which
    is also ``np.argmax`` of :func:`neighbor_proba`.

    Parameters
    ----------
    counts : array-like of int, shape (n_queries, n_layers, n_classes)

    Returns
    -------
    y_pred : ndarray of int, shape (n_queries,)

    Examples
    --------
    >>> predict_from_counts([[[2, 1], [1, 2]], [[0, 3], [1, 2]]])
    array([0, 1])
    """
    return _check_counts(counts).sum(axis=1).argmax(axis=1)


def neighbor_proba(counts: ArrayLike) -> NDArray[np.float64]:
    """Layer-averaged neighbour label distribution: (1 / (L k)) sum_l n_{l,j}(x).

    Parameters
    ----------
    counts : array-like of int, shape (n_queries, n_layers, n_classes)

    Returns
    -------
    proba : ndarray of float64, shape (n_queries, n_classes)
        Rows sum to one.

    Examples
    --------
    >>> neighbor_proba([[[2, 1, 0], [0, 0, 3]]])
    array([[0.33333333, 0.16666667, 0.5       ]])
    """
    totals = _check_counts(counts).sum(axis=1).astype(np.float64)
    return totals / totals.sum(axis=1, keepdims=True)


def _check_p_values(p: ArrayLike) -> NDArray[np.float64]:
    p_arr = np.asarray(p, dtype=np.float64)
    if p_arr.ndim != 2 or p_arr.shape[1] < 2:
        raise ValueError(
            "p-values must have shape (n_queries, n_classes) with at least 2 classes; "
            f"got shape {p_arr.shape}."
        )
    return p_arr


def credibility(p: ArrayLike) -> NDArray[np.float64]:
    """Credibility of the prediction: the largest p-value, max_j p_j(x).

    Examples
    --------
    >>> credibility([[0.5, 1.0, 0.0], [0.25, 0.0, 0.25]])
    array([1.  , 0.25])
    """
    return _check_p_values(p).max(axis=1)


def confidence(p: ArrayLike) -> NDArray[np.float64]:
    """Confidence of the prediction: one minus the second largest p-value.

    Examples
    --------
    >>> confidence([[0.5, 1.0, 0.0], [0.25, 0.0, 0.25]])
    array([0.5 , 0.75])
    """
    p_arr = _check_p_values(p)
    second = np.partition(p_arr, -2, axis=1)[:, -2]
    return 1.0 - second


def prediction_sets(p: ArrayLike, significance: float) -> NDArray[np.bool_]:
    """Conformal prediction sets {j : p_j(x) > significance}.

    On exchangeable data the set holds the true label with probability at least
    ``1 - significance - 1 / (|A| + 1)``.

    Parameters
    ----------
    p : array-like, shape (n_queries, n_classes)
        p-values from :func:`p_values`.
    significance : float in [0, 1]
        Significance level epsilon.

    Returns
    -------
    sets : ndarray of bool, shape (n_queries, n_classes)
        ``sets[i, j]`` is True when class ``j`` is in the set of query ``i``.

    Examples
    --------
    >>> prediction_sets([[0.5, 1.0, 0.0]], significance=0.5)
    array([[False,  True, False]])
    """
    if not 0.0 <= float(significance) <= 1.0:
        raise ValueError(f"significance must be in [0, 1]; got {significance!r}.")
    return np.asarray(p) > significance
