"""Activations -> neighbour indexes: streamed index building and querying.

The DkNN's memory is bounded by a budget, not by the number of rows: a fit streams
chunks of activations into one backend per layer (each backend keeps only what it
indexes, e.g. projected rows), and a query streams chunks of query activations
through the indexes, keeping only the neighbours.

The input may be a dask array: its activations are then computed on the Dask
workers (or by Dask's local scheduler), in the same forward batches as for an
array in memory, so that the answers are the same bit for bit. A sharded index
(:class:`~skdknn.neighbors.ShardedBackend` on a cluster) takes them where they are
computed; any other index receives them as a stream of chunks, never all at once;
and :func:`query_indexes_lazy` builds the searches of dask queries as a Dask graph.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from numpy.typing import NDArray
from sklearn.base import clone
from torch import nn

from ._activations import (
    ActivationChunk,
    chunk_size,
    extract_activations,
    iter_activations,
    layer_widths,
)
from ._dask import (
    active_client,
    compute_in_order,
    is_dask_array,
    share,
    worker_addresses,
)
from .neighbors._base import NeighborsBackend
from .neighbors._sharded import ShardedBackend, fit_on_dask_arrays

__all__ = ["ActivationSource", "fit_indexes", "query_indexes", "query_indexes_lazy"]


@dataclass
class ActivationSource:
    """The activations of some rows: a network run on input rows, or stored arrays.

    ``rows`` are positions in ``X`` in stream order (``None``: all of ``X``);
    ``arrays`` (one per layer, already in stream order) replace the network. ``X``
    may be a dask array (``rows`` then ``None``): each chunk's activations are
    computed by Dask, on the workers of the active client if there is one, the
    network sent to each worker once.
    """

    layers: Sequence[str]
    batch_size: int
    module: nn.Module | None = None
    X: Any = None  # ndarray, or dask array
    rows: NDArray[np.intp] | None = None
    arrays: list[NDArray[np.float32]] | None = None
    verbose: int = 0
    #: the network as an input of Dask tasks, per client (sent once per source)
    _shared: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def lazy(self) -> bool:
        """Whether the input is a dask array."""
        return self.arrays is None and is_dask_array(self.X)

    @property
    def n_rows(self) -> int:
        if self.arrays is not None:
            return int(self.arrays[0].shape[0]) if self.arrays else 0
        assert self.X is not None
        return int(self.X.shape[0] if self.rows is None else self.rows.shape[0])

    def widths(self) -> list[int]:
        if self.arrays is not None:
            return [int(a.shape[1]) for a in self.arrays]
        assert self.module is not None and self.X is not None
        first = self.X[:1] if self.rows is None else self.X[self.rows[:1]]
        if self.lazy:
            first = np.asarray(first.compute())  # one row, for the shapes
        return layer_widths(self.module, first, self.layers)

    def chunks(
        self, chunk_rows: int | None, start: int = 0
    ) -> Iterator[ActivationChunk]:
        """Consecutive chunks of at most ``chunk_rows`` rows, in stream order,
        from position ``start``. ``None`` sizes chunks by ``working_memory``.
        """
        if start >= self.n_rows:
            return  # nothing left (e.g. the first forward batch held every row)
        if self.arrays is not None:
            if chunk_rows is None:
                chunk_rows = _chunk_rows(self, self.widths())
            for a in range(start, self.n_rows, chunk_rows):
                b = min(a + chunk_rows, self.n_rows)
                yield a, b, [acts[a:b] for acts in self.arrays]
            return
        assert self.module is not None and self.X is not None
        if self.lazy:
            if chunk_rows is None:
                chunk_rows = _chunk_rows(self, self.widths())
            bounds = [*range(start, self.n_rows, chunk_rows), self.n_rows]
            client = active_client()
            tasks = self.activation_tasks(bounds, client)
            # a few chunks computed ahead on the workers, each read once, in order
            window = 2 * len(worker_addresses(client)) if client else 1
            computed = compute_in_order(tasks, client, max(window, 1))
            for a, b, acts in zip(bounds[:-1], bounds[1:], computed, strict=True):
                yield a, b, acts
            return
        yield from iter_activations(
            self.module,
            self.X,
            self.layers,
            batch_size=self.batch_size,
            rows=self.rows,
            chunk_rows=chunk_rows,
            start=start,
            verbose=self.verbose,
        )

    def take(self, positions: NDArray[np.intp], layers: Sequence[int]) -> list[Any]:
        """Activations of the rows at ``positions`` (sorted) for some layers."""
        if self.arrays is not None:
            return [self.arrays[i][positions] for i in layers]
        rows = positions if self.rows is None else self.rows[positions]
        sample = ActivationSource(
            [self.layers[i] for i in layers],
            self.batch_size,
            module=self.module,
            X=self.X[rows] if self.lazy else self.X,
            rows=None if self.lazy else rows,
        )
        return sample.gather()

    def gather(self) -> list[NDArray[np.float32]]:
        """Every row at once (small sources only: samples, calibration sets)."""
        parts = [acts for _, _, acts in self.chunks(max(self.n_rows, 1))]
        return parts[0] if parts else []

    # -- dask arrays ----------
    def activation_tasks(self, bounds: Sequence[int], client: Any) -> list[Any]:
        """One Dask task per block ``bounds[i]:bounds[i + 1]`` of a dask ``X``: the
        activations of every layer, as a list of arrays, forward batches of
        ``batch_size`` rows from the block's start."""
        from dask import delayed

        assert self.module is not None and self.X is not None
        key = id(client)
        if key not in self._shared:
            # a worker's threads share it: eval_mode is safe across threads
            self._shared[key] = share(self.module, client)
        sizes = tuple(int(b - a) for a, b in itertools.pairwise(bounds))
        X = self.X[bounds[0] : bounds[-1]].rechunk({0: sizes})
        return [
            delayed(extract_activations, pure=False)(
                self._shared[key], block, list(self.layers), batch_size=self.batch_size
            )
            for block in X.to_delayed().ravel()
        ]

    def layer_arrays(self, widths: Sequence[int], client: Any) -> list[Any]:
        """Per layer, a dask array of the activations of every row, cut into the
        forward batches of :func:`fit_indexes`'s stream; the layers share one
        forward pass per batch."""
        import dask.array as da
        from dask import delayed

        n = self.n_rows
        first = min(self.batch_size, n)
        bounds = [0, *range(first, n, _chunk_rows(self, list(widths))), n]
        tasks = self.activation_tasks(bounds, client)
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
        return [
            da.concatenate(
                [
                    da.from_delayed(
                        delayed(operator.getitem, pure=True)(task, i),
                        shape=(rows, width),
                        dtype=np.float32,
                    )
                    for task, rows in zip(tasks, sizes, strict=True)
                ]
            )
            for i, width in enumerate(widths)
        ]


