"""The command line: ``skdknn report | train | attack | explain``."""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import matplotlib.image
import numpy as np
import pytest
from _helpers import TINY_REPORT, saved_set
from test_datasets import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    write_idx,
)

from skdknn import load_model
from skdknn.__main__ import build_parser, main
from skdknn._report._render import Page
from skdknn.attacks import AdvKNNAttack, load_adversarial
from skdknn.datasets import load_mnist
from skdknn.neighbors import ProjectedBackend

# a report of a few seconds: tiny data, 1 epoch, small k, 2 eps values
TINY = TINY_REPORT
# not --quiet: the saved model must load quietly all the same
REPORT = [*TINY, "--eps-grid", "0.1,0.3", "--k-grid", "3,10"]

FIGURES = {
    "reliability",
    "credibility_histograms",
    "accuracy_vs_eps",
    "accuracy_vs_distortion",
    "adversarial_examples",
    "explanation_clean",
    "explanation_adversarial",
    "neighbor_agreement",
    "out_of_distribution",
    # reliability diagrams on inputs of no class (Topolewski Fig. 4.6)
    "ood_reliability",
    # the default run's sections of AdvKNN Table 3, Fig. 7 and Fig. 5
    "transfer",
    "attack_success_vs_k",
    "detection_credibility",
    # the thesis's FGSM grid (Topolewski Figs. 4.3-4.5)
    "thesis_accuracy_vs_eps",
    "thesis_reliability_adversarial",
    "thesis_correct_neighbours",
}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", *REPORT, "--out", str(out)]) == 0
    return out


