"""The report's caches (heads saved without their DkNN, adversarial sets keyed by
their images) and the ``advknn-gap`` section."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _helpers import TINY_REPORT, saved_set
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator

from skdknn.__main__ import main
from skdknn._report import ReportConfig, _experiments, parse_sections
from skdknn._report._commands import load_trained
from skdknn._report._config import DEFAULT_SECTIONS, SECTIONS
from skdknn._report._data import load_data
from skdknn._report._experiments import adversarial_sets
from skdknn._report._gap import train_size_config
from skdknn._report._models import fit_heads, fit_models, heads_key, load_heads
from skdknn._report._sections import layer_heads
from skdknn.attacks import AdvKNNAttack, load_adversarial


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A report's models and heads on 300 training images, 1 epoch."""
    out = tmp_path_factory.mktemp("tiny")
    config = ReportConfig.quick(
        train_size=300,
        test_size=30,
        calibration_size=50,
        n_neighbors=5,
        max_epochs=1,
        head_epochs=1,
        out=str(out),
        verbose=0,
    )
    data = load_data(config)
    models = fit_models(config, data, out)
    heads = fit_heads(config, models, data, out)
    return config, data, models, heads, out


# -- layer_heads: the heads only, not a DkNN per head ------------------------------
def _n_parameters(attack: AdvKNNAttack) -> int:
    return sum(p.numel() for p in attack.heads_.parameters())


def test_layer_heads_file_holds_the_heads_not_the_dknn(tiny):
    config, data, models, heads, out = tiny
    by_layer = layer_heads(config, models, heads, data, out)
    (path,) = (out / "sections").glob("layer_heads.*")
    trained = [a for layer, a in by_layer.items() if layer != config.attacked_layer]
    n_params = sum(_n_parameters(a) for a in trained)
    # float32 weights of the heads, their Adam-free state and a little pickle
    # overhead: a pickled DkNN (its per-layer index of every training image) is
    # many times larger even on 250 indexed images
    assert path.stat().st_size < 2 * 4 * n_params + 100_000
    # reloaded, the heads attack the same in-memory DkNN and give the same q(x)
    again = layer_heads(config, models, heads, data, out)
    X = data.X_test[:5]
    for layer, attack in again.items():
        assert attack.target_.estimator is models.dknn or layer == (
            config.attacked_layer
        )
        np.testing.assert_array_equal(
            attack.head_proba(X), by_layer[layer].head_proba(X)
        )
        assert attack is not by_layer[layer] or layer == config.attacked_layer


def test_heads_file_holds_the_heads_not_the_network(tiny):
    config, data, models, heads, out = tiny
    network_bytes = sum(
        p.numel() * p.element_size() for p in models.dknn.module_.parameters()
    )
    # each head keeps its kNN's small relu3 index, but not the network's weights
    assert (out / "heads.pkl").stat().st_size < network_bytes / 2
    again = load_heads(out, heads_key(config, models), models.dknn)
    assert set(again) == {"dknnb", "dknnb_cl"}
    for name, attack in again.items():
        assert attack.target_.module is models.dknn.module_
        X = data.X_test[:5]
        np.testing.assert_array_equal(attack.head_proba(X), heads[name].head_proba(X))


def test_damaged_layer_heads_are_retrained(tiny, capsys):
    config, data, models, heads, out = tiny
    layer_heads(config, models, heads, data, out)
    (path,) = (out / "sections").glob("layer_heads.*")
    path.write_bytes(path.read_bytes()[:40])
    by_layer = layer_heads(config, models, heads, data, out)
    assert "not usable" in capsys.readouterr().out
    assert set(by_layer) == set(models.dknn.layers_)
    assert path.stat().st_size > 40


# -- adversarial sets: keyed by the images they are made from ---------------------
@pytest.fixture
def counted(monkeypatch):
    """Counts the adversarial sets computed (not loaded)."""
    calls: list[int] = []
    factory = _experiments._attack_factory

    def counting(*args, **kwargs):
        run = factory(*args, **kwargs)

        def wrapped(X):
            calls.append(len(X))
            return run(X)

        return wrapped

    monkeypatch.setattr(_experiments, "_attack_factory", counting)
    return calls


def _sets(tiny, X, cache, **changes):
    config, _, models, heads, _ = tiny
    config = dataclasses.replace(config, **changes)
    return adversarial_sets(
        ["fgsm_origin"],
        models,
        heads,
        X,
        config,
        eps=0.1,
        n_iter=1,
        cache=cache,
        desc="",
    )["fgsm_origin"][0]


def test_a_set_is_reused_only_for_the_same_images(tiny, counted, tmp_path):
    X = tiny[1].X_test
    first = _sets(tiny, X[:20], tmp_path)
    assert counted == [20]
    _sets(tiny, X[:10], tmp_path)  # fewer images (--curve-size): recomputed
    assert counted == [20, 10]
    # ... without overwriting the first: going back reuses it
    np.testing.assert_array_equal(_sets(tiny, X[:20], tmp_path), first)
    assert counted == [20, 10]
    # as many images, but others (another split or test set): recomputed
    other = _sets(tiny, X[10:30], tmp_path)
    assert counted == [20, 10, 20]
    assert not np.array_equal(other, first)
    # and each count has a file of its own
    names = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert names == ["fgsm_origin_eps0.1_n10.npz", "fgsm_origin_eps0.1_n20.npz"]


