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
    starts = ["=1+", "+", "-", "@SUM(", "\t=", "\r=", "'=", "'x"]  # a leading ' is doubled: '=1 is not =1
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
    # and read back as the ids they stand for, '=1 and =1 apart
    from poisonscan.pipelines.scan.decisions import _id

    known = set(quarantined) | {"=5", "'=5"}
    assert all(_id("'" + i, known) == i for i in quarantined)
    assert _id("'=5", known) == "=5" and _id("''=5", known) == "'=5" and _id("'plain", {"'plain"}) == "'plain"


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
    from poisonscan.pipelines.represent.proxy import UserModel

    with pytest.raises(ConfigError, match="--model applies to image inputs"):
        scan_table(table, model=UserModel(str(model)))


# 4. row order never changes a verdict ---------------------------------------------------
def _order_case():
    """4 classes of 24-dim Gaussians; 90 rows of other classes shifted in 3 dimensions and
    relabelled 0; 40 rows of class 2 relabelled 3; 6 records copied under new ids; two
    other records under the id of row 7."""
    rng = np.random.default_rng(0)
    n, k, d = 3000, 4, 24
    centres = rng.normal(0, 1.2, (k, d))
    y = rng.integers(0, k, n)
    X = centres[y] + rng.normal(size=(n, d))
    moved = rng.choice(np.flatnonzero(y != 0), 90, replace=False)
    X[moved[:, None], [0, 1, 2]] += 2.5
    y[moved] = 0
    y[rng.choice(np.flatnonzero(y == 2), 40, replace=False)] = 3
    copied = rng.choice(n, 6, replace=False)
    other = rng.normal(size=(2, d)) + centres[1]
    X = np.vstack([X, X[copied], other]).astype(np.float32)
    y = np.concatenate([y, y[copied], [1, 1]])
    ids = np.array([f"row{i:05d}" for i in range(len(y))])
    ids[-2:] = "row00007"
    return pa.table({"id": ids, "label": y, "features": list(X)})


def _lists(quarantine: pa.Table, rejected: pa.Table):
    q = sorted(zip(quarantine["id"].to_pylist(), quarantine["score"].to_pylist(),
                   [tuple(d) for d in quarantine["detectors"].to_pylist()]))
    r = sorted(zip(rejected["id"].to_pylist(), rejected["error_code"].to_pylist(),
                   [tuple(f) for f in rejected["features"].to_pylist()]))
    return q, r


@pytest.mark.slow
def test_row_order_files_and_workers_never_change_the_lists(tmp_path):
    from poisonscan import ScanConfig, scan_table
    from poisonscan.pipelines.drivers.run import run_scan

    table = _order_case()
    first = scan_table(table, expected_poison_rate=0.03)
    expected = _lists(first.quarantine, first.rejected)
    assert len(expected[0]) > 20 and len(expected[1]) == 9  # something found; copies and a shared id rejected
    assert sum(code == "duplicate_id" for _, code, _ in expected[1]) == 3
    n = table.num_rows
    orders = [np.arange(n)[::-1]] + [np.random.default_rng(s).permutation(n) for s in range(3)]
    for order in orders:
        r = scan_table(table.take(pa.array(order)), expected_poison_rate=0.03)
        assert _lists(r.quarantine, r.rejected) == expected
        assert r.summary["classes_poisoned"] == first.summary["classes_poisoned"]
    # the Beam pipeline: a shuffled copy in three files
    shuffled = table.take(pa.array(orders[-1]))
    src = tmp_path / "parts"
    src.mkdir()
    for j, part in enumerate(np.array_split(np.arange(n), 3)):
        pq.write_table(shuffled.take(pa.array(part)), src / f"part{j}.parquet", row_group_size=400)
    run_scan([str(src / "*.parquet")], str(tmp_path / "out"), ScanConfig(expected_poison_rate=0.03, report=False, data_docs=False))
    beam = _lists(pq.read_table(tmp_path / "out" / "quarantine.parquet"), pq.read_table(tmp_path / "out" / "rejected.parquet"))
    assert beam == expected


