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
(:mod:`.proxy`). Encoders are plain Python, picklable and deterministic.
A value that cannot be encoded is not an error of the run: the row is rejected with a
reason (``bad_image``, ``empty_text``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import math
import os
import re
import stat
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from poisonscan.detectors.pixels import PIXEL_LEVELS, pixel_levels, pixel_tokens
from poisonscan.detectors.structure import structure_tokens
from poisonscan.pipelines.io.folders import IMAGE_SUFFIXES, ImageFolderPath
from poisonscan.pipelines.io.kinds import InputError, is_string_type, is_time_or_decimal
from poisonscan.pipelines.io.outputs import is_absolute, is_local, join, local_path, open_read


@dataclass
class Encoded:
    """A batch's model inputs: ``inputs`` holds one entry per row in ``rows``."""

    rows: np.ndarray  # indices into the batch of the rows that encoded
    inputs: dict  # name -> numpy array with len(rows) leading entries
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> (code, text)
    tokens: list | None = None  # text: the n-grams of each row; tables: column=value
    #: images read from files: row -> 128-bit fingerprint (hi, lo) of the file's bytes,
    #: the row's content (its path names where the content is, not what it is)
    file_content: dict[int, tuple[int, int]] = field(default_factory=dict)


# images -----------------------------------------------------------------------------
@dataclass
class ImageEncoder:
    """Decode, convert to ``channels`` channels, resize to ``size`` x ``size``, uint8."""

    size: int
    channels: int
    numeric_scale: float = 1.0  # multiplies numeric arrays into 0..255
    #: the most common level of each cell of the token grid on the fitting sample, row
    #: by row (see :func:`pixel_tokens`); None: no tokens
    modes: bytes | None = None

    @classmethod
    def fit(cls, values: Sequence[Any], max_size: int = 64) -> "ImageEncoder":
        """Choose size and channels from a sample: the most common size (square side,
        at most ``max_size``) and colour if any sampled image has colour."""
        sizes: Counter = Counter()
        colour = False
        peak = 0.0
        first_error = None
        for v in values:
            try:
                img, numeric = to_pil_or_array(v)
            except Exception as exc:
                first_error = first_error or _short(exc)
                continue
            if numeric is not None:
                sizes[numeric.shape[-1]] += 1
                peak = max(peak, float(np.nanmax(numeric)) if numeric.size else 0.0)
                colour |= numeric.ndim == 3 and numeric.shape[0] == 3
            else:
                sizes[max(img.size)] += 1
                colour |= img.mode not in ("L", "1", "I;16", "I", "F", "LA")
        if not sizes:
            raise InputError(
                "no image in the sample could be decoded" + (f" (the first: {first_error})" if first_error else "")
                + "; an image given by its path (a string, or a {bytes, path} struct without bytes) is read "
                "from that path: a relative path from the folder of the input file that holds the row, then "
                f"from the working directory ({os.getcwd()})")
        side = min(sizes.most_common(1)[0][0], max_size)
        side = max(8, int(math.ceil(side / 4) * 4))  # the CNN halves it twice
        encoder = cls(side, 3 if colour else 1, 1.0 if peak > 1.0 else 255.0)
        x = encoder.encode(values).inputs["x"]
        if len(x):  # each token-grid cell's most common level, which makes no token
            lv = pixel_levels(x).reshape(len(x), -1)
            modes = [int(np.bincount(lv[:, j], minlength=PIXEL_LEVELS).argmax()) for j in range(lv.shape[1])]
            encoder = replace(encoder, modes=bytes(modes))
        return encoder

    def encode(self, col, folder: str | None = None) -> Encoded:
        """Encode an Arrow array (or a list) of raw image values; a relative path among
        them is read from ``folder`` (see :func:`image_file_bytes`)."""
        rows, arrays, errors, content = [], [], {}, {}
        for i, v in enumerate(_values(col)):
            if v is None:
                errors[i] = ("missing_image", "image is null")
                continue
            try:
                v = located(v, folder)
                if isinstance(v, ImageFile):
                    v = read_image(v)
                    if isinstance(v, bytes):
                        content[i] = bytes_fingerprint(v)
                arrays.append(self._one(v))
                rows.append(i)
            except Exception as exc:  # any decoder failure is the row's problem
                errors[i] = ("bad_image", f"image: cannot decode ({_short(exc)})")
        x = np.stack(arrays) if arrays else np.zeros((0, self.channels, self.size, self.size), np.uint8)
        tokens = pixel_tokens(x, self.modes) if self.modes is not None else None
        return Encoded(np.array(rows, dtype=np.int64), {"x": x}, errors, tokens, content)

    def _one(self, v) -> np.ndarray:
        from PIL import Image  # Pillow: only scans of images load it (about 0.1 s)

        img, numeric = to_pil_or_array(v)
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


@dataclass(frozen=True)
class ImageFile:
    """An image given by its path, and the folder of the input file that named it
    (None: no file, a table scanned in memory)."""

    path: str
    folder: str | None


def located(v: Any, folder: str | None) -> Any:
    """``v`` with the folder its relative path is read from: an :class:`ImageFile` for a
    path (a string, or a ``{bytes, path}`` struct without bytes), else ``v`` as it is."""
    if isinstance(v, str):
        return v if v.startswith("data:") else ImageFile(v, folder)
    if isinstance(v, (bytes, bytearray)) and _text_path(v):
        # a path with a byte that is not UTF-8 (a Latin-1 file name), which made a CSV or
        # JSONL reader take its column for bytes
        return ImageFile(os.fsdecode(bytes(v)), folder)
    if isinstance(v, dict) and v.get("bytes") is None and isinstance(v.get("path"), str) and v["path"]:
        return ImageFile(v["path"], folder)
    return v


def _text_path(v: bytes) -> bool:
    """Whether bytes are a path written as text (an image file's name, no NUL, not an
    image's own first bytes), not an image."""
    return (not v.startswith(_IMAGE_MAGIC) and len(v) < 4096 and b"\0" not in v
            and bytes(v).lower().endswith(_SUFFIX_BYTES))


_SUFFIX_BYTES = tuple(s.encode() for s in IMAGE_SUFFIXES)


def read_image(v: "ImageFile") -> bytes | str:
    """What an :class:`ImageFile` holds: the bytes of its file, or its string as it is
    when that is an image written in base64 (not a path)."""
    return v.path if inline_image(v.path) is not None else image_file_bytes(v.path, v.folder)


def bytes_fingerprint(data: bytes) -> tuple[int, int]:
    """A 128-bit fingerprint of a file's bytes, as two unsigned 64-bit integers."""
    h = hashlib.blake2b(data, digest_size=16).digest()
    return int.from_bytes(h[:8], "little"), int.from_bytes(h[8:], "little")


#: Largest image file read (bytes): a path in the data that names something else (a
#: device, a huge file) is that row's problem, not the scan's memory's.
MAX_IMAGE_FILE = 256 << 20


def _read_file(place: str) -> bytes:
    """The bytes of one file: a regular file on this machine (not a device or a pipe,
    which may never end), at most :data:`MAX_IMAGE_FILE` bytes, or a file of another
    filesystem Beam reads."""
    if is_local(place):
        local = local_path(place)
        info = os.stat(local)  # FileNotFoundError when there is none
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{place} is not a regular file")
        if info.st_size > MAX_IMAGE_FILE:
            raise ValueError(f"{place} holds {info.st_size:,} bytes, more than an image file may ({MAX_IMAGE_FILE:,})")
        with open(local, "rb") as f:
            return f.read()
    with open_read(place) as f:
        data = f.read(MAX_IMAGE_FILE + 1)
    if len(data) > MAX_IMAGE_FILE:
        raise ValueError(f"{place} holds more bytes than an image file may ({MAX_IMAGE_FILE:,})")
    return data


def image_file_bytes(path: str, folder: str | None) -> bytes:
    """The bytes of the image file at ``path``: an absolute path or a URL of a
    filesystem Beam reads as it is; a relative one from ``folder`` (the folder of the
    input file that holds the row: a CSV beside its images' folder reads on any machine,
    a cluster's workers included), and, when that folder is on this machine and holds
    no such file, from the working directory. With no folder (a table scanned in
    memory), from the working directory."""
    if not path:
        raise ValueError("the image path is empty")
    if folder is None or is_absolute(path):
        return _read_file(path)
    places = [join(folder, path)]
    if is_local(folder) and not isinstance(folder, ImageFolderPath):
        places.append(os.path.abspath(path))
    for place in dict.fromkeys(places):
        try:
            return _read_file(place)
        except FileNotFoundError:
            continue
    if len(places) == 1:
        whose = "the folder of images" if isinstance(folder, ImageFolderPath) else "the input file's folder"
        raise FileNotFoundError(f"no image file {path!r} in {folder} ({whose})")
    raise FileNotFoundError(
        f"no image file {path!r} in {folder} (the input file's folder) or in the working directory ({os.getcwd()})"
    )


#: The first bytes of the image formats read here (PNG, JPEG, GIF, BMP, WebP, TIFF): a
#: string whose base64 decodes to one of them is an image written in base64, not a path.
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def inline_image(v: str) -> bytes | None:
    """The bytes of an image written into a string: a data URI
    (``data:image/png;base64,...``, as JSON Lines of images often hold them) or plain
    base64 of an image file (recognised by the file's first bytes); None for any other
    string (a path)."""
    if v.startswith("data:"):
        head, sep, body = v.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ValueError("a data URI of an image must be base64 (data:image/png;base64,...)")
        return _base64(body)
    if len(v) < 64 or not v[:24].isascii():
        return None
    try:
        start = base64.b64decode(v[:24], validate=True)
    except ValueError:  # binascii.Error: not base64, a path
        return None
    return _base64(v) if start.startswith(_IMAGE_MAGIC) else None


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except ValueError as exc:
        raise ValueError(f"the image's base64 does not decode ({exc})") from None


def to_pil_or_array(v, folder: str | None = None):
    """(PIL image, None) for encoded bytes, an image's path or an image written in a
    string (:func:`inline_image`), or (None, float array) for numbers. A relative path is
    read from ``folder`` (see :func:`image_file_bytes`)."""
    from PIL import Image

    v = located(v, folder)
    if isinstance(v, ImageFile):
        v = read_image(v)
    if isinstance(v, dict):  # a struct with its bytes (one with only a path is located above)
        v = v.get("bytes")
        if v is None:
            raise ValueError("struct has neither bytes nor path")
    elif isinstance(v, str):  # an image written in the string (a path is located above)
        v = inline_image(v)
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
#: Scripts written without spaces between words (Hiragana, Katakana, CJK ideographs,
#: Thai): each character is a word, and word pairs stand in for words.
_UNSPACED = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: Combining marks, which Python's ``\\w`` leaves out: the vowel signs of the Indic
#: scripts, Hebrew and Arabic points, accents of decomposed Latin text.
_MARKS = ("\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670"
          "\u06d6-\u06ed\u0900-\u0dff\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f")
#: A word: a run of letters, digits, marks and apostrophes of any script (not the
#: underscore), or one character of a script without spaces. On ASCII text this is
#: ``[a-z0-9']+`` of the lower-cased text.
_TOKEN = re.compile(rf"[{_UNSPACED}]|(?:(?![{_UNSPACED}])[^\W_]|[{_MARKS}'])+")
#: The same on ASCII text (three times faster: most texts take this path)
_ASCII_TOKEN = re.compile(r"[a-zA-Z0-9']+")
#: What a word was before words of every script were read (encoders fitted then)
_ASCII_WORD = re.compile(r"[a-z0-9']+")


def _token(text: str) -> re.Pattern:
    return _ASCII_TOKEN if text.isascii() else _TOKEN


def words_of(text: str, ascii_only: bool = False) -> list[str]:
    """The words of a text as the text encoder reads them, each lower-cased (as
    :func:`word_spans` reads them). ``ascii_only``: as encoders fitted before words of
    every script were read (``[a-z0-9']+`` of the lower-cased text)."""
    if ascii_only or text.isascii():
        text = text.lower()
        return _ASCII_WORD.findall(text) if ascii_only else _ASCII_TOKEN.findall(text)
    return [w.lower() for w in _TOKEN.findall(text)]


def word_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, word)`` of each word of ``text``, the word lower-cased."""
    return [(m.start(), m.end(), m.group().lower()) for m in _token(text).finditer(text)]


def ngrams(text: str, n: int = 2, ascii_only: bool = False) -> list[str]:
    words = words_of(text, ascii_only)
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
    #: words of a-z and digits only, as encoders fitted before words of every script
    #: were read (a reference state saved then reads its rows as its proxy learned them)
    ascii_only: bool = False
    #: the tokens of each row also name its sentences' shallow structure, for
    #: ``token_trigger`` (:mod:`poisonscan.detectors.structure`); not in encoders fitted
    #: before they were read, whose states were fitted without them
    structures: bool = True
    #: the first sentence's form is read where it is one segment too (``§starts``); not
    #: in encoders fitted before it was read
    starts: bool = True

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"ascii_only": True, "structures": False, "starts": False, **state})

    def encode(self, col) -> Encoded:
        """Encode an Arrow array (or a list) of texts."""
        rows, id_rows, w_rows, grams_rows, errors = [], [], [], [], {}
        for i, v in enumerate(_values(col)):
            if v is None:
                errors[i] = ("missing_text", "text is null")
                continue
            try:
                text = text_of(v)
                grams = ngrams(text, self.max_ngram, self.ascii_only)
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
            shape = (
                structure_tokens(text, lambda t: words_of(t, self.ascii_only), self.starts) if self.structures else []
            )
            grams_rows.append(sorted(counts) + shape)
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
#: a bound on the numbers per column that become value tokens (the accumulator's memory)
_MAX_REPEATED = 4096


def _number_text(v: float) -> str:
    """A number as a value token names it: ``3`` for a whole number, else its shortest repr."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


