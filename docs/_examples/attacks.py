"""The attacks page, docs/attacks.md: one session, run in this order.

``python docs/_examples/attacks.py`` (about 5 minutes on 2 CPU cores: BIM runs
100 steps, CW up to 5 x 100 and AdvKNN trains heads on every DkNN layer). A
deliberately small setting: 1,500 training images (200 for calibration), 5
epochs, k = 25, 200 test images.
"""

# ruff: noqa: E402  (each part imports what it needs where it starts, as on the page)

import numpy as np
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.attacks import AdvKNNAttack, BIMAttack, FGSMAttack, MeanAttack
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)  # 5,000 real MNIST images, offline
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=1500, test_size=200, stratify=y, random_state=0
)
dknn = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=5, random_state=0
).fit(X_train, y_train)
print(f"DkNN, clean inputs: {dknn.score(X_test, y_test):.3f}")

fgsm = FGSMAttack(dknn, eps=0.25).fit(X_train)
X_fgsm = fgsm.transform(X_test)  # away from the DkNN's own clean predictions
linf = np.abs(X_fgsm - X_test).max()
print(X_fgsm.shape, X_fgsm.dtype, f"max |x' - x| = {linf:.2f}")
print(f"DkNN under FGSM:    {dknn.score(X_fgsm, y_test):.3f}")

X_fgsm_true = fgsm.generate(X_test, y_test)  # away from the true labels instead
print(f"changed pixels vs transform: {np.mean(X_fgsm_true != X_fgsm):.4f}")

bim = BIMAttack(dknn, eps=0.25, step=0.01, n_iter=100).fit(X_train)
X_bim = bim.transform(X_test)
print(f"DkNN under BIM:     {dknn.score(X_bim, y_test):.3f}")

short = {"eps": 0.1, "step": 0.01, "n_iter": 20}
X_bim_short = BIMAttack(dknn, **short).fit(X_train).transform(X_test)
pgd = BIMAttack(dknn, **short, random_start=True, n_restarts=5, random_state=0)
X_pgd = pgd.fit(X_train).transform(X_test)
cnn = dknn.net_  # the DkNN's network alone (its predictions are class indices)
for name, X_set in (("BIM", X_bim_short), ("PGD with 5 restarts", X_pgd)):
    cnn_accuracy = np.mean(dknn.classes_[cnn.predict(X_set)] == y_test)
    print(
        f"eps 0.1, 20 steps, {name:<19}: CNN {cnn_accuracy:.3f}, "
        f"DkNN {dknn.score(X_set, y_test):.3f}"
    )

from skdknn.attacks import CarliniWagnerL2Attack

cw = CarliniWagnerL2Attack(dknn, binary_search_steps=5, n_iter=100).fit(X_train)
X_cw = cw.transform(X_test)  # through the CNN, away from the DkNN's predictions
l2 = np.linalg.norm((X_cw - X_test).reshape(len(X_test), -1), axis=1)
found = l2 > 0  # inputs for which some c gave an example
changed = dknn.predict(X_cw) != dknn.predict(X_test)
print(f"CW found {found.mean():.2f} of the inputs, mean L2 {l2[found].mean():.2f}")
print(f"DkNN under CW: {dknn.score(X_cw, y_test):.3f}, changed {changed.mean():.2f}")

cw_margin = CarliniWagnerL2Attack(dknn, confidence=5.0).fit(X_train)
X_cw5 = cw_margin.transform(X_test)
l2_5 = np.linalg.norm((X_cw5 - X_test).reshape(len(X_test), -1), axis=1)
changed = dknn.predict(X_cw5) != dknn.predict(X_test)
print(
    f"confidence 5: mean L2 {l2_5[l2_5 > 0].mean():.2f}, changed {changed.mean():.2f}"
)

# the kNN of the third layer: same frozen network, same calibration split
knn3 = clone(dknn).set_params(net=FrozenEstimator(dknn.net_), layers=["relu3"])
knn3.fit(X_train, y_train)

advknn = AdvKNNAttack(knn3, layer="relu3", method="fgsm", random_state=0)
advknn.fit(X_train)  # trains the DkNNB head on the kNN's neighbour distributions
print(advknn.layers_, f"agreement with the kNN: {advknn.agreement_:.3f}")
print("loss per epoch:", np.round(advknn.loss_curve_[::10], 3))
X_adv = advknn.transform(X_test)
print(
    f"relu3 kNN: FGSM {knn3.score(X_fgsm, y_test):.3f}, "
    f"AdvKNN {knn3.score(X_adv, y_test):.3f}"
)
print(
    f"DkNN:      FGSM {dknn.score(X_fgsm, y_test):.3f}, "
    f"AdvKNN {dknn.score(X_adv, y_test):.3f}"
)

