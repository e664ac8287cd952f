"""A neighbour index split into shards, each fitted and searched on a Dask worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from .._dask import active_client, worker_addresses
from ..exceptions import ShardLostError
from ._base import NeighborsBackend, n_threads
from ._exact import sort_by_distance_then_index
from ._projected import ProjectedBackend
from ._registry import make_inner_backend, seed_backend

__all__ = ["ShardedBackend", "fit_on_dask_arrays", "merge_kneighbors", "shard_bounds"]


def shard_bounds(n_samples: int, n_shards: int) -> NDArray[np.intp]:
    """Row offsets of ``n_shards`` contiguous shards of nearly equal size.

    Shard ``i`` holds rows ``bounds[i]`` to ``bounds[i + 1] - 1``; the first
    ``n_samples % n_shards`` shards hold one row more than the others.

    Examples
    --------
    >>> shard_bounds(10, 3)
    array([ 0,  4,  7, 10])
    """
    if not 1 <= n_shards <= n_samples:
        raise ValueError(
            f"Cannot split {n_samples} rows into {n_shards} non-empty shards."
        )
    sizes = np.full(n_shards, n_samples // n_shards, dtype=np.intp)
    sizes[: n_samples % n_shards] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)


def merge_kneighbors(
    distances: Sequence[NDArray],
    indices: Sequence[NDArray],
    n_neighbors: int,
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """Merge the k best of each shard into the k best overall.

    Rows are ordered by distance, then index (the order of
    :class:`ExactBackend`). Under such a total order, a point of the global k
    best is among the k best of its own shard (a subset of the points), so merging
    the shards' answers gives exactly the answer on all points.

    Parameters
    ----------
    distances : sequence of ndarray of shape (n_queries, k_s)
        Each shard's distances; ``k_s`` may differ between shards (a small shard
        returns all its points).
    indices : sequence of ndarray of shape (n_queries, k_s)
        Each shard's neighbours, as indices into all points (the shard's offset
        added).
    n_neighbors : int
        Number of neighbours to keep, at most the sum of the ``k_s``.

    Returns
    -------
    distances : ndarray of shape (n_queries, n_neighbors), float32
    indices : ndarray of shape (n_queries, n_neighbors), intp

    Examples
    --------
    Two shards, one query; the points at distance 0.5 tie and the lower index
    comes first:

    >>> dist, ind = merge_kneighbors(
    ...     [np.array([[0.1, 0.5]]), np.array([[0.3, 0.5]])],
    ...     [np.array([[4, 7]]), np.array([[12, 2]])],
    ...     3,
    ... )
    >>> ind
    array([[ 4, 12,  2]])
    >>> dist
    array([[0.1, 0.3, 0.5]], dtype=float32)
    """
    dist = np.hstack([np.asarray(d, dtype=np.float32) for d in distances])
    ind = np.hstack([np.asarray(i, dtype=np.intp) for i in indices])
    if dist.shape != ind.shape:
        raise ValueError(
            f"The shards returned distances of shape {dist.shape} but indices of "
            f"shape {ind.shape}."
        )
    if not 1 <= n_neighbors <= ind.shape[1]:
        raise ValueError(
            f"Cannot keep {n_neighbors} neighbours out of the {ind.shape[1]} that the "
            "shards returned."
        )
    dist, ind = sort_by_distance_then_index(dist, ind)
    return dist[:, :n_neighbors], ind[:, :n_neighbors]


class _Shard:
    """One fitted shard: its backend and the rows it indexes (for ``X=None``).

    When the backend keeps the rows array itself (``ExactBackend``), the rows are
    not stored twice: the shard remembers which attribute holds them.
    """

    def __init__(self, backend: Any, rows: NDArray[np.float32]) -> None:
        self.backend = backend
        shared = [name for name, value in vars(backend).items() if value is rows]
        self.rows_attribute: str | None = shared[0] if shared else None
        self.own_rows: NDArray[np.float32] | None = None if shared else rows

    @property
    def rows(self) -> NDArray[np.float32]:
        if self.rows_attribute is not None:
            return np.asarray(getattr(self.backend, self.rows_attribute))
        assert self.own_rows is not None
        return self.own_rows

    def __sizeof__(self) -> int:
        # Dask schedules a task where the bytes of its inputs are: a shard must
        # weigh what it holds, so that queries go to it and not it to them.
        rows = self.rows.nbytes
        return 2 * rows if self.own_rows is not None else rows


# -- functions run on the workers (module level: pickled by reference) -------------
def _fit_shard(backend: Any, rows: NDArray) -> _Shard:
    # rows unpickled from a Dask frame may be misaligned: numpy and BLAS round
    # those differently, and the answer would depend on where the shard lives
    rows = np.require(rows, dtype=np.float32, requirements=["C", "W", "A"])
    if isinstance(backend, NeighborsBackend):
        # the rows are this task's own: index them without a copy
        backend._fit_rows(rows, copy=False)
    else:
        backend.fit(rows)
    return _Shard(backend, rows)


def _shard_size(shard: _Shard) -> int:
    return int(shard.rows.shape[0])


def _shard_rows(shard: _Shard) -> NDArray[np.float32]:
    return shard.rows


def _search_shard(
    shard: _Shard, X: NDArray[np.float32], n_neighbors: int, offset: int
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    X = np.require(X, dtype=np.float32, requirements=["C", "A"])
    dist, ind = shard.backend.kneighbors(X, n_neighbors)
    return np.asarray(dist, dtype=np.float32), np.asarray(ind, dtype=np.intp) + offset


def _prepare_query(X: NDArray, metric: str, n_features: int) -> NDArray[np.float32]:
    """On a worker: queries checked and prepared as ``kneighbors`` prepares them."""
    backend = ShardedBackend(metric=metric)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1:]} features per row, but {type(backend).__name__} is "
            f"expecting {n_features} features as input."
        )
    return backend._prepare(X)


def _merge_answers(
    answers: list[tuple[NDArray[np.float32], NDArray[np.intp]]],
    n_neighbors: int,
    return_distance: bool,
) -> Any:
    """On a worker: the shards' answers to one query block, merged."""
    dist, ind = merge_kneighbors(
        [d for d, _ in answers], [i for _, i in answers], n_neighbors
    )
    return (dist, ind) if return_distance else ind


