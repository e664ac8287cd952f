"""What the report measures: clean accuracy, Table 2 of AdvKNN, curves, OOD."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from tqdm.auto import tqdm

from ..attacks import (
    AdvKNNAttack,
    BIMAttack,
    CarliniWagnerL2Attack,
    FGSMAttack,
    load_adversarial,
    save_adversarial,
)
from ..metrics import (
    accuracy_under_attack,
    attack_success_rate,
    mean_l2_distortion,
    neighbor_label_agreement,
    ood_auroc,
)
from ._config import ATTACK_SETTINGS, ReportConfig
from ._data import Data, images_key, ood_inputs
from ._models import Models, dknn_outputs, heads_key, network_outputs

__all__ = [
    "COLUMNS",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "THESIS_OOD",
    "Outputs",
    "adversarial_sets",
    "attack_cell",
    "attack_table",
    "bim_iterations",
    "clean_table",
    "eps_curves",
    "images_key",
    "load_set",
    "neighbor_agreement",
    "ood_table",
    "paper_dataset",
    "set_path",
    "variant_table",
]

#: Columns of the AdvKNN paper's Table 2, with their titles.
COLUMNS = {
    "clean": "clean",
    "fgsm_origin": "FGSM origin",
    "fgsm_dknnb": "FGSM DkNNB",
    "fgsm_dknnb_cl": "FGSM DkNNB+CL",
    "bim_origin": "BIM origin",
    "bim_dknnb": "BIM DkNNB",
    "bim_dknnb_cl": "BIM DkNNB+CL",
}

#: AdvKNN paper (Li et al., 2019), Table 1: clean accuracy in % of the DNN, the
#: kNN, the DkNN and the DkNNB, per dataset.
PAPER_TABLE1 = {
    "MNIST": {"cnn": 99.17, "knn": 98.98, "dknn": 98.89, "dknnb": 98.75},
    "Fashion-MNIST": {"cnn": 91.22, "knn": 89.87, "dknn": 90.28, "dknnb": 89.23},
}


def paper_dataset(data: Data) -> str:
    """The dataset of the papers' numbers shown beside ``data``'s."""
    return "MNIST" if data.items == "digits" else "Fashion-MNIST"


#: AdvKNN paper (Li et al., 2019), Table 2, MNIST: accuracy in %.
PAPER_TABLE2 = {
    "knn": dict(
        zip(COLUMNS, (98.98, 44.48, 15.79, 15.28, 2.14, 1.42, 1.03), strict=True)
    ),
    "dknn": dict(
        zip(COLUMNS, (98.89, 54.90, 28.57, 28.08, 16.80, 6.49, 5.97), strict=True)
    ),
}


@dataclass
class Outputs:
    """Predictions and scores of the three models on one set of inputs."""

    cnn_pred: NDArray
    softmax: NDArray[np.float64]  # max softmax probability of the CNN
    knn_pred: NDArray
    knn_cred: NDArray[np.float64]
    dknn_pred: NDArray
    dknn_cred: NDArray[np.float64]

    @classmethod
    def of(cls, models: Models, X: NDArray[np.float32]) -> Outputs:
        """The three models' outputs, through their public single-pass methods."""
        dknn = models.dknn.predict_with_credibility(X)
        knn = models.knn.predict_with_credibility(X)
        cnn_pred, proba = network_outputs(models.dknn, X)
        return cls(
            cnn_pred,
            proba.max(axis=1),
            knn.prediction,
            knn.credibility,
            dknn.prediction,
            dknn.credibility,
        )

    def model(self, name: str) -> tuple[NDArray, NDArray[np.float64] | None]:
        """Predictions and credibility (None for the CNN) of "cnn", "knn", "dknn"."""
        if name == "cnn":
            return self.cnn_pred, None
        if name == "knn":
            return self.knn_pred, self.knn_cred
        return self.dknn_pred, self.dknn_cred


MODEL_TITLES = {"cnn": "CNN", "knn": "kNN", "dknn": "DkNN"}


