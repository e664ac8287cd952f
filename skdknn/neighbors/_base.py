"""Base class of the neighbour backends: a scikit-learn transformer with kneighbors."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from numbers import Integral
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import scipy.sparse as sp
import torch
from joblib import effective_n_jobs
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import assert_all_finite
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import check_n_neighbors
from .._warnings import warn
from ._duplicates import duplicate_groups, expand_groups, group_of_rows

__all__ = ["NeighborsBackend"]

METRICS = ("euclidean", "cosine")

_T = TypeVar("_T")


def n_threads(n_jobs: int | None) -> int:
    """Number of threads for ``n_jobs`` (joblib's convention: None is 1, -1 all)."""
    return int(effective_n_jobs(n_jobs))


def progress(
    items: Iterable[_T], *, verbose: int, desc: str, total: int | None = None
) -> Iterator[_T]:
    """Iterate with a tqdm progress bar when ``verbose`` is positive."""
    if verbose <= 0:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total)


def read_tensor(array: NDArray) -> torch.Tensor:
    """A torch view of an array that is only read, possibly a read-only memory map.

    torch warns about read-only arrays because a tensor could write to them; the
    backends never do, and copying an index to silence the warning would defeat
    memory mapping.
    """
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not")
        return torch.from_numpy(array)


def pad_rows(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``rows`` followed by zero rows up to ``n_rows`` rows (itself if it has as
    many already): a matrix product of a fixed least shape, whose BLAS kernel
    (and so its rounding) does not change with the number of rows given."""
    missing = n_rows - rows.shape[0]
    if missing <= 0:
        return rows
    return torch.cat([rows, rows.new_zeros((missing, *rows.shape[1:]))])


def import_optional(
    module: str, extra: str, backend: str, *, package: str | None = None
) -> Any:
    """Import an optional engine, or raise an ImportError naming the pip extra.

    ``package`` is the name on PyPI when it differs from the module's (faiss is
    installed as ``faiss-cpu``).
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        alternative = f" (or `pip install {package}`)" if package else ""
        raise ImportError(
            f"{backend} needs the {module!r} package, which is not installed; "
            f'install it with `pip install "skdknn[{extra}]"`{alternative}.'
        ) from exc


def _l2_normalize(X: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm; all-zero rows (dead ReLU layers) stay zero."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


def _inspect_answer(
    dist: Any, ind: Any, n_queries: int, k: int, n_rows: int, name: str
) -> tuple[NDArray[np.float32], NDArray[np.intp], NDArray[np.bool_], NDArray[np.bool_]]:
    """An engine's answer as writable ``(n_queries, k)`` arrays, and its bad rows.

    Rows with fewer than k columns are padded with ``-1`` (never broadcast). Returns
    ``(dist, ind, short, faulty)``: ``short`` rows hold ``-1`` padding; ``faulty``
    rows hold ids out of range, an id twice or non-finite distances.
    """
    ind = np.array(ind, dtype=np.intp, ndmin=2)
    dist = np.array(dist, dtype=np.float32, ndmin=2)
    if ind.shape != dist.shape or ind.shape[0] != n_queries or ind.shape[1] > k:
        raise RuntimeError(
            f"{name}'s engine answered {n_queries} queries for {k} neighbours with "
            f"ids of shape {ind.shape} and distances of shape {dist.shape}; expected "
            f"both of shape ({n_queries}, {k})."
        )
    if ind.shape[1] < k:
        pad = k - ind.shape[1]
        ind = np.pad(ind, ((0, 0), (0, pad)), constant_values=-1)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    short = (ind == -1).any(axis=1)
    out_of_range = ((ind < -1) | (ind >= n_rows)).any(axis=1)
    ordered = np.sort(ind, axis=1)
    repeated = ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1)
    not_finite = ~np.isfinite(dist).all(axis=1) & ~short
    return dist, ind, short, out_of_range | repeated | not_finite


#: Largest squared norm of a row: |q - t|^2 <= 4 max(|q|^2, |t|^2) stays below
#: float32's largest value, with 1 % to spare for the rounding of the sums.
_MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 4 / 1.01


