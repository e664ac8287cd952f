"""Shared machinery of the L-infinity gradient attacks: batching, labels, the box."""

from __future__ import annotations

import contextlib
import contextvars
from abc import abstractmethod
from collections.abc import Callable, Iterator
from math import prod
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from tqdm.auto import tqdm

from .._activations import eval_mode, module_device
from .._validation import (
    as_flat_rows,
    as_numpy,
    check_fitted_shape,
    check_value_range,
)
from .._warnings import warn
from ..exceptions import AttackBudgetWarning, ZeroGradientWarning
from ._target import AttackTarget, resolve_target

__all__ = [
    "GradientAttack",
    "bim",
    "check_box",
    "check_tanh_box",
    "fgsm",
    "land_in_dtype",
    "warn_wide_tanh_box",
]

LogitsFn = Callable[[torch.Tensor], torch.Tensor]

# inputs may sit this far outside the box (float rounding) without an error
_BOX_TOLERANCE = 1e-6


@contextlib.contextmanager
def on_device(module: nn.Module, device: str | None) -> Iterator[None]:
    """Run the block with ``module`` on ``device`` (None: stay), then move it back."""
    if device is None:
        yield
        return
    original = module_device(module)
    module.to(device)
    try:
        yield
    finally:
        module.to(original)


class _ZeroGradientRows:
    """Rows of a batch whose loss gradient was exactly zero at every step so far."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None
        self.valid = True

    def update(self, grad: torch.Tensor) -> None:
        zero = grad.flatten(1).eq(0).all(dim=1)
        if self.rows is None:
            self.rows = zero
        elif self.rows.shape == zero.shape:
            self.rows = self.rows & zero
        else:  # a step on a subset of the rows: rows no longer line up
            self.valid = False


# Set by GradientAttack around each batch, so that every attack step computed by
# _loss_gradient_sign is counted without changing the attack functions' signatures.
_ZERO_GRADIENT: contextvars.ContextVar[_ZeroGradientRows | None] = (
    contextvars.ContextVar("skdknn_zero_gradient", default=None)
)


def _loss_gradient_sign(logits_fn: LogitsFn, x: torch.Tensor, t: torch.Tensor) -> Any:
    """sign(grad_x CE(logits(x), t)), without touching the parameters' gradients."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(logits_fn(x), t, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    counter = _ZERO_GRADIENT.get()
    if counter is not None:
        counter.update(grad)
    return grad.sign()


def _exceeds(a: NDArray, b: NDArray, bound: float) -> NDArray[np.bool_]:
    """Where a - b > bound holds for the real numbers, not only after rounding.

    In float64, ``d = fl(a - b)`` and TwoSum (Knuth) recovers its exact error
    ``e``; a - b = d + e exactly, which exceeds the float ``bound`` when d > bound,
    or d == bound and e > 0. Exact for float16, float32 and float64 inputs.
    """
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    d = a - b
    shift = d - a
    e = (a - (d - shift)) + (-b - shift)
    return (d > bound) | ((d == bound) & (e > 0))


def _round_inward(
    values: NDArray[np.float64], dtype: np.dtype, *, up: bool
) -> NDArray[np.floating]:
    """``values`` in ``dtype``, moved one step up (or down) where the cast went the
    other way, so that the result is >= (or <=) the real values."""
    cast = np.asarray(values).astype(dtype)
    outward = cast < values if up else cast > values
    return np.where(
        outward, np.nextafter(cast, dtype.type(np.inf if up else -np.inf)), cast
    )


def _ball_bound(x: NDArray, eps: float, *, up: bool) -> NDArray[np.floating]:
    """x + eps (up) or x - eps in x's dtype, never past the real value."""
    x64 = x.astype(np.float64)
    bound = (x64 + eps if up else x64 - eps).astype(x.dtype)
    for _ in range(4):  # one step fixes a float32 / float64 rounding; loop for safety
        past = _exceeds(bound, x, eps) if up else _exceeds(x, bound, eps)
        if not past.any():
            break
        towards_x = x.dtype.type(-np.inf if up else np.inf)
        bound = np.where(past, np.nextafter(bound, towards_x), bound)
    return bound


