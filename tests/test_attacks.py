"""Attacks: defining equations, budgets, labels, AdvKNN, MeanAttack, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn.attacks import (
    BIMAttack,
    CarliniWagnerL2Attack,
    FGSMAttack,
    MeanAttack,
    load_adversarial,
    save_adversarial,
)
from skdknn.attacks._advknn import dknnb_loss

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
    with pytest.raises(
        ValueError, match=r"^y must have shape \(40,\) to match X; got \(3,\)\.$"
    ):
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
        (
            BIMAttack(nn.Linear(4, 3), eps=0.1, step=0.2),
            r"^step=0.2 exceeds eps=0.1; a BIM step must not be larger than the "
            r"L-infinity budget\.$",
        ),
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


def test_inputs_at_the_box_tolerance_are_inside(X4):
    """The box check allows float32 rounding: exactly clip_min - 1e-6 and
    clip_max + 1e-6 (in float32) are accepted, the next floats out are not."""
    lo_edge = (np.zeros(1, np.float32) - 1e-6)[0]
    hi_edge = (np.ones(1, np.float32) + 1e-6)[0]
    attack = FGSMAttack(linear_net()).fit(X4)
    X = X4.copy()
    X[0, 0], X[1, 1] = lo_edge, hi_edge
    assert attack.transform(X).shape == X.shape
    for row, col, value in [
        (0, 0, np.nextafter(lo_edge, np.float32(-1))),
        (1, 1, np.nextafter(hi_edge, np.float32(2))),
    ]:
        Y = X.copy()
        Y[row, col] = value
        with pytest.raises(ValueError, match="1 input values lie outside the clip"):
            attack.transform(Y)


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
