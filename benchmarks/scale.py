"""The DkNN at scale: a ResNet-18-shaped network, 10,000 to 50,000 images.

Three parts:

``scale``
    ``DeepKNNClassifier.fit`` on n images and ``predict_with_credibility`` on
    ``--n-query`` images, with the four stage outputs ``layer1`` .. ``layer4``
    (65,536 / 32,768 / 16,384 / 8,192 values on 3x32x32 input) and the logits as
    DkNN layers, and the documented projection recipe
    (``ProjectedBackend("exact", n_components=256, pca_samples=2000)``). Each size
    runs in a fresh process, which reports its wall times and its peak resident
    memory (``ru_maxrss``). The inputs are synthetic 3x32x32 images whose class
    sets their brightness (random noise otherwise); the weights are random.

    ``--net resnet18`` is the CIFAR ResNet-18 (``skdknn.nets.CifarResNet18``, the
    layout of torchvision's ``resnet18`` with a 3x3 stride-1 stem and no max
    pooling). ``--net standin`` (the default) has the same module names and the
    same stage output widths, with one 1x1 convolution per stage instead of two
    residual blocks: about 50 times fewer multiply-adds, so that the DkNN
    machinery (streaming, projection, indexes, searches), not the convolutions,
    is timed on a shared 2-core machine. A real ResNet-18 adds its own forward
    time, ``(n + n_query) / throughput`` (the script prints the throughput).

    ``--before DIR`` runs the same measurement with the skdknn package found in
    ``DIR`` (e.g. the released version, extracted with
    ``git archive f7a5284 skdknn | tar -x -C DIR``; stand-in network only, the
    released version has no ``CifarResNet18``); its ``predict`` side is
    ``neighbor_counts`` (one pass; it had no ``predict_with_credibility``).

``single-pass``
    ``predict`` + ``credibility`` + ``confidence`` + ``predict_set`` (four calls)
    against one ``predict_with_credibility``, on the DkNN paper's CNN and the
    embedded real-MNIST sample.

``grid``
    A 6-candidate ``GridSearchCV`` over ``n_neighbors`` and ``metric`` with a
    prefit network (3 folds), with and without ``memory=``.

``float16``
    ``ExactBackend(storage_dtype="float16")`` against float32 storage, at full
    width: DkNN accuracy, mean credibility, agreement of the predictions and of
    each layer's neighbour sets, index memory, on the paper CNN with the embedded
    real-MNIST sample and on the ResNet-18-shaped stand-in (synthetic images).

Run ``nice python benchmarks/scale.py --part scale --sizes 10000,25000,50000`` (the
stand-in takes about 20 minutes on 2 cores), ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STAGES = ["layer1", "layer2", "layer3", "layer4", "fc"]


# -- one size, in a fresh process -----------------------------------------------------
def standin(n_classes: int = 10):
    """A network with ResNet-18's module names and stage output widths, cheap."""
    import torch
    from torch import nn

    class Standin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 1, bias=False)
            self.relu = nn.ReLU()
            widths = [64, 64, 128, 256, 512]
            for i in range(4):
                pool = nn.Identity() if i == 0 else nn.AvgPool2d(2)
                stage = nn.Sequential(
                    pool, nn.Conv2d(widths[i], widths[i + 1], 1), nn.ReLU()
                )
                self.add_module(f"layer{i + 1}", stage)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.conv1(x))
            for i in range(1, 5):
                x = getattr(self, f"layer{i}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Standin()


def resnet18(n_classes: int = 10):
    """The CIFAR ResNet-18 with torchvision's layout (random weights)."""
    from skdknn.nets import CifarResNet18

    return CifarResNet18(n_classes=n_classes)


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    X = 0.5 * rng.random((n, 3, 32, 32), dtype=np.float32)
    X += 0.05 * y[:, None, None, None].astype(np.float32)
    return X, y


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads): on a shared
    machine, what the work cost, whatever the other processes took."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(args: argparse.Namespace) -> dict:
    """Fit on ``args.n`` images and predict ``args.n_query``; time and peak RSS."""
    import torch
    from sklearn.frozen import FrozenEstimator

    from skdknn import DeepKNNClassifier
    from skdknn.neighbors import ProjectedBackend

    torch.manual_seed(0)
    net = (resnet18 if args.net == "resnet18" else standin)().eval()
    X, y = images(args.n + args.n_query, seed=0)
    Xq, yq = X[args.n :], y[args.n :]
    X, y = X[: args.n], y[: args.n]
    base = peak_rss_mb()
    clf = DeepKNNClassifier(
        net=FrozenEstimator(net),
        layers=STAGES,
        n_neighbors=75,
        calibration_size=750,
        backend=ProjectedBackend(
            "exact", n_components=256, pca_samples=2000, random_state=0
        ),
        batch_size=250,
        random_state=0,
    )
    start, cpu = time.perf_counter(), cpu_seconds()
    clf.fit(X, y)
    fit_time, fit_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    fit_peak = peak_rss_mb()
    start, cpu = time.perf_counter(), cpu_seconds()
    if hasattr(clf, "predict_with_credibility"):
        prediction = clf.predict_with_credibility(Xq).prediction
    else:  # before: one query pass, the counts give the predictions
        from skdknn import conformal

        counts = clf.neighbor_counts(Xq)
        prediction = clf.classes_[conformal.predict_from_counts(counts)]
    predict_time, predict_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    index_mb = (
        sum(getattr(b.backend_, "_fit_X", np.empty(0)).nbytes for b in clf.backends_)
        / 2**20
    )
    return {
        "n": args.n,
        "n_query": args.n_query,
        "fit_s": fit_time,
        "predict_s": predict_time,
        "fit_cpu_s": fit_cpu,
        "predict_cpu_s": predict_cpu,
        "start_rss_mb": base,
        "fit_peak_rss_mb": fit_peak,
        "peak_rss_mb": peak_rss_mb(),
        "index_mb": index_mb,
        "input_mb": (X.nbytes + Xq.nbytes) / 2**20,
        "accuracy": float(np.mean(prediction == yq)),
    }


