"""Conformal maths of the Deep k-Nearest Neighbours (DkNN) as pure functions.

These functions implement Papernot & McDaniel (2018), "Deep k-Nearest Neighbors:
Towards Confident, Interpretable and Robust Deep Learning", Algorithm 1, on plain
arrays so that each step can be checked against numbers computed by hand.

Notation (see ``docs/dknn.md``): ``n`` queries, ``L`` layers, ``k`` neighbours per
layer and ``C`` classes; ``counts[i, l, j]`` is the number of the ``k`` neighbours of
query ``i`` in layer ``l`` whose label is ``j``.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.utils._param_validation import InvalidParameterError

#: The p-value forms of :func:`p_values` (``form=``).
P_VALUE_FORMS = ("dknn", "conformal", "smoothed")

__all__ = [
    "P_VALUE_FORMS",
    "calibration_scores",
    "confidence",
    "coverage_bound",
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


def calibration_scores(
    counts: ArrayLike, y: ArrayLike, n_neighbors: int, *, sort: bool = True
) -> NDArray:
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
    sort : bool, default=True
        Sort the scores in increasing order; if False, ``scores[i]`` is the score
        of the point ``i`` (to keep it with its label, e.g. for Mondrian p-values).

    Returns
    -------
    scores : ndarray of int64, shape (n_calibration,)

    Examples
    --------
    >>> counts = [[[3, 0]], [[1, 2]], [[0, 3]]]
    >>> calibration_scores(counts, y=[0, 0, 1], n_neighbors=3)
    array([0, 0, 2])
    >>> calibration_scores(counts, y=[0, 0, 1], n_neighbors=3, sort=False)
    array([0, 2, 0])
    """
    alpha = nonconformity(counts, n_neighbors)
    y_arr = np.asarray(y, dtype=np.int64)
    if y_arr.shape != (alpha.shape[0],):
        raise ValueError(
            f"y must have shape ({alpha.shape[0]},) to match counts; got {y_arr.shape}."
        )
    if y_arr.size and (y_arr.min() < 0 or y_arr.max() >= alpha.shape[1]):
        raise ValueError(f"y must be encoded as integers in [0, {alpha.shape[1] - 1}].")
    scores = alpha[np.arange(alpha.shape[0]), y_arr]
    return np.sort(scores) if sort else scores


