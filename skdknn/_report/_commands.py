"""``skdknn train``, ``skdknn attack`` and ``skdknn explain``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.frozen import FrozenEstimator

from ..attacks import (
    AdvKNNAttack,
    BIMAttack,
    FGSMAttack,
    load_adversarial,
    save_adversarial,
)
from ..metrics import accuracy_under_attack, mean_l2_distortion
from ..persistence import load_model
from ._config import ReportConfig
from ._data import Data, load_data
from ._models import MODEL_DIR, RUN_FILE, dknn_outputs, fit_models, network_outputs

__all__ = ["ATTACKS", "attack", "explain", "train"]

#: The attacks of ``skdknn attack``.
ATTACKS = ("fgsm", "bim", "advknn-fgsm", "advknn-bim")


def train(config: ReportConfig) -> dict[str, Any]:
    """Train the CNN and fit the DkNN; save both under ``config.out``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(config)
    print(data.describe(config.calibration_size))
    models = fit_models(config, data, out)
    what = "loaded (same settings)" if models.loaded else "trained"
    cnn_pred, _ = network_outputs(models.dknn, data.X_test)
    pred, cred = dknn_outputs(models.dknn, data.X_test)
    summary = {
        "cnn_accuracy": accuracy_under_attack(data.y_test, cnn_pred),
        "dknn_accuracy": accuracy_under_attack(data.y_test, pred),
        "mean_credibility": float(cred.mean()),
    }
    print(
        f"Model {what}: CNN {100 * summary['cnn_accuracy']:.1f}%, DkNN "
        f"{100 * summary['dknn_accuracy']:.1f}% (mean credibility "
        f"{summary['mean_credibility']:.3f}) on {len(data.y_test)} test images.\n"
        f"Saved in {out / MODEL_DIR}; use it with `skdknn attack --model {out}` "
        f"or `skdknn explain --model {out}`."
    )
    return summary


def load_trained(model_dir: str) -> tuple[ReportConfig, Data, Any]:
    """The settings, the data split and the DkNN saved by ``train`` / ``report``."""
    directory = Path(model_dir)
    record_path = directory / RUN_FILE
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} holds no trained model ({RUN_FILE} is missing); "
            "create one with `skdknn train --out DIR` or `skdknn report --out DIR`."
        )
    try:
        settings = json.loads(record_path.read_text())["settings"]
        settings["variants"] = [tuple(v) for v in settings["variants"]]
        config = ReportConfig(**settings)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{str(record_path)!r} is damaged or from another skdknn version "
            f"({error!r}); train the model again with `skdknn train --out DIR`."
        ) from None
    try:
        dknn = load_model(directory / MODEL_DIR)
    except (pickle.UnpicklingError, EOFError, AttributeError) as error:
        raise ValueError(
            f"the model saved in {str(directory / MODEL_DIR)!r} cannot be read "
            f"({error!r}); train it again with `skdknn train --out DIR`."
        ) from None
    return config, load_data(config), dknn


def _make_attack(
    name: str, dknn: Any, data: Data, args: dict[str, Any]
) -> tuple[Any, str]:
    common = {"eps": args["eps"], "batch_size": 256, "verbose": args["verbose"]}
    bim = {"step": args["step"], "n_iter": args["n_iter"]}
    if name == "fgsm":
        return FGSMAttack(dknn.module_, **common), "FGSM through the CNN"
    if name == "bim":
        return BIMAttack(dknn.module_, **common, **bim), "BIM through the CNN"
    layer = args["layer"]
    if layer != "all" and layer not in dknn.layers_:
        raise ValueError(
            f"--layer {layer!r} is not a DkNN layer; choose one of "
            f"{list(dknn.layers_)} or 'all'."
        )
    attack = AdvKNNAttack(
        FrozenEstimator(dknn),
        layer=layer,
        method=name.split("-")[1],
        lam=args["lam"],
        consistency=args["consistency"],
        head_epochs=args["head_epochs"],
        random_state=0,
        **common,
        **bim,
    )
    print(f"Training the DkNNB head on {layer} ...", flush=True)
    attack.fit(data.X_train)
    cl = "+CL" if args["consistency"] else ""
    return attack, f"AdvKNN {name.split('-')[1].upper()} (DkNNB{cl}, {layer})"


