"""The report's models: the DkNN (trained once, saved, reused), the attacked-layer
kNN on the same frozen network, and the DkNNB heads of AdvKNN."""

from __future__ import annotations

import json
import os
import pickle
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from tqdm.auto import tqdm

from .. import nets
from .._classifier import DeepKNNClassifier
from .._graph import match_layer
from ..attacks import AdvKNNAttack
from ..neighbors import make_backend
from ..persistence import load_model, save_model
from ..plotting._common import dknn_predictions, network_softmax
from ._checks import batchnorm_note, recalibrate_batchnorm, undertrained_warning
from ._config import HEAD_SETTINGS, MODEL_SETTINGS, NET_TITLES, NETS, ReportConfig
from ._data import Data
from ._render import write_atomic

__all__ = [
    "Models",
    "cached_attacks",
    "dknn_layer",
    "dknn_outputs",
    "fit_heads",
    "fit_models",
    "heads_key",
    "load_heads",
    "model_references",
    "network_outputs",
    "network_references",
    "report_backend",
    "run_record",
]

MODEL_DIR = "model"
RUN_FILE = "run.json"
HEADS_FILE = "heads.pkl"


@dataclass
class Models:
    """The fitted models of one report."""

    dknn: DeepKNNClassifier
    knn: DeepKNNClassifier  # the kNN of the attacked layer, same frozen network
    loaded: bool
    fit_seconds: float
    model_id: str  # changes whenever a model is trained: keys what is derived from it
    # what the page says next to the network's table: its BatchNorm statistics
    # re-estimated (:func:`recalibrate_batchnorm`), and whether it did not learn
    # (:func:`undertrained_warning`: also in results.json's "warnings")
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    batchnorm_recalibrated: bool = False

    @property
    def page_notes(self) -> list[str]:
        """What the page says next to the network's table: the notes, then the
        warnings."""
        return self.notes + self.warnings


def network_outputs(
    dknn: DeepKNNClassifier, X: NDArray[np.float32]
) -> tuple[NDArray, NDArray[np.float64]]:
    """The CNN's predictions (in ``classes_``) and its softmax probabilities."""
    proba, classes = network_softmax(dknn, X)
    return classes[proba.argmax(axis=1)], proba


#: DkNN predictions and credibility from one neighbour search.
dknn_outputs = dknn_predictions


def dknn_layer(dknn: DeepKNNClassifier, name: str, what: str, *others: str) -> str:
    """The DkNN's own name (in ``layers_``) of the layer ``name`` denotes.

    Any name of the layer is accepted, as ``kneighbors(layer=)`` and
    ``AdvKNNAttack(layer=)`` accept it: ``features.relu3`` or ``relu3``.

    Raises
    ------
    ValueError
        When ``name`` denotes none of the DkNN's layers; the message starts with
        ``what`` (the option) and lists the DkNN's layers and ``others``.
    """
    try:
        return dknn.layers_[match_layer(dknn.module_, name, dknn.layers_)]
    except ValueError:
        choices = " or ".join([str(list(dknn.layers_)), *map(repr, others)])
        raise ValueError(
            f"{what} {name!r} is not a DkNN layer; choose one of {choices}."
        ) from None