def p_values(
    alpha: ArrayLike,
    calibration: ArrayLike,
    *,
    form: str = "dknn",
    calibration_labels: ArrayLike | None = None,
    uniform: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """p-value of every candidate label against the calibration scores.

    With ``A`` the calibration scores, ``ge``, ``gt`` and ``eq`` the numbers of
    scores ``>=``, ``>`` and ``==`` alpha_j(x), and ``U`` uniform on [0, 1]:

    - ``"dknn"`` (the DkNN paper): p_j(x) = ge / |A|;
    - ``"conformal"``: p_j(x) = (ge + 1) / (|A| + 1), the standard (split)
      conformal p-value: on data exchangeable with the calibration set,
      P(p_y(x) <= eps) <= eps for the true label y, so prediction sets
      ``{j : p_j(x) > eps}`` cover with probability at least 1 - eps;
    - ``"smoothed"``: p_j(x) = (gt + U (eq + 1)) / (|A| + 1), which is exactly
      uniform for the true label on exchangeable data: the sets cover with
      probability exactly 1 - eps (Vovk et al., 2005), ties and all.

    The ``"dknn"`` form drops the ``+ 1`` terms. It is never larger than the
    ``"conformal"`` form (equal only when every score is >= alpha), so its sets
    are never larger either, and they cover with probability at least
    1 - eps - 1 / (|A| + 1) only. ``"smoothed"`` is never larger than
    ``"conformal"`` either.

    **Mondrian** (label-conditional) p-values: with ``calibration_labels``, the
    p-value of label ``j`` uses only ``A_j``, the scores of the calibration
    points whose label is ``j``, in the formulas above. The guarantee then holds
    within each class: P(p_y(x) <= eps | y = j) <= eps (``"conformal"``).

    Parameters
    ----------
    alpha : array-like, shape (n_queries, n_classes) or (n_classes,)
        Nonconformity of every candidate label, from :func:`nonconformity`
        (or of one query's).
    calibration : array-like, shape (n_calibration,)
        Calibration nonconformity scores ``A`` (need not be sorted).
    form : {"dknn", "conformal", "smoothed"}, default="dknn"
        The p-value form (see above).
    calibration_labels : array-like of int, shape (n_calibration,), default=None
        Encoded labels (``0 .. n_classes - 1``) of the calibration points, aligned
        with ``calibration``; given, the p-values are Mondrian (label-conditional).
    uniform : array-like, shape of ``alpha``, default=None
        The draws ``U`` in [0, 1] of ``form="smoothed"`` (required by it, ignored
        otherwise), e.g. ``np.random.default_rng(seed).random(alpha.shape)``;
        read as float64.

    Returns
    -------
    p : ndarray of float64, shape of ``alpha``

    Raises
    ------
    ValueError
        If ``calibration`` is empty, ``form`` is unknown, ``uniform`` is missing
        or misshaped for ``form="smoothed"``, or (Mondrian) a label has no
        calibration score.

    References
    ----------
    V. Vovk, A. Gammerman and G. Shafer, "Algorithmic Learning in a Random
    World", Springer, 2005 (smoothed and Mondrian conformal predictors).
    H. Papadopoulos, "Inductive Conformal Prediction: Theory and Application to
    Neural Networks", 2008 (the (count + 1) / (n + 1) form).

    Examples
    --------
    With A = {0, 0, 2, 5}: a label with alpha = 2 is matched or exceeded by two of the
    four scores (``>=``), alpha = 0 by all four and alpha = 6 by none.

    >>> p_values([[2, 0, 6]], calibration=[5, 0, 2, 0])
    array([[0.5, 1. , 0. ]])
    >>> p_values([[2, 0, 6]], calibration=[5, 0, 2, 0], form="conformal")
    array([[0.6, 1. , 0.2]])

    Smoothed, with U = 0.5: alpha = 2 has one score above and one equal, so
    (1 + 0.5 * 2) / 5; alpha = 0 has two above and two equal, (2 + 0.5 * 3) / 5.

    >>> p_values([[2, 0, 6]], calibration=[5, 0, 2, 0], form="smoothed",
    ...          uniform=[[0.5, 0.5, 0.5]])
    array([[0.4, 0.7, 0.1]])

    Mondrian: label 0 against its scores {0, 2}, label 1 against {0, 5}.

    >>> p_values([[2, 2]], calibration=[5, 0, 2, 0], calibration_labels=[1, 0, 0, 1])
    array([[0.5, 0.5]])
    """
    if form not in P_VALUE_FORMS:
        raise ValueError(f"form must be one of {P_VALUE_FORMS}; got {form!r}.")
    scores = np.asarray(calibration).ravel()
    if scores.size == 0:
        raise ValueError("calibration must hold at least one nonconformity score.")
    alpha_arr = np.asarray(alpha)
    theta = None
    if form == "smoothed":
        if uniform is None:
            raise ValueError('form="smoothed" needs uniform, the draws U in [0, 1].')
        theta = np.asarray(uniform, dtype=np.float64)
        if theta.shape != alpha_arr.shape:
            raise ValueError(
                f"uniform must have the shape of alpha, {alpha_arr.shape}; got "
                f"{theta.shape}."
            )
    if calibration_labels is None:
        return _p_values(alpha_arr, np.sort(scores), form, theta)
    labels = np.asarray(calibration_labels).ravel()
    if labels.shape != scores.shape:
        raise ValueError(
            f"calibration_labels must have the shape of calibration, {scores.shape}; "
            f"got {labels.shape}."
        )
    p = np.empty(alpha_arr.shape, dtype=np.float64)
    for j in range(alpha_arr.shape[-1]):
        scores_j = np.sort(scores[labels == j])
        if scores_j.size == 0:
            raise ValueError(
                f"Mondrian p-values need calibration scores of every label; label {j} "
                "has none."
            )
        p[..., j] = _p_values(
            alpha_arr[..., j], scores_j, form, None if theta is None else theta[..., j]
        )
    return p


def _p_values(
    alpha: NDArray, scores: NDArray, form: str, theta: NDArray | None
) -> NDArray[np.float64]:
    """p-values of ``alpha`` against the sorted ``scores`` (see :func:`p_values`)."""
    n = scores.size
    # scores strictly below alpha, and at most alpha: the rest are >= / > alpha
    at_least = n - np.searchsorted(scores, alpha, side="left")
    if form == "dknn":
        return at_least / n
    if form == "conformal":
        return (at_least + 1) / (n + 1)
    above = n - np.searchsorted(scores, alpha, side="right")
    assert theta is not None
    return (above + theta * (at_least - above + 1)) / (n + 1)


def coverage_bound(significance: float, n_calibration: int) -> float:
    """Lower bound on the coverage of conformal prediction sets: 1 - eps - 1/(n+1).

    On data exchangeable with the ``n_calibration`` calibration points, the sets
    ``{j : p_j(x) > eps}`` hold the true label with at least this probability for
    every p-value form of :func:`p_values` (``"conformal"`` and ``"smoothed"``
    also reach 1 - eps itself). For Mondrian p-values, use each class's number of
    calibration points: the bound then holds within the class.

    Examples
    --------
    >>> round(coverage_bound(0.1, 99), 4)
    0.89
    """
    return 1.0 - _check_significance(significance) - 1.0 / (int(n_calibration) + 1)


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
        Significance level epsilon: the error rate allowed (0: every class with
        a positive p-value, 1: empty sets).

    Returns
    -------
    sets : ndarray of bool, shape (n_queries, n_classes)
        ``sets[i, j]`` is True when class ``j`` is in the set of query ``i``.

    Raises
    ------
    ValueError
        When ``significance`` is not a real number in [0, 1] (a string, an array,
        a bool, NaN, a number out of range); the error is also a TypeError.

    Examples
    --------
    >>> prediction_sets([[0.5, 1.0, 0.0]], significance=0.5)
    array([[False,  True, False]])
    """
    return np.asarray(p) > _check_significance(significance)


def _check_significance(significance: Any) -> float:
    """``significance`` as a float; an error unless it is a real number in [0, 1].

    Shared by every function and method taking a significance level. The error
    is sklearn's InvalidParameterError, both a ValueError and a TypeError.
    """
    if (
        isinstance(significance, (bool, np.bool_))
        or not isinstance(significance, Real)
        or not 0.0 <= float(significance) <= 1.0
    ):
        raise InvalidParameterError(
            "significance must be a real number in [0, 1], the error rate the "
            f"prediction sets allow (e.g. 0.1); got {significance!r}"
            + (
                "."
                if isinstance(significance, Real)
                else f" of type {type(significance).__name__}."
            )
        )
    return float(significance)
