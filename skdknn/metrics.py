"""Robustness metrics for attacks on (Deep) kNN classifiers.

Plain functions on predictions and arrays, plus :func:`make_attack_scorer` for
``GridSearchCV``. The scorer-free way also works: the ``score`` of
``Pipeline([("attack", FGSMAttack(FrozenEstimator(clf))),
("clf", FrozenEstimator(clf))])`` is the accuracy under attack.

:func:`neighbor_label_agreement` measures how many of a DkNN's neighbours carry the
true label in each layer (the DkNN paper's view of where adversarial examples go
wrong), and :func:`ood_auroc` how well a score separates in-distribution from
out-of-distribution inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from ._classifier import DeepKNNClassifier

__all__ = [
    "accuracy_under_attack",
    "attack_success_rate",
    "detection_rate",
    "false_alarm_rate",
    "make_attack_scorer",
    "mean_credibility",
    "mean_l2_distortion",
    "neighbor_label_agreement",
    "ood_auroc",
    "transfer_accuracy",
]


def _same_length(*arrays: NDArray) -> None:
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(
            f"Inputs have different numbers of samples: {sorted(lengths)}."
        )
    if lengths == {0}:
        raise ValueError("Metrics need at least one sample.")


def accuracy_under_attack(y_true: ArrayLike, y_pred_adv: ArrayLike) -> float:
    """Accuracy of the predictions on adversarial inputs (robust accuracy).

    Examples
    --------
    >>> accuracy_under_attack([0, 1, 2, 2], [0, 1, 1, 0])
    0.5
    """
    y_t, y_a = np.asarray(y_true), np.asarray(y_pred_adv)
    _same_length(y_t, y_a)
    return float(np.mean(y_t == y_a))


def attack_success_rate(y_pred_clean: ArrayLike, y_pred_adv: ArrayLike) -> float:
    """Share of inputs whose prediction the attack changed from the clean one.

    Examples
    --------
    >>> attack_success_rate([0, 1, 2, 2], [0, 2, 1, 2])
    0.5
    """
    y_c, y_a = np.asarray(y_pred_clean), np.asarray(y_pred_adv)
    _same_length(y_c, y_a)
    return float(np.mean(y_c != y_a))


def mean_l2_distortion(
    X: ArrayLike, X_adv: ArrayLike, success: ArrayLike | None = None
) -> float:
    """Mean L2 norm of the perturbations ``|x' - x|_2`` of successful examples.

    Parameters
    ----------
    X, X_adv : array-like of shape (n_samples, ...)
        Clean and adversarial inputs.
    success : array-like of bool, shape (n_samples,), default=None
        Which examples succeeded (e.g. ``y_pred_adv != y_pred_clean``); ``None``
        averages over all. NaN when no example succeeded.

    Examples
    --------
    >>> mean_l2_distortion([[0, 0], [1, 1]], [[3, 4], [1, 1]], success=[True, False])
    5.0
    """
    X_c = np.asarray(X, dtype=np.float64)
    X_a = np.asarray(X_adv, dtype=np.float64)
    if X_c.shape != X_a.shape:
        raise ValueError(f"X and X_adv shapes differ: {X_c.shape} vs {X_a.shape}.")
    norms = np.linalg.norm((X_a - X_c).reshape(len(X_c), -1), axis=1)
    if success is not None:
        mask = np.asarray(success, dtype=bool)
        _same_length(norms, mask)
        norms = norms[mask]
    return float(norms.mean()) if norms.size else float("nan")


def mean_credibility(credibility: ArrayLike) -> float:
    """Mean DkNN credibility (e.g. of adversarial examples).

    Examples
    --------
    >>> mean_credibility([0.2, 0.4])
    0.30000000000000004
    """
    cred = np.asarray(credibility, dtype=np.float64)
    _same_length(cred)
    return float(cred.mean())


def detection_rate(credibility_adv: ArrayLike, threshold: float) -> float:
    """Share of adversarial examples flagged: credibility below ``threshold``.

    Examples
    --------
    >>> detection_rate([0.05, 0.5, 0.01], threshold=0.1)
    0.6666666666666666
    """
    cred = np.asarray(credibility_adv, dtype=np.float64)
    _same_length(cred)
    return float(np.mean(cred < threshold))


def false_alarm_rate(credibility_clean: ArrayLike, threshold: float) -> float:
    """Share of clean inputs wrongly flagged: credibility below ``threshold``.

    Examples
    --------
    >>> false_alarm_rate([0.9, 0.05, 0.6, 0.7], threshold=0.1)
    0.25
    """
    return detection_rate(credibility_clean, threshold)


def transfer_accuracy(model: Any, X_adv: ArrayLike, y_true: ArrayLike) -> float:
    """Accuracy of another model on adversarial examples made against a first one.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> other = DummyClassifier(strategy="constant", constant=1).fit([[0]], [1])
    >>> transfer_accuracy(other, [[0.0], [1.0]], [1, 0])
    0.5
    """
    return accuracy_under_attack(y_true, model.predict(X_adv))


def make_attack_scorer(
    attack: Any, metric: str = "accuracy", *, threshold: float = 0.1
) -> Callable[[Any, Any, Any], float]:
    """A scorer ``scorer(estimator, X, y)`` that attacks X before measuring.

    ``attack`` is a fitted attack (any transformer) or an unfitted one, fitted on
    the first ``X`` it sees. Metrics: ``"accuracy"`` (under attack),
    ``"success_rate"``, ``"detection_rate"`` (credibility of the adversarial
    examples below ``threshold``; needs a DkNN) and ``"mean_credibility"``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X, y = np.array([[0.0], [1.0]]), np.array([0, 1])
    >>> flip = FunctionTransformer(lambda X: 1 - X)  # a stand-in "attack"
    >>> clf = DecisionTreeClassifier().fit(X, y)
    >>> make_attack_scorer(flip)(clf, X, y)
    0.0
    >>> make_attack_scorer(flip, "success_rate")(clf, X, y)
    1.0
    """
    metrics = {"accuracy", "success_rate", "detection_rate", "mean_credibility"}
    if metric not in metrics:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {sorted(metrics)}.")

    def scorer(estimator: Any, X: Any, y: Any) -> float:
        if not hasattr(attack, "n_features_in_"):
            attack.fit(X)
        X_adv = attack.transform(X)
        if metric == "accuracy":
            return accuracy_under_attack(y, estimator.predict(X_adv))
        if metric == "success_rate":
            return attack_success_rate(estimator.predict(X), estimator.predict(X_adv))
        credibility = estimator.credibility(X_adv)
        if metric == "mean_credibility":
            return mean_credibility(credibility)
        return detection_rate(credibility, threshold)

    return scorer


def _indexed_labels(estimator: Any) -> NDArray:
    """Labels of the fitted DkNN's indexed rows, looked up by row of the fit ``X``.

    ``kneighbors`` returns row numbers of the ``X`` given to ``fit``; only indexed
    rows (``train_indices_``) can be neighbours, so the other entries stay unset.
    """
    rows = np.asarray(estimator.train_indices_)
    labels = np.empty(int(rows.max()) + 1, dtype=estimator.classes_.dtype)
    labels[rows] = estimator.classes_[estimator.y_index_]
    return labels


def _unwrap_dknn(estimator: Any) -> DeepKNNClassifier:
    """The DkNN inside an optional FrozenEstimator, checked to be fitted."""
    while isinstance(estimator, FrozenEstimator):  # nested wrappers too
        estimator = estimator.estimator
    if not isinstance(estimator, DeepKNNClassifier):
        raise TypeError(
            "estimator must be a DeepKNNClassifier (optionally in FrozenEstimator); "
            f"got {type(estimator).__name__}."
        )
    check_is_fitted(estimator, "train_indices_")
    return estimator


def _label_agreement(neighbor_labels: ArrayLike, y_true: ArrayLike) -> NDArray:
    """Mean of ``neighbor_labels[i, l, j] == y_true[i]`` over ``i`` and ``j``.

    The numpy core of :func:`neighbor_label_agreement`: ``neighbor_labels`` has
    shape (n_samples, n_layers, n_neighbors), the result shape (n_layers,).
    """
    labels = np.asarray(neighbor_labels)
    y_arr = np.asarray(y_true)
    if labels.ndim != 3:
        raise ValueError(
            "neighbor_labels must have shape (n_samples, n_layers, n_neighbors); got "
            f"{labels.shape}."
        )
    if y_arr.ndim != 1:
        raise ValueError(f"y must have shape (n_samples,); got {y_arr.shape}.")
    _same_length(labels, y_arr)
    agree = labels == y_arr[:, None, None]
    return np.asarray(agree.mean(axis=(0, 2)), dtype=np.float64)


def neighbor_label_agreement(
    estimator: Any, X: Any, y: ArrayLike
) -> NDArray[np.float64]:
    """Share of the neighbours of ``X`` in each layer that carry the true label.

    For each layer ``l`` of a fitted DkNN: the mean, over the inputs ``x`` and their
    ``k`` nearest training points Gamma_l(x), of ``label(neighbour) == y``. On
    adversarial examples it drops from the first layers to the logits: deep in the
    network their neighbours carry the adversarial label (DkNN paper, Section 6).

    Parameters
    ----------
    estimator : DeepKNNClassifier
        A fitted DkNN, optionally wrapped in ``FrozenEstimator``.
    X : array-like of shape (n_samples, ...)
        Inputs, as for the estimator's ``predict``.
    y : array-like of shape (n_samples,)
        True labels of ``X`` (a label outside ``classes_`` agrees with no
        neighbour).

    Returns
    -------
    agreement : ndarray of shape (n_layers,)
        One share in [0, 1] per layer of ``estimator.layers_``.

    See Also
    --------
    skdknn.plotting.plot_neighbor_correctness : Bars of it per layer.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from skdknn import DeepKNNClassifier
    >>> X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    >>> clf = DeepKNNClassifier(n_neighbors=5, calibration_size=40, max_epochs=5,
    ...                         batch_size=64, random_state=0).fit(X, y)
    >>> agreement = neighbor_label_agreement(clf, X[:50], y[:50])
    >>> agreement.shape
    (3,)
    >>> bool(((agreement >= 0) & (agreement <= 1)).all())
    True
    """
    dknn = _unwrap_dknn(estimator)
    y_arr = np.asarray(y)
    _, indices = dknn.kneighbors(X)
    return _label_agreement(_indexed_labels(dknn)[indices], y_arr)


def ood_auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """AUROC of telling in-distribution from out-of-distribution inputs by a score.

    Higher scores must mean "more in-distribution", as DkNN credibility and the
    softmax confidence do. 1.0: every in-distribution input scores above every
    out-of-distribution one; 0.5: the score does not separate them.

    Parameters
    ----------
    scores_in : array-like of shape (n_in,)
        Scores of in-distribution inputs (the positives).
    scores_out : array-like of shape (n_out,)
        Scores of out-of-distribution inputs.

    Returns
    -------
    auroc : float
        Area under the ROC curve (:func:`sklearn.metrics.roc_auc_score`); ties
        count one half.

    Examples
    --------
    >>> ood_auroc([0.9, 0.8, 0.4, 0.3], [0.1, 0.5])  # 6 of the 8 pairs in order
    0.75
    """
    s_in = _check_scores(scores_in, "scores_in")
    s_out = _check_scores(scores_out, "scores_out")
    is_in = np.concatenate([np.ones(s_in.size), np.zeros(s_out.size)])
    return float(roc_auc_score(is_in, np.concatenate([s_in, s_out])))


def _check_scores(scores: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D array; got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values.")
    return arr
