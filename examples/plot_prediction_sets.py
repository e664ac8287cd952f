"""
# Coverage of conformal prediction sets

A DkNN's prediction set at significance level $\varepsilon$ holds every label
whose p-value is above $\varepsilon$. On data drawn like the calibration set it
contains the true label with probability at least
$1 - \varepsilon - 1/(|A| + 1)$, where $|A|$ is the number of calibration
points (see [How the DkNN works](../../dknn.md)). This example measures the
coverage on 1,000 held-out MNIST images for every $\varepsilon$, and the price
of the guarantee: the sets grow as $\varepsilon$ shrinks.
"""

# %%
# A small DkNN: 1,300 indexed images, 200 calibration images, k = 25.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=1500, test_size=1000, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=3, random_state=0
).fit(X_train, y_train)

# %%
# The p-values are computed once; each significance level only thresholds them.

p = clf.p_values(X_test)
p_true = p[np.arange(len(y_test)), np.searchsorted(clf.classes_, y_test)]
n_calibration = len(clf.calibration_nonconformity_)
significance = np.linspace(0.005, 0.5, 100)
coverage = np.array([np.mean(p_true > eps) for eps in significance])
set_size = np.array([np.mean((p > eps).sum(axis=1)) for eps in significance])
empty = np.array([np.mean((p > eps).sum(axis=1) == 0) for eps in significance])
bound = 1 - significance - 1 / (n_calibration + 1)
print(f"coverage at eps = 0.1: {np.mean(p_true > 0.1):.3f}")
print(f"guarantee at eps = 0.1: {1 - 0.1 - 1 / (n_calibration + 1):.3f}")

# %%
# The measured coverage follows the guarantee. The guarantee bounds the
# *expected* coverage; with 1,000 test images the measured share wanders by
# about a point and a half around it, on both sides. At small $\varepsilon$ the
# sets hold several labels; at large $\varepsilon$ some are empty: no label is
# credible enough.

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
left.plot(significance, coverage, label="measured coverage")
left.plot(significance, bound, "--", label=r"guarantee $1 - \varepsilon - 1/(|A|+1)$")
left.set_xlabel(r"significance level $\varepsilon$")
left.set_ylabel("share of sets holding the true label")
left.legend()
right.plot(significance, set_size, label="mean set size")
right.plot(significance, empty, label="share of empty sets")
right.axhline(1, color="grey", lw=0.5)
right.set_xlabel(r"significance level $\varepsilon$")
right.legend()
fig.tight_layout()
plt.show()
