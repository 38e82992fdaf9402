"""The public PTransform: poisonscan inside a user's own Beam pipeline."""

from __future__ import annotations

import glob
import json
import os
import pickle
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from poisonscan import ScanConfig, ScanDicts, ScanTables, scan_table
from poisonscan.pipelines.config import ConfigError

from ..conftest import as_table
from ..planted import planted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "docs", "examples", "beam_transform.py")
CFG = ScanConfig(features_column="features")


def _data():
    """Planted rows, and rows to reject: a repeated id, a missing label, a short vector."""
    X, y, poison = planted(n_per_class=300, seed=4)
    table = as_table(X, y)
    bad = pa.table({
        "id": pa.array([5, 10_001, 10_002], pa.int64()),
        "label": pa.array([0, None, 2], pa.int64()),
        "features": pa.array([X[0].tolist(), X[1].tolist(), [1.0, 2.0]], pa.list_(pa.float32())),
    })
    table = table.cast(pa.schema([("id", pa.int64()), ("label", pa.int64()), ("features", pa.list_(pa.float32()))]))
    return pa.concat_tables([table, bad]), poison


class _Keep(beam.DoFn):
    def __init__(self, path):
        self.path = path

    def process(self, element):
        with open(self.path, "ab") as f:
            pickle.dump(element, f)


def _load(path):
    out = []
    if os.path.exists(path):
        with open(path, "rb") as f:
            while True:
                try:
                    out.append(pickle.load(f))
                except EOFError:
                    break
    return out


def _run(tmp_path, pieces, transform, name="run"):
    folder = tmp_path / name
    folder.mkdir()
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        outputs = p | beam.Create(pieces, reshuffle=False) | transform
        for key, pcoll in outputs.items():
            pcoll | f"Keep{key}" >> beam.ParDo(_Keep(str(folder / f"{key}.pkl")))
    return {key: _load(str(folder / f"{key}.pkl")) for key in ("clean", "quarantined", "rejected", "summary", "state")}


def _ids(tables, column="id"):
    return sorted(v for t in tables for v in t.column(column).to_pylist())


def test_the_docs_example_reads_scans_and_writes_with_beam_sinks(tmp_path):
    table, poison = _data()
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(table.slice(0, 700), data / "a.parquet", row_group_size=200)
    pq.write_table(table.slice(700), data / "b.parquet", row_group_size=200)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, EXAMPLE, str(data / "*.parquet"), str(out), "--features-column", "features"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    def read(name):
        files = sorted(glob.glob(str(out / f"{name}-*.parquet")))
        assert files, name
        return pa.concat_tables([pq.read_table(f) for f in files])

    q, r, c = read("quarantined"), read("rejected"), read("clean")
    [summary_file] = glob.glob(str(out / "summary-*.json"))
    with open(summary_file) as f:
        summary = json.loads(f.read())
    mem = scan_table(table, CFG)
    # the same scan: the same list in the same order, for the same reasons
    assert q["id"].to_pylist() == mem.quarantine["id"].to_pylist()
    assert set(q["id"].to_pylist()) == set(poison.tolist())
    assert q["reason"].to_pylist() == mem.quarantine["reason"].to_pylist()
    np.testing.assert_allclose(q["score"].to_numpy(), mem.quarantine["score"].to_numpy(), rtol=1e-6)
    assert sorted(zip(r["id"].to_pylist(), r["error_code"].to_pylist()), key=str) == sorted(
        zip(mem.rejected["id"].to_pylist(), mem.rejected["error_code"].to_pylist()), key=str
    )
    assert sorted(r["error_code"].to_pylist()) == ["duplicate_id", "duplicate_id", "missing_label", "wrong_length"]
    assert _ids([c]) == _ids([mem.clean])
    assert c.schema.equals(table.schema)
    # every row read is in exactly one output
    assert summary["rows_read"] == table.num_rows == c.num_rows + q.num_rows + r.num_rows
    for key in ("rows_quarantined", "rows_rejected", "classes_poisoned", "rejected_by_reason"):
        assert summary[key] == mem.summary[key], key


def test_the_same_tables_in_any_order_give_the_same_outputs(tmp_path):
    table, _ = _data()
    pieces = [table.slice(i, 200) for i in range(0, table.num_rows, 200)]
    pieces.append(pieces[1])  # an identical table: its rows share ids with another's
    a = _run(tmp_path, pieces, ScanTables(CFG, table.schema), "a")
    b = _run(tmp_path, pieces[::-1], ScanTables(CFG, table.schema), "b")
    assert a["quarantined"][0].equals(b["quarantined"][0])
    assert a["rejected"][0].equals(b["rejected"][0])
    assert a["summary"] == b["summary"]
    key = lambda t: (t.num_rows, t.column("id").to_pylist())  # noqa: E731
    assert sorted(map(key, a["clean"])) == sorted(map(key, b["clean"]))
    # both copies of every row of the repeated table are rejected, and nothing is lost
    s = a["summary"][0]
    assert s["rejected_by_reason"]["duplicate_id"] == 2 * 200 + 2
    # the fitted state, to merge with other scans'
    [state] = a["state"]
    assert state.rows == s["rows_read"] - s["rows_rejected"] and state.model.poisoned_classes == s["classes_poisoned"]
    assert s["rows_read"] == table.num_rows + 200 == _rows(a)


