"""The page of the sections of AdvKNN's Table 3 and Figs. 4, 5 and 7."""

from __future__ import annotations

from typing import Any

from ._config import NET_TITLES, ReportConfig
from ._data import Data
from ._experiments import COLUMNS
from ._render import Page, num, pct

__all__ = [
    "FIGURES",
    "detection",
    "k_sweep",
    "layers",
    "summary",
    "thesis",
    "transfer",
]

#: The figures drawn beside each section's table (the others go under "Figures").
FIGURES = {
    "transfer": ("transfer",),
    "k-sweep": ("attack_success_vs_k",),
    "detection": ("detection_credibility",),
    "layers": ("layers_ablation",),
    "advknn-gap": ("advknn_gap_train_sizes",),
    "ood": ("out_of_distribution", "ood_reliability"),
    "thesis-fgsm": (
        "thesis_accuracy_vs_eps",
        "thesis_reliability_adversarial",
        "thesis_correct_neighbours",
    ),
}

_MODELS = {"cnn": "DNN", "knn": "kNN", "dknn": "DkNN"}


def transfer(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    section = results["transfer"]
    target = NET_TITLES[section["target_net"]]
    page.heading(f"Transfer to a {target} (AdvKNN Table 3)")
    header = ["inputs"]
    for title in _MODELS.values():
        header += [f"{title} %", f"{title}, paper %"]
    header.append("DkNN mean credibility")
    rows = []
    for name, row in section["rows"].items():
        paper = row.get("paper", {})
        cells = [COLUMNS[name]]
        for model in _MODELS:
            cells += [pct(row[model]), pct(paper.get(model))]
        cells.append(num(row["mean_credibility"]))
        rows.append(cells)
    page.table(header, rows)
    page.paragraph(
        f"A {target} trained for {section['target_epochs']} epochs on the same "
        "clean training images, its DkNN (same k, calibration and neighbour "
        f"search) and the kNN of its `{section['target_layer']}`, evaluated on the "
        "adversarial sets of the attack table, which were made against the "
        f"report's {NET_TITLES[config.net]}. Higher accuracy = less transfer. "
        "Paper: AdvKNN Table 3 (a LeNet-5 trained on 60,000 MNIST images)."
    )
    for note in section.get("notes", []):
        page.paragraph(note)


def k_sweep(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    section = results["k_sweep"]
    page.heading("Attack success against k (AdvKNN Fig. 7)")
    rows = []
    for attack, per_model in section["success_rate"].items():
        for model, values in per_model.items():
            rows.append([f"{attack}: {model}", *(pct(v) for v in values)])
    page.table(["attack: model", *(f"k={k}" for k in section["k"])], rows)
    page.paragraph(
        f"Attack success rate in % on the first {section['n']} test images (the "
        f"prediction changed from the clean one) of the kNN of "
        f"`{config.attacked_layer}` and of the DkNN refitted with each "
        "k on the same frozen network, index rows and calibration split. The "
        f"adversarial sets are the attack table's (eps = {config.eps:g}), made "
        f"against the k = {config.n_neighbors} models and heads; only the "
        "neighbour search changes with k. AdvKNN Fig. 7 (a plot, no numbers "
        "published) shows AdvKNN above FGSM and BIM at every k."
    )


def detection(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    section = results["detection"]
    threshold = section["threshold"]
    paper = section["paper"]
    page.heading("Detecting AdvKNN examples by credibility (AdvKNN Fig. 5)")
    rows = [
        [
            "clean",
            "-",
            "0.000",
            pct(section["clean_accuracy"]),
            num(section["clean_mean_credibility"]),
            pct(section["false_alarm_rate"]),
            "-",
        ]
    ]
    for row in section["rows"]:
        rows.append(
            [
                f"AdvKNN BIM, eps {row['eps']:g} ({row['bim_iterations']} steps)",
                pct(row["success_rate"]),
                num(row["mean_l2"]),
                pct(row["dknn_accuracy"]),
                num(row["mean_credibility"]),
                pct(row["detection_rate"]),
                pct(row["detection_rate_successful"]),
            ]
        )
    rows.append(
        [
            "paper: AdvKNN examples (clean inputs flagged)",
            "-",
            num(paper["mean_l2"]),
            "-",
            "-",
            f"{pct(paper['detection_rate'])} ({pct(paper['false_alarm'])})",
            "-",
        ]
    )
    page.table(
        [
            "inputs",
            "DkNN success %",
            "mean L2",
            "DkNN accuracy %",
            "mean credibility",
            f"flagged % (credibility < {threshold:g})",
            "flagged % of the successful",
        ],
        rows,
    )
    page.paragraph(
        f"On the first {section['n']} test images: the DkNN's credibility of "
        "clean inputs and of AdvKNN BIM (DkNNB+CL) examples at several budgets; "
        f"an input is flagged when its credibility is below {threshold:g}. The "
        "clean row's flagged share is the false-alarm rate. Mean L2: over all "
        "examples of the set. The credibilities are in "
        f"`{section['credibility_file']}`."
    )


def layers(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    section = results["layer_ablation"]
    curves = section["curves"]
    page.heading("The DkNNB head on each layer (AdvKNN Fig. 4)")
    header = ["head on: model", *(f"eps={e:g}" for e in section["eps"])]
    rows = []
    for layer in section["layers"]:
        for model in ("kNN", "DkNN"):
            cell = curves[model][layer]
            rows.append(
                [
                    f"{layer}: {model}",
                    *(
                        f"{pct(a)} ({num(d, 2)})"
                        for a, d in zip(cell["accuracy"], cell["mean_l2"], strict=True)
                    ),
                ]
            )
    page.table(header, rows)
    page.paragraph(
        "Accuracy in % (mean L2 distortion of the successful examples) of the "
        f"kNN of `{config.attacked_layer}` and of the DkNN under AdvKNN BIM "
        "through a DkNNB+CL head trained on each layer in turn, on the first "
        f"{min(config.curve_size, len(data.y_test))} test images. Head agreement "
        "with the layer's kNN on held-out training images: "
        + ", ".join(f"{k} {v:.3f}" for k, v in section["head_agreement"].items())
        + "."
    )
    best = min(
        (
            (a, d, c, layer, e)
            for layer in section["layers"]
            for a, d, c, e in zip(
                curves["DkNN"][layer]["accuracy"],
                curves["DkNN"][layer]["mean_l2"],
                curves["DkNN"][layer]["mean_credibility"],
                section["eps"],
                strict=True,
            )
        ),
        key=lambda t: t[0],
    )
    mean = section["mean_attack"]
    rows = [
        [
            f"AdvKNN BIM, ours (head on {best[3]}, eps {best[4]:g})",
            pct(best[0]),
            num(best[1]),
            num(best[2]),
        ],
        [
            "MeanAttack (Sitawarin & Wagner), ours",
            pct(mean["dknn_accuracy"]),
            num(mean["mean_l2_successful"]),
            num(mean["mean_credibility"]),
        ],
    ]
    for name, row in section["paper"].items():
        rows.append(
            [
                name,
                pct(row.get("dknn_accuracy")),
                num(row.get("mean_l2")),
                num(row.get("mean_credibility")),
            ]
        )
    page.table(["attack", "DkNN accuracy %", "mean L2", "mean credibility"], rows)
    page.paragraph(
        "The strongest AdvKNN point above (lowest DkNN accuracy) beside "
        "MeanAttack on the DkNN (the mean L2 of the examples that changed its "
        "prediction), and the paper's comparison: AdvKNN brought the DkNN to "
        "5.71 % at mean L2 1.4909 against 17.44 % at 3.476 for Sitawarin & "
        "Wagner's attack, whose examples kept a mean credibility of 0.1037 "
        "against 0.4608 (at L2 3.005) for AdvKNN's."
    )


def thesis(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    section = results["thesis_fgsm"]
    ref = section["thesis"]
    page.heading("FGSM at the thesis's budgets (Topolewski Figs. 4.3-4.5)")
    rows = [
        [
            "clean" if row["eps"] == 0 else f"{row['eps']:g}",
            pct(row["cnn_accuracy"]),
            pct(row["knn_accuracy"]),
            pct(row["dknn_accuracy"]),
            num(row["mean_credibility"]),
            num(row["mean_softmax_confidence"]),
        ]
        for row in section["rows"]
    ]
    rows.append(
        [
            f"{ref['eps']:g}, thesis",
            pct(ref["cnn_accuracy"]),
            "-",
            f"~{pct(ref['dknn_accuracy'])}",
            "-",
            num(ref["mean_softmax_confidence"]),
        ]
    )
    page.table(
        [
            "eps",
            "CNN %",
            "kNN %",
            "DkNN %",
            "DkNN mean credibility",
            "mean softmax confidence",
        ],
        rows,
    )
    ours = section["correct_neighbours"]
    theirs = ref["correct_neighbours"]
    k = config.n_neighbors
    top, bottom = neighbour_count_bounds(k)
    page.table(
        ["images with ...", "ours %", "thesis %"],
        [[name, pct(value), pct(theirs.get(name))] for name, value in ours.items()],
    )
    page.paragraph(
        f"FGSM through the CNN on the first {section['n']} test images (sets "
        "shared with the accuracy-against-eps curves). Second table: the share "
        f"of images with at least {top} of their {k} neighbours of the true label "
        f"(14/15 of them: top) or at most {bottom} (1/15: bottom) on the first and "
        "the third DkNN layer "
        f"(`{'`, `'.join(section['layers_shown'])}`), clean and at eps = "
        f"{section['eps_at_figures']:g} (the thesis's Fig. 4.3, read from its "
        "text). Thesis: the paper CNN trained on 60,000 MNIST images, FALCONN "
        "neighbour search."
    )


def neighbour_count_bounds(k: int) -> tuple[int, int]:
    """The fewest of ``k`` neighbours of the true label that the thesis-grid
    section counts as "top" (a share of at least 14/15) and the most it counts as
    "bottom" (at most 1/15), by the same comparisons of shares."""
    top = min(c for c in range(k + 1) if c / k >= 14 / 15)
    bottom = max(c for c in range(k + 1) if c / k <= 1 / 15)
    return top, bottom


def summary(results: dict[str, Any]) -> list[str]:
    """Terminal lines of the sections above that ran."""
    lines: list[str] = []
    if "transfer" in results:
        section = results["transfer"]
        cells = [
            f"{COLUMNS[name]} {pct(row['dknn'])}"
            for name, row in section["rows"].items()
        ]
        lines += ["", f"DkNN accuracy % of the {section['target_net']} (transfer): "]
        lines[-1] += ", ".join(cells)
    if "out_of_distribution" in results:
        lines += [
            "",
            "inputs of no class: mean DkNN credibility / softmax confidence "
            "(AUROC against the test digits)",
        ]
        for row in results["out_of_distribution"]:
            lines.append(
                f"  {row['set'][:40]:<40} {num(row['mean_credibility'])} / "
                f"{num(row['mean_softmax_confidence'])} (AUROC "
                f"{num(row['auroc_credibility'])} / {num(row['auroc_softmax'])})"
            )
    if "k_sweep" in results:
        section = results["k_sweep"]
        lines += ["", "attack success % against k: "]
        lines[-1] += " ".join(f"k={k}" for k in section["k"])
        for attack, per_model in section["success_rate"].items():
            for model, values in per_model.items():
                name = f"{attack}: {model}"
                lines.append(f"  {name:<22}" + " ".join(pct(v) for v in values))
    if "detection" in results:
        section = results["detection"]
        cells = [
            f"eps {r['eps']:g} (L2 {r['mean_l2']:.2f}) {pct(r['detection_rate'])}"
            for r in section["rows"]
        ]
        lines += [
            "",
            f"% flagged at credibility < {section['threshold']:g}: clean "
            f"{pct(section['false_alarm_rate'])}, AdvKNN BIM " + ", ".join(cells),
        ]
    if "layer_ablation" in results:
        mean = results["layer_ablation"]["mean_attack"]
        lines += [
            "",
            f"MeanAttack on the DkNN: accuracy {pct(mean['dknn_accuracy'])} %, "
            f"mean L2 {num(mean['mean_l2_successful'])}",
        ]
    return lines
