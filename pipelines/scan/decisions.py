"""A reviewer's decisions on quarantined rows: read, checked against the scan, applied,
and remembered by the scans that follow.

The report's decisions file (``poisonscan-decisions.csv``) has one row per quarantined
row the page listed: the id, label, score, the decision (``confirmed``: poison, drop it;
``released``: keep it; ``pending``: not decided, stays quarantined), the reviewer, the
time of the decision, a note, and the scan's fingerprint. :func:`read_decisions` checks
it against the scan it claims to be for; :func:`released_ids` says which quarantined
rows go back into the clean split.

``poisonscan apply`` records the decisions in ``decisions.parquet`` with each row's
content fingerprint (the ``content`` column of quarantine.parquet). A later scan given
those files (:func:`read_remembered`) carries them forward (:class:`Remembered`): a
released row, found again under its id with the same content and label, is not
quarantined again; a confirmed row is rejected (``confirmed_poison``) wherever its
content comes back with the same label, under any id where the content identifies a row
(vectors, images, texts whose repeats are improbable by chance), under its own id where
it does not (a table whose rows coincide by chance: another passenger with the same
values is not the confirmed row).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from poisonscan.pipelines.io.lines import csv_dialect
from poisonscan.pipelines.io.outputs import FORMULA_START
from poisonscan.pipelines.scan.values import plain

DECISIONS = ("confirmed", "released", "pending")

#: what ``poisonscan apply`` writes beside the final clean split
DECISIONS_FILE = "decisions.parquet"

#: a field the page (and quarantine.csv) wrote after a "'": one that starts with a
#: spreadsheet formula's first character or with "'" (:data:`..io.outputs.FORMULA_START`)
_FORMULA = re.compile(FORMULA_START)


class DecisionsError(ValueError):
    """A decisions file that cannot be applied to this scan (one line, what and where)."""


def scan_fingerprint(summary: dict, quarantine: pa.Table) -> str:
    """The scan a review belongs to: its inputs, rows read and quarantined ids (the
    report keys its stored decisions by it and writes it into the decisions file)."""
    h = hashlib.sha256()
    h.update(json.dumps(summary.get("inputs", []), default=str).encode())
    h.update(str(summary.get("rows_read")).encode())
    for v in quarantine.column("id").to_pylist()[:1000] if quarantine.num_rows else []:
        h.update(str(v).encode() + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    id: str
    label: str
    decision: str
    reviewer: str
    time: str
    note: str


def read_decisions(text: str, where: str, quarantine: pa.Table, fingerprint: str, id_column: str = "id") -> list[Decision]:
    """The decisions of ``text`` (a decisions CSV read from ``where``), one per
    quarantined id it names, after checking that they belong to this scan.

    Raises :class:`DecisionsError` for a file of another scan, a missing column, an
    unknown decision, an id that is not quarantined in this scan, or an id decided twice.
    """
    text = text.lstrip("\ufeff")
    # a spreadsheet in much of the world saves the file with semicolons
    delimiter = csv_dialect(lambda: io.BytesIO(text.encode("utf-8", "surrogateescape"))).delimiter
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows:
        raise DecisionsError(f"{where}: empty (the report's 'download decisions' writes a header and a row per listed row)")
    header = [h.strip() for h in rows[0]]
    missing = [name for name in (id_column, "decision", "scan") if name not in header]
    if "scan" in missing and len(missing) == 1:
        raise DecisionsError(f"{where}: no scan column, so it cannot be told which scan it is for "
                             "(download the decisions again from this scan's report)")
    if missing:
        raise DecisionsError(f"{where}: no {', '.join(missing)} column (columns: {', '.join(header)})")
    at = {name: header.index(name) for name in header}
    known = {str(v) for v in quarantine.column("id").to_pylist()} if quarantine.num_rows else set()
    seen: dict[str, int] = {}
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue

        def cell(name, row=row):
            i = at.get(name)
            return row[i] if i is not None and i < len(row) else ""

        if at["scan"] >= len(row):  # the page writes the scan last: a line that ends early lost it
            raise DecisionsError(f"{where} line {line}: {len(row)} fields where the header names {len(header)}, "
                                 "and no scan (a line cut short; download the decisions again from the report)")
        scan = cell("scan").strip()
        if scan != fingerprint:
            raise DecisionsError(f"{where} line {line}: decisions for scan {scan or '(none)'}, "
                                 f"this scan is {fingerprint}: decisions from another scan")
        decision = cell("decision").strip()
        if decision not in DECISIONS:
            raise DecisionsError(f"{where} line {line}: decision {decision!r} is not one of {', '.join(DECISIONS)}")
        row_id = _id(cell(id_column), known)
        if row_id is None:
            raise DecisionsError(f"{where} line {line}: id {cell(id_column)!r} is not quarantined in this scan")
        if row_id in seen:
            raise DecisionsError(f"{where} line {line}: id {row_id!r} is decided twice (line {seen[row_id]} too)")
        seen[row_id] = line
        out.append(Decision(row_id, _text(cell("label")), decision, _text(cell("reviewer").strip()),
                            cell("time").strip(), _text(cell("note"))))
    return out


def _id(value: str, known: set) -> str | None:
    """The quarantined id a CSV field stands for (undoing the page's "'" before a
    formula-like value), or None. A field as a version before "'" was doubled wrote
    it (an id "'x" as itself) is found as it stands."""
    for v in (_text(value), value):
        if v in known:
            return v
    return None


def _text(value: str) -> str:
    return value[1:] if value.startswith("'") and _FORMULA.match(value[1:]) else value


def released_ids(decisions: list[Decision]) -> set[str]:
    return {d.id for d in decisions if d.decision == "released"}


def decisions_table(decisions: list[Decision], fingerprint: str, quarantine: pa.Table) -> pa.Table:
    """decisions.parquet: one row per decision, with the row's label and content
    fingerprint as the scan read them (from ``quarantine``) and the scan's fingerprint."""
    content = (quarantine.column("content").to_pylist() if "content" in quarantine.column_names
               else [""] * quarantine.num_rows)
    # every decision's id is quarantined in this scan (read_decisions checks it)
    rows = {str(i): (label_text(label), c or "") for i, label, c in
            zip(quarantine.column("id").to_pylist(), quarantine.column("label").to_pylist(), content)}
    cols = {
        "id": [d.id for d in decisions],
        "label": [rows[d.id][0] for d in decisions],
        "decision": [d.decision for d in decisions],
        "reviewer": [d.reviewer for d in decisions],
        "time": [d.time for d in decisions],
        "note": [d.note for d in decisions],
        "content": [rows[d.id][1] for d in decisions],
        "scan": [fingerprint] * len(decisions),
    }
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


