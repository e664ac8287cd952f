"""Warnings and errors specific to skdknn."""

from __future__ import annotations

__all__ = [
    "InconsistentVersionWarning",
    "InputRangeWarning",
    "RetrainingWarning",
    "ShardLostError",
]


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


class InputRangeWarning(UserWarning):
    """Inputs lie far outside the range of values the model was fitted on.

    Typically images with pixels in [0, 255] given to a model fitted on [0, 1]: its
    predictions, p-values and credibility on such inputs mean little. Raised by every
    method of a fitted :class:`~skdknn.DeepKNNClassifier` that takes ``X`` (and by
    attacks on one), see ``input_range_``.
    """


class RetrainingWarning(UserWarning):
    """A network that looks trained is about to be trained again.

    :class:`~skdknn.DeepKNNClassifier` trains the ``net`` it is given (a skorch net
    is cloned, which discards its weights; a torch module is copied and fine-tuned).
    Wrap a trained network in :class:`sklearn.frozen.FrozenEstimator` to use it as
    is.
    """


class ShardLostError(RuntimeError):
    """A shard of a :class:`~skdknn.neighbors.ShardedBackend` is gone with its worker.

    Raised by a query rather than answering from the remaining shards; the message
    names the lost shards and the rows they held. Refit the backend, or restore a
    saved model and send it to a cluster again with ``ShardedBackend.scatter``.
    """
