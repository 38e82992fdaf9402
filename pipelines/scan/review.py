"""What a person needs to review a scan, gathered while it runs (no Beam, no HTML).

The report (:mod:`..report.html`) is rendered from the scan's outputs alone, so that
``poisonscan report DIR`` can re-render it without rescanning. Besides the quarantine
list, the rejected rows and the summary, it needs three things only the scan sees:

* per class, a 2-D projection of the representations of a uniform sample of its rows
  (fitted in :func:`.projection.project_class`, next to the detectors, one class per element);
* per class judged poisoned, a few clean rows for contrast (:class:`ContrastRows`,
  gathered in pass 2 like the counts);
* the flagged rows' content for the gallery (from the flagged part files), turned into
  previews: image thumbnails, the text, the table row, a vector's profile.

:func:`build_review` joins them into ``review.parquet`` (one row per gallery or contrast
example) and ``review.json`` (plots' data and what was left out).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from poisonscan.detectors.base import label_sort_key
from poisonscan.detectors.structure import STRUCTURE_MARK
from poisonscan.detectors.structure import describe as describe_structure
from poisonscan.pipelines.scan.columns import CAND_HIGHLIGHTS
from poisonscan.pipelines.scan.fingerprints import priorities
from poisonscan.pipelines.scan.plan import ScanPlan
from poisonscan.pipelines.scan.previews import Previewer
from poisonscan.pipelines.scan.values import finite, plain

#: Clean rows of each poisoned class shown for contrast.
CONTRAST_ROWS = 6

#: Gallery cards: per (class, group), per class, in all.
GALLERY_PER_GROUP = 32

GALLERY_PER_CLASS = 48

GALLERY_MAX = 480

#: Bins of a score histogram.
HISTOGRAM_BINS = 40

REVIEW_VERSION = 1


# pass 2: contrast rows ---------------------------------------------------------------
@dataclass
class ContrastRows:
    """Per class, the clean rows of lowest sampling priority (a uniform sample), whole."""

    capacity: int = CONTRAST_ROWS
    by_class: dict = field(default_factory=dict)  # label -> (priority, positions, table)

    @classmethod
    def of(
        cls, prep, table: pa.Table, mask: np.ndarray, labels: set, seed: int, capacity: int = CONTRAST_ROWS
    ) -> "ContrastRows":
        """The clean rows (``mask``) of the classes in ``labels`` in one batch (``table``:
        the batch as read)."""

        out = cls(capacity)
        if not labels or not mask.any():
            return out
        rows = np.flatnonzero(mask)
        ys = prep.labels[rows]
        prio = None
        uniq, inverse = np.unique(ys, return_inverse=True)  # vectorised: batches are large
        present = {plain(u): j for j, u in enumerate(uniq)}
        for label in sorted(set(present) & labels, key=label_sort_key):
            r = rows[inverse.ravel() == present[label]]
            if prio is None:
                prio = priorities(prep.ids_arrow, seed)
            keep = r[np.lexsort((prep.positions[r], prio[r]))[:capacity]]
            out.by_class[label] = (prio[keep], prep.positions[keep], table.take(pa.array(keep, pa.int64())))
        return out

    def merge(self, other: "ContrastRows") -> "ContrastRows":
        out = ContrastRows(self.capacity, dict(self.by_class))
        for label, (p, pos, t) in other.by_class.items():
            if label not in out.by_class:
                out.by_class[label] = (p, pos, t)
                continue
            p0, pos0, t0 = out.by_class[label]
            prio = np.concatenate([p0, p])
            where = np.concatenate([pos0, pos])
            table = pa.concat_tables([t0, t], promote_options="permissive")
            keep = np.lexsort((where, prio))[: self.capacity]
            out.by_class[label] = (prio[keep], where[keep], table.take(pa.array(keep, pa.int64())))
        return out

    def rows(self, label) -> tuple[pa.Table | None, np.ndarray | None]:
        """The class's contrast rows in input order, and their positions."""
        if label not in self.by_class:
            return None, None
        _, pos, table = self.by_class[label]
        order = np.argsort(pos, kind="stable")
        return table.take(pa.array(order, pa.int64())), pos[order]


