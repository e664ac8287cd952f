"""
# Reliability diagrams: credibility against the softmax

A reliability diagram bins predictions by a score in [0, 1] and plots, per bin,
the share of correct predictions (bars) and the number of predictions (line,
right axis). For a score that is the probability of being right, the bars
follow the diagonal. The DkNN paper (Papernot & McDaniel, 2018)
compares the DkNN's **credibility** with the largest **softmax** probability
of the same network, on clean and on adversarial inputs: under attack the
softmax stays confident about wrong predictions, while credibility drops.
"""

# %%
# A DkNN on 2,000 indexed images (k = 25, 500 calibration images), its CNN
# trained for 5 epochs.

import matplotlib.pyplot as plt
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.attacks import FGSMAttack
from skdknn.datasets import load_mnist
from skdknn.plotting import plot_reliability_diagrams

X, y = load_mnist(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=2500, test_size=1000, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=500, max_epochs=5, random_state=0
).fit(X_train, y_train)

# %%
# Clean held-out images. Both scores rank the predictions: the higher the
# score, the more often the prediction is right. Credibility is a p-value, not
# a probability of being right, and it is conservative here: its bars lie above
# the diagonal.

fig, axes, (dknn, softmax) = plot_reliability_diagrams(clf, X_test, y_test)
fig.suptitle("clean test images")
print("predictions per bin, credibility:", dknn.counts)
print("predictions per bin, softmax:    ", softmax.counts)

# %%
# The same images after FGSM at eps = 0.1, made against the DkNN's own
# predictions through its network. The softmax still gives many predictions a
# confidence above 0.9, and a third of those are wrong; the credibility of most
# predictions falls below 0.4, where they can be flagged for review.

X_adv = FGSMAttack(FrozenEstimator(clf), eps=0.1).fit(X_train).transform(X_test)
fig, axes, (dknn, softmax) = plot_reliability_diagrams(clf, X_adv, y_test)
fig.suptitle("FGSM, eps = 0.1")
print(f"DkNN accuracy under FGSM: {clf.score(X_adv, y_test):.3f}")
plt.show()
