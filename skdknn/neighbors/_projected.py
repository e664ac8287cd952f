"""Dimension reduction (PCA or random projection) in front of another backend."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from ._base import NeighborsBackend, pad_rows, read_tensor
from ._exact import torch_threads
from ._registry import make_inner_backend, seed_backend

#: Rows of every projection product (the last block of rows is padded to it).
_PROJECT_ROWS = 64

__all__ = ["ProjectedBackend"]


def _top_right_vectors(B: torch.Tensor, rank: int) -> torch.Tensor:
    """Leading right singular vectors of B (as columns), from the eigenvectors of
    the smaller of ``B B^T`` and ``B^T B`` in float64."""
    B64 = B.double()
    if B.shape[0] <= B.shape[1]:
        with torch_threads(1):
            values, vectors = torch.linalg.eigh(B64 @ B64.T)
        values, vectors = values.flip(0)[:rank], vectors.flip(1)[:, :rank]
        right = (B64.T @ vectors) / values.clamp(min=1e-30).sqrt()
    else:
        with torch_threads(1):
            _, vectors = torch.linalg.eigh(B64.T @ B64)
        right = vectors.flip(1)[:, :rank]
    return right.float()


def _orthonormal_basis(Y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of a tall matrix (QR).

    Single-threaded: multi-threaded LAPACK on a tall, thin matrix gains nothing and
    slowed down tenfold when other processes shared the cores.
    """
    with torch_threads(1):
        return torch.linalg.qr(Y).Q


def pca_components(
    X: NDArray[np.float32],
    n_components: int,
    *,
    n_samples: int | None,
    power_iterations: int,
    rng: np.random.RandomState,
) -> NDArray[np.float32]:
    """Leading principal directions, shape (n_features, n_components), of X's rows.

    Fitted on a random subset of ``n_samples`` rows by a randomised range finder
    (Halko, Martinsson & Tropp, 2011) with ``power_iterations`` power iterations,
    then an eigendecomposition of a small Gram matrix; small subsets are decomposed
    directly.
    """
    n = X.shape[0]
    if n_samples is not None and n_samples < n:
        X = X[np.sort(rng.choice(n, size=n_samples, replace=False))]
    sample = read_tensor(np.ascontiguousarray(X, dtype=np.float32))
    sample = sample - sample.mean(dim=0)
    rank = min(n_components, *sample.shape)
    width = min(rank + 10, *sample.shape)
    if 2 * width >= min(sample.shape):
        return _top_right_vectors(sample, rank).numpy()
    omega = rng.standard_normal((sample.shape[1], width)).astype(np.float32)
    basis = _orthonormal_basis(sample @ torch.from_numpy(omega))
    for _ in range(power_iterations):
        basis = _orthonormal_basis(sample.T @ basis)
        basis = _orthonormal_basis(sample @ basis)
    # the row space of sample is nearly that of basis^T sample
    return np.ascontiguousarray(_top_right_vectors(basis.T @ sample, rank).numpy())


