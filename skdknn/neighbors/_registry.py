"""Backend names accepted by ``DeepKNNClassifier(backend=...)``."""

from __future__ import annotations

from typing import Any

from sklearn.base import clone

from ._annoy import AnnoyBackend
from ._exact import ExactBackend
from ._faiss import FaissBackend
from ._lsh import LSHBackend
from ._pynndescent import PyNNDescentBackend

__all__ = ["BACKENDS", "make_backend", "make_inner_backend"]

#: Backend classes by the names ``backend=`` accepts.
BACKENDS: dict[str, type] = {
    "annoy": AnnoyBackend,
    "exact": ExactBackend,
    "faiss": FaissBackend,
    "lsh": LSHBackend,
    "pynndescent": PyNNDescentBackend,
}


def make_backend(spec: Any) -> Any:
    """An unfitted backend from a name in :data:`BACKENDS` or a backend instance.

    An instance is cloned (it is never fitted in place); any object with ``fit`` and
    ``kneighbors`` is accepted.

    Examples
    --------
    >>> make_backend("exact")
    ExactBackend()
    """
    if isinstance(spec, str):
        try:
            return BACKENDS[spec]()
        except KeyError:
            raise ValueError(
                f"Unknown backend {spec!r}; available backends: {sorted(BACKENDS)}, or "
                "pass a backend instance (an object with fit and kneighbors)."
            ) from None
    if not (hasattr(spec, "fit") and hasattr(spec, "kneighbors")):
        raise TypeError(
            "backend must be a backend name or an object with fit and kneighbors "
            f"methods; got {type(spec).__name__}."
        )
    return clone(spec)


def make_inner_backend(spec: Any, n_neighbors: int, metric: str, owner: str) -> Any:
    """The unfitted engine of a backend that wraps another one.

    :func:`make_backend` with the wrapper's ``n_neighbors`` and the ``euclidean``
    metric: the wrapper (:class:`ProjectedBackend`, :class:`ShardedBackend`)
    applies its ``metric`` itself, before handing rows over.

    Raises
    ------
    ValueError
        When the inner backend asks for another metric than the wrapper's (e.g.
        ``ShardedBackend(ExactBackend(metric="cosine"))``): it would be ignored.
    """
    inner = make_backend(spec)
    params = inner.get_params(deep=False)
    if "n_neighbors" in params:
        inner.set_params(n_neighbors=n_neighbors)
    if "metric" in params:
        if params["metric"] not in ("euclidean", metric):
            raise ValueError(
                f"The inner backend's metric={params['metric']!r} would be ignored: "
                f"{owner} applies its own metric={metric!r} before handing rows to "
                "the inner backend, which then searches with the euclidean "
                f"distance. Set metric={params['metric']!r} on the {owner} instead."
            )
        inner.set_params(metric="euclidean")
    return inner
