"""BIMAttack: the basic iterative method as a scikit-learn transformer."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval

from ._base import GradientAttack, bim

__all__ = ["BIMAttack"]


class BIMAttack(GradientAttack):
    """Basic iterative method (iterated FGSM, L-infinity), through the network.

    ``x_0 = x``; ``x_{i+1} = clip(project_eps(x_i + step * sign(grad CE(f(x_i), t))))``
    for ``n_iter`` steps, with ``t`` fixed from the clean input. Kurakin, Goodfellow
    & Bengio, "Adversarial Examples in the Physical World", ICLR workshop 2017.
    ``n_iter=1, step=eps`` is FGSM.

    Parameters
    ----------
    estimator : DeepKNNClassifier, skorch net or torch.nn.Module
        The fitted model to attack (optionally in ``FrozenEstimator``).
    eps : float, default=0.25
        L-infinity budget.
    step : float, default=0.01
        Step size per iteration; at most ``eps``.
    n_iter : int, default=100
        Number of iterations (the AdvKNN paper's MNIST setting: eps 0.25, step
        0.01, 100 iterations).
    random_start : bool, default=False
        Start from a uniform random point of the eps-ball, clipped to the box
        (PGD, Madry et al. 2018), instead of ``x``.
    n_restarts : int, default=1
        Runs of the attack per input, each from its own random start (needs
        ``random_start=True`` when above 1). Each input keeps its most damaging
        run: one that changes the network's prediction away from the attacked
        label if any does, and among those (or among all, if none does) the one
        of highest cross-entropy loss. Both are judged on the logits the attack
        differentiates (the network's), not on a DkNN's neighbours.
    clip_min, clip_max : float or array-like, default=0.0, 1.0
        Box of valid inputs: scalars or arrays broadcastable to one sample's shape.
    batch_size : int, default=256
        Inputs per gradient computation.
    device : str, default=None
        Torch device for the attack; ``None`` uses the network's.
    random_state : int, RandomState instance or None, default=None
        Seeds the random starts. The same seed gives the same result for the same
        ``batch_size`` (the starts are drawn batch by batch, restart by restart).
    verbose : int, default=0
        Progress bar over batches when positive.

    Attributes
    ----------
    n_features_in_ : int
        Values per input row.
    input_shape_ : tuple of int or None
        Shape of one network input.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skdknn.attacks import BIMAttack
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> X = np.full((2, 4), 0.5, dtype="float32")
    >>> X_adv = BIMAttack(net, eps=0.1, step=0.02, n_iter=10).fit(X).transform(X)
    >>> bool(np.abs(X_adv - X).max() <= 0.1)  # exactly: no rounding slack
    True
    """

    _parameter_constraints: dict[str, Any] = {
        **GradientAttack._parameter_constraints,
        "step": [Interval(Real, 0, None, closed="neither")],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "random_start": ["boolean"],
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        estimator: Any,
        *,
        eps: float = 0.25,
        step: float = 0.01,
        n_iter: int = 100,
        random_start: bool = False,
        n_restarts: int = 1,
        clip_min: Any = 0.0,
        clip_max: Any = 1.0,
        batch_size: int = 256,
        device: str | None = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            estimator,
            eps=eps,
            clip_min=clip_min,
            clip_max=clip_max,
            batch_size=batch_size,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )
        self.step = step
        self.n_iter = n_iter
        self.random_start = random_start
        self.n_restarts = n_restarts

    def _check_params(self) -> None:
        check_step(self.step, self.eps)
        if self.n_restarts > 1 and not self.random_start:
            raise ValueError(
                f"n_restarts={self.n_restarts} needs random_start=True: without a "
                "random start every restart gives the same result."
            )

    def _budgets(self) -> dict[str, float]:
        return {"eps": self.eps, "step": self.step}

    def _perturb(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        best = None
        for _ in range(self.n_restarts):
            start = None
            if self.random_start:
                noise = torch.rand(x.shape, generator=generator).to(x.device)
                start = torch.clamp(x + (2 * noise - 1) * self.eps, lo, hi)
            x_adv = bim(
                self._logits, x, t, self.eps, self.step, self.n_iter, lo, hi, start
            )
            if self.n_restarts == 1:
                return x_adv
            best = keep_most_damaging(self._logits, t, best, x_adv)
        assert best is not None
        return best[0]


Damage = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def keep_most_damaging(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    t: torch.Tensor,
    best: Damage | None,
    x_adv: torch.Tensor,
) -> Damage:
    """Per row, the more damaging of ``best`` and ``x_adv`` against labels ``t``.

    Misclassified (argmax of the logits != t) beats correctly classified; within
    the same kind, the higher cross-entropy loss wins (ties keep ``best``).
    Returns (examples, misclassified, loss) of the winners.
    """
    with torch.no_grad():
        logits = logits_fn(x_adv)
        wrong = logits.argmax(dim=1) != t
        loss = F.cross_entropy(logits, t, reduction="none")
    if best is None:
        return x_adv, wrong, loss
    best_x, best_wrong, best_loss = best
    better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
    mask = better.view(-1, *([1] * (x_adv.dim() - 1)))
    return (
        torch.where(mask, x_adv, best_x),
        wrong | best_wrong,
        torch.where(better, loss, best_loss),
    )


def check_step(step: float, eps: float) -> None:
    """BIM's step may not exceed the budget: one step would leave the eps-ball."""
    if step > eps:
        raise ValueError(
            f"step={step} exceeds eps={eps}; a BIM step must not be larger than the "
            "L-infinity budget."
        )
