"""What a person needs to review a scan, gathered while it runs (no Beam, no HTML).

The report (:mod:`.report`) is rendered from the scan's outputs alone, so that
``poisonscan report DIR`` can re-render it without rescanning. Besides the quarantine
list, the rejected rows and the summary, it needs three things only the scan sees:

* per class, a 2-D projection of the representations of a uniform sample of its rows
  (fitted in :func:`project_class`, next to the detectors, one class per element);
* per class judged poisoned, a few clean rows for contrast (:class:`ContrastRows`,
  gathered in pass 2 like the counts);
* the flagged rows' content for the gallery (from the flagged part files), turned into
  previews: image thumbnails, the text, the table row, a vector's profile.

:func:`build_review` joins them into ``review.parquet`` (one row per gallery or contrast
example) and ``review.json`` (plots' data and what was left out).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from poisonscan.detectors.base import label_sort_key

#: Points per class in the 2-D projection (a uniform sample of the class).
PROJECTION_POINTS = 400
#: Rows the projection's axes are fitted on.
PROJECTION_FIT_ROWS = 1024
#: Clean rows of each poisoned class shown for contrast.
CONTRAST_ROWS = 6
#: Gallery cards: per (class, group), per class, in all.
GALLERY_PER_GROUP = 32
GALLERY_PER_CLASS = 48
GALLERY_MAX = 480
#: Bins of a score histogram.
HISTOGRAM_BINS = 40
#: Longest text kept for a preview; values of other columns are cut to this many characters.
TEXT_CHARS = 4000
VALUE_CHARS = 200
#: A vector preview holds at most this many values (longer vectors are averaged in bins).
VECTOR_POINTS = 256
#: Largest thumbnail side, in pixels; smaller images are kept at their size.
THUMBNAIL_SIDE = 128

REVIEW_VERSION = 1


# pass 1: the projection --------------------------------------------------------------
def project_class(reservoir, layout) -> dict:
    """A 2-D view of one class: its top two principal directions (fitted on a uniform
    sample of up to 1,024 rows), applied to a uniform sample of up to 400 rows."""
    fit = reservoir.head(PROJECTION_FIT_ROWS)
    pts = reservoir.head(PROJECTION_POINTS)
    order = np.argsort(pts.positions, kind="stable")
    X_fit, _ = layout.split(np.asarray(fit.X, dtype=np.float64))
    X_pts, _ = layout.split(np.asarray(pts.X, dtype=np.float64)[order])
    mean = X_fit.mean(axis=0) if len(X_fit) else np.zeros(X_pts.shape[1])
    axes = _top_directions(X_fit - mean, 2)
    coords = (X_pts - mean) @ axes if len(X_pts) else np.zeros((0, 2))
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    return {
        "positions": pts.positions[order].astype(np.int64),
        "ids": [_plain(v) for v in np.asarray(pts.ids)[order]],
        "xy": coords.astype(np.float32),
    }


def _top_directions(Xc: np.ndarray, k: int) -> np.ndarray:
    """(d, k) top principal directions of centred rows, signs fixed (deterministic)."""
    n, d = Xc.shape
    if n < 2 or d == 0:
        return np.eye(d, k) if d else np.zeros((0, k))
    if d <= n:
        vals, vecs = np.linalg.eigh(Xc.T @ Xc)
        axes = vecs[:, ::-1][:, :k]
    else:  # fewer rows than dimensions: the Gram matrix is smaller
        vals, vecs = np.linalg.eigh(Xc @ Xc.T)
        top = vecs[:, ::-1][:, :k]
        axes = Xc.T @ top
        axes /= np.maximum(np.linalg.norm(axes, axis=0), 1e-12)
    if axes.shape[1] < k:
        axes = np.hstack([axes, np.zeros((d, k - axes.shape[1]))])
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return axes * np.where(signs == 0, 1.0, signs)


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
        from .rows import priorities

        out = cls(capacity)
        if not labels or not mask.any():
            return out
        rows = np.flatnonzero(mask)
        ys = prep.labels[rows]
        prio = None
        uniq, inverse = np.unique(ys, return_inverse=True)  # vectorised: batches are large
        present = {_plain(u): j for j, u in enumerate(uniq)}
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

    def rows(self, label) -> pa.Table | None:
        """The class's contrast rows in input order."""
        if label not in self.by_class:
            return None
        _, pos, table = self.by_class[label]
        return table.take(pa.array(np.argsort(pos, kind="stable"), pa.int64()))


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


