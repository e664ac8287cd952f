"""Hypothesis profiles: derandomised in CI, randomised locally.

In CI (``CI=true``) every property test runs the same examples on every run, so a
test that catches a bug (or kills a mutant) does not depend on luck; locally the
``dev`` profile draws new examples each run, which is how new failures are found
(shrunk examples worth keeping become ``@example``s). ``HYPOTHESIS_PROFILE=ci`` or
``=dev`` picks one explicitly (tools/mutation.py runs with ``ci``).
"""

from __future__ import annotations

import os

from hypothesis import settings

# derandomize draws the examples from a hash of the test, so the example database
# (which replays past failures in another order) is off too
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", derandomize=False)
settings.load_profile(
    os.environ.get(
        "HYPOTHESIS_PROFILE",
        "ci" if os.environ.get("CI", "").lower() == "true" else "dev",
    )
)


def pytest_collection_modifyitems(items):
    """tests/test_dask.py runs in its file's order, after the other tests: its first
    test needs that no Dask cluster exists yet (the module's cluster starts with
    the next one). Runners that reorder tests (mutmut runs the fastest first, by
    node IDs) keep that order."""
    dask = [item for item in items if item.path.name == "test_dask.py"]
    if dask:
        others = [item for item in items if item.path.name != "test_dask.py"]
        items[:] = others + sorted(dask, key=lambda item: item.location[1])
