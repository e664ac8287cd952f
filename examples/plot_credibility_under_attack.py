"""
# Credibility flags adversarial examples

FGSM pushes test images across the DkNN's decision boundary. The DkNN then
usually predicts a wrong label, but its neighbours disagree from layer to layer,
so the **credibility** of that prediction is low. This example compares the
credibility of clean and adversarial inputs, and shows the trade-off of a
credibility threshold: adversarial inputs detected against clean inputs
wrongly flagged (see [Attacks and robustness](../../attacks.md)).
"""

# %%
# A small DkNN (1,300 indexed images, k = 25), attacked with FGSM at
# eps = 0.2 through its network, away from its own clean predictions. Only the
# successful adversarial examples, whose prediction the attack changed, count
# as adversarial below.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier, metrics
from skdknn.attacks import FGSMAttack
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=1500, test_size=500, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=3, random_state=0
).fit(X_train, y_train)
X_adv = FGSMAttack(FrozenEstimator(clf), eps=0.2).fit(X_train).transform(X_test)

success = clf.predict(X_adv) != clf.predict(X_test)
cred_clean, cred_adv = clf.credibility(X_test), clf.credibility(X_adv[success])
print(f"attack success rate: {success.mean():.3f}")
print(f"mean credibility: clean {cred_clean.mean():.2f}, FGSM {cred_adv.mean():.2f}")

# %%
# Every threshold gives one point of the curve on the right: the share of
# adversarial inputs below it (detected) against the share of clean inputs
# below it (false alarms). Choose the threshold on clean held-out data, from
# the false-alarm rate you can accept.

thresholds = np.unique(np.concatenate([cred_clean, cred_adv, [0.0, 1.01]]))
detected = [metrics.detection_rate(cred_adv, t) for t in thresholds]
false_alarms = [metrics.false_alarm_rate(cred_clean, t) for t in thresholds]

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
bins = np.linspace(0, 1, 21)
left.hist(cred_clean, bins=bins, density=True, alpha=0.6, label="clean")
left.hist(
    cred_adv, bins=bins, density=True, alpha=0.6, label="FGSM, eps = 0.2, successful"
)
left.set_xlabel("credibility")
left.set_ylabel("density")
left.legend()
right.plot(false_alarms, detected, drawstyle="steps-post")
right.plot([0, 1], [0, 1], ":", color="grey")
right.set_xlabel("false-alarm rate (clean inputs flagged)")
right.set_ylabel("detection rate (adversarial inputs flagged)")
fig.tight_layout()
plt.show()
