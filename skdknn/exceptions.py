"""Warnings and errors specific to skdknn."""

from __future__ import annotations

__all__ = [
    "AttackBudgetWarning",
    "InconsistentVersionWarning",
    "InputRangeWarning",
    "RetrainingWarning",
    "ShardLostError",
    "ZeroGradientWarning",
]


class AttackBudgetWarning(UserWarning):
    """An attack's budget or box is out of scale with the inputs: a unit mistake.

    Raised at ``fit`` (and so ``fit_transform``) of
    :class:`~skdknn.attacks.FGSMAttack`, :class:`~skdknn.attacks.BIMAttack` and
    :class:`~skdknn.attacks.AdvKNNAttack` when ``eps`` (or ``step``) is wider than
    the widest side of the clip box, so that it does not limit the attack: e.g.
    ``eps=8`` meant as ``8/255`` on pixels in [0, 1]. Raised by ``transform`` and
    ``generate`` of :class:`~skdknn.attacks.CarliniWagnerL2Attack` (and
    ``AdvKNNAttack(method="cw")``) when the clip box reaches beyond 100 times the
    inputs' scale: its steps in tanh space grow with the box, and float32 may not
    resolve them at all. Set ``eps`` on the inputs' scale, or ``clip_min`` and
    ``clip_max`` to the inputs' valid range.
    """


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


class ZeroGradientWarning(UserWarning):
    """Inputs an attack could not move: their loss gradient was exactly zero.

    Raised by ``transform``, ``generate`` and ``fit_transform`` of the sign
    gradient attacks (:class:`~skdknn.attacks.FGSMAttack`,
    :class:`~skdknn.attacks.BIMAttack`, :class:`~skdknn.attacks.AdvKNNAttack` with
    ``method="fgsm"`` or ``"bim"``) when the gradient of the loss of some inputs
    was exactly zero at every step (a softmax saturated in float32, dead
    ReLUs, a constant head): they come back where the attack started and are not
    evidence of robustness. Their count is the attack's ``n_zero_gradient_``.
    """
