"""Reliability diagrams: accuracy of the predictions against their credibility."""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..metrics import _unwrap_dknn
from ._common import (
    check_unit_interval,
    dknn_predictions,
    figure_and_axes,
    network_softmax,
)
from ._palette import PALETTE, model_color

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ReliabilityDisplay",
    "plot_reliability_diagrams",
    "plot_reliability_diagrams_from_predictions",
]

#: Scores ``ReliabilityDisplay.from_estimator`` computes, with their default names.
SCORES = {"credibility": "DkNN credibility", "softmax": "softmax confidence"}


def reliability_bins(
    y_true: ArrayLike, y_pred: ArrayLike, scores: ArrayLike, n_bins: int = 10
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Accuracy and number of predictions in equal-width score bins on [0, 1].

    Bin ``i`` holds the scores ``s`` with ``floor(s * n_bins) == i``, i.e. in
    ``[i / n_bins, (i + 1) / n_bins)``; a score of exactly 1 goes to the last bin.

    Returns
    -------
    bin_edges : ndarray of shape (n_bins + 1,)
    accuracy : ndarray of shape (n_bins,)
        Share of ``y_pred == y_true`` in each bin; NaN for empty bins.
    counts : ndarray of shape (n_bins,)
    """
    if not isinstance(n_bins, Integral) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int; got {n_bins!r}.")
    y_t, y_p = np.asarray(y_true), np.asarray(y_pred)
    s = check_unit_interval(scores, "scores")
    if y_t.ndim != 1 or y_p.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D; got shapes {y_t.shape} and {y_p.shape}."
        )
    if not len(y_t) == len(y_p) == len(s):
        raise ValueError(
            "y_true, y_pred and scores must have the same length; got "
            f"{len(y_t)}, {len(y_p)} and {len(s)}."
        )
    bins = np.minimum((s * n_bins).astype(np.intp), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    correct = np.bincount(
        bins, weights=(y_t == y_p).astype(np.float64), minlength=n_bins
    )
    accuracy = np.full(n_bins, np.nan)
    np.divide(correct, counts, out=accuracy, where=counts > 0)
    return np.linspace(0.0, 1.0, n_bins + 1), accuracy, counts.astype(np.int64)


class ReliabilityDisplay:
    """Reliability diagram: accuracy of predictions per bin of their score.

    Bars give the accuracy of the predictions whose score (DkNN credibility, softmax
    confidence) falls in each of ``n_bins`` equal-width bins of [0, 1]; a line on a
    second y-axis gives how many predictions each bin holds, and the diagonal is
    where accuracy equals the score; the legend sits below the axes, so that it
    never covers a bar. Bars take the colour of the score's model in
    :data:`skdknn.plotting.PALETTE`. A well-calibrated score follows the diagonal;
    the DkNN paper (Fig. 7) shows credibility doing so where the softmax is
    over-confident. Build it with :meth:`from_estimator` or :meth:`from_predictions`.

    Parameters
    ----------
    bin_edges : ndarray of shape (n_bins + 1,)
        Edges of the score bins.
    accuracy : ndarray of shape (n_bins,)
        Accuracy in each bin; NaN for empty bins (drawn as no bar).
    counts : ndarray of shape (n_bins,)
        Number of predictions in each bin.
    name : str, default=None
        Name of the score, e.g. ``"DkNN credibility"``: the x label and the title.

    Attributes
    ----------
    ax_ : matplotlib Axes
        Axes of the accuracy bars.
    count_ax_ : matplotlib Axes
        Twin axes (right y-axis) of the counts.
    figure_ : matplotlib Figure
        Figure holding the diagram.
    bars_ : matplotlib BarContainer
        One bar per bin, of height ``accuracy``.
    line_ : matplotlib Line2D
        The counts per bin, at the bin centres.
    diagonal_ : matplotlib Line2D
        The reference ``accuracy == score``.

    See Also
    --------
    plot_reliability_diagrams : DkNN credibility and softmax side by side.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import ReliabilityDisplay
    >>> disp = ReliabilityDisplay.from_predictions(
    ...     [0, 1, 1, 0], [0, 1, 0, 0], [0.9, 0.8, 0.3, 1.0], n_bins=2, name="score")
    >>> disp.accuracy, disp.counts
    (array([0., 1.]), array([1, 3]))
    >>> [float(bar.get_height()) for bar in disp.bars_]
    [0.0, 1.0]
    >>> import matplotlib.pyplot as plt; plt.close(disp.figure_)
    """

    def __init__(
        self,
        *,
        bin_edges: ArrayLike,
        accuracy: ArrayLike,
        counts: ArrayLike,
        name: str | None = None,
    ) -> None:
        self.bin_edges = np.asarray(bin_edges, dtype=np.float64)
        self.accuracy = np.asarray(accuracy, dtype=np.float64)
        self.counts = np.asarray(counts)
        self.name = name

    def plot(
        self, ax: Axes | None = None, *, name: str | None = None, **kwargs: Any
    ) -> ReliabilityDisplay:
        """Draw the diagram.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on (a twin axes is added for the counts); ``None`` makes a
            new figure.
        name : str, default=None
            Overrides ``self.name`` for the labels.
        **kwargs : dict
            Passed to ``ax.bar`` for the accuracy bars.

        Returns
        -------
        display : ReliabilityDisplay
            ``self``, with ``ax_``, ``count_ax_``, ``figure_`` and the artists set.
        """
        if not len(self.bin_edges) == len(self.accuracy) + 1 == len(self.counts) + 1:
            raise ValueError(
                "bin_edges must have one more value than accuracy and counts; got "
                f"{len(self.bin_edges)}, {len(self.accuracy)} and {len(self.counts)}."
            )
        fig, ax = figure_and_axes(ax)
        name = self.name if name is None else name
        edges = self.bin_edges
        widths = np.diff(edges)
        bar_kwargs: dict[str, Any] = {
            "color": model_color(name or "DkNN"),
            "alpha": 0.8,
            "edgecolor": "white",
            "label": "accuracy",
            **kwargs,
        }
        self.bars_ = ax.bar(
            edges[:-1], self.accuracy, width=widths, align="edge", **bar_kwargs
        )
        (self.diagonal_,) = ax.plot(
            [0, 1],
            [0, 1],
            linestyle="--",
            color=PALETTE["reference"],
            lw=1,
            label="accuracy = score",
        )
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=name or "score", ylabel="accuracy")
        if name:
            ax.set_title(name)
        self.count_ax_ = ax.twinx()
        (self.line_,) = self.count_ax_.plot(
            edges[:-1] + widths / 2,
            self.counts,
            marker=".",
            linestyle=":",
            color=PALETTE["reference"],
            label="count (right axis)",
        )
        self.count_ax_.set_ylabel("count")
        self.count_ax_.set_ylim(bottom=0)
        # below the axes: inside, it covered the tall bars of confident bins
        ax.legend(
            handles=[self.bars_, self.diagonal_, self.line_],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=3,
            frameon=False,
            fontsize="small",
        )
        self.ax_, self.figure_ = ax, fig
        return self

    @classmethod
    def from_predictions(
        cls,
        y_true: ArrayLike,
        y_pred: ArrayLike,
        scores: ArrayLike,
        *,
        n_bins: int = 10,
        name: str | None = None,
        ax: Axes | None = None,
    ) -> ReliabilityDisplay:
        """Reliability diagram of given predictions and scores.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        y_pred : array-like of shape (n_samples,)
            Predicted labels.
        scores : array-like of shape (n_samples,)
            Score of each prediction, in [0, 1] (credibility, softmax confidence).
        n_bins : int, default=10
            Number of equal-width bins on [0, 1]; ``floor(score * n_bins)`` is the
            bin and a score of 1 goes to the last bin.
        name : str, default=None
            Name of the score, for the labels.
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` makes a new figure.

        Returns
        -------
        display : ReliabilityDisplay
        """
        edges, accuracy, counts = reliability_bins(y_true, y_pred, scores, n_bins)
        display = cls(bin_edges=edges, accuracy=accuracy, counts=counts, name=name)
        return display.plot(ax=ax)

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        y: ArrayLike,
        *,
        score: str = "credibility",
        n_bins: int = 10,
        name: str | None = None,
        ax: Axes | None = None,
    ) -> ReliabilityDisplay:
        """Reliability diagram of a fitted model's predictions on ``X``.

        Parameters
        ----------
        estimator : DeepKNNClassifier, skorch net or torch module
            Fitted model, optionally in ``FrozenEstimator``. ``score="credibility"``
            needs a DkNN; ``"softmax"`` takes the network underneath a DkNN, a skorch
            net or a torch module returning logits (whose labels are then the
            output indices).
        X : array-like of shape (n_samples, ...)
            Inputs.
        y : array-like of shape (n_samples,)
            True labels.
        score : {"credibility", "softmax"}, default="credibility"
            DkNN predictions scored by their credibility, or the network's
            predictions scored by their largest softmax probability.
        n_bins : int, default=10
            Number of equal-width bins on [0, 1].
        name : str, default=None
            Name for the labels; ``None`` gives "DkNN credibility" or
            "softmax confidence".
        ax : matplotlib Axes, default=None
            Axes to draw on; ``None`` makes a new figure.

        Returns
        -------
        display : ReliabilityDisplay
        """
        y_pred, scores = model_scores(estimator, X, score)
        return cls.from_predictions(
            y,
            y_pred,
            scores,
            n_bins=n_bins,
            name=SCORES[score] if name is None else name,
            ax=ax,
        )


def model_scores(estimator: Any, X: Any, score: str) -> tuple[NDArray, NDArray]:
    """Predictions of ``estimator`` on ``X`` and the chosen score of each."""
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}; choose one of {list(SCORES)}.")
    if score == "credibility":
        return dknn_predictions(_unwrap_dknn(estimator), X)
    proba, classes = network_softmax(estimator, X)
    return classes[proba.argmax(axis=1)], proba.max(axis=1)


def plot_reliability_diagrams(
    estimator: Any, X: Any, y: ArrayLike, *, n_bins: int = 10
) -> tuple[Figure, NDArray[Any], tuple[ReliabilityDisplay, ReliabilityDisplay]]:
    """Reliability diagrams of DkNN credibility and the softmax, side by side.

    Left: the DkNN's predictions binned by their credibility; right: its network's
    predictions binned by their largest softmax probability (the DkNN paper's
    Fig. 7 comparison).

    Parameters
    ----------
    estimator : DeepKNNClassifier
        Fitted DkNN, optionally in ``FrozenEstimator``.
    X : array-like of shape (n_samples, ...)
        Inputs (e.g. held-out test images).
    y : array-like of shape (n_samples,)
        True labels.
    n_bins : int, default=10
        Number of equal-width bins on [0, 1].

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of 2 matplotlib Axes
        The accuracy axes of the DkNN and of the softmax diagram.
    displays : tuple of 2 ReliabilityDisplay
        Their numbers (``bin_edges``, ``accuracy``, ``counts``), same order.

    See Also
    --------
    plot_reliability_diagrams_from_predictions : The same from computed arrays.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from skdknn import DeepKNNClassifier
    >>> from skdknn.plotting import plot_reliability_diagrams
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = DeepKNNClassifier(n_neighbors=5, calibration_size=50, max_epochs=3,
    ...                         batch_size=64, random_state=0).fit(X[:400], y[:400])
    >>> fig, axes, (dknn, softmax) = plot_reliability_diagrams(clf, X[400:500],
    ...                                                        y[400:500], n_bins=5)
    >>> int(dknn.counts.sum()), int(softmax.counts.sum())
    (100, 100)
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    dknn = _unwrap_dknn(estimator)
    dknn_pred, credibility = dknn_predictions(dknn, X)
    cnn_pred, softmax_confidence = model_scores(dknn, X, "softmax")
    return plot_reliability_diagrams_from_predictions(
        y, dknn_pred, credibility, cnn_pred, softmax_confidence, n_bins=n_bins
    )


def plot_reliability_diagrams_from_predictions(
    y_true: ArrayLike,
    dknn_pred: ArrayLike,
    credibility: ArrayLike,
    cnn_pred: ArrayLike,
    softmax_confidence: ArrayLike,
    *,
    n_bins: int = 10,
) -> tuple[Figure, NDArray[Any], tuple[ReliabilityDisplay, ReliabilityDisplay]]:
    """Reliability diagrams of DkNN credibility and the softmax from computed arrays.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    dknn_pred, credibility : array-like of shape (n_samples,)
        The DkNN's predictions and their credibility, in [0, 1].
    cnn_pred, softmax_confidence : array-like of shape (n_samples,)
        The network's predictions and their largest softmax probability.
    n_bins : int, default=10
        Number of equal-width bins on [0, 1].

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of 2 matplotlib Axes
        The accuracy axes of the DkNN and of the softmax diagram.
    displays : tuple of 2 ReliabilityDisplay
        Their numbers (``bin_edges``, ``accuracy``, ``counts``), same order.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skdknn.plotting import plot_reliability_diagrams_from_predictions
    >>> y = [0, 1, 1, 0]
    >>> fig, axes, (dknn, cnn) = plot_reliability_diagrams_from_predictions(
    ...     y, [0, 1, 0, 0], [0.9, 0.7, 0.1, 0.6],
    ...     [0, 1, 0, 1], [1.0, 0.99, 0.98, 0.97], n_bins=5)
    >>> dknn.counts, cnn.counts
    (array([1, 0, 0, 2, 1]), array([0, 0, 0, 0, 4]))
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    names = list(SCORES.values())
    arrays = [(dknn_pred, credibility), (cnn_pred, softmax_confidence)]
    # compute both before drawing, so that bad input leaves no empty figure behind
    displays = []
    for name, (pred, scores) in zip(names, arrays, strict=True):
        edges, accuracy, counts = reliability_bins(y_true, pred, scores, n_bins)
        displays.append(
            ReliabilityDisplay(
                bin_edges=edges, accuracy=accuracy, counts=counts, name=name
            )
        )
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for display, ax in zip(displays, axes, strict=True):
        display.plot(ax=ax)
    return fig, axes, (displays[0], displays[1])
