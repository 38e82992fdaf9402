"""The review report: one self-contained HTML page rendered from a scan's outputs.

Everything the page shows is read from the output directory (``summary.json``,
``quarantine.parquet``, ``rejected.parquet``, ``review.parquet``, ``review.json``), so
``poisonscan report DIR`` re-renders it without rescanning. The page has no external
resource: CSS, JavaScript, plots (SVG) and thumbnails (PNG data URIs) are inline, and a
Content-Security-Policy lets only the page's own script (by its hash) run.

Every value from the data is escaped: Jinja2 autoescapes the HTML, SVG text goes through
:func:`html.escape`, and the JSON the script reads is embedded so that it cannot close
its ``<script>`` element; the script writes data into the page with ``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from poisonscan.pipelines.io.outputs import exists, join, json_safe, open_read, open_read_parquet, open_write
from poisonscan.pipelines.report.charts import (
    balance_chart,
    fmt_class,
    fmt_num,
    fmt_pct,
    fmt_ratio,
    fmt_round,
    fmt_sci,
    histogram_chart,
    scatter_chart,
    vector_chart,
)
from poisonscan.pipelines.represent.encoders import word_spans
from poisonscan.pipelines.scan.decisions import DECISIONS_FILE, scan_fingerprint
from poisonscan.pipelines.scan.ranking import rank_classes

REPORT_FILE = "report.html"

REVIEW_TABLE = "review.parquet"

REVIEW_DATA = "review.json"

#: Quarantined rows listed in the page's table (all of them are in quarantine.csv).
TABLE_MAX = 20_000

#: Rejected rows listed (all of them are in rejected.parquet).
REJECTED_MAX = 200

#: Classes drawn with plots besides the poisoned ones.
CLEAN_CLASSES_DRAWN = 24

#: Classes listed in the ranking by how far each stands out (all are in summary.json).
RANKING_SHOWN = 20

_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


class ReportError(ValueError):
    """The directory does not hold a finished scan the report can be rendered from."""


@dataclass
class ScanOutputs:
    summary: dict
    quarantine: pa.Table
    rejected: pa.Table
    rejected_rows: int
    review: pa.Table
    review_data: dict
    data_docs: str | None
    #: the decisions ``poisonscan apply`` recorded in the folder (decisions.parquet), if any
    decisions: pa.Table | None = None


def _is_local_file(path: str) -> bool:
    return "://" not in path and os.path.isfile(path)


#: What every summary.json of a finished scan holds (the report reads them all)
_SUMMARY_KEYS = ("verdict", "rows_read", "rows_clean", "rows_quarantined", "rows_rejected", "classes", "inputs")


def load_outputs(folder: str, data_docs_pending: bool = False) -> ScanOutputs:
    """Read what the report needs from an output directory (or a run's staging folder).

    ``data_docs_pending``: the scan is rendering the Data Docs the summary names right
    now (and fails if that fails), so the link stands before their index exists.
    """
    if _is_local_file(folder):
        raise ReportError(f"{folder} is a file; give the folder a scan wrote (its --out)")
    try:
        with open_read(join(folder, "summary.json")) as f:
            summary = json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError):
        raise ReportError(f"{folder} holds no summary.json: not the output of a finished scan") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{join(folder, 'summary.json')} cannot be read: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(summary, dict) or not all(k in summary for k in _SUMMARY_KEYS):
        raise ReportError(f"{join(folder, 'summary.json')} is not a poisonscan summary")
    missing = [n for n in ("quarantine.parquet", "rejected.parquet", REVIEW_TABLE, REVIEW_DATA) if not exists(join(folder, n))]
    if missing:
        raise ReportError(
            f"{folder} lacks {', '.join(missing)}: scan it again with this version of poisonscan to review it"
        )
    try:
        with open_read(join(folder, REVIEW_DATA)) as f:
            review_data = json.loads(f.read())
        if not isinstance(review_data, dict):
            raise ValueError(f"{REVIEW_DATA} holds no review data")
        with open_read_parquet(join(folder, "quarantine.parquet")) as f:
            quarantine = pq.read_table(f)
        with open_read_parquet(join(folder, "rejected.parquet")) as f:
            pf = pq.ParquetFile(f)
            rejected_rows = pf.metadata.num_rows
            rejected = _head(pf, REJECTED_MAX)
        with open_read_parquet(join(folder, REVIEW_TABLE)) as f:
            review = pq.read_table(f)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ReportError(f"{folder}: the scan's outputs cannot be read ({' '.join(str(exc).split())[:200]})") from None
    docs = summary.get("expectations", {}).get("data_docs")
    if docs and (":" in docs or docs.startswith("/") or not (data_docs_pending or exists(join(folder, docs)))):
        docs = None  # only the Data Docs this scan wrote next to the report
    decisions = None
    if exists(join(folder, DECISIONS_FILE)):
        try:
            with open_read_parquet(join(folder, DECISIONS_FILE)) as f:
                decisions = pq.read_table(f)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ReportError(f"{join(folder, DECISIONS_FILE)} cannot be read ({' '.join(str(exc).split())[:200]})") from None
    return ScanOutputs(summary, quarantine, rejected, rejected_rows, review, review_data, docs, decisions)


def _head(pf: pq.ParquetFile, n: int) -> pa.Table:
    parts, rows = [], 0
    for batch in pf.iter_batches(batch_size=n):
        parts.append(batch)
        rows += batch.num_rows
        if rows >= n:
            break
    if not parts:
        return pf.schema_arrow.empty_table()
    return pa.Table.from_batches(parts).slice(0, n)


def write_report(folder: str, target: str | None = None, data_docs_pending: bool = False) -> str:
    """Render the report of the scan in ``folder`` to ``target`` (default:
    ``folder/report.html``); returns the path written. ``data_docs_pending``: see
    :func:`load_outputs`."""
    page = render(load_outputs(folder, data_docs_pending))
    target = target or join(folder, REPORT_FILE)
    if "://" not in target:
        if os.path.isdir(target):
            raise ReportError(f"--out {target} is a folder; give the file to write the page to")
        tmp = f"{target}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(page)
            os.replace(tmp, target)
        except OSError as exc:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise ReportError(f"cannot write {target}: {exc.strerror or exc}") from None
    else:
        with open_write(target) as f:
            f.write(page.encode("utf-8"))
    return target


# rendering ---------------------------------------------------------------------------
def render(outputs: ScanOutputs) -> str:
    """The report page for a scan's outputs."""

    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["pct"] = fmt_pct
    env.filters["label"] = fmt_class
    env.filters["sci"] = fmt_sci
    env.filters["ratio"] = fmt_ratio
    script = _read_template("report.js")
    css = _read_template("report.css")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    s = outputs.summary
    data = outputs.review_data
    classes = _classes(s, data)
    ranking, near_miss = _ranking(s)
    gallery = _gallery(outputs.review, data)
    table_rows = _table_rows(outputs.quarantine)
    fingerprint = scan_fingerprint(s, outputs.quarantine)
    applied = _applied(outputs.decisions, fingerprint)
    page_data = {
        "rows": table_rows,
        "rows_total": outputs.quarantine.num_rows,
        "storage_key": "poisonscan-decisions:" + fingerprint,
        "scan": fingerprint,
        "id_column": data.get("id_column", "id"),
        "applied": applied["rows"] if applied else {},
    }
    exp = s.get("expectations") or {}
    return env.get_template("report.html.j2").render(
        s=s,
        kind=data.get("kind"),
        input_columns=data.get("input_columns", []),
        classes=classes,
        ranking=ranking[:RANKING_SHOWN],
        ranking_total=len(ranking),
        ranking_fallback=sum(1 for r in ranking if r.get("basis") == "separation"),
        ranking_calibrated=sum(1 for r in ranking if r.get("basis") == "p-value"),
        near_miss=near_miss,
        balance_svg=Markup(balance_chart(s.get("classes", []))),
        gallery=gallery,
        gallery_info=data.get("gallery", {}),
        expectations=exp,
        failed_expectations=[r for r in exp.get("results", []) if not r.get("success")],
        data_docs=outputs.data_docs,
        rejected=_rejected_rows(outputs.rejected),
        rejected_rows=outputs.rejected_rows,
        rejected_shown=outputs.rejected.num_rows,
        table_max=TABLE_MAX,
        page_json=Markup(_script_json(page_data)),
        script=Markup(script),
        css=Markup(css),
        csp=f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
        "base-uri 'none'; form-action 'none'",
        applied=applied,
        settings_json=json.dumps(s.get("settings", {}), indent=1, default=str),
        versions=s.get("versions", {}),
    )


def _read_template(name: str) -> str:
    with open(os.path.join(_TEMPLATES, name), encoding="utf-8") as f:
        return f.read()


def _script_json(value: Any) -> str:
    """JSON that can sit inside a <script> element: no '<', '>' or '&' survive, so the
    data can never end the element or open a comment."""
    text = json.dumps(json_safe(value), ensure_ascii=True, allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _applied(decisions: pa.Table | None, fingerprint: str) -> dict | None:
    """The decisions applied to this scan (``poisonscan apply``): per id, as the page
    keeps them, and their counts and reviewers; None without any, or for another scan."""
    if decisions is None or not decisions.num_rows:
        return None
    rows = decisions.to_pylist()
    if any(r.get("scan") != fingerprint for r in rows):
        return None  # a decisions file left from an earlier scan into this folder
    counts = {d: sum(r["decision"] == d for r in rows) for d in ("confirmed", "released", "pending")}
    return {
        "rows": {str(r["id"]): {"d": r["decision"], "r": r.get("reviewer") or "", "t": r.get("time") or "",
                                "n": r.get("note") or ""} for r in rows},
        "counts": counts,
        "reviewers": sorted({r["reviewer"] for r in rows if r.get("reviewer")}),
        "total": len(rows),
    }


def _table_rows(q: pa.Table) -> list:
    if not q.num_rows:
        return []
    q = q.slice(0, TABLE_MAX)
    cols = [q.column(c).to_pylist() for c in ("id", "label", "score", "detectors", "reason", "source_file", "source_row")]
    return [
        [str(i), fmt_class(lab), fmt_round(sc), list(d or []), r or "", f or "", row]
        for i, lab, sc, d, r, f, row in zip(*cols)
    ]


def _rejected_rows(t: pa.Table) -> list[dict]:
    shown = [c for c in ("error_code", "expectation", "error", "source_file", "source_row") if c in t.column_names]
    rest = [c for c in t.column_names if c not in shown][:6]
    out = []
    for i in range(t.num_rows):
        row = {c: t.column(c)[i].as_py() for c in shown}
        row["values"] = {c: _short(t.column(c)[i].as_py()) for c in rest}
        out.append(row)
    return out


def _short(v: Any, n: int = 80) -> str:
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v):,} bytes>"
    text = "null" if v is None else str(v)
    return text if len(text) <= n else text[: n - 1] + "…"


