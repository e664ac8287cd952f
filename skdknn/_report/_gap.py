"""The AdvKNN gap where FGSM leaves room (report section ``advknn-gap``).

In the AdvKNN paper the DkNNB attack lowers the kNN's accuracy far below plain
FGSM through the CNN (Table 2: 44.48 % -> 15.28 % at eps = 0.25). This section
measures that gap at budgets where FGSM through the CNN still leaves the kNN well
above chance (``gap_eps``), for FGSM, BIM and Carlini-Wagner L2, through the CNN
("origin"), the paper's heads (DkNNB, DkNNB+CL) and a head also trained near the
decision boundary (``AdvKNNAttack(boundary_eps=...)``), on the attacked-layer kNN
and on the DkNN; and, with ``gap_train_sizes``, on models trained on fewer images.

``benchmarks/bench_attacks.py --part gap`` calls :func:`gap_section` on its own
models, so the benchmark and the report compute the same table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.frozen import FrozenEstimator
from tqdm.auto import tqdm

from ..attacks import AdvKNNAttack
from ..metrics import accuracy_under_attack
from ._config import HEAD_SETTINGS, ReportConfig
from ._data import Data, load_data
from ._experiments import (
    Outputs,
    adversarial_sets,
    attack_cell,
    curve_iterations,
    curve_sets,
)
from ._figures import FigureWriter
from ._models import (
    Models,
    cached_attacks,
    fit_heads,
    fit_models,
    model_references,
)
from ._render import Page, num, pct

__all__ = [
    "GAP_COLUMNS",
    "boundary_head",
    "gap_figure",
    "gap_page",
    "gap_section",
    "gap_summary",
    "train_size_config",
]

#: Columns of the gap table: through the CNN, then through each head.
GAP_COLUMNS = {
    "origin": "origin",
    "dknnb": "DkNNB",
    "dknnb_cl": "DkNNB+CL",
    "dknnb_cl_b": "DkNNB+CL+boundary",
}

#: The rows' models: the attacked-layer kNN and the DkNN.
GAP_MODELS = {"knn": "kNN", "dknn": "DkNN"}

GAP_DIR = "gap"


def boundary_head(
    config: ReportConfig, models: Models, data: Data, out: Path
) -> AdvKNNAttack:
    """The DkNNB+CL of the attacked layer trained also on one perturbed copy of each
    training image (``AdvKNNAttack(boundary_eps=config.boundary_eps)``), saved in
    ``out/sections/gap_boundary_head.pkl`` and reused under the same settings."""
    key = config.key(*HEAD_SETTINGS, "boundary_eps", parent=models.model_id)

    def compute() -> dict[str, AdvKNNAttack]:
        attack = AdvKNNAttack(
            FrozenEstimator(models.knn),
            layer=config.attacked_layer,
            lam=config.lam,
            consistency=True,
            boundary_eps=config.boundary_eps,
            head_epochs=config.head_epochs,
            batch_size=config.batch_size,
            random_state=config.random_state,
            verbose=max(config.verbose - 1, 0),
        )
        return {"dknnb_cl_b": attack.fit(data.X_train)}

    path = out / "sections" / "gap_boundary_head.pkl"
    heads, _ = cached_attacks(
        path, key, compute, model_references(models), config.reuse
    )
    return heads["dknnb_cl_b"]


def _columns(config: ReportConfig) -> list[tuple[str, float | None]]:
    """(method, eps) of the table's row blocks; CW has no eps."""
    gap = [eps for eps in config.gap_eps if eps > 0]
    return [*(("fgsm", e) for e in gap), *(("bim", e) for e in gap), ("cw", None)]


def _label(method: str, eps: float | None) -> str:
    return method.upper() + ("" if eps is None else f" eps {eps:g}")


def _sets(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    X: NDArray[np.float32],
    out: Path,
    method: str,
    eps: float | None,
) -> dict[str, NDArray[np.float32]]:
    """The adversarial sets of one row block, by column (FGSM and BIM are the
    accuracy-against-eps curves' sets, shared with those sections)."""
    names = [f"{method}_origin", *(f"{method}_{head}" for head in heads)]
    if eps is None:
        sets = adversarial_sets(
            names,
            models,
            heads,
            X,
            config,
            eps=0.0,
            n_iter=config.cw_steps,
            cache=out / "adversarial" / GAP_DIR,
            desc="CW",
        )
    else:
        sets = curve_sets(
            names,
            models,
            heads,
            X,
            config,
            eps=eps,
            cache=out / "adversarial" / "curves",
        )
    return {name.partition("_")[2]: X_adv for name, (X_adv, _) in sets.items()}


