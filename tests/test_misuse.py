"""Silent misuse made loud: each case is a user mistake that once gave a quiet wrong
answer or a confusing crash, and now gives a warning or a clear error."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from _helpers import half_dead_net
from _helpers import tiny as _tiny
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.neighbors import KNeighborsClassifier
from skorch import NeuralNetClassifier
from torch import nn

from skdknn.attacks import (
    AdvKNNAttack,
    BIMAttack,
    CarliniWagnerL2Attack,
    FGSMAttack,
    MeanAttack,
)
from skdknn.conformal import coverage_bound, prediction_sets
from skdknn.datasets import load_mnist
from skdknn.exceptions import InputRangeWarning, RetrainingWarning
from skdknn.nets import MLP


def tiny(**params):
    return _tiny(**{"max_epochs": 5, **params})


def flat_images_net(n_features, n_classes=10):
    """The cheapest image network: flatten, then one linear layer."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes))


@pytest.fixture(scope="module")
def tabular():
    X, y = make_classification(
        n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    return X, y


@pytest.fixture(scope="module")
def mnist():
    """400 real MNIST images (shuffled), pixels in [0, 1]."""
    X, y = load_mnist(return_X_y=True)
    rows = np.random.default_rng(0).permutation(len(y))[:400]
    return X[rows], y[rows]


@pytest.fixture(scope="module")
def image_model(mnist):
    X, y = mnist
    return tiny(net=flat_images_net(784), calibration_size=50).fit(X, y)


def every_method(clf, X):
    """Every public method of a fitted DkNN that takes X."""
    return {
        "predict": lambda: clf.predict(X),
        "predict_proba": lambda: clf.predict_proba(X),
        "p_values": lambda: clf.p_values(X),
        "credibility": lambda: clf.credibility(X),
        "confidence": lambda: clf.confidence(X),
        "predict_set": lambda: clf.predict_set(X, 0.1),
        "kneighbors": lambda: clf.kneighbors(X),
        "kneighbors_layer": lambda: clf.kneighbors(X, layer=clf.layers_[-1]),
        "neighbor_counts": lambda: clf.neighbor_counts(X),
    }


# -- inputs far outside the value range seen at fit ------------------------------------


def test_fit_records_the_value_range(image_model, tabular):
    np.testing.assert_array_equal(image_model.input_range_, [0.0, 1.0])
    X, y = tabular
    clf = tiny().fit(X, y)
    np.testing.assert_allclose(clf.input_range_, [X.min(), X.max()], rtol=1e-6)


def test_images_in_0_255_warn_in_every_method(image_model, mnist):
    X, y = mnist
    X255 = (X[:20] * 255).astype(np.uint8)
    for call in every_method(image_model, X255).values():
        with pytest.warns(InputRangeWarning, match=r"\[0, 255\].*\[0, 1\]"):
            call()
    with pytest.warns(InputRangeWarning, match="divided by 255"):
        image_model.score(X255, y[:20])


def test_inputs_within_the_range_do_not_warn(image_model, mnist, tabular):
    X, _ = mnist
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        # "far" means more than the fitted range's width outside it
        image_model.predict(X[:20])
        image_model.predict(np.clip(X[:20] * 1.9 - 0.4, -0.9, 1.9))
        # tabular data: new points a little beyond the training extremes are normal
        Xt, yt = tabular
        clf = tiny().fit(Xt[:200], yt[:200])
        clf.predict(Xt[200:] * 1.2)
    with pytest.warns(InputRangeWarning):
        image_model.predict(X[:20] - 2.5)  # far below


def test_attack_inputs_checked_against_the_attacked_dknn_range(image_model, mnist):
    X, _ = mnist
    attack = FGSMAttack(image_model, eps=8.0, clip_max=255.0)
    with pytest.warns(
        InputRangeWarning, match=r"\[0, 255\].*this attacked DkNN was fitted on"
    ):
        attack.fit(X[:20] * 255)


def small_conv_dknn(mnist):
    """A DkNN whose network needs images (a convolution): flat rows must be
    reshaped to (1, 28, 28) before they reach it."""
    X, y = mnist
    net = nn.Sequential(
        nn.Conv2d(1, 2, 5, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(128, 10)
    )
    return tiny(net=net, calibration_size=50).fit(X[:300], y[:300])


def test_attack_layouts_follow_the_attacked_dknn(mnist):
    X, _ = mnist
    dknn = small_conv_dknn(mnist)
    images, flat = X[300:340], X[300:340].reshape(40, -1)
    expected = FGSMAttack(dknn, eps=0.1).fit(images).transform(images)
    # fitted on flat rows of an image model: the attack still feeds it images
    attack = FGSMAttack(dknn, eps=0.1).fit(flat)
    assert attack.input_shape_ == (1, 28, 28)
    np.testing.assert_array_equal(attack.transform(flat), expected.reshape(40, -1))
    # images of another layout with the same number of values are refused, naming
    # the attack and both shapes (never reshaped silently)
    with pytest.raises(
        ValueError,
        match=r"images of shape \(1, 14, 56\), but this FGSMAttack was fitted on "
        r"images of shape \(1, 28, 28\)",
    ):
        attack.transform(images.reshape(40, 1, 14, 56))
    # at fit, the attacked DkNN's layout is the reference
    with pytest.raises(ValueError, match="single image.*attacked DkNN"):
        FGSMAttack(dknn, eps=0.1).fit(images[0, 0])  # (28, 28)
    with pytest.raises(
        ValueError,
        match=r"images of shape \(1, 14, 56\), but this attacked DkNN was fitted",
    ):
        FGSMAttack(dknn, eps=0.1).fit(images.reshape(40, 1, 14, 56))


def test_attack_on_a_flat_rows_dknn_names_the_width_it_expects(tabular):
    X, y = tabular
    X = (X - X.min()) / (X.max() - X.min())
    dknn = tiny().fit(X, y)
    with pytest.raises(
        ValueError,
        match=r"images of shape \(1, 2, 3\), but this attacked DkNN was fitted on "
        r"flat rows of 6 features",
    ):
        FGSMAttack(dknn, eps=0.1).fit(X.reshape(-1, 1, 2, 3))
    attack = FGSMAttack(dknn, eps=0.1).fit(X)
    with pytest.raises(
        ValueError, match="X has 5 features, but FGSMAttack is expecting 6"
    ):
        attack.transform(X[:, :5])
    # at transform, the attack's own layout (flat rows of 6) is the reference
    with pytest.raises(
        ValueError,
        match=r"images of shape \(1, 2, 3\), but this FGSMAttack was fitted on "
        r"flat rows of 6 features\.",
    ):
        attack.transform(X.reshape(-1, 1, 2, 3))


def test_a_dknn_saved_before_the_value_range_existed_is_still_attacked(tabular):
    # models pickled before input_range_ was recorded skip the range check (in
    # the classifier and in the attacks alike) instead of failing
    X, y = tabular
    X = (X - X.min()) / (X.max() - X.min())
    dknn = tiny().fit(X, y)
    expected = FGSMAttack(dknn, eps=0.1).fit(X).transform(X)
    old = copy.deepcopy(dknn)
    del old.input_range_
    np.testing.assert_array_equal(
        FGSMAttack(old, eps=0.1).fit(X).transform(X), expected
    )
    np.testing.assert_array_equal(old.predict(X * 255), dknn.predict(X * 255))


# -- a trained network passed without FrozenEstimator ----------------------------------


def test_fitted_skorch_net_without_frozen_estimator_warns(tabular):
    X, y = tabular
    X = X.astype(np.float32)
    net = NeuralNetClassifier(
        MLP,
        module__n_features=6,
        module__n_classes=3,
        criterion=nn.CrossEntropyLoss,
        max_epochs=2,
        train_split=None,
        verbose=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetrainingWarning)
        tiny(net=net).fit(X, y)  # unfitted: training it is what the user asks
    net.fit(X, y)
    with pytest.warns(RetrainingWarning, match="FrozenEstimator"):
        tiny(net=net).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetrainingWarning)
        tiny(net=FrozenEstimator(net)).fit(X, y)


def test_trained_torch_module_without_frozen_estimator_warns(tabular):
    X, y = tabular
    X = X.astype(np.float32)
    fresh = MLP(n_features=6, n_classes=3, hidden_layer_sizes=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetrainingWarning)
        tiny(net=fresh).fit(X, y)
    # a training loop leaves gradients on the parameters
    trained = MLP(n_features=6, n_classes=3, hidden_layer_sizes=(8,))
    loss = nn.functional.cross_entropy(trained(torch.from_numpy(X)), torch.tensor(y))
    loss.backward()
    with pytest.warns(RetrainingWarning, match="fine-tun.*FrozenEstimator"):
        tiny(net=trained).fit(X, y)
    # a module put in eval mode was prepared for inference
    evaluated = MLP(n_features=6, n_classes=3, hidden_layer_sizes=(8,)).eval()
    with pytest.warns(RetrainingWarning, match="eval mode"):
        tiny(net=evaluated).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetrainingWarning)
        tiny(net=FrozenEstimator(evaluated)).fit(X, y)
        tiny(net=evaluated, max_epochs=0).fit(X, y)  # nothing is trained


