"""Closing the review loop: decisions made in the report, downloaded, applied."""

from __future__ import annotations

import csv
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from poisonscan.pipelines.cli import main
from poisonscan.pipelines.scan.decisions import scan_fingerprint

from ..conftest import as_table
from ..planted import planted


def _scan(tmp_path, name="out", *extra):
    X, y, poison = planted(n_per_class=200, seed=3)
    table = as_table(X, y, ids=[f"row-{i:04d}" for i in range(len(y))])
    src = tmp_path / "rows.parquet"
    if not src.exists():
        pq.write_table(table, src, row_group_size=300)
    out = tmp_path / name
    assert main(["scan", str(src), "--features-column", "features", "--out", str(out), "--write-clean",
                 "--no-data-docs", "-q", *extra]) in (0, 4)
    return table, out


def _decide_in_the_page(browser, out, tmp_path):
    """A reviewer named in the page confirms one row and releases another with a note,
    by clicking; the decisions are downloaded as the page writes them."""
    q = pq.read_table(out / "quarantine.parquet")["id"].to_pylist()
    confirm, release = q[0], q[1]
    page = browser.open("file://" + os.path.abspath(out / "report.html"))
    assert page.eval("document.body.dataset.ready") == "1", page.problems
    page.eval("var w = document.getElementById('reviewer'); w.value = 'Ada <b>L</b>'; w.dispatchEvent(new Event('change'))")
    page.click(f"#flagged-table tr[data-id='{confirm}'] button.confirm")
    page.click(f"#flagged-table tr[data-id='{release}'] button.release")
    page.eval(f"var n = document.querySelector(\"#flagged-table tr[data-id='{release}'] input.decision-note\"); "
              "n.value = 'a real 7, \"not\" a trigger'; n.dispatchEvent(new Event('change'))")
    tally = page.eval("document.getElementById('tally').textContent")
    assert tally.startswith(f"1 confirmed, 1 released, {len(q) - 2} pending") and f"2 of {len(q)} decided" in tally
    target = page.download("#download", tmp_path / "downloads", "poisonscan-decisions.csv")
    assert page.problems == []
    return q, confirm, release, target