def _agreement(
    heads: dict[str, AdvKNNAttack], X: NDArray[np.float32], X_fgsm: NDArray[np.float32]
) -> dict[str, dict[str, float]]:
    """How often each head predicts the kNN's class, on clean and FGSM inputs."""

    def agree(attack: AdvKNNAttack, X: NDArray[np.float32]) -> float:
        q = attack.head_proba(X).argmax(axis=1)
        return float(np.mean(q == attack.neighbor_distribution(X).argmax(axis=1)))

    return {
        name: {
            "validation": float(attack.agreement_),
            "test_clean": agree(attack, X),
            "test_fgsm": agree(attack, X_fgsm),
        }
        for name, attack in heads.items()
    }


def gap_table(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    X: NDArray[np.float32],
    y: NDArray,
    out: Path,
    methods: tuple[str, ...] = ("fgsm", "bim", "cw"),
) -> tuple[dict[str, Any], dict[str, dict[str, NDArray[np.float32]]]]:
    """Per row block (``"FGSM eps 0.1"``, ...), model and column: accuracy, success
    rate, mean L2 of the successful examples and mean credibility; and the sets."""
    clean = Outputs.of(models, X)
    table: dict[str, Any] = {}
    sets_by_label = {}
    blocks = [(m, e) for m, e in _columns(config) if m in methods]
    for method, eps in tqdm(blocks, desc="AdvKNN gap", disable=config.verbose <= 0):
        label = _label(method, eps)
        sets = _sets(config, models, heads, X, out, method, eps)
        sets_by_label[label] = sets
        outputs = {column: Outputs.of(models, X_adv) for column, X_adv in sets.items()}
        table[label] = {
            model: {
                column: attack_cell(X, sets[column], y, clean, outputs[column], model)
                for column in sets
            }
            for model in GAP_MODELS
        }
    return table, sets_by_label


def train_size_config(config: ReportConfig, n_train: int, n_full: int) -> ReportConfig:
    """The settings of the model trained on ``n_train`` of the ``n_full`` training
    images: k and the calibration set scaled with the training set (so that k
    stays the same share of a class and the network keeps the same share of the
    images), saved in ``out/gap_train_sizes/n<n_train>``."""
    share = n_train / n_full
    return dataclasses.replace(
        config,
        train_size=n_train,
        n_neighbors=max(1, round(config.n_neighbors * share)),
        calibration_size=max(10, round(config.calibration_size * share)),
        out=str(Path(config.out) / "gap_train_sizes" / f"n{n_train}"),
        gap_train_sizes=[],
    )


def _size_row(
    config: ReportConfig,
    models: Models,
    table: dict[str, Any],
    X: NDArray[np.float32],
    y: NDArray,
    n_train: int,
) -> dict[str, Any]:
    clean = Outputs.of(models, X)
    row: dict[str, Any] = {
        "n_train": n_train,
        "n_indexed": n_train - config.calibration_size,
        "n_neighbors": config.n_neighbors,
        "calibration_size": config.calibration_size,
        "clean": {
            model: accuracy_under_attack(y, clean.model(model)[0])
            for model in ("cnn", *GAP_MODELS)
        },
        "attacks": {},
    }
    for label, cells in table.items():
        row["attacks"][label] = {
            model: {
                column: cells[model][column]["accuracy"]
                for column in ("origin", "dknnb_cl")
            }
            for model in GAP_MODELS
        }
    return row


def train_size_rows(
    config: ReportConfig,
    data: Data,
    models: Models,
    table: dict[str, Any],
    out: Path,
) -> list[dict[str, Any]]:
    """The gap (origin against DkNNB+CL, FGSM and BIM at ``gap_eps``) of models
    trained on each size of ``gap_train_sizes`` (same test images), beside the
    report's own model (the last row)."""
    n_full = len(data.y_train)
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    rows = []
    for n_train in sorted(n for n in set(config.gap_train_sizes) if n < n_full):
        sub = train_size_config(config, n_train, n_full)
        sub_data = load_data(sub)
        sub_out = Path(sub.out)
        sub_models = fit_models(sub, sub_data, sub_out)
        sub_heads = fit_heads(sub, sub_models, sub_data, sub_out)
        sub_table, _ = gap_table(
            sub, sub_models, {"dknnb_cl": sub_heads["dknnb_cl"]}, X, y, sub_out,
            methods=("fgsm", "bim"),
        )  # fmt: skip
        rows.append(_size_row(sub, sub_models, sub_table, X, y, n_train))
        rows[-1]["notes"] = sub_models.page_notes
        rows[-1]["warnings"] = sub_models.warnings
    main = {label: cells for label, cells in table.items() if "CW" not in label}
    rows.append(_size_row(config, models, main, X, y, n_full))
    return rows


