"""Tests of the conformal maths of the DkNN (``skdknn.conformal``) and of the
class-balanced calibration split (``skdknn._calibration``).

The contract is DESIGN.md section 2:

- counts      n_{l,j}(x) = #{neighbours of x in layer l with label j}
- alpha       alpha_j(x) = sum_l (k - n_{l,j}(x))
- calibration A = {alpha_y(x) : (x, y) calibration point}, zero scores KEPT
- p-values    p_j(x) = |{a in A : a >= alpha_j(x)}| / |A|            (note >=)
- prediction  argmax_j p_j(x), ties to the lowest class index
- credibility max_j p_j(x);  confidence 1 - (second largest p_j(x))
- proba       (1 / (L k)) sum_l n_{l,j}(x)
- sets        {j : p_j(x) > eps}, coverage >= 1 - eps - 1 / (|A| + 1)
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skdknn import conformal
from skdknn._calibration import balanced_calibration_split
from skdknn.conformal import (
    calibration_scores,
    confidence,
    credibility,
    neighbor_label_counts,
    neighbor_proba,
    nonconformity,
    p_values,
    predict_from_counts,
    prediction_sets,
)

# ---------------------------------------------------------------------------------
# Hand-computed example: L = 3 layers, k = 4 neighbours, C = 3 classes, 3 queries.
#
# Query 0  layer 0: labels (0, 0, 1, 2) -> counts (2, 1, 1)
#          layer 1: labels (0, 1, 1, 1) -> counts (1, 3, 0)
#          layer 2: labels (0, 0, 0, 2) -> counts (3, 0, 1)
#          totals (6, 4, 2);  alpha = L*k - totals = 12 - (6, 4, 2) = (6, 8, 10)
# Query 1  layer 0: labels (2, 2, 2, 2) -> counts (0, 0, 4)
#          layer 1: labels (2, 2, 1, 2) -> counts (0, 1, 3)
#          layer 2: labels (2, 2, 2, 2) -> counts (0, 0, 4)
#          totals (0, 1, 11); alpha = (12, 11, 1)
# Query 2  layer 0: labels (0, 1, 0, 1) -> counts (2, 2, 0)
#          layer 1: labels (1, 0, 1, 0) -> counts (2, 2, 0)
#          layer 2: labels (0, 1, 2, 2) -> counts (1, 1, 2)
#          totals (5, 5, 2);  alpha = (7, 7, 10)   <- tie between classes 0 and 1
# ---------------------------------------------------------------------------------
L, K, C = 3, 4, 3
NEIGHBOR_LABELS = [
    [[0, 0, 1, 2], [0, 1, 1, 1], [0, 0, 0, 2]],
    [[2, 2, 2, 2], [2, 2, 1, 2], [2, 2, 2, 2]],
    [[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 2, 2]],
]
COUNTS = np.array(
    [
        [[2, 1, 1], [1, 3, 0], [3, 0, 1]],
        [[0, 0, 4], [0, 1, 3], [0, 0, 4]],
        [[2, 2, 0], [2, 2, 0], [1, 1, 2]],
    ]
)
ALPHA = np.array([[6, 8, 10], [12, 11, 1], [7, 7, 10]])

# Calibration set A (|A| = 10) with two zero scores and the ties 6, 6:
#   A = {0, 0, 2, 6, 6, 7, 9, 10, 11, 12}
# p_j = #{a in A : a >= alpha_j} / 10:
# Query 0: alpha 6  -> {6,6,7,9,10,11,12}  = 7 -> 0.7   (with ">" it would be 0.5)
#          alpha 8  -> {9,10,11,12}        = 4 -> 0.4
#          alpha 10 -> {10,11,12}          = 3 -> 0.3   (with ">" 0.2)
# Query 1: alpha 12 -> {12}                = 1 -> 0.1   (with ">" 0.0)
#          alpha 11 -> {11,12}             = 2 -> 0.2
#          alpha 1  -> {2,6,6,7,9,10,11,12}= 8 -> 0.8   (zeros dropped: 8/8 = 1.0)
# Query 2: alpha 7  -> {7,9,10,11,12}      = 5 -> 0.5   (both tied classes)
#          alpha 10 -> 3 -> 0.3
CALIBRATION = np.array([6, 0, 12, 2, 10, 6, 0, 11, 9, 7])  # unsorted on purpose
P = np.array([[0.7, 0.4, 0.3], [0.1, 0.2, 0.8], [0.5, 0.5, 0.3]])
# credibility = max p:                 (0.7, 0.8, 0.5)
# confidence  = 1 - second largest p:  (1 - 0.4, 1 - 0.2, 1 - 0.5) = (0.6, 0.8, 0.5)
# prediction  = argmax of totals:      (0, 2, 0)  (query 2: tie 0/1 -> 0)
# sets, eps = 0.25 (p > 0.25): q0 {0,1,2}, q1 {2}, q2 {0,1,2}
# sets, eps = 0.5  (p > 0.5):  q0 {0},     q1 {2}, q2 {}   (0.5 is not > 0.5)
# proba = totals / (L k) = totals / 12:
#   q0 (6, 4, 2)/12, q1 (0, 1, 11)/12, q2 (5, 5, 2)/12


def test_hand_example_counts():
    counts = neighbor_label_counts(NEIGHBOR_LABELS, n_classes=C)
    assert counts.shape == (3, L, C)
    np.testing.assert_array_equal(counts, COUNTS)
    np.testing.assert_array_equal(counts.sum(axis=2), np.full((3, L), K))


def test_hand_example_nonconformity():
    np.testing.assert_array_equal(nonconformity(COUNTS, n_neighbors=K), ALPHA)


def test_hand_example_p_values_use_greater_equal():
    p = p_values(ALPHA, CALIBRATION)
    np.testing.assert_allclose(p, P, rtol=0, atol=1e-12)
    # alpha = 6 equals two calibration scores: counted (>=), giving 0.7 not 0.5
    assert p[0, 0] == pytest.approx(0.7)
    # alpha = 12 equals the largest score: 1/10, not 0
    assert p[1, 0] == pytest.approx(0.1)


def test_hand_example_credibility_confidence():
    np.testing.assert_allclose(credibility(P), [0.7, 0.8, 0.5], atol=1e-12)
    np.testing.assert_allclose(confidence(P), [0.6, 0.8, 0.5], atol=1e-12)


def test_hand_example_prediction_ties_to_lowest_class():
    np.testing.assert_array_equal(predict_from_counts(COUNTS), [0, 2, 0])


def test_hand_example_prediction_sets_two_levels():
    p = p_values(ALPHA, CALIBRATION)
    np.testing.assert_array_equal(
        prediction_sets(p, 0.25),
        [[True, True, True], [False, False, True], [True, True, True]],
    )
    np.testing.assert_array_equal(
        prediction_sets(p, 0.5),
        [[True, False, False], [False, False, True], [False, False, False]],
    )


def test_hand_example_proba():
    expected = np.array([[6, 4, 2], [0, 1, 11], [5, 5, 2]]) / 12.0
    proba = neighbor_proba(COUNTS)
    np.testing.assert_allclose(proba, expected, rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


# Calibration scores by hand: L = 3, k = 4, C = 3, four calibration points
#   point a, y = 0: layers (4,0,0) x3            -> n_0 = 12 -> alpha_0 = 0
#   point b, y = 1: (1,3,0), (0,4,0), (2,2,0)    -> n_1 = 9  -> alpha_1 = 3
#   point c, y = 2: (0,0,4), (4,0,0), (1,1,2)    -> n_2 = 6  -> alpha_2 = 6
#   point d, y = 0: (4,0,0) x3                   -> n_0 = 12 -> alpha_0 = 0
# A sorted = (0, 0, 3, 6): both zeros kept, |A| = 4.
CAL_COUNTS = np.array(
    [
        [[4, 0, 0], [4, 0, 0], [4, 0, 0]],
        [[1, 3, 0], [0, 4, 0], [2, 2, 0]],
        [[0, 0, 4], [4, 0, 0], [1, 1, 2]],
        [[4, 0, 0], [4, 0, 0], [4, 0, 0]],
    ]
)
CAL_Y = np.array([0, 1, 2, 0])


def test_calibration_scores_keep_zeros():
    scores = calibration_scores(CAL_COUNTS, CAL_Y, n_neighbors=K)
    np.testing.assert_array_equal(scores, [0, 0, 3, 6])


def test_zero_scores_count_in_denominator():
    # A = (0, 0, 3, 6). alpha = 1 -> #{3, 6} = 2 of |A| = 4 -> 0.5.
    # If the zeros were dropped, |A| = 2 and p would be 1.0.
    # alpha = 0 -> 4/4 = 1; alpha = 6 -> 1/4; alpha = 7 -> 0.
    scores = calibration_scores(CAL_COUNTS, CAL_Y, n_neighbors=K)
    p = p_values([[1, 0, 6, 7]], scores)
    np.testing.assert_allclose(p, [[0.5, 1.0, 0.25, 0.0]], atol=1e-12)


def test_end_to_end_hand_example():
    # Same three queries, calibration from CAL_COUNTS: A = (0, 0, 3, 6)
    # Query 0 alpha (6, 8, 10) -> (1/4, 0, 0); query 1 (12, 11, 1) -> (0, 0, 2/4);
    # query 2 (7, 7, 10) -> (0, 0, 0)
    scores = calibration_scores(CAL_COUNTS, CAL_Y, n_neighbors=K)
    counts = neighbor_label_counts(NEIGHBOR_LABELS, n_classes=C)
    p = p_values(nonconformity(counts, K), scores)
    np.testing.assert_allclose(
        p, [[0.25, 0, 0], [0, 0, 0.5], [0, 0, 0]], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(credibility(p), [0.25, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(confidence(p), [1.0, 1.0, 1.0], atol=1e-12)


# ---------------------------------------------------------------------------------
# Naive reference implementations (double loops, straight from the definitions)
# ---------------------------------------------------------------------------------
def naive_counts(labels, n_classes):
    labels = np.asarray(labels)
    n, n_layers, k = labels.shape
    out = np.zeros((n, n_layers, n_classes), dtype=np.int64)
    for i in range(n):
        for layer in range(n_layers):
            for m in range(k):
                out[i, layer, labels[i, layer, m]] += 1
    return out


def naive_p_values(alpha, calibration):
    alpha = np.asarray(alpha)
    out = np.zeros(alpha.shape, dtype=np.float64)
    for i in range(alpha.shape[0]):
        for j in range(alpha.shape[1]):
            hits = sum(1 for a in calibration if a >= alpha[i, j])
            out[i, j] = hits / len(calibration)
    return out


@st.composite
def dknn_problem(draw):
    """Random neighbour labels of queries and calibration points, plus labels."""
    n_layers = draw(st.integers(1, 4))
    k = draw(st.integers(1, 6))
    n_classes = draw(st.integers(2, 5))
    n = draw(st.integers(1, 8))
    n_cal = draw(st.integers(1, 12))
    labels = st.integers(0, n_classes - 1)
    q = draw(hnp.arrays(np.int64, (n, n_layers, k), elements=labels))
    cal = draw(hnp.arrays(np.int64, (n_cal, n_layers, k), elements=labels))
    y_cal = draw(hnp.arrays(np.int64, (n_cal,), elements=labels))
    return n_layers, k, n_classes, q, cal, y_cal


@settings(max_examples=100, deadline=None)
@given(dknn_problem())
def test_matches_naive_implementation(problem):
    n_layers, k, n_classes, q, cal, y_cal = problem
    counts = neighbor_label_counts(q, n_classes)
    np.testing.assert_array_equal(counts, naive_counts(q, n_classes))
    # rows sum to k
    np.testing.assert_array_equal(counts.sum(axis=2), k)

    cal_counts = naive_counts(cal, n_classes)
    naive_scores = [
        sum(k - cal_counts[i, layer, y_cal[i]] for layer in range(n_layers))
        for i in range(len(y_cal))
    ]
    scores = calibration_scores(cal_counts, y_cal, n_neighbors=k)
    np.testing.assert_array_equal(scores, sorted(naive_scores))
    assert len(scores) == len(y_cal)  # zeros included

    alpha = nonconformity(counts, k)
    naive_alpha = np.array(
        [
            [
                sum(k - counts[i, lay, j] for lay in range(n_layers))
                for j in range(n_classes)
            ]
            for i in range(counts.shape[0])
        ]
    )
    np.testing.assert_array_equal(alpha, naive_alpha)

    p = p_values(alpha, naive_scores)
    np.testing.assert_allclose(p, naive_p_values(alpha, naive_scores), atol=1e-12)

    for i in range(p.shape[0]):
        row = sorted(p[i], reverse=True)
        assert credibility(p)[i] == row[0]
        assert confidence(p)[i] == pytest.approx(1.0 - row[1])
    for eps in (0.0, 0.1, 0.5, 1.0):
        sets = prediction_sets(p, eps)
        for i in range(p.shape[0]):
            for j in range(n_classes):
                assert sets[i, j] == (p[i, j] > eps)


@settings(max_examples=100, deadline=None)
@given(dknn_problem())
def test_prediction_has_max_p_value_and_lowest_index_on_ties(problem):
    _, k, n_classes, q, cal, y_cal = problem
    counts = neighbor_label_counts(q, n_classes)
    scores = calibration_scores(neighbor_label_counts(cal, n_classes), y_cal, k)
    p = p_values(nonconformity(counts, k), scores)
    pred = predict_from_counts(counts)
    totals = counts.sum(axis=1)
    for i in range(counts.shape[0]):
        best = [j for j in range(n_classes) if totals[i, j] == totals[i].max()]
        assert pred[i] == min(best)
        assert p[i, pred[i]] == p[i].max()
    np.testing.assert_array_equal(pred, np.argmax(neighbor_proba(counts), axis=1))


@settings(max_examples=100, deadline=None)
@given(
    calibration=st.lists(st.integers(0, 30), min_size=1, max_size=40),
    alphas=st.lists(st.integers(-5, 40), min_size=2, max_size=20),
)
def test_p_values_in_unit_interval_and_non_increasing(calibration, alphas):
    grid = np.sort(np.array(alphas))[None, :]
    p = p_values(grid, calibration)[0]
    assert np.all(p >= 0.0)
    assert np.all(p <= 1.0)
    assert np.all(np.diff(p) <= 0.0)
    # every score is >= min(A): p = 1 there; nothing is >= max(A) + 1: p = 0
    ends = p_values([[min(calibration), max(calibration) + 1]], calibration)
    np.testing.assert_array_equal(ends, [[1.0, 0.0]])


# ---------------------------------------------------------------------------------
# Coverage on exchangeable data
# ---------------------------------------------------------------------------------
def _simulate(rng, n, n_layers, k, n_classes, q):
    """True labels uniform; each neighbour label equals the true label with
    probability q, otherwise is uniform over the classes (i.i.d. points)."""
    y = rng.integers(0, n_classes, size=n)
    agree = rng.random((n, n_layers, k)) < q
    noise = rng.integers(0, n_classes, size=(n, n_layers, k))
    labels = np.where(agree, y[:, None, None], noise)
    return neighbor_label_counts(labels, n_classes), y


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2])
def test_prediction_set_coverage_on_exchangeable_data(eps):
    # R independent repetitions (fresh calibration + test draw each) so that the
    # average estimates the *marginal* coverage the conformal guarantee is about.
    # Guarantee: P(y in set) >= 1 - eps - 1/(|A| + 1).
    # Sampling tolerance: the coverage of one repetition, given its calibration set,
    # has variance <= eps(1-eps)/(n_cal) (Beta law of a conformal quantile) plus the
    # binomial test variance eps(1-eps)/n_test; the mean over R repetitions has
    # sd = sqrt(eps(1-eps)(1/n_cal + 1/n_test)/R) <= 0.005 here; 4 sd ~ 0.02.
    rng = np.random.default_rng(20180313)
    n_layers, k, n_classes, q = 3, 10, 5, 0.4
    n_cal, n_test, repeats = 300, 2000, 25
    coverages, sizes, in_sample = [], [], []
    for _ in range(repeats):
        cal_counts, y_cal = _simulate(rng, n_cal, n_layers, k, n_classes, q)
        counts, y = _simulate(rng, n_test, n_layers, k, n_classes, q)
        scores = calibration_scores(cal_counts, y_cal, n_neighbors=k)
        p = p_values(nonconformity(counts, k), scores)
        sets = prediction_sets(p, eps)
        coverages.append(sets[np.arange(n_test), y].mean())
        sizes.append(sets.sum(axis=1).mean())
        # the calibration points' coverage of themselves, ties included
        own = (scores[None, :] >= scores[:, None]).mean(axis=1)
        in_sample.append(np.mean(own > eps))
    sd = np.sqrt(eps * (1 - eps) * (1 / n_cal + 1 / n_test) / repeats)
    bound = 1 - eps - 1 / (n_cal + 1) - 4 * sd
    assert np.mean(coverages) >= bound
    # two-sided: not more than exchangeability gives (all p-values 1 would pass
    # the lower bound alone)
    assert abs(np.mean(coverages) - np.mean(in_sample)) <= 4 * sd
    # the sets are informative (not always every class), so coverage is not trivial
    assert np.mean(sizes) < n_classes - 0.5


# ---------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 3, 4), (5,)])
def test_neighbor_label_counts_wrong_ndim(shape):
    with pytest.raises(ValueError, match="n_queries, n_layers, n_neighbors"):
        neighbor_label_counts(np.zeros(shape, dtype=int), n_classes=3)


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_neighbor_label_counts_labels_out_of_range(bad):
    labels = np.zeros((2, 2, 3), dtype=int)
    labels[1, 0, 2] = bad
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        neighbor_label_counts(labels, n_classes=3)


def test_p_values_empty_calibration():
    with pytest.raises(ValueError, match="at least one"):
        p_values([[1, 2]], calibration=[])


def test_calibration_scores_y_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        calibration_scores(CAL_COUNTS, CAL_Y[:3], n_neighbors=K)


@pytest.mark.parametrize("significance", [-0.01, 1.01, np.nan, 2])
def test_prediction_sets_significance_out_of_range(significance):
    with pytest.raises(ValueError, match="significance"):
        prediction_sets(P, significance)


SIGNIFICANCE_ERROR = (
    "significance must be a real number in [0, 1], the error rate the prediction "
    "sets allow (e.g. 0.1); got "
)


@pytest.mark.parametrize(
    ("significance", "ending"),
    [
        (True, "True."),  # a bool is a Real: refused before its value is read
        (False, "False."),
        # numpy's bool is not a Real (its repr and name: numpy 2's "np.True_" and
        # "bool", numpy 1's "True" and "bool_")
        (np.True_, f"{np.True_!r} of type {type(np.True_).__name__}."),
        (1.5, "1.5."),  # real numbers: no type named
        (-1, "-1."),
        ("0.1", "'0.1' of type str."),
        (None, "None of type NoneType."),
    ],
)
def test_significance_error_says_what_was_wrong(significance, ending):
    # the whole message: what is expected, the value and, unless it is a real
    # number, its type
    with pytest.raises(ValueError, match=re.escape(SIGNIFICANCE_ERROR + ending) + "$"):
        prediction_sets(P, significance)


@pytest.mark.parametrize("significance", [0.0, 1.0])
def test_prediction_sets_significance_bounds_accepted(significance):
    sets = prediction_sets(P, significance)
    # eps = 0: every class with p > 0 (all of P); eps = 1: nothing (p <= 1)
    assert sets.all() if significance == 0.0 else not sets.any()


@pytest.mark.parametrize("func", [credibility, confidence])
@pytest.mark.parametrize("p", [[[0.3], [0.9]], [0.3, 0.9], [[[0.1, 0.2]]]])
def test_p_value_functions_need_two_classes(func, p):
    with pytest.raises(ValueError, match="at least 2 classes"):
        func(p)


# ---------------------------------------------------------------------------------
# balanced_calibration_split
# ---------------------------------------------------------------------------------
def _labels(per_class):
    return np.repeat(np.arange(len(per_class)), per_class)


def _check_partition(y, index_rows, cal_rows):
    assert np.intersect1d(index_rows, cal_rows).size == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([index_rows, cal_rows])), np.arange(y.shape[0])
    )
    np.testing.assert_array_equal(index_rows, np.sort(index_rows))
    np.testing.assert_array_equal(cal_rows, np.sort(cal_rows))


def test_split_750_over_10_classes():
    rng = np.random.default_rng(0)
    y = rng.permutation(_labels([100 + 3 * j for j in range(10)]))
    index_rows, cal_rows = balanced_calibration_split(y, 750, np.random.RandomState(0))
    assert cal_rows.size == 750
    np.testing.assert_array_equal(np.bincount(y[cal_rows], minlength=10), 75)
    _check_partition(y, index_rows, cal_rows)


def test_split_7_over_3_classes():
    y = _labels([5, 5, 5])
    index_rows, cal_rows = balanced_calibration_split(y, 7, np.random.RandomState(3))
    per_class = np.bincount(y[cal_rows], minlength=3)
    np.testing.assert_array_equal(np.sort(per_class), [2, 2, 3])
    _check_partition(y, index_rows, cal_rows)


def test_split_float_fraction_is_floored():
    # 0.25 * 50 = 12.5 -> 12 points over 5 classes -> two classes get 3, three get 2
    y = _labels([10] * 5)
    index_rows, cal_rows = balanced_calibration_split(y, 0.25, np.random.RandomState(0))
    assert cal_rows.size == 12
    np.testing.assert_array_equal(
        np.sort(np.bincount(y[cal_rows], minlength=5)), [2, 2, 2, 3, 3]
    )
    assert index_rows.size == 38
    _check_partition(y, index_rows, cal_rows)


def test_split_deterministic_for_seeded_random_state():
    y = np.random.default_rng(5).integers(0, 4, size=200)
    a = balanced_calibration_split(y, 41, np.random.RandomState(42))
    b = balanced_calibration_split(y, 41, np.random.RandomState(42))
    c = balanced_calibration_split(y, 41, np.random.RandomState(43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("size", [0, 0.001, 0.0])
def test_split_empty_calibration_raises(size):
    y = _labels([10, 10])
    with pytest.raises(ValueError, match="no calibration point"):
        balanced_calibration_split(y, size, np.random.RandomState(0))


@pytest.mark.parametrize("size", [20, 25, 1.0])
def test_split_calibration_not_smaller_than_n_raises(size):
    y = _labels([10, 10])
    with pytest.raises(ValueError, match="only 20 samples"):
        balanced_calibration_split(y, size, np.random.RandomState(0))


def test_split_class_too_small_names_the_class():
    # 9 points over 3 classes -> 3 per class; class 2 has 3 samples, leaving none
    # to index (a class needs share + 1 samples).
    y = _labels([10, 10, 3])
    with pytest.raises(ValueError, match="Class 2 has 3 samples"):
        balanced_calibration_split(y, 9, np.random.RandomState(0))
    classes = np.array(["cat", "dog", "emu"])
    with pytest.raises(ValueError, match="emu") as info:
        balanced_calibration_split(y, 9, np.random.RandomState(0), classes=classes)
    assert "cat" not in str(info.value)
    assert "dog" not in str(info.value)


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (np.array(["cat", "dog", "emu"]), "Class 'emu' has 3 samples"),
        (np.array([10, 20, 30]), "Class 30 has 3 samples"),
    ],
)
def test_split_class_too_small_message_shows_plain_label(classes, expected):
    # The classifier passes its ``classes_`` array, whose items are numpy scalars;
    # the message must show the label as the user wrote it ('emu', 30), not the
    # numpy >= 2 repr of the scalar (np.str_('emu'), np.int64(30)).
    y = _labels([10, 10, 3])
    with pytest.raises(ValueError) as info:
        balanced_calibration_split(y, 9, np.random.RandomState(0), classes=classes)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "func",
    [
        lambda c: conformal.nonconformity(c, 3),
        conformal.predict_from_counts,
        conformal.neighbor_proba,
    ],
)
def test_counts_must_be_three_dimensional(func):
    with pytest.raises(ValueError, match=r"\(n_queries, n_layers, n_classes\)"):
        func([[1, 2], [3, 4]])


@pytest.mark.parametrize("bad_label", [-1, 2])
def test_calibration_labels_out_of_range(bad_label):
    counts = [[[3, 0]], [[1, 2]]]
    with pytest.raises(ValueError, match=r"integers in \[0, 1\]"):
        conformal.calibration_scores(counts, [0, bad_label], n_neighbors=3)


# ---------------------------------------------------------------------------------
# Exact messages and output dtypes (what a user reads and what the docstrings say)
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: neighbor_label_counts(np.zeros((4, 3), dtype=int), n_classes=3),
            r"neighbor_labels must have shape (n_queries, n_layers, n_neighbors); "
            r"got an array with 2 dimension(s).",
        ),
        (
            lambda: nonconformity([[1, 2], [3, 4]], 3),
            "counts must have shape (n_queries, n_layers, n_classes); got an array "
            "with 2 dimension(s).",
        ),
        (
            lambda: calibration_scores(CAL_COUNTS, CAL_Y[:3], n_neighbors=K),
            "y must have shape (4,) to match counts; got (3,).",
        ),
        (
            lambda: p_values([[1, 2]], calibration=[]),
            "calibration must hold at least one nonconformity score.",
        ),
        (
            lambda: credibility([0.3, 0.9]),
            "p-values must have shape (n_queries, n_classes) with at least 2 "
            "classes; got shape (2,).",
        ),
    ],
)
def test_error_messages_in_full(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_output_dtypes_whatever_the_input_dtype():
    # float counts are counted as integers; integer p-values give float results
    float_counts = COUNTS.astype(np.float64)
    alpha = nonconformity(float_counts, K)
    assert alpha.dtype == np.int64
    np.testing.assert_array_equal(alpha, ALPHA)
    assert predict_from_counts(float_counts).tolist() == [0, 2, 0]
    scores = calibration_scores(CAL_COUNTS, np.asarray(CAL_Y, dtype=float), K)
    np.testing.assert_array_equal(scores, calibration_scores(CAL_COUNTS, CAL_Y, K))
    assert scores.dtype == np.int64
    p_int = np.array([[0, 1], [1, 1]])
    assert credibility(p_int).dtype == np.float64
    assert confidence(p_int).dtype == np.float64
    np.testing.assert_array_equal(confidence(p_int), [1.0, 0.0])
    assert neighbor_proba(COUNTS).dtype == np.float64
    assert p_values(ALPHA, CALIBRATION).dtype == np.float64