def test_decisions_made_in_the_page_are_applied_to_the_clean_split(tmp_path, browser):
    table, out = _scan(tmp_path)
    q, confirm, release, target = _decide_in_the_page(browser, out, tmp_path)
    with open(target, newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert rows[release]["note"] == 'a real 7, "not" a trigger' and rows[release]["reviewer"] == "Ada <b>L</b>"
    assert rows[confirm]["decision"] == "confirmed" and rows[confirm]["time"].endswith("Z")
    clean_before = pq.read_table(out / "clean.parquet")

    assert main(["apply", str(out), "--decisions", target, "--out", str(tmp_path / "final"), "-q"]) == 0
    final = pq.read_table(tmp_path / "final" / "clean.parquet")
    # the scan's clean rows and the released one, in input order; nothing confirmed or pending
    ids = table["id"].to_pylist()
    expected = [i for i in ids if i in set(clean_before["id"].to_pylist()) | {release}]
    assert final["id"].to_pylist() == expected
    assert final.schema == clean_before.schema
    assert confirm not in set(final["id"].to_pylist())
    row = final.filter(pa.compute.equal(final["id"], release))
    assert row["features"].to_pylist() == table.filter(pa.compute.equal(table["id"], release))["features"].to_pylist()
    d = pq.read_table(tmp_path / "final" / "decisions.parquet").to_pylist()
    assert len(d) == len(q) and {r["decision"] for r in d} == {"confirmed", "released", "pending"}
    mine = {r["id"]: r for r in d}
    assert mine[release]["reviewer"] == "Ada <b>L</b>" and mine[release]["note"] == 'a real 7, "not" a trigger'
    assert len({r["scan"] for r in d}) == 1
    # into the scan's own folder: its other outputs stay
    assert main(["apply", str(out), "--decisions", target, "-q"]) == 0
    assert pq.read_table(out / "clean.parquet")["id"].to_pylist() == expected
    assert (out / "quarantine.parquet").exists() and (out / "summary.json").exists()
    assert not [n for n in os.listdir(out) if n.startswith(".poisonscan-tmp-")]
    # `poisonscan report` renders the scan with the decisions applied to it (in a browser
    # that kept none of its own)
    assert main(["report", str(out), "-q"]) == 0
    page = browser.open("file://" + os.path.abspath(out / "report.html"))
    page.eval("localStorage.clear()")
    page.navigate("file://" + os.path.abspath(out / "report.html"))
    applied = page.eval("document.getElementById('applied').textContent")
    assert f"{len(q)} — 1 confirmed, 1 released, {len(q) - 2} pending, by Ada <b>L</b>" in applied
    assert page.eval("document.querySelectorAll('#applied b').length") == 0  # the name is text
    assert page.eval("document.getElementById('tally').textContent").startswith("1 confirmed, 1 released")
    assert page.eval(f"document.querySelector(\"#flagged-table tr[data-id='{release}'] button.release\").classList.contains('on')")
    assert page.problems == []

    # the next scan of the same rows remembers the decisions: the released row is not
    # quarantined again, the confirmed one is rejected, the pending ones are judged anew
    out2 = tmp_path / "rescan"
    src = tmp_path / "rows.parquet"
    assert main(["scan", str(src), "--features-column", "features", "--out", str(out2), "--no-data-docs", "-q",
                 "--decisions", str(tmp_path / "final")]) in (0, 4)
    q2 = pq.read_table(out2 / "quarantine.parquet")["id"].to_pylist()
    rejected = pq.read_table(out2 / "rejected.parquet").to_pylist()
    assert release not in q2 and set(q2) == set(q) - {confirm, release}
    assert [(r["id"], r["error_code"]) for r in rejected] == [(confirm, "confirmed_poison")]
    assert "by Ada <b>L</b>" in rejected[0]["error"]
    summary = json.loads((out2 / "summary.json").read_text())
    earlier = summary["earlier_decisions"]
    assert earlier["files"] == [str(tmp_path / "final" / "decisions.parquet")]
    assert (earlier["decisions"], earlier["confirmed"], earlier["released"], earlier["pending"]) == (len(q), 1, 1, len(q) - 2)
    assert earlier["reviewers"] == ["Ada <b>L</b>"]
    assert (earlier["rows_released_earlier"], earlier["rows_rejected_confirmed"]) == (1, 1)
    assert summary["rows_read"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["rows_rejected"]
    page = browser.open("file://" + os.path.abspath(out2 / "report.html"))
    text = page.eval("document.getElementById('earlier').textContent")
    assert "1 row released earlier was flagged again and not quarantined; 1 confirmed earlier was rejected" in text
    assert "by Ada <b>L</b>" in text and page.eval("document.querySelectorAll('#earlier b').length") == 0
    assert page.eval("document.getElementById('earlier-overview').textContent").startswith(
        "Earlier reviews: 1 confirmed row rejected, 1 released row kept")
    assert page.problems == []

    # rows that come back changed: the confirmed content under a new id is rejected
    # still; the released id with other content is judged anew (quarantined again)
    t = pq.read_table(src)
    ids = t["id"].to_pylist()
    changed = t.to_pylist()
    for r in changed:
        if r["id"] == confirm:
            r["id"] = "renamed-" + confirm
        elif r["id"] == release:
            r["features"] = [v + 0.01 for v in r["features"]]
    src3 = tmp_path / "changed.parquet"
    pq.write_table(pa.Table.from_pylist(changed, schema=t.schema), src3)
    out3 = tmp_path / "rescan-changed"
    assert main(["scan", str(src3), "--features-column", "features", "--out", str(out3), "--no-data-docs", "-q",
                 "--decisions", str(tmp_path / "final" / "decisions.parquet")]) in (0, 4)
    q3 = pq.read_table(out3 / "quarantine.parquet")["id"].to_pylist()
    rejected = pq.read_table(out3 / "rejected.parquet").to_pylist()
    assert [(r["id"], r["error_code"]) for r in rejected] == [("renamed-" + confirm, "confirmed_poison")]
    assert f"as id {confirm!r}" in rejected[0]["error"]
    assert release in q3
    earlier = json.loads((out3 / "summary.json").read_text())["earlier_decisions"]
    assert (earlier["rows_released_earlier"], earlier["rows_released_changed"], earlier["rows_rejected_confirmed"]) == (0, 1, 1)
    assert len(ids) == len(changed)


def test_decisions_saved_with_semicolons_are_read(tmp_path):
    """A spreadsheet in much of the world saves the downloaded decisions with semicolons."""
    _, out = _scan(tmp_path)
    q = pq.read_table(out / "quarantine.parquet")["id"].to_pylist()
    fp = scan_fingerprint(json.loads((out / "summary.json").read_text()), pq.read_table(out / "quarantine.parquet"))
    path = tmp_path / "d.csv"
    path.write_text("\ufeffid;label;score;decision;reviewer;time;note;scan\n"
                    f"{q[0]};0;0,9;released;Ada;;a real one, not a trigger;{fp}\n")
    assert main(["apply", str(out), "--decisions", str(path), "--out", str(tmp_path / "applied"), "-q"]) == 0
    clean = pq.read_table(tmp_path / "applied" / "clean.parquet")["id"].to_pylist()
    assert q[0] in clean and not set(q[1:]) & set(clean)


def test_decisions_that_do_not_fit_the_scan_are_refused_in_one_line(tmp_path, capsys):
    _, out = _scan(tmp_path)
    q = pq.read_table(out / "quarantine.parquet")["id"].to_pylist()
    assert len(q) > 2
    fp = scan_fingerprint(json.loads((out / "summary.json").read_text()), pq.read_table(out / "quarantine.parquet"))

    def attempt(rows, header="id,label,score,decision,reviewer,time,note,scan"):
        path = tmp_path / "d.csv"
        path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
        before = sorted(os.listdir(out))
        rc = main(["apply", str(out), "--decisions", str(path), "-q"])
        err = capsys.readouterr().err.strip()
        assert sorted(os.listdir(out)) == before  # nothing written
        return rc, err

    rc, err = attempt([f"{q[0]},0,1.0,released,,,,0123456789abcdef"])
    assert rc == 1 and "decisions from another scan" in err and "\n" not in err
    rc, err = attempt([f"row-nope,0,1.0,released,,,,{fp}"])
    assert rc == 1 and "'row-nope' is not quarantined in this scan" in err
    rc, err = attempt([f"{q[0]},0,1.0,keep,,,,{fp}"])
    assert rc == 1 and "decision 'keep' is not one of confirmed, released, pending" in err
    rc, err = attempt([f"{q[0]},0,1.0,released,,,,{fp}", f"{q[0]},0,1.0,confirmed,,,,{fp}"])
    assert rc == 1 and "decided twice" in err
    rc, err = attempt([f"{q[0]},0,1.0,released"], header="id,label,score,decision")
    assert rc == 1 and "no scan column" in err
    rc, err = attempt([f"{q[0]},0,1.0,released,,,,{fp}", f"{q[1]},0,1.0,rel"])
    assert rc == 1 and "line 3: 4 fields where the header names 8, and no scan (a line cut short" in err
    # the inputs changed since the scan: refused, nothing written. Reordered rows keep
    # the count, and would put the confirmed rows into the clean split
    src = tmp_path / "rows.parquet"
    t = pq.read_table(src)
    pq.write_table(t.take(pa.array(range(t.num_rows - 1, -1, -1))), src)
    rc, err = attempt([f"{q[0]},0,1.0,released,,,,{fp}"])
    assert rc == 1 and "the inputs changed since the scan: row " in err and "reordered" in err
    # one row swapped for another of the same count: the quarantined id is found elsewhere
    i = int(pq.read_table(out / "quarantine.parquet")["source_row"][1].as_py())
    swapped = t.take(pa.array([j for j in range(t.num_rows) if j != i] + [i]))
    pq.write_table(swapped, src)
    rc, err = attempt([f"{q[0]},0,1.0,released,,,,{fp}"])
    assert rc == 1 and "the inputs changed since the scan" in err
    pq.write_table(t.slice(0, t.num_rows - 5), src)
    rc, err = attempt([f"{q[0]},0,1.0,released,,,,{fp}"])
    assert rc == 1 and "inputs" in err
    assert main(["apply", str(tmp_path / "nowhere"), "--decisions", str(tmp_path / "d.csv")]) == 1
    assert "summary.json not found" in capsys.readouterr().err


def _scan_and_decide(tmp_path, decision: str, reviewer: str = ""):
    """A scan, and a decisions file that decides its first quarantined row."""
    _, out = _scan(tmp_path)
    q = pq.read_table(out / "quarantine.parquet")["id"].to_pylist()
    fp = scan_fingerprint(json.loads((out / "summary.json").read_text()), pq.read_table(out / "quarantine.parquet"))
    path = tmp_path / "d.csv"
    path.write_text(f"id,label,score,decision,reviewer,time,note,scan\n{q[0]},0,1.0,{decision},{reviewer},,,{fp}\n")
    return out, path


def test_a_scan_does_not_overwrite_a_folder_holding_applied_decisions(tmp_path, capsys):
    out, path = _scan_and_decide(tmp_path, "confirmed", "Ada")
    assert main(["apply", str(out), "--decisions", str(path), "-q"]) == 0
    record = (out / "decisions.parquet").read_bytes()
    capsys.readouterr()
    # the same folder again, even reading its decisions: refused before anything runs
    rc = main(["scan", str(tmp_path / "rows.parquet"), "--features-column", "features", "--out", str(out),
               "--decisions", str(out), "--no-data-docs", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "holds a reviewer's decisions (decisions.parquet" in err
    assert (out / "decisions.parquet").read_bytes() == record and (out / "clean.parquet").exists()
    # another folder reads them
    assert main(["scan", str(tmp_path / "rows.parquet"), "--features-column", "features", "--out",
                 str(tmp_path / "next"), "--decisions", str(out), "--no-data-docs", "-q"]) in (0, 4)
    assert json.loads((tmp_path / "next" / "summary.json").read_text())["rows_rejected"] >= 1


def test_reading_a_scan_s_parquet_then_exiting_does_not_abort(tmp_path):
    # pyarrow reading Parquet through a Python file object left read threads that could
    # outlive it: a process that then exited soon aborted (exit 134) in about a third of
    # runs, so a failing apply's exit code 1 was sometimes 134
    import subprocess
    import sys

    _, out = _scan(tmp_path)
    probe = ("import sys; from poisonscan.pipelines.drivers.apply import _read_parquet; "
             f"_read_parquet({str(out / 'quarantine.parquet')!r}, ['id', 'label', 'source_file', 'source_row']); "
             "sys.exit(1)")
    codes = [subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode for _ in range(8)]
    assert codes == [1] * 8


def test_apply_refuses_an_output_it_cannot_or_should_not_write_in_one_line(tmp_path, capsys):
    out, path = _scan_and_decide(tmp_path, "released")
    (tmp_path / "afile").write_text("")
    capsys.readouterr()
    for target, words in ((tmp_path / "afile", "exists and is not a directory"),
                          (tmp_path, "holds input files (rows.parquet)")):  # the inputs' own folder
        assert main(["apply", str(out), "--decisions", str(path), "--out", str(target), "-q"]) == 1
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "clean.parquet").exists()


def test_a_reviewer_and_a_note_read_back_as_written_in_the_page():
    # the page doubles a leading ' and prefixes formula-like fields; reading undoes it
    # once, so a download -> apply -> report -> download cycle does not pile up quotes
    from poisonscan.pipelines.scan.decisions import read_decisions

    q = pa.table({"id": ["a", "b"], "label": ["0", "0"], "source_file": ["f", "f"], "source_row": [0, 1]})
    text = ("id,label,score,decision,reviewer,time,note,scan\n"
            "a,0,1.0,released,''Ada,,'=not a formula,fp\n"
            "b,0,1.0,confirmed,Bo,,''tis a trigger,fp\n")
    got = read_decisions(text, "d.csv", q, "fp")
    assert [(d.reviewer, d.note) for d in got] == [("'Ada", "=not a formula"), ("Bo", "'tis a trigger")]
    # optional fields left off a hand-written file, the scan kept: read
    got = read_decisions("id,decision,scan,note\na,released,fp\n", "d.csv", q, "fp")
    assert got[0].decision == "released" and got[0].note == ""


def test_apply_reads_each_input_in_the_format_the_scan_was_told(tmp_path):
    """A CSV named without its extension was scanned with --format csv; apply once took
    the format from the name and could not read it again."""
    X, y, _ = planted(n_per_class=200, seed=3)
    lines = ["id,label,features"] + [f"row-{i:04d},{c},\"{' '.join(f'{v:.6f}' for v in x)}\""
                                     for i, (x, c) in enumerate(zip(X, y))]
    src = tmp_path / "rows.export"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["scan", str(src), "--format", "csv", "--features-column", "features", "--out", str(out),
                 "--no-data-docs", "-q"]) in (0, 4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_formats"] == {str(src): "csv"}
    q = pq.read_table(out / "quarantine.parquet")
    fp = scan_fingerprint(summary, q)
    decisions = tmp_path / "d.csv"
    decisions.write_text("id,decision,scan\n" + "".join(f"{i},confirmed,{fp}\n" for i in q["id"].to_pylist()))
    assert main(["apply", str(out), "--decisions", str(decisions), "--out", str(tmp_path / "applied"), "-q"]) == 0
    assert pq.read_table(tmp_path / "applied" / "clean.parquet").num_rows == summary["rows_clean"]
