"""Multi-probe random-hyperplane locality-sensitive hashing with exact re-ranking."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn import get_config
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import NeighborsBackend, progress, read_tensor
from ._exact import _refine_near_duplicates, exact_search, torch_threads

__all__ = ["LSHBackend"]

#: Above this share of candidate pairs, a block is re-ranked by one dense product.
_DENSE_SHARE = 0.2


class LSHBackend(NeighborsBackend):
    """Approximate nearest neighbours by multi-probe locality-sensitive hashing.

    The original DkNN paper searched with FALCONN's LSH, which no longer builds on
    current Pythons; this is a small numpy/torch implementation of the same family.
    Each of ``n_tables`` hash tables hashes a point, centred on the mean of the
    indexed points, to the signs of its projections on ``n_bits`` random gaussian
    directions (random-hyperplane hashing, or SimHash: two points share a bit with
    probability ``1 - angle / pi``). A query looks up its own bucket in every table
    and, multi-probe, the ``n_probes - 1`` buckets that differ from it in the bits
    whose projections are closest to zero (the likeliest to flip). The union of
    those buckets is re-ranked by exact euclidean distance, so the distances returned
    are exact and only the candidate set is approximate.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` is the euclidean distance between L2-normalised rows.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    n_tables : int, default=20
        Hash tables. More tables: higher recall, more candidates to re-rank.
    n_bits : int or "auto", default="auto"
        Bits (hyperplanes) per table, at most 62. Each extra bit halves the bucket
        size. ``"auto"`` uses ``round(log2(n_samples / bucket_size))``.
    n_probes : int, default=8
        Buckets probed per table: the query's own and those one flipped bit away,
        least certain bits first. At most ``n_bits + 1``.
    bucket_size : int, default=16
        Target number of points per bucket when ``n_bits="auto"``.
    working_memory : float, default=None
        Budget in megabytes for one block of queries (candidate mask and distances).
        ``None`` uses scikit-learn's ``working_memory`` (see
        :func:`sklearn.set_config`).
    random_state : int, RandomState instance or None, default=None
        Seeds the random directions.
    n_jobs : int, default=None
        Torch threads for projections and re-ranking; ``-1`` uses every core,
        ``None`` keeps torch's current setting.
    verbose : int, default=0
        Progress bar over blocks of queries when positive.

    Attributes
    ----------
    n_features_in_ : int
        Number of features of the indexed points.
    n_samples_fit_ : int
        Number of indexed points.
    n_bits_ : int
        Bits per table used.

    See Also
    --------
    ExactBackend : Exact search, the reference for recall.
    ProjectedBackend : Reduce the dimension first; re-ranking candidates costs one
        dot product per candidate and feature.

    Notes
    -----
    A query with fewer than ``n_neighbors`` candidates is answered by exact search.
    Re-ranking reads every candidate's features: on very wide layers (12,544
    features) it costs about as much as exact search unless the candidate sets are
    small, so LSH pays on moderate widths, e.g. after :class:`ProjectedBackend`.

    References
    ----------
    M. Charikar, "Similarity estimation techniques from rounding algorithms",
    STOC 2002. Q. Lv, W. Josephson, Z. Wang, M. Charikar and K. Li, "Multi-probe LSH:
    efficient indexing for high-dimensional similarity search", VLDB 2007.

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.neighbors import LSHBackend
    >>> X = np.array([[0.0], [1.0], [3.0], [6.0]])
    >>> backend = LSHBackend(n_neighbors=2, random_state=0).fit(X)
    >>> dist, ind = backend.kneighbors([[0.9]])
    >>> ind
    array([[1, 0]])
    >>> dist.round(2)
    array([[0.1, 0.9]], dtype=float32)
    """

    # copies of a row would share every bucket: index each distinct row once
    _index_distinct = True

    _index_arrays = (
        "_fit_X",
        "_sq_norms",
        "_mean",
        "_directions",
        "_sorted_codes",
        "_order",
    )

    _parameter_constraints: dict[str, list[Any]] = {
        **NeighborsBackend._parameter_constraints,
        "n_tables": [Interval(Integral, 1, None, closed="left")],
        "n_bits": [Interval(Integral, 1, 62, closed="both"), StrOptions({"auto"})],
        "n_probes": [Interval(Integral, 1, None, closed="left")],
        "bucket_size": [Interval(Integral, 1, None, closed="left")],
        "working_memory": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "euclidean",
        mode: str = "distance",
        n_tables: int = 20,
        n_bits: int | str = "auto",
        n_probes: int = 8,
        bucket_size: int = 16,
        working_memory: float | None = None,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(n_neighbors, metric=metric, mode=mode, n_jobs=n_jobs)
        self.n_tables = n_tables
        self.n_bits = n_bits
        self.n_probes = n_probes
        self.bucket_size = bucket_size
        self.working_memory = working_memory
        self.random_state = random_state
        self.verbose = verbose

    # -- hashing ---------------------------------------------------------------------
    def _projections(self, X: NDArray[np.float32]) -> torch.Tensor:
        """(n, n_tables, n_bits) projections of the centred rows."""
        X_t = read_tensor(X) - read_tensor(self._mean)
        proj = X_t @ read_tensor(self._directions)
        return proj.reshape(X.shape[0], self.n_tables, self.n_bits_)

    def _codes(self, bits: torch.Tensor) -> torch.Tensor:
        """Pack the last axis of a boolean tensor into int64 bucket codes."""
        weights = 2 ** torch.arange(self.n_bits_, dtype=torch.int64)
        return (bits.to(torch.int64) * weights).sum(dim=-1)

    def _build(self, X: NDArray[np.float32]) -> None:
        n, d = X.shape
        if self.n_bits == "auto":
            ratio = max(n / self.bucket_size, 2.0)
            self.n_bits_ = int(min(62, max(1, round(np.log2(ratio)))))
        else:
            self.n_bits_ = int(self.n_bits)
        rng = check_random_state(self.random_state)
        directions = rng.standard_normal((d, self.n_tables * self.n_bits_))
        self._directions = directions.astype(np.float32)
        self._mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._fit_X = X
        X_t = read_tensor(X)
        codes = np.empty((self.n_tables, n), dtype=np.int64)
        rows = self._block_rows(d)
        with torch.inference_mode(), torch_threads(self.n_jobs):
            self._sq_norms = (X_t * X_t).sum(dim=1).numpy()
            for start in range(0, n, rows):
                proj = self._projections(X[start : start + rows])
                codes[:, start : start + rows] = self._codes(proj > 0).T.numpy()
        self._order = np.argsort(codes, axis=1, kind="stable")
        self._sorted_codes = np.take_along_axis(codes, self._order, axis=1)

    def _probe_codes(self, proj: torch.Tensor) -> NDArray[np.int64]:
        """(n_queries, n_tables, n_probes) buckets: own, then least certain flips."""
        codes = self._codes(proj > 0)
        n_flips = min(self.n_probes, self.n_bits_ + 1) - 1
        flips = torch.argsort(proj.abs(), dim=-1)[..., :n_flips]
        probes = torch.bitwise_xor(codes[..., None], 2**flips)
        return torch.cat([codes[..., None], probes], dim=-1).numpy()

    def _candidate_mask(self, proj: torch.Tensor) -> NDArray[np.bool_]:
        """(n_queries, n_samples_fit) mask of the points in the probed buckets."""
        probes = self._probe_codes(proj)
        n_queries = probes.shape[0]
        mask = np.zeros((n_queries, self._n_indexed), dtype=bool)
        for t in range(self.n_tables):
            table = self._sorted_codes[t]
            starts = np.searchsorted(table, probes[:, t], side="left").ravel()
            ends = np.searchsorted(table, probes[:, t], side="right").ravel()
            lengths = ends - starts
            total = int(lengths.sum())
            if total == 0:
                continue
            query_of = np.repeat(np.arange(starts.size) // probes.shape[2], lengths)
            # positions start, start + 1, ..., end - 1 of every probed bucket
            offsets = np.arange(total) - np.repeat(
                np.cumsum(lengths) - lengths, lengths
            )
            mask[query_of, self._order[t][np.repeat(starts, lengths) + offsets]] = True
        return mask

    # -- re-ranking ------------------------------------------------------------------
    def _block_rows(self, width: int) -> int:
        budget_mb = self.working_memory
        if budget_mb is None:
            budget_mb = get_config()["working_memory"]
        bytes_per_row = 5 * max(self._n_indexed, width)  # float32 + bool mask
        return max(1, int(budget_mb * 2**20 // bytes_per_row))

    def _rerank_dense(
        self, query: torch.Tensor, mask: NDArray[np.bool_], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fit_t = read_tensor(self._fit_X)
        sq_norms = read_tensor(self._sq_norms)
        scores = torch.addmm(sq_norms, query, fit_t.T, beta=1, alpha=-2)
        scores.masked_fill_(read_tensor(~mask), float("inf"))
        values, idx = torch.topk(scores, k, dim=1, largest=False)
        return _refine_near_duplicates(query, fit_t, sq_norms, values, idx, scores)

    def _rerank_sparse(
        self, query: torch.Tensor, mask: NDArray[np.bool_], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = np.nonzero(mask)
        counts = mask.sum(axis=1)
        width = int(counts.max())
        fit_t = read_tensor(self._fit_X)
        sq_dist = torch.empty(rows.size, dtype=torch.float32)
        step = max(1, int(64 * 2**20 // (4 * max(1, self.n_features_in_))))
        for s in range(0, rows.size, step):
            r = read_tensor(rows[s : s + step])
            c = read_tensor(cols[s : s + step])
            diff = fit_t[c] - query[r]
            sq_dist[s : s + step] = (diff * diff).sum(dim=1)
        padded = torch.full((mask.shape[0], width), float("inf"))
        ids = torch.zeros((mask.shape[0], width), dtype=torch.int64)
        position = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        padded[rows, position] = sq_dist
        ids[rows, position] = read_tensor(cols)
        values, pos = torch.topk(padded, min(k, width), dim=1, largest=False)
        return values, torch.gather(ids, 1, pos)

    def _search_block(
        self, X: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        query = read_tensor(X)
        mask = self._candidate_mask(self._projections(X))
        counts = mask.sum(axis=1)
        short = counts < k
        mask[short] = True  # answered exactly below; keeps the shapes regular
        if mask.sum() > _DENSE_SHARE * mask.size:
            sq_dist, idx = self._rerank_dense(query, mask, k)
        else:
            sq_dist, idx = self._rerank_sparse(query, mask, k)
        dist = sq_dist.clamp_(min=0).sqrt_().numpy()
        ind = idx.numpy().astype(np.intp)
        if short.any():
            dist[short], ind[short] = exact_search(self._fit_X, X[short], k)
        return dist, ind

    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        n_queries = X.shape[0]
        distances = np.empty((n_queries, n_neighbors), dtype=np.float32)
        indices = np.empty((n_queries, n_neighbors), dtype=np.intp)
        rows = min(self._block_rows(X.shape[1]), 1024)
        starts = range(0, n_queries, rows)
        with torch.inference_mode(), torch_threads(self.n_jobs):
            for start in progress(starts, verbose=self.verbose, desc="lsh: queries"):
                block = slice(start, start + rows)
                distances[block], indices[block] = self._search_block(
                    X[block], n_neighbors
                )
        return distances, indices

    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        return self._search(self._fit_X, n_neighbors)
