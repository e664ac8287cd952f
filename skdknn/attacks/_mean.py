"""MeanAttack: the kNN baseline of Sitawarin & Wagner (move toward a class mean)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from .._validation import as_flat_rows, as_numpy
from ._base import check_box, land_in_dtype
from ._target import encode_labels

__all__ = ["MeanAttack"]


class MeanAttack(TransformerMixin, BaseEstimator):
    """Move each input toward the nearest mean image of another class.

    The baseline attack on kNN and DkNN classifiers of Sitawarin & Wagner (2019):
    for an input ``x`` predicted as class ``c``, take the class mean ``m`` (computed
    at ``fit``) nearest to ``x`` among the other classes, and line-search the
    smallest ``alpha`` in ``(0, max_scale]`` for which the model's prediction of
    ``clip(x + alpha (m - x))`` is no longer ``c`` (bisection, ``n_iter`` steps).
    Needs only ``predict``, so it attacks any classifier, gradients or not. Inputs
    whose prediction does not change at ``alpha = max_scale`` are returned unchanged
    (the attack failed within its budget).

    The candidates are built in the input's own dtype and clipped to the box
    there (bounds rounded inward), so that ``clip_min <= x' <= clip_max`` holds
    exactly for float32 input too, and inputs left unchanged keep their bits.

    Parameters
    ----------
    estimator : classifier
        The fitted model to attack (any object with ``predict`` and ``classes_``),
        e.g. a DeepKNNClassifier or a ``KNeighborsClassifier``.
    n_iter : int, default=10
        Bisection steps of the line search.
    max_scale : float, default=1.0
        Budget: the largest ``alpha`` tried (1 reaches the class mean).
    clip_min, clip_max : float or array-like, default=0.0, 1.0
        Box of valid inputs: scalars, arrays broadcastable to one input's shape
        (e.g. per channel), or one bound per flattened feature; inputs outside it
        are an error.
    verbose : int, default=0
        Unused; kept for a uniform API.

    Attributes
    ----------
    means_ : ndarray of shape (n_classes, n_features)
        Mean (flattened) input of each class of ``classes_``.
    classes_ : ndarray of shape (n_classes,)
        The attacked model's classes.
    n_features_in_ : int
        Values per input row.
    clip_min_, clip_max_ : ndarray of shape (n_features_in_,)
        The box, one bound per feature.

    References
    ----------
    C. Sitawarin and D. Wagner, "On the Robustness of Deep K-Nearest Neighbors",
    IEEE Deep Learning and Security Workshop, 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from skdknn.attacks import MeanAttack
    >>> X = np.array([[0.1, 0.1], [0.2, 0.1], [0.8, 0.9], [0.9, 0.8]])
    >>> y = np.array([0, 0, 1, 1])
    >>> knn = KNeighborsClassifier(n_neighbors=1).fit(X, y)
    >>> X_adv = MeanAttack(knn).fit(X, y).transform(X[:1])
    >>> knn.predict(X_adv)
    array([1])
    """

    _parameter_constraints: dict[str, Any] = {
        "estimator": [object],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "max_scale": [Interval(Real, 0, None, closed="neither")],
        "clip_min": [Real, "array-like"],
        "clip_max": [Real, "array-like"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator: Any,
        *,
        n_iter: int = 10,
        max_scale: float = 1.0,
        clip_min: float | ArrayLike = 0.0,
        clip_max: float | ArrayLike = 1.0,
        verbose: int = 0,
    ) -> None:
        self.estimator = estimator
        self.n_iter = n_iter
        self.max_scale = max_scale
        self.clip_min = clip_min
        self.clip_max = clip_max
        self.verbose = verbose

    def fit(self, X: Any, y: Any = None) -> MeanAttack:
        """Compute the class means of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Reference inputs (typically the model's training set).
        y : array-like of shape (n_samples,), default=None
            Their labels; ``None`` uses the model's predictions.

        Returns
        -------
        self : object
        """
        self._validate_params()
        check_is_fitted(self.estimator)
        X_flat, self.image_shape_ = as_flat_rows(X)
        X_flat = validate_data(self, X_flat, dtype=np.float64)
        self.clip_min_, self.clip_max_ = self._box(X_flat.shape[1])
        self.classes_ = np.asarray(self.estimator.classes_)
        labels = self._labels(X, X_flat, y)
        missing = [c for c in self.classes_ if not np.any(labels == c)]
        if missing:
            raise ValueError(
                f"No samples of classes {missing[:5]} in X to compute their means."
            )
        self.means_ = np.stack(
            [X_flat[labels == c].mean(axis=0) for c in self.classes_]
        )
        return self

    def transform(self, X: Any) -> Any:
        """Adversarial examples against the model's own predictions on X."""
        return self.generate(X)

    def generate(self, X: Any, y: Any = None) -> Any:
        """Adversarial examples; moved away from ``y`` when labels are given.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Clean inputs; never modified.
        y : array-like of shape (n_samples,), default=None
            Labels to move away from; ``None`` uses the model's predictions.

        Returns
        -------
        X_adv : ndarray of the shape and dtype of X
        """
        check_is_fitted(self, "means_")
        X_arr = as_numpy(X)
        X_flat, _ = as_flat_rows(X_arr)
        X_flat = validate_data(self, X_flat, dtype=np.float64, reset=False)
        outside = (X_flat < self.clip_min_ - 1e-6) | (X_flat > self.clip_max_ + 1e-6)
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} input values lie outside the clip box "
                "[clip_min, clip_max]; rescale X or set clip_min / clip_max."
            )
        source = self._labels(X_arr, X_flat, y)
        direction = self._toward_nearest_other_mean(X_flat, source)
        dtype = X_arr.dtype if np.issubdtype(X_arr.dtype, np.floating) else np.float64
        # the candidates are built in X's own dtype, exactly inside the box
        x = np.asarray(X_arr, dtype=dtype).reshape(X_flat.shape)
        scale = self._line_search(X_arr.shape, x, X_flat, direction, source)
        return self._candidate(x, X_flat, direction, scale).reshape(X_arr.shape)

    def _labels(self, X: Any, X_flat: NDArray, y: Any) -> NDArray:
        """``y`` checked (one class of the model per row), or the predictions."""
        if y is None:
            return np.asarray(self.estimator.predict(X))
        y = column_or_1d(y)
        check_consistent_length(X_flat, y)
        encode_labels(y, self.classes_)
        return y

    def _box(self, n_features: int) -> tuple[NDArray, NDArray]:
        """clip_min and clip_max as one bound per feature, checked.

        Each is a scalar, an array broadcastable to one input's shape (e.g. one
        bound per channel of an image), or one bound per flattened feature.
        """
        shape = self.image_shape_ or (n_features,)
        bounds = []
        for name in ("clip_min", "clip_max"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.size == n_features:
                value = value.reshape(shape)
            try:
                bounds.append(np.broadcast_to(value, shape).reshape(-1))
            except ValueError:
                raise ValueError(
                    f"{name} must be a scalar or broadcastable to one input's shape "
                    f"{shape} (or hold one bound per feature, {n_features}); got "
                    f"shape {value.shape}."
                ) from None
        check_box(bounds[0], bounds[1])
        return bounds[0], bounds[1]

    def _toward_nearest_other_mean(
        self, X_flat: NDArray[np.float64], source: NDArray
    ) -> NDArray[np.float64]:
        dist = ((X_flat[:, None, :] - self.means_[None]) ** 2).sum(axis=2)
        dist[source[:, None] == self.classes_[None, :]] = np.inf
        return self.means_[dist.argmin(axis=1)] - X_flat

    def _candidate(
        self, x: NDArray, X_flat: NDArray, direction: NDArray, scale: NDArray
    ) -> NDArray:
        """clip(x + scale * direction) in x's dtype; rows of scale 0 keep x's bits."""
        step = X_flat + scale[:, None] * direction
        return land_in_dtype(x, step, X_flat, None, self.clip_min_, self.clip_max_)

    def _flipped(
        self,
        shape: tuple[int, ...],
        x: NDArray,
        X_flat: NDArray,
        direction: NDArray,
        scale: NDArray,
        source: NDArray,
    ) -> NDArray[np.bool_]:
        candidate = self._candidate(x, X_flat, direction, scale)
        return self.estimator.predict(candidate.reshape(shape)) != source

    def _line_search(
        self,
        shape: tuple[int, ...],
        x: NDArray,
        X_flat: NDArray,
        direction: NDArray,
        source: NDArray,
    ) -> NDArray[np.float64]:
        """Smallest flipping scale per row by bisection (0 where none flips)."""
        n = X_flat.shape[0]
        high = np.full(n, float(self.max_scale))
        success = self._flipped(shape, x, X_flat, direction, high, source)
        low = np.zeros(n)
        for _ in range(self.n_iter):
            mid = (low + high) / 2
            flipped = self._flipped(shape, x, X_flat, direction, mid, source)
            high = np.where(flipped, mid, high)
            low = np.where(flipped, low, mid)
        return np.where(success, high, 0.0)
