"""Calibration: the class-balanced split over seeds, the scores of the held-out
rows, the default significance, and AdvKNN's leave-one-out.

Each test checks values that a wrong implementation changes (recomputed from the
public outputs), not only shapes or ranges.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from _helpers import tiny
from sklearn.datasets import make_classification

from skdknn import conformal
from skdknn._calibration import balanced_calibration_split
from skdknn.attacks import AdvKNNAttack


def _labels(per_class):
    return np.repeat(np.arange(len(per_class)), per_class)


def _split(y, size, seed, classes=None):
    return balanced_calibration_split(
        y, size, np.random.RandomState(seed), classes=classes
    )


# -- the split ------------------------------------------------------------------------


def test_remainder_goes_to_random_classes_over_seeds():
    # 14 points over 5 classes: 2 each (floor, not round(2.8) = 3), and the
    # remainder of 4 (more than C / 2) to 4 classes drawn at random
    y = _labels([30] * 5)
    extra = np.zeros(5, dtype=int)
    for seed in range(40):
        index_rows, cal_rows = _split(y, 14, seed)
        sizes = np.bincount(y[cal_rows], minlength=5)
        assert cal_rows.size == 14 and index_rows.size == 150 - 14
        assert sorted(sizes) == [2, 3, 3, 3, 3]
        extra += sizes == 3
    # every class gets the extra point under some seeds and not under others
    assert (extra > 0).all() and (extra < 40).all(), extra


@pytest.mark.parametrize(
    ("size", "total"),
    [
        (0.099, 14),
        (0.0999, 14),
        (0.1, 15),
        (14, 14),
        (np.int64(14), 14),
        (np.int32(14), 14),
    ],
)
def test_sizes_fraction_floored_and_integers_counted(size, total):
    # 0.099 * 150 = 14.85 is floored to 14; a numpy integer is a count, not a fraction
    y = _labels([30] * 5)
    for seed in range(5):
        _, cal_rows = _split(y, size, seed)
        assert cal_rows.size == total
        sizes = np.bincount(y[cal_rows], minlength=5)
        assert sizes.min() == total // 5 and sizes.max() <= total // 5 + 1


@pytest.mark.parametrize("size", [np.uint16(40)])
def test_classifier_reads_numpy_integers_as_counts(tabular, size):
    X, y = tabular
    clf = tiny(calibration_size=size, max_epochs=1).fit(X[:300], y[:300])
    assert clf.calibration_indices_.size == 40


def test_error_names_the_first_class_too_small_with_its_own_numbers():
    # 9 points over 3 classes: 3 each; classes 1 (3 samples) and 2 (2 samples) are
    # both too small (a class needs its share plus one indexed point)
    y = _labels([10, 3, 2])
    with pytest.raises(
        ValueError, match="Class 1 has 3 samples, too few for its share of 3 "
    ):
        _split(y, 9, 0)
    names = np.array(["ant", "bee", "cow"])
    with pytest.raises(ValueError, match="Class 'bee' has 3 samples") as info:
        _split(y, 9, 0, classes=names)
    assert "cow" not in str(info.value) and "ant" not in str(info.value)


def test_error_uses_the_share_drawn_for_the_class():
    # 10 points over 3 classes: shares 3, 3, 3 plus one extra point for a random
    # class; class 1 (4 samples) is too small only when it draws the extra point
    y = _labels([20, 4, 20])
    raised = 0
    for seed in range(30):
        try:
            _, cal_rows = _split(y, 10, seed)
        except ValueError as error:
            raised += 1
            assert "Class 1 has 4 samples, too few for its share of 4 " in str(error)
        else:
            assert np.bincount(y[cal_rows], minlength=3)[1] == 3
    assert 0 < raised < 30


# -- the classifier's calibration --------------------------------------------------


@pytest.fixture(scope="module")
def tabular():
    return make_classification(
        n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=0
    )


@pytest.fixture(scope="module")
def fitted(tabular):
    X, y = tabular
    return tiny().fit(X[:300], y[:300])


def test_calibration_scores_are_those_of_the_held_out_rows(fitted, tabular):
    X, y = tabular[0][:300], tabular[1][:300]
    cal = fitted.calibration_indices_
    assert np.intersect1d(cal, fitted.train_indices_).size == 0
    # no calibration row is among the indexed points (none is its own neighbour)
    _, neighbours = fitted.kneighbors(X[cal])
    assert not np.isin(neighbours, cal).any()
    counts = fitted.neighbor_counts(X[cal])
    y_cal = np.searchsorted(fitted.classes_, y[cal])
    expected = conformal.calibration_scores(counts, y_cal, fitted.n_neighbors)
    np.testing.assert_array_equal(fitted.calibration_nonconformity_, expected)
    # rows of the index would score lower (each is its own nearest neighbour)
    rows = fitted.train_indices_[: cal.size]
    in_index = conformal.calibration_scores(
        fitted.neighbor_counts(X[rows]),
        np.searchsorted(fitted.classes_, y[rows]),
        fitted.n_neighbors,
    )
    assert in_index.mean() < expected.mean()


def test_predict_set_default_significance_is_0_1(fitted, tabular):
    Xq = tabular[0][300:]
    p = fitted.p_values(Xq)
    np.testing.assert_array_equal(fitted.predict_set(Xq), p > 0.1)
    # the level matters on these queries: 0.05 and 0.2 give other sets
    assert not np.array_equal(p > 0.1, p > 0.05)
    assert not np.array_equal(p > 0.1, p > 0.2)


# -- AdvKNN's leave-one-out --------------------------------------------------------


def test_advknn_leaves_each_training_point_out_of_its_own_neighbours(fitted, tabular):
    X, y = tabular[0][:300].astype(np.float32), tabular[1][:300]
    attack = AdvKNNAttack(fitted, layer="relu2", head_epochs=1, random_state=0).fit(X)
    k = fitted.n_neighbors
    wider = copy.deepcopy(fitted)
    wider.n_neighbors = k + 1
    rows = fitted.train_indices_
    _, ind = wider.kneighbors(X[rows], layer="relu2")
    assert (ind[:, 0] == rows).all()  # an indexed point is its own nearest
    expected = np.stack(
        [np.bincount(y[neigh], minlength=3) / k for neigh in ind[:, 1:]]
    )
    p = attack.neighbor_distribution(X[rows], exclude_self=True)
    np.testing.assert_allclose(p, expected)
    assert not np.allclose(p, attack.neighbor_distribution(X[rows]))
    # a point outside the index keeps its k nearest
    cal = fitted.calibration_indices_
    np.testing.assert_allclose(
        attack.neighbor_distribution(X[cal], exclude_self=True),
        attack.neighbor_distribution(X[cal]),
    )


# -- the split's edges and messages ---------------------------------------------------


def test_smallest_and_largest_calibration_sets():
    y = _labels([10, 10])
    index_rows, cal_rows = _split(y, 1, 0)
    assert cal_rows.size == 1 and index_rows.size == 19
    # 18 of 20: every class keeps exactly one indexed point
    index_rows, cal_rows = _split(y, 18, 0)
    np.testing.assert_array_equal(np.bincount(y[index_rows]), [1, 1])


@pytest.mark.parametrize(
    ("y", "size", "message"),
    [
        (
            _labels([10, 10]),
            0.04,
            "calibration_size=0.04 leaves no calibration point for 20 samples; use "
            "a larger size.",
        ),
        (
            _labels([10, 10]),
            20,
            "calibration_size=20 asks for 20 calibration points but there are only "
            "20 samples; the calibration set must leave samples for the neighbour "
            "indexes.",
        ),
        (
            _labels([10, 3, 2]),
            9,
            "Class 1 has 3 samples, too few for its share of 3 class-balanced "
            "calibration points plus at least one indexed point; lower "
            "calibration_size (now 9) or add samples.",
        ),
    ],
)
def test_split_errors_in_full(y, size, message):
    with pytest.raises(ValueError) as info:
        _split(y, size, 0)
    assert str(info.value) == message


def test_every_indexed_point_may_be_a_neighbour(tabular):
    # 90 rows, 30 held out: k = 60 indexed points is the largest k allowed
    X, y = tabular
    clf = tiny(n_neighbors=60, calibration_size=30, max_epochs=1)
    with pytest.warns(UserWarning, match="can never fill a neighbourhood"):
        clf.fit(X[:90], y[:90])
    counts = clf.neighbor_counts(X[90:95])
    np.testing.assert_array_equal(
        counts[:, 0], np.tile(np.bincount(y[clf.train_indices_], minlength=3), (5, 1))
    )
    with pytest.raises(ValueError) as info:
        tiny(n_neighbors=61, calibration_size=30).fit(X[:90], y[:90])
    assert str(info.value) == (
        "n_neighbors=61 exceeds the 60 samples left for the neighbour indexes after "
        "holding out 30 calibration points; lower n_neighbors or calibration_size, "
        "or add samples."
    )


def test_a_class_of_one_sample_is_named_in_the_singular():
    # before: "Class 2 has 1 samples"
    with pytest.raises(ValueError, match="Class 2 has 1 sample, too few"):
        _split(_labels([10, 10, 1]), 6, 0)


def test_stratified_split_warns_for_a_class_without_calibration_points():
    # before: class 2 (3 of 200 samples) got no calibration point, silently
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    y[:3] = 2
    params = dict(calibration_size=40, calibration_split="stratified", max_epochs=1)
    with pytest.warns(
        UserWarning, match=r"no calibration point to 1 class\(es\) \[2\]"
    ):
        clf = tiny(**params).fit(X, y)
    assert 2 not in clf.calibration_labels_
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tiny(**params).fit(X, (X[:, 0] > 0).astype(int))  # every class calibrated


def test_warning_for_classes_without_calibration_points_in_full():
    # 8 classes of 2 samples: none gets a stratified calibration point; the
    # warning counts them all and names the first 5
    rng = np.random.RandomState(0)
    y = np.concatenate([np.repeat([0, 1], 150), np.repeat(np.arange(2, 10), 2)])
    X = rng.normal(size=(y.size, 4)).astype(np.float32) + y[:, None]
    params = dict(calibration_size=20, calibration_split="stratified", max_epochs=1)
    with pytest.warns(UserWarning) as record:
        tiny(**params).fit(X, y)
    (message,) = [
        str(w.message) for w in record if "calibration point" in str(w.message)
    ]
    assert message == (
        "calibration_split='stratified' gave no calibration point to 8 class(es) "
        "[2, 3, 4, 5, 6]: their share of calibration_size=20 rounds to zero. The "
        "prediction sets' coverage still holds over all data, but nothing calibrates "
        "inputs of these classes. Raise calibration_size or use "
        "calibration_split='balanced'."
    )
