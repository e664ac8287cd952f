"""The command line: ``skdknn report``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from skdknn.__main__ import main


def test_report_quick_end_to_end(tmp_path, capsys):
    status = main(
        [
            "report",
            "--quick",
            "--epochs",
            "1",
            "--test-size",
            "200",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "CNN (DkNN paper architecture)" in out
    assert "DkNN k=25 cosine" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n_test"] == 200
    models = [row["model"] for row in results["results"]]
    assert models == [
        "CNN (DkNN paper architecture)",
        "DkNN k=25 euclidean",
        "DkNN k=25 cosine",
    ]
    for row in results["results"]:
        assert 0.3 < row["accuracy"] <= 1.0  # 1 epoch is far better than chance
    for row in results["results"][1:]:
        assert 0.0 <= row["mean_credibility"] <= 1.0
        assert row["layers"] == ["relu1", "relu2", "relu3", "logits"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "--epochs", "0"], "expected a positive integer"),
        (["report", "--test-size", "many"], "expected an integer"),
        (["fly"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    status = main(["report", "--data-dir", str(tmp_path / "nowhere")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("skdknn: error:")
    assert "nowhere" in err


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "skdknn", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    from skdknn import __version__

    assert result.stdout.strip() == __version__
