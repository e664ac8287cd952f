"""Fitted skdknn models on Dask arrays: each block of rows answered on a worker.

The neighbour indexes themselves go to a cluster with
:class:`skdknn.neighbors.ShardedBackend`; this module runs a fitted model's methods
(``predict``, ``credibility``, ``predict_set``, an attack's ``transform``, ...) on
a dask array of inputs, block by block, where the blocks live. ``distributed`` and
``dask[array]`` are optional dependencies: ``pip install "skdknn[dask]"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dask import active_client
from .neighbors._base import import_optional

__all__ = ["blockwise"]


def _apply(block: Any, model: Any, method: str, kwargs: dict[str, Any]) -> Any:
    """One block through the model, on a worker (module level: pickled by name)."""
    return np.asarray(getattr(model, method)(block, **kwargs))


def blockwise(
    estimator: Any, method: str, X: Any, *, client: Any = None, **kwargs: Any
) -> Any:
    """A fitted estimator's method applied to each block of rows of a dask array.

    The estimator is sent to every worker once (``client.scatter(...,
    broadcast=True)``); each block of rows of ``X`` is answered by the worker that
    holds it, and nothing is computed until the result is. Rows are independent
    in every skdknn method (a DkNN prediction, a p-value, an adversarial example
    of one input does not depend on the other inputs), so the result equals the
    method on the whole array.

    Parameters
    ----------
    estimator : object
        A fitted estimator, e.g. an attack (:class:`~skdknn.FGSMAttack`, ...).
        A :class:`~skdknn.DeepKNNClassifier`'s own methods take dask arrays and
        return dask arrays (its network and indexes sent once, a sharded index
        searched on its shards' workers): call them directly rather than through
        this function, which would send a model with
        :class:`~skdknn.neighbors.ShardedBackend` indexes with their shards gathered.
    method : str
        Name of the method: ``"predict"``, ``"predict_proba"``, ``"p_values"``,
        ``"credibility"``, ``"confidence"``, ``"predict_set"``,
        ``"transform"``, ... It must return an array with one row per input row.
    X : dask array of shape (n_samples, ...)
        Inputs; chunked along rows only (other dimensions are merged first).
    client : distributed.Client, default=None
        The cluster; ``None`` uses the active client, or, without one, Dask's
        local scheduler (the estimator is then not scattered).
    **kwargs
        Passed to the method (e.g. ``significance=`` of ``predict_set``).

    Returns
    -------
    result : dask array of shape (n_samples, ...)
        Chunked like ``X`` along rows; dtype and trailing shape are those of the
        method's answer on the first row, which is computed here to learn them.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklearn.datasets import make_classification
    >>> from skdknn import DeepKNNClassifier
    >>> from skdknn.parallel import blockwise
    >>> X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    >>> clf = DeepKNNClassifier(n_neighbors=5, calibration_size=40,
    ...                         max_epochs=2, random_state=0).fit(X, y)
    >>> X_dask = da.from_array(X, chunks=50)
    >>> credibility = blockwise(clf, "credibility", X_dask)
    >>> credibility.chunks
    ((50, 50, 50, 50),)
    >>> bool(np.array_equal(credibility.compute(), clf.credibility(X)))
    True
    """
    da = import_optional("dask.array", "dask", "skdknn.parallel.blockwise")
    from dask import delayed

    X = da.asarray(X)
    if X.ndim > 1 and any(n > 1 for n in X.numblocks[1:]):
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    if client is None:
        client = active_client()
    model = estimator if client is None else client.scatter(estimator, broadcast=True)
    probe = _apply(np.asarray(X[:1].compute()), estimator, method, kwargs)
    blocks = X.to_delayed().ravel()
    parts = [
        da.from_delayed(
            delayed(_apply)(block, model, method, kwargs),
            shape=(rows, *probe.shape[1:]),
            dtype=probe.dtype,
        )
        for block, rows in zip(blocks, X.chunks[0], strict=True)
    ]
    return da.concatenate(parts, axis=0)
