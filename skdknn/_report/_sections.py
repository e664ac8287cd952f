"""The report's sections beyond Table 2: AdvKNN's Table 3 and Figs. 4, 5 and 7.

Each section reuses what is saved: the models, the DkNNB heads and the adversarial
sets of the other sections (:func:`adversarial_sets` finds them in their cache), so
that only what is new is computed; the numbers a section derives from many model
fits (the k sweep) are saved with the key of everything they depend on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from tqdm.auto import tqdm

from ..attacks import AdvKNNAttack, MeanAttack, save_adversarial
from ..metrics import (
    accuracy_under_attack,
    attack_success_rate,
    detection_rate,
    false_alarm_rate,
    mean_l2_distortion,
)
from ._config import ATTACK_SETTINGS, HEAD_SETTINGS, ReportConfig
from ._data import Data
from ._experiments import (
    Outputs,
    curve_iterations,
    curve_sets,
    images_key,
    load_set,
)
from ._models import (
    Models,
    cached_attacks,
    dknn_outputs,
    fit_models,
    heads_key,
    model_references,
)

__all__ = [
    "PAPER_DETECTION",
    "PAPER_FIG4",
    "PAPER_TABLE3",
    "THESIS_FGSM",
    "TRANSFER_SETS",
    "cached_result",
    "detection_section",
    "k_sweep_section",
    "layers_section",
    "thesis_section",
    "transfer_section",
]

SECTION_DIR = "sections"

#: Table 2 sets whose transfer AdvKNN's Table 3 measures.
TRANSFER_SETS = ("fgsm_origin", "fgsm_dknnb_cl", "bim_origin", "bim_dknnb_cl")

#: AdvKNN Table 3: accuracy (%) of a clean LeNet-5's DNN / kNN / DkNN.
PAPER_TABLE3 = {
    "fgsm_origin": {"cnn": 68.42, "knn": 75.06, "dknn": 81.41},
    "fgsm_dknnb_cl": {"cnn": 56.06, "knn": 64.97, "dknn": 75.70},
    "bim_origin": {"cnn": 47.46, "knn": 59.72, "dknn": 72.61},
    "bim_dknnb_cl": {"cnn": 47.55, "knn": 56.37, "dknn": 70.04},
}

#: AdvKNN text beside Fig. 5: at credibility threshold 0.5, 71.42 % of the AdvKNN
#: examples of mean L2 distortion 0.3 are flagged, and 47.54 % of clean inputs.
PAPER_DETECTION = {"mean_l2": 0.3, "detection_rate": 0.7142, "false_alarm": 0.4754}

#: AdvKNN text beside Fig. 4: DkNN accuracy, mean L2 distortion and mean
#: credibility of AdvKNN and of Sitawarin & Wagner's attack (their best L-inf one).
PAPER_FIG4 = {
    "AdvKNN (paper)": {"dknn_accuracy": 0.0571, "mean_l2": 1.4909},
    "AdvKNN, credibility (paper)": {"mean_credibility": 0.4608, "mean_l2": 3.005},
    "Sitawarin & Wagner (paper)": {
        "dknn_accuracy": 0.1744,
        "mean_l2": 3.476,
        "mean_credibility": 0.1037,
    },
}

#: Topolewski's thesis, paper CNN on MNIST under FGSM at eps = 0.15: accuracy of the
#: CNN and the DkNN (Fig. 4.5), the CNN's mean softmax confidence (Sec. 4.2), and
#: the share of test images with at least 14/15 of their k neighbours of the true
#: label (top) or at most 1/15 (bottom) on the first and third layer (Fig. 4.3).
THESIS_FGSM = {
    "eps": 0.15,
    "cnn_accuracy": 0.13,
    "dknn_accuracy": 0.50,
    "mean_softmax_confidence": 0.84,
    "correct_neighbours": {
        "first layer, clean: top": 0.80,
        "first layer, adversarial: top": 0.44,
        "third layer, clean: top": 0.98,
        "third layer, adversarial: bottom": 0.76,
    },
}

#: The attacks of the k sweep (AdvKNN Fig. 7): Table 2 sets, with their titles.
K_SWEEP_SETS = {
    "fgsm_origin": "FGSM",
    "bim_origin": "BIM",
    "fgsm_dknnb_cl": "AdvKNN FGSM",
    "bim_dknnb_cl": "AdvKNN BIM",
}


# -- a cache of derived numbers ---------------------------------------------------
def cached_result(
    out: Path, name: str, key: str, compute: Callable[[], Any], reuse: bool = True
) -> tuple[Any, bool]:
    """``compute()``, or what it returned before under the same ``key``.

    Saved in ``out/sections/<name>.joblib``; a missing, damaged or differently
    keyed file is recomputed (a damaged one is reported). Returns the value and
    whether it was loaded.
    """
    path = out / SECTION_DIR / f"{name}.joblib"
    if reuse and path.is_file():
        try:
            saved = joblib.load(path)
            if saved.get("key") == key:
                return saved["value"], True
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            print(f"Saved section {path} not usable ({error!r}); recomputing.")
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    joblib.dump({"key": key, "value": value}, tmp)
    os.replace(tmp, path)
    return value, False


def _sets_key(config: ReportConfig, models: Models) -> str:
    """The key under which :func:`adversarial_sets` saves this model's sets."""
    return config.key(*ATTACK_SETTINGS, parent=heads_key(config, models))


