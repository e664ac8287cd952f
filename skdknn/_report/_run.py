"""``skdknn report``: every step, the page, the figures and the JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from .._version import __version__
from . import _figures
from . import _section_pages as section_pages
from . import _thesis_pages as thesis_pages
from ._config import NET_TITLES, ReportConfig
from ._data import Data, load_data, load_ood_dir
from ._experiments import (
    COLUMNS,
    MODEL_TITLES,
    THESIS_OOD,
    Outputs,
    adversarial_sets,
    attack_table,
    clean_table,
    eps_curves,
    neighbor_agreement,
    paper_dataset,
    variant_table,
)
from ._gap import gap_figure, gap_page, gap_section, gap_summary
from ._models import Models, fit_heads, fit_models
from ._render import Page, num, pct, write_atomic
from ._sections import (
    detection_section,
    k_sweep_section,
    layers_section,
    thesis_section,
    transfer_section,
)
from ._thesis import (
    THESIS_BACKEND_NUMBERS,
    backends_section,
    nets_section,
    ood_section,
)

__all__ = ["run_report"]


class _Steps:
    """Prints each step with its wall time."""

    def __init__(self, verbose: int = 1) -> None:
        self.verbose = verbose
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    def __call__(self, name: str) -> _Steps:
        self.name = name
        if self.verbose > 0:
            elapsed = time.perf_counter() - self.start
            print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
        self._t = time.perf_counter()
        return self

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.times[self.name] = round(time.perf_counter() - self._t, 2)

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def _machine() -> dict[str, str]:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": str(os.cpu_count()),
        "skdknn": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def run_report(config: ReportConfig) -> dict[str, Any]:
    """Run the report's sections (``config.sections``) and write it to ``config.out``.

    Returns the dictionary also written to ``results.json``.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(config.verbose)
    sections = set(config.sections)
    data = load_data(config)
    ood = None
    if config.ood_dir is not None:  # read before any training: errors come first
        if "ood" not in sections:
            raise ValueError(
                "--ood-dir gives the inputs of no class of the ood section, which "
                f"this run leaves out (sections: {','.join(config.sections)}); add "
                "ood to --sections."
            )
        ood = load_ood_dir(config.ood_dir, data.X_train.shape[1:])
    print(data.describe(config.calibration_size))
    with steps(f"{NET_TITLES[config.net]} ({config.max_epochs} epochs) and DkNN"):
        models = fit_models(config, data, out)
    if models.loaded and config.verbose > 0:
        print(f"  loaded from {out / 'model'} (same settings)")
    with steps("DkNNB heads (AdvKNN, with and without consistency learning)"):
        heads = fit_heads(config, models, data, out)
    results: dict[str, Any] = {
        "skdknn_version": __version__,
        "machine": _machine(),
        "settings": config.as_dict(),
        "data": {
            "name": data.name,
            "n_train": len(data.y_train),
            "n_indexed": len(data.y_train) - config.calibration_size,
            "n_calibration": config.calibration_size,
            "n_test": len(data.y_test),
        },
        "model_loaded_from_cache": models.loaded,
        "batchnorm_recalibrated": models.batchnorm_recalibrated,
        "notes": models.page_notes,
        "layers": list(models.dknn.layers_),
        "head_agreement": {n: float(a.agreement_) for n, a in heads.items()},
    }
    writer = _figures.FigureWriter(out)
    with steps("clean accuracy and credibility"):
        clean = Outputs.of(models, data.X_test)
        results["clean"] = clean_table(
            models,
            heads,
            data,
            clean,
            str(config.attacked_layer),
            NET_TITLES[config.net],
        )
        _figures.reliability(writer, data.y_test, clean)
        _explanation_clean(writer, models, data, clean)
    if "choosing-k" in sections:
        with steps("other k and metrics"):
            results["choosing_k"] = variant_table(
                models, data, config.variants, config.verbose
            )
    sets: dict[str, Any] = {}
    if sections & {"table2", "transfer", "k-sweep", "neighbours"}:
        with steps(f"attacks at eps={config.eps:g} (AdvKNN Table 2)"):
            sets = adversarial_sets(
                [c for c in COLUMNS if c != "clean"],
                models,
                heads,
                data.X_test,
                config,
                eps=config.eps,
                n_iter=config.n_iter,
                cache=out / "adversarial",
                desc="attacks",
            )
            results["attack_seconds"] = {n: round(s, 2) for n, (_, s) in sets.items()}
    if "table2" in sections:
        with steps("attack table"):
            adversarial = {name: Outputs.of(models, X) for name, (X, _) in sets.items()}
            results["attack_table"] = attack_table(data, clean, adversarial, sets)
            _table2_figures(writer, models, data, clean, adversarial, sets)
    if "transfer" in sections:
        with steps("transfer to another network (AdvKNN Table 3)"):
            results["transfer"] = transfer_section(config, data, out, sets)
            _figures.transfer(writer, results["transfer"], COLUMNS)
    if "k-sweep" in sections:
        with steps("attack success against k (AdvKNN Fig. 7)"):
            results["k_sweep"], loaded = k_sweep_section(
                config, models, data, out, sets
            )
            results["k_sweep"]["loaded_from_cache"] = loaded
            _figures.k_sweep(writer, results["k_sweep"])
    if "detection" in sections:
        with steps("credibility of AdvKNN examples (AdvKNN Fig. 5)"):
            results["detection"] = detection_section(config, models, heads, data, out)
            _figures.detection(writer, results["detection"])
    if "layers" in sections:
        with steps("the DkNNB head on each layer, MeanAttack (AdvKNN Fig. 4)"):
            results["layer_ablation"] = layers_section(config, models, heads, data, out)
            _figures.layers(writer, results["layer_ablation"])
    if "advknn-gap" in sections:
        with steps("the AdvKNN gap where FGSM leaves room"):
            results["advknn_gap"] = gap_section(config, models, heads, data, out)
            gap_figure(writer, results["advknn_gap"])
    if "thesis-fgsm" in sections:
        with steps("FGSM at the thesis's eps grid (Topolewski Figs. 4.3-4.5)"):
            results["thesis_fgsm"] = thesis_section(config, models, heads, data, out)
            _figures.thesis(writer, results["thesis_fgsm"])
    if "backends" in sections:
        with steps("the DkNN with each neighbour backend (Topolewski Fig. 4.7)"):
            backends, loaded = backends_section(config, models, heads, data, out)
            results["backends"] = {
                **backends,
                "loaded_from_cache": loaded,
                "thesis": THESIS_BACKEND_NUMBERS,
            }
            thesis_pages.backends_figures(writer, results["backends"])
    if "bn-cnn" in sections:
        with steps("the BatchNorm CNN against the paper CNN (Topolewski 4.8-4.10)"):
            results["nets"] = nets_section(config, models, heads, data, out)
            thesis_pages.nets_figures(writer, results["nets"])
    if "ood" in sections:
        with steps("out-of-distribution inputs"):
            results["out_of_distribution"], ood_scores, results["ood_source"] = (
                ood_section(config, models, data, clean, out, ood)
            )
            _figures.ood(writer, ood_scores, data.items)
            results["ood_reliability_set"] = _figures.ood_reliability(
                writer, ood_scores, results["out_of_distribution"]
            )
    if "curves" in sections:
        with steps(f"accuracy vs eps on {config.curve_size} images"):
            curves = eps_curves(models, heads, data, config, out / "adversarial")
            results["curves"] = {
                "eps": curves.eps,
                "bim_iterations": curves.n_iter,
                "accuracy": curves.accuracy,
                "mean_l2": curves.distortion,
            }
            _figures.eps_curves(writer, curves)
    if "neighbours" in sections:
        with steps("neighbours per layer"):
            agreement = neighbor_agreement(
                models,
                data,
                {
                    "clean": data.X_test,
                    "FGSM origin": sets["fgsm_origin"][0],
                    "BIM DkNNB+CL": sets["bim_dknnb_cl"][0],
                },
            )
            results["neighbor_label_agreement"] = agreement
            _figures.neighbor_agreement(writer, agreement, list(models.dknn.layers_))
    results["warnings"] = network_warnings(models, results)
    results["figures"] = writer.figures
    results["step_seconds"] = steps.times
    results["wall_time_s"] = steps.total
    page = build_page(config, data, results)
    md, html_path = page.write(out)
    write_atomic(
        out / "results.json",
        json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n",
    )
    print(f"\n{page_summary(results)}")
    for warning in results["warnings"]:
        print(warning)
    print(
        f"Report written to {html_path} and {md}, figures in {out / 'figures'}, "
        f"every number in {out / 'results.json'} ({results['wall_time_s']} s)"
    )
    return results


