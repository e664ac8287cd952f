"""Attacks keep their promises exactly in the input's dtype (float64 and float32).

The gradient step runs in float32; the perturbation is then applied, projected onto
the eps-ball and clipped to the box in the input's own dtype, so that |x' - x| <= eps
and clip_min <= x' <= clip_max hold as real numbers, and coordinates the attack did
not move keep their exact bits.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn.attacks import AdvKNNAttack, BIMAttack, FGSMAttack, MeanAttack


def zero_column_net():
    """Linear logits that ignore feature 3: its gradient is exactly zero."""
    net = nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.copy_(
            torch.tensor(
                [[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 1.5, 0.0], [0.5, 0.5, -1, 0]]
            )
        )
        net.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    return net


def inside(lo, hi, dtype):
    """The box's bounds in ``dtype``, rounded inward where the cast went outward."""
    lo_d, hi_d = np.asarray(lo, dtype), np.asarray(hi, dtype)
    # compare in float64: a Python float next to a float32 array is cast to float32
    if lo_d < np.float64(lo):
        lo_d = np.nextafter(lo_d, dtype(np.inf))
    if hi_d > np.float64(hi):
        hi_d = np.nextafter(hi_d, dtype(-np.inf))
    return lo_d, hi_d


def inputs(dtype, lo=0.0, hi=1.0, n=500):
    """Values that do not survive a round trip through float32, and box edges."""
    rng = np.random.default_rng(0)
    lo_d, hi_d = inside(lo, hi, dtype)
    X = np.clip(rng.uniform(lo, hi, size=(n, 4)).astype(dtype), lo_d, hi_d)
    X[:5, :3] = lo_d
    X[5:10, :3] = hi_d
    return X


def exceeds(a, b, bound):
    """Entries where a - b > bound as real numbers, not as rounded floats.

    The difference is rounded to d; TwoSum (Knuth) recovers its exact error e, so
    a - b = d + e exactly, and it exceeds the float ``bound`` when d > bound, or
    d == bound and e > 0.
    """
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    d = a - b
    shift = d - a
    e = (a - (d - shift)) + (-b - shift)
    return np.flatnonzero((d > bound) | ((d == bound) & (e > 0))).tolist()


def assert_exact_promise(X, X_adv, eps, lo, hi):
    assert X_adv.dtype == X.dtype
    assert exceeds(X_adv, X, eps) == []
    assert exceeds(X, X_adv, eps) == []
    assert exceeds(lo, X_adv, 0) == []  # X_adv >= lo
    assert exceeds(X_adv, hi, 0) == []  # X_adv <= hi
    # the coordinate with zero gradient keeps its exact bits
    np.testing.assert_array_equal(X_adv[:, 3], X[:, 3])


ATTACKS = {
    "fgsm": lambda net, **kw: FGSMAttack(net, **kw),
    "bim": lambda net, **kw: BIMAttack(net, step=0.03, n_iter=7, **kw),
    "bim-random-start": lambda net, **kw: BIMAttack(
        net, step=0.03, n_iter=3, random_start=True, random_state=0, **kw
    ),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ATTACKS))
# float32(-0.3) < -0.3 and float32(0.3) > 0.3: a plain cast leaves the box
@pytest.mark.parametrize("box", [(0.0, 1.0), (-0.3, 0.3)])
def test_gradient_attacks_exact_in_the_input_dtype(name, dtype, box):
    lo, hi = box
    X = inputs(dtype, lo, hi)
    eps = 0.1
    attack = ATTACKS[name](zero_column_net(), eps=eps, clip_min=lo, clip_max=hi)
    X_adv = attack.fit(X).transform(X)
    if name == "bim-random-start":
        # a random start moves every coordinate: only the budget and the box hold
        X_adv[:, 3] = X[:, 3]
    assert_exact_promise(X, X_adv, eps, lo, hi)
    assert np.mean(np.abs(X_adv[:, :3] - X[:, :3]) > 0) > 0.5  # it does attack


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("box", [(0.0, 1.0), (-0.25, 0.5)])
def test_steps_past_a_representable_box_edge_land_on_it_exactly(dtype, box):
    """A bound the dtype holds exactly is itself the clip, not its neighbour one
    step inside (e.g. the smallest subnormal instead of 0)."""
    lo, hi = box
    net = nn.Linear(4, 2, bias=False)
    with torch.no_grad():  # the loss of class 0 falls, of class 1 rises, with x
        net.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
    X = np.array([[lo] * 4, [hi] * 4], dtype=dtype)
    X_adv = (
        FGSMAttack(net, eps=0.1, clip_min=lo, clip_max=hi)
        .fit(X)
        .generate(X, np.array([0, 1]))
    )
    assert X_adv.dtype == dtype
    np.testing.assert_array_equal(X_adv, X)  # pushed out of the box, clipped back


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unmoved_coordinates_keep_their_bits_negative_zero_included(dtype):
    """-0.0 + 0.0 is +0.0: a coordinate the attack did not move is the input's own
    value, not the input plus a zero step."""
    X = inputs(dtype, -0.3, 0.3)
    X[:, 3] = -0.0  # zero_column_net's gradient is 0 on column 3
    X_adv = FGSMAttack(zero_column_net(), eps=0.1, clip_min=-0.3, clip_max=0.3)
    X_adv = X_adv.fit(X).transform(X)
    assert np.all(np.signbit(X_adv[:, 3])) and np.all(X_adv[:, 3] == 0)
    assert np.mean(X_adv[:, :3] != X[:, :3]) > 0.5