# -- AdvKNN Table 3: transferability to a LeNet-5 ----------------------------------
def transfer_config(config: ReportConfig) -> ReportConfig:
    """The settings of the network the Table 2 sets transfer to: a LeNet-5 trained
    on the same clean training images (the DkNN paper CNN when the report's own
    network is a LeNet-5), with the report's k, calibration and backend."""
    target = "paper-cnn" if config.net == "lenet5" else "lenet5"
    return dataclasses.replace(
        config,
        net=target,
        max_epochs=config.transfer_epochs,
        attacked_layer="",
        out=str(Path(config.out) / "transfer"),
    )


def transfer_section(
    config: ReportConfig,
    data: Data,
    out: Path,
    sets: dict[str, tuple[NDArray[np.float32], float]],
) -> dict[str, Any]:
    """Accuracy of the target network's DNN / kNN / DkNN on clean test images and
    on the Table 2 sets of :data:`TRANSFER_SETS` (AdvKNN Table 3).

    The target is trained once and saved in ``out/transfer`` (a model directory
    that ``skdknn explain --model`` reads), and reused under the same settings.
    """
    target_config = transfer_config(config)
    target = fit_models(target_config, data, out / "transfer")
    rows: dict[str, dict[str, Any]] = {}
    for name in ("clean", *TRANSFER_SETS):
        X = data.X_test if name == "clean" else sets[name][0]
        outputs = Outputs.of(target, X)
        rows[name] = {
            model: accuracy_under_attack(data.y_test, outputs.model(model)[0])
            for model in ("cnn", "knn", "dknn")
        }
        rows[name]["mean_credibility"] = float(outputs.dknn_cred.mean())
        if name in PAPER_TABLE3:
            rows[name]["paper"] = {m: v / 100 for m, v in PAPER_TABLE3[name].items()}
    return {
        "target_net": target_config.net,
        "target_layer": target_config.attacked_layer,
        "target_epochs": target_config.max_epochs,
        "target_loaded_from_cache": target.loaded,
        "batchnorm_recalibrated": target.batchnorm_recalibrated,
        "notes": target.page_notes,
        "warnings": target.warnings,
        "rows": rows,
    }


