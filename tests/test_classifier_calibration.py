"""DeepKNNClassifier's calibration_split, mondrian and p_value parameters: the wiring
of the pure functions (tested in test_conformal_forms.py), the imbalance warning,
persistence, and coverage on an imbalanced tabular data set."""

from __future__ import annotations

import os
import warnings

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_classification
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import InvalidParameterError

from skdknn import DeepKNNClassifier, conformal, load_model, save_model
from skdknn._calibration import balanced_calibration_split


def tiny(**params):
    defaults = dict(
        n_neighbors=10,
        calibration_size=100,
        max_epochs=5,
        batch_size=64,
        random_state=0,
    )
    return DeepKNNClassifier(**{**defaults, **params})


def imbalanced(n=600, seed=0):
    """90/10 tabular data."""
    return make_classification(
        n_samples=n, n_features=8, n_informative=4, weights=[0.9], random_state=seed
    )


def fit_quietly(clf, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return clf.fit(X, y)


@pytest.fixture(scope="module")
def data():
    return imbalanced()


@pytest.fixture(scope="module")
def balanced_fit(data):
    return fit_quietly(tiny(), *data)


def test_defaults_keep_the_papers_behaviour(data, balanced_fit):
    X, y = data
    params = DeepKNNClassifier().get_params()
    assert params["calibration_split"] == "balanced"
    assert params["mondrian"] is False
    assert params["p_value"] == "dknn"
    # the paper's split, drawn first from random_state as before
    _, rows = balanced_calibration_split(y, 100, np.random.RandomState(0))
    np.testing.assert_array_equal(balanced_fit.calibration_indices_, rows)
    # p-values: the share of all calibration scores >= alpha
    alpha = conformal.nonconformity(balanced_fit.neighbor_counts(X[:50]), 10)
    scores = balanced_fit.calibration_nonconformity_
    expected = (scores[None, None, :] >= alpha[..., None]).mean(axis=2)
    np.testing.assert_array_equal(balanced_fit.p_values(X[:50]), expected)


def test_calibration_labels_belong_to_their_scores(data, balanced_fit):
    X, y = data
    rows = balanced_fit.calibration_indices_
    assert np.all(np.diff(balanced_fit.calibration_nonconformity_) >= 0)
    # calibration points are not indexed: their counts now are those of fit
    alpha = conformal.nonconformity(balanced_fit.neighbor_counts(X[rows]), 10)
    own = alpha[np.arange(rows.size), y[rows]]
    pairs = sorted(zip(own.tolist(), y[rows].tolist(), strict=True))
    stored = sorted(
        zip(
            balanced_fit.calibration_nonconformity_.tolist(),
            balanced_fit.calibration_labels_.tolist(),
            strict=True,
        )
    )
    assert pairs == stored


def test_calibration_ties_keep_the_calibration_order():
    # calibration_nonconformity_ sorted, calibration_labels_ aligned with it, and
    # equal scores of different labels in the order of calibration_indices_ (a
    # stable sort: the same attributes on every machine)
    X, y = make_blobs(n_samples=300, centers=3, n_features=4, cluster_std=3.0,
                      random_state=0)  # fmt: skip
    clf = tiny(n_neighbors=5, calibration_size=60, max_epochs=1).fit(X, y)
    rows = clf.calibration_indices_
    alpha = conformal.nonconformity(clf.neighbor_counts(X[rows]), 5)
    own = alpha[np.arange(rows.size), y[rows]]
    order = np.argsort(own, kind="stable")
    # many ties across labels (else any sort would do)
    assert np.unique(y[rows][own == 0]).size == 3
    np.testing.assert_array_equal(clf.calibration_nonconformity_, own[order])
    np.testing.assert_array_equal(clf.calibration_labels_, y[rows][order])


def test_balanced_split_on_imbalanced_classes_warns_and_names_the_options(data):
    with pytest.warns(UserWarning, match="imbalanced") as record:
        tiny(max_epochs=1).fit(*data)
    message = str(record[0].message)
    assert "calibration_split='stratified'" in message
    assert "mondrian=True" in message
    assert "0.40" in message  # 90/10 calibrated 50/50


@pytest.mark.parametrize(
    "params", [{"calibration_split": "stratified"}, {"mondrian": True}]
)
def test_no_warning_when_coverage_is_taken_care_of(data, params):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny(max_epochs=1, **params).fit(*data)


@pytest.mark.parametrize("calibration_size", [100, 4])
def test_no_warning_on_balanced_classes(calibration_size):
    # 4 calibration points over 3 classes are 2/1/1: rounding, not imbalance
    X, y = make_classification(
        n_samples=300, n_features=8, n_informative=4, n_classes=3, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny(max_epochs=1, n_neighbors=3, calibration_size=calibration_size).fit(X, y)


def test_stratified_split_follows_the_class_frequencies(data):
    X, y = data
    clf = tiny(max_epochs=1, calibration_split="stratified").fit(X, y)
    calibration = np.bincount(y[clf.calibration_indices_])
    expected = np.bincount(y) / y.size * 100
    assert np.abs(calibration - expected).max() <= 1


def test_conformal_form_is_the_dknn_form_plus_one(data, balanced_fit):
    X, y = data
    conformal_fit = fit_quietly(tiny(p_value="conformal"), X, y)
    n = balanced_fit.calibration_nonconformity_.size
    np.testing.assert_allclose(
        conformal_fit.p_values(X[:50]),
        (balanced_fit.p_values(X[:50]) * n + 1) / (n + 1),
    )


def test_smoothed_p_values_are_seeded_and_below_the_conformal_ones(data):
    X, y = data
    a = fit_quietly(tiny(p_value="smoothed"), X, y)
    b = fit_quietly(tiny(p_value="smoothed"), X, y)
    c = fit_quietly(tiny(p_value="smoothed", random_state=1), X, y)
    upper = fit_quietly(tiny(p_value="conformal"), X, y).p_values(X[:80])
    p = a.p_values(X[:80])
    np.testing.assert_array_equal(p, a.p_values(X[:80]))  # the same on every call
    np.testing.assert_array_equal(p, b.p_values(X[:80]))  # and every fit
    assert not np.array_equal(c.p_values(X[:80]), p)
    assert np.all(p <= upper) and np.all(p > 0)
    assert np.any(p < upper)
    # one uniform per query and class: copies of one query get their own draws
    copies = a.p_values(np.repeat(X[:1], 6, axis=0))
    assert np.unique(copies[:, 0]).size == 6 and np.unique(copies[:, 1]).size == 6


def test_mondrian_p_values_use_each_class_scores_only(data):
    X, y = data
    clf = fit_quietly(tiny(mondrian=True), X, y)
    alpha = conformal.nonconformity(clf.neighbor_counts(X[:60]), 10)
    for j, label in enumerate(clf.classes_):
        own = clf.calibration_nonconformity_[clf.calibration_labels_ == label]
        expected = (own[None, :] >= alpha[:, j, None]).mean(axis=1)
        np.testing.assert_array_equal(clf.p_values(X[:60])[:, j], expected)


def test_mondrian_with_a_class_left_without_calibration_points_is_an_error():
    X, y = make_classification(
        n_samples=400, n_features=8, n_classes=3, n_informative=4,
        weights=[0.6, 0.395, 0.005], random_state=0,
    )  # fmt: skip
    assert np.bincount(y).tolist() == [238, 159, 3]  # 3 * 20 / 400 rounds to 0
    clf = tiny(
        max_epochs=1, calibration_size=20, calibration_split="stratified", mondrian=True
    )
    with pytest.raises(ValueError, match="class 2 has none"):
        clf.fit(X, y)


@pytest.mark.parametrize(
    "params",
    [{"calibration_split": "random"}, {"mondrian": "yes"}, {"p_value": "exact"}],
)
def test_invalid_parameters(data, params):
    with pytest.raises(InvalidParameterError):
        tiny(**params).fit(*data)


def test_persistence_keeps_the_p_value_form(data, tmp_path):
    X, y = data
    clf = fit_quietly(tiny(mondrian=True, p_value="smoothed"), X, y)
    expected = clf.p_values(X[:40])
    save_model(clf, tmp_path / "model")
    np.testing.assert_array_equal(
        load_model(tmp_path / "model").p_values(X[:40]), expected
    )
    joblib.dump(clf, tmp_path / "clf.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "clf.joblib").p_values(X[:40]), expected
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coverage_on_imbalanced_exchangeable_data(seed):
    # a fresh 90/10 data set per seed; the test rows are drawn like the training rows
    X, y = imbalanced(n=3000, seed=seed)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=1500, stratify=y, random_state=seed
    )
    eps, n_cal = 0.1, 300
    rows = np.arange(len(y_test))
    # one run's coverage has sd <= sqrt(eps (1 - eps) (1/n_cal + 1/n_test)) ~ 0.019
    slack = 4 * np.sqrt(eps * (1 - eps) * (1 / n_cal + 1 / len(y_test)))
    # Mondrian with the stratified split: a balanced split would hold out half of
    # the minority class, leaving this small model an index where the minority
    # never wins a vote (accuracy = the majority share) and sets of ~1.9 labels
    mondrian = {"calibration_split": "stratified", "mondrian": True}
    for params in ({"calibration_split": "stratified"}, mondrian):
        clf = tiny(
            calibration_size=n_cal, max_epochs=10, random_state=seed, **params
        ).fit(X_train, y_train)
        sets = clf.predict_set(X_test, significance=eps)
        covered = sets[rows, y_test]
        assert covered.mean() >= conformal.coverage_bound(eps, n_cal) - slack
        assert sets.sum(axis=1).mean() < 1.5  # informative sets
        if params.get("mondrian"):
            for label in clf.classes_:
                n_j = np.sum(clf.calibration_labels_ == label)
                in_class = covered[y_test == label]
                slack_j = 4 * np.sqrt(eps * (1 - eps) * (1 / n_j + 1 / in_class.size))
                bound = conformal.coverage_bound(eps, n_j) - slack_j
                assert in_class.mean() >= bound, (label, in_class.mean())


# -- the wiring's messages and edges, each checked in full ----------------------------
def test_imbalance_warning_in_full_and_at_the_callers_line():
    y = np.repeat([0, 1], [300, 100])
    X = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32) + y[:, None]
    with pytest.warns(UserWarning) as record:
        tiny(max_epochs=1, calibration_size=40).fit(X, y)
    (warning,) = [w for w in record if "imbalanced" in str(w.message)]
    assert str(warning.message) == (
        "The classes are imbalanced (frequencies from 25.0% to 75.0%) but "
        "calibration_split='balanced' calibrates on equal counts per class: on data "
        "distributed like y, the coverage of the prediction sets can miss its "
        "guarantee by up to 0.25. Use calibration_split='stratified' (coverage over "
        "all data) or mondrian=True (coverage within each class)."
    )
    # points at the user's fit call (not checkable under mutmut, whose trampolines
    # add stack frames between fit and the warning)
    if "MUTANT_UNDER_TEST" not in os.environ:
        assert warning.filename == __file__


def test_imbalance_at_the_threshold_does_not_warn():
    # 55 / 45: class_imbalance is exactly IMBALANCE_THRESHOLD = 0.05
    y = np.repeat([0, 1], [220, 180])
    X = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32) + y[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny(max_epochs=1, calibration_size=40).fit(X, y)


def test_a_class_without_calibration_points_needs_mondrian_to_fail():
    X, y = make_classification(
        n_samples=400, n_features=8, n_classes=3, n_informative=4,
        weights=[0.6, 0.395, 0.005], random_state=0,
    )  # fmt: skip
    params = dict(max_epochs=1, calibration_size=20, calibration_split="stratified")
    with pytest.raises(ValueError) as info:
        tiny(mondrian=True, **params).fit(X, y)
    assert str(info.value) == (
        "mondrian=True needs calibration points of every class, but class 2 has "
        "none: its share of calibration_size=20 rounds to zero with "
        "calibration_split='stratified'. Raise calibration_size or use "
        "calibration_split='balanced'."
    )
    # without mondrian, a class without calibration points is allowed
    clf = fit_quietly(tiny(mondrian=False, **params), X, y)  # class 2: 3 indexed
    assert 2 not in y[clf.calibration_indices_]
    assert clf.calibration_nonconformity_.size == 20


@pytest.mark.parametrize("label", ["cat", 3])
def test_single_class_error_in_full(label):
    # the label as the user wrote it ('cat', not np.str_('cat'))
    X = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(ValueError) as info:
        tiny().fit(X, np.full(50, label))
    assert str(info.value) == (
        "DeepKNNClassifier needs samples of at least 2 classes; got 1 class "
        f"({label!r})."
    )