def _is_dask_collection(X: Any) -> bool:
    if "dask" not in sys.modules:
        return False
    from dask.base import is_dask_collection

    return bool(is_dask_collection(X))


class ShardedBackend(NeighborsBackend):
    """A neighbour index split into shards that live on Dask workers.

    ``fit`` splits the indexed rows into ``n_shards`` contiguous shards, sends each
    shard's rows once to a worker and fits a clone of ``backend`` there; the shard
    stays in that worker's memory. ``kneighbors`` sends each block of queries to
    every shard and merges the shards' k best into the global k best
    (:func:`merge_kneighbors`). With an exact inner backend the answer is that of
    the inner backend on all rows: the same indices and distances, ties decided
    by index as :class:`ExactBackend` decides them. ``kneighbors(X=None)`` searches
    every shard's rows in every shard and excludes each point from its own
    neighbours, as the other backends do.

    Without a Dask client the shards are fitted and searched in local threads, so
    that the same model runs on a laptop; :meth:`scatter` sends a local (e.g.
    loaded) model's shards to a cluster, :meth:`gather` brings them back.
    ``distributed`` is an optional dependency: ``pip install "skdknn[dask]"``; it
    is imported only when a client is used.

    Parameters
    ----------
    backend : str or NeighborsBackend, default="exact"
        Engine of each shard: a name from :data:`skdknn.neighbors.BACKENDS` or a
        backend instance (cloned per shard; its parameters are reachable as
        ``backend__<name>`` when it is an instance). Not a ``ProjectedBackend``
        (each shard would fit its own projection: wrap the other way,
        ``ProjectedBackend(ShardedBackend(...))``) nor a ``ShardedBackend``;
        both raise a ``ValueError`` at fit. Its ``n_neighbors`` is set from this
        backend's and its metric to ``euclidean`` (the metric is applied before
        sharding); an inner metric other than ``euclidean`` and this backend's
        raises a ``ValueError`` at fit.
    n_shards : int, default=None
        Number of shards. ``None``: one per worker of the client (at most one per
        indexed point), or one without a client. At most the number of indexed
        points.
    client : distributed.Client, default=None
        The cluster. ``None`` uses the active client (``distributed.default_client``)
        if there is one when ``fit`` runs, and local threads otherwise. The
        client is not pickled: a loaded model runs locally until :meth:`scatter`.
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` L2-normalises the rows before they are sharded.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    timeout : float, default=None
        Seconds to wait for the workers to fit the shards or to answer one call of
        :meth:`kneighbors`; a :class:`TimeoutError` names the shards still
        pending. ``None`` waits as long as it takes.
    n_jobs : int, default=None
        Threads searching the shards of a local model, at most one per shard
        (``None``: one per shard; ``-1``: one per core, joblib's convention).
        On a cluster, each worker's threads do.
    random_state : int, RandomState instance or None, default=None
        Seeds the shards' engines whose own ``random_state`` is None (Annoy,
        LSH, pynndescent, faiss's k-means): shard ``i`` gets the ``i``-th seed
        drawn from it, so the same integer builds the same shards. ``None``
        draws the seeds from numpy's global generator (another index at each
        fit). An ``ExactBackend`` draws nothing.

    Attributes
    ----------
    n_features_in_ : int
        Number of features of the indexed points.
    n_samples_fit_ : int
        Number of indexed points.
    n_shards_ : int
        Number of shards.
    shard_bounds_ : ndarray of shape (n_shards_ + 1,)
        Shard ``i`` indexes rows ``shard_bounds_[i]`` to ``shard_bounds_[i + 1] - 1``.

    Raises
    ------
    ShardLostError
        From :meth:`kneighbors`, when a worker holding a shard has died: the error
        names the shard and its rows. Nothing is answered from the other shards
        alone. Also when the client holding the shards has been closed.

    See Also
    --------
    merge_kneighbors : The exact merge of the shards' answers.

    Notes
    -----
    Memory: each worker holds its shards (for ``ExactBackend``, ``4 d`` bytes per
    row of ``d`` features, plus 4 for the norms); engines that copy the rows into
    their own structures (Annoy, faiss, ...) also keep the rows, which
    ``kneighbors(X=None)`` sends to the other shards. Pickling (``joblib.dump``)
    gathers the shards to the client; :func:`skdknn.persistence.save_model` writes
    each shard's index to files of its own.

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.neighbors import ExactBackend, ShardedBackend
    >>> X = np.random.default_rng(0).normal(size=(100, 4))
    >>> sharded = ShardedBackend("exact", n_shards=3, n_neighbors=5).fit(X)
    >>> sharded.shard_bounds_
    array([  0,  34,  67, 100])
    >>> exact = ExactBackend(n_neighbors=5).fit(X)
    >>> all(np.array_equal(a, b) for a, b in zip(sharded.kneighbors(X[:7]),
    ...                                          exact.kneighbors(X[:7])))
    True
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **NeighborsBackend._parameter_constraints,
        "backend": [str, HasMethods(["fit", "kneighbors"])],
        "n_shards": [Interval(Integral, 1, None, closed="left"), None],
        "client": [HasMethods(["submit", "scatter", "gather"]), None],
        "timeout": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
    }

    # the rows are copied to the shards (or into the inner backends)
    _keeps_rows = False

    #: the fitted state (set by fit, scatter and gather)
    _client: Any
    _shards: list[Any]

    def __init__(
        self,
        backend: Any = "exact",
        n_shards: int | None = None,
        client: Any = None,
        *,
        n_neighbors: int = 5,
        metric: str = "euclidean",
        mode: str = "distance",
        timeout: float | None = None,
        n_jobs: int | None = None,
        random_state: Any = None,
    ) -> None:
        super().__init__(n_neighbors, metric=metric, mode=mode, n_jobs=n_jobs)
        self.backend = backend
        self.n_shards = n_shards
        self.client = client
        self.timeout = timeout
        self.random_state = random_state

    def __sklearn_clone__(self) -> ShardedBackend:
        # A client is a handle on a cluster, shared, never copied (nor copyable).
        params = {
            name: clone(value, safe=False)
            for name, value in self.get_params(deep=False).items()
            if name != "client"
        }
        return type(self)(client=self.client, **params)

    # -- the cluster ----------
    def _active_client(self) -> Any:
        """The client given, else the default one if any, else None (local)."""
        return self.client if self.client is not None else active_client()

    @property
    def _distributed(self) -> bool:
        return getattr(self, "_client", None) is not None

    def _wait(self, futures: list[Any], what: Callable[[int], str]) -> None:
        """Wait for futures; a timeout names what is still pending."""
        from distributed import wait

        try:
            # distributed.wait waits through the default client: make it this
            # backend's own (a client made with set_as_default=False is not one;
            # with no default client at all, wait raised "No clients found")
            with self._client.as_current():
                wait(futures, timeout=self.timeout)
        except TimeoutError:
            pending = [what(i) for i, f in enumerate(futures) if not f.done()]
            raise TimeoutError(
                f"{type(self).__name__}: no answer within timeout={self.timeout} s "
                f"from {', '.join(pending)}."
            ) from None

    def _describe(self, i: int) -> str:
        lo, hi = self.shard_bounds_[i], self.shard_bounds_[i + 1]
        return f"shard {i} of {self.n_shards_} (rows {lo} to {hi - 1})"

    def _check_shards_alive(self) -> None:
        """Raise ShardLostError if the client or a worker holding a shard is gone."""
        if self._client.status in ("closing", "closed"):
            raise ShardLostError(
                f"{type(self).__name__}: the Dask client that holds its "
                f"{self.n_shards_} shards ({self._client}) is closed, and the shards "
                "went with it. Keep the client open while the model is used; to "
                "keep a model past its client, gather() it first (or save_model), "
                "then scatter(client) it to a new one."
            )
        lost = [i for i, f in enumerate(self._shards) if f.status in ("lost", "error")]
        lost += [
            i
            for i, f in enumerate(self._shards)
            if f.status == "cancelled" and i not in lost
        ]
        if lost:
            raise ShardLostError(
                f"{type(self).__name__}: {', '.join(map(self._describe, lost))} "
                f"{'was' if len(lost) == 1 else 'were'} lost with the worker that "
                "held it; refit the backend, or restore a saved model and call "
                "scatter(client). No neighbours are returned from the other shards "
                "alone."
            )

    # -- fitting ----------
    def _inner(self) -> Any:
        return make_inner_backend(
            self.backend, self.n_neighbors, self.metric, type(self).__name__
        )

    def _inner_backends(self, n: int) -> list[Any]:
        """The unfitted engines of ``n`` shards, the i-th seeded with the i-th
        seed drawn from ``random_state`` (when theirs is None). With
        ``random_state=None`` the seeds come from numpy's global generator: a
        different index at each fit, but each shard's task names its seed, so a
        shard the scheduler rebuilds (a lost worker) is the same index."""
        inners = [self._inner() for _ in range(n)]
        inner = inners[0]
        if isinstance(inner, ShardedBackend):
            raise ValueError(
                "A ShardedBackend cannot shard a ShardedBackend: its shards would "
                "wait for workers that the outer shards occupy. Use one "
                "ShardedBackend with more shards (n_shards)."
            )
        if isinstance(inner, ProjectedBackend):
            raise ValueError(
                "A ShardedBackend cannot shard a ProjectedBackend: each shard would "
                "fit its own projection, and distances measured in different "
                "projections cannot be merged. Project first, then shard: "
                "ProjectedBackend(ShardedBackend(...), n_components=...)."
            )
        rng = check_random_state(self.random_state)  # one stream for all shards
        return [seed_backend(inner, rng) for inner in inners]

    def fit(self, X: Any, y: Any = None) -> ShardedBackend:
        """Split the rows into shards and fit one backend per shard.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            Points to index. A dask array is sharded where its chunks are
            computed, never gathered on the client (it needs a client).
        y : None
            Ignored.

        Returns
        -------
        self : ShardedBackend
            The fitted backend.
        """
        if _is_dask_collection(X):
            return self._fit_dask_array(X)
        return super().fit(X)

    def _n_shards(self, client: Any, n_samples: int) -> int:
        if n_samples < 1:
            raise ValueError(
                f"Found array with 0 sample(s) (shape=(0, {self.n_features_in_})) "
                f"while a minimum of 1 is required by {type(self).__name__}."
            )
        if self.n_shards is None:
            # one per worker, as far as every shard gets a point
            workers = 1 if client is None else len(worker_addresses(client))
            return max(1, min(workers, n_samples))
        if self.n_shards > n_samples:
            raise ValueError(
                f"n_shards={self.n_shards} exceeds the number of points to index, "
                f"n_samples = {n_samples}: every shard needs at least one point."
            )
        return int(self.n_shards)

    def _build(self, X: NDArray[np.float32]) -> None:
        client = self._active_client()
        self.n_shards_ = self._n_shards(client, X.shape[0])
        self.shard_bounds_ = shard_bounds(X.shape[0], self.n_shards_)
        parts = [
            X[a:b]
            for a, b in zip(
                self.shard_bounds_[:-1], self.shard_bounds_[1:], strict=True
            )
        ]
        if client is None:
            self._client = None
            # each shard gets rows of its own (the inner fit copies as needed)
            inners = self._inner_backends(self.n_shards_)
            self._shards = self._map_local(
                lambda i: _fit_shard(inners[i], np.array(parts[i])),
                self.n_shards_,
            )
            return
        workers = self._workers(client)
        rows = [
            client.scatter(part, workers=[workers[i % len(workers)]], hash=False)
            for i, part in enumerate(parts)
        ]
        self._submit_fits(client, rows)

    def _fit_dask_array(self, X: Any) -> ShardedBackend:
        client = self._active_client()
        if client is None:
            self._validate_params()
            raise ValueError(
                "Fitting a ShardedBackend on a dask array needs a distributed client "
                "(pass client= or create one); compute the array first to fit "
                "locally."
            )
        # a failed fit (e.g. non-finite rows found on a worker) leaves the model
        # as it was, as a failed fit on an array in memory does
        with self._kept_if_failed():
            self._submit_fits(client, client.compute(self._dask_blocks(X, client)))
        return self

    def _dask_blocks(self, X: Any, client: Any) -> list[Any]:
        """Validate a dask array of rows, set the shapes and cut it into one delayed
        block of rows per shard (computed where the array's chunks are)."""
        import dask.array as da

        self._validate_params()
        X = da.asarray(X)
        if X.ndim != 2 or any(np.isnan(size) for size in X.shape):
            raise ValueError(
                "Expected a 2-dimensional dask array with known chunk sizes; got "
                f"shape {X.shape} (call X.compute_chunk_sizes() first)."
            )
        if np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError(
                f"Complex data not supported; {type(self).__name__} got dtype "
                f"{X.dtype}."
            )
        self.n_features_in_ = int(X.shape[1])
        self.n_samples_fit_ = int(X.shape[0])
        self.n_shards_ = self._n_shards(client, self.n_samples_fit_)
        self.shard_bounds_ = shard_bounds(self.n_samples_fit_, self.n_shards_)
        chunks = (tuple(np.diff(self.shard_bounds_).tolist()), (X.shape[1],))
        X = X.astype(np.float32).rechunk(chunks)
        if self.metric == "cosine":
            from ._base import _l2_normalize

            # on whole rows: a block of some of the columns, normalised alone,
            # gave every row a norm of sqrt(number of column blocks)
            X = X.map_blocks(_l2_normalize, dtype=np.float32)
        blocks: list[Any] = X.to_delayed().ravel().tolist()
        return blocks

    @staticmethod
    def _workers(client: Any) -> list[str]:
        workers = worker_addresses(client)
        if not workers:
            raise RuntimeError("The Dask cluster has no workers to hold the shards.")
        return workers

    def _submit_fits(self, client: Any, rows: list[Any]) -> None:
        self._client = client
        self._shards = [
            client.submit(_fit_shard, inner, part, pure=False)
            for inner, part in zip(self._inner_backends(len(rows)), rows, strict=True)
        ]
        # a fit's error (e.g. non-finite values) surfaces here, not at the first query
        sizes = [client.submit(_shard_size, s, pure=False) for s in self._shards]
        self._wait(sizes, self._describe)
        client.gather(sizes)
        del rows  # the shards hold the rows now; the scattered copies are released

    def _map_local(self, function: Callable[[int], Any], n: int) -> list[Any]:
        threads = n if self.n_jobs is None else max(1, min(n, n_threads(self.n_jobs)))
        if threads == 1:
            return [function(i) for i in range(n)]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(function, range(n)))

    # -- searching ----------
    def _shard_sizes(self) -> NDArray[np.intp]:
        return np.diff(self.shard_bounds_)

    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        return self._search_shards(lambda j: X, [None], n_neighbors)[0]

    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        # every shard's rows against every shard, self included (removed by the
        # base class), then stacked back in row order
        if self._distributed:
            queries = [
                self._client.submit(_shard_rows, s, pure=False) for s in self._shards
            ]
        else:
            queries = [s.rows for s in self._shards]
        blocks = self._search_shards(
            lambda j: queries[j], list(range(self.n_shards_)), n_neighbors
        )
        return (
            np.vstack([d for d, _ in blocks]),
            np.vstack([i for _, i in blocks]),
        )

    def _search_shards(
        self, query: Callable[[Any], Any], blocks: list[Any], n_neighbors: int
    ) -> list[tuple[NDArray[np.float32], NDArray[np.intp]]]:
        """For every query block, every shard's k best, merged."""
        sizes = self._shard_sizes()
        offsets = self.shard_bounds_[:-1]
        jobs = [
            (b, i, int(min(n_neighbors, sizes[i])))
            for b in range(len(blocks))
            for i in range(self.n_shards_)
        ]
        if self._distributed:
            answers = self._search_on_cluster(query, blocks, jobs)
        else:
            answers = self._map_local(
                lambda n: _search_shard(
                    self._shards[jobs[n][1]],
                    query(blocks[jobs[n][0]]),
                    jobs[n][2],
                    int(offsets[jobs[n][1]]),
                ),
                len(jobs),
            )
        merged = []
        for b in range(len(blocks)):
            parts = answers[b * self.n_shards_ : (b + 1) * self.n_shards_]
            merged.append(
                merge_kneighbors(
                    [d for d, _ in parts], [i for _, i in parts], n_neighbors
                )
            )
        return merged

    def _search_on_cluster(
        self,
        query: Callable[[Any], Any],
        blocks: list[Any],
        jobs: list[tuple[int, int, int]],
    ) -> list[tuple[NDArray[np.float32], NDArray[np.intp]]]:
        client = self._client
        self._check_shards_alive()
        offsets = self.shard_bounds_[:-1]
        sent = {}
        for b, block in enumerate(blocks):
            q = query(block)
            # a numpy block is sent once; dask copies it to each shard's worker
            sent[b] = client.scatter(q, hash=False) if isinstance(q, np.ndarray) else q
        futures = [
            client.submit(
                _search_shard,
                self._shards[i],
                sent[b],
                k,
                int(offsets[i]),
                pure=False,
                retries=1,
            )
            for b, i, k in jobs
        ]
        try:
            self._wait(futures, lambda n: self._describe(jobs[n][1]))
            self._check_shards_alive()
            return client.gather(futures)
        except ShardLostError:
            raise
        except Exception as exc:
            # a shard that died with its worker shows as a failed query
            self._check_shards_alive()
            raise exc from None

    def _kneighbors_delayed(
        self, X: Any, n_neighbors: int, return_distance: bool
    ) -> Any:
        """:meth:`kneighbors` of a delayed block of queries, as a Dask task: each
        shard searched on its worker, the merge on a worker too (nothing computed
        here). Used by the classifier on dask arrays of queries."""
        from dask import delayed

        check_is_fitted(self)
        k = self._check_n_neighbors(n_neighbors, self.n_samples_fit_)
        if not self._distributed:
            raise RuntimeError(f"{type(self).__name__}: the shards are not on workers.")
        self._check_shards_alive()
        # the metric as kneighbors applies it (float32, cosine normalisation); not
        # a method of self, whose pickle would gather the shards
        prepared = delayed(_prepare_query, pure=True)(
            X, self.metric, self.n_features_in_
        )
        sizes, offsets = self._shard_sizes(), self.shard_bounds_[:-1]
        answers = [
            delayed(_search_shard, pure=True)(
                shard, prepared, int(min(k, sizes[i])), int(offsets[i])
            )
            for i, shard in enumerate(self._shards)
        ]
        return delayed(_merge_answers, pure=True)(answers, k, return_distance)

    # -- moving the shards ----------
    def gather(self) -> ShardedBackend:
        """Bring the shards from the workers into this process.

        Returns
        -------
        self : ShardedBackend
            The backend, now searched in local threads.
        """
        check_is_fitted(self)
        if self._distributed:
            self._check_shards_alive()
            self._wait(self._shards, self._describe)
            self._shards = self._client.gather(self._shards)
            self._client = None
        return self

    def scatter(self, client: Any = None) -> ShardedBackend:
        """Send the shards of a local (e.g. loaded) model to a Dask cluster.

        Parameters
        ----------
        client : distributed.Client, default=None
            The cluster; ``None`` uses the ``client`` parameter, else the active
            client.

        Returns
        -------
        self : ShardedBackend
            The backend, now searched on the cluster's workers.
        """
        check_is_fitted(self)
        client = client if client is not None else self._active_client()
        if client is None:
            raise ValueError(
                "No Dask client to scatter the shards to: pass one, or create one "
                "(distributed.Client) first."
            )
        shards = self.gather()._shards
        workers = self._workers(client)
        self._shards = [
            client.scatter(shard, workers=[workers[i % len(workers)]], hash=False)
            for i, shard in enumerate(shards)
        ]
        self._client = client
        return self

    # -- persistence ----------
    def _portable_state(self) -> dict[str, Any]:
        """The pickled state: shards gathered, no client."""
        state = self._state()
        if self.client is not None:
            state["client"] = None  # a client cannot be pickled
        if "_shards" in state:
            if self._distributed:
                self._check_shards_alive()
                self._wait(self._shards, self._describe)
                state["_shards"] = self._client.gather(self._shards)
            state["_client"] = None
        return state

    def __getstate__(self) -> dict[str, Any]:
        return self._portable_state()

    def _save_index(self, prefix: Path) -> dict[str, Any]:
        # each shard's backend is a backend of its own: save_model writes its
        # index files; rows not held by it are written here
        state = self._portable_state()
        shards = []
        for i, shard in enumerate(state["_shards"]):  # fitted: it has shards
            if shard.own_rows is not None:
                np.save(f"{prefix}.shard-{i}.rows.npy", shard.own_rows)
                shard = _Shard.__new__(_Shard)
                shard.__dict__.update(state["_shards"][i].__dict__, own_rows=None)
            shards.append(shard)
        state["_shards"] = shards
        return state

    def _load_index(self, prefix: Path, mmap: bool) -> None:
        for i, shard in enumerate(self._shards):
            if shard.rows_attribute is None:
                path = f"{prefix}.shard-{i}.rows.npy"
                if not os.path.exists(path):
                    raise FileNotFoundError(f"The shard rows file {path!r} is missing.")
                shard.own_rows = np.load(
                    path, mmap_mode="c" if mmap else None, allow_pickle=False
                )


def fit_on_dask_arrays(
    template: ShardedBackend, arrays: Callable[[Any], list[Any]]
) -> list[ShardedBackend] | None:
    """One clone of ``template`` per dask array, each sharded on the workers.

    ``arrays(client)`` gives the dask arrays of rows (e.g. the activations of
    several layers from one forward pass): their shards' rows are computed
    together, so that tasks they share run once, and never reach this process.
    Returns None when there is no client (the caller then streams the rows).
    """
    client = template._active_client()
    if client is None:
        return None
    arrays_ = arrays(client)
    backends = [clone(template) for _ in arrays_]
    blocks = [b._dask_blocks(X, client) for b, X in zip(backends, arrays_, strict=True)]
    futures = client.compute([block for group in blocks for block in group])
    start = 0
    for backend, group in zip(backends, blocks, strict=True):
        backend._submit_fits(client, futures[start : start + len(group)])
        start += len(group)
    return backends
