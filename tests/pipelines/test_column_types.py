"""A value of another type than its column's rejects its row, not the column or the file.

pyarrow types a CSV column by the file's first block: a typo there makes the whole
column text (a table's numbers were then one-hot categories), and a typo further on
stopped the file; a JSONL column whose values change type stopped the file wherever
it was. Now such a column is read as text in every pass (``sources.typed_files``), and
a table's text column that is mostly numbers is read as numbers, the rows that are not
rejected (``not_a_number``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan.pipelines.cli import main as cli_main
from poisonscan.pipelines.io.sources import (
    ColumnTypeChange,
    SourceError,
    SourceFile,
    file_schema,
    plan_units,
    read_unit,
    typed_files,
)
from poisonscan.pipelines.represent.encoders import (
    NUMBER_SHARE,
    TabularEncoder,
    column_numbers,
)

from ..planted import planted

ROWS = 12_000  # about 1.6 MB of CSV: rows past pyarrow's first 1 MB block
LATE = 11_000


def _table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": np.arange(ROWS), "label": rng.integers(0, 3, ROWS)})
    for j in range(8):
        df[f"x{j}"] = rng.normal(size=ROWS) + df["label"] * 0.5
    df["note"] = rng.integers(0, 9, ROWS)  # not scanned: carried to the outputs
    return df


def _with_typos(df: pd.DataFrame) -> pd.DataFrame:
    t = df.astype({"x1": object, "x5": object, "note": object})
    t.loc[3, "x1"] = "abc"  # in the first block: pyarrow reads x1 as text
    t.loc[LATE, "x5"] = "12,5"  # past it: pyarrow typed x5 as numbers and stopped here
    t.loc[LATE + 500, "note"] = "see below"
    t.loc[[100, LATE + 10], "x5"] = ["NA", "null"]  # missing values, as pyarrow reads them: no typos
    return t


def _csv(df: pd.DataFrame, path) -> str:
    df.to_csv(path, index=False, float_format="%.12f")
    return str(path)


def test_a_csv_value_past_the_first_block_that_does_not_fit_its_column_is_read_as_text(tmp_path):
    path = _csv(_with_typos(_table()), tmp_path / "typos.csv")
    (raw,) = plan_units([SourceFile(0, path, "csv")])
    with pytest.raises(SourceError, match=r"its column 'x5' holds '12,5' where the file's first rows hold double"):
        list(read_unit(raw, None, 4096))
    (src,) = typed_files([SourceFile(0, path, "csv")])
    assert src.text_columns == ("x5", "note")
    assert file_schema(src).field("x5").type == pa.string() and file_schema(src).field("x0").type == pa.float64()
    (unit,) = plan_units([src])
    batches = [(b, first) for b, first in read_unit(unit, None, 4096)]
    assert [first for _, first in batches] == list(np.cumsum([0] + [b.num_rows for b, _ in batches[:-1]]))
    assert {b.schema for b, _ in batches} == {batches[0][0].schema}  # one schema for the whole file
    table = pa.Table.from_batches([b for b, _ in batches])
    assert table.num_rows == ROWS and table.column("x5")[LATE].as_py() == "12,5"
    assert table.column("note")[0].as_py() == str(_table()["note"][0])
    # a clean file costs nothing more than the one read
    (clean,) = typed_files([SourceFile(0, _csv(_table(), tmp_path / "clean.csv"), "csv")])
    assert clean.text_columns == ()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_value_past_the_first_block_is_found_whatever_threads_pyarrow_reads_with(tmp_path, threads):
    """With one thread (a one-core machine, or OMP_NUM_THREADS=1, as in ``make test``),
    pyarrow's message for a value that does not fit its column names the row ("In CSV
    column #7: Row #11002: ..."), with two it does not; the file was lost where one
    thread read it."""
    path = _csv(_with_typos(_table()), tmp_path / "typos.csv")
    before = pa.cpu_count()
    pa.set_cpu_count(threads)
    try:
        (raw,) = plan_units([SourceFile(0, path, "csv")])
        with pytest.raises(SourceError, match=r"its column 'x5' holds '12,5' where the file's first rows hold double"):
            list(read_unit(raw, None, 4096))
        (src,) = typed_files([SourceFile(0, path, "csv")])
    finally:
        pa.set_cpu_count(before)
    assert src.text_columns == ("x5", "note")


def test_the_python_jsonl_reader_changes_no_value_and_finds_every_column_in_one_reading(tmp_path):
    """Past the rows it types the columns by, a value that does not fit is never
    converted (2.5 is no integer 2, a struct's new field is not dropped): the column is
    text, found with the others in one reading; a ``null`` line is a row of nulls, as
    pyarrow reads it."""
    rows = [{"id": i, "note": 1, "where": {"x": 1}, "v": 0.5} for i in range(5000)]
    rows[5]["note"] = "w"  # a type change in the first rows
    rows[4500]["id"] = 2.5  # past them
    rows[4600]["where"] = {"x": 1, "y": 2}
    rows[4700]["v"] = 3  # an integer in a column of floats fits
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "null\n")
    (src,) = typed_files([SourceFile(0, str(path), "jsonl")])
    assert src.text_columns == ("note", "id", "where")
    table = pa.Table.from_batches([b for b, _ in read_unit(plan_units([src])[0], None, 4096)])
    assert table.num_rows == 5001 and table.column("id")[4500].as_py() == "2.5"
    assert table.column("where")[4600].as_py() == '{"x": 1, "y": 2}' and table.column("v")[4700].as_py() == 3.0
    assert table.slice(5000).to_pylist() == [{"id": None, "note": None, "where": None, "v": None}]


def test_numbers_written_as_text_are_read_as_pyarrow_reads_them():
    x, bad = column_numbers(pa.array(["1.5", " 2 ", "abc", "", None, "nan", "-3e2", ".5", "1_000", "0x10", "12,5"]))
    assert np.array_equal(x[[0, 1, 6, 7]], [1.5, 2.0, -300.0, 0.5])
    assert np.isnan(x[[2, 3, 4, 5, 8, 9, 10]]).all()  # empty, null and "nan": missing values, not typos
    assert bad == {2: "abc", 8: "1_000", 9: "0x10", 10: "12,5"}
    x, bad = column_numbers(pa.array(["NA", " null", "N/A", "#N/A", "1"]))  # pyarrow's missing values
    assert np.isnan(x[:4]).all() and x[4] == 1.0 and bad == {}
    # a column is numbers when at least NUMBER_SHARE of its values present are
    words = int(round(20 * (1 - NUMBER_SHARE)))
    mostly = pa.table({"a": [str(i) for i in range(20 - words)] + ["x"] * words + [None, ""]})
    half = pa.table({"a": [str(i) for i in range(20 - words - 1)] + ["x"] * (words + 1)})
    assert [c for c, *_ in TabularEncoder.fit(mostly, ["a"]).numeric] == ["a"]
    assert [c for c, _ in TabularEncoder.fit(half, ["a"]).categorical] == ["a"]
    enc = TabularEncoder.fit(mostly, ["a"]).encode(mostly.to_batches()[0])
    assert list(enc.errors) == list(range(20 - words, 20)) and enc.errors[20 - words][0] == "not_a_number"
    assert len(enc.rows) == len(enc.tokens) == enc.inputs["x"].shape[0] == mostly.num_rows - words


def test_a_few_words_in_a_column_of_numbers_reject_their_rows_not_the_column_or_the_file(tmp_path):
    columns = ",".join(f"x{j}" for j in range(8))
    outs = {}
    for name, df in (("clean", _table()), ("typos", _with_typos(_table()))):
        out = tmp_path / name
        src = _csv(df, tmp_path / f"{name}.csv")
        assert cli_main(["scan", src, "--out", str(out), "--tabular-columns", columns, "-q"]) == 0
        outs[name] = out
    s = {name: json.loads((out / "summary.json").read_text()) for name, out in outs.items()}
    typos = s["typos"]
    assert typos["rows_read"] == ROWS and typos["rejected_by_reason"] == {"not_a_number": 2}
    assert typos["rows_clean"] + typos["rows_quarantined"] + typos["rows_rejected"] == ROWS
    # x1 and x5 are read as numbers: the representation is as wide as the clean file's
    assert typos["dimension"] == s["clean"]["dimension"]
    rejected = pq.read_table(outs["typos"] / "rejected.parquet").to_pylist()
    assert [r["source_row"] for r in rejected] == [3, LATE]
    assert [r["x1"] for r in rejected][0] == "abc" and rejected[1]["x5"] == "12,5"  # the row as read
    assert "column 'x1' holds 'abc', not a number" in rejected[0]["error"]
    assert "column 'x5' holds '12,5', not a number" in rejected[1]["error"]
    assert {r["expectation"] for r in rejected} == {"expect_column_values_to_be_in_set(tabular.numbers)"}
    (numbers,) = [r for r in typos["expectations"]["results"]
                  if r["expectation"] == "expect_column_values_to_be_in_set(tabular.numbers)"]
    assert not numbers["success"] and numbers["result"]["unexpected_count"] == 2
    # the clean split reads the file again, with the same columns as text
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("id,label,score,decision,reviewer,time,note,scan\n")
    assert cli_main(["apply", str(outs["typos"]), "--decisions", str(decisions), "-q"]) == 0
    split = pq.read_table(outs["typos"] / "clean.parquet")
    assert split.num_rows == typos["rows_clean"]
    assert split.schema.field("note").type == pa.string()
    assert "see below" in split.column("note").to_pylist()
    assert not {3, LATE} & set(split.column("id").to_pylist())


def test_a_jsonl_column_whose_values_change_type_is_read_as_text(tmp_path):
    """A string among numbers, in a list or as the label: the file is read, and the
    values are checked row by row as text (labels 3 and "3" are one label; numbers in
    a string are features written as text)."""
    X, y, poison = planted()
    rows = [{"id": i, "label": int(y[i]), "features": [round(float(v), 5) for v in X[i]]} for i in range(len(y))]
    clean_file, mixed_file = tmp_path / "clean.jsonl", tmp_path / "mixed.jsonl"
    clean_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    mixed = [dict(r) for r in rows]
    mixed[700]["features"] = mixed[700]["features"][:3] + ["abc"] + mixed[700]["features"][4:]
    mixed[800]["label"] = str(mixed[800]["label"])
    mixed_file.write_text("\n".join(json.dumps(r) for r in mixed) + "\n{broken\n")
    with pytest.raises(ColumnTypeChange, match="changed from number to string"):
        list(read_unit(plan_units([SourceFile(0, str(mixed_file), "jsonl")])[0], None, 4096))
    (src,) = typed_files([SourceFile(0, str(mixed_file), "jsonl")])
    assert sorted(src.text_columns) == ["features", "label"]
    outs = {}
    for name, path in (("clean", clean_file), ("mixed", mixed_file)):
        out = tmp_path / name
        assert cli_main(["scan", str(path), "--out", str(out), "--features-column", "features", "-q"]) == 0
        outs[name] = out
    s = json.loads((outs["mixed"] / "summary.json").read_text())
    assert s["rows_read"] == len(y) + 1
    assert s["rejected_by_reason"] == {"bad_number": 1, "unreadable_row": 1}
    rejected = pq.read_table(outs["mixed"] / "rejected.parquet").to_pylist()
    assert [r["source_row"] for r in rejected] == [700, len(y)]
    assert "abc" in rejected[0]["error"] and rejected[0]["features"].startswith("[")
    q = {name: pq.read_table(out / "quarantine.parquet") for name, out in outs.items()}
    assert q["mixed"].schema.field("label").type == pa.string()
    assert set(q["clean"].column("id").to_pylist()) == set(poison.tolist())
    assert set(q["mixed"].column("id").to_pylist()) == set(poison.tolist()) - {700}


def test_ids_and_labels_written_as_floats_are_read_as_integers(tmp_path):
    """pandas writes a column of integers with a missing value as floats (1.0): the
    whole numbers are the integers, a NaN is a missing value, and 2.5 is rejected."""
    X, y, poison = planted()
    ids, labels = np.arange(len(y), dtype=float), y.astype(float)
    labels[20], labels[40], ids[30] = 2.5, np.nan, np.nan  # NaN as written, not as null
    table = pa.table({
        "id": pa.array(ids, from_pandas=False),
        "label": pa.array(labels, mask=np.arange(len(y)) == 10, from_pandas=False),  # null, as pandas writes NaN
        "features": pa.array([list(map(float, row)) for row in X], pa.list_(pa.float64())),
    })
    pq.write_table(table, tmp_path / "floats.parquet")
    out = tmp_path / "out"
    assert cli_main(["scan", str(tmp_path / "floats.parquet"), "--out", str(out), "--features-column", "features", "-q"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["rows_read"] == len(y)
    assert s["rejected_by_reason"] == {"missing_label": 2, "non_integer_label": 1, "missing_id": 1}
    rejected = {r["source_row"]: r for r in pq.read_table(out / "rejected.parquet").to_pylist()}
    assert rejected[10]["error"] == "label is null" and rejected[40]["error"] == "label is NaN"
    assert rejected[20]["error"] == "the label 2.5 is not a whole number (ids and labels are integers or strings)"
    assert rejected[20]["expectation"] == "expect_column_values_to_be_in_set(label.whole)"
    assert rejected[30]["error"] == "id is NaN"
    q = pq.read_table(out / "quarantine.parquet")
    assert q.schema.field("id").type == q.schema.field("label").type == pa.int64()
    assert set(q.column("id").to_pylist()) == set(poison.tolist()) - {10, 20, 30, 40}
    assert sorted(c["label"] for c in s["classes"]) == sorted(set(y.tolist()))


def test_dates_times_and_decimals_in_a_table_are_numbers_and_booleans_are_labels(tmp_path):
    """A table's date, timestamp, time and decimal columns are read as numbers (seconds,
    floats): the default input (every column but id and label) refused such a file. A
    label column of booleans is labels 0 and 1."""
    import datetime
    import decimal

    n = 600
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n).astype(bool)
    start = datetime.datetime(2024, 1, 1)
    table = pa.table({
        "id": np.arange(n),
        "label": labels,
        "x": rng.normal(size=n) + labels,
        "when": pa.array([start + datetime.timedelta(hours=int(h)) for h in rng.integers(0, 5000, n)], pa.timestamp("ms")),
        "day": pa.array([(start + datetime.timedelta(days=int(d))).date() for d in rng.integers(0, 300, n)], pa.date32()),
        "at": pa.array([datetime.time(int(h), 30) for h in rng.integers(0, 24, n)], pa.time64("us")),
        "price": pa.array([decimal.Decimal(f"{v:.2f}") for v in rng.uniform(1, 100, n)], pa.decimal128(6, 2)),
    })
    seconds, _ = column_numbers(table.column("when").combine_chunks())
    assert seconds[0] == (table.column("when")[0].as_py() - datetime.datetime(1970, 1, 1)).total_seconds()
    days, _ = column_numbers(table.column("day").combine_chunks())
    assert days[0] == (table.column("day")[0].as_py() - datetime.date(1970, 1, 1)).days * 86400.0
    enc = TabularEncoder.fit(table, ["x", "when", "day", "at", "price"])
    assert [c for c, *_ in enc.numeric] == ["x", "when", "day", "at", "price"] and not enc.categorical
    # a value many rows share is a token as the column writes it (a batch of one day)
    tokens = enc.encode(table.to_batches()[0]).tokens
    days_held = {t for row in tokens for t in row if t.startswith("day=")}
    assert days_held and all(datetime.date.fromisoformat(t[4:]) for t in days_held)
    assert f"day={table.column('day')[0].as_py().isoformat()}" in tokens[0]
    pq.write_table(table, tmp_path / "rows.parquet")
    out = tmp_path / "out"
    assert cli_main(["scan", str(tmp_path / "rows.parquet"), "--out", str(out), "-q"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["rows_read"] == n and s["rows_rejected"] == 0
    assert sorted(c["label"] for c in s["classes"]) == [0, 1]


def test_a_column_of_numbers_in_one_file_and_text_in_another_is_text_in_the_outputs(tmp_path):
    """Outputs of several files have one schema: a column a typo made text in one file
    is text in the clean split, the quarantine's rows and the rejected rows (its
    numbers written as read); before, the scan failed at its end ("Unable to merge")."""
    df = _table().iloc[:3000]
    a = _csv(df.iloc[:1500], tmp_path / "a.csv")
    b = _csv(df.iloc[1500:], tmp_path / "b.csv")
    text = (tmp_path / "b.csv").read_text().splitlines()
    cells = text[5].split(",")
    cells[3] = "oops"  # x1 of the file's fifth row
    text[5] = ",".join(cells)
    (tmp_path / "b.csv").write_text("\n".join(text) + "\n")
    out = tmp_path / "out"
    columns = ",".join(f"x{j}" for j in range(8))
    assert cli_main(["scan", a, b, "--out", str(out), "--tabular-columns", columns, "--write-clean", "-q"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["rows_read"] == 3000 and s["rejected_by_reason"] == {"not_a_number": 1}
    clean = pq.read_table(out / "clean.parquet")
    assert clean.num_rows == s["rows_clean"] and clean.schema.field("x1").type == pa.string()
    assert clean.schema.field("x0").type == pa.float64()
    assert float(clean.column("x1")[0].as_py()) == pytest.approx(df["x1"].iloc[0])
    assert pq.read_table(out / "rejected.parquet").column("x1").to_pylist() == ["oops"]
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("id,label,score,decision,reviewer,time,note,scan\n")
    assert cli_main(["apply", str(out), "--decisions", str(decisions), "--out", str(tmp_path / "applied"), "-q"]) == 0
    assert pq.read_table(tmp_path / "applied" / "clean.parquet").equals(clean)