class ProjectedBackend(NeighborsBackend):
    """Reduce each layer's width by PCA or random projection, then search.

    The DkNN paper CNN's first layer has 12,544 features: exact search there costs
    most of a DkNN prediction, and tree- or hash-based engines do no better at that
    width. This backend projects the points to ``n_components`` dimensions before
    handing them to ``backend``, and projects each query the same way. Distances
    between projected points approximate the distances between the points: PCA
    keeps the directions of largest variance (nearly all of it for CNN activations,
    which lie close to a low-dimensional subspace), a gaussian random projection
    preserves every distance within a factor ``1 +- eps`` with
    ``eps ~ sqrt(8 log(n) / n_components)`` (Johnson-Lindenstrauss) at no fitting
    cost. Layers no wider than ``n_components`` are searched as they are, so one
    ``ProjectedBackend`` serves every layer of a :class:`~skdknn.DeepKNNClassifier`.

    Parameters
    ----------
    backend : str or NeighborsBackend, default="exact"
        Search engine for the projected points: a name from
        :data:`skdknn.neighbors.BACKENDS` or a backend instance (cloned at fit; its
        parameters are reachable as ``backend__<name>``). Its ``n_neighbors`` is set
        from this backend's and its metric to ``euclidean``; an inner metric other
        than ``euclidean`` and this backend's raises a ``ValueError`` at fit.
    n_components : int, default=256
        Target width.
    method : {"pca", "random"}, default="pca"
        ``pca``: principal components of (a sample of) the indexed points.
        ``random``: a gaussian random matrix with entries of variance
        ``1 / n_components``.
    n_neighbors : int, default=5
        Number of neighbours returned by default.
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``cosine`` L2-normalises the rows before projecting them.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph returned by :meth:`transform`.
    pca_samples : int or None, default=10000
        Rows (drawn at random) on which the principal components are fitted;
        ``None`` uses every row.
    pca_power_iterations : int, default=2
        Power iterations of the randomised SVD (more: more accurate components,
        slower fit).
    random_state : int, RandomState instance or None, default=None
        Seeds the PCA sample, the randomised SVD and the random matrix, and the
        wrapped backend when its own ``random_state`` is None.
    n_jobs : int, default=None
        Torch threads for fitting and applying the projection; ``-1`` uses every
        core, ``None`` keeps torch's current setting. (The wrapped backend has its
        own ``n_jobs``.)

    Attributes
    ----------
    n_features_in_ : int
        Number of features of the indexed points.
    n_samples_fit_ : int
        Number of indexed points.
    n_components_ : int
        Width of the projected points (``n_features_in_`` when not projected).
    components_ : ndarray of shape (n_features_in_, n_components_) or None
        The projection; ``None`` when the points are searched as they are.
    backend_ : NeighborsBackend
        The fitted backend on the projected points.

    See Also
    --------
    sklearn.decomposition.PCA, sklearn.random_projection.GaussianRandomProjection :
        The same projections as scikit-learn transformers.

    Notes
    -----
    The distances returned are those between projected points. Centring does not
    change distances, so points and queries are projected without it.

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.neighbors import ExactBackend, ProjectedBackend
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 50))  # rank 3
    >>> backend = ProjectedBackend("exact", n_components=3, n_neighbors=4,
    ...                            random_state=0).fit(X)
    >>> backend.components_.shape
    (50, 3)
    >>> exact = ExactBackend(n_neighbors=4).fit(X)
    >>> bool((backend.kneighbors(X[:5])[1] == exact.kneighbors(X[:5])[1]).all())
    True
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **NeighborsBackend._parameter_constraints,
        "backend": [str, HasMethods(["fit", "kneighbors"])],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions({"pca", "random"})],
        "pca_samples": [Interval(Integral, 1, None, closed="left"), None],
        "pca_power_iterations": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    # the points are projected, never stored: no need for a copy of them
    _keeps_rows = False

    def __init__(
        self,
        backend: Any = "exact",
        *,
        n_components: int = 256,
        method: str = "pca",
        n_neighbors: int = 5,
        metric: str = "euclidean",
        mode: str = "distance",
        pca_samples: int | None = 10_000,
        pca_power_iterations: int = 2,
        random_state: Any = None,
        n_jobs: int | None = None,
    ) -> None:
        super().__init__(n_neighbors, metric=metric, mode=mode, n_jobs=n_jobs)
        self.backend = backend
        self.n_components = n_components
        self.method = method
        self.pca_samples = pca_samples
        self.pca_power_iterations = pca_power_iterations
        self.random_state = random_state

    def _sample_positions(
        self, n: int, d: int, rng: np.random.RandomState
    ) -> NDArray[np.intp]:
        """Sorted rows on which the principal components are fitted."""
        if self.n_components >= d or self.method == "random":
            return np.empty(0, dtype=np.intp)
        if self.pca_samples is None or self.pca_samples >= n:
            return np.arange(n)
        return np.sort(rng.choice(n, size=self.pca_samples, replace=False))

    def _fit_projection(
        self, sample: NDArray[np.float32], d: int, rng: np.random.RandomState
    ) -> None:
        with torch_threads(self.n_jobs), torch.inference_mode():
            if self.n_components >= d:
                self.components_ = None
            elif self.method == "pca":
                self.components_ = pca_components(
                    sample,
                    self.n_components,
                    n_samples=None,
                    power_iterations=self.pca_power_iterations,
                    rng=rng,
                )
            else:
                scale = 1 / np.sqrt(self.n_components)
                gaussian = rng.standard_normal((d, self.n_components)) * scale
                self.components_ = gaussian.astype(np.float32)
        self.n_components_ = (
            d if self.components_ is None else self.components_.shape[1]
        )

    def _fit_inner(
        self, projected: NDArray[np.float32], rng: np.random.RandomState
    ) -> None:
        inner = make_inner_backend(
            self.backend, self.n_neighbors, self.metric, type(self).__name__
        )
        seed_backend(inner, rng)
        # the projected rows are ours alone: the inner index need not copy them
        copy = self.components_ is None
        if isinstance(inner, NeighborsBackend):
            self.backend_ = inner._fit_rows(projected, copy=copy)
        else:
            self.backend_ = inner.fit(projected)

    def _build(self, X: NDArray[np.float32]) -> None:
        n, d = X.shape
        rng = check_random_state(self.random_state)
        positions = self._sample_positions(n, d, rng)
        self._fit_projection(X if positions.size == n else X[positions], d, rng)
        self._fit_inner(self._project(X), rng)

    # -- streamed fit: the projection is fitted on a sample, then each chunk of
    # full-width rows is projected as it arrives (they never exist for all rows)
    def _stream_sample(self, n_samples: int, n_features: int) -> NDArray[np.intp]:
        super()._stream_sample(n_samples, n_features)
        self._stream_rng = check_random_state(self.random_state)
        return self._sample_positions(n_samples, n_features, self._stream_rng)

    def _fit_reduction(self, sample: NDArray[np.float32]) -> int:
        self._fit_projection(
            self._prepare(sample), self.n_features_in_, self._stream_rng
        )
        return int(self.n_components_)

    def _reduce(self, chunk: NDArray) -> NDArray[np.float32]:
        return self._project(super()._reduce(chunk))

    def _finish_stream(self, rows: NDArray[np.float32]) -> ProjectedBackend:
        rng = self._stream_rng
        del self._stream_rng
        self._fit_inner(rows, rng)
        return self

    def _project(self, X: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.components_ is None:
            return X
        # In products of _PROJECT_ROWS rows, the last block padded with zero rows:
        # a float32 product rounds according to its shapes (with MKL on an
        # AVX-512 CPU, one row alone rounded otherwise than in a block, a few
        # ulps), so a point's projection depended on the rows projected with it.
        # In products of one shape, each row gets the same bits wherever it is.
        components = read_tensor(self.components_)
        out = np.empty((X.shape[0], components.shape[1]), dtype=np.float32)
        with torch_threads(self.n_jobs), torch.inference_mode():
            for start in range(0, X.shape[0], _PROJECT_ROWS):
                rows = read_tensor(X[start : start + _PROJECT_ROWS])
                n = rows.shape[0]
                rows = pad_rows(rows, _PROJECT_ROWS)
                out[start : start + n] = (rows @ components)[:n].numpy()
        return out

    def _as_indexed(self, X: NDArray[np.float32]) -> NDArray[np.float32]:
        return self._project(X)

    def _indexed_rows(self) -> NDArray[np.float32]:
        # the projected rows, held by the wrapped backend (if it is one of ours)
        if not isinstance(self.backend_, NeighborsBackend):
            raise NotImplementedError(f"{type(self.backend_).__name__} keeps no rows.")
        return self.backend_._fitted_rows()

    def _search(
        self, X: NDArray[np.float32], n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        dist, ind = self.backend_.kneighbors(self._project(X), n_neighbors)
        return np.asarray(dist, dtype=np.float32), np.asarray(ind, dtype=np.intp)

    def _search_fitted(
        self, n_neighbors: int
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        # The wrapped backend excludes each point from its own neighbours
        # (scikit-learn's contract); put it back in front, as the base class expects.
        dist, ind = self.backend_.kneighbors(None, n_neighbors - 1)
        n = self.n_samples_fit_
        dist = np.hstack([np.zeros((n, 1), np.float32), dist]).astype(np.float32)
        ind = np.hstack([np.arange(n)[:, None], ind]).astype(np.intp)
        return dist, ind
