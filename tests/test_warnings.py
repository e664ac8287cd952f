"""Every warning skdknn emits names the user's line and has a filterable category.

Each case calls one public entry point from this file (directly, through
scikit-learn's ``fit_transform`` / ``set_output`` wrapper, a ``Pipeline``, or a
loader) and checks the warning's exact category, that its ``filename`` is this
file (the line that made the call), and, for the attacks' warnings, its whole
text. A hard-coded ``stacklevel`` is right for one path only: ``transform`` (which
calls ``generate``) used to point into skdknn/attacks/_base.py.
"""

from __future__ import annotations

import os
import pickle
import warnings
from copy import deepcopy

import joblib
import numpy as np
import pytest
import torch
from _helpers import half_dead_net, tiny
from sklearn.datasets import make_classification
from sklearn.pipeline import make_pipeline
from torch import nn

from skdknn.attacks import AdvKNNAttack, BIMAttack, CarliniWagnerL2Attack, FGSMAttack
from skdknn.exceptions import (
    AttackBudgetWarning,
    InconsistentVersionWarning,
    InputRangeWarning,
    RetrainingWarning,
    ZeroGradientWarning,
)
from skdknn.nets import MLP

# mutmut's trampolines add frames of mutmut between the user's call and skdknn
UNDER_MUTMUT = "MUTANT_UNDER_TEST" in os.environ


