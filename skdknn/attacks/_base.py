"""Shared machinery of the L-infinity gradient attacks: batching, labels, the box."""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Callable, Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from tqdm.auto import tqdm

from .._activations import eval_mode, module_device
from .._validation import as_flat_rows
from ._target import AttackTarget, resolve_target

__all__ = ["GradientAttack", "bim", "fgsm"]

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


def _loss_gradient_sign(logits_fn: LogitsFn, x: torch.Tensor, t: torch.Tensor) -> Any:
    """sign(grad_x CE(logits(x), t)), without touching the parameters' gradients."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(logits_fn(x), t, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


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
        """
        self._validate_params()
        self._check_params()
        self.target_: AttackTarget = resolve_target(self.estimator)
        X_net = self._validate_input(X, reset=True)
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
        """
        check_is_fitted(self, "target_")
        X_arr = X if hasattr(X, "dtype") else np.asarray(X)
        X_net = self._validate_input(X, reset=False)
        if y is None:
            t = self._clean_labels(X_net)
        else:
            t = self.target_.encode(y)
            if t.shape != (X_net.shape[0],):
                raise ValueError(
                    f"y must have shape ({X_net.shape[0]},) to match X; got {t.shape}."
                )
        with on_device(self.target_.module, self.device):
            lo, hi = self._box(X_net)
            X_adv = self._perturb_batches(X_net, t, lo, hi)
        dtype = X_arr.dtype if np.issubdtype(X_arr.dtype, np.floating) else np.float32
        return X_adv.reshape(np.shape(X_arr)).astype(dtype, copy=False)

    # -- internals ------------------------------------------------------------------
    def _validate_input(self, X: Any, *, reset: bool) -> NDArray[np.float32]:
        X_flat, image_shape = as_flat_rows(X)
        X_flat = validate_data(self, X_flat, dtype=np.float32, reset=reset)
        shape = self.target_.input_shape or image_shape
        if reset:
            self.input_shape_ = shape
        elif image_shape is not None and image_shape != self.input_shape_:
            raise ValueError(
                f"X holds images of shape {image_shape}, but the attack was fitted on "
                f"inputs of shape {self.input_shape_}."
            )
        if self.input_shape_ is None:
            return X_flat
        return X_flat.reshape(X_flat.shape[0], *self.input_shape_)

    def _box(self, X_net: NDArray[np.float32]) -> tuple[torch.Tensor, torch.Tensor]:
        sample_shape = X_net.shape[1:]
        try:
            lo = np.broadcast_to(np.asarray(self.clip_min, np.float32), sample_shape)
            hi = np.broadcast_to(np.asarray(self.clip_max, np.float32), sample_shape)
        except ValueError:
            raise ValueError(
                "clip_min and clip_max must be scalars or broadcastable to one "
                f"sample's shape {sample_shape}."
            ) from None
        if np.any(lo >= hi):
            raise ValueError("clip_min must be smaller than clip_max everywhere.")
        below = X_net < lo - _BOX_TOLERANCE
        above = X_net > hi + _BOX_TOLERANCE
        if below.any() or above.any():
            raise ValueError(
                f"{int(below.sum() + above.sum())} input values lie outside the clip "
                f"box [clip_min, clip_max] (X ranges over [{X_net.min():.4g}, "
                f"{X_net.max():.4g}]); rescale X or set clip_min / clip_max."
            )
        device = self.target_.device
        return torch.from_numpy(lo.copy()).to(device), torch.from_numpy(hi.copy()).to(
            device
        )

    def _perturb_batches(
        self,
        X_net: NDArray[np.float32],
        t: NDArray[np.int64],
        lo: torch.Tensor,
        hi: torch.Tensor,
    ) -> NDArray[np.float32]:
        out = np.empty_like(X_net)
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
                x_adv = self._perturb(x, labels, lo, hi, generator)
                out[start:stop] = x_adv.cpu().numpy()
        return out

    def _rng(self) -> np.random.RandomState:
        return check_random_state(self.random_state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = False
        return tags