def gap_section(
    config: ReportConfig,
    models: Models,
    heads: dict[str, AdvKNNAttack],
    data: Data,
    out: Path,
) -> dict[str, Any]:
    """The AdvKNN gap on the first ``curve_size`` test images.

    ``heads`` are the report's DkNNB and DkNNB+CL of the attacked layer (the
    paper's recipe); the +boundary head is trained here (:func:`boundary_head`).
    Every adversarial set is saved under ``out/adversarial`` and reused.

    Returns
    -------
    section : dict
        ``table[block][model][column]`` (cells of accuracy, success rate, mean L2
        of the successful examples, mean credibility), ``agreement`` (per head,
        the share of images where it predicts the kNN's class: on its held-out
        training rows, on the clean test images and under FGSM through the CNN at
        the largest ``gap_eps``), ``origin_fgsm_knn`` (the kNN's accuracy under
        FGSM origin per eps) and, with ``gap_train_sizes``, ``train_sizes``.
    """
    X, y = data.X_test[: config.curve_size], data.y_test[: config.curve_size]
    all_heads = {**heads, "dknnb_cl_b": boundary_head(config, models, data, out)}
    table, sets = gap_table(config, models, all_heads, X, y, out)
    fgsm = [label for label in sets if label.startswith("FGSM")]
    result: dict[str, Any] = {
        "n": len(y),
        "attacked_layer": config.attacked_layer,
        "eps": [e for e in config.gap_eps if e > 0],
        "bim_iterations": {
            f"{e:g}": curve_iterations(e, config) for e in config.gap_eps if e > 0
        },
        "cw_steps": config.cw_steps,
        "boundary_eps": config.boundary_eps,
        "table": table,
        "agreement": _agreement(all_heads, X, sets[fgsm[-1]]["origin"]) if fgsm else {},
        "origin_fgsm_knn": {
            label: table[label]["knn"]["origin"]["accuracy"] for label in fgsm
        },
    }
    if config.gap_train_sizes:
        result["train_sizes"] = train_size_rows(config, data, models, table, out)
    return result


# -- the page, the figure and the terminal -----------------------------------------
def _cell_text(cell: dict[str, Any]) -> str:
    return (
        f"{pct(cell['accuracy'])} / {num(cell['mean_l2_successful'], 2)} / "
        f"{num(cell['mean_credibility'])}"
    )


