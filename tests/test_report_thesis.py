"""``skdknn report``: the thesis's experiments (Topolewski 2022) beyond its FGSM grid.

Fashion-MNIST end to end from IDX files, reliability diagrams on inputs of no
class (Fig. 4.6), the neighbour backends (Fig. 4.7) and the BatchNorm CNN
(Figs. 4.8-4.10). Every number checked is recomputed from what the report saved.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import TINY_REPORT, saved_set
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from test_datasets import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    write_idx,
)

from skdknn.__main__ import main
from skdknn._report import ReportConfig, _checks, parse_sections
from skdknn._report import _thesis as thesis
from skdknn._report._commands import load_trained
from skdknn._report._data import MIN_OOD_IMAGES, load_ood_dir
from skdknn._report._render import pct
from skdknn.attacks import load_adversarial
from skdknn.datasets import load_fashion_mnist, load_idx, load_mnist
from skdknn.neighbors import ExactBackend, LSHBackend, PyNNDescentBackend
from skdknn.nets import layer_names

TINY = [*TINY_REPORT, "-q"]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# -- Fashion-MNIST from IDX files (the thesis's appendix) ---------------------------
@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """Fashion-MNIST-format files (gzipped, as the official ones): 700 training
    and 80 test images. No download: the images are the embedded MNIST sample's,
    transposed, so that they are none of the digits the OOD set draws."""
    X, y = load_mnist(return_X_y=True)
    images = np.rint(X[:, 0].transpose(0, 2, 1) * 255).astype(np.uint8)
    directory = tmp_path_factory.mktemp("fashion")
    for name, array in (
        (TRAIN_IMAGES, images[:700]),
        (TRAIN_LABELS, y[:700].astype(np.uint8)),
        (TEST_IMAGES, images[4000:4080]),
        (TEST_LABELS, y[4000:4080].astype(np.uint8)),
    ):
        write_idx(directory / f"{name}.gz", array, gz=True)
    return directory


@pytest.fixture(scope="module")
def fashion_report(fashion_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fashion_report")
    argv = [*TINY, "--dataset", "fashion-mnist", "--data-dir", str(fashion_dir)]
    assert main(["report", *argv, "--sections", "ood", "--out", str(out)]) == 0
    return out


def test_fashion_mnist_report_reads_the_idx_files(fashion_dir, fashion_report):
    results = _results(fashion_report)
    assert results["data"]["name"] == "Fashion-MNIST"
    assert results["settings"]["dataset"] == "fashion-mnist"
    assert (results["data"]["n_train"], results["data"]["n_test"]) == (600, 60)
    # the test images are rows of the files, and the numbers are the saved DkNN's
    # on them
    X_file, y_file = load_fashion_mnist(fashion_dir, subset="test", return_X_y=True)
    config, data, dknn = load_trained(str(fashion_report))
    flat = X_file.reshape(len(X_file), -1)
    for x, label in zip(data.X_test, data.y_test, strict=True):
        match = np.flatnonzero((flat == x.reshape(-1)).all(axis=1))
        assert match.size == 1 and y_file[match[0]] == label
    dknn_row = results["clean"][2]
    assert dknn_row["accuracy"] == pytest.approx(
        np.mean(dknn.predict(data.X_test) == data.y_test)
    )
    assert dknn_row["mean_credibility"] == pytest.approx(
        dknn.credibility(data.X_test).mean()
    )
    # beside it, AdvKNN Table 1's Fashion-MNIST column, not MNIST's
    assert dknn_row["paper_accuracy"] == pytest.approx(0.9028)
    assert results["clean"][0]["paper_accuracy"] == pytest.approx(0.9122)


def test_fashion_mnist_page_names_the_dataset_and_its_classes(
    fashion_dir, fashion_report
):
    markdown = (fashion_report / "report.md").read_text()
    assert markdown.startswith(
        "# skdknn report: Deep k-Nearest Neighbours and AdvKNN on Fashion-MNIST"
    )
    assert "60,000 Fashion-MNIST training images" in markdown
    assert "| 90.28 |" in markdown and "98.89" not in markdown
    assert "the published numbers beside the other sections are MNIST's" in markdown
    # labels with their class names in the explanation's caption
    caption = next(
        f["caption"]
        for f in _results(fashion_report)["figures"]
        if f["name"] == "explanation_clean"
    )
    names = load_fashion_mnist(fashion_dir, subset="test").target_names
    found = re.search(
        r"\(label (\d) \(([^)]+)\), DkNN prediction (\d) \(([^)]+)\)", caption
    )
    assert found is not None, caption
    assert names[int(found[1])] == found[2] and names[int(found[3])] == found[4]
    ood_part = markdown.split("## Out-of-distribution inputs")[1]
    assert "test digits" not in ood_part and "shuffled digits" not in ood_part


def test_fashion_mnist_ood_sets_include_mnist_digits(fashion_report):
    rows = _results(fashion_report)["out_of_distribution"]
    assert [row["set"] for row in rows] == [
        "test clothing images (in distribution: the clean table's images)",
        "uniform noise",
        "pixel-shuffled clothing images",
        "patches of photographs",
        "MNIST digits (embedded sample)",
    ]
    # the digits are the embedded sample's, scored by the saved DkNN
    _, _, dknn = load_trained(str(fashion_report))
    digits, _ = load_mnist(return_X_y=True, shuffle=True, random_state=0)
    digits = digits[: rows[-1]["n"]]
    credibility = dknn.credibility(digits)
    assert rows[-1]["mean_credibility"] == pytest.approx(credibility.mean())
    assert rows[-1]["share_credibility_above"] == pytest.approx(
        np.mean(credibility > 0.6)
    )
    assert _results(fashion_report)["ood_reliability_set"] == rows[-1]["set"]


def test_ood_reliability_figure_beside_the_ood_table(fashion_report):
    results = _results(fashion_report)
    names = [f["name"] for f in results["figures"]]
    assert {"out_of_distribution", "ood_reliability"} <= set(names)
    png = fashion_report / "figures" / "ood_reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (fashion_report / "report.md").read_text()
    ood_part = markdown.split("## Out-of-distribution inputs")[1]
    assert "figures/ood_reliability.png" in ood_part.split("## ")[0]
    assert "| Fashion-MNIST shown to an MNIST model (thesis, Fig. 4.6) |" in ood_part
    assert "| 5.00 | most |" in ood_part


# -- --ood-dir: the inputs of no class from IDX files --------------------------------
def _ood_dir(directory: Path, images: np.ndarray, name: str, gz: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / (f"{name}.gz" if gz else name), images, gz=gz)
    return directory


@pytest.fixture(scope="module")
def ood_dirs(tmp_path_factory):
    """Two directories of 30 uint8 images each, fewer than the report draws
    (min(ood_size, test images) = 60), so every image of the file is used: the
    embedded digits transposed (as Fashion-MNIST's t10k file, gzipped) and the
    same digits inverted (as a plain training-images file)."""
    X, _ = load_mnist(return_X_y=True, shuffle=True, random_state=1)
    digits = np.rint(X[:30, 0] * 255).astype(np.uint8)
    root = tmp_path_factory.mktemp("ood_dirs")
    return {
        "transposed": _ood_dir(
            root / "a", digits.transpose(0, 2, 1).copy(), TEST_IMAGES, gz=True
        ),
        "inverted": _ood_dir(root / "b", 255 - digits, TRAIN_IMAGES, gz=False),
    }


OOD_ARGV = ["report", *TINY, "--sections", "ood"]


@pytest.fixture(scope="module")
def ood_report(ood_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ood_report")
    argv = [*OOD_ARGV, "--ood-dir", str(ood_dirs["transposed"]), "--out", str(out)]
    assert main(argv) == 0
    return out


def _file_images(directory: Path) -> np.ndarray:
    (path,) = directory.iterdir()
    return (load_idx(path)[:, None] / 255.0).astype(np.float32)


def test_ood_dir_images_are_the_inputs_of_no_class(ood_dirs, ood_report):
    results = _results(ood_report)
    path = ood_dirs["transposed"] / f"{TEST_IMAGES}.gz"
    assert results["settings"]["ood_dir"] == str(ood_dirs["transposed"])
    source = results["ood_source"]
    assert source["file"] == str(path) and source["images_in_file"] == 30
    rows = results["out_of_distribution"]
    assert [row["set"] for row in rows] == [
        "test digits (in distribution: the clean table's images)",
        f"a/{TEST_IMAGES}.gz (--ood-dir)",
    ]
    # every image of the file, scored by the saved DkNN and its CNN
    _, data, dknn = load_trained(str(ood_report))
    X = _file_images(ood_dirs["transposed"])
    credibility = dknn.credibility(X)
    softmax = dknn.net_.predict_proba(X).max(axis=1)
    assert rows[1]["n"] == 30
    assert rows[1]["mean_credibility"] == pytest.approx(credibility.mean())
    assert rows[1]["mean_softmax_confidence"] == pytest.approx(softmax.mean())
    assert rows[1]["share_credibility_above"] == pytest.approx(
        np.mean(credibility > 0.6)
    )
    assert results["ood_reliability_set"] == rows[1]["set"]
    markdown = (ood_report / "report.md").read_text()
    part = markdown.split("## Out-of-distribution inputs")[1].split("\n## ")[0]
    assert f"30 of the 30 images of `{path}`" in part
    assert "figures/ood_reliability.png" in part


def test_ood_captions_state_the_numbers_not_an_outcome(ood_report):
    # before: "DkNN credibility (left) low, softmax confidence (right) high" and
    # "credibility stays low where softmax is confident", whatever the data showed
    results = _results(ood_report)
    captions = {f["name"]: f["caption"] for f in results["figures"]}
    row = results["out_of_distribution"][1]
    assert row["set"] == results["ood_reliability_set"]
    caption = captions["ood_reliability"]
    assert f"mean DkNN credibility (left) {row['mean_credibility']:.2f}" in caption
    softmax = row["mean_softmax_confidence"]
    assert f"mean softmax confidence (right) {softmax:.2f}." in caption
    for caption in captions.values():
        assert " high." not in caption and "stays low where" not in caption


def test_another_ood_dir_in_the_same_out_is_recomputed(ood_dirs, ood_report, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ood_report, out)  # the trained model and the first run's cache
    first = _results(out)

    def run(*options: str) -> dict:
        assert main([*OOD_ARGV, *options, "--out", str(out)]) == 0
        return _results(out)

    inverted = run("--ood-dir", str(ood_dirs["inverted"]))
    assert inverted["model_loaded_from_cache"] is True
    assert inverted["ood_source"]["loaded_from_cache"] is False
    assert inverted["ood_source"]["file"] == str(ood_dirs["inverted"] / TRAIN_IMAGES)
    _, _, dknn = load_trained(str(out))
    X = _file_images(ood_dirs["inverted"])
    row = inverted["out_of_distribution"][1]
    assert row["mean_credibility"] == pytest.approx(dknn.credibility(X).mean())
    assert (
        row["mean_credibility"] != first["out_of_distribution"][1]["mean_credibility"]
    )
    # the first directory again: its numbers (the section keeps one result: the
    # last run's), then loaded from the cache while nothing changes
    again = run("--ood-dir", str(ood_dirs["transposed"]))
    assert again["ood_source"]["loaded_from_cache"] is False
    assert again["out_of_distribution"] == first["out_of_distribution"]
    again = run("--ood-dir", str(ood_dirs["transposed"]))
    assert again["ood_source"]["loaded_from_cache"] is True
    assert again["out_of_distribution"] == first["out_of_distribution"]
    # no --ood-dir: the built-in inputs of no class, not the last directory's
    built_in = run()
    assert built_in["ood_source"]["file"] is None
    assert [row.get("kind") for row in built_in["out_of_distribution"]] == [
        None,
        "noise",
        "shuffled",
        "patches",
    ]


def test_ood_dir_errors_before_any_training(ood_dirs, tmp_path, capsys):
    empty = tmp_path / "empty"
    labels_only = _ood_dir(
        tmp_path / "labels", np.zeros(5, np.uint8), TEST_LABELS, gz=False
    )
    small = _ood_dir(
        tmp_path / "small", np.zeros((5, 20, 20), np.uint8), TEST_IMAGES, gz=True
    )
    empty_report = tmp_path / "out"

    def error(*options: str) -> str:
        argv = [*OOD_ARGV, *options, "--out", str(empty_report)]
        assert main(argv) == 2
        return capsys.readouterr().err

    message = error("--ood-dir", str(empty))
    assert f"--ood-dir {empty}: no such directory" in message
    message = error("--ood-dir", str(small / f"{TEST_IMAGES}.gz"))
    assert "t10k-images-idx3-ubyte.gz: a file, not a directory" in message
    message = error("--ood-dir", str(labels_only))
    assert "no images file found; looked for t10k-images-idx3-ubyte, " in message
    assert "train-images-idx3-ubyte.gz." in message
    message = error("--ood-dir", str(small))
    assert "images of shape (1, 20, 20) (uint8)" in message
    assert "the report's training images have shape (1, 28, 28)" in message
    # before: float32 images of the right shape were told their shape was wrong
    floats = _ood_dir(
        tmp_path / "floats", np.zeros((5, 28, 28), np.float32), TEST_IMAGES, gz=False
    )
    message = error("--ood-dir", str(floats))
    assert "images of dtype float32, but --ood-dir needs uint8 images" in message
    assert "shape" not in message
    # before: accepted, then "X holds no samples." after all the training
    none = _ood_dir(
        tmp_path / "none", np.zeros((0, 28, 28), np.uint8), TRAIN_IMAGES, gz=True
    )
    message = error("--ood-dir", str(none))
    assert f"{none / TRAIN_IMAGES}.gz: the file holds no images" in message
    message = error("--ood-dir", str(ood_dirs["inverted"]), "--sections", "table2")
    assert "add ood to --sections" in message
    assert not (empty_report / "model").exists()  # nothing was trained


def test_ood_dir_of_few_images_warns_with_their_count(tmp_path):
    # before: a 1-image AUROC was reported without a word
    few = _ood_dir(tmp_path, np.zeros((3, 28, 28), np.uint8), TEST_IMAGES, gz=False)
    with pytest.warns(UserWarning, match=r"holds only 3 image\(s\): the AUROC"):
        ood = load_ood_dir(str(few), (1, 28, 28))
    assert ood.X.shape == (3, 1, 28, 28)
    enough = np.zeros((MIN_OOD_IMAGES, 28, 28), np.uint8)
    _ood_dir(tmp_path, enough, TEST_IMAGES, gz=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_ood_dir(str(tmp_path), (1, 28, 28)).X) == MIN_OOD_IMAGES


# -- Topolewski Fig. 4.7 (backends) and Figs. 4.8-4.10 (the BatchNorm CNN) -----------
SMALL = [*TINY, "--train-size", "400", "--test-size", "40", "--calibration-size", "60"]
# PyNNDescent's first call compiles for about a minute: the fast tests leave it out,
# the slow one below runs all four backends of the thesis
FAST_BACKENDS = ("exact", "lsh", "annoy")


#: what each module-scoped report printed (its directory -> stdout)
STDOUT: dict[Path, str] = {}


@pytest.fixture(scope="module")
def thesis_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("thesis")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(thesis, "THESIS_BACKENDS", FAST_BACKENDS)
        argv = ["report", *SMALL, "--sections", "backends,bn-cnn", "--out", str(out)]
        assert main(argv) == 0
    STDOUT[out] = printed.getvalue()
    return out


def test_backend_and_net_sections_only_with_full_or_sections():
    assert not {"backends", "bn-cnn"} & set(ReportConfig().sections)
    assert not {"backends", "bn-cnn"} & set(ReportConfig.quick().sections)
    assert {"backends", "bn-cnn"} <= set(
        ReportConfig.from_overrides(full=True).sections
    )
    assert parse_sections("bn-cnn,backends") == ["clean", "backends", "bn-cnn"]


def _fgsm_set(directory: Path, eps: float) -> np.ndarray:
    path = saved_set(directory / "adversarial" / "curves", "fgsm_origin", eps)
    return load_adversarial(path).X_adv


def test_backends_recomputed_by_independent_refits(thesis_report):
    section = _results(thesis_report)["backends"]
    assert list(section["backends"]) == list(FAST_BACKENDS)
    assert section["eps"] == [0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15]
    config, data, dknn = load_trained(str(thesis_report))
    X, y = data.X_test[: section["n"]], data.y_test[: section["n"]]
    X_adv = _fgsm_set(thesis_report, 0.15)
    assert np.abs(X_adv - X).max() <= 0.15 + 1e-6
    frozen = FrozenEstimator(dknn.net_)
    exact = (
        clone(dknn)
        .set_params(net=frozen, backend=ExactBackend())
        .fit(data.X_train, data.y_train)
    )
    lsh = clone(dknn).set_params(
        net=frozen, backend=LSHBackend(n_tables=50, random_state=0)
    )
    lsh.fit(data.X_train, data.y_train)
    for name, model in (("exact", exact), ("lsh", lsh)):
        row = section["backends"][name]
        assert row["accuracy"][0] == pytest.approx(np.mean(model.predict(X) == y))
        assert row["accuracy"][-1] == pytest.approx(np.mean(model.predict(X_adv) == y))
        assert row["mean_credibility"][-1] == pytest.approx(
            model.credibility(X_adv).mean()
        )
        assert row["fit_seconds"] > 0 and row["query_seconds"] > 0
    # recall@k per layer: shared neighbours with exact search, by set intersection
    _, reference = exact.kneighbors(X)
    _, found = lsh.kneighbors(X)
    for layer, recall in enumerate(section["backends"]["lsh"]["recall"]):
        shared = [
            len(set(found[i, layer]) & set(reference[i, layer])) for i in range(len(X))
        ]
        assert recall == pytest.approx(np.mean(shared) / config.n_neighbors)
    assert section["backends"]["exact"]["recall"] == [1.0] * len(dknn.layers_)
    assert section["cnn_accuracy"][-1] == pytest.approx(
        np.mean(dknn.net_.predict(X_adv) == y)
    )
    markdown = (thesis_report / "report.md").read_text()
    part = markdown.split("## The DkNN with each neighbour backend")[1]
    assert "| PyNNDescent, thesis | - | - | - | 99.88 |" in part
    assert "figures/thesis_backends.png" in part.split("## ")[0]


def test_bn_cnn_section_recomputed_from_the_saved_net_and_sets(thesis_report):
    section = _results(thesis_report)["nets"]
    assert list(section["nets"]) == ["paper-cnn", "bn-cnn"]
    other = thesis_report / "nets" / "bn-cnn"
    config, data, bn = load_trained(str(other))
    assert config.net == "bn-cnn" and type(bn.module_).__name__ == "BatchNormCNN"
    assert bn.layers_ == ["bn1", "bn2", "bn3"]  # DkNN on the BatchNorm outputs
    n = section["n"]
    X, y = data.X_test[:n], data.y_test[:n]
    X_adv = _fgsm_set(other, 0.15)
    # the BatchNorm CNN's own FGSM set: not the paper CNN's
    assert not np.allclose(X_adv, _fgsm_set(thesis_report, 0.15))
    assert np.abs(X_adv - X).max() <= 0.15 + 1e-6
    last = section["nets"]["bn-cnn"]["rows"][-1]
    assert last["eps"] == 0.15
    assert last["dknn_accuracy"] == pytest.approx(np.mean(bn.predict(X_adv) == y))
    assert last["cnn_accuracy"] == pytest.approx(np.mean(bn.net_.predict(X_adv) == y))
    assert last["mean_credibility"] == pytest.approx(bn.credibility(X_adv).mean())
    _, _, paper = load_trained(str(thesis_report))
    first = section["nets"]["paper-cnn"]["rows"][0]
    assert first["dknn_accuracy"] == pytest.approx(np.mean(paper.predict(X) == y))
    assert "_figures" not in section["nets"]["bn-cnn"]
    names = [f["name"] for f in _results(thesis_report)["figures"]]
    assert names[-3:] == [
        "thesis_backends",
        "thesis_nets_accuracy",
        "thesis_nets_reliability",
    ]
    markdown = (thesis_report / "report.md").read_text()
    part = markdown.split("## The BatchNorm CNN against the paper CNN")[1]
    assert "| BatchNorm CNN (thesis): DkNN, thesis | - |" in part and "~87.00" in part


def test_bn_cnn_dknn_on_the_maxpool_outputs_recomputed(thesis_report):
    """Topolewski Fig. 4.10's other curve: the same BatchNorm CNN, its DkNN on
    the MaxPool outputs, on the same FGSM sets."""
    section = _results(thesis_report)["nets"]
    assert "maxpool_dknn" not in section["nets"]["paper-cnn"]
    part = section["nets"]["bn-cnn"]
    maxpool = part["maxpool_dknn"]
    pools = ["features.pool1", "features.pool2", "features.pool3"]
    assert maxpool["layers"] == pools
    other = thesis_report / "nets" / "bn-cnn"
    _, data, bn = load_trained(str(other))
    assert set(pools) <= set(layer_names(bn.module_))
    for name in pools:
        assert isinstance(bn.module_.get_submodule(name), torch.nn.MaxPool2d)
    # a DkNN of our own on those layers of the saved network: every number
    mine = clone(bn).set_params(net=FrozenEstimator(bn.net_), layers=pools)
    mine.fit(data.X_train, data.y_train)
    assert mine.layers_ == pools
    n = section["n"]
    X, y = data.X_test[:n], data.y_test[:n]
    eps = [row["eps"] for row in part["rows"]]
    assert [row["eps"] for row in maxpool["rows"]] == eps
    for row in maxpool["rows"]:
        X_e = X if row["eps"] == 0 else _fgsm_set(other, row["eps"])
        assert row["dknn_accuracy"] == pytest.approx(np.mean(mine.predict(X_e) == y))
        assert row["mean_credibility"] == pytest.approx(mine.credibility(X_e).mean())
    # not the BatchNorm-layer DkNN's numbers under another name
    assert [r["mean_credibility"] for r in maxpool["rows"]] != [
        r["mean_credibility"] for r in part["rows"]
    ]
    markdown = (thesis_report / "report.md").read_text()
    page = markdown.split("## The BatchNorm CNN against the paper CNN")[1]
    cells = " | ".join(pct(row["dknn_accuracy"]) for row in maxpool["rows"])
    assert f"| BatchNorm CNN (thesis): DkNN on MaxPool | {cells} |" in page
    assert "(on MaxPool: `features.pool1, features.pool2, features.pool3`)" in page


@pytest.mark.parametrize(
    ("momentum", "n_batches", "stale"),
    [
        (0.1, 10, True),  # 0.9 ** 10 = 0.35: --quick's BatchNorm CNN
        (0.1, 65, True),  # 0.9 ** 65 = 1.06e-3
        (0.1, 66, False),  # 0.9 ** 66 = 9.6e-4
        (0.1, 106, False),  # the default run: 1.4e-5
        (0.5, 9, True),  # 0.5 ** 9 = 1.95e-3
        (0.5, 10, False),  # 0.5 ** 10 = 9.8e-4
        (0.0, 1000, True),  # never updated: the initial values stay
        (None, 0, True),  # a cumulative average that saw no batch
        (None, 3, False),  # ... and one that did: no initial values left
    ],
)
def test_batchnorm_staleness_rule(momentum, n_batches, stale):
    assert _checks.batchnorm_is_stale(momentum, n_batches) is stale


def test_default_run_keeps_its_batchnorm_statistics():
    """The default (and --full) run's BatchNorm CNN is not recalibrated: its
    documented numbers stay. The network trains on the indexed rows in batches of
    500 (``fit_models``), momentum 0.1 (torch's default), and one forward pass in
    train mode is made when it is built (measured: 340 rows, 1 epoch -> 2)."""
    config = ReportConfig.from_overrides(full=True)
    n_indexed = (
        len(load_mnist(return_X_y=True)[1]) - config.test_size - config.calibration_size
    )
    updates = config.max_epochs * math.ceil(n_indexed / 500) + 1
    assert updates == 106
    assert not _checks.batchnorm_is_stale(0.1, updates)
    # --quick's: 3 epochs of 1,700 rows
    quick = ReportConfig.quick()
    updates = (
        quick.max_epochs * math.ceil((quick.train_size - quick.calibration_size) / 500)
        + 1
    )
    assert _checks.batchnorm_is_stale(0.1, updates)


def test_bn_cnn_batchnorm_statistics_reestimated_at_small_settings(thesis_report):
    """At these settings the BatchNorm CNN makes 2 updates: its running
    statistics are 81 % their initial values and in eval mode it predicted one
    class (CNN accuracy at chance). Re-estimated on its training rows, it is far
    above chance, and the page and the JSON say so."""
    nets = _results(thesis_report)["nets"]["nets"]
    bn_part = nets["bn-cnn"]
    assert bn_part["batchnorm_recalibrated"] is True
    assert nets["paper-cnn"]["batchnorm_recalibrated"] is False  # no BatchNorm
    clean = bn_part["rows"][0]
    assert clean["eps"] == 0 and clean["cnn_accuracy"] >= 0.4  # chance: 0.1
    _, data, bn = load_trained(str(thesis_report / "nets" / "bn-cnn"))
    n = _results(thesis_report)["nets"]["n"]
    pred = bn.net_.predict(data.X_test[:n])
    assert len(np.unique(pred)) > 3
    # the statistics are torch's update_bn over the training rows, not the initial
    layer = bn.module_.get_submodule("features.bn1")
    assert not torch.allclose(layer.running_var, torch.ones_like(layer.running_var))
    page = (thesis_report / "report.md").read_text()
    part = page.split("## The BatchNorm CNN against the paper CNN")[1]
    assert "BatchNorm running statistics were still tied" in part
    assert "torch.optim.swa_utils.update_bn" in part


def test_undertrained_network_warned_in_stdout_page_and_json(thesis_report):
    """At these settings (1 epoch, 340 rows) the paper CNN does not learn; the
    BatchNorm CNN does (above): only the first is warned about."""
    results = _results(thesis_report)
    nets = results["nets"]["nets"]
    paper_accuracy = nets["paper-cnn"]["rows"][0]["cnn_accuracy"]
    assert paper_accuracy < _checks.MIN_CLEAN_ACCURACY
    assert nets["bn-cnn"]["rows"][0]["cnn_accuracy"] >= _checks.MIN_CLEAN_ACCURACY
    (warning,) = results["warnings"]
    assert f"DkNN paper CNN (saved in {thesis_report})" in warning
    assert f"{100 * paper_accuracy:.1f} % clean test accuracy" in warning
    assert "--epochs" in warning and "--train-size" in warning
    assert (
        nets["paper-cnn"]["warnings"] == [warning] and nets["bn-cnn"]["warnings"] == []
    )
    assert warning in STDOUT[thesis_report]
    page = (thesis_report / "report.md").read_text()
    # next to the clean table and to the bn-cnn section's table
    assert warning in page.split("## Accuracy on clean test images")[1].split("## ")[0]
    assert warning in page.split("## The BatchNorm CNN against the paper CNN")[1]
    assert page.count("Warning:") == 2


def test_undertrained_rule():
    assert _checks.undertrained_warning("LeNet-5", 0.5) is None
    assert _checks.undertrained_warning("LeNet-5", 0.99) is None
    text = _checks.undertrained_warning("LeNet-5", 0.375)
    assert text is not None and "LeNet-5 reaches only 37.5 %" in text


def test_page_says_how_to_read_it(thesis_report):
    page = (thesis_report / "report.md").read_text()
    first = page.split("\n\n")[1]
    assert "docs/reproduction.md" in first
    assert "not comparable with the papers' (small settings)" in first
    assert "changed: train_size, test_size, max_epochs" in first
    # the default settings: only the pointer to the reproduction page
    from skdknn._report._run import small_settings

    assert small_settings(ReportConfig.from_overrides(full=True)) == []
    assert "max_epochs" in small_settings(ReportConfig.quick())


def test_a_rerun_reuses_the_backends_and_the_second_net(thesis_report):
    files = [
        thesis_report / "sections" / "backends.joblib",
        thesis_report / "nets" / "bn-cnn" / "sections" / "maxpool_dknn.joblib",
        thesis_report / "nets" / "bn-cnn" / "model" / "model.pkl",
        saved_set(
            thesis_report / "nets" / "bn-cnn" / "adversarial" / "curves",
            "fgsm_origin",
            0.1,
        ),
    ]
    before = [path.stat().st_mtime_ns for path in files]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(thesis, "THESIS_BACKENDS", FAST_BACKENDS)
        argv = ["report", *SMALL, "--sections", "backends,bn-cnn"]
        assert main([*argv, "--out", str(thesis_report)]) == 0
        results = _results(thesis_report)
        assert results["backends"]["loaded_from_cache"] is True
        assert results["nets"]["nets"]["bn-cnn"]["loaded_from_cache"] is True
        assert results["nets"]["nets"]["bn-cnn"]["batchnorm_recalibrated"] is True
        maxpool = results["nets"]["nets"]["bn-cnn"]["maxpool_dknn"]
        assert maxpool["loaded_from_cache"] is True
        assert [path.stat().st_mtime_ns for path in files] == before
        # another list of backends is another result: recomputed
        patch.setattr(thesis, "THESIS_BACKENDS", ("exact", "lsh"))
        argv = ["report", *SMALL, "--sections", "backends"]
        assert main([*argv, "--out", str(thesis_report)]) == 0
    results = _results(thesis_report)
    assert results["backends"]["loaded_from_cache"] is False
    assert list(results["backends"]["backends"]) == ["exact", "lsh"]


@pytest.mark.slow
def test_backends_section_with_the_thesis_four(tmp_path):
    """All four backends of the thesis, PyNNDescent included (its first call
    compiles for about a minute)."""
    out = tmp_path / "backends"
    argv = ["report", *SMALL, "--sections", "backends", "--out", str(out)]
    assert main(argv) == 0
    section = _results(out)["backends"]
    assert list(section["backends"]) == ["exact", "lsh", "annoy", "pynndescent"]
    config, data, dknn = load_trained(str(out))
    pynndescent = clone(dknn).set_params(
        net=FrozenEstimator(dknn.net_), backend=PyNNDescentBackend(random_state=0)
    )
    pynndescent.fit(data.X_train, data.y_train)
    X_adv = _fgsm_set(out, 0.15)
    y = data.y_test[: section["n"]]
    assert section["backends"]["pynndescent"]["accuracy"][-1] == pytest.approx(
        np.mean(pynndescent.predict(X_adv) == y)
    )
    assert all(0.5 < r <= 1.0 for r in section["backends"]["pynndescent"]["recall"])
