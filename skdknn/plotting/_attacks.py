"""Attack plots: accuracy against the budget or the distortion, adversarial images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._common import as_images, check_mapping, display_range
from ._palette import PALETTE, model_colors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_accuracy_vs_distortion",
    "plot_accuracy_vs_eps",
    "plot_adversarial_grid",
]

Curves = Mapping[str, Mapping[str, Sequence[float]]]


def _x_values(x: Any, attack: str, model: str, name: str) -> NDArray[np.float64]:
    """The x values of one curve: shared, per attack, or per attack and model."""
    values = x
    if isinstance(values, Mapping):
        if attack not in values:
            raise ValueError(f"{name} has no entry for attack {attack!r}.")
        values = values[attack]
        if isinstance(values, Mapping):
            if model not in values:
                raise ValueError(
                    f"{name}[{attack!r}] has no entry for model {model!r}."
                )
            values = values[model]
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} values must be 1-D; got shape {arr.shape}.")
    return arr


def _accuracy_curves(accuracy: Any) -> dict[str, dict[str, NDArray[np.float64]]]:
    curves: dict[str, dict[str, NDArray[np.float64]]] = {}
    for attack, models in check_mapping(accuracy, "accuracy").items():
        check_mapping(models, f"accuracy[{attack!r}]")
        curves[str(attack)] = {
            str(model): np.asarray(values, dtype=np.float64).ravel()
            for model, values in models.items()
        }
    values = np.concatenate([v for m in curves.values() for v in m.values()])
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 100):
        raise ValueError(
            "accuracy must be a share in [0, 1] or a percentage in [0, 100]; got "
            f"values in [{finite.min():.4g}, {finite.max():.4g}]."
        )
    return curves


def _panel_axes(ax: Any, n_panels: int) -> tuple[Figure, NDArray[Any]]:
    """One axes per attack: given (an Axes or a sequence) or in a new figure."""
    if ax is None:
        import matplotlib.pyplot as plt

        fig, grid = plt.subplots(
            1,
            n_panels,
            figsize=(4.5 * n_panels, 3.8),
            sharey=True,
            squeeze=False,
            layout="constrained",
        )
        return fig, grid[0]
    axes = np.asarray([ax] if hasattr(ax, "plot") else ax, dtype=object).ravel()
    if axes.size != n_panels:
        raise ValueError(
            f"ax must hold one Axes per attack ({n_panels}); got {axes.size}."
        )
    return axes[0].figure, axes


def _plot_curves(
    x: Any, accuracy: Any, *, xlabel: str, x_name: str, ax: Any, from_zero: bool
) -> tuple[Figure, NDArray[Any]]:
    curves = _accuracy_curves(accuracy)
    points = {
        (attack, model): _x_values(x, attack, model, x_name)
        for attack, models in curves.items()
        for model in models
    }
    for (attack, model), xs in points.items():
        if xs.size != curves[attack][model].size:
            raise ValueError(
                f"{x_name} and accuracy[{attack!r}][{model!r}] have different "
                f"lengths: {xs.size} and {curves[attack][model].size}."
            )
    values = np.concatenate([v for m in curves.values() for v in m.values()])
    percent = bool(np.nanmax(values, initial=0.0) > 1)
    ylim = (-2.0, 102.0) if percent else (-0.02, 1.02)
    # one colour per model, the same in every panel and every figure
    models = list(dict.fromkeys(m for models in curves.values() for m in models))
    colors = model_colors(models)
    fig, axes = _panel_axes(ax, len(curves))
    for panel, (attack, model_curves) in zip(axes, curves.items(), strict=True):
        for model, acc in model_curves.items():
            panel.plot(
                points[attack, model],
                acc,
                marker="o",
                color=colors[model],
                label=model,
            )
        panel.set_title(attack)
        panel.set_xlabel(xlabel)
        panel.set_ylim(*ylim)
        if from_zero:
            panel.set_xlim(left=0.0)
        panel.grid(alpha=0.3)
        if ax is not None:
            panel.legend(fontsize="small")
    if ax is None:
        # one legend for every panel, under them: inside, it covered the curves
        unique: dict[str, Any] = {}
        for panel in axes:
            for line in panel.get_lines():
                unique.setdefault(str(line.get_label()), line)
        fig.legend(
            handles=list(unique.values()),
            loc="outside lower center",
            ncol=len(unique),
            frameon=False,
        )
    axes[0].set_ylabel("accuracy (%)" if percent else "accuracy")
    return fig, axes


def plot_accuracy_vs_eps(
    eps: Sequence[float] | Mapping[str, Any],
    accuracy: Curves,
    *,
    ax: Any = None,
) -> tuple[Figure, NDArray[Any]]:
    """Accuracy under attack against the L-infinity budget eps, one panel per attack.

    Parameters
    ----------
    eps : sequence of float, or mapping
        The budgets: one sequence shared by every curve, or a mapping from attack
        name to a sequence (or to a mapping from model name to a sequence).
    accuracy : mapping of str to mapping of str to sequence of float
        ``accuracy[attack][model][i]``: accuracy of ``model`` under ``attack`` at
        ``eps[i]``, e.g. ``{"FGSM": {"CNN": [...], "kNN": [...], "DkNN": [...]}}``.
        Shares in [0, 1] or percentages (read as such when any value exceeds 1).
    ax : matplotlib Axes or sequence of Axes, default=None
        One axes per attack; ``None`` makes a new figure with one row of panels.

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes
        One per attack, in the order of ``accuracy``; one line per model, in the
        colours of :data:`skdknn.plotting.PALETTE`. The legend sits under the
        panels (with ``ax`` given, one legend per panel).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_accuracy_vs_eps
    >>> fig, axes = plot_accuracy_vs_eps(
    ...     [0.0, 0.1, 0.25],
    ...     {"FGSM": {"CNN": [0.99, 0.6, 0.1], "DkNN": [0.98, 0.7, 0.5]},
    ...      "BIM": {"CNN": [0.99, 0.2, 0.0], "DkNN": [0.98, 0.4, 0.2]}})
    >>> [ax.get_title() for ax in axes], len(axes[0].get_lines())
    (['FGSM', 'BIM'], 2)
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    return _plot_curves(
        eps, accuracy, xlabel="eps (L-infinity)", x_name="eps", ax=ax, from_zero=True
    )