def gap_page(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    """The section's tables and text on the report page."""
    section = results["advknn_gap"]
    layer = section["attacked_layer"]
    page.heading("The AdvKNN gap where FGSM leaves room")
    rows = []
    for label, per_model in section["table"].items():
        for model, title in GAP_MODELS.items():
            title = f"kNN ({layer})" if model == "knn" else title
            cells = per_model[model]
            rows.append(
                [f"{label}, {title}"]
                + [_cell_text(cells[c]) if c in cells else "-" for c in GAP_COLUMNS]
            )
    page.table(["attack, model", *GAP_COLUMNS.values()], rows)
    agreement = section["agreement"]
    origin = ", ".join(
        f"{pct(acc)} % at eps {label.split()[-1]}"
        for label, acc in section["origin_fgsm_knn"].items()
    )
    page.paragraph(
        "Each cell: accuracy % / mean L2 of the successful examples / mean "
        f"credibility, on the first {section['n']} test images. origin: through the "
        "CNN; DkNNB / DkNNB+CL: the paper's head (cross-entropy only / with "
        f"consistency learning) on `{layer}`; +boundary: DkNNB+CL also trained on "
        "one FGSM-perturbed copy of each training image (random strength up to "
        f"{section['boundary_eps']:g}, target: the copy's kNN distribution; "
        f"`AdvKNNAttack(boundary_eps=...)`). BIM with step {config.step:g} (at "
        "most eps) and Kurakin et al.'s iterations ("
        + ", ".join(f"{n} at eps {e}" for e, n in section["bim_iterations"].items())
        + f"); CW: 5 binary-search steps x {section['cw_steps']} Adam steps. "
        f"FGSM origin leaves the kNN at {origin}. Head = kNN (share of images "
        "with the same class), on held-out training rows / clean test images / "
        "FGSM origin test images: "
        + "; ".join(
            f"{GAP_COLUMNS[name]} {a['validation']:.3f} / {a['test_clean']:.3f} / "
            f"{a['test_fgsm']:.3f}"
            for name, a in agreement.items()
        )
        + "."
    )
    drops = []
    for label, per_model in section["table"].items():
        cells = per_model["knn"]
        best = min(cells[c]["accuracy"] for c in cells if c != "origin")
        drops.append(f"{label} {100 * (cells['origin']['accuracy'] - best):.1f}")
    page.paragraph(
        "Accuracy points the best head takes off the kNN against origin: "
        + ", ".join(drops)
        + " (negative: the head is weaker). "
        "The paper (AdvKNN Table 2, 60,000 training images, eps = 0.25) reports "
        "the DkNNB cutting the kNN's accuracy from 44.48 % (FGSM origin) to "
        "15.28 %, 29.2 points. A head trained only on training points learns from "
        "leave-one-out "
        "neighbour distributions that are almost one-hot, i.e. the network's own "
        "boundary: it imitates the kNN on data much better than under attack "
        "(compare the agreements above), which is where the attack needs its "
        "gradient. See docs/reproduction.md for what this measures."
    )
    sizes = section.get("train_sizes")
    if sizes:
        labels = list(sizes[-1]["attacks"])
        header = ["training images (indexed, k)", "kNN / DkNN clean %"]
        header += [f"{label}: kNN, DkNN (origin -> +CL) %" for label in labels]
        size_rows = []
        for row in sizes:
            cells = [
                f"{row['n_train']:,} ({row['n_indexed']:,}, k = {row['n_neighbors']})",
                f"{pct(row['clean']['knn'])} / {pct(row['clean']['dknn'])}",
            ]
            for label in labels:
                a = row["attacks"][label]
                cells.append(
                    f"{pct(a['knn']['origin'])} -> {pct(a['knn']['dknnb_cl'])}, "
                    f"{pct(a['dknn']['origin'])} -> {pct(a['dknn']['dknnb_cl'])}"
                )
            size_rows.append(cells)
        page.table(header, size_rows)
        page.paragraph(
            "The gap against the training-set size: the same test images; each "
            "smaller model is trained on a stratified subset of the training "
            "images, with k and the calibration set scaled with it (k stays the "
            "same share of a class); the last row is the report's own model."
        )
        for row in sizes:
            for note in row.get("notes", []):
                page.paragraph(note)


def gap_figure(writer: FigureWriter, section: dict[str, Any]) -> None:
    """Accuracy of kNN and DkNN, origin and DkNNB+CL, against the training-set
    size (drawn when the section measured several sizes)."""
    sizes = section.get("train_sizes") or []
    if len(sizes) < 2:
        return
    from .. import plotting

    n = [row["n_train"] for row in sizes]
    curves = {
        label: {
            f"{title} {GAP_COLUMNS[column]}": [
                row["attacks"][label][model][column] for row in sizes
            ]
            for model, title in GAP_MODELS.items()
            for column in ("origin", "dknnb_cl")
        }
        for label in sizes[-1]["attacks"]
    }

    def draw() -> Any:
        fig, axes = plotting.plot_accuracy_vs_eps(n, curves)
        for ax in np.ravel(axes):
            ax.set_xlabel("training images")
        return fig

    writer.save(
        "advknn_gap_train_sizes",
        "Accuracy of the attacked-layer kNN and the DkNN under each attack through "
        "the CNN (origin) and through the DkNNB+CL head, against the number of "
        "training images (the AdvKNN gap is the distance between the two).",
        draw,
    )


def gap_summary(results: dict[str, Any]) -> list[str]:
    """Terminal lines: the kNN's accuracy per block, origin and through each head."""
    if "advknn_gap" not in results:
        return []
    section = results["advknn_gap"]
    lines = [
        "",
        "AdvKNN gap, kNN accuracy %: " + " / ".join(GAP_COLUMNS.values()),
    ]
    for label, per_model in section["table"].items():
        cells = per_model["knn"]
        lines.append(
            f"  {label:<14}"
            + " / ".join(pct(cells[c]["accuracy"]) for c in GAP_COLUMNS if c in cells)
        )
    return lines
