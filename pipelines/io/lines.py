"""A CSV or JSONL file with lines its parser cannot read: read the rest, keep each
unreadable line in its place.

pyarrow reads a CSV or JSONL file a block at a time and stops at the first line it
cannot parse (a truncated JSON object, a CSV line with a field too many), losing the
whole file for one line. When that happens the file is read again in two passes:

1. every line is checked on its own, in Python (JSONL: one JSON object; CSV: each
   record, which quoted line breaks may spread over several lines, as many fields as
   the header), and the unreadable ones are noted with the reason;
2. pyarrow reads the file with those lines left out, so the other rows come out as
   they would from a clean file (the same types, inferred from the same first block),
   and each unreadable line is put back in its place as a row of nulls that carries
   its reason in the column :data:`UNREADABLE`. The rows after it keep their row
   numbers in the file; validation rejects it (``unreadable_row``) and drops the column.

A failure no line explains on its own is a value of another type than the rest of its
column (a word among numbers): :func:`..sources.typed_files` reads such a column as text
(a JSONL file then in Python, :func:`json_text_batches`); any other fails the file, with
the parser's message: there is no line to set aside. The two readings must also agree on the number of rows, or the file
fails. A CSV quote left open, which pyarrow reads without an error as a value running
on to the end of the file, is an unreadable line when the file is read record by
record (the caller asks for that reading when the file's last value holds a line
break: the open quote swallowed the lines after it into that value). Not caught:
an open quote that a later quote closes, a merge of lines no reader can tell from a
value that spans lines.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow as pa

#: The column the second pass adds to every batch: why a line could not be read (null
#: on the rows that could).
UNREADABLE = "__poisonscan_unreadable__"

#: How much of an unreadable line its reason quotes.
_QUOTE = 120

_CHUNK = 1 << 20


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file writes its records: the character between values, and the one
    before a number's decimals (:func:`csv_dialect` tells them from the file)."""

    delimiter: str = ","
    decimal_point: str = "."
    #: columns whose text is kept as written whatever the decimal point (the id and label)
    as_written: tuple[str, ...] = ()


#: The separators a CSV file may use: commas first (the default), then what spreadsheets
#: and databases write (semicolons where the comma is the decimal point).
_SEPARATORS = (",", ";", "\t", "|")

#: Numbers written as text, anchored, ASCII spaces around allowed (the same in Python's
#: ``re`` and in pyarrow's RE2). With a decimal comma ("0,5", "-12,25e3"). With a decimal
#: point. Shaped as either a decimal or a whole number with one thousands separator
#: ("1,234", "-17.800"): no evidence of which. Grouped in thousands by points before a
#: decimal comma ("1.234,5"), or by commas ("1,234.5", "100,200,300"), as a decimal
#: point writes them.
DECIMAL_COMMA = r"^[ \t]*[+-]?[0-9]+,[0-9]+(?:[eE][+-]?[0-9]+)?[ \t]*$"
DECIMAL_POINT = r"^[ \t]*[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*$"
AMBIGUOUS = r"^[ \t]*[+-]?[1-9][0-9]{0,2}[.,][0-9]{3}[ \t]*$"
GROUPED_POINTS = r"^[ \t]*[+-]?[1-9][0-9]{0,2}(?:\.[0-9]{3})+,[0-9]+[ \t]*$"
GROUPED_COMMAS = r"^[ \t]*[+-]?[1-9][0-9]{0,2}(?:(?:,[0-9]{3})+\.[0-9]+|(?:,[0-9]{3}){2,})[ \t]*$"
_COMMA = re.compile(DECIMAL_COMMA)
_POINT = re.compile(DECIMAL_POINT)
_AMBIGUOUS = re.compile(AMBIGUOUS)
_GROUPED_POINTS = re.compile(GROUPED_POINTS)
_GROUPED_COMMAS = re.compile(GROUPED_COMMAS)

#: Records of a file's start read to tell its separator, and its decimal point; at most
#: this many bytes of it.
_SEPARATOR_RECORDS = 50
_DIALECT_RECORDS = 1000
_DIALECT_BYTES = 8 << 20