# -- AdvKNN Fig. 7: attack success against k ---------------------------------------
def k_sweep_section(
    config: ReportConfig,
    models: Models,
    data: Data,
    out: Path,
    sets: dict[str, tuple[NDArray[np.float32], float]],
) -> tuple[dict[str, Any], bool]:
    """Attack success rate and accuracy of the attacked-layer kNN and of the DkNN
    refitted with each k of ``config.k_grid`` (same frozen network, rows and
    calibration split), on the first ``curve_size`` images of the Table 2 sets of
    :data:`K_SWEEP_SETS`.

    The adversarial sets are those made against the k = ``n_neighbors`` models;
    only the neighbour search is refitted per k. Returns the numbers and whether
    they were loaded from the cache.
    """
    n_indexed = len(data.y_train) - config.calibration_size
    grid = [k for k in config.k_grid if k <= n_indexed]
    n = min(config.curve_size, len(data.y_test))
    key = config.key("k_grid", "curve_size", parent=_sets_key(config, models))

    def compute() -> dict[str, Any]:
        frozen = FrozenEstimator(models.dknn.net_)
        result: dict[str, Any] = {"k": grid, "n": n, "success_rate": {}}
        result["accuracy"] = {}
        for title in K_SWEEP_SETS.values():
            result["success_rate"][title] = {"kNN": [], "DkNN": []}
            result["accuracy"][title] = {"kNN": [], "DkNN": []}
        for k in tqdm(grid, desc="k sweep", disable=config.verbose <= 0):
            for title, base in (("kNN", models.knn), ("DkNN", models.dknn)):
                model = clone(base).set_params(n_neighbors=k, net=frozen, verbose=0)
                model.fit(data.X_train, data.y_train)
                clean_pred = model.predict(data.X_test[:n])
                for name, attack in K_SWEEP_SETS.items():
                    pred = model.predict(sets[name][0][:n])
                    result["success_rate"][attack][title].append(
                        attack_success_rate(clean_pred, pred)
                    )
                    result["accuracy"][attack][title].append(
                        accuracy_under_attack(data.y_test[:n], pred)
                    )
        return result

    return cached_result(out, "k_sweep", key, compute, config.reuse)


# -- AdvKNN Fig. 5: credibility of clean and AdvKNN inputs -------------------------
def detection_section(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    out: Path,
) -> dict[str, Any]:
    """DkNN credibility of the first ``curve_size`` clean test images and of their
    AdvKNN BIM (DkNNB+CL) versions at each eps of ``config.detection_eps``, with
    the share flagged at ``config.detection_threshold`` (credibility below it).

    The credibilities are saved in ``out/sections/detection.npz`` (``clean`` and
    ``eps<eps>``), so that every rate can be recomputed from them.
    """
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    threshold = config.detection_threshold
    clean_pred, clean_cred = dknn_outputs(models.dknn, X)
    credibility = {"clean": clean_cred}
    rows = []
    for eps in config.detection_eps:
        n_iter = curve_iterations(eps, config)
        (X_adv, _) = curve_sets(
            ["bim_dknnb_cl"],
            models,
            heads,
            X,
            config,
            eps=eps,
            cache=out / "adversarial" / "curves",
        )["bim_dknnb_cl"]
        pred, cred = dknn_outputs(models.dknn, X_adv)
        credibility[f"eps{eps:g}"] = cred
        success = pred != clean_pred
        rows.append(
            {
                "eps": eps,
                "bim_iterations": n_iter,
                "mean_l2": mean_l2_distortion(X, X_adv),
                "mean_l2_successful": mean_l2_distortion(X, X_adv, success),
                "dknn_accuracy": accuracy_under_attack(y, pred),
                "success_rate": attack_success_rate(clean_pred, pred),
                "mean_credibility": float(cred.mean()),
                "detection_rate": detection_rate(cred, threshold),
                "detection_rate_successful": (
                    detection_rate(cred[success], threshold)
                    if success.any()
                    else float("nan")
                ),
            }
        )
    path = out / SECTION_DIR / "detection.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, allow_pickle=False, **credibility)
    return {
        "n": len(y),
        "threshold": threshold,
        "clean_accuracy": accuracy_under_attack(y, clean_pred),
        "clean_mean_credibility": float(clean_cred.mean()),
        "false_alarm_rate": false_alarm_rate(clean_cred, threshold),
        "rows": rows,
        "credibility_file": str(path.relative_to(out)),
        "paper": PAPER_DETECTION,
        "_credibility": credibility,  # for the figure; not written to the JSON
    }


