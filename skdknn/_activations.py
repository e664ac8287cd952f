"""Hidden-layer activations of a torch module, in batches and without autograd."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from joblib import Memory
from numpy.typing import NDArray
from torch import nn
from tqdm.auto import tqdm

from .nets import resolve_layer

__all__ = ["LayerActivations", "eval_mode", "forward_to_layers", "module_device"]


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


def _clone(_position: int, flat: torch.Tensor) -> torch.Tensor:
    return flat.clone()


def forward_to_layers(
    module: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str],
    store: Callable[[int, torch.Tensor], torch.Tensor] = _clone,
) -> list[torch.Tensor]:
    """Outputs of the named layers for the batch ``x``, flattened to (n, width).

    The forward pass stops after the last layer needed. Autograd follows the outputs
    when it is enabled (as the attacks need); each output is copied as it is
    produced (by ``store(position, flat_output)``, a clone by default), so in-place
    operations later in the network cannot change it. A module called several times
    per forward pass contributes its first output. Threads may share the module:
    each call sees only its own forward pass.
    """
    captured: dict[int, torch.Tensor] = {}
    # hooks live on the shared module: ignore forward passes of other threads
    owner = threading.get_ident()

    def make_hook(position: int) -> Any:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if threading.get_ident() != owner:
                return
            if position not in captured:
                captured[position] = store(position, out.reshape(out.shape[0], -1))
            if len(captured) == len(layers):
                raise _AllLayersCaptured

        return hook

    handles = [
        resolve_layer(module, name)[1].register_forward_hook(make_hook(position))
        for position, name in enumerate(layers)
    ]
    try:
        with contextlib.suppress(_AllLayersCaptured):
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    if len(captured) != len(layers):
        missing = [name for i, name in enumerate(layers) if i not in captured]
        raise ValueError(
            f"Layers {missing} produced no output during the forward pass of "
            f"{type(module).__name__}; choose layers that are called by its forward "
            "method."
        )
    return [captured[i] for i in range(len(layers))]


def _extract(
    module: nn.Module,
    X: NDArray[np.float32],
    layers: Sequence[str],
    batch_size: int,
    verbose: int = 0,
) -> list[NDArray[np.float32]]:
    """Activations of the layers for all of X, batch by batch, without autograd.

    Each layer's output is copied straight into its slice of the result as the
    forward pass produces it (one copy, no per-batch temporaries: this halves the
    overhead over a bare forward pass on the paper CNN's 12,544-wide first layer).
    """
    n = X.shape[0]
    outputs: dict[int, NDArray[np.float32]] = {}
    device = module_device(module)
    start = 0

    def store(position: int, flat: torch.Tensor) -> torch.Tensor:
        if position not in outputs:
            outputs[position] = np.empty((n, flat.shape[1]), np.float32)
        rows = torch.from_numpy(outputs[position][start : start + flat.shape[0]])
        return rows.copy_(flat)

    with torch.inference_mode(), eval_mode(module):
        starts = range(0, n, batch_size)
        for start in tqdm(starts, desc="activations", disable=verbose <= 0):
            batch = torch.from_numpy(X[start : start + batch_size]).to(device)
            forward_to_layers(module, batch, layers, store)
    if n == 0:
        return []
    return [outputs[i] for i in range(len(layers))]


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
