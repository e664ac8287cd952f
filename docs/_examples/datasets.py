"""The datasets page: the embedded MNIST sample, offline and in a seeded order.

Run from anywhere: ``python docs/_examples/datasets.py`` (a few seconds).
"""

import numpy as np

from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)  # no files, no network
print(X.shape, X.dtype, X.min(), X.max())
print(np.bincount(y))  # images per digit
print(y[:12])  # a seeded random order: any slice holds every digit
print(np.bincount(y[:4000]))
X_stored, y_stored = load_mnist(return_X_y=True, shuffle=False)
print(y_stored[:12])  # the order of the file: sorted by digit