@pytest.mark.parametrize(
    "change", [{"step": 0.02}, {"n_iter": 7}, {"boundary_eps": 0.1}]
)
def test_a_set_is_recomputed_when_a_setting_changes(tiny, counted, tmp_path, change):
    X = tiny[1].X_test[:10]
    _sets(tiny, X, tmp_path)
    _sets(tiny, X, tmp_path)
    assert counted == [10]
    _sets(tiny, X, tmp_path, **change)
    assert counted == [10, 10]


# -- the section ------------------------------------------------------------------
def test_gap_section_is_not_in_the_default_run():
    assert "advknn-gap" in SECTIONS and "advknn-gap" not in DEFAULT_SECTIONS
    assert parse_sections("advknn-gap") == ["clean", "advknn-gap"]
    full = ReportConfig.from_overrides(full=True)
    assert "advknn-gap" in full.sections and full.gap_train_sizes == [1000, 2000]
    assert ReportConfig().gap_train_sizes == []
    # the paper's recipe stays the head's default
    assert AdvKNNAttack(None).boundary_eps == 0.0


def test_train_size_config_scales_k_and_calibration(tmp_path):
    config = ReportConfig(out=str(tmp_path))
    small = train_size_config(config, 1000, 4000)
    assert (small.train_size, small.n_neighbors, small.calibration_size) == (
        1000,
        19,
        188,
    )
    assert small.out == str(tmp_path / "gap_train_sizes" / "n1000")
    assert small.gap_train_sizes == []


@pytest.mark.slow
def test_gap_section_recomputed_from_the_saved_sets(tmp_path):
    out = tmp_path / "gap"
    argv = [
        "report",
        *TINY_REPORT,
        "--gap-eps",
        "0.1",
        "--cw-steps",
        "2",
        "--gap-train-sizes",
        "300",
        "--sections",
        "advknn-gap",
        "-q",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    section = results["advknn_gap"]
    assert list(section["table"]) == ["FGSM eps 0.1", "BIM eps 0.1", "CW"]
    config, data, dknn = load_trained(str(out))
    y = data.y_test[: config.curve_size]
    # the kNN of the attacked layer, as the report builds it
    knn = clone(dknn).set_params(
        net=FrozenEstimator(dknn.net_), layers=[config.attacked_layer], verbose=0
    )
    knn.fit(data.X_train, data.y_train)
    for label, directory, name in (
        ("BIM eps 0.1", out / "adversarial" / "curves", "bim_dknnb_cl_b"),
        ("CW", out / "adversarial" / "gap", "cw_origin"),
    ):
        eps = 0.1 if label.startswith("BIM") else None
        X_adv = load_adversarial(saved_set(directory, name, eps)).X_adv
        for key, model in (("dknn", dknn), ("knn", knn)):
            cell = section["table"][label][key][name.partition("_")[2]]
            pred = model.predict(X_adv)
            assert cell["accuracy"] == pytest.approx(np.mean(pred == y))
            assert cell["mean_credibility"] == pytest.approx(
                model.credibility(X_adv).mean()
            )
    assert set(section["agreement"]) == {"dknnb", "dknnb_cl", "dknnb_cl_b"}
    sizes = section["train_sizes"]
    assert [row["n_train"] for row in sizes] == [300, 600]
    assert sizes[0]["n_neighbors"] == 5 and sizes[0]["calibration_size"] == 50
    assert (out / "gap_train_sizes" / "n300" / "model").is_dir()
    # the smaller model is checked for undertraining like every trained network
    # (its clean CNN accuracy here is on all the test images: curve_size >= 60)
    small_warnings = [w for w in results["warnings"] if "n300" in w]
    assert sizes[0]["warnings"] == small_warnings
    assert bool(small_warnings) == (sizes[0]["clean"]["cnn"] < 0.5)
    for warning in small_warnings:
        assert f"{100 * sizes[0]['clean']['cnn']:.1f} % clean test" in warning
    assert sizes[1]["attacks"]["FGSM eps 0.1"]["knn"]["origin"] == pytest.approx(
        section["table"]["FGSM eps 0.1"]["knn"]["origin"]["accuracy"]
    )
    markdown = (out / "report.md").read_text()
    assert "## The AdvKNN gap where FGSM leaves room" in markdown
    assert "figures/advknn_gap_train_sizes.png" in markdown
    gap_part = markdown.split("## The AdvKNN gap where FGSM leaves room")[1]
    assert all(warning in gap_part for warning in small_warnings)
    # a rerun reuses every set and head
    files = sorted((out / "adversarial").rglob("*.npz"))
    files.append(out / "sections" / "gap_boundary_head.pkl")
    before = [p.stat().st_mtime_ns for p in files]
    assert main(argv) == 0
    assert [p.stat().st_mtime_ns for p in files] == before
