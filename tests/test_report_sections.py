"""``skdknn report --sections / --net / --full``: AdvKNN's Table 3, Figs. 4, 5, 7.

Every number checked here is recomputed from what the report saved (models,
adversarial sets, credibilities) through the public API, not only range-checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import TINY_REPORT, saved_set
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator

from skdknn import load_model
from skdknn.__main__ import main
from skdknn._report import SECTIONS, ReportConfig, parse_sections
from skdknn._report._commands import load_trained
from skdknn._report._models import fit_models
from skdknn.attacks import load_adversarial
from skdknn.metrics import detection_rate, false_alarm_rate

# a report of seconds: tiny data, 1 epoch, small k
TINY = [*TINY_REPORT, "--k-grid", "3,10", "-q"]
NEW = "transfer,k-sweep,detection,thesis-fgsm"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sections")
    assert main(["report", *TINY, "--sections", NEW, "--out", str(out)]) == 0
    return out


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# -- the options ---------------------------------------------------------------------
def test_sections_parse_in_page_order_with_clean_always():
    assert parse_sections("detection,transfer") == ["clean", "transfer", "detection"]
    assert parse_sections("all") == list(SECTIONS)
    assert parse_sections(" k-sweep , clean ") == ["clean", "k-sweep"]
    for bad in ("tranfser", "", ",", "all,clean"):
        with pytest.raises(ValueError, match="--sections expects"):
            parse_sections(bad)


def test_default_quick_and_full_sections():
    default = ReportConfig()
    assert "layers" not in default.sections  # the expensive one
    assert {"transfer", "k-sweep", "detection", "table2"} <= set(default.sections)
    full = ReportConfig.from_overrides(full=True)
    assert full.sections == list(SECTIONS)
    assert full.curve_size == full.test_size == 1000
    # the papers' settings are the defaults
    assert (full.n_neighbors, full.eps, full.n_iter) == (75, 0.25, 100)
    assert ReportConfig.from_overrides(full=True, test_size=300).curve_size == 300
    with pytest.raises(ValueError, match="exclude each other"):
        ReportConfig.from_overrides(quick=True, full=True)


@pytest.mark.parametrize(
    "net, layer", [("paper-cnn", "relu3"), ("bn-cnn", "bn3"), ("lenet5", "relu3")]
)
def test_net_sets_the_attacked_layer_to_its_third(net, layer):
    assert ReportConfig(net=net).attacked_layer == layer
    assert ReportConfig(net=net, attacked_layer="relu1").attacked_layer == "relu1"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sections", "nope"], "--sections expects comma-separated names"),
        (["--quick", "--full"], "--quick and --full exclude each other"),
    ],
)
def test_bad_section_options_are_clear_errors(argv, message, tmp_path, capsys):
    assert main(["report", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_unknown_net_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--net", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err


# -- the sections ------------------------------------------------------------------
def test_only_the_chosen_sections_run(report_dir):
    results = _results(report_dir)
    assert results["settings"]["sections"] == ["clean", *NEW.split(",")]
    assert {"clean", "transfer", "k_sweep", "detection", "thesis_fgsm"} <= set(results)
    for absent in ("attack_table", "choosing_k", "curves", "out_of_distribution"):
        assert absent not in results
    names = [figure["name"] for figure in results["figures"]]
    assert names == [
        "reliability",
        "explanation_clean",
        "transfer",
        "attack_success_vs_k",
        "detection_credibility",
        "thesis_accuracy_vs_eps",
        "thesis_reliability_adversarial",
        "thesis_correct_neighbours",
    ]
    for name in names:
        png = report_dir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (report_dir / "report.md").read_text()
    assert "## Transfer to a LeNet-5 (AdvKNN Table 3)" in markdown
    assert "## Attacks at eps" not in markdown
    # the paper's Table 3 beside ours; the detection row of the paper's text
    assert "| FGSM origin |" in markdown and "| 68.42 |" in markdown
    assert "71.42 (47.54)" in markdown
    # each new section's figure sits under its own table, not under "Figures"
    assert "## Figures" in markdown
    figures_part = markdown.split("## Figures")[1]
    assert "figures/transfer.png" not in figures_part


def test_transfer_accuracies_recomputed_from_the_saved_target(report_dir):
    section = _results(report_dir)["transfer"]
    assert section["target_net"] == "lenet5"
    target = load_model(report_dir / "transfer" / "model")
    assert type(target.module_).__name__ == "LeNet5"
    _, data, _ = load_trained(str(report_dir))
    for name, row in section["rows"].items():
        X = data.X_test
        if name != "clean":
            X = load_adversarial(
                saved_set(report_dir / "adversarial", name, 0.25)
            ).X_adv
        assert row["dknn"] == pytest.approx(np.mean(target.predict(X) == data.y_test))
        assert row["mean_credibility"] == pytest.approx(target.credibility(X).mean())
    assert section["rows"]["bim_dknnb_cl"]["paper"]["dknn"] == pytest.approx(0.7004)
    # the target is a model directory of its own (explain / attack read it)
    assert (
        json.loads((report_dir / "transfer" / "run.json").read_text())["settings"][
            "net"
        ]
        == "lenet5"
    )


def test_k_sweep_recomputed_by_an_independent_refit(report_dir):
    section = _results(report_dir)["k_sweep"]
    assert section["k"] == [3, 10]
    config, data, dknn = load_trained(str(report_dir))
    # the DkNN at k = 3 on the same frozen network, rows and split
    refit = clone(dknn).set_params(n_neighbors=3, net=FrozenEstimator(dknn.net_))
    refit.fit(data.X_train, data.y_train)
    clean = refit.predict(data.X_test)
    X_adv = load_adversarial(
        saved_set(report_dir / "adversarial", "bim_origin", 0.25)
    ).X_adv
    expected = np.mean(refit.predict(X_adv) != clean)
    assert section["success_rate"]["BIM"]["DkNN"][0] == pytest.approx(expected)
    # at the report's own k the sweep is the attack table's model
    k10 = np.mean(dknn.predict(X_adv) != dknn.predict(data.X_test))
    assert section["success_rate"]["BIM"]["DkNN"][1] == pytest.approx(k10)


def test_detection_rates_recomputed_from_the_saved_credibilities(report_dir):
    section = _results(report_dir)["detection"]
    saved = np.load(report_dir / section["credibility_file"])
    threshold = section["threshold"]
    assert threshold == 0.5
    assert section["false_alarm_rate"] == pytest.approx(
        false_alarm_rate(saved["clean"], threshold)
    )
    _, data, dknn = load_trained(str(report_dir))
    X = data.X_test[: section["n"]]
    np.testing.assert_allclose(saved["clean"], dknn.credibility(X))
    assert [row["eps"] for row in section["rows"]] == [0.02, 0.1, 0.25]
    for row in section["rows"]:
        cred = saved[f"eps{row['eps']:g}"]
        assert row["detection_rate"] == pytest.approx(detection_rate(cred, threshold))
        assert row["mean_credibility"] == pytest.approx(cred.mean())
        # ... and the credibilities are the DkNN's on the saved adversarial set
        path = saved_set(
            report_dir / "adversarial" / "curves", "bim_dknnb_cl", row["eps"]
        )
        X_adv = load_adversarial(path).X_adv
        np.testing.assert_allclose(cred, dknn.credibility(X_adv))
        l2 = np.linalg.norm((X_adv - X).reshape(len(X), -1), axis=1)
        assert row["mean_l2"] == pytest.approx(l2.mean(), rel=1e-5)
        assert np.abs(X_adv - X).max() <= row["eps"] + 1e-6
    # a larger budget distorts more
    l2s = [row["mean_l2"] for row in section["rows"]]
    assert l2s == sorted(l2s)


def test_thesis_fgsm_recomputed_from_the_saved_sets(report_dir):
    section = _results(report_dir)["thesis_fgsm"]
    assert [row["eps"] for row in section["rows"]] == [
        0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15
    ]  # fmt: skip
    assert "_figures" not in section  # arrays stay out of the JSON
    config, data, dknn = load_trained(str(report_dir))
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    path = saved_set(report_dir / "adversarial" / "curves", "fgsm_origin", 0.15)
    X_adv = load_adversarial(path).X_adv
    assert np.abs(X_adv - X).max() <= 0.15 + 1e-6
    last = section["rows"][-1]
    assert last["dknn_accuracy"] == pytest.approx(np.mean(dknn.predict(X_adv) == y))
    assert section["rows"][0]["dknn_accuracy"] == pytest.approx(
        np.mean(dknn.predict(X) == y)
    )
    # the neighbour shares, from the public neighbour counts
    counts = dknn.neighbor_counts(X_adv)  # (n, layers, classes)
    own = counts[np.arange(len(y)), 2, np.searchsorted(dknn.classes_, y)]
    share = own / config.n_neighbors
    assert section["correct_neighbours"][
        "third layer, adversarial: bottom"
    ] == pytest.approx(np.mean(share <= 1 / 15))
    assert section["thesis"]["cnn_accuracy"] == 0.13


def test_a_rerun_reuses_every_saved_part(report_dir, capsys):
    files = [
        report_dir / "transfer" / "model" / "model.pkl",
        report_dir / "sections" / "k_sweep.joblib",
        saved_set(report_dir / "adversarial" / "curves", "bim_dknnb_cl", 0.1),
        saved_set(report_dir / "adversarial", "bim_origin", 0.25),
    ]
    before = [path.stat().st_mtime_ns for path in files]
    assert main(["report", *TINY, "--sections", NEW, "--out", str(report_dir)]) == 0
    results = _results(report_dir)
    assert results["transfer"]["target_loaded_from_cache"] is True
    assert results["k_sweep"]["loaded_from_cache"] is True
    assert [path.stat().st_mtime_ns for path in files] == before
    # another k grid recomputes the sweep, and only the sweep
    argv = [*TINY, "--k-grid", "3,5", "--sections", NEW, "--out", str(report_dir)]
    assert main(["report", *argv]) == 0
    results = _results(report_dir)
    assert results["k_sweep"]["loaded_from_cache"] is False
    assert results["k_sweep"]["k"] == [3, 5]
    assert results["transfer"]["target_loaded_from_cache"] is True
    assert files[0].stat().st_mtime_ns == before[0]


@pytest.mark.slow
def test_damaged_section_cache_is_recomputed(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["report", *TINY, "--sections", "k-sweep", "--out", str(out)]
    assert main(argv) == 0
    first = _results(out)["k_sweep"]
    path = out / "sections" / "k_sweep.joblib"
    path.write_bytes(path.read_bytes()[:50])
    capsys.readouterr()
    assert main(argv) == 0
    assert f"Saved section {path} not usable" in capsys.readouterr().out
    second = _results(out)["k_sweep"]
    assert second["loaded_from_cache"] is False
    assert second["success_rate"] == first["success_rate"]


@pytest.mark.slow
def test_lenet5_report_transfers_to_the_paper_cnn(tmp_path):
    out = tmp_path / "lenet"
    argv = ["report", *TINY, "--net", "lenet5", "--sections", "transfer"]
    assert main([*argv, "--out", str(out)]) == 0
    results = _results(out)
    assert results["layers"] == ["relu1", "relu2", "relu3", "relu4", "logits"]
    assert results["clean"][0]["model"] == "CNN (LeNet-5)"
    assert results["transfer"]["target_net"] == "paper-cnn"
    assert "## Transfer to a DkNN paper CNN" in (out / "report.md").read_text()
    config, _, dknn = load_trained(str(out))
    assert config.net == "lenet5" and type(dknn.module_).__name__ == "LeNet5"


@pytest.mark.slow
def test_layers_section_and_mean_attack(tmp_path):
    """AdvKNN Fig. 4: a head on each layer, MeanAttack recomputed from its set."""
    out = tmp_path / "layers"
    argv = ["report", *TINY, "--eps-grid", "0.3", "--sections", "layers"]
    assert main([*argv, "--out", str(out)]) == 0
    section = _results(out)["layer_ablation"]
    assert section["layers"] == ["relu1", "relu2", "relu3", "logits"]
    assert section["eps"] == [0.3]
    config, data, dknn = load_trained(str(out))
    y = data.y_test[: config.curve_size]
    for layer in section["layers"]:
        name = "bim_dknnb_cl" if layer == "relu3" else f"bim_{layer}-cl"
        X_adv = load_adversarial(saved_set(out / "adversarial" / "curves", name, 0.3))
        accuracy = np.mean(dknn.predict(X_adv.X_adv) == y)
        assert section["curves"]["DkNN"][layer]["accuracy"] == [pytest.approx(accuracy)]
    mean = load_adversarial(saved_set(out / "adversarial" / "curves", "mean_attack"))
    mean = mean.X_adv
    pred = dknn.predict(mean)
    assert section["mean_attack"]["dknn_accuracy"] == pytest.approx(np.mean(pred == y))
    assert section["paper"]["Sitawarin & Wagner (paper)"]["mean_l2"] == 3.476
    markdown = (out / "report.md").read_text()
    assert "MeanAttack (Sitawarin & Wagner), ours" in markdown
    # the heads are reused on a rerun
    heads = out / "sections" / "layer_heads.pkl"
    before = heads.stat().st_mtime_ns
    assert main([*argv, "--out", str(out)]) == 0
    assert heads.stat().st_mtime_ns == before


def test_fit_models_builds_the_chosen_net(tmp_path):
    config = ReportConfig.quick(
        net="bn-cnn",
        train_size=300,
        test_size=30,
        calibration_size=50,
        n_neighbors=5,
        max_epochs=1,
        verbose=0,
    )
    from skdknn._report._data import load_data

    models = fit_models(config, load_data(config), tmp_path)
    assert type(models.dknn.module_).__name__ == "BatchNormCNN"
    assert models.dknn.layers_ == ["bn1", "bn2", "bn3"]
    assert models.knn.layers_ == ["bn3"]