def land_in_dtype(
    x: NDArray[np.floating],
    x_step: NDArray,
    x_step_start: NDArray,
    eps: float | None,
    clip_min: NDArray,
    clip_max: NDArray,
) -> NDArray[np.floating]:
    """Apply a perturbation to ``x`` in x's dtype: exactly in the eps-ball and box.

    The attack computes its step in float32 (``x_step`` from ``x_step_start``, the
    float32 version of ``x``); the perturbation ``x_step - x_step_start`` is then
    added to ``x`` itself, projected onto ``|x' - x|_inf <= eps`` and clipped to
    ``[clip_min, clip_max]`` in x's dtype, with the bounds rounded inward. So the
    promises hold for the real numbers in any float dtype (float64 rows no longer
    exceed eps by float32 rounding), and a coordinate the attack did not move keeps
    its exact bits, unless the input itself lay outside the box (within the
    tolerated rounding), where the box wins.

    Parameters
    ----------
    x : ndarray of float dtype
        The clean inputs, in the dtype the result takes.
    x_step, x_step_start : ndarray of the shape of x
        The attack's result and its starting point (x in the attack's dtype).
    eps : float or None
        L-infinity budget; None skips the projection (attacks without one).
    clip_min, clip_max : ndarray of float64, broadcastable to x
        The box.

    Returns
    -------
    x_adv : ndarray of x's shape and dtype
    """
    step = np.asarray(x_step, np.float64) - np.asarray(x_step_start, np.float64)
    moved = (x.astype(np.float64) + step).astype(x.dtype)
    lower = _round_inward(np.asarray(clip_min, np.float64), x.dtype, up=True)
    upper = _round_inward(np.asarray(clip_max, np.float64), x.dtype, up=False)
    if eps is not None:
        lower = np.maximum(_ball_bound(x, eps, up=False), lower)
        upper = np.minimum(_ball_bound(x, eps, up=True), upper)
    x_adv = np.where(step == 0, x, moved)
    # max then min: should the two bounds cross (an input outside the box by
    # more than eps), the box wins
    return np.minimum(np.maximum(x_adv, lower), upper)


def check_box(lower: NDArray, upper: NDArray) -> None:
    """Raise ValueError unless ``lower < upper`` everywhere and neither holds NaN.

    A NaN bound would make every clipped coordinate NaN (comparisons with NaN are
    false, so ``lower >= upper`` alone lets it through); infinite bounds are allowed
    (an unbounded side).
    """
    if np.isnan(lower).any() or np.isnan(upper).any():
        raise ValueError(
            "clip_min and clip_max must be numbers, not NaN (use -inf / inf for an "
            "unbounded side)."
        )
    if np.any(lower >= upper):
        raise ValueError("clip_min must be smaller than clip_max everywhere.")


def check_tanh_box(lower: NDArray, upper: NDArray) -> None:
    """Raise ValueError unless the box is finite, as the tanh change of variables needs.

    The Carlini-Wagner attack optimises ``w`` with ``x' = mid + half * tanh(w)``,
    ``mid`` and ``half`` the box's centre and half-width: with an infinite (or
    float32-overflowing) bound they are infinite or NaN and no input can move.
    """
    finite = np.isfinite(lower) & np.isfinite(upper)
    with np.errstate(over="ignore"):
        finite &= np.isfinite(upper.astype(np.float32) - lower.astype(np.float32))
    if not finite.all():
        raise ValueError(
            "The Carlini-Wagner attack needs a finite clip box: it optimises w with "
            "x' = mid + half * tanh(w) (the tanh change of variables, mid and half "
            "the box's centre and half-width), which no input can move along when a "
            "bound is infinite or NaN (or the box is wider than float32's range); "
            f"got clip_min={_describe_bound(lower)}, clip_max="
            f"{_describe_bound(upper)}. Set clip_min and clip_max to the inputs' "
            "valid range (e.g. 0 and 1 for pixels, the training data's min and max "
            "per feature for tabular rows)."
        )


def _describe_bound(bound: NDArray) -> str:
    values = np.unique(bound)
    if values.size == 1:
        return f"{values[0]:g}"
    return f"[{values.min():g} ... {values.max():g}]"


