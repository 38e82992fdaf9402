"""Data-quality expectations: each default one on a file with planted faults, a user
suite, the ETL gate, Great Expectations' results and Data Docs."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan import ScanConfig
from poisonscan.pipelines.cli import main
from poisonscan.pipelines.drivers.run import run_scan

from ..conftest import planted


def faulty_table():
    """Clean planted data plus one row per default row expectation, and a rare class."""
    X, y, _ = planted(seed=51, n_poison=0, n_per_class=300)
    rows = [{"id": int(i), "label": int(c), "features": list(map(float, x))} for i, (x, c) in enumerate(zip(X, y))]
    base = list(map(float, X[0]))
    faults = {
        "missing_id": {"id": None, "label": 0, "features": base},
        "duplicate_id": {"id": 1, "label": 0, "features": [v + 0.5 for v in base]},
        "missing_label": {"id": 9001, "label": None, "features": base},
        "undeclared_label": {"id": 9002, "label": 7, "features": [v + 0.25 for v in base]},
        "missing_features": {"id": 9003, "label": 0, "features": None},
        "wrong_length": {"id": 9004, "label": 0, "features": base[:3]},
        "nan_features": {"id": 9005, "label": 0, "features": [float("nan")] + base[1:]},
        "out_of_range": {"id": 9006, "label": 0, "features": [1e6] + base[1:]},
        "duplicate_content": {"id": 9007, "label": int(y[10]), "features": list(map(float, X[10]))},
        "conflicting_labels": {"id": 9008, "label": (int(y[20]) + 1) % 4, "features": list(map(float, X[20]))},
    }
    table = pa.Table.from_pylist(rows + list(faults.values()), schema=pa.schema(
        [("id", pa.int64()), ("label", pa.int64()), ("features", pa.list_(pa.float64()))]
    ))
    return table, faults


@pytest.fixture(scope="module")
def faulty_scan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faulty")
    table, faults = faulty_table()
    src = tmp / "faulty.parquet"
    pq.write_table(table, src)
    out = tmp / "out"
    cfg = ScanConfig(
        features_column="features", labels=("0", "1", "2", "3"), feature_range=(-1000.0, 1000.0),
        min_class_fraction=0.2,
    )
    summary = run_scan([str(src)], str(out), cfg)
    return out, summary, faults


def test_every_faulty_row_is_rejected_naming_its_expectation(faulty_scan):
    out, summary, faults = faulty_scan
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    by_code = {}
    for r in rejected:
        for code in r["error_code"].split(","):
            by_code.setdefault(code, []).append(r)
    for code in faults:
        assert code in by_code, code
        assert all(r["expectation"] and r["expectation"].startswith("expect_") for r in by_code[code])
    # conflicting labels and a shared id reject every copy; a duplicate keeps one copy
    assert len(by_code["conflicting_labels"]) == 2 and len(by_code["duplicate_id"]) == 2
    assert len(by_code["duplicate_content"]) == 1
    names = {r["error_code"]: r["expectation"] for r in rejected}
    assert names["missing_id"] == "expect_column_values_to_not_be_null(id)"
    assert names["undeclared_label"] == "expect_column_values_to_be_in_set(label)"
    assert names["out_of_range"] == "expect_column_values_to_be_between(features.values)"
    assert summary["rows_read"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["rows_rejected"]


def test_results_list_failures_with_observed_values(faulty_scan):
    out, summary, _ = faulty_scan
    exp = summary["expectations"]
    assert not exp["success"]
    results = {r["expectation"]: r for r in exp["results"]}
    assert results["expect_column_values_to_not_be_null(id)"]["result"]["unexpected_count"] == 1
    assert results["expect_column_values_to_be_in_set(label)"]["result"]["partial_unexpected_list"] == [7]
    balance = results["expect_column_values_to_be_between(label.share)"]
    assert not balance["success"]  # the rare class 7 holds far less than 20 %
    assert balance["result"]["partial_unexpected_list"][0]["label"] == 7
    observed = results["expect_column_distinct_values_to_be_in_set(label)"]["result"]["observed_value"]
    assert observed == [0, 1, 2, 3, 7]
    lengths = results["expect_column_value_lengths_to_equal(features)"]
    assert lengths["kwargs"]["value"] == 16 and lengths["result"]["unexpected_count"] == 1


def test_great_expectations_results_and_data_docs_are_written(faulty_scan):
    out, summary, _ = faulty_scan
    gx_result = json.loads((out / "expectations" / "validation_result.json").read_text())
    assert gx_result["success"] is False
    assert len(gx_result["results"]) == summary["expectations"]["statistics"]["evaluated_expectations"]
    index = out / "expectations" / "data_docs" / "index.html"
    assert index.exists()
    pages = [os.path.join(d, f) for d, _, fs in os.walk(out / "expectations" / "data_docs" / "validations") for f in fs]
    assert pages and all(p.endswith(".html") for p in pages)
    html = open(pages[0]).read()
    assert "expect_column_values_to_not_be_null" in html or "values must never be null" in html


def test_clean_data_passes_every_default_expectation(tmp_path):
    X, y, _ = planted(seed=52, n_poison=0)
    table = pa.table({"id": np.arange(len(y)), "label": y, "features": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])})
    pq.write_table(table, tmp_path / "clean.parquet")
    cfg = ScanConfig(features_column="features", labels=("0", "1", "2", "3"), min_class_fraction=0.1, data_docs=False)
    summary = run_scan([str(tmp_path / "clean.parquet")], str(tmp_path / "out"), cfg)
    failed = [r["expectation"] for r in summary["expectations"]["results"] if not r["success"]]
    assert failed == [] and summary["rows_rejected"] == 0
    assert not (tmp_path / "out" / "expectations").exists()  # --no-data-docs


def test_a_user_suite_rejects_rows_and_checks_aggregates(tmp_path):
    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 2, n)
    income = rng.normal(50 + 10 * y, 5)
    income[:4] = -5.0  # four rows the user's suite rejects
    table = pa.table({"id": np.arange(n), "label": y, "income": income, "age": rng.integers(18, 80, n)})
    pq.write_table(table, tmp_path / "t.parquet")
    suite = {
        "name": "credit_rules",
        "expectations": [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "income", "min_value": 0}},
            {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "age", "min_value": 100}},
        ],
    }
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    cfg = ScanConfig(tabular_columns=("income", "age"), expectations=str(tmp_path / "suite.json"), data_docs=False)
    summary = run_scan([str(tmp_path / "t.parquet")], str(tmp_path / "out"), cfg)
    rejected = pq.read_table(tmp_path / "out" / "rejected.parquet")
    assert sorted(rejected["id"].to_pylist()) == [0, 1, 2, 3]
    assert set(rejected["expectation"].to_pylist()) == {"expect_column_values_to_be_between(income)"}
    results = {r["expectation"]: r for r in summary["expectations"]["results"]}
    assert results["expect_column_values_to_be_between(income)"]["result"]["unexpected_count"] == 4
    mean = results["expect_column_mean_to_be_between(age)"]
    assert not mean["success"] and 18 <= mean["result"]["observed_value"] <= 80
    assert "uniform sample" in mean["result"]["details"]


def test_an_unknown_expectation_type_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "suite.json").write_text(json.dumps({"expectations": [{"type": "expect_magic", "kwargs": {}}]}))
    X, y, _ = planted(seed=53)
    pq.write_table(pa.table({"id": np.arange(len(y)), "label": y, "features": [list(map(float, x)) for x in X]}), tmp_path / "d.parquet")
    code = main(["scan", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "o"), "--expectations", str(tmp_path / "suite.json")])
    assert code == 2 and "unknown expectation type 'expect_magic'" in capsys.readouterr().err


def test_an_expectation_about_a_column_the_data_lack_is_a_usage_error(tmp_path, capsys):
    X, y, _ = planted(seed=53)
    pq.write_table(pa.table({"id": np.arange(len(y)), "label": y, "features": [list(map(float, x)) for x in X]}),
                   tmp_path / "d.parquet")
    suite = {"expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "incme", "min_value": 0}}]}
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    code = main(["scan", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "o"), "--expectations", str(tmp_path / "suite.json")])
    err = capsys.readouterr().err
    assert code == 2 and "expect_column_values_to_be_between(incme) names 'incme', which" in err
    assert "(columns: id, label, features)" in err and not (tmp_path / "o").exists()


def test_an_expectation_gx_cannot_evaluate_fails_instead_of_passing():
    # GX reports a metric it cannot resolve (here a missing column) per metric, nested in
    # exception_info, with an empty result that reads as a success
    import pandas as pd

    from poisonscan.expectations.gx import BatchValidator, validate_frame
    from poisonscan.expectations.suite import Expectation

    missing = Expectation("expect_column_values_to_be_between", {"column": "nosuch", "min_value": 0}, source="user")
    frame = pd.DataFrame({"a": [1.0, -2.0, 3.0]})
    with pytest.raises(RuntimeError, match="could not be evaluated: .*nosuch"):
        BatchValidator([missing]).failures(frame)
    # an aggregate expectation GX cannot evaluate is recorded as not met, with why
    (got,) = validate_frame([Expectation("expect_column_mean_to_be_between", {"column": "nosuch", "min_value": 0})],
                            frame)
    assert got["success"] is False and "could not be evaluated: " in got["result"]["exception"]
    assert "nosuch" in got["result"]["exception"] and "\n" not in got["result"]["exception"]
    ok = Expectation("expect_column_values_to_be_between", {"column": "a", "min_value": 0}, source="user")
    assert BatchValidator([ok]).failures(frame) == {1: ["expect_column_values_to_be_between(a)"]}


@pytest.mark.parametrize(
    "fail_on, poison, bad, code",
    [
        ("never", True, True, 0),
        ("expectations", False, True, 3),
        ("expectations", True, False, 0),
        ("poison", True, False, 4),
        ("poison", False, True, 0),
        ("any", True, True, 5),
        ("any", False, False, 0),
    ],
)
def test_the_gate(tmp_path, fail_on, poison, bad, code):
    X, y, _ = planted(seed=54, n_poison=30 if poison else 0)
    X = X.astype(np.float64)
    if bad:
        X[0, 0] = np.nan
    pq.write_table(pa.table({"id": np.arange(len(y)), "label": y, "features": [list(map(float, x)) for x in X]}), tmp_path / "d.parquet")
    argv = ["scan", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "o"), "-q", "--no-data-docs", "--fail-on", fail_on]
    assert main(argv) == code
    assert (tmp_path / "o" / "summary.json").exists()  # a failing gate still writes everything


def test_help_does_not_import_great_expectations_or_beam():
    code = "import sys; from poisonscan.pipelines.cli import main; main(['--help']); print(sorted(m for m in ('great_expectations', 'apache_beam', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_data_docs_helper_reports_its_failure_and_stops_when_unused(tmp_path, monkeypatch):
    from poisonscan.expectations.docs_worker import DataDocsWorker
    from poisonscan.expectations.suite import Expectation

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    expectation = Expectation("expect_column_values_to_not_be_null", {"column": "id"})
    stats = {"evaluated_expectations": 1, "successful_expectations": 1, "unsuccessful_expectations": 0, "success_percent": 100.0}
    with pytest.raises(RuntimeError, match=r"rendering the Data Docs failed \(helper exit status 1\): .*a-file"):
        DataDocsWorker().start().render("s", [expectation], [{"success": True, "result": {}}], stats, str(blocked / "docs"))
    # rendered where it can write: the validation result says what was sent
    DataDocsWorker().start().render("s", [expectation], [{"success": True, "result": {}}], stats, str(tmp_path / "docs"))
    result = json.loads((tmp_path / "docs" / "validation_result.json").read_text())
    assert result["success"] is True and result["results"][0]["expectation_config"]["kwargs"]["column"] == "id"
    # a file in the working directory named like a standard module shadows nothing
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "logging.py").write_text("raise ImportError('shadowed')\n")
    monkeypatch.chdir(elsewhere)
    DataDocsWorker().start().render("s", [expectation], [{"success": True, "result": {}}], stats, "docs")
    assert (elsewhere / "docs" / "validation_result.json").exists()
    # a scan that ends without Data Docs (failed, cancelled) stops its helper
    with DataDocsWorker() as worker:
        proc = worker._proc
    assert proc.returncode is not None and worker._proc is None


def test_data_docs_helper_renders_while_the_caller_goes_on_and_is_killed_when_cancelled(tmp_path):
    from poisonscan.expectations.docs_worker import DataDocsWorker
    from poisonscan.expectations.suite import Expectation

    expectation = Expectation("expect_column_values_to_not_be_null", {"column": "id"})
    stats = {"evaluated_expectations": 1, "successful_expectations": 1, "unsuccessful_expectations": 0, "success_percent": 100.0}
    with pytest.raises(RuntimeError, match="no Data Docs job is being rendered"):
        DataDocsWorker().wait()
    worker = DataDocsWorker().start()
    worker.submit("s", [expectation], [{"success": True, "result": {}}], stats, str(tmp_path / "docs"))
    with pytest.raises(RuntimeError, match="already being rendered"):
        worker.submit("s", [expectation], [{"success": True, "result": {}}], stats, str(tmp_path / "other"))
    worker.wait()  # what submit() started, finished: the files are there
    with pytest.raises(RuntimeError, match="already waited for"):
        worker.wait()
    assert (tmp_path / "docs" / "validation_result.json").exists()
    assert (tmp_path / "docs" / "data_docs" / "index.html").exists()
    # a failure shows in wait(), with the helper's own words
    worker = DataDocsWorker().start()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    worker.submit("s", [expectation], [{"success": True, "result": {}}], stats, str(blocked / "docs"))
    with pytest.raises(RuntimeError, match=r"helper exit status 1\): .*a-file"):
        worker.wait()
    # cancelled between submit and wait (the report failed): killed, its thread ended
    worker = DataDocsWorker().start()
    worker.submit("s", [expectation], [{"success": True, "result": {}}], stats, str(tmp_path / "later"))
    proc, thread = worker._proc, worker._thread
    worker.close()
    assert proc.returncode is not None and not thread.is_alive() and worker._proc is None


def test_a_failed_data_docs_rendering_fails_the_scan_and_commits_nothing(tmp_path, monkeypatch):
    from poisonscan.expectations.docs_worker import DataDocsWorker
    from poisonscan.pipelines.drivers.run import ScanFailed

    X, y, _ = planted(seed=52, n_poison=0)
    table = pa.table({"id": np.arange(len(y)), "label": y, "features": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])})
    pq.write_table(table, tmp_path / "clean.parquet")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    submit = DataDocsWorker.submit
    # the real helper, sent to a folder it cannot create: it fails while the report is written
    monkeypatch.setattr(DataDocsWorker, "submit", lambda self, *a: submit(self, *a[:-1], str(blocked / "docs")))
    cfg = ScanConfig(features_column="features", labels=("0", "1", "2", "3"), min_class_fraction=0.1)
    out = tmp_path / "out"
    with pytest.raises(ScanFailed, match=r"rendering the Data Docs failed \(helper exit status 1\)"):
        run_scan([str(tmp_path / "clean.parquet")], str(out), cfg)
    assert not out.exists()  # nothing committed (no report linking to missing Data Docs); the folder the run made is gone


def test_labels_that_differ_only_in_end_white_space_are_reported(tmp_path):
    """'cat' and 'cat ' are two classes to the scan: the default suite says so, and the
    small class's rows are rejected with a reason that names its twin. 'FISH' and
    'fish' are two labels on purpose (letter case can tell classes apart)."""
    X, y, _ = planted(seed=53, n_poison=0, n_per_class=150)
    names = np.array(["cat", "dog", "bird", "fish"], dtype=object)[y]
    names[:6] = [f"{v} " for v in names[:6]]  # six rows whose label ends in a space
    names[6] = "FISH" if names[0] != "fish " else "CAT"
    names[7] = f"\t{names[7]}"
    table = pa.table({"id": np.arange(len(y)), "label": pa.array(names.tolist(), pa.string()),
                      "features": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])})
    pq.write_table(table, tmp_path / "t.parquet")
    summary = run_scan([str(tmp_path / "t.parquet")], str(tmp_path / "out"),
                       ScanConfig(features_column="features", data_docs=False))
    (result,) = [r for r in summary["expectations"]["results"] if "trimmed" in r["expectation"]]
    assert not result["success"] and not summary["expectations"]["success"]
    groups = {tuple(g["label"]): tuple(g["rows"]) for g in result["result"]["partial_unexpected_list"]}
    spaced = set(names[:6]) | {names[7]}
    assert {v for g in groups for v in g} == spaced | {v.strip() for v in spaced}
    assert sum(r for g, rows in groups.items() for v, r in zip(g, rows) if v != v.strip()) == 7
    rejected = [r for r in pq.read_table(tmp_path / "out" / "rejected.parquet").to_pylist() if r["label"] != names[6]]
    assert len(rejected) == 7
    assert summary["rows_read"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["rows_rejected"]
    for r in rejected:
        assert r["error_code"] == "small_class"
        twins = sorted(v for g in groups for v in g if g.count(r["label"]) and v != r["label"])
        which = f"class {twins[0]!r}" if len(twins) == 1 else f"classes {twins[0]!r} and {twins[1]!r}"
        assert f"(it differs from {which} only in white space at its ends)" in r["error"]


def test_labels_of_one_spelling_pass_the_distinct_labels_expectation(faulty_scan):
    _, summary, _ = faulty_scan
    (result,) = [r for r in summary["expectations"]["results"] if "trimmed" in r["expectation"]]
    assert result["success"] and result["result"]["partial_unexpected_list"] == []


def test_declared_labels_of_a_boolean_column_and_a_labels_file_with_a_byte_order_mark(tmp_path):
    from poisonscan.pipelines.cli import _labels

    rng = np.random.default_rng(5)
    n = 400
    flag = rng.random(n) < 0.5
    X = rng.normal(size=(n, 8)) + flag[:, None]
    pq.write_table(pa.table({"id": np.arange(n), "label": flag, "features": [list(map(float, x)) for x in X]}),
                   tmp_path / "b.parquet")
    cfg = ScanConfig(features_column="features", labels=("True",), data_docs=False, report=False)
    summary = run_scan([str(tmp_path / "b.parquet")], str(tmp_path / "out"), cfg)
    rejected = pq.read_table(tmp_path / "out" / "rejected.parquet")
    # the column's booleans are the labels 0 and 1; 'True' names 1
    assert summary["rejected_by_reason"] == {"undeclared_label": int((~flag).sum())}
    assert sorted(rejected["id"].to_pylist()) == np.flatnonzero(~flag).tolist()
    (tmp_path / "labels.txt").write_bytes(b"\xef\xbb\xbfcat\r\ndog\r\n\r\n")  # as a Windows editor saves it
    assert _labels("@" + str(tmp_path / "labels.txt")) == ("cat", "dog")
