"""Hidden-layer activations of a torch module: streamed in chunks, without autograd.

The one producer of activations for the whole package. :func:`iter_activations` is
the stream every consumer reads (fit, predict, the attacks' heads): it yields the
outputs of the named layers for consecutive chunks of rows, each chunk holding at
most a ``working_memory`` budget of activations, so memory does not grow with the
number of rows. :func:`extract_activations` gathers a stream when the caller needs
every row at once (a cache entry, a small head-training set).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import joblib
import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.utils._chunking import get_chunk_n_rows
from torch import nn
from tqdm.auto import tqdm

from ._eval import eval_mode
from ._graph import layer_extractor, user_hooks

__all__ = [
    "ActivationChunk",
    "cached_activations",
    "chunk_size",
    "eval_mode",
    "extract_activations",
    "forward_to_layers",
    "iter_activations",
    "layer_widths",
    "module_device",
    "network_fingerprint",
    "weights_hash",
]

#: ``(start, stop, activations)``: rows ``start:stop`` of the stream and one array
#: of shape ``(stop - start, width_l)`` per layer.
ActivationChunk = tuple[int, int, list[NDArray[np.float32]]]


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (cpu for parameter-free modules)."""
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


def forward_to_layers(
    module: nn.Module, x: torch.Tensor, layers: Sequence[str]
) -> list[torch.Tensor]:
    """Outputs of the named layers for the batch ``x``, flattened to (n, width).

    Layer names are resolved as :func:`skdknn.nets.layer_names` lists them (graph
    nodes of the traced network; module paths for networks that cannot be traced).
    The forward pass of a traced network stops after the last layer needed (one
    read with hooks runs whole, to see every call of a chosen module). Autograd
    follows the outputs when it is enabled (as the attacks need); each output is a
    copy, so in-place operations later in the network cannot change it. Threads
    may share the module.
    """
    return layer_extractor(module, layers)(x)


def chunk_size(
    row_bytes: int, n_rows: int, *, batch_size: int, working_memory: float | None
) -> int:
    """Rows per chunk of a stream: one forward batch, fewer when a batch's
    activations would exceed ``working_memory`` MiB.

    scikit-learn's rule (``working_memory=None`` reads ``sklearn.get_config()``);
    at least one row. A chunk is one forward batch, so its activations are the
    network's own outputs, never copied into a larger buffer.
    """
    rows = get_chunk_n_rows(
        row_bytes=max(int(row_bytes), 1),
        max_n_rows=max(n_rows, 1),
        working_memory=working_memory,
    )
    return max(min(int(rows), batch_size), 1)


def _batch(
    X: NDArray[np.float32], rows: NDArray[np.intp] | None, a: int, b: int
) -> Any:
    part = X[a:b] if rows is None else X[rows[a:b]]
    return torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))


def layer_widths(
    module: nn.Module, X: NDArray[np.float32], layers: Sequence[str]
) -> list[int]:
    """Width of each layer's flattened output, from a forward pass on one row."""
    extractor = layer_extractor(module, layers)
    with torch.inference_mode(), eval_mode(module):
        outputs = extractor(_batch(X, None, 0, 1).to(module_device(module)))
    return [int(out.shape[1]) for out in outputs]


