"""Neighbour backends: choosing one, reducing the width, saving the indexes."""

import tempfile

from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV

from skdknn import DeepKNNClassifier, load_model, save_model
from skdknn.datasets import load_mnist
from skdknn.neighbors import AnnoyBackend, FaissBackend, ProjectedBackend

X, y = load_mnist(return_X_y=True)
X_train, y_train, X_test = X[::2], y[::2], X[1::2]

# a backend by name, with its default settings
clf = DeepKNNClassifier(backend="annoy", max_epochs=2, random_state=0)
clf.fit(X_train, y_train)

# PCA to 256 dimensions, then Annoy, on every layer wider than 256
backend = ProjectedBackend(AnnoyBackend(n_trees=50), n_components=256)
fast = DeepKNNClassifier(
    net=FrozenEstimator(clf.net_), backend=backend, random_state=0
).fit(X_train, y_train)
print(fast.predict(X_test[:5]), fast.credibility(X_test[:5]).round(2))

# backend settings are grid-searchable: cross-validate on rows the frozen network
# never saw (on its own training rows every neighbour search looks too good)
X_heldout, y_heldout = X[1::2], y[1::2]
search = GridSearchCV(
    fast,
    {"backend__n_components": [64, 256], "backend__backend__n_trees": [20, 50]},
    cv=2,
).fit(X_heldout, y_heldout)
print(search.best_params_)

# indexes saved beside the model, memory-mapped when loaded back
with tempfile.TemporaryDirectory() as tmp:
    save_model(fast, f"{tmp}/dknn")
    loaded = load_model(f"{tmp}/dknn", mmap=True)
    assert (loaded.predict(X_test) == fast.predict(X_test)).all()

# PCA to 128 dimensions, then faiss's inverted file (pip install faiss-cpu)
ivf = ProjectedBackend(FaissBackend(index="ivf"), n_components=128)
fast_ivf = DeepKNNClassifier(
    net=FrozenEstimator(clf.net_), backend=ivf, random_state=0
).fit(X_train, y_train)
print(fast_ivf.predict(X_test[:5]), fast_ivf.credibility(X_test[:5]).round(2))
