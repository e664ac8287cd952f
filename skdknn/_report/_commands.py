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
from ._models import (
    MODEL_DIR,
    RUN_FILE,
    dknn_layer,
    dknn_outputs,
    fit_models,
    heads_key,
    load_heads,
    network_outputs,
    run_record,
)

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
    what = "loaded (same settings and data)" if models.loaded else "trained"
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


def load_trained(model_dir: str, verbose: int = 0) -> tuple[ReportConfig, Data, Any]:
    """The settings, the data split and the DkNN saved by ``train`` / ``report``.

    The DkNN shows progress bars from ``verbose`` 2 (``-v``) on.
    """
    directory = Path(model_dir)
    record_path = directory / RUN_FILE
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} holds no trained model ({RUN_FILE} is missing); "
            "create one with `skdknn train --out DIR` or `skdknn report --out DIR`."
        )
    try:
        record = json.loads(record_path.read_text())
        settings = record["settings"]
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
    dknn.set_params(verbose=max(verbose - 1, 0))
    data = load_data(config)
    trained_on = record.get("data_key")
    if trained_on is not None and trained_on != data.key():
        raise ValueError(
            f"the model saved in {str(directory)!r} was trained on other data than "
            f"--data-dir {config.data_dir} now holds (its files were changed, or "
            "the relative path names other files from this directory); train it "
            "again with `skdknn train --out DIR`."
        )
    # the spelling of the layer the report's heads were saved under
    config.attacked_layer = dknn_layer(dknn, config.attacked_layer, "attacked layer")
    return config, data, dknn


def _saved_head(
    model_dir: str, config: ReportConfig, args: dict[str, Any], dknn: Any
) -> AdvKNNAttack | None:
    """The DkNNB head ``skdknn report`` trained for these settings, if saved."""
    same = (
        args["layer"] == config.attacked_layer
        and args["lam"] == config.lam
        and args["head_epochs"] == config.head_epochs
    )
    model_id = str(run_record(Path(model_dir)).get("model_id", ""))
    if not same or not model_id:
        return None
    heads = load_heads(Path(model_dir), heads_key(config, model_id), dknn)
    if heads is None:
        return None
    return heads["dknnb_cl" if args["consistency"] else "dknnb"]


def _make_attack(
    name: str,
    dknn: Any,
    data: Data,
    args: dict[str, Any],
    saved_head: AdvKNNAttack | None = None,
) -> tuple[Any, str]:
    """The attack ``name`` (fitted for AdvKNN) and its title."""
    verbose = max(args["verbose"] - 1, 0)
    common = {"eps": args["eps"], "batch_size": 256, "verbose": verbose}
    bim = {"step": args["step"], "n_iter": args["n_iter"]}
    if name == "fgsm":
        return FGSMAttack(dknn.module_, **common), "FGSM through the CNN"
    if name == "bim":
        return BIMAttack(dknn.module_, **common, **bim), "BIM through the CNN"
    layer, method = args["layer"], name.split("-")[1]
    cl = "+CL" if args["consistency"] else ""
    title = f"AdvKNN {method.upper()} (DkNNB{cl}, {layer})"
    if saved_head is not None:
        if args["verbose"] > 0:
            print(f"Using the DkNNB head on {layer} saved by `skdknn report`.")
        return saved_head.set_params(method=method, **common, **bim), title
    attack = AdvKNNAttack(
        FrozenEstimator(dknn),
        layer=layer,
        method=method,
        lam=args["lam"],
        consistency=args["consistency"],
        head_epochs=args["head_epochs"],
        random_state=0,
        **common,
        **bim,
    )
    if args["verbose"] > 0:
        print(f"Training the DkNNB head on {layer} ...", flush=True)
    attack.fit(data.X_train)
    return attack, title


def attack(model_dir: str, name: str, out: str, **args: Any) -> dict[str, Any]:
    """Attack the test images of a trained model; save the adversarial set.

    ``layer``, ``lam`` and ``head_epochs`` left None take the model's settings
    (those of its ``run.json``); an AdvKNN attack then reuses the DkNNB head that
    ``skdknn report`` saved with the model, instead of training one.
    """
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; expected one of {list(ATTACKS)}.")
    if name.endswith("bim") and args["step"] > args["eps"]:
        raise ValueError(
            f"--step {args['step']} is larger than --eps {args['eps']}; BIM's step "
            "must be at most eps."
        )
    args.setdefault("verbose", 1)
    config, data, dknn = load_trained(model_dir, args["verbose"])
    for arg, setting in (
        ("layer", "attacked_layer"),
        ("lam", "lam"),
        ("head_epochs", "head_epochs"),
    ):
        if args.get(arg) is None:
            args[arg] = getattr(config, setting)
    if args["layer"] != "all":
        # any name of the layer, as AdvKNNAttack(layer=) takes it: the saved head
        # of the model's attacked layer is reused whichever name --layer gives
        args["layer"] = dknn_layer(dknn, args["layer"], "--layer", "all")
    n = len(data.y_test) if args["n_samples"] is None else args["n_samples"]
    X, y = data.X_test[:n], data.y_test[:n]
    n = len(y)  # at most the whole test set
    saved = (
        None if name in ("fgsm", "bim") else _saved_head(model_dir, config, args, dknn)
    )
    attacker, title = _make_attack(name, dknn, data, args, saved)
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
        "head_reused": saved is not None,
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
    verbose: int = 1,
) -> dict[str, Any]:
    """The figure of a test image (or adversarial image) and its neighbours.

    Prints the prediction and the figure's path; from ``verbose`` 1 on, also the
    neighbours' labels per layer.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting

    _, data, dknn = load_trained(model_dir, verbose)
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
        dknn, x, data.X_train, n_neighbors=n_neighbors, label=y[index]
    )
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    labels = data.y_train[indices[0][:, :n_neighbors]]
    print(
        f"Image {index} of the {source}: true label {y[index]}, DkNN "
        f"prediction {pred[0]} (credibility {cred[0]:.3f})."
    )
    for layer, row in zip(dknn.layers_, labels, strict=True):
        if verbose > 0:
            print(f"  {layer:<8} nearest training labels: {' '.join(map(str, row))}")
    print(f"Figure written to {out}")
    return {"prediction": pred[0], "credibility": float(cred[0])}