# -- empty input -----------------------------------------------------------------------

EMPTY = r"Found array with 0 sample\(s\)"


def test_empty_input_gets_sklearns_message_for_images(image_model, mnist):
    X, y = mnist
    for call in every_method(image_model, X[:0]).values():
        with pytest.raises(ValueError, match=EMPTY):
            call()
    with pytest.raises(ValueError, match=EMPTY):
        image_model.score(X[:0], y[:0])
    with pytest.raises(ValueError, match=EMPTY):
        tiny().fit(X[:0], y[:0])
    with pytest.raises(ValueError, match=EMPTY):
        tiny().fit(X[:0, 0], y[:0])  # (n, H, W) images
    with pytest.raises(ValueError, match=EMPTY):
        FGSMAttack(image_model).fit(X[:0])
    attack = FGSMAttack(image_model).fit(X[:5])
    with pytest.raises(ValueError, match=EMPTY):
        attack.transform(X[:0])
    with pytest.raises(ValueError, match=EMPTY):
        MeanAttack(image_model).fit(X[:0], y[:0])


def test_empty_input_gets_sklearns_message_for_rows(tabular):
    X, y = tabular
    clf = tiny().fit(X, y)
    for call in every_method(clf, X[:0]).values():
        with pytest.raises(ValueError, match=EMPTY):
            call()


