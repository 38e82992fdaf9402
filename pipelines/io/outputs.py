"""Writing the scan's outputs atomically.

Everything is written under a temporary folder inside the output directory; only when
the whole pipeline has succeeded is each file moved into place (``summary.json`` last,
so its presence marks a complete set). A failed run removes its temporary folder and
leaves the directory as it was: no half-written list.

Local paths use the operating system directly; other schemes go through Beam's
filesystems.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import uuid
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from poisonscan.pipelines.io.parts import PartStore

OUTPUT_FILES = (
    "expectations",
    "quarantine.parquet",
    "quarantine.csv",
    "rejected.parquet",
    "clean.parquet",
    "review.parquet",
    "review.json",
    "report.html",
    "state.pkl",
    "proxy.pt",
    "decisions.parquet",
    "summary.json",
)


def is_local(path: str) -> bool:
    """Whether ``path`` is on this machine: no scheme, or ``file://``."""
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    """A local path as the operating system takes it (without ``file://``)."""
    return path[len("file://") :] if path.startswith("file://") else path


def join(base: str, *names: str) -> str:
    if is_local(base):
        return os.path.join(local_path(base), *names)
    return "/".join([base.rstrip("/"), *names])


def folder_of(path: str) -> str:
    """The folder holding the file ``path``: absolute for a local path, the part before
    the last ``/`` for another filesystem's (``gs://bucket/data/train.csv`` ->
    ``gs://bucket/data``)."""
    if is_local(path):
        return os.path.dirname(os.path.abspath(local_path(path)))
    return path.rsplit("/", 1)[0]


def is_absolute(path: str) -> bool:
    """Whether ``path`` names a file without a folder to start from: a URL of a
    filesystem (``gs://``, ``file://``) or an absolute local path."""
    return "://" in path or os.path.isabs(path)


def open_write(path: str):
    if is_local(path):
        path = local_path(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "wb")
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.create(path)


def open_read(path: str):
    if is_local(path):
        return open(local_path(path), "rb")
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path)


def open_read_parquet(path: str):
    """A file to read Parquet from: pyarrow's own for a local path, else Beam's.

    pyarrow reading Parquet through a Python file object (``open``) leaves read threads
    that can outlive it: a process that exits soon after aborted ("terminate called
    without an active exception", exit 134) in about a third of runs of a failing
    ``poisonscan apply``; through pyarrow's file, never in 20."""
    if is_local(path):
        return pa.OSFile(local_path(path), "rb")
    return open_read(path)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(local_path(path))
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def list_files(folder: str, suffix: str) -> list[str]:
    if is_local(folder):
        if not os.path.isdir(folder):
            return []
        return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(suffix))
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystems import FileSystems

    (res,) = FileSystems.match([join(folder, "*" + suffix)])
    return sorted(m.path for m in res.metadata_list)


def is_local_folder(path: str) -> bool:
    """Whether ``path`` is a folder on this machine's filesystem."""
    return is_local(path) and os.path.isdir(local_path(path))


def find_named(folder: str, name: str) -> list[str]:
    """The files called ``name`` (any file for "") in ``folder`` and below it, sorted;
    hidden folders (a scan's staging folder) are passed over."""
    if is_local(folder):
        found = []
        for root, dirs, files in os.walk(local_path(folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in files if not name or f == name]
        return sorted(found)
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystems import FileSystems

    (res,) = FileSystems.match([folder.rstrip("/") + "/**" + name])
    found = [m.path for m in res.metadata_list if not name or m.path.rsplit("/", 1)[-1] == name]
    return sorted(p for p in found if "/." not in p[len(folder):])


def remove_tree(path: str) -> None:
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
        return
    # Beam's filesystems: about 1 s to import; local paths never need them
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.delete([path.rstrip("/") + "/"])
    except Exception:
        pass


def write_parquet(table: pa.Table, path: str) -> None:
    with open_write(path) as f:
        pq.write_table(table, f)


def write_json(data: Any, path: str) -> None:
    with open_write(path) as f:
        f.write(json.dumps(json_safe(data), indent=2, default=_json_default, allow_nan=False).encode())
        f.write(b"\n")


def json_safe(value: Any) -> Any:
    """``value`` with every number JSON can hold: infinities and NaN become null (JSON
    has neither; two clusters of identical points are infinitely separated), numpy
    scalars and arrays plain Python."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return json_safe(sorted(value))
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value):
    # numbers, containers and sets were made plain by json_safe; anything else as text
    return str(value)


#: a text cell starting with one of these is a formula to a spreadsheet (=1+1, @SUM, a
#: tab or carriage return before one): it is written with a leading ' (OWASP's
#: advice for CSV injection), which spreadsheets show as text. A cell that starts with
#: ' itself gets one more, so that the file alone tells '=1 from =1 (one ' is dropped
#: from a cell that starts with ' and then one of these)
FORMULA_START = "^[=+\\-@\t\r']"


def csv_safe(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A text column with every formula-like cell prefixed by ``'``; others unchanged."""

    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return col
    formula = pc.fill_null(pc.match_substring_regex(col, FORMULA_START), False)
    return pc.if_else(formula, pc.binary_join_element_wise("'", col, ""), col)


def write_quarantine_csv(table: pa.Table, path: str) -> None:
    cols = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type):
            col = pa.array([";".join(v) for v in col.to_pylist()], pa.string())
        cols.append(csv_safe(col))
    flat = pa.Table.from_arrays(cols, names=table.column_names)
    with open_write(path) as f:
        pacsv.write_csv(flat, f)


TMP_PREFIX = ".poisonscan-tmp-"
OWNER_FILE = "owner"


