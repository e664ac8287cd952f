"""FGSM and BIM step by step against an independent float64 autograd loop.

The model is non-linear on purpose: the sign of the input gradient flips along the
attack path (checked), so a BIM that takes the gradient at the clean input, steps by
``eps`` instead of ``step``, or projects on the eps-ball once after the loop gives a
different answer (also checked, on the reference itself). Several batches with
their own labels, and the edges of the box, are covered too.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skdknn.attacks import BIMAttack, FGSMAttack


class Wavy(nn.Module):
    """logits = A cos(omega x) + b: the loss gradient flips sign every pi / omega."""

    def __init__(self, n_features: int = 4, n_classes: int = 3, omega: float = 12.0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.A = nn.Parameter(torch.randn(n_classes, n_features, generator=generator))
        self.b = nn.Parameter(torch.randn(n_classes, generator=generator))
        self.omega = omega

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(self.omega * x) @ self.A.T + self.b


def reference_bim(
    model,
    X,
    t,
    eps,
    step,
    n_iter,
    lo=0.0,
    hi=1.0,
    clean_gradient=False,
    project_each_step=True,
):
    """x_{i+1} = clip(project_eps(x_i + step sign(grad CE(x_i, t)))) in float64.

    Returns the adversarial examples and, per row, whether the gradient sign of some
    feature changed along the path. ``clean_gradient`` and ``project_each_step``
    build the wrong variants the test must tell apart.
    """
    model64 = copy.deepcopy(model).double()
    x0 = torch.tensor(np.asarray(X), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(t), dtype=torch.int64)
    x, first_sign, flipped = x0.clone(), None, torch.zeros(len(x0), dtype=torch.bool)
    for _ in range(n_iter):
        at = (x0 if clean_gradient else x).detach().requires_grad_(True)
        loss = F.cross_entropy(model64(at), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, at)
        sign = grad.sign()
        if first_sign is None:
            first_sign = sign
        flipped |= (sign != first_sign).any(dim=1)
        x = x + step * sign
        if project_each_step:
            x = torch.clamp(torch.clamp(x, x0 - eps, x0 + eps), lo, hi)
    x = torch.clamp(torch.clamp(x, x0 - eps, x0 + eps), lo, hi)
    return x.numpy(), flipped.numpy()


@pytest.fixture
def X():
    return np.random.default_rng(0).uniform(0.02, 0.98, size=(40, 4)).astype(np.float32)


def clean_predictions(model, X):
    with torch.no_grad():
        return model(torch.from_numpy(X)).argmax(dim=1).numpy()


def test_bim_follows_the_gradient_where_its_sign_flips(X):
    model = Wavy()
    eps, step, n_iter = 0.25, 0.01, 15
    assert step * n_iter < eps  # the eps-ball never binds: only the path matters
    t = clean_predictions(model, X)
    expected, flipped = reference_bim(model, X, t, eps, step, n_iter)
    assert flipped.mean() > 0.5  # the path is not a straight line for most rows
    # the test tells the wrong BIMs apart from the right one
    frozen, _ = reference_bim(model, X, t, eps, step, n_iter, clean_gradient=True)
    big_steps, _ = reference_bim(model, X, t, eps, eps, n_iter)
    assert np.abs(frozen - expected).max(axis=1).min() < 1e-12  # some rows agree
    assert (np.abs(frozen - expected).max(axis=1) > 0.01).mean() > 0.5
    assert (np.abs(big_steps - expected).max(axis=1) > 0.01).all()

    attack = BIMAttack(model, eps=eps, step=step, n_iter=n_iter).fit(X)
    np.testing.assert_allclose(attack.transform(X), expected, atol=1e-5)


def test_bim_projects_on_the_eps_ball_at_every_step(X):
    model = Wavy(omega=30.0)  # flips within the ball: the path comes back inside
    eps, step, n_iter = 0.05, 0.02, 12
    t = clean_predictions(model, X)
    expected, _ = reference_bim(model, X, t, eps, step, n_iter)
    once, _ = reference_bim(model, X, t, eps, step, n_iter, project_each_step=False)
    assert (np.abs(once - expected).max(axis=1) > 0.01).mean() > 0.3
    X_adv = BIMAttack(model, eps=eps, step=step, n_iter=n_iter).fit(X).transform(X)
    np.testing.assert_allclose(X_adv, expected, atol=1e-5)
    assert np.abs(X_adv - X).max() <= eps + 1e-6


def test_fgsm_is_one_step_of_size_eps(X):
    model = Wavy()
    t = clean_predictions(model, X)
    expected, _ = reference_bim(model, X, t, 0.1, 0.1, 1)
    X_adv = FGSMAttack(model, eps=0.1).fit(X).transform(X)
    np.testing.assert_allclose(X_adv, expected, atol=1e-6)
    assert np.abs(X_adv - X).max() == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_every_batch_is_attacked_with_its_own_labels(X, batch_size):
    """40 rows in batches of 7 (the last one short) against per-row labels."""
    model = Wavy()
    y = np.random.default_rng(1).integers(0, 3, size=len(X))
    expected, _ = reference_bim(model, X, y, 0.2, 0.02, 6)
    attack = BIMAttack(model, eps=0.2, step=0.02, n_iter=6, batch_size=batch_size)
    attack.fit(X)
    np.testing.assert_allclose(attack.generate(X, y), expected, atol=1e-5)
    # untargeted: each batch pushes away from its rows' clean predictions
    t = clean_predictions(model, X)
    assert len(set(t[:7])) > 1 and not np.array_equal(t[:7], t[7:14])
    expected, _ = reference_bim(model, X, t, 0.2, 0.02, 6)
    np.testing.assert_allclose(attack.transform(X), expected, atol=1e-5)


# -- the box ---------------------------------------------------------------------


@pytest.mark.parametrize(("row", "col", "value"), [(0, 0, -0.01), (39, 3, 1.001)])
def test_inputs_just_outside_the_box_are_rejected(X, row, col, value):
    attack = FGSMAttack(Wavy(), eps=0.1).fit(X)
    bad = X.copy()
    bad[row, col] = value
    with pytest.raises(ValueError, match="1 input values lie outside the clip box"):
        attack.transform(bad)
    # the same just outside a per-feature box [0.1, 0.9]
    per_feature = FGSMAttack(Wavy(), eps=0.1, clip_min=0.1, clip_max=0.9)
    inside = np.clip(X, 0.1, 0.9)
    per_feature.fit(inside)
    inside[row, col] = 0.09 if value < 0 else 0.901
    with pytest.raises(ValueError, match="outside the clip box"):
        per_feature.transform(inside)


def test_the_error_counts_every_value_outside_the_box(X):
    attack = FGSMAttack(Wavy(), eps=0.1).fit(X)
    bad = X.copy()
    bad[0, 0], bad[1, 1], bad[2, 2] = -0.5, 1.5, 1.5  # one below, two above
    with pytest.raises(ValueError, match=r"^3 input values lie outside the clip box"):
        attack.transform(bad)


def test_bounds_broadcast_to_one_image_or_name_the_shapes_they_may_have(X):
    # images of shape (1, 2, 2): a bound per column (shape (2,)) broadcasts like
    # numpy, a bound per flat feature (shape (4,)) is read in row-major order
    images, net = X.reshape(40, 1, 2, 2), nn.Sequential(nn.Flatten(), Wavy())
    full = np.array([[[1.0, 0.9], [1.0, 0.9]]])

    def attacked(clip_max, clip_min=0.0):
        attack = FGSMAttack(net, eps=0.2, clip_min=clip_min, clip_max=clip_max)
        return attack.fit(np.minimum(images, 0.9)).transform(np.minimum(images, 0.9))

    expected = attacked(full)
    assert expected.max() == pytest.approx(1.0) and expected[..., 1].max() <= 0.9
    np.testing.assert_array_equal(attacked(np.array([1.0, 0.9])), expected)
    np.testing.assert_array_equal(attacked(full.ravel()), expected)
    message = (
        r"^clip_min and clip_max must be scalars, arrays of one value per feature "
        r"\(shape \(4,\)\) or broadcastable to one sample's shape \(1, 2, 2\); "
        r"got shapes \(5,\) and \(3,\)\.$"
    )
    with pytest.raises(ValueError, match=message):
        attacked(np.ones(3), clip_min=np.zeros(5))


def test_integer_bounds_are_read_as_values_not_in_their_dtype(X):
    # int8 bounds: the box's width 200 overflows int8 (to -56), which made every
    # budget look wider than the box
    attack = FGSMAttack(Wavy(), eps=0.1, clip_min=np.int8(-100), clip_max=np.int8(100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X_adv = attack.fit(X).transform(X)
    expected = FGSMAttack(Wavy(), eps=0.1, clip_min=-100.0, clip_max=100.0)
    np.testing.assert_array_equal(X_adv, expected.fit(X).transform(X))


def test_inputs_on_the_box_edges_within_rounding_are_accepted(X):
    edge = X.copy()
    edge[0, :2] = [0.0, 1.0]
    edge[1, :2] = [-1e-7, 1 + 1e-7]  # float rounding of values on the edges
    X_adv = BIMAttack(Wavy(), eps=0.1, step=0.05, n_iter=3).fit(X).transform(edge)
    assert X_adv.min() >= 0.0 and X_adv.max() <= 1.0


@pytest.mark.parametrize(
    ("clip_min", "clip_max"),
    [(0.5, 0.5), (0.0, np.array([1.0, 1.0, 0.0, 1.0])), (1.0, 0.0)],
)
def test_an_empty_box_is_rejected(X, clip_min, clip_max):
    attack = FGSMAttack(Wavy(), clip_min=clip_min, clip_max=clip_max)
    with pytest.raises(ValueError, match="clip_min must be smaller than clip_max"):
        attack.fit(X).transform(np.full_like(X, 0.5))


# -- random start, dtype, progress ------------------------------------------------


class Flat(nn.Module):
    """Logits that do not depend on x: the gradient is zero, sign(0) = 0."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.tensor([0.0, 1.0, 2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.0 * x.sum(dim=1, keepdim=True) + self.b