def warnings_of(call, category, startswith=""):
    """The warnings of ``category`` (exactly) whose text starts with ``startswith``
    that ``call()`` emits: at least one, each at this file's line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    found = [
        w
        for w in caught
        if w.category is category and str(w.message).startswith(startswith)
    ]
    assert found, [(w.category, str(w.message)) for w in caught]
    if not UNDER_MUTMUT:
        assert [(w.filename, w.lineno) for w in found] == [
            (__file__, w.lineno) for w in found
        ]
    return found


def the_warning(call, category, startswith=""):
    """The one warning of ``category`` (exactly) that ``call()`` emits."""
    (w,) = warnings_of(call, category, startswith)
    return w


# -- the attacks ---------------------------------------------------------------------


def dead_rows():
    """Inputs of half_dead_net, 40 rows; the rows with x[0] > 0.5 have no gradient."""
    X = np.random.default_rng(0).uniform(0.05, 0.95, size=(40, 4)).astype(np.float32)
    return X, int((X[:, 0] > 0.5).sum())


ZERO_GRADIENT_CALLS = {
    "transform": lambda a, X: a.fit(X).transform(X),
    "generate": lambda a, X: a.fit(X).generate(X),
    "generate_y": lambda a, X: a.fit(X).generate(X, np.zeros(len(X), int)),
    "fit_transform": lambda a, X: a.fit_transform(X),
    "pipeline_fit_transform": lambda a, X: make_pipeline(a).fit_transform(X),
    "pipeline_transform": lambda a, X: make_pipeline(a).fit(X).transform(X),
}
ZERO_GRADIENT_ATTACKS = {
    "fgsm": lambda: FGSMAttack(half_dead_net(), eps=0.1),
    "bim": lambda: BIMAttack(half_dead_net(), eps=0.1, step=0.02, n_iter=5),
}


@pytest.mark.parametrize("attack", ZERO_GRADIENT_ATTACKS)
@pytest.mark.parametrize("call", ZERO_GRADIENT_CALLS)
def test_zero_gradient_warning_says_what_happened(attack, call):
    X, dead = dead_rows()
    w = the_warning(
        lambda: ZERO_GRADIENT_CALLS[call](ZERO_GRADIENT_ATTACKS[attack](), X),
        ZeroGradientWarning,
    )
    assert str(w.message) == (
        f"{dead} of 40 inputs had an exactly zero gradient of the loss at every "
        "step (e.g. a softmax saturated in float32, or dead ReLUs): the attack "
        "could not move them, and they are returned where it started (unchanged "
        "without a random start). See n_zero_gradient_."
    )


def budget_message(name, value):
    return (
        f"{name}={value} exceeds the clip box [clip_min, clip_max] (its widest side "
        "is 1), so it does not limit the attack. For pixels in [0, 1], did you mean "
        f"{name}={value}/255? Otherwise set clip_min / clip_max to the inputs' range."
    )


BUDGET_CALLS = {
    "fit": lambda a, X: a.fit(X),
    "fit_transform": lambda a, X: a.fit_transform(X),
    "pipeline_fit": lambda a, X: make_pipeline(a).fit(X),
    "pipeline_fit_transform": lambda a, X: make_pipeline(a).fit_transform(X),
}


@pytest.mark.parametrize("call", BUDGET_CALLS)
def test_a_budget_wider_than_the_box_warns_at_the_users_line(call):
    X = np.random.default_rng(0).uniform(0, 1, size=(10, 4)).astype(np.float32)
    torch.manual_seed(0)
    w = the_warning(
        lambda: BUDGET_CALLS[call](FGSMAttack(nn.Linear(4, 3), eps=8), X),
        AttackBudgetWarning,
    )
    assert str(w.message) == budget_message("eps", 8)


def test_a_step_wider_than_the_box_warns_too():
    X = np.random.default_rng(0).uniform(0, 1, size=(10, 4)).astype(np.float32)
    attack = BIMAttack(nn.Linear(4, 3), eps=8, step=2, n_iter=1)
    found = warnings_of(lambda: attack.fit(X), AttackBudgetWarning)
    assert [str(w.message) for w in found] == [
        budget_message("eps", 8),
        budget_message("step", 2),
    ]


# the Carlini-Wagner box: inputs within 0.75 of 0 (spread from 0: 0.75), box to 1e30
WIDE_BOX = (
    "The clip box reaches 1e+30, 1.33e+30 times the inputs' scale (values within "
    "0.75 of 0, spread 0.75). The Carlini-Wagner attack optimises in tanh space, "
    "x' = mid + half * tanh(w): its steps move x' by about learning_rate * "
    "half-width, so the perturbations it finds grow with the box, and float32 "
    "resolves x' only to about the box's size * 6e-8 (inputs may not move at all). "
    "Set clip_min and clip_max to the inputs' valid range."
)
CW_CALLS = {
    "transform": lambda a, X: a.fit(X).transform(X),
    "generate": lambda a, X: a.fit(X).generate(X, np.zeros(len(X), int)),
    "fit_transform": lambda a, X: a.fit_transform(X),
    "pipeline_fit_transform": lambda a, X: make_pipeline(a).fit_transform(X),
}


@pytest.mark.parametrize("call", CW_CALLS)
def test_a_carlini_wagner_box_far_wider_than_the_inputs_warns(call):
    X = np.tile(np.float32([0.25, 0.75, 0.5, 0.5]), (6, 1))
    torch.manual_seed(0)
    attack = CarliniWagnerL2Attack(
        nn.Linear(4, 3),
        clip_min=-1e30,
        clip_max=1e30,
        n_iter=1,
        binary_search_steps=1,
    )
    w = the_warning(lambda: CW_CALLS[call](attack, X), AttackBudgetWarning)
    assert str(w.message) == WIDE_BOX


# -- the classifier and the attacks on it ---------------------------------------------


@pytest.fixture(scope="module")
def unit_data():
    """3 classes of tabular rows scaled to [0, 1]."""
    X, y = make_classification(
        n_samples=240, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    X = ((X - X.min()) / (X.max() - X.min())).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def dknn(unit_data):
    return tiny(max_epochs=2).fit(*unit_data)


@pytest.fixture(scope="module")
def dknn_pipeline(unit_data):
    return make_pipeline(tiny(max_epochs=2)).fit(*unit_data)


RANGE_CALLS = {
    "predict": lambda c, X: c.predict(X),
    "predict_proba": lambda c, X: c.predict_proba(X),
    "p_values": lambda c, X: c.p_values(X),
    "credibility": lambda c, X: c.credibility(X),
    "confidence": lambda c, X: c.confidence(X),
    "predict_with_credibility": lambda c, X: c.predict_with_credibility(X),
    "predict_set": lambda c, X: c.predict_set(X, 0.1),
    "kneighbors": lambda c, X: c.kneighbors(X),
    "neighbor_counts": lambda c, X: c.neighbor_counts(X),
    "score": lambda c, X: c.score(X, np.zeros(len(X), int)),
    "fgsm_fit": lambda c, X: FGSMAttack(c, eps=8, clip_max=255.0).fit(X),
    "fgsm_generate": lambda c, X: (
        FGSMAttack(c, eps=8, clip_max=255.0).fit(X / 255).generate(X)
    ),
    "fgsm_fit_transform": lambda c, X: FGSMAttack(
        c, eps=8, clip_max=255.0
    ).fit_transform(X),
}


@pytest.mark.parametrize("call", RANGE_CALLS)
def test_inputs_on_another_scale_warn_at_the_users_line(dknn, unit_data, call):
    X255 = unit_data[0][:8] * 255
    # fit_transform checks X at fit and at transform: two warnings
    warnings_of(lambda: RANGE_CALLS[call](dknn, X255), InputRangeWarning, "X has")


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score"])
def test_inputs_on_another_scale_through_a_pipeline(dknn_pipeline, unit_data, method):
    X255 = unit_data[0][:8] * 255
    call = RANGE_CALLS[method]
    the_warning(lambda: call(dknn_pipeline, X255), InputRangeWarning, "X has")


def rare_class(unit_data):
    """Class 2 cut to 30 rows: 25 indexed with calibration_size=15."""
    X, y = unit_data
    rows = np.concatenate([np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:30]])
    return X[rows], y[rows]


FIT_CALLS = {
    "fit": lambda c, X, y: c.fit(X, y),
    "pipeline_fit": lambda c, X, y: make_pipeline(c).fit(X, y),
}


@pytest.mark.parametrize("call", FIT_CALLS)
def test_fit_warnings_point_at_the_users_fit(unit_data, call):
    X, y = rare_class(unit_data)
    fit = FIT_CALLS[call]
    # a class with fewer indexed points than n_neighbors (and an imbalance)
    clf = tiny(max_epochs=1, n_neighbors=26, calibration_size=15)
    the_warning(
        lambda: fit(clf, X, y), UserWarning, "n_neighbors=26 exceeds the 25 indexed"
    )
    the_warning(
        lambda: fit(tiny(max_epochs=1, calibration_split="balanced"), X, y),
        UserWarning,
        "The classes are imbalanced",
    )
    # a class without a calibration point
    X3, y3 = make_classification(
        n_samples=400, n_features=8, n_classes=3, n_informative=4,
        weights=[0.6, 0.395, 0.005], random_state=0,
    )  # fmt: skip
    clf = tiny(
        max_epochs=1, n_neighbors=1, calibration_size=20, calibration_split="stratified"
    )
    the_warning(
        lambda: fit(clf, X3, y3),
        UserWarning,
        "calibration_split='stratified' gave no calibration point to 1 class(es)",
    )
    # a network that looks trained
    net = MLP(n_features=6, n_classes=3, hidden_layer_sizes=(8,)).eval()
    the_warning(lambda: fit(tiny(max_epochs=1, net=net), *unit_data), RetrainingWarning)


def test_budget_and_range_through_advknn(dknn, unit_data):
    X = unit_data[0][:20]
    attack = AdvKNNAttack(dknn, layer="relu2", eps=8, head_epochs=1, random_state=0)
    w = the_warning(lambda: attack.fit(X), AttackBudgetWarning)
    assert str(w.message) == budget_message("eps", 8)


def test_loading_a_model_of_another_version_warns_at_the_load(dknn, tmp_path):
    old = deepcopy(dknn)
    old.skdknn_version_ = "0.0.1"
    data = pickle.dumps(old)
    the_warning(lambda: pickle.loads(data), InconsistentVersionWarning)
    joblib.dump(old, tmp_path / "model.joblib")
    the_warning(
        lambda: joblib.load(tmp_path / "model.joblib"), InconsistentVersionWarning
    )
