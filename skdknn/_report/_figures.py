"""The report's figures, drawn with :mod:`skdknn.plotting` and saved as PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import plotting
from ._config import NET_TITLES

__all__ = ["FigureWriter"]


class FigureWriter:
    """Saves figures under ``out/figures`` and remembers what each shows."""

    def __init__(self, out: Path, dpi: int = 120) -> None:
        self.directory = out / "figures"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dpi = dpi
        self.figures: list[dict[str, str]] = []

    def save(self, name: str, caption: str, draw: Callable[[], Any]) -> Path:
        """Draw a figure (``draw`` returns the figure first), save and close it."""
        import matplotlib.pyplot as plt

        result = draw()
        figure = result[0] if isinstance(result, tuple) else result
        path = self.directory / f"{name}.png"
        figure.savefig(path, dpi=self.dpi, bbox_inches="tight")
        plt.close(figure)
        self.figures.append(
            {"name": name, "path": f"figures/{name}.png", "caption": caption}
        )
        return path


def reliability(writer: FigureWriter, y: NDArray, clean: Any) -> None:
    writer.save(
        "reliability",
        "Reliability diagrams on the clean test images: accuracy per bin of DkNN "
        "credibility (left, blue: the DkNN's colour) and of the CNN's softmax "
        "confidence (right, grey: the CNN's), with the number of images per bin "
        "as a dotted line; the dashed diagonal is accuracy = score.",
        lambda: plotting.plot_reliability_diagrams_from_predictions(
            y, clean.dknn_pred, clean.dknn_cred, clean.cnn_pred, clean.softmax
        ),
    )


def credibility_histograms(
    writer: FigureWriter, scores: dict[str, NDArray[np.float64]]
) -> None:
    writer.save(
        "credibility_histograms",
        "DkNN credibility on adversarial test images (purple, one panel per "
        "attack) over that on the clean ones (green, filled): the attacks that "
        "fool the DkNN leave it with low credibility.",
        lambda: plotting.plot_credibility_histograms(scores, reference="clean"),
    )


def eps_curves(writer: FigureWriter, curves: Any) -> None:
    writer.save(
        "accuracy_vs_eps",
        "Accuracy of the CNN (grey), the attacked-layer kNN (orange) and the DkNN "
        "(blue) against the L-infinity budget eps, per attack; eps = 0 is the "
        "clean accuracy.",
        lambda: plotting.plot_accuracy_vs_eps(curves.eps, curves.accuracy),
    )
    writer.save(
        "accuracy_vs_distortion",
        "The same accuracies against the mean L2 distortion of the adversarial "
        "examples that changed each model's prediction (0 at eps = 0).",
        lambda: plotting.plot_accuracy_vs_distortion(
            curves.distortion, curves.accuracy
        ),
    )
    writer.save(
        "adversarial_examples",
        "AdvKNN BIM (DkNNB+CL) examples per eps (rows; the first row is the "
        "clean images), titled with the DkNN's prediction (red: not the true "
        "label).",
        lambda: plotting.plot_adversarial_grid(
            curves.examples,
            labels=curves.example_labels,
            predictions=curves.example_predictions,
        ),
    )


def neighbor_agreement(
    writer: FigureWriter, agreement: dict[str, list[float]], layers: list[str]
) -> None:
    writer.save(
        "neighbor_agreement",
        "Share of the k nearest training neighbours carrying the true label, per "
        "layer, on clean (green) and adversarial (purple) inputs: attacks change "
        "the neighbours of the deep layers most.",
        lambda: plotting.plot_neighbor_correctness(agreement, layers),
    )


def explanation(
    writer: FigureWriter,
    dknn: Any,
    x: NDArray[np.float32],
    X_train: NDArray[np.float32],
    label: Any,
    name: str,
    caption: str,
) -> None:
    writer.save(
        name,
        caption + " Red: a neighbour whose label is not the true label.",
        lambda: plotting.plot_explanation(dknn, x, X_train, label=label),
    )


def ood(writer: FigureWriter, scores: dict[str, dict[str, Any]], items: str) -> None:
    panels = {kind: sets for kind, sets in scores.items() if not kind.startswith("_")}
    writer.save(
        "out_of_distribution",
        f"DkNN credibility (left) and softmax confidence (right) on the clean test "
        f"{items} (green, filled) and on inputs of no class (browns): a score "
        "that tells them apart puts the browns lower than the green (the table "
        "gives the means and AUROCs).",
        lambda: plotting.plot_ood(panels),
    )


def ood_reliability(
    writer: FigureWriter, scores: dict[str, dict[str, Any]], rows: list[dict[str, Any]]
) -> str:
    """Reliability diagrams on one set of inputs of no class (Topolewski Fig. 4.6):
    the set from another dataset (the images of ``--ood-dir``; else MNIST digits
    for a model of clothes, photograph patches for a digit model). Returns the
    set's title."""
    by_kind = {row.get("kind"): row["set"] for row in rows}
    title = by_kind.get("idx", by_kind.get("digits", by_kind.get("patches")))
    if title is None:  # no such kind: the last set of no class
        title = rows[-1]["set"]
    dknn_pred, cnn_pred = scores["_predictions"][title]
    # no input has a class: every prediction is wrong, the bars are 0 and the
    # dotted count line is the distribution of each score
    no_class = np.full(len(dknn_pred), -1)
    credibility = float(np.mean(scores["DkNN credibility"][title]))
    softmax = float(np.mean(scores["softmax confidence"][title]))
    writer.save(
        "ood_reliability",
        f"Reliability diagrams on {len(dknn_pred)} {title} (inputs of no class; "
        "Topolewski Fig. 4.6 shows Fashion-MNIST to an MNIST model): every "
        "prediction is wrong, so the bars are 0 and the dotted line, the number "
        "of inputs per bin, shows where each score puts them (the lower, the "
        f"better): mean DkNN credibility (left) {credibility:.2f}, mean softmax "
        f"confidence (right) {softmax:.2f}.",
        lambda: plotting.plot_reliability_diagrams_from_predictions(
            no_class,
            dknn_pred,
            scores["DkNN credibility"][title],
            cnn_pred,
            scores["softmax confidence"][title],
        ),
    )
    return str(title)


