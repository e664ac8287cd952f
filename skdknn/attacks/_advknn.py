"""AdvKNNAttack: gradient attacks through a differentiable deep kNN block (DkNNB)."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .. import conformal
from .._activations import eval_mode, extract_activations, forward_to_layers
from .._classifier import DeepKNNClassifier
from .._graph import match_layer
from ._base import GradientAttack, _loss_gradient_sign, bim, fgsm
from ._bim import check_step
from ._cw import CarliniWagnerL2Attack, carlini_wagner_l2

__all__ = ["AdvKNNAttack", "dknnb_loss"]

# CarliniWagnerL2Attack's settings that AdvKNNAttack(method="cw") shares
_CW_PARAMS = (
    "confidence",
    "initial_const",
    "binary_search_steps",
    "learning_rate",
    "abort_early",
)


def dknnb_loss(
    q_log: torch.Tensor, p: torch.Tensor, lam: float, consistency: bool
) -> torch.Tensor:
    """The DkNNB training loss: lam * CE(q, t) + KL(p || q), t = argmax p.

    Parameters
    ----------
    q_log : tensor of shape (n, n_classes)
        Log-probabilities of the head, log q(x).
    p : tensor of shape (n, n_classes)
        The kNN's neighbour label distribution p(x) (rows sum to 1).
    lam : float
        Weight of the cross-entropy term.
    consistency : bool
        Add the consistency-learning term KL(p || q); without it the loss is the
        cross-entropy alone (the paper's plain "DkNNB" ablation).

    Returns
    -------
    loss : scalar tensor, averaged over the batch.
    """
    target = p.argmax(dim=1)
    ce = F.nll_loss(q_log, target)
    if not consistency:
        return ce
    # KL(p || q) = sum_j p_j (log p_j - log q_j); F.kl_div takes log q first
    return lam * ce + F.kl_div(q_log, p, reduction="batchmean")


class _Heads(nn.Module):
    """One head per layer; q(x) is the average of the heads' softmax outputs."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        probs = [
            F.softmax(head(f), dim=1)
            for head, f in zip(self.heads, features, strict=True)
        ]
        return torch.log(torch.stack(probs).mean(dim=0).clamp_min(1e-12))