def part_scale(args: argparse.Namespace) -> None:
    label = "before" if args.before else "after"
    env = dict(os.environ)
    if args.before:
        env["PYTHONPATH"] = str(Path(args.before).resolve())
    print(f"\n## Scale ({label}; net={args.net}; synthetic images, random weights)\n")
    print(
        "| n fit | n predict | fit: wall / CPU (s) | predict: wall / CPU (s) | "
        "peak RSS after fit (MB) | peak RSS (MB) | indexes (MB) | "
        "input arrays (MB) | accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--n-query",
            str(args.n_query),
            "--net",
            args.net,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"| {n} | {args.n_query} | failed: {out.stderr.strip()[-300:]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['n']:,} | {r['n_query']:,} | {r['fit_s']:.0f} / "
            f"{r['fit_cpu_s']:.0f} | {r['predict_s']:.0f} / {r['predict_cpu_s']:.0f} | "
            f"{r['fit_peak_rss_mb']:,.0f} | "
            f"{r['peak_rss_mb']:,.0f} | {r['index_mb']:,.0f} | {r['input_mb']:,.0f} | "
            f"{r['accuracy']:.3f} |",
            flush=True,
        )


def throughput(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    net = resnet18().eval()
    x = torch.rand(250, 3, 32, 32)
    with torch.inference_mode():
        net(x[:10])
        start = time.perf_counter()
        net(x)
    rate = 250 / (time.perf_counter() - start)
    print(f"\nCIFAR ResNet-18 forward pass: {rate:.0f} images/s (batch 250)")


# -- one pass against four ---------------------------------------------------------
def part_single_pass(args: argparse.Namespace) -> None:
    from skdknn import DeepKNNClassifier
    from skdknn.datasets import load_mnist

    X, y = load_mnist(return_X_y=True)
    clf = DeepKNNClassifier(
        n_neighbors=75, max_epochs=1 if args.quick else 3, random_state=0
    ).fit(X[:4000], y[:4000])
    Xq = X[4000:]
    print(f"\n## One pass against four (paper CNN, {len(Xq)} queries)\n")
    print("| calls | time (s) |")
    print("|---|---|")
    start = time.perf_counter()
    four = (
        clf.predict(Xq),
        clf.credibility(Xq),
        clf.confidence(Xq),
        clf.predict_set(Xq, 0.1),
    )
    separate = time.perf_counter() - start
    start = time.perf_counter()
    result = clf.predict_with_credibility(Xq)
    single = time.perf_counter() - start
    assert (four[0] == result.prediction).all()
    assert (four[1] == result.credibility).all()
    assert (four[2] == result.confidence).all()
    assert (four[3] == (result.p_values > 0.1)).all()
    print(f"| predict + credibility + confidence + predict_set | {separate:.2f} |")
    print(f"| predict_with_credibility | {single:.2f} |")
    print(f"\nspeed-up: {separate / single:.1f}x (same outputs, bit for bit)")


# -- grid search with and without the activation cache ------------------------------
def part_grid(args: argparse.Namespace) -> None:
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import GridSearchCV

    from skdknn import DeepKNNClassifier
    from skdknn.datasets import load_mnist

    X, y = load_mnist(return_X_y=True)
    X, y = X[:3000], y[:3000]
    clf = DeepKNNClassifier(
        n_neighbors=25, calibration_size=200, max_epochs=1, random_state=0
    ).fit(X, y)
    grid = {"n_neighbors": [10, 25, 75], "metric": ["euclidean", "cosine"]}
    print("\n## GridSearchCV, 6 candidates x 3 folds, prefit paper CNN, 3,000 images\n")
    print("| memory | time (s) |")
    print("|---|---|")
    times = {}
    for label in ("None", "a cache directory (empty at start)"):
        with tempfile.TemporaryDirectory() as cache:
            search = GridSearchCV(
                DeepKNNClassifier(
                    net=FrozenEstimator(clf.net_),
                    calibration_size=200,
                    random_state=0,
                    memory=None if label == "None" else cache,
                ),
                grid,
                cv=3,
            )
            start = time.perf_counter()
            search.fit(X, y)
            times[label] = time.perf_counter() - start
        print(f"| {label} | {times[label]:.1f} |", flush=True)


# -- float16 against float32 storage of full-width exact indexes ----------------
def _compare_storage(
    label: str, make_clf, X: np.ndarray, y: np.ndarray, Xq: np.ndarray, yq: np.ndarray
) -> None:
    from skdknn.neighbors import ExactBackend

    out = {}
    for dtype in ("float32", "float16"):
        clf = make_clf(ExactBackend(storage_dtype=dtype))
        start = time.perf_counter()
        clf.fit(X, y)
        result = clf.predict_with_credibility(Xq, return_neighbors=True)
        elapsed = time.perf_counter() - start
        index_mb = sum(b._fit_X.nbytes for b in clf.backends_) / 2**20
        out[dtype] = (result, elapsed, index_mb)
        del clf
    r32, r16 = out["float32"][0], out["float16"][0]
    k = r32.neighbors.shape[2]
    same_set = [
        np.mean(
            [
                len(np.intersect1d(a, b, assume_unique=True)) / k
                for a, b in zip(
                    r32.neighbors[:, layer], r16.neighbors[:, layer], strict=True
                )
            ]
        )
        for layer in range(r32.neighbors.shape[1])
    ]
    for dtype, (r, elapsed, index_mb) in out.items():
        agree = " / ".join(f"{v:.4f}" for v in same_set) if dtype == "float16" else ""
        print(
            f"| {label} | {dtype} | {index_mb:,.0f} | "
            f"{np.mean(r.prediction == yq):.4f} | "
            f"{r.credibility.mean():.4f} | "
            f"{np.mean(r.prediction == r32.prediction):.4f} | "
            f"{np.abs(r.credibility - r32.credibility).max():.4f} | {agree} | "
            f"{elapsed:.0f} |",
            flush=True,
        )


def part_float16(args: argparse.Namespace) -> None:
    import torch
    from sklearn.frozen import FrozenEstimator

    from skdknn import DeepKNNClassifier
    from skdknn.datasets import load_mnist

    print("\n## float16 against float32 storage of full-width exact indexes\n")
    print(
        "| network | storage | indexes (MB) | DkNN accuracy | mean credibility | "
        "same prediction as float32 | max credibility change | "
        "same neighbours per layer | fit + predict (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    X, y = load_mnist(return_X_y=True)
    n_fit = 1000 if args.quick else 4000
    cnn = DeepKNNClassifier(
        n_neighbors=75, max_epochs=1 if args.quick else 3, random_state=0
    ).fit(X[:n_fit], y[:n_fit])
    _compare_storage(
        f"paper CNN, embedded MNIST ({n_fit:,} fit, {len(X) - n_fit:,} test)",
        lambda backend: DeepKNNClassifier(
            net=FrozenEstimator(cnn.net_),
            n_neighbors=75,
            backend=backend,
            random_state=0,
        ),
        X[:n_fit],
        y[:n_fit],
        X[n_fit:],
        y[n_fit:],
    )
    n, n_query = (1000, 200) if args.quick else (4000, 1000)
    torch.manual_seed(0)
    net = standin().eval()
    Xs, ys = images(n + n_query, seed=0)
    _compare_storage(
        f"ResNet-18-shaped stand-in, stage outputs ({n:,} fit, {n_query:,} test)",
        lambda backend: DeepKNNClassifier(
            net=FrozenEstimator(net),
            layers=STAGES,
            n_neighbors=75,
            calibration_size=750,
            backend=backend,
            batch_size=250,
            random_state=0,
        ),
        Xs[:n],
        ys[:n],
        Xs[n:],
        ys[n:],
    )


def machine() -> str:
    import sklearn
    import torch

    import skdknn

    sys.path.insert(0, str(HERE))
    from _machine import cpu_model, load_average, skdknn_revision

    return (
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{platform.platform()}; {cpu_model()}, {os.cpu_count()} cores, "
        f"load {load_average()}; Python {platform.python_version()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), scikit-learn "
        f"{sklearn.__version__}, skdknn {skdknn.__version__} ({skdknn_revision()})"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        choices=["scale", "single-pass", "grid", "float16", "all"],
        default="all",
    )
    parser.add_argument("--sizes", default="10000,25000,50000")
    parser.add_argument("--n-query", type=int, default=10_000)
    parser.add_argument("--net", choices=["standin", "resnet18"], default="standin")
    parser.add_argument("--before", default=None, help="skdknn package directory")
    parser.add_argument("--quick", action="store_true", help="smoke run, small sizes")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        args.sizes, args.n_query = [2000, 4000], 500
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        args.n = args.one
        print(json.dumps(run_one(args)))
        return 0
    print(machine())
    if args.part in ("scale", "all"):
        part_scale(args)
        if args.net == "resnet18" or args.quick:
            throughput(args)
    if args.part in ("single-pass", "all"):
        part_single_pass(args)
    if args.part in ("grid", "all"):
        part_grid(args)
    if args.part in ("float16", "all"):
        part_float16(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
