"""Score histograms: clean vs adversarial, in- vs out-of-distribution."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..metrics import ood_auroc
from ._common import check_1d, check_mapping, figure_and_axes
from ._palette import input_colors

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
    colors: Mapping[str, str],
    notes: Mapping[str, str] | None = None,
    filled: str | None = None,
) -> None:
    """One density-normalised step histogram per set, labelled with n and mean;
    the set ``filled`` (the reference) is drawn as a light filled area."""
    for name, values in arrays.items():
        density, _ = np.histogram(values, bins=edges, density=True)
        label = f"{name} (n={values.size}, mean={values.mean():.3f})"
        if notes and name in notes:
            label += f", {notes[name]}"
        if name == filled:
            ax.stairs(
                density, edges, label=label, color=colors[name], fill=True, alpha=0.35
            )
        else:
            ax.stairs(density, edges, label=label, color=colors[name], linewidth=1.8)


def _grid(n_panels: int, ncols: int) -> tuple[Figure, NDArray[Any]]:
    import matplotlib.pyplot as plt

    ncols = min(ncols, n_panels)
    nrows = -(-n_panels // ncols)
    fig, grid = plt.subplots(
        nrows,
        ncols,
        figsize=(3.6 * ncols, 2.9 * nrows),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for ax in grid.ravel()[n_panels:]:
        ax.set_axis_off()
    return fig, grid.ravel()[:n_panels]


def plot_credibility_histograms(
    scores: Mapping[str, ArrayLike],
    *,
    bins: int | ArrayLike = 20,
    ax: Axes | None = None,
    xlabel: str = "credibility",
    reference: str | None = None,
    ncols: int = 3,
) -> tuple[Figure, Any]:
    """Histograms of a score on several sets of inputs.

    E.g. the DkNN credibility of clean, FGSM and BIM inputs: adversarial examples
    that fool the network get low credibility (DkNN paper, Fig. 8). Each set is a
    step histogram normalised to a density, so sets of different sizes compare.
    With ``reference`` (e.g. ``"clean"``) the sets are drawn as small multiples,
    one panel per other set over the reference's filled histogram, which stays
    readable for many sets; without it, every set is overlaid in one axes.
    Colours follow :data:`skdknn.plotting.PALETTE`: the reference (or a set named
    ``"clean"``) in the clean colour, the others in shades of the adversarial one.

    Parameters
    ----------
    scores : mapping of str to array-like of shape (n_i,)
        One set of scores per name, in drawing order.
    bins : int or array-like of edges, default=20
        Number of equal-width bins over [0, 1] (widened to the data if it leaves
        [0, 1]), shared by every set; or the bin edges (values outside them are not
        counted).
    ax : matplotlib Axes, default=None
        Axes to draw on (overlaid sets only); ``None`` makes a new figure.
    xlabel : str, default="credibility"
        Label of the x-axis.
    reference : str, default=None
        Name of the set drawn in every panel (small multiples); ``None`` overlays
        every set in one axes.
    ncols : int, default=3
        Panels per row of the small multiples.

    Returns
    -------
    fig : matplotlib Figure
    ax : matplotlib Axes, or ndarray of Axes with ``reference``
        One ``StepPatch`` per set drawn in ``ax.patches``, labelled "name (n=...,
        mean=...)" (the legend); with ``reference``, one panel per other set
        holding the reference's patch then the set's, titled with the set's name,
        n and mean, and a figure legend for the reference.

    Raises
    ------
    ValueError
        When ``reference`` is not a set of ``scores``, or it is the only set.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_credibility_histograms
    >>> fig, ax = plot_credibility_histograms(
    ...     {"clean": [0.9, 0.8, 0.7], "FGSM": [0.1, 0.3]}, bins=4)
    >>> [text.get_text() for text in ax.get_legend().get_texts()]
    ['clean (n=3, mean=0.800)', 'FGSM (n=2, mean=0.200)']
    >>> fig, axes = plot_credibility_histograms(
    ...     {"clean": [0.9, 0.8], "FGSM": [0.1, 0.3], "BIM": [0.0, 0.2]},
    ...     reference="clean")
    >>> [a.get_title().splitlines()[0] for a in axes]
    ['FGSM', 'BIM']
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    arrays = _score_sets(scores, "scores")
    edges = _bin_edges(bins, list(arrays.values()))
    if reference is None:
        colors = input_colors(arrays, reference="clean" if "clean" in arrays else None)
        fig, ax = figure_and_axes(ax)
        _draw(ax, arrays, edges, colors)
        ax.set(xlabel=xlabel, ylabel="density")
        ax.legend()
        return fig, ax
    if reference not in arrays or len(arrays) < 2:
        raise ValueError(
            f"reference={reference!r} must name one of several sets of scores "
            f"(sets: {list(arrays)})."
        )
    if not isinstance(ncols, Integral) or ncols < 1:
        raise ValueError(f"ncols must be a positive int; got {ncols!r}.")
    colors = input_colors(arrays, reference=reference)
    others = [name for name in arrays if name != reference]
    fig, axes = _grid(len(others), int(ncols))
    ref = arrays[reference]
    for panel, name in zip(axes, others, strict=True):
        pair = {reference: ref, name: arrays[name]}
        _draw(panel, pair, edges, colors, filled=reference)
        # n and means in the title: a legend inside would cover the bars
        panel.set_title(
            f"{name}\n(n={arrays[name].size}, mean={arrays[name].mean():.3f})",
            fontsize="medium",
        )
        panel.grid(alpha=0.3)
    handles, _ = axes[0].get_legend_handles_labels()
    fig.legend(
        handles=handles[:1],
        labels=[f"{reference} (n={ref.size}, mean={ref.mean():.3f}), in every panel"],
        loc="outside lower center",
        frameon=False,
    )
    for panel in axes:
        if panel.get_subplotspec().is_last_row() or panel is axes[-1]:
            panel.set_xlabel(xlabel)
        if panel.get_subplotspec().is_first_col():
            panel.set_ylabel("density")
    return fig, axes


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
        first set of each panel. It is drawn filled in the clean colour of
        :data:`skdknn.plotting.PALETTE`, the other sets in shades of its
        out-of-distribution colour.
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
        colors = input_colors(sets, reference=reference, kind="out-of-distribution")
        _draw(ax, sets, edges, colors, notes, filled=reference)
        ax.set(title=kind, xlabel=kind, ylabel="density")
        # below the axes: inside, it covered the histograms
        ax.legend(
            fontsize="small",
            loc="upper center",
            bbox_to_anchor=(0.5, -0.18),
            frameon=False,
        )
    return fig, panel_axes
