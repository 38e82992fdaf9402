"""Raw inputs: what a row's data is, and how it becomes a model input.

Four kinds of input, chosen by flag or detected from the schema (:func:`resolve_input`):

=========== =================================================================================
kind        column(s)
=========== =================================================================================
features    a list or fixed-size list of numbers: used as the representation directly
image       PNG/JPEG bytes, the ``{bytes, path}`` struct many published data sets use, or a
            fixed-shape numeric array (a flat list of h*w values, or a list of rows)
text        a string
tabular     numeric and categorical columns (default: every column but id and label)
=========== =================================================================================

Raw kinds go through an *encoder* fitted on the per-class training sample (so every
worker encodes the same way) and then through the proxy network
(:mod:`.representations`). Encoders are plain Python, picklable and deterministic.
A value that cannot be encoded is not an error of the run: the row is rejected with a
reason (``bad_image``, ``empty_text``).
"""

from __future__ import annotations

import io
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

KINDS = ("features", "image", "text", "tabular")


class InputError(ValueError):
    """The input columns do not fit the requested kind (a usage error)."""


@dataclass(frozen=True)
class InputSpec:
    kind: str
    columns: tuple[str, ...]

    @property
    def column(self) -> str:
        return self.columns[0]


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_image_struct(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and "bytes" in [t.field(i).name for i in range(t.num_fields)]


def _is_numeric_list(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return False
    v = t.value_type
    return pa.types.is_integer(v) or pa.types.is_floating(v) or _is_numeric_list(v)


def resolve_input(schema: pa.Schema, cfg, text_format: bool = False) -> InputSpec:
    """The input kind and columns, from the flags or, without any, from the schema.

    Detection: a binary or ``{bytes, path}`` column is an image; else the only list of
    numbers is the features; else a lone string column beside id and label is text;
    else every column but id and label is tabular. In a CSV or JSONL file
    (``text_format``) a binary column is text with a byte that is not UTF-8, never an
    image.
    """
    keys = {cfg.id_column, cfg.label_column}
    given = [
        (kind, cols)
        for kind, cols in (
            ("features", (cfg.features_column,) if cfg.features_column else ()),
            ("image", (cfg.image_column,) if cfg.image_column else ()),
            ("text", (cfg.text_column,) if cfg.text_column else ()),
            ("tabular", tuple(cfg.tabular_columns or ())),
        )
        if cols
    ]
    if len(given) > 1:
        raise InputError(
            "give one input kind: --features-column, --image-column, --text-column or "
            f"--tabular-columns (got {', '.join(k for k, _ in given)})"
        )
    names = [n for n in schema.names if n not in keys]
    if given:
        kind, cols = given[0]
        return InputSpec(kind, tuple(cols))
    if text_format:
        schema = pa.schema([f.with_type(pa.string()) if _is_binary(f.type) else f for f in schema])
    images = [n for n in names if _is_binary(schema.field(n).type) or _is_image_struct(schema.field(n).type)]
    if len(images) == 1:
        return InputSpec("image", (images[0],))
    lists = [n for n in names if _is_numeric_list(schema.field(n).type)]
    if len(lists) == 1:
        return InputSpec("features", (lists[0],))
    if len(lists) > 1 or len(images) > 1:
        raise InputError(
            f"several candidate input columns ({', '.join(images + lists)}); choose one with "
            "--features-column or --image-column"
        )
    strings = [n for n in names if _is_string(schema.field(n).type)]
    if len(names) == 1 and len(strings) == 1:
        return InputSpec("text", (strings[0],))
    if not names:
        raise InputError("no column besides the id and the label to scan")
    return InputSpec("tabular", tuple(names))


@dataclass
class Encoded:
    """A batch's model inputs: ``inputs`` holds one entry per row in ``rows``."""

    rows: np.ndarray  # indices into the batch of the rows that encoded
    inputs: dict  # name -> numpy array with len(rows) leading entries
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> (code, text)
    tokens: list | None = None  # text: the n-grams of each row; tables: column=value


# images -----------------------------------------------------------------------------
@dataclass
class ImageEncoder:
    """Decode, convert to ``channels`` channels, resize to ``size`` x ``size``, uint8."""

    size: int
    channels: int
    numeric_scale: float = 1.0  # multiplies numeric arrays into 0..255

    @classmethod
    def fit(cls, values: Sequence[Any], max_size: int = 64) -> "ImageEncoder":
        """Choose size and channels from a sample: the most common size (square side,
        at most ``max_size``) and colour if any sampled image has colour."""
        sizes: Counter = Counter()
        colour = False
        peak = 0.0
        for v in values:
            try:
                img, numeric = _to_pil_or_array(v)
            except Exception:
                continue
            if numeric is not None:
                sizes[numeric.shape[-1]] += 1
                peak = max(peak, float(np.nanmax(numeric)) if numeric.size else 0.0)
                colour |= numeric.ndim == 3 and numeric.shape[0] == 3
            else:
                sizes[max(img.size)] += 1
                colour |= img.mode not in ("L", "1", "I;16", "I", "F", "LA")
        if not sizes:
            raise InputError("no image in the sample could be decoded")
        side = min(sizes.most_common(1)[0][0], max_size)
        side = max(8, int(math.ceil(side / 4) * 4))  # the CNN halves it twice
        return cls(side, 3 if colour else 1, 1.0 if peak > 1.0 else 255.0)

    def encode(self, col) -> Encoded:
        """Encode an Arrow array (or a list) of raw image values."""
        rows, arrays, errors = [], [], {}
        for i, v in enumerate(_values(col)):
            if v is None:
                errors[i] = ("missing_image", "image is null")
                continue
            try:
                arrays.append(self._one(v))
                rows.append(i)
            except Exception as exc:  # any decoder failure is the row's problem
                errors[i] = ("bad_image", f"image: cannot decode ({_short(exc)})")
        x = np.stack(arrays) if arrays else np.zeros((0, self.channels, self.size, self.size), np.uint8)
        return Encoded(np.array(rows, dtype=np.int64), {"x": x}, errors)

    def _one(self, v) -> np.ndarray:
        from PIL import Image

        img, numeric = _to_pil_or_array(v)
        if numeric is not None:
            arr = np.clip(np.nan_to_num(numeric, nan=0.0) * self.numeric_scale, 0, 255).astype(np.uint8)
            if arr.ndim == 3:  # (C, h, w)
                arr = arr.mean(axis=0).astype(np.uint8) if self.channels == 1 else arr
                img = Image.fromarray(np.moveaxis(arr, 0, -1) if arr.ndim == 3 else arr)
            else:
                img = Image.fromarray(arr)
        img = img.convert("L" if self.channels == 1 else "RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        out = np.asarray(img, dtype=np.uint8)
        return out[None] if self.channels == 1 else np.moveaxis(out, -1, 0)


def _to_pil_or_array(v):
    """(PIL image, None) for encoded bytes, or (None, float array) for numbers."""
    from PIL import Image

    if isinstance(v, dict):
        data = v.get("bytes")
        if data is None and v.get("path"):
            from .outputs import open_read

            with open_read(v["path"]) as f:
                data = f.read()
        if data is None:
            raise ValueError("struct has neither bytes nor path")
        v = data
    if isinstance(v, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(v)))
        img.load()
        return img, None
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 1:
        side = int(round(math.sqrt(arr.size)))
        if side * side == arr.size:
            arr = arr.reshape(side, side)
        elif arr.size % 3 == 0 and int(round(math.sqrt(arr.size / 3))) ** 2 * 3 == arr.size:
            side = int(round(math.sqrt(arr.size / 3)))
            arr = arr.reshape(3, side, side)
        else:
            raise ValueError(f"{arr.size} numbers are not a square image")
    if arr.ndim not in (2, 3) or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"shape {arr.shape} is not a square image")
    return None, arr


# text -------------------------------------------------------------------------------
_TOKEN = re.compile(r"[a-z0-9']+")


def ngrams(text: str, n: int = 2) -> list[str]:
    words = _TOKEN.findall(text.lower())
    out = list(words)
    for k in range(2, n + 1):
        out += [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]
    return out


def bucket_of(gram: str, buckets: int) -> int:
    return zlib.crc32(gram.encode("utf-8")) % buckets


def text_of(v) -> str:
    """A text value as text. A CSV or JSONL cell with a byte that is not UTF-8 makes the
    reader type the whole column binary: its values are decoded here, and one that does
    not decode raises :class:`UnicodeDecodeError` (the row's problem, not the column's)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8")
    return str(v)


def undecodable_reason(exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


@dataclass
class TextEncoder:
    """Hashed bag of words and word pairs: ids and log-count weights (L2-normalised)."""

    buckets: int = 1 << 18
    max_ngram: int = 2
    max_tokens: int = 256

    def encode(self, col) -> Encoded:
        """Encode an Arrow array (or a list) of texts."""
        rows, id_rows, w_rows, grams_rows, errors = [], [], [], [], {}
        for i, v in enumerate(_values(col)):
            if v is None:
                errors[i] = ("missing_text", "text is null")
                continue
            try:
                grams = ngrams(text_of(v), self.max_ngram)
            except UnicodeDecodeError as exc:
                errors[i] = ("bad_text", f"text is {undecodable_reason(exc)}")
                continue
            if not grams:
                errors[i] = ("empty_text", "text is empty (no words)")
                continue
            counts = Counter(grams)
            # the most frequent n-grams first; ties in order of first appearance
            items = counts.most_common(self.max_tokens)
            ids = np.array([bucket_of(g, self.buckets) for g, _ in items], dtype=np.int64)
            w = np.log1p(np.array([c for _, c in items], dtype=np.float32))
            w /= np.linalg.norm(w)
            rows.append(i)
            id_rows.append(ids)
            w_rows.append(w)
            grams_rows.append(sorted(counts))
        width = max((len(r) for r in id_rows), default=1)
        ids = np.full((len(rows), width), self.buckets, dtype=np.int64)  # pad: index `buckets`
        weights = np.zeros((len(rows), width), dtype=np.float32)
        for j, (a, b) in enumerate(zip(id_rows, w_rows)):
            ids[j, : len(a)] = a
            weights[j, : len(b)] = b
        return Encoded(np.array(rows, dtype=np.int64), {"ids": ids, "weights": weights}, errors, grams_rows)


# tabular ----------------------------------------------------------------------------
_MAX_VALUE_CHARS = 200  # a categorical value longer than this is named by its start
_Z_SEXTILES = (-0.967, -0.431, 0.0, 0.431, 0.967)  # standard normal sextile bounds
@dataclass
class TabularEncoder:
    """Numeric columns standardised (plus a missing flag); categorical ones one-hot over
    their most frequent values (plus "other" and "missing"). Each row's categorical values
    also come out as ``column=value`` tokens, for the ``value_trigger`` detector."""

    numeric: list  # [(column, mean, sd)]
    categorical: list  # [(column, [values])]

    @property
    def width(self) -> int:
        return 2 * len(self.numeric) + sum(len(v) + 2 for _, v in self.categorical)

    @classmethod
    def fit(cls, table: pa.Table, columns: Sequence[str], max_categories: int = 20) -> "TabularEncoder":
        numeric, categorical = [], []
        for c in columns:
            col = table.column(c)
            t = col.type
            if pa.types.is_dictionary(t):
                col, t = col.cast(t.value_type), t.value_type
            if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
                x = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
                x = x[np.isfinite(x)]
                mean = float(x.mean()) if x.size else 0.0
                sd = float(x.std()) if x.size and x.std() > 0 else 1.0
                numeric.append((c, mean, sd))
            elif _is_string(t):
                counts = Counter(v for v in col.to_pylist() if v is not None)
                top = sorted(counts, key=lambda v: (-counts[v], v))[:max_categories]
                categorical.append((c, top))
            else:
                raise InputError(f"tabular column {c!r} holds {t}; give numbers or strings")
        return cls(numeric, categorical)

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        n = batch.num_rows
        parts = []
        names = batch.schema.names
        tokens: list = [[] for _ in range(n)]
        for c, mean, sd in self.numeric:
            if c in names:
                col = batch.column(c)
                if pa.types.is_dictionary(col.type):
                    col = col.cast(col.type.value_type)
                x = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            else:
                x = np.full(n, np.nan)
            missing = ~np.isfinite(x)
            z = np.where(missing, 0.0, (x - mean) / sd)
            parts += [z, missing.astype(np.float64)]
            # the number's sextile (of a normal with its mean and SD): context for
            # value_trigger's "would this row belong to another class" check, never a trigger
            bins = np.where(missing, -1, np.digitize(z, _Z_SEXTILES))
            for i, b in enumerate(bins):
                tokens[i].append(f"~{c}:{b}")
        for c, values in self.categorical:
            vals = batch.column(c).to_pylist() if c in names else [None] * n
            index = {v: j for j, v in enumerate(values)}
            onehot = np.zeros((n, len(values) + 2))
            for i, v in enumerate(vals):
                onehot[i, len(values) + 1 if v is None else index.get(str(v), len(values))] = 1.0
                if v is not None:
                    tokens[i].append(f"{c}={str(v)[:_MAX_VALUE_CHARS]}")
            parts.append(onehot)
        x = np.column_stack(parts).astype(np.float32) if parts else np.zeros((n, 0), np.float32)
        return Encoded(np.arange(n, dtype=np.int64), {"x": x}, {}, tokens)


def _values(col) -> list:
    return col.to_pylist() if hasattr(col, "to_pylist") else list(col)


def _short(exc: BaseException) -> str:
    """A decoder's message on one line, without object addresses (``<_io.BytesIO object
    at 0x7f...>`` differs from run to run; the reason must not)."""
    import re

    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"<\1>", text)
    return text[:120]
