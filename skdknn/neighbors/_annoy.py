"""Approximate nearest neighbours with Annoy's forests of random-projection trees."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval

from ._base import NeighborsBackend, import_optional, n_threads, progress

__all__ = ["AnnoyBackend"]

#: Queries per progress-bar step and per thread task.
_CHUNK = 256


class AnnoyBackend(NeighborsBackend):
    """Approximate nearest neighbours with Annoy (Spotify's random-projection trees).

    Annoy builds a forest of ``n_trees`` binary trees, each splitting the points
    recursively by the hyperplane equidistant from two random points. A query walks
    all trees at once, best-first by the distance to the splitting hyperplanes,
    until ``search_k`` tree nodes are inspected; the points of the leaves reached are
    then ranked by their exact distance. More trees and a larger ``search_k`` raise
    the recall and the cost. The AdvKNN thesis used Annoy for its DkNN.

    The index is built in memory with Annoy's euclidean metric (``cosine`` is the
    euclidean distance between L2-normalised rows) and holds a float32 copy of the
    points. It is pickled (``joblib.dump``) with the bytes of its saved index, and
    :func:`skdknn.persistence.save_model` keeps it as a memory-mapped ``.ann`` file.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` is the euclidean distance between L2-normalised rows.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    n_trees : int, default=50
        Trees in the forest. More trees: higher recall, larger index, slower build.
    search_k : int, default=None
        Tree nodes inspected per query. ``None`` uses Annoy's default,
        ``n_trees * n_neighbors``.
    random_state : int, RandomState instance or None, default=None
        Seeds Annoy's tree construction. A fixed seed gives the same index with
        ``n_jobs=1``; threads may build the trees in another order.
    n_jobs : int, default=None
        Threads for building the trees and answering queries (``-1``: every core,
        ``None``: one).
    verbose : int, default=0
        Progress bars for adding points and answering queries when positive.

    Attributes
    ----------
    n_features_in_ : int
        Number of features of the indexed points.
    n_samples_fit_ : int
        Number of indexed points.

    See Also
    --------
    ExactBackend : Exact search, the reference for recall.
    PyNNDescentBackend : Approximate search on a nearest-neighbour graph.

    Notes
    -----
    Annoy returns fewer than ``n_neighbors`` points when ``search_k`` is too small to
    reach that many leaves; such queries are answered again with every node inspected,
    so that each query always has ``n_neighbors`` neighbours.

    References
    ----------
    E. Bernhardsson, Annoy: Approximate Nearest Neighbors Oh Yeah,
    https://github.com/spotify/annoy

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.neighbors import AnnoyBackend
    >>> X = np.array([[0.0], [1.0], [3.0], [6.0]])
    >>> backend = AnnoyBackend(n_neighbors=2, n_trees=5, random_state=0).fit(X)
    >>> dist, ind = backend.kneighbors([[0.9]])
    >>> ind
    array([[1, 0]])
    >>> dist.round(2)
    array([[0.1, 0.9]], dtype=float32)
    >>> backend.kneighbors(n_neighbors=1, return_distance=False).ravel()
    array([1, 0, 1, 2])
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **NeighborsBackend._parameter_constraints,
        "n_trees": [Interval(Integral, 1, None, closed="left")],
        "search_k": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # identical points cannot be split by a hyperplane: index each distinct row once
    _index_distinct = True

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "euclidean",
        mode: str = "distance",
        n_trees: int = 50,
        search_k: int | None = None,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(n_neighbors, metric=metric, mode=mode, n_jobs=n_jobs)
        self.n_trees = n_trees
        self.search_k = search_k
        self.random_state = random_state
        self.verbose = verbose

    # -- engine ----------------------------------------------------------------------
    def _new_index(self) -> Any:
        annoy = import_optional("annoy", "annoy", type(self).__name__)
        return annoy.AnnoyIndex(self.n_features_in_, "euclidean")

    def _build(self, X: NDArray[np.float32]) -> None:
        index = self._new_index()
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        index.set_seed(int(seed))
        rows = progress(
            range(X.shape[0]), verbose=self.verbose, desc="annoy: add points"
        )
        for i in rows:
            index.add_item(i, X[i])
        index.build(self.n_trees, n_jobs=n_threads(self.n_jobs))
        self._index = index

    def _search_k(self, n_neighbors: int) -> int:
        return -1 if self.search_k is None else int(self.search_k)

    def _answer(
        self, query: Any, n_neighbors: int, by_item: bool
    ) -> tuple[list[int], list[float]]:
        """One query by vector or by item id, with every node if too few returned."""
        get = self._index.get_nns_by_item if by_item else self._index.get_nns_by_vector
        ind, dist = get(query, n_neighbors, self._search_k(n_neighbors), True)
        if len(ind) < n_neighbors:
            exhaustive = self._n_indexed * self.n_trees
            ind, dist = get(query, n_neighbors, exhaustive, True)
        return ind, dist

    def _run(
        self, queries: Any, n_queries: int, n_neighbors: int, by_item: bool
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        distances = np.empty((n_queries, n_neighbors), dtype=np.float32)
        indices = np.empty((n_queries, n_neighbors), dtype=np.intp)

        def run_chunk(start: int) -> None:
            for i in range(start, min(start + _CHUNK, n_queries)):
                ind, dist = self._answer(queries[i], n_neighbors, by_item)
                # a short answer is padded with -1 (answered exactly by the base
                # class), never broadcast over the row
                found = min(len(ind), n_neighbors)
                indices[i, :found], distances[i, :found] = ind[:found], dist[:found]
                indices[i, found:], distances[i, found:] = -1, np.inf

        starts = range(0, n_queries, _CHUNK)
        with ThreadPoolExecutor(max_workers=n_threads(self.n_jobs)) as pool:
            # the C++ search releases the GIL, so threads answer queries in parallel
            done = pool.map(run_chunk, starts)
            for _ in progress(
                done, verbose=self.verbose, desc="annoy: queries", total=len(starts)
            ):
                pass
        return distances, indices

    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        return self._run(X, X.shape[0], n_neighbors, by_item=False)

    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        n = self._n_indexed
        return self._run(range(n), n, n_neighbors, by_item=True)

    def _indexed_rows(self) -> NDArray[np.float32]:
        n = self._n_indexed
        rows = np.empty((n, self.n_features_in_), dtype=np.float32)
        for i in range(n):
            rows[i] = self._index.get_item_vector(i)
        return rows

    # -- persistence -----------------------------------------------------------------
    def _load_file(self, path: str | os.PathLike[str], prefault: bool) -> None:
        index = self._new_index()
        index.load(os.fspath(path), prefault)
        if index.get_n_items() != self._n_indexed:
            raise ValueError(
                f"The Annoy index {os.fspath(path)!r} holds {index.get_n_items()} "
                f"points; this backend was fitted on {self._n_indexed} distinct "
                "points."
            )
        self._index = index

    def __getstate__(self) -> dict[str, Any]:
        state = self._state()
        index = state.pop("_index", None)
        if index is not None:
            # Annoy indexes cannot be pickled: embed the bytes of the saved index.
            # Saving remaps the live index to the saved file; on POSIX the mapping
            # outlives the temporary file.
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
                path = Path(tmp) / "index.ann"
                index.save(os.fspath(path))
                state["_index_bytes"] = path.read_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        data = state.pop("_index_bytes", None)
        super().__setstate__(state)
        if data is not None:
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
                path = Path(tmp) / "index.ann"
                path.write_bytes(data)
                self._load_file(path, prefault=True)

    def _save_index(self, prefix: Path) -> dict[str, Any]:
        state = self._state()
        index = state.pop("_index")
        # Annoy remaps the live index to the file it saves: save to a temporary
        # file, copy it, and delete the temporary file, so that the live index
        # maps a file that nobody can change later.
        temporary = Path(f"{prefix}.ann.tmp")
        index.save(os.fspath(temporary))
        shutil.copyfile(temporary, f"{prefix}.ann")
        temporary.unlink()
        return state

    def _load_index(self, prefix: Path, mmap: bool) -> None:
        self._load_file(f"{prefix}.ann", prefault=not mmap)