def csv_dialect(open_stream: Callable[[], object]) -> CsvDialect:
    """The file's separator and decimal point, told from its first records.

    The separator is the one of comma, semicolon, tab and vertical bar that splits the
    header into at least two names and the most of the next 50 records into as many
    (on a tie, the one giving more names, then commas; a file of a header alone: the
    one giving the most names). Where it is not a comma, the decimal point is the comma
    when more numbers of the first 1,000 records are written with a decimal comma
    ("0,5", "1.234,5") than with a point ("0.5", "1,234.5"), the point when fewer;
    numbers such as "1,234" or "1.234", which may be whole numbers with a thousands
    separator, are not counted. On a tie (whole numbers only, say) it is the comma in a
    file separated by semicolons (what a spreadsheet writes where the comma is the
    decimal point), else the point. The sample is at most 8 MB; it ends at a record
    the csv module cannot read (a field over its size limit) or, for the decimal point,
    at the first record with another number of fields than the header (a quote left
    open swallows the lines after it)."""
    stream = open_stream()
    try:
        return _dialect(_Sample(physical_lines(stream)))
    finally:
        stream.close()


class _Sample:
    """A file's first lines, decoded, read from the stream only as far as asked (at most
    ``_DIALECT_BYTES``); empty lines before the header left out, as pyarrow does."""

    def __init__(self, lines: Iterator[bytes]):
        self._lines = lines
        self._text: list[str] = []
        self._bytes = 0

    def __iter__(self) -> Iterator[str]:
        i = 0
        while True:
            if i < len(self._text):
                yield self._text[i]
                i += 1
                continue
            if self._bytes >= _DIALECT_BYTES:
                return
            line = next(self._lines, None)
            if line is None:
                return
            self._bytes += len(line)
            decoded = line.decode("utf-8", "replace")
            if self._text or decoded.strip():
                self._text.append(decoded if self._text else decoded.lstrip("\ufeff"))


def _records(lines: _Sample, delimiter: str, limit: int) -> list[list[str]]:
    """The first ``limit`` records of ``lines`` that are not empty, up to one the csv
    module cannot read."""
    out: list[list[str]] = []
    reader = csv.reader(iter(lines), delimiter=delimiter)
    while len(out) < limit:
        try:
            record = next(reader)
        except (StopIteration, csv.Error):
            break
        if record:
            out.append(record)
    return out


def _dialect(lines: _Sample) -> CsvDialect:
    best, best_key = ",", None
    for sep in _SEPARATORS:
        records = _records(lines, sep, _SEPARATOR_RECORDS + 1)
        fields = len(records[0]) if records else 0
        if fields < 2:
            continue
        key = (sum(len(r) == fields for r in records[1:]), fields, sep == ",")
        if best_key is None or key > best_key:
            best, best_key = sep, key
    if best == ",":
        return CsvDialect()
    records = _records(lines, best, _DIALECT_RECORDS + 1)
    comma = point = 0
    for record in records[1:]:
        if len(record) != len(records[0]):
            break
        for value in record:
            if not _AMBIGUOUS.match(value):
                comma += bool(_COMMA.match(value) or _GROUPED_POINTS.match(value))
                point += bool(_POINT.match(value) or _GROUPED_COMMAS.match(value))
    if comma == point:
        return CsvDialect(best, "," if best == ";" else ".")
    return CsvDialect(best, "," if comma > point else ".")


def physical_lines(stream) -> Iterator[bytes]:
    """The stream's lines, each with its line break (the last one may have none)."""
    rest = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        data = rest + chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            yield data[start:end + 1]
            start = end + 1
        rest = data[start:]
    if rest:
        yield rest


def _quote(line: bytes) -> str:
    text = line.rstrip(b"\r\n").decode("utf-8", "replace").replace("\r\n", "\n")
    return repr(text if len(text) <= _QUOTE else text[:_QUOTE] + "...")


def _object(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):  # pyarrow refuses a key given twice
        twice = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"key {twice!r} given twice")
    return dict(pairs)


_DECODER = json.JSONDecoder(object_pairs_hook=_object)

_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def json_line_rows(line: bytes) -> tuple[int, str | None]:
    """How many rows pyarrow makes of one JSONL line (several objects on a line are
    several rows), and why it cannot read the line (None: it can; else the line is one
    unreadable row)."""
    objects, problem = _json_objects(line)
    return (1, problem) if problem is not None else (len(objects), None)


