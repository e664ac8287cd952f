"""FGSMAttack: the fast gradient sign method as a scikit-learn transformer."""

from __future__ import annotations

import torch

from ._base import GradientAttack, fgsm

__all__ = ["FGSMAttack"]


class FGSMAttack(GradientAttack):
    """Fast gradient sign method (L-infinity), through the attacked model's network.

    ``x' = clip(x + eps * sign(grad_x CE(f(x), t)))`` with ``f`` the network's logits
    and ``t`` the model's own prediction on the clean ``x`` (or given labels, see
    :meth:`generate`). Goodfellow, Shlens & Szegedy, "Explaining and Harnessing
    Adversarial Examples", ICLR 2015.

    Parameters
    ----------
    estimator : DeepKNNClassifier, skorch net or torch.nn.Module
        The fitted model to attack (optionally in ``FrozenEstimator``); gradients
        flow through its network, which must return logits.
    eps : float, default=0.25
        L-infinity budget (0.25 on MNIST in the DkNN and AdvKNN papers).
    clip_min, clip_max : float or array-like, default=0.0, 1.0
        Box of valid inputs: scalars or arrays broadcastable to one sample's shape.
    batch_size : int, default=256
        Inputs per gradient computation.
    device : str, default=None
        Torch device for the attack; ``None`` uses the network's. The network is
        moved there for the attack and back afterwards.
    random_state : int, RandomState instance or None, default=None
        Unused by FGSM (deterministic); kept for a uniform API.
    verbose : int, default=0
        Progress bar over batches when positive.

    Attributes
    ----------
    n_features_in_ : int
        Values per input row.
    input_shape_ : tuple of int or None
        Shape of one network input.

    See Also
    --------
    BIMAttack : The iterated version.
    AdvKNNAttack : FGSM through a differentiable imitation of the kNN.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skdknn.attacks import FGSMAttack
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> X = np.random.default_rng(0).uniform(0.2, 0.8, size=(5, 4)).astype("float32")
    >>> X_adv = FGSMAttack(net, eps=0.1).fit(X).transform(X)
    >>> X_adv.shape, X_adv.dtype
    ((5, 4), dtype('float32'))
    >>> bool(np.abs(X_adv - X).max() <= 0.1)  # exactly: no rounding slack
    True
    """

    def _perturb(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return fgsm(self._logits, x, t, self.eps, lo, hi)