advknn_all = AdvKNNAttack(dknn, layer="all", method="bim", random_state=0)
X_adv_all = advknn_all.fit(X_train).transform(X_test)
print(advknn_all.layers_, f"agreement {advknn_all.agreement_:.3f}")
print(f"DkNN under BIM through all heads: {dknn.score(X_adv_all, y_test):.3f}")

advknn_cw = AdvKNNAttack(knn3, layer="relu3", method="cw", random_state=0)
advknn_cw.fit(X_train)  # the same head as advknn's: same data, same random_state
X_adv_cw = advknn_cw.transform(X_test)
l2_adv = np.linalg.norm((X_adv_cw - X_test).reshape(len(X_test), -1), axis=1)
print(
    f"relu3 kNN under AdvKNN-CW: {knn3.score(X_adv_cw, y_test):.3f}, "
    f"mean L2 {l2_adv[l2_adv > 0].mean():.2f}"
)

mean = MeanAttack(dknn, n_iter=8).fit(X_train, y_train)
X_mean = mean.transform(X_test[:50])
changed = dknn.predict(X_mean) != dknn.predict(X_test[:50])
linf = np.abs(X_mean - X_test[:50]).max(axis=(1, 2, 3))
print(
    f"MeanAttack: success {changed.mean():.2f}, mean L-inf {linf[changed].mean():.2f}"
)

import torch

lo = np.array([0.0, -1.0, 0.0], dtype=np.float32)  # per-feature bounds
hi = np.array([1.0, 1.0, 100.0], dtype=np.float32)
torch.manual_seed(0)  # a reproducible stand-in network
net = torch.nn.Linear(3, 2)
X_tab = np.array([[0.5, 0.0, 50.0], [1.0, -1.0, 0.0]], dtype=np.float32)
attack = FGSMAttack(net, eps=0.5, clip_min=lo, clip_max=hi).fit(X_tab)
print(attack.transform(X_tab))
try:
    attack.transform(X_tab + 1)
except ValueError as error:
    print(error)

from sklearn.exceptions import NotFittedError

try:
    clone(FGSMAttack(dknn)).fit(X_train)
except NotFittedError as error:
    print(error)
frozen = FGSMAttack(FrozenEstimator(dknn), eps=0.25)
print(np.array_equal(clone(frozen).fit(X_train).transform(X_test), X_fgsm))

from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

pipe = Pipeline(
    [
        ("attack", FGSMAttack(FrozenEstimator(dknn))),
        ("clf", FrozenEstimator(dknn)),
    ]
)
search = GridSearchCV(pipe, {"attack__eps": [0.05, 0.1, 0.2, 0.3]}, cv=2, refit=False)
search.fit(X_test, y_test)
cv = search.cv_results_
for eps, acc in zip(cv["param_attack__eps"], cv["mean_test_score"], strict=True):
    print(f"eps = {eps:.2f}: robust accuracy {acc:.3f}")

from sklearn.neighbors import KNeighborsClassifier

from skdknn import metrics

pred_clean, pred_adv = dknn.predict(X_test), dknn.predict(X_adv)
cred_clean, cred_adv = dknn.credibility(X_test), dknn.credibility(X_adv)
success = pred_adv != pred_clean
pixel_knn = KNeighborsClassifier(n_neighbors=5).fit(X_train.reshape(1500, -1), y_train)
report = {
    "accuracy under attack": metrics.accuracy_under_attack(y_test, pred_adv),
    "success rate": metrics.attack_success_rate(pred_clean, pred_adv),
    "mean L2 of successful": metrics.mean_l2_distortion(X_test, X_adv, success),
    "mean credibility (adv)": metrics.mean_credibility(cred_adv),
    "detection rate @0.1": metrics.detection_rate(cred_adv, threshold=0.1),
    "false alarm rate @0.1": metrics.false_alarm_rate(cred_clean, threshold=0.1),
    "transfer to pixel kNN": metrics.transfer_accuracy(
        pixel_knn, X_adv.reshape(200, -1), y_test
    ),
}
for name, value in report.items():
    print(f"{name:<24}{value:.3f}")

scorer = metrics.make_attack_scorer(
    FGSMAttack(FrozenEstimator(dknn), eps=0.25), "detection_rate", threshold=0.1
)
print(f"{scorer(dknn, X_test, y_test):.3f}")

import tempfile
from pathlib import Path

from skdknn.attacks import load_adversarial, save_adversarial

cache = Path(tempfile.mkdtemp())
path = save_adversarial(
    cache / "advknn_relu3_fgsm", X_adv, attack=advknn, y=y_test, metrics=report
)
saved = load_adversarial(path)
print(path.name, saved.attack, saved.params["layer"], saved.params["eps"])
print(np.array_equal(saved.X_adv, X_adv), saved.X_adv.dtype)
print(f"{saved.metrics['accuracy under attack']:.3f}")