def group_of(detectors: Sequence[str], highlights: Sequence[str], finds: Mapping[str, str]) -> str:
    """A flagged row's group within its class: the trigger it contains, a separated
    group, or labels the data contradict."""
    if highlights:
        column, is_value, value = highlights[0].partition("=")
        return f"value {column} = {value!r}" if is_value else f"trigger {highlights[0]!r}"
    if any(finds.get(d) == "backdoor" for d in detectors):
        return "separated group"
    return "label contradicted by the data"


def build_review(
    *,
    quarantined: pa.Table | None,
    quarantine: pa.Table,
    model,
    detectors,
    contrast: "ContrastRows | None",
    selected: np.ndarray,
    flagged: np.ndarray,
    kinds,
    cfg,
    highlight_column: str,
) -> tuple[pa.Table, dict]:
    """(review.parquet, review.json) of a finished scan.

    ``quarantined`` holds the quarantined rows as read (plus internal columns) in the
    order of the quarantine list ``quarantine`` (most suspicious first); ``selected`` and
    ``flagged`` are the positions quarantined and flagged.
    """
    spec = kinds.input
    finds = {d.name: d.finds for d in detectors}
    schema = review_schema(kinds.id_type, kinds.label_type)
    preview = _Previewer(spec.kind, spec.columns, cfg.id_column, cfg.label_column)
    rows: list[dict] = []
    shown_by_class: dict = {}
    quarantined_by_group: dict = {}
    shown_by_group: dict = {}
    n = quarantine.num_rows
    if n:
        labels = [_plain(v) for v in quarantine.column("label").to_pylist()]
        score = quarantine.column("score").to_pylist()
        dets = quarantine.column("detectors").to_pylist()
        reasons = quarantine.column("reason").to_pylist()
        files = quarantine.column("source_file").to_pylist()
        lines = quarantine.column("source_row").to_pylist()
        hls = quarantined.column(highlight_column).to_pylist()
        for k in range(n):
            label = labels[k]
            group = group_of(dets[k], hls[k] or [], finds)
            key = (label, group)
            quarantined_by_group[key] = quarantined_by_group.get(key, 0) + 1
            if (
                len(rows) >= GALLERY_MAX
                or shown_by_class.get(label, 0) >= GALLERY_PER_CLASS
                or shown_by_group.get(key, 0) >= GALLERY_PER_GROUP
            ):
                continue
            shown_by_class[label] = shown_by_class.get(label, 0) + 1
            shown_by_group[key] = shown_by_group.get(key, 0) + 1
            rows.append(
                {
                    **preview.of(quarantined.slice(k, 1)),
                    "id": quarantine.column("id")[k].as_py(), "label": label,
                    "role": "flagged", "rank": k + 1, "group": group, "score": score[k],
                    "detectors": list(dets[k]), "reason": reasons[k], "highlights": list(hls[k] or []),
                    "source_file": files[k], "source_row": lines[k],
                }
            )
    for label in sorted(shown_by_class, key=label_sort_key):
        table = contrast.rows(label) if contrast is not None else None
        for j in range(table.num_rows if table is not None else 0):
            rows.append(
                {
                    **preview.of(table.slice(j, 1)),
                    "role": "contrast", "rank": None, "group": None, "score": None, "detectors": [],
                    "reason": None, "highlights": [], "source_file": None, "source_row": None,
                }
            )
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    data = {
        "version": REVIEW_VERSION,
        "kind": spec.kind,
        "input_columns": list(spec.columns),
        "id_column": cfg.id_column,
        "label_column": cfg.label_column,
        "gallery": {
            "rows_quarantined": n,
            "rows_shown": len([r for r in rows if r["role"] == "flagged"]),
            "limits": {"per_group": GALLERY_PER_GROUP, "per_class": GALLERY_PER_CLASS, "total": GALLERY_MAX},
            "groups": [
                {"label": label, "group": group, "rows_quarantined": count, "rows_shown": shown_by_group.get((label, group), 0)}
                for (label, group), count in sorted(
                    quarantined_by_group.items(), key=lambda kv: (label_sort_key(kv[0][0]), -kv[1], kv[0][1])
                )
            ],
        },
        "classes": _class_views(model, detectors, selected, flagged),
    }
    return table, data


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
                "statistic": det.statistic_name,
                "poisoned": bool(verdict.poisoned),
                "counted": bool(cm.active.get(det.name)),
                "cut": _finite(verdict.cut),
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
                "label": _plain(label),
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