# -- image layouts ---------------------------------------------------------------------


def test_channels_last_images_at_fit_name_the_channel_order(mnist):
    X, y = mnist
    X_last = X.transpose(0, 2, 3, 1)  # (n, 28, 28, 1)
    for net in (None, flat_images_net(784)):
        with pytest.raises(
            ValueError, match=r"\(28, 28, 1\).*channels-last.*\(n, C, H, W\)"
        ):
            tiny(net=net).fit(X_last, y)
    rgb = np.zeros((40, 32, 32, 3), dtype=np.float32)
    with pytest.raises(
        ValueError, match=r"\(3, 32, 32\): pass np.moveaxis\(X, -1, 1\)"
    ):
        tiny().fit(rgb, np.arange(40) % 2)
    # a network that really takes channels-last input says so with input_shape
    clf = tiny(net=flat_images_net(784), input_shape=(28, 28, 1)).fit(X_last, y)
    assert clf.input_shape_ == (28, 28, 1)


def test_channels_last_images_at_predict_name_the_channel_order(image_model, mnist):
    X, _ = mnist
    with pytest.raises(ValueError, match=r"channels-last.*np.moveaxis\(X, -1, 1\)"):
        image_model.predict(X[:3].transpose(0, 2, 3, 1))
    # an attack must not read channels-last images as channels-first ones
    with pytest.raises(ValueError, match="channels-last"):
        FGSMAttack(image_model).fit(X[:3].transpose(0, 2, 3, 1))


def test_single_image_asks_for_the_batch_axis(image_model, mnist):
    X, _ = mnist
    with pytest.raises(ValueError, match=r"single image.*batch axis.*X\[None\]"):
        image_model.predict(X[0, 0])  # (28, 28)
    attack = FGSMAttack(image_model).fit(X[:5])
    with pytest.raises(ValueError, match="single image"):
        attack.transform(X[0, 0])
    rng = np.random.default_rng(0)
    rgb = rng.uniform(size=(120, 3, 8, 8)).astype(np.float32)
    clf = tiny(net=flat_images_net(192, 2), calibration_size=20).fit(
        rgb, np.arange(120) % 2
    )
    with pytest.raises(
        ValueError, match=r"X of shape \(3, 8, 8\) looks like a single image"
    ):
        clf.predict(rgb[0])


