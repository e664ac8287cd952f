"""Dask plumbing shared by the estimators: detecting dask arrays, checking them,
sending objects to the workers once and computing blocks in order.

Nothing here imports Dask unless the caller holds a dask array (or a client):
``dask`` and ``distributed`` are optional (``pip install "skdknn[dask]"``).
"""

from __future__ import annotations

import itertools
import sys
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "active_client",
    "check_dask_rows",
    "compute_in_order",
    "is_dask_array",
    "share",
]


def is_dask_array(X: Any) -> bool:
    """Whether ``X`` is a dask array (without importing Dask when it is absent)."""
    if "dask.array" not in sys.modules:  # nobody can hold a dask array yet
        return False
    import dask.array as da

    return isinstance(X, da.Array)


def check_dask_rows(X: Any, *, min_ndim: int, max_ndim: int, owner: str) -> Any:
    """A dask array of rows with known chunk sizes, chunked along rows only.

    Raises a ``ValueError`` for unknown chunk sizes (e.g. after boolean
    indexing), for a number of dimensions outside ``[min_ndim, max_ndim]``, and a
    ``TypeError`` for a non-numeric dtype. The other axes are merged into one
    chunk (a row is one network input), which copies nothing when they are.
    """
    if any(np.isnan(size) for size in X.shape) or any(
        np.isnan(c) for chunks in X.chunks for c in chunks
    ):
        raise ValueError(
            f"{owner} got a dask array with unknown chunk sizes (shape {X.shape}), "
            "e.g. after boolean indexing; call X.compute_chunk_sizes() first."
        )
    if not min_ndim <= X.ndim <= max_ndim:
        raise ValueError(
            f"{owner} expected a dask array of images (n_samples, channels, height, "
            f"width) or flat rows (n_samples, n_features); got shape {X.shape}."
        )
    if np.issubdtype(X.dtype, np.complexfloating):
        # numpy input gets scikit-learn's refusal; a cast would drop the
        # imaginary part with only a warning logged on a worker
        raise ValueError(f"Complex data not supported; {owner} got dtype {X.dtype}.")
    if not (np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.bool_)):
        raise TypeError(
            f"{owner} expected a dask array of numeric values; got dtype {X.dtype}."
        )
    if X.ndim > 1 and any(n > 1 for n in X.numblocks[1:]):
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return X


def active_client() -> Any:
    """The active ``distributed`` client, or None (absent, no client, or inside a
    task running on a worker).

    A task on a worker (e.g. a fit of ``GridSearchCV`` under joblib's ``dask``
    backend) that submitted tasks to its own cluster and waited for them would
    hold the worker thread they need: with one thread per worker it waited
    forever. There, models run locally, in the task's process.
    """
    if "distributed" not in sys.modules:  # no client can exist yet
        return None
    from distributed import default_client, get_worker

    try:
        get_worker()
    except ValueError:
        pass  # not in a task on a worker
    else:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def worker_addresses(client: Any) -> list[str]:
    """The addresses of ``client``'s workers, sorted, asked of the scheduler now.

    Not ``client.scheduler_info()["workers"]``: that returns the client's cached
    identity, which the client's periodic refresh (every
    ``distributed.client.scheduler-info-interval``) replaces from its event-loop
    thread with one that lists no worker. Read between the two, it said the
    cluster had none (seen in CI: a sharded fit refused a 2-worker cluster).

    Raises
    ------
    RuntimeError
        If the client is closed (or closing): it reaches no scheduler.
    TypeError
        If the client is asynchronous (``Client(asynchronous=True)``): skdknn
        waits for its tasks, and needs a client that answers synchronously.
    """
    status = getattr(client, "status", "running")
    if status not in ("running", "connecting", "newly-created"):
        raise RuntimeError(
            f"The Dask client {client} is {status}: it reaches no scheduler. "
            "Use a running client (distributed.Client(address), or the cluster's "
            "client while the cluster runs)."
        )
    if getattr(client, "asynchronous", False):
        raise TypeError(
            f"The Dask client {client} is asynchronous (Client(asynchronous=True)); "
            "skdknn waits for its tasks and needs a synchronous client: "
            "distributed.Client(address) without asynchronous=True."
        )
    return sorted(client.nthreads())


def share(obj: Any, client: Any) -> Any:
    """``obj`` as an input of tasks: sent once to every worker of ``client``
    (``client.scatter(..., broadcast=True)``), or, without a client, a delayed
    object that Dask's local scheduler passes by reference (never hashed or
    copied)."""
    if client is not None:
        return client.scatter(obj, broadcast=True, hash=False)
    from dask import delayed

    name = f"skdknn-{type(obj).__name__}-{uuid.uuid4().hex}"
    return delayed(obj, name=name, traverse=False)


def compute_in_order(tasks: Sequence[Any], client: Any, window: int) -> Iterator[Any]:
    """Each task's result, in order, with at most ``window`` computed ahead.

    Only the results not yet consumed are held (on the workers, or here): a stream
    of blocks never piles up.
    """
    if client is None:
        import dask

        for task in tasks:
            yield dask.compute(task)[0]
        return
    todo = iter(tasks)
    pending = deque(client.compute(task) for task in itertools.islice(todo, window))
    while pending:
        future = pending.popleft()
        following = next(todo, None)
        if following is not None:
            pending.append(client.compute(following))
        result = future.result()
        del future  # released on the workers once read
        yield result
