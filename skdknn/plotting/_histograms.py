"""Score histograms: clean vs adversarial, in- vs out-of-distribution."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..metrics import ood_auroc
from ._common import check_1d, check_mapping, figure_and_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_credibility_histograms", "plot_ood"]


def _score_sets(scores: Any, name: str) -> dict[str, NDArray[np.float64]]:
    mapping = check_mapping(scores, name)
    return {
        str(key): check_1d(values, f"{name}[{key!r}]")
        for key, values in mapping.items()
    }


def _bin_edges(bins: int | ArrayLike, arrays: list[NDArray]) -> NDArray[np.float64]:
    """Edges shared by every set: ``bins`` equal bins over [0, 1] and the data."""
    if isinstance(bins, Integral) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be a positive int or edges; got {bins}.")
        low = min(0.0, *(float(a.min()) for a in arrays))
        high = max(1.0, *(float(a.max()) for a in arrays))
        return np.linspace(low, high, int(bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bins must be a positive int or increasing bin edges.")
    return edges


def _draw(
    ax: Axes,
    arrays: Mapping[str, NDArray[np.float64]],
    edges: NDArray[np.float64],
    notes: Mapping[str, str] | None = None,
) -> None:
    """One density-normalised step histogram per set, labelled with n and mean."""
    for i, (name, values) in enumerate(arrays.items()):
        density, _ = np.histogram(values, bins=edges, density=True)
        label = f"{name} (n={values.size}, mean={values.mean():.3f})"
        if notes and name in notes:
            label += f", {notes[name]}"
        ax.stairs(density, edges, label=label, color=f"C{i}", linewidth=1.8)


def plot_credibility_histograms(
    scores: Mapping[str, ArrayLike],
    *,
    bins: int | ArrayLike = 20,
    ax: Axes | None = None,
    xlabel: str = "credibility",
) -> tuple[Figure, Axes]:
    """Overlaid histograms of a score on several sets of inputs.

    E.g. the DkNN credibility of clean, FGSM and BIM inputs: adversarial examples
    that fool the network get low credibility (DkNN paper, Fig. 8). Each set is a
    step histogram normalised to a density, so sets of different sizes compare.

    Parameters
    ----------
    scores : mapping of str to array-like of shape (n_i,)
        One set of scores per name, in drawing order.
    bins : int or array-like of edges, default=20
        Number of equal-width bins over [0, 1] (widened to the data if it leaves
        [0, 1]), shared by every set; or the bin edges (values outside them are not
        counted).
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` makes a new figure.
    xlabel : str, default="credibility"
        Label of the x-axis.

    Returns
    -------
    fig : matplotlib Figure
    ax : matplotlib Axes
        One ``StepPatch`` per set in ``ax.patches``, legend "name (n=..., mean=...)".

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_credibility_histograms
    >>> fig, ax = plot_credibility_histograms(
    ...     {"clean": [0.9, 0.8, 0.7], "FGSM": [0.1, 0.3]}, bins=4)
    >>> [text.get_text() for text in ax.get_legend().get_texts()]
    ['clean (n=3, mean=0.800)', 'FGSM (n=2, mean=0.200)']
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    arrays = _score_sets(scores, "scores")
    edges = _bin_edges(bins, list(arrays.values()))
    fig, ax = figure_and_axes(ax)
    _draw(ax, arrays, edges)
    ax.set(xlabel=xlabel, ylabel="density")
    ax.legend()
    return fig, ax


def plot_ood(
    scores: Mapping[str, Mapping[str, ArrayLike]],
    *,
    in_distribution: str | None = None,
    bins: int | ArrayLike = 20,
    axes: Any = None,
) -> tuple[Figure, NDArray[Any]]:
    """Histograms of scores on in-distribution and out-of-distribution inputs.

    One panel per kind of score (e.g. DkNN credibility, softmax confidence), so
    the figure shows which score tells unfamiliar inputs apart. In each panel, the
    legend of every out-of-distribution set gives the AUROC of separating it from
    the in-distribution set by the score (:func:`skdknn.metrics.ood_auroc`).

    Parameters
    ----------
    scores : mapping of str to mapping of str to array-like
        ``scores[kind][set]``: the scores of kind ``kind`` (higher = more
        in-distribution) on the inputs of ``set``, e.g.
        ``{"DkNN credibility": {"MNIST": ..., "noise": ...},
        "softmax confidence": {"MNIST": ..., "noise": ...}}``.
    in_distribution : str, default=None
        The in-distribution set's name, present in every panel; ``None`` takes the
        first set of each panel.
    bins : int or array-like of edges, default=20
        As in :func:`plot_credibility_histograms`.
    axes : sequence of matplotlib Axes, default=None
        One axes per kind of score; ``None`` makes a new figure with one row.

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes
        One per kind of score, in the order of ``scores``.

    See Also
    --------
    skdknn.datasets.make_ood_images : Out-of-distribution inputs.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_ood
    >>> fig, axes = plot_ood({
    ...     "DkNN credibility": {"MNIST": [0.9, 0.6, 0.4], "noise": [0.0, 0.1]},
    ...     "softmax confidence": {"MNIST": [1.0, 0.99, 0.9], "noise": [0.95, 0.9]},
    ... })
    >>> [text.get_text() for text in axes[1].get_legend().get_texts()]
    ['MNIST (n=3, mean=0.963)', 'noise (n=2, mean=0.925), AUROC 0.75']
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    panels = {
        str(kind): _score_sets(sets, f"scores[{kind!r}]")
        for kind, sets in check_mapping(scores, "scores").items()
    }
    for kind, sets in panels.items():
        if in_distribution is not None and in_distribution not in sets:
            raise ValueError(
                f"in_distribution={in_distribution!r} is not a set of scores[{kind!r}]"
                f" (sets: {list(sets)})."
            )
    edges = _bin_edges(bins, [a for sets in panels.values() for a in sets.values()])
    if axes is None:
        import matplotlib.pyplot as plt

        fig, grid = plt.subplots(
            1,
            len(panels),
            figsize=(5 * len(panels), 3.8),
            squeeze=False,
            layout="constrained",
        )
        panel_axes = grid[0]
    else:
        panel_axes = np.asarray(axes, dtype=object).ravel()
        if panel_axes.size != len(panels):
            raise ValueError(
                f"axes must hold one Axes per kind of score ({len(panels)}); got "
                f"{panel_axes.size}."
            )
        fig = panel_axes[0].figure
    for ax, (kind, sets) in zip(panel_axes, panels.items(), strict=True):
        reference = next(iter(sets)) if in_distribution is None else in_distribution
        notes = {
            name: f"AUROC {ood_auroc(sets[reference], values):.2f}"
            for name, values in sets.items()
            if name != reference
        }
        _draw(ax, sets, edges, notes)
        ax.set(title=kind, xlabel=kind, ylabel="density")
        ax.legend(fontsize="small")
    return fig, panel_axes
