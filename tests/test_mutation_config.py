"""The mutation-testing setup (pyproject's [tool.mutmut], tools/mutation.py) names
files, tests and methods that exist, so a rename cannot silently shrink it."""

from __future__ import annotations

import fnmatch
import importlib.util
import sys
from pathlib import Path

import pytest

from skdknn import DeepKNNClassifier

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "mutation", ROOT / "tools/mutation.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation", module)
    spec.loader.exec_module(module)
    return module


def test_mutmut_config_and_tool_name_what_exists():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    for path in config["only_mutate"] + config["pytest_add_cli_args_test_selection"]:
        assert (ROOT / path).is_file(), path
    tool = _tool()
    for name, module in tool.MODULES.items():
        for path in module.files:
            assert path in config["only_mutate"], (name, path)
        for path in module.tests:
            assert (ROOT / path).is_file(), (name, path)
            assert path in config["pytest_add_cli_args_test_selection"], (name, path)
        for pattern in module.globs:
            dotted = pattern.split(".x")[0].removesuffix(".*")
            assert f"{dotted.replace('.', '/')}.py" in module.files, pattern
    missing = [m for m in tool.WIRING if not hasattr(DeepKNNClassifier, m)]
    assert not missing, f"tools/mutation.py WIRING names unknown methods: {missing}"
    every_glob = [g for module in tool.MODULES.values() for g in module.globs]
    for pattern, _, reason in tool.EQUIVALENT:
        assert reason
        name = pattern.replace("*", "0")
        assert any(fnmatch.fnmatch(name, g) for g in every_glob), pattern
