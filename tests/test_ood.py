"""Out-of-distribution images and the AUROC of separating them by a score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from skdknn.datasets import make_ood_images
from skdknn.metrics import ood_auroc


@pytest.fixture(scope="module")
def X_like():
    """Twelve float32 "images" in [0, 1] whose pixels all differ."""
    return np.random.default_rng(0).uniform(size=(12, 1, 28, 28)).astype(np.float32)


def neighbour_difference(images):
    """Mean absolute difference of horizontally adjacent pixels."""
    return float(np.abs(np.diff(images, axis=-1)).mean())


@pytest.mark.parametrize("kind", ["noise", "shuffled", "patches"])
@pytest.mark.parametrize(
    "shape", [(12, 1, 28, 28), (12, 28, 28), (12, 784), (12, 3, 16, 16)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_dtype_and_range(kind, shape, dtype):
    X = np.random.default_rng(0).uniform(size=shape).astype(dtype)
    out = make_ood_images(X, 5, kind=kind, random_state=0)
    assert out.shape == (5, *shape[1:])
    assert out.dtype == dtype
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, make_ood_images(X, 5, kind=kind, random_state=0))
    assert not np.array_equal(out, make_ood_images(X, 5, kind=kind, random_state=1))


def test_default_n_samples(X_like):
    assert make_ood_images(X_like).shape == X_like.shape


def test_noise_is_uniform(X_like):
    noise = make_ood_images(X_like, 200, kind="noise", random_state=0)
    assert noise.mean() == pytest.approx(0.5, abs=0.01)
    assert np.mean(noise < 0.25) == pytest.approx(0.25, abs=0.01)


def test_shuffled_permutes_the_pixels_of_real_images(X_like):
    out = make_ood_images(X_like, 30, kind="shuffled", random_state=0)  # > 12: repeats
    sources = np.sort(X_like.reshape(12, -1), axis=1)
    for image in out.reshape(30, -1):
        match = np.flatnonzero((np.sort(image) == sources).all(axis=1))
        assert match.size == 1
        assert not np.array_equal(image, X_like.reshape(12, -1)[match[0]])
    # no more repeats than needed: every source image is used
    firsts = {float(np.sort(image)[0]) for image in out.reshape(30, -1)}
    assert len(firsts) == 12


def test_shuffled_without_replacement_when_enough(X_like):
    out = make_ood_images(X_like, 12, kind="shuffled", random_state=3)
    assert len({float(image.min()) for image in out}) == 12


def test_shuffled_moves_the_channels_of_a_pixel_together():
    grey = np.random.default_rng(0).uniform(size=(4, 1, 8, 8))
    colour = np.concatenate([grey, grey / 2, grey / 4], axis=1)
    out = make_ood_images(colour, 6, kind="shuffled", random_state=0)
    np.testing.assert_allclose(out[:, 1], out[:, 0] / 2)
    np.testing.assert_allclose(out[:, 2], out[:, 0] / 4)


def test_patches_are_smooth_natural_images(X_like):
    patches = make_ood_images(X_like, 50, kind="patches", random_state=0)
    noise = make_ood_images(X_like, 50, kind="noise", random_state=0)
    # photographs: neighbouring pixels are alike, unlike noise
    assert neighbour_difference(patches) < neighbour_difference(noise) / 3
    # and the patches differ from one another
    assert np.std(patches.reshape(50, -1).mean(axis=1)) > 0.02


def test_colour_patches_keep_colour():
    X = np.zeros((2, 3, 32, 32), dtype=np.float32)
    patches = make_ood_images(X, 20, kind="patches", random_state=0)
    assert not np.allclose(patches[:, 0], patches[:, 1])


@pytest.mark.parametrize(
    "X, kwargs, message",
    [
        (np.zeros((3, 784), np.float32), {"kind": "blur"}, "Unknown kind 'blur'"),
        (np.zeros((3, 784), np.uint8), {}, "float images"),
        (np.full((3, 784), 2.0), {}, r"scaled to \[0, 1\]"),
        (np.zeros(784), {}, "stack of images"),
        (np.zeros((0, 784)), {}, "non-empty"),
        (np.zeros((2, 1, 1, 28, 28)), {}, "stack of images"),
        (np.zeros((3, 10)), {"kind": "patches"}, "not square"),
        (np.zeros((3, 2, 8, 8)), {"kind": "patches"}, "2 channels"),
        (np.zeros((1, 1, 500, 500)), {"kind": "patches"}, "cannot make 500x500"),
        (np.zeros((3, 784)), {"n_samples": 0}, "n_samples"),
        (np.zeros((3, 784)), {"n_samples": 2.5}, "n_samples"),
    ],
)
def test_bad_input(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_ood_images(X, **kwargs)


def test_noise_and_shuffled_accept_non_square_rows():
    X = np.random.default_rng(0).uniform(size=(3, 10))
    assert make_ood_images(X, 4, kind="noise").shape == (4, 10)
    shuffled = make_ood_images(X, 4, kind="shuffled", random_state=0)
    assert shuffled.shape == (4, 10)


# -- AUROC -----------------------------------------------------------------------------


def test_ood_auroc_by_hand():
    # in-distribution above out-of-distribution in 5 of the 6 pairs
    assert ood_auroc([0.9, 0.8, 0.4], [0.1, 0.5]) == pytest.approx(5 / 6)
    assert ood_auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert ood_auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert ood_auroc([0.5, 0.5], [0.5]) == 0.5  # ties count one half


def test_ood_auroc_equals_roc_auc_score():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.uniform(0.2, 1, 40), rng.uniform(0, 0.7, 25)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(25)], np.r_[s_in, s_out])
    assert ood_auroc(s_in, s_out) == pytest.approx(expected)
    assert isinstance(ood_auroc(s_in, s_out), float)


@pytest.mark.parametrize(
    "s_in, s_out, message",
    [
        ([], [0.1], "scores_in must be a non-empty 1-D"),
        ([0.1], [[0.1, 0.2]], "scores_out must be a non-empty 1-D"),
        ([0.1, np.nan], [0.1], "NaN"),
    ],
)
def test_ood_auroc_bad_input(s_in, s_out, message):
    with pytest.raises(ValueError, match=message):
        ood_auroc(s_in, s_out)
