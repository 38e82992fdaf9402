"""The Beam pipeline on the embedded FnApiRunner: same answers as the in-memory path."""

import dataclasses
import json
import os
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from poisonscan import ScanConfig, scan_table
from poisonscan.pipelines.drivers.beam import FindDuplicateIds
from poisonscan.pipelines.drivers.run import (
    Runner,
    ScanFailed,
    _pass0_here,
    find_duplicate_ids_here,
    run_scan,
)
from poisonscan.pipelines.io.sources import SourceError
from poisonscan.pipelines.scan.plan import plan_scan

from ..conftest import as_table, planted


def read_outputs(out):
    q = pq.read_table(os.path.join(out, "quarantine.parquet"))
    r = pq.read_table(os.path.join(out, "rejected.parquet"))
    c = pq.read_table(os.path.join(out, "clean.parquet")) if os.path.exists(os.path.join(out, "clean.parquet")) else None
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    return q, r, c, s


def dirty_table(seed=31):
    X, y, poison = planted(seed=seed)
    X = X.astype(np.float64)
    X[5, 2] = np.nan
    ids = np.arange(len(y))
    ids[700] = 699  # a duplicate
    table = as_table(X, y, ids, fixed=False)
    table = table.append_column("note", pa.array([f"n{i}" for i in range(len(y))]))
    return table, poison


