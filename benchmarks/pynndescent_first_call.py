"""First-call cost of PyNNDescentBackend in a fresh process, cold and warm cache.

PyNNDescent compiles its routines with numba the first time they run in a process.
numba can keep part of that work on disk (functions compiled with ``cache=True``,
in ``__pycache__`` beside pynndescent's sources, in a user-wide cache directory when
that is read-only, or in ``NUMBA_CACHE_DIR``); the rest is compiled again in every
process: pynndescent compiles the functions that take the distance function as an
argument without cache, because numba puts the distance function's memory address
in their type, so a cached copy never matches in another process
(lmcinnes/pynndescent#226).

This script runs, each in a fresh Python process, ``fit`` and ``kneighbors`` of a
``PyNNDescentBackend`` on 2,000 random points of 32 features, then a second fit and
query in the same process:

1. ``cold``: ``NUMBA_CACHE_DIR`` set to a new empty directory (nothing cached);
2. ``warm``: the same directory again (what the first run could cache is loaded).

It prints the CPU time (all threads of the process; robust to other processes
sharing the cores) and the wall time of each step, and how many of numba's cached
functions were loaded or had to be compiled and saved.

Run ``python benchmarks/pynndescent_first_call.py`` (about 2-4 minutes of CPU on
2 cores); ``--quick`` is the same run (it cannot be made shorter: the cost measured
is the compilation itself).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import numba
import pynndescent
from _machine import cpu_model, load_average, skdknn_revision

#: The measured child process: prints one JSON line.
CHILD = r"""
import json, sys, time

clock = {"cpu": time.process_time(), "wall": time.perf_counter()}


def lap():
    cpu, wall = time.process_time(), time.perf_counter()
    out = [round(cpu - clock["cpu"], 1), round(wall - clock["wall"], 1)]
    clock.update(cpu=cpu, wall=wall)
    return out


import numpy as np
from skdknn.neighbors import PyNNDescentBackend

result = {"import": lap()}
X = np.random.default_rng(0).normal(size=(2000, 32)).astype(np.float32)
backend = PyNNDescentBackend(n_neighbors=10, random_state=0).fit(X)
backend.kneighbors(X[:100])
result["first fit + query"] = lap()
PyNNDescentBackend(n_neighbors=10, random_state=1).fit(X).kneighbors(X[:100])
result["second fit + query"] = lap()
# numba's own counters of the functions compiled with cache=True
from numba.core.caching import NullCache
from numba.core.dispatcher import Dispatcher

hits = misses = uncached = 0
for name, module in list(sys.modules.items()):
    if not name.startswith("pynndescent"):
        continue
    for value in vars(module).values():
        if isinstance(value, Dispatcher) and value.signatures:
            if isinstance(value._cache, NullCache):
                uncached += 1
            else:
                hits += sum(value.stats.cache_hits.values())
                misses += sum(value.stats.cache_misses.values())
result.update(loaded=hits, compiled=misses, uncached=uncached)
print(json.dumps(result))
"""


def run_child(cache_dir: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the same run")
    parser.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"date      {now:%Y-%m-%d %H:%M} UTC")
    print(f"machine   {cpu_model()}, {os.cpu_count()} cores, load {load_average()}")
    print(f"versions  skdknn {skdknn_revision()}")
    print(f"          pynndescent {pynndescent.__version__}, numba {numba.__version__}")
    print(f"          Python {platform.python_version()}")
    cold_head, warm_head = "cold cache: cpu / wall s", "warm cache: cpu / wall s"
    print(f"{'step':<22} {cold_head:>27} {warm_head:>27}")
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = run_child(cache_dir)
        warm = run_child(cache_dir)
    for step in ("import", "first fit + query", "second fit + query"):
        (c_cpu, c_wall), (w_cpu, w_wall) = cold[step], warm[step]
        print(
            f"{step:<22} {c_cpu:>14.1f} / {c_wall:<10.1f} {w_cpu:>14.1f} / {w_wall:.1f}"
        )
    for kind, what in (
        ("loaded", "cached functions loaded"),
        ("compiled", "cacheable, compiled"),
        ("uncached", "compiled, never cached"),
    ):
        print(f"{what:<22} {cold[kind]:>12d} {warm[kind]:>27d}")


if __name__ == "__main__":
    main()