def test_random_start_is_uniform_on_the_eps_ball():
    X = np.full((500, 4), 0.5, dtype=np.float32)
    eps = 0.1
    X_adv = BIMAttack(
        Flat(), eps=eps, step=0.05, n_iter=3, random_start=True, random_state=0
    ).fit(X)
    with pytest.warns(UserWarning, match="zero gradient"):
        delta = X_adv.transform(X) - X  # no gradient: only the random start moves x
    assert np.abs(delta).max() <= eps + 1e-6
    assert delta.min() < -0.95 * eps and delta.max() > 0.95 * eps
    assert abs(delta.mean()) < 0.01
    assert np.mean(np.abs(delta) < eps / 2) == pytest.approx(0.5, abs=0.05)
    # without a random start nothing moves
    with pytest.warns(UserWarning, match="zero gradient"):
        plain = BIMAttack(Flat(), eps=eps, step=0.05, n_iter=3).fit(X).transform(X)
    np.testing.assert_array_equal(plain, X)


def test_integer_inputs_give_float32_and_floats_keep_their_dtype(X):
    attack = FGSMAttack(Wavy(), eps=0.1).fit(X)
    assert attack.transform(np.round(X).astype(np.int64)).dtype == np.float32
    assert attack.transform(X.astype(np.float64)).dtype == np.float64
    assert attack.transform(X).dtype == np.float32
    half = attack.transform(X.astype(np.float16))
    assert half.dtype == np.float16 and np.abs(half - X).max() <= 0.1 + 1e-3


