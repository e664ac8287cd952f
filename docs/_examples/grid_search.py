"""Grid search over n_neighbors and layers with a prefit network and memory=.

``python docs/_examples/grid_search.py``. Small setting: 1,500 training images,
3 epochs, 200 calibration points, 1,000 validation images.
"""

import tempfile

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)
X_train, X_val, y_train, y_val = train_test_split(
    X, y, train_size=1500, test_size=1000, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=3, random_state=0
).fit(X_train, y_train)

X_all = np.concatenate([X_train, X_val])
y_all = np.concatenate([y_train, y_val])
# a single split: fit on X_train (as the network was), score on the unseen X_val
split = [(np.arange(len(X_train)), np.arange(len(X_train), len(X_all)))]

with tempfile.TemporaryDirectory() as cache:
    search = GridSearchCV(
        DeepKNNClassifier(
            net=FrozenEstimator(clf.net_),
            calibration_size=200,
            random_state=0,
            memory=cache,  # activations computed once per layer list, then reused
        ),
        param_grid={
            "n_neighbors": [10, 25, 75],
            "layers": [None, ["relu3", "logits"]],
        },
        cv=split,
        refit=False,  # refit below on X_train only, see the note
    ).fit(X_all, y_all)

res = search.cv_results_
for params, score, seconds in zip(
    res["params"], res["mean_test_score"], res["mean_fit_time"], strict=True
):
    print(f"accuracy {score:.3f}  fit {seconds:3.1f} s  {params}")
print("best:", search.best_params_)

best = DeepKNNClassifier(
    net=FrozenEstimator(clf.net_),
    calibration_size=200,
    random_state=0,
    **search.best_params_,
).fit(X_train, y_train)