def _rows(outputs):
    return sum(t.num_rows for key in ("clean", "quarantined", "rejected") for t in outputs[key])


def test_other_cuts_of_the_same_rows_give_the_same_list(tmp_path):
    table, poison = _data()
    a = _run(tmp_path, [table.slice(i, 97) for i in range(0, table.num_rows, 97)], ScanTables(CFG, table.schema), "a")
    b = _run(tmp_path, table.to_batches(max_chunksize=500), ScanTables(CFG, table.schema), "b")
    qa, qb = a["quarantined"][0], b["quarantined"][0]
    assert qa["id"].to_pylist() == qb["id"].to_pylist()
    assert qa["reason"].to_pylist() == qb["reason"].to_pylist()
    assert set(qa["id"].to_pylist()) == set(poison.tolist())
    assert _ids(a["clean"]) == _ids(b["clean"])


def test_scan_dicts_takes_and_gives_rows_as_dicts(tmp_path):
    table, poison = _data()
    out = _run(tmp_path, table.to_pylist(), ScanDicts(CFG, table.schema, batch_rows=256))
    assert {r["id"] for r in out["quarantined"]} == set(poison.tolist())
    assert all(isinstance(r, dict) for key in ("clean", "quarantined", "rejected") for r in out[key])
    assert len(out["clean"]) + len(out["quarantined"]) + len(out["rejected"]) == table.num_rows
    assert {r["error_code"] for r in out["rejected"]} == {"duplicate_id", "missing_label", "wrong_length"}


def test_bad_settings_and_bad_tables_are_refused(tmp_path):
    table, _ = _data()
    with pytest.raises(ConfigError, match="represents image input with an earlier scan's proxy"):
        ScanTables(ScanConfig(image_column="image"), pa.schema([("id", pa.int64()), ("label", pa.int64()), ("image", pa.binary())]))
    with pytest.raises(TypeError, match="ScanConfig"):
        ScanTables({"features_column": "features"}, table.schema)
    with pytest.raises(Exception, match=r"missing \['features'\]"):
        _run(tmp_path, [table, table.drop_columns(["features"]).slice(0, 5)], ScanTables(CFG, table.schema))


def test_scan_tables_scores_against_a_reference_scan(tmp_path):
    from .test_reference import day

    mon, _ = day(3000, 1, poison=60)
    tue, tue_poison = day(3000, 2, poison=30)
    pq.write_table(mon, tmp_path / "mon.parquet")
    from poisonscan.pipelines.drivers.run import run_scan

    run_scan([str(tmp_path / "mon.parquet")], str(tmp_path / "mon"), ScanConfig(features_column="features", data_docs=False, report=False))
    out = _run(tmp_path, [tue.slice(0, 1500), tue.slice(1500)], ScanTables(CFG, tue.schema, reference=str(tmp_path / "mon")))
    assert set(out["quarantined"][0]["id"].to_pylist()) == tue_poison
    mem = scan_table(tue, CFG, reference=str(tmp_path / "mon"))
    assert out["summary"][0]["reference"]["classes_differing"] == mem.summary["reference"]["classes_differing"]


@pytest.mark.slow
def test_raw_rows_go_through_the_reference_scans_proxy(tmp_path):
    """Table columns (a raw input): Monday scanned by the command line, which trains the
    proxy; Tuesday's tables through the transform with Monday as the reference give the
    command line's lists for Tuesday."""
    from poisonscan.pipelines.drivers.run import run_scan

    from ..conftest import credit_table

    table, _ = credit_table(flip=True)
    perm = np.random.default_rng(0).permutation(table.num_rows)
    mon, tue = table.take(perm[:600]), table.take(perm[600:])
    cfg = ScanConfig(data_docs=False, report=False, write_clean=True)
    pq.write_table(mon, tmp_path / "mon.parquet")
    pq.write_table(tue, tmp_path / "tue.parquet")
    run_scan([str(tmp_path / "mon.parquet")], str(tmp_path / "mon"), cfg)
    run_scan([str(tmp_path / "tue.parquet")], str(tmp_path / "tue"), cfg, reference=str(tmp_path / "mon"))
    out = _run(tmp_path, [tue.slice(0, 300), tue.slice(300)], ScanTables(cfg, tue.schema, reference=str(tmp_path / "mon")))
    q = pq.read_table(tmp_path / "tue" / "quarantine.parquet")
    assert q.num_rows > 0
    assert sorted(out["quarantined"][0]["id"].to_pylist()) == sorted(q["id"].to_pylist())
    assert _ids(out["clean"]) == sorted(pq.read_table(tmp_path / "tue" / "clean.parquet")["id"].to_pylist())
    s = out["summary"][0]
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == 600
    state = out["state"][0]
    assert state.kind == "tabular" and state.representer.encoder is not None