def _explanation_clean(
    writer: _figures.FigureWriter, models: Any, data: Data, clean: Outputs
) -> None:
    wrong = np.flatnonzero(clean.dknn_pred != data.y_test)
    i = int(wrong[0]) if wrong.size else 0
    _figures.explanation(
        writer,
        models.dknn,
        data.X_test[i],
        data.X_train,
        data.y_test[i],
        "explanation_clean",
        f"Test image {i} (label {data.label(data.y_test[i])}, DkNN prediction "
        f"{data.label(clean.dknn_pred[i])}) and its nearest training images at "
        "every layer.",
    )


def _table2_figures(
    writer: _figures.FigureWriter,
    models: Any,
    data: Data,
    clean: Outputs,
    adversarial: dict[str, Outputs],
    sets: dict[str, Any],
) -> None:
    _figures.credibility_histograms(
        writer,
        {
            "clean": clean.dknn_cred,
            **{COLUMNS[n]: adversarial[n].dknn_cred for n in adversarial},
        },
    )
    fooled = np.flatnonzero(
        (adversarial["bim_dknnb_cl"].dknn_pred != data.y_test)
        & (clean.dknn_pred == data.y_test)
    )
    j = int(fooled[0]) if fooled.size else 0
    _figures.explanation(
        writer,
        models.dknn,
        sets["bim_dknnb_cl"][0][j],
        data.X_train,
        data.y_test[j],
        "explanation_adversarial",
        f"AdvKNN BIM (DkNNB+CL) version of test image {j} (label "
        f"{data.label(data.y_test[j])}, DkNN prediction "
        f"{data.label(adversarial['bim_dknnb_cl'].dknn_pred[j])}): the neighbours "
        "of the deep layers change class first.",
    )