# -- AdvKNN Fig. 4: the head on each layer, and MeanAttack -------------------------
def layer_heads(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    out: Path,
) -> dict[str, AdvKNNAttack]:
    """A DkNNB+CL head on each DkNN layer (the attacked layer's is the report's),
    trained once and saved in ``out/sections/layer_heads.pkl`` (the heads only,
    without the DkNN they imitate: :func:`cached_attacks`)."""
    layers = [layer for layer in models.dknn.layers_ if layer != config.attacked_layer]
    key = config.key(*HEAD_SETTINGS, parent=models.model_id)

    def compute() -> dict[str, AdvKNNAttack]:
        trained = {}
        for layer in tqdm(layers, desc="DkNNB heads", disable=config.verbose <= 0):
            attack = AdvKNNAttack(
                FrozenEstimator(models.dknn),
                layer=layer,
                lam=config.lam,
                consistency=True,
                head_epochs=config.head_epochs,
                batch_size=config.batch_size,
                random_state=config.random_state,
            )
            trained[layer] = attack.fit(data.X_train)
        return trained

    path = out / SECTION_DIR / "layer_heads.pkl"
    trained, _ = cached_attacks(
        path, key, compute, model_references(models), config.reuse
    )
    by_layer = dict(trained)
    by_layer[str(config.attacked_layer)] = heads["dknnb_cl"]
    return {layer: by_layer[layer] for layer in models.dknn.layers_}


def _set_name(layer: str, config: ReportConfig) -> str:
    """Adversarial-set name of the BIM attack through ``layer``'s head; the
    attacked layer's is the curves' ``bim_dknnb_cl`` (the same set)."""
    return "bim_dknnb_cl" if layer == config.attacked_layer else f"bim_{layer}-cl"


def layers_section(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    out: Path,
) -> dict[str, Any]:
    """AdvKNN BIM through a DkNNB+CL head on each DkNN layer at each eps of
    ``eps_grid``: accuracy of the attacked-layer kNN and of the DkNN against the
    mean L2 distortion of the successful examples; and MeanAttack (Sitawarin &
    Wagner) on the DkNN, on the same ``curve_size`` test images."""
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    by_layer = layer_heads(config, models, heads, data, out)
    attacks = {
        _set_name(layer, config).partition("_")[2]: head
        for layer, head in by_layer.items()
    }
    clean = Outputs.of(models, X)
    curves: dict[str, Any] = {
        model: {
            layer: {"accuracy": [], "mean_l2": [], "mean_credibility": []}
            for layer in by_layer
        }
        for model in ("kNN", "DkNN")
    }
    eps_grid = [eps for eps in config.eps_grid if eps > 0]
    for eps in tqdm(eps_grid, desc="heads per layer", disable=config.verbose <= 0):
        sets = curve_sets(
            [_set_name(layer, config) for layer in by_layer],
            models,
            attacks,
            X,
            config,
            eps=eps,
            cache=out / "adversarial" / "curves",
        )
        for layer in by_layer:
            X_adv = sets[_set_name(layer, config)][0]
            outputs = Outputs.of(models, X_adv)
            for model, key in (("kNN", "knn"), ("DkNN", "dknn")):
                pred, cred = outputs.model(key)
                cell = curves[model][layer]
                cell["accuracy"].append(accuracy_under_attack(y, pred))
                success = pred != clean.model(key)[0]
                cell["mean_l2"].append(mean_l2_distortion(X, X_adv, success))
                assert cred is not None
                cell["mean_credibility"].append(float(cred.mean()))
    mean = _mean_attack(config, models, data, X, out)
    pred, cred = dknn_outputs(models.dknn, mean)
    success = pred != clean.dknn_pred
    return {
        "eps": eps_grid,
        "layers": list(by_layer),
        "curves": curves,
        "head_agreement": {layer: float(h.agreement_) for layer, h in by_layer.items()},
        "mean_attack": {
            "dknn_accuracy": accuracy_under_attack(y, pred),
            "success_rate": attack_success_rate(clean.dknn_pred, pred),
            "mean_l2_successful": mean_l2_distortion(X, mean, success),
            "mean_credibility": float(cred.mean()),
        },
        "paper": PAPER_FIG4,
    }


