"""skdknn: Deep k-Nearest Neighbours and attacks on kNN models, for scikit-learn.

The main entry point is :class:`DeepKNNClassifier`; the attacks
(:class:`FGSMAttack`, :class:`BIMAttack`, :class:`CarliniWagnerL2Attack`,
:class:`AdvKNNAttack`, :class:`MeanAttack`) are transformers. Submodules:
:mod:`skdknn.conformal` (the conformal maths), :mod:`skdknn.neighbors` (neighbour
backends), :mod:`skdknn.nets` (reference networks), :mod:`skdknn.datasets`,
:mod:`skdknn.attacks` and :mod:`skdknn.metrics`; :func:`save_model` /
:func:`load_model` (in :mod:`skdknn.persistence`) keep neighbour indexes as
memory-mapped files.
"""

from ._classifier import DeepKNNClassifier
from ._version import __version__
from .attacks import (
    AdvKNNAttack,
    BIMAttack,
    CarliniWagnerL2Attack,
    FGSMAttack,
    MeanAttack,
)
from .persistence import load_model, save_model

__all__ = [
    "AdvKNNAttack",
    "BIMAttack",
    "CarliniWagnerL2Attack",
    "DeepKNNClassifier",
    "FGSMAttack",
    "MeanAttack",
    "__version__",
    "load_model",
    "save_model",
]
