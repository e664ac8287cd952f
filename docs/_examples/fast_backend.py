"""docs/backends.md: the configuration that ran 5.8x faster at paper scale."""

from skdknn import DeepKNNClassifier
from skdknn.neighbors import FaissBackend, ProjectedBackend

fast = ProjectedBackend(
    FaissBackend(index="ivf"),
    n_components=128,
    pca_samples=5000,
    pca_power_iterations=1,
)
clf = DeepKNNClassifier(backend=fast)
print(clf.get_params()["backend__n_components"])
