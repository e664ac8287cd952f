"""The README's examples: fit a DkNN on the embedded MNIST sample, then attack it.

Run from anywhere: ``python docs/_examples/readme.py`` (about two minutes on 2 CPU
cores). CI runs it and checks that its output is the one the README shows.
"""

# ruff: noqa: E402  (the README's second block imports what it needs where it starts)

import numpy as np

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)  # (5000, 1, 28, 28) float32 in [0, 1], shuffled
X_train, y_train, X_test, y_test = X[:4000], y[:4000], X[4000:], y[4000:]
clf = DeepKNNClassifier(max_epochs=15, random_state=0).fit(X_train, y_train)
clf.predict(X_test)  # DkNN prediction
credibility = clf.credibility(X_test)  # max p-value: low for odd inputs
sets = clf.predict_set(X_test, significance=0.1)  # conformal prediction sets
print(f"accuracy: {clf.score(X_test, y_test):.3f}")
print(f"mean credibility: {credibility.mean():.3f}")
print(f"mean prediction set size at 0.1: {sets.sum(axis=1).mean():.2f}")

# what the README's comments state
assert X.shape == (5000, 1, 28, 28) and X.dtype == np.float32
assert X.min() == 0.0 and X.max() == 1.0
assert set(np.unique(y_train)) == set(np.unique(y_test)) == set(range(10))

from sklearn.frozen import FrozenEstimator

from skdknn import AdvKNNAttack, FGSMAttack

X_fgsm = FGSMAttack(FrozenEstimator(clf), eps=0.25).fit(X_train).transform(X_test)
advknn = AdvKNNAttack(FrozenEstimator(clf), layer="relu3", eps=0.25, random_state=0)
advknn.fit(X_train)  # trains the deep kNN block on the kNN's neighbour labels
X_adv = advknn.transform(X_test)  # FGSM through a deep kNN block
for name, X_attacked in [("FGSM", X_fgsm), ("AdvKNN", X_adv)]:
    accuracy = clf.score(X_attacked, y_test)
    credibility = clf.credibility(X_attacked).mean()
    print(f"{name}: accuracy {accuracy:.3f}, mean credibility {credibility:.3f}")
