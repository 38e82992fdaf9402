"""Earlier decisions carried into the next scan: released rows stay released,
confirmed content stays rejected, wherever and however it comes back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan import ScanConfig, ScanTables, scan_table
from poisonscan.pipelines.cli import main
from poisonscan.pipelines.scan.content import ContentCheck
from poisonscan.pipelines.scan.decisions import (
    Decision,
    DecisionsError,
    decisions_table,
    read_remembered,
    scan_fingerprint,
)
from poisonscan.pipelines.scan.plan import plan_table
from poisonscan.pipelines.scan.rows import prepare

from ..conftest import as_table
from ..planted import planted
from .test_transform import _run

CFG = ScanConfig(features_column="features")


def _first_scan():
    X, y, poison = planted(n_per_class=250, seed=5)
    table = as_table(X, y, ids=[f"r{i:04d}" for i in range(len(y))])
    result = scan_table(table, CFG)
    q = result.quarantine
    assert q.num_rows >= 6
    return table, result


def _decide(result, path, choices, time="2026-11-30T10:00:00Z", reviewer="Ada"):
    """decisions.parquet as `poisonscan apply` writes it, for ``{id: decision}``."""
    q = result.quarantine
    labels = dict(zip(q["id"].to_pylist(), q["label"].to_pylist()))
    fp = scan_fingerprint(result.summary, q)
    decisions = [Decision(i, str(labels[i]), d, reviewer, time, "") for i, d in choices.items()]
    pq.write_table(decisions_table(decisions, fp, q), path)
    return path


def test_a_rescan_in_memory_keeps_released_rows_and_rejects_confirmed_ones(tmp_path):
    table, first = _first_scan()
    q = first.quarantine["id"].to_pylist()
    assert len(set(first.quarantine["content"].to_pylist())) == len(q)  # one fingerprint per row
    path = _decide(first, tmp_path / "decisions.parquet",
                   {q[0]: "confirmed", q[1]: "confirmed", q[2]: "released", q[3]: "pending"})
    again = scan_table(table, CFG, decisions=str(path))
    q2 = again.quarantine["id"].to_pylist()
    assert set(q2) == set(q) - {q[0], q[1], q[2]}
    rejected = dict(zip(again.rejected["id"].to_pylist(), again.rejected["error_code"].to_pylist()))
    assert rejected == {q[0]: "confirmed_poison", q[1]: "confirmed_poison"}
    assert again.clean.num_rows == table.num_rows - len(q2) - 2
    assert q[2] in set(again.clean["id"].to_pylist())
    e = again.summary["earlier_decisions"]
    assert (e["decisions"], e["confirmed"], e["released"], e["pending"]) == (4, 2, 1, 1)
    assert (e["rows_released_earlier"], e["rows_released_unchanged"], e["rows_rejected_confirmed"]) == (1, 1, 2)
    assert e["reviewers"] == ["Ada"] and e["scans"] == [scan_fingerprint(first.summary, first.quarantine)]
    # the same decisions give the same lists (a scan is deterministic with them too)
    once_more = scan_table(table, CFG, decisions=str(path))
    assert once_more.quarantine["id"].to_pylist() == q2


def test_the_latest_decision_on_a_row_stands_and_pending_leaves_it_standing(tmp_path):
    _, first = _first_scan()
    q = first.quarantine["id"].to_pylist()
    day1 = tmp_path / "day1"
    day2 = tmp_path / "day2" / "nested"
    day1.mkdir()
    day2.mkdir(parents=True)
    _decide(first, day1 / "decisions.parquet", {q[0]: "released", q[1]: "confirmed"}, time="2026-11-29T09:00:00Z")
    _decide(first, day2 / "decisions.parquet", {q[0]: "confirmed", q[1]: "pending"}, time="2026-11-30T09:00:00Z",
            reviewer="Grace")
    remembered = read_remembered(str(tmp_path))
    assert remembered.audit["files"] == [str(day1 / "decisions.parquet"), str(day2 / "decisions.parquet")]
    assert remembered.audit["reviewers"] == ["Ada", "Grace"]
    confirmed = {k[0]: v for rows in remembered.confirmed.values() for k, v in rows.items()}
    assert confirmed == {q[0]: ("Grace", "2026-11-30T09:00:00Z"), q[1]: ("Ada", "2026-11-29T09:00:00Z")}
    assert remembered.released == {}


def test_content_that_coincides_by_chance_is_rejected_only_under_the_confirmed_id(tmp_path):
    """A table of a few columns: another row with the same values is another record
    (the content check says coincidences are likely there), so it is not the
    confirmed row; vectors identify their row, so any id is rejected."""
    table, first = _first_scan()
    q = first.quarantine["id"].to_pylist()
    path = _decide(first, tmp_path / "decisions.parquet", {q[0]: "confirmed"})
    remembered = read_remembered(str(path))
    row = table.filter(pa.compute.equal(table["id"], q[0]))
    copy = row.set_column(0, "id", pa.array(["someone-else"]))
    batch = pa.concat_tables([row, copy]).combine_chunks().to_batches()[0]
    plan = plan_table(table.schema, CFG)
    likely = ContentCheck({}, 10_000, {0: (1.0, 0.01, ())}, 0.01)  # chance of a coincidence ~ 1
    assert not likely.rejects(0)
    for rule, expected in ((None, [False, False]), (ContentCheck(), [False, False]), (likely, [False, True])):
        prep = prepare(batch, 0, 0, plan.checks(remembered=remembered, content_rule=rule))
        assert prep.valid.tolist() == expected
        assert prep.error_code[0] == "confirmed_poison"


def test_decisions_that_cannot_be_carried_are_refused_before_the_scan(tmp_path, capsys):
    table, first = _first_scan()
    src = tmp_path / "rows.parquet"
    pq.write_table(table, src)
    csv_file = tmp_path / "poisonscan-decisions.csv"
    csv_file.write_text("id,label,score,decision,reviewer,time,note,scan\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    old = tmp_path / "old.parquet"
    pq.write_table(pa.table({"id": ["a"], "label": ["0"], "decision": ["released"]}), old)
    bad = tmp_path / "bad.parquet"
    q = first.quarantine
    t = decisions_table([Decision(q["id"][0].as_py(), "", "keep", "", "", "")], "f", q)
    pq.write_table(t, bad)
    for given, said in (
        (csv_file, "apply it first"),
        (empty, "no decisions.parquet in the folder"),
        (tmp_path / "missing.parquet", "not found"),
        (old, "not a decisions file of poisonscan apply"),
        (bad, "decision 'keep' is not one of"),
    ):
        out = tmp_path / "out"
        rc = main(["scan", str(src), "--features-column", "features", "--out", str(out), "-q",
                   "--decisions", str(given)])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and err.startswith("poisonscan: error: --decisions") and said in err and "\n" not in err
        assert not out.exists()
        with pytest.raises(DecisionsError):
            read_remembered(str(given))


def test_the_ptransform_carries_decisions_forward(tmp_path):
    table, first = _first_scan()
    q = first.quarantine["id"].to_pylist()
    path = _decide(first, tmp_path / "decisions.parquet", {q[0]: "confirmed", q[1]: "released"})
    pieces = [table.slice(i, 300) for i in range(0, table.num_rows, 300)]
    got = _run(tmp_path, pieces, ScanTables(CFG, table.schema, decisions=str(path)))
    quarantined = [i for t in got["quarantined"] for i in t["id"].to_pylist()]
    rejected = {i: c for t in got["rejected"] for i, c in zip(t["id"].to_pylist(), t["error_code"].to_pylist())}
    assert q[1] not in quarantined and rejected == {q[0]: "confirmed_poison"}
    (summary,) = got["summary"]
    assert summary["earlier_decisions"]["rows_released_earlier"] == 1
    assert np.sum([t.num_rows for t in got["clean"]]) == table.num_rows - len(quarantined) - 1
