"""Explanations by example: an input and its nearest training images in each layer."""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..metrics import _indexed_labels, _unwrap_dknn
from ._common import as_images, display_range, dknn_predictions
from ._palette import PALETTE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ExplanationDisplay", "plot_explanation"]


def _one_input(x: Any, X_train: NDArray) -> NDArray:
    """``x`` as a batch of one input shaped like the rows of ``X_train``."""
    arr = np.asarray(x)
    if arr.ndim == X_train.ndim - 1:
        return arr[None]
    if arr.ndim == X_train.ndim and arr.shape[0] == 1:
        return arr
    raise ValueError(
        f"x must be one input of shape {X_train.shape[1:]} (or a batch of one); got "
        f"shape {arr.shape}."
    )


class ExplanationDisplay:
    """An input and, in each DkNN layer, its nearest training images.

    The DkNN paper's interpretability argument: the neighbours that decide a
    prediction are training points one can look at. Row ``l`` shows the
    ``n_neighbors`` nearest training images in layer ``layers[l]`` with their labels.
    Neighbours whose label is not the input's true label (when ``label`` is given;
    else not the DkNN's prediction) are framed and titled in the ``"wrong"``
    colour of :data:`skdknn.plotting.PALETTE`, as wrong predictions are in the
    other figures; a legend under the grid says which rule applies and how many
    neighbours it marks. Build it with :meth:`from_estimator`.

    Parameters
    ----------
    image : ndarray of shape (height, width) or (height, width, 3)
        The input.
    neighbor_images : ndarray of shape (n_layers, n_neighbors, height, width[, 3])
        The nearest training images, nearest first.
    neighbor_labels : ndarray of shape (n_layers, n_neighbors)
        Their labels.
    layers : list of str
        Layer names, the row titles.
    prediction : object, default=None
        The DkNN's prediction for the input.
    credibility : float, default=None
        Its credibility, shown with the input.
    neighbor_indices : ndarray of shape (n_layers, n_neighbors), default=None
        Rows of the training ``X`` of the neighbours.
    label : object, default=None
        The input's true label. Neighbours of another label are highlighted; with
        ``None``, those whose label differs from ``prediction`` (nothing when both
        are ``None``).

    Attributes
    ----------
    axes_ : ndarray of matplotlib Axes of shape (n_layers, n_neighbors + 1)
        Column 0 holds the input (first row; the other rows are empty), column
        ``j + 1`` the ``j``-th nearest neighbour.
    figure_ : matplotlib Figure
        Figure holding the grid.
    legend_ : matplotlib Legend or None
        The figure legend of the highlight colour; ``None`` when nothing is
        highlighted.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from skdknn import DeepKNNClassifier
    >>> from skdknn.plotting import ExplanationDisplay
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X[:400] / 16
    >>> clf = DeepKNNClassifier(n_neighbors=5, calibration_size=50, max_epochs=3,
    ...                         batch_size=64, random_state=0).fit(X, y[:400])
    >>> disp = ExplanationDisplay.from_estimator(clf, X[0], X, n_neighbors=3)
    >>> disp.axes_.shape, disp.neighbor_images.shape
    ((3, 4), (3, 3, 8, 8))
    >>> import matplotlib.pyplot as plt; plt.close(disp.figure_)
    """

    def __init__(
        self,
        *,
        image: ArrayLike,
        neighbor_images: ArrayLike,
        neighbor_labels: ArrayLike,
        layers: list[str],
        prediction: Any = None,
        credibility: float | None = None,
        neighbor_indices: ArrayLike | None = None,
        label: Any = None,
    ) -> None:
        self.image = np.asarray(image)
        self.neighbor_images = np.asarray(neighbor_images)
        self.neighbor_labels = np.asarray(neighbor_labels)
        self.layers = layers
        self.prediction = prediction
        self.credibility = credibility
        self.neighbor_indices = (
            None if neighbor_indices is None else np.asarray(neighbor_indices)
        )
        self.label = label

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        x: ArrayLike,
        X_train: ArrayLike,
        *,
        n_neighbors: int = 5,
        y_train: ArrayLike | None = None,
        label: Any = None,
        axes: Any = None,
    ) -> ExplanationDisplay:
        """Explain the DkNN's prediction for one input by its neighbours.

        Parameters
        ----------
        estimator : DeepKNNClassifier
            Fitted DkNN (optionally in ``FrozenEstimator``) on images, or on flat
            rows of square images.
        x : array-like
            One input, shaped like a row of ``X_train`` (or a batch of one).
        X_train : array-like of shape (n_fit_samples, ...)
            The ``X`` given to ``fit``: ``kneighbors`` returns row numbers into it.
        n_neighbors : int, default=5
            Neighbours shown per layer, at most the estimator's ``n_neighbors``.
        y_train : array-like of shape (n_fit_samples,), default=None
            Labels shown for the neighbours; ``None`` uses the labels the estimator
            was fitted with.
        label : object, default=None
            The true label of ``x``: neighbours of another label are highlighted
            (``None``: those whose label differs from the DkNN's prediction).
        axes : array of matplotlib Axes of shape (n_layers, n_neighbors + 1), \
                default=None
            Axes to draw on; ``None`` makes a new figure.

        Returns
        -------
        display : ExplanationDisplay
        """
        dknn = _unwrap_dknn(estimator)
        if (
            isinstance(n_neighbors, (bool, np.bool_))
            or not isinstance(n_neighbors, Integral)
            or not 1 <= n_neighbors <= dknn.n_neighbors
        ):
            raise ValueError(
                f"n_neighbors must be an int in [1, {dknn.n_neighbors}] (the "
                f"estimator's n_neighbors); got {n_neighbors!r}."
            )
        X_fit = np.asarray(X_train)
        n_fit = dknn.train_indices_.size + dknn.calibration_indices_.size
        if X_fit.ndim < 2 or X_fit.shape[0] != n_fit:
            raise ValueError(
                f"X_train must be the X passed to fit, with {n_fit} rows "
                f"({dknn.train_indices_.size} indexed and "
                f"{dknn.calibration_indices_.size} calibration points): kneighbors "
                f"returns row numbers into it. Got shape {X_fit.shape}."
            )
        if y_train is None:
            labels_by_row = _indexed_labels(dknn)
        else:
            labels_by_row = np.asarray(y_train)
            if labels_by_row.shape != (n_fit,):
                raise ValueError(
                    f"y_train must have shape ({n_fit},) like X_train; got "
                    f"{labels_by_row.shape}."
                )
        x_batch = _one_input(x, X_fit)
        _, indices = dknn.kneighbors(x_batch)
        indices = indices[0, :, :n_neighbors]
        prediction, credibility = dknn_predictions(dknn, x_batch)
        shape = dknn.input_shape_
        neighbor_images = as_images(X_fit[indices.ravel()], shape)
        display = cls(
            image=as_images(x_batch, shape)[0],
            neighbor_images=neighbor_images.reshape(
                *indices.shape, *neighbor_images.shape[1:]
            ),
            neighbor_labels=labels_by_row[indices],
            layers=list(dknn.layers_),
            prediction=prediction[0],
            credibility=float(credibility[0]),
            neighbor_indices=indices,
            label=label,
        )
        return display.plot(axes=axes)

    def plot(
        self, *, axes: Any = None, highlight: str | None = None
    ) -> ExplanationDisplay:
        """Draw the input and the neighbours, one row per layer.

        Parameters
        ----------
        axes : array of matplotlib Axes of shape (n_layers, n_neighbors + 1), \
                default=None
            Axes to draw on; ``None`` makes a new figure.
        highlight : str, default=None
            Colour of the highlighted neighbours; ``None`` takes
            ``PALETTE["wrong"]``.

        Returns
        -------
        display : ExplanationDisplay
            ``self``, with ``axes_`` and ``figure_`` set.
        """
        n_layers, n_neighbors = self.neighbor_labels.shape
        shape = (n_layers, n_neighbors + 1)
        if axes is None:
            import matplotlib.pyplot as plt

            fig, grid = plt.subplots(
                *shape,
                figsize=(1.4 * shape[1] + 0.4, 1.5 * n_layers + 0.4),
                squeeze=False,
                layout="constrained",
            )
        else:
            grid = np.asarray(axes, dtype=object)
            if grid.shape != shape:
                raise ValueError(f"axes must have shape {shape}; got {grid.shape}.")
            fig = grid[0, 0].figure
        highlight = PALETTE["wrong"] if highlight is None else highlight
        vmin, vmax = display_range(self.image, self.neighbor_images)
        shown = {"cmap": "gray", "vmin": vmin, "vmax": vmax}
        for row in range(n_layers):
            for ax in grid[row]:
                ax.set_xticks([])
                ax.set_yticks([])
            if row == 0:
                grid[0, 0].imshow(self.image, **shown)
                grid[0, 0].set_title(self._input_title(), fontsize="small")
            else:
                grid[row, 0].set_axis_off()
            grid[row, 1].set_ylabel(self.layers[row], fontsize="small")
            for j in range(n_neighbors):
                self._draw_neighbor(grid[row, j + 1], row, j, shown, highlight)
        self.legend_ = self._legend(fig, highlight)
        self.axes_: NDArray[Any] = grid
        self.figure_: Figure = fig
        return self

    def _compared_to(self) -> tuple[Any, str] | None:
        """What a neighbour's label is compared with, and its name."""
        if self.label is not None:
            return self.label, "the true label"
        if self.prediction is not None:
            return self.prediction, "the prediction"
        return None

    def _legend(self, fig: Figure, highlight: str) -> Any:
        compared = self._compared_to()
        if compared is None:
            return None
        from matplotlib.patches import Patch

        value, name = compared
        n_marked = int(np.sum(self.neighbor_labels != value))
        handles = [
            Patch(
                facecolor="white",
                edgecolor=highlight,
                linewidth=2,
                label=f"neighbour label is not {name} ({value}): "
                f"{n_marked} of {self.neighbor_labels.size}",
            ),
            Patch(
                facecolor="white",
                edgecolor="black",
                linewidth=0.8,
                label=f"neighbour label is {name}",
            ),
        ]
        # under the grid: constrained layout makes room for an "outside" legend;
        # on other figures it hangs below (saved whole with bbox_inches="tight")
        place: dict[str, Any] = (
            {"loc": "outside lower center"}
            if type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
            else {"loc": "upper center", "bbox_to_anchor": (0.5, 0.0)}
        )
        return fig.legend(
            handles=handles, ncol=1, frameon=False, fontsize="small", **place
        )

    def _input_title(self) -> str:
        title = "input" if self.label is None else f"input, label {self.label}"
        if self.prediction is not None:
            title += f"\npred {self.prediction}"
        if self.credibility is not None:
            title += f" (cred {self.credibility:.2f})"
        return title

    def _draw_neighbor(
        self, ax: Any, row: int, j: int, shown: dict[str, Any], highlight: str
    ) -> None:
        label = self.neighbor_labels[row, j]
        compared = self._compared_to()
        differs = compared is not None and label != compared[0]
        ax.imshow(self.neighbor_images[row, j], **shown)
        ax.set_title(
            str(label), color=highlight if differs else "black", fontsize="small"
        )
        if differs:
            for spine in ax.spines.values():
                spine.set_edgecolor(highlight)
                spine.set_linewidth(2)


