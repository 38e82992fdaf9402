"""``poisonscan apply``: a reviewer's decisions applied to a finished scan.

The final clean split is the scan's inputs read again, in input order, less the rejected
rows and less the quarantined rows that were not released (confirmed ones are poison;
pending ones stay quarantined). It is written with the decisions themselves
(``decisions.parquet``) atomically, as a scan writes its outputs: into a staging folder,
then moved into place; the scan's other outputs are left as they are.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from poisonscan.pipelines.io.folders import IMAGE_FOLDER
from poisonscan.pipelines.io.outputs import (
    OutputDir,
    PartWriter,
    join,
    open_read,
    open_read_parquet,
    write_parquet,
)
from poisonscan.pipelines.io.sources import (
    SourceError,
    expand_sources,
    file_schema,
    inputs_in_folder,
    plan_units,
    read_unit,
    typed_files,
)
from poisonscan.pipelines.scan.cells import normalize_key
from poisonscan.pipelines.scan.decisions import (
    DECISIONS_FILE,
    DecisionsError,
    decisions_table,
    read_decisions,
    released_ids,
    scan_fingerprint,
)
from poisonscan.pipelines.scan.finish import conform, unified_schema

BATCH_ROWS = 65_536


class ApplyError(ValueError):
    """Decisions that cannot be applied (one line: what and where); nothing is written."""


def apply_decisions(scan_dir: str, decisions_path: str, out_dir: str | None = None) -> dict:
    """Write ``clean.parquet`` (the final split) and ``decisions.parquet`` to ``out_dir``
    (default: the scan's folder); returns the counts. Raises :class:`ApplyError`."""
    summary = _read_json(join(scan_dir, "summary.json"))
    quarantine = _read_parquet(join(scan_dir, "quarantine.parquet"), ["id", "label", "source_file", "source_row", "content"])
    rejected = _read_parquet(join(scan_dir, "rejected.parquet"), ["source_file", "source_row"])
    fingerprint = scan_fingerprint(summary, quarantine)
    id_column = (summary.get("settings") or {}).get("id_column") or "id"
    try:
        with open_read(decisions_path) as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise ApplyError(f"cannot read {decisions_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ApplyError(f"{decisions_path}: not UTF-8 text (the report writes the decisions as UTF-8 CSV)") from None
    try:
        decisions = read_decisions(text, decisions_path, quarantine, fingerprint, id_column)
    except DecisionsError as exc:
        raise ApplyError(str(exc)) from None
    released = released_ids(decisions)
    try:
        settings = summary.get("settings") or {}
        files = typed_files(expand_sources(summary.get("inputs") or [], formats=summary.get("input_formats")),
                            (id_column, settings.get("label_column") or "label"))
    except SourceError as exc:
        raise ApplyError(f"the scan's inputs cannot be read again: {exc}") from None
    _check_folders(files, summary)
    drop = _dropped(files, quarantine, rejected, released)
    held = _held(files, quarantine, released)
    schema = unified_schema([file_schema(f) for f in files])
    _refuse_inputs_in_out(files, out_dir or scan_dir)
    out = OutputDir(out_dir or scan_dir)
    try:
        out.prepare()
    except OSError as exc:
        raise ApplyError(f"cannot write to {out_dir or scan_dir}: {exc.strerror or exc}") from None
    try:
        rows = _write_clean(files, drop, schema, out.staged("clean.parquet"), held, id_column,
                            quarantine.column("id").type)
        expected = int(summary.get("rows_clean", 0)) + len(released)
        if rows != expected:
            raise ApplyError(
                f"the inputs changed since the scan: {rows:,} rows would be clean, the scan's "
                f"{summary.get('rows_clean', 0):,} clean rows and {len(released):,} released make {expected:,}"
            )
        write_parquet(decisions_table(decisions, fingerprint, quarantine), out.staged(DECISIONS_FILE))
        out.commit(["clean.parquet", DECISIONS_FILE], remove_stale=False)
    except BaseException:
        out.abort()
        raise
    counts = Counter(d.decision for d in decisions)
    return {
        "scan": fingerprint,
        "rows_clean": rows,
        "released": counts["released"],
        "confirmed": counts["confirmed"],
        "pending": counts["pending"],
        "still_quarantined": quarantine.num_rows - counts["released"],
        "reviewers": sorted({d.reviewer for d in decisions if d.reviewer}),
        "out": out.path,
    }


def _check_folders(files, summary: dict) -> None:
    """A folder of images lists the same files as when it was scanned: its rows are its
    files in sorted order, so one added, removed or renamed moves every row after it."""
    read_as = summary.get("inputs_read_as") or {}
    for f in files:
        scanned = (read_as.get(f.path) or {}).get("image_folder") or {}
        if f.format == IMAGE_FOLDER and scanned.get("listing") not in (None, f.listing):
            raise ApplyError(
                f"the folder of images {f.path} changed since the scan ({scanned.get('images', 0):,} images then, "
                f"{f.rows or 0:,} now, or some renamed): scan it again and review that scan"
            )


def _refuse_inputs_in_out(files, out_dir: str) -> None:
    """The final split written beside the inputs would be read as more input by the
    next scan of the same files (``data/*.parquet``): refused, as a scan refuses it."""
    inside = inputs_in_folder([f.path for f in files], out_dir)
    if inside:
        raise ApplyError(
            f"--out {out_dir} holds input files ({os.path.basename(inside[0])}"
            f"{f' and {len(inside) - 1} more' if len(inside) > 1 else ''}): a later scan of the same files "
            "would read the final clean split as more data; write to another folder"
        )


def _read_json(path: str) -> dict:
    try:
        with open_read(path) as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise ApplyError(f"{path} not found: give the output folder of a finished scan") from None
    except (OSError, ValueError) as exc:
        raise ApplyError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or "inputs" not in data or "rows_clean" not in data:
        raise ApplyError(f"{path}: not the summary of a scan")
    return data


def _read_parquet(path: str, columns: list[str]) -> pa.Table:
    """``columns`` of a scan's list; ``content`` only where it has one (a list written
    before content fingerprints were)."""
    try:
        with open_read_parquet(path) as f:
            names = pq.read_schema(f).names
            f.seek(0)
            return pq.read_table(f, columns=[c for c in columns if c in names or c != "content"])
    except FileNotFoundError:
        raise ApplyError(f"{path} not found: give the output folder of a finished scan") from None
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise ApplyError(f"{path}: cannot read: {exc}") from None


def _dropped(files, quarantine: pa.Table, rejected: pa.Table, released: set) -> dict[int, np.ndarray]:
    """Per file index, the rows that stay out of the clean split: rejected, and
    quarantined but not released."""
    index = {f.path: f.index for f in files}
    out: dict[int, list] = {}
    ids = [str(v) for v in quarantine.column("id").to_pylist()]
    for table, keep in ((rejected, None), (quarantine, released)):
        for i, (src, row) in enumerate(zip(table.column("source_file").to_pylist(), table.column("source_row").to_pylist())):
            if keep is not None and ids[i] in keep:
                continue
            if src not in index:
                raise ApplyError(f"the scan read {src}, which its inputs no longer match")
            out.setdefault(index[src], []).append(int(row))
    return {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in out.items()}


def _held(files, quarantine: pa.Table, released: set) -> dict:
    """The rows that stay quarantined (not released), as the scan read them:
    ``{file index: {row: id}}``, and under the key None the set of their ids."""
    index = {f.path: f.index for f in files}
    out: dict = {None: set()}
    cols = (quarantine.column(c).to_pylist() for c in ("id", "source_file", "source_row"))
    for v, src, row in zip(*cols):
        if str(v) in released:
            continue
        out.setdefault(index[src], {})[int(row)] = str(v)
        out[None].add(str(v))
    return out


def _check_ids(batch: pa.RecordBatch, positions: np.ndarray, keep: np.ndarray, held: dict, file_index: int,
               id_column: str, id_type: pa.DataType, path: str) -> None:
    """The rows the scan quarantined are where it read them, and no row the split keeps
    is one of them: the inputs were not reordered, nor rows swapped, since the scan
    (the row count alone would not tell)."""
    at = held.get(file_index, {})
    if not at and not held[None]:
        return
    if id_column not in batch.schema.names:
        raise ApplyError(f"the inputs changed since the scan: {path} has no id column {id_column!r}")
    keys = normalize_key(batch.column(id_column), id_type)
    ids = keys.to_pylist()
    for j in np.flatnonzero(np.isin(positions, np.fromiter(at, np.int64, len(at)))):
        row, want = int(positions[j]), at[int(positions[j])]
        if str(ids[j]) != want:
            raise ApplyError(
                f"the inputs changed since the scan: row {row} of {path} has id {ids[j]!r}, where the scan "
                f"quarantined id {want!r} (reordered or rewritten inputs; scan them again)"
            )
    if held[None]:
        text = pc.cast(keys, pa.string())
        again = pc.fill_null(pc.is_in(text, value_set=pa.array(sorted(held[None]), pa.string())), False)
        for j in np.flatnonzero(keep & again.to_numpy(zero_copy_only=False)):
            raise ApplyError(
                f"the inputs changed since the scan: row {int(positions[j])} of {path} has id {ids[j]!r}, which "
                "the scan quarantined elsewhere (reordered or rewritten inputs; scan them again)"
            )


def _write_clean(files, drop: dict, schema: pa.Schema | None, path: str, held: dict, id_column: str,
                 id_type: pa.DataType) -> int:
    writer = PartWriter(path)
    rows = 0
    try:
        for unit in plan_units(files):
            dropped = drop.get(unit.file_index, np.empty(0, np.int64))
            for batch, first in read_unit(unit, None, BATCH_ROWS):
                positions = first + np.arange(batch.num_rows, dtype=np.int64)
                keep = ~np.isin(positions, dropped)
                _check_ids(batch, positions, keep, held, unit.file_index, id_column, id_type, unit.path)
                table = pa.Table.from_batches([batch]).filter(pa.array(keep))
                if table.num_rows:
                    writer.write(conform(table, schema) if schema is not None else table)
                    rows += table.num_rows
    except SourceError as exc:
        raise ApplyError(f"the scan's inputs cannot be read again: {exc}") from None
    finally:
        writer.close()
    if rows == 0:
        write_parquet((schema or pa.schema([])).empty_table(), path)
    return rows