# per class -----------------------------------------------------------------------------
def _ranking(summary: dict) -> tuple[list[dict], dict | None]:
    """The classes by how far each stands out, and the near miss: from summary.json, or
    computed from its verdicts for a scan written before the summary held them."""
    if "class_ranking" in summary:
        return summary["class_ranking"] or [], summary.get("near_miss")

    return rank_classes(summary.get("classes", []))


def _classes(summary: dict, data: dict) -> list[dict]:
    by_label = {json.dumps(c["label"]): c for c in summary.get("classes", [])}
    views = data.get("classes", [])
    poisoned = [v for v in views if v.get("poisoned")]
    clean = [v for v in views if not v.get("poisoned")]
    out = []
    for v in poisoned + clean[:CLEAN_CLASSES_DRAWN]:
        c = by_label.get(json.dumps(v["label"]), {})
        hists = [
            {**h, "svg": histogram_chart(h)} for h in v.get("histograms", [])
        ]
        out.append(
            {
                "label": v["label"],
                "poisoned": v.get("poisoned"),
                "summary": c,
                "histograms": hists,
                "projection_svg": scatter_chart(v.get("projection")) if v.get("projection") else None,
                "marked": sum(1 for m in (v.get("projection") or {}).get("mark", []) if m),
            }
        )
    return out