@dataclass
class TabularEncoder:
    """Numeric columns standardised (plus a missing flag); categorical ones one-hot over
    their most frequent values (plus "other" and "missing"). Each row's categorical values
    also come out as ``column=value`` tokens, for the ``value_trigger`` detector, and so
    do its numbers that two or more rows of the fitting sample hold (a number stamped on
    many rows is a value like any category; the 4,096 most frequent per column)."""

    numeric: list  # [(column, mean, sd)]
    categorical: list  # [(column, [values])]
    #: per numeric column, the numbers two or more sampled rows hold
    repeated: dict = field(default_factory=dict)
    #: the numeric columns that hold dates, timestamps, times or durations (read as
    #: seconds): column -> kind, so their value tokens read as dates and times
    times: dict = field(default_factory=dict)
    #: the numeric columns of text whose numbers are grouped by commas ("17,800")
    grouped: tuple = ()

    @property
    def width(self) -> int:
        return 2 * len(self.numeric) + sum(len(v) + 2 for _, v in self.categorical)

    @classmethod
    def fit(cls, table: pa.Table, columns: Sequence[str], max_categories: int = 20) -> "TabularEncoder":
        """Numeric columns: columns of numbers or booleans, and columns of text in which
        at least :data:`NUMBER_SHARE` of the sampled values present are numbers (a
        column of numbers with a few typos, which pyarrow reads as text: its rows that
        are not numbers are rejected, ``not_a_number``). Other text columns are
        categorical."""
        numeric, categorical, repeated, times, grouped = [], [], {}, {}, []
        for c in columns:
            col = table.column(c)
            t = col.type
            if pa.types.is_dictionary(t):
                col, t = col.cast(t.value_type), t.value_type
            commas = comma_grouped(col)
            if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                    or is_time_or_decimal(t) or mostly_numbers(col, commas)):
                if commas:
                    grouped.append(c)
                x, _ = column_numbers(col, commas)
                x = x[np.isfinite(x)]
                mean = float(x.mean()) if x.size else 0.0
                sd = float(x.std()) if x.size and x.std() > 0 else 1.0
                numeric.append((c, mean, sd))
                kind = _time_kind(t)
                if kind is not None:
                    times[c] = kind
                values, counts = np.unique(x, return_counts=True)
                top = np.lexsort((values, -counts))[:_MAX_REPEATED]  # most frequent, then smallest
                top = top[counts[top] >= 2]
                if top.size:
                    repeated[c] = np.sort(values[top])
            elif is_string_type(t):
                counts = Counter(v for v in col.to_pylist() if v is not None)
                top = sorted(counts, key=lambda v: (-counts[v], v))[:max_categories]
                categorical.append((c, top))
            else:
                raise InputError(f"tabular column {c!r} holds {t}; give numbers or strings")
        return cls(numeric, categorical, repeated, times, tuple(grouped))

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        n = batch.num_rows
        parts = []
        names = batch.schema.names
        tokens: list = [[] for _ in range(n)]
        errors: dict[int, tuple[str, str]] = {}
        for c, mean, sd in self.numeric:
            if c in names:
                x, bad = column_numbers(batch.column(c), c in getattr(self, "grouped", ()))
                for i, value in bad.items():
                    errors.setdefault(i, ("not_a_number", (
                        f"column {c!r} holds {value[:_QUOTED]!r}, not a number, where the column's values are "
                        "numbers (write a missing value as an empty cell)"
                    )))
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
            if c in self.repeated:
                for i in np.flatnonzero(np.isin(x, self.repeated[c])):
                    tokens[i].append(f"{c}={_value_text(x[i], getattr(self, 'times', {}).get(c))}")
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
        if not errors:
            return Encoded(np.arange(n, dtype=np.int64), {"x": x}, {}, tokens)
        rows = np.array([i for i in range(n) if i not in errors], dtype=np.int64)
        return Encoded(rows, {"x": x[rows]}, errors, [tokens[i] for i in rows])