def _mean_attack(
    config: ReportConfig,
    models: Models,
    data: Data,
    X: NDArray[np.float32],
    out: Path,
) -> NDArray[np.float32]:
    """MeanAttack on the DkNN, saved in
    ``out/adversarial/curves/mean_attack_n<images>.npz``."""
    path = out / "adversarial" / "curves" / f"mean_attack_n{len(X)}.npz"
    key = config.key(parent=models.model_id)
    images = images_key(X)
    saved = load_set(path) if config.reuse else None
    if (
        saved is not None
        and saved.metrics.get("key") == key
        and saved.metrics.get("images") == images
        and saved.X_adv.shape == X.shape
    ):
        return np.asarray(saved.X_adv, dtype=np.float32)
    # MeanAttack only predicts: the DkNN is used as it is, never refitted
    attack = MeanAttack(models.dknn).fit(data.X_train, data.y_train)
    X_adv = attack.transform(X)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_adversarial(path, X_adv, metrics={"key": key, "images": images})
    return X_adv


# -- the thesis: FGSM at its eps grid (Topolewski, Figs. 4.2-4.5) ------------------
def _correct_share(counts: NDArray, y_index: NDArray) -> NDArray[np.float64]:
    """Per input and layer, the share of the k neighbours with the true label."""
    k = counts.sum(axis=2, keepdims=True)
    own = np.take_along_axis(counts, y_index[:, None, None], axis=2)
    return (own / k)[:, :, 0]


def thesis_section(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    out: Path,
) -> dict[str, Any]:
    """FGSM through the CNN at each eps of ``thesis_eps`` on the first
    ``curve_size`` test images: CNN / kNN / DkNN accuracy, mean credibility and
    softmax confidence; at the largest eps (the thesis's 0.15) the reliability
    diagrams and the share of true-label neighbours per layer, clean and
    adversarial (the sets are shared with the accuracy-against-eps curves)."""
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    y_index = np.searchsorted(models.dknn.classes_, y)
    rows = []
    last: dict[str, Any] = {}
    for eps in [0.0, *config.thesis_eps]:
        X_adv = X
        if eps > 0:
            X_adv = curve_sets(
                ["fgsm_origin"],
                models,
                heads,
                X,
                config,
                eps=eps,
                cache=out / "adversarial" / "curves",
            )["fgsm_origin"][0]
        outputs = Outputs.of(models, X_adv)
        rows.append(
            {
                "eps": eps,
                "cnn_accuracy": accuracy_under_attack(y, outputs.cnn_pred),
                "knn_accuracy": accuracy_under_attack(y, outputs.knn_pred),
                "dknn_accuracy": accuracy_under_attack(y, outputs.dknn_pred),
                "mean_credibility": float(outputs.dknn_cred.mean()),
                "mean_softmax_confidence": float(outputs.softmax.mean()),
            }
        )
        if eps == 0.0 or eps == max(config.thesis_eps):
            counts = models.dknn.neighbor_counts(X_adv)
            last["clean" if eps == 0.0 else "adversarial"] = {
                "outputs": outputs,
                "correct_share": _correct_share(counts, y_index),
            }
    share = {name: part["correct_share"] for name, part in last.items()}
    layers = list(models.dknn.layers_)
    positions = [0, min(2, len(layers) - 1)]  # the first and the third layer
    summary = {}
    for position, title in zip(positions, ("first", "third"), strict=True):
        for name, values in share.items():
            summary[f"{title} layer, {name}: top"] = float(
                np.mean(values[:, position] >= 14 / 15)
            )
            summary[f"{title} layer, {name}: bottom"] = float(
                np.mean(values[:, position] <= 1 / 15)
            )
    return {
        "n": len(y),
        "rows": rows,
        "eps_at_figures": max(config.thesis_eps),
        "correct_neighbours": summary,
        "layers_shown": [layers[p] for p in positions],
        "layer_positions": positions,
        "thesis": THESIS_FGSM,
        "_figures": {"y": y, **last},  # for the figures; not written to the JSON
    }
