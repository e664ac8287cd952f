"""Plots hold the numbers they claim; neighbour agreement; bad input."""

from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator

from skdknn import DeepKNNClassifier
from skdknn.metrics import (
    _label_agreement,
    neighbor_label_agreement,
    ood_auroc,
)
from skdknn.nets import MLP
from skdknn.plotting import (
    PALETTE,
    ExplanationDisplay,
    ReliabilityDisplay,
    plot_accuracy_vs_distortion,
    plot_accuracy_vs_eps,
    plot_adversarial_grid,
    plot_credibility_histograms,
    plot_explanation,
    plot_neighbor_correctness,
    plot_ood,
    plot_reliability_diagrams,
    plot_reliability_diagrams_from_predictions,
)

RED = to_rgba(PALETTE["wrong"])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def digits():
    """400 training digits (flat rows of 8x8 images in [0, 1]) and 100 others."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    return X[:400], y[:400], X[400:500], y[400:500]


@pytest.fixture(scope="module")
def dknn(digits):
    X, y, _, _ = digits
    return DeepKNNClassifier(
        n_neighbors=5, calibration_size=50, max_epochs=3, batch_size=64, random_state=0
    ).fit(X, y)


@pytest.fixture(scope="module")
def image_dknn(digits):
    """The same on (n, 1, 8, 8) images, through the MLP."""
    X, y, _, _ = digits
    return DeepKNNClassifier(
        net=MLP,
        n_neighbors=4,
        calibration_size=50,
        max_epochs=2,
        batch_size=64,
        random_state=0,
    ).fit(X.reshape(-1, 1, 8, 8), y)


def heights(bars):
    return np.array([bar.get_height() for bar in bars], dtype=float)


# -- reliability diagrams --------------------------------------------------------------

Y_TRUE = np.array([0, 1, 2, 0, 1, 2, 0, 1])
Y_PRED = np.array([0, 0, 2, 0, 2, 2, 0, 1])  # correct: 1 0 1 1 0 1 1 1
SCORES = np.array([0.1, 0.2, 0.3, 0.55, 0.6, 0.9, 1.0, 0.0])


def test_reliability_bins_by_hand():
    disp = ReliabilityDisplay.from_predictions(Y_TRUE, Y_PRED, SCORES, n_bins=4)
    # bins of width 0.25: [0.1, 0.2, 0.0] [0.3] [0.55, 0.6] [0.9, 1.0 (last bin)]
    np.testing.assert_allclose(disp.bin_edges, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(disp.counts, [3, 1, 2, 2])
    np.testing.assert_allclose(disp.accuracy, [2 / 3, 1, 0.5, 1])
    np.testing.assert_allclose(heights(disp.bars_), disp.accuracy)
    np.testing.assert_allclose([b.get_x() for b in disp.bars_], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose([b.get_width() for b in disp.bars_], 0.25)
    np.testing.assert_allclose(disp.line_.get_xdata(), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_array_equal(disp.line_.get_ydata(), [3, 1, 2, 2])
    assert disp.line_.axes is disp.count_ax_
    np.testing.assert_array_equal(disp.diagonal_.get_ydata(), [0, 1])
    assert disp.figure_ is disp.ax_.figure
    disp.figure_.canvas.draw()


def test_reliability_empty_bins_are_nan_and_drawn():
    disp = ReliabilityDisplay.from_predictions(
        [1, 1, 0], [1, 0, 0], [0.05, 0.95, 0.97], n_bins=10, name="credibility"
    )
    expected = np.full(10, np.nan)
    expected[0], expected[9] = 1.0, 0.5
    np.testing.assert_array_equal(disp.accuracy, expected)
    np.testing.assert_array_equal(heights(disp.bars_), expected)
    np.testing.assert_array_equal(disp.counts, [1, 0, 0, 0, 0, 0, 0, 0, 0, 2])
    assert disp.ax_.get_title() == "credibility"
    disp.figure_.canvas.draw()


def test_reliability_plot_on_given_axes_with_kwargs():
    fig, ax = plt.subplots()
    disp = ReliabilityDisplay(bin_edges=[0, 0.5, 1], accuracy=[0.2, 0.9], counts=[4, 6])
    assert disp.plot(ax=ax, name="x", color="green") is disp
    assert disp.ax_ is ax and disp.figure_ is fig
    assert disp.bars_[0].get_facecolor()[:3] == to_rgba("green")[:3]
    assert ax.get_xlabel() == "x"


@pytest.mark.parametrize(
    "args, message",
    [
        ((Y_TRUE[:-1], Y_PRED, SCORES), "same length"),
        ((Y_TRUE, Y_PRED, SCORES * 1.5), r"\[0, 1\]"),
        ((Y_TRUE, Y_PRED, -SCORES), r"\[0, 1\]"),
        ((Y_TRUE, Y_PRED, np.where(SCORES > 0.5, np.nan, SCORES)), "NaN"),
        (([], [], []), "non-empty"),
    ],
)
def test_reliability_bad_predictions(args, message):
    with pytest.raises(ValueError, match=message):
        ReliabilityDisplay.from_predictions(*args)
    assert not plt.get_fignums()  # no figure left behind


def test_reliability_bad_n_bins():
    with pytest.raises(ValueError, match="n_bins"):
        ReliabilityDisplay.from_predictions(Y_TRUE, Y_PRED, SCORES, n_bins=0)


def softmax_by_hand(clf, X):
    module = clf.module_.eval()
    with torch.no_grad():
        return torch.softmax(module(torch.from_numpy(X)).double(), dim=1).numpy()


def test_reliability_from_estimator_credibility(dknn, digits):
    _, _, X, y = digits
    disp = ReliabilityDisplay.from_estimator(dknn, X, y, n_bins=5)
    credibility, y_pred = dknn.credibility(X), dknn.predict(X)
    bins = np.minimum((credibility * 5).astype(int), 4)
    np.testing.assert_array_equal(disp.counts, np.bincount(bins, minlength=5))
    for b in range(5):
        if disp.counts[b]:
            assert disp.accuracy[b] == pytest.approx(
                np.mean(y_pred[bins == b] == y[bins == b])
            )
    assert disp.ax_.get_title() == "DkNN credibility"


@pytest.mark.parametrize("wrap", ["dknn", "frozen", "skorch", "module"])
def test_reliability_from_estimator_softmax(dknn, digits, wrap):
    _, _, X, y = digits
    model = {
        "dknn": dknn,
        "frozen": FrozenEstimator(dknn),
        "skorch": dknn.net_,
        "module": dknn.module_,
    }[wrap]
    disp = ReliabilityDisplay.from_estimator(model, X, y, score="softmax", n_bins=5)
    proba = softmax_by_hand(dknn, X)
    bins = np.minimum((proba.max(axis=1) * 5).astype(int), 4)
    correct = proba.argmax(axis=1) == y
    np.testing.assert_array_equal(disp.counts, np.bincount(bins, minlength=5))
    expected = [
        correct[bins == b].mean() if (bins == b).any() else np.nan for b in range(5)
    ]
    np.testing.assert_allclose(disp.accuracy, expected)
    assert disp.name == "softmax confidence"


def test_reliability_from_estimator_bad_score(dknn, digits):
    _, _, X, y = digits
    with pytest.raises(ValueError, match="Unknown score 'entropy'"):
        ReliabilityDisplay.from_estimator(dknn, X, y, score="entropy")
    with pytest.raises(TypeError, match="DeepKNNClassifier"):
        ReliabilityDisplay.from_estimator(dknn.module_, X, y, score="credibility")
    with pytest.raises(NotFittedError):
        ReliabilityDisplay.from_estimator(DeepKNNClassifier(), X, y)


def test_reliability_diagrams_side_by_side(dknn, digits):
    _, _, X, y = digits
    fig, axes, (cred, soft) = plot_reliability_diagrams(dknn, X, y, n_bins=4)
    assert len(axes) == 2 and len(fig.axes) == 4  # two diagrams and their count axes
    assert [ax.get_title() for ax in axes] == ["DkNN credibility", "softmax confidence"]
    alone = ReliabilityDisplay.from_estimator(dknn, X, y, n_bins=4)
    np.testing.assert_array_equal(cred.counts, alone.counts)
    np.testing.assert_array_equal(cred.accuracy, alone.accuracy)
    alone = ReliabilityDisplay.from_estimator(dknn, X, y, score="softmax", n_bins=4)
    np.testing.assert_array_equal(soft.counts, alone.counts)
    assert cred.ax_ is axes[0] and soft.ax_ is axes[1]
    fig.canvas.draw()


def test_reliability_diagrams_from_predictions():
    fig, axes, (cred, soft) = plot_reliability_diagrams_from_predictions(
        Y_TRUE, Y_PRED, SCORES, Y_TRUE, np.ones(8), n_bins=4
    )
    np.testing.assert_allclose(heights(cred.bars_), [2 / 3, 1, 0.5, 1])
    np.testing.assert_array_equal(soft.counts, [0, 0, 0, 8])
    np.testing.assert_array_equal(soft.line_.get_ydata(), [0, 0, 0, 8])
    with pytest.raises(ValueError, match="same length"):
        plot_reliability_diagrams_from_predictions(
            Y_TRUE, Y_PRED, SCORES, Y_TRUE, np.ones(7)
        )


# -- histograms ------------------------------------------------------------------------


def test_credibility_histograms_are_densities():
    rng = np.random.default_rng(0)
    scores = {"clean": rng.uniform(0.5, 1, 50), "FGSM": rng.uniform(0, 0.4, 20)}
    fig, ax = plot_credibility_histograms(scores, bins=10)
    assert len(ax.patches) == 2
    for patch, values in zip(ax.patches, scores.values(), strict=True):
        density, edges, _ = patch.get_data()
        np.testing.assert_allclose(edges, np.linspace(0, 1, 11))
        expected, _ = np.histogram(values, bins=edges, density=True)
        np.testing.assert_allclose(density, expected)
        assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        f"clean (n=50, mean={scores['clean'].mean():.3f})",
        f"FGSM (n=20, mean={scores['FGSM'].mean():.3f})",
    ]
    assert ax.get_xlabel() == "credibility"
    fig.canvas.draw()


def test_credibility_histograms_given_edges_and_axes():
    fig, ax = plt.subplots()
    out_fig, out_ax = plot_credibility_histograms(
        {"a": [0.1, 0.2, 0.6]}, bins=[0, 0.5, 1], ax=ax, xlabel="softmax"
    )
    assert (out_fig, out_ax) == (fig, ax)
    np.testing.assert_allclose(ax.patches[0].get_data()[0], [4 / 3, 2 / 3])
    assert ax.get_xlabel() == "softmax"


@pytest.mark.parametrize(
    "scores, bins, message",
    [
        ({}, 20, "non-empty mapping"),
        ([0.1, 0.2], 20, "mapping"),
        ({"a": []}, 20, "non-empty"),
        ({"a": [0.1, np.inf]}, 20, "NaN or infinite"),
        ({"a": [0.1]}, 0, "bins"),
        ({"a": [0.1]}, [0.5, 0.2], "increasing"),
    ],
)
def test_credibility_histograms_bad_input(scores, bins, message):
    with pytest.raises(ValueError, match=message):
        plot_credibility_histograms(scores, bins=bins)


def test_plot_ood_panels_and_auroc():
    rng = np.random.default_rng(1)
    cred = {"MNIST": rng.uniform(0.3, 1, 40), "noise": rng.uniform(0, 0.5, 30)}
    soft = {"MNIST": rng.uniform(0.9, 1, 40), "noise": rng.uniform(0.8, 1, 30)}
    fig, axes = plot_ood({"DkNN credibility": cred, "softmax confidence": soft})
    assert len(axes) == 2
    assert [ax.get_title() for ax in axes] == ["DkNN credibility", "softmax confidence"]
    for ax, sets in zip(axes, [cred, soft], strict=True):
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        auroc = ood_auroc(sets["MNIST"], sets["noise"])
        assert texts[1].endswith(f"AUROC {auroc:.2f}")
        assert "AUROC" not in texts[0]
        assert len(ax.patches) == 2
    fig.canvas.draw()


def test_plot_ood_in_distribution_key():
    scores = {"cred": {"noise": [0.0, 0.1], "MNIST": [0.8, 0.9]}}
    _, axes = plot_ood(scores, in_distribution="MNIST")
    texts = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert texts[0].endswith("AUROC 1.00") and "AUROC" not in texts[1]
    with pytest.raises(ValueError, match="in_distribution='SVHN'"):
        plot_ood(scores, in_distribution="SVHN")
    with pytest.raises(ValueError, match="one Axes per kind"):
        plot_ood(scores, axes=plt.subplots(1, 2)[1])


# -- accuracy against eps and distortion -----------------------------------------------

EPS = [0.0, 0.1, 0.25]
ACCURACY = {
    "FGSM": {
        "CNN": [0.99, 0.5, 0.1],
        "kNN": [0.98, 0.6, 0.3],
        "DkNN": [0.98, 0.7, 0.5],
    },
    "BIM": {"CNN": [0.99, 0.2, 0.0], "DkNN": [0.98, 0.4, 0.2]},
}


def test_accuracy_vs_eps_lines():
    fig, axes = plot_accuracy_vs_eps(EPS, ACCURACY)
    assert [ax.get_title() for ax in axes] == ["FGSM", "BIM"]
    for ax, models in zip(axes, ACCURACY.values(), strict=True):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == list(models)
        for line, values in zip(lines, models.values(), strict=True):
            np.testing.assert_allclose(line.get_xdata(), EPS)
            np.testing.assert_allclose(line.get_ydata(), values)
    # one colour per model across panels
    dknn_colors = {ax.get_lines()[-1].get_color() for ax in axes}
    assert len(dknn_colors) == 1
    assert axes[0].get_ylabel() == "accuracy"
    fig.canvas.draw()


def test_accuracy_vs_eps_per_attack_eps_percent_and_given_axes():
    fig, ax = plt.subplots()
    accuracy = {"BIM": {"DkNN": [98.0, 40.0]}}
    out_fig, axes = plot_accuracy_vs_eps({"BIM": [0.0, 0.3]}, accuracy, ax=ax)
    assert out_fig is fig and axes[0] is ax
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [0.0, 0.3])
    assert ax.get_ylabel() == "accuracy (%)"


@pytest.mark.parametrize(
    "eps, accuracy, ax_count, message",
    [
        (EPS[:2], ACCURACY, None, "different lengths"),
        ({"FGSM": EPS}, ACCURACY, None, "no entry for attack 'BIM'"),
        (EPS, {"FGSM": {"CNN": [0.5, 120.0, 0.1]}}, None, r"\[0, 100\]"),
        (EPS, {}, None, "non-empty mapping"),
        (EPS, ACCURACY, 1, "one Axes per attack"),
    ],
)
def test_accuracy_vs_eps_bad_input(eps, accuracy, ax_count, message):
    ax = None if ax_count is None else plt.subplots(1, ax_count)[1]
    with pytest.raises(ValueError, match=message):
        plot_accuracy_vs_eps(eps, accuracy, ax=ax)


def test_accuracy_vs_distortion():
    distortion = {"FGSM": {"kNN": [0.0, 2.5, np.nan], "DkNN": [0.0, 3.0, 4.0]}}
    accuracy = {"FGSM": {"kNN": [0.9, 0.5, 0.4], "DkNN": [0.9, 0.6, 0.5]}}
    fig, axes = plot_accuracy_vs_distortion(distortion, accuracy)
    lines = axes[0].get_lines()
    np.testing.assert_allclose(lines[1].get_xdata(), [0.0, 3.0, 4.0])
    np.testing.assert_allclose(lines[0].get_xdata(), [0.0, 2.5, np.nan])
    assert axes[0].get_xlabel() == "mean L2 distortion"
    with pytest.raises(ValueError, match="no entry for model 'DkNN'"):
        plot_accuracy_vs_distortion({"FGSM": {"kNN": [0, 1, 2]}}, accuracy)
    fig.canvas.draw()


# -- neighbour agreement ---------------------------------------------------------------


def test_label_agreement_by_hand():
    neighbor_labels = np.array(
        [[[0, 0, 1], [0, 1, 1]], [[2, 2, 2], [1, 2, 0]]]
    )  # 2 inputs, 2 layers, k = 3
    agreement = _label_agreement(neighbor_labels, [0, 2])
    np.testing.assert_allclose(agreement, [(2 + 3) / 6, (1 + 1) / 6])
    strings = np.array(["a", "b"])[neighbor_labels.clip(0, 1)]
    np.testing.assert_allclose(_label_agreement(strings, ["a", "b"]), [5 / 6, 3 / 6])
    with pytest.raises(ValueError, match="different numbers of samples"):
        _label_agreement(neighbor_labels, [0, 1, 2])
    with pytest.raises(ValueError, match="n_layers"):
        _label_agreement(neighbor_labels[0], [0, 2])


def test_neighbor_label_agreement_matches_kneighbors(dknn, digits):
    X_train, y_train, X, y = digits
    _, indices = dknn.kneighbors(X)
    expected = (y_train[indices] == y[:, None, None]).mean(axis=(0, 2))
    agreement = neighbor_label_agreement(dknn, X, y)
    assert agreement.shape == (len(dknn.layers_),)
    np.testing.assert_allclose(agreement, expected)
    np.testing.assert_allclose(
        neighbor_label_agreement(FrozenEstimator(dknn), X, y), expected
    )
    with pytest.raises(TypeError, match="DeepKNNClassifier"):
        neighbor_label_agreement(dknn.module_, X, y)
    with pytest.raises(ValueError, match="different numbers of samples"):
        neighbor_label_agreement(dknn, X, y[:-1])


def test_plot_neighbor_correctness_bars():
    correctness = {"clean": [0.95, 0.97, 0.99], "FGSM": [0.9, 0.6, 0.2]}
    fig, ax = plot_neighbor_correctness(correctness, ["relu1", "relu2", "logits"])
    assert [c.get_label() for c in ax.containers] == ["clean", "FGSM"]
    for container, values in zip(ax.containers, correctness.values(), strict=True):
        np.testing.assert_allclose(heights(container), values)
    # the bars of one layer sit side by side around its tick
    centres = [[b.get_x() + b.get_width() / 2 for b in c] for c in ax.containers]
    np.testing.assert_allclose(np.mean(centres, axis=0), [0, 1, 2], atol=1e-12)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["relu1", "relu2", "logits"]
    fig.canvas.draw()


def test_plot_neighbor_correctness_bad_input():
    with pytest.raises(ValueError, match="2 values for 3 layers"):
        plot_neighbor_correctness({"clean": [0.9, 0.8]}, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_neighbor_correctness({"clean": [90, 80]}, ["a", "b"])
    with pytest.raises(ValueError, match="at least one layer"):
        plot_neighbor_correctness({"clean": [0.9]}, [])


# -- adversarial grid ------------------------------------------------------------------


def test_adversarial_grid_images_and_titles():
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(5, 1, 6, 6))
    adv = np.clip(clean + 0.3, 0, 1)
    images = {0.0: clean, 0.3: adv.reshape(5, 36)}  # flat square rows work too
    fig, axes = plot_adversarial_grid(
        images,
        n_examples=4,
        labels=[1, 2, 3, 4, 5],
        predictions={0.0: [1, 2, 3, 4, 5], 0.3: [1, 7, 3, 7, 5]},
    )
    assert axes.shape == (2, 4)
    assert sum(len(ax.images) for ax in axes.flat) == 8
    for c in range(4):
        np.testing.assert_allclose(axes[0, c].images[0].get_array(), clean[c, 0])
        np.testing.assert_allclose(axes[1, c].images[0].get_array(), adv[c, 0])
    assert [ax.get_title() for ax in axes[1]] == [
        "pred 1",
        "pred 7",
        "pred 3",
        "pred 7",
    ]
    assert to_rgba(axes[1, 1].title.get_color()) == RED
    assert axes[1, 0].title.get_color() == "black"
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["clean\n(eps = 0)", "eps = 0.3"]
    fig.canvas.draw()


def test_adversarial_grid_fewer_examples_and_labels_only():
    X = np.random.default_rng(0).uniform(size=(3, 4, 4))
    fig, axes = plot_adversarial_grid({"clean": X}, n_examples=8, labels=[5, 6, 7])
    assert axes.shape == (1, 3)
    assert [ax.get_title() for ax in axes[0]] == ["label 5", "label 6", "label 7"]
    assert axes[0, 0].get_ylabel() == "clean"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"images": {0.0: np.zeros((3, 4, 4)), 0.1: np.zeros((2, 4, 4))}},
            "same shape",
        ),
        ({"images": {0.0: np.zeros((3, 10))}}, "not square"),
        ({"images": {0.0: np.zeros((3, 4, 4))}, "labels": [1, 2]}, "labels"),
        (
            {"images": {0.0: np.zeros((3, 4, 4))}, "predictions": {0.5: [1, 2, 3]}},
            "key 0.5",
        ),
        ({"images": {0.0: np.zeros((3, 4, 4))}, "n_examples": 0}, "n_examples"),
        ({"images": {}}, "non-empty mapping"),
    ],
)
def test_adversarial_grid_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_adversarial_grid(**kwargs)


# -- explanation by example ------------------------------------------------------------


def test_explanation_shows_the_neighbours(dknn, digits):
    X_train, y_train, X, _ = digits
    disp = ExplanationDisplay.from_estimator(dknn, X[3], X_train, n_neighbors=4)
    _, indices = dknn.kneighbors(X[3:4])
    prediction = dknn.predict(X[3:4])[0]
    assert disp.axes_.shape == (3, 5)
    assert disp.prediction == prediction
    assert disp.credibility == pytest.approx(dknn.credibility(X[3:4])[0])
    np.testing.assert_allclose(
        disp.axes_[0, 0].images[0].get_array(), X[3].reshape(8, 8)
    )
    for row, layer in enumerate(dknn.layers_):
        assert disp.axes_[row, 1].get_ylabel() == layer
        np.testing.assert_array_equal(disp.neighbor_indices[row], indices[0, row, :4])
        for j in range(4):
            idx = indices[0, row, j]
            ax = disp.axes_[row, j + 1]
            np.testing.assert_allclose(
                ax.images[0].get_array(), X_train[idx].reshape(8, 8)
            )
            assert ax.get_title() == str(y_train[idx])
            differs = y_train[idx] != prediction
            assert (ax.spines["left"].get_edgecolor() == RED) == differs
    # only the first row shows the input
    assert all(not ax.images for ax in disp.axes_[1:, 0])
    disp.figure_.canvas.draw()


def test_explanation_on_images_and_given_labels(image_dknn, digits):
    X_train, y_train, X, _ = digits
    images = X_train.reshape(-1, 1, 8, 8)
    names = np.array([f"digit {d}" for d in y_train])
    fig, axes = plot_explanation(
        image_dknn, X[0].reshape(1, 1, 8, 8), images, n_neighbors=2, y_train=names
    )
    _, indices = image_dknn.kneighbors(X[:1].reshape(1, 1, 8, 8))
    assert axes.shape == (len(image_dknn.layers_), 3)
    idx = indices[0, -1, 1]
    np.testing.assert_allclose(axes[-1, 2].images[0].get_array(), images[idx, 0])
    assert axes[-1, 2].get_title() == names[idx]
    fig.canvas.draw()


def test_explanation_bad_input(dknn, digits):
    X_train, y_train, X, _ = digits
    with pytest.raises(
        ValueError, match="X_train must be the X passed to fit, with 400"
    ):
        plot_explanation(dknn, X[0], X_train[:350])
    with pytest.raises(ValueError, match=r"n_neighbors must be an int in \[1, 5\]"):
        plot_explanation(dknn, X[0], X_train, n_neighbors=6)
    with pytest.raises(ValueError, match="y_train must have shape"):
        plot_explanation(dknn, X[0], X_train, y_train=y_train[:10])
    with pytest.raises(ValueError, match="x must be one input"):
        plot_explanation(dknn, X[:2], X_train)
    with pytest.raises(TypeError, match="DeepKNNClassifier"):
        plot_explanation(dknn.module_, X[0], X_train)


# -- imports ---------------------------------------------------------------------------


def test_importing_skdknn_does_not_import_pyplot():
    code = (
        "import sys, skdknn, skdknn.plotting, skdknn.metrics, skdknn.datasets; "
        "sys.exit('matplotlib.pyplot' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- one palette, legends that cover nothing ------------------------------------------


def _overlaps(artist_a, artist_b, renderer):
    a = artist_a.get_window_extent(renderer)
    b = artist_b.get_window_extent(renderer)
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_reliability_legend_covers_no_bar():
    # every bin full and right: any legend inside the axes would cover a bar
    y = np.repeat(np.arange(10), 3)
    scores = np.repeat(np.linspace(0.05, 0.95, 10), 3)
    fig, axes, _ = plot_reliability_diagrams_from_predictions(y, y, scores, y, scores)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        legend = ax.get_legend()
        assert legend is not None
        for bar in ax.patches:
            assert not _overlaps(legend, bar, renderer)


def test_credibility_small_multiples_one_panel_per_attack():
    rng = np.random.default_rng(0)
    scores = {
        "clean": rng.uniform(0.5, 1, 50),
        **{f"attack {i}": rng.uniform(0, 0.5, 40) for i in range(5)},
    }
    fig, axes = plot_credibility_histograms(scores, reference="clean", ncols=3)
    assert len(axes) == 5
    for ax, name in zip(axes, list(scores)[1:], strict=True):
        # two curves per panel: the clean reference and this attack
        assert len(ax.patches) == 2
        assert ax.get_title().startswith(name)
        assert to_rgba(ax.patches[0].get_facecolor()[:3]) == to_rgba(PALETTE["clean"])
    # the reference is explained once, outside the panels
    assert len(fig.legends) == 1
    with pytest.raises(ValueError, match="reference='BIM'"):
        plot_credibility_histograms(scores, reference="BIM")


def test_accuracy_vs_eps_starts_at_zero():
    fig, axes = plot_accuracy_vs_eps(
        [0.0, 0.1, 0.3], {"FGSM": {"CNN": [0.9, 0.5, 0.1], "DkNN": [0.9, 0.8, 0.6]}}
    )
    assert axes[0].get_xlim()[0] == 0.0
    fig, axes = plot_accuracy_vs_eps(
        [0.1, 0.3], {"FGSM": {"CNN": [0.5, 0.1], "DkNN": [0.8, 0.6]}}
    )
    assert axes[0].get_xlim()[0] == 0.0


def test_one_colour_per_meaning_across_figures(dknn, digits):
    """A model, a kind of input and a wrong label have one colour in every figure."""
    rgb = {name: to_rgba(color) for name, color in PALETTE.items()}
    y = np.array([0, 1, 1, 0])
    s = np.array([0.9, 0.8, 0.3, 0.6])
    _, _, (cred, soft) = plot_reliability_diagrams_from_predictions(y, y, s, y, s)
    assert to_rgba(cred.bars_[0].get_facecolor(), 1) == rgb["DkNN"]
    assert to_rgba(soft.bars_[0].get_facecolor(), 1) == rgb["CNN"]
    _, axes = plot_accuracy_vs_eps(
        [0.0, 0.1],
        {"FGSM": {"CNN": [1, 0], "kNN": [1, 0.5], "DkNN": [1, 0.7], "mine": [1, 1]}},
    )
    lines = {line.get_label(): to_rgba(line.get_color()) for line in axes[0].lines}
    assert lines["CNN"] == rgb["CNN"]
    assert lines["kNN"] == rgb["kNN"]
    assert lines["DkNN"] == rgb["DkNN"]
    assert lines["mine"] not in rgb.values()
    _, ax = plot_neighbor_correctness({"clean": [1.0], "FGSM": [0.5]}, ["relu1"])
    assert to_rgba(ax.containers[0][0].get_facecolor()) == rgb["clean"]
    fig, ax = plot_credibility_histograms({"clean": s, "FGSM": s / 2})
    assert to_rgba(ax.patches[0].get_edgecolor()) == rgb["clean"]
    _, panels = plot_ood({"credibility": {"MNIST": s, "noise": s / 3}})
    assert to_rgba(panels[0].patches[0].get_facecolor(), 1) == rgb["clean"]
    # red = a label that is not the true label, in the explanation as in the grid
    X_train, y_train, X, y_test = digits
    disp = ExplanationDisplay.from_estimator(
        dknn, X[3], X_train, n_neighbors=4, label=y_test[3]
    )
    for row in range(disp.neighbor_labels.shape[0]):
        for j in range(4):
            ax = disp.axes_[row, j + 1]
            wrong = disp.neighbor_labels[row, j] != y_test[3]
            assert (to_rgba(ax.spines["left"].get_edgecolor()) == RED) == wrong


def test_explanation_has_a_legend_for_its_colours(dknn, digits):
    X_train, _, X, y_test = digits
    disp = ExplanationDisplay.from_estimator(
        dknn, X[3], X_train, n_neighbors=4, label=y_test[3]
    )
    texts = [t.get_text() for t in disp.legend_.get_texts()]
    n_wrong = int((disp.neighbor_labels != y_test[3]).sum())
    assert texts[0] == (
        f"neighbour label is not the true label ({y_test[3]}): {n_wrong} of "
        f"{disp.neighbor_labels.size}"
    )
    assert to_rgba(disp.legend_.get_patches()[0].get_edgecolor()) == RED
    assert disp.legend_ in disp.figure_.legends
    # without the true label, the rule is the prediction's, and says so
    disp = ExplanationDisplay.from_estimator(dknn, X[3], X_train, n_neighbors=4)
    assert "not the prediction" in disp.legend_.get_texts()[0].get_text()