def _gallery(review: pa.Table, data: dict) -> list[dict]:
    """Gallery sections: per class, its groups of flagged rows, then contrast rows."""
    if not review.num_rows:
        return []
    rows = review.to_pylist()
    kind = data.get("kind")
    cards_by_class: dict = {}
    order: list = []
    for r in rows:
        key = json.dumps(r["label"], default=str)
        if key not in cards_by_class:
            cards_by_class[key] = {"label": r["label"], "groups": {}, "contrast": []}
            order.append(key)
        card = _card(r, kind)
        if r["role"] == "contrast":
            cards_by_class[key]["contrast"].append(card)
        else:
            cards_by_class[key]["groups"].setdefault(r["group"], []).append(card)
    counts = {
        (json.dumps(g["label"], default=str), g["group"]): g for g in data.get("gallery", {}).get("groups", [])
    }
    out = []
    for key in order:
        sec = cards_by_class[key]
        groups = []
        for name, cards in sec["groups"].items():
            info = counts.get((key, name), {})
            groups.append({"name": name, "cards": cards, "total": info.get("rows_quarantined", len(cards))})
        if groups:
            out.append({"label": sec["label"], "groups": groups, "contrast": sec["contrast"]})
    return out


def _card(r: dict, kind: str | None) -> dict:
    fields = json.loads(r["fields"]) if r.get("fields") else {}
    card = {
        "id": "" if r["id"] is None else str(r["id"]),
        "label": r["label"],
        "rank": r["rank"],
        "score": r["score"],
        "detectors": r["detectors"] or [],
        "reason": r["reason"],
        "source": f"{os.path.basename(r['source_file'])} row {r['source_row']}" if r.get("source_file") else None,
        "fields": fields,
        "image": None,
        "segments": None,
        "vector_svg": None,
        "marked_fields": marked_fields(fields, r.get("highlights") or []),
    }
    if r.get("thumbnail"):
        card["image"] = "data:image/png;base64," + base64.b64encode(r["thumbnail"]).decode()
    if r.get("text") is not None:
        card["segments"] = highlight_segments(r["text"], r.get("highlights") or [])
    if r.get("vector"):

        card["vector_svg"] = Markup(vector_chart(r["vector"]))
    return card


