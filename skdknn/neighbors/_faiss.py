"""Nearest neighbours with faiss: exact flat search or an inverted-file index."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import NeighborsBackend, import_optional, n_threads

__all__ = ["FaissBackend"]

#: faiss's k-means warns below this many training points per centroid.
MIN_POINTS_PER_LIST = 39

#: The k-means of the inverted file is trained on at most this many points per list
#: (a random sample): within faiss's advice of 30 to 256, and a quarter of the cost
#: of its default of 256 (k-means costs in proportion to its training points).
TRAIN_POINTS_PER_LIST = 64

#: Memory budget (bytes) of one step of recomputing near-duplicate distances.
_REFINE_BYTES = 64 * 2**20


def _import_faiss(backend: str) -> Any:
    """The faiss module, or an ImportError naming the extra and ``faiss-cpu``."""
    return import_optional("faiss", "faiss", backend, package="faiss-cpu")


@contextlib.contextmanager
def omp_threads(faiss: Any, n_jobs: int | None) -> Iterator[None]:
    """Run the block inside with ``n_jobs`` OpenMP threads, restored afterwards.

    faiss and torch share one OpenMP runtime: the previous count is restored so
    that neither keeps the other's setting.
    """
    if n_jobs is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n_threads(n_jobs))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def default_n_lists(n_samples: int) -> int:
    """About ``sqrt(n)`` lists, with at least 39 points per list (at least one).

    faiss's guideline of ``4 sqrt(n)`` to ``16 sqrt(n)`` lists suits indexes that
    answer many more queries than they hold points. A DkNN builds each index once
    and queries it with fewer points than it holds: there the k-means costs more
    than the finer lists save. (One thread, 60,000 noisy copies of projected CNN
    activations, 128 features, 10,000 queries, k = 75: build and queries took
    3.8 s with 980 lists and 32 probes, 1.6 s with 245 lists and 16 probes, both
    at recall 0.97; exact search took 4.9 s.)
    """
    by_size = round(np.sqrt(n_samples))
    return int(max(1, min(by_size, n_samples // MIN_POINTS_PER_LIST)))


def _refine_near_duplicates(
    X: NDArray[np.float32],
    data: NDArray[np.float32],
    sq_dist: NDArray[np.float32],
    ind: NDArray[np.int64],
) -> None:
    """Recompute the squared distances of near-duplicate pairs directly, in place.

    faiss's flat search expands ``|q - t|^2`` as ``|q|^2 - 2 q.t + |t|^2`` for
    batches of queries, which loses about ``1e-7 (|q|^2 + |t|^2)`` to cancellation:
    a point is not at distance 0 from itself. As in :class:`ExactBackend`, the pairs
    closer than a sixth of the query's norm (every pair closer than ``1e-2 (|q|^2 +
    |t|^2)``) are recomputed as ``|q - t|^2`` and their rows re-sorted.
    """
    q_sq = np.einsum("ij,ij->i", X, X)
    rows, cols = np.nonzero(sq_dist < 0.025 * q_sq[:, None])
    # ids outside the index are the base class's to re-answer, not to look up
    valid = (ind[rows, cols] >= 0) & (ind[rows, cols] < data.shape[0])
    rows, cols = rows[valid], cols[valid]
    if rows.size == 0:
        return
    step = max(1, _REFINE_BYTES // (4 * max(1, X.shape[1])))
    for start in range(0, rows.size, step):
        r, c = rows[start : start + step], cols[start : start + step]
        diff = X[r] - data[ind[r, c]]
        sq_dist[r, c] = np.einsum("ij,ij->i", diff, diff)
    touched = np.unique(rows)
    order = np.argsort(sq_dist[touched], axis=1, kind="stable")
    sq_dist[touched] = np.take_along_axis(sq_dist[touched], order, axis=1)
    ind[touched] = np.take_along_axis(ind[touched], order, axis=1)


class FaissBackend(NeighborsBackend):
    """Nearest neighbours with faiss (Meta's similarity-search library).

    Two of faiss's indexes, both with the euclidean (L2) distance:

    - ``index="flat"`` (``IndexFlatL2``): exact brute-force search, the same
      neighbours as :class:`ExactBackend`, by faiss's blocked BLAS products and
      multi-threaded selection.
    - ``index="ivf"`` (``IndexIVFFlat``): an inverted file. k-means splits the
      points into ``n_lists`` cells (Voronoi cells of the centroids); a query is
      compared with the points of the ``n_probe`` cells whose centroids are nearest
      to it, about ``n_probe / n_lists`` of the index. More probes: higher recall,
      slower queries. The points are stored as they are, so the distances returned
      are exact; only the candidate set is approximate.

    The inverted file pays on narrow layers with many points, in particular after
    :class:`ProjectedBackend`; on the paper CNN,
    ``ProjectedBackend(FaissBackend(index="ivf"), n_components=128)`` on every
    layer. faiss is an optional dependency: ``pip install "skdknn[faiss]"`` (or
    ``pip install faiss-cpu``); it is imported only when this backend is fitted.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` is the euclidean distance between L2-normalised rows.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    index : {"flat", "ivf"}, default="flat"
        ``flat``: exact search. ``ivf``: inverted file, approximate.
    n_lists : int, default=None
        Cells of the inverted file (``ivf`` only), at most the number of points.
        ``None`` uses ``round(sqrt(n_samples))``, capped at ``n_samples // 39``
        (faiss's k-means wants 39 points per centroid; it warns on stderr with
        fewer) and at least 1. The k-means is trained on a random sample of at
        most 64 points per cell.
    n_probe : int, default=16
        Cells searched per query (``ivf`` only), at most ``n_lists``. With
        ``n_lists=None`` it is capped at the number of cells chosen, so that tiny
        indexes are searched exhaustively.
    random_state : int, RandomState instance or None, default=None
        Seeds the k-means of the inverted file (its initial centroids and training
        sample). A fixed seed gives the same cells, hence the same neighbours.
    n_jobs : int, default=None
        OpenMP threads of faiss for building and searching, for the duration of
        each call (``-1``: every core). ``None`` keeps faiss's current setting
        (every core by default).

    Attributes
    ----------
    n_features_in_ : int
        Number of features of the indexed points.
    n_samples_fit_ : int
        Number of indexed points.
    n_lists_ : int or None
        Cells of the inverted file; ``None`` for ``index="flat"``.
    n_probe_ : int or None
        Cells searched per query; ``None`` for ``index="flat"``.

    See Also
    --------
    ExactBackend : Exact search with torch, the reference for recall.
    ProjectedBackend : Reduce the width first; the inverted file pays after it.

    Notes
    -----
    A query that the inverted file answers with fewer than ``n_neighbors`` points
    (its ``n_probe`` cells hold fewer) is answered again by exact search.

    faiss indexes cannot be pickled: ``joblib.dump`` embeds the bytes of the
    serialised index (``faiss.serialize_index``), and
    :func:`skdknn.persistence.save_model` writes faiss's own ``.faiss`` file, whose
    points ``load_model(mmap=True)`` memory-maps for the flat index (an inverted
    file is read into memory).

    References
    ----------
    J. Johnson, M. Douze and H. Jegou, "Billion-scale similarity search with GPUs",
    IEEE Transactions on Big Data, 2019. J. Sivic and A. Zisserman, "Video Google: a
    text retrieval approach to object matching in videos", ICCV 2003 (the inverted
    file). https://github.com/facebookresearch/faiss

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.neighbors import FaissBackend
    >>> X = np.array([[0.0], [1.0], [3.0], [6.0]])
    >>> backend = FaissBackend(n_neighbors=2).fit(X)
    >>> dist, ind = backend.kneighbors([[0.9]])
    >>> ind
    array([[1, 0]])
    >>> dist.round(2)
    array([[0.1, 0.9]], dtype=float32)
    >>> backend.kneighbors(n_neighbors=1, return_distance=False).ravel()
    array([1, 0, 1, 2])
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 8))
    >>> ivf = FaissBackend(n_neighbors=10, index="ivf", random_state=0).fit(X)
    >>> ivf.n_lists_, ivf.n_probe_
    (45, 16)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **NeighborsBackend._parameter_constraints,
        "index": [StrOptions({"flat", "ivf"})],
        "n_lists": [Interval(Integral, 1, None, closed="left"), None],
        "n_probe": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    # faiss copies the rows into its own storage
    _keeps_rows = False
    # each distinct row once: copies would crowd the inverted file's cells
    _index_distinct = True

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "euclidean",
        mode: str = "distance",
        index: str = "flat",
        n_lists: int | None = None,
        n_probe: int = 16,
        random_state: Any = None,
        n_jobs: int | None = None,
    ) -> None:
        super().__init__(n_neighbors, metric=metric, mode=mode, n_jobs=n_jobs)
        self.index = index
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.random_state = random_state

    # -- engine ----------------------------------------------------------------------
    def _cells(self, n_samples: int) -> tuple[int, int]:
        """(n_lists, n_probe) of the inverted file on ``n_samples`` points."""
        if self.n_lists is None:
            n_lists = default_n_lists(n_samples)
            return n_lists, min(self.n_probe, n_lists)
        if self.n_lists > n_samples:
            raise ValueError(
                f"n_lists={self.n_lists} exceeds the number of indexed points "
                f"({n_samples}); use fewer lists, or n_lists=None to choose them from "
                "the number of points."
            )
        if self.n_probe > self.n_lists:
            raise ValueError(
                f"n_probe={self.n_probe} exceeds n_lists={self.n_lists}: a query "
                "cannot probe more cells than the inverted file has."
            )
        return int(self.n_lists), int(self.n_probe)

    def _build(self, X: NDArray[np.float32]) -> None:
        n, d = X.shape
        cells = self._cells(n) if self.index == "ivf" else None
        self.n_lists_: int | None = None if cells is None else cells[0]
        self.n_probe_: int | None = None if cells is None else cells[1]
        faiss = _import_faiss(type(self).__name__)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        with omp_threads(faiss, self.n_jobs):
            if cells is None:
                index = faiss.IndexFlatL2(d)
            else:
                index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, cells[0])
                index.cp.seed = int(seed)
                index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
                index.train(X)
                index.nprobe = cells[1]
            index.add(X)
        self._index = index

    def _is_flat(self) -> bool:
        """Whether the fitted index is the flat one (``index`` may have changed)."""
        return self.n_lists_ is None

    def _indexed_rows(self) -> NDArray[np.float32]:
        """The indexed rows in their original order: a view for the flat index, a
        copy reconstructed from the cells for the inverted file."""
        if self._is_flat():
            faiss = _import_faiss(type(self).__name__)
            n, d = self._n_indexed, self.n_features_in_
            return faiss.rev_swig_ptr(self._index.get_xb(), n * d).reshape(n, d)
        return np.asarray(self._index.reconstruct_n(0, self._n_indexed))

    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        faiss = _import_faiss(type(self).__name__)
        with omp_threads(faiss, self.n_jobs):
            sq_dist, ind = self._index.search(X, n_neighbors)
        if self._is_flat():
            _refine_near_duplicates(X, self._indexed_rows(), sq_dist, ind)
        # rows the inverted file pads with -1 (too few points in the probed cells)
        # are answered exactly by the base class
        dist = np.sqrt(np.maximum(sq_dist, 0), dtype=np.float32)
        return dist, ind.astype(np.intp, copy=False)

    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        return self._search(self._indexed_rows(), n_neighbors)

    # -- persistence -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self._state()
        index = state.pop("_index", None)
        if index is not None:
            # faiss indexes cannot be pickled: embed their serialised bytes
            faiss = _import_faiss(type(self).__name__)
            state["_index_bytes"] = faiss.serialize_index(index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        data = state.pop("_index_bytes", None)
        super().__setstate__(state)
        if data is not None:
            faiss = _import_faiss(type(self).__name__)
            self._index = faiss.deserialize_index(np.asarray(data, dtype=np.uint8))

    def _save_index(self, prefix: Path) -> dict[str, Any]:
        state = self._state()
        faiss = _import_faiss(type(self).__name__)
        faiss.write_index(state.pop("_index"), f"{prefix}.faiss")
        return state

    def _load_index(self, prefix: Path, mmap: bool) -> None:
        faiss = _import_faiss(type(self).__name__)
        path = f"{prefix}.faiss"
        # IO_FLAG_MMAP_IFC maps the points of a flat index from the file. (faiss's
        # IO_FLAG_MMAP would map an inverted file's cells as on-disk lists, which
        # then serialise as a reference to the file instead of the points.)
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        try:
            index = faiss.read_index(path, flags)
        except RuntimeError as exc:
            raise ValueError(f"faiss cannot read {os.fspath(path)!r}: {exc}") from exc
        if index.ntotal != self._n_indexed or index.d != self.n_features_in_:
            raise ValueError(
                f"The faiss index {path!r} holds {index.ntotal} points of {index.d} "
                f"features; this backend was fitted on {self._n_indexed} distinct "
                f"points of {self.n_features_in_}."
            )
        self._index = index
