"""Activations -> neighbour indexes: streamed index building and querying.

The DkNN's memory is bounded by a budget, not by the number of rows: a fit streams
chunks of activations into one backend per layer (each backend keeps only what it
indexes, e.g. projected rows), and a query streams chunks of query activations
through the indexes, keeping only the neighbours.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from numpy.typing import NDArray
from sklearn.base import clone
from torch import nn

from ._activations import ActivationChunk, chunk_size, iter_activations, layer_widths
from .neighbors._base import NeighborsBackend

__all__ = ["ActivationSource", "fit_indexes", "query_indexes"]


@dataclass
class ActivationSource:
    """The activations of some rows: a network run on input rows, or stored arrays.

    ``rows`` are positions in ``X`` in stream order (``None``: all of ``X``);
    ``arrays`` (one per layer, already in stream order) replace the network.
    """

    layers: Sequence[str]
    batch_size: int
    module: nn.Module | None = None
    X: NDArray[np.float32] | None = None
    rows: NDArray[np.intp] | None = None
    arrays: list[NDArray[np.float32]] | None = None
    verbose: int = 0

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
        return layer_widths(self.module, first, self.layers)

    def chunks(
        self, chunk_rows: int | None, start: int = 0
    ) -> Iterator[ActivationChunk]:
        """Consecutive chunks of at most ``chunk_rows`` rows, in stream order,
        from position ``start``. ``None`` sizes chunks by ``working_memory``.
        """
        if self.arrays is not None:
            if chunk_rows is None:
                chunk_rows = _chunk_rows(self, self.widths())
            for a in range(start, self.n_rows, chunk_rows):
                b = min(a + chunk_rows, self.n_rows)
                yield a, b, [acts[a:b] for acts in self.arrays]
            return
        assert self.module is not None and self.X is not None
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
            X=self.X,
            rows=rows,
        )
        return sample.gather()

    def gather(self) -> list[NDArray[np.float32]]:
        """Every row at once (small sources only: samples, calibration sets)."""
        parts = [acts for _, _, acts in self.chunks(max(self.n_rows, 1))]
        return parts[0] if parts else []


def _chunk_rows(source: ActivationSource, widths: list[int], extra: int = 0) -> int:
    # activations of a chunk, plus what the consumer keeps per row (``extra`` bytes)
    return chunk_size(
        4 * sum(widths) + extra,
        source.n_rows,
        batch_size=source.batch_size,
        working_memory=None,
    )


def fit_indexes(template: Any, source: ActivationSource) -> list[Any]:
    """One fitted clone of ``template`` per layer, streamed from ``source``.

    Every backend receives its rows chunk by chunk: skdknn's backends reduce each
    chunk on arrival (a projection, a dtype) and keep only the reduced rows;
    another object with ``fit`` is given all its rows at once (one array per
    layer, the index it copies them into is its own business).
    """
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
            rows[i][start:stop] = backends[i]._reduce(acts) if streamed[i] else acts
        del chunk
        first = None  # type: ignore[assignment]
    fitted = []
    for i, backend in enumerate(backends):
        layer_rows, rows[i] = rows[i], None  # type: ignore[call-overload]
        if streamed[i]:
            fitted.append(backend._finish_stream(layer_rows))
        else:
            fitted.append(backend.fit(layer_rows))
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
    parallel = Parallel(n_jobs=n_jobs, prefer="threads")
    for start, stop, chunk in source.chunks(chunk_rows):
        results = parallel(
            delayed(backend.kneighbors)(acts, n_neighbors, return_distance)
            for backend, acts in zip(backends, chunk, strict=True)
        )
        yield start, stop, results
