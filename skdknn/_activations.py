"""Hidden-layer activations of a torch module, in batches and without autograd."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from joblib import Memory
from numpy.typing import NDArray
from torch import nn
from tqdm.auto import tqdm

from .nets import resolve_layer

__all__ = ["LayerActivations", "eval_mode"]


class _AllLayersCaptured(Exception):
    """Raised inside a forward hook to skip the layers after the last one needed."""


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore its previous mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (cpu for parameter-free modules)."""
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


def _extract(
    module: nn.Module,
    X: NDArray[np.float32],
    layers: Sequence[str],
    batch_size: int,
    verbose: int = 0,
) -> list[NDArray[np.float32]]:
    """One forward pass per batch, stopping after the last requested layer.

    A module called more than once per forward pass contributes its first output.
    """
    n = X.shape[0]
    outputs: list[NDArray[np.float32] | None] = [None] * len(layers)
    captured: set[int] = set()
    offset = 0
    handles = []

    def make_hook(position: int) -> Any:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if position in captured:
                return
            flat = out.detach().reshape(out.shape[0], -1)
            if outputs[position] is None:
                outputs[position] = np.empty((n, flat.shape[1]), dtype=np.float32)
            # copying right away protects against in-place ops later in the net
            outputs[position][offset : offset + flat.shape[0]] = flat.float().cpu()  # type: ignore[index]
            captured.add(position)
            if len(captured) == len(layers):
                raise _AllLayersCaptured

        return hook

    for position, name in enumerate(layers):
        _, sub = resolve_layer(module, name)
        handles.append(sub.register_forward_hook(make_hook(position)))
    device = module_device(module)
    try:
        with torch.inference_mode(), eval_mode(module):
            starts = range(0, n, batch_size)
            for start in tqdm(starts, desc="activations", disable=verbose <= 0):
                offset = start
                captured.clear()
                batch = torch.from_numpy(X[start : start + batch_size]).to(device)
                with contextlib.suppress(_AllLayersCaptured):
                    module(batch)
                if len(captured) != len(layers):
                    missing = [n for i, n in enumerate(layers) if i not in captured]
                    raise ValueError(
                        f"Layers {missing} produced no output during the forward pass "
                        f"of {type(module).__name__}; choose layers that are called "
                        "by its forward method."
                    )
    finally:
        for handle in handles:
            handle.remove()
    return [out if out is not None else np.empty((0, 0), np.float32) for out in outputs]


def _extract_one(
    module: nn.Module, X: NDArray[np.float32], layer: str, batch_size: int
) -> NDArray[np.float32]:
    # module-level so that joblib.Memory can cache it by its arguments
    return _extract(module, X, [layer], batch_size)[0]


class LayerActivations:
    """Computes (and optionally caches) the flattened outputs of named layers.

    Parameters
    ----------
    module : torch.nn.Module
        The network; it is put in eval mode for the forward passes.
    layers : sequence of str
        Layer names (dotted paths or unique short names).
    batch_size : int
        Rows per forward pass.
    memory : None, str or joblib.Memory
        Where to cache each layer's activations, keyed by the module's weights, the
        input rows and the layer, so that refits on the same rows (e.g. grid-search
        candidates over ``n_neighbors`` or ``layers``) reuse them.
    verbose : int
        Progress bar when positive.
    """

    def __init__(
        self,
        module: nn.Module,
        layers: Sequence[str],
        *,
        batch_size: int,
        memory: str | Memory | None = None,
        verbose: int = 0,
    ) -> None:
        self.module = module
        self.layers = list(layers)
        self.batch_size = batch_size
        self.memory = memory
        self.verbose = verbose

    def __call__(self, X: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        """Activations of every layer for X, each of shape (n_samples, width)."""
        if self.memory is None:
            return _extract(self.module, X, self.layers, self.batch_size, self.verbose)
        memory = (
            self.memory
            if isinstance(self.memory, Memory)
            else Memory(self.memory, verbose=0)
        )
        cached = memory.cache(_extract_one)
        return [cached(self.module, X, layer, self.batch_size) for layer in self.layers]
