"""Pluggable k-nearest-neighbour backends of the DkNN.

Each backend is a scikit-learn transformer with ``kneighbors`` (the contract of
:class:`sklearn.neighbors.KNeighborsTransformer`); the
:class:`~skdknn.DeepKNNClassifier` clones one per layer.
"""

from ._annoy import AnnoyBackend
from ._base import NeighborsBackend
from ._exact import ExactBackend
from ._faiss import FaissBackend
from ._lsh import LSHBackend
from ._projected import ProjectedBackend
from ._pynndescent import PyNNDescentBackend
from ._registry import BACKENDS, make_backend, seed_backend
from ._sharded import ShardedBackend, merge_kneighbors, shard_bounds

__all__ = [
    "BACKENDS",
    "AnnoyBackend",
    "ExactBackend",
    "FaissBackend",
    "LSHBackend",
    "NeighborsBackend",
    "ProjectedBackend",
    "PyNNDescentBackend",
    "ShardedBackend",
    "make_backend",
    "merge_kneighbors",
    "seed_backend",
    "shard_bounds",
]
