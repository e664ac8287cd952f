"""Reproduce Table 2 of the AdvKNN paper on the embedded MNIST sample, and time attacks.

Part 1, the table. On held-out real MNIST images (the 5,000-image sample that ships
with skdknn) this script trains the DkNN of Papernot & McDaniel (the paper CNN,
``k = 75``) and the kNN of its third layer (``relu3``, the same frozen network), then
measures their accuracy on clean inputs and under seven attacks at the AdvKNN
paper's MNIST settings (eps = 0.25; BIM step 0.01, 100 iterations; lambda = 0.3):

- FGSM / BIM "origin": through the CNN, away from the CNN's own clean prediction;
- FGSM / BIM "DkNNB": through a deep kNN block trained with cross-entropy only
  (``AdvKNNAttack(consistency=False)``);
- FGSM / BIM "DkNNB+CL": with consistency learning (``consistency=True``).

The paper attacks the third layer and evaluates the same adversarial examples on the
kNN and on the DkNN; those are the rows "kNN (relu3)" and "DkNN, relu3 head". The
row "DkNN, all-layer head" attacks the DkNN through one head per DkNN layer
(``AdvKNNAttack(layer="all")``), which imitates the DkNN's own layer-averaged
neighbour distribution. The CNN row is for reference (not in the paper). Per cell
the script reports the accuracy, the attack success rate (prediction changed from the
row model's clean prediction), the mean L2 distortion of the successful examples and
the mean credibility of the row model on the adversarial examples, and prints the
published numbers beside ours.

Adversarial sets (and the fitted DkNN) are cached under ``--cache-dir`` and reused on
a rerun with the same settings (delete the cache to recompute them after a change to
the library); all numbers go to a JSON file there.

Part 2, timing. FGSM and BIM (10 steps) on ``--n-timing`` images through
``FGSMAttack`` / ``BIMAttack`` against the same computation written directly in plain
torch (labels from the clean logits, then a loop with autograd on the same module and
batch size), interleaved, median of ``--repeat`` rounds; also the training time of the
AdvKNN heads.

Run ``python benchmarks/bench_attacks.py`` (the paper's settings, 10-20 minutes on
2 CPU cores) or add ``--quick`` for a smoke run of about two minutes; ``--part timing``
reruns only the timing. On a machine shared with other jobs, ``--threads 1`` gives
steadier (and there, faster) timings than torch's default of one thread per core.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
import torch
import torch.nn.functional as F
from _machine import cpu_model, load_average, skdknn_revision
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn._report import ReportConfig
from skdknn._report._data import Data as GapData
from skdknn._report._experiments import COLUMNS as ADVKNN_COLUMNS
from skdknn._report._experiments import PAPER_TABLE2
from skdknn._report._gap import GAP_COLUMNS, gap_section
from skdknn._report._models import Models, fit_heads
from skdknn.attacks import (
    AdvKNNAttack,
    BIMAttack,
    CarliniWagnerL2Attack,
    FGSMAttack,
    load_adversarial,
    save_adversarial,
)
from skdknn.datasets import load_mnist
from skdknn.metrics import (
    accuracy_under_attack,
    attack_success_rate,
    mean_credibility,
    mean_l2_distortion,
)

# the table's columns (with their titles) and the AdvKNN paper's MNIST numbers (%),
# shared with `skdknn report`
TITLES = ADVKNN_COLUMNS
COLUMNS = tuple(TITLES)
PAPER = PAPER_TABLE2
# The goal: DkNN accuracy at most this under the +CL attacks (in %).
GOALS = {"fgsm_dknnb_cl": 28.0, "bim_dknnb_cl": 6.0}

QUICK = {
    "n_train": 1000,
    "n_test": 100,
    "n_neighbors": 25,
    "calibration_size": 200,
    "max_epochs": 3,
    "bim_iter": 10,
    "head_epochs": 3,
    "n_timing": 200,
    "timing_iter": 3,
    "repeat": 2,
    "n_gap": 100,
    "cw_steps": 20,
}
DEFAULTS = {
    "n_train": 4000,
    "n_test": 1000,
    "n_neighbors": 75,
    "calibration_size": 750,
    "max_epochs": 15,
    "bim_iter": 100,
    "head_epochs": 30,
    "n_timing": 1000,
    "timing_iter": 10,
    "repeat": 7,
    "n_gap": 500,
    "cw_steps": 100,
}


# -- machine -------------------------------------------------------------------------


def machine_report() -> dict[str, str]:
    """The date, the machine and the library versions."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "skdknn": skdknn_revision(),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "load avg": f"{load_average()} (1, 5, 15 min) at start",
    }


