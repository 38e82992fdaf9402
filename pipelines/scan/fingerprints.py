"""128-bit fingerprints of ids and of row content, and the seeded priorities that
choose uniform samples whatever the order rows arrive in."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from poisonscan.pipelines.represent.encoders import text_of

# Two fixed seeds give a 128-bit id fingerprint (duplicate detection); a third, mixed
# with the scan's seed, gives each row its sampling priority.
_ID_SEEDS = (0x5EED_0001, 0x5EED_0002)

_WIDE_SEEDS = (0x5EED_0064, 0x5EED_0065)  # vectors that float32 cannot hold exactly

_PRIORITY_SEED = 0x5EED_1000


def fingerprints(ids: pa.Array, seeds: tuple[int, int] = _ID_SEEDS) -> tuple[np.ndarray, np.ndarray]:
    """128-bit fingerprint of each value (an id, a row's bytes) as two uint64 arrays."""
    s = pl.from_arrow(ids)
    return (
        s.hash(seed=seeds[0]).to_numpy().astype(np.uint64, copy=False),
        s.hash(seed=seeds[1]).to_numpy().astype(np.uint64, copy=False),
    )


def priorities(ids: pa.Array, seed: int) -> np.ndarray:
    """Each row's sampling priority: a hash of its id and the seed."""
    mixed = (_PRIORITY_SEED * 1_000_003 + int(seed)) % (1 << 63)
    return pl.from_arrow(ids).hash(seed=mixed).to_numpy().astype(np.uint64, copy=False)


def content_strata(batch: pa.RecordBatch, kinds, rows: np.ndarray) -> np.ndarray:
    """Each row's stratum for judging its repeats (:mod:`.content`): a text's length in
    words, 0 for other content."""
    if kinds.input.kind != "text" or len(rows) == 0:
        return np.zeros(len(rows), np.int64)
    values = batch.column(kinds.input.column).take(pa.array(rows, pa.int64())).to_pylist()

    return np.fromiter((0 if v is None else len(text_of(v).split()) for v in values), np.int64, len(values))


def content_fingerprints(batch: pa.RecordBatch, kinds, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """128-bit fingerprint of each row's content (its input columns), for ``rows``."""
    if len(rows) == 0:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    cols = [c for c in kinds.input.columns if c in batch.schema.names]
    sub = batch.take(pa.array(rows, pa.int64())).select(cols)
    frame = pl.from_arrow(pa.Table.from_batches([sub]))
    return (
        frame.hash_rows(seed=_ID_SEEDS[0]).to_numpy().astype(np.uint64, copy=False),
        frame.hash_rows(seed=_ID_SEEDS[1]).to_numpy().astype(np.uint64, copy=False),
    )


def vector_fingerprints(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """128-bit fingerprint of each row of ``X`` by value: rows with equal finite numbers
    (in any float or integer storage, 0.0 and -0.0 alike) get equal fingerprints. (Rows
    holding NaN or infinity are rejected before they are fingerprinted.)

    Each row's canonical bytes are viewed, without a copy, as one fixed-size binary value
    and hashed with the same seeded hash as the ids; far cheaper than hashing the Arrow
    rows column by column for wide vectors. The canonical form is float32 for a row that
    float32 holds exactly (every float32 input; float64 and integer rows whose numbers
    fit), otherwise float64 under other seeds; hashing half the bytes matters at a
    million rows. Integers beyond 2**53 are compared as the float64 the detectors see.
    """
    if X.dtype == np.float32:
        X = np.ascontiguousarray(X)
        # -0.0 (bits 0x80000000, the least int32): hash as 0.0, a copy only then; a min
        # reduction finds it without a boolean array the size of the batch
        if X.size and X.view(np.int32).min() == np.iinfo(np.int32).min:
            X = X + np.float32(0.0)
        return _hash_rows(X, _ID_SEEDS)
    wide = np.add(X, 0.0, dtype=np.float64)
    with np.errstate(over="ignore"):
        narrow = wide.astype(np.float32)
    exact = (narrow == wide).all(axis=1)
    if exact.all():
        return _hash_rows(narrow, _ID_SEEDS)
    hi = np.empty(len(X), np.uint64)
    lo = np.empty(len(X), np.uint64)
    hi[exact], lo[exact] = _hash_rows(narrow[exact], _ID_SEEDS)
    hi[~exact], lo[~exact] = _hash_rows(wide[~exact], _WIDE_SEEDS)
    return hi, lo


def _hash_rows(X: np.ndarray, seeds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    bits = np.ascontiguousarray(X)
    n, dim = bits.shape
    width = dim * bits.itemsize
    return fingerprints(pa.Array.from_buffers(pa.binary(width), n, [None, pa.py_buffer(bits)]), seeds)


def _grouped_vector_fingerprints(groups: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`vector_fingerprints` of the feature vectors of ``rows`` (the valid rows,
    which the groups by vector length cover)."""
    hi = np.zeros(len(rows), np.uint64)
    lo = np.zeros(len(rows), np.uint64)
    for rows_d, X in groups.values():
        at = np.searchsorted(rows, rows_d)
        hi[at], lo[at] = vector_fingerprints(X)
    return hi, lo
