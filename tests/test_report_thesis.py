"""``skdknn report``: the thesis's experiments (Topolewski 2022) beyond its FGSM grid.

Fashion-MNIST end to end from IDX files, reliability diagrams on inputs of no
class (Fig. 4.6), the neighbour backends (Fig. 4.7) and the BatchNorm CNN
(Figs. 4.8-4.10). Every number checked is recomputed from what the report saved.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from _helpers import TINY_REPORT
from test_datasets import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    write_idx,
)

from skdknn.__main__ import main
from skdknn._report._commands import load_trained
from skdknn.datasets import load_fashion_mnist, load_mnist

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
