"""Input files: matching, checking, splitting into read units, reading Arrow batches.

Files are matched and opened through Beam's filesystems, so any scheme Beam knows
(gs://, s3://, hdfs://) works where its extra is installed; local files are read by
pyarrow directly. Elements are Arrow record batches, never a dict per row.

Every row gets a *position*: ``(file index << 40) | row number in the file``, with files
numbered in sorted path order. Positions are unique and independent of how the work is
split, so they order outputs and break ties deterministically.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import queue
import re
import threading
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from poisonscan.pipelines.config import usable_cores
from poisonscan.pipelines.io import folders
from poisonscan.pipelines.io.folders import IMAGE_FOLDER, FolderError
from poisonscan.pipelines.io.lines import (
    DECIMAL_COMMA,
    GROUPED_POINTS,
    UNREADABLE,
    CsvDialect,
    JsonColumnType,
    csv_dialect,
    json_text_batches,
    json_text_columns,
    tolerant_batches,
)
from poisonscan.pipelines.io.outputs import is_local, local_path

ROW_BITS = 40

ROW_MASK = (1 << ROW_BITS) - 1

FORMATS = ("parquet", "csv", "jsonl", IMAGE_FOLDER)

_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")

#: Largest JSON line the JSONL reader accepts.
_JSON_BLOCK = 16 << 20

#: Rows per read unit for Parquet (consecutive row groups are grouped up to this many).
UNIT_ROWS = 1 << 18


class SourceError(Exception):
    """An input cannot be read or lacks what the scan needs (exit code 1)."""


@dataclass(frozen=True)
class SourceFile:
    index: int
    path: str
    format: str
    #: CSV or JSONL columns read as text: their values are not all of the type pyarrow
    #: gave them by the file's first rows (:func:`typed_files`)
    text_columns: tuple[str, ...] = ()
    #: a CSV file's separator and decimal point, told from the file (:func:`typed_files`)
    dialect: CsvDialect = CsvDialect()
    #: a CSV or JSONL file of nothing but white space: no rows, no columns (an empty
    #: shard of a sharded export), read as such (:func:`_blank`)
    blank: bool = False
    #: a folder of images (:mod:`.folders`): its images, the fingerprint of their
    #: listing, how many other files it holds, and what its rows' ids start with (the
    #: folder, where several folders are scanned together: ``train/cat/1.png`` and
    #: ``val/cat/1.png`` are two rows)
    rows: int | None = None
    listing: str = ""
    other_files: int = 0
    id_prefix: str = ""


@dataclass(frozen=True)
class ReadUnit:
    """A piece of one file that one worker reads: a run of row groups, or a whole file."""

    file_index: int
    unit_index: int
    path: str
    format: str
    row_groups: tuple[int, ...] | None
    first_row: int
    rows: int | None  # known for Parquet
    text_columns: tuple[str, ...] = ()  # see SourceFile
    dialect: CsvDialect = CsvDialect()  # see SourceFile
    blank: bool = False  # see SourceFile
    listing: str = ""  # see SourceFile
    other_files: int = 0  # see SourceFile
    id_prefix: str = ""  # see SourceFile

    @property
    def key(self) -> str:
        return f"{self.file_index:06d}-{self.unit_index:06d}"


def encode_position(file_index: int, row) -> int:
    return (file_index << ROW_BITS) | row


def decode_position(position: int) -> tuple[int, int]:
    return int(position) >> ROW_BITS, int(position) & ROW_MASK


def format_of(path: str, override: str | None = None) -> str:
    if override:
        return override
    name = path.lower()
    for comp in _COMPRESSIONS:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    ext = os.path.splitext(name)[1]
    try:
        return _EXTENSIONS[ext]
    except KeyError:
        raise SourceError(
            f"{path}: cannot tell the format from the extension {ext or '(none)'}; "
            f"use --format ({', '.join(FORMATS)})"
        ) from None


def expand_sources(patterns: Sequence[str], format_override: str | None = None,
                   formats: Mapping[str, str] | None = None) -> list[SourceFile]:
    """Match files or globs; every pattern must match at least one file. A folder of
    images in class subfolders (:mod:`.folders`) is a source of its own: a local folder
    holding image files, or any folder with ``--format images``."""
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystems import FileSystems

    if not patterns:
        raise SourceError("no source given")
    paths: set[str] = set()
    image_folders: dict[str, tuple] = {}
    given = format_override
    chosen: dict[str, str] = {}  # a file's format, given for that file (``formats``)
    for pattern in patterns:
        format_override = (formats or {}).get(pattern, given)
        local_folder = is_local(pattern) and os.path.isdir(local_path(pattern))
        glob = f"{pattern.rstrip('/')}/*.parquet"
        if local_folder and format_override not in (None, IMAGE_FOLDER):
            raise SourceError(f"{pattern} is a directory; give files or a glob such as {glob}")
        if local_folder or format_override == IMAGE_FOLDER:
            folder = _folder_name(pattern)
            try:
                names, others = folders.list_folder(folder)
            except FolderError as exc:
                raise SourceError(str(exc)) from None
            if not names:
                raise SourceError(
                    f"{pattern} is a directory that holds no image file ({', '.join(folders.IMAGE_SUFFIXES)}); "
                    f"give files or a glob such as {glob}, or a folder of images in class subfolders"
                )
            tables = _data_files_in(folder) if format_override is None else []
            if tables:  # a CSV of paths beside its images: which of the two is meant?
                raise SourceError(
                    f"{pattern} holds data files ({', '.join(tables[:3])}{' ...' if len(tables) > 3 else ''}) "
                    f"beside {len(names):,} images: give the file to scan its rows ({folder}/{tables[0]}), "
                    "or --format images to scan the images, labelled by their subfolders"
                )
            image_folders[folder] = (len(names), folders.digest(names), others)
            continue
        if is_local(pattern) and os.path.isfile(local_path(pattern)):
            paths.add(pattern)  # a file that exists is that file, brackets and all ("train[1].parquet")
            if format_override:
                chosen[pattern] = format_override
            continue
        try:
            (result,) = FileSystems.match([pattern])
        except Exception as exc:  # Beam raises BeamIOError with per-pattern details
            raise SourceError(f"cannot list {pattern}: {_one_line(exc)}") from None
        found = [m.path for m in result.metadata_list if not m.path.endswith("/")]
        if not found:
            raise SourceError(f"no file matches {pattern}")
        paths.update(found)
        if format_override:
            chosen.update(dict.fromkeys(found, format_override))
    out = []
    for i, p in enumerate(sorted(paths | set(image_folders))):
        if p in image_folders:
            rows, listing, others = image_folders[p]
            prefix = f"{p}/" if len(image_folders) > 1 else ""
            out.append(SourceFile(i, p, IMAGE_FOLDER, rows=rows, listing=listing, other_files=others, id_prefix=prefix))
        else:
            out.append(SourceFile(i, p, format_of(p, chosen.get(p, given))))
    return out


def _data_files_in(folder: str) -> list[str]:
    """The Parquet, CSV and JSONL files directly in a local folder, by name."""
    out = []
    for name in sorted(os.listdir(local_path(folder))):
        try:
            format_of(name)
        except SourceError:
            continue
        if not name.startswith("."):
            out.append(name)
    return out


def _folder_name(pattern: str) -> str:
    """A folder as the scan names it: without a trailing ``/`` (``data/train/`` and
    ``data/train`` are one source)."""
    return pattern.rstrip("/") or "/"


def open_binary(path: str):
    """A readable binary stream (decompressed for CSV/JSONL by extension)."""
    if is_local(path):
        try:
            return pa.input_stream(local_path(path), compression="detect")
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"cannot open {path}: {_one_line(exc)}") from None
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.open(path, compression_type=CompressionTypes.AUTO)
    except Exception as exc:
        raise SourceError(f"cannot open {path}: {_one_line(exc)}") from None


def _blank(path: str, fmt: str) -> bool:
    """Whether a CSV or JSONL file holds nothing but white space (decompressed; a
    byte-order mark alone is no content either): an empty shard, which pyarrow refuses
    ("Empty CSV file", "Empty JSON stream"), is a file of no rows. Reads up to the first
    byte that is not white space."""
    first = True
    try:
        with open_binary(path) as stream:
            while True:
                chunk = stream.read(1 << 16)
                if not chunk:
                    return True
                if first:
                    chunk, first = chunk.removeprefix(b"\xef\xbb\xbf"), False
                if chunk.strip():
                    return False
    except SourceError:
        raise
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise SourceError(f"cannot read {path} as {_AS[fmt]}: {_one_line(exc)}") from None


def inputs_in_folder(paths, folder: str) -> list[str]:
    """The local input files that lie directly in ``folder``: outputs written there
    would be read as more input by the next scan of the same pattern (``data/*``)."""
    if not is_local(folder):
        return []
    out = os.path.realpath(folder.removeprefix("file://"))
    return [p for p in paths if is_local(p) and os.path.dirname(os.path.realpath(p.removeprefix("file://"))) == out]


#: Parquet reads stream through a buffer of this size. (pyarrow's default pre-buffers
#: whole row-group ranges: on a 1 GB file that held the entire file in memory.)
_PARQUET_READ = dict(pre_buffer=False, buffer_size=8 << 20)


def _parquet_file(path: str) -> pq.ParquetFile:
    try:
        if is_local(path):
            return pq.ParquetFile(local_path(path), **_PARQUET_READ)
        # Beam's filesystems: about 1 s to import; local paths never need them
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        return pq.ParquetFile(stream, **_PARQUET_READ)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot read {path} as Parquet: {_one_line(exc)}") from None


_AS = {"csv": "CSV", "jsonl": "JSON lines"}


def _csv_parse(dialect: CsvDialect) -> pacsv.ParseOptions:
    # quoted values may hold line breaks (text exported by pandas): without this
    # pyarrow splits blocks inside them and stops ("out of sync with chunker")
    return pacsv.ParseOptions(newlines_in_values=True, delimiter=dialect.delimiter)


def _open_text(
    fmt: str, stream, text_columns: Sequence[str] = (), dialect: CsvDialect = CsvDialect()
) -> pa.RecordBatchReader:
    """pyarrow's streaming reader of a CSV or JSONL stream (raises what pyarrow raises);
    a CSV's ``text_columns`` are read as strings whatever their values look like, its
    values split and its numbers read as ``dialect`` says."""
    if fmt == "csv":
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in text_columns}, decimal_point=dialect.decimal_point
        )
        return pacsv.open_csv(stream, parse_options=_csv_parse(dialect), convert_options=convert)
    return pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=_JSON_BLOCK))


def _tolerant(
    path: str,
    fmt: str,
    failure: BaseException | None = None,
    text_columns: Sequence[str] = (),
    dialect: CsvDialect = CsvDialect(),
):
    """``(schema, batches)`` of the file read around its unreadable lines (:mod:`.lines`).
    Where no line is unreadable on its own: the parser's ``failure`` as a
    :class:`SourceError`, or None for a file pyarrow read without one."""
    message = f"cannot read {path} as {_AS[fmt]}" + (f": {_one_line(failure)}" if failure is not None else "")
    try:
        found = tolerant_batches(
            fmt, lambda: open_binary(path), lambda stream: _open_text(fmt, stream, text_columns, dialect), dialect
        )
    except SourceError:
        raise
    except Exception as exc:
        if isinstance(exc, pa.ArrowInvalid):
            _raise_type_change(path, fmt, exc, None)
        around = "; read without its unreadable lines" if failure is not None else ""
        raise SourceError(f"{message}{around}: {_one_line(exc)}") from None
    if found is None and failure is not None:
        # no line is unreadable on its own: a JSON value of another type than its column's
        _raise_type_change(path, fmt, failure, None)
        raise SourceError(message)
    return found


def _text_schema(src: SourceFile) -> pa.Schema:
    if src.blank:
        return pa.schema([])
    if src.format == "jsonl" and src.text_columns:
        return _json_as_text(src.path, src.text_columns)[0]
    try:
        return _open_text(src.format, open_binary(src.path), src.text_columns, src.dialect).schema
    except SourceError:
        raise
    except pa.ArrowInvalid as exc:
        if src.format == "jsonl" and "empty" in str(exc).lower():
            return pa.schema([])
        return _tolerant(src.path, src.format, exc, src.text_columns, src.dialect)[0]
    except Exception as exc:
        raise SourceError(f"cannot read {src.path} as {_AS[src.format]}: {_one_line(exc)}") from None


class ColumnTypeChange(SourceError):
    """A CSV or JSONL column typed by the file's first rows (numbers) holds a value of
    another kind further on; :func:`typed_files` reads such a column as text.
    ``column``: the CSV column (None for JSON: pyarrow's message cannot be trusted to
    name it, and :func:`.lines.json_text_columns` finds every such column)."""

    def __init__(self, message: str, column: str | None):
        super().__init__(message)
        self.column = column


# pyarrow names the row where it reads one block at a time (one thread: a one-core
# machine, or OMP_NUM_THREADS=1), and not where blocks are read side by side
_CONVERSION = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([^:]+): invalid value '(.*)'", re.S
)
_JSON_TYPE_ERROR = re.compile(r"JSON parse error: (Column\(.*\) changed from|unexpected field)|Failed to convert JSON to")


def _raise_type_change(path: str, fmt: str, exc: BaseException, names: Sequence[str] | None) -> None:
    """Raise :class:`ColumnTypeChange` where pyarrow's ``exc`` says a value does not
    fit its column's type; return otherwise."""
    text = str(exc)
    if fmt == "csv":
        found = _CONVERSION.search(text)
        if found and names is not None and int(found.group(1)) < len(names):
            column, typed, value = names[int(found.group(1))], found.group(2), found.group(3)[:80]
            raise ColumnTypeChange(
                f"cannot read {path} as CSV: its column {column!r} holds {value!r} where the file's "
                f"first rows hold {typed} values", column,
            ) from None
        return
    if _JSON_TYPE_ERROR.search(text):
        raise ColumnTypeChange(f"cannot read {path} as JSON lines: {_one_line(exc)}", None) from None


def _json_as_text(path: str, text_columns: Sequence[str]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A JSONL file with ``text_columns`` read in Python (:func:`.lines.json_text_batches`);
    a value that does not fit its column's type: :class:`ColumnTypeChange`."""

    def checked(batches):
        try:
            yield from batches
        except JsonColumnType as exc:
            raise ColumnTypeChange(f"cannot read {path} as JSON lines: {exc}", exc.column) from None

    try:
        schema, batches = json_text_batches(lambda: open_binary(path), tuple(text_columns))
    except JsonColumnType as exc:
        raise ColumnTypeChange(f"cannot read {path} as JSON lines: {exc}", exc.column) from None
    return schema, checked(batches)


def typed_files(files: Sequence[SourceFile], as_written: Sequence[str] = ()) -> list[SourceFile]:
    """The files, each CSV and JSONL file with the columns it must read as text.

    pyarrow types a CSV's columns by the file's first block (1 MB), a JSONL file's by
    their first values, and stops at a value of another kind (a word in a column of
    numbers), losing the file. So each such file is read once here, and where that
    stops on a type, the columns whose values do not fit one type are found in one more
    reading (:func:`_csv_text_columns`, :func:`.lines.json_text_columns`) and read as
    text in every pass (a JSONL file then in Python, :func:`.lines.json_text_batches`):
    every batch of the file has the same columns, and the scan checks the values row by
    row (a table's column of numbers: ``not_a_number``). A file that still stops on a
    type is read again with that column as text, until none does. A CSV file's dialect
    is told here too (:func:`.lines.csv_dialect`); ``as_written`` names the columns whose
    text is never rewritten as numbers (:func:`_decimal_points`: the id and the label).
    """
    out = []
    for src in files:
        if src.format in ("csv", "jsonl") and _blank(src.path, src.format):
            out.append(dataclasses.replace(src, blank=True))
            continue
        if src.format == "csv":
            dialect = dataclasses.replace(_dialect_of(src.path), as_written=tuple(as_written))
            src = dataclasses.replace(src, dialect=dialect)
        text: tuple[str, ...] = src.text_columns
        searched = False
        while src.format in ("csv", "jsonl"):
            try:
                # only whether the file reads matters here: its numbers need no rewriting
                for _ in _raw_text_batches(src.path, src.format, text, src.dialect):
                    pass
                break
            except ColumnTypeChange as exc:
                found: tuple[str, ...] = () if exc.column is None else (exc.column,)
                if not searched:
                    searched = True
                    found += _text_columns(src, text)
                new = tuple(c for c in dict.fromkeys(found) if c not in text)
                if not new:
                    raise exc from None
                text += new
            except SourceError:
                raise
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise SourceError(f"cannot read {src.path} as {_AS[src.format]}: {_one_line(exc)}") from None
        out.append(dataclasses.replace(src, text_columns=text))
    return out


def _dialect_of(path: str) -> CsvDialect:
    """The CSV file's separator and decimal point (:func:`.lines.csv_dialect`)."""
    try:
        return csv_dialect(lambda: open_binary(path))
    except SourceError:
        raise
    except (pa.ArrowException, OSError, ValueError, csv.Error) as exc:
        raise SourceError(f"cannot read {path} as CSV: {_one_line(exc)}") from None


def _text_columns(src: SourceFile, known: tuple[str, ...]) -> tuple[str, ...]:
    """The columns of a file whose values do not all fit the type of their first rows,
    in one reading (empty where that reading fails: the caller finds them one by one)."""
    try:
        if src.format == "jsonl":
            return json_text_columns(lambda: open_binary(src.path))
        return _csv_text_columns(src.path, known, src.dialect)
    except Exception:  # an unreadable line the reading does not set aside
        return ()


def _csv_text_columns(path: str, known: tuple[str, ...], dialect: CsvDialect = CsvDialect()) -> tuple[str, ...]:
    """Read the CSV with every column as text, and cast each column pyarrow typed from
    the first block to that type, batch by batch: the columns that do not cast."""
    typed = _open_text("csv", open_binary(path), known, dialect).schema
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in typed.names}, strings_can_be_null=True)
    reader = pacsv.open_csv(open_binary(path), parse_options=_csv_parse(dialect), convert_options=convert)
    left = {f.name: f.type for f in typed if not pa.types.is_string(f.type) and not pa.types.is_null(f.type)}
    text: list[str] = []
    for batch in reader:
        batch = _decimal_points(batch, dialect) if dialect.decimal_point == "," else batch
        for name, t in list(left.items()):
            try:
                batch.column(name).cast(t)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                text.append(name)
                del left[name]
    return tuple(text)
def file_schema(src: SourceFile) -> pa.Schema:
    """The file's schema, reading as little as the format allows (a CSV or JSONL file
    with unreadable lines: the schema of its other rows)."""
    if src.format == "parquet":
        return _parquet_file(src.path).schema_arrow
    if src.format == IMAGE_FOLDER:
        return folders.SCHEMA
    return _text_schema(src)


def plan_units(files: Sequence[SourceFile], unit_rows: int = UNIT_ROWS) -> list[ReadUnit]:
    """Split files into read units (runs of Parquet row groups, or whole files)."""
    units: list[ReadUnit] = []
    for src in files:
        if src.format == IMAGE_FOLDER:
            for i, first in enumerate(range(0, max(src.rows or 0, 1), folders.UNIT_ROWS)):
                rows = min(folders.UNIT_ROWS, (src.rows or 0) - first)
                units.append(ReadUnit(src.index, i, src.path, src.format, None, first, rows,
                                      listing=src.listing, other_files=src.other_files, id_prefix=src.id_prefix))
            continue
        if src.format != "parquet":
            units.append(ReadUnit(src.index, 0, src.path, src.format, None, 0, None,
                                  src.text_columns, src.dialect, src.blank))
            continue
        meta = _parquet_file(src.path).metadata
        groups: list[tuple[list[int], int, int]] = []  # (row groups, first row, rows)
        row = 0
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            if not groups or groups[-1][2] + n > unit_rows:
                groups.append(([], row, 0))
            rgs, first, rows = groups[-1]
            rgs.append(rg)
            groups[-1] = (rgs, first, rows + n)
            row += n
        for i, (rgs, first, rows) in enumerate(groups):
            units.append(ReadUnit(src.index, i, src.path, src.format, tuple(rgs), first, rows))
    return units


def read_unit(
    unit: ReadUnit, columns: Sequence[str] | None, batch_rows: int
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Yield ``(batch, row number of its first row in the file)``.

    ``columns`` limits what Parquet reads; CSV and JSONL are parsed whole.
    """
    row = unit.first_row
    if unit.blank:
        return
    try:
        if unit.format == IMAGE_FOLDER:
            for batch in folders.folder_batches(unit.path, unit.listing, unit.first_row, unit.rows or 0, batch_rows,
                                                unit.id_prefix):
                yield batch, row
                row += batch.num_rows
            return
        if unit.format == "parquet":
            pf = _parquet_file(unit.path)
            present = set(pf.schema_arrow.names)
            cols = None if columns is None else [c for c in columns if c in present]
            batches = pf.iter_batches(batch_size=batch_rows, row_groups=list(unit.row_groups), columns=cols)
            for batch in read_ahead(batches):
                yield batch, row
                row += batch.num_rows
            return
        for batch in _text_batches(unit.path, unit.format, unit.text_columns, unit.dialect):
            for start in range(0, batch.num_rows, batch_rows):
                piece = batch.slice(start, batch_rows)
                yield piece, row
                row += piece.num_rows
    except SourceError:
        raise
    except FolderError as exc:
        raise SourceError(str(exc)) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SourceError(f"{unit.path}: cannot read rows after row {row}: {_one_line(exc)}") from None


def _text_batches(
    path: str, fmt: str, text_columns: Sequence[str] = (), dialect: CsvDialect = CsvDialect()
) -> Iterator[pa.RecordBatch]:
    """A CSV or JSONL file's batches, a CSV's values split and its numbers read as
    ``dialect`` says (:func:`_raw_text_batches`), and, where its decimal point is the
    comma, the numbers its text columns write so written with a point
    (:func:`_decimal_points`)."""
    batches = _raw_text_batches(path, fmt, text_columns, dialect)
    if fmt != "csv" or dialect.decimal_point == ".":
        yield from batches
        return
    for batch in batches:
        yield _decimal_points(batch, dialect)


def _decimal_points(batch: pa.RecordBatch, dialect: CsvDialect) -> pa.RecordBatch:
    """The batch of a file whose decimal point is the comma, with each text value that is
    a number written so written with a point ("0,5" -> "0.5", "1.234,5" -> "1234.5"), as
    pyarrow reads the columns it types as numbers: a column of numbers read as text (a
    word among them, or numbers written both ways) then holds numbers the table encoder
    reads as such. "1.234", which may be either, stays as written; so do the columns
    ``dialect.as_written`` (the id and the label)."""
    columns = list(batch.columns)
    for i, field in enumerate(batch.schema):
        if field.name == UNREADABLE or field.name in dialect.as_written or not pa.types.is_string(field.type):
            continue
        col = columns[i]
        for pattern, old, new in ((GROUPED_POINTS, ".", ""), (DECIMAL_COMMA, ",", ".")):
            hit = pc.match_substring_regex(col, pattern)
            if pc.any(hit).as_py():
                col = pc.if_else(hit, pc.replace_substring(col, old, new), col)
        columns[i] = col
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _raw_text_batches(
    path: str, fmt: str, text_columns: Sequence[str] = (), dialect: CsvDialect = CsvDialect()
) -> Iterator[pa.RecordBatch]:
    """A CSV or JSONL file's batches (a CSV's ``text_columns`` read as strings). Where
    pyarrow stops at a line it cannot parse, the file is read again around its
    unreadable lines (:mod:`.lines`), and the rows already yielded are skipped there:
    they come first in both readings, the same rows. Where it stops at a CSV value that
    does not fit its column's type: :class:`ColumnTypeChange` (:func:`typed_files`).

    pyarrow reads a CSV quote left open (a line cut short inside a quoted value) as a
    value that runs on, line breaks and all, to the end of the file, without an error:
    the file's last value. So the last batch is held back, and where its last row holds
    a line break in a value the file is checked record by record; where that finds
    unreadable lines, the file is read around them as above.
    """
    if fmt == "jsonl" and text_columns:
        yield from _json_as_text(path, text_columns)[1]
        return
    done = 0
    held = None
    names = None
    try:
        reader = _open_text(fmt, open_binary(path), text_columns, dialect)
        names = reader.schema.names
        for batch in reader:
            if held is not None:
                yield held
                done += held.num_rows
            held = batch
        spanning = fmt == "csv" and held is not None and _ends_spanning_lines(held)
        found = _tolerant(path, fmt, None, text_columns, dialect) if spanning else None
        if found is None:
            if held is not None:
                yield held
            return
    except SourceError:
        raise
    except pa.ArrowInvalid as exc:
        if fmt == "csv":  # JSON: pyarrow may name a type where a line is cut short (see _tolerant)
            _raise_type_change(path, fmt, exc, names)
        found = _tolerant(path, fmt, exc, text_columns, dialect)
    except Exception as exc:
        raise SourceError(f"cannot read {path} as {_AS[fmt]}: {_one_line(exc)}") from None
    schema, batches = found
    try:
        for batch in batches:
            if done >= batch.num_rows:
                done -= batch.num_rows
                continue
            yield batch.slice(done) if done else batch
            done = 0
    except pa.ArrowInvalid as exc:
        _raise_type_change(path, fmt, exc, schema.names)
        raise


def _ends_spanning_lines(batch: pa.RecordBatch) -> bool:
    """Whether a value of the batch's last row holds a line break."""
    if batch.num_rows == 0:
        return False
    last = batch.slice(batch.num_rows - 1)
    return any(
        pc.any(pc.match_substring_regex(col, "[\\r\\n]")).as_py()
        for col in last.columns
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    )


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def read_ahead(items: Iterator, depth: int = 1) -> Iterator:
    """Yield what ``items`` yields, produced by a background thread at most ``depth``
    items ahead of the caller.

    Parquet decodes without holding the interpreter lock, so the next batch is read on
    one core while the caller works on this one on the other. What ``items`` raises is
    raised here, at the same point of the sequence. If the caller stops early the
    thread stops too (after the item it is producing).

    While the thread reads, the caller's BLAS calls use one thread fewer than the cores
    (at least one): left at one per core, a covariance product and the decoding share
    the cores and both slow (a 1M x 256 spectral scan on two cores took 16.3 s on
    average instead of 15.0 s, three runs each in turn).
    """
    ready: queue.SimpleQueue = queue.SimpleQueue()
    slots = threading.Semaphore(depth)  # items produced and not yet taken by the caller
    stop = threading.Event()

    def produce() -> None:
        try:
            it = iter(items)
            while True:
                while not slots.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    item = next(it)
                except StopIteration:
                    ready.put(_END)
                    return
                ready.put(item)
        except BaseException as exc:  # handed to the caller, raised in its thread
            ready.put(_Failed(exc))

    thread = threading.Thread(target=produce, name="poisonscan-read-ahead", daemon=True)
    _BESIDE_READERS.enter()
    try:
        thread.start()
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            slots.release()  # the thread may produce the next item while this one is used
            yield item
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        _BESIDE_READERS.leave()


class _ComputeBesideReaders:
    """One BLAS thread fewer than the cores (at least one) while any read-ahead thread
    of this process reads; the limit set by the first reader, restored by the last (the
    limit is process-wide, and pass 0 may read in another thread)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._readers = 0
        self._limits = None

    def enter(self) -> None:
        with self._lock:
            if self._readers == 0:
                # scikit-learn's dependency; a no-op where no BLAS is loaded
                from threadpoolctl import threadpool_limits

                self._limits = threadpool_limits(limits=max(1, usable_cores() - 1), user_api="blas")
            self._readers += 1

    def leave(self) -> None:
        with self._lock:
            self._readers -= 1
            if self._readers == 0 and self._limits is not None:
                self._limits.restore_original_limits()
                self._limits = None


_BESIDE_READERS = _ComputeBesideReaders()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:500]


def table_batches(table: pa.Table, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    """An in-memory table as ``(batch, first row)`` pairs (the in-memory API's source)."""
    row = 0
    for batch in table.to_batches(max_chunksize=batch_rows):
        if batch.num_rows:
            yield batch, row
            row += batch.num_rows


__all__ = [
    "ReadUnit",
    "SourceError",
    "SourceFile",
    "UNREADABLE",
    "decode_position",
    "encode_position",
    "expand_sources",
    "file_schema",
    "format_of",
    "is_local",
    "plan_units",
    "read_unit",
    "table_batches",
    "typed_files",
]
