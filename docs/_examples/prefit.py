"""Reuse a trained network: refit the DkNN with other k, metric or layers.

``python docs/_examples/prefit.py``. Small setting: 1,500 training images,
3 epochs, 200 calibration points, 1,000 validation images.
"""

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)
X_train, X_val, y_train, y_val = train_test_split(
    X, y, train_size=1500, test_size=1000, stratify=y, random_state=0
)

clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=3, random_state=0
).fit(X_train, y_train)
print(f"CNN  accuracy: {np.mean(clf.net_.predict(X_val) == y_val):.3f}")
print(f"DkNN accuracy: {clf.score(X_val, y_val):.3f}  (k=25, euclidean)")

frozen = FrozenEstimator(clf.net_)  # used as is, never retrained
for params in [
    dict(n_neighbors=10),
    dict(n_neighbors=10, metric="cosine"),
    dict(n_neighbors=25, layers=["relu3", "logits"]),
]:
    # same X_train, calibration_size and random_state: same calibration rows,
    # which the network has never seen
    other = DeepKNNClassifier(
        net=frozen, calibration_size=200, random_state=0, **params
    ).fit(X_train, y_train)
    assert np.array_equal(other.calibration_indices_, clf.calibration_indices_)
    print(f"DkNN accuracy: {other.score(X_val, y_val):.3f}  {params}")
