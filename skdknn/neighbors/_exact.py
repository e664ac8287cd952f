"""Exact k-nearest neighbours by blocked float32 matrix products."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from numbers import Real
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn import get_config
from sklearn.utils._param_validation import Interval, Options, StrOptions

from ._base import NeighborsBackend, pad_rows, read_tensor

__all__ = ["ExactBackend"]

#: Storage dtypes of the indexed rows, by the names ``storage_dtype`` accepts.
STORAGE_DTYPES: dict[str, type[np.floating]] = {
    "float32": np.float32,
    "float16": np.float16,
}

#: Bytes of indexed rows gathered at a time to recompute near pairs exactly.
_GATHER_BYTES = 64 * 2**20

#: float16's largest finite value: a row holding a larger magnitude cannot be
#: stored in half precision.
FLOAT16_MAX = float(np.finfo(np.float16).max)


@contextlib.contextmanager
def torch_threads(n_jobs: int | None) -> Iterator[None]:
    """Run the block inside with ``n_jobs`` torch threads (``-1``: every core)."""
    if n_jobs is None:
        yield
        return
    previous = torch.get_num_threads()
    n = (os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ExactBackend(NeighborsBackend):
    """Exact (brute-force) nearest neighbours by blocked matrix products.

    Squared euclidean distances are expanded as ``|q|^2 - 2 q.t + |t|^2``: one
    float32 matrix product per block of queries, followed by a partial top-k
    selection. Queries are processed in blocks so that the block of distances never
    exceeds ``working_memory`` megabytes, whatever the number of queries.

    Same neighbours as ``NearestNeighbors(algorithm="brute")`` except among points at
    (numerically) equal distances. The distances of near-duplicate pairs, where the
    expansion loses precision to cancellation, are recomputed directly, so that a
    point is at distance exactly 0 from itself.

    With ``storage_dtype="float16"`` the index keeps its rows in half precision,
    half the memory of float32 (the index is ``n_samples x n_features x 2``
    bytes). Distances are still computed in float32: each block of indexed rows
    is converted to float32 just before its matrix product, so the answer is the
    exact float32 answer for the indexed rows *as rounded to float16* (a relative
    rounding of at most ``2**-11``, about 5e-4, per value; queries are not
    rounded). Neighbours whose distances differ by less than that rounding may
    swap places; see "DkNN on large networks" in the documentation for the
    measured effect on DkNN predictions and credibility.

    Ties are decided by index: each row is sorted by the float32 distance, then
    the index, and of the points tied at the k-th place the lowest indices are
    kept. The answer is
    thus a function of the data, and the answers of shards of the index merge into
    it exactly (:class:`ShardedBackend`), wherever the BLAS rounds each entry of a
    product the same whatever the product's shape (seen on AVX2 CPUs). Products
    with one indexed row or fewer than 16 queries are padded, since BLAS
    libraries compute them by other kernels; but MKL on an AVX-512 CPU rounds
    products of other shapes otherwise too (from about 900 features, and on
    small indexes of wide rows): shards' distances, or those of queries asked in
    other numbers or with other thread counts, then differ from the whole
    index's in the last bits (at most 1.3e-7 relative, measured), and points
    whose distances differ by less, or tie, may swap.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` is the euclidean distance between L2-normalised rows.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    working_memory : float, default=None
        Budget in megabytes for one block of query-to-index distances. ``None`` uses
        scikit-learn's ``working_memory`` setting (see
        :func:`sklearn.set_config`, 1024 by default). At least one query row is
        processed per block.
    n_jobs : int, default=None
        Torch threads for the products and the selection; ``-1`` uses every core,
        ``None`` keeps torch's current setting.
    storage_dtype : {"float32", "float16"} or numpy float type, default="float32"
        Precision in which the index stores its rows. ``"float16"`` halves the
        index's memory (and its files, see :func:`skdknn.persistence.save_model`)
        at the cost of rounding the stored rows to 11 significant bits; the
        searches convert blocks of at most a quarter of ``working_memory`` of
        rows back to float32 as they go. Rows holding a magnitude above 65,504
        (float16's largest value) raise a ``ValueError`` at fit.

    Attributes
    ----------
    n_features_in_ : int
        Number of features of the indexed points.
    n_samples_fit_ : int
        Number of indexed points.

    See Also
    --------
    sklearn.neighbors.NearestNeighbors : The scikit-learn engine with the same answer.
    sklearn.neighbors.KNeighborsTransformer : The transformer API this follows.

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.neighbors import ExactBackend
    >>> X = np.array([[0.0], [1.0], [3.0], [6.0]])
    >>> backend = ExactBackend(n_neighbors=2).fit(X)
    >>> dist, ind = backend.kneighbors([[0.9]])
    >>> ind
    array([[1, 0]])
    >>> dist.round(2)
    array([[0.1, 0.9]], dtype=float32)
    >>> backend.kneighbors(n_neighbors=1, return_distance=False).ravel()
    array([1, 0, 1, 2])

    Half-precision storage: half the memory, the same neighbours here.

    >>> half = ExactBackend(n_neighbors=2, storage_dtype="float16").fit(X)
    >>> half._fit_X.nbytes, backend._fit_X.nbytes
    (8, 16)
    >>> half.kneighbors([[0.9]], return_distance=False)
    array([[1, 0]])
    """

    _index_arrays = ("_fit_X", "_sq_norms")

    _parameter_constraints: dict[str, list[Any]] = {
        **NeighborsBackend._parameter_constraints,
        "working_memory": [Interval(Real, 0, None, closed="neither"), None],
        "storage_dtype": [
            StrOptions(set(STORAGE_DTYPES)),
            Options(type, set(STORAGE_DTYPES.values())),
        ],
    }

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "euclidean",
        mode: str = "distance",
        working_memory: float | None = None,
        n_jobs: int | None = None,
        storage_dtype: Any = "float32",
    ) -> None:
        super().__init__(n_neighbors, metric=metric, mode=mode, n_jobs=n_jobs)
        self.working_memory = working_memory
        self.storage_dtype = storage_dtype

    def _storage(self) -> type[np.floating]:
        """The numpy type the index stores its rows in."""
        dtype = self.storage_dtype
        if isinstance(dtype, str):
            return STORAGE_DTYPES[dtype]
        return cast(type[np.floating], dtype)

    @property
    def _keeps_rows(self) -> bool:  # type: ignore[override]
        # a float16 index converts, i.e. copies, the rows it is given
        return self._storage() is np.float32

    @property
    def _row_dtype(self) -> type[np.floating]:  # type: ignore[override]
        return self._storage()

    def _reduce(self, chunk: NDArray) -> NDArray:
        return self._to_storage(super()._reduce(chunk))

    def _to_storage(self, X: NDArray) -> NDArray:
        """X in the storage dtype (float16 only when every value fits)."""
        dtype = self._storage()
        if dtype is np.float32 or X.dtype == dtype:
            return X
        largest = float(np.abs(X).max(initial=0.0))
        if largest > FLOAT16_MAX:
            raise ValueError(
                f"{type(self).__name__}(storage_dtype='float16') cannot store rows "
                f"holding a magnitude of {largest:.4g}: float16's largest value is "
                f"{FLOAT16_MAX:g}. Use storage_dtype='float32', or scale the rows "
                "(e.g. metric='cosine', or a projection) first."
            )
        return X.astype(dtype)

    def _build(self, X: NDArray) -> None:
        # rows already in half precision (an exact fallback over a float16 index)
        # are kept as they are; the search handles either dtype
        X = self._to_storage(X)
        self._fit_X = X
        if X.dtype == np.float32:
            # einsum avoids a temporary as large as the index itself
            self._sq_norms = np.einsum("ij,ij->i", X, X)
            return
        # the norms of the stored (rounded) rows, in float32, block by block
        self._sq_norms = np.empty(X.shape[0], dtype=np.float32)
        step = self._tile_rows(X.shape[0], X.shape[1])
        for start in range(0, X.shape[0], step):
            block = X[start : start + step].astype(np.float32)
            self._sq_norms[start : start + step] = np.einsum("ij,ij->i", block, block)

    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        return self._search(self._fit_X, n_neighbors)

    def _budget_bytes(self) -> float:
        budget_mb = self.working_memory
        if budget_mb is None:
            budget_mb = get_config()["working_memory"]
        return float(budget_mb) * 2**20

    def _block_rows(self, n_index: int) -> int:
        """Queries per block: a block of scores against ``n_index`` rows fits in
        the budget."""
        bytes_per_row = 4 * n_index
        return max(1, int(self._budget_bytes() // bytes_per_row))

    def _tile_rows(self, n_rows: int, n_features: int) -> int:
        """Indexed rows converted to float32 at a time (a quarter of the budget)."""
        return max(1, min(n_rows, int(self._budget_bytes() / 4 // (4 * n_features))))

    def _scores(
        self,
        query: torch.Tensor,
        fit_t: torch.Tensor,
        sq_norms: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """``out = |t|^2 - 2 q.t`` for every indexed row t, in float32.

        A half-precision index is converted to float32 one tile of rows at a time.
        """
        if fit_t.dtype == torch.float32:
            _expanded_scores(query, fit_t, sq_norms, out)
            return
        step = self._tile_rows(*fit_t.shape)
        for start in range(0, fit_t.shape[0], step):
            tile = fit_t[start : start + step].float()
            part = slice(start, start + step)
            _expanded_scores(query, tile, sq_norms[part], out[:, part])

    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        n_queries = X.shape[0]
        distances = np.empty((n_queries, n_neighbors), dtype=np.float32)
        indices = np.empty((n_queries, n_neighbors), dtype=np.int64)
        fit_t = read_tensor(self._fit_X)
        sq_norms = read_tensor(self._sq_norms)
        n_index = fit_t.shape[0]
        rows = min(self._block_rows(n_index), max(n_queries, 1))
        scores = torch.empty((rows, n_index), dtype=torch.float32)
        k_plus = min(n_neighbors + 1, n_index)
        with torch.inference_mode(), torch_threads(self.n_jobs):
            for start in range(0, n_queries, rows):
                # queries in float32 (the stored rows of a float16 index, for
                # kneighbors(X=None), are converted block by block)
                query = read_tensor(X[start : start + rows]).float()
                block = scores[: query.shape[0]]
                # |t|^2 - 2 q.t ranks the index rows as |q - t|^2 does
                self._scores(query, fit_t, sq_norms, block)
                # one more than asked, to see ties that straddle the k-th place
                values, idx = torch.topk(block, k_plus, dim=1, largest=False)
                # the refinements are many small operations: on one thread, since
                # threads that wait for each other on a shared machine made them
                # 15x slower (85 s instead of 5.6 s for 1,000 queries)
                with torch_threads(1):
                    sq_dist, idx = _refine_near_duplicates(
                        query, fit_t, sq_norms, values, idx, block
                    )
                    dist = sq_dist.sqrt_()
                    if k_plus > n_neighbors:
                        for row in _tied_at_kth(dist, n_neighbors).tolist():
                            d, i = _exact_row(
                                query[row], fit_t, sq_norms, block[row], n_neighbors
                            )
                            dist[row, :n_neighbors], idx[row, :n_neighbors] = d, i
                end = start + query.shape[0]
                distances[start:end] = dist[:, :n_neighbors].numpy()
                indices[start:end] = idx[:, :n_neighbors].numpy()
        return sort_by_distance_then_index(distances, indices.astype(np.intp))


#: Fewest query rows of a product: a block of fewer queries is padded to it.
_MIN_QUERY_ROWS = 16


def _expanded_scores(
    query: torch.Tensor, rows: torch.Tensor, sq_norms: torch.Tensor, out: torch.Tensor
) -> None:
    """``out = |t|^2 - 2 q.t`` by one float32 matrix product (``addmm``).

    BLAS libraries compute a product with one indexed row (a matrix-vector
    product) or with a few query rows by other kernels, which round otherwise:
    with MKL on an AVX-512 CPU, an index of one row (a shard of one point) and
    blocks of 1 to 12 queries gave other last bits than the same pairs in larger
    products, and one query asked alone could get other neighbours than in a
    batch where distances tie. A block of fewer than ``_MIN_QUERY_ROWS`` queries
    is padded with zero rows, and one indexed row with a zero row (copies of the
    queries and of that row only, never of the index). Products of other shapes
    may still round otherwise on such CPUs (see ``ExactBackend``'s notes).
    """
    n_query, n_rows = query.shape[0], rows.shape[0]
    if n_query >= _MIN_QUERY_ROWS and n_rows > 1:
        torch.addmm(sq_norms, query, rows.T, beta=1, alpha=-2, out=out)
        return
    query = pad_rows(query, _MIN_QUERY_ROWS)
    rows, sq_norms = pad_rows(rows, 2), pad_rows(sq_norms, 2)
    scores = torch.addmm(sq_norms, query, rows.T, beta=1, alpha=-2)
    out.copy_(scores[:n_query, :n_rows])


def _pair_sq_dist(
    query: torch.Tensor,
    fit_t: torch.Tensor,
    query_rows: torch.Tensor,
    fit_rows: torch.Tensor,
) -> torch.Tensor:
    """``|query[query_rows[i]] - fit_t[fit_rows[i]]|^2`` for each i, in float32.

    The rows are gathered ``_GATHER_BYTES`` at a time: a refinement may recompute
    every pair of a block (or every indexed row, for one query among duplicates),
    and gathering them at once would copy as much as the index.
    """
    out = torch.empty(fit_rows.shape[0], dtype=torch.float32)
    step = max(1, _GATHER_BYTES // (4 * max(1, fit_t.shape[1])))
    for start in range(0, fit_rows.shape[0], step):
        part = slice(start, start + step)
        diff = query[query_rows[part]] - fit_t[fit_rows[part]]
        out[part] = (diff * diff).sum(dim=1)
    return out


def _tied_at_kth(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Rows of k + 1 sorted distances whose (k+1)-th equals their k-th.

    Distances grow with the ranking scores, so in the other rows no point left
    out of the k + 1 can be as near as the k-th: the k first (sorted by distance,
    then index) are the answer. In these rows a tie straddles the k-th place.
    """
    return (dist[:, k] == dist[:, k - 1]).nonzero().flatten()


def _exact_row(
    query: torch.Tensor,
    fit_t: torch.Tensor,
    sq_norms: torch.Tensor,
    scores: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest of one query among all points, ties by index, every pair's
    distance computed as in the blocked search (exact for near pairs)."""
    # |q|^2 reduced as in _refine_near_duplicates, to the same bits
    q_sq = (query[None, :] * query[None, :]).sum(dim=1)
    sq_dist = (scores + q_sq).clamp_(min=0)
    near = (sq_dist < 1e-2 * (q_sq + sq_norms)).nonzero().flatten()
    if near.numel():
        sq_dist[near] = _pair_sq_dist(query[None, :], fit_t, near * 0, near)
    # a stable sort keeps equal distances in index order
    dist, order = torch.sort(sq_dist.sqrt_(), stable=True)
    return dist[:k], order[:k]


def sort_by_distance_then_index(
    dist: NDArray[np.float32], ind: NDArray[np.intp]
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """Each row sorted by increasing distance, equal distances by increasing index.

    The order of the answers of every exact search in skdknn: a total order, so
    that answers computed on parts of the index merge into the same answer.

    Examples
    --------
    >>> dist = np.array([[0.5, 0.2, 0.5]], dtype=np.float32)
    >>> sort_by_distance_then_index(dist, np.array([[7, 9, 3]]))[1]
    array([[9, 3, 7]])
    """
    order = np.lexsort((ind, dist), axis=1)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(ind, order, 1)


def _refine_near_duplicates(
    query: torch.Tensor,
    fit_t: torch.Tensor,
    sq_norms: torch.Tensor,
    values: torch.Tensor,
    idx: torch.Tensor,
    scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances of the selected pairs, exact where the expansion is not.

    ``|q|^2 + |t|^2 - 2 q.t`` loses about ``1e-7 (|q|^2 + |t|^2)`` to cancellation,
    which only matters for pairs much closer than their norms (near-duplicates, a
    point and itself). Those few pairs are recomputed as ``|q - t|^2`` and the rows
    re-sorted; the rest keep the expansion, whose relative error is below 1e-5.
    Given the rows' ``scores`` (``|t|^2 - 2 q.t`` of every indexed point), a row
    holding such a pair also re-ranks every point whose score lies within that
    error of the k-th selected one, when there are more than k, with the near pairs
    among them recomputed, and keeps the k nearest: a point then ties with its
    duplicates at distance 0 instead of losing the selection to them. Every pair's
    distance is thus computed the same way whatever else is indexed.
    """
    q_sq = (query * query).sum(dim=1, keepdim=True)
    sq_dist = (values + q_sq).clamp_(min=0)
    suspect = sq_dist < 1e-2 * (q_sq + sq_norms[idx])
    rows = suspect.any(dim=1).nonzero().squeeze(1)
    if rows.numel() == 0:
        return sq_dist, idx
    if scores is not None:
        k = idx.shape[1]
        max_norm = sq_norms.max()
        crowded = torch.zeros(rows.shape, dtype=torch.bool)
        # the rows' scores are compared a group at a time: on data full of
        # near-duplicates most rows are suspect, and comparing them at once
        # copied the whole block of scores (memory beyond working_memory)
        step = max(1, _GATHER_BYTES // (4 * scores.shape[1]))
        for start in range(0, rows.numel(), step):
            part = rows[start : start + step]
            tol = 1e-5 * (q_sq[part, 0] + max_norm)
            within = scores[part] <= (values[part, -1] + tol)[:, None]
            crowded_part = within.sum(dim=1) > k
            crowded[start : start + step] = crowded_part
            for row, mask in zip(
                part[crowded_part].tolist(), within[crowded_part], strict=True
            ):
                candidates = mask.nonzero().squeeze(1)
                # each pair's distance as anywhere else (exact if near, else
                # expanded), so that the answer does not depend on which other
                # points are indexed
                dist = (scores[row, candidates] + q_sq[row]).clamp_(min=0)
                near = (dist < 1e-2 * (q_sq[row] + sq_norms[candidates])).nonzero()
                near = near.squeeze(1)
                rows_of = torch.full_like(near, row)
                dist[near] = _pair_sq_dist(query, fit_t, rows_of, candidates[near])
                dist, order = torch.sort(dist, stable=True)
                sq_dist[row], idx[row] = dist[:k], candidates[order[:k]]
                suspect[row] = False  # exact already
        rows = rows[~crowded]
        if rows.numel() == 0:
            return sq_dist, idx
    # only the rows holding a suspect pair are recomputed and re-sorted
    sub_idx, sub_dist = idx[rows], sq_dist[rows]
    r, c = suspect[rows].nonzero(as_tuple=True)
    sub_dist[r, c] = _pair_sq_dist(query, fit_t, rows[r], sub_idx[r, c])
    sub_dist, order = torch.sort(sub_dist, dim=1, stable=True)
    sq_dist[rows] = sub_dist
    idx[rows] = torch.gather(sub_idx, 1, order)
    return sq_dist, idx


def exact_search(
    data: NDArray[np.float32], X: NDArray[np.float32], n_neighbors: int
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """Exact neighbours of X among ``data`` without copying ``data``.

    The fallback of the approximate backends for the few queries their engine
    answers with fewer than ``n_neighbors`` points.
    """
    engine = ExactBackend()  # its search is given n_neighbors
    engine._build(data)
    return engine._search(X, n_neighbors)