# remembered decisions ---------------------------------------------------------------------
def label_text(value: Any) -> str:
    """An id or label as decisions files hold it: 7 -> "7", "cat" -> "cat"."""
    return str(plain(value))


def content_text(hi: int, lo: int) -> str:
    """A row's 128-bit content fingerprint as 32 hex digits (quarantine.parquet's
    ``content``)."""
    return f"{int(hi):016x}{int(lo):016x}"


def _content_key(text: str) -> tuple[int, int] | None:
    if len(text) != 32:
        return None
    try:
        return int(text[:16], 16), int(text[16:], 16)
    except ValueError:
        return None


@dataclass(frozen=True)
class Remembered:
    """Earlier decisions a scan carries forward (the latest per row and decision kind
    is kept: a row released one day and confirmed the next is confirmed).

    ``released`` and ``confirmed`` map a content fingerprint (hi, lo) to
    ``{(id text, label text): (reviewer, time)}``. ``audit`` is summary.json's record
    of them: files, counts, reviewers, scans.
    """

    released: Mapping[tuple[int, int], Mapping[tuple[str, str], tuple[str, str]]] = field(default_factory=dict)
    confirmed: Mapping[tuple[int, int], Mapping[tuple[str, str], tuple[str, str]]] = field(default_factory=dict)
    audit: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # built once, not per batch: the confirmed fingerprints' high words, the released ids
        object.__setattr__(self, "_confirmed_hi",
                           np.fromiter((k[0] for k in self.confirmed), dtype=np.uint64, count=len(self.confirmed)))
        ids = sorted({row_id for rows in self.released.values() for row_id, _ in rows})
        object.__setattr__(self, "_released_ids", pa.array(ids, pa.string()))

    def confirmed_among(self, hi: np.ndarray, lo: np.ndarray) -> list[tuple[int, Mapping]]:
        """(index, confirmed rows) of the content fingerprints among ``hi, lo`` that a
        reviewer confirmed as poison."""
        if not self.confirmed or len(hi) == 0:
            return []
        out = []
        for j in np.flatnonzero(np.isin(hi, self._confirmed_hi)):
            hit = self.confirmed.get((int(hi[j]), int(lo[j])))
            if hit is not None:
                out.append((int(j), hit))
        return out

    @property
    def released_ids(self) -> pa.Array:
        """The ids of the released rows, as text (sorted)."""
        return self._released_ids


