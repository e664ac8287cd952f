"""Coverage of DkNN prediction sets on imbalanced classes (about 88 % / 12 %).

Run from anywhere: ``python docs/_examples/conformal_guarantees.py`` (about half a
minute on 2 CPU cores). The table is on docs/conformal-guarantees.md; CI checks it.
"""

import warnings

import numpy as np
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier

X, y = make_classification(
    n_samples=5000, n_features=20, n_informative=6, weights=[0.9], flip_y=0.05,
    random_state=0,
)  # fmt: skip
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=2500, stratify=y, random_state=0
)
print("class frequencies:", np.bincount(y_train) / len(y_train))
eps = 0.1
print("calibration  p_value    coverage  class 0  class 1  set size")
for split, mondrian in [("balanced", False), ("stratified", False), ("balanced", True)]:
    net = None  # trained by the first fit of each split, then reused as it is
    for form in ["dknn", "conformal"]:
        clf = DeepKNNClassifier(
            net=net, n_neighbors=25, calibration_size=400, calibration_split=split,
            mondrian=mondrian, p_value=form, max_epochs=10, batch_size=128,
            random_state=0,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.fit(X_train, y_train)
        # same split (same random_state): the net never saw the calibration rows
        net = FrozenEstimator(clf.net_)
        sets = clf.predict_set(X_test, significance=eps)
        covered = sets[np.arange(len(y_test)), y_test]
        name = "Mondrian" if mondrian else split
        print(
            f"{name:<12} {form:<10} {covered.mean():8.3f} "
            f"{covered[y_test == 0].mean():8.3f} {covered[y_test == 1].mean():8.3f} "
            f"{sets.sum(axis=1).mean():9.2f}" + ("  (warned)" if caught else "")
        )
print(f"guarantee: >= {1 - eps:.3f} (conformal), >= {1 - eps - 1 / 401:.3f} (dknn)")