# finish: the review data -------------------------------------------------------------
REVIEW_SCHEMA_FIELDS = [
    ("role", pa.string()),  # "flagged" or "contrast"
    ("rank", pa.int64()),  # flagged: 1 = most suspicious in the scan
    ("group", pa.string()),  # what the flagged rows of a class have in common
    ("score", pa.float64()),
    ("detectors", pa.list_(pa.string())),
    ("reason", pa.string()),
    ("highlights", pa.list_(pa.string())),  # text: the n-grams; tables: column=value
    ("thumbnail", pa.binary()),  # images: PNG
    ("text", pa.string()),
    ("vector", pa.list_(pa.float32())),  # features: the vector (binned when long)
    ("fields", pa.string()),  # JSON: the row's other columns, as shown
    ("source_file", pa.string()),
    ("source_row", pa.int64()),
]


def review_schema(id_type: pa.DataType, label_type: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field("id", id_type), pa.field("label", label_type)] + [pa.field(n, t) for n, t in REVIEW_SCHEMA_FIELDS])


_PIXEL_TOKEN = re.compile(r"^(?:px|blk) (\d+,\d+)=[\d.]+$")


def group_of(detectors: Sequence[str], highlights: Sequence[str], finds: Mapping[str, str]) -> str:
    """A flagged row's group within its class: the trigger it contains, a separated
    group, or labels the data contradict."""
    if highlights:
        stamp = _PIXEL_TOKEN.match(highlights[0])
        if stamp:  # pixel_trigger's tokens (encoders.pixel_tokens)
            return f"pixel trigger at grid cell {stamp.group(1)}"
        if highlights[0].startswith(STRUCTURE_MARK):  # token_trigger's sentence forms
            return f"sentence form: {describe_structure(highlights[0])}"
        column, is_value, value = highlights[0].partition("=")
        return f"value {column} = {value!r}" if is_value else f"trigger {highlights[0]!r}"
    if any(finds.get(d) == "backdoor" for d in detectors):
        return "separated group"
    return "label contradicted by the data"


def build_review(
    plan: ScanPlan,
    model,
    detectors,
    lists: tuple[pa.Table, pa.Table | None],
    unit_result,
    selected: np.ndarray,
) -> tuple[pa.Table, dict]:
    """(review.parquet, review.json) of a finished scan.

    ``lists`` is the quarantine list (most suspicious first) and the quarantined rows as
    read (plus internal columns) in its order; ``selected`` holds the positions
    quarantined, ``unit_result`` the flagged positions and the contrast rows.
    """
    cfg, spec = plan.cfg, plan.kinds.input
    preview = Previewer(spec.kind, spec.columns, cfg.id_column, cfg.label_column, plan.folders)
    gallery = _Gallery.of(lists, preview, {d.name: d.finds for d in detectors})
    rows = gallery.rows + _contrast_rows(unit_result.contrast, gallery.shown_by_class, preview)
    schema = review_schema(plan.kinds.id_type, plan.kinds.label_type)
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    data = {
        "version": REVIEW_VERSION,
        "kind": spec.kind,
        "input_columns": list(spec.columns),
        "id_column": cfg.id_column,
        "label_column": cfg.label_column,
        "gallery": gallery.summary(lists[0].num_rows),
        "classes": _class_views(model, detectors, selected, unit_result.flagged_positions),
    }
    return table, data


@dataclass
class _Gallery:
    """The quarantined rows shown as cards, capped per (class, group), per class and
    in all, and how many of each group were quarantined."""

    rows: list = field(default_factory=list)
    shown_by_class: dict = field(default_factory=dict)
    shown_by_group: dict = field(default_factory=dict)
    quarantined_by_group: dict = field(default_factory=dict)

    @staticmethod
    def of(lists, preview, finds: Mapping[str, str]) -> "_Gallery":
        quarantine, quarantined = lists
        out = _Gallery()
        if not quarantine.num_rows:
            return out
        col = {name: quarantine.column(name).to_pylist() for name in
               ("score", "detectors", "reason", "source_file", "source_row")}
        labels = [plain(v) for v in quarantine.column("label").to_pylist()]
        hls = quarantined.column(CAND_HIGHLIGHTS).to_pylist()
        for k, label in enumerate(labels):
            dets = col["detectors"][k]
            group = group_of(dets, hls[k] or [], finds)
            key = (label, group)
            out.quarantined_by_group[key] = out.quarantined_by_group.get(key, 0) + 1
            if (
                len(out.rows) >= GALLERY_MAX
                or out.shown_by_class.get(label, 0) >= GALLERY_PER_CLASS
                or out.shown_by_group.get(key, 0) >= GALLERY_PER_GROUP
            ):
                continue
            out.shown_by_class[label] = out.shown_by_class.get(label, 0) + 1
            out.shown_by_group[key] = out.shown_by_group.get(key, 0) + 1
            out.rows.append(
                {
                    **preview.of(quarantined.slice(k, 1)),
                    "id": quarantine.column("id")[k].as_py(), "label": label,
                    "role": "flagged", "rank": k + 1, "group": group, "score": col["score"][k],
                    "detectors": list(dets), "reason": col["reason"][k], "highlights": list(hls[k] or []),
                    "source_file": col["source_file"][k], "source_row": col["source_row"][k],
                }
            )
        return out

    def summary(self, quarantined: int) -> dict:
        return {
            "rows_quarantined": quarantined,
            "rows_shown": len(self.rows),
            "limits": {"per_group": GALLERY_PER_GROUP, "per_class": GALLERY_PER_CLASS, "total": GALLERY_MAX},
            "groups": [
                {"label": label, "group": group, "rows_quarantined": count,
                 "rows_shown": self.shown_by_group.get((label, group), 0)}
                for (label, group), count in sorted(
                    self.quarantined_by_group.items(), key=lambda kv: (label_sort_key(kv[0][0]), -kv[1], kv[0][1])
                )
            ],
        }


