"""A reviewer's decisions on quarantined rows: read, checked against the scan, applied.

The report's decisions file (``poisonscan-decisions.csv``) has one row per quarantined
row the page listed: the id, label, score, the decision (``confirmed``: poison, drop it;
``released``: keep it; ``pending``: not decided, stays quarantined), the reviewer, the
time of the decision, a note, and the scan's fingerprint. :func:`read_decisions` checks
it against the scan it claims to be for; :func:`applied` says which quarantined rows
go back into the clean split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass

import pyarrow as pa

DECISIONS = ("confirmed", "released", "pending")

#: what ``poisonscan apply`` writes beside the final clean split
DECISIONS_FILE = "decisions.parquet"

#: a spreadsheet formula's first characters; the page writes such a field after a "'"
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


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
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
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
        out.append(Decision(row_id, _text(cell("label")), decision, cell("reviewer").strip(),
                            cell("time").strip(), cell("note")))
    return out


def _id(value: str, known: set) -> str | None:
    """The quarantined id a CSV field stands for (undoing the page's "'" before a
    formula-like value), or None."""
    if value in known:
        return value
    if value.startswith("'") and value[1:].startswith(_FORMULA) and value[1:] in known:
        return value[1:]
    return None


def _text(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA) else value


def released_ids(decisions: list[Decision]) -> set[str]:
    return {d.id for d in decisions if d.decision == "released"}


def decisions_table(decisions: list[Decision], fingerprint: str) -> pa.Table:
    """decisions.parquet: one row per decision, with the scan's fingerprint."""
    cols = {
        "id": [d.id for d in decisions],
        "label": [d.label for d in decisions],
        "decision": [d.decision for d in decisions],
        "reviewer": [d.reviewer for d in decisions],
        "time": [d.time for d in decisions],
        "note": [d.note for d in decisions],
        "scan": [fingerprint] * len(decisions),
    }
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