#: A text column is a column of numbers when at least this share of its sampled values
#: (those present) are numbers: the rest are taken for typos and their rows rejected.
#: Below it, the column is categorical (its numbers are categories like its words).
NUMBER_SHARE = 0.95

_QUOTED = 60  # how much of a value that is not a number its reason quotes

#: A number written as text, as pyarrow's CSV reader reads one (decimal, exponent,
#: ``nan``, ``inf``), around spaces.
_NUMBER = r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|[nN][aA][nN]|[iI][nN][fF]([iI][nN][iI][tT][yY])?)\s*$"
#: A number grouped in thousands by commas, as a spreadsheet exports large numbers
#: ("17,800", "-1,234,567.5"), read without its commas in a column that holds no
#: :data:`_COMMA_DECIMAL` that is not one (:func:`comma_grouped`). A decimal-comma CSV's
#: numbers reach the encoder written with a point (:func:`..io.sources._decimal_points`).
_GROUPED = r"^\s*[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d*)?\s*$"
#: A number written with a decimal comma ("0,935", "12,5"; "2,770" may be either)
_COMMA_DECIMAL = r"^\s*[+-]?\d+,\d+\s*$"


def column_numbers(col, grouped: bool = False) -> tuple[np.ndarray, dict[int, str]]:
    """A column's values as float64 (NaN where missing or not a number) and ``{row:
    value}`` for the text values that are not numbers. Missing: null, empty, or one of
    the words pyarrow's CSV reader takes for a missing value (``NA``, ``null``, ``N/A``,
    ...: a column read as text keeps them as words)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if _time_kind(col.type) is not None:
        return _seconds(col), {}
    if not is_string_type(col.type):
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64), {}
    x, bad, _ = _text_numbers(col, grouped)
    return x, {int(i): col[int(i)].as_py() for i in np.flatnonzero(bad)}


#: What pyarrow's CSV reader reads as a missing value ("", "NA", "null", "N/A", "nan", ...)
_MISSING_WORDS = pa.array(list(pacsv.ConvertOptions().null_values), pa.string())


def comma_grouped(col) -> bool:
    """Whether a text column writes numbers grouped in thousands by commas ("17,800")
    and holds none written with a decimal comma that cannot be one ("0,935", "12,5",
    "1,2345"): in a column of weights written "2,770" and "0,935" the comma is a
    decimal comma, and its "2,770" is not 2770."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not is_string_type(col.type) or not len(col):
        return False
    grouped = pc.match_substring_regex(col, _GROUPED)
    if not pc.any(grouped).as_py():
        return False
    decimal = pc.and_(pc.match_substring_regex(col, _COMMA_DECIMAL), pc.invert(grouped))
    return not pc.any(decimal).as_py()


