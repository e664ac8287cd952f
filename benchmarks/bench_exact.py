"""Benchmark of the exact k-nearest-neighbour engine against its floors.

For each layer width ``d`` of the DkNN paper's MNIST CNN (12,544 / 3,200 / 128 / 10
features), this script times, in one run and on the same float32 data:

- ``ExactBackend(k).fit(T)`` (build) and ``.kneighbors(Q, k)`` (query);
- one float32 matrix product ``Q @ T.T`` of the same shapes, with torch and with
  numpy: the floor of any brute-force search, which must compute every
  query-to-index product;
- ``torch.topk`` of the k smallest of each row of the ``n_query x n_train`` product:
  the floor of the selection step, which dominates when ``d`` is small;
- scikit-learn's ``NearestNeighbors(n_neighbors=k, algorithm="brute")``, fit and
  kneighbors;

then prints the medians and checks that ours and scikit-learn return the same
neighbours.

Why random data is fine here: exact brute-force search does the same work whatever
the values are (every query-to-index product is computed, then k of ``n_train``
values are selected per query; nothing is pruned), so its time depends on the shapes
and on k, not on the data. The data are made non-negative, like the ReLU outputs of
the DkNN's hidden layers (the 10-wide logits layer is not ReLU, which does not change
the cost). Random high-dimensional data have concentrated distances, so near-ties at
the k-th neighbour are more frequent than on real activations: an index set that
differs from scikit-learn's in a few rows is a float32 rounding tie, not a wrong
answer, and the ``overlap`` column shows how small the difference is.

Run ``python benchmarks/bench_exact.py`` (the issue's settings) or add ``--quick``
for a smoke run that takes seconds.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
import torch
from _machine import cpu_model, load_average, skdknn_revision
from numpy.typing import NDArray
from sklearn.neighbors import NearestNeighbors

from skdknn.neighbors import ExactBackend

# Widths of the DkNN paper's MNIST CNN layers: conv1 (64 x 14 x 14), conv2
# (128 x 5 x 5 = 3,200), conv3 (128) and the logits (10).
DKNN_WIDTHS = (12544, 3200, 128, 10)

QUICK = {"n_train": 500, "n_query": 100, "repeat": 2, "pause": 0.0}
DEFAULTS = {"n_train": 5000, "n_query": 1000, "repeat": 5, "pause": 0.2}


@dataclass
class Row:
    """Median timings (seconds) and neighbour agreement for one width."""

    d: int
    build: float
    query: float
    ours: float
    matmul_torch: float
    matmul_numpy: float
    topk: float
    sklearn: float
    same_sets: float
    overlap: float
    spread: float


def machine_report() -> str:
    """Lines describing the date, the machine and the library versions."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    blas = ""
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()
        )
    except ImportError:  # threadpoolctl comes with scikit-learn; be safe anyway
        blas = "threadpoolctl not installed"
    return "\n".join(
        [
            f"date      : {now}",
            f"platform  : {platform.platform()}",
            f"python    : {platform.python_version()}",
            f"cpu       : {cpu_model()}",
            f"cores     : {os.cpu_count()}",
            f"skdknn    : {skdknn_revision()}",
            f"torch     : {torch.__version__} ({torch.get_num_threads()} threads)",
            f"numpy     : {np.__version__}",
            f"sklearn   : {sklearn.__version__}",
            f"threadpool: {blas}",
            f"load avg  : {load_average()} (1, 5, 15 min) at start",
        ]
    )