def elapsed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- data and models -----------------------------------------------------------------


@dataclass
class Data:
    X_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    X_test: NDArray[np.float32]
    y_test: NDArray[np.int64]


def load_data(n_train: int, n_test: int, seed: int) -> Data:
    """A stratified split of the embedded 5,000-image real-MNIST sample."""
    # stored order: the stratified split below is that of the published runs
    X, y = load_mnist(return_X_y=True, shuffle=False)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, train_size=n_train, test_size=n_test, stratify=y, random_state=seed
    )
    return Data(X_train, y_train, X_test, y_test)


def settings_key(args: argparse.Namespace) -> str:
    """Short hash of every setting that changes the models or the adversarial sets."""
    names = (
        "n_train",
        "n_test",
        "n_neighbors",
        "calibration_size",
        "max_epochs",
        "seed",
        "eps",
        "step",
        "bim_iter",
        "lam",
        "head_epochs",
        "batch_size",
    )
    text = json.dumps({n: getattr(args, n) for n in names}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def fit_models(
    data: Data, args: argparse.Namespace, cache: Path
) -> tuple[DeepKNNClassifier, DeepKNNClassifier, float, bool]:
    """The DkNN (trained, or loaded from the cache) and the kNN of its third layer.

    Returns the DkNN, the relu3 kNN, the DkNN's fit seconds and whether it was loaded.
    """
    path = cache / "dknn.joblib"
    if path.exists():
        dknn = joblib.load(path)
        seconds, loaded = float("nan"), True
    else:
        dknn = DeepKNNClassifier(
            n_neighbors=args.n_neighbors,
            calibration_size=args.calibration_size,
            max_epochs=args.max_epochs,
            random_state=args.seed,
        )
        seconds = elapsed(lambda: dknn.fit(data.X_train, data.y_train))
        loaded = False
        joblib.dump(dknn, path)
    # the same frozen network, the same calibration split, only the third layer
    knn3 = clone(dknn).set_params(net=FrozenEstimator(dknn.net_), layers=["relu3"])
    knn3.fit(data.X_train, data.y_train)
    return dknn, knn3, seconds, loaded


# -- the attacks ---------------------------------------------------------------------


@dataclass
class AttackSpec:
    """One adversarial set: its table column, the head it uses, how to build it."""

    name: str
    column: str
    head: str  # "origin", "relu3" or "all"
    make: Callable[[], Any]


def attack_specs(
    dknn: DeepKNNClassifier, knn3: DeepKNNClassifier, args: argparse.Namespace
) -> list[AttackSpec]:
    cnn = dknn.module_
    common = {"eps": args.eps, "batch_size": args.batch_size}
    bim = {"step": args.step, "n_iter": args.bim_iter}
    specs = [
        AttackSpec(
            "fgsm_origin", "fgsm_origin", "origin", lambda: FGSMAttack(cnn, **common)
        ),
        AttackSpec(
            "bim_origin",
            "bim_origin",
            "origin",
            lambda: BIMAttack(cnn, **common, **bim),
        ),
    ]
    # the paper's "attacked layer = 3rd layer" against the relu3 kNN; all DkNN layers
    for head, target in (("relu3", knn3), ("all", dknn)):
        for method in ("fgsm", "bim"):
            for consistency in (False, True):
                column = f"{method}_dknnb" + ("_cl" if consistency else "")

                def make(target=target, head=head, method=method, cl=consistency):
                    return AdvKNNAttack(
                        target,
                        layer=head,
                        method=method,
                        lam=args.lam,
                        consistency=cl,
                        head_epochs=args.head_epochs,
                        random_state=args.seed,
                        **common,
                        **bim,
                    )

                specs.append(AttackSpec(f"{column}_{head}", column, head, make))
    return specs


def run_attack(
    spec: AttackSpec, data: Data, cache: Path, reuse: bool
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """The adversarial test set of one attack: from the cache, or computed and saved."""
    path = cache / f"{spec.name}.npz"
    if reuse and path.exists():
        saved = load_adversarial(path)
        return saved.X_adv, {**saved.metrics, "cached": True}
    attack = spec.make()
    fit_seconds = elapsed(lambda: attack.fit(data.X_train))
    start = time.perf_counter()
    X_adv = attack.transform(data.X_test)
    info: dict[str, Any] = {
        "fit_seconds": fit_seconds,
        "attack_seconds": time.perf_counter() - start,
        "agreement": getattr(attack, "agreement_", None),
        "linf": float(np.abs(X_adv - data.X_test).max()),
    }
    save_adversarial(path, X_adv, attack=attack, y=data.y_test, metrics=info)
    return X_adv, {**info, "cached": False}


# -- evaluation ----------------------------------------------------------------------


class CNN:
    """The DkNN's network as a classifier (argmax of the logits), for reference."""

    def __init__(self, dknn: DeepKNNClassifier) -> None:
        self.dknn = dknn

    def predict(self, X: NDArray[np.float32]) -> NDArray[np.int64]:
        module = self.dknn.module_.eval()
        with torch.inference_mode():
            logits = torch.cat(
                [
                    module(torch.from_numpy(X[i : i + 500]))
                    for i in range(0, len(X), 500)
                ]
            )
        return self.dknn.classes_[logits.argmax(1).numpy()]


def evaluate(
    model: Any, X_clean: NDArray, X_adv: NDArray, y: NDArray, clean_pred: NDArray
) -> dict[str, float]:
    """Accuracy, success rate, L2 of successful examples and mean credibility."""
    pred = model.predict(X_adv)
    success = pred != clean_pred
    cred = (
        mean_credibility(model.credibility(X_adv))
        if hasattr(model, "credibility")
        else float("nan")
    )
    return {
        "accuracy": 100 * accuracy_under_attack(y, pred),
        "success_rate": 100 * attack_success_rate(clean_pred, pred),
        "l2": mean_l2_distortion(X_clean, X_adv, success),  # NaN: no success
        "credibility": cred,
    }


# rows of the table: (key, label, model, head of the DkNNB columns, paper row)
def table_rows(
    dknn: DeepKNNClassifier, knn3: DeepKNNClassifier
) -> list[tuple[str, str, Any, str, str | None]]:
    return [
        ("knn_relu3", "kNN (relu3)", knn3, "relu3", "knn"),
        ("dknn_relu3", "DkNN, relu3 head", dknn, "relu3", "dknn"),
        ("dknn_all", "DkNN, all-layer head", dknn, "all", "dknn"),
        ("cnn", "CNN (reference)", CNN(dknn), "relu3", None),
    ]


def run_table(args: argparse.Namespace, report: dict[str, Any]) -> None:
    cache = Path(args.cache_dir) / f"attacks-{settings_key(args)}"
    cache.mkdir(parents=True, exist_ok=True)
    data = load_data(args.n_train, args.n_test, args.seed)
    print(
        f"data      : {len(data.X_train)} training images ("
        f"{args.calibration_size} for calibration, "
        f"{args.n_train - args.calibration_size} indexed), {len(data.X_test)} "
        "held-out test images (stratified split of the embedded MNIST sample)"
    )
    print(f"cache     : {cache}")
    dknn, knn3, fit_seconds, loaded = fit_models(data, args, cache)
    what = "loaded from the cache" if loaded else f"trained in {fit_seconds:.1f} s"
    print(f"DkNN      : {what}; layers {dknn.layers_}, k={dknn.n_neighbors}")
    report["dknn_fit_seconds"] = fit_seconds
    report["cache"] = str(cache)

    sets: dict[str, NDArray[np.float32]] = {"clean": data.X_test}
    attacks: dict[str, dict[str, Any]] = {}
    for spec in attack_specs(dknn, knn3, args):
        X_adv, info = run_attack(spec, data, cache, reuse=loaded)
        sets[spec.name] = X_adv
        attacks[spec.name] = info
        agreement = info.get("agreement")
        note = "cached" if info["cached"] else f"{info['attack_seconds']:.1f} s"
        fit_note = (
            f", head fit {info['fit_seconds']:.1f} s, agreement {agreement:.3f}"
            if agreement is not None
            else ""
        )
        print(f"attack    : {spec.name:<22} {note}{fit_note}", flush=True)
    report["attacks"] = attacks

    table: dict[str, dict[str, dict[str, float]]] = {}
    for key, _, model, head, _ in table_rows(dknn, knn3):
        clean_pred = model.predict(data.X_test)
        table[key] = {}
        for column in COLUMNS:
            if column == "clean":
                name = "clean"
            elif column.endswith("origin"):
                name = column
            else:
                name = f"{column}_{head}"
            table[key][column] = evaluate(
                model, data.X_test, sets[name], data.y_test, clean_pred
            )
    report["table"] = table
    print_table(table, dknn, knn3)


def print_table(
    table: dict[str, dict[str, dict[str, float]]],
    dknn: DeepKNNClassifier,
    knn3: DeepKNNClassifier,
) -> None:
    rows = table_rows(dknn, knn3)
    header = f"{'':<22}" + "".join(f"{TITLES[c]:>14}" for c in COLUMNS)

    def block(title: str, cell: Callable[[str, str | None, str], str]) -> None:
        print()
        print(title)
        print(header)
        for key, label, _, _, paper_row in rows:
            print(
                f"{label:<22}"
                + "".join(f"{cell(key, paper_row, c):>14}" for c in COLUMNS)
            )

    def accuracy(key: str, paper_row: str | None, column: str) -> str:
        ours = table[key][column]["accuracy"]
        if paper_row is None:
            return f"{ours:.2f}"
        return f"{ours:.2f} ({PAPER[paper_row][column]:.2f})"

    block("Accuracy % on held-out MNIST: ours (paper, AdvKNN Table 2)", accuracy)
    block(
        "Attack success rate %: prediction changed from the row model's clean one",
        lambda k, _, c: f"{table[k][c]['success_rate']:.1f}",
    )
    block(
        "Mean L2 distortion ||x' - x||_2 of the successful examples",
        lambda k, _, c: (
            "-" if np.isnan(table[k][c]["l2"]) else f"{table[k][c]['l2']:.2f}"
        ),
    )
    block(
        "Mean credibility of the row model on the (adversarial) inputs",
        lambda k, _, c: (
            "-"
            if np.isnan(table[k][c]["credibility"])
            else f"{table[k][c]['credibility']:.3f}"
        ),
    )
    print()
    print(
        "goals of the issue (at the full settings: eps 0.25, BIM 0.01 x 100, k 75): "
        "DkNN accuracy <= 28 % under FGSM+CL and <= 6 % under BIM+CL"
    )
    for key in ("dknn_relu3", "dknn_all"):
        for column, goal in GOALS.items():
            ours = table[key][column]["accuracy"]
            verdict = "met" if ours <= goal else "NOT met"
            print(
                f"goal      : {key} under {TITLES[column]} {ours:.2f} % <= {goal} %: "
                f"{verdict}"
            )


# -- the AdvKNN gap ------------------------------------------------------------------


def run_gap(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Origin / DkNNB / DkNNB+CL / +boundary for FGSM, BIM and CW where FGSM through
    the CNN leaves the relu3 kNN above 40 % accuracy: the ``advknn-gap`` section of
    ``skdknn report`` (:func:`skdknn._report._gap.gap_section`) on this script's
    models, its adversarial sets and heads cached beside them."""
    cache = Path(args.cache_dir) / f"attacks-{settings_key(args)}"
    cache.mkdir(parents=True, exist_ok=True)
    data = load_data(args.n_train, args.n_test, args.seed)
    dknn, knn3, seconds, loaded = fit_models(data, args, cache)
    config = ReportConfig(
        train_size=args.n_train,
        test_size=args.n_test,
        n_neighbors=args.n_neighbors,
        calibration_size=args.calibration_size,
        max_epochs=args.max_epochs,
        step=args.step,
        n_iter=args.bim_iter,
        lam=args.lam,
        head_epochs=args.head_epochs,
        batch_size=args.batch_size,
        random_state=args.seed,
        gap_eps=args.gap_eps,
        curve_size=args.n_gap,
        cw_steps=args.cw_steps,
        boundary_eps=args.boundary_eps,
        out=str(cache),
        sections=["advknn-gap"],
    )
    # the DkNN is keyed by this script's settings (its cache directory's name)
    models = Models(dknn, knn3, loaded, seconds, model_id=settings_key(args))
    gap_data = GapData(
        "MNIST (embedded sample)", data.X_train, data.y_train, data.X_test, data.y_test
    )
    print(
        f"\nAdvKNN gap: {min(args.n_gap, args.n_test)} held-out images, cache {cache}"
    )
    heads = fit_heads(config, models, gap_data, cache)
    section = gap_section(config, models, heads, gap_data, cache)
    report["gap"] = section
    print()
    print(
        "Accuracy % / mean L2 of the successful examples / mean credibility, on "
        f"{section['n']} held-out images"
    )
    print(f"{'':<26}" + "".join(f"{title:>22}" for title in GAP_COLUMNS.values()))
    for label, per_model in section["table"].items():
        for key, title in (("knn", "kNN (relu3)"), ("dknn", "DkNN")):
            line = f"{label + ', ' + title:<26}"
            for column in GAP_COLUMNS:
                c = per_model[key][column]
                line += (
                    f"{100 * c['accuracy']:>8.1f} {c['mean_l2_successful']:>5.2f} "
                    f"{c['mean_credibility']:>6.3f}"
                )
            print(line)
    for name, agree in section["agreement"].items():
        print(
            f"head = kNN, {GAP_COLUMNS[name]:<18}: {agree['validation']:.3f} "
            f"(held-out training rows), {agree['test_clean']:.3f} (clean test), "
            f"{agree['test_fgsm']:.3f} (FGSM origin, eps {max(args.gap_eps):g})"
        )
    for label, acc in section["origin_fgsm_knn"].items():
        verdict = "above" if acc > 0.4 else "NOT above"
        print(f"{label} origin: kNN accuracy {100 * acc:.1f} % ({verdict} 40 %)")


# -- timing --------------------------------------------------------------------------


def plain_labels(module: nn.Module, X: NDArray[np.float32], bs: int) -> torch.Tensor:
    with torch.inference_mode():
        labels = torch.cat(
            [
                module(torch.from_numpy(X[i : i + bs])).argmax(1)
                for i in range(0, len(X), bs)
            ]
        )
    return labels.clone()  # a normal tensor: autograd may save it


def plain_fgsm(
    module: nn.Module, X: NDArray[np.float32], eps: float, bs: int
) -> NDArray[np.float32]:
    """FGSM written directly in torch: x' = clip(x + eps sign(grad CE), 0, 1)."""
    module.eval()
    labels = plain_labels(module, X, bs)
    out = np.empty_like(X)
    for i in range(0, len(X), bs):
        x = torch.from_numpy(X[i : i + bs]).requires_grad_(True)
        loss = F.cross_entropy(module(x), labels[i : i + bs], reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        out[i : i + bs] = torch.clamp(x.detach() + eps * grad.sign(), 0, 1).numpy()
    return out


def plain_bim(
    module: nn.Module,
    X: NDArray[np.float32],
    eps: float,
    step: float,
    n_iter: int,
    bs: int,
) -> NDArray[np.float32]:
    """BIM written directly in torch: FGSM steps projected on the eps-ball, [0, 1]."""
    module.eval()
    labels = plain_labels(module, X, bs)
    out = np.empty_like(X)
    for i in range(0, len(X), bs):
        x = torch.from_numpy(X[i : i + bs])
        t = labels[i : i + bs]
        lower, upper = torch.clamp(x - eps, min=0), torch.clamp(x + eps, max=1)
        x_adv = x.clone()
        for _ in range(n_iter):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(module(x_adv), t, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.minimum(
                torch.maximum(x_adv.detach() + step * grad.sign(), lower), upper
            )
        out[i : i + bs] = x_adv.numpy()
    return out


def torchattacks_cw(
    module: nn.Module, X: NDArray[np.float32], c: float, steps: int, bs: int
) -> NDArray[np.float32]:
    """torchattacks' CW (no binary search), batch by batch, on the clean argmax."""
    import torchattacks  # a benchmark dependency: pip install --no-deps torchattacks

    labels = plain_labels(module, X, bs)
    attack = torchattacks.CW(module, c=c, kappa=0, steps=steps, lr=0.01)
    out = np.empty_like(X)
    for i in range(0, len(X), bs):
        out[i : i + bs] = attack(torch.from_numpy(X[i : i + bs]), labels[i : i + bs])
    return out


def torchattacks_pgd_restarts(
    module: nn.Module,
    X: NDArray[np.float32],
    eps: float,
    step: float,
    n_iter: int,
    restarts: int,
    seed: int,
    bs: int,
) -> NDArray[np.float32]:
    """``restarts`` torchattacks PGD runs per batch, then per input the most
    damaging (misclassified first, then highest cross-entropy), from the torch
    seed our BIMAttack(random_state=seed) draws its starts from."""
    import torchattacks

    labels = plain_labels(module, X, bs)
    attack = torchattacks.PGD(module, eps=eps, alpha=step, steps=n_iter)
    torch.manual_seed(int(np.random.RandomState(seed).randint(2**31 - 1)))
    out = np.empty_like(X)
    for i in range(0, len(X), bs):
        x, t = torch.from_numpy(X[i : i + bs]), labels[i : i + bs]
        best, key = x, torch.full((len(x),), -float("inf"), dtype=torch.float64)
        for _ in range(restarts):
            x_adv = attack(x, t)
            with torch.no_grad():
                logits = module(x_adv)
            # misclassified first (+1e6), then the highest loss (in float64: float32
            # would round the loss away next to 1e6)
            loss = F.cross_entropy(logits, t, reduction="none").double()
            new = loss + 1e6 * (logits.argmax(1) != t)
            better = new > key
            best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
            key = torch.where(better, new, key)
        out[i : i + bs] = best.numpy()
    return out


@dataclass
class PairTiming:
    """Seconds of our attack and of plain torch, one list entry per round."""

    ours: list[float]
    plain: list[float]
    max_abs_diff: float

    @property
    def ratio(self) -> float:
        """Median over rounds of ours / plain, each pair run back to back."""
        return statistics.median(
            o / p for o, p in zip(self.ours, self.plain, strict=True)
        )

    @property
    def ratio_of_minima(self) -> float:
        return min(self.ours) / min(self.plain)

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds, the worse of the two methods."""
        return max(
            (max(ts) - min(ts)) / statistics.median(ts)
            for ts in (self.ours, self.plain)
        )


def time_pair(
    ours: Callable[[], NDArray], plain: Callable[[], NDArray], repeat: int
) -> PairTiming:
    """Time both ``repeat`` times after a warm-up that also compares their results.

    Each round runs the two back to back, alternating which goes first (ABBA), so
    that a change of load from other processes hits both alike.
    """
    diff = float(np.abs(ours() - plain()).max())
    timing = PairTiming([], [], diff)
    for round_ in range(repeat):
        order = ("ours", "plain") if round_ % 2 == 0 else ("plain", "ours")
        for name in order:
            fn = ours if name == "ours" else plain
            getattr(timing, name).append(elapsed(fn))
    return timing


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def others_cpu_share(
    before: tuple[int, int] | None, self_before: float
) -> float | None:
    """Share of the machine's CPU time used by other processes since ``before``."""
    after = cpu_jiffies()
    if before is None or after is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (after[0] - before[0]) / ticks
    total = (after[1] - before[1]) / ticks
    mine = time.process_time() - self_before
    return max(0.0, busy - mine) / total if total > 0 else None


def run_timing(args: argparse.Namespace, report: dict[str, Any]) -> None:
    data = load_data(args.n_train, args.n_test, args.seed)
    cache = Path(args.cache_dir) / f"attacks-{settings_key(args)}"
    cache.mkdir(parents=True, exist_ok=True)
    dknn, knn3, _, _ = fit_models(data, args, cache)
    module = dknn.module_
    pool = np.concatenate([data.X_test, data.X_train])
    X = np.ascontiguousarray(pool[: args.n_timing])
    n, bs, steps = len(X), args.batch_size, args.timing_iter
    per_k = 1000 / n
    fgsm = FGSMAttack(module, eps=args.eps, batch_size=bs).fit(X)
    bim = BIMAttack(
        module, eps=args.eps, step=args.step, n_iter=steps, batch_size=bs
    ).fit(X)
    print()
    print(
        f"Timing on {n} images, batch {bs}, {torch.get_num_threads()} torch threads, "
        f"{args.repeat} rounds after a warm-up (seconds per 1,000 images, medians)"
    )
    print(
        f"{'attack':<16}{'ours':>8}{'plain':>8}{'ratio':>7}{'min ratio':>10}"
        f"{'ours/step':>10}{'plain/step':>11}{'spread':>8}{'max|diff|':>10}"
    )
    cw = CarliniWagnerL2Attack(
        module,
        initial_const=args.cw_const,
        learning_rate=0.01,  # torchattacks' default lr
        binary_search_steps=1,
        n_iter=steps,
        abort_early=False,
        batch_size=bs,
    ).fit(X)
    restarts = 3
    pgd = BIMAttack(
        module,
        eps=args.eps,
        step=args.step,
        n_iter=steps,
        random_start=True,
        n_restarts=restarts,
        random_state=args.seed,
        batch_size=bs,
    ).fit(X)
    pairs = {
        "FGSM": (
            lambda: fgsm.transform(X),
            lambda: plain_fgsm(module, X, args.eps, bs),
            1,
        ),
        f"BIM {steps} steps": (
            lambda: bim.transform(X),
            lambda: plain_bim(module, X, args.eps, args.step, steps, bs),
            steps,
        ),
        f"CW 1x{steps} [ta]": (
            lambda: cw.transform(X),
            lambda: torchattacks_cw(module, X, args.cw_const, steps, bs),
            steps,
        ),
        f"PGD {restarts}x{steps} [ta]": (
            lambda: pgd.transform(X),
            lambda: torchattacks_pgd_restarts(
                module, X, args.eps, args.step, steps, restarts, args.seed, bs
            ),
            restarts * steps,
        ),
    }
    results = {}
    jiffies, self_cpu = cpu_jiffies(), time.process_time()
    for name, (ours, plain, n_steps) in pairs.items():
        timing = time_pair(ours, plain, args.repeat)
        t_ours = statistics.median(timing.ours) * per_k
        t_plain = statistics.median(timing.plain) * per_k
        results[name] = {
            "ours_per_1000": t_ours,
            "plain_per_1000": t_plain,
            "ours_per_1000_per_step": t_ours / n_steps,
            "plain_per_1000_per_step": t_plain / n_steps,
            "ratio": timing.ratio,
            "ratio_of_minima": timing.ratio_of_minima,
            "spread": timing.spread,
            "max_abs_diff": timing.max_abs_diff,
            "steps": n_steps,
            "rounds_ours": timing.ours,
            "rounds_plain": timing.plain,
        }
        print(
            f"{name:<16}{t_ours:>8.3f}{t_plain:>8.3f}{timing.ratio:>7.2f}"
            f"{timing.ratio_of_minima:>10.2f}{t_ours / n_steps:>10.3f}"
            f"{t_plain / n_steps:>11.3f}{timing.spread:>8.0%}"
            f"{timing.max_abs_diff:>10.2g}",
            flush=True,
        )
    others = others_cpu_share(jiffies, self_cpu)
    print(
        "ratio = median over rounds of ours / plain run back to back (goal <= 1.2); "
        "min ratio = fastest ours / fastest plain; spread = (max - min) / median of "
        "the rounds; max|diff| = largest difference between the two adversarial sets"
    )
    print(
        "[ta]: plain = torchattacks (CW: its CW, c = --cw-const, no binary search, "
        "ours with abort_early=False; PGD: its PGD per restart from the same torch "
        "seed, then the same most-damaging choice); a CW max|diff| above float "
        "rounding comes from torchattacks' margin, which counts negative logits as "
        "0 (its issue #184), or from its batch-wide early stop"
    )
    if others is not None:
        print(
            f"other processes used {others:.0%} of the machine's CPU time during "
            "these timings"
        )
    heads = {}
    for head, target in (("relu3", knn3), ("all", dknn)):
        attack = AdvKNNAttack(
            target,
            layer=head,
            lam=args.lam,
            head_epochs=args.head_epochs,
            random_state=args.seed,
        )
        seconds = [elapsed(lambda a=attack: a.fit(data.X_train)) for _ in range(2)]
        heads[head] = {
            "fit_seconds": min(seconds),
            "n_fit": len(data.X_train),
            "head_epochs": args.head_epochs,
            "agreement": attack.agreement_,
        }
        print(
            f"AdvKNN head : layer={head!r:<8} fit on {len(data.X_train)} images, "
            f"{args.head_epochs} epochs: {min(seconds):.1f} s (best of 2; neighbour "
            f"distributions + training), agreement {attack.agreement_:.3f}"
        )
    report["timing"] = {
        "attacks": results,
        "heads": heads,
        "n_images": n,
        "torch_threads": torch.get_num_threads(),
        "others_cpu_share": others,
    }


# -- command line --------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Reproduce the AdvKNN paper's Table 2 on held-out embedded MNIST and time "
            "skdknn's FGSM/BIM against plain torch."
        )
    )
    add = parser.add_argument
    add("--n-train", type=int, help="training images, calibration included (4000)")
    add("--n-test", type=int, help="held-out test images (1000)")
    add("--n-neighbors", type=int, help="k of the DkNN and the kNN (75)")
    add("--calibration-size", type=int, help="calibration images (750)")
    add("--max-epochs", type=int, help="CNN training epochs (15)")
    add("--eps", type=float, default=0.25, help="L-infinity budget (0.25)")
    add("--step", type=float, default=0.01, help="BIM step (0.01)")
    add("--bim-iter", type=int, help="BIM iterations of the table (100)")
    add("--lam", type=float, default=0.3, help="DkNNB cross-entropy weight (0.3)")
    add("--head-epochs", type=int, help="DkNNB training epochs (30)")
    add("--batch-size", type=int, default=256, help="attack batch size (256)")
    add("--n-timing", type=int, help="images of the timing part (1000)")
    add("--timing-iter", type=int, help="BIM steps of the timing part (10)")
    add("--repeat", type=int, help="timed rounds after the warm-up (7)")
    add("--cw-const", type=float, default=1.0, help="CW's c in the timing (1.0)")
    add(
        "--gap-eps",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[0.1, 0.15],
        help="eps values of the AdvKNN-gap part (0.1,0.15)",
    )
    add("--n-gap", type=int, help="held-out images of the gap part (500)")
    add("--cw-steps", type=int, help="CW Adam steps per binary-search step (100)")
    add(
        "--boundary-eps",
        type=float,
        default=0.3,
        help="AdvKNNAttack(boundary_eps=) of the +boundary head (0.3)",
    )
    add("--threads", type=int, help="torch threads (default: torch's choice)")
    add("--seed", type=int, default=0, help="split, training and head seed (0)")
    add(
        "--part",
        choices=("all", "table", "gap", "timing"),
        default="all",
        help="run the table, the AdvKNN gap, the timing, or all (default)",
    )
    add(
        "--cache-dir",
        default=str(Path(__file__).resolve().parent / "results"),
        help="adversarial sets, the fitted DkNN and the JSON (benchmarks/results)",
    )
    add(
        "--quick",
        action="store_true",
        help="smoke run: 1000/100 images, calibration 200, k 25, 3 epochs, 10 BIM "
        "steps, 3 head epochs; timing on 200 images, 3 BIM steps, 2 rounds "
        "(explicit options still win)",
    )
    args = parser.parse_args(argv)
    fallback = QUICK if args.quick else DEFAULTS
    for name, value in fallback.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.n_train + args.n_test > 5000:
        parser.error("--n-train + --n-test exceed the 5,000 embedded images")
    if args.calibration_size + args.n_neighbors > args.n_train:
        parser.error("--n-train leaves fewer than k indexed images after calibration")
    if args.step > args.eps:
        parser.error("--step exceeds --eps")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")
    if args.n_timing > args.n_train + args.n_test:
        parser.error("--n-timing exceeds --n-train + --n-test")
    return args


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    machine = machine_report()
    for key, value in machine.items():
        print(f"{key:<10}: {value}")
    settings = {k: v for k, v in vars(args).items() if k != "cache_dir"}
    print(f"settings  : {settings}")
    report: dict[str, Any] = {
        "machine": machine,
        "settings": settings,
        "paper": PAPER,
        "goals": GOALS,
    }
    if args.part in ("all", "table"):
        run_table(args, report)
    if args.part in ("all", "gap"):
        run_gap(args, report)
    if args.part in ("all", "timing"):
        run_timing(args, report)
    report["load_avg_end"] = load_average()
    report["total_seconds"] = time.perf_counter() - start
    out = Path(args.cache_dir) / f"bench_attacks-{settings_key(args)}-{args.part}.json"
    out.write_text(json.dumps(jsonable(report), indent=2))
    print(f"load avg  : {load_average()} (1, 5, 15 min) at end")
    print(f"total     : {report['total_seconds']:.0f} s; numbers in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