def iter_activations(
    module: nn.Module,
    X: NDArray[np.float32],
    layers: Sequence[str],
    *,
    batch_size: int,
    rows: NDArray[np.intp] | None = None,
    chunk_rows: int | None = None,
    start: int = 0,
    working_memory: float | None = None,
    verbose: int = 0,
) -> Iterator[ActivationChunk]:
    """Stream the activations of ``layers`` for the rows of ``X``, chunk by chunk.

    Parameters
    ----------
    module : torch.nn.Module
        The network, run in eval mode and inference mode (restored between chunks,
        so the consumer's code runs in the caller's modes).
    X : ndarray of shape (n_samples, ...)
        Network input (images or rows). Never copied as a whole.
    layers : sequence of str
        Layer names (see :func:`skdknn.nets.layer_names`).
    batch_size : int
        Rows per forward pass.
    rows : ndarray of int, default=None
        Rows of ``X`` to stream, in this order (default: all, in order); each forward
        batch gathers its own rows.
    chunk_rows : int, default=None
        Rows per chunk; by default as many as ``working_memory`` allows for the
        layers' activations (see :func:`chunk_size`).
    start : int, default=0
        First position of the stream (with ``chunk_rows``): resume a stream.
    working_memory : float, default=None
        Budget in MiB per chunk; ``None`` is scikit-learn's ``working_memory``.
    verbose : int, default=0
        Progress bar when positive.

    Yields
    ------
    start, stop, activations : int, int, list of ndarray
        Positions ``start:stop`` in the stream and, per layer, a float32 array of
        shape ``(stop - start, width)`` that the consumer owns.
    """
    n = X.shape[0] if rows is None else rows.shape[0]
    if start >= n:
        return  # nothing left to stream (nor a progress bar to show)
    extractor = layer_extractor(module, layers)
    device = module_device(module)

    def forward(a: int, b: int) -> list[NDArray[np.float32]]:
        with torch.inference_mode(), eval_mode(module):
            outputs = extractor(_batch(X, rows, a, b).to(device))
        return [out.cpu().numpy() for out in outputs]

    def fill(start: int, stop: int, step: int, first: list[NDArray]) -> list[NDArray]:
        """Rows start:stop, whose first forward batch ``first`` is already done."""
        if first and first[0].shape[0] == stop - start:
            return first  # one forward batch: its outputs are the chunk
        chunk = [np.empty((stop - start, out.shape[1]), np.float32) for out in first]
        done = start + first[0].shape[0]
        for buffer, out in zip(chunk, first, strict=True):
            buffer[: done - start] = out
        for a in range(done, stop, step):
            b = min(a + step, stop)
            for buffer, out in zip(chunk, forward(a, b), strict=True):
                buffer[a - start : b - start] = out
        return chunk

    # one bar over the stream's rows; a stream left before its end (a caller
    # that only wanted the first chunk) clears its bar instead of leaving it
    # stuck part way
    bar = tqdm(
        total=n, initial=start, unit="rows", desc="activations", disable=verbose <= 0
    )
    try:
        if chunk_rows is None:
            # the first forward batch tells the layers' widths, hence the chunk size
            first = forward(start, min(start + batch_size, n))
            chunk_rows = chunk_size(
                4 * sum(out.shape[1] for out in first),
                n,
                batch_size=batch_size,
                working_memory=working_memory,
            )
            stop = max(min(start + chunk_rows, n), start + first[0].shape[0])
            chunk = fill(start, stop, min(batch_size, chunk_rows), first)
            bar.update(stop - start)
            yield start, stop, chunk
            start = stop
        step = min(batch_size, chunk_rows)
        for a in range(start, n, chunk_rows):
            b = min(a + chunk_rows, n)
            chunk = fill(a, b, step, forward(a, min(a + step, b)))
            bar.update(b - a)
            yield a, b, chunk
    finally:
        if bar.n < n:
            bar.leave = False
        bar.close()


def extract_activations(
    module: nn.Module,
    X: NDArray[np.float32],
    layers: Sequence[str],
    *,
    batch_size: int,
    rows: NDArray[np.intp] | None = None,
    verbose: int = 0,
) -> list[NDArray[np.float32]]:
    """Every row's activations at once: one array (n_rows, width) per layer."""
    (_, _, chunk), *rest = list(
        iter_activations(
            module,
            X,
            layers,
            batch_size=batch_size,
            rows=rows,
            chunk_rows=max(X.shape[0] if rows is None else rows.shape[0], 1),
            verbose=verbose,
        )
    ) or [(0, 0, [])]
    assert not rest
    return chunk


def weights_hash(module: nn.Module) -> str:
    """A hash of the network: its class and its ``state_dict`` (weights, buffers).

    Computed from the tensors, never by pickling the module, so modules with hooks
    or other unpicklable attributes can be hashed.
    """
    state = {
        name: tensor.detach().cpu().numpy()
        for name, tensor in module.state_dict().items()
    }
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    return str(joblib.hash((kind, state)))


#: Fit rows on which :func:`network_fingerprint` runs the network (evenly spaced).
PROBE_ROWS = 4


def _code_key(code: Any) -> tuple[Any, ...]:
    """What a code object computes: its bytecode, names and constants (nested code
    objects recursively), without file names or line numbers."""
    consts = tuple(
        _code_key(c)
        if hasattr(c, "co_code")
        else sorted(map(repr, c))  # a set's repr follows the string hash seed
        if isinstance(c, frozenset)
        else repr(c)
        for c in code.co_consts
    )
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, consts)


def _function_key(function: Any) -> Any:
    """The code of a Python function or bound method; the qualified name otherwise."""
    function = getattr(function, "__func__", function)
    code = getattr(function, "__code__", None)
    if code is not None:
        return _code_key(code)
    kind = type(function)
    return getattr(function, "__qualname__", f"{kind.__module__}.{kind.__qualname__}")