def _chunk_rows(source: ActivationSource, widths: list[int], extra: int = 0) -> int:
    # activations of a chunk, plus what the consumer keeps per row (``extra`` bytes)
    return chunk_size(
        4 * sum(widths) + extra,
        source.n_rows,
        batch_size=source.batch_size,
        working_memory=None,
    )


def _on_layer(layer: str, call: Any, *args: Any) -> Any:
    """``call(*args)`` on one layer's activations; a ``ValueError`` about them (a
    backend refusing rows that overflow float32, say) names the layer."""
    try:
        return call(*args)
    except ValueError as exc:
        raise ValueError(f"layer {layer!r}: {exc}") from exc


def fit_indexes(template: Any, source: ActivationSource) -> list[Any]:
    """One fitted clone of ``template`` per layer, streamed from ``source``.

    Every backend receives its rows chunk by chunk: skdknn's backends reduce each
    chunk on arrival (a projection, a dtype) and keep only the reduced rows;
    another object with ``fit`` is given all its rows at once (one array per
    layer, the index it copies them into is its own business). A source of dask
    activations and a :class:`~skdknn.neighbors.ShardedBackend` on a cluster: the
    shards are built on the workers from the activations computed there.
    """
    if source.lazy and isinstance(template, ShardedBackend):
        fitted = fit_on_dask_arrays(
            template, lambda client: source.layer_arrays(source.widths(), client)
        )
        if fitted is not None:
            return fitted
    n = source.n_rows
    # one forward batch tells the layers' widths; it is kept for the index
    first = next(source.chunks(min(source.batch_size, n)))
    widths = [int(acts.shape[1]) for acts in first[2]]
    backends = [clone(template) for _ in widths]
    streamed = [isinstance(b, NeighborsBackend) for b in backends]
    positions = [
        b._stream_sample(n, w) if s else np.empty(0, np.intp)
        for b, w, s in zip(backends, widths, streamed, strict=True)
    ]
    sampled = [i for i, p in enumerate(positions) if p.size]
    reduced = list(widths)
    if sampled:
        # one forward pass over the union of the samples, freed layer by layer
        union = np.unique(np.concatenate([positions[i] for i in sampled]))
        samples = source.take(union, sampled)
        for i in sampled:
            sample = samples.pop(0)
            if union.size != positions[i].size:
                sample = sample[np.searchsorted(union, positions[i])]
            reduced[i] = backends[i]._fit_reduction(sample)
            del sample
    for i, backend in enumerate(backends):
        if streamed[i] and i not in sampled:
            reduced[i] = backend._fit_reduction(np.empty((0, widths[i]), np.float32))
    # in the dtype each backend keeps (float16 for a half-precision exact index)
    rows = [
        np.empty((n, w), b._row_dtype if s else np.float32)
        for b, w, s in zip(backends, reduced, streamed, strict=True)
    ]
    rest = source.chunks(_chunk_rows(source, widths), start=first[1])
    for start, stop, chunk in itertools.chain([first], rest):
        for i, acts in enumerate(chunk):
            rows[i][start:stop] = (
                _on_layer(source.layers[i], backends[i]._reduce, acts)
                if streamed[i]
                else acts
            )
        del chunk
        first = None  # type: ignore[assignment]
    fitted = []
    for i, backend in enumerate(backends):
        layer_rows, rows[i] = rows[i], None  # type: ignore[call-overload]
        finish = backend._finish_stream if streamed[i] else backend.fit
        fitted.append(_on_layer(source.layers[i], finish, layer_rows))
        del layer_rows
    return fitted


