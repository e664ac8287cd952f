"""A model as data that skops can store and load without running code from the file.

skops stores dictionaries, lists, arrays and scikit-learn-style objects (their
``__dict__``), and refuses on load any type that the caller does not trust. It
cannot store torch tensors, and a skorch net pickles its modules inside its own
state (which unpickling would run). :func:`encode` therefore rewrites a model
into a structure skops stores, and :func:`decode` rebuilds it:

- a torch tensor becomes its numpy array (and whether it is a parameter);
- a torch module becomes its class's dotted name and its attributes (parameters,
  buffers and child modules included); it is rebuilt without calling the class's
  ``__init__``, and only if the class is trusted;
- a skorch net becomes its class's name and its attributes without the optimizer,
  callbacks and history, which are initialised again on load (the training
  history is not kept);
- a fitted neighbour backend becomes a reference to its index files, written and
  read in their engine's own formats by :mod:`skdknn.persistence`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from skops.io.exceptions import UntrustedTypesFoundException
from torch import nn

__all__ = ["decode", "default_trusted", "dotted_name", "encode", "resolve"]

#: Key marking the placeholders that :func:`encode` writes.
TAG = "__skdknn__"

#: Attributes of every torch module that ``nn.Module.__init__`` sets (hooks and
#: flags); they are not stored, and rebuilt empty.
_MODULE_INTERNALS = frozenset(vars(nn.Module())) - {
    "_parameters",
    "_buffers",
    "_modules",
    "_non_persistent_buffers_set",
    "training",
}

#: skorch attributes rebuilt by its ``initialize_*`` methods on load.
_SKORCH_REBUILT = frozenset(
    {"optimizer_", "callbacks_", "history_", "virtual_params_", "_optimizers"}
)


def dotted_name(cls: type) -> str:
    """``module.QualName`` of a class (how skops names types too)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def default_trusted() -> list[str]:
    """Types trusted without being named: skdknn's estimators and networks, and
    the torch, skorch and scikit-learn classes that a fitted DkNN refers to."""
    from sklearn.frozen import FrozenEstimator
    from skorch import NeuralNet, NeuralNetClassifier
    from skorch.dataset import Dataset
    from torch.utils.data import DataLoader

    from . import neighbors, nets
    from ._classifier import DeepKNNClassifier

    classes: list[type] = [
        DeepKNNClassifier,
        FrozenEstimator,
        NeuralNet,
        NeuralNetClassifier,
        Dataset,
        DataLoader,
        nn.CrossEntropyLoss,
        torch.optim.Adam,
        torch.optim.SGD,
    ]
    classes += [
        value
        for value in vars(nets).values()
        if isinstance(value, type) and issubclass(value, nn.Module)
    ]
    classes += [
        value
        for value in vars(neighbors).values()
        if isinstance(value, type) and issubclass(value, neighbors.NeighborsBackend)
    ]
    return sorted({dotted_name(cls) for cls in classes})


def resolve(name: str, trusted: Iterable[str], base: type) -> Any:
    """The class called ``name``, imported only if trusted, and a subclass of
    ``base``. torch's own modules (``torch.nn.modules.*``) are trusted."""
    trusted = set(trusted)
    builtin_module = name.startswith("torch.nn.modules.") and base is nn.Module
    if name not in trusted and not builtin_module:
        raise UntrustedTypesFoundException([name])
    module_name, _, qualname = name.rpartition(".")
    # the longest importable prefix: nested classes are attributes of a class
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute, None)
        break
    else:
        value = None
    if not (isinstance(value, type) and issubclass(value, base)):
        raise TypeError(
            f"{name!r} (module {module_name!r}, name {qualname!r}) is not a "
            f"{base.__name__} class."
        )
    return value


