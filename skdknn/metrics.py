"""Robustness metrics for attacks on (Deep) kNN classifiers.

Plain functions on predictions and arrays, plus :func:`make_attack_scorer` for
``GridSearchCV``. The scorer-free way also works: the ``score`` of
``Pipeline([("attack", FGSMAttack(FrozenEstimator(clf))),
("clf", FrozenEstimator(clf))])`` is the accuracy under attack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "accuracy_under_attack",
    "attack_success_rate",
    "detection_rate",
    "false_alarm_rate",
    "make_attack_scorer",
    "mean_credibility",
    "mean_l2_distortion",
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