def _contrast_rows(contrast, shown_by_class: Mapping, preview) -> list[dict]:
    """Clean rows of each class shown in the gallery, for contrast."""
    rows = []
    for label in sorted(shown_by_class, key=label_sort_key):
        table, positions = contrast.rows(label) if contrast is not None else (None, None)
        for j in range(table.num_rows if table is not None else 0):
            rows.append(
                {
                    **preview.of(table.slice(j, 1), int(positions[j])),
                    "role": "contrast", "rank": None, "group": None, "score": None, "detectors": [],
                    "reason": None, "highlights": [], "source_file": None, "source_row": None,
                }
            )
    return rows


def _class_views(model, detectors, selected: np.ndarray, flagged: np.ndarray) -> list[dict]:
    """Per scanned class: each detector's decision statistic on the class sample as a
    histogram with its cut, and the 2-D projection with flagged rows marked."""
    selected = np.asarray(selected, np.int64)
    flagged = np.asarray(flagged, np.int64)
    out = []
    for label in sorted(model.classes, key=label_sort_key):
        cm = model.classes[label]
        hist = []
        for det in detectors:
            state = model.states.get(det.name)
            stat = None if state is None else state.calibration.get(label)
            verdict = cm.verdicts.get(det.name)
            if verdict is None:
                continue
            entry = {
                "detector": det.name,
                "statistic": det.statistic_label(state, label) if state is not None else det.statistic_name,
                "poisoned": bool(verdict.poisoned),
                "counted": bool(cm.active.get(det.name)),
                "cut": finite(verdict.cut),
                "side": int(verdict.side),
                "note": verdict.note,
            }
            if stat is not None and len(stat):
                entry.update(_histogram(np.asarray(stat, np.float64), verdict.cut))
            hist.append(entry)
        view = cm.view or {}
        proj = None
        if view:
            pos = view["positions"]
            mark = np.where(np.isin(pos, selected), 2, np.where(np.isin(pos, flagged), 1, 0))
            xy = view["xy"].astype(np.float64)
            proj = {
                "x": [round(float(v), 4) for v in xy[:, 0]],
                "y": [round(float(v), 4) for v in xy[:, 1]],
                "mark": mark.astype(int).tolist(),  # 0 clean, 1 flagged (over budget), 2 quarantined
                "ids": [view["ids"][i] if mark[i] else None for i in range(len(pos))],
            }
        out.append(
            {
                "label": plain(label),
                "rows": int(cm.rows),
                "poisoned": bool(any(cm.active.values())),
                "histograms": hist,
                "projection": proj,
            }
        )
    return out


def _histogram(stat: np.ndarray, cut) -> dict:
    stat = stat[np.isfinite(stat)]
    if not len(stat):
        return {}
    lo, hi = float(stat.min()), float(stat.max())
    if cut is not None and math.isfinite(cut):
        lo, hi = min(lo, float(cut)), max(hi, float(cut))
    # a range numpy can cut into bins: not wider than floats hold, and wide enough that
    # the bins' edges differ at this magnitude (statistics near 1e20 or 1e300 occur)
    lo, hi = max(lo, -1e307), min(hi, 1e307)
    hi = max(hi, lo + max(abs(lo) * 1e-6, 1.0))
    stat = np.clip(stat, lo, hi)
    counts, edges = np.histogram(stat, bins=HISTOGRAM_BINS, range=(lo, hi))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.astype(int).tolist(), "rows": int(len(stat))}