def plot_accuracy_vs_distortion(
    distortion: Curves,
    accuracy: Curves,
    *,
    ax: Any = None,
) -> tuple[Figure, NDArray[Any]]:
    """Accuracy under attack against the mean L2 distortion, one panel per attack.

    Parameters
    ----------
    distortion : mapping of str to mapping of str to sequence of float
        ``distortion[attack][model][i]``: mean L2 distortion of the successful
        adversarial examples (:func:`skdknn.metrics.mean_l2_distortion`) behind
        ``accuracy[attack][model][i]``; NaN (no success) leaves a gap. A mapping
        from attack to one sequence is shared by that attack's models.
    accuracy : mapping of str to mapping of str to sequence of float
        As in :func:`plot_accuracy_vs_eps`.
    ax : matplotlib Axes or sequence of Axes, default=None
        One axes per attack; ``None`` makes a new figure with one row of panels.

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes
        One per attack, in the order of ``accuracy``; one line per model, in the
        colours of :data:`skdknn.plotting.PALETTE`. The legend sits under the
        panels (with ``ax`` given, one legend per panel).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_accuracy_vs_distortion
    >>> fig, axes = plot_accuracy_vs_distortion(
    ...     {"FGSM": {"kNN": [1.2, 2.5], "DkNN": [1.4, 2.9]}},
    ...     {"FGSM": {"kNN": [55.0, 15.0], "DkNN": [60.0, 28.0]}})
    >>> axes[0].get_ylabel()
    'accuracy (%)'
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    return _plot_curves(
        distortion,
        accuracy,
        xlabel="mean L2 distortion",
        x_name="distortion",
        ax=ax,
        from_zero=True,
    )


def _eps_label(key: Any) -> str:
    if isinstance(key, Real) and not isinstance(key, bool):
        return "clean\n(eps = 0)" if key == 0 else f"eps = {float(key):g}"
    return str(key)


def plot_adversarial_grid(
    images: Mapping[Any, ArrayLike],
    *,
    n_examples: int = 8,
    labels: ArrayLike | None = None,
    predictions: Mapping[Any, ArrayLike] | None = None,
) -> tuple[Figure, NDArray[Any]]:
    """The same examples at several attack budgets: rows = eps, columns = examples.

    Parameters
    ----------
    images : mapping of float to array-like of shape (n, ...)
        ``images[eps]``: the inputs attacked with budget ``eps`` (e.g. ``0.0`` for
        the clean ones), all with the same rows. Images (n, 1 or 3, H, W) or
        (n, H, W), or flat rows of square images.
    n_examples : int, default=8
        Number of columns: the first ``n_examples`` rows of every array.
    labels : array-like of shape (n,), default=None
        True labels: titles of the first row when ``predictions`` is None, else
        predictions that differ from them are titled in the ``"wrong"`` colour of
        :data:`skdknn.plotting.PALETTE` (red), which a legend under the grid
        explains.
    predictions : mapping of float to array-like of shape (n,), default=None
        ``predictions[eps]``: the model's predictions on ``images[eps]``, shown as
        each image's title (rows missing from it get none).

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes of shape (n_eps, n_columns)
        One image per axes.

    Examples
    --------
    >>> import numpy as np
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_adversarial_grid
    >>> X = np.random.default_rng(0).uniform(size=(4, 1, 8, 8))
    >>> fig, axes = plot_adversarial_grid(
    ...     {0.0: X, 0.25: np.clip(X + 0.25, 0, 1)}, n_examples=3,
    ...     labels=[1, 2, 3, 4], predictions={0.25: [1, 0, 3, 0]})
    >>> axes.shape, axes[1, 1].get_title()
    ((2, 3), 'pred 0')
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    rows = {
        key: as_images(values)
        for key, values in check_mapping(images, "images").items()
    }
    shapes = {arr.shape for arr in rows.values()}
    if len(shapes) > 1:
        raise ValueError(
            f"Every array of images must have the same shape; got {sorted(shapes)}."
        )
    n = next(iter(rows.values())).shape[0]
    if not isinstance(n_examples, Integral) or n_examples < 1:
        raise ValueError(f"n_examples must be a positive int; got {n_examples!r}.")
    if n == 0:
        raise ValueError("images holds no examples.")
    true = None if labels is None else np.asarray(labels)
    if true is not None and true.shape != (n,):
        raise ValueError(f"labels must have shape ({n},); got {true.shape}.")
    preds = {} if predictions is None else dict(predictions)
    for key, values in preds.items():
        if key not in rows:
            raise ValueError(f"predictions has key {key!r}, which images does not.")
        preds[key] = np.asarray(values)
        if preds[key].shape != (n,):
            raise ValueError(
                f"predictions[{key!r}] must have shape ({n},); got {preds[key].shape}."
            )
    n_cols = min(int(n_examples), n)
    vmin, vmax = display_range(*(arr[:n_cols] for arr in rows.values()))
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(rows),
        n_cols,
        figsize=(1.3 * n_cols + 0.6, 1.5 * len(rows) + 0.3),
        squeeze=False,
        layout="constrained",
    )
    for r, (key, arr) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(arr[c], cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if key in preds:
                wrong = true is not None and preds[key][c] != true[c]
                ax.set_title(
                    f"pred {preds[key][c]}",
                    color=PALETTE["wrong"] if wrong else "black",
                    fontsize="small",
                )
            elif true is not None and r == 0 and not preds:
                ax.set_title(f"label {true[c]}", fontsize="small")
        axes[r, 0].set_ylabel(_eps_label(key))
    if preds and true is not None:
        from matplotlib.patches import Patch

        wrong = Patch(
            color=PALETTE["wrong"], label="red title: prediction is not the true label"
        )
        fig.legend(
            handles=[wrong], loc="outside lower center", frameon=False, fontsize="small"
        )
    return fig, axes