# -- n_neighbors against the class sizes -----------------------------------------------


def test_n_neighbors_above_the_smallest_indexed_class_warns(tabular):
    X, y = tabular
    rare = np.flatnonzero(y == 2)[:30]
    rows = np.concatenate([np.flatnonzero(y != 2), rare])
    # 30 samples of class 2, 5 of them held out for calibration: 25 indexed
    with pytest.warns(UserWarning, match="n_neighbors=26 exceeds the 25 indexed "):
        tiny(n_neighbors=26, calibration_size=15).fit(X[rows], y[rows])
    for k in (25, 10):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # the rare class also makes the data imbalanced: that warning is not
            # the one under test here
            warnings.filterwarnings("ignore", message="The classes are imbalanced")
            tiny(n_neighbors=k, calibration_size=15).fit(X[rows], y[rows])


# -- attack budgets against the box ----------------------------------------------------


def test_eps_or_step_larger_than_the_box_warns():
    X = np.random.default_rng(0).uniform(0, 1, size=(10, 4)).astype(np.float32)
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    with pytest.warns(UserWarning, match=r"eps=8.*clip box.*8/255"):
        FGSMAttack(net, eps=8).fit(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BIMAttack(net, eps=8, step=2, n_iter=1).fit(X)
    messages = sorted(str(w.message).split(" ")[0] for w in caught)
    assert messages == ["eps=8", "step=2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FGSMAttack(net, eps=8, clip_max=255.0).fit(X * 255)
        BIMAttack(net, eps=0.3, step=0.1, n_iter=2).fit(X).transform(X)
        # a per-feature box: budgets are compared with its widest side
        FGSMAttack(net, eps=1.5, clip_max=[1, 1, 1, 2]).fit(X)
        # a budget equal to the box's width does not exceed it; the width of a
        # box that does not start at 0 is hi - lo
        FGSMAttack(net, eps=1.0).fit(X)
        FGSMAttack(net, eps=0.9, clip_min=-0.5, clip_max=0.5).fit(X - 0.5)


# -- inputs whose gradient is exactly zero ---------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [
        FGSMAttack(half_dead_net(), eps=0.1),
        BIMAttack(half_dead_net(), eps=0.1, step=0.02, n_iter=5),
    ],
    ids=["fgsm", "bim"],
)
def test_zero_gradient_inputs_are_counted_and_reported(attack):
    X = np.random.default_rng(0).uniform(0.05, 0.95, size=(40, 4)).astype(np.float32)
    dead = X[:, 0] > 0.5
    attack.fit(X)
    with pytest.warns(UserWarning, match=rf"{dead.sum()} of 40 inputs.*zero gradient"):
        X_adv = attack.transform(X)
    assert attack.n_zero_gradient_ == dead.sum()
    np.testing.assert_array_equal(X_adv[dead], X[dead])
    assert np.all(np.any(X_adv[~dead] != X[~dead], axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attack.transform(X[~dead])
    assert attack.n_zero_gradient_ == 0


class _SubsetStepFGSM(FGSMAttack):
    """A step on every row, then a second step on a subset of the rows (as an
    attack that keeps stepping only the rows not yet fooled would)."""

    def _perturb(self, x, t, lo, hi, generator):
        x1 = super()._perturb(x, t, lo, hi, generator)
        rows = x1[:, 0] > 0.5  # the dead rows of half_dead_net
        moved = x1.clone()
        moved[rows, 0] = 0.1  # where the net is alive: a non-zero gradient
        moved[rows] = super()._perturb(moved[rows], t[rows], lo, hi, generator)
        return moved


def test_rows_with_a_gradient_at_a_later_subset_step_are_not_counted():
    """Rows of a subset step no longer line up with the batch's rows: the count
    must not report rows whose gradient was non-zero at that step."""
    X = np.random.default_rng(0).uniform(0.05, 0.95, size=(40, 4)).astype(np.float32)
    attack = _SubsetStepFGSM(half_dead_net(), eps=0.1).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attack.transform(X)
    assert attack.n_zero_gradient_ == 0


def test_zero_gradient_is_counted_through_advknn_heads(tabular):
    X, y = tabular
    X = (X - X.min()) / (X.max() - X.min())
    dknn = tiny().fit(X, y)
    attack = AdvKNNAttack(dknn, layer="relu2", eps=0.05, head_epochs=2, random_state=0)
    attack.fit(X)
    with torch.no_grad():
        for p in attack.heads_.parameters():
            p.zero_()  # a constant head: the loss has no gradient anywhere
    with pytest.warns(UserWarning, match="30 of 30 inputs"):
        X_adv = attack.transform(X[:30])
    assert attack.n_zero_gradient_ == 30
    np.testing.assert_array_equal(X_adv, X[:30])


def test_mean_attack_and_knn_still_quiet():
    """Estimators without a recorded range (e.g. scikit-learn's) are left alone."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (40, 4))
    y = (X[:, 0] > 0.5).astype(int)
    knn = KNeighborsClassifier(n_neighbors=1).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MeanAttack(knn).fit(X, y).transform(X)


@pytest.mark.parametrize(
    "bounds", [(np.nan, 1.0), (0.0, np.nan), ([0.0, np.nan, 0, 0], 1.0)]
)
def test_nan_clip_bounds_are_refused(bounds):
    # before: accepted, and every adversarial coordinate came back NaN
    X = np.random.default_rng(0).uniform(0, 1, size=(10, 4)).astype(np.float32)
    torch.manual_seed(0)
    clip_min, clip_max = bounds
    with pytest.raises(ValueError, match="not NaN"):
        FGSMAttack(nn.Linear(4, 3), eps=0.1, clip_min=clip_min, clip_max=clip_max).fit(
            X
        )
    with pytest.raises(ValueError, match="not NaN"):
        y = np.arange(10) % 2
        knn = KNeighborsClassifier(n_neighbors=1).fit(X, y)
        MeanAttack(knn, clip_min=clip_min, clip_max=clip_max).fit(X, y)


def _linear_net_and_data():
    torch.manual_seed(0)
    X = np.random.default_rng(0).uniform(0.2, 0.8, size=(20, 4)).astype(np.float32)
    return nn.Linear(4, 3), X


@pytest.mark.parametrize("labels", [7, -1])
def test_mean_attack_refuses_labels_that_are_not_classes(labels):
    # before: MeanAttack moved every input toward the nearest class mean for a
    # label the model does not have, silently
    _, X = _linear_net_and_data()
    y = (X[:, 0] > 0.5).astype(int)
    knn = KNeighborsClassifier(n_neighbors=1).fit(X, y)
    attack = MeanAttack(knn).fit(X, y)
    with pytest.raises(ValueError, match=rf"Labels \[{labels}\] are not classes"):
        attack.generate(X, np.full(len(X), labels))
    with pytest.raises(ValueError, match=rf"Labels \[{labels}\] are not classes"):
        MeanAttack(knn).fit(X, np.where(np.arange(len(X)) == 0, labels, y))


@pytest.mark.parametrize("attack_class", ["fgsm", "bim", "cw"])
@pytest.mark.parametrize("labels", [3, -1])
def test_gradient_attacks_refuse_output_indices_out_of_range(attack_class, labels):
    # before: a raw IndexError / RuntimeError from torch's gather
    net, X = _linear_net_and_data()
    attack = {
        "fgsm": FGSMAttack(net, eps=0.1),
        "bim": BIMAttack(net, eps=0.1, step=0.05, n_iter=2),
        "cw": CarliniWagnerL2Attack(net, n_iter=2),
    }[attack_class].fit(X)
    with pytest.raises(ValueError, match=r"not classes.*3 outputs.*\[0, 2\]"):
        attack.generate(X, np.full(len(X), labels))
    attack.generate(X, np.full(len(X), 2))  # the last output is fine


def test_mean_attack_labels_of_another_length():
    # before: a raw IndexError (boolean index did not match)
    _, X = _linear_net_and_data()
    y = (X[:, 0] > 0.5).astype(int)
    knn = KNeighborsClassifier(n_neighbors=1).fit(X, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MeanAttack(knn).fit(X, y[:10])
    attack = MeanAttack(knn).fit(X, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        attack.generate(X[:5], [0, 1])
    with pytest.raises(ValueError, match="1d array"):
        attack.generate(X[:5], np.zeros((5, 2), dtype=int))


@pytest.fixture(scope="module")
def unit_tabular(tabular):
    """The tabular data scaled into [0, 1] (the attacks' default box) and a DkNN."""
    X, y = tabular
    X = (X - X.min()) / (X.max() - X.min())
    return tiny().fit(X, y), X, y


@pytest.mark.parametrize("fraction, n_rows", [(0.999, 50), (0.99, 20), (0.1, 4)])
def test_advknn_validation_fraction_must_leave_rows(unit_tabular, fraction, n_rows):
    # before: ZeroDivisionError while training the heads on 0 rows (or no
    # validation row although validation_fraction > 0)
    dknn, X, _ = unit_tabular
    attack = AdvKNNAttack(
        dknn, layer="relu2", head_epochs=1, validation_fraction=fraction
    )
    with pytest.raises(ValueError, match=r"validation_fraction=.*at least 1 training"):
        attack.fit(X[:n_rows])
    assert not hasattr(attack, "heads_")


@pytest.mark.parametrize("k", [-1, 0, 2.0, True, np.True_, "3"])
def test_kneighbors_n_neighbors_is_checked_on_every_path(unit_tabular, k):
    # before: with X given, -1 gave numpy's "negative dimensions", 2.0 a
    # TypeError and True was taken as 1
    dknn, X, _ = unit_tabular
    calls = {
        "X=None": lambda: dknn.kneighbors(None, n_neighbors=k),
        "X": lambda: dknn.kneighbors(X[:3], n_neighbors=k),
        "X, layer": lambda: dknn.kneighbors(X[:3], n_neighbors=k, layer="relu2"),
        "backend": lambda: dknn.backends_[0].kneighbors(None, k),
    }
    for call in calls.values():
        with pytest.raises(ValueError, match="n_neighbors must be a positive integer"):
            call()
    assert dknn.kneighbors(X[:3], n_neighbors=np.int64(2))[1].shape == (3, 3, 2)


@pytest.mark.parametrize(
    "significance",
    ["0.1", np.array([0.1, 0.2]), np.array(0.1), True, None, np.nan, -0.1, 1.5],
)
def test_significance_must_be_a_real_number_in_0_1(unit_tabular, significance):
    # before: "0.1" gave numpy's UFuncTypeError, an array a TypeError, True was
    # taken as 1 (0 and 1 themselves stay valid: test_conformal)
    dknn, X, _ = unit_tabular
    p = dknn.p_values(X[:3])
    for call in (
        lambda: dknn.predict_set(X[:3], significance),
        lambda: prediction_sets(p, significance),
        lambda: coverage_bound(significance, 100),
    ):
        with pytest.raises(
            ValueError, match=r"significance must be a real number in \[0, 1\]"
        ):
            call()
    assert dknn.predict_set(X[:3], np.float32(0.25)).shape == (3, len(dknn.classes_))


def test_a_frozen_net_frozen_again_is_used_as_it_is(tabular):
    # a DkNN fitted on FrozenEstimator(net) keeps net_ frozen; the docs' pattern
    # FrozenEstimator(clf.net_) then wraps it twice, which used to be refused with
    # "... wrapped in FrozenEstimator; got FrozenEstimator."
    X, y = tabular
    X = X.astype(np.float32)
    first = tiny().fit(X, y)
    second = tiny(net=FrozenEstimator(first.net_)).fit(X, y)
    assert isinstance(second.net_, FrozenEstimator)
    third = tiny(net=FrozenEstimator(second.net_)).fit(X, y)
    np.testing.assert_array_equal(third.p_values(X), second.p_values(X))
    np.testing.assert_array_equal(third.p_values(X), first.p_values(X))
    # attacks and metrics unwrap nested wrappers the same way
    nested = FrozenEstimator(FrozenEstimator(third))
    box = {"eps": 0.1, "clip_min": -np.inf, "clip_max": np.inf}
    np.testing.assert_array_equal(
        FGSMAttack(nested, **box).fit(X).transform(X),
        FGSMAttack(third, **box).fit(X).transform(X),
    )
