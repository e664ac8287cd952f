"""The thesis's experiments beyond its FGSM grid (Topolewski, 2022): inputs of no
class (Fig. 4.6), the DkNN with each neighbour backend (Fig. 4.7) and the
BatchNorm CNN against the paper CNN (Figs. 4.8-4.10), its DkNN on the BatchNorm
outputs and on the MaxPool outputs.

The last two reuse the FGSM sets of the thesis grid (:func:`curve_sets`, shared
with the ``thesis-fgsm`` and ``curves`` sections) and the saved models; the second
network is trained once and saved like the report's own (``out/nets/<net>``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from torch import nn
from tqdm.auto import tqdm

from ..attacks import AdvKNNAttack
from ..metrics import accuracy_under_attack
from ..nets import layer_names
from ._config import ReportConfig
from ._data import Data, OODImages, ood_inputs
from ._experiments import Outputs, curve_sets, images_key, ood_table
from ._models import Models, dknn_outputs, fit_models, network_outputs, report_backend
from ._sections import _sets_key, cached_result

__all__ = [
    "THESIS_BACKENDS",
    "THESIS_BACKEND_NUMBERS",
    "THESIS_NETS",
    "backends_section",
    "maxpool_layers",
    "nets_config",
    "nets_section",
    "ood_section",
]

#: The neighbour backends of Topolewski's Fig. 4.7 (FALCONN's multi-probe LSH there;
#: :class:`~skdknn.neighbors.LSHBackend` here), with exact search as the reference.
THESIS_BACKENDS = ("exact", "lsh", "annoy", "pynndescent")

#: Settings of the backends that differ from their defaults: the thesis's FALCONN
#: used 50 hash tables.
BACKEND_PARAMS: dict[str, dict[str, Any]] = {"lsh": {"n_tables": 50}}

#: Topolewski, Sec. 4.1-4.2.1 (read from the text; Fig. 4.7 has no numbers): DkNN
#: accuracy with FALCONN at eps = 0.15 "almost 50 %", the best of Annoy and
#: PyNNDescent 61 % there (Sec. 4.2.2), PyNNDescent "99.88 %" on clean images.
THESIS_BACKEND_NUMBERS = {
    "eps": 0.15,
    "lsh": {"clean": 0.985, "at_eps": 0.50},
    "pynndescent": {"clean": 0.9988, "at_eps": 0.61},
}

#: Topolewski, Sec. 4.1 and 4.2.2 (Figs. 4.5, 4.8, 4.10): accuracy on clean MNIST
#: and under FGSM at eps = 0.15. The BatchNorm CNN's CNN accuracy at 0.15 is the
#: paper CNN's 13 % plus the "30 percentage points" of the text; its DkNN used
#: PyNNDescent on the BatchNorm outputs.
THESIS_NETS = {
    "eps": 0.15,
    "paper-cnn": {"cnn_clean": 0.991, "dknn_clean": 0.985, "cnn": 0.13, "dknn": 0.50},
    "bn-cnn": {"cnn_clean": 0.995, "dknn_clean": None, "cnn": 0.43, "dknn": 0.87},
}


def _fgsm_sets(
    config: ReportConfig, models: Models, X: NDArray[np.float32], out: Path
) -> dict[float, NDArray[np.float32]]:
    """FGSM (through the CNN) of ``X`` at each eps of ``thesis_eps``: the thesis
    grid's sets, from ``out/adversarial/curves`` when saved there."""
    return {
        eps: curve_sets(
            ["fgsm_origin"],
            models,
            {},  # FGSM through the CNN needs no DkNNB head
            X,
            config,
            eps=eps,
            cache=out / "adversarial" / "curves",
        )["fgsm_origin"][0]
        for eps in config.thesis_eps
    }


def _recall(indices: NDArray, reference: NDArray) -> list[float]:
    """Per layer, the mean share of the reference (exact) neighbours found.

    ``indices`` and ``reference``: (n, n_layers, k) as ``kneighbors`` returns them.
    """
    hits = (indices[..., :, None] == reference[..., None, :]).any(axis=-1)
    return [float(v) for v in hits.mean(axis=(0, 2))]