class AdvKNNAttack(GradientAttack):
    """AdvKNN: FGSM, BIM or CW through a deep kNN block imitating the DkNN's kNN.

    A kNN has no useful gradient, so AdvKNN (Li et al., 2019) trains a small
    differentiable head h_l on a layer's activations to imitate the kNN's output
    distribution p(x) = n_{l,.}(x) / k, with the consistency-learning loss
    ``lam * CE(q, argmax p) + KL(p || q)``, q = softmax(h_l(phi_l(x))). The attack
    then runs FGSM or BIM through x -> phi_l(x) -> h_l, pushing each input away from
    the kNN's clean prediction (or, with ``method="cw"``, the Carlini-Wagner L2
    attack on the head's log-probabilities). With several layers, one head per
    layer is trained jointly so that the average of their outputs imitates the
    layer-averaged distribution of the DkNN.

    Parameters
    ----------
    estimator : DeepKNNClassifier
        The fitted DkNN to attack (optionally in ``FrozenEstimator``).
    layer : str or "all", default="all"
        The attacked layer (one of the DkNN's ``layers_``; the papers attack the
        third), or ``"all"`` for every DkNN layer.
    method : {"fgsm", "bim", "cw"}, default="fgsm"
        Gradient attack run through the head: FGSM, BIM, or the Carlini-Wagner L2
        attack (see :class:`CarliniWagnerL2Attack`; its margin is taken on the
        head's log-probabilities log q, whose differences are the head's logit
        differences for one layer).
    eps : float, default=0.25
        L-infinity budget of FGSM and BIM (CW has none).
    step : float, default=0.01
        BIM step size (at most ``eps``).
    n_iter : int, default=100
        BIM iterations; for CW, Adam iterations per binary-search step.
    confidence : float, default=0.0
        CW's margin kappa (``method="cw"`` only; this and the next four are the
        CW settings of :class:`CarliniWagnerL2Attack`).
    initial_const : float, default=1e-2
        CW's first trade-off constant ``c``.
    binary_search_steps : int, default=5
        CW's outer steps adjusting ``c`` per input.
    learning_rate : float, default=1e-1
        CW's Adam learning rate.
    abort_early : bool, default=True
        Whether CW stops optimising an input once its loss stops decreasing.
    lam : float, default=0.3
        Weight of the cross-entropy term of the head's loss.
    consistency : bool, default=True
        Train with the consistency-learning KL term; ``False`` trains with the
        cross-entropy only (the paper's "DkNNB" row without "CL").
    head : callable, default=None
        ``head(n_features, n_classes) -> torch.nn.Module`` building a layer's head,
        e.g. a module class; ``None`` is one linear layer, as in the paper.
    head_epochs : int, default=30
        Training epochs of the heads.
    head_lr : float, default=1e-3
        Adam learning rate of the heads.
    head_batch_size : int, default=128
        Training batch size of the heads.
    validation_fraction : float, default=0.1
        Share of ``X`` held out to measure how often the heads agree with the kNN
        (``agreement_``); 0 trains on everything and leaves ``agreement_`` as NaN.
    boundary_eps : float, default=0.0
        Also train the heads on one perturbed copy of each training row,
        ``clip(x + u * boundary_eps * sign(grad_x CE(f(x), t)))`` with ``u``
        uniform in [0, 1] per row and ``t`` the kNN's label of ``x`` (FGSM through
        the network at a random strength), with the kNN distributions of the
        copies as targets. A training point's leave-one-out distribution is
        almost one-hot, so a head trained on those alone learns little about
        where the kNN's distribution changes; the copies sample the way to the
        boundary. A copy's own source point may count among its neighbours (a
        bias of at most 1/k). ``0`` (the default) is the paper's recipe.
    clip_min, clip_max : float or array-like, default=0.0, 1.0
        Box of valid inputs.
    batch_size : int, default=256
        Inputs per gradient computation during the attack.
    device : str, default=None
        Torch device for the attack; ``None`` uses the network's.
    random_state : int, RandomState instance or None, default=None
        Seeds the heads' initialisation, shuffling and validation split.
    verbose : int, default=0
        Progress bars when positive.

    Attributes
    ----------
    layers_ : list of str
        The attacked layers.
    heads_ : torch.nn.Module
        The trained heads (``heads_.heads[i]`` for ``layers_[i]``).
    loss_curve_ : list of float
        Mean training loss of each epoch.
    agreement_ : float
        Share of held-out points where the heads' prediction equals the kNN's.
    n_features_in_ : int
        Values per input row.

    References
    ----------
    X. Li, Y. Chen, Y. He, H. Xue, "AdvKnn: Adversarial Attacks On K-Nearest
    Neighbor Classifiers With Approximate Gradients", arXiv:1911.06591, 2019.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from skdknn import DeepKNNClassifier
    >>> from skdknn.attacks import AdvKNNAttack
    >>> X, y = make_classification(n_samples=300, n_features=6, random_state=0)
    >>> X = (X - X.min()) / (X.max() - X.min())
    >>> dknn = DeepKNNClassifier(n_neighbors=10, calibration_size=60, max_epochs=20,
    ...                          batch_size=64, random_state=0).fit(X, y)
    >>> attack = AdvKNNAttack(dknn, layer="relu2", eps=0.1, head_epochs=20,
    ...                       random_state=0).fit(X)
    >>> X_adv = attack.transform(X[:5])
    >>> bool(abs(X_adv - X[:5]).max() <= 0.1)  # exactly, in float64 too
    True
    """

    _parameter_constraints: dict[str, Any] = {
        **GradientAttack._parameter_constraints,
        "layer": [str],
        "method": [StrOptions({"fgsm", "bim", "cw"})],
        "step": [Interval(Real, 0, None, closed="neither")],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "lam": [Interval(Real, 0, None, closed="left")],
        "consistency": ["boolean"],
        "head": [callable, None],
        "head_epochs": [Interval(Integral, 1, None, closed="left")],
        "head_lr": [Interval(Real, 0, None, closed="neither")],
        "head_batch_size": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "boundary_eps": [Interval(Real, 0, None, closed="left")],
        **{
            name: CarliniWagnerL2Attack._parameter_constraints[name]
            for name in _CW_PARAMS
        },
    }

    def __init__(
        self,
        estimator: Any,
        *,
        layer: str = "all",
        method: str = "fgsm",
        eps: float = 0.25,
        step: float = 0.01,
        n_iter: int = 100,
        lam: float = 0.3,
        consistency: bool = True,
        head: Callable[[int, int], nn.Module] | None = None,
        head_epochs: int = 30,
        head_lr: float = 1e-3,
        head_batch_size: int = 128,
        validation_fraction: float = 0.1,
        boundary_eps: float = 0.0,
        confidence: float = 0.0,
        initial_const: float = 1e-2,
        binary_search_steps: int = 5,
        learning_rate: float = 1e-1,
        abort_early: bool = True,
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
        self.layer = layer
        self.method = method
        self.step = step
        self.n_iter = n_iter
        self.lam = lam
        self.consistency = consistency
        self.head = head
        self.head_epochs = head_epochs
        self.head_lr = head_lr
        self.head_batch_size = head_batch_size
        self.validation_fraction = validation_fraction
        self.boundary_eps = boundary_eps
        self.confidence = confidence
        self.initial_const = initial_const
        self.binary_search_steps = binary_search_steps
        self.learning_rate = learning_rate
        self.abort_early = abort_early

    def _check_params(self) -> None:
        if self.method == "bim":
            check_step(self.step, self.eps)

    def _budgets(self) -> dict[str, float]:
        if self.method == "bim":
            return {"eps": self.eps, "step": self.step}
        if self.method == "cw":
            return {}  # eps and step play no part
        return {"eps": self.eps}

    def _ball(self) -> float | None:
        return None if self.method == "cw" else float(self.eps)

    def _tanh_box(self) -> bool:
        return self.method == "cw"

    # -- fitting the heads ------------------------------------------------------------
    def _dknn(self) -> DeepKNNClassifier:
        dknn = self.target_.dknn
        if dknn is None:
            raise TypeError(
                "AdvKNNAttack attacks a DeepKNNClassifier (it imitates its neighbour "
                f"search); got {type(self.target_.estimator).__name__}. Use "
                "FGSMAttack or BIMAttack for a plain network."
            )
        return dknn

    def _resolve_layers(self, dknn: DeepKNNClassifier) -> list[str]:
        if self.layer == "all":
            return list(dknn.layers_)
        try:
            position = match_layer(dknn.module_, self.layer, dknn.layers_)
        except ValueError:
            raise ValueError(
                f"layer={self.layer!r} is not a layer of the attacked DkNN; choose "
                f"one of {dknn.layers_} or 'all'."
            ) from None
        return [dknn.layers_[position]]

    def _layer_activations(self, X_net: NDArray[np.float32]) -> list[NDArray]:
        return extract_activations(
            self.target_.module, X_net, self.layers_, batch_size=self.batch_size
        )

    def neighbor_distribution(
        self, X: Any, *, exclude_self: bool = False
    ) -> NDArray[np.float64]:
        """The imitated kNN distribution p(x): layer-averaged neighbour label shares.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.
        exclude_self : bool, default=False
            Leave out, for each row, an indexed point at distance 0 (the row itself
            when X holds training points), as ``kneighbors(X=None)`` does.

        Returns
        -------
        p : ndarray of shape (n_samples, n_classes)
        """
        X_net = self._validate_input(X, reset=False)
        return self._distribution(X_net, exclude_self=exclude_self)

    def _distribution(
        self, X_net: NDArray[np.float32], *, exclude_self: bool
    ) -> NDArray[np.float64]:
        """p(x) from the attacked DkNN's public neighbour search."""
        dknn = self._dknn()
        k = dknn.n_neighbors
        layer = None if len(self.layers_) > 1 else self.layers_[0]
        dist, ind = dknn.kneighbors(X_net, n_neighbors=k + exclude_self, layer=layer)
        if layer is not None:
            dist, ind = dist[:, None], ind[:, None]
        if exclude_self:
            # drop the point itself (distance 0) when indexed, else the farthest
            n, n_layers, _ = ind.shape
            drop = np.where(dist[:, :, 0] == 0, 0, k)
            keep = np.ones_like(ind, dtype=bool)
            keep[np.arange(n)[:, None], np.arange(n_layers), drop] = False
            ind = ind[keep].reshape(n, n_layers, k)
        # kneighbors returns rows of the fit X; y_index_ follows train_indices_
        label_of = np.zeros(int(dknn.train_indices_.max()) + 1, dtype=np.intp)
        label_of[dknn.train_indices_] = dknn.y_index_
        counts = conformal.neighbor_label_counts(label_of[ind], dknn.classes_.size)
        return conformal.neighbor_proba(counts)

    def _fit(self, X_net: NDArray[np.float32], y: Any) -> None:
        dknn = self._dknn()
        self.layers_ = self._resolve_layers(dknn)
        n_val = self._n_validation(len(X_net))
        acts = self._layer_activations(X_net)
        p = self._distribution(X_net, exclude_self=True)
        rng = self._rng()
        order = rng.permutation(len(p))
        val, train = order[:n_val], order[n_val:]
        head_seed = int(rng.randint(2**31 - 1))
        train_acts = [a[train] for a in acts]
        train_p = p[train]
        if self.boundary_eps > 0:
            # copies of the training rows only: agreement_ stays on clean rows
            X_copy = self._boundary_copies(X_net[train], train_p.argmax(1), rng)
            copy_acts = self._layer_activations(X_copy)
            copy_p = self._distribution(X_copy, exclude_self=False)
            pairs = zip(train_acts, copy_acts, strict=True)
            train_acts = [np.concatenate(pair) for pair in pairs]
            train_p = np.concatenate([train_p, copy_p])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
            self.heads_ = self._new_heads([a.shape[1] for a in acts], p.shape[1])
            self.loss_curve_ = self._train_heads(
                [torch.from_numpy(a) for a in train_acts],
                torch.from_numpy(train_p).float(),
            )
        self.agreement_ = float("nan")
        if n_val:
            with torch.inference_mode():
                q_log = self.heads_([torch.from_numpy(a[val]) for a in acts])
            self.agreement_ = float(
                np.mean(q_log.argmax(1).numpy() == p[val].argmax(axis=1))
            )

    def _n_validation(self, n_rows: int) -> int:
        """Rows held out for ``agreement_``; an error unless both parts are used."""
        n_val = round(self.validation_fraction * n_rows)
        if n_rows - n_val < 1 or (self.validation_fraction > 0 and n_val < 1):
            raise ValueError(
                f"validation_fraction={self.validation_fraction:g} of the {n_rows} "
                f"rows of X holds out {n_val} rows for validation and leaves "
                f"{n_rows - n_val} to train the heads on; at least 1 training row "
                "(and 1 validation row when validation_fraction > 0) must remain. "
                "Pass more rows, or a validation_fraction that leaves both (0 "
                "trains on every row and skips agreement_)."
            )
        return n_val

    def _boundary_copies(
        self, X_net: NDArray[np.float32], t: NDArray[np.int64], rng: Any
    ) -> NDArray[np.float32]:
        """One perturbed copy per row, toward the network's boundary away from t.

        x + u * boundary_eps * sign(grad_x CE(f(x), t)), u ~ U(0, 1) per row,
        clipped to the box: FGSM through the network at a random strength, so the
        copies sample the way from each point to (and past) the boundary.
        """
        strength = rng.uniform(size=len(X_net)) * self.boundary_eps
        lo, hi = self._box(X_net)
        module = self.target_.module
        device = self.target_.device
        out = np.empty_like(X_net)
        with eval_mode(module):
            for start in range(0, len(X_net), self.batch_size):
                stop = start + self.batch_size
                x = torch.from_numpy(X_net[start:stop]).to(device)
                labels = torch.from_numpy(t[start:stop]).to(device)
                eps = torch.from_numpy(strength[start:stop]).float().to(device)
                eps = eps.view(-1, *([1] * (x.dim() - 1)))
                x_copy = x + eps * _loss_gradient_sign(module, x, labels)
                out[start:stop] = torch.clamp(x_copy, lo, hi).cpu().numpy()
        return out

    def head_proba(self, X: Any) -> NDArray[np.float64]:
        """The deep kNN block's output distribution q(x) (the heads' average).

        The DkNNB is a classifier in its own right (the AdvKNN paper reports its
        accuracy): ``classes_[head_proba(X).argmax(1)]`` is its prediction, to
        compare with the kNN's (``neighbor_distribution``).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        q : ndarray of shape (n_samples, n_classes)
            Rows sum to 1; columns follow the attacked DkNN's ``classes_``.
        """
        check_is_fitted(self, "heads_")
        X_net = self._validate_input(X, reset=False)
        acts = self._layer_activations(X_net)
        q = np.empty((X_net.shape[0], self._dknn().classes_.size))
        device = next(self.heads_.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(q), self.batch_size):
                stop = start + self.batch_size
                batch = [torch.from_numpy(a[start:stop]).to(device) for a in acts]
                q[start:stop] = self.heads_(batch).exp().cpu().numpy()
        return q

    def _new_heads(self, widths: list[int], n_classes: int) -> _Heads:
        make = self.head if self.head is not None else nn.Linear
        return _Heads([make(width, n_classes) for width in widths])

    def _train_heads(
        self, features: list[torch.Tensor], p: torch.Tensor
    ) -> list[float]:
        optimizer = torch.optim.Adam(self.heads_.parameters(), lr=self.head_lr)
        self.heads_.train()
        curve = []
        n = p.shape[0]
        for _ in range(self.head_epochs):
            order = torch.randperm(n)
            total = 0.0
            for start in range(0, n, self.head_batch_size):
                idx = order[start : start + self.head_batch_size]
                q_log = self.heads_([f[idx] for f in features])
                loss = dknnb_loss(q_log, p[idx], self.lam, self.consistency)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            curve.append(total / n)
        self.heads_.eval()
        return curve

    # -- the attack -----------------------------------------------------------------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        features = forward_to_layers(self.target_.module, x, self.layers_)
        return self.heads_(features)

    def _clean_labels(self, X_net: NDArray[np.float32]) -> NDArray[np.int64]:
        """The kNN's clean prediction on the attacked layers (the DkNN's for all)."""
        return self._distribution(X_net, exclude_self=False).argmax(axis=1)

    def _perturb(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        self.heads_.to(x.device)
        if self.method == "fgsm":
            return fgsm(self._logits, x, t, self.eps, lo, hi)
        if self.method == "cw":
            return carlini_wagner_l2(
                self._logits,
                x,
                t,
                lo,
                hi,
                n_iter=self.n_iter,
                **{name: getattr(self, name) for name in _CW_PARAMS},
            )
        return bim(self._logits, x, t, self.eps, self.step, self.n_iter, lo, hi)
