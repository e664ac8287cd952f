"""The main job: train the paper CNN on MNIST, fit the DkNN and report accuracy."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from ._classifier import DeepKNNClassifier
from .datasets import load_mnist

__all__ = ["ReportConfig", "run_report"]


@dataclass
class ReportConfig:
    """Settings of ``skdknn report`` (defaults: the DkNN paper's, on the sample)."""

    data_dir: str | None = None
    out: str = "skdknn_report"
    test_size: int = 1000
    max_epochs: int = 15
    calibration_size: int = 750
    random_state: int = 0
    verbose: int = 0
    variants: list[tuple[int, str]] = field(
        default_factory=lambda: [(75, "euclidean"), (75, "cosine"), (10, "cosine")]
    )

    @classmethod
    def quick(cls, **overrides: Any) -> ReportConfig:
        """A run of seconds: fewer epochs and test images, smaller k."""
        settings: dict[str, Any] = {
            "test_size": 300,
            "max_epochs": 3,
            "calibration_size": 300,
            "variants": [(25, "euclidean"), (25, "cosine")],
        }
        settings.update(overrides)
        return cls(**settings)


def _load(config: ReportConfig) -> tuple[np.ndarray, ...]:
    if config.data_dir is None:
        X, y = load_mnist(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(
            X,
            y,
            test_size=config.test_size,
            stratify=y,
            random_state=config.random_state,
        )
        return X_train, X_test, y_train, y_test
    X_train, y_train = load_mnist(config.data_dir, subset="train", return_X_y=True)
    X_test, y_test = load_mnist(config.data_dir, subset="test", return_X_y=True)
    return X_train, X_test[: config.test_size], y_train, y_test[: config.test_size]


def run_report(config: ReportConfig) -> dict[str, Any]:
    """Train the CNN, fit DkNN variants on its layers, print and save the numbers.

    The network is trained once (by the first DkNN) and reused, frozen, by the other
    variants, which only rebuild their neighbour indexes.
    """
    started = time.perf_counter()
    X_train, X_test, y_train, y_test = _load(config)
    n_indexed = len(X_train) - config.calibration_size
    print(
        f"MNIST: {len(X_train)} training images ({n_indexed} indexed, "
        f"{config.calibration_size} calibration), {len(X_test)} held-out test images"
    )
    (k0, metric0), *others = config.variants
    base = DeepKNNClassifier(
        n_neighbors=k0,
        metric=metric0,
        calibration_size=config.calibration_size,
        max_epochs=config.max_epochs,
        random_state=config.random_state,
        verbose=config.verbose,
    )
    print(f"Training the DkNN paper CNN for {config.max_epochs} epochs ...", flush=True)
    base.fit(X_train, y_train)
    cnn_accuracy = float(np.mean(base.net_.predict(X_test) == y_test))
    rows = [{"model": "CNN (DkNN paper architecture)", "accuracy": cnn_accuracy}]
    rows.append(_dknn_row(base, X_test, y_test))
    frozen = FrozenEstimator(base.net_)
    for k, metric in others:
        # same rows, split and seed: the frozen network never saw the calibration set
        dknn = clone(base).set_params(n_neighbors=k, metric=metric, net=frozen)
        rows.append(_dknn_row(dknn.fit(X_train, y_train), X_test, y_test))
    _print_table(rows)
    results = {
        "config": asdict(config),
        "n_train": len(X_train),
        "n_test": len(X_test),
        "results": rows,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"Numbers written to {out / 'results.json'} ({results['wall_time_s']} s)")
    return results


def _dknn_row(
    dknn: DeepKNNClassifier, X_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    return {
        "model": f"DkNN k={dknn.n_neighbors} {dknn.metric}",
        "accuracy": float(dknn.score(X_test, y_test)),
        "mean_credibility": float(dknn.credibility(X_test).mean()),
        "layers": list(dknn.layers_),
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'model':<34} {'accuracy':>9} {'mean credibility':>17}")
    for row in rows:
        cred = row.get("mean_credibility")
        cred_text = f"{cred:17.3f}" if cred is not None else f"{'-':>17}"
        print(f"{row['model']:<34} {100 * row['accuracy']:8.1f}% {cred_text}")
    print()
