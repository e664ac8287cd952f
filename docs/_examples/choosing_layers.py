"""Tune n_neighbors, metric and layers with GridSearchCV and cached activations.

``python docs/_examples/choosing_layers.py`` (under a minute on 2 CPU cores): the
small setting of the getting-started page, 1,500 training images (200 for
calibration), 3 epochs, 1,000 held-out images to score on.
"""

import tempfile

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist
from skdknn.nets import layer_names

X, y = load_mnist(return_X_y=True)
X_train, X_val, y_train, y_val = train_test_split(
    X, y, train_size=1500, test_size=1000, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=3, random_state=0
).fit(X_train, y_train)

print(layer_names(clf.module_))  # every layer that can be searched
for layer, index in zip(clf.layers_, clf.backends_, strict=True):
    print(f"{layer:<7}{index.n_features_in_:>6} features")

X_all = np.concatenate([X_train, X_val])
y_all = np.concatenate([y_train, y_val])
# one split: fit on X_train (the network's own rows), score on the unseen X_val
split = [(np.arange(len(X_train)), np.arange(len(X_train), len(X_all)))]

with tempfile.TemporaryDirectory() as cache:
    search = GridSearchCV(
        DeepKNNClassifier(
            net=FrozenEstimator(clf.net_),  # never retrained
            calibration_size=200,
            random_state=0,
            memory=cache,  # activations computed once per layer list
        ),
        param_grid={
            "n_neighbors": [10, 25, 75],
            "metric": ["euclidean", "cosine"],
            "layers": [None, ["relu2", "relu3", "logits"], ["relu3", "logits"]],
        },
        cv=split,
        refit=False,
    ).fit(X_all, y_all)

res = search.cv_results_
score = {
    (str(p["layers"]), p["metric"], p["n_neighbors"]): s
    for p, s in zip(res["params"], res["mean_test_score"], strict=True)
}
print("layers                  metric      k=10   k=25   k=75")
for layers in [None, ["relu2", "relu3", "logits"], ["relu3", "logits"]]:
    for metric in ["euclidean", "cosine"]:
        row = [score[str(layers), metric, k] for k in (10, 25, 75)]
        name = "all four" if layers is None else "+".join(layers)
        print(f"{name:<23} {metric:<9}" + "".join(f"  {s:.3f}" for s in row))
print("best:", search.best_params_)
first, median = res["mean_fit_time"][0], np.median(res["mean_fit_time"])
print(f"fit time: first candidate {first:.1f} s, median {median:.1f} s")
