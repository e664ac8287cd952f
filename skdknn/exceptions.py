"""Warnings and errors specific to skdknn."""

from __future__ import annotations

__all__ = ["InconsistentVersionWarning", "ShardLostError"]


class InconsistentVersionWarning(UserWarning):
    """A fitted model is loaded under another skdknn version than the one that fit it.

    Parameters
    ----------
    estimator_name : str
        Class of the loaded estimator.
    original_version : str
        skdknn version that fitted (and pickled) the model.
    current_version : str
        skdknn version loading it.
    """

    def __init__(
        self, *, estimator_name: str, original_version: str, current_version: str
    ) -> None:
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version

    def __str__(self) -> str:
        return (
            f"Trying to unpickle estimator {self.estimator_name} fitted with skdknn "
            f"{self.original_version} when using version {self.current_version}. "
            "This might lead to breaking code or invalid results. Use at your own "
            "risk; refit the model under the current version if you can."
        )


class ShardLostError(RuntimeError):
    """A shard of a :class:`~skdknn.neighbors.ShardedBackend` is gone with its worker.

    Raised by a query rather than answering from the remaining shards; the message
    names the lost shards and the rows they held. Refit the backend, or restore a
    saved model and send it to a cluster again with ``ShardedBackend.scatter``.
    """
