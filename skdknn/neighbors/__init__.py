"""Pluggable k-nearest-neighbour backends of the DkNN.

Each backend is a scikit-learn transformer with ``kneighbors`` (the contract of
:class:`sklearn.neighbors.KNeighborsTransformer`); the
:class:`~skdknn.DeepKNNClassifier` clones one per layer.
"""

from ._base import NeighborsBackend
from ._exact import ExactBackend
from ._registry import BACKENDS, make_backend

__all__ = ["BACKENDS", "ExactBackend", "NeighborsBackend", "make_backend"]
