"""Paper setting on the embedded sample: k, metric and the DkNN-vs-CNN gap.

``python docs/_examples/choosing_k.py`` (a few minutes on 2 CPU cores: the CNN
trains for 15 epochs on 3,250 images). 4,000 images are given to ``fit``
(750 held out for calibration, 75 per class; 3,250 train the CNN and fill the
indexes); 1,000 other images are the test set.
"""

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

# the stored order (sorted by digit), in which the page's numbers were measured;
# the stratified split below mixes the digits
X, y = load_mnist(return_X_y=True, shuffle=False)
X_fit, X_test, y_fit, y_test = train_test_split(
    X, y, test_size=1000, stratify=y, random_state=0
)
clf = DeepKNNClassifier(max_epochs=15, random_state=0).fit(X_fit, y_fit)
print(
    "indexed:", clf.train_indices_.size, "calibration:", clf.calibration_indices_.size
)
cnn_accuracy = np.mean(clf.net_.predict(X_test) == y_test)
print(f"CNN                  accuracy {cnn_accuracy:.3f}")
frozen = FrozenEstimator(clf.net_)
for k, metric in [
    (75, "euclidean"),
    (75, "cosine"),
    (25, "euclidean"),
    (25, "cosine"),
    (10, "euclidean"),
    (10, "cosine"),
]:
    dknn = DeepKNNClassifier(
        net=frozen, n_neighbors=k, metric=metric, random_state=0
    ).fit(X_fit, y_fit)
    acc = dknn.score(X_test, y_test)
    cred = dknn.credibility(X_test)
    zeros = np.mean(dknn.calibration_nonconformity_ == 0)
    print(
        f"DkNN k={k:<2} {metric:<9} accuracy {acc:.3f}  mean credibility "
        f"{cred.mean():.2f}  credibility 1: {np.mean(cred == 1):.0%}  "
        f"zero scores: {zeros:.0%}"
    )
