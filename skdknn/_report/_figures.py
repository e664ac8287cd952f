"""The report's figures, drawn with :mod:`skdknn.plotting` and saved as PNG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import plotting

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


def ood(
    writer: FigureWriter, scores: dict[str, dict[str, NDArray[np.float64]]]
) -> None:
    writer.save(
        "out_of_distribution",
        "DkNN credibility (left) and softmax confidence (right) on the clean test "
        "digits (green, filled) and on inputs of no class (browns): credibility "
        "stays low where softmax is confident.",
        lambda: plotting.plot_ood(scores),
    )