def _finite(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# the summary: how far each class stands out ---------------------------------------------
#: How a ranking entry's evidence was measured (its ``basis``).
BASIS_P_VALUE = "p-value"
BASIS_SEPARATION = "separation"
BASIS_NONE = "not judged"


def rank_classes(classes: Sequence[Mapping[str, Any]]) -> tuple[list[dict], dict | None]:
    """Every class ordered by how far it stands out, and the near miss.

    ``classes`` are the per-class entries of ``summary.json`` (each with its
    ``verdicts``), so the ranking is computed the same way from a scan in progress and
    from the outputs of an older scan.

    A class's strongest evidence is its detector with the smallest ``p_value / level``
    (``ratio``): below 1 the detector judges the class poisoned, and the closer above 1,
    the nearer the class came. Verdicts without a calibrated ``p_value`` and ``level``
    fall back on the decision's own figures (:func:`_fallback_strength`); such classes
    rank after those with a ratio (``basis`` says which). Classes judged poisoned come
    first; classes that were not judged (too few rows) come last. Ties keep the label
    order.

    Returns ``(ranking, near_miss)``: one entry per class, and the first entry of a
    judged class that is not judged poisoned (None when there is none).
    """
    scored = []
    for order, c in enumerate(classes):
        entry, weakness = _strongest(c)
        poisoned = c.get("poisoned")
        tier = {BASIS_P_VALUE: 0, BASIS_SEPARATION: 1, BASIS_NONE: 2}[entry["basis"]]
        scored.append(((0 if poisoned else 1 if poisoned is not None else 2, tier, weakness, order), entry))
    scored.sort(key=lambda t: t[0])
    ranking = [{"rank": rank, **entry} for rank, (_, entry) in enumerate(scored, start=1)]
    near = next((e for e in ranking if e["poisoned"] is False), None)
    return ranking, (dict(near) if near else None)


def _strongest(c: Mapping[str, Any]) -> tuple[dict, tuple]:
    """One class's strongest evidence, as a ranking entry (without its rank), and a key
    that sorts stronger evidence first among classes of the same ``basis``."""
    verdicts = c.get("verdicts") or {}
    out = {
        "label": c.get("label"),
        "poisoned": c.get("poisoned"),
        "detector": None,
        "counted": False,
        "p_value": None,
        "level": None,
        "ratio": None,
        "separation": None,
        "group_fraction": None,
        "basis": BASIS_NONE,
        "evidence": c.get("status") or "not judged",
        "note": "",
    }
    if not verdicts:
        return out, ()
    calibrated = []
    for name, v in verdicts.items():
        p, level = _finite(v.get("p_value")), _finite(v.get("level"))
        if p is not None and level is not None and level > 0:
            calibrated.append((p / level, -(_finite(v.get("separation")) or 0.0), name, v))
    if calibrated:
        ratio, neg_sep, name, v = min(calibrated, key=lambda t: t[:2])  # first of equals: detector order
        basis, weakness = BASIS_P_VALUE, (ratio, neg_sep)
    else:
        ratio = None
        name, v = max(verdicts.items(), key=lambda kv: _fallback_strength(kv[1]))  # first of equals
        basis, weakness = BASIS_SEPARATION, tuple(-float(x) for x in _fallback_strength(v))
    out.update(
        detector=name,
        counted=bool(v.get("counted")),
        p_value=_finite(v.get("p_value")) if basis == BASIS_P_VALUE else None,
        level=_finite(v.get("level")) if basis == BASIS_P_VALUE else None,
        ratio=ratio,
        separation=_finite(v.get("separation")),
        group_fraction=_finite(v.get("group_fraction")),
        basis=basis,
        note=str(v.get("note") or ""),
    )
    out["evidence"] = evidence_words(out, _finite(v.get("delta_bic")), bool(v.get("poisoned")))
    return out, weakness


def _fallback_strength(v: Mapping[str, Any]) -> tuple:
    """Evidence of a verdict without a calibrated p-value, stronger first when larger:
    judged poisoned, then two groups fit its scores better than one (BIC gain > 0),
    then the groups' separation."""
    return (
        bool(v.get("poisoned")),
        (_finite(v.get("delta_bic")) or 0.0) > 0,
        _finite(v.get("separation")) or 0.0,
    )


def evidence_words(e: Mapping[str, Any], delta_bic: float | None = None, detector_poisoned: bool = False) -> str:
    """A ranking entry's evidence in plain words: "spectre: p = 0.0002, below the level
    0.001", or, without a calibrated p-value, the decision's separation and group."""
    det = e.get("detector")
    if det is None:
        return str(e.get("evidence") or "not judged")
    if e.get("basis") == BASIS_P_VALUE:
        p, level, ratio = e["p_value"], e["level"], e["ratio"]
        if ratio < 1:
            where = f"below the level {level:.2g}"
        elif ratio < 1.005:
            where = f"at the level {level:.2g}"
        else:
            times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
            where = f"{times} times the level {level:.2g}"
        text = f"{det}: p = {p:.2g}, {where}"
    else:
        parts = [f"{det} (no calibrated p-value)"]
        if delta_bic is not None and delta_bic > 0:
            parts.append(f"two groups fit better than one (BIC gain {delta_bic:.1f})")
        if e.get("separation"):
            parts.append(f"separation {e['separation']:.2f}")
        if e.get("group_fraction"):
            parts.append(f"group of {100 * e['group_fraction']:.1f} % of the class")
        text = ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]
    if detector_poisoned and not e.get("counted"):
        text += " (judged poisoned by this detector, not confirmed by the others)"
    return text


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# previews ----------------------------------------------------------------------------
class _Previewer:
    """One row as read -> the preview columns of review.parquet."""

    def __init__(self, kind: str, columns: Sequence[str], id_column: str, label_column: str):
        self.kind = kind
        self.columns = list(columns)
        self.id_column = id_column
        self.label_column = label_column

    def of(self, row: pa.Table) -> dict:
        values = {name: row.column(name)[0].as_py() for name in row.column_names if not name.startswith("__poisonscan_")}
        out = {
            "id": values.get(self.id_column),
            "label": values.get(self.label_column),
            "thumbnail": None,
            "text": None,
            "vector": None,
        }
        shown = {}
        if self.kind == "image":
            out["thumbnail"] = thumbnail(values.get(self.columns[0]))
        elif self.kind == "text":
            text = values.get(self.columns[0])
            out["text"] = None if text is None else str(text)[:TEXT_CHARS]
        elif self.kind == "features":
            out["vector"] = vector_profile(values.get(self.columns[0]))
        elif self.kind == "tabular":
            shown.update({c: _shown(values.get(c)) for c in self.columns})
        for name, v in values.items():
            if name in (self.id_column, self.label_column) or name in self.columns:
                continue
            shown[name] = _shown(v)
        out["fields"] = json.dumps(shown, ensure_ascii=False, default=str)
        return out


