"""Previews of a row for the report: a thumbnail, a text, a vector profile, table fields."""

from __future__ import annotations

import io
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from poisonscan.pipelines.io.sources import decode_position
from poisonscan.pipelines.represent.encoders import to_pil_or_array
from poisonscan.pipelines.scan.cells import parse_number_text
from poisonscan.pipelines.scan.columns import POS

#: Longest text kept for a preview; values of other columns are cut to this many characters.
TEXT_CHARS = 4000

VALUE_CHARS = 200

#: A vector preview holds at most this many values (longer vectors are averaged in bins).
VECTOR_POINTS = 256

#: Largest thumbnail side, in pixels; smaller images are kept at their size.
THUMBNAIL_SIDE = 128


# previews ----------------------------------------------------------------------------
class Previewer:
    """One row as read -> the preview columns of review.parquet."""

    def __init__(self, kind: str, columns: Sequence[str], id_column: str, label_column: str,
                 folders: Mapping[int, str] | None = None):
        self.kind = kind
        self.columns = list(columns)
        self.id_column = id_column
        self.label_column = label_column
        self.folders = dict(folders or {})  # images: file index -> its folder

    def of(self, row: pa.Table, position: int | None = None) -> dict:
        """The previews of ``row`` (one row as read), read at ``position`` (an image's
        relative path is read from the folder of that row's file; by default the
        position the row carries)."""
        if position is None and POS in row.column_names:
            position = row.column(POS)[0].as_py()
        folder = self.folders.get(decode_position(position)[0]) if position is not None else None
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
            out["thumbnail"] = thumbnail(values.get(self.columns[0]), folder)
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


def thumbnail(value: Any, folder: str | None = None) -> bytes | None:
    """A PNG thumbnail of an image value (bytes, ``{bytes, path}``, a path or numbers; a
    relative path read from ``folder``); None when it cannot be decoded."""
    from PIL import Image  # Pillow: only reports of images load it

    if value is None:
        return None
    try:
        img, numeric = to_pil_or_array(value, folder)
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

        value = parse_number_text(pa.array([value], pa.string()))[0][0].as_py()
        if value is None:
            return None
    v = np.asarray(value, dtype=np.float64).ravel()
    if v.size > VECTOR_POINTS:
        bins = np.array_split(v, VECTOR_POINTS)
        v = np.array([b.mean() for b in bins])
    return [float(x) if math.isfinite(x) else 0.0 for x in v]
