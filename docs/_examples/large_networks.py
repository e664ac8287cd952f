"""The DkNN on a ResNet: layer names, one pass for every output, bounded memory.

``python docs/_examples/large_networks.py`` (about 10 s on 2 CPU cores): a
small-width CIFAR ResNet-18 with random weights (a stand-in for a trained one) on
synthetic 3x32x32 images whose class sets their brightness.
"""

import numpy as np
import sklearn
import torch
from sklearn.frozen import FrozenEstimator

from skdknn import DeepKNNClassifier
from skdknn.neighbors import ExactBackend, ProjectedBackend
from skdknn.nets import CifarResNet18, default_layers, layer_names

torch.manual_seed(0)
net = CifarResNet18(width=8).eval()  # width=64 is the usual ResNet-18
names = layer_names(net)
print(names[4:17])  # the first residual block of the first stage
print(default_layers(net))

rng = np.random.default_rng(0)
y = rng.integers(0, 10, size=1500)
X = 0.5 * rng.random((1500, 3, 32, 32), dtype=np.float32)
X += 0.05 * y[:, None, None, None].astype(np.float32)

clf = DeepKNNClassifier(
    net=FrozenEstimator(net),  # prefit: used as is
    n_neighbors=10,
    calibration_size=200,
    # project every layer wider than 64 values on its first 64 principal
    # components, fitted on 500 rows: the index keeps 64 values per image
    backend=ProjectedBackend(n_components=64, pca_samples=500, random_state=0),
    batch_size=100,
    random_state=0,
)
with sklearn.config_context(working_memory=32):  # MiB of activations per chunk
    clf.fit(X[:1200], y[:1200])
    result = clf.predict_with_credibility(X[1200:])
print(
    [
        (layer, b.n_features_in_, b.n_components_)
        for layer, b in zip(clf.layers_, clf.backends_, strict=True)
    ]
)
print(sorted(result))
accuracy = np.mean(result.prediction == y[1200:])
print(f"accuracy {accuracy:.3f}, mean credibility {result.credibility.mean():.3f}")

# full-width exact indexes, stored in float32 and in float16
full = sklearn.clone(clf).set_params(backend="exact")
half = sklearn.clone(clf).set_params(backend=ExactBackend(storage_dtype="float16"))
results = [
    m.fit(X[:1200], y[:1200]).predict_with_credibility(X[1200:]) for m in (full, half)
]
same = np.mean(results[0].prediction == results[1].prediction)
change = np.abs(results[0].credibility - results[1].credibility).max()
print(f"same predictions {same:.3f}, largest credibility change {change:.3f}")
