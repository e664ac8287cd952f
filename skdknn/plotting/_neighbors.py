"""Per-layer neighbour correctness: where in the network adversarial inputs go wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ._common import check_mapping, check_unit_interval, figure_and_axes
from ._palette import input_colors

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_neighbor_correctness"]


def plot_neighbor_correctness(
    correctness: Mapping[str, ArrayLike],
    layers: Sequence[str],
    *,
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """Grouped bars: per layer, the share of neighbours that carry the true label.

    On clean inputs most neighbours agree with the true label in every layer; on
    adversarial inputs the share falls in the deeper layers, where the network's
    representation has been pushed towards another class (DkNN paper, Section 6).
    Compute the shares with :func:`skdknn.metrics.neighbor_label_agreement`.

    Parameters
    ----------
    correctness : mapping of str to array-like of shape (n_layers,)
        One set of inputs per name (e.g. ``"clean"``, ``"FGSM"``), with its share
        in [0, 1] per layer. A set named ``"clean"`` takes the clean colour of
        :data:`skdknn.plotting.PALETTE`, the others shades of the adversarial one.
    layers : sequence of str
        Layer names, the groups on the x-axis (e.g. the DkNN's ``layers_``).
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` makes a new figure.

    Returns
    -------
    fig : matplotlib Figure
    ax : matplotlib Axes
        One ``BarContainer`` per set in ``ax.containers``, labelled with its name.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_neighbor_correctness
    >>> fig, ax = plot_neighbor_correctness(
    ...     {"clean": [0.95, 0.97, 0.99], "FGSM": [0.9, 0.6, 0.2]},
    ...     ["relu1", "relu2", "logits"])
    >>> [float(bar.get_height()) for bar in ax.containers[1]]
    [0.9, 0.6, 0.2]
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    layer_names = [str(layer) for layer in layers]
    if not layer_names:
        raise ValueError("layers must name at least one layer.")
    sets = {
        str(name): check_unit_interval(values, f"correctness[{name!r}]")
        for name, values in check_mapping(correctness, "correctness").items()
    }
    for name, values in sets.items():
        if values.size != len(layer_names):
            raise ValueError(
                f"correctness[{name!r}] has {values.size} values for "
                f"{len(layer_names)} layers."
            )
    fig, ax = figure_and_axes(ax, figsize=(1.2 * len(layer_names) + 3, 3.8))
    x = np.arange(len(layer_names))
    width = 0.8 / len(sets)
    colors = input_colors(sets, reference="clean" if "clean" in sets else None)
    for i, (name, values) in enumerate(sets.items()):
        ax.bar(
            x - 0.4 + width * (i + 0.5), values, width, label=name, color=colors[name]
        )
    ax.set_xticks(x, layer_names)
    ax.set(
        ylim=(0, 1),
        xlabel="layer",
        ylabel="neighbours with the true label",
    )
    ax.legend(fontsize="small")
    return fig, ax
