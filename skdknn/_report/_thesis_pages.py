"""The page and the figures of the thesis's backend and network sections
(Topolewski Figs. 4.7-4.10)."""

from __future__ import annotations

from typing import Any

from .. import plotting
from ._config import NET_TITLES, ReportConfig
from ._data import Data
from ._figures import FigureWriter
from ._render import Page, num, pct

__all__ = [
    "FIGURES",
    "MAXPOOL_CURVE",
    "backends_figures",
    "backends_page",
    "nets_figures",
    "nets_page",
    "summary",
]

#: The legend of the BatchNorm CNN's DkNN on its MaxPool outputs (Fig. 4.10).
MAXPOOL_CURVE = "MaxPool layers"

#: The figures drawn beside each section's table.
FIGURES = {
    "backends": ("thesis_backends",),
    "bn-cnn": ("thesis_nets_accuracy", "thesis_nets_reliability"),
}


def _thesis_cells(
    eps: list[float], at: float, clean: float | None, value: float | None
) -> list[str]:
    """A row of the thesis's numbers under the columns ``eps``: its clean number
    and, under ``at``, its (approximate) one; "-" elsewhere."""
    cells = ["-"] * len(eps)
    cells[0] = pct(clean)
    if at in eps:
        cells[eps.index(at)] = f"~{pct(value)}"
    return cells