#: A Carlini-Wagner box reaching beyond this many times the inputs' scale (their
#: largest magnitude or their spread, whichever is larger) warns.
WIDE_TANH_BOX = 100.0


def warn_wide_tanh_box(X: NDArray, lower: NDArray, upper: NDArray) -> None:
    """Warn when the box is far wider than the inputs (tanh-space steps too coarse).

    With ``x' = mid + half * tanh(w)``, Adam's steps on ``w`` move ``x'`` by about
    ``learning_rate * half`` in the box's interior, and float32 resolves ``x'``
    only to about ``(|mid| + half) * 2**-24``: a box far beyond the inputs' scale
    gives needlessly large perturbations, or inputs that cannot move at all.
    """
    reach = float(np.max(np.maximum(np.abs(lower), np.abs(upper))))
    magnitude = float(np.max(np.abs(X), initial=0.0))
    spread = float(np.max(X, initial=0.0) - np.min(X, initial=0.0)) if X.size else 0.0
    scale = max(magnitude, spread)
    if scale > 0 and reach > WIDE_TANH_BOX * scale:
        warn(
            f"The clip box reaches {reach:.3g}, {reach / scale:.3g} times the "
            f"inputs' scale (values within {magnitude:.3g} of 0, spread "
            f"{spread:.3g}). The Carlini-Wagner attack optimises in tanh space, "
            "x' = mid + half * tanh(w): its steps move x' by about learning_rate * "
            "half-width, so the perturbations it finds grow with the box, and "
            "float32 resolves x' only to about the box's size * 6e-8 (inputs may "
            "not move at all). Set clip_min and clip_max to the inputs' valid range.",
            AttackBudgetWarning,
        )


def fgsm(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    t: torch.Tensor,
    eps: float,
    lo: torch.Tensor,
    hi: torch.Tensor,
) -> torch.Tensor:
    """Fast gradient sign method: x' = clip(x + eps sign(grad_x L(x, t))).

    Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial
    Examples". ``L`` is the cross-entropy of the logits against the labels ``t``.
    """
    x_adv = x + eps * _loss_gradient_sign(logits_fn, x, t)
    return torch.clamp(x_adv, lo, hi).detach()


