"""CSV files separated by semicolons, tabs or vertical bars, with decimal commas.

A spreadsheet in much of the world writes CSV with semicolons and decimal commas
(``1;0;0,5``); databases and bioinformatics write tabs. pyarrow reads such a file as
one column, and the scan stopped on a missing id. The separator is now told from the
header line, and the decimal point from the numbers of the first records
(``lines.csv_dialect``); every reading of the file (pyarrow's, the record-by-record one
around unreadable lines, the planning read of column types) uses them.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan.pipelines.cli import main as cli_main
from poisonscan.pipelines.io.lines import CsvDialect, csv_dialect
from poisonscan.pipelines.io.sources import (
    SourceFile,
    plan_units,
    read_unit,
    typed_files,
)
from poisonscan.pipelines.report.console import format_summary

ROWS = 12_000  # about 1.5 MB of CSV: rows past pyarrow's first 1 MB block


def _dialect(text: bytes) -> CsvDialect:
    return csv_dialect(lambda: io.BytesIO(text))


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"id,label,x\n1,0,0.5\n", CsvDialect(",", ".")),
        (b"id;label;x\n1;0;0,5\n", CsvDialect(";", ",")),
        (b"id;label;x\n1;0;0.5\n", CsvDialect(";", ".")),
        (b"id;label;x\n1;0;1.5\n2;1;1.234\n", CsvDialect(";", ".")),
        (b"\xef\xbb\xbfid\tlabel\tx\r\n1\t0\t2,5\r\n", CsvDialect("\t", ",")),
        (b"id|label|text\n1|a|b\n", CsvDialect("|", ".")),
        (b"\n\nid;x\n1;2,5\n", CsvDialect(";", ",")),  # empty lines before the header
        (b'"id;x",label\n1,2\n', CsvDialect(",", ".")),  # a quoted name holding a semicolon
        (b"id,x;y\n1,2\n", CsvDialect(",", ".")),  # a tie: commas
        (b"id\n1\n", CsvDialect(",", ".")),  # one column: nothing to tell
        (b"", CsvDialect(",", ".")),
        # more numbers with decimal commas than with points: the comma; fewer: the point
        (b"id;x;y\n1;0,5;1.5\n2;0,25;7\n", CsvDialect(";", ",")),
        (b"id;x;y\n1;0,5;1.5\n2;0.25;7\n", CsvDialect(";", ".")),
        # a tie (whole numbers only, or as many of each): the comma with semicolons only
        (b"id;label;x\n1;0;0.5\n2;1;1,5\n", CsvDialect(";", ",")),
        (b"id;x\n1;4\n2;7\n", CsvDialect(";", ",")),
        (b"id\tx\n1\t4\n2\t7\n", CsvDialect("\t", ".")),
        # "17,800" may be a thousands comma: no evidence of a decimal comma
        (b"id\tx\n1\t17,800\n2\t1,250\n3\t0.5\n", CsvDialect("\t", ".")),
        # the separator that splits the records as it splits the header
        (b'id;label;"weight, kg"\n1;0;0,5\n2;1;1,5\n', CsvDialect(";", ",")),
        (b'id\tlabel\t"weight, kg"\n1\t0\t0.5\n', CsvDialect("\t", ".")),
        (b'id;label;"x, y, z"\n1;0;5\n', CsvDialect(";", ",")),
        (b"id;label;x\n", CsvDialect(";", ",")),  # a header alone
        # a quote left open in the first record ends the sample: the tie's comma
        (b'id;x;y\n1;"0,5;1.5\n2;0.25;7.5\n', CsvDialect(";", ",")),
        # a field beyond the csv module's limit ends the sample
        (b"id;label;text\n1;0;" + b"w" * 200_000 + b"\n2;1;0,5\n", CsvDialect(";", ",")),
    ],
)
def test_the_dialect_is_told_from_the_header_and_the_first_numbers(text, expected):
    assert _dialect(text) == expected


def _frame(seed: int = 0, rows: int = 600, decimals: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": np.arange(rows), "label": rng.integers(0, 3, rows)})
    for j in range(6):
        df[f"x{j}"] = np.round(rng.normal(size=rows) + df["label"] * 0.5, decimals)
    df["note"] = rng.choice(["a; b", "c", "d\te"], rows)  # separators inside quoted values
    return df


def _scan(path, out, *extra) -> dict:
    assert cli_main(["scan", str(path), "--out", str(out), "--write-clean", "--no-report", "-q",
                     "--tabular-columns", ",".join(f"x{j}" for j in range(6)), *extra]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("sep, decimal, name", [(";", ",", "semi.csv"), ("\t", ".", "data.tsv"), ("|", ".", "bars.txt")])
def test_a_file_with_another_separator_scans_as_its_comma_twin(tmp_path, sep, decimal, name):
    df = _frame()
    df.to_csv(tmp_path / "plain.csv", index=False)
    df.to_csv(tmp_path / name, sep=sep, decimal=decimal, index=False)
    extra = ("--format", "csv") if name.endswith(".txt") else ()
    want = _scan(tmp_path / "plain.csv", tmp_path / "out_plain")
    got = _scan(tmp_path / name, tmp_path / "out_other", *extra)
    for key in ("rows_read", "rows_clean", "rows_quarantined", "rows_rejected", "dimension"):
        assert got[key] == want[key], key
    assert want["inputs_read_as"] == {}  # a comma file is read as written: nothing to say
    assert got["inputs_read_as"] == {str(tmp_path / name): {"separator": sep, "decimal_point": decimal}}
    a = pq.read_table(tmp_path / "out_plain" / "clean.parquet")
    b = pq.read_table(tmp_path / "out_other" / "clean.parquet")
    assert a.equals(b)
    assert b.schema.field("x0").type == pa.float64()
    assert b.column("note").to_pylist() == a.column("note").to_pylist()


def test_decimal_commas_in_a_column_with_a_word_are_numbers(tmp_path):
    """A word in a column of decimal-comma numbers, in pyarrow's first block and past
    it: the column is read as text, its numbers written with points, and only the rows
    with the word are rejected."""
    df = _frame(rows=ROWS, decimals=15)
    t = df.astype({"x1": object, "x4": object})
    t.loc[3, "x1"] = "abc"
    t.loc[ROWS - 100, "x4"] = "oops"
    path = tmp_path / "semi.csv"
    t.to_csv(path, sep=";", decimal=",", index=False)
    # pandas writes the object columns' floats with points: write them as a spreadsheet would
    text = path.read_text()
    fixed = []
    for number, line in enumerate(text.split("\n")):
        parts = line.split(";")
        if number and len(parts) > 5:
            parts[3] = parts[3].replace(".", ",")
            parts[6] = parts[6].replace(".", ",")
        fixed.append(";".join(parts))
    path.write_text("\n".join(fixed))
    (src,) = typed_files([SourceFile(0, str(path), "csv")])
    assert src.dialect == CsvDialect(";", ",") and src.text_columns == ("x4",)
    s = _scan(path, tmp_path / "out")
    assert s["rows_read"] == ROWS and s["rejected_by_reason"] == {"not_a_number": 2}
    how = {"separator": ";", "decimal_point": ",", "text_columns": ["x4"]}
    assert s["inputs_read_as"] == {str(path): how}
    assert f"read {path}: separated by semicolons, decimal comma; 'x4' read as text" in format_summary(s, "out")
    df.to_csv(tmp_path / "plain.csv", index=False)
    assert s["dimension"] == _scan(tmp_path / "plain.csv", tmp_path / "out_plain")["dimension"]  # no categories
    clean = pq.read_table(tmp_path / "out" / "clean.parquet")
    assert clean.schema.field("x0").type == pa.float64() and clean.schema.field("x1").type == pa.string()
    assert float(clean.column("x1")[0].as_py()) == pytest.approx(df["x1"].iloc[0])
    assert float(clean.column("x4")[0].as_py()) == pytest.approx(df["x4"].iloc[0])


def test_numbers_grouped_in_thousands_by_commas_scan_as_numbers(tmp_path):
    """A spreadsheet's export of a comma file writes its large numbers "17,800", quoted:
    the table's column of them scans as its twin of plain numbers does (the same
    dimension: no categories), and its clean rows keep the values as written."""
    df = _frame()
    df["x2"] = np.round(df["x2"] * 5000, 2)  # values of thousands, some of them negative
    grouped = df.astype({"x2": object})
    grouped["x2"] = [f"{v:,}" for v in df["x2"]]
    assert any("," in v for v in grouped["x2"]) and any("," not in v for v in grouped["x2"])
    grouped.to_csv(tmp_path / "grouped.csv", index=False)
    df.to_csv(tmp_path / "plain.csv", index=False)
    s = _scan(tmp_path / "grouped.csv", tmp_path / "out")
    plain = _scan(tmp_path / "plain.csv", tmp_path / "out_plain")
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] == len(df) and s["rows_rejected"] == 0
    assert s["dimension"] == plain["dimension"]
    clean = pq.read_table(tmp_path / "out" / "clean.parquet").to_pandas().set_index("id")
    assert (clean["x2"] == grouped.set_index("id").loc[clean.index, "x2"]).all()


def test_an_unreadable_record_of_a_semicolon_file_is_rejected_in_its_place(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text('id;label;x;y\n1;0;0,5;1,5\n2;1;1,5;2\n3;0;2,5;1;9\n4;1;"a;b";0,25\n')
    (unit,) = plan_units(typed_files([SourceFile(0, str(path), "csv")]))
    pieces = list(read_unit(unit, None, 100))
    rows = [r for batch, _ in pieces for r in batch.to_pylist()]
    assert [first for _, first in pieces] == [0, 2, 3]  # the unreadable line in its place
    assert [r["id"] for r in rows] == [1, 2, None, 4]
    assert "has 5 fields where the header has 4" in rows[2]["__poisonscan_unreadable__"]
    assert rows[0]["x"] == "0.5" and rows[3]["x"] == "a;b"  # a text column: its numbers with points
    assert rows[0]["y"] == 1.5 and rows[3]["y"] == 0.25


@pytest.mark.parametrize("text, ids, x", [
    # a decimal comma: "1.234,5" is 1234.5; "1.234" and "1.234.567" may be other things (an
    # address) and stay as written, as do the ids
    (b"id;label;x\n1,5;0;1.234,5\n2;1;10.100.200.250\n3;0;-0,25\n4;1;1.234\n5;0;1,234\nr6;1;abc\n",
     ["1,5", "2", "3", "4", "5", "r6"], ["1234.5", "10.100.200.250", "-0.25", "1.234", "1.234", "abc"]),
    # a decimal point (a tab file): text is kept as written (a table's column of numbers
    # reads "17,800" as a number, test_numbers_grouped_in_thousands_by_commas_scan_as_numbers)
    (b"id\tlabel\tx\n1\t0\t17,800\n2\t1\t1,234,567\n3\t0\t0.5\n4\t1\tabc\n",
     [1, 2, 3, 4], ["17,800", "1,234,567", "0.5", "abc"]),
])
def test_text_numbers_are_written_as_the_file_writes_its_numbers(tmp_path, text, ids, x):
    path = tmp_path / "data.txt"
    path.write_bytes(text)
    (src,) = typed_files([SourceFile(0, str(path), "csv")], as_written=("id", "label"))
    (unit,) = plan_units([src])
    rows = [r for batch, _ in read_unit(unit, None, 100) for r in batch.to_pylist()]
    assert [r["id"] for r in rows] == ids and [r["x"] for r in rows] == x


def test_a_column_name_given_twice_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "twice.csv"
    path.write_text("id,label,x,y,x\n1,0,0.5,1,2\n2,1,1.5,2,3\n")
    assert cli_main(["scan", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "a column name is given more than once ('x' names columns 3, 5)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_empty_shards_are_files_of_no_rows(tmp_path, capsys):
    import gzip

    # a sharded export writes a file for every shard, empty ones too
    df = _frame()
    df.iloc[:300].to_csv(tmp_path / "part-0.csv", index=False)
    df.iloc[300:].to_csv(tmp_path / "part-1.csv", index=False)
    (tmp_path / "part-2.csv").write_bytes(b"")
    (tmp_path / "part-3.csv").write_bytes(b"\xef\xbb\xbf\n  \n")  # a byte-order mark and blank lines
    whole = _scan(tmp_path / "part-[01].csv", tmp_path / "out_whole")
    sharded = _scan(tmp_path / "part-*.csv", tmp_path / "out_sharded")
    assert sharded["rows_read"] == whole["rows_read"] == 600
    assert sharded["inputs_read_as"] == {str(tmp_path / f"part-{i}.csv"): {"empty_file": True} for i in (2, 3)}
    assert "read " + str(tmp_path / "part-2.csv") + ": an empty file (no rows)" in format_summary(sharded, "out")
    a = pq.read_table(tmp_path / "out_whole" / "clean.parquet")
    assert a.num_rows == whole["rows_clean"] and a.equals(pq.read_table(tmp_path / "out_sharded" / "clean.parquet"))
    # JSONL, compressed: an empty shard is a gzip stream of no bytes
    with gzip.open(tmp_path / "rows-0.jsonl.gz", "wt") as f:
        df.to_json(f, orient="records", lines=True)
    with gzip.open(tmp_path / "rows-1.jsonl.gz", "wb") as f:
        f.write(b"")
    got = _scan(tmp_path / "rows-*.jsonl.gz", tmp_path / "out_jsonl")
    assert got["rows_read"] == 600 and got["inputs_read_as"] == {str(tmp_path / "rows-1.jsonl.gz"): {"empty_file": True}}
    # nothing but empty files: a clear error, nothing written
    capsys.readouterr()
    assert cli_main(["scan", str(tmp_path / "part-[23].csv"), "--out", str(tmp_path / "out_none")]) == 1
    err = capsys.readouterr().err
    assert "nothing to scan: every file is empty" in err and "Traceback" not in err
    assert not (tmp_path / "out_none").exists()
