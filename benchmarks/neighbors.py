"""Benchmark of the neighbour backends, on real activations and at paper scale.

Two parts, both on activations of the DkNN paper's CNN trained on the embedded
real-MNIST sample (4,000 training images, 1,000 held-out images):

``real``
    The DkNN itself on the embedded sample: 3,250 indexed images, 750 calibration
    images, 1,000 test images. For each backend the same network is refitted
    (``FrozenEstimator``) and compared with the exact run: neighbour recall@75 per
    layer, DkNN accuracy, mean credibility, agreement of the predictions, time.
``paper``
    Paper scale: 60,000 indexed points and 10,000 queries at the CNN's widths
    (12,544 / 3,200 / 128 / 10), k = 75. The inputs are replicated real images:
    each training image is shifted by up to 2 pixels and given a little noise, 15
    times over (and each held-out image 10 times over for the queries), then passed
    through the network, so the features are real CNN activations of digit-like
    images. Two tables:

    * per layer and backend: build time, query time, recall@75 against exact search,
      peak extra memory (resident set size sampled during build and queries);
    * end to end: ``DeepKNNClassifier.fit`` (forward passes and indexing of 60,750
      images, 750 of them held out for calibration) plus the neighbour counts of the
      10,000 queries (one query pass gives the predictions and the credibilities),
      with the DkNN accuracy on the replicated held-out images against the exact run.

Run ``python benchmarks/neighbors.py`` (both parts, about 20 minutes on 2 cores) or
``--quick`` for a smoke run of a few minutes at 1/10 of the paper's scale.

``--part end-to-end --before DIR`` instead times the first ``--end-to-end``
configuration with two skdknn versions in one run: the skdknn package in ``DIR``
(e.g. the released version: ``git worktree add DIR f7a5284``) and this one, each
in a fresh process given the same trained weights and the same images, one after
the other; it prints both times, their ratio and whether the predictions agree.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator

import skdknn
from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist
from skdknn.neighbors import make_backend

K = 75


#: The configurations compared: recipes of :func:`skdknn.neighbors.make_backend`
#: (the same strings ``DeepKNNClassifier(backend=...)`` and ``skdknn report
#: --backend`` accept), with the settings that differ from the defaults.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "exact": {},
    "annoy": {},
    "pynndescent": {},
    "lsh": {},
    "faiss": {},
    "faiss-ivf": {},
    "pca256+exact": {},
    "pca128+exact": {"pca_samples": 5000, "pca_power_iterations": 1},
    "pca128+faiss-ivf": {"pca_samples": 5000, "pca_power_iterations": 1},
    "random256+exact": {},
    "pca256+annoy": {},
    "pca256+pynndescent": {},
    "pca256+lsh": {},
}


def configured(recipe: str, seed: int) -> Any:
    """One configuration, seeded."""
    backend = make_backend(recipe)
    params = CONFIGURATIONS[recipe]
    if "random_state" in backend.get_params():
        params = {"random_state": seed, **params}
    return backend.set_params(**params)


def backends(seed: int) -> dict[str, Any]:
    """The configurations compared, seeded."""
    return {recipe: configured(recipe, seed) for recipe in CONFIGURATIONS}


#: Backends too slow to run on a 12,544- or 3,200-wide layer of 60,000 points
#: (Annoy's leaves hold up to ``width`` points and its distances are scalar code;
#: PyNNDescent's graph build computes millions of full-width distances; LSH
#: re-ranks about a thousand candidates per query by gathering their full-width
#: rows, which ran for more than 7 minutes on the 12,544-wide layer, against 160 s
#: for exact search).
FULL_WIDTH_SKIP = {"annoy", "pynndescent", "lsh"}


# ---------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------
def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system, so that the
    next measurement starts from what is really in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident set size above the starting one, sampled every 20 ms."""

    def __enter__(self) -> PeakMemory:
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def recall(ours: np.ndarray, reference: np.ndarray) -> float:
    """Mean share of each query's reference neighbours found by ``ours``."""
    k = reference.shape[1]
    hits = (ours[:, :, None] == reference[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip() for line in f if "model name" in line
            )
    except (OSError, StopIteration):
        pass
    return (
        f"{datetime.date.today()} | {cpu}, {os.cpu_count()} cores | Python "
        f"{platform.python_version()}, torch {torch.__version__}, numpy "
        f"{np.__version__}, scikit-learn {sklearn.__version__}, skdknn "
        f"{skdknn.__version__} | load avg {os.getloadavg()[0]:.1f}"
    )


# ---------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------
def mnist_split(seed: int) -> tuple[np.ndarray, ...]:
    # stored order: the permutation below is that of the published runs
    X, y = load_mnist(return_X_y=True, shuffle=False)
    rows = np.random.default_rng(seed).permutation(y.size)
    X, y = X[rows], y[rows]
    return X[:4000], y[:4000], X[4000:], y[4000:]


def replicate(
    X: np.ndarray, y: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, ...]:
    """n images: copies of X shifted by up to 2 pixels, with gaussian noise 0.05."""
    rng = np.random.default_rng(seed)
    source = np.arange(n) % X.shape[0]
    out = np.empty((n, *X.shape[1:]), dtype=np.float32)
    shifts = rng.integers(-2, 3, size=(n, 2))
    for dy, dx in {tuple(s) for s in shifts}:
        rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
        out[rows] = np.roll(X[source[rows]], (dy, dx), axis=(2, 3))
    out += rng.normal(scale=0.05, size=out.shape).astype(np.float32)
    np.clip(out, 0, 1, out=out)
    return out, y[source]


def dknn(net: Any, backend: Any, seed: int) -> DeepKNNClassifier:
    return DeepKNNClassifier(
        net=FrozenEstimator(net), backend=backend, random_state=seed
    )


def run_dknn(
    net: Any, backend: Any, X: np.ndarray, y: np.ndarray, Xq: np.ndarray, seed: int
) -> dict[str, Any]:
    """Fit + one query pass; predictions, credibility and neighbours."""
    clf = dknn(net, backend, seed)
    start = time.perf_counter()
    clf.fit(X, y)
    result = clf.predict_with_credibility(Xq)
    elapsed = time.perf_counter() - start
    return {
        "clf": clf,
        "time": elapsed,
        "pred": result.prediction,
        "cred": result.credibility,
    }


# ---------------------------------------------------------------------------------
# Part 1: the DkNN on the embedded sample
# ---------------------------------------------------------------------------------
def part_real(
    net: Any, data: tuple[np.ndarray, ...], names: Sequence[str], seed: int
) -> None:
    X, y, Xt, yt = data
    print("\n## Real activations: the DkNN on the embedded MNIST sample")
    print("3,250 indexed, 750 calibration, 1,000 test images; k = 75\n")
    print(
        "| backend | recall@75 per layer | DkNN accuracy | mean credibility | "
        "same prediction as exact | fit + predict (s) |"
    )
    print("|---|---|---|---|---|---|")
    configs = backends(seed)
    ref = run_dknn(net, configs["exact"], X, y, Xt, seed)
    ref_ind = ref["clf"].kneighbors(Xt)[1]
    for name in names:
        out = ref if name == "exact" else run_dknn(net, configs[name], X, y, Xt, seed)
        ind = out["clf"].kneighbors(Xt)[1]
        recalls = [recall(ind[:, layer], ref_ind[:, layer]) for layer in range(4)]
        print(
            f"| {name} | {' / '.join(f'{r:.3f}' for r in recalls)} | "
            f"{np.mean(out['pred'] == yt):.4f} | {out['cred'].mean():.4f} | "
            f"{np.mean(out['pred'] == ref['pred']):.4f} | {out['time']:.1f} |",
            flush=True,
        )


# ---------------------------------------------------------------------------------
# Part 2: paper scale
# ---------------------------------------------------------------------------------
def part_paper(
    net: Any,
    data: tuple[np.ndarray, ...],
    names: Sequence[str],
    end_to_end: Sequence[str],
    n_train: int,
    n_query: int,
    seed: int,
) -> None:
    X, y, Xt, yt = data
    Xr, yr = replicate(X, y, n_train + 750, seed)
    Xqr, yqr = replicate(Xt, yt, n_query, seed + 1)
    print(f"\n## Paper scale: {n_train:,} indexed x {n_query:,} queries, k = {K}")
    if names:
        per_layer(net, Xr, yr, Xqr, names, n_train, seed)
    if end_to_end:
        end_to_end_table(net, Xr, yr, Xqr, yqr, end_to_end, seed)


def per_layer(
    net: Any,
    Xr: np.ndarray,
    yr: np.ndarray,
    Xqr: np.ndarray,
    names: Sequence[str],
    n_train: int,
    seed: int,
) -> None:
    """Build, query, recall and memory of each backend on each layer."""
    from skdknn._activations import extract_activations

    # per layer, on the activations of the replicated images
    probe = dknn(net, "exact", seed).fit(Xr[:1000], yr[:1000])
    layers = probe.layers_
    module, batch = probe.module_, probe.batch_size
    train_acts = extract_activations(module, Xr[:n_train], layers, batch_size=batch)
    query_acts = extract_activations(module, Xqr, layers, batch_size=batch)
    widths = [a.shape[1] for a in train_acts]
    print("\n### Per layer\n")
    print(
        "| backend | width | build (s) | query (s) | recall@75 | "
        "peak extra memory (MB) |"
    )
    print("|---|---|---|---|---|---|")
    configs = backends(seed)
    exact_ind = []
    for layer, (train, query) in enumerate(zip(train_acts, query_acts, strict=True)):
        for name in names:
            if name in FULL_WIDTH_SKIP and widths[layer] > 256:
                print(f"| {name} | {widths[layer]} | not run (see above) | | | |")
                continue
            backend = clone(configs[name]).set_params(n_neighbors=K)
            release_memory()
            with PeakMemory() as memory:
                _, build = timed(lambda b=backend, t=train: b.fit(t))
                ind, query_time = timed(
                    lambda b=backend, q=query: b.kneighbors(q, return_distance=False)
                )
            if name == "exact":
                exact_ind.append(ind)
            r = recall(ind, exact_ind[layer])
            print(
                f"| {name} | {widths[layer]} | {build:.1f} | {query_time:.1f} | "
                f"{r:.3f} | {memory.extra_mb:.0f} |",
                flush=True,
            )
            del backend
    del train_acts, query_acts, probe
    gc.collect()


def end_to_end_table(
    net: Any,
    Xr: np.ndarray,
    yr: np.ndarray,
    Xqr: np.ndarray,
    yqr: np.ndarray,
    end_to_end: Sequence[str],
    seed: int,
) -> None:
    """DkNN fit + neighbour counts of the queries, per configuration."""
    configs = backends(seed)
    print("\n### End to end (DkNN fit on the replicated training images + queries)\n")
    print(
        "| backend | fit + neighbour counts (s) | speed-up | DkNN accuracy | "
        "mean credibility | same prediction as exact |"
    )
    print("|---|---|---|---|---|---|")
    ref = None
    for name in end_to_end:
        gc.collect()
        out = run_dknn(net, configs[name], Xr, yr, Xqr, seed)
        ref = ref or out
        print(
            f"| {name} | {out['time']:.1f} | {ref['time'] / out['time']:.1f}x | "
            f"{np.mean(out['pred'] == yqr):.4f} | {out['cred'].mean():.4f} | "
            f"{np.mean(out['pred'] == ref['pred']):.4f} |",
            flush=True,
        )
        del out["clf"]


# ---------------------------------------------------------------------------------
# Two versions in one run: end to end, each in a fresh process
# ---------------------------------------------------------------------------------
def _version_child(directory: str, backend: str, seed: int) -> None:
    """Fit + neighbour counts with whichever skdknn is importable; print JSON."""
    from skdknn import conformal
    from skdknn.nets import DkNNPaperCNN

    module = DkNNPaperCNN()
    module.load_state_dict(torch.load(f"{directory}/net.pt"))
    module.eval()
    data = np.load(f"{directory}/data.npz")
    clf = dknn(module, configured(backend, seed), seed)
    start = time.perf_counter()
    clf.fit(data["X"], data["y"])
    counts = clf.neighbor_counts(data["Xq"])  # one query pass in both versions
    elapsed = time.perf_counter() - start
    prediction = clf.classes_[conformal.predict_from_counts(counts)]
    np.save(f"{directory}/prediction-{os.getpid()}.npy", prediction)
    print(
        json.dumps(
            {
                "time": elapsed,
                "version": skdknn.__version__,
                "file": skdknn.__file__,
                "prediction": f"{directory}/prediction-{os.getpid()}.npy",
            }
        )
    )


def before_after(
    module: Any, data: tuple[np.ndarray, ...], args: argparse.Namespace
) -> None:
    """The first end-to-end configuration, before (``args.before``) and after."""
    X, y, Xt, yt = data
    Xr, yr = replicate(X, y, args.n_train + 750, args.seed)
    Xqr, yqr = replicate(Xt, yt, args.n_query, args.seed + 1)
    backend = args.end_to_end[0]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    versions = [("before", os.path.abspath(args.before)), ("after", here)]
    print(f"\n### End to end, two versions ({backend}; fit + neighbour counts)\n")
    print("| version | skdknn | fit + neighbour counts (s) | DkNN accuracy |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        torch.save(module.state_dict(), f"{directory}/net.pt")
        np.savez(f"{directory}/data.npz", X=Xr, y=yr, Xq=Xqr)
        del Xr, Xqr
        times, predictions = {}, {}
        for label, path in versions:
            env = {**os.environ, "PYTHONPATH": path}
            cmd = [sys.executable, os.path.abspath(__file__), "--child", directory]
            cmd += ["--end-to-end", backend, "--seed", str(args.seed)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(f"| {label} | failed: {out.stderr.strip()[-300:]} | | |")
                return
            result = json.loads(out.stdout.strip().splitlines()[-1])
            times[label] = result["time"]
            predictions[label] = np.load(result["prediction"], allow_pickle=True)
            print(
                f"| {label} | {result['version']} ({os.path.dirname(result['file'])})"
                f" | {result['time']:.1f} | {np.mean(predictions[label] == yqr):.4f} |",
                flush=True,
            )
    same = np.mean(predictions["before"] == predictions["after"])
    print(
        f"\nafter / before time: {times['after'] / times['before']:.2f} "
        f"(below 1: faster); same predictions: {same:.4f}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        choices=["real", "paper", "both", "end-to-end"],
        default="both",
        help="end-to-end: only the paper-scale end-to-end table",
    )
    parser.add_argument("--epochs", type=int, default=6, help="CNN epochs (default 6)")
    parser.add_argument("--n-train", type=int, default=60_000)
    parser.add_argument("--n-query", type=int, default=10_000)
    parser.add_argument(
        "--backends",
        default=",".join(CONFIGURATIONS),
        help="comma-separated configurations for the tables (default: all)",
    )
    parser.add_argument(
        "--end-to-end",
        default="exact,pca128+faiss-ivf,pca128+exact,pca256+exact",
        help="configurations timed end to end at paper scale (exact first; "
        "empty: none)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--before",
        default=None,
        help="with --part end-to-end: time the first --end-to-end configuration "
        "with the skdknn package in this directory too (see the docstring)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 epoch, 6,000 x 1,000 at paper scale",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.n_train, args.n_query = 1, 6_000, 1_000
    args.backends = [b for b in args.backends.split(",") if b]
    args.end_to_end = [b for b in args.end_to_end.split(",") if b]
    unknown = set(args.backends + args.end_to_end) - set(CONFIGURATIONS)
    if unknown:
        parser.error(f"unknown configurations: {sorted(unknown)}")
    if "exact" not in args.backends or args.end_to_end[:1] not in ([], ["exact"]):
        parser.error("exact must be among --backends and first in --end-to-end")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        _version_child(args.child, args.end_to_end[0], args.seed)
        return 0
    print(machine())
    data = mnist_split(args.seed)
    X, y = data[0], data[1]
    with torch.random.fork_rng(devices=[]):
        clf = DeepKNNClassifier(max_epochs=args.epochs, random_state=args.seed)
        _, train_time = timed(lambda: clf.fit(X, y))
    print(f"paper CNN trained for {args.epochs} epochs in {train_time:.0f} s")
    names = ["exact", *[b for b in args.backends if b != "exact"]]
    if args.part in ("real", "both"):
        part_real(clf.net_, data, names, args.seed)
    if args.before is not None:
        before_after(clf.module_, data, args)
    elif args.part in ("paper", "both", "end-to-end"):
        part_paper(
            clf.net_,
            data,
            [] if args.part == "end-to-end" else names,
            args.end_to_end,
            args.n_train,
            args.n_query,
            args.seed,
        )
    print(f"\nload avg at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