def marked_fields(fields: dict, highlights: Sequence[str]) -> set:
    """The table fields whose ``column=value`` a trigger detector named (a column name
    may itself hold "="; a shown value may be cut short with "…")."""
    out = set()
    for h in highlights:
        for col, shown in fields.items():
            if not h.startswith(f"{col}=") or not isinstance(shown, str):
                continue
            value = h[len(col) + 1 :]
            if shown == value or (shown.endswith("…") and value.startswith(shown[:-1])):
                out.add(col)
    return out


def highlight_segments(text: str, grams: Sequence[str]) -> list[tuple[str, bool]]:
    """``text`` split into (piece, highlighted) where the n-grams occur, matched as the
    text encoder reads words (:func:`word_spans`: case-insensitive, any separator
    between words, each character a word in scripts written without spaces)."""
    tokens = word_spans(text)
    words = [w for _, _, w in tokens]
    spans = []
    for gram in grams:
        parts = gram.split(" ")
        if not parts or not all(parts):
            continue
        k = len(parts)
        spans += [(tokens[i][0], tokens[i + k - 1][1]) for i in range(len(words) - k + 1) if words[i:i + k] == parts]
    if not spans:
        return [(text, False)]
    spans.sort()
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, at = [], 0
    for a, b in merged:
        if a > at:
            out.append((text[at:a], False))
        out.append((text[a:b], True))
        at = b
    if at < len(text):
        out.append((text[at:], False))
    return out