def test_progress_bar_only_when_verbose(X, capsys):
    FGSMAttack(Wavy(), eps=0.1, batch_size=10).fit(X).transform(X)
    assert capsys.readouterr().err == ""
    FGSMAttack(Wavy(), eps=0.1, batch_size=10, verbose=1).fit(X).transform(X)
    assert "FGSMAttack" in capsys.readouterr().err


def test_defaults_are_the_papers():
    # BIM on MNIST (Kurakin et al.; AdvKNN's settings): eps 0.25, step 0.01, 100
    # steps; inputs in [0, 1]
    expected = dict(eps=0.25, clip_min=0.0, clip_max=1.0, batch_size=256)
    bim = BIMAttack(Wavy()).get_params()
    assert {k: bim[k] for k in expected} == expected
    assert bim["step"] == 0.01 and bim["n_iter"] == 100 and not bim["random_start"]
    fgsm = FGSMAttack(Wavy()).get_params()
    assert {k: fgsm[k] for k in expected} == expected
    # quiet, on the network's device, unseeded, one run
    quiet = dict(device=None, random_state=None, verbose=0)
    assert {k: bim[k] for k in quiet} == quiet and bim["n_restarts"] == 1
    assert {k: fgsm[k] for k in quiet} == quiet


class Valley(nn.Module):
    """Two logits ``[s(x), 0]`` with ``s(x) = sum((x - centre)^2)``: against label 1
    the loss log(1 + e^s) grows with ``s``, so its gradient sign is that of
    ``x - centre``."""

    def __init__(self, centre: float):
        super().__init__()
        self.centre = centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = ((x - self.centre) ** 2).sum(dim=1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_random_start_is_clipped_to_the_box_before_the_first_gradient(edge):
    """Inputs on a box edge with eps 0.2: about 40 % of the random starts fall
    outside the box. The valley's centre lies 0.05 outside that edge, so from every
    start inside the box the first step points inwards (by ``step``); a start left
    outside the box, past the centre, would step outwards and be clipped back onto
    the edge."""
    inward = 1.0 if edge == 0.0 else -1.0
    X = np.full((200, 4), edge, dtype=np.float32)
    eps, step = 0.2, 0.05
    attack = BIMAttack(
        Valley(edge - 0.05 * inward),
        eps=eps,
        step=step,
        n_iter=1,
        random_start=True,
        random_state=0,
    ).fit(X)
    moved = inward * (attack.generate(X, np.ones(len(X), dtype=np.int64)) - X)
    assert moved.min() >= step - 1e-6  # every coordinate stepped inwards
    assert moved.max() <= eps + 1e-6
    # the random starts spread over the ball's half inside the box
    assert np.unique(moved).size > 100


def test_saturated_rows_keep_their_gradient_whatever_the_batch_size():
    """Each row's gradient is that of its own loss (a summed, not averaged, batch
    loss): a softmax saturated to a subnormal 3.7e-44 still gives a sign, which
    dividing by a batch of 256 would round to exactly zero."""
    net = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[50.0], [-50.0]]))  # margin 100 at x = 1
    X = np.ones((256, 1), dtype=np.float32)
    attack = FGSMAttack(net, eps=0.25, batch_size=256).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-gradient warning
        X_adv = attack.transform(X)
    assert attack.n_zero_gradient_ == 0
    np.testing.assert_array_equal(X_adv, np.full_like(X, 0.75))