def _module_key(module: nn.Module) -> list[Any]:
    """Per submodule: its path, class, forward code, hooks' code and plain
    attributes (the flags and sizes a forward method may read)."""
    key = []
    for path, sub in module.named_modules():
        kind = type(sub)
        own = user_hooks(sub)
        hooks = [
            _function_key(hook)
            for name in ("_forward_pre_hooks", "_forward_hooks")
            for _, hook in own[name]
        ]
        attributes = sorted(
            (name, repr(value))
            for name, value in vars(sub).items()
            if not name.startswith("_")
            and name != "training"  # fit runs the network in eval mode anyway
            and isinstance(value, (bool, int, float, complex, str, bytes, type(None)))
        )
        key.append(
            (
                path,
                f"{kind.__module__}.{kind.__qualname__}",
                _function_key(sub.forward),
                hooks,
                attributes,
            )
        )
    return key


def network_fingerprint(
    module: nn.Module,
    X: NDArray[np.float32],
    rows: NDArray[np.intp],
    layers: Sequence[str],
    *,
    batch_size: int,
) -> str:
    """A hash of what the network computes for ``layers`` on the rows ``X[rows]``.

    Keys the activation cache, so that a cache hit gives exactly the activations
    that running the network gives. It combines

    - the ``state_dict`` (:func:`weights_hash`): weights and buffers;
    - the layers' outputs, bit for bit, on :data:`PROBE_ROWS` rows of ``X[rows]``
      (evenly spaced, the first and last included), from one small forward pass
      through the same extractor as the activations themselves: any change of
      forward code, attributes, hooks or layers that changes those outputs
      changes the key;
    - the traced graph of the network (when :mod:`torch.fx` can trace it), and per
      submodule its class's qualified name, the code of its ``forward`` and of its
      hooks, and its plain (bool, number, string) attributes.

    A change that alters the outputs only on other rows and shows in none of the
    code, graph or attributes above (a helper function the untraced forward calls,
    a global variable, a tensor attribute outside the ``state_dict``) is not seen.

    Computed without pickling the module, so modules with hooks or other
    unpicklable attributes can be fingerprinted.
    """
    rows = np.asarray(rows, dtype=np.intp)
    n_probe = min(rows.size, PROBE_ROWS)
    probe = rows[np.linspace(0, rows.size - 1, num=n_probe).round().astype(np.intp)]
    outputs = extract_activations(module, X, layers, batch_size=batch_size, rows=probe)
    extractor = layer_extractor(module, layers)
    graph = extractor.graph.graph
    return str(
        joblib.hash(
            (
                weights_hash(module),
                extractor.full_names,
                [(out.shape, out.tobytes()) for out in outputs],
                None if graph is None else str(graph),
                _module_key(module),
            )
        )
    )


def _cacheable_activations(
    module: nn.Module,
    network: str,
    X: NDArray[np.float32],
    rows: NDArray[np.intp],
    layers: tuple[str, ...],
    batch_size: int,
) -> list[NDArray[np.float32]]:
    # module-level so that joblib.Memory keys it by (network, X, rows, layers), the
    # network by its fingerprint (see network_fingerprint)
    return extract_activations(
        module, X, list(layers), batch_size=batch_size, rows=rows
    )


def cached_activations(
    memory: Any,
    module: nn.Module,
    X: NDArray[np.float32],
    rows: NDArray[np.intp],
    layers: Sequence[str],
    *,
    batch_size: int,
) -> list[NDArray[np.float32]]:
    """Activations of ``X[rows]`` for all ``layers`` from one forward pass, cached.

    One cache entry per (network fingerprint, input rows, layer list), like
    ``Pipeline(memory=...)`` caches a fitted transformer: refitting on the same
    rows with the same network (a grid search over ``n_neighbors`` with a prefit
    net) loads them instead of running the network. The network is keyed by
    :func:`network_fingerprint` (weights and what its forward pass computes), so
    an entry of another network with the same weights is never returned.
    """
    if not isinstance(memory, joblib.Memory):
        memory = joblib.Memory(memory, verbose=0)
    cached = memory.cache(_cacheable_activations, ignore=["module", "batch_size"])
    rows = np.asarray(rows, dtype=np.intp)
    return list(
        cached(
            module,
            network_fingerprint(module, X, rows, layers, batch_size=batch_size),
            X,
            rows,
            tuple(layers),
            batch_size,
        )
    )