def _shown(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v):,} bytes>"
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def thumbnail(value: Any) -> bytes | None:
    """A PNG thumbnail of an image value (bytes, ``{bytes, path}`` or numbers); None when
    it cannot be decoded."""
    from PIL import Image

    from .inputs import _to_pil_or_array

    if value is None:
        return None
    try:
        img, numeric = _to_pil_or_array(value)
        if numeric is not None:
            arr = np.nan_to_num(numeric, nan=0.0)
            scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
            arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
            img = Image.fromarray(np.moveaxis(arr, 0, -1) if arr.ndim == 3 else arr)
        if img.mode not in ("L", "RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        if max(img.size) > THUMBNAIL_SIDE:
            img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()
    except Exception:
        return None


def vector_profile(value: Any) -> list | None:
    """A vector for display: as is, or averaged in bins when longer than 256."""
    if value is None:
        return None
    if isinstance(value, str):  # numbers written in a string, as in CSV
        from .rows import parse_number_text

        value = parse_number_text(pa.array([value], pa.string()))[0][0].as_py()
        if value is None:
            return None
    v = np.asarray(value, dtype=np.float64).ravel()
    if v.size > VECTOR_POINTS:
        bins = np.array_split(v, VECTOR_POINTS)
        v = np.array([b.mean() for b in bins])
    return [float(x) if math.isfinite(x) else 0.0 for x in v]