# -- clean accuracy ------------------------------------------------------------------
def clean_table(
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    clean: Outputs,
    layer: str,
    net_title: str = "DkNN paper CNN",
) -> list[dict[str, Any]]:
    """Accuracy of DNN / kNN / DkNN / DkNNB on the clean test images, with the
    paper's (AdvKNN Table 1) for the same dataset."""
    y = data.y_test
    paper = {m: v / 100 for m, v in PAPER_TABLE1[paper_dataset(data)].items()}
    rows: list[dict[str, Any]] = [
        {
            "model": (
                "CNN (DkNN paper architecture)"
                if net_title == "DkNN paper CNN"
                else f"CNN ({net_title})"
            ),
            "accuracy": accuracy_under_attack(y, clean.cnn_pred),
            "mean_credibility": None,
            "mean_softmax_confidence": float(clean.softmax.mean()),
            "paper_accuracy": paper["cnn"],
        },
        {
            "model": f"kNN ({layer})",
            "accuracy": accuracy_under_attack(y, clean.knn_pred),
            "mean_credibility": float(clean.knn_cred.mean()),
            "paper_accuracy": paper["knn"],
        },
        {
            "model": f"DkNN ({len(models.dknn.layers_)} layers)",
            "accuracy": accuracy_under_attack(y, clean.dknn_pred),
            "mean_credibility": float(clean.dknn_cred.mean()),
            "paper_accuracy": paper["dknn"],
        },
    ]
    for name, attack in heads.items():
        q = attack.head_proba(data.X_test)
        pred = models.knn.classes_[q.argmax(axis=1)]
        title = "DkNNB+CL" if name.endswith("_cl") else "DkNNB"
        rows.append(
            {
                "model": f"{title} ({layer} head)",
                "accuracy": accuracy_under_attack(y, pred),
                "mean_credibility": None,
                "agreement_with_knn": float(np.mean(pred == clean.knn_pred)),
                # Table 1's DkNNB is the head trained with consistency learning
                "paper_accuracy": paper["dknnb"] if title == "DkNNB+CL" else None,
            }
        )
    return rows


def variant_table(
    models: Models, data: Data, variants: list[tuple[int, str]], verbose: int = 0
) -> list[dict[str, Any]]:
    """The DkNN with other k and metrics on the same frozen network."""
    base = models.dknn
    rows: list[dict[str, Any]] = []
    frozen = FrozenEstimator(base.net_)
    settings = [(base.n_neighbors, base.metric), *variants]
    for k, metric in tqdm(settings, desc="k and metric", disable=verbose <= 0):
        if (k, metric) == (base.n_neighbors, base.metric) and rows:
            continue
        if k == base.n_neighbors and metric == base.metric:
            dknn = base
        else:
            # same rows, split and seed: the network never saw the calibration set
            dknn = clone(base).set_params(
                n_neighbors=k, metric=metric, net=frozen, verbose=0
            )
            dknn.fit(data.X_train, data.y_train)
        pred, cred = dknn_outputs(dknn, data.X_test)
        rows.append(
            {
                "n_neighbors": k,
                "metric": metric,
                "accuracy": accuracy_under_attack(data.y_test, pred),
                "mean_credibility": float(cred.mean()),
            }
        )
    return rows


# -- adversarial sets ----------------------------------------------------------------
def bim_iterations(eps: float, step: float, n_iter: int) -> int:
    """Kurakin et al.'s rule, min(eps / step + 4, 1.25 eps / step), capped."""
    return max(1, min(n_iter, math.ceil(min(eps / step + 4, 1.25 * eps / step))))


