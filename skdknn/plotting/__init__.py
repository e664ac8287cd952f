"""Plots of DkNN credibility, attacks, neighbours and out-of-distribution inputs.

matplotlib only, imported when a plot is drawn. Every function returns the figure
and its axes; the ``*Display`` classes follow scikit-learn's pattern: they hold the
computed numbers, are built with ``from_estimator`` / ``from_predictions`` and
``plot(ax=...)`` sets ``ax_`` (or ``axes_``) and ``figure_``. Every figure takes
its colours from :data:`PALETTE`, so that a colour means one thing in all of them
(a model, clean / adversarial / out-of-distribution inputs, a wrong label).
"""

from ._attacks import (
    plot_accuracy_vs_distortion,
    plot_accuracy_vs_eps,
    plot_adversarial_grid,
)
from ._explain import ExplanationDisplay, plot_explanation
from ._histograms import plot_credibility_histograms, plot_ood
from ._neighbors import plot_neighbor_correctness
from ._palette import PALETTE
from ._reliability import (
    ReliabilityDisplay,
    plot_reliability_diagrams,
    plot_reliability_diagrams_from_predictions,
)

__all__ = [
    "PALETTE",
    "ExplanationDisplay",
    "ReliabilityDisplay",
    "plot_accuracy_vs_distortion",
    "plot_accuracy_vs_eps",
    "plot_adversarial_grid",
    "plot_credibility_histograms",
    "plot_explanation",
    "plot_neighbor_correctness",
    "plot_ood",
    "plot_reliability_diagrams",
    "plot_reliability_diagrams_from_predictions",
]