def run_record(out: Path) -> dict[str, Any]:
    """What ``run.json`` says of the saved model; empty when missing or damaged."""
    try:
        record = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_run_record(out: Path, record: dict[str, Any]) -> None:
    write_atomic(out / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n")


def _absolute_dirs(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with relative data directories made absolute: ``skdknn attack
    --model`` reads the same files from any working directory."""
    for name in ("data_dir", "ood_dir"):
        if settings.get(name) is not None:
            settings[name] = str(Path(settings[name]).expanduser().resolve())
    return settings


def fit_models(config: ReportConfig, data: Data, out: Path) -> Models:
    """Train the DkNN, or load the one saved in ``out`` under the same settings
    and data (the key holds :meth:`Data.key`, a hash of the training and test
    images and labels: data rewritten in the same ``--data-dir`` trains anew, and
    with the new ``model_id`` every cache derived from the model is recomputed)."""
    data_key = data.key()  # hashes every image: once per call
    key = config.key(*MODEL_SETTINGS, parent=data_key)
    record = run_record(out)
    model_dir = out / MODEL_DIR
    dknn: DeepKNNClassifier | None = None
    model_id = str(record.get("model_id", ""))
    if config.reuse and record.get("model_key") == key and model_dir.is_dir():
        try:
            dknn = load_model(model_dir, mmap=False)
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            print(f"Saved model in {model_dir} not usable ({error!r}); training again.")
    loaded, seconds = dknn is not None, float("nan")
    if dknn is None:
        dknn = DeepKNNClassifier(
            net=getattr(nets, NETS[config.net]),
            n_neighbors=config.n_neighbors,
            metric=config.metric,
            backend=report_backend(config),
            calibration_size=config.calibration_size,
            max_epochs=config.max_epochs,
            batch_size=500,
            random_state=config.random_state,
            verbose=config.verbose,
        )
        start = time.perf_counter()
        dknn.fit(data.X_train, data.y_train)
        recalibrated = recalibrate_batchnorm(
            dknn, data.X_train, data.y_train, batch_size=500
        )
        seconds = time.perf_counter() - start
        # saved quiet: `attack`, `explain` and load_model print no progress bars
        dknn.set_params(verbose=0)
        # no record names a half-written model
        (out / RUN_FILE).unlink(missing_ok=True)
        save_model(dknn, model_dir, overwrite=True)
        model_id = uuid.uuid4().hex
        record = {
            "model_key": key,
            "model_id": model_id,
            "data_key": data_key,
            "settings": _absolute_dirs(config.as_dict()),
            "batchnorm_recalibrated": recalibrated,
        }
        _write_run_record(out, record)
    # one spelling of the layer for the heads, the tables and their keys
    config.attacked_layer = dknn_layer(dknn, config.attacked_layer, "attacked layer")
    # the same frozen network and calibration split, only the attacked layer
    knn = clone(dknn).set_params(
        net=FrozenEstimator(dknn.net_), layers=[config.attacked_layer], verbose=0
    )
    knn.fit(data.X_train, data.y_train)
    models = Models(dknn, knn, loaded, seconds, model_id)
    title = f"{NET_TITLES[config.net]} (saved in {out})"
    models.batchnorm_recalibrated = bool(record.get("batchnorm_recalibrated"))
    if models.batchnorm_recalibrated:
        models.notes.append(batchnorm_note(title))
    cnn_pred, _ = network_outputs(dknn, data.X_test)
    warning = undertrained_warning(title, float(np.mean(cnn_pred == data.y_test)))
    if warning is not None:
        print(warning)
        models.warnings.append(warning)
    return models


def report_backend(config: ReportConfig) -> Any:
    """The neighbour backend of ``config.backend``, seeded when it draws at random."""
    backend = make_backend(config.backend)
    if "random_state" in backend.get_params():
        backend.set_params(random_state=config.random_state)
    return backend


def fit_heads(
    config: ReportConfig, models: Models, data: Data, out: Path
) -> dict[str, AdvKNNAttack]:
    """The DkNNB of the attacked layer, trained without and with consistency
    learning (cached in ``out/heads.pkl`` without the network they attack:
    :func:`cached_attacks`)."""

    def compute() -> dict[str, AdvKNNAttack]:
        heads = {}
        variants = (("dknnb", False), ("dknnb_cl", True))
        for name, consistency in tqdm(
            variants, desc="DkNNB heads", disable=config.verbose <= 0
        ):
            attack = AdvKNNAttack(
                FrozenEstimator(models.knn),
                layer=config.attacked_layer,
                method="fgsm",
                eps=config.eps,
                step=config.step,
                n_iter=config.n_iter,
                lam=config.lam,
                consistency=consistency,
                head_epochs=config.head_epochs,
                batch_size=config.batch_size,
                random_state=config.random_state,
                verbose=max(config.verbose - 1, 0),
            )
            heads[name] = attack.fit(data.X_train)
        return heads

    heads, _ = cached_attacks(
        out / HEADS_FILE,
        heads_key(config, models),
        compute,
        network_references(models.dknn),
        config.reuse,
    )
    return heads


def heads_key(config: ReportConfig, models: Models | str) -> str:
    """Key of the DkNNB heads: the model they imitate (its ``model_id``) and their
    settings."""
    model_id = models if isinstance(models, str) else models.model_id
    return config.key(*HEAD_SETTINGS, parent=model_id)


def load_heads(
    out: Path, key: str, dknn: DeepKNNClassifier
) -> dict[str, AdvKNNAttack] | None:
    """The DkNNB heads saved in ``out`` under ``key`` (``"dknnb"``: cross-entropy
    only, ``"dknnb_cl"``: with consistency learning), attacking the network of
    ``dknn`` (the saved model); None when missing, saved under another key, or
    damaged (a damaged file is reported, then retrained)."""
    path = out / HEADS_FILE
    if not path.is_file():
        return None
    saved = _load_shared(path, key, network_references(dknn))
    return None if saved is None else dict(saved)


# -- attacks saved without the models they attack ----------------------------------
class _SharedPickler(pickle.Pickler):
    """Pickles every object of ``shared`` as a reference to its name."""

    def __init__(self, file: Any, shared: dict[str, Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = {id(obj): name for name, obj in shared.items()}

    def persistent_id(self, obj: Any) -> str | None:
        return self._names.get(id(obj))


class _SharedUnpickler(pickle.Unpickler):
    """Resolves the references of :class:`_SharedPickler` to ``shared``."""

    def __init__(self, file: Any, shared: dict[str, Any]) -> None:
        super().__init__(file)
        self._shared = shared

    def persistent_load(self, pid: Any) -> Any:
        if pid not in self._shared:
            raise pickle.UnpicklingError(f"unknown reference to a model: {pid!r}")
        return self._shared[pid]


def model_references(models: Models) -> dict[str, Any]:
    """The report's models and their network, which attacks refer to."""
    return {
        "dknn": models.dknn,
        "knn": models.knn,
        "knn.net": models.knn.net_,
        **network_references(models.dknn),
    }


def network_references(dknn: DeepKNNClassifier) -> dict[str, Any]:
    """The network of ``dknn`` (shared by the report's kNN), which attacks refer to."""
    return {"net": dknn.net_, "module": dknn.module_}


def _load_shared(path: Path, key: str, shared: dict[str, Any]) -> Any:
    """What :func:`cached_attacks` saved in ``path`` under ``key``, or None."""
    try:
        with path.open("rb") as file:
            saved = _SharedUnpickler(file, shared).load()
        if saved.get("key") == key:
            return saved["attacks"]
    except Exception as error:  # a damaged cache is rebuilt, never trusted
        print(f"Saved heads in {path} not usable ({error!r}); training again.")
    return None


def cached_attacks(
    path: Path,
    key: str,
    compute: Any,
    shared: dict[str, Any],
    reuse: bool = True,
) -> tuple[dict[str, AdvKNNAttack], bool]:
    """``compute()`` (fitted attacks by name), or the attacks saved under ``key``.

    Saved in ``path`` without the models they attack: the objects of ``shared``
    (:func:`model_references`: the DkNN, the kNN and their network, or
    :func:`network_references`) are written as references to their names and
    resolved to the same names' objects when loaded (``key`` must therefore
    depend on the model, e.g. its ``model_id``), so that the file holds the
    heads' own state (a DkNN pickled with each head is hundreds of MB). A
    missing, damaged or differently keyed file is recomputed (a damaged one is
    reported). Returns the attacks and whether they were loaded.
    """
    if reuse and path.is_file():
        saved = _load_shared(path, key, shared)
        if saved is not None:
            return dict(saved), True
    attacks = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        _SharedPickler(file, shared).dump({"key": key, "attacks": attacks})
    os.replace(tmp, path)
    return attacks, False