def encode(obj: Any, index_reference: Callable[[Any], dict[str, Any]]) -> Any:
    """``obj`` rewritten into what skops stores (see the module docstring).

    ``index_reference(backend)`` saves a fitted backend's index and returns its
    placeholder. Shared objects stay shared.
    """
    from skorch import NeuralNet

    from .neighbors import NeighborsBackend

    # id -> (object, result): holding the object keeps its id from being reused
    memo: dict[int, tuple[Any, Any]] = {}

    def visit(value: Any) -> Any:
        if id(value) in memo:
            return memo[id(value)][1]
        if isinstance(value, NeighborsBackend) and hasattr(value, "n_samples_fit_"):
            out: Any = index_reference(value)
        elif isinstance(value, torch.Tensor):
            out = {
                TAG: "tensor",
                "array": value.detach().cpu().numpy().copy(),
                "parameter": isinstance(value, nn.Parameter),
                "requires_grad": bool(value.requires_grad),
            }
        elif isinstance(value, nn.Module):
            state = {
                key: item
                for key, item in vars(value).items()
                if key not in _MODULE_INTERNALS
            }
            state["_non_persistent_buffers_set"] = sorted(
                state.get("_non_persistent_buffers_set", ())
            )
            out = {TAG: "module", "class": dotted_name(type(value))}
            memo[id(value)] = value, out
            out["state"] = visit(state)
        elif isinstance(value, NeuralNet):
            state = {
                key: item
                for key, item in vars(value).items()
                if key not in _SKORCH_REBUILT
            }
            out = {TAG: "skorch", "class": dotted_name(type(value))}
            memo[id(value)] = value, out
            out["state"] = visit(state)
        elif isinstance(value, dict):  # OrderedDicts become dicts
            out = {key: visit(item) for key, item in value.items()}
        elif type(value) in (list, tuple, set):
            out = type(value)(visit(item) for item in value)
        elif _is_plain_object(value):
            cls: Any = type(value)
            out = cls.__new__(cls)
            memo[id(value)] = value, out
            out.__dict__.update(visit(dict(vars(value))))
        else:
            out = value
        memo[id(value)] = value, out
        return out

    return visit(obj)


def _is_plain_object(value: Any) -> bool:
    """A scikit-learn-style estimator: its state is its ``__dict__``."""
    return isinstance(value, BaseEstimator) and not isinstance(value, type)


def decode(
    obj: Any,
    trusted: Iterable[str],
    load_index: Callable[[dict[str, Any], Any], Any],
) -> Any:
    """Rebuild what :func:`encode` rewrote, in place where it can.

    ``load_index(placeholder, state)`` returns the backend for an index
    placeholder, its ``state`` already decoded.
    """
    from skorch import NeuralNet

    trusted = list(trusted)
    # id -> (object, result): holding the object keeps its id from being reused
    memo: dict[int, tuple[Any, Any]] = {}

    def visit(value: Any) -> Any:
        if id(value) in memo:
            return memo[id(value)][1]
        out: Any = value
        if isinstance(value, dict) and isinstance(value.get(TAG), str):
            kind = value[TAG]
            if kind == "tensor":
                tensor = torch.from_numpy(np.array(value["array"]))
                if value["parameter"]:
                    out = nn.Parameter(tensor, requires_grad=value["requires_grad"])
                else:
                    out = tensor.requires_grad_(value["requires_grad"])
            elif kind == "module":
                cls = resolve(value["class"], trusted, nn.Module)
                out = cls.__new__(cls)
                nn.Module.__init__(out)
                memo[id(value)] = value, out
                state = visit(value["state"])
                state["_non_persistent_buffers_set"] = set(
                    state["_non_persistent_buffers_set"]
                )
                out.__dict__.update(state)
            elif kind == "skorch":
                cls = resolve(value["class"], trusted, NeuralNet)
                out = cls.__new__(cls)
                memo[id(value)] = value, out
                out.__dict__.update(visit(value["state"]))
                if getattr(out, "initialized_", False):
                    out.history_ = None
                    out.initialize_virtual_params()
                    out.initialize_callbacks()
                    out.initialize_optimizer()
                    out.initialize_history()
            elif kind == "index":
                out = load_index(value, visit(value["state"]))
            else:
                raise ValueError(f"Unknown placeholder {kind!r} in the model file.")
        elif isinstance(value, dict):
            memo[id(value)] = value, value
            for key in list(value):
                value[key] = visit(value[key])
        elif isinstance(value, list):
            memo[id(value)] = value, value
            value[:] = [visit(item) for item in value]
        elif isinstance(value, tuple):
            out = type(value)(visit(item) for item in value)
        elif _is_plain_object(value):
            memo[id(value)] = value, value
            for key, item in list(vars(value).items()):
                value.__dict__[key] = visit(item)
        memo[id(value)] = value, out
        return out

    return visit(obj)
