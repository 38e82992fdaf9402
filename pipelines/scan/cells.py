"""Reading cells: keys that may arrive as bytes, and numbers written as text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from poisonscan.pipelines.represent.encoders import undecodable_reason


def undecodable(arr) -> np.ndarray:
    """Which values of a binary key column are not UTF-8 text. (A CSV or JSONL cell with
    a stray byte makes the reader type its whole column binary.)"""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    out = np.zeros(len(arr), dtype=bool)
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        return out
    for i, v in enumerate(arr.to_pylist()):
        if v is not None:
            try:
                v.decode("utf-8")
            except UnicodeDecodeError:
                out[i] = True
    return out


def not_whole(arr) -> np.ndarray:
    """Which values of a float key column are not whole numbers an int64 holds (NaN
    included: a missing value written as a float)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not pa.types.is_floating(arr.type):
        return np.zeros(len(arr), dtype=bool)
    x = np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    null = arr.is_null().to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(x) & (np.floor(x) == x) & (np.abs(x) < 2.0**63)
    return ~whole & ~null


def _why_undecodable(value: bytes) -> str:

    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return undecodable_reason(exc)
    return "decodes"


def normalize_key(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Integer keys as int64, string keys as string (dictionary-decoded); binary values
    that are not UTF-8 become null (:func:`undecodable` names them), and so do the
    values of a column of floats that are not whole numbers (:func:`not_whole` names
    them: pandas writes a column of integers with a missing value as floats, ``1.0``)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
    if pa.types.is_floating(arr.type):
        x = np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = not_whole(arr) | arr.is_null().to_numpy(zero_copy_only=False)
        ints = pa.array(np.where(bad, 0, x).astype(np.int64), mask=bad)
        return ints if target == pa.int64() else ints.cast(target)
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        bad = undecodable(arr)
        if bad.any():
            arr = pc.if_else(pa.array(bad), pa.scalar(None, arr.type), arr)
    if arr.type != target:
        arr = arr.cast(target)
    return arr


def key_values(arr: pa.Array) -> np.ndarray:
    """Keys as a numpy array (int64, or object for strings); nulls as 0 / None."""
    if pa.types.is_integer(arr.type):
        return pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)


def parse_number_text(col: pa.Array) -> tuple[pa.Array, dict[int, str]]:
    """Numbers written in strings ("[0.1, 2, 3]", "0.1 2 3", "0.1;2;3") as lists.

    Returns the list array (null where a row cannot be parsed) and, for those rows,
    the offending text.
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    col = col.cast(pa.string())
    trimmed = pc.utf8_trim(col, characters="[]() \t\r\n")
    parts = pc.split_pattern_regex(trimmed, pattern=r"[\s,;]+")
    try:
        return parts.cast(pa.list_(pa.float64())), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values: list = []
    bad: dict[int, str] = {}
    for i, item in enumerate(parts.to_pylist()):
        if item is None:
            values.append(None)
            continue
        try:
            values.append([float(v) for v in item if v != ""] if item != [""] else [])
        except ValueError:
            token = next(v for v in item if not _is_float(v))
            bad[i] = token
            values.append(None)
    return pa.array(values, type=pa.list_(pa.float64())), bad


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _vectors(col: pa.Array, rows: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(matrix of the rows' vectors, mask of rows holding a null value)."""
    if len(rows) == len(col) and col.null_count == 0:
        sub = col
    else:
        sub = col.take(pa.array(rows, type=pa.int64()))
    flat = sub.flatten()
    has_null = np.zeros(len(rows), dtype=bool)
    if flat.null_count:
        has_null = (
            flat.is_null().to_numpy(zero_copy_only=False).reshape(len(rows), dim).any(axis=1)
        )
    values = flat.to_numpy(zero_copy_only=False)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    return values.reshape(len(rows), dim), has_null