def test_copies_of_an_id_do_not_train_the_proxy_in_read_order():
    """Found by the fuzz benchmark: two rows sharing an id share a sampling priority, so
    they entered the proxy's training sample in read order, and the same table reversed
    trained other weights and quarantined other rows. Rows with a duplicated id (rejected
    anyway) now stay out of the training sample."""
    from poisonscan import scan_table

    from .conftest import credit_table

    table, _ = credit_table(flip=True)
    ids = np.array(table["id"].to_pylist())
    labels = np.array(table["label"].to_pylist())
    same = np.flatnonzero(labels == labels[0])[:2]
    ids[same[1]] = ids[same[0]]
    table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids))
    runs = [scan_table(table.take(pa.array(order)), proxy_epochs=1)
            for order in (np.arange(table.num_rows), np.arange(table.num_rows)[::-1])]
    weights = [r.state.representer.proxy.state_dict for r in runs]
    assert all(np.array_equal(np.asarray(weights[0][k]), np.asarray(weights[1][k])) for k in weights[0])
    q = [sorted(zip(r.quarantine["id"].to_pylist(), r.quarantine["score"].to_pylist())) for r in runs]
    assert q[0] == q[1] and len(q[0]) > 0
    assert runs[0].summary["rejected_by_reason"] == {"duplicate_id": 2}


# 7. smaller defects --------------------------------------------------------------------
def _small_table(n=400, bad=()):
    X, y = _features(n=n)
    X = X.astype(np.float64)
    for i in bad:
        X[i] = np.nan
    return pa.table({"id": np.arange(n), "label": list(y), "features": list(X)})


def test_feature_range_takes_a_negative_low_as_written(tmp_path):
    table = _small_table()
    X = np.stack(table["features"].to_numpy(zero_copy_only=False))
    X[3, 0] = -7.5
    table = table.set_column(2, "features", pa.array(list(X)))
    rc, out = _scan(tmp_path, table, "--feature-range", "-5,5", "-q")
    assert rc == 0
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["rejected_by_reason"].get("out_of_range") == 1


def test_report_of_a_file_or_a_corrupt_summary_is_a_one_line_error(tmp_path, capsys):
    rc, out = _scan(tmp_path, _small_table(), "-q")
    assert rc == 0
    assert cli_main(["report", os.path.join(out, "quarantine.csv")]) == 1
    assert cli_main(["report", str(tmp_path / "nothing-here")]) == 1
    with open(os.path.join(out, "summary.json"), "w") as f:
        f.write("{not json")
    assert cli_main(["report", out]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("poisonscan: error")]) == 3
    assert "is a file" in err and "cannot be read" in err


def test_a_scan_where_every_row_is_rejected_says_so_with_its_own_exit_code(tmp_path, capsys):
    n = 120
    rc, out = _scan(tmp_path, _small_table(n=n, bad=range(n)))
    assert rc == 6
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["verdict"].startswith("nothing scanned") and s["rows_rejected"] == n
    assert "nothing scanned" in capsys.readouterr().out


def test_out_holding_the_inputs_is_refused_and_bracketed_names_are_files(tmp_path, capsys):
    table = _small_table()
    src = tmp_path / "train[1].parquet"
    pq.write_table(table, src)
    assert cli_main(["scan", str(src), "--out", str(tmp_path), "-q"]) == 1
    assert "holds input files" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()
    assert cli_main(["scan", str(src), "--out", str(tmp_path / "out"), "-q"]) == 0


def test_image_errors_name_no_memory_address():
    import io

    from PIL import Image

    from poisonscan.pipelines.represent.encoders import ImageEncoder

    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, format="PNG")
    enc = ImageEncoder.fit([png.getvalue()] * 3)
    errors = enc.encode(pa.array([b"garbage", b"\x89PNG\r\n\x1a\n broken"], pa.binary())).errors
    assert errors and all(code == "bad_image" and " at 0x" not in text for code, text in errors.values())


def _big_features(path, n=60_000, dim=64):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, 4, n)
    feats = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), dim)
    pq.write_table(pa.table({"id": np.arange(n), "label": y, "features": feats}), path, row_group_size=5000)


