"""Getting started: fit a DeepKNNClassifier on the embedded MNIST sample.

Run from anywhere: ``python docs/_examples/quickstart.py``. Small setting (1,500
training images, 3 epochs, k = 25, 200 calibration points) so that it runs in
well under a minute on 2 CPU cores.
"""

# ruff: noqa: E402  (the persistence part imports what it needs where it starts)

import numpy as np
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

np.set_printoptions(precision=3, suppress=True)

X, y = load_mnist(return_X_y=True)  # embedded sample, offline
print(X.shape, X.dtype, y.shape)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=1500, test_size=1000, stratify=y, random_state=0
)

clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=3, random_state=0
)
clf.fit(X_train, y_train)
print(clf.layers_)
print(len(clf.train_indices_), len(clf.calibration_indices_))

print("DkNN accuracy:", clf.score(X_test, y_test))
print("predicted:", clf.predict(X_test[:5]), "true:", y_test[:5])

proba = clf.predict_proba(X_test[:2])
print(proba)
print(proba.sum(axis=1))

p = clf.p_values(X_test[:3])
print(p)
print("credibility:", clf.credibility(X_test[:3]))
print("confidence: ", clf.confidence(X_test[:3]))

cred = clf.credibility(X_test)
correct = clf.predict(X_test) == y_test
print(f"mean credibility, correct: {cred[correct].mean():.2f}")
print(f"mean credibility, wrong:   {cred[~correct].mean():.2f}")

sets = clf.predict_set(X_test, significance=0.1)
print(sets[:3].astype(int))
print([clf.classes_[row].tolist() for row in sets[:3]])
coverage = sets[np.arange(len(y_test)), np.searchsorted(clf.classes_, y_test)].mean()
print(f"coverage: {coverage:.3f}, mean set size: {sets.sum(axis=1).mean():.2f}")

dist, ind = clf.kneighbors(X_test[:1])
print(dist.shape, ind.shape)  # (n_queries, n_layers, n_neighbors)
dist3, ind3 = clf.kneighbors(X_test[:1], layer="relu3")
print(ind3[0, :8])  # rows of X_train
print(y_train[ind3[0, :8]])  # their labels

import os
import tempfile

import joblib

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "dknn.joblib")
    joblib.dump(clf, path)
    print(f"file size: {os.path.getsize(path) / 2**20:.0f} MiB")
    loaded = joblib.load(path)
print(np.array_equal(loaded.p_values(X_test), clf.p_values(X_test)))