# -- the sections of AdvKNN's Table 3 and Figs. 4, 5, 7 ----------------------------
def transfer(
    writer: FigureWriter, section: dict[str, Any], titles: dict[str, str]
) -> None:
    """Grouped bars: accuracy of the target's DNN / kNN / DkNN per input set, with
    the paper's Table 3 as hollow bars."""

    def draw() -> Any:
        import matplotlib.pyplot as plt

        rows = section["rows"]
        names = list(rows)
        models = {"cnn": "DNN", "knn": "kNN", "dknn": "DkNN"}
        colors = plotting.PALETTE
        fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
        width = 0.27
        x = np.arange(len(names))
        for i, (key, title) in enumerate(models.items()):
            color = colors["CNN" if key == "cnn" else title]
            ours = [100 * rows[n][key] for n in names]
            ax.bar(x + (i - 1) * width, ours, width, color=color, label=title)
            paper = [
                100 * rows[n]["paper"][key] if "paper" in rows[n] else np.nan
                for n in names
            ]
            ax.bar(
                x + (i - 1) * width,
                paper,
                width,
                fill=False,
                edgecolor=colors["reference"],
                linestyle="--",
                label="paper" if i == 0 else None,
            )
        ax.set_xticks(x, [titles.get(n, n) for n in names])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 102)
        ax.grid(axis="y", alpha=0.3)
        fig.legend(loc="outside lower center", ncol=4, frameon=False)
        return fig

    target = section["target_net"]
    writer.save(
        "transfer",
        f"Transfer (AdvKNN Table 3): accuracy of a {NET_TITLES[target]} trained on "
        "the clean training images (its DNN grey, its kNN orange, its DkNN blue) "
        "on the adversarial sets made against the report's network; dashed outlines: "
        "the paper's numbers.",
        draw,
    )


def k_sweep(writer: FigureWriter, section: dict[str, Any]) -> None:
    def draw() -> Any:
        fig, axes = plotting.plot_accuracy_vs_eps(section["k"], section["success_rate"])
        for ax in axes:
            ax.set_xlabel("k (neighbours per layer)")
        axes[0].set_ylabel("attack success rate")
        return fig

    writer.save(
        "attack_success_vs_k",
        "Attack success rate (prediction changed from the clean one) of the "
        "attacked-layer kNN (orange) and the DkNN (blue) against k, per attack "
        "(AdvKNN Fig. 7); the adversarial sets are those of the attack table.",
        draw,
    )