def _json_objects(line: bytes) -> tuple[list[dict], str | None]:
    """The JSON objects of one JSONL line, and why it cannot be read (None: it can)."""
    # bytes that are not UTF-8 are kept as they are: pyarrow reads them, and the row's
    # checks reject the cell that holds them (``bad_text``, ...)
    text = line.decode("utf-8", "surrogateescape")
    objects: list[dict] = []
    at, end = 0, len(text.rstrip())
    while True:
        while at < end and text[at].isspace():
            at += 1
        if at >= end:
            return objects, None
        try:
            value, at = _DECODER.raw_decode(text, at)
        except (ValueError, RecursionError) as exc:
            return objects, f"not valid JSON ({exc}): {_quote(line)}"
        if value is None:  # pyarrow reads a null as a row of nulls
            value = {}
        if not isinstance(value, dict):
            return objects, f"a JSON {_JSON_TYPES.get(type(value), 'value')}, not an object: {_quote(line)}"
        objects.append(value)


class _Lines(io.RawIOBase):
    """A readable stream of the given lines, concatenated."""

    def __init__(self, lines: Iterator[bytes]):
        self._lines = lines
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size, n = len(buffer), 0
        while n < size:
            if not self._pending:
                try:
                    self._pending = next(self._lines)
                except StopIteration:
                    break
            k = min(size - n, len(self._pending))
            buffer[n:n + k] = self._pending[:k]
            self._pending = self._pending[k:]
            n += k
        return n


def unreadable_lines(
    fmt: str, lines: Iterator[bytes], dialect: CsvDialect = CsvDialect()
) -> tuple[dict[int, str], set[int], int]:
    """Pass 1: ``({row number: reason}, {physical line numbers to leave out}, rows)``.

    Row numbers count what pyarrow makes rows of: the JSON objects of a JSONL file;
    CSV records after the header that are not empty lines. A CSV record is read as
    pyarrow reads it, so a quoted value may hold line breaks (the record then spans
    several lines, all left out when it is unreadable).
    """
    if fmt == "csv":
        return _unreadable_records(lines, dialect.delimiter)
    bad: dict[int, str] = {}
    skip: set[int] = set()
    row = 0
    for number, line in enumerate(lines):
        rows, problem = json_line_rows(line)
        if problem is not None:
            bad[row] = problem
            skip.add(number)
        row += rows
    return bad, skip, row


def _unreadable_records(lines: Iterator[bytes], delimiter: str = ",") -> tuple[dict[int, str], set[int], int]:
    bad: dict[int, str] = {}
    skip: set[int] = set()
    header = None
    row = 0
    offset = 0  # the physical line number of the first line the reader below is given
    while True:
        texts: list[bytes] = []  # the physical lines of the record being read

        def decoded(source):
            for line in source:
                texts.append(line)
                yield line.decode("utf-8", "surrogateescape")

        reader = csv.reader(decoded(lines), delimiter=delimiter)
        first = 0  # the record's first physical line, counted from ``offset``
        last = None  # (row, first line, physical lines) of the last record read
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # a field beyond the csv module's size limit, a NUL byte
                raise ValueError(f"line {offset + reader.line_num}: {exc}") from None
            if header is None:
                header = len(record)
            elif record:  # an empty line is no row (pyarrow skips it)
                last = (row, first, texts)
                if len(record) != header:
                    n = len(record)
                    raw = b"".join(texts)
                    bad[row] = f"has {n} field{'s' if n != 1 else ''} where the header has {header}: {_quote(raw)}"
                    skip.update(range(offset + first, offset + reader.line_num))
                row += 1
            first = reader.line_num
            texts = []  # ``decoded`` appends to the new list: ``last`` keeps the old one
        if last is None or len(last[2]) < 2 or b"".join(last[2]).count(b'"') % 2 == 0:
            return bad, skip, row
        # the file ends inside a quoted value that spans lines: a line cut short in a
        # quote, which swallowed every line after it. Only that line is unreadable; the
        # lines after it are read as records again.
        row, start, record_lines = last
        skip.difference_update(range(offset + start, offset + start + len(record_lines)))
        bad[row] = f"a quote opened in it is never closed (a line cut short?): {_quote(record_lines[0])}"
        skip.add(offset + start)
        row += 1
        offset += start + 1
        lines = iter(record_lines[1:])