# -- the page ------------------------------------------------------------------------
def build_page(config: ReportConfig, data: Data, results: dict[str, Any]) -> Page:
    page = Page("skdknn report: Deep k-Nearest Neighbours and AdvKNN on " + data.name)
    small = small_settings(config)
    page.paragraph(
        "How to read these numbers: the documentation's reproduction page "
        "(docs/reproduction.md) says which agree with the papers' at the default "
        "settings and which do not, and why."
        + (
            " This run's settings are not the defaults (e.g. --quick; changed: "
            f"{', '.join(small)}): its numbers are not comparable with the "
            "papers' (small settings)."
            if small
            else ""
        )
    )
    d = results["data"]
    page.paragraph(
        f"{d['n_train']:,} training images ({d['n_indexed']:,} indexed, "
        f"{d['n_calibration']:,} calibration), {d['n_test']:,} held-out test images. "
        f"The {NET_TITLES[config.net]}, {config.max_epochs} epochs; DkNN on "
        f"`{', '.join(results['layers'])}`, k = {config.n_neighbors}, "
        f"{config.metric} distance, neighbour search `{config.backend}`. Attacks "
        f"at eps = {config.eps:g} (BIM: step "
        f"{config.step:g}, {config.n_iter} iterations), DkNNB lambda = "
        f"{config.lam:g} on `{config.attacked_layer}`. Machine: "
        f"{results['machine']['platform']}, {results['machine']['cores']} cores, "
        f"{results['machine']['date']}; skdknn {__version__}. Sections: "
        f"{', '.join(config.sections)}."
    )
    if paper_dataset(data) != "MNIST":
        page.paragraph(
            f"On {data.name} the papers publish only clean accuracy (AdvKNN Table "
            "1, beside the clean table); the published numbers beside the other "
            "sections are MNIST's, shown for scale, not for agreement."
        )
    placed: set[str] = set()
    for section in config.sections:
        render = _SECTION_PAGES.get(section)
        if render is not None:
            render(page, config, data, results)
        beside = _FIGURES.get(section, ())
        placed |= set(beside)
        for figure in results["figures"]:
            if figure["name"] in beside:
                page.figure(figure["path"], figure["caption"])
    rest = [f for f in results["figures"] if f["name"] not in placed]
    if rest:
        page.heading("Figures")
    for figure in rest:
        page.figure(figure["path"], figure["caption"])
    return page


