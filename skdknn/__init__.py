"""skdknn: Deep k-Nearest Neighbours and attacks on kNN models, for scikit-learn.

The main entry point is :class:`DeepKNNClassifier`. Submodules:
:mod:`skdknn.conformal` (the conformal maths), :mod:`skdknn.neighbors` (neighbour
backends), :mod:`skdknn.nets` (reference networks) and :mod:`skdknn.datasets`.
"""

from ._classifier import DeepKNNClassifier
from ._version import __version__

__all__ = ["DeepKNNClassifier", "__version__"]
