"""Sharded exact search on a 2-worker Dask LocalCluster against one process.

The DkNN paper CNN's four layers (12,544 / 3,200 / 128 / 10 features) at 60,000
indexed points and 10,000 queries, k = 75. Features: the activations of 5,000 real
MNIST images through the CNN (its initial weights: the costs measured here do not
depend on the training), replicated with a little gaussian noise (1 % of each
layer's spread) up to the numbers of points (from the first 4,000 images) and
queries (from the other 1,000), one layer at a time.

For each layer: ``ExactBackend`` in this process (torch on both cores), then
``ShardedBackend("exact", n_shards)`` with 1, 2 and 4 shards on a
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``: fit (rows
sent to the workers) + queries, wall time, the peak resident memory of each
worker process above its idle level (sampled every 20 ms on the worker), and
whether indices and distances equal the single process's bit for bit.

``python benchmarks/dask_scale.py`` (the issue's scale; about 15 minutes on 2 idle
cores, 12 GB of memory at the peak) or ``--n-queries 1000`` (the time of the
queries scales linearly with their number: the fit and the queries are timed
apart, and the table also shows fit + queries projected to ``--project-to``
queries, 10,000 by default) or ``--quick`` (a smoke run).
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from _machine import cpu_model, load_average, skdknn_revision
from distributed import Client, LocalCluster

from skdknn._activations import extract_activations
from skdknn.datasets import load_mnist
from skdknn.neighbors import ExactBackend, ShardedBackend
from skdknn.nets import DkNNPaperCNN, default_layers

K = 75


# -- memory of the worker processes ------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _start_sampling(dask_worker: Any) -> int:
    """On a worker: sample this process's RSS every 20 ms; return the idle RSS.

    (The state lives on the worker object: this module is pickled by value.)
    """
    stop = threading.Event()
    state: dict[str, Any] = {"peak": _rss(), "stop": stop}

    def sample() -> None:
        while not stop.wait(0.02):
            state["peak"] = max(state["peak"], _rss())

    threading.Thread(target=sample, daemon=True).start()
    dask_worker.skdknn_memory_sampler = state
    return int(state["peak"])


def _stop_sampling(dask_worker: Any) -> int:
    """On a worker: stop sampling; return the peak RSS."""
    state = dask_worker.skdknn_memory_sampler
    state["stop"].set()
    return int(max(state["peak"], _rss()))


def _trim() -> None:
    """On a worker: collect garbage and hand freed pages back to the system."""
    import ctypes

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


# -- features --------------------------------------------------------------------
def base_activations(seed: int) -> dict[str, np.ndarray]:
    """Per layer, the activations of the 5,000 real images (float32)."""
    X, _ = load_mnist(return_X_y=True)
    torch.manual_seed(seed)
    module = DkNNPaperCNN().eval()
    layers = default_layers(module)
    acts = extract_activations(module, X, layers, batch_size=500)
    return dict(zip(layers, acts, strict=True))


def replicate(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n rows: copies of the base rows plus gaussian noise (1 % of their spread),
    made in place in float32 (no float64 temporary as large as the result)."""
    rows = base[np.arange(n) % base.shape[0]]
    scale = np.float32(0.01 * float(base.std()))
    for start in range(0, n, 4096):
        block = rows[start : start + 4096]
        block += scale * rng.standard_normal(block.shape, dtype=np.float32)
    return rows


# -- the runs --------------------------------------------------------------------
def single_process(
    train: np.ndarray, query: np.ndarray
) -> tuple[Any, tuple[float, float]]:
    """The answer, and the seconds of the fit and of the queries."""
    start = time.perf_counter()
    backend = ExactBackend(n_neighbors=K).fit(train)
    fitted = time.perf_counter()
    answer = backend.kneighbors(query)
    return answer, (fitted - start, time.perf_counter() - fitted)


def sharded(
    client: Client, train: np.ndarray, query: np.ndarray, n_shards: int
) -> tuple[Any, tuple[float, float], list[float]]:
    """The answer, the seconds of the fit (rows sent to the workers) and of the
    queries, and each worker's peak memory above its idle level (MB)."""
    client.run(_trim)
    idle = client.run(_start_sampling)
    start = time.perf_counter()
    backend = ShardedBackend("exact", n_shards, client, n_neighbors=K).fit(train)
    fitted = time.perf_counter()
    answer = backend.kneighbors(query)
    elapsed = (fitted - start, time.perf_counter() - fitted)
    peak = client.run(_stop_sampling)
    del backend
    extra = [(peak[w] - idle[w]) / 2**20 for w in sorted(idle)]
    return answer, elapsed, extra


def projected(times: tuple[float, float], n_queries: int, target: int) -> float:
    """Fit + queries at ``target`` queries: the query time scales linearly."""
    return times[0] + times[1] * target / n_queries


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=60_000)
    parser.add_argument("--n-queries", type=int, default=10_000)
    parser.add_argument(
        "--project-to",
        type=int,
        default=10_000,
        help="also show the times projected to this many queries",
    )
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="6,000 indexed x 500 queries"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_queries = 6_000, 500
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"skdknn {skdknn_revision()} | {cpu_model()}, {os.cpu_count()} cores | "
        f"load average before: {load_average()}"
    )
    print(
        f"\n{args.n_train:,} indexed x {args.n_queries:,} queries, k = {K}; "
        "a LocalCluster of 2 worker processes x 1 thread\n"
    )
    bases = base_activations(args.seed)
    rng = np.random.default_rng(args.seed)
    target = args.project_to
    print(
        "| layer | width | backend | fit (s) | queries (s) | fit + queries (s) | "
        f"projected to {target:,} queries (s) | vs one process (projected) | "
        "peak extra memory per worker (MB) | same indices and distances |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("skdknn.neighbors") and None)
        for name, base in bases.items():
            # indexed rows from the first 4,000 images, queries from the others
            train = replicate(base[:4000], args.n_train, rng)
            query = replicate(base[4000:], args.n_queries, rng)
            width = train.shape[1]
            (ref_dist, ref_ind), single = single_process(train, query)
            gc.collect()
            reference = projected(single, args.n_queries, target)
            print(
                f"| {name} | {width:,} | ExactBackend, 1 process | {single[0]:.1f} | "
                f"{single[1]:.1f} | {sum(single):.1f} | {reference:.1f} | 1.00 | | |",
                flush=True,
            )
            for n_shards in args.shards:
                (dist, ind), times, extra = sharded(client, train, query, n_shards)
                same = np.array_equal(ind, ref_ind) and np.array_equal(dist, ref_dist)
                total = projected(times, args.n_queries, target)
                print(
                    f"| {name} | {width:,} | {n_shards} shard"
                    f"{'s' if n_shards > 1 else ''} | {times[0]:.1f} | "
                    f"{times[1]:.1f} | {sum(times):.1f} | {total:.1f} | "
                    f"{total / reference:.2f} | "
                    f"{' / '.join(f'{m:,.0f}' for m in extra)} | {same} |",
                    flush=True,
                )
            del train, query  # free the layer before the next one
            gc.collect()
    print(f"\nload average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