def _text_numbers(col: pa.Array, grouped: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A text column's numbers (float64, NaN where missing or not a number), which values
    are not numbers, and which are missing (null, empty or a word for a missing value).
    ``grouped``: numbers grouped in thousands by commas are numbers (:func:`comma_grouped`)."""
    text = pc.utf8_trim_whitespace(col)
    missing = pc.or_(pc.equal(pc.utf8_length(text), 0), pc.is_in(text, value_set=_MISSING_WORDS))
    if grouped:
        hit = pc.match_substring_regex(text, _GROUPED)
        text = pc.if_else(hit, pc.replace_substring(text, ",", ""), text)
    number = pc.match_substring_regex(text, _NUMBER)
    usable = pc.and_kleene(number, pc.invert(missing))
    x = pc.if_else(usable, text, pa.scalar(None, pa.string())).cast(pa.float64())
    bad = pc.and_(pc.invert(number), pc.invert(missing))  # null where the value is null
    return (
        np.asarray(x.to_numpy(zero_copy_only=False), dtype=np.float64),
        bad.fill_null(False).to_numpy(zero_copy_only=False),
        missing.fill_null(True).to_numpy(zero_copy_only=False),
    )


_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def _seconds(col: pa.Array) -> np.ndarray:
    """Dates, timestamps and durations as seconds (since 1970-01-01 for dates and
    timestamps, in UTC), times of day as seconds since midnight; NaN where null."""
    t = col.type
    if pa.types.is_date32(t):
        ticks, per_second = col.cast(pa.int32()), 1.0 / 86400
    elif pa.types.is_date64(t):
        ticks, per_second = col.cast(pa.int64()), 1e3
    else:
        ticks, per_second = col.cast(pa.int64() if t.bit_width == 64 else pa.int32()), _PER_SECOND[t.unit]
    x = np.asarray(ticks.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return x / per_second


def _time_kind(t: pa.DataType) -> str | None:
    for kind, test in (("date", pa.types.is_date), ("timestamp", pa.types.is_timestamp),
                       ("time", pa.types.is_time), ("duration", pa.types.is_duration)):
        if test(t):
            return kind
    return None


def _value_text(v: float, kind: str | None) -> str:
    """A number of a value token as its column holds it: a date, timestamp (UTC), time
    of day or duration where the column holds one (:func:`_seconds`), else the number."""
    if kind is None:
        return _number_text(v)
    try:
        if kind == "date":
            return (datetime.date(1970, 1, 1) + datetime.timedelta(seconds=v)).isoformat()
        if kind == "timestamp":
            return (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=v)).isoformat(sep=" ")
        if kind == "time":
            return (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=v)).time().isoformat()
    except OverflowError:  # beyond the years datetime holds: the number of seconds
        pass
    return f"{_number_text(v)} s"


def mostly_numbers(col, grouped: bool | None = None) -> bool:
    """Whether a text column's present values are at least :data:`NUMBER_SHARE` numbers
    (``grouped``: numbers grouped by commas count; None: where :func:`comma_grouped`)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not is_string_type(col.type):
        return False
    _, bad, missing = _text_numbers(col, comma_grouped(col) if grouped is None else grouped)
    present = int((~missing).sum())
    return present > 0 and present - int(bad.sum()) >= NUMBER_SHARE * present


def mostly_image_paths(values: Sequence[Any]) -> bool:
    """Whether at least :data:`NUMBER_SHARE` of the strings present among ``values`` are
    names of image files (end in one of :data:`IMAGE_SUFFIXES`, without white space at
    either end) or images written in the string (:func:`inline_image`)."""
    present = [v for v in values if isinstance(v, str) and v]
    named = sum(1 for v in present if (v == v.strip() and v.lower().endswith(IMAGE_SUFFIXES)) or _is_inline(v))
    return bool(present) and named >= NUMBER_SHARE * len(present)


def _is_inline(v: str) -> bool:
    try:
        return v.startswith("data:image/") or inline_image(v) is not None
    except ValueError:
        return False


def _values(col) -> list:
    return col.to_pylist() if hasattr(col, "to_pylist") else list(col)


def _short(exc: BaseException) -> str:
    """A decoder's message on one line, without object addresses (``<_io.BytesIO object
    at 0x7f...>`` differs from run to run; the reason must not)."""

    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"<\1>", text)
    return text[:300]
