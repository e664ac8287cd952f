"""Backend names and recipes accepted by ``DeepKNNClassifier(backend=...)``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state

from ._annoy import AnnoyBackend
from ._exact import ExactBackend
from ._faiss import FaissBackend
from ._lsh import LSHBackend
from ._pynndescent import PyNNDescentBackend

__all__ = ["BACKENDS", "make_backend", "make_inner_backend", "seed_backend"]

#: Backend classes by the names ``backend=`` accepts.
BACKENDS: dict[str, type] = {
    "annoy": AnnoyBackend,
    "exact": ExactBackend,
    "faiss": FaissBackend,
    "lsh": LSHBackend,
    "pynndescent": PyNNDescentBackend,
}

#: Names for backends with a non-default setting.
_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "faiss-flat": ("faiss", {"index": "flat"}),
    "faiss-ivf": ("faiss", {"index": "ivf"}),
}

#: ``pca128+`` / ``random256+`` / ``pca+`` in front of a name.
_PROJECTION = re.compile(r"(?P<method>pca|random)(?P<width>[0-9]*)\+(?P<rest>.+)")

_RECIPES_HELP = (
    "a backend name ({names}), optionally after a projection 'pca<N>+' or "
    "'random<N>+' (e.g. 'pca128+faiss-ivf'; N defaults to 256)"
)


def _from_recipe(recipe: str) -> Any:
    """The unfitted backend a recipe names (see :func:`make_backend`)."""
    match = _PROJECTION.fullmatch(recipe)
    if match is not None:
        from ._projected import ProjectedBackend  # it imports make_backend

        params: dict[str, Any] = {"method": match["method"]}
        if match["width"]:
            width = int(match["width"])
            if width < 1:
                raise ValueError(
                    f"Backend recipe {recipe!r}: the projection width must be at "
                    "least 1."
                )
            params["n_components"] = width
        return ProjectedBackend(_from_recipe(match["rest"]), **params)
    name, params = _ALIASES.get(recipe, (recipe, {}))
    if name not in BACKENDS:
        names = ", ".join(sorted([*BACKENDS, *_ALIASES]))
        raise ValueError(
            f"Unknown backend {recipe!r}; expected "
            + _RECIPES_HELP.format(names=names)
            + ", or a backend instance (an object with fit and kneighbors)."
        )
    return BACKENDS[name](**params)


def make_backend(spec: Any) -> Any:
    """An unfitted backend from a name, a recipe, or a backend instance.

    Parameters
    ----------
    spec : str or object with ``fit`` and ``kneighbors``
        A name from :data:`BACKENDS`; ``"faiss-ivf"`` / ``"faiss-flat"``
        (:class:`FaissBackend` with that ``index``); or a recipe
        ``"<projection>+<backend>"`` where ``<projection>`` is ``pca<N>`` or
        ``random<N>`` (:class:`ProjectedBackend` with ``method`` and
        ``n_components=N``; ``N`` defaults to 256) and ``<backend>`` any of these
        strings, e.g. ``"pca128+faiss-ivf"``. Every other setting is the
        backends' default; set it with ``set_params`` on the result. An instance
        is cloned (it is never fitted in place); any object with ``fit`` and
        ``kneighbors`` is accepted.

    Returns
    -------
    backend : NeighborsBackend or object
        Unfitted.

    Raises
    ------
    ValueError
        When the string names no backend or recipe (the message lists them).
    TypeError
        When ``spec`` is neither a string nor an object with ``fit`` and
        ``kneighbors``.

    Examples
    --------
    >>> make_backend("exact")
    ExactBackend()
    >>> make_backend("pca128+faiss-ivf")
    ProjectedBackend(backend=FaissBackend(index='ivf'), n_components=128)
    """
    if isinstance(spec, str):
        return _from_recipe(spec)
    if not (hasattr(spec, "fit") and hasattr(spec, "kneighbors")):
        raise TypeError(
            "backend must be a backend name or recipe, or an object with fit and "
            f"kneighbors methods; got {type(spec).__name__}."
        )
    return clone(spec)


def seed_backend(backend: Any, random_state: Any) -> Any:
    """Give an unseeded backend a seed drawn from ``random_state``, in place.

    A backend (or any estimator) whose ``random_state`` parameter is None gets a
    seed drawn from ``random_state``, so that a model seeded as a whole builds
    the same randomised index (Annoy's trees, LSH's hyperplanes, a random
    projection, ...) at every fit. A backend seeded by the user, or one without
    a ``random_state`` parameter (``ExactBackend``), is left as it is and draws
    nothing.

    Parameters
    ----------
    backend : estimator
        Unfitted; changed in place with ``set_params``.
    random_state : int, RandomState instance or None
        Where the seed comes from (scikit-learn's convention). With None the
        backend stays unseeded.

    Returns
    -------
    backend : estimator
        The same object.

    Examples
    --------
    >>> from skdknn.neighbors import AnnoyBackend, ExactBackend, seed_backend
    >>> seed_backend(AnnoyBackend(), 0).random_state
    209652396
    >>> seed_backend(AnnoyBackend(random_state=7), 0).random_state
    7
    >>> seed_backend(ExactBackend(), 0)
    ExactBackend()
    """
    if random_state is None or not hasattr(backend, "get_params"):
        return backend
    if backend.get_params(deep=False).get("random_state", "absent") is None:
        rng = check_random_state(random_state)
        backend.set_params(random_state=int(rng.randint(np.iinfo(np.int32).max)))
    return backend


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
