"""Reliability and security: odd data never crashes a scan, runs code or loses a row.

Each test here is the regression test of a defect seen on real use (docs/reliability.md
lists each promise and its test).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan.pipelines.cli import main as cli_main

IMG = "<img src=x onerror=\"window.__pwned = 'img'; document.title = 'PWNED'\">"
SCRIPT = "<script>window.__pwned = 'script'</script>"


def _features(n=600, dim=8, seed=0, labels=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    y = np.asarray(labels, dtype=object)[rng.integers(0, len(labels), n)]
    X = rng.normal(size=(n, dim)).astype(np.float32)
    return X, y


def _scan(tmp_path, table, *args) -> tuple[int, str]:
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    out = tmp_path / "out"
    rc = cli_main(["scan", str(src), "--out", str(out), *args])
    return rc, str(out)


# 1. the Data Docs: data never runs as code; every page opens offline --------------------
def test_data_docs_escape_the_data_and_open_offline(tmp_path, browser):
    X, y = _features(labels=("a", "b", IMG))
    ids = [f"r{i}" for i in range(len(y))]
    ids[3] = SCRIPT
    X[7, 0] = np.nan  # a rejected row: its id reaches the failing expectation's list
    X[8, 1] = np.nan
    ids[8] = IMG
    table = pa.table({"id": ids, "label": list(y), "features": list(X)})
    rc, out = _scan(tmp_path, table, "--features-column", "features")
    assert rc == 0
    pages = glob.glob(os.path.join(out, "expectations", "data_docs", "**", "*.html"), recursive=True)
    assert len(pages) >= 3
    shown = False
    for path in pages:
        html = open(path, encoding="utf-8").read()
        assert 'http-equiv="Content-Security-Policy"' in html
        page = browser.open("file://" + path)
        assert page.eval("document.scripts.length") == 0
        handlers = "Array.from(document.querySelectorAll('*')).some(e => Array.from(e.attributes).some(a => a.name.startsWith('on')))"
        assert page.eval(handlers) is False
        assert page.eval("window.__pwned") is None
        assert page.eval("document.title") != "PWNED"
        assert page.problems == [], (path, page.problems)  # no CSP violation, no failed load
        remote = page.eval(
            "performance.getEntriesByType('resource').map(e => e.name).filter(u => !u.startsWith('file:'))"
        )
        assert remote == [], remote
        # the markup is shown as text, as it is in the data
        shown = shown or bool(page.eval(f"document.body.innerText.includes({json.dumps(IMG)})"))
        page.close()
    assert shown


# 6. CSV injection: a formula-like id is text in every CSV poisonscan writes ------------
def test_formula_like_ids_are_text_in_quarantine_csv_and_decisions_csv(tmp_path, browser):
    import csv

    from .conftest import planted

    X, y, poison = planted()
    starts = ["=1+", "+", "-", "@SUM(", "\t=", "\r="]
    ids = [f"r{i}" for i in range(len(y))]
    for k, i in enumerate(poison):
        ids[i] = f"{starts[k % len(starts)]}{i}"
    table = pa.table({"id": ids, "label": y, "features": list(X)})
    rc, out = _scan(tmp_path, table, "--features-column", "features")
    assert rc == 0
    quarantined = pq.read_table(os.path.join(out, "quarantine.parquet"))["id"].to_pylist()
    assert set(quarantined) == {ids[i] for i in poison}  # the lists keep the ids as they are
    with open(os.path.join(out, "quarantine.csv"), newline="") as f:
        written = [r["id"] for r in csv.DictReader(f)]
    assert written == ["'" + i for i in quarantined]
    page = browser.open("file://" + os.path.join(out, "report.html"))
    target = page.download("#download", tmp_path / "downloads", "poisonscan-decisions.csv")
    with open(target, newline="") as f:
        decided = [r["id"] for r in csv.DictReader(f)]
    assert sorted(decided) == sorted("'" + i for i in quarantined)
    assert page.problems == []


# 2. large finite values: rejected with a reason, the scan finishes ---------------------
def test_huge_finite_feature_values_are_rejected_and_the_scan_finishes():
    from poisonscan import scan_table

    X, y = _features(n=1200, dim=16)
    X = X.astype(np.float64)
    X[5, 0] = 1e20
    X[[20, 21, 22, 23, 24, 25], 3] = 1e39
    X[40, 2] = -1e300
    X[41, 1] = 1e14  # large, within the range: scanned
    table = pa.table({"id": np.arange(len(y)), "label": list(y), "features": list(X)})
    r = scan_table(table)
    s = r.summary
    assert s["rejected_by_reason"] == {"huge_features": 8}
    assert sorted(r.rejected["id"].to_pylist()) == [5, 20, 21, 22, 23, 24, 25, 40]
    assert "1e+39" in r.rejected.filter(pa.compute.equal(r.rejected["id"], 20))["error"][0].as_py()
    assert s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == s["rows_read"] == len(y)


# 3. a class of constant vectors: judged, the other classes scanned ---------------------
def test_a_class_of_constant_vectors_is_judged_and_the_others_scanned():
    from poisonscan import scan_table

    X, y = _features(n=1200, dim=16)
    X[y == "b"] = 0.5
    r = scan_table(pa.table({"id": np.arange(len(y)), "label": list(y), "features": list(X)}))
    s = r.summary
    copies = int((y == "b").sum()) - 1
    assert s["rejected_by_reason"] == {"duplicate_content": copies}  # one record, repeated
    b = next(c for c in s["classes"] if c["label"] == "b")
    assert b["verdicts"]["activation_clustering"]["note"].startswith("the class's sampled vectors are all the same")
    assert s["classes_poisoned"] == [] and s["rows_read"] == len(y)
    assert {c["label"]: c["status"] for c in s["classes"]} == {"a": "scanned", "b": "scanned", "c": "scanned"}


# 5. --model with an input it cannot apply to: refused, not ignored ----------------------
def test_model_with_features_is_a_usage_error(tmp_path, capsys):
    import torch

    model = tmp_path / "net.pt"
    torch.jit.script(torch.nn.Linear(8, 4)).save(str(model))
    X, y = _features(n=300)
    table = pa.table({"id": np.arange(len(y)), "label": list(y), "features": list(X)})
    rc, out = _scan(tmp_path, table, "--model", str(model))
    assert rc == 2
    err = capsys.readouterr().err
    assert "--model applies to image inputs" in err and "Traceback" not in err
    assert not os.path.exists(out)
    from poisonscan import scan_table
    from poisonscan.pipelines.config import ConfigError
    from poisonscan.pipelines.representations import UserModel

    with pytest.raises(ConfigError, match="--model applies to image inputs"):
        scan_table(table, model=UserModel(str(model)))
