"""Attacks: defining equations, budgets, labels, AdvKNN, MeanAttack, persistence."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn.attacks import (
    AdvKNNAttack,
    BIMAttack,
    CarliniWagnerL2Attack,
    FGSMAttack,
    MeanAttack,
    load_adversarial,
    save_adversarial,
)
from skdknn.attacks._advknn import dknnb_loss
from skdknn.datasets import load_mnist

# -- a linear model whose input gradient is known in closed form ---------------------

W = np.array(
    [[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 1.5, -0.5], [0.5, 0.5, -1.0, 2.0]],
    dtype=np.float32,
)
B = np.array([0.1, -0.2, 0.05], dtype=np.float32)


def linear_net():
    net = nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(W))
        net.bias.copy_(torch.from_numpy(B))
    return net


@pytest.fixture
def X4():
    return np.random.default_rng(0).uniform(0.05, 0.95, size=(40, 4)).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce_input_gradient(X, t):
    """d CE(Wx + b, t) / dx = W^T (softmax(Wx + b) - onehot(t)), in float64."""
    X64 = X.astype(np.float64)
    probs = softmax(X64 @ W.T.astype(np.float64) + B)
    probs[np.arange(len(X)), t] -= 1.0
    return probs @ W.astype(np.float64)


def numpy_fgsm(X, t, eps, lo=0.0, hi=1.0):
    return np.clip(X + eps * np.sign(ce_input_gradient(X, t)), lo, hi)


def test_fgsm_equals_its_equation(X4):
    t = (X4 @ W.T + B).argmax(axis=1)  # the model's own clean prediction
    X_adv = FGSMAttack(linear_net(), eps=0.1).fit(X4).transform(X4)
    np.testing.assert_allclose(X_adv, numpy_fgsm(X4, t, 0.1), atol=1e-6)


def test_bim_equals_its_equation(X4):
    t = (X4 @ W.T + B).argmax(axis=1)
    eps, step = 0.2, 0.03
    expected = X4.astype(np.float64)
    for _ in range(7):
        expected = expected + step * np.sign(ce_input_gradient(expected, t))
        expected = np.clip(expected, X4 - eps, X4 + eps)  # project on the eps-ball
        expected = np.clip(expected, 0.0, 1.0)  # and on the box
    X_adv = BIMAttack(linear_net(), eps=eps, step=step, n_iter=7).fit(X4).transform(X4)
    np.testing.assert_allclose(X_adv, expected, atol=1e-5)


def test_bim_one_step_of_size_eps_is_fgsm(X4):
    fgsm = FGSMAttack(linear_net(), eps=0.15).fit(X4).transform(X4)
    bim = BIMAttack(linear_net(), eps=0.15, step=0.15, n_iter=1).fit(X4).transform(X4)
    np.testing.assert_array_equal(bim, fgsm)


def test_true_labels_through_generate(X4):
    attack = FGSMAttack(linear_net(), eps=0.1).fit(X4)
    t_clean = (X4 @ W.T + B).argmax(axis=1)
    np.testing.assert_array_equal(attack.generate(X4, t_clean), attack.transform(X4))
    y_other = (t_clean + 1) % 3
    np.testing.assert_allclose(
        attack.generate(X4, y_other), numpy_fgsm(X4, y_other, 0.1), atol=1e-6
    )
    with pytest.raises(ValueError, match="y must have shape"):
        attack.generate(X4, y_other[:3])


def test_per_feature_box_and_dtype(X4):
    lo = np.array([0.0, 0.2, 0.0, 0.0], dtype=np.float32)
    hi = np.array([1.0, 1.0, 0.6, 1.0], dtype=np.float32)
    X = np.clip(X4, lo, hi).astype(np.float64)
    X_adv = (
        BIMAttack(linear_net(), eps=0.3, step=0.1, n_iter=5, clip_min=lo, clip_max=hi)
        .fit(X)
        .transform(X)
    )
    assert X_adv.dtype == np.float64 and X_adv.shape == X.shape
    assert (X_adv >= lo - 1e-7).all() and (X_adv <= hi + 1e-7).all()
    assert np.abs(X_adv - X).max() <= 0.3 + 1e-6


def test_random_start_is_seeded(X4):
    make = lambda seed: BIMAttack(  # noqa: E731
        linear_net(), eps=0.2, step=0.05, n_iter=2, random_start=True, random_state=seed
    ).fit(X4)
    np.testing.assert_array_equal(make(1).transform(X4), make(1).transform(X4))
    assert not np.array_equal(make(1).transform(X4), make(2).transform(X4))


def test_input_never_modified(X4):
    X = X4.copy()
    FGSMAttack(linear_net(), eps=0.1).fit(X).transform(X)
    BIMAttack(linear_net(), eps=0.1, n_iter=3).fit(X).transform(X)
    np.testing.assert_array_equal(X, X4)


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack, message",
    [
        (FGSMAttack(nn.Linear(4, 3), eps=0.0), "eps"),
        (FGSMAttack(nn.Linear(4, 3), eps=-1.0), "eps"),
        (BIMAttack(nn.Linear(4, 3), eps=0.1, step=0.2), "step=0.2 exceeds eps=0.1"),
        (BIMAttack(nn.Linear(4, 3), n_iter=0), "n_iter"),
        (FGSMAttack(nn.Linear(4, 3), clip_min=1.0, clip_max=0.0), "clip_min"),
        (FGSMAttack("a model"), "estimator must be"),
    ],
)
def test_bad_parameters(attack, message, X4):
    with pytest.raises((ValueError, TypeError), match=message):
        attack.fit(X4).transform(X4)


def test_inputs_outside_the_box(X4):
    attack = FGSMAttack(linear_net()).fit(X4)
    X = X4.copy()
    X[0, 0] = 1.5
    with pytest.raises(ValueError, match="1 input values lie outside the clip box"):
        attack.transform(X)


def test_wrong_shapes(X4):
    attack = FGSMAttack(linear_net()).fit(X4)
    with pytest.raises(ValueError, match="X has 3 features"):
        attack.transform(X4[:, :3])
    with pytest.raises(ValueError, match="2D array"):
        attack.transform(X4[0])


def test_unfitted_estimator_and_attack(X4):
    with pytest.raises(NotFittedError, match="wrap it in sklearn.frozen"):
        FGSMAttack(DeepKNNClassifier()).fit(X4)
    with pytest.raises(NotFittedError):
        FGSMAttack(linear_net()).transform(X4)


def test_dknnb_loss_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0]])
    q_log = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    # t = argmax p = 0 (first of the tie); CE = -log 0.25;
    # KL(p || q) = 0.5 log(0.5 / 0.25) + 0.5 log(0.5 / 0.5) = 0.5 log 2
    expected = 0.3 * np.log(4) + 0.5 * np.log(2)
    assert float(dknnb_loss(q_log, p, 0.3, True)) == pytest.approx(expected, rel=1e-6)
    assert float(dknnb_loss(q_log, p, 0.3, False)) == pytest.approx(np.log(4), rel=1e-6)


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
        AdvKNNAttack(linear_net()).fit(np.full((5, 4), 0.5, np.float32))
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


def test_adversarial_sets_round_trip(tmp_path, X4):
    attack = FGSMAttack(linear_net(), eps=0.1).fit(X4)
    X_adv = attack.transform(X4)
    path = save_adversarial(
        tmp_path / "fgsm", X_adv, attack=attack, y=np.arange(40), metrics={"acc": 0.25}
    )
    assert path.name == "fgsm.npz"
    loaded = load_adversarial(path)
    assert loaded.X_adv.dtype == np.float32
    np.testing.assert_array_equal(loaded.X_adv, X_adv)  # bit for bit
    np.testing.assert_array_equal(loaded.y, np.arange(40))
    assert loaded.attack == "FGSMAttack"
    assert loaded.params["eps"] == 0.1
    assert loaded.metrics == {"acc": 0.25}
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not an adversarial set"):
        load_adversarial(path)
    with pytest.raises(FileNotFoundError):
        load_adversarial(tmp_path / "missing.npz")


def test_adversarial_set_write_errors_name_the_users_path(tmp_path, X4):
    # before: FileNotFoundError naming the temporary '.a.npz.part'
    missing = tmp_path / "nowhere" / "a.npz"
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere/a\.npz'.*does not exist"):
        save_adversarial(missing, X4)
    (tmp_path / "a.npz").mkdir()  # the target is a directory: replace fails
    with pytest.raises(OSError, match=r"Cannot write the adversarial set '.*a\.npz'"):
        save_adversarial(tmp_path / "a.npz", X4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]  # no .part left


@pytest.mark.parametrize(
    "attack_class", [FGSMAttack, BIMAttack, CarliniWagnerL2Attack, MeanAttack]
)
def test_flat_per_feature_bounds_on_flat_rows_of_an_image_model(attack_class):
    # before: the gradient attacks refused (d,) bounds on flat rows of an image
    # network ("broadcastable to one sample's shape (1, 4, 4)"); MeanAttack and
    # the docs accepted them
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, size=(12, 1, 4, 4)).astype(np.float32)
    flat = images.reshape(12, -1)
    lo = np.zeros(16)
    hi = np.where(np.arange(16) % 2 == 0, 0.85, 1.0)  # even features capped at 0.85
    if attack_class is MeanAttack:
        y = np.arange(12) % 3
        knn = KNeighborsClassifier(n_neighbors=1).fit(flat, y)
        attack = MeanAttack(knn, clip_min=lo, clip_max=hi).fit(flat, y)
    else:
        params = {"n_iter": 5} if attack_class is CarliniWagnerL2Attack else {}
        if attack_class is not CarliniWagnerL2Attack:
            params["eps"] = 0.3
        if attack_class is BIMAttack:
            params.update(step=0.1, n_iter=3)
        attack = attack_class(net, clip_min=lo, clip_max=hi, **params).fit(images)
        # the same bounds with images: the flat order is the images' row-major one
        np.testing.assert_array_equal(
            attack.transform(images).reshape(12, -1), attack.transform(flat)
        )
    X_adv = attack.transform(flat)
    assert X_adv.shape == flat.shape
    assert np.all(X_adv >= lo) and np.all(X_adv <= hi)


def test_mean_attack_per_feature_box():
    """A per-feature box bounds every feature of the adversarial examples."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X = np.vstack([rng.uniform(0.0, 0.3, (20, 4)), rng.uniform(0.6, 0.9, (20, 4))])
    y = np.repeat([0, 1], 20)
    knn = KNeighborsClassifier(n_neighbors=1).fit(X, y)
    high = np.array([1.0, 1.0, 0.35, 1.0])  # feature 2 may not pass 0.35
    attack = MeanAttack(knn, clip_max=high).fit(X, y)
    X_adv = attack.transform(X[:20])
    assert np.all(X_adv <= high + 1e-12) and np.all(X_adv >= 0.0)
    assert np.mean(knn.predict(X_adv) == 1) > 0.9  # still flips the class-0 inputs
    np.testing.assert_array_equal(attack.clip_max_, high)
    with pytest.raises(ValueError, match=r"broadcastable to one input's shape \(4,\)"):
        MeanAttack(knn, clip_max=np.ones(3)).fit(X, y)
    # per-channel bounds of images broadcast to every pixel
    images = X.reshape(40, 1, 2, 2)
    knn_img = KNeighborsClassifier(n_neighbors=1).fit(X, y)
    per_channel = MeanAttack(knn_img, clip_max=np.ones((1, 1, 1))).fit(images, y)
    assert per_channel.clip_max_.shape == (4,)
    with pytest.raises(ValueError, match="smaller than clip_max everywhere"):
        MeanAttack(knn, clip_min=np.array([0.0, 0.0, 1.0, 0.0])).fit(X, y)