def test_beam_path_equals_in_memory_path(tmp_path, write_sources):
    table, poison = dirty_table()
    src = write_sources(table, "parquet", row_group_size=300)  # several units and batches
    cfg = ScanConfig(features_column="features", write_clean=True, batch_rows=128)
    summary = run_scan([src], str(tmp_path / "out"), cfg)
    q, r, c, s = read_outputs(tmp_path / "out")
    mem = scan_table(table, cfg)

    assert q.column("id").to_pylist() == mem.quarantine.column("id").to_pylist()
    np.testing.assert_allclose(q["score"].to_numpy(), mem.quarantine["score"].to_numpy(), rtol=1e-9)
    assert q["reason"].to_pylist() == mem.quarantine["reason"].to_pylist()
    assert r["error_code"].to_pylist() == mem.rejected["error_code"].to_pylist() == ["nan_features", "duplicate_id", "duplicate_id"]
    assert c["id"].to_pylist() == mem.clean["id"].to_pylist()
    assert c.column_names == table.column_names  # all original columns, nothing added
    for key in ("rows_read", "rows_clean", "rows_quarantined", "rows_rejected", "classes_poisoned"):
        assert s[key] == mem.summary[key] == summary[key]
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"]
    assert sorted(q["id"].to_pylist()) == sorted(set(poison.tolist()) - {5})
    assert q["source_file"].to_pylist()[0] == src
    assert s["versions"]["apache-beam"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_sources_give_the_parquet_answer(tmp_path, write_sources, fmt):
    X, y, poison = planted(seed=32)
    table = as_table(X.astype(np.float64), y, fixed=False)
    pq_src = write_sources(table, "parquet", name="same")
    other = write_sources(table, fmt, name="same")
    cfg = ScanConfig(features_column="features")
    run_scan([pq_src], str(tmp_path / "a"), cfg)
    run_scan([other], str(tmp_path / "b"), cfg)
    qa, _, _, sa = read_outputs(tmp_path / "a")
    qb, _, _, sb = read_outputs(tmp_path / "b")
    assert qa["id"].to_pylist() == qb["id"].to_pylist()
    assert sorted(qb["id"].to_pylist()) == poison.tolist()
    assert sb["rows_read"] == sa["rows_read"] == len(y)


def test_globs_over_several_files_and_string_keys(tmp_path, write_sources):
    X, y, poison = planted(seed=33)
    ids = np.array([f"r{i:05d}" for i in range(len(y))], dtype=object)
    labels = np.array(["w", "x", "y", "z"], dtype=object)[y]
    table = as_table(X, labels, ids)
    half = len(y) // 2
    write_sources(table.slice(0, half), "parquet", name="part-0")
    write_sources(table.slice(half), "parquet", name="part-1")
    run_scan([str(tmp_path / "part-*.parquet")], str(tmp_path / "out"), ScanConfig())
    q, _, _, s = read_outputs(tmp_path / "out")
    assert sorted(q["id"].to_pylist()) == sorted(ids[poison].tolist())
    assert s["classes_poisoned"] == ["x"]
    assert len(s["inputs"]) == 2


def test_empty_input_writes_empty_outputs(tmp_path, write_sources):
    table = as_table(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    src = write_sources(table, "parquet")
    run_scan([src], str(tmp_path / "out"), ScanConfig(write_clean=True))
    q, r, c, s = read_outputs(tmp_path / "out")
    assert (q.num_rows, r.num_rows, c.num_rows, s["rows_read"]) == (0, 0, 0, 0)
    assert s["verdict"] == "nothing scanned: the input holds no rows"


def test_missing_column_and_missing_file_write_nothing(tmp_path, write_sources):
    X, y, _ = planted(seed=34)
    src = write_sources(as_table(X, y), "parquet")
    with pytest.raises(SourceError, match="no label column 'target'"):
        run_scan([src], str(tmp_path / "out"), ScanConfig(label_column="target"))
    with pytest.raises(SourceError, match="no file matches"):
        run_scan([str(tmp_path / "nope-*.parquet")], str(tmp_path / "out"), ScanConfig())
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []


def test_a_failure_inside_the_pipeline_leaves_earlier_outputs_alone(tmp_path, monkeypatch):
    out = tmp_path / "out"
    good = tmp_path / "good.csv"
    bad = tmp_path / "bad.csv"
    rng = np.random.default_rng(0)
    lines = ["id,label,features"] + [
        f'{i},{i % 2},"[{rng.normal():.6f}, {rng.normal():.6f}, {rng.normal():.6f}]"' for i in range(40_000)
    ]
    good.write_text("\n".join(lines) + "\n")
    cfg = ScanConfig(features_column="features")
    run_scan([str(good)], str(out), cfg)

    def files():
        return {
            os.path.relpath(os.path.join(d, f), out): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(out)
            for f in names
        }

    before = files()
    # the file is rewritten while the scan runs, once its columns were planned: its label
    # column turns to text long after the first block that typed it
    bad.write_text("\n".join(lines) + "\n")

    def planned_then_rewritten(*args, **kwargs):
        plan = plan_scan(*args, **kwargs)
        bad.write_text("\n".join(lines + ['40000,oops,"[1, 2, 3]"']) + "\n")
        return plan

    from poisonscan.pipelines.drivers import run

    monkeypatch.setattr(run, "plan_scan", planned_then_rewritten)
    with pytest.raises((ScanFailed, SourceError), match="bad.csv.*'oops'"):
        run_scan([str(bad)], str(out), cfg)
    assert files() == before  # no staging folder left, no file touched


def test_two_workers_give_the_same_lists(tmp_path, write_sources):
    table, _ = dirty_table(seed=35)
    src = write_sources(table, "parquet", row_group_size=200)
    cfg = ScanConfig(features_column="features", write_clean=True, batch_rows=100)
    run_scan([src], str(tmp_path / "one"), cfg)
    run_scan([src], str(tmp_path / "two"), cfg, Runner(workers=2))
    for name in ("quarantine.parquet", "rejected.parquet", "clean.parquet"):
        a = pq.read_table(tmp_path / "one" / name)
        b = pq.read_table(tmp_path / "two" / name)
        assert a.schema == b.schema and str(a.to_pylist()) == str(b.to_pylist()), name  # NaN-safe
    # and the saved state, byte for byte: the classes' partials arrive in another order
    # and the fits run with other thread counts (docs/architecture.md, Determinism)
    assert (tmp_path / "one" / "state.pkl").read_bytes() == (tmp_path / "two" / "state.pkl").read_bytes()


def test_files_that_write_the_features_differently_are_a_clear_error(tmp_path, write_sources):
    X, y, _ = planted(seed=33)
    table = as_table(X.astype(np.float64), y, fixed=False)
    lists = write_sources(table.slice(0, 800), "parquet", name="lists")
    text = write_sources(table.slice(800), "csv", name="text")  # "[0.1, ...]" strings
    with pytest.raises(SourceError, match=r"text.csv: the features column 'features' holds numbers written as text here but lists of numbers in other files"):
        run_scan([lists, text], str(tmp_path / "out"), ScanConfig(features_column="features"))
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    # lists of float32 in one file and float64 in another are one encoding
    wide = write_sources(table.slice(800), "parquet", name="wide")
    narrow = table.slice(0, 800).set_column(
        2, "features", table.column("features").slice(0, 800).cast(pa.list_(pa.float32()))
    )
    summary = run_scan([write_sources(narrow, "parquet", name="narrow"), wide], str(tmp_path / "mixed"), ScanConfig(features_column="features"))
    assert summary["rows_read"] == len(y)


def test_find_duplicate_ids_transform(tmp_path, write_sources):
    table = pa.table(
        {
            "id": [1, 2, 1, 3, 2, 1],
            "label": [0] * 6,
            "features": pa.array([[0.0, 1.0]] * 6),
        }
    )
    src = write_sources(table, "parquet", row_group_size=2)
    plan = plan_scan([src], ScanConfig())
    with BeamTestPipeline(runner="FnApiRunner") as p:
        dups = (
            p
            | beam.Create(list(plan.units))
            | FindDuplicateIds(plan)
            | beam.Map(lambda d: sorted(d.values()))
        )
        assert_that(dups, equal_to([[2, 3]]))  # copies of ids 2 and 1
    # the embedded runner's driver finds the same without the pipeline
    assert sorted(find_duplicate_ids_here(plan).values()) == [2, 3]


def test_pass_0_in_the_driver_writes_nothing_once_cancelled_and_reports_its_errors(tmp_path, write_sources):
    from poisonscan.pipelines.drivers.run import _DriverPass0

    table, _ = dirty_table(seed=37)
    src = write_sources(table, "parquet", row_group_size=10)  # many batches
    plan = plan_scan([src], ScanConfig(features_column="features", batch_rows=10))
    done = _DriverPass0(plan, str(tmp_path / "done.pkl"))
    done.result()
    assert (tmp_path / "done.pkl").exists()
    stopped = _DriverPass0(plan, str(tmp_path / "stopped.pkl"))
    stopped.cancel()  # a scan that failed meanwhile: its staging folder is about to go
    assert not stopped._thread.is_alive()
    if (tmp_path / "stopped.pkl").exists():  # it had finished before the cancel
        (tmp_path / "stopped.pkl").unlink()
    time.sleep(0.2)
    assert not (tmp_path / "stopped.pkl").exists()  # nothing written once cancel() returned
    (tmp_path / "broken.parquet").write_bytes(open(src, "rb").read()[:-200])
    with pytest.raises(SourceError, match="broken.parquet"):
        _DriverPass0(dataclasses.replace(plan, file_paths={0: str(tmp_path / "broken.parquet")}, units=tuple(
            dataclasses.replace(u, path=str(tmp_path / "broken.parquet")) for u in plan.units)), str(tmp_path / "x.pkl")).result()


def test_pass_0_in_the_driver_gives_the_pipelines_outputs(tmp_path, write_sources, monkeypatch):
    from poisonscan.pipelines.drivers import run

    table, _ = dirty_table(seed=36)
    ids = table.column("id").to_numpy().copy()
    ids[[800, 900]] = [3, 3]  # three rows of id 3, besides 699 twice
    table = table.set_column(table.column_names.index("id"), "id", pa.array(ids))
    a = write_sources(table.slice(0, 600), "parquet", name="a", row_group_size=128)
    b = write_sources(table.slice(600), "parquet", name="b", row_group_size=90)  # ids repeat across files
    cfg = ScanConfig(features_column="features", write_clean=True, batch_rows=100)
    assert _pass0_here(plan_scan([a, b], cfg), "FnApiRunner")
    run_scan([a, b], str(tmp_path / "driver"), cfg)
    monkeypatch.setattr(run, "_pass0_here", lambda plan, runner: False)
    run_scan([a, b], str(tmp_path / "pipeline"), cfg)
    for name in ("quarantine.parquet", "rejected.parquet", "clean.parquet"):
        ta, tb = (pq.read_table(tmp_path / run / name) for run in ("driver", "pipeline"))
        assert ta.schema == tb.schema and repr(ta.to_pylist()) == repr(tb.to_pylist())  # NaN too
    _, r, _, s = read_outputs(tmp_path / "driver")
    assert sorted(r.filter(pc.equal(r["error_code"], "duplicate_id"))["id"].to_pylist()) == [3, 3, 3, 699, 699]
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"]
    assert not [n for n in os.listdir(tmp_path / "driver") if n.startswith(".poisonscan-tmp")]
