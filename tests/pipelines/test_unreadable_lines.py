"""A CSV or JSONL line its parser cannot read is rejected in its place; the rest of the
file is scanned (pipelines/io/lines.py)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisonscan.pipelines.cli import main as cli_main
from poisonscan.pipelines.io import sources
from poisonscan.pipelines.io.lines import (
    UNREADABLE,
    json_line_rows,
    unreadable_lines,
)
from poisonscan.pipelines.io.sources import (
    SourceError,
    SourceFile,
    file_schema,
    plan_units,
    read_unit,
    typed_files,
)
from poisonscan.pipelines.scan.decisions import scan_fingerprint

from ..planted import planted


def _rows(path: str, fmt: str) -> pa.Table:
    (unit,) = plan_units(typed_files([SourceFile(0, path, fmt)]))
    batches, firsts = [], []
    for batch, first in read_unit(unit, None, 64):
        firsts.append(first)
        batches.append(pa.Table.from_batches([batch]))
    assert firsts == list(np.cumsum([0] + [b.num_rows for b in batches[:-1]]))  # no row skipped or repeated
    table = pa.concat_tables(batches, promote_options="default")
    if UNREADABLE not in table.column_names:
        table = table.append_column(UNREADABLE, pa.nulls(table.num_rows, pa.string()))
    return table


def test_each_line_is_judged_on_its_own():
    assert json_line_rows(b'{"id": 1, "x": [1.5, NaN]}\n') == (1, None)  # pyarrow reads NaN
    assert json_line_rows(b'{"id": 1} {"id": 2}\r\n') == (2, None)  # and two objects on a line as two rows
    assert json_line_rows(b"  \n") == (0, None)
    assert json_line_rows(b"null\n") == (1, None)  # pyarrow reads it as a row of nulls
    assert json_line_rows(b'{"id": "caf\xe9"}\n') == (1, None)  # a stray byte is the cell's problem, not the line's
    assert json_line_rows(b"[1, 2]\n") == (1, "a JSON array, not an object: '[1, 2]'")
    assert json_line_rows(b'{"id": 1, "id": 2}\n')[1].startswith("not valid JSON (key 'id' given twice)")  # pyarrow refuses it
    assert json_line_rows(b'{"id": 1, "x": [1.5, 2\n')[1].startswith("not valid JSON (Expecting ")
    lines = [b"id,label,x\r\n", b'1,"a, b",2\r\n', b"\r\n", b"2,b\r\n", b'3,"two\n', b'lines",4\n', b'4,"x\n', b'y",5,6\n']
    bad, skip, rows = unreadable_lines("csv", iter(lines))
    # a quoted value may span lines; an empty line is no row
    assert bad == {1: "has 2 fields where the header has 3: '2,b'", 3: "has 4 fields where the header has 3: '4,\"x\\ny\",5,6'"}
    assert skip == {3, 6, 7} and rows == 4
    bad, skip, rows = unreadable_lines("jsonl", iter([b'{"a": 1}\n', b" \n", b"{\n", b'{"a": 2} {"a": 3}']))
    assert list(bad) == [1] and skip == {2} and rows == 4


@pytest.mark.parametrize("bad_first", [False, True])
def test_jsonl_rows_keep_their_numbers_around_unreadable_lines(tmp_path, monkeypatch, bad_first):
    # a small block: pyarrow has yielded rows before it meets the bad line, and the
    # second reading must skip exactly those
    monkeypatch.setattr(sources, "_JSON_BLOCK", 512)
    lines, expect_bad = [], {}
    row = 0
    for i in range(300):
        if i in (0 if bad_first else 150, 151, 299):
            lines.append({0: '{"id": 0, "label": "a"', 150: "[1, 2, 3]", 151: '{"id": 151, "id": 152}',
                          299: '{"id": 299,'}[i])
            expect_bad[row] = lines[-1]
        else:
            lines.append(json.dumps({"id": i, "label": "ab"[i % 2], "x": [i, i + 0.5]}))
        row += 1
        if i == 100:
            lines.append("   ")  # white space only: no row
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines))  # the last line has no line break
    table = _rows(str(path), "jsonl")
    reasons = table.column(UNREADABLE).to_pylist()
    assert table.num_rows == 300
    assert {i: r for i, r in enumerate(reasons) if r is not None}.keys() == expect_bad.keys()
    for i, text in expect_bad.items():
        assert repr(text) in reasons[i]
    good = [i for i in range(300) if i not in expect_bad]
    assert [table.column("id")[i].as_py() for i in good] == good  # every other row, in its place
    assert table.column("x")[good[1]].as_py() == [good[1], good[1] + 0.5]
    assert table.column("id").null_count == len(expect_bad)
    assert file_schema(SourceFile(0, str(path), "jsonl")).names == ["id", "label", "x"]


def test_csv_records_beyond_the_first_block(tmp_path):
    path = tmp_path / "rows.csv"
    n = 40_000  # about 1.5 MB: pyarrow's first block (1 MB) reads before the bad lines
    with open(path, "w") as f:
        f.write("id,label,x,pad\n")
        for i in range(n):
            if i == 35_000:
                f.write("35000,a\n")
            elif i == 38_000:
                f.write('38000,b,38000.5,"a value\nover two lines",9\n')
            elif i == 39_000:
                f.write('39000,a,39000.5,"a value\nover two lines"\n')  # readable: one row
            else:
                f.write(f"{i},{'ab'[i % 2]},{i}.5,{'x' * 20}\n")
    table = _rows(str(path), "csv")
    assert table.num_rows == n
    reasons = table.column(UNREADABLE).to_pylist()
    assert [i for i, r in enumerate(reasons) if r is not None] == [35_000, 38_000]
    assert "has 2 fields where the header has 4" in reasons[35_000]
    assert "has 5 fields where the header has 4: '38000,b,38000.5,\"a value\\nover two lines\",9'" in reasons[38_000]
    assert table.column("pad")[39_000].as_py() == "a value\nover two lines"
    ids = table.column("id").to_pylist()
    assert ids[:35_000] == list(range(35_000)) and ids[38_001:] == list(range(38_001, n))
    assert table.column("x").type == pa.float64()


def test_a_csv_line_cut_short_in_a_quote_does_not_swallow_the_lines_after_it(tmp_path):
    # pyarrow reads the open quote as a value running to the end of the file, without an
    # error: rows 6-99 would have become one label
    path = tmp_path / "rows.csv"
    lines = [f"{i},{'ab'[i % 2]},{i}.5" for i in range(100)]
    lines[5] = '5,"a val'
    path.write_text("id,label,x\n" + "\n".join(lines) + "\n")
    table = _rows(str(path), "csv")
    assert table.num_rows == 100
    reasons = table.column(UNREADABLE).to_pylist()
    assert [i for i, r in enumerate(reasons) if r] == [5]
    assert reasons[5] == "a quote opened in it is never closed (a line cut short?): '5,\"a val'"
    assert table.column("id").to_pylist()[6:] == list(range(6, 100)) and table.column("x").type == pa.float64()


def test_csv_values_over_several_lines_are_read_across_pyarrows_blocks(tmp_path):
    path = tmp_path / "texts.csv"
    with open(path, "w") as f:
        f.write("id,label,text\n")
        for i in range(30_000):  # about 1.6 MB: values span pyarrow's 1 MB block boundary
            f.write(f'{i},{i % 2},"first line {i}\nsecond, line"\n')
    with pytest.raises(pa.ArrowInvalid):  # pyarrow's default reading splits a value between blocks
        sum(b.num_rows for b in pacsv.open_csv(str(path)))
    table = _rows(str(path), "csv")
    assert table.num_rows == 30_000 and table.column(UNREADABLE).null_count == 30_000
    assert table.column("text")[29_999].as_py() == "first line 29999\nsecond, line"


def test_a_conflict_of_types_is_read_as_text_around_the_unreadable_lines(tmp_path):
    """pyarrow stops at a JSON value of another type than its column's; the column is
    read as text instead (tests/pipelines/test_column_types.py), unreadable lines and all."""
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1, "x": [1.0]}\n{"id": 2, "x": ["one"]}\n{broken\n')
    table = _rows(str(path), "jsonl")
    assert table.column("x").to_pylist() == ["[1.0]", '["one"]', None]
    assert table.column(UNREADABLE).to_pylist()[:2] == [None, None] and "{broken" in table.column(UNREADABLE)[2].as_py()
    path.write_text('{"id": 1, "x": [1.0]}\n{"id": 2, "x": ["one"]}\n')
    # without typed_files (which the scan runs first), the parser's words
    with pytest.raises(SourceError, match=r"cannot read .* as JSON lines: .*changed from number to string"):
        file_schema(SourceFile(0, str(path), "jsonl"))


def test_a_scan_rejects_the_unreadable_lines_and_finds_the_same_poison(tmp_path):
    X, y, poison = planted()
    rows = [json.dumps({"id": i, "label": int(y[i]), "features": [round(float(v), 5) for v in X[i]]}) for i in range(len(y))]
    clean_file, broken_file = tmp_path / "clean.jsonl", tmp_path / "broken.jsonl"
    clean_file.write_text("\n".join(rows) + "\n")
    broken = rows[:500] + ['{"id": "cut short", "label": 1, "features": [0.1, 0.2'] + rows[500:] + ["not json at all"]
    broken_file.write_text("\n".join(broken) + "\n")
    outs = {}
    for name, src in (("clean", clean_file), ("broken", broken_file)):
        out = tmp_path / name
        assert cli_main(["scan", str(src), "--out", str(out), "--features-column", "features", "-q"]) == 0
        outs[name] = out
    s = json.load(open(outs["broken"] / "summary.json"))
    assert s["rows_read"] == len(y) + 2 and s["rows_rejected"] == 2
    assert s["rejected_by_reason"] == {"unreadable_row": 2}
    rejected = pq.read_table(outs["broken"] / "rejected.parquet").to_pylist()
    assert [r["source_row"] for r in rejected] == [500, len(y) + 1]
    assert all(r["expectation"] == "expect_column_values_to_be_in_set(row.readable)" for r in rejected)
    assert "'not json at all'" in rejected[1]["error"] and rejected[1]["id"] is None
    q = {name: pq.read_table(out / "quarantine.parquet").column("id").to_pylist() for name, out in outs.items()}
    assert q["broken"] == q["clean"] and set(q["clean"]) == set(poison.tolist())
    (readable,) = [r for r in s["expectations"]["results"] if r["expectation"] == "expect_column_values_to_be_in_set(row.readable)"]
    assert not readable["success"] and readable["result"]["unexpected_count"] == 2
    assert not s["expectations"]["success"]
    # the final clean split reads the file again: the unreadable lines stay out of it
    split = {}
    for name, out in outs.items():
        summary = json.loads((out / "summary.json").read_text())
        fp = scan_fingerprint(summary, pq.read_table(out / "quarantine.parquet"))
        decisions = tmp_path / f"{name}.csv"
        decisions.write_text(f"id,label,score,decision,reviewer,time,note,scan\n{q[name][0]},1,1.0,released,,,,{fp}\n")
        assert cli_main(["apply", str(out), "--decisions", str(decisions), "-q"]) == 0
        split[name] = pq.read_table(out / "clean.parquet")
    assert split["broken"].equals(split["clean"]) and split["clean"].num_rows == len(y) - len(poison) + 1


@st.composite
def _damaged_files(draw):
    """(format, file bytes, {line: original row} of the lines left whole)."""
    fmt = draw(st.sampled_from(["jsonl", "csv"]))
    n = draw(st.integers(1, 60))
    # in a CSV no value is quoted: a quote cut open would run on to the next one, a merge
    # no reader can tell from a value over several lines (docs/reliability.md); one that
    # runs to the end of the file is caught
    words = st.text(alphabet='ab ,"\\é{}[]:' if fmt == "jsonl" else "ab \\é{}[]:", max_size=6)
    rows = [{"id": i, "label": draw(words), "x": draw(st.floats(-1e6, 1e6, allow_nan=False))} for i in range(n)]
    if fmt == "jsonl":
        lines = [json.dumps(r, ensure_ascii=draw(st.booleans())) for r in rows]
    else:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([["id", "label", "x"]] + [[r["id"], r["label"], r["x"]] for r in rows])
        lines = out.getvalue().splitlines()[1:]
    whole = dict(enumerate(rows))
    quotes = 0
    only_words = True  # every damage a word among numbers: the file must be read
    for i in sorted(set(draw(st.lists(st.integers(0, n - 1), max_size=4)))):
        damage = draw(st.sampled_from(["cut", "junk", "field", "word"] + (["quote"] if quotes == 0 else [])))
        quotes += damage == "quote"  # a second one would close the first (see above)
        only_words &= damage == "word"
        if damage == "word":  # a value of another type than its column's: a readable row
            whole[i] = dict(rows[i], x="oops")
            lines[i] = (json.dumps(whole[i]) if fmt == "jsonl"
                        else ",".join(next(csv.reader([lines[i]]))[:2] + ["oops"]))
            continue
        if damage in ("cut", "quote"):  # a line cut short (a truncated write), in a quoted value
            lines[i] = lines[i][: draw(st.integers(1, max(1, len(lines[i]) - 1)))] + ('"a' if damage == "quote" else "")
        elif damage == "junk":
            junk = ["{", "[1, 2]", "oops", "1,2,3,4"] + (['{"id": 1, "id": 2}'] if fmt == "jsonl" else [])
            lines[i] = draw(st.sampled_from(junk))
        else:  # a field too many
            lines[i] = lines[i] + (', "extra": 1}' if fmt == "jsonl" else ",extra")
            if fmt == "jsonl":
                lines[i] = lines[i].replace("}, ", ", ", 1)
        del whole[i]
    header = "" if fmt == "jsonl" else "id,label,x\n"
    return fmt, (header + "\n".join(lines) + draw(st.sampled_from(["", "\n"]))).encode(), whole, n, only_words


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(_damaged_files())
def test_damaged_lines_never_move_or_change_the_whole_rows(tmp_path_factory, case):
    """Whatever lines are damaged, the lines left whole come out as written, each at its
    own row number, or the file is refused with a clear error."""
    fmt, data, whole, n, only_words = case
    path = tmp_path_factory.mktemp("damaged") / f"rows.{fmt}"
    path.write_bytes(data)
    try:
        table = _rows(str(path), fmt)
    except SourceError:
        assert not only_words  # a value of another type is its row's problem, never the file's
        return
    assert table.num_rows == n  # one row per line: every line read is accounted for
    for i, row in whole.items():
        assert table.column(UNREADABLE)[i].as_py() is None
        got = {k: table.column(k)[i].as_py() for k in row}
        assert str(got["id"]) == str(row["id"]) and str(got["label"] or "") == row["label"]
        assert got["x"] == "oops" if row["x"] == "oops" else float(got["x"]) == row["x"]