def _run_and_signal(tmp_path, out, sig, after=1.5):
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "poisonscan.pipelines.cli", "scan", str(tmp_path / "big.parquet"), "--out", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    end = time.time() + 60
    while time.time() < end and not glob.glob(os.path.join(out, ".poisonscan-tmp-*")):
        time.sleep(0.1)
    # well inside the run: on an idle two-core machine the temporary folder appears 0.7 s
    # into a scan of about 4.8 s; waiting 4 s after it reached the run's exit, where the
    # handler is gone and SIGTERM ends the process by default (rc -15)
    time.sleep(after)
    assert proc.poll() is None, "the scan ended before it could be signalled"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_sigterm_cleans_up_and_sigkill_leftovers_are_removed_by_the_next_run(tmp_path):
    import signal

    _big_features(tmp_path / "big.parquet")
    out = tmp_path / "new-out"
    rc, err = _run_and_signal(tmp_path, out, signal.SIGTERM)
    assert rc == 143 and "terminated" in err
    assert not out.exists()  # made by the run, removed with it
    out.mkdir()
    rc, _ = _run_and_signal(tmp_path, out, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    left = glob.glob(str(out / ".poisonscan-tmp-*"))
    assert len(left) == 1  # nothing can clean up after SIGKILL...
    assert cli_main(["scan", str(tmp_path / "big.parquet"), "--out", str(out), "-q"]) == 0
    assert glob.glob(str(out / ".poisonscan-tmp-*")) == []  # ...but the next run does
    assert (out / "summary.json").exists()


def test_a_stray_byte_in_a_csv_cell_rejects_the_row_not_the_file(tmp_path):
    rng = np.random.default_rng(0)
    words = ["good", "bad", "movie", "plot", "actor", "great", "boring", "fun"]
    vec = tmp_path / "vectors.csv"
    txt = tmp_path / "texts.csv"
    with open(vec, "wb") as f, open(txt, "wb") as g:
        f.write(b"id,label,features\n")
        g.write(b"id,label,text\n")
        for i in range(300):
            idb, lab = f"r{i}".encode(), (b"a" if i % 2 else b"b")
            idb = b"r\xff5" if i == 5 else idb
            lab = b"\xfe" if i == 9 else lab
            vector = ",".join(f"{x:.3f}" for x in rng.normal(size=4)).encode()
            vector = b"\xb5" + vector if i == 7 else vector  # numbers written as text, one stray byte
            f.write(idb + b"," + lab + b',"[' + vector + b']"\n')
            text = " ".join(rng.choice(words, 8)).encode()
            g.write(f"t{i},{i % 2},".encode() + (b"caf\xe9 " + text if i == 11 else text) + b"\n")
    assert cli_main(["scan", str(vec), "--out", str(tmp_path / "v"), "--features-column", "features", "-q"]) == 0
    s = json.load(open(tmp_path / "v" / "summary.json"))
    assert s["rows_read"] == 300 and s["dimension"] == 4
    assert s["rejected_by_reason"] == {"bad_id_encoding": 1, "bad_label_encoding": 1, "bad_number": 1}
    bad = pq.read_table(tmp_path / "v" / "rejected.parquet").to_pylist()
    assert [r["error"] for r in bad if r["id"] == b"r7"]  # the id column is binary too == ["features: not valid UTF-8 (byte 0xb5 at offset 1)"]
    # no flag: the column typed binary for its stray byte is text, not image bytes
    assert cli_main(["scan", str(txt), "--out", str(tmp_path / "t"), "-q"]) == 0
    s = json.load(open(tmp_path / "t" / "summary.json"))
    assert s["rows_read"] == 300 and s["rejected_by_reason"] == {"bad_text": 1}
    rejected = pq.read_table(tmp_path / "t" / "rejected.parquet").to_pylist()
    assert rejected[0]["id"] == "t11" and "byte 0xe9" in rejected[0]["error"]


def test_score_histograms_of_extreme_statistics_do_not_stop_the_scan():
    from poisonscan.pipelines.scan.review import HISTOGRAM_BINS, _histogram

    # found by benchmarks/fuzz.py through the CLI: numpy could not cut (1e20, 1e20 + 1)
    # into bins and the Finish step failed
    for stat in ([1e20, 1e20], [-1e308, 1e308], [1e300, 1.0000001e300], [3.0], [np.inf, 2.0, -np.inf]):
        h = _histogram(np.array(stat), None)
        assert len(h["counts"]) == HISTOGRAM_BINS and sum(h["counts"]) == int(np.isfinite(stat).sum())


def test_infinite_statistics_are_written_as_null_and_the_scan_finishes(tmp_path):
    # found by benchmarks/fuzz.py through the CLI: a class whose rows are two repeated
    # vectors splits into two clusters of identical points, infinitely separated, and
    # summary.json could not be written ("Out of range float values are not JSON compliant")
    rng = np.random.default_rng(5)
    X, y = _features(n=240, dim=4, labels=("a", "b", "c", "d"))
    X = X * 1e5
    a = np.flatnonzero(np.array(y) == "a")
    X[a] = X[a[0]]
    X[a[:6]] = X[a[-1]] + 3e5 * rng.normal(size=4)  # two points, six rows and the rest
    rc, out = _scan(tmp_path, pa.table({"id": np.arange(len(y)), "label": list(y), "features": list(X)}),
                    "--detectors", "activation_clustering", "-q")
    assert rc == 0
    text = open(os.path.join(out, "summary.json")).read()
    s = json.loads(text)  # strict JSON: no Infinity, no NaN
    assert "Infinity" not in text and "NaN" not in text
    verdict = next(c for c in s["classes"] if c["label"] == "a")["verdicts"]["activation_clustering"]
    assert verdict["separation"] is None
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"]
    assert os.path.exists(os.path.join(out, "report.html"))
