"""The documentation's code blocks come from scripts that run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