# -- Fig. 4.7: the backends ------------------------------------------------------------
def backends_page(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    section = results["backends"]
    thesis = section["thesis"]
    page.heading("The DkNN with each neighbour backend (Topolewski Fig. 4.7)")
    eps = section["eps"]
    rows = [
        ["CNN (reference)", "-", "-", "-", *(pct(a) for a in section["cnn_accuracy"])]
    ]
    for name, row in section["backends"].items():
        rows.append(
            [
                name,
                f"{row['fit_seconds']:.1f}",
                f"{row['query_seconds']:.2f}",
                " / ".join(f"{r:.3f}" for r in row["recall"]),
                *(pct(a) for a in row["accuracy"]),
            ]
        )
    for name, title in (("lsh", "FALCONN LSH"), ("pynndescent", "PyNNDescent")):
        ref = thesis[name]
        cells = _thesis_cells(eps, thesis["eps"], ref["clean"], ref["at_eps"])
        rows.append([f"{title}, thesis", "-", "-", "-", *cells])
    page.table(
        [
            "backend",
            "fit s",
            "query s",
            "recall@k per layer",
            *("clean %" if e == 0 else f"eps={e:g} %" for e in eps),
        ],
        rows,
    )
    page.paragraph(
        f"DkNN accuracy on the first {section['n']} test images, clean and under "
        "FGSM through the CNN (the thesis grid's sets), with each neighbour "
        "backend on the report's frozen network, index rows and calibration "
        f"split (k = {config.n_neighbors}, seed {config.random_state}; LSH with 50 "
        "tables like the thesis's FALCONN). fit: the DkNN's fit (forward passes "
        "of the training images, the index, the calibration scores); query: "
        "the neighbours of the clean images at every layer (forward pass "
        "included); recall@k: the share of the exact k nearest neighbours each "
        f"backend finds, per layer (`{'`, `'.join(section['layers'])}`). Times "
        "are of one run on the report's machine, under whatever load it had. "
        "Thesis: 60,000 indexed MNIST images; its PyNNDescent figure for clean "
        "images (99.88 %) is above its own CNN's 99.1 %, as written in its text."
    )


def backends_figures(writer: FigureWriter, section: dict[str, Any]) -> None:
    curves = {"CNN": section["cnn_accuracy"]}
    curves.update({name: row["accuracy"] for name, row in section["backends"].items()})
    writer.save(
        "thesis_backends",
        "DkNN accuracy against the FGSM budget with each neighbour backend "
        "(Topolewski Fig. 4.7), and the CNN's (grey).",
        lambda: plotting.plot_accuracy_vs_eps(
            section["eps"], {"FGSM (the thesis's grid)": curves}
        ),
    )


# -- Figs. 4.8-4.10: the BatchNorm CNN against the paper CNN --------------------------
def nets_page(
    page: Page, config: ReportConfig, data: Data, results: dict[str, Any]
) -> None:
    section = results["nets"]
    thesis = section["thesis"]
    page.heading("The BatchNorm CNN against the paper CNN (Topolewski Figs. 4.8-4.10)")
    nets = section["nets"]
    eps = [row["eps"] for row in next(iter(nets.values()))["rows"]]
    rows = []
    for net, part in nets.items():
        title = NET_TITLES[net]
        for model, key in (("CNN", "cnn_accuracy"), ("DkNN", "dknn_accuracy")):
            rows.append([f"{title}: {model}", *(pct(row[key]) for row in part["rows"])])
        rows.append(
            [
                f"{title}: DkNN mean credibility",
                *(num(row["mean_credibility"]) for row in part["rows"]),
            ]
        )
        maxpool = part.get("maxpool_dknn")
        if maxpool is not None:
            rows.append(
                [
                    f"{title}: DkNN on MaxPool",
                    *(pct(row["dknn_accuracy"]) for row in maxpool["rows"]),
                ]
            )
            rows.append(
                [
                    f"{title}: DkNN on MaxPool, mean credibility",
                    *(num(row["mean_credibility"]) for row in maxpool["rows"]),
                ]
            )
    for net in nets:
        ref = thesis.get(net)
        if ref is None:
            continue
        for model, key in (("CNN", "cnn"), ("DkNN", "dknn")):
            cells = _thesis_cells(eps, thesis["eps"], ref[f"{key}_clean"], ref[key])
            rows.append([f"{NET_TITLES[net]}: {model}, thesis", *cells])
    page.table(
        ["net: model", *("clean" if e == 0 else f"eps={e:g}" for e in eps)], rows
    )
    layers = "; ".join(
        f"{NET_TITLES[net]}: `{', '.join(part['layers'])}`"
        + (
            f" (on MaxPool: `{', '.join(part['maxpool_dknn']['layers'])}`)"
            if "maxpool_dknn" in part
            else ""
        )
        for net, part in nets.items()
    )
    page.paragraph(
        f"Accuracy in % on the first {section['n']} test images, clean and under "
        "FGSM through each network's own CNN at the thesis's budgets. Both "
        f"networks trained for {config.max_epochs} epochs on the same images, "
        f"with the same k, calibration and neighbour search (`{config.backend}`); "
        f"DkNN layers: {layers}. The DkNN on MaxPool is the BatchNorm CNN's DkNN "
        "(same trained network, index rows and calibration split) refitted on "
        "its MaxPool outputs, each just before a BatchNorm layer (Fig. 4.10). "
        "Thesis: 60,000 MNIST images, 8 epochs, its BatchNorm DkNN with "
        "PyNNDescent; its BatchNorm CNN's accuracy at 0.15 is read as the paper "
        "CNN's 13 % plus the 30 points of its text; its MaxPool curve has no "
        'number: the two curves are "almost overlapping", the BatchNorm one '
        "slightly above."
    )
    for part in nets.values():
        for note in part.get("notes", []):
            page.paragraph(note)


def nets_figures(writer: FigureWriter, section: dict[str, Any]) -> None:
    nets = section["nets"]
    eps = [row["eps"] for row in next(iter(nets.values()))["rows"]]
    accuracy: dict[str, dict[str, list[float]]] = {}
    for net, part in nets.items():
        curves = accuracy[NET_TITLES[net]] = {
            "CNN": [row["cnn_accuracy"] for row in part["rows"]],
            "DkNN": [row["dknn_accuracy"] for row in part["rows"]],
        }
        if "maxpool_dknn" in part:
            # a name without "DkNN": the palette gives it its own colour
            curves[MAXPOOL_CURVE] = [
                row["dknn_accuracy"] for row in part["maxpool_dknn"]["rows"]
            ]
    writer.save(
        "thesis_nets_accuracy",
        "Accuracy of each network's CNN (grey) and DkNN (blue) against the FGSM "
        "budget (Topolewski Figs. 4.8 and 4.10); for the BatchNorm CNN also its "
        f'DkNN on the MaxPool outputs (cyan, "{MAXPOOL_CURVE}").',
        lambda: plotting.plot_accuracy_vs_eps(eps, accuracy),
    )
    at = section["eps_at_figures"]

    def draw() -> Any:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(
            len(nets), 4, figsize=(18, 3.8 * len(nets)), layout="constrained"
        )
        for row_axes, (net, part) in zip(axes, nets.items(), strict=True):
            figures = part["_figures"]
            for i, name in enumerate(("clean", "adversarial")):
                outputs = figures[name]
                shown = "clean" if name == "clean" else f"FGSM eps {at:g}"
                for j, (pred, scores, score) in enumerate(
                    (
                        (outputs.dknn_pred, outputs.dknn_cred, "DkNN credibility"),
                        (outputs.cnn_pred, outputs.softmax, "softmax confidence"),
                    )
                ):
                    # the score alone names the bars' colour (a net's title may
                    # hold "DkNN"); the axes' title says which net and inputs
                    ax = row_axes[2 * i + j]
                    plotting.ReliabilityDisplay.from_predictions(
                        figures["y"], pred, scores, name=score, ax=ax
                    )
                    ax.set_title(f"{NET_TITLES[net]}, {shown}", fontsize="medium")
        return fig

    writer.save(
        "thesis_nets_reliability",
        "Reliability diagrams of each network (one row each; Topolewski Fig. 4.9 "
        f"for the BatchNorm CNN): clean and FGSM at eps = {at:g}, DkNN credibility "
        "and softmax confidence; the dotted line counts the images per bin.",
        draw,
    )


def summary(results: dict[str, Any]) -> list[str]:
    """Terminal lines of the sections above that ran."""
    lines: list[str] = []
    if "backends" in results:
        section = results["backends"]
        at = section["eps"][-1]
        cells = [
            f"{name} {pct(row['accuracy'][-1])} (lowest recall "
            f"{min(row['recall']):.3f}, fit {row['fit_seconds']:.1f} s)"
            for name, row in section["backends"].items()
        ]
        lines += ["", f"DkNN accuracy % at FGSM eps {at:g} per backend: "]
        lines[-1] += ", ".join(cells)
    if "nets" in results:
        lines += [""]
        for net, part in results["nets"]["nets"].items():
            last = part["rows"][-1]
            lines.append(
                f"{NET_TITLES[net]}: CNN {pct(part['rows'][0]['cnn_accuracy'])} -> "
                f"{pct(last['cnn_accuracy'])}, DkNN "
                f"{pct(part['rows'][0]['dknn_accuracy'])} -> "
                f"{pct(last['dknn_accuracy'])} % (clean -> FGSM eps {last['eps']:g})"
            )
            if "maxpool_dknn" in part:
                pool = [row["dknn_accuracy"] for row in part["maxpool_dknn"]["rows"]]
                lines.append(
                    f"{NET_TITLES[net]}: DkNN on MaxPool {pct(pool[0])} -> "
                    f"{pct(pool[-1])} %"
                )
    return lines
