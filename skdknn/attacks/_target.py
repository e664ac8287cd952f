"""The attacked model: its torch module, input shape, classes and clean predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet
from torch import nn

from .._activations import eval_mode, module_device
from .._classifier import DeepKNNClassifier

__all__ = ["AttackTarget", "encode_labels", "resolve_target"]


def encode_labels(y: Any, classes: NDArray) -> NDArray[np.int64]:
    """Indices in ``classes`` of the labels ``y``; ValueError for any other label.

    Every attack taking labels checks them with this function: a label that is
    not a class of the attacked model would otherwise be attacked silently (no
    output of the network, no class mean, matches it).
    """
    y_arr = np.asarray(y)
    classes = np.asarray(classes)
    order = np.argsort(classes, kind="stable")
    try:
        position = np.searchsorted(classes, y_arr, sorter=order)
    except TypeError:  # e.g. string labels for integer classes
        position = np.zeros(y_arr.shape, dtype=np.intp)
    idx = order[np.clip(position, 0, len(classes) - 1)]
    unknown = classes[idx] != y_arr
    if np.any(unknown):
        raise ValueError(
            f"Labels {np.unique(y_arr[unknown])[:5].tolist()} are not classes of "
            f"the attacked model ({classes.tolist()})."
        )
    return idx.astype(np.int64)


@dataclass
class AttackTarget:
    """What an attack needs to know about the model it attacks.

    Attributes
    ----------
    module : torch.nn.Module
        The network, returning logits.
    input_shape : tuple of int or None
        Shape of one network input; flat rows are reshaped to it.
    classes : ndarray or None
        Labels of the network's outputs, in order (None: the output indices).
    estimator : object
        The attacked estimator itself (unwrapped from FrozenEstimator).
    """

    module: nn.Module
    input_shape: tuple[int, ...] | None
    classes: NDArray | None
    estimator: Any

    @property
    def device(self) -> torch.device:
        return module_device(self.module)

    @property
    def dknn(self) -> DeepKNNClassifier | None:
        """The attacked DkNN, if the target is one."""
        est = self.estimator
        return est if isinstance(est, DeepKNNClassifier) else None

    def encode(
        self, y: Any, X_net: NDArray[np.float32] | None = None
    ) -> NDArray[np.int64]:
        """Output indices of the labels ``y`` (checked against ``classes``).

        For a bare torch module (no ``classes``) the labels are output indices,
        checked against the number of outputs on one row of ``X_net`` if given.
        """
        y_arr = np.asarray(y)
        if self.classes is None:
            if not np.issubdtype(y_arr.dtype, np.integer):
                raise ValueError(
                    "Labels for a torch module must be integer output indices; got "
                    f"dtype {y_arr.dtype}."
                )
            if X_net is not None and len(X_net) and y_arr.size:
                n_outputs = self._n_outputs(X_net[:1])
                bad = (y_arr < 0) | (y_arr >= n_outputs)
                if bad.any():
                    raise ValueError(
                        f"Labels {np.unique(y_arr[bad])[:5].tolist()} are not classes "
                        f"of the attacked model: its network has {n_outputs} outputs, "
                        f"so labels must be output indices in [0, {n_outputs - 1}]."
                    )
            return y_arr.astype(np.int64)
        return encode_labels(y_arr, self.classes)

    def _n_outputs(self, x: NDArray[np.float32]) -> int:
        """Number of logits the module returns (one forward pass on ``x``)."""
        with eval_mode(self.module), torch.inference_mode():
            logits = self.module(torch.from_numpy(x).to(self.device))
        return int(logits.shape[-1])

    def predict_indices(self, X_net: NDArray[np.float32], batch_size: int) -> NDArray:
        """The attacked model's own predictions on clean inputs, as output indices."""
        dknn = self.dknn
        if dknn is not None:
            return self.encode(dknn.predict(X_net))
        return network_predict(self.module, X_net, batch_size)


def network_predict(
    module: nn.Module, X: NDArray[np.float32], batch_size: int
) -> NDArray[np.int64]:
    """Argmax of the module's logits, in eval mode and without autograd."""
    device = module_device(module)
    out = np.empty(X.shape[0], dtype=np.int64)
    with eval_mode(module), torch.inference_mode():
        for start in range(0, X.shape[0], batch_size):
            batch = torch.from_numpy(X[start : start + batch_size]).to(device)
            out[start : start + batch_size] = module(batch).argmax(1).cpu().numpy()
    return out


_NOT_FITTED = (
    "The attacked %(name)s is not fitted. Fit it before the attack, and wrap it in "
    "sklearn.frozen.FrozenEstimator when the attack is cloned (e.g. by GridSearchCV "
    "or clone), which otherwise clones the model unfitted."
)


def resolve_target(estimator: Any) -> AttackTarget:
    """Unwrap the attacked model: a fitted DkNN, skorch net or torch module.

    Raises NotFittedError for an unfitted estimator and TypeError for other objects.
    """
    while isinstance(estimator, FrozenEstimator):  # nested wrappers too
        estimator = estimator.estimator
    if isinstance(estimator, DeepKNNClassifier):
        check_is_fitted(estimator, msg=_NOT_FITTED)
        return AttackTarget(
            estimator.module_, estimator.input_shape_, estimator.classes_, estimator
        )
    if isinstance(estimator, NeuralNet):
        if not getattr(estimator, "initialized_", False):
            raise NotFittedError(_NOT_FITTED % {"name": type(estimator).__name__})
        classes = getattr(estimator, "classes_", None)
        return AttackTarget(
            estimator.module_,
            None,
            None if classes is None else np.asarray(classes),
            estimator,
        )
    if isinstance(estimator, nn.Module):
        return AttackTarget(estimator, None, None, estimator)
    raise TypeError(
        "estimator must be a fitted DeepKNNClassifier, a fitted skorch net or a torch "
        f"module (optionally in FrozenEstimator); got {type(estimator).__name__}."
    )