def bim(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    t: torch.Tensor,
    eps: float,
    step: float,
    n_iter: int,
    lo: torch.Tensor,
    hi: torch.Tensor,
    x_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Basic iterative method (iterated FGSM projected on the eps-ball and the box).

    Kurakin, Goodfellow & Bengio (2017), "Adversarial Examples in the Physical
    World": x_0 = x; x_{i+1} = clip(project_eps(x_i + step sign(grad L(x_i, t)))).
    """
    lower = torch.maximum(x - eps, lo)
    upper = torch.minimum(x + eps, hi)
    x_adv = x.clone() if x_start is None else x_start.clone()
    for _ in range(n_iter):
        x_adv = x_adv + step * _loss_gradient_sign(logits_fn, x_adv, t)
        x_adv = torch.minimum(torch.maximum(x_adv, lower), upper).detach()
    return x_adv


class GradientAttack(TransformerMixin, BaseEstimator):
    """Base class of the L-infinity gradient attacks (FGSM, BIM, AdvKNN).

    A scikit-learn transformer: ``fit(X)`` binds the attack to the fitted model
    (nothing is retrained), ``transform(X)`` returns adversarial examples of the same
    shape and dtype. Untargeted: each input is pushed away from the attacked model's
    own prediction on the clean input (no label leaking); :meth:`generate` with
    ``y`` attacks given (e.g. true) labels instead.

    Subclasses implement ``_perturb(x, t, lo, hi, generator)`` on one batch and may
    override ``_logits`` (the differentiable model) and ``_clean_labels``.

    Parameters
    ----------
    estimator : DeepKNNClassifier, skorch net or torch.nn.Module
        The fitted model to attack (optionally in ``FrozenEstimator``). Gradients
        flow through its network, whose outputs must be logits.
    eps : float, default=0.25
        L-infinity budget: ``|x' - x|_inf <= eps``.
    clip_min, clip_max : float or array-like, default=0.0, 1.0
        The box of valid inputs, as scalars or arrays broadcastable to one sample's
        shape (per-feature bounds). Inputs must lie inside the box.
    batch_size : int, default=256
        Inputs per gradient computation.
    device : str, default=None
        Torch device for the attack; ``None`` uses the network's. The network is
        moved there for the attack and back afterwards.
    random_state : int, RandomState instance or None, default=None
        Seeds any randomness of the attack (e.g. a random start).
    verbose : int, default=0
        Progress bar over batches when positive.

    Attributes
    ----------
    n_zero_gradient_ : int
        Set by each :meth:`transform` / :meth:`generate`: how many inputs had an
        exactly zero loss gradient at every step (e.g. a softmax saturated in
        float32, or dead ReLUs), so the attack could not move them; they come back
        unchanged (or at their random start), and a warning says how many.

    Notes
    -----
    The gradient steps run in float32; the perturbation is then applied to the
    input in its own dtype, projected onto the eps-ball and clipped to the box
    there (bounds rounded inward), so that ``|x' - x|_inf <= eps`` and
    ``clip_min <= x' <= clip_max`` hold exactly for float64 input too, and
    coordinates the attack did not move keep their exact bits. An ``eps`` (or
    ``step``) wider than the box, e.g. ``eps=8`` meant as 8/255, warns at fit.
    """

    _parameter_constraints: dict[str, Any] = {
        "estimator": [object],
        "eps": [Interval(Real, 0, None, closed="neither")],
        "clip_min": ["array-like", Real],
        "clip_max": ["array-like", Real],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator: Any,
        *,
        eps: float = 0.25,
        clip_min: Any = 0.0,
        clip_max: Any = 1.0,
        batch_size: int = 256,
        device: str | None = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.estimator = estimator
        self.eps = eps
        self.clip_min = clip_min
        self.clip_max = clip_max
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- steps for subclasses -------------------------------------------------------
    def _check_params(self) -> None:
        """Cross-parameter checks beyond ``_parameter_constraints``."""

    def _fit(self, X_net: NDArray[np.float32], y: Any) -> None:
        """Extra fitting (e.g. AdvKNN's heads); the base attack needs none."""

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable model the gradients flow through: the network."""
        return self.target_.module(x)

    def _clean_labels(self, X_net: NDArray[np.float32]) -> NDArray[np.int64]:
        """Labels to push away from: the attacked model's clean predictions."""
        return self.target_.predict_indices(X_net, self.batch_size)

    def _budgets(self) -> dict[str, float]:
        """Step sizes and budgets in input units, checked against the box at fit."""
        return {"eps": self.eps}

    def _ball(self) -> float | None:
        """L-infinity radius of the result's projection; None when there is none."""
        return float(self.eps)

    def _tanh_box(self) -> bool:
        """Whether the attack optimises in tanh space (Carlini-Wagner): finite box."""
        return False

    @abstractmethod
    def _perturb(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Adversarial version of the batch ``x`` against labels ``t``.

        ``lo`` and ``hi`` bound the box; ``generator`` serves any randomness.
        """

    # -- public API -------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> GradientAttack:
        """Bind the attack to the fitted model; the model is not retrained.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs of the shape the model takes (images or flat rows); sets
            ``n_features_in_``. AdvKNN trains its heads on them.
        y : None
            Ignored.

        Returns
        -------
        self : object

        Warns
        -----
        AttackBudgetWarning
            When ``eps`` (or ``step``) is wider than the clip box, e.g. ``eps=8``
            meant as 8/255 (see :class:`~skdknn.exceptions.AttackBudgetWarning`).
        InputRangeWarning
            When X lies far outside the values the attacked DkNN was fitted on.
        """
        self._validate_params()
        self._check_params()
        self.target_: AttackTarget = resolve_target(self.estimator)
        X_net = self._validate_input(X, reset=True)
        self._check_budgets(*self._bounds(X_net.shape[1:]))
        self._fit(X_net, y)
        return self

    def transform(self, X: Any) -> Any:
        """Adversarial examples against the model's own clean predictions.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Clean inputs inside the clip box.

        Returns
        -------
        X_adv : ndarray of the shape and dtype of X
        """
        return self.generate(X)

    def generate(self, X: Any, y: Any = None) -> Any:
        """Adversarial examples; pushed away from ``y`` when labels are given.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Clean inputs inside the clip box; never modified.
        y : array-like of shape (n_samples,), default=None
            Labels to push away from (e.g. the true labels), in the attacked model's
            ``classes_``. ``None`` uses the model's own predictions on ``X``.

        Returns
        -------
        X_adv : ndarray of the shape and dtype of X
            ``|X_adv - X|_inf <= eps`` and the box hold exactly in X's dtype.

        Warns
        -----
        ZeroGradientWarning
            When inputs had an exactly zero loss gradient at every step (they
            come back unmoved); their count is ``n_zero_gradient_``.
        AttackBudgetWarning
            Carlini-Wagner only: when the clip box reaches far beyond the inputs'
            scale.
        InputRangeWarning
            When X lies far outside the values the attacked DkNN was fitted on.
        """
        check_is_fitted(self, "target_")
        X_arr = as_numpy(X)
        X_net = self._validate_input(X, reset=False)
        if y is None:
            t = self._clean_labels(X_net)
        else:
            t = self.target_.encode(y, X_net)
            if t.shape != (X_net.shape[0],):
                raise ValueError(
                    f"y must have shape ({X_net.shape[0]},) to match X; got {t.shape}."
                )
        with on_device(self.target_.module, self.device):
            lo, hi = self._box(X_net)
            X_adv, zero_gradient = self._perturb_batches(X_net, t, lo, hi)
        self._report_zero_gradient(zero_gradient)
        dtype = X_arr.dtype if np.issubdtype(X_arr.dtype, np.floating) else np.float32
        x = np.asarray(X_arr, dtype=dtype).reshape(X_net.shape)
        clip_min, clip_max = self._bounds(X_net.shape[1:])
        out = np.empty_like(x)
        for rows in gen_batches(len(X_net), self.batch_size):  # bounded temporaries
            out[rows] = land_in_dtype(
                x[rows], X_adv[rows], X_net[rows], self._ball(), clip_min, clip_max
            )
        return out.reshape(np.shape(X_arr))

    # -- internals ------------------------------------------------------------------
    def _validate_input(self, X: Any, *, reset: bool) -> NDArray[np.float32]:
        X_flat, image_shape = as_flat_rows(X)
        dknn = self.target_.dknn
        if not reset:
            check_fitted_shape(
                X,
                image_shape,
                self.input_shape_,
                self.n_features_in_,
                type(self).__name__,
            )
        elif dknn is not None:
            # the attacked DkNN knows its input layout: never reinterpret X's
            shape = dknn.input_shape_
            n_features = prod(shape) if shape is not None else dknn.n_features_in_
            check_fitted_shape(X, image_shape, shape, n_features, "attacked DkNN")
        X_flat = validate_data(self, X_flat, dtype=np.float32, reset=reset)
        if dknn is not None:
            check_value_range(
                X_flat, getattr(dknn, "input_range_", None), "attacked DkNN"
            )
        if reset:
            self.input_shape_: tuple[int, ...] | None = (
                self.target_.input_shape or image_shape
            )
        if self.input_shape_ is None:
            return X_flat
        return X_flat.reshape(X_flat.shape[0], *self.input_shape_)

    def _bounds(
        self, sample_shape: tuple[int, ...]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """clip_min and clip_max broadcast to one sample's shape, checked.

        A flat bound of one value per feature, shape ``(prod(sample_shape),)``,
        applies to the features in row-major order, as flat rows hold them.
        """
        n_features = prod(sample_shape)

        def broadcast(bound: Any) -> NDArray[np.float64]:
            bound = np.asarray(bound, np.float64)
            if bound.ndim == 1 and bound.size == n_features and len(sample_shape) > 1:
                bound = bound.reshape(sample_shape)  # one bound per flat feature
            return np.broadcast_to(bound, sample_shape)

        try:
            lo, hi = broadcast(self.clip_min), broadcast(self.clip_max)
        except ValueError:
            raise ValueError(
                "clip_min and clip_max must be scalars, arrays of one value per "
                f"feature (shape ({n_features},)) or broadcastable to one sample's "
                f"shape {sample_shape}; got shapes {np.shape(self.clip_min)} and "
                f"{np.shape(self.clip_max)}."
            ) from None
        if self._tanh_box():
            check_tanh_box(lo, hi)
        check_box(lo, hi)
        return lo, hi

    def _check_budgets(self, lo: NDArray, hi: NDArray) -> None:
        """Warn when a budget or step is wider than the whole box (a unit mistake)."""
        width = float(np.max(hi - lo))
        for name, value in self._budgets().items():
            if value > width:
                warn(
                    f"{name}={value:g} exceeds the clip box [clip_min, clip_max] "
                    f"(its widest side is {width:g}), so it does not limit the "
                    f"attack. For pixels in [0, 1], did you mean {name}={value:g}/255? "
                    "Otherwise set clip_min / clip_max to the inputs' range.",
                    AttackBudgetWarning,
                )

    def _report_zero_gradient(self, zero_gradient: NDArray[np.bool_]) -> None:
        self.n_zero_gradient_ = int(zero_gradient.sum())
        if self.n_zero_gradient_:
            warn(
                f"{self.n_zero_gradient_} of {zero_gradient.size} inputs had an "
                "exactly zero gradient of the loss at every step (e.g. a softmax "
                "saturated in float32, or dead ReLUs): the attack could not move "
                "them, and they are returned where it started (unchanged without a "
                "random start). See n_zero_gradient_.",
                ZeroGradientWarning,
            )

    def _box(self, X_net: NDArray[np.float32]) -> tuple[torch.Tensor, torch.Tensor]:
        lo64, hi64 = self._bounds(X_net.shape[1:])
        lo, hi = lo64.astype(np.float32), hi64.astype(np.float32)
        below = X_net < lo - _BOX_TOLERANCE
        above = X_net > hi + _BOX_TOLERANCE
        if below.any() or above.any():
            raise ValueError(
                f"{int(below.sum() + above.sum())} input values lie outside the clip "
                f"box [clip_min, clip_max] (X ranges over [{X_net.min():.4g}, "
                f"{X_net.max():.4g}]); rescale X or set clip_min / clip_max."
            )
        if self._tanh_box():
            warn_wide_tanh_box(X_net, lo64, hi64)
        device = self.target_.device
        lo_t = torch.from_numpy(lo.copy()).to(device)
        hi_t = torch.from_numpy(hi.copy()).to(device)
        return lo_t, hi_t

    def _perturb_batches(
        self,
        X_net: NDArray[np.float32],
        t: NDArray[np.int64],
        lo: torch.Tensor,
        hi: torch.Tensor,
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """The attack on every batch, and the rows whose gradient was always 0."""
        out = np.empty_like(X_net)
        zero_gradient = np.zeros(X_net.shape[0], dtype=bool)
        device = self.target_.device
        # a generator per call: the same random_state gives the same result
        generator = torch.Generator().manual_seed(int(self._rng().randint(2**31 - 1)))
        starts = range(0, X_net.shape[0], self.batch_size)
        with eval_mode(self.target_.module):
            for start in tqdm(
                starts, desc=type(self).__name__, disable=self.verbose <= 0
            ):
                stop = start + self.batch_size
                x = torch.from_numpy(X_net[start:stop]).to(device)
                labels = torch.from_numpy(t[start:stop]).to(device)
                counter = _ZeroGradientRows()
                token = _ZERO_GRADIENT.set(counter)
                try:
                    x_adv = self._perturb(x, labels, lo, hi, generator)
                finally:
                    _ZERO_GRADIENT.reset(token)
                out[start:stop] = x_adv.cpu().numpy()
                if counter.valid and counter.rows is not None:
                    zero_gradient[start:stop] = counter.rows.cpu().numpy()
        return out, zero_gradient

    def _rng(self) -> np.random.RandomState:
        return check_random_state(self.random_state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = False
        return tags
