"""Attacks against a DkNN trained on real MNIST: the AdvKNN paper's claims (AdvKNN
beats FGSM on the kNN and the DkNN, the layer ablation, robust accuracy per eps in
a grid search, MeanAttack) and persistence of the heads.

Apart from tests/test_attacks.py because the trained DkNN (a module fixture of
about half a minute) would be rebuilt in every mutant's process of a mutation run
of the attack steps (tools/mutation.py), which these claims do not judge."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn.attacks import AdvKNNAttack, FGSMAttack, MeanAttack
from skdknn.datasets import load_mnist

# -- against a DkNN on real MNIST ---------------------------------------------------


@pytest.fixture(scope="module")
def mnist_models():
    """A DkNN on the paper CNN and the kNN of its third layer, on real MNIST."""
    # the stored order, permuted below: the sample these claims were measured on
    X, y = load_mnist(return_X_y=True, shuffle=False)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(X))
    train, test = rows[:2000], rows[2000:2300]
    dknn = DeepKNNClassifier(
        n_neighbors=25, calibration_size=200, max_epochs=10, random_state=0
    ).fit(X[train], y[train])
    knn3 = clone(dknn).set_params(net=FrozenEstimator(dknn.net_), layers=["relu3"])
    knn3.fit(X[train], y[train])
    return dknn, knn3, X[train], y[train], X[test], y[test]


def test_fgsm_against_dknn_uses_its_predictions(mnist_models):
    dknn, _, X_train, _, X_test, _ = mnist_models
    attack = FGSMAttack(dknn, eps=0.1).fit(X_train[:5])
    expected = attack.generate(X_test[:50], dknn.predict(X_test[:50]))
    np.testing.assert_array_equal(attack.transform(X_test[:50]), expected)
    # flat rows work too and give the same result
    flat = attack.transform(X_test[:50].reshape(50, -1))
    np.testing.assert_array_equal(flat.reshape(expected.shape), expected)


def test_advknn_beats_fgsm_on_knn_and_dknn(mnist_models):
    """The AdvKNN paper's central claim, at eps = 0.25 on held-out real MNIST."""
    dknn, knn3, X_train, _, X_test, y_test = mnist_models
    X_fgsm = FGSMAttack(dknn, eps=0.25).fit(X_train).transform(X_test)
    attack = AdvKNNAttack(knn3, layer="relu3", eps=0.25, random_state=0)
    X_adv = attack.fit(X_train).transform(X_test)
    assert np.abs(X_adv - X_test).max() <= 0.25 + 1e-6
    assert X_adv.min() >= 0.0 and X_adv.max() <= 1.0
    assert attack.agreement_ > 0.85  # the head imitates the layer's kNN
    # the DkNNB as a classifier: q(x) is a distribution agreeing with the kNN
    q = attack.head_proba(X_test)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    knn_pred = attack.neighbor_distribution(X_test).argmax(axis=1)
    assert np.mean(q.argmax(axis=1) == knn_pred) > 0.85
    assert attack.loss_curve_[-1] < 0.5 * attack.loss_curve_[0]  # the loss decreases
    knn_fgsm, knn_adv = knn3.score(X_fgsm, y_test), knn3.score(X_adv, y_test)
    dknn_fgsm, dknn_adv = dknn.score(X_fgsm, y_test), dknn.score(X_adv, y_test)
    assert knn_adv < knn_fgsm, (knn_adv, knn_fgsm)
    assert dknn_adv < dknn_fgsm, (dknn_adv, dknn_fgsm)


def test_advknn_all_layers_bim_and_ablation(mnist_models):
    dknn, _, X_train, _, X_test, _ = mnist_models
    attack = AdvKNNAttack(
        FrozenEstimator(dknn),
        method="bim",
        eps=0.1,
        step=0.05,
        n_iter=3,
        head_epochs=3,
        random_state=0,
    ).fit(X_train[:400])
    assert attack.layers_ == dknn.layers_
    assert len(attack.heads_.heads) == 4
    X_adv = attack.transform(X_test[:30])
    assert np.abs(X_adv - X_test[:30]).max() <= 0.1 + 1e-6
    plain = clone(attack).set_params(consistency=False).fit(X_train[:400])
    assert not np.allclose(plain.loss_curve_, attack.loss_curve_)
    # the imitated distribution of training points leaves each point out
    p = attack.neighbor_distribution(X_train[:5], exclude_self=True)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_advknn_bad_input(mnist_models):
    dknn, _, X_train, _, _, _ = mnist_models
    with pytest.raises(ValueError, match=r"layer='conv9'.*'relu1'"):
        AdvKNNAttack(dknn, layer="conv9").fit(X_train[:50])
    with pytest.raises(TypeError, match="attacks a DeepKNNClassifier"):
        AdvKNNAttack(nn.Linear(4, 3)).fit(np.full((5, 4), 0.5, np.float32))
    with pytest.raises(ValueError, match="step=0.5 exceeds eps=0.25"):
        AdvKNNAttack(dknn, method="bim", step=0.5).fit(X_train[:50])


def test_advknn_persists_with_joblib(mnist_models, tmp_path):
    dknn, _, X_train, _, X_test, _ = mnist_models
    attack = AdvKNNAttack(dknn, layer="relu3", head_epochs=2, random_state=0)
    attack.fit(X_train[:300])
    joblib.dump(attack, tmp_path / "attack.joblib")
    loaded = joblib.load(tmp_path / "attack.joblib")
    np.testing.assert_array_equal(
        loaded.transform(X_test[:20]), attack.transform(X_test[:20])
    )
    assert loaded.agreement_ == attack.agreement_


def test_grid_search_reports_robust_accuracy_per_eps(mnist_models):
    dknn, _, _, _, X_test, y_test = mnist_models
    pipe = Pipeline(
        [
            ("attack", FGSMAttack(FrozenEstimator(dknn))),
            ("clf", FrozenEstimator(dknn)),
        ]
    )
    search = GridSearchCV(pipe, {"attack__eps": [0.01, 0.1, 0.3]}, cv=2)
    search.fit(X_test[:200], y_test[:200])
    robust = search.cv_results_["mean_test_score"]
    assert robust[0] > robust[1] > robust[2]  # stronger attacks, lower accuracy
    assert search.best_params_ == {"attack__eps": 0.01}


def test_mean_attack_flips_a_pixel_knn(mnist_models):
    _, _, X_train, y_train, X_test, _ = mnist_models
    flat_train, flat_test = (
        X_train.reshape(len(X_train), -1),
        X_test[:60].reshape(60, -1),
    )
    knn = KNeighborsClassifier(n_neighbors=5).fit(flat_train, y_train)
    attack = MeanAttack(knn, n_iter=8).fit(flat_train, y_train)
    X_adv = attack.transform(flat_test)
    clean, adv = knn.predict(flat_test), knn.predict(X_adv)
    success = adv != clean
    assert success.mean() > 0.9
    assert X_adv.min() >= 0 and X_adv.max() <= 1
    # failed inputs come back unchanged
    np.testing.assert_array_equal(X_adv[~success], flat_test[~success])
    with pytest.raises(ValueError, match="outside the clip box"):
        attack.transform(flat_test * 3)
