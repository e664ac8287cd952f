"""
# Explaining a prediction by its neighbours

A DkNN's prediction rests on training images one can look at: the nearest
neighbours of the input in each layer. For a typical input they share its
label in every layer. For an adversarial input, the neighbours of the first
layer still look like the original digit, while those of the later layers come
from other classes and disagree with each other. This disagreement is what
makes the credibility low (Papernot & McDaniel, 2018).
"""

# %%
# A DkNN on 2,000 indexed images (k = 25), its CNN trained for 5 epochs.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.attacks import FGSMAttack
from skdknn.datasets import load_mnist
from skdknn.plotting import plot_explanation

X, y = load_mnist(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=2500, test_size=200, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=500, max_epochs=5, random_state=0
).fit(X_train, y_train)

# %%
# FGSM at eps = 0.25 against the DkNN's own predictions. Among the test images
# that the DkNN classifies correctly and the attack fools, take the one whose
# credibility drops the most, and show the 8 nearest training images in each of
# the four layers. `X_train` is the `X` given to `fit`: `kneighbors` returns
# row numbers into it.

X_adv = FGSMAttack(FrozenEstimator(clf), eps=0.25).fit(X_train).transform(X_test)
pred, pred_adv = clf.predict(X_test), clf.predict(X_adv)
cred, cred_adv = clf.credibility(X_test), clf.credibility(X_adv)
fooled = (pred == y_test) & (pred_adv != pred)
i = int(np.argmax(np.where(fooled, cred - cred_adv, -np.inf)))
print(f"clean: predicted {pred[i]}, credibility {cred[i]:.2f}")
print(f"FGSM:  predicted {pred_adv[i]}, credibility {cred_adv[i]:.2f}")
fig, axes = plot_explanation(clf, X_test[i], X_train, n_neighbors=8)

# %%
# The same image after the attack. Neighbours whose label differs from the
# DkNN's prediction are framed.

fig, axes = plot_explanation(clf, X_adv[i], X_train, n_neighbors=8)
plt.show()