def detection(writer: FigureWriter, section: dict[str, Any]) -> None:
    credibility = section["_credibility"]
    scores = {"clean": credibility["clean"]}
    for row in section["rows"]:
        scores[f"AdvKNN BIM eps {row['eps']:g} (mean L2 {row['mean_l2']:.2f})"] = (
            credibility[f"eps{row['eps']:g}"]
        )

    def draw() -> Any:
        fig, axes = plotting.plot_credibility_histograms(scores, reference="clean")
        for ax in np.ravel(axes):
            if ax.has_data():
                ax.axvline(section["threshold"], color="black", linestyle=":")
        return fig

    writer.save(
        "detection_credibility",
        "DkNN credibility of AdvKNN BIM (DkNNB+CL) examples at several budgets "
        "(purple) over that of the clean images (green, filled), AdvKNN Fig. 5; "
        f"the dotted line is the threshold {section['threshold']:g}: inputs left "
        "of it are flagged.",
        draw,
    )


def layers(writer: FigureWriter, section: dict[str, Any]) -> None:
    def draw() -> Any:
        curves = section["curves"]
        accuracy = {
            f"{model} accuracy": {
                f"head on {layer}": curves[model][layer]["accuracy"]
                for layer in section["layers"]
            }
            for model in ("kNN", "DkNN")
        }
        distortion = {
            f"{model} accuracy": {
                f"head on {layer}": curves[model][layer]["mean_l2"]
                for layer in section["layers"]
            }
            for model in ("kNN", "DkNN")
        }
        fig, axes = plotting.plot_accuracy_vs_distortion(distortion, accuracy)
        mean = section["mean_attack"]
        if mean["mean_l2_successful"] is not None and np.isfinite(
            mean["mean_l2_successful"]
        ):
            axes[1].scatter(
                [mean["mean_l2_successful"]],
                [mean["dknn_accuracy"]],
                marker="P",
                s=90,
                color=plotting.PALETTE["adversarial"],
                label="MeanAttack",
                zorder=5,
            )
            axes[1].legend(fontsize="small")
        return fig

    writer.save(
        "layers_ablation",
        "AdvKNN BIM through a DkNNB+CL head on each layer (AdvKNN Fig. 4): "
        "accuracy of the attacked-layer kNN (left) and of the DkNN (right) "
        "against the mean L2 distortion of the successful examples, one point "
        "per eps; the purple plus is MeanAttack (Sitawarin & Wagner) on the DkNN.",
        draw,
    )


def thesis(writer: FigureWriter, section: dict[str, Any]) -> None:
    """The thesis's Figs. 4.5, 4.4 and 4.3 at its FGSM grid."""
    rows = section["rows"]
    eps = [row["eps"] for row in rows]
    accuracy = {
        "FGSM (the thesis's grid)": {
            title: [row[f"{key}_accuracy"] for row in rows]
            for key, title in (("cnn", "CNN"), ("knn", "kNN"), ("dknn", "DkNN"))
        }
    }
    writer.save(
        "thesis_accuracy_vs_eps",
        "FGSM through the CNN at the thesis's budgets (Topolewski Fig. 4.5): "
        "accuracy of the CNN (grey), the attacked-layer kNN (orange) and the DkNN "
        "(blue).",
        lambda: plotting.plot_accuracy_vs_eps(eps, accuracy),
    )
    figures = section["_figures"]
    adversarial = figures["adversarial"]["outputs"]
    at = section["eps_at_figures"]
    writer.save(
        "thesis_reliability_adversarial",
        f"Reliability diagrams on the FGSM examples at eps = {at:g} (Topolewski "
        "Fig. 4.4): accuracy per bin of DkNN credibility (left) and of softmax "
        "confidence (right); the dotted line counts the images per bin.",
        lambda: plotting.plot_reliability_diagrams_from_predictions(
            figures["y"],
            adversarial.dknn_pred,
            adversarial.dknn_cred,
            adversarial.cnn_pred,
            adversarial.softmax,
        ),
    )

    def draw_neighbours() -> Any:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(
            1, 2, figsize=(10, 3.6), sharey=True, layout="constrained"
        )
        shown = (section["layers_shown"], section["layer_positions"])
        for ax, layer, column in zip(axes, *shown, strict=True):
            plotting.plot_credibility_histograms(
                {
                    "clean": figures["clean"]["correct_share"][:, column],
                    f"FGSM eps {at:g}": figures["adversarial"]["correct_share"][
                        :, column
                    ],
                },
                bins=15,
                ax=ax,
                xlabel=f"share of true-label neighbours, {layer}",
            )
        return fig

    writer.save(
        "thesis_correct_neighbours",
        "Share of each image's k nearest training neighbours carrying its true "
        f"label, on the first and third DkNN layer, clean (green) and FGSM at eps "
        f"= {at:g} (purple), Topolewski Fig. 4.3.",
        draw_neighbours,
    )