def test_float64_result_is_the_float32_step_applied_to_the_float64_input():
    """The perturbation is computed in float32 as before; only where it lands moved."""
    X = inputs(np.float64)
    X_adv = FGSMAttack(zero_column_net(), eps=0.1).fit(X).transform(X)
    X32_adv = FGSMAttack(zero_column_net(), eps=0.1).fit(X).transform(X.astype("f4"))
    np.testing.assert_allclose(X_adv, X32_adv, rtol=0, atol=2e-7)


@pytest.fixture(scope="module")
def dknn_and_X():
    X, y = make_classification(
        n_samples=240, n_features=4, n_redundant=0, random_state=0
    )
    X = (X - X.min()) / (X.max() - X.min())
    dknn = DeepKNNClassifier(
        n_neighbors=5, calibration_size=40, max_epochs=3, batch_size=64, random_state=0
    ).fit(X, y)
    return dknn, X


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", ["fgsm", "bim"])
def test_advknn_exact_in_the_input_dtype(dknn_and_X, dtype, method):
    dknn, X = dknn_and_X
    X = X.astype(dtype)
    attack = AdvKNNAttack(
        dknn,
        method=method,
        eps=0.05,
        step=0.02,
        n_iter=4,
        head_epochs=2,
        random_state=0,
    ).fit(X)
    X_adv = attack.transform(X)
    assert X_adv.dtype == X.dtype
    assert exceeds(X_adv, X, 0.05) == [] and exceeds(X, X_adv, 0.05) == []
    assert X_adv.min() >= 0.0 and X_adv.max() <= 1.0


class AboveThreshold(ClassifierMixin, BaseEstimator):
    """Class 1 when feature 0 exceeds 0.28: above class 1's mean of that feature."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X):
        return (np.asarray(X)[:, 0] > 0.28).astype(int)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mean_attack_exact_box_in_the_input_dtype(dtype):
    lo, hi = -0.3, 0.3
    X = inputs(dtype, lo, hi, n=200)
    y = (X[:, 0] > 0.2).astype(int)
    X[y == 1, 1] = inside(lo, hi, dtype)[1]  # class 1's mean sits on the box's edge
    model = AboveThreshold().fit(X, y)
    # past the class mean (max_scale > 1), feature 1 runs into the box
    attack = MeanAttack(model, max_scale=3.0, clip_min=lo, clip_max=hi).fit(X, y)
    X_adv = attack.transform(X)
    assert X_adv.dtype == X.dtype
    assert exceeds(lo, X_adv, 0) == [] and exceeds(X_adv, hi, 0) == []
    flipped = model.predict(X_adv) != model.predict(X)
    assert flipped.mean() > 0.5
    np.testing.assert_array_equal(X_adv[~flipped], X[~flipped])


# -- the exact comparison behind the box and ball checks ------------------------------


@given(
    a=st.floats(-1e3, 1e3, allow_nan=False, width=64),
    b=st.floats(-1e3, 1e3, allow_nan=False, width=64),
    scale=st.sampled_from([1.0, 2.0**-30, 2.0**-60]),
    which=st.sampled_from([-1, 0, 1]),
)
@settings(max_examples=300, deadline=None)
def test_exceeds_is_the_exact_comparison_of_the_real_difference(a, b, scale, which):
    """``_exceeds(a, b, bound)`` is ``a - b > bound`` on the real numbers: checked
    with exact rational arithmetic, at the rounded difference itself and its two
    float neighbours (where the rounding error decides), with ``b`` scaled down so
    that the difference rounds (TwoSum's error term is not 0)."""
    from skdknn.attacks._base import _exceeds  # the private helper under test

    b *= scale
    bound = float(np.float64(a) - np.float64(b))
    if which:
        bound = float(np.nextafter(bound, which * np.inf))
    exact = Fraction(a) - Fraction(b) > Fraction(bound)
    assert bool(_exceeds(np.array([a]), np.array([b]), bound)[0]) is exact


@pytest.mark.parametrize(
    "a, b, bound, expected",
    [
        (1.0, 2.0**-60, 1.0, False),  # rounds to 1.0, really just below it
        (1.0, -(2.0**-60), 1.0, True),  # rounds to 1.0, really just above it
        (2.0**-60, -1.0, 1.0, True),  # the error sits in a, not b
        (-(2.0**-60), -1.0, 1.0, False),
        (3.0, 1.0, 2.0, False),  # exact ties are not "greater"
    ],
)
def test_exceeds_pinned_ties(a, b, bound, expected):
    from skdknn.attacks._base import _exceeds

    assert bool(_exceeds(np.array([a]), np.array([b]), bound)[0]) is expected


@pytest.mark.parametrize("make", [FGSMAttack, MeanAttack])
def test_torch_tensors_and_lists_are_inputs_like_arrays(make):
    X = inputs(np.float32, n=60)
    y = np.arange(60) % 3
    model = (
        zero_column_net()
        if make is FGSMAttack
        else KNeighborsClassifier(n_neighbors=3).fit(X, y)
    )
    attack = (make(model, eps=0.1) if make is FGSMAttack else make(model)).fit(X, y)
    expected = attack.transform(X)
    from_torch = attack.transform(torch.from_numpy(X))
    assert isinstance(from_torch, np.ndarray) and from_torch.dtype == np.float32
    np.testing.assert_array_equal(from_torch, expected)
    # a list holds Python floats: float64, the float32 values exactly
    from_list = attack.transform(X.tolist())
    assert from_list.dtype == np.float64
    np.testing.assert_array_equal(from_list, attack.transform(X.astype(np.float64)))
