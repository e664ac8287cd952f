"""The docs: code blocks come from scripts that run; every module has a page."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import skdknn

CHECK = Path(__file__).resolve().parents[1] / "docs" / "_examples" / "check_docs.py"


def test_doc_code_blocks_match_the_example_scripts():
    result = subprocess.run(
        [sys.executable, str(CHECK)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_doc_outputs_match_a_fresh_run():
    result = subprocess.run(
        [sys.executable, str(CHECK), "--run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_module_has_an_api_reference_page():
    api = Path(__file__).resolve().parents[1] / "docs" / "api"
    directives = "\n".join(page.read_text() for page in api.glob("*.md"))
    # skdknn.persistence's functions are documented as skdknn.save_model / load_model
    public = {
        module.name
        for module in pkgutil.iter_modules(skdknn.__path__)
        if not module.name.startswith("_")
    } - {"persistence"}
    missing = [
        name for name in sorted(public) if f"::: skdknn.{name}\n" not in directives
    ]
    assert not missing, f"modules without a page in docs/api/: {missing}"
    assert "::: skdknn.save_model" in directives
    assert "::: skdknn.load_model" in directives