def test_a_network_of_two_dimensional_samples_is_attacked_in_both_layouts():
    # A Conv1d network takes samples (channels, length): input_shape=(4, 4).
    # Before, a 3-D X (n, 4, 4) was read as one-channel images (1, 4, 4): predict
    # refused it, and every attack failed even on flat rows ("X holds images of
    # shape (1, 4, 4), but this DeepKNNClassifier was fitted on images of shape
    # (4, 4)"). Per-feature bounds of 16 values fit the (4, 4) samples.
    from skdknn import DeepKNNClassifier

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.random((60, 16), dtype=np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    net = nn.Sequential(nn.Conv1d(4, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(9, 2))
    clf = DeepKNNClassifier(
        net=net,
        input_shape=(4, 4),
        max_epochs=1,
        calibration_size=20,
        n_neighbors=5,
        random_state=0,
    ).fit(X, y)
    images = X.reshape(60, 4, 4)
    np.testing.assert_array_equal(clf.predict(images), clf.predict(X))
    low, high = np.full(16, 0.2), np.full(16, 0.8)
    for attack in (
        FGSMAttack(clf, eps=0.1, clip_min=low, clip_max=high),
        BIMAttack(clf, eps=0.1, clip_min=low, clip_max=high),
    ):
        X_in = np.clip(X, 0.2, 0.8)
        flat = attack.fit(X_in).transform(X_in)
        shaped = attack.fit(X_in.reshape(60, 4, 4)).transform(X_in.reshape(60, 4, 4))
        assert shaped.shape == (60, 4, 4)
        np.testing.assert_array_equal(shaped.reshape(60, 16), flat)
        assert flat.min() >= 0.2 and flat.max() <= 0.8
        assert np.abs(flat - X_in).max() <= 0.1 + 1e-6
        assert (flat != X_in).any()
