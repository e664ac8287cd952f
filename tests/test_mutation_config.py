"""The mutation-testing setup (pyproject's [tool.mutmut], tools/mutation.py) names
files, tests and methods that exist, so a rename cannot silently shrink it."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import subprocess
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


def _fake_run(tool, monkeypatch, tmp_path, codes, selection=None, skipped=None):
    """A ``mutants/conformal/`` left by a run whose mutants ended with ``codes``
    (None: not run), with the globs it selected and the mutants it skipped as
    equivalent (``{name: mutated line}``) when given."""
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    work = tool.workspace("conformal")
    (work / "mutants" / "skdknn").mkdir(parents=True, exist_ok=True)
    meta = {"exit_code_by_key": codes}
    (work / "mutants" / "skdknn" / "conformal.py.meta").write_text(json.dumps(meta))
    if selection is not None:
        (work / "selection.json").write_text(json.dumps(selection))
    if skipped is not None:
        (work / "skipped.json").write_text(json.dumps(skipped))


def test_report_says_not_run_for_a_module_without_results(monkeypatch, tmp_path):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    width = max(len(m) for m in tool.MODULES)
    line, failed, result = tool.summary("cw", width)
    assert line == f"{'cw':{width}s}  not run"
    assert not failed and not result.survivors and not result.equivalents


def test_report_columns_align_across_module_names(monkeypatch, tmp_path):
    tool = _tool()
    _fake_run(tool, monkeypatch, tmp_path, {"skdknn.conformal.x_f__mutmut_1": 1})
    width = max(len(m) for m in tool.MODULES)
    assert width == len("attack-precision")
    ran, _, _ = tool.summary("conformal", width)
    never, _, _ = tool.summary("attack-precision", width)
    # the name column is as wide as the longest name, then two spaces
    assert ran[: width + 2] == "conformal".ljust(width + 2)
    assert never == "attack-precision  not run"
    assert ran[width + 2 :].strip().startswith("1 /")


def test_report_tells_mutants_outside_only_from_interrupted_ones(monkeypatch, tmp_path):
    tool = _tool()
    codes = {
        "skdknn.conformal.x_p_values__mutmut_1": 1,
        "skdknn.conformal.x_p_values__mutmut_2": None,  # selected, not run
        "skdknn.conformal.x_other__mutmut_1": None,  # outside --only
        "skdknn.conformal.x_other__mutmut_2": None,
    }
    _fake_run(tool, monkeypatch, tmp_path, codes, ["*x_p_values__*"])
    line, failed, _ = tool.summary("conformal", 9)
    assert line.endswith(
        "1 /    1 killed = 100.0 %  "
        "(0 equivalent, 2 not selected (--only), 1 not run: interrupted)"
    )
    assert not failed


def test_report_without_a_record_of_the_selection_words_it_neutrally(
    monkeypatch, tmp_path
):
    tool = _tool()
    codes = {
        "skdknn.conformal.x_f__mutmut_1": 1,
        "skdknn.conformal.x_g__mutmut_1": None,
    }
    _fake_run(tool, monkeypatch, tmp_path, codes)
    line, _, _ = tool.summary("conformal", 9)
    assert line.endswith("(0 equivalent, 1 not run (outside --only, or interrupted))")


def test_a_run_that_judged_nothing_is_a_failure(monkeypatch, tmp_path):
    tool = _tool()
    _fake_run(tool, monkeypatch, tmp_path, {"skdknn.conformal.x_f__mutmut_1": None})
    line, failed, _ = tool.summary("conformal", 9)
    assert "nothing judged (see run.log)" in line and failed


def test_development_docs_table_lists_each_modules_test_files():
    """docs/development.md's table of which test files judge which module is
    MODULES[...].tests, exactly (a test file added to a module must be listed)."""
    tool = _tool()
    text = (ROOT / "docs/development.md").read_text()
    table = text[text.index("| Module (`tools/mutation.py` name) |") :]
    table = table[: table.index("\n\n")]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| `([\w-]+)` \|.*\| (.*) \|$", line)
        if match and match[1] in tool.MODULES:
            rows[match[1]] = set(re.findall(r"`(test_\w+)`", match[2]))
    assert set(rows) == set(tool.MODULES)
    for name, module in tool.MODULES.items():
        expected = {Path(t).stem for t in module.tests}
        assert rows[name] == expected, name


def _named_function(pattern):
    """The module and the function (or class, method) a mutant-name glob names,
    e.g. ``skdknn.conformal.x_p_values__*`` -> (skdknn.conformal, "p_values")."""
    dotted, _, rest = pattern.partition(".x")
    if not rest:  # a whole module: "skdknn.attacks._cw.*"
        return dotted.removesuffix(".*"), []
    parts = rest.removesuffix("__*").split("\u01c1")
    if len(parts) == 1:
        return dotted, [parts[0][1:]]  # x_<function>
    return dotted, [p for p in parts[1:] if p != "*"]  # xǁ<Class>ǁ<method>


def test_equivalent_and_module_globs_name_functions_that_exist():
    """EQUIVALENT's texts are mutated lines (not source text), but its globs and
    MODULES' name functions and methods of the source: a rename leaves the entry
    matching nothing, so it must fail here rather than go stale silently."""
    tool = _tool()
    patterns = [p for p, _, _ in tool.EQUIVALENT]
    patterns += [g for module in tool.MODULES.values() for g in module.globs]
    for pattern in patterns:
        dotted, names = _named_function(pattern)
        target = importlib.import_module(dotted)
        for name in names:
            assert hasattr(target, name), f"{pattern}: no {name} in {target}"
            target = getattr(target, name)


def _fake_equivalents(tool, monkeypatch, diffs):
    """EQUIVALENT replaced by one entry (any mutant of ``f`` whose line says
    ``beta=1``), and ``mutmut show`` by ``diffs``; returns the mutants shown."""
    monkeypatch.setattr(
        tool,
        "EQUIVALENT",
        [("skdknn.conformal.x_f__*", "beta=1", "beta=1 is the default")],
    )
    shown = []

    def mutated_lines(work, names):
        shown.extend(names)
        return {name: diffs[name] for name in names}

    monkeypatch.setattr(tool, "mutated_lines", mutated_lines)
    return shown


def test_a_run_skips_the_mutants_listed_equivalent_and_no_other(monkeypatch, tmp_path):
    tool = _tool()
    codes = {
        "skdknn.conformal.x_f__mutmut_1": None,  # equivalent: skipped
        "skdknn.conformal.x_f__mutmut_2": None,  # same function, other line: run
        "skdknn.conformal.x_g__mutmut_1": None,  # no entry names g: run, not shown
        "skdknn.conformal.x_h__mutmut_1": None,  # outside the selection
    }
    _fake_run(tool, monkeypatch, tmp_path, codes)
    shown = _fake_equivalents(
        tool,
        monkeypatch,
        {
            "skdknn.conformal.x_f__mutmut_1": "addmm(a, b, beta=1)",
            "skdknn.conformal.x_f__mutmut_2": "addmm(a, b, beta=2)",
        },
    )
    work = tool.workspace("conformal")
    run, skipped = tool.skip_equivalents(work, ["*x_f__*", "*x_g__*"])
    assert run == ["skdknn.conformal.x_f__mutmut_2", "skdknn.conformal.x_g__mutmut_1"]
    assert skipped == {"skdknn.conformal.x_f__mutmut_1": "addmm(a, b, beta=1)"}
    assert shown == ["skdknn.conformal.x_f__mutmut_1", "skdknn.conformal.x_f__mutmut_2"]


def test_skipped_equivalents_are_reported_as_equivalent_not_as_unrun(
    monkeypatch, tmp_path
):
    tool = _tool()
    codes = {
        "skdknn.conformal.x_f__mutmut_1": None,  # skipped, still listed: equivalent
        "skdknn.conformal.x_f__mutmut_2": None,  # skipped, entry since removed
        "skdknn.conformal.x_f__mutmut_3": 1,  # killed
        "skdknn.conformal.x_f__mutmut_4": 0,  # survived
    }
    skipped = {
        "skdknn.conformal.x_f__mutmut_1": "addmm(a, b, beta=1)",
        "skdknn.conformal.x_f__mutmut_2": "addmm(a, b, alpha=1)",
    }
    _fake_run(tool, monkeypatch, tmp_path, codes, ["*x_f__*"], skipped)
    _fake_equivalents(
        tool,
        monkeypatch,
        {
            "skdknn.conformal.x_f__mutmut_3": "return 1",
            "skdknn.conformal.x_f__mutmut_4": "return None",
        },
    )
    work = tool.workspace("conformal")
    line, failed, result = tool.summary("conformal", 9)
    # the skipped equivalent is in neither number; the one whose entry is gone
    # has no verdict
    assert line.endswith(
        "1 /    2 killed =  50.0 %  (1 equivalent (1 skipped, not run), "
        "1 skipped as equivalent by an entry since removed: run again)"
    )
    assert failed
    assert result.survivors == ["skdknn.conformal.x_f__mutmut_4 (0): return None"]
    assert result.equivalents == [
        "skdknn.conformal.x_f__mutmut_1: addmm(a, b, beta=1)  "
        "[beta=1 is the default; skipped, not run]"
    ]
    # run since (--run-equivalents) and killed: a too broad entry, a failure
    codes["skdknn.conformal.x_f__mutmut_1"] = 1
    _fake_run(tool, monkeypatch, tmp_path, codes, ["*x_f__*"])
    (work / "skipped.json").unlink()
    _fake_equivalents(
        tool,
        monkeypatch,
        {
            "skdknn.conformal.x_f__mutmut_1": "addmm(a, b, beta=1)",
            "skdknn.conformal.x_f__mutmut_3": "return 1",
            "skdknn.conformal.x_f__mutmut_4": "return None",
        },
    )
    line, failed, result = tool.summary("conformal", 9)
    assert line.endswith(
        "2 /    3 killed =  66.7 %  (0 equivalent, 1 not run: interrupted, "
        "1 killed though listed equivalent)"
    )
    assert result.too_broad == ["skdknn.conformal.x_f__mutmut_1: addmm(a, b, beta=1)"]
    assert failed and result.equivalents == []


def test_each_mutant_process_gets_its_share_of_the_cores(monkeypatch, tmp_path):
    """With 2 children on 2 cores, each process's math libraries get 1 thread:
    with 2 each, OpenMP's spinning threads made a 1 s test take 295 s and mutants
    hit mutmut's CPU-time limit (false timeouts). A caller's own setting wins."""
    tool = _tool()
    seen = []

    def run(command, cwd, env, **kwargs):
        seen.append(env)
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="")

    monkeypatch.setattr(tool.subprocess, "run", run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    tool.mutmut(tmp_path, "show", "x", threads=1)
    tool.mutmut(tmp_path, "show", "x")
    assert seen[0]["OMP_NUM_THREADS"] == "1"
    assert seen[0]["OPENBLAS_NUM_THREADS"] == "1"
    assert seen[0]["MKL_NUM_THREADS"] == "3"
    assert "OMP_NUM_THREADS" not in seen[1]
    assert seen[0]["HYPOTHESIS_PROFILE"] == "ci" and "PYTHONPATH" not in seen[0]


def test_timeouts_count_as_killed_and_are_listed(monkeypatch, tmp_path):
    """A timeout is counted killed (mutmut's convention: the mutant made the tests
    exceed the CPU-time limit), but the report says how many and which, since a
    limit set too low turns survivors into timeouts."""
    tool = _tool()
    codes = {
        "skdknn.conformal.x_g__mutmut_1": 1,
        "skdknn.conformal.x_g__mutmut_2": -24,  # SIGXCPU
        "skdknn.conformal.x_g__mutmut_3": 0,
    }
    _fake_run(tool, monkeypatch, tmp_path, codes, ["*x_g__*"])
    shown = _fake_equivalents(
        tool,
        monkeypatch,
        {
            "skdknn.conformal.x_g__mutmut_2": "while True:",
            "skdknn.conformal.x_g__mutmut_3": "return 0",
        },
    )
    line, failed, result = tool.summary("conformal", 9)
    assert line.endswith(
        "2 /    3 killed =  66.7 %  (0 equivalent, 1 of the killed timed out)"
    )
    assert failed
    assert result.timeouts == ["skdknn.conformal.x_g__mutmut_2: while True:"]
    assert result.survivors == ["skdknn.conformal.x_g__mutmut_3 (0): return 0"]
    # the mutant killed by a failing test is not looked at (no entry names g)
    assert "skdknn.conformal.x_g__mutmut_1" not in shown


def test_an_only_glob_that_names_no_function_leaves_the_last_results(
    monkeypatch, tmp_path, capsys
):
    """A mistyped --only is refused before the module's workspace (the last run's
    results) is replaced; a glob that names a function is accepted."""
    tool = _tool()
    names = tool.function_mutant_names("calibration")
    assert "skdknn._calibration.x_label_shift__mutmut_1" in names
    attacks = tool.function_mutant_names("attacks")
    assert (
        f"skdknn.attacks._base.x{tool._SEP}GradientAttack{tool._SEP}_box__mutmut_1"
        in attacks
    )
    work = tmp_path / "mutants" / "calibration"
    work.mkdir(parents=True)
    (work / "selection.json").write_text("[]")
    monkeypatch.setattr(tool, "workspace", lambda name: tmp_path / "mutants" / name)
    monkeypatch.setattr(
        sys, "argv", ["mutation.py", "calibration", "--only", "label_shift"]
    )
    with pytest.raises(SystemExit) as error:
        tool.main()
    assert error.value.code == 2
    assert (
        "--only ['label_shift'] matches no function of calibration"
        in capsys.readouterr().err
    )
    assert (work / "selection.json").read_text() == "[]"


def test_a_selection_of_equivalents_only_is_nothing_to_judge(monkeypatch, tmp_path):
    tool = _tool()
    codes = {"skdknn.conformal.x_f__mutmut_1": None}
    skipped = {"skdknn.conformal.x_f__mutmut_1": "addmm(a, b, beta=1)"}
    _fake_run(tool, monkeypatch, tmp_path, codes, ["*x_f__mutmut_1"], skipped)
    _fake_equivalents(tool, monkeypatch, {})
    line, failed, _ = tool.summary("conformal", 9)
    assert "nothing to judge: every mutant run or skipped is equivalent" in line
    assert not failed


def test_a_skipped_mutant_whose_entry_was_removed_fails_the_report(
    monkeypatch, tmp_path
):
    """Its verdict is unknown: not 'interrupted', and not a pass."""
    tool = _tool()
    codes = {
        "skdknn.conformal.x_f__mutmut_1": 1,
        "skdknn.conformal.x_f__mutmut_2": None,  # skipped; the entry is gone
    }
    skipped = {"skdknn.conformal.x_f__mutmut_2": "addmm(a, b, beta=1)"}
    _fake_run(tool, monkeypatch, tmp_path, codes, ["*x_f__*"], skipped)
    _fake_equivalents(tool, monkeypatch, {"skdknn.conformal.x_f__mutmut_1": "x"})
    monkeypatch.setattr(tool, "EQUIVALENT", [])
    line, failed, _ = tool.summary("conformal", 9)
    assert line.endswith(
        "1 /    1 killed = 100.0 %  "
        "(0 equivalent, 1 skipped as equivalent by an entry since removed: run again)"
    )
    assert failed


def test_a_run_that_made_no_mutant_is_a_failure(monkeypatch, tmp_path, capsys):
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "prepare", lambda name: tool.workspace(name))
    monkeypatch.setattr(tool, "generate", lambda work, threads: None)
    monkeypatch.setattr(tool, "mutmut", lambda *args, **kwargs: "")
    (tmp_path / "mutants" / "calibration").mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["mutation.py", "calibration"])
    assert tool.main() == 1
    assert "calibration  no mutants made (see run.log)" in capsys.readouterr().out