def remove_abandoned(folder: str) -> list[str]:
    """Remove the staging folders in ``folder`` of runs that can no longer finish: their
    process (on this machine) is gone, as after SIGKILL. Folders of live runs, of other
    machines, or without an owner file are left alone. Returns the removed paths."""
    removed = []
    host = socket.gethostname()
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (name.startswith(TMP_PREFIX) and os.path.isdir(path)):
            continue
        try:
            with open(os.path.join(path, OWNER_FILE)) as f:
                owner_host, pid = f.read().split()
            pid = int(pid)
        except (OSError, ValueError):
            continue
        if owner_host != host or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


class FilePartStore(PartStore):
    """Pass-2 parts as Parquet files ``ROOT/KIND/KEY.parquet`` (one per read unit).

    A unit's parts are named by the unit, so a retried bundle overwrites its own files.
    """

    def __init__(self, root: str):
        self.root = root

    def _path(self, kind: str, key: str) -> str:
        return join(self.root, kind, f"{key}.parquet")

    def writer(self, kind: str, key: str) -> "PartWriter":
        return PartWriter(self._path(kind, key))

    def write(self, kind: str, key: str, table: pa.Table) -> None:
        w = self.writer(kind, key)
        w.write(table)
        w.close()

    def keys(self, kind: str) -> list[str]:
        paths = list_files(join(self.root, kind), ".parquet")
        return [p.replace("\\", "/").rsplit("/", 1)[-1][: -len(".parquet")] for p in paths]

    def read(self, kind: str, key: str) -> pa.Table:
        with open_read_parquet(self._path(kind, key)) as f:
            return pq.read_table(f)

    def schema(self, kind: str, key: str) -> pa.Schema:
        with open_read_parquet(self._path(kind, key)) as f:
            return pq.read_schema(f)

    def iter_tables(self, kind: str, key: str, batch_rows: int) -> Iterable[pa.Table]:
        with open_read_parquet(self._path(kind, key)) as f:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=batch_rows):
                yield pa.Table.from_batches([batch])


class PartWriter:
    """Streams tables of one schema into one Parquet file; nothing is created if empty."""

    def __init__(self, path: str):
        self.path = path
        self._file = None
        self._writer = None

    def write(self, table: pa.Table) -> None:
        if table is None or table.num_rows == 0:
            return
        if self._writer is None:
            self._file = open_write(self.path)
            self._writer = pq.ParquetWriter(self._file, table.schema)
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.close()
            self._writer = self._file = None


class OutputDir:
    """An output directory with a private temporary folder for one run."""

    def __init__(self, path: str, run_id: str | None = None):
        self.path = path
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.tmp = join(path, f"{TMP_PREFIX}{self.run_id}")
        self.created = False  # whether this run made the directory (removed again if it fails)

    def staged(self, name: str) -> str:
        return join(self.tmp, name)

    @property
    def local(self) -> bool:
        return is_local(self.path)

    @property
    def parts(self) -> FilePartStore:
        return FilePartStore(join(self.tmp, "parts"))

    def prepare(self) -> None:
        if is_local(self.path):
            target = local_path(self.path)
            if os.path.exists(target) and not os.path.isdir(target):
                raise FileExistsError(f"--out {self.path} exists and is not a directory")
            self.created = not os.path.exists(target)
            if not self.created:
                remove_abandoned(target)
            os.makedirs(local_path(self.tmp), exist_ok=True)
            with open(os.path.join(local_path(self.tmp), OWNER_FILE), "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}\n")

    def staged_outputs(self) -> list[str]:
        """The outputs (of :data:`OUTPUT_FILES`) the run has staged so far."""
        return [n for n in OUTPUT_FILES if exists(self.staged(n))]

    def commit(self, produced: Iterable[str], remove_stale: bool = True) -> None:
        """Move the staged files into place, summary.json last; remove stale outputs
        (the outputs of :data:`OUTPUT_FILES` not produced), unless ``remove_stale`` is
        False (a step that adds to a scan's outputs)."""
        produced = list(produced)
        order = [n for n in produced if n != "summary.json"] + (
            ["summary.json"] if "summary.json" in produced else []
        )
        if is_local(self.path):
            out = local_path(self.path)
            if "summary.json" in produced and os.path.exists(os.path.join(out, "summary.json")):
                os.remove(os.path.join(out, "summary.json"))  # the set is incomplete from here
            for name in OUTPUT_FILES if remove_stale else ():
                if name not in produced:
                    _remove(os.path.join(out, name))
            for name in order:
                target = os.path.join(out, name)
                if os.path.isdir(target):  # a folder cannot be replaced in one step
                    shutil.rmtree(target)
                os.replace(os.path.join(local_path(self.tmp), name), target)
        else:
            # Beam's filesystems: about 1 s to import; local paths never need them
            from apache_beam.io.filesystems import FileSystems

            stale = [join(self.path, n) for n in OUTPUT_FILES if n not in produced and remove_stale]
            existing = [p for p in stale if FileSystems.exists(p)]
            if existing:
                FileSystems.delete(existing)
            for name in order:
                dst = join(self.path, name)
                if FileSystems.exists(dst):
                    FileSystems.delete([dst])
                FileSystems.rename([join(self.tmp, name)], [dst])
        self.abort()

    def abort(self) -> None:
        """Remove the staging folder, and the directory itself if this run made it and
        nothing else is in it: a failed run leaves the directory as it found it."""
        remove_tree(self.tmp)
        if self.created and is_local(self.path):
            try:
                os.rmdir(local_path(self.path))
            except OSError:
                pass  # not empty (another run's files): left as it is