# -- Topolewski Fig. 4.6: inputs of no class ----------------------------------------
def ood_section(
    config: ReportConfig,
    models: Models,
    data: Data,
    clean: Outputs,
    out: Path,
    ood: OODImages | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """:func:`ood_table` on the inputs of :func:`ood_inputs`: ``ood_size``
    images of each built-in kind of input of no class, or drawn from ``ood``
    (the images of ``--ood-dir``).

    Saved in ``out/sections/ood.joblib`` under the key of the model, the test
    images and the inputs of no class themselves (titles and pixels), so that
    another ``--ood-dir``, or other files in the same one, is recomputed.
    Returns the table rows, the scores (for the figures) and the source of the
    inputs of no class (for the JSON and the page).
    """
    n = min(config.ood_size, len(data.y_test))
    inputs = ood_inputs(data, n, config.random_state, ood)
    images = {kind: (title, images_key(X)) for kind, (title, X) in inputs.items()}
    key = config.key(parent=models.model_id + images_key(data.X_test) + repr(images))
    (rows, scores), loaded = cached_result(
        out,
        "ood",
        key,
        lambda: ood_table(models, data, clean, config, inputs),
        config.reuse,
    )
    source = {
        "ood_dir": config.ood_dir,
        "file": None if ood is None else str(ood.path),
        "images_in_file": None if ood is None else len(ood.X),
        "sets": [title for title, _ in inputs.values()],
        "loaded_from_cache": loaded,
    }
    return rows, scores, source


# -- Topolewski Fig. 4.7: the DkNN with each neighbour backend -----------------------
def backends_section(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    out: Path,
) -> tuple[dict[str, Any], bool]:
    """DkNN accuracy on the first ``curve_size`` test images, clean and under FGSM
    at each eps of ``thesis_eps``, with each backend of :data:`THESIS_BACKENDS`
    (seeded with the report's ``random_state``) on the report's frozen network,
    index rows and calibration split; each backend's fit and query time and its
    neighbour recall per layer against exact search.

    Saved in ``out/sections/backends.joblib`` under the key of the adversarial
    sets, the grid and the backends. Returns the numbers and whether they were
    loaded.
    """
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    sets = {0.0: X, **_fgsm_sets(config, models, X, out)}
    key = config.key(
        "thesis_eps",
        "curve_size",
        parent=_sets_key(config, models)
        + repr((THESIS_BACKENDS, sorted(BACKEND_PARAMS.items()))),
    )

    def compute() -> dict[str, Any]:
        frozen = FrozenEstimator(models.dknn.net_)
        result: dict[str, Any] = {
            "n": len(y),
            "eps": list(sets),
            "layers": list(models.dknn.layers_),
            "cnn_accuracy": [
                accuracy_under_attack(y, network_outputs(models.dknn, X_e)[0])
                for X_e in sets.values()
            ],
            "backends": {},
        }
        reference = None
        for name in tqdm(THESIS_BACKENDS, desc="backends", disable=config.verbose <= 0):
            backend = report_backend(dataclasses.replace(config, backend=name))
            backend.set_params(**BACKEND_PARAMS.get(name, {}))
            dknn = clone(models.dknn).set_params(net=frozen, backend=backend, verbose=0)
            start = time.perf_counter()
            dknn.fit(data.X_train, data.y_train)
            fit_seconds = time.perf_counter() - start
            start = time.perf_counter()
            _, indices = dknn.kneighbors(X)
            query_seconds = time.perf_counter() - start
            if reference is None:  # the first backend is exact search
                reference = indices
            accuracy, credibility = [], []
            for X_e in sets.values():
                pred, cred = dknn_outputs(dknn, X_e)
                accuracy.append(accuracy_under_attack(y, pred))
                credibility.append(float(cred.mean()))
            result["backends"][name] = {
                "params": repr(backend),
                "fit_seconds": round(fit_seconds, 2),
                "query_seconds": round(query_seconds, 2),
                "recall": _recall(indices, reference),
                "accuracy": accuracy,
                "mean_credibility": credibility,
            }
        return result

    return cached_result(out, "backends", key, compute, config.reuse)


# -- Topolewski Figs. 4.8-4.10: the BatchNorm CNN against the paper CNN -------------
def nets_config(config: ReportConfig) -> ReportConfig:
    """The settings of the network compared with the report's: the BatchNorm CNN
    (the paper CNN when the report's own is the BatchNorm CNN), trained like the
    report's (same epochs, data, k, calibration, backend) and saved in
    ``out/nets/<net>``."""
    other = "paper-cnn" if config.net == "bn-cnn" else "bn-cnn"
    return dataclasses.replace(
        config,
        net=other,
        attacked_layer="",
        out=str(Path(config.out) / "nets" / other),
    )


def maxpool_layers(module: nn.Module) -> list[str]:
    """The layers of ``module`` (as :func:`skdknn.nets.layer_names` names them)
    that are the outputs of its max-pooling modules, in execution order."""
    pooling = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    modules = dict(module.named_modules())
    return [
        name for name in layer_names(module) if isinstance(modules.get(name), pooling)
    ]


def _maxpool_dknn(
    config: ReportConfig,
    models: Models,
    data: Data,
    sets: dict[float, NDArray[np.float32]],
    out: Path,
) -> dict[str, Any]:
    """The DkNN of the BatchNorm CNN on its MaxPool outputs (Topolewski Fig.
    4.10's other curve): the report's DkNN of that network (frozen network, index
    rows, calibration split, k, backend) refitted on :func:`maxpool_layers`, its
    accuracy and mean credibility on ``sets`` (the same FGSM sets as the
    BatchNorm-layer DkNN's).

    Saved in ``<out>/sections/maxpool_dknn.joblib`` under the key of the network's
    adversarial sets, the grid and the layers.
    """
    y = data.y_test[: config.curve_size]
    layers = maxpool_layers(models.dknn.module_)
    key = config.key(
        "thesis_eps",
        "curve_size",
        parent=_sets_key(config, models) + repr(layers),
    )

    def compute() -> dict[str, Any]:
        dknn = clone(models.dknn).set_params(
            net=FrozenEstimator(models.dknn.net_), layers=layers, verbose=0
        )
        dknn.fit(data.X_train, data.y_train)
        rows = []
        for eps, X_e in sets.items():
            pred, credibility = dknn_outputs(dknn, X_e)
            rows.append(
                {
                    "eps": eps,
                    "dknn_accuracy": accuracy_under_attack(y, pred),
                    "mean_credibility": float(credibility.mean()),
                }
            )
        return {"layers": list(dknn.layers_), "rows": rows}

    result, loaded = cached_result(out, "maxpool_dknn", key, compute, config.reuse)
    return {**result, "loaded_from_cache": loaded}


def _net_rows(
    config: ReportConfig, models: Models, data: Data, out: Path
) -> dict[str, Any]:
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    sets = {0.0: X, **_fgsm_sets(config, models, X, out)}
    rows = []
    figures: dict[str, Any] = {}
    for eps, X_e in sets.items():
        outputs = Outputs.of(models, X_e)
        rows.append(
            {
                "eps": eps,
                "cnn_accuracy": accuracy_under_attack(y, outputs.cnn_pred),
                "dknn_accuracy": accuracy_under_attack(y, outputs.dknn_pred),
                "mean_credibility": float(outputs.dknn_cred.mean()),
                "mean_softmax_confidence": float(outputs.softmax.mean()),
            }
        )
        if eps in (0.0, max(config.thesis_eps)):
            figures["clean" if eps == 0.0 else "adversarial"] = outputs
    part = {
        "net": config.net,
        "layers": list(models.dknn.layers_),
        "epochs": config.max_epochs,
        "loaded_from_cache": models.loaded,
        "batchnorm_recalibrated": models.batchnorm_recalibrated,
        "notes": models.page_notes,
        "warnings": models.warnings,
        "rows": rows,
        "_figures": {"y": y, **figures},  # for the figures; not written to the JSON
    }
    if config.net == "bn-cnn":  # the thesis's second choice of its layers
        part["maxpool_dknn"] = _maxpool_dknn(config, models, data, sets, out)
    return part


def nets_section(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    out: Path,
) -> dict[str, Any]:
    """CNN and DkNN accuracy, mean credibility and softmax confidence of the
    report's network and of :func:`nets_config`'s, clean and under FGSM at each eps
    of ``thesis_eps``, on the first ``curve_size`` test images (Topolewski Figs.
    4.8 and 4.10), with what the reliability diagrams of Fig. 4.9 need. The
    BatchNorm CNN's part also holds its DkNN on the MaxPool outputs
    (``maxpool_dknn``: Fig. 4.10's other curve, same network and sets)."""
    other_config = nets_config(config)
    other_out = out / "nets" / other_config.net
    other = fit_models(other_config, data, other_out)
    nets = {
        config.net: _net_rows(config, models, data, out),
        other_config.net: _net_rows(other_config, other, data, other_out),
    }
    return {
        "n": min(config.curve_size, len(data.y_test)),
        "eps_at_figures": max(config.thesis_eps),
        "nets": nets,
        "thesis": THESIS_NETS,
    }
