"""Warnings attributed to the user's line, whichever public method raised them.

A hard-coded ``stacklevel`` is right for one call path only: the same check
reached from ``transform`` (which calls ``generate``), from ``fit_transform``
(through scikit-learn's ``set_output`` wrapper) or from a ``Pipeline`` sits a
different number of frames below the user's code. :func:`warn` counts them.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn"]

#: Packages (and modules) whose frames stand between the user's code and skdknn's
#: check: skdknn itself, scikit-learn (``Pipeline``, ``fit_transform``'s
#: ``set_output`` wrapper, ``BaseEstimator.__setstate__``) and the loaders that
#: unpickle a model (joblib, skops, and the pure-Python ``pickle`` joblib runs).
#: Only those already imported can be on the stack.
_CALLED_THROUGH = ("skdknn", "sklearn", "joblib", "skops", "pickle")


def _prefixes() -> tuple[str, ...]:
    """Where the files of ``_CALLED_THROUGH`` lie: a package's directory, or a
    module's own file."""
    prefixes = []
    for name in _CALLED_THROUGH:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path is None:
            continue
        if os.path.basename(path) == "__init__.py":
            prefixes.append(os.path.dirname(path) + os.sep)
        else:
            prefixes.append(path)
    return tuple(prefixes)


def warn(message: str | Warning, category: type[Warning] | None = None) -> None:
    """``warnings.warn`` at the first frame outside skdknn (the user's line).

    Frames of skdknn and of the libraries it is called through (see
    ``_CALLED_THROUGH``) are skipped, as ``warnings.warn(skip_file_prefixes=...)``
    does from Python 3.12 on; this works on 3.10 too. When no frame lies outside
    them, the outermost frame gets the warning.
    """
    prefixes = _prefixes()
    frame = sys._getframe(1)
    stacklevel = 2  # 1 is this function's own line
    while frame.f_back is not None and frame.f_code.co_filename.startswith(prefixes):
        frame = frame.f_back
        stacklevel += 1
    warnings.warn(message, category, stacklevel=stacklevel)