_REMEMBERED_COLUMNS = ("id", "label", "decision", "reviewer", "time", "content", "scan")


def decisions_files(path: str) -> list[str]:
    """The decisions files ``path`` names: a decisions.parquet, or every one in a
    folder and its subfolders (a team's scans, one folder a day), in path order."""
    from poisonscan.pipelines.io.outputs import exists, find_named, is_local_folder

    there = exists(path)
    if there and not is_local_folder(path):
        if path.lower().endswith((".csv", ".csv.gz")):
            raise DecisionsError(
                f"{path}: a decisions CSV from the report; apply it first (poisonscan apply SCAN_DIR "
                f"--decisions {path.rstrip('/').rsplit('/', 1)[-1]}) and give the {DECISIONS_FILE} it writes, "
                "which holds each row's content fingerprint"
            )
        return [path]
    found = find_named(path, DECISIONS_FILE)  # a folder (or, on object stores, a prefix)
    if not found:
        raise DecisionsError(f"{path}: no {DECISIONS_FILE} in the folder or below it "
                             "(poisonscan apply writes one beside each scan's outputs)" if there else f"{path} not found")
    return found


def remembered_from(decisions: Any) -> Remembered | None:
    """Earlier decisions as a scan takes them: None, a :class:`Remembered`, or a path
    (:func:`read_remembered`)."""
    if decisions is None or isinstance(decisions, Remembered):
        return decisions
    if not isinstance(decisions, (str, os.PathLike)):
        raise TypeError(f"decisions must be a path or Remembered; got {type(decisions).__name__}")
    return read_remembered(os.fspath(decisions))


def read_remembered(path: str) -> Remembered:
    """The decisions of the decisions files ``path`` names (:func:`decisions_files`),
    latest first per row. Raises :class:`DecisionsError`."""
    from poisonscan.pipelines.io.outputs import open_read_parquet

    files = decisions_files(path)
    rows = []
    for order, name in enumerate(files):
        try:
            with open_read_parquet(name) as f:
                table = pq.read_table(f)
        except (OSError, pa.ArrowException) as exc:
            raise DecisionsError(f"{name}: cannot read it as Parquet: {str(exc).splitlines()[0]}") from None
        missing = [c for c in _REMEMBERED_COLUMNS if c not in table.column_names]
        if missing:
            raise DecisionsError(f"{name}: not a decisions file of poisonscan apply (no {', '.join(missing)} column)")
        for line, r in enumerate(table.select(list(_REMEMBERED_COLUMNS)).to_pylist(), start=1):
            if r["decision"] not in DECISIONS:
                raise DecisionsError(f"{name} row {line}: decision {r['decision']!r} is not one of {', '.join(DECISIONS)}")
            key = _content_key(r["content"] or "")
            if key is None:
                raise DecisionsError(f"{name} row {line}: no content fingerprint for id {r['id']!r} "
                                     "(apply the decisions again to its scan with this version)")
            rows.append((r["time"] or "", order, line, key, r))
    latest: dict = {}
    for _, _, _, key, r in sorted(rows, key=lambda t: t[:3]):  # by time, then file and row order
        if r["decision"] != "pending":  # a pending decision leaves an earlier one standing
            latest[(key, r["id"], r["label"])] = r
    released: dict = {}
    confirmed: dict = {}
    for (key, row_id, label), r in sorted(latest.items(), key=lambda t: t[0]):
        table = released if r["decision"] == "released" else confirmed
        table.setdefault(key, {})[(row_id, label)] = (r["reviewer"] or "", r["time"] or "")
    counts = Counter(r["decision"] for *_, r in rows)
    audit = {
        "files": files,
        "decisions": len(rows),
        "confirmed": counts["confirmed"],
        "released": counts["released"],
        "pending": counts["pending"],
        "rows_confirmed": sum(len(v) for v in confirmed.values()),
        "rows_released": sum(len(v) for v in released.values()),
        "reviewers": sorted({r["reviewer"] for *_, r in rows if r["reviewer"]}),
        "scans": sorted({r["scan"] for *_, r in rows if r["scan"]}),
    }
    return Remembered(released, confirmed, audit)
