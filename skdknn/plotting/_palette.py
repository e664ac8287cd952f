"""One palette for every figure, so that a colour means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["PALETTE", "input_colors", "model_color", "model_colors"]

#: The colours of :mod:`skdknn.plotting`, by what they stand for. Models: the
#: ``"CNN"`` (and its softmax confidence), the single-layer ``"kNN"`` and the
#: ``"DkNN"`` (and its credibility). Inputs: ``"clean"`` (in-distribution) images,
#: ``"adversarial"`` ones and ``"out-of-distribution"`` ones (several sets of a kind
#: get shades of its colour). ``"wrong"``: a label that is not the true label (a
#: wrong prediction, a neighbour of another class). ``"reference"``: reference
#: lines (``accuracy = score``) and counts.
PALETTE: dict[str, str] = {
    "CNN": "#7f7f7f",
    "kNN": "#ff7f0e",
    "DkNN": "#1f77b4",
    "clean": "#2ca02c",
    "adversarial": "#9467bd",
    "out-of-distribution": "#8c564b",
    "wrong": "#d62728",
    "reference": "#000000",
}

#: Colours of models the palette does not name, in order.
_OTHER_MODELS = ("#17becf", "#bcbd22", "#e377c2", "#393b79")


def _named_model(name: str) -> str | None:
    lower = str(name).lower()
    if "dknn" in lower or "credibility" in lower:
        return "DkNN"
    if "knn" in lower:
        return "kNN"
    if "cnn" in lower or "dnn" in lower or "softmax" in lower:
        return "CNN"
    return None


def model_color(name: str) -> str:
    """The colour of a model, or of its score, from its name: ``"DkNN"`` or a name
    with "credibility" -> DkNN; "kNN" -> kNN; "CNN", "DNN" or "softmax" -> CNN;
    any other name the first colour the palette leaves free."""
    return model_colors([name])[name]


def model_colors(names: Iterable[str]) -> dict[str, str]:
    """Colours of several models (see :func:`model_color`); the models the palette
    does not name get the free colours in order."""
    colors: dict[str, str] = {}
    free = 0
    for name in names:
        named = _named_model(name)
        if named is None:
            colors[name] = _OTHER_MODELS[free % len(_OTHER_MODELS)]
            free += 1
        else:
            colors[name] = PALETTE[named]
    return colors


def _shade(color: str, position: float) -> str:
    """``color`` mixed with white (position < 0.5) or black (> 0.5)."""
    from matplotlib.colors import to_hex, to_rgb

    rgb = np.asarray(to_rgb(color))
    if position < 0.5:
        mixed = rgb + (1 - rgb) * (0.5 - position) * 1.2  # up to 60 % white
    else:
        mixed = rgb * (1 - (position - 0.5))  # up to 50 % black
    red, green, blue = (float(c) for c in mixed)
    return str(to_hex((red, green, blue)))


def input_colors(
    names: Iterable[str], *, reference: str | None, kind: str = "adversarial"
) -> dict[str, str]:
    """Colours of sets of inputs: ``reference`` (clean or in-distribution inputs)
    in the ``"clean"`` colour, the others in shades of the ``kind`` colour
    (``"adversarial"`` or ``"out-of-distribution"``), light to dark in order."""
    others = [name for name in names if name != reference]
    colors = {} if reference is None else {reference: PALETTE["clean"]}
    for i, name in enumerate(others):
        position = 0.5 if len(others) == 1 else i / (len(others) - 1)
        colors[name] = _shade(PALETTE[kind], position)
    return colors
