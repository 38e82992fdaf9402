"""The command line: exit codes, outputs, the demo."""

import json
import math
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from poisonscan.pipelines.cli import main

from .conftest import as_table, planted


@pytest.fixture
def source(write_sources):
    X, y, poison = planted(seed=41)
    return write_sources(as_table(X, y)), poison


def test_scan_succeeds_and_counts_add_up(tmp_path, source, capsys):
    src, poison = source
    out = tmp_path / "out"
    assert main(["scan", src, "--out", str(out), "--write-clean"]) == 0
    printed = capsys.readouterr().out
    assert "quarantined" in printed and "classes judged poisoned: 1 of 4 (label 1)" in printed
    assert "false alarms: a scan of clean data has some class judged with a chance of at most 20.4% (each" in printed
    assert f"open {out}/report.html" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_read"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["rows_rejected"]
    assert summary["rows_quarantined"] == len(poison)
    assert sorted(os.listdir(out)) == [
        "clean.parquet",
        "expectations",
        "quarantine.csv",
        "quarantine.parquet",
        "rejected.parquet",
        "report.html",
        "review.json",
        "review.parquet",
        "state.pkl",
        "summary.json",
    ]
    header = (out / "quarantine.csv").read_text().splitlines()[0]
    assert header.startswith('"id","label","score","detectors","reason"')


def test_budget_option(tmp_path, source):
    src, _ = source
    out = tmp_path / "out"
    assert main(["scan", src, "--out", str(out), "--expected-poison-rate", "0.005", "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_quarantined"] == summary["budget"]["max_rows"] == 12  # floor(1.5*0.005*1600)
    assert summary["false_alarms"]["rate"] is None  # the default: each family at its own level
    assert summary["false_alarms"]["bound"] > 0.15


def test_false_alarm_rate_option(tmp_path, source):
    src, poison = source
    out = tmp_path / "out"
    assert main(["scan", src, "--out", str(out), "--false-alarm-rate", "0.2", "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    families = summary["false_alarms"]["families"]
    assert summary["false_alarms"]["rate"] == 0.2
    assert math.isclose(sum(f["share"] for f in families.values()), 0.2)
    assert math.isclose(summary["decision"]["alpha"], families["groups"]["share"] / 2)
    assert summary["rows_quarantined"] == len(poison)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["scan", "{tmp}/missing.parquet", "--out", "{tmp}/o"], 1, "no file matches"),
        (["scan", "{src}", "--out", "{tmp}/o", "--label-column", "target"], 1, "no label column 'target'"),
        (["scan", "{src}", "--out", "{tmp}/o", "--id-column", "key"], 1,
         "no id column 'key' (columns: id, label, features); name the column that identifies each row with --id-column"),
        (["scan", "{src}", "--out", "{tmp}/o", "--features-column", "label"], 2, "must differ"),
        (["scan", "{src}", "--out", "{tmp}/o", "--expected-poison-rate", "5"], 2, "must be in (0, 1)"),
        (["scan", "{src}", "--out", "{tmp}/o", "--false-alarm-rate", "0"], 2, "must be in (0, 1)"),
        (["scan", "{src}", "--out", "{tmp}/o", "--detectors", "spectrall"], 2, "known detectors: "),
        (["scan", "{src}", "--out", "{tmp}/o", "--expected-poisson-rate", "0.1"], 2, "did you mean '--expected-poison-rate'"),
        (["scan", "{src}", "--out", "{tmp}/o", "--detector-param", "label_consistency.model=bogus"], 2,
         "must be one of 'linear', 'quadratic', 'trees', 'auto'"),
        (["scan", "{src}", "--out", "{tmp}/o", "--detector-param", "label_consistency.modl=linear"], 2,
         "Unknown parameter(s) 'modl'"),
        (["scan", "{src}", "--out", "{tmp}/o", "--detector-param", "model=linear"], 2, "wants DETECTOR.PARAM=VALUE"),
        (["scan", "{src}"], 2, "--out"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_exit_codes(tmp_path, source, capsys, args, code, message):
    src, _ = source
    argv = [a.format(tmp=tmp_path, src=src) for a in args]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_beam_options_pass_through(tmp_path, source):
    src, _ = source
    out = tmp_path / "out"
    assert main(["scan", src, "--out", str(out), "-q", "--job_name=poisonscan-test", "--direct_num_workers=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "--job_name=poisonscan-test" in summary["settings"]["beam_args"]


@pytest.mark.slow
def test_installed_command_and_demo(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "poisonscan")
    help_run = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "scan" in help_run.stdout
    # a relative --out, as in the README's `make demo`
    demo = subprocess.run([exe, "demo", "--out", "demo"], capture_output=True, text=True, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "demo" / "report.html").exists()
    assert (tmp_path / "demo" / "expectations" / "data_docs" / "index.html").exists()
    # the demo states what it found against the truth (the figures are the scan's)
    assert re.search(r"precision \d\.\d\d", demo.stdout) and re.search(r"recall \d\.\d\d", demo.stdout)
    assert "0 rows quarantined in the nine clean classes" in demo.stdout
    assert demo.stderr == ""
    # a row two detectors flag gives the stronger class verdict's words first (there the
    # stamp pixel_trigger names, p ~ 1e-69, before activation clustering's cluster), and
    # lists the detectors in that order
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    strength = {
        (c["label"], det): math.log10(max(v["p_value"], 1e-320)) - math.log10(v["level"])
        for c in summary["classes"] for det, v in (c.get("verdicts") or {}).items()
        if v.get("p_value") is not None and v.get("level")
    }
    rows = pq.read_table(tmp_path / "demo" / "quarantine.parquet").to_pylist()
    several = [r for r in rows if len(r["detectors"]) > 1]
    assert several, "the demo's stamped rows are flagged by two detectors"
    for r in several:
        named = [part.split(":", 1)[0] for part in r["reason"].split(" | ")]
        assert named == r["detectors"]  # the list and the report's chips in the reason's order
        assert [strength[(r["label"], d)] for d in named] == sorted(strength[(r["label"], d)] for d in named)
