"""Adversarial attacks on DkNN, kNN and neural-network classifiers.

Every attack is a scikit-learn transformer: ``fit(X)`` binds it to a fitted model,
``transform(X)`` returns adversarial examples of the same shape and dtype.
"""

from ._advknn import AdvKNNAttack
from ._base import GradientAttack
from ._bim import BIMAttack
from ._cw import CarliniWagnerL2Attack
from ._fgsm import FGSMAttack
from ._io import load_adversarial, save_adversarial
from ._mean import MeanAttack

__all__ = [
    "AdvKNNAttack",
    "BIMAttack",
    "CarliniWagnerL2Attack",
    "FGSMAttack",
    "GradientAttack",
    "MeanAttack",
    "load_adversarial",
    "save_adversarial",
]