def test_report_writes_page_figures_and_json(report_dir):
    text = (report_dir / "results.json").read_text()
    # strict JSON: no NaN / Infinity constants
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    results = json.loads(text)
    assert results["data"] == {
        "name": "MNIST (embedded sample)",
        "n_train": 600,
        "n_indexed": 500,
        "n_calibration": 100,
        "n_test": 60,
    }
    models = [row["model"] for row in results["clean"]]
    assert models == [
        "CNN (DkNN paper architecture)",
        "kNN (relu3)",
        "DkNN (4 layers)",
        "DkNNB (relu3 head)",
        "DkNNB+CL (relu3 head)",
    ]
    for row in results["clean"]:
        assert 0.0 <= row["accuracy"] <= 1.0
    table = results["attack_table"]
    assert set(table) == {"knn", "dknn", "cnn"}
    for cells in table.values():
        assert list(cells) == [
            "clean",
            "fgsm_origin",
            "fgsm_dknnb",
            "fgsm_dknnb_cl",
            "bim_origin",
            "bim_dknnb",
            "bim_dknnb_cl",
        ]
        for cell in cells.values():
            assert 0.0 <= cell["accuracy"] <= 1.0
    # the paper's numbers sit beside ours
    assert table["dknn"]["bim_dknnb_cl"]["paper_accuracy"] == pytest.approx(0.0597)
    # an attack through the CNN at eps = 0.25 hurts the CNN
    assert table["cnn"]["bim_origin"]["accuracy"] < table["cnn"]["clean"]["accuracy"]
    # every curve starts at eps = 0 with the clean accuracy of the curve images
    assert results["curves"]["eps"] == [0.0, 0.1, 0.3]
    dknn_clean = table["dknn"]["clean"]["accuracy"]  # curve_size >= n_test here
    for per_model in results["curves"]["accuracy"].values():
        assert set(per_model) == {"CNN", "kNN", "DkNN"}
        assert all(len(v) == 3 for v in per_model.values())
        assert per_model["DkNN"][0] == pytest.approx(dknn_clean)
    kinds = [row["set"] for row in results["out_of_distribution"]]
    assert kinds[0].startswith("test digits")
    assert len(kinds) == 4
    # the in-distribution row is the clean table's images
    ood_in = results["out_of_distribution"][0]
    assert ood_in["n"] == 60
    assert ood_in["mean_credibility"] == table["dknn"]["clean"]["mean_credibility"]
    assert len(results["neighbor_label_agreement"]["clean"]) == 4
    names = {figure["name"] for figure in results["figures"]}
    assert names == FIGURES
    for name in FIGURES:
        png = report_dir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_page_holds_the_tables_and_figures(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    markdown = (report_dir / "report.md").read_text()
    html = (report_dir / "report.html").read_text()
    assert "## Attacks at eps = 0.25 (AdvKNN Table 2)" in markdown
    assert "| DkNN, paper | 98.89 | 54.90 | 28.57 | 28.08 | 16.80 | 6.49 | 5.97 |" in (
        markdown
    )
    dknn_clean = 100 * results["attack_table"]["dknn"]["clean"]["accuracy"]
    assert f"| DkNN | {dknn_clean:.2f} |" in markdown
    for name in FIGURES:
        assert f"figures/{name}.png" in markdown
        assert f'src="figures/{name}.png"' in html
    assert html.startswith("<!DOCTYPE html>")
    assert "<table>" in html


def test_report_reuses_saved_models_and_adversarial_sets(report_dir, capsys):
    before = (
        (saved_set(report_dir / "adversarial", "bim_origin", 0.25)).stat().st_mtime_ns
    )
    assert main(["report", *REPORT, "--out", str(report_dir)]) == 0
    assert "loaded from" in capsys.readouterr().out
    results = json.loads((report_dir / "results.json").read_text())
    assert results["model_loaded_from_cache"] is True
    after = (
        (saved_set(report_dir / "adversarial", "bim_origin", 0.25)).stat().st_mtime_ns
    )
    assert after == before


def test_train_attack_explain(tmp_path, capsys):
    model = tmp_path / "model"
    argv = ["train", *TINY, "--out", str(model)]
    assert main(argv) == 0
    assert "Saved in" in capsys.readouterr().out
    adv = tmp_path / "fgsm.npz"
    status = main(
        ["attack", "--model", str(model), "--method", "fgsm", "--eps", "0.3",
         "--n-samples", "20", "--out", str(adv)]
    )  # fmt: skip
    assert status == 0
    saved = load_adversarial(adv)
    assert saved.X_adv.shape == (20, 1, 28, 28)
    assert saved.metrics["n"] == 20
    assert 0.0 <= saved.metrics["dknn_accuracy"] <= 1.0
    assert "DkNN accuracy" in capsys.readouterr().out
    png = tmp_path / "explain.png"
    status = main(
        ["explain", "--model", str(model), "--index", "3", "--adversarial", str(adv),
         "--n-neighbors", "4", "--out", str(png)]
    )  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    assert "relu1" in out and "logits" in out
    assert len(out.split("relu3")[1].split("\n")[0].split(":")[1].split()) == 4
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_train_on_idx_files(tmp_path, capsys):
    X, y = load_mnist(return_X_y=True)
    images = np.rint(X[:, 0] * 255).astype(np.uint8)
    data = tmp_path / "mnist"
    data.mkdir()
    write_idx(data / TRAIN_IMAGES, images[:700])
    write_idx(data / TRAIN_LABELS, y[:700].astype(np.uint8))
    write_idx(data / TEST_IMAGES, images[700:800])
    write_idx(data / TEST_LABELS, y[700:800].astype(np.uint8))
    argv = ["train", *TINY, "--data-dir", str(data), "--out", str(tmp_path / "m")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("MNIST: 600 training images (500 indexed, 100 calibration)")
    assert "60 test images" in out


def _write_mnist_dir(directory, shift=0):
    """700 training and 100 test images of the embedded sample as IDX files,
    every label ``y`` written as ``(y + shift) % 10``."""
    X, y = load_mnist(return_X_y=True)
    images = np.rint(X[:, 0] * 255).astype(np.uint8)
    labels = ((y + shift) % 10).astype(np.uint8)
    directory.mkdir(exist_ok=True)
    write_idx(directory / TRAIN_IMAGES, images[:700])
    write_idx(directory / TRAIN_LABELS, labels[:700])
    write_idx(directory / TEST_IMAGES, images[700:800])
    write_idx(directory / TEST_LABELS, labels[700:800])


def _model_numbers(out):
    """The clean table and the transfer section of a report."""
    results = json.loads((out / "results.json").read_text())
    numbers = {k: results[k] for k in ("clean", "transfer")}
    loaded = results["model_loaded_from_cache"]
    assert numbers["transfer"].pop("target_loaded_from_cache") is loaded
    # the undertraining warnings name the network's folder inside this --out
    return loaded, json.loads(json.dumps(numbers).replace(str(out), "<out>"))


def test_data_rewritten_in_the_same_data_dir_trains_again(
    tmp_path, monkeypatch, capsys
):
    # before: the model key held --data-dir's path only; rewritten labels reused
    # the CNN and DkNN of the old data with a kNN refitted on the new labels
    data, out = tmp_path / "mnist", tmp_path / "out"
    _write_mnist_dir(data)
    argv = [*TINY, "--eps-grid", "0.1", "--sections", "transfer", "--n-iter", "2",
            "--dataset", "mnist", "--data-dir", "mnist"]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["report", *argv, "--out", str(out)]) == 0
    transfer_key = json.loads((out / "transfer" / "run.json").read_text())
    _write_mnist_dir(data, shift=1)  # the same files, every label shifted
    assert main(["report", *argv, "--out", str(out)]) == 0
    loaded, rerun = _model_numbers(out)
    assert loaded is False
    # the transfer section's LeNet-5 is trained again too
    assert json.loads((out / "transfer" / "run.json").read_text()) != transfer_key
    assert main(["report", *argv, "--out", str(tmp_path / "fresh")]) == 0
    assert rerun == _model_numbers(tmp_path / "fresh")[1]
    # unchanged data, a relative --data-dir given from another directory: reused
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    argv[argv.index("mnist", argv.index("--data-dir"))] = "../mnist"
    assert main(["report", *argv, "--out", str(out)]) == 0
    loaded, again = _model_numbers(out)
    assert loaded is True and again == rerun
    # `skdknn attack` refuses a model whose data has changed since
    _write_mnist_dir(data, shift=2)
    assert main(["attack", "--model", str(out), "--out", "a.npz"]) == 2
    assert "trained on other data" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "--epochs", "0"], "expected an integer >= 1"),
        (["report", "--test-size", "many"], "expected an integer, got 'many'"),
        (["report", "--eps", "-0.1"], "expected a number > 0.0"),
        # checked when parsing, not after minutes of training (before: nan
        # reached the attacks, nan in --eps-grid was dropped and recorded as null)
        (["report", "--eps", "nan"], "expected a finite number, got 'nan'"),
        (["attack", "--model", "m", "--eps", "inf"], "expected a finite number"),
        (["report", "--step=-inf"], "expected a finite number"),
        (["report", "--eps-grid", "nan,0.1"], "positive finite numbers, got 'nan,0.1'"),
        (["report", "--eps-grid", "inf"], "positive finite numbers, got 'inf'"),
        (["report", "--eps-grid", "0.1,x"], "--eps-grid: expected comma-separated"),
        (["report", "--eps-grid", "0,0.1"], "positive finite numbers, got '0,0.1'"),
        (["report", "--k-grid", "0,5"], "positive finite integers"),
        (["report", "--k-grid", "5,x"], "--k-grid: expected comma-separated integers"),
        (["report", "--random-state", "-1"], "expected an integer >= 0, got -1"),
        (["train", "--random-state", "4294967296"], "expected an integer <= 2**32 - 1"),
        (
            ["attack", "--model", "m", "--out", "/nonexistent/a.npz"],
            "cannot write '/nonexistent/a.npz': the directory '/nonexistent'",
        ),
        (["explain", "--model", "m", "--out", "/nonexistent/e.png"], "'/nonexistent'"),
        (["report", "--dataset", "cifar"], "invalid choice"),
        (["attack"], "the following arguments are required: --model"),
        (["attack", "--model", "m", "--method", "cw"], "invalid choice"),
        (["fly"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "--eps", "0.01", "--step", "0.05"], "larger than --eps"),
        (["report", "--dataset", "fashion-mnist"], "needs --data-dir"),
        (["report", "--test-size", "5000"], "leaves no training images"),
        (["attack", "--model", "{tmp}/none"], "holds no trained model"),
        (["explain", "--model", "{tmp}/none"], "skdknn train --out DIR"),
        (["report", "--data-dir", "{tmp}/nowhere"], "nowhere"),
    ],
)
def test_invalid_settings_are_clear_errors(argv, message, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    status = main([*argv, "--out", str(tmp_path / "out")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skdknn {argv[0]}: error:")
    assert message in err


def test_explain_index_out_of_range(report_dir, tmp_path, capsys):
    status = main(
        ["explain", "--model", str(report_dir), "--index", "60",
         "--out", str(tmp_path / "x.png")]
    )  # fmt: skip
    assert status == 2
    assert "--index 60 is out of range: the test set has 60 images" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("train_size", [None, 900])
def test_report_split_holds_every_digit_in_proportion(train_size):
    # the embedded sample is stored sorted by digit: a split that relied on its order
    # would train and test on different digits
    from skdknn._report._config import ReportConfig
    from skdknn._report._data import load_data

    data = load_data(ReportConfig(train_size=train_size))
    for y, n in ((data.y_train, train_size or 4000), (data.y_test, 1000)):
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10
    X_all, _ = load_mnist(return_X_y=True)
    assert len(data.X_train) + len(data.X_test) <= len(X_all)
    # no test image among the training images
    train_rows = {row.tobytes() for row in data.X_train}
    assert not any(row.tobytes() in train_rows for row in data.X_test)


def test_page_renders_markdown_and_html():
    page = Page("T")
    page.heading("A & B")
    page.paragraph("uses `k`")
    page.table(["x", "y"], [["1", "<2>"]])
    page.figure("figures/f.png", "a figure")
    markdown = page.markdown()
    assert markdown.splitlines()[:4] == ["# T", "", "## A & B", ""]
    assert "| x | y |\n|---|---|\n| 1 | <2> |" in markdown
    html = page.html()
    assert "<h2>A &amp; B</h2>" in html
    assert "<p>uses <code>k</code></p>" in html
    assert "<td>&lt;2&gt;</td>" in html
    with pytest.raises(ValueError, match="different lengths"):
        page.table(["x"], [["1", "2"]])


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "skdknn", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    from skdknn import __version__

    assert result.stdout.strip() == __version__


def test_report_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("report", "train", "attack", "explain"):
        assert command in out


def test_damaged_caches_are_rebuilt_or_reported(tmp_path, capsys):
    out = tmp_path / "rep"
    # the attack table's sections are enough here (and keep the three runs short)
    REPORT = [*TINY, "--eps-grid", "0.1,0.3", "--sections", "table2"]
    assert main(["report", *REPORT, "--out", str(out)]) == 0
    # a truncated heads file and adversarial set are recomputed, not trusted
    heads = out / "heads.pkl"
    heads.write_bytes(heads.read_bytes()[:100])
    adv = saved_set(out / "adversarial", "fgsm_origin", 0.25)
    adv.write_bytes(adv.read_bytes()[:100])
    capsys.readouterr()
    assert main(["report", *REPORT, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Saved heads in {heads} not usable" in printed
    assert f"Saved adversarial set {adv} not usable" in printed
    assert json.loads((out / "results.json").read_text())["model_loaded_from_cache"]
    # a damaged run record or model is a clear error for explain / attack
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text("{not json")
    assert main(["explain", "--model", str(out), "--out", str(tmp_path / "x.png")]) == 2
    assert "run.json' is damaged" in capsys.readouterr().err
    (out / "run.json").write_text(json.dumps(record))
    model = out / "model" / "model.pkl"
    model.write_bytes(model.read_bytes()[:100])
    assert main(["attack", "--model", str(out), "--out", str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err
    # the manifest's checksum refuses the damaged file, naming it
    assert str(model) in err and "damaged" in err
    # ... and report trains again
    assert main(["report", *REPORT, "--out", str(out)]) == 0
    assert "not usable" in capsys.readouterr().out
    assert not json.loads((out / "results.json").read_text())["model_loaded_from_cache"]


def test_changing_the_eps_grid_keeps_heads_and_table_sets(report_dir):
    table_set = saved_set(report_dir / "adversarial", "bim_dknnb_cl", 0.25)
    heads = report_dir / "heads.pkl"
    before = table_set.stat().st_mtime_ns, heads.stat().st_mtime_ns
    argv = [
        *TINY,
        "--eps-grid",
        "0.1,0.2",
        "--k-grid",
        "3,10",
        "--out",
        str(report_dir),
    ]
    assert main(["report", *argv]) == 0
    assert (table_set.stat().st_mtime_ns, heads.stat().st_mtime_ns) == before
    assert (
        saved_set(report_dir / "adversarial" / "curves", "fgsm_origin", 0.2)
    ).is_file()
    # restore the module fixture's report for the tests that follow
    assert main(["report", *REPORT, "--out", str(report_dir)]) == 0


def test_attack_and_explain_details(report_dir, tmp_path, capsys):
    adv = tmp_path / "fgsm.npz"
    # FGSM has no step: a small eps is fine; more samples than test images: all
    argv = ["attack", "--model", str(report_dir), "--eps", "0.005",
            "--n-samples", "1000", "--out", str(adv)]  # fmt: skip
    assert main(argv) == 0
    saved = load_adversarial(adv)
    assert saved.metrics["n"] == len(saved.X_adv) == 60
    # explain takes the label saved with the adversarial set
    short = tmp_path / "short.npz"
    argv = ["attack", "--model", str(report_dir), "--n-samples", "10",
            "--out", str(short)]  # fmt: skip
    assert main(argv) == 0
    y_saved = load_adversarial(short).y
    capsys.readouterr()
    argv = ["explain", "--model", str(report_dir), "--adversarial", str(short),
            "--index", "-1", "--out", str(tmp_path / "e.png")]  # fmt: skip
    assert main(argv) == 0
    assert f"Image 9 of the adversarial set {short}: true label {y_saved[-1]}," in (
        capsys.readouterr().out
    )


def test_one_forward_pass_gives_what_the_public_methods_give(report_dir):
    from pathlib import Path

    from skdknn._report._commands import load_trained
    from skdknn._report._experiments import Outputs
    from skdknn._report._models import dknn_outputs, fit_models, network_outputs

    config, data, _ = load_trained(str(report_dir))
    models = fit_models(config, data, Path(report_dir))
    assert models.loaded
    X = data.X_test[:40]
    out = Outputs.of(models, X)
    cnn_pred, proba = network_outputs(models.dknn, X)
    np.testing.assert_array_equal(out.cnn_pred, cnn_pred)
    np.testing.assert_allclose(out.softmax, proba.max(axis=1), rtol=1e-6)
    for name, model in (("knn", models.knn), ("dknn", models.dknn)):
        pred, cred = dknn_outputs(model, X)
        np.testing.assert_array_equal(out.model(name)[0], pred)
        np.testing.assert_array_equal(out.model(name)[1], cred)


# -- the command line as a user reads it -----------------------------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    return dict(action.choices)


def test_help_shows_a_line_and_the_default_of_every_option():
    for name, sub in _subcommands().items():
        formatter = sub.formatter_class(prog=f"skdknn {name}")
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            option = action.option_strings[-1]
            assert action.help, f"skdknn {name} {option} has no help line"
            takes_value = action.nargs != 0 and not isinstance(
                action, argparse._CountAction
            )
            if takes_value and not action.required:
                text = formatter._get_help_string(action) % vars(action)
                assert "default" in text, f"skdknn {name} {option}: {text!r}"
        assert "-q, --quiet" in sub.format_help(), name
    report = _subcommands()["report"].format_help()
    # the defaults shown are the settings used
    for option, text in [
        ("--epochs", "(default: 15; with --quick: 3)"),
        ("--n-neighbors", "(default: 75; with --quick: 25)"),
        ("--backend", "(default: exact)"),
        ("--eps-grid", "(default: 0.05,0.1,0.15,0.2,0.25,0.3; with --quick: 0.1,0.25)"),
    ]:  # fmt: skip
        help_text = " ".join(report.split(option, 2)[2].split("\n  -")[0].split())
        assert text in help_text, (option, help_text)
    attack = " ".join(_subcommands()["attack"].format_help().split())
    assert "BIM step size (default: 0.01)" in attack


def test_quiet_on_every_subcommand(report_dir, tmp_path, capfd):
    for name in _subcommands():
        model = ["--model", "m"] if name in ("attack", "explain") else []
        assert build_parser().parse_args([name, *model, "-q"]).quiet
    capfd.readouterr()
    adv = tmp_path / "a.npz"
    argv = ["attack", "--model", str(report_dir), "--n-samples", "5", "--out",
            str(adv), "-q"]  # fmt: skip
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert err == ""
    assert out.count("\n") == 1 and "Saved to" in out
    argv = ["explain", "--model", str(report_dir), "--out", str(tmp_path / "e.png"),
            "-q"]  # fmt: skip
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert err == ""
    assert out.count("\n") == 2 and "nearest training labels" not in out


def test_models_saved_by_report_load_quietly(report_dir, tmp_path, capfd):
    X = load_mnist(return_X_y=True)[0][:50]
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(report_dir / "model")
        model.predict(X)
        model.credibility(X)
    assert capfd.readouterr() == ("", "")
    assert model.verbose == 0
    # attack and explain at their default verbosity: results only, no progress bars
    for argv in (
        ["attack", "--model", str(report_dir), "--n-samples", "5",
         "--out", str(tmp_path / "a.npz")],
        ["explain", "--model", str(report_dir), "--out", str(tmp_path / "e.png")],
    ):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert main(argv) == 0
        out, err = capfd.readouterr()
        assert err == "", argv[0]


def test_advknn_attack_reuses_the_heads_report_saved(report_dir, tmp_path, monkeypatch):
    fits = []
    original_fit = AdvKNNAttack.fit

    def counting_fit(self, X, y=None):
        fits.append(self.consistency)
        return original_fit(self, X, y)

    monkeypatch.setattr(AdvKNNAttack, "fit", counting_fit)
    adv = tmp_path / "advknn.npz"
    argv = ["attack", "--model", str(report_dir), "--method", "advknn-fgsm",
            "--n-samples", "10", "--out", str(adv), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert fits == []  # no head trained
    saved = load_adversarial(adv)
    assert saved.metrics["head_reused"] is True
    # the very images of the report's table: same head, same eps
    table = load_adversarial(
        saved_set(report_dir / "adversarial", "fgsm_dknnb_cl", 0.25)
    )
    np.testing.assert_array_equal(saved.X_adv, table.X_adv[:10])
    # the head without consistency learning is reused too
    argv = ["attack", "--model", str(report_dir), "--method", "advknn-fgsm",
            "--no-consistency", "--n-samples", "10", "--out", str(adv),
            "-q"]  # fmt: skip
    assert main(argv) == 0
    assert fits == []
    table = load_adversarial(saved_set(report_dir / "adversarial", "fgsm_dknnb", 0.25))
    np.testing.assert_array_equal(load_adversarial(adv).X_adv, table.X_adv[:10])
    # other head settings than the report's: one head is trained
    argv = ["attack", "--model", str(report_dir), "--method", "advknn-fgsm",
            "--lam", "0.5", "--head-epochs", "1", "--n-samples", "10",
            "--out", str(adv), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert fits == [True]
    assert load_adversarial(adv).metrics["head_reused"] is False


def test_train_takes_a_backend_recipe(tmp_path):
    out = tmp_path / "m"
    argv = ["train", *TINY, "-q", "--backend", "pca8+exact", "--out", str(out)]
    assert main(argv) == 0
    model = load_model(out / "model")
    assert all(isinstance(b, ProjectedBackend) for b in model.backends_)
    assert [b.n_components_ for b in model.backends_] == [8] * len(model.layers_)
    assert json.loads((out / "run.json").read_text())["settings"]["backend"] == (
        "pca8+exact"
    )


def test_bad_backend_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--backend", "pca128+falconn"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Unknown backend 'falconn'" in err and "pca128+faiss-ivf" in err


def test_ood_in_distribution_row_is_the_clean_tables_images(report_dir):
    from pathlib import Path

    from skdknn._report._commands import load_trained
    from skdknn._report._experiments import Outputs, ood_table
    from skdknn._report._models import fit_models

    config, data, _ = load_trained(str(report_dir))
    models = fit_models(config, data, Path(report_dir))
    clean = Outputs.of(models, data.X_test)
    config.ood_size = 20  # fewer inputs of no class than test images
    rows, scores = ood_table(models, data, clean, config)
    assert rows[0]["n"] == len(data.y_test) == 60
    assert rows[0]["mean_credibility"] == float(clean.dknn_cred.mean())
    assert scores["DkNN credibility"]["test digits"].size == 60
    assert [row["n"] for row in rows[1:]] == [20, 20, 20]


# -- the HTML report in a real browser -----------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]

# appended to a copy of report.html: after loading, list every image's natural
# width and every table's size in a <pre> that --dump-dom prints
PAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(
    (i) => [i.getAttribute("src"), i.complete, i.naturalWidth]);
  const tables = [...document.querySelectorAll("table")].map(
    (t) => [t.rows.length, t.rows[0].cells.length, t.getBoundingClientRect().height]);
  const out = document.createElement("pre");
  out.id = "skdknn-check";
  out.textContent = JSON.stringify({images, tables});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    if os.environ.get("SKDKNN_REQUIRE_CHROMIUM"):
        pytest.fail("SKDKNN_REQUIRE_CHROMIUM is set but chromium is not installed")
    pytest.skip("chromium is not installed (apt-get install chromium; CI has it)")


def _browse(browser: str, page, profile, *extra: str) -> str:
    result = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra,
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return result.stdout


def _rendered(browser: str, page, profile) -> dict:
    dom = _browse(browser, page, profile, "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="skdknn-check">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_html_report_renders_in_headless_chromium(report_dir, tmp_path):
    browser = _chromium()
    site = tmp_path / "site"
    shutil.copytree(report_dir / "figures", site / "figures")
    page = (report_dir / "report.html").read_text()
    (site / "report.html").write_text(page)
    (site / "check.html").write_text(page.replace("</body>", PAGE_CHECK + "</body>"))
    shot = tmp_path / "report.png"
    _browse(browser, site / "report.html", tmp_path / "p1",
            "--window-size=1200,3000", f"--screenshot={shot}")  # fmt: skip
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1200) and pixels.std() > 0.05
    rendered = _rendered(browser, site / "check.html", tmp_path / "p2")
    images = {src: (done, width) for src, done, width in rendered["images"]}
    assert set(images) == {f"figures/{name}.png" for name in FIGURES}
    assert all(done and width > 0 for done, width in images.values()), images
    # clean, choosing k, attacks, transfer, k sweep, detection, the thesis's FGSM
    # grid and its neighbour shares, out-of-distribution, accuracy against eps
    tables = rendered["tables"]
    assert len(tables) == 10
    assert all(rows >= 2 and cols >= 3 and height > 20 for rows, cols, height in tables)
    # the check sees a broken image
    broken = page.replace("figures/reliability.png", "figures/missing.png")
    (site / "broken.html").write_text(broken.replace("</body>", PAGE_CHECK + "</body>"))
    rendered = _rendered(browser, site / "broken.html", tmp_path / "p3")
    widths = {src: width for src, _, width in rendered["images"]}
    assert widths["figures/missing.png"] == 0


def test_attack_table_cells_recomputed_from_the_saved_sets(report_dir):
    """Every cell of Table 2 for the kNN and the DkNN follows from the saved model,
    the saved adversarial set and the test split (not only lies in [0, 1])."""
    from pathlib import Path

    from skdknn._report._commands import load_trained
    from skdknn._report._models import fit_models

    results = json.loads((report_dir / "results.json").read_text())
    table = results["attack_table"]
    config, data, _ = load_trained(str(report_dir))
    models = fit_models(config, data, Path(report_dir))
    X, y = data.X_test, data.y_test
    for name, model in (("knn", models.knn), ("dknn", models.dknn)):
        clean_pred = model.predict(X)
        for column, cell in table[name].items():
            X_adv = X
            if column != "clean":
                path = saved_set(report_dir / "adversarial", column, 0.25)
                X_adv = load_adversarial(path).X_adv
            pred = model.predict(X_adv)
            success = pred != clean_pred
            assert cell["accuracy"] == pytest.approx(np.mean(pred == y)), column
            assert cell["success_rate"] == pytest.approx(np.mean(success)), column
            assert cell["mean_credibility"] == pytest.approx(
                model.credibility(X_adv).mean()
            )
            l2 = np.linalg.norm((X_adv - X).reshape(len(X), -1), axis=1)
            if success.any():
                assert cell["mean_l2_successful"] == pytest.approx(
                    l2[success].mean(), rel=1e-5
                )
    # the attacks did something: some cells differ from the clean column
    assert table["dknn"]["bim_origin"]["accuracy"] < table["dknn"]["clean"]["accuracy"]


def test_every_trained_network_checked_for_undertraining(report_dir):
    """The report's CNN and the transfer section's LeNet-5 (1 epoch on 500 rows
    here): each is warned about exactly when its clean accuracy is below the
    threshold, in the JSON and next to its table on the page."""
    from skdknn._report._checks import MIN_CLEAN_ACCURACY

    results = json.loads((report_dir / "results.json").read_text())
    page = (report_dir / "report.md").read_text()
    cnn = next(r for r in results["clean"] if r["model"].startswith("CNN"))
    transfer = results["transfer"]
    checked = [
        ("DkNN paper CNN", cnn["accuracy"], results["notes"], "## Accuracy on clean"),
        (
            "LeNet-5",
            transfer["rows"]["clean"]["cnn"],
            transfer["warnings"],
            "## Transfer",
        ),
    ]
    assert any(accuracy < MIN_CLEAN_ACCURACY for _, accuracy, _, _ in checked)
    for name, accuracy, notes, heading in checked:
        found = [w for w in results["warnings"] if f"the {name} (saved in" in w]
        assert bool(found) == (accuracy < MIN_CLEAN_ACCURACY)
        assert notes == found
        section = page.split(heading)[1].split("\n## ")[0]
        for warning in found:
            assert f"{100 * accuracy:.1f} % clean test accuracy" in warning
            assert warning in section
    assert page.count("Warning:") == len(results["warnings"])


def test_thesis_grid_caption_counts_neighbours_and_ood_summary(report_dir):
    from skdknn._report._run import page_summary
    from skdknn._report._section_pages import neighbour_count_bounds

    # the section's shares: >= 14/15 (top), <= 1/15 (bottom)
    assert neighbour_count_bounds(25) == (24, 1)
    assert neighbour_count_bounds(75) == (70, 5)
    assert neighbour_count_bounds(15) == (14, 1)
    assert neighbour_count_bounds(10) == (10, 0)
    page = (report_dir / "report.md").read_text()
    assert "at least 10 of their 10 neighbours" in page and "14/15 of their" not in page
    results = json.loads((report_dir / "results.json").read_text())
    text = page_summary(results)
    assert "inputs of no class: mean DkNN credibility" in text
    for row in results["out_of_distribution"]:
        assert row["set"][:40] in text


def test_attack_layer_takes_any_name_of_the_layer(tmp_path, capsys):
    """--layer resolves names as AdvKNNAttack(layer=) and kneighbors(layer=) do:
    the full dotted name of a DkNN layer is that layer."""
    model = tmp_path / "model"
    assert main(["train", *TINY, "--out", str(model), "-q"]) == 0
    adv = tmp_path / "advknn.npz"
    argv = ["attack", "--model", str(model), "--method", "advknn-fgsm",
            "--layer", "features.relu3", "--head-epochs", "1", "--n-samples", "5",
            "--out", str(adv), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert load_adversarial(adv).metrics["attack"] == "AdvKNN FGSM (DkNNB+CL, relu3)"
    # a name that is no DkNN layer is still a clear error naming the choices
    argv[argv.index("features.relu3")] = "features.conv3"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--layer 'features.conv3' is not a DkNN layer; choose one of " in err
    assert "['relu1', 'relu2', 'relu3', 'logits'] or 'all'." in err
