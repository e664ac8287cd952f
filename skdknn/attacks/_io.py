"""Lossless storage of adversarial sets with the attack's settings and metrics."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import Bunch

from .._version import __version__

__all__ = ["load_adversarial", "save_adversarial"]

_FORMAT = "skdknn-adversarial-1"


def _jsonable(value: Any) -> Any:
    """Parameters as JSON: arrays as lists, estimators and callables by their repr."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def save_adversarial(
    path: str | os.PathLike[str],
    X_adv: ArrayLike,
    *,
    attack: Any = None,
    y: ArrayLike | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save an adversarial set, losslessly, with the attack's settings and metrics.

    Expensive sets (BIM at the paper's 100 steps) are computed once and reloaded.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.npz`` file (the suffix is added if missing).
    X_adv : array-like
        The adversarial examples; stored in their floating dtype, bit for bit.
    attack : estimator, default=None
        The attack that made them; its parameters are stored (the attacked model by
        its repr).
    y : array-like, default=None
        Labels to keep with the set (e.g. the true labels).
    metrics : dict, default=None
        Numbers measured on the set (JSON-serialisable values).

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> X_adv = np.random.default_rng(0).random((3, 1, 2, 2), dtype=np.float32)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     f = save_adversarial(os.path.join(tmp, "fgsm"), X_adv, metrics={"acc": 0.5})
    ...     loaded = load_adversarial(f)
    >>> np.array_equal(loaded.X_adv, X_adv), loaded.metrics
    (True, {'acc': 0.5})
    """
    X = np.asarray(X_adv)
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"X_adv must hold floating-point values; got {X.dtype}.")
    target = Path(path)
    if target.suffix != ".npz":
        target = target.with_name(target.name + ".npz")
    params = {} if attack is None else _jsonable(attack.get_params(deep=False))
    header = {
        "format": _FORMAT,
        "skdknn_version": __version__,
        "attack": None if attack is None else type(attack).__name__,
        "params": params,
        "metrics": _jsonable(metrics or {}),
    }
    arrays: dict[str, Any] = {"X_adv": X, "header": np.array(json.dumps(header))}
    if y is not None:
        arrays["y"] = np.asarray(y)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot write the adversarial set {os.fspath(target)!r}: the directory "
            f"{os.fspath(target.parent)!r} does not exist."
        )
    tmp = target.with_name(f".{target.name}.part")
    try:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(tmp, target)  # never leave a half-written set under the final name
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OSError(
            error.errno,
            f"Cannot write the adversarial set {os.fspath(target)!r}: "
            f"{error.strerror or error}",
        ) from error
    return target


def load_adversarial(path: str | os.PathLike[str]) -> Bunch:
    """Load a set written by :func:`save_adversarial`.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``X_adv``, ``y`` (or None), ``attack`` (class name), ``params``,
        ``metrics`` and ``skdknn_version``.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When the file is not an adversarial set written by skdknn.
    """
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"No adversarial set at {target}.")
    try:
        with np.load(target, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            X_adv = data["X_adv"]
            y = data["y"] if "y" in data.files else None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{target} is not an adversarial set written by skdknn.attacks."
            f"save_adversarial ({error})."
        ) from None
    if header.get("format") != _FORMAT:
        raise ValueError(f"{target} has unknown format {header.get('format')!r}.")
    return Bunch(
        X_adv=X_adv,
        y=y,
        attack=header["attack"],
        params=header["params"],
        metrics=header["metrics"],
        skdknn_version=header["skdknn_version"],
    )
