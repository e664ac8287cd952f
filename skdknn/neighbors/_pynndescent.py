"""Approximate nearest neighbours by graph search on PyNNDescent's k-NN graph."""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval

from ._base import NeighborsBackend, import_optional, n_threads
from ._exact import exact_search

__all__ = ["PyNNDescentBackend"]


def _writable(value: Any) -> Any:
    """``value`` with every read-only array inside it replaced by a writable copy.

    A memory-mapped load (``joblib.load(..., mmap_mode="r")``) makes every array
    read-only; PyNNDescent's compiled code crashes the process on some of them.
    """
    if isinstance(value, np.ndarray):
        return value if value.flags.writeable else value.copy()
    if sp.issparse(value):
        return value.copy()
    if isinstance(value, tuple):
        items = [_writable(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_writable(v) for v in value]
    return value


class _IndexState:
    """The pickled state of a PyNNDescent index."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def restore(self) -> Any:
        from pynndescent import NNDescent

        index = NNDescent.__new__(NNDescent)
        index.__setstate__({k: _writable(v) for k, v in self.state.items()})
        return index


class PyNNDescentBackend(NeighborsBackend):
    """Approximate nearest neighbours with PyNNDescent.

    Builds an approximate k-nearest-neighbour graph of the points by nearest
    neighbour descent (neighbours of neighbours are likely neighbours), seeded by
    random-projection trees, then prunes it into a search graph. A query starts from
    a tree leaf and walks the graph best-first; ``epsilon`` widens the walk (higher
    recall, slower queries). The AdvKNN thesis compared it with Annoy and FALCONN.

    PyNNDescent compiles its routines with numba the first time they run in a
    process. Measured on 2 cores (``benchmarks/pynndescent_first_call.py``): 125 s
    of CPU with an empty numba cache, 35 s once numba's on-disk cache holds what it
    can, and several times that in wall time when other jobs share the cores. numba
    keeps the functions pynndescent compiles with ``cache=True`` in ``__pycache__``
    beside pynndescent, in a user-wide cache directory when that is read-only, or
    in ``NUMBA_CACHE_DIR`` when set (set it to a persistent, writable directory in
    containers and CI jobs); the functions that take the distance function as an
    argument are compiled again in every process (numba puts the function's
    address in their type, so a cached copy never matches another process).

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` is the euclidean distance between L2-normalised rows.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    graph_n_neighbors : int, default=30
        Neighbours per point in the k-NN graph (PyNNDescent's ``n_neighbors``).
        Capped at the number of points minus one.
    n_trees : int, default=None
        Random-projection trees that seed the graph and the search. ``None`` lets
        PyNNDescent choose from the data size.
    leaf_size : int, default=None
        Maximum points per tree leaf; ``None`` lets PyNNDescent choose.
    pruning_degree_multiplier : float, default=1.5
        Edges kept per point in the search graph, as a multiple of
        ``graph_n_neighbors``.
    diversify_prob : float, default=1.0
        Probability of pruning an edge made redundant by a shorter path (0 keeps
        every edge: larger graph, higher recall).
    n_iters : int, default=None
        Maximum NN-descent iterations; ``None`` lets PyNNDescent choose.
    delta : float, default=0.001
        Early stop of NN-descent when fewer than this fraction of edges change.
    epsilon : float, default=0.1
        Search width at query time: candidates within ``(1 + epsilon)`` times the
        current k-th distance are explored.
    low_memory : bool, default=True
        PyNNDescent's slower, lighter graph construction.
    random_state : int, RandomState instance or None, default=None
        Seeds the trees and NN-descent.
    n_jobs : int, default=None
        Threads for building the graph and answering batches of queries
        (``-1``: every core, ``None``: one).
    verbose : int, default=0
        PyNNDescent's construction log when positive.

    Attributes
    ----------
    n_features_in_ : int
        Number of features of the indexed points.
    n_samples_fit_ : int
        Number of indexed points.

    See Also
    --------
    ExactBackend : Exact search, the reference for recall.
    AnnoyBackend : Approximate search with random-projection trees.

    Notes
    -----
    A query that the graph walk answers with fewer than ``n_neighbors`` points (tiny
    or disconnected indexes) is answered again by exact search. Each distinct row
    is indexed once and the answers list every copy of a row: copies (e.g. the
    all-zero rows of dead ReLU units) form cliques in the graph that a walk cannot
    leave, and a query then got k copies of one far point.

    References
    ----------
    W. Dong, C. Moses and K. Li, "Efficient k-nearest neighbor graph construction for
    generic similarity measures", WWW 2011. L. McInnes, PyNNDescent,
    https://github.com/lmcinnes/pynndescent

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.neighbors import PyNNDescentBackend
    >>> X = np.array([[0.0], [1.0], [3.0], [6.0]])
    >>> backend = PyNNDescentBackend(n_neighbors=2, random_state=0).fit(X)
    >>> dist, ind = backend.kneighbors([[0.9]])
    >>> ind
    array([[1, 0]])
    >>> dist.round(2)
    array([[0.1, 0.9]], dtype=float32)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **NeighborsBackend._parameter_constraints,
        "graph_n_neighbors": [Interval(Integral, 2, None, closed="left")],
        "n_trees": [Interval(Integral, 1, None, closed="left"), None],
        "leaf_size": [Interval(Integral, 1, None, closed="left"), None],
        "pruning_degree_multiplier": [Interval(Real, 0, None, closed="neither")],
        "diversify_prob": [Interval(Real, 0, 1, closed="both")],
        "n_iters": [Interval(Integral, 1, None, closed="left"), None],
        "delta": [Interval(Real, 0, 1, closed="both")],
        "epsilon": [Interval(Real, 0, None, closed="left")],
        "low_memory": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # the index keeps its own copy of the rows, in its search order
    _keeps_rows = False
    # copies of a row form cliques in the graph that a walk cannot leave
    _index_distinct = True

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "euclidean",
        mode: str = "distance",
        graph_n_neighbors: int = 30,
        n_trees: int | None = None,
        leaf_size: int | None = None,
        pruning_degree_multiplier: float = 1.5,
        diversify_prob: float = 1.0,
        n_iters: int | None = None,
        delta: float = 0.001,
        epsilon: float = 0.1,
        low_memory: bool = True,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(n_neighbors, metric=metric, mode=mode, n_jobs=n_jobs)
        self.graph_n_neighbors = graph_n_neighbors
        self.n_trees = n_trees
        self.leaf_size = leaf_size
        self.pruning_degree_multiplier = pruning_degree_multiplier
        self.diversify_prob = diversify_prob
        self.n_iters = n_iters
        self.delta = delta
        self.epsilon = epsilon
        self.low_memory = low_memory
        self.random_state = random_state
        self.verbose = verbose

    def _build(self, X: NDArray[np.float32]) -> None:
        pynndescent = import_optional("pynndescent", "pynndescent", type(self).__name__)
        if X.shape[0] < 3:  # too few points for a graph: search them exactly
            self._index = None
            self._fit_X = X.copy()
            return
        threads = n_threads(self.n_jobs)
        index = pynndescent.NNDescent(
            X,
            metric="euclidean",
            n_neighbors=min(self.graph_n_neighbors, X.shape[0] - 1),
            n_trees=self.n_trees,
            leaf_size=self.leaf_size,
            pruning_degree_multiplier=self.pruning_degree_multiplier,
            diversify_prob=self.diversify_prob,
            n_iters=self.n_iters,
            delta=self.delta,
            low_memory=self.low_memory,
            random_state=check_random_state(self.random_state),
            n_jobs=threads,
            parallel_batch_queries=threads > 1,
            verbose=self.verbose > 0,
        )
        # Build the search graph now (not at the first query). PyNNDescent then
        # holds the rows permuted into its search order, _raw_data[j] being row
        # _vertex_order[j]; the caller's array is no longer referenced.
        index.prepare()
        self._index = index

    def _indexed_rows(self) -> NDArray[np.float32]:
        if self._index is None:
            return self._fit_X
        # _raw_data[j] is row _vertex_order[j]
        rows = np.empty_like(self._index._raw_data)
        rows[self._index._vertex_order] = self._index._raw_data
        return rows

    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        if self._index is None:
            return exact_search(self._fit_X, X, n_neighbors)
        # queries the graph walk answers short (-1) are answered exactly by the
        # base class
        ind, dist = self._index.query(X, k=n_neighbors, epsilon=self.epsilon)
        return dist.astype(np.float32, copy=False), ind.astype(np.intp, copy=False)

    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        if self._index is None:
            return exact_search(self._fit_X, self._fit_X, n_neighbors)
        # query the stored rows in the index's order, then put the answers back
        # in the original order of the rows
        dist, ind = self._search(self._index._raw_data, n_neighbors)
        order = self._index._vertex_order
        out_dist, out_ind = np.empty_like(dist), np.empty_like(ind)
        out_dist[order], out_ind[order] = dist, ind
        return out_dist, out_ind

    def __getstate__(self) -> dict[str, Any]:
        state = self._state()
        index = state.get("_index")
        if index is not None:
            # PyNNDescent's own state, restored by __setstate__ once its arrays are
            # known to be writable
            state["_index"] = _IndexState(index.__getstate__())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        index = state.get("_index")
        if isinstance(index, _IndexState):
            state = {**state, "_index": index.restore()}
        super().__setstate__(state)

    # -- persistence -----------------------------------------------------------------
    #: the graph and trees are saved with joblib (a pickle)
    _index_loads_safely = False

    def _save_index(self, prefix: Path) -> dict[str, Any]:
        state = self._state()
        # the graph, the trees and the rows (or the rows alone for tiny indexes)
        index = (state.pop("_index"), state.pop("_fit_X", None))
        joblib.dump(index, f"{prefix}.joblib")
        return state

    def _load_index(self, prefix: Path, mmap: bool) -> None:
        index, fit_X = joblib.load(f"{prefix}.joblib", mmap_mode="c" if mmap else None)
        self._index = index
        if fit_X is not None:
            self._fit_X = fit_X