def _check_squared_norms(X: NDArray[np.float32], owner: str) -> None:
    """Refuse rows whose squared distances could overflow float32.

    The rows' squared norms are summed in float64, 64 MiB of rows at a time (no
    copy of X). Beyond ``_MAX_SQUARED_NORM``, distances came out
    infinite and the neighbours arbitrary, with only an engine-fault warning.
    """
    if X.size == 0:
        return
    step = max(1, (64 * 2**20) // (8 * max(1, X.shape[-1])))
    largest = max(
        float(np.einsum("ij,ij->i", part, part, dtype=np.float64).max())
        for part in (X[i : i + step] for i in range(0, X.shape[0], step))
    )
    if largest > _MAX_SQUARED_NORM:
        raise ValueError(
            f"{owner}: the rows hold a squared norm of {largest:.3g} (a norm of "
            f"{np.sqrt(largest):.3g}); squared distances between such rows overflow "
            "float32 (beyond 3.4e38). Rescale X (norms up to "
            f"{np.sqrt(_MAX_SQUARED_NORM):.3g} are safe)."
        )


class NeighborsBackend(TransformerMixin, BaseEstimator):
    """Base class of the k-nearest-neighbour search engines of the DkNN.

    A backend is a scikit-learn transformer, the same contract as
    :class:`sklearn.neighbors.KNeighborsTransformer`: ``fit(X)`` builds the index,
    :meth:`kneighbors` answers queries and :meth:`transform` returns the sparse
    k-nearest-neighbour graph.

    Subclasses implement two steps and inherit validation, the ``cosine`` metric
    (euclidean search on L2-normalised rows), the exclusion of a training point from
    its own neighbours (``kneighbors(X=None)``) and the sparse graph:

    - ``_build(X)``: build the index on the validated ``float32`` rows;
    - ``_search(X, n_neighbors)``: return ``(distances, indices)`` of shape
      ``(n_queries, n_neighbors)``, sorted by increasing distance.

    A subclass whose ``_build`` keeps no reference to the rows it is given (it
    copies them into its engine, or projects them) sets ``_keeps_rows = False``, so
    that ``fit`` skips its defensive copy.

    Every answer of an engine goes through one check here: a query answered with
    fewer than k ids, ``-1`` padding, ids out of range, the same id twice or
    non-finite distances is answered again by exact search among the rows that
    ``_indexed_rows()`` returns (or raises a ``RuntimeError`` naming the backend
    when it has none), so a short answer is never passed on. An approximate engine
    sets ``_index_distinct = True``: it then indexes each distinct row once
    (duplicate rows, such as the all-zero activations of dead ReLU units, trap
    graph walks and tree splits) and the base class expands every answer back to
    all the copies of each row, with the same distance.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` searches with the euclidean distance between L2-normalised rows,
        which ranks neighbours as the cosine distance does; the distances returned
        are those euclidean distances, ``sqrt(2 - 2 cos)``. All-zero rows (e.g. a
        dead ReLU layer) stay zero, at distance 1 from every normalised row.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    n_jobs : int, default=None
        Threads for building and querying, where the engine allows it.
        ``None`` leaves the engine's default.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions(set(METRICS))],
        "mode": [StrOptions({"distance", "connectivity"})],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        metric: str = "euclidean",
        mode: str = "distance",
        n_jobs: int | None = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.mode = mode
        self.n_jobs = n_jobs

    #: Whether ``_build`` keeps the array it is given (then ``fit`` copies it first,
    #: so that later changes to the caller's array cannot change the answers).
    _keeps_rows = True

    #: The dtype of the rows the index keeps (what :meth:`_reduce` returns):
    #: streamed fits allocate their rows in it.
    _row_dtype: type[np.floating] = np.float32

    #: Whether the engine indexes each distinct row once (see the class docstring).
    _index_distinct = False

    #: Duplicate groups of the indexed rows when ``_index_distinct`` found any:
    #: ``members`` (row ids sorted by group) and ``starts`` (offsets of each group
    #: in ``members``); group ``g`` is the engine's row ``g``.
    _group_members: NDArray[np.intp] | None = None
    _group_starts: NDArray[np.intp] | None = None

    # -- steps for subclasses -------------------------------------------------------
    @abstractmethod
    def _build(self, X: NDArray[np.float32]) -> None:
        """Build the index on validated, metric-prepared float32 rows."""

    @abstractmethod
    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """Return (distances, indices) of the nearest indexed rows, nearest first."""

    @abstractmethod
    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """Search the indexed rows themselves, each row's own index included."""

    def _indexed_rows(self) -> NDArray[np.float32]:
        """The rows the engine holds, in its row order (metric-prepared float32,
        or float16 for an index stored in half precision).

        The exact fallback of :meth:`kneighbors` searches them. The default returns
        ``_fit_X``; a backend whose engine keeps its rows elsewhere overrides it,
        and one that keeps none raises ``NotImplementedError``.
        """
        rows = getattr(self, "_fit_X", None)
        if rows is None:
            raise NotImplementedError(f"{type(self).__name__} keeps no rows.")
        return cast(NDArray[np.float32], rows)

    def _fitted_rows(self) -> NDArray[np.float32]:
        """The prepared rows in the order given to ``fit`` (copies expanded)."""
        rows = self._indexed_rows()
        if self._group_members is None or self._group_starts is None:
            return rows
        return rows[group_of_rows(self._group_members, self._group_starts)]

    @property
    def _n_indexed(self) -> int:
        """Number of rows the engine holds (distinct rows when deduplicated)."""
        if self._group_starts is None:
            return int(self.n_samples_fit_)
        return int(self._group_starts.size - 1)

    # -- public API -------------------------------------------------------------------
    def _prepare(self, X: NDArray, *, copy: bool = False) -> NDArray[np.float32]:
        """C-contiguous, writable, finite float32 rows, L2-normalised for ``cosine``.

        ``copy=True`` (at fit) guarantees the index owns its data, so that later
        changes to the caller's array cannot change the answers. Values finite in
        float64 but beyond float32's range (about 3.4e38) become infinite in the
        conversion and are refused.
        """
        if self.metric == "cosine":
            with np.errstate(over="ignore"):
                # C order: row norms summed over a Fortran array rounded otherwise
                X = _l2_normalize(np.asarray(X, dtype=np.float32, order="C"))
        else:
            with np.errstate(over="ignore"):  # refused below, with a clear error
                X = np.array(X, dtype=np.float32, order="C", copy=copy or None)
            # torch cannot wrap read-only memory (e.g. a memmap) without a warning;
            # misaligned floats (e.g. unpickled from a Dask frame) take numpy's and
            # BLAS's other code paths, which round differently
            X = X if X.flags.writeable and X.flags.aligned else X.copy()
        try:
            assert_all_finite(X, input_name="X")
        except ValueError as exc:
            raise ValueError(
                f"{type(self).__name__}: the rows hold values that are not finite "
                f"once converted to float32 (beyond +-3.4e38): {exc}"
            ) from None
        if self.metric != "cosine":
            _check_squared_norms(X, type(self).__name__)
        return X

    def fit(self, X: Any, y: Any = None) -> NeighborsBackend:
        """Build the neighbour index.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to index.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted backend.
        """
        return self._fit_rows(X, copy=True)

    def _fit_rows(self, X: Any, *, copy: bool) -> NeighborsBackend:
        """``fit``; ``copy=False`` lets a caller that hands over a fresh array it no
        longer uses (the classifier's activation rows) skip the index's own copy."""
        with self._kept_if_failed():
            self._validate_params()
            X = validate_data(self, X, dtype=[np.float32, np.float64])
            self.n_samples_fit_ = X.shape[0]
            rows = self._prepare(X, copy=copy and self._keeps_rows)
            self._group_members = self._group_starts = None
            if self._index_distinct:
                groups = duplicate_groups(rows)
                if groups is not None:
                    self._group_members, self._group_starts = groups
                    rows = rows[self._group_members[self._group_starts[:-1]]]
            self._build(rows)
        return self

    @contextmanager
    def _kept_if_failed(self) -> Iterator[None]:
        """A fit that fails leaves the backend as it was (fitted or not).

        Without it, a failed refit left the new rows' attributes over the old
        index: Annoy then answered with the old rows' ids for the new rows, a
        ShardedBackend with the old shards at the new shards' offsets."""
        state = dict(self.__dict__)
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(state)
            raise

    # -- streamed fitting: rows arrive in chunks (DeepKNNClassifier.fit) -----------
    # A streamed fit never holds the caller's full-width rows at once: the backend
    # names the rows it must see first (e.g. a projection's fitting sample), then
    # reduces each chunk as it arrives into rows it keeps, then builds its index.
    def _stream_sample(self, n_samples: int, n_features: int) -> NDArray[np.intp]:
        """Start a streamed fit of ``n_samples`` rows of ``n_features`` values.

        Validates the parameters and returns the sorted positions of the rows that
        :meth:`_fit_reduction` needs before the stream (none by default).
        """
        self._validate_params()
        self.n_features_in_ = int(n_features)
        self.n_samples_fit_ = int(n_samples)
        return np.empty(0, dtype=np.intp)

    def _fit_reduction(self, sample: NDArray[np.float32]) -> int:
        """Fit what :meth:`_reduce` applies, on the sample rows; return its width."""
        return self.n_features_in_

    def _reduce(self, chunk: NDArray) -> NDArray[np.float32]:
        """The rows the index keeps for a chunk of streamed rows (metric-prepared,
        of dtype ``_row_dtype``)."""
        chunk = np.asarray(chunk)
        if not np.isfinite(chunk).all():
            raise ValueError(
                "Input contains NaN or infinity: the network produced non-finite "
                "activations."
            )
        return self._prepare(chunk)

    def _finish_stream(self, rows: NDArray[np.float32]) -> NeighborsBackend:
        """Build the index on the reduced rows (an array nobody else holds)."""
        self._build(rows)
        return self

    def _check_n_neighbors(self, n_neighbors: int | None, available: int) -> int:
        k = check_n_neighbors(self.n_neighbors if n_neighbors is None else n_neighbors)
        if k > available:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                f"n_samples_fit = {self.n_samples_fit_}: only {available} indexed "
                "points can be neighbours"
                + (
                    " (with X=None each point is left out of its own neighbours)."
                    if available < self.n_samples_fit_
                    else "."
                )
            )
        return int(k)

    def kneighbors(
        self,
        X: Any = None,
        n_neighbors: int | None = None,
        return_distance: bool = True,
    ) -> Any:
        """Find the k nearest indexed points of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query points. ``None`` queries the indexed points themselves, each one
            excluded from its own neighbours (as in scikit-learn).
        n_neighbors : int, default=None
            Number of neighbours; defaults to the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Whether to return the distances.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Only when ``return_distance=True``; nearest first.
        indices : ndarray of shape (n_queries, n_neighbors)
            Row indices into the indexed points.
        """
        check_is_fitted(self)
        if X is None:
            k = self._check_n_neighbors(n_neighbors, self.n_samples_fit_ - 1)
            dist, ind = self._exclude_self(*self._search_rows(None, k + 1))
        else:
            k = self._check_n_neighbors(n_neighbors, self.n_samples_fit_)
            Xq = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
            dist, ind = self._search_rows(self._prepare(Xq), k)
        return (dist, ind) if return_distance else ind

    def _search_rows(
        self, X: NDArray[np.float32] | None, k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """The k nearest indexed rows of X (``None``: of every indexed row, itself
        included), checked, in the ids of the rows given to ``fit``."""
        members, starts = self._group_members, self._group_starts
        if members is None or starts is None:
            return self._checked_search(X, k)
        # the engine holds each distinct row once: ask for k distinct rows (all of
        # them if fewer), then list every copy of each, nearest first
        dist, ind = self._checked_search(X, min(k, starts.size - 1))
        dist, ind = expand_groups(dist, ind, members, starts, k)
        if X is None:  # each copy of a row has its row's answer
            group = group_of_rows(members, starts)
            dist, ind = dist[group], ind[group]
        return dist, ind

    def _checked_search(
        self, X: NDArray[np.float32] | None, k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """The engine's answer, with every malformed row answered exactly.

        A row is malformed when it holds fewer than k ids, ``-1`` padding, an id out
        of range, an id twice or a non-finite distance. Engines return short rows
        on small or disconnected indexes (and some on duplicate-heavy data): these
        are re-answered silently. Out-of-range or repeated ids and non-finite
        distances are engine faults: re-answered too, with a ``RuntimeWarning``.
        """
        n_rows = self._n_indexed
        n_queries = n_rows if X is None else X.shape[0]
        dist, ind = self._search_fitted(k) if X is None else self._search(X, k)
        dist, ind, short, faulty = _inspect_answer(
            dist, ind, n_queries, k, n_rows, type(self).__name__
        )
        bad = short | faulty
        if not bad.any():
            return dist, ind
        name = type(self).__name__
        try:
            rows = self._indexed_rows()
        except NotImplementedError:
            raise RuntimeError(
                f"{name}'s engine answered {int(bad.sum())} of {n_queries} queries "
                f"with fewer than {k} distinct neighbours (first: query "
                f"{int(np.flatnonzero(bad)[0])}), and {name} keeps no rows to answer "
                "them exactly."
            ) from None
        if faulty.any():
            warn(
                f"{name}'s engine answered {int(faulty.sum())} of {n_queries} "
                "queries with repeated or out-of-range ids or non-finite distances; "
                "they were answered again by exact search.",
                RuntimeWarning,
            )
        from ._exact import exact_search  # the exact engine is a subclass

        queries = rows[bad] if X is None else self._as_indexed(X[bad])
        dist[bad], ind[bad] = exact_search(rows, queries, k)
        return dist, ind

    def _as_indexed(self, X: NDArray[np.float32]) -> NDArray[np.float32]:
        """Queries in the space of :meth:`_indexed_rows` (a projection's output for
        :class:`ProjectedBackend`; the queries themselves otherwise)."""
        return X

    @staticmethod
    def _exclude_self(
        dist: NDArray[np.float32], ind: NDArray[np.intp]
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """Drop each row's own index from k + 1 results (or the first if absent).

        With more duplicates of a point than k + 1, the point may not find itself;
        dropping the first column (one of its duplicates) then keeps k neighbours, as
        scikit-learn does.
        """
        n, k1 = ind.shape
        is_self = ind == np.arange(n)[:, None]
        missing = ~is_self.any(axis=1)
        is_self[missing, 0] = True
        keep = ~is_self
        return dist[keep].reshape(n, k1 - 1), ind[keep].reshape(n, k1 - 1)

    def kneighbors_graph(
        self, X: Any = None, n_neighbors: int | None = None, mode: str = "connectivity"
    ) -> sp.csr_matrix:
        """Sparse graph of the k nearest neighbours of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query points; ``None`` uses the indexed points, self excluded.
        n_neighbors : int, default=None
            Number of neighbours; defaults to the ``n_neighbors`` parameter.
        mode : {"connectivity", "distance"}, default="connectivity"
            Ones, or the distances, as the stored values.

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_samples_fit)
        """
        if mode not in ("connectivity", "distance"):
            raise ValueError(
                f'mode must be "connectivity" or "distance"; got {mode!r}.'
            )
        dist, ind = self.kneighbors(X, n_neighbors, return_distance=True)
        n_queries, k = ind.shape
        data = np.ones(ind.size) if mode == "connectivity" else dist.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return sp.csr_matrix(
            (data, ind.ravel(), indptr), shape=(n_queries, self.n_samples_fit_)
        )

    def transform(self, X: Any) -> sp.csr_matrix:
        """Sparse k-nearest-neighbour graph of X, as ``KNeighborsTransformer`` does.

        In ``distance`` mode each row holds ``n_neighbors + 1`` neighbours, so that a
        training point keeps ``n_neighbors`` others besides itself.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_samples_fit)
        """
        check_is_fitted(self)
        add_one = self.mode == "distance"
        return self.kneighbors_graph(
            X, n_neighbors=self.n_neighbors + add_one, mode=self.mode
        )

    def fit_transform(self, X: Any, y: Any = None) -> sp.csr_matrix:
        """Fit to X, then return its neighbour graph (see :meth:`transform`)."""
        return self.fit(X).transform(X)

    # -- persistence hooks, used by :mod:`skdknn.persistence` --------------------------
    #: Fitted array attributes that ``save_model`` writes to ``.npy`` files.
    _index_arrays: tuple[str, ...] = ()

    #: Whether the index files load without running code (not pickles): only
    #: such backends can be saved with ``save_model(..., format="skops")``.
    _index_loads_safely = True

    def _state(self) -> dict[str, Any]:
        """A copy of the pickled state (``BaseEstimator.__getstate__``)."""
        return dict(cast(dict[str, Any], BaseEstimator.__getstate__(self)))

    def _save_index(self, prefix: Path) -> dict[str, Any]:
        """Write the fitted index to files named ``prefix.*``; return the rest.

        Returns the picklable state of the backend without the index. The default
        writes each attribute of ``_index_arrays`` to ``prefix.<attribute>.npy``.
        Override for an engine with a file format of its own.
        """
        state = self._state()
        for name in self._index_arrays:
            np.save(f"{prefix}.{name.lstrip('_')}.npy", state.pop(name))
        return state

    def _load_index(self, prefix: Path, mmap: bool) -> None:
        """Restore the index written by :meth:`_save_index` (light state already set).

        With ``mmap=True`` the arrays are memory-mapped copy-on-write: pages are read
        from the file when used and the file is never modified.
        """
        for name in self._index_arrays:
            path = f"{prefix}.{name.lstrip('_')}.npy"
            array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
            setattr(self, name, array)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        tags.requires_fit = True
        return tags
