"""p-value forms (dknn / conformal / smoothed), Mondrian p-values and the stratified
calibration split (DESIGN.md section 2, "p-value forms"), as pure functions.

- hand-computed numbers for every form, Mondrian or not;
- equality with crepes' ``ConformalClassifier.predict_p`` (an independent
  implementation) on the same scores and, for smoothed p-values, the same uniforms;
- coverage over many seeds on imbalanced exchangeable data: marginal coverage at
  least the guarantee, per-class coverage with Mondrian p-values, and two-sided
  checks (smoothed coverage exactly 1 - eps, set sizes bounded) so that p-values
  that are always 1 cannot pass.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest
from crepes import ConformalClassifier
from hypothesis import given, settings
from hypothesis import strategies as st

from skdknn._calibration import (
    balanced_calibration_split,
    class_imbalance,
    label_shift,
    stratified_calibration_split,
)
from skdknn.conformal import (
    calibration_scores,
    coverage_bound,
    nonconformity,
    p_values,
    prediction_sets,
)

# A = {0, 0, 2, 5}; queries alpha = 2, 0, 6, -1, 5.
A = [5, 0, 2, 0]
ALPHA = [[2, 0, 6, -1, 5]]


# ---------------------------------------------------------------------------------
# Hand-computed numbers
# ---------------------------------------------------------------------------------
def test_dknn_form_is_the_share_of_scores_at_least_alpha():
    # >= alpha: 2 of 4 (2, 5); 4 of 4; 0; 4; 1 (5)
    expected = [[2 / 4, 4 / 4, 0 / 4, 4 / 4, 1 / 4]]
    np.testing.assert_allclose(p_values(ALPHA, A), expected)
    np.testing.assert_allclose(p_values(ALPHA, A, form="dknn"), expected)


def test_conformal_form_adds_one_to_count_and_size():
    expected = [[3 / 5, 5 / 5, 1 / 5, 5 / 5, 2 / 5]]
    np.testing.assert_allclose(p_values(ALPHA, A, form="conformal"), expected)


def test_smoothed_form_splits_the_ties_with_the_uniform():
    u = [[0.5, 0.25, 1.0, 0.0, 0.5]]
    # alpha = 2: 1 above (5), 1 equal -> (1 + 0.5 * 2) / 5
    # alpha = 0: 2 above, 2 equal -> (2 + 0.25 * 3) / 5
    # alpha = 6: none above or equal -> (0 + 1.0 * 1) / 5
    # alpha = -1: 4 above -> (4 + 0 * 1) / 5
    # alpha = 5: 0 above, 1 equal -> (0 + 0.5 * 2) / 5
    expected = [[2.0 / 5, 2.75 / 5, 1.0 / 5, 4.0 / 5, 1.0 / 5]]
    np.testing.assert_allclose(p_values(ALPHA, A, form="smoothed", uniform=u), expected)


def test_smoothed_form_spans_the_conformal_step():
    # U = 1 gives the conformal form; U = 0 gives (count > alpha) / (n + 1)
    ones = np.ones((1, 5))
    np.testing.assert_allclose(
        p_values(ALPHA, A, form="smoothed", uniform=ones),
        p_values(ALPHA, A, form="conformal"),
    )
    np.testing.assert_allclose(
        p_values(ALPHA, A, form="smoothed", uniform=0 * ones),
        [[1 / 5, 2 / 5, 0 / 5, 4 / 5, 0 / 5]],
    )


def test_mondrian_uses_only_the_scores_of_the_candidate_label():
    # A_0 = {0, 2} (labels of A: 1, 0, 0, 1), A_1 = {5, 0}
    labels = [1, 0, 0, 1]
    alpha = [[2, 2], [0, 6]]
    np.testing.assert_allclose(
        p_values(alpha, A, calibration_labels=labels), [[1 / 2, 1 / 2], [2 / 2, 0 / 2]]
    )
    np.testing.assert_allclose(
        p_values(alpha, A, form="conformal", calibration_labels=labels),
        [[2 / 3, 2 / 3], [3 / 3, 1 / 3]],
    )
    u = [[0.5, 0.5], [0.5, 0.5]]
    # label 0, alpha 2 vs {0, 2}: 0 above, 1 equal; alpha 0: 1 above, 1 equal
    # label 1, alpha 2 vs {0, 5}: 1 above, 0 equal; alpha 6: none
    np.testing.assert_allclose(
        p_values(alpha, A, form="smoothed", calibration_labels=labels, uniform=u),
        [[1.0 / 3, 1.5 / 3], [2.0 / 3, 0.5 / 3]],
    )


@pytest.mark.parametrize("form", ["dknn", "conformal", "smoothed"])
@pytest.mark.parametrize("labels", [None, [1, 0, 0, 1]], ids=["all", "mondrian"])
def test_one_query_alpha_gives_that_querys_p_values(form, labels):
    # alpha of shape (n_classes,): the p-values of that one query, shape (n_classes,)
    alpha, u = [[2, 2], [0, 6]], [[0.5, 0.25], [1.0, 0.75]]
    both = p_values(alpha, A, form=form, calibration_labels=labels, uniform=u)
    for i in range(2):
        one = p_values(alpha[i], A, form=form, calibration_labels=labels, uniform=u[i])
        assert one.shape == (2,)
        np.testing.assert_array_equal(one, both[i])


def test_coverage_bound():
    assert coverage_bound(0.1, 99) == pytest.approx(0.89)
    assert coverage_bound(0.2, 399) == pytest.approx(0.7975)


def test_unsorted_calibration_scores_stay_with_their_labels():
    counts = [[[3, 0]], [[1, 2]], [[0, 3]], [[2, 1]]]
    y = [0, 0, 1, 1]
    scores = calibration_scores(counts, y, n_neighbors=3, sort=False)
    np.testing.assert_array_equal(scores, [0, 2, 0, 2])
    np.testing.assert_array_equal(
        calibration_scores(counts, y, n_neighbors=3), np.sort(scores)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"form": "exact"},
            "form must be one of ('dknn', 'conformal', 'smoothed'); got 'exact'.",
        ),
        ({"form": "smoothed"}, 'form="smoothed" needs uniform, the draws U in [0, 1].'),
        (
            {"form": "smoothed", "uniform": [[0.5]]},
            "uniform must have the shape of alpha, (1, 2); got (1, 1).",
        ),
        (
            {"calibration_labels": [0, 0, 0, 0]},
            "Mondrian p-values need calibration scores of every label; label 1 has "
            "none.",
        ),
        (
            {"calibration_labels": [0, 1]},
            "calibration_labels must have the shape of calibration, (4,); got (2,).",
        ),
    ],
)
def test_p_value_errors(kwargs, message):
    # the whole message (what was wrong, what is expected)
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        p_values([[2, 0]], A, **kwargs)


@pytest.mark.parametrize(
    "uniform",
    [
        [[1, 0, 1, 0, 1]],  # Python ints: read as the floats 1.0 and 0.0
        np.array([[0.5, 0.25, 1.0, 0.0, 0.5]], dtype=np.float16),
        np.array([[0.5, 0.25, 1.0, 0.0, 0.5]], dtype=object),  # e.g. from pandas
        [[Fraction(1, 2), Fraction(1, 4), 1, 0, Fraction(1, 2)]],
    ],
    ids=["int", "float16", "object", "fraction"],
)
def test_smoothed_draws_of_any_real_type_give_float64_p_values(uniform):
    # the draws are read as float64: the p-values are those of the float64 draws,
    # and float64 themselves (draws kept as objects would give object p-values)
    expected = p_values(
        ALPHA, A, form="smoothed", uniform=np.asarray(uniform, dtype=np.float64)
    )
    p = p_values(ALPHA, A, form="smoothed", uniform=uniform)
    assert p.dtype == np.float64
    np.testing.assert_array_equal(p, expected)


# ---------------------------------------------------------------------------------
# Against crepes (an independent implementation)
# ---------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_cal=st.integers(1, 40),
    n_test=st.integers(1, 12),
    n_classes=st.integers(2, 4),
    high=st.integers(1, 8),
)
def test_p_values_equal_crepes_predict_p(seed, n_cal, n_test, n_classes, high):
    # integer scores in a small range: many ties, where the forms differ most
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, high + 1, n_cal)
    alpha = rng.integers(-1, high + 2, (n_test, n_classes))
    crepes_cc = ConformalClassifier().fit(scores.astype(float))
    np.testing.assert_allclose(
        p_values(alpha, scores, form="conformal"),
        crepes_cc.predict_p(alpha.astype(float), smoothing=False),
    )
    # crepes draws its uniforms with np.random.rand after np.random.seed(seed): the
    # stream of RandomState(seed)
    uniform = np.random.RandomState(seed).rand(n_test, n_classes)
    np.testing.assert_allclose(
        p_values(alpha, scores, form="smoothed", uniform=uniform),
        crepes_cc.predict_p(alpha.astype(float), smoothing=True, seed=seed),
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_cal=st.integers(0, 40),
    n_test=st.integers(1, 12),
    n_classes=st.integers(2, 4),
    high=st.integers(1, 8),
)
def test_mondrian_p_values_equal_crepes_with_the_label_as_category(
    seed, n_cal, n_test, n_classes, high
):
    # crepes' Mondrian categories ("bins") are per test object: the label-conditional
    # p-value of label j is crepes' p-value of alpha_j with every test object in bin j
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(n_classes), rng.integers(0, n_classes, n_cal)]
    scores = rng.integers(0, high + 1, labels.size)
    alpha = rng.integers(-1, high + 2, (n_test, n_classes))
    crepes_cc = ConformalClassifier().fit(scores.astype(float), bins=labels)
    uniform = np.empty((n_test, n_classes))
    expected = {"conformal": np.empty(alpha.shape), "smoothed": np.empty(alpha.shape)}
    for j in range(n_classes):
        bins = np.full(n_test, j)
        column = alpha[:, j].astype(float)
        expected["conformal"][:, j] = crepes_cc.predict_p(
            column, bins=bins, smoothing=False
        )
        expected["smoothed"][:, j] = crepes_cc.predict_p(
            column, bins=bins, smoothing=True, seed=seed + j
        )
        # crepes' draws for the one bin with test objects
        uniform[:, j] = np.random.RandomState(seed + j).rand(n_test)
    for form in ("conformal", "smoothed"):
        got = p_values(
            alpha, scores, form=form, calibration_labels=labels, uniform=uniform
        )
        np.testing.assert_allclose(got, expected[form], err_msg=form)


# ---------------------------------------------------------------------------------
# Coverage on imbalanced exchangeable data, over many seeds
# ---------------------------------------------------------------------------------
FREQUENCIES = np.array([0.9, 0.1])
# the neighbours of a minority point agree with its label less often
AGREEMENT = np.array([0.8, 0.55])
N_VOTES = 30  # L * k


def _draw(rng, n):
    """n exchangeable points: their labels (90/10) and alpha (n, 2)."""
    y = rng.choice(2, size=n, p=FREQUENCIES)
    votes_for_y = rng.binomial(N_VOTES, AGREEMENT[y])
    counts = np.where(np.arange(2) == y[:, None], votes_for_y[:, None], 0)
    counts[np.arange(n), 1 - y] = N_VOTES - votes_for_y
    return y, nonconformity(counts[:, None, :], N_VOTES)


def _coverage_runs(form, mondrian, eps, repeats=200, n_cal=200, n_test=400, seed=0):
    """Coverage (all, per class) and mean set size of each repetition."""
    rng = np.random.default_rng(seed)
    covered, per_class, sizes = [], [], []
    for _ in range(repeats):
        y_cal, alpha_cal = _draw(rng, n_cal)
        y, alpha = _draw(rng, n_test)
        scores = alpha_cal[np.arange(n_cal), y_cal]
        p = p_values(
            alpha,
            scores,
            form=form,
            calibration_labels=y_cal if mondrian else None,
            uniform=rng.random(alpha.shape),
        )
        hit = prediction_sets(p, eps)[np.arange(n_test), y]
        covered.append(hit.mean())
        per_class.append([hit[y == j].mean() for j in range(2)])
        sizes.append(prediction_sets(p, eps).sum(axis=1).mean())
    return np.array(covered), np.array(per_class), np.array(sizes)


def _sd(eps, n, repeats):
    # sd of the mean coverage over repetitions: calibration (Beta law of the conformal
    # quantile) plus test (binomial) variance, each at most eps (1 - eps) / n
    return np.sqrt(eps * (1 - eps) * 2 / n / repeats)


@pytest.mark.parametrize("eps", [0.1, 0.2])
@pytest.mark.parametrize("form", ["dknn", "conformal", "smoothed"])
def test_marginal_coverage_meets_the_guarantee(form, eps):
    covered, _, sizes = _coverage_runs(form, mondrian=False, eps=eps)
    slack = 4 * _sd(eps, 200, 200)
    assert covered.mean() >= coverage_bound(eps, 200) - slack
    if form != "dknn":
        assert covered.mean() >= 1 - eps - slack
    # two-sided: informative sets (p-values of 1 everywhere would give size 2)
    assert sizes.mean() < 1.4
    if form == "smoothed":  # exactly 1 - eps
        assert abs(covered.mean() - (1 - eps)) <= slack


@pytest.mark.parametrize("eps", [0.1, 0.2])
@pytest.mark.parametrize("form", ["dknn", "conformal", "smoothed"])
def test_mondrian_coverage_holds_within_each_class(form, eps):
    _, per_class, sizes = _coverage_runs(form, mondrian=True, eps=eps)
    for j, share in enumerate(FREQUENCIES):
        n_j = 200 * share  # expected calibration points of the class
        coverage = np.nanmean(per_class[:, j])
        slack = 4 * np.sqrt(eps * (1 - eps) * (1 / n_j + 1 / (400 * share)) / 200)
        assert coverage >= coverage_bound(eps, n_j) - slack, (j, coverage)
        if form == "smoothed":
            # exact given the class's calibration size, up to the n_j = 0 draws
            assert abs(coverage - (1 - eps)) <= slack + 1 / (n_j + 1), (j, coverage)
    assert sizes.mean() < 1.6


def test_without_mondrian_the_minority_class_is_under_covered():
    # what Mondrian p-values fix: marginal calibration pools the classes, and the
    # harder minority class pays for it (the test above is not trivially passed)
    eps = 0.1
    _, marginal, _ = _coverage_runs("conformal", mondrian=False, eps=eps)
    _, mondrian, _ = _coverage_runs("conformal", mondrian=True, eps=eps)
    assert np.nanmean(marginal[:, 1]) < 1 - eps - 0.1
    assert np.nanmean(mondrian[:, 1]) >= 1 - eps - 0.03


def test_a_balanced_calibration_set_misses_the_marginal_guarantee():
    # the fault of the issue: calibrating on equal counts per class, testing on 90/10
    eps, n_cal, repeats = 0.1, 200, 100
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(repeats):
        y_pool, alpha_pool = _draw(rng, 4000)
        _, rows = balanced_calibration_split(y_pool, n_cal, np.random.RandomState(0))
        scores = alpha_pool[rows, y_pool[rows]]
        y, alpha = _draw(rng, 400)
        p = p_values(alpha, scores, form="conformal")
        covered.append(prediction_sets(p, eps)[np.arange(400), y].mean())
    slack = 4 * _sd(eps, n_cal, repeats)
    # over-covers by far more than sampling noise: the sets are too large
    assert np.mean(covered) > 1 - eps + 1 / (n_cal + 1) + slack


# ---------------------------------------------------------------------------------
# The stratified split and the label shift
# ---------------------------------------------------------------------------------
def test_stratified_split_keeps_the_class_proportions():
    y = np.repeat([0, 1, 2], [700, 200, 100])
    index, calibration = stratified_calibration_split(y, 100, np.random.RandomState(0))
    assert np.bincount(y[calibration]).tolist() == [70, 20, 10]
    assert np.intersect1d(index, calibration).size == 0
    assert index.size + calibration.size == y.size
    assert label_shift(y, calibration) == 0.0
    # the paper's split on the same data: 34 / 33 / 33 or so
    _, balanced = balanced_calibration_split(y, 100, np.random.RandomState(0))
    assert label_shift(y, balanced) == pytest.approx(0.7 - 34 / 100, abs=0.011)


def test_stratified_split_is_seeded_and_takes_fractions():
    y = np.repeat([0, 1], [90, 10])
    a = stratified_calibration_split(y, 0.2, np.random.RandomState(3))
    b = stratified_calibration_split(y, 0.2, np.random.RandomState(3))
    c = stratified_calibration_split(y, 0.2, np.random.RandomState(4))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert np.bincount(y[a[1]]).tolist() == [18, 2]


@pytest.mark.parametrize(
    ("y", "size", "message"),
    [
        (np.repeat([0, 1], [20, 1]), 5, "Class 1 has 1 sample"),
        (np.repeat([0, 1, 2], [20, 20, 20]), 2, "at least one point per class"),
        (np.repeat([0, 1, 2], [20, 20, 20]), 58, "at least one point per class"),
        (np.repeat([0, 1], [20, 20]), 40, "only 40 samples"),
    ],
)
def test_stratified_split_errors(y, size, message):
    with pytest.raises(ValueError, match=message):
        stratified_calibration_split(y, size, np.random.RandomState(0))


def test_stratified_split_error_names_the_users_class():
    y = np.repeat([0, 1], [20, 1])
    with pytest.raises(ValueError) as error:
        stratified_calibration_split(
            y, 5, np.random.RandomState(0), classes=np.array(["common", "rare"])
        )
    assert str(error.value) == (
        "Class 'rare' has 1 sample; calibration_split='stratified' needs at least 2 "
        "per class (to index and to calibrate). Use calibration_split='balanced' or "
        "add samples."
    )


def test_label_shift_is_the_total_variation_distance():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)  # 0.6 / 0.3 / 0.1
    # calibration rows 0, 6, 9: 1/3 each -> |0.6 - 1/3| + |0.3 - 1/3| + |0.1 - 1/3|
    assert label_shift(y, np.array([0, 6, 9])) == pytest.approx(
        (0.6 - 1 / 3 + 1 / 3 - 0.3 + 1 / 3 - 0.1) / 2
    )
    assert label_shift(y, np.arange(10)) == 0.0


def _exact_total_variation(counts_a, counts_b):
    n_a, n_b = sum(counts_a), sum(counts_b)
    return (
        sum(
            abs(Fraction(int(a), n_a) - Fraction(int(b), n_b))
            for a, b in zip(counts_a, counts_b, strict=True)
        )
        / 2
    )


def test_label_shift_and_class_imbalance_are_exact_whatever_the_class_count():
    # A float sum of the frequencies depends in its last bits on numpy's pairwise
    # summation (16 terms group differently from 15), which rounding to 12 places
    # does not always hide: counting one more (empty) class gave 0.077236927253
    # here, where the distance is 9787 / 126714 = 0.07723692725350000954...
    # (a newcomer's example, against a mutant once listed as equivalent). Both
    # are now sums of integers and one division: exact, then rounded.
    sizes = [39, 100, 39, 92, 82, 118, 172, 73, 31, 195, 67, 56, 58, 10, 161]
    taken = [9, 22, 8, 15, 24, 23, 33, 21, 7, 50, 17, 10, 11, 2, 42]
    y = np.repeat(np.arange(15), sizes)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    rows = np.concatenate(
        [np.arange(a, a + d) for a, d in zip(starts, taken, strict=True)]
    )
    assert _exact_total_variation(sizes, taken) == Fraction(9787, 126714)
    assert label_shift(y, rows) == 0.077236927254
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_classes = int(rng.integers(2, 40))
        y = rng.integers(0, n_classes, int(rng.integers(n_classes, 3000)))
        y[:n_classes] = np.arange(n_classes)  # every class present
        rows = rng.choice(y.size, int(rng.integers(1, y.size)), replace=False)
        train, calibration = np.bincount(y), np.bincount(y[rows], minlength=n_classes)
        exact = _exact_total_variation(train, calibration)
        assert label_shift(y, rows) == round(float(exact), 12)
        balanced = _exact_total_variation(train, np.ones(n_classes, dtype=int))
        assert class_imbalance(y) == round(float(balanced), 12)


def test_class_imbalance_is_the_distance_to_equal_frequencies():
    assert class_imbalance(np.repeat([0, 1], [90, 10])) == pytest.approx(0.4)
    assert class_imbalance(np.repeat([0, 1], [60, 40])) == pytest.approx(0.1)
    assert class_imbalance(np.repeat([0, 1, 2], [10, 10, 10])) == 0.0


def test_stratified_split_accepts_a_class_of_two_samples():
    """Two samples are enough: one to index, one to calibrate."""
    y = np.repeat([0, 1, 2], [30, 30, 2])
    index, calibration = stratified_calibration_split(y, 31, np.random.RandomState(0))
    assert np.bincount(y[calibration]).tolist() == [15, 15, 1]
    assert np.bincount(y[index]).tolist() == [15, 15, 1]


def test_label_shift_when_the_calibration_rows_miss_the_last_class():
    """A class too rare for the stratified split (its share rounds to zero) has
    no calibration point: its whole frequency counts in the distance."""
    y = np.repeat([0, 1, 2], [50, 45, 5])
    _, calibration = stratified_calibration_split(y, 10, np.random.RandomState(0))
    assert 2 not in y[calibration]
    # 5 / 5 / 0 against 0.5 / 0.45 / 0.05: (0 + 0.05 + 0.05) / 2
    assert label_shift(y, calibration) == 0.05
    assert label_shift(y, np.flatnonzero(y == 0)) == 0.5


def test_distances_are_rounded_to_12_decimals():
    """Rounded so that float noise does not show (0.4, not 0.39999999999999997),
    and to no fewer decimals than that."""
    y = np.array([0, 1, 2])
    assert label_shift(y, np.array([0])) == 0.666666666667  # (2/3 + 1/3 + 1/3) / 2
    assert class_imbalance(np.array([0, 0, 1])) == 0.166666666667  # (1/6 + 1/6) / 2
    assert label_shift(np.repeat([0, 1], [90, 10]), np.r_[0:5, 90:95]) == 0.4


@pytest.mark.parametrize("size", [3, 27])
def test_stratified_split_with_exactly_one_point_per_class_on_a_side(size):
    y = np.repeat([0, 1, 2], [10, 10, 10])
    index, calibration = stratified_calibration_split(y, size, np.random.RandomState(0))
    assert calibration.size == size and index.size == 30 - size
    assert min(np.bincount(y[index]).min(), np.bincount(y[calibration]).min()) == 1


def test_stratified_split_size_error_in_full():
    with pytest.raises(ValueError) as info:
        stratified_calibration_split(
            np.repeat([0, 1, 2], [20, 20, 20]), 58, np.random.RandomState(0)
        )
    assert str(info.value) == (
        "calibration_size=58 splits 60 samples into 2 indexed and 58 calibration "
        "points; calibration_split='stratified' needs at least one point per class "
        "(3) on each side."
    )