def _attack_factory(
    name: str,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    config: ReportConfig,
    eps: float,
    n_iter: int,
) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    """A function computing the adversarial set ``name`` at ``eps``.

    ``name`` is ``<method>_<head>``: method ``fgsm``, ``bim`` or ``cw`` (``n_iter``
    Adam steps per binary-search step; no eps), head ``origin`` (through the CNN)
    or a key of ``heads`` (through that DkNNB).
    """
    method, _, head = name.partition("_")
    step = min(config.step, eps)
    verbose = max(config.verbose - 1, 0)
    if head == "origin":
        module = models.dknn.module_
        common: dict[str, Any] = {"batch_size": config.batch_size, "verbose": verbose}
        if method == "fgsm":
            attack: Any = FGSMAttack(module, eps=eps, **common)
        elif method == "bim":
            attack = BIMAttack(module, eps=eps, step=step, n_iter=n_iter, **common)
        else:
            attack = CarliniWagnerL2Attack(module, n_iter=n_iter, **common)
        return lambda X: attack.fit(X).transform(X)
    trained = heads[head]
    params: dict[str, Any] = {"method": method, "n_iter": n_iter}
    if method != "cw":
        params.update(eps=eps, step=step)

    def run(X: NDArray[np.float32]) -> NDArray[np.float32]:
        saved = trained.get_params(deep=False)
        trained.set_params(**params)
        try:
            return trained.transform(X)
        finally:
            trained.set_params(**saved)

    return run


def set_path(cache: Path, name: str, eps: float, n_images: int) -> Path:
    """File of the adversarial set ``name`` at ``eps`` of ``n_images`` images (CW
    sets have no eps); runs on other images (``--curve-size``, ``--test-size``,
    ``--full``) in the same output directory keep their own files."""
    budget = "" if name.startswith("cw_") else f"_eps{eps:g}"
    return cache / f"{name}{budget}_n{n_images}.npz"


def adversarial_sets(
    names: list[str],
    models: Models,
    heads: dict[str, AdvKNNAttack],
    X: NDArray[np.float32],
    config: ReportConfig,
    *,
    eps: float,
    n_iter: int,
    cache: Path,
    desc: str,
) -> dict[str, tuple[NDArray[np.float32], float]]:
    """Adversarial sets (and seconds each took), from ``cache`` when there.

    A saved set is reused only under the same key: the heads (hence the model)
    it comes from, the attack settings, this version, ``n_iter`` and the images
    attacked (:func:`images_key`); its file name (:func:`set_path`) holds the
    name, eps and the number of images.
    """
    cache.mkdir(parents=True, exist_ok=True)
    key = config.key(*ATTACK_SETTINGS, parent=heads_key(config, models))
    images = images_key(X)
    out: dict[str, tuple[NDArray[np.float32], float]] = {}
    for name in tqdm(names, desc=desc, disable=config.verbose <= 0, leave=False):
        path = set_path(cache, name, eps, len(X))
        saved = load_set(path) if config.reuse else None
        if (
            saved is not None
            and saved.metrics.get("key") == key
            and saved.metrics.get("images") == images
            and saved.metrics.get("n_iter") == n_iter
            and saved.X_adv.shape == X.shape
        ):
            out[name] = (saved.X_adv, float(saved.metrics["seconds"]))
            continue
        start = time.perf_counter()
        X_adv = _attack_factory(name, models, heads, config, eps, n_iter)(X)
        seconds = time.perf_counter() - start
        save_adversarial(
            path,
            X_adv,
            metrics={
                "key": key,
                "images": images,
                "seconds": seconds,
                "eps": eps,
                "n_iter": n_iter,
            },
        )
        out[name] = (X_adv, seconds)
    return out


def curve_iterations(eps: float, config: ReportConfig) -> int:
    """BIM iterations of the curves' sets at ``eps`` (step ``min(step, eps)``)."""
    return bim_iterations(eps, min(config.step, eps), config.n_iter)


def curve_sets(
    names: list[str],
    models: Models,
    heads: dict[str, AdvKNNAttack],
    X: NDArray[np.float32],
    config: ReportConfig,
    *,
    eps: float,
    cache: Path,
) -> dict[str, tuple[NDArray[np.float32], float]]:
    """The accuracy-vs-eps curves' adversarial sets at ``eps``, from ``cache``.

    Every section drawing on them (curves, detection, layer ablation, thesis grid)
    asks with the same BIM iterations, so each set is computed once and shared.
    """
    return adversarial_sets(
        names,
        models,
        heads,
        X,
        config,
        eps=eps,
        n_iter=curve_iterations(eps, config),
        cache=cache,
        desc=f"eps={eps:g}",
    )


def load_set(path: Path) -> Any:
    """A saved adversarial set, or None when missing or damaged (recomputed)."""
    if not path.is_file():
        return None
    try:
        return load_adversarial(path)
    except Exception as error:
        print(f"Saved adversarial set {path} not usable ({error!r}); recomputing.")
        return None