def make_data(
    n_train: int, n_query: int, d: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Non-negative float32 index and query rows: ReLU of standard normals."""
    rng = np.random.default_rng([seed, d])
    train = rng.standard_normal((n_train, d), dtype=np.float32)
    query = rng.standard_normal((n_query, d), dtype=np.float32)
    return np.maximum(train, 0, out=train), np.maximum(query, 0, out=query)


def elapsed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def neighbour_agreement(
    ours: NDArray[np.intp], reference: NDArray[np.intp]
) -> tuple[float, float]:
    """Fraction of rows with identical index sets, and mean fraction shared."""
    a = np.sort(ours, axis=1)
    b = np.sort(reference, axis=1)
    same_sets = float(np.mean(np.all(a == b, axis=1)))
    k = ours.shape[1]
    shared = [np.intersect1d(x, y).size / k for x, y in zip(a, b, strict=True)]
    return same_sets, float(np.mean(shared))


def bench_width(
    d: int, n_train: int, n_query: int, k: int, repeat: int, seed: int, pause: float
) -> Row:
    """Time every method at width ``d``: one warm-up, then ``repeat`` rounds.

    The methods take turns within each round, so a burst of load from another
    process on the machine slows all of them rather than one. Each call waits
    ``pause`` seconds first: OpenBLAS's threads keep spinning for a while after a
    numpy product, and a torch call started at once would share the cores with
    them (on 2 cores this doubled the time of ``torch.topk`` right after
    ``Q @ T.T`` in numpy).
    """
    train, query = make_data(n_train, n_query, d, seed)
    train_t, query_t = torch.from_numpy(train), torch.from_numpy(query)
    with torch.inference_mode():
        product = query_t @ train_t.T  # input of the selection-only timing
    results: dict[str, Any] = {}

    def build() -> None:
        results["backend"] = ExactBackend(k).fit(train)

    def search() -> None:
        results["ours"] = results["backend"].kneighbors(query, k)[1]

    def matmul_torch() -> None:
        with torch.inference_mode():
            query_t @ train_t.T

    def matmul_numpy() -> None:
        query @ train.T

    def topk() -> None:
        with torch.inference_mode():
            torch.topk(product, k, dim=1, largest=False)

    def scikit_learn() -> None:
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(train)
        results["sklearn"] = nn.kneighbors(query)[1]

    methods = {
        "build": build,
        "query": search,
        "matmul_torch": matmul_torch,
        "matmul_numpy": matmul_numpy,
        "topk": topk,
        "sklearn": scikit_learn,
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():  # warm-up: thread pools, allocator, caches
        time.sleep(pause)
        fn()
    for _ in range(repeat):
        for name, fn in methods.items():
            time.sleep(pause)
            times[name].append(elapsed(fn))
    totals = [b + q for b, q in zip(times["build"], times["query"], strict=True)]
    median = {name: statistics.median(ts) for name, ts in times.items()}
    # Noise of this width's timings: (slowest - fastest) / median, median over methods
    spread = statistics.median(
        (max(ts) - min(ts)) / median[name] for name, ts in times.items()
    )
    same_sets, overlap = neighbour_agreement(results["ours"], results["sklearn"])
    return Row(
        d=d,
        build=median["build"],
        query=median["query"],
        ours=statistics.median(totals),
        matmul_torch=median["matmul_torch"],
        matmul_numpy=median["matmul_numpy"],
        topk=median["topk"],
        sklearn=median["sklearn"],
        same_sets=same_sets,
        overlap=overlap,
        spread=spread,
    )


HEADER = (
    f"{'d':>6} {'build':>7} {'query':>7} {'ours':>7} {'matmul':>7} {'np mm':>7} "
    f"{'topk':>7} {'sklearn':>8} {'ours/mm':>8} {'qry/mm':>7} {'ours/fl':>8} "
    f"{'skl/ours':>8} {'same':>6} {'overlap':>7}"
)


def format_row(row: Row) -> str:
    """One line of the results table (times in seconds)."""
    return (
        f"{row.d:>6} {row.build:>7.4f} {row.query:>7.4f} {row.ours:>7.4f} "
        f"{row.matmul_torch:>7.4f} {row.matmul_numpy:>7.4f} {row.topk:>7.4f} "
        f"{row.sklearn:>8.4f} {row.ours / row.matmul_torch:>8.2f} "
        f"{row.query / row.matmul_torch:>7.2f} "
        f"{row.ours / (row.matmul_torch + row.topk):>8.2f} "
        f"{row.sklearn / row.ours:>8.2f} {row.same_sets:>6.3f} {row.overlap:>7.4f}"
    )


LEGEND = """\
Times are medians in seconds. ours = build + query of ExactBackend (fit +
kneighbors); matmul = torch float32 Q @ T.T; np mm = the same product with numpy;
topk = torch.topk of the k smallest per row of the n_query x n_train product (the
selection floor); sklearn = NearestNeighbors(algorithm="brute") fit + kneighbors.
ours/mm = ours / matmul (target <= 1.5); qry/mm = query alone / matmul;
ours/fl = ours / (matmul + topk), the floor of a product followed by a selection;
skl/ours = sklearn / ours (target > 1); same = fraction of queries whose k
neighbours are the same set as sklearn's; overlap = mean fraction of each query's
k neighbours that sklearn also returns."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time skdknn's ExactBackend against a float32 matrix product, "
            "torch.topk and scikit-learn's brute-force NearestNeighbors."
        )
    )
    parser.add_argument("--n-train", type=int, help="indexed points (default 5000)")
    parser.add_argument("--n-query", type=int, help="queries (default 1000)")
    parser.add_argument("--k", type=int, default=75, help="neighbours (default 75)")
    parser.add_argument(
        "--repeat", type=int, help="timed rounds after the warm-up (default 5)"
    )
    parser.add_argument(
        "--dims",
        default=",".join(map(str, DKNN_WIDTHS)),
        help="comma-separated widths (default: the DkNN CNN's 12544,3200,128,10)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        help="idle seconds before each timed call (default 0.2, 0 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            "smoke run: n_train 500, n_query 100, repeat 2, pause 0 "
            "(explicit options still win)"
        ),
    )
    args = parser.parse_args(argv)
    fallback = QUICK if args.quick else DEFAULTS
    for name, value in fallback.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.dims = [int(d) for d in str(args.dims).split(",") if d.strip()]
    if args.k > args.n_train:
        parser.error(f"--k {args.k} exceeds --n-train {args.n_train}")
    if min(args.n_train, args.n_query, args.repeat, args.k, *args.dims) < 1:
        parser.error("sizes, --k, --repeat and --dims must be positive")
    if args.pause < 0:
        parser.error("--pause must be non-negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine_report())
    print(
        f"settings  : n_train={args.n_train} n_query={args.n_query} k={args.k} "
        f"repeat={args.repeat} pause={args.pause} seed={args.seed} "
        f"dims={args.dims}"
    )
    print()
    print(HEADER)
    rows = []
    for d in args.dims:
        row = bench_width(
            d, args.n_train, args.n_query, args.k, args.repeat, args.seed, args.pause
        )
        rows.append(row)
        print(format_row(row), flush=True)
    print()
    print(LEGEND)
    within = all(r.ours <= 1.5 * r.matmul_torch for r in rows)
    faster = all(r.ours < r.sklearn for r in rows)
    spreads = ", ".join(f"d={r.d}: {r.spread:.0%}" for r in rows)
    print(f"noise     : (max - min) / median of the repeats: {spreads}")
    print(f"load avg  : {load_average()} (1, 5, 15 min) at end")
    print(
        f"targets   : ours within 1.5x of matmul on every width: {within}; "
        f"faster than sklearn on every width: {faster}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