def attack(model_dir: str, name: str, out: str, **args: Any) -> dict[str, Any]:
    """Attack the test images of a trained model; save the adversarial set."""
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; expected one of {list(ATTACKS)}.")
    if name.endswith("bim") and args["step"] > args["eps"]:
        raise ValueError(
            f"--step {args['step']} is larger than --eps {args['eps']}; BIM's step "
            "must be at most eps."
        )
    _, data, dknn = load_trained(model_dir)
    n = len(data.y_test) if args["n_samples"] is None else args["n_samples"]
    X, y = data.X_test[:n], data.y_test[:n]
    n = len(y)  # at most the whole test set
    attacker, title = _make_attack(name, dknn, data, args)
    X_adv = (
        attacker.fit(X).transform(X)
        if name in ("fgsm", "bim")
        else (attacker.transform(X))
    )
    cnn_pred, _ = network_outputs(dknn, X_adv)
    pred, cred = dknn_outputs(dknn, X_adv)
    clean_pred, _ = dknn_outputs(dknn, X)
    metrics: dict[str, Any] = {
        "attack": title,
        "n": int(n),
        "cnn_accuracy": accuracy_under_attack(y, cnn_pred),
        "dknn_accuracy": accuracy_under_attack(y, pred),
        "dknn_mean_credibility": float(cred.mean()),
        "mean_l2_successful": mean_l2_distortion(X, X_adv, pred != clean_pred),
    }
    path = save_adversarial(out, X_adv, attack=attacker, y=y, metrics=metrics)
    print(
        f"{title} at eps={args['eps']:g} on {n} test images: CNN accuracy "
        f"{100 * metrics['cnn_accuracy']:.1f}%, DkNN accuracy "
        f"{100 * metrics['dknn_accuracy']:.1f}%, DkNN mean credibility "
        f"{metrics['dknn_mean_credibility']:.3f}. Saved to {path}."
    )
    return metrics


def explain(
    model_dir: str,
    index: int,
    out: str,
    *,
    adversarial: str | None = None,
    n_neighbors: int = 5,
) -> dict[str, Any]:
    """The figure of a test image (or adversarial image) and its neighbours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting

    _, data, dknn = load_trained(model_dir)
    if adversarial is not None:
        saved = load_adversarial(adversarial)
        X = np.asarray(saved.X_adv, dtype=np.float32)
        # the labels saved with the set (the set may hold the first n test images)
        y = data.y_test[: len(X)] if saved.y is None else np.asarray(saved.y)
        source = f"adversarial set {adversarial}"
    else:
        X, y, source = data.X_test, data.y_test, "test set"
    if not -len(X) <= index < len(X):
        raise ValueError(
            f"--index {index} is out of range: the {source} has {len(X)} images."
        )
    index %= len(X)
    x = X[index]
    pred, cred = dknn_outputs(dknn, x[None])
    _, indices = dknn.kneighbors(x[None])
    figure, _ = plotting.plot_explanation(
        dknn, x, data.X_train, n_neighbors=n_neighbors
    )
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    labels = data.y_train[indices[0][:, :n_neighbors]]
    print(
        f"Image {index} of the {source}: true label {y[index]}, DkNN "
        f"prediction {pred[0]} (credibility {cred[0]:.3f})."
    )
    for layer, row in zip(dknn.layers_, labels, strict=True):
        print(f"  {layer:<8} nearest training labels: {' '.join(map(str, row))}")
    print(f"Figure written to {out}")
    return {"prediction": pred[0], "credibility": float(cred[0])}