def plot_explanation(
    estimator: Any,
    x: ArrayLike,
    X_train: ArrayLike,
    *,
    n_neighbors: int = 5,
    y_train: ArrayLike | None = None,
    label: Any = None,
) -> tuple[Figure, NDArray[Any]]:
    """An input and its nearest training images in each DkNN layer.

    Shortcut for :meth:`ExplanationDisplay.from_estimator`; see there for the
    parameters.

    Returns
    -------
    fig : matplotlib Figure
    axes : ndarray of matplotlib Axes of shape (n_layers, n_neighbors + 1)
        Column 0: the input (first row); column ``j + 1``: the ``j``-th neighbour.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_digits
    >>> from skdknn import DeepKNNClassifier
    >>> from skdknn.plotting import plot_explanation
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X[:400] / 16
    >>> clf = DeepKNNClassifier(n_neighbors=5, calibration_size=50, max_epochs=3,
    ...                         batch_size=64, random_state=0).fit(X, y[:400])
    >>> fig, axes = plot_explanation(clf, X[0], X, n_neighbors=4)
    >>> axes.shape
    (3, 5)
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    display = ExplanationDisplay.from_estimator(
        estimator, x, X_train, n_neighbors=n_neighbors, y_train=y_train, label=label
    )
    return display.figure_, display.axes_