def tolerant_batches(
    fmt: str,
    open_stream: Callable[[], object],
    open_reader: Callable[[object], pa.RecordBatchReader],
    dialect: CsvDialect = CsvDialect(),
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]] | None:
    """The file's rows with each unreadable line in its place (see the module
    docstring), or None when every line reads on its own (the failure was something
    else). ``open_stream()`` opens the file; ``open_reader(stream)`` is pyarrow's reader.

    Returns the schema of the readable rows (without :data:`UNREADABLE`) and the batches.
    """
    bad, skip, rows = unreadable_lines(fmt, physical_lines(open_stream()), dialect)
    if not bad:
        return None
    kept = (line for number, line in enumerate(physical_lines(open_stream())) if number not in skip)
    reader = open_reader(io.BufferedReader(_Lines(kept), buffer_size=_CHUNK))
    return reader.schema, _interleave(reader, bad, rows)


def _interleave(reader: pa.RecordBatchReader, bad: dict[int, str], rows: int) -> Iterator[pa.RecordBatch]:
    schema = reader.schema
    out_schema = schema.append(pa.field(UNREADABLE, pa.string()))
    pending = sorted(bad.items())
    row = 0  # the next row number of the file

    def readable(batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([*batch.columns, pa.nulls(batch.num_rows, pa.string())], schema=out_schema)

    def unreadable(reasons: list[str]) -> pa.RecordBatch:
        n = len(reasons)
        return pa.RecordBatch.from_arrays([*(pa.nulls(n, f.type) for f in schema), pa.array(reasons, pa.string())], schema=out_schema)

    def bad_run() -> Iterator[pa.RecordBatch]:
        nonlocal row, pending
        reasons = []
        while pending and pending[0][0] == row:
            reasons.append(pending.pop(0)[1])
            row += 1
        if reasons:
            yield unreadable(reasons)

    for batch in reader:
        start = 0
        while start < batch.num_rows:
            yield from bad_run()
            stop = batch.num_rows if not pending else min(batch.num_rows, start + pending[0][0] - row)
            yield readable(batch.slice(start, stop - start))
            row += stop - start
            start = stop
    yield from bad_run()  # unreadable lines after the last readable row
    if row != rows or pending:
        # the two readings split the file into rows differently (quoting they read
        # apart): the rows' numbers cannot be trusted, so the file fails
        raise ValueError(
            f"read record by record the file holds {rows} rows, {len(bad)} of them unreadable; "
            f"read around those, {row - len(bad) + len(pending)} readable rows where {rows - len(bad)} were expected"
        )


class JsonColumnType(ValueError):
    """A JSONL column holds a value the column's type (inferred from the file's first
    rows) cannot hold: a word among numbers, a string among lists."""

    def __init__(self, column: str, typed: pa.DataType | None, value):
        where = f"the file's first rows hold {typed}" if typed is not None else "its first rows hold other types"
        super().__init__(f"its column {column!r} holds {_short_json(value)} where {where}")
        self.column = column


def _short_json(value) -> str:
    text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    return text if len(text) <= 80 else text[:80] + "..."


#: Rows the Python reader below infers a JSONL file's column types from (the rest are
#: read to those types), and rows per batch.
_JSON_INFER_ROWS = 4096


def json_text_batches(
    open_stream: Callable[[], object], text_columns: tuple[str, ...], batch_rows: int = _JSON_INFER_ROWS,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A JSONL file read in Python, its ``text_columns`` as strings: a value that is not
    a string is written as JSON (``1``, ``[0.1, 0.2]``), so a column that mixes types
    (pyarrow stops the file at the first change) holds text the scan's row checks read
    (a label ``1`` and ``"1"`` are one label; numbers in a string are features written
    as text). The other columns take their types from the file's first rows, and a
    later value that does not fit (cast safely: 2.5 never becomes the integer 2) raises
    :class:`JsonColumnType` (:func:`json_text_columns` finds every such column first).
    Lines that are not JSON objects are rows of nulls with their reason in
    :data:`UNREADABLE`, as in :func:`tolerant_batches`. Returns the schema (without
    :data:`UNREADABLE`) and the batches."""
    rows = _json_rows(physical_lines(open_stream()))
    first = _take(rows, batch_rows)
    schema = _json_schema([r for r in first if isinstance(r, dict)], text_columns)

    def batches() -> Iterator[pa.RecordBatch]:
        pending = first
        while pending:
            yield _json_batch(pending, schema, text_columns)
            pending = _take(rows, batch_rows)

    return schema, batches()


def json_text_columns(open_stream: Callable[[], object], batch_rows: int = _JSON_INFER_ROWS) -> tuple[str, ...]:
    """The columns of a JSONL file that :func:`json_text_batches` must read as text, in
    one reading: those whose first rows mix types, whose later values do not fit the
    type of their first rows, or that first appear after them."""
    rows = _json_rows(physical_lines(open_stream()))
    first = [r for r in _take(rows, batch_rows) if isinstance(r, dict)]
    text: dict = {}
    fields = {}
    for name in dict.fromkeys(k for r in first for k in r):
        t = _column_type([r.get(name) for r in first])
        if t is None:
            text[name] = None
        else:
            fields[name] = t
    pending = first
    while pending:
        for name, t in list(fields.items()):
            if _column([r.get(name) for r in pending], t) is None:
                text[name] = None
                del fields[name]
        for r in pending:
            for k in r:
                if k not in fields and k not in text:
                    text[k] = None
        pending = [r for r in _take(rows, batch_rows) if isinstance(r, dict)]
    return tuple(text)


def _take(items: Iterator, n: int) -> list:
    return [item for _, item in zip(range(n), items)]


def _json_rows(lines: Iterator[bytes]) -> Iterator[dict | str]:
    """Each JSON object of the lines (several on a line are several rows), or for a line
    that cannot be read, why (one row)."""
    for line in lines:
        objects, problem = _json_objects(line)
        if problem is not None:
            yield problem
        else:
            yield from objects


def _as_text(value):
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


def _column_type(values: list) -> pa.DataType | None:
    """The type pyarrow gives the values (None: they mix types it cannot hold together)."""
    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def _column(values: list, t: pa.DataType) -> pa.Array | None:
    """The values as an array of type ``t``, converted only where no value changes
    (2.5 is no int64, True no float, a struct with another field no struct): None where
    they do not fit."""
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if arr.type == t:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(values), t)
    if pa.types.is_boolean(arr.type) != pa.types.is_boolean(t) or _drops_fields(arr.type, t):
        return None
    try:
        return arr.cast(t)  # safe: refuses a value it would change
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _drops_fields(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether a cast from ``src`` to ``dst`` would drop a struct field (pyarrow casts
    ``{x, y}`` to ``{x}`` without a word)."""
    if pa.types.is_struct(src):
        if not pa.types.is_struct(dst):
            return False  # the cast itself refuses
        names = {dst.field(i).name: dst.field(i).type for i in range(dst.num_fields)}
        return any(src.field(i).name not in names or _drops_fields(src.field(i).type, names[src.field(i).name])
                   for i in range(src.num_fields))
    if (pa.types.is_list(src) or pa.types.is_large_list(src)) and hasattr(dst, "value_type"):
        return _drops_fields(src.value_type, dst.value_type)
    return False


def _json_schema(rows: list[dict], text_columns: tuple[str, ...]) -> pa.Schema:
    names: dict = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    names.update(dict.fromkeys(text_columns))  # a key the first rows lack: text (see below)
    fields = []
    for name in names:
        if name in text_columns:
            fields.append(pa.field(name, pa.string()))
            continue
        t = _column_type([r.get(name) for r in rows])
        if t is None:
            raise JsonColumnType(name, None, next(r[name] for r in rows if r.get(name) is not None))
        fields.append(pa.field(name, t))
    return pa.schema(fields)


def _json_batch(items: list, schema: pa.Schema, text_columns: tuple[str, ...]) -> pa.RecordBatch:
    objects = [r if isinstance(r, dict) else {} for r in items]
    for r in objects:
        extra = [k for k in r if schema.get_field_index(k) < 0]
        if extra:  # a key the first rows lack: read as text once the caller knows of it
            raise JsonColumnType(extra[0], pa.null(), r[extra[0]])
    arrays = []
    for f in schema:
        values = [r.get(f.name) for r in objects]
        if f.name in text_columns:
            arrays.append(pa.array([_as_text(v) for v in values], pa.string()))
            continue
        arr = _column(values, f.type)
        if arr is None:
            bad = next(v for v in values if v is not None and _column([v], f.type) is None)
            raise JsonColumnType(f.name, f.type, bad)
        arrays.append(arr)
    reasons = [None if isinstance(r, dict) else r for r in items]
    if any(reasons):
        return pa.RecordBatch.from_arrays(
            [*arrays, pa.array(reasons, pa.string())], schema=schema.append(pa.field(UNREADABLE, pa.string()))
        )
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