def _page_clean(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    page.heading("Accuracy on clean test images")
    page.table(
        ["model", "accuracy %", "paper %", "mean credibility"],
        [
            [
                row["model"],
                pct(row["accuracy"]),
                pct(row.get("paper_accuracy")),
                num(row["mean_credibility"]),
            ]
            for row in results["clean"]
        ],
    )
    page.paragraph(
        f"Paper: AdvKNN Table 1 (Li et al., 2019; 60,000 {paper_dataset(data)} "
        "training images). DkNNB rows: the deep kNN block trained to imitate "
        f"the kNN of `{config.attacked_layer}`, used as a classifier."
    )
    for note in results.get("notes", []):
        page.paragraph(note)


def _page_choosing_k(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    page.heading("Choosing k and the metric")
    page.table(
        ["k", "metric", "DkNN accuracy %", "mean credibility"],
        [
            [
                str(row["n_neighbors"]),
                row["metric"],
                pct(row["accuracy"]),
                num(row["mean_credibility"]),
            ]
            for row in results["choosing_k"]
        ],
    )
    page.paragraph(
        "The same frozen network with other neighbour settings. The paper's "
        "k = 75 is a large share of each class when the index holds thousands of "
        "images rather than 60,000; choose k by GridSearchCV on training data."
    )


def _page_table2(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    page.heading(f"Attacks at eps = {config.eps:g} (AdvKNN Table 2)")
    header = ["model", *COLUMNS.values()]
    rows = []
    for model, cells in results["attack_table"].items():
        title = {"knn": f"kNN ({config.attacked_layer})", "dknn": "DkNN"}.get(
            model, "CNN (reference)"
        )
        rows.append([title, *(pct(cells[c]["accuracy"]) for c in COLUMNS)])
        if "paper_accuracy" in cells["clean"]:
            rows.append(
                [
                    f"{title}, paper",
                    *(pct(cells[c]["paper_accuracy"]) for c in COLUMNS),
                ]
            )
    page.table(header, rows)
    page.paragraph(
        "Accuracy in %, lower = stronger attack. origin: through the CNN; DkNNB: "
        "through the deep kNN block trained with cross-entropy only; +CL: with "
        "consistency learning. Mean credibility of the DkNN per column: "
        + ", ".join(
            f"{title} {num(results['attack_table']['dknn'][c]['mean_credibility'])}"
            for c, title in COLUMNS.items()
        )
        + "."
    )


def _page_ood(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    page.heading("Out-of-distribution inputs")
    above = THESIS_OOD["credibility_above"]
    confident = THESIS_OOD["softmax_at_least"]
    rows = [
        [
            row["set"],
            str(row["n"]),
            num(row["mean_credibility"]),
            num(row["mean_softmax_confidence"]),
            num(row["auroc_credibility"]),
            num(row["auroc_softmax"]),
            pct(row["share_credibility_above"]),
            pct(row["share_softmax_at_least"]),
        ]
        for row in results["out_of_distribution"]
    ]
    rows.append(
        [
            "Fashion-MNIST shown to an MNIST model (thesis, Fig. 4.6)",
            "-",
            "-",
            "-",
            "-",
            "-",
            pct(THESIS_OOD["share_above"]),
            "most",
        ]
    )
    page.table(
        [
            "inputs",
            "images",
            "mean credibility",
            "mean softmax confidence",
            "AUROC credibility",
            "AUROC softmax",
            f"credibility > {above:g} %",
            f"softmax >= {confident:g} %",
        ],
        rows,
    )
    source = results["ood_source"]
    if source["file"] is not None:
        page.paragraph(
            f"Inputs of no class: {results['out_of_distribution'][-1]['n']:,} of the "
            f"{source['images_in_file']:,} images of `{source['file']}` (`--ood-dir "
            f"{source['ood_dir']}`; drawn with seed {config.random_state}), instead "
            "of the built-in noise, shuffled images and photograph patches."
        )
    page.paragraph(
        f"AUROC of telling test {data.items} from inputs of no class by each score "
        f"(1 = perfect, 0.5 = chance). The test {data.items} are the clean table's "
        "test images, so their mean credibility is the DkNN's there. The last two "
        "columns are the thesis's measures (Topolewski, Fig. 4.6: only 5 % of the "
        "Fashion-MNIST images got a credibility above 0.6 from its MNIST DkNN, "
        "while the softmax gave most of them 0.9-1.0). The reliability diagrams "
        f"below are drawn on the {results['ood_reliability_set']}."
    )


def _page_curves(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    d = results["data"]
    page.heading("Accuracy against eps")
    eps = results["curves"]["eps"]
    curve_rows = []
    for attack, per_model in results["curves"]["accuracy"].items():
        for model, values in per_model.items():
            curve_rows.append([f"{attack}: {model}", *(pct(v) for v in values)])
    page.table(["attack: model", *(f"eps={e:g}" for e in eps)], curve_rows)
    bim_steps = next(
        steps
        for attack, steps in results["curves"]["bim_iterations"].items()
        if "BIM" in attack
    )
    page.paragraph(
        f"On the first {min(config.curve_size, d['n_test'])} test images; eps = 0 "
        "is the clean accuracy. BIM with min(eps / step + 4, 1.25 eps / step) "
        f"iterations per eps (Kurakin et al.), at most {config.n_iter}: "
        + ", ".join(str(n) for n in bim_steps[1:])
        + " iterations at eps "
        + ", ".join(f"{e:g}" for e in eps[1:])
        + "."
    )


_SECTION_PAGES = {
    "clean": _page_clean,
    "choosing-k": _page_choosing_k,
    "table2": _page_table2,
    "transfer": section_pages.transfer,
    "k-sweep": section_pages.k_sweep,
    "detection": section_pages.detection,
    "layers": section_pages.layers,
    "advknn-gap": gap_page,
    "thesis-fgsm": section_pages.thesis,
    "backends": thesis_pages.backends_page,
    "bn-cnn": thesis_pages.nets_page,
    "ood": _page_ood,
    "curves": _page_curves,
}


#: The figures drawn beside each section's table (the others go under "Figures").
_FIGURES = {**section_pages.FIGURES, **thesis_pages.FIGURES}


#: Settings whose values change how well the networks, heads and attacks are
#: trained (--quick lowers them all): the page says that a run with others than
#: the defaults is not comparable with the papers.
TRAINING_SETTINGS = (
    "dataset",
    "train_size",
    "test_size",
    "max_epochs",
    "n_neighbors",
    "calibration_size",
    "n_iter",
    "step",
    "head_epochs",
    "transfer_epochs",
    "cw_steps",
)


def small_settings(config: ReportConfig) -> list[str]:
    """The :data:`TRAINING_SETTINGS` of ``config`` that differ from the defaults
    (as results.json's "settings" name them)."""
    default = ReportConfig()
    return [
        name
        for name in TRAINING_SETTINGS
        if getattr(config, name) != getattr(default, name)
    ]


def network_warnings(models: Models, results: dict[str, Any]) -> list[str]:
    """The :func:`~._checks.undertrained_warning` of every network the report
    trained: its own, the bn-cnn section's other one, the transfer target and the
    gap section's smaller models."""
    found = list(models.warnings)
    for part in results.get("nets", {}).get("nets", {}).values():
        found += [w for w in part.get("warnings", []) if w not in found]
    found += results.get("transfer", {}).get("warnings", [])
    for row in results.get("advknn_gap", {}).get("train_sizes", []):
        found += row.get("warnings", [])
    return found


def page_summary(results: dict[str, Any]) -> str:
    """The clean and attack tables as plain text, for the terminal."""
    lines = [f"{'model':<34} {'accuracy':>9} {'mean credibility':>17}"]
    for row in results["clean"]:
        cred = row["mean_credibility"]
        cred_text = f"{cred:17.3f}" if cred is not None else f"{'-':>17}"
        lines.append(f"{row['model']:<34} {100 * row['accuracy']:8.1f}% {cred_text}")
    if "attack_table" in results:
        lines.append("")
        lines.append(
            f"{'accuracy % under attack':<24}"
            + "".join(f"{title:>15}" for title in COLUMNS.values())
        )
        for model, cells in results["attack_table"].items():
            lines.append(
                f"{MODEL_TITLES[model]:<24}"
                + "".join(f"{pct(cells[c]['accuracy']):>15}" for c in COLUMNS)
            )
    lines += section_pages.summary(results)
    lines += thesis_pages.summary(results)
    lines += gap_summary(results)
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Plain JSON: arrays as lists, NaN (e.g. no successful example) as null."""
    if isinstance(value, dict):
        # "_" keys hold arrays for the figures (saved elsewhere, or recomputable)
        return {
            str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")
        }
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
