"""Pass 0 and the content check's keys: fingerprints of ids and of row content,
bucketed so that every copy of a key meets in one place."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Iterable

import numpy as np
import pyarrow as pa

from poisonscan.pipelines.io.columns import ColumnKinds
from poisonscan.pipelines.io.sources import encode_position
from poisonscan.pipelines.scan.cells import normalize_key
from poisonscan.pipelines.scan.fingerprints import fingerprints
from poisonscan.pipelines.scan.rows import Prepared

N_ID_BUCKETS = 16


class _KeySet:
    """Columns of keys (one bucket of one batch), concatenated field by field."""

    @classmethod
    def concat(cls, parts: Iterable) -> "_KeySet":
        """Hashes stay uint64, positions and strata int64, for no part as for many."""
        names = [f.name for f in dataclass_fields(cls)]
        parts = [p for p in parts if len(p.hi)]
        if not parts:
            return cls(*(np.empty(0, np.int64 if n in ("positions", "stratum") else np.uint64) for n in names))
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


@dataclass
class IdKeys(_KeySet):
    """Fingerprints and positions of non-null ids (one bucket of one batch)."""

    hi: np.ndarray
    lo: np.ndarray
    positions: np.ndarray

    def duplicates(self) -> dict[tuple[int, int], int]:
        """{fingerprint: copies} for fingerprints seen more than once. Every copy is
        rejected: which one to keep could only be chosen by the order the rows came in."""
        order, runs = _repeated_runs(self.hi, self.lo, self.positions)
        return {(int(self.hi[order[a]]), int(self.lo[order[a]])): int(b - a) for a, b in runs}


def _repeated_runs(hi: np.ndarray, lo: np.ndarray, positions: np.ndarray, rank: np.ndarray | None = None):
    """The keys seen more than once: their indices sorted by (hi, lo, rank, position),
    and the (start, end) of each run of one key in that order. ``rank`` (a hash of each
    row's id) makes the first of a run the same whatever order the rows came in.

    One sort of ``hi`` finds the candidates (keys are nearly always unique); only those
    are sorted on all three fields, a fraction of the cost of sorting every key so.
    """
    if len(hi) < 2:
        return np.empty(0, np.int64), []
    s = np.sort(hi)
    repeated_hi = s[1:][s[1:] == s[:-1]]
    if len(repeated_hi) == 0:
        return np.empty(0, np.int64), []
    repeated_hi = np.unique(repeated_hi)
    at = np.minimum(np.searchsorted(repeated_hi, hi), len(repeated_hi) - 1)
    cand = np.flatnonzero(repeated_hi[at] == hi)
    keys = (positions[cand],) + ((rank[cand],) if rank is not None else ()) + (lo[cand], hi[cand])
    order = cand[np.lexsort(keys)]
    h, l = hi[order], lo[order]
    same = (h[1:] == h[:-1]) & (l[1:] == l[:-1])
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    ends = np.append(starts[1:], len(order))
    return order, [(int(a), int(b)) for a, b in zip(starts, ends) if b - a > 1]


def batch_ids(
    batch: pa.RecordBatch, file_index: int, first_row: int, kinds: ColumnKinds, id_column: str
) -> IdKeys:
    """Fingerprints and positions of a batch's non-null ids."""
    n = batch.num_rows
    ids = (
        normalize_key(batch.column(id_column), kinds.id_type)
        if id_column in batch.schema.names
        else pa.nulls(n, kinds.id_type)
    )
    keep = ~ids.is_null().to_numpy(zero_copy_only=False)
    hi, lo = fingerprints(ids)
    positions = encode_position(file_index, first_row + np.arange(n, dtype=np.int64))
    return IdKeys(hi[keep], lo[keep], positions[keep])


def batch_id_keys(
    batch: pa.RecordBatch, file_index: int, first_row: int, kinds: ColumnKinds, id_column: str
) -> list[tuple[int, IdKeys]]:
    """(bucket, keys) for a batch's non-null ids, split into buckets by fingerprint."""
    keys = batch_ids(batch, file_index, first_row, kinds, id_column)
    return [(b, IdKeys(*parts)) for b, parts in _by_bucket(keys.hi, keys.hi, keys.lo, keys.positions)]


def _by_bucket(hi: np.ndarray, *arrays: np.ndarray) -> list[tuple[int, list[np.ndarray]]]:
    """``arrays`` split by the bucket of fingerprint ``hi``: (bucket, the bucket's rows
    of each array, in their order) for each bucket present, in bucket order. One stable
    sort (a radix sort on bytes), then slices: a boolean mask per bucket and array cost
    three times as much."""
    bucket = (hi % N_ID_BUCKETS).astype(np.uint8)  # N_ID_BUCKETS <= 256
    order = np.argsort(bucket, kind="stable")
    arrays = [a[order] for a in arrays]
    counts = np.bincount(bucket, minlength=N_ID_BUCKETS)
    ends = np.cumsum(counts).tolist()
    return [(b, [x[ends[b] - n : ends[b]] for x in arrays]) for b, n in enumerate(counts.tolist()) if n]


def duplicate_ids(keys: Iterable[IdKeys]) -> dict[tuple[int, int], int]:
    """``{fingerprint: copies}`` of the ids seen more than once among ``keys``
    (:func:`batch_ids`): pass 0 in one process. The pipeline's per-bucket combine gives
    the same, bucket by bucket (a bucket holds every copy of its fingerprints)."""
    return IdKeys.concat(keys).duplicates()


@dataclass
class ContentKeys(_KeySet):
    """Content fingerprints, label hashes, positions, strata (a text's length in words,
    else 0) and id hashes of valid rows (one bucket). Of a repeated content, the copy
    of the lowest id hash is the one kept: the same copy whatever the row order."""

    hi: np.ndarray
    lo: np.ndarray
    label: np.ndarray
    positions: np.ndarray
    stratum: np.ndarray
    rank: np.ndarray

    def duplicates(self) -> dict[tuple[int, int], tuple[int, bool, int, int]]:
        """{fingerprint: (first position, whether the copies carry different labels,
        copies, stratum)} for content seen more than once (see :mod:`.content` for what
        a repeat means)."""
        order, runs = _repeated_runs(self.hi, self.lo, self.positions, self.rank)
        out = {}
        for a, b in runs:
            first = order[a]
            labels = self.label[order[a:b]]
            out[(int(self.hi[first]), int(self.lo[first]))] = (
                int(self.positions[first]), bool((labels != labels[0]).any()), int(b - a),
                int(self.stratum[first]),
            )
        return out


def content_keys(prep: Prepared) -> list[tuple[int, ContentKeys]]:
    """(bucket, keys) of a pass-1 batch's valid rows, split into buckets by fingerprint."""
    if prep.content is None or len(prep.content[0]) == 0:
        return []
    rows, hi, lo, lab, stratum, rank = prep.content
    positions = prep.positions[rows]
    return [(b, ContentKeys(*parts)) for b, parts in _by_bucket(hi, hi, lo, lab, positions, stratum, rank)]