def attack_cell(
    X: NDArray, X_adv: NDArray, y: NDArray, clean: Outputs, adv: Outputs, model: str
) -> dict[str, Any]:
    """Accuracy, success rate, mean L2 of the successful examples and mean
    credibility of ``model`` ("cnn", "knn", "dknn") on one adversarial set."""
    pred, cred = adv.model(model)
    clean_pred, _ = clean.model(model)
    success = pred != clean_pred
    return {
        "accuracy": accuracy_under_attack(y, pred),
        "success_rate": attack_success_rate(clean_pred, pred),
        "mean_l2_successful": mean_l2_distortion(X, X_adv, success),
        "mean_credibility": None if cred is None else float(cred.mean()),
    }


def attack_table(
    data: Data,
    clean: Outputs,
    adversarial: dict[str, Outputs],
    sets: dict[str, tuple[NDArray[np.float32], float]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Table 2: per model and column, accuracy, success rate, L2, credibility."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for model in ("knn", "dknn", "cnn"):
        row: dict[str, dict[str, Any]] = {}
        for column in COLUMNS:
            if column == "clean":
                X_adv, outputs = data.X_test, clean
            else:
                X_adv, outputs = sets[column][0], adversarial[column]
            row[column] = attack_cell(
                data.X_test, X_adv, data.y_test, clean, outputs, model
            )
            # Table 2 is MNIST's
            if model in PAPER_TABLE2 and paper_dataset(data) == "MNIST":
                row[column]["paper_accuracy"] = PAPER_TABLE2[model][column] / 100
        table[model] = row
    return table


@dataclass
class Curves:
    """Accuracy and mean L2 distortion against eps, per attack and model."""

    eps: list[float]
    accuracy: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    distortion: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    n_iter: dict[str, list[int]] = field(default_factory=dict)
    examples: dict[float, NDArray[np.float32]] = field(default_factory=dict)
    example_predictions: dict[float, NDArray] = field(default_factory=dict)
    example_labels: NDArray | None = None


CURVE_ATTACKS = {
    "fgsm_origin": "FGSM (through the CNN)",
    "bim_origin": "BIM (through the CNN)",
    "fgsm_dknnb_cl": "AdvKNN FGSM (DkNNB+CL)",
    "bim_dknnb_cl": "AdvKNN BIM (DkNNB+CL)",
}


def eps_curves(
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    config: ReportConfig,
    cache: Path,
    n_examples: int = 8,
) -> Curves:
    """Accuracy of CNN / kNN / DkNN vs eps under each attack, on ``curve_size``
    test images (BIM with Kurakin et al.'s number of iterations per eps).

    Every curve starts at eps = 0 with the clean accuracy (mean L2 distortion 0).
    """
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    clean = Outputs.of(models, X)
    grid = [eps for eps in config.eps_grid if eps > 0]
    # every curve starts at eps = 0: the clean accuracy, no perturbation
    curves = Curves(eps=[0.0, *grid], example_labels=y[:n_examples])
    for title in CURVE_ATTACKS.values():
        curves.accuracy[title] = {
            model_title: [accuracy_under_attack(y, clean.model(m)[0])]
            for m, model_title in MODEL_TITLES.items()
        }
        curves.distortion[title] = {MODEL_TITLES[m]: [0.0] for m in MODEL_TITLES}
        curves.n_iter[title] = [0]
    curves.examples[0.0] = X[:n_examples]
    curves.example_predictions[0.0] = clean.dknn_pred[:n_examples]
    for eps in tqdm(grid, desc="accuracy vs eps", disable=config.verbose <= 0):
        n_iter = curve_iterations(eps, config)
        sets = curve_sets(
            list(CURVE_ATTACKS),
            models,
            heads,
            X,
            config,
            eps=eps,
            cache=cache / "curves",
        )
        for name, title in CURVE_ATTACKS.items():
            X_adv = sets[name][0]
            outputs = Outputs.of(models, X_adv)
            for model, model_title in MODEL_TITLES.items():
                pred, _ = outputs.model(model)
                curves.accuracy[title][model_title].append(
                    accuracy_under_attack(y, pred)
                )
                # L2 of the examples that changed this model's clean prediction
                success = pred != clean.model(model)[0]
                curves.distortion[title][model_title].append(
                    mean_l2_distortion(X, X_adv, success)
                )
            curves.n_iter[title].append(1 if name.startswith("fgsm") else n_iter)
            if name == "bim_dknnb_cl":
                curves.examples[eps] = X_adv[:n_examples]
                curves.example_predictions[eps] = outputs.dknn_pred[:n_examples]
    return curves


# -- neighbours and out-of-distribution inputs -------------------------------------
def neighbor_agreement(
    models: Models, data: Data, sets: dict[str, NDArray[np.float32]]
) -> dict[str, list[float]]:
    """Per DkNN layer, the mean share of neighbours with the true label, per set."""
    return {
        name: [float(v) for v in neighbor_label_agreement(models.dknn, X, data.y_test)]
        for name, X in sets.items()
    }


#: Topolewski's thesis, Fig. 4.6 (its MNIST model shown Fashion-MNIST): "only 5 %
#: of out-of-distribution images are assigned credibility above 60 %", while the
#: softmax gives "90-100 % confidence for most of the samples".
THESIS_OOD = {"credibility_above": 0.6, "share_above": 0.05, "softmax_at_least": 0.9}


def ood_table(
    models: Models,
    data: Data,
    clean: Outputs,
    config: ReportConfig,
    inputs: dict[str, tuple[str, NDArray[np.float32]]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, NDArray[np.float64]]]]:
    """Credibility vs softmax confidence on inputs of no class.

    The in-distribution row is the clean table's: every test image, the same
    ``clean`` outputs; the inputs of no class are ``inputs`` (by kind, their
    title and images: :func:`~._data.ood_inputs`), by default ``ood_size``
    images of each built-in kind (at most the number of test images). Besides
    the means and AUROCs, the share of inputs with credibility above, and
    softmax confidence at least, the thesis's thresholds (:data:`THESIS_OOD`).

    Returns the table rows and the scores per kind and set (for the figures;
    ``"_predictions"`` holds the DkNN and CNN predictions per set of no class).
    """
    if inputs is None:
        n = min(config.ood_size, len(data.y_test))
        inputs = ood_inputs(data, n, config.random_state)
    above, confident = THESIS_OOD["credibility_above"], THESIS_OOD["softmax_at_least"]
    in_title = f"test {data.items}"
    scores: dict[str, dict[str, Any]] = {
        "DkNN credibility": {in_title: clean.dknn_cred},
        "softmax confidence": {in_title: clean.softmax},
        "_predictions": {},
    }
    rows = [
        {
            "set": f"{in_title} (in distribution: the clean table's images)",
            "n": len(data.y_test),
            "mean_credibility": float(clean.dknn_cred.mean()),
            "mean_softmax_confidence": float(clean.softmax.mean()),
            "auroc_credibility": None,
            "auroc_softmax": None,
            "share_credibility_above": float(np.mean(clean.dknn_cred > above)),
            "share_softmax_at_least": float(np.mean(clean.softmax >= confident)),
        }
    ]
    for kind, (title, X) in inputs.items():
        cnn_pred, proba = network_outputs(models.dknn, X)
        dknn_pred, cred = dknn_outputs(models.dknn, X)
        softmax = proba.max(axis=1)
        scores["DkNN credibility"][title] = cred
        scores["softmax confidence"][title] = softmax
        scores["_predictions"][title] = (dknn_pred, cnn_pred)
        rows.append(
            {
                "set": title,
                "kind": kind,
                "n": len(X),
                "mean_credibility": float(cred.mean()),
                "mean_softmax_confidence": float(softmax.mean()),
                "auroc_credibility": ood_auroc(clean.dknn_cred, cred),
                "auroc_softmax": ood_auroc(clean.softmax, softmax),
                "share_credibility_above": float(np.mean(cred > above)),
                "share_softmax_at_least": float(np.mean(softmax >= confident)),
            }
        )
    return rows, scores