def query_indexes(
    backends: Sequence[Any],
    source: ActivationSource,
    n_neighbors: int,
    *,
    return_distance: bool,
    n_jobs: int | None,
) -> Iterator[tuple[int, int, list[Any]]]:
    """Stream the queries of ``source`` through the indexes, chunk by chunk.

    Yields ``(start, stop, results)`` with, per layer, the indices (and distances
    when ``return_distance``) of the ``n_neighbors`` nearest indexed rows of the
    queries ``start:stop``. A chunk's activations fit the ``working_memory``
    budget, so memory does not grow with the number of queries.
    """
    known = [getattr(b, "n_features_in_", None) for b in backends]
    widths = source.widths() if None in known else [int(w or 0) for w in known]
    per_row = (12 if return_distance else 8) * n_neighbors * len(backends)
    chunk_rows = _chunk_rows(source, widths, per_row)
    # threads of this process, whatever joblib backend is active: under
    # parallel_backend("dask") the layers' searches were sent to the cluster as
    # tasks (with their activations), and a ShardedBackend's search in such a
    # task waited for its own cluster forever
    parallel = Parallel(n_jobs=n_jobs, backend="threading")
    for start, stop, chunk in source.chunks(chunk_rows):
        results = parallel(
            delayed(_on_layer)(
                layer, backend.kneighbors, acts, n_neighbors, return_distance
            )
            for layer, backend, acts in zip(source.layers, backends, chunk, strict=True)
        )
        yield start, stop, results


def _layer_kneighbors(
    backend: Any, activations: list[Any], layer: int, n_neighbors: int, distance: bool
) -> Any:
    """On a worker: one layer's search for a block of query activations."""
    return backend.kneighbors(activations[layer], n_neighbors, distance)


def query_indexes_lazy(
    backends: Sequence[Any],
    source: ActivationSource,
    n_neighbors: int,
    *,
    return_distance: bool,
) -> tuple[Any, list[tuple[int, int, Any]]]:
    """The searches of the dask queries of ``source`` as a Dask graph.

    Returns the client that runs it (``None``: Dask's local scheduler) and, per
    block of queries (the chunks of :func:`query_indexes`), ``(start, stop,
    results)`` with ``results`` a delayed list: per layer, what
    ``kneighbors(activations, n_neighbors, return_distance)`` returns. The
    network and the in-process indexes are sent to each worker once; a
    :class:`~skdknn.neighbors.ShardedBackend` on a cluster searches its shards
    where they are. Nothing is computed here but one row's activations (for the
    widths).
    """
    from dask import delayed

    sharded = [getattr(b, "_distributed", False) for b in backends]
    clients = [b._client for b, on in zip(backends, sharded, strict=True) if on]
    client = clients[0] if clients else active_client()
    known = [getattr(b, "n_features_in_", None) for b in backends]
    widths = source.widths() if None in known else [int(w or 0) for w in known]
    per_row = (12 if return_distance else 8) * n_neighbors * len(backends)
    chunk_rows = _chunk_rows(source, widths, per_row)
    bounds = [*range(0, source.n_rows, chunk_rows), source.n_rows]
    shared = [
        None if on else share(backend, client)
        for backend, on in zip(backends, sharded, strict=True)
    ]
    blocks = []
    tasks = source.activation_tasks(bounds, client)
    for a, b, acts in zip(bounds[:-1], bounds[1:], tasks, strict=True):
        results = [
            backend._kneighbors_delayed(
                delayed(operator.getitem, pure=True)(acts, i),
                n_neighbors,
                return_distance,
            )
            if on
            else delayed(_layer_kneighbors, pure=False)(
                copy, acts, i, n_neighbors, return_distance
            )
            for i, (backend, on, copy) in enumerate(
                zip(backends, sharded, shared, strict=True)
            )
        ]
        blocks.append((a, b, delayed(list, pure=True)(results)))
    return client, blocks
