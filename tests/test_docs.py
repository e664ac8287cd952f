"""The docs: code blocks come from scripts that run; every module has a page."""

from __future__ import annotations

import importlib.util
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
    # every script a page shows runs (README.md included), the slow ones too, and
    # every output block of the pages equals the fresh output (timings masked,
    # decimals within DECIMAL_TOLERANCE)
    result = subprocess.run(
        [sys.executable, str(CHECK), "--run", "--all"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _checker():
    spec = importlib.util.spec_from_file_location("check_docs", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_the_checker_covers_the_readme_and_every_docs_page():
    checker = _checker()
    root = CHECK.parents[2]
    assert root / "README.md" in checker.PAGES
    assert set((root / "docs").glob("*.md")) <= set(checker.PAGES)


SHOWN = """```python
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)  # no files, no network
print(X.shape, X.dtype, X.min(), X.max())
```
"""


@pytest.mark.parametrize(
    ("page", "failures"),
    [
        (SHOWN + "\n```text\n(5000, 1, 28, 28) float32 0.0 1.0\n```\n", 0),
        (SHOWN + "\n```text\n(4000, 1, 28, 28) float32 0.0 1.0\n```\n", 1),
        # decimals within 0.015 (or 2 %): another CPU's rounding; not beyond
        (SHOWN + "\n```text\n(5000, 1, 28, 28) float32 0.0 1.015\n```\n", 0),
        (SHOWN + "\n```text\n(5000, 1, 28, 28) float32 0.0 0.985\n```\n", 0),
        (SHOWN + "\n```text\n(5000, 1, 28, 28) float32 0.0 1.03\n```\n", 1),
        (SHOWN + "\n```text\n(5000, 1, 28, 28) float32 0.02 1.0\n```\n", 1),
        (SHOWN + "\n```text\n(5000, 1, 28, 28) float32 0.0 1.0 s\n```\n", 1),
        (SHOWN + "\n```text\n(5000, 1, 28, 28) float32 0 1.0\n```\n", 1),
        (SHOWN.replace("no network", "offline"), 1),
        ("```bash\nskdknn report\n```\n", 1),
        ("<!-- docs-check: cli -->\n```bash\nskdknn report --quick\n```\n", 0),
        ("<!-- docs-check: cli -->\n```bash\nskdknn report --quik\n```\n", 1),
        ("<!-- docs-check: in .ci/run -->\n```bash\nruff check .\n```\n", 0),
        ("<!-- docs-check: in .ci/run -->\n```bash\nrm -rf /\n```\n", 1),
        ("<!-- docs-check: not run: downloads -->\n```python\nx = (\n```\n", 1),
        ("<!-- docs-check: not run: downloads -->\n```python\nx = 1\n```\n", 0),
        ("<!-- docs-check: maybe -->\n```bash\nls\n```\n", 1),
        ("```yaml\na: 1\n```\n", 1),
        ("```text\na diagram\n```\n", 0),
    ],
)
def test_the_checker_fails_on_what_it_cannot_vouch_for(
    tmp_path, capsys, page, failures
):
    path = tmp_path / "page.md"
    path.write_text(page)
    checker = _checker()
    ran = []

    def run_script(name):  # the output datasets.py prints, without running it
        ran.append(name)
        return ["(5000, 1, 28, 28) float32 0.0 1.0"]

    checker.run_script = run_script
    status = checker.check([path], run=True, run_slow=False)
    assert ran in ([], ["datasets.py"])
    out = capsys.readouterr().out
    assert status == (1 if failures else 0), out
    reported = [line for line in out.splitlines() if line.startswith(f"{path}:")]
    assert len(reported) == failures, out


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
