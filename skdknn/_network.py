"""The network stage: build, train (or take prefit) and unwrap the torch module."""

from __future__ import annotations

import copy
import inspect
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from skorch import NeuralNet, NeuralNetClassifier
from torch import nn

from ._warnings import warn
from .exceptions import RetrainingWarning
from .nets import MLP, DkNNPaperCNN

__all__ = [
    "build_network",
    "initialize_network",
    "is_prefit",
    "torch_module",
    "train_network",
]


def is_prefit(net: Any) -> bool:
    """Whether ``net`` is a prefit network wrapped in ``FrozenEstimator``."""
    return isinstance(net, FrozenEstimator)


def torch_module(net: Any) -> nn.Module:
    """The torch module inside a skorch net, a FrozenEstimator or a bare module."""
    while isinstance(net, FrozenEstimator):  # FrozenEstimator(FrozenEstimator(.))
        net = net.estimator
    if isinstance(net, nn.Module):
        return net
    if isinstance(net, NeuralNet):
        if not hasattr(net, "module_"):
            raise ValueError(
                "The skorch net wrapped in FrozenEstimator is not initialized; fit it "
                "(or call .initialize()) before freezing it."
            )
        module = net.module_
        assert isinstance(module, nn.Module)
        return module
    raise TypeError(_net_type_message(net))


def _net_type_message(net: Any) -> str:
    return (
        "net must be None, a torch.nn.Module class or instance, a skorch NeuralNet, "
        "or a prefit net (skorch net or torch module) wrapped in "
        f"sklearn.frozen.FrozenEstimator; got {type(net).__name__}."
    )


def _trained_evidence(net: Any, max_epochs: int) -> str | None:
    """Why ``net`` looks already trained, or None.

    Detected: a skorch net that is initialized (``initialized_``; fitted when its
    history has epochs), and a torch module in eval mode or whose parameters hold
    gradients (what a training loop leaves behind). A module whose weights were
    loaded from a file and left in training mode cannot be told from a fresh one.
    """
    if isinstance(net, NeuralNet) and getattr(net, "initialized_", False):
        epochs = len(getattr(net, "history", []))
        state = f"fitted ({epochs} epochs in its history)" if epochs else "initialized"
        return (
            f"net is a {state} skorch {type(net).__name__}; DeepKNNClassifier clones "
            "it, which discards its weights, and trains it again from scratch"
        )
    if isinstance(net, nn.Module):
        if not net.training:
            reason = "is in eval mode"
        elif any(p.grad is not None for p in net.parameters()):
            reason = "holds gradients from training"
        else:
            return None
        return (
            f"net is a torch module that {reason}; DeepKNNClassifier trains a copy "
            f"of it further (fine-tuning) for max_epochs={max_epochs} epochs"
        )
    return None


def _warn_if_trained(net: Any, max_epochs: int) -> None:
    """Warn before (re)training a network that looks trained already."""
    if isinstance(net, nn.Module) and max_epochs == 0:
        return  # a module copy trained for no epoch is used as it is
    evidence = _trained_evidence(net, max_epochs)
    if evidence is not None:
        warn(
            f"{evidence}. Wrap a trained network in sklearn.frozen."
            "FrozenEstimator(net) to use it as is, without training.",
            RetrainingWarning,
        )


def _default_module(
    input_shape: tuple[int, ...] | None, n_features: int, n_classes: int
) -> tuple[type[nn.Module], dict[str, Any]]:
    if input_shape is None:
        return MLP, {"n_features": n_features, "n_classes": n_classes}
    if len(input_shape) != 3 or min(input_shape[1:]) < 24:
        raise ValueError(
            f"The default network (the DkNN paper's CNN) needs images of at least "
            f"24x24 pixels; got input shape {input_shape}. Pass net= (e.g. "
            "skdknn.nets.LeNet5) or flat rows without input_shape to use an MLP."
        )
    return DkNNPaperCNN, {"input_shape": input_shape, "n_classes": n_classes}


def _shape_kwargs(
    cls: type[nn.Module],
    input_shape: tuple[int, ...] | None,
    n_features: int,
    n_classes: int,
) -> dict[str, Any]:
    """The data-dependent arguments a module class's constructor declares.

    Fills ``n_classes``, ``n_features`` and ``input_shape`` (for image input) when
    the constructor takes them, as the classes of :mod:`skdknn.nets` do.
    """
    known: dict[str, Any] = {"n_classes": n_classes, "n_features": n_features}
    if input_shape is not None:
        known["input_shape"] = input_shape
    accepted = inspect.signature(cls).parameters
    return {name: value for name, value in known.items() if name in accepted}


def build_network(
    net: Any,
    *,
    input_shape: tuple[int, ...] | None,
    n_features: int,
    n_classes: int,
    max_epochs: int,
    lr: float,
    batch_size: int,
    device: str,
    verbose: int,
) -> Any:
    """An unfitted skorch classifier for ``net``, or ``net`` itself when prefit.

    ``None`` builds the default network (the DkNN paper CNN for images, an MLP for
    flat rows); a torch module class or instance is wrapped in a
    ``NeuralNetClassifier`` with the training knobs; a skorch net is cloned with its
    own settings; a ``FrozenEstimator`` is returned as is (never retrained).
    """
    if is_prefit(net):
        torch_module(net)  # fails early on an uninitialized or foreign net
        return net
    _warn_if_trained(net, max_epochs)
    if isinstance(net, NeuralNet):
        return clone(net)
    module_kwargs: dict[str, Any] = {}
    module: type[nn.Module] | nn.Module
    if net is None:
        module, module_kwargs = _default_module(input_shape, n_features, n_classes)
    elif isinstance(net, nn.Module):
        module = copy.deepcopy(net)  # never train the user's parameter in place
    elif isinstance(net, type) and issubclass(net, nn.Module):
        module = net
        module_kwargs = _shape_kwargs(net, input_shape, n_features, n_classes)
    else:
        raise TypeError(_net_type_message(net))
    return NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=lr,
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_split=None,
        iterator_train__shuffle=True,
        classes=np.arange(n_classes),
        device=device,
        verbose=verbose,
        **{f"module__{key}": value for key, value in module_kwargs.items()},
    )


def initialize_network(net: Any) -> nn.Module:
    """Create the module of an unfitted net (prefit nets are left as they are).

    Layer names can then be checked before any training time is spent.
    """
    if not is_prefit(net):
        net.initialize()
    return torch_module(net)


def train_network(net: Any, X: NDArray[np.float32], y: NDArray) -> Any:
    """Train an initialized net on (X, y); a prefit net is returned untouched."""
    if not is_prefit(net):
        # partial_fit trains the module initialize() made, without re-creating it
        net.partial_fit(X, y.astype(np.int64))
    return net
