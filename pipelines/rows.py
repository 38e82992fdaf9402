"""Row validation: an Arrow record batch in, valid vectors and reasons for the rest out.

Every row read ends up either valid (scanned) or rejected with a reason; nothing is
dropped silently. The checks, with their codes:

============== ===============================================================
code           rejected when
============== ===============================================================
missing_id     the id is null
missing_label  the label is null
missing_features  the features are null
empty_features the feature list is empty
bad_number     the features (written as text) are not all numbers, or not UTF-8 text
null_in_features  a feature value is null
nan_features   a feature value is NaN
inf_features   a feature value is infinite
huge_features  a feature value lies beyond +-2**50 (:data:`MAX_FEATURE_MAGNITUDE`)
wrong_length   the vector's length differs from the data set's (the most common one)
duplicate_id   the id appears more than once in the input (every copy is rejected)
small_class    the row's class has too few valid rows to be judged
undeclared_label  the label is not in the declared set (``--labels``)
out_of_range   a feature value lies outside ``--feature-range``
duplicate_content  same content and label as another row (one copy is kept: the same whatever the row order)
conflicting_labels  the same content appears with different labels (all rejected)
                   (both only where the content identifies a row: see ``.content``)
missing_image, bad_image, missing_text, empty_text, bad_text  raw inputs that are null or unusable
bad_id_encoding, bad_label_encoding  the id or label is not UTF-8 text (a stray byte
               in a CSV or JSONL cell)
============== ===============================================================

A user's row expectations (``--expectations``) reject with the expectation's name as code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from .sources import ColumnKinds, decode_position, encode_position

# Two fixed seeds give a 128-bit id fingerprint (duplicate detection); a third, mixed
# with the scan's seed, gives each row its sampling priority.
_ID_SEEDS = (0x5EED_0001, 0x5EED_0002)
_WIDE_SEEDS = (0x5EED_0064, 0x5EED_0065)  # vectors that float32 cannot hold exactly
_PRIORITY_SEED = 0x5EED_1000


#: Feature values beyond this magnitude are rejected (``huge_features``): the scan's
#: statistics sum squares in float32 (its range ends near 2**128), and at most 2**50 per
#: value keeps any sum over up to 2**28 rows inside it. Embeddings and measurements lie
#: far within it; a value beyond it is an encoding error (a sentinel, an id, a raw count).
MAX_FEATURE_MAGNITUDE = float(2**50)

@dataclass
class RowChecks:
    """What row validation needs to know beyond the batch itself."""

    kinds: ColumnKinds
    id_column: str
    label_column: str
    file_paths: Mapping[int, str] = field(default_factory=dict)
    #: (fingerprint hi, lo) -> number of copies, for duplicated ids only.
    duplicates: Mapping[tuple[int, int], int] = field(default_factory=dict)
    #: Vector length every row must have (pass 2); None in pass 1 (rows are grouped).
    expected_dim: int | None = None
    #: Valid-row counts of classes too small to judge (pass 2).
    small_classes: Mapping[Any, int] = field(default_factory=dict)
    min_class_rows: int = 0
    seed: int = 0
    #: raw inputs: the encoder fitted on the training sample
    encoder: Any = None
    #: data-quality expectations (see poisonscan.expectations)
    declared_labels: frozenset | None = None
    feature_range: tuple | None = None
    validator: Any = None  # the user's row expectations (GX, on pandas batches)
    #: content fingerprint (hi, lo) -> (first position, labels conflict), pass 2
    content_duplicates: Mapping[tuple[int, int], tuple[int, bool]] = field(default_factory=dict)
    collect_content: bool = False


@dataclass
class Prepared:
    """One validated batch.

    ``valid`` marks the rows that are scanned. For them, ``groups`` maps each vector
    length to ``(row indices into the batch, matrix of vectors)``; in pass 2 there is
    only the expected length. ``labels``, ``ids`` and ``priority`` are per batch row.
    """

    batch: pa.RecordBatch
    positions: np.ndarray
    valid: np.ndarray
    error_code: np.ndarray  # object: None or "code[,code]"
    error: np.ndarray  # object: None or text
    labels: np.ndarray
    ids: np.ndarray
    groups: dict[int, tuple[np.ndarray, np.ndarray]]
    id_null: np.ndarray
    label_null: np.ndarray
    ids_arrow: pa.Array
    fingerprints: tuple[np.ndarray, np.ndarray] | None = None
    encoded: Any = None  # raw inputs: the encoded valid rows (see .inputs.Encoded)
    #: valid rows' content fingerprints: (rows, hi, lo, label hash, stratum, id hash)
    content: tuple | None = None

    def tokens_of(self, rows: np.ndarray) -> list:
        """The tokens of batch rows ``rows``: n-grams (text) or column=value (tables)."""
        where = {int(r): j for j, r in enumerate(self.encoded.rows)}
        return [self.encoded.tokens[where[int(r)]] for r in rows]

    @property
    def n(self) -> int:
        return self.batch.num_rows


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


def _why_undecodable(value: bytes) -> str:
    from .inputs import undecodable_reason

    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return undecodable_reason(exc)
    return "decodes"


def _raw_null(batch: pa.RecordBatch, column: str) -> np.ndarray:
    if column not in batch.schema.names:
        return np.ones(batch.num_rows, dtype=bool)
    return batch.column(column).is_null().to_numpy(zero_copy_only=False)


def normalize_key(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Integer keys as int64, string keys as string (dictionary-decoded); binary values
    that are not UTF-8 become null (:func:`undecodable` names them)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
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


def prepare(
    batch: pa.RecordBatch,
    file_index: int,
    first_row: int,
    checks: RowChecks,
    *,
    need_fingerprints: bool = False,
) -> Prepared:
    """Validate one batch (see the module docstring for the checks).

    For a features input the vectors are ready (``groups``); for a raw input the valid
    rows are encoded (``encoded``) and :func:`attach` adds their representation.
    """
    n = batch.num_rows
    kinds = checks.kinds
    positions = encode_position(file_index, first_row + np.arange(n, dtype=np.int64))
    problems: dict[int, list[tuple[str, str]]] = {}

    def reject(mask: np.ndarray, code: str, text) -> None:
        for i in np.flatnonzero(mask):
            problems.setdefault(int(i), []).append((code, text(int(i)) if callable(text) else text))

    names = batch.schema.names
    ids_arr = (
        normalize_key(batch.column(checks.id_column), kinds.id_type)
        if checks.id_column in names
        else pa.nulls(n, kinds.id_type)
    )
    labels_arr = (
        normalize_key(batch.column(checks.label_column), kinds.label_type)
        if checks.label_column in names
        else pa.nulls(n, kinds.label_type)
    )
    ids = key_values(ids_arr)
    labels = key_values(labels_arr)
    id_null = ids_arr.is_null().to_numpy(zero_copy_only=False)
    label_null = labels_arr.is_null().to_numpy(zero_copy_only=False)
    # null only after normalize_key: a binary value that is not UTF-8
    bad_id = id_null & ~_raw_null(batch, checks.id_column)
    bad_label = label_null & ~_raw_null(batch, checks.label_column)
    reject(bad_id, "bad_id_encoding", "the id is not valid UTF-8 text")
    reject(bad_label, "bad_label_encoding", "the label is not valid UTF-8 text")
    reject(id_null & ~bad_id, "missing_id", "id is null")
    reject(label_null & ~bad_label, "missing_label", "label is null")

    fp = None
    if need_fingerprints or checks.duplicates:
        fp = fingerprints(ids_arr)
    if checks.duplicates:
        hi, lo = fp
        dup_hi = np.fromiter((k[0] for k in checks.duplicates), dtype=np.uint64)
        for i in np.flatnonzero(np.isin(hi, dup_hi) & ~id_null):
            copies = checks.duplicates.get((int(hi[i]), int(lo[i])))
            if copies is not None:
                problems.setdefault(int(i), []).append(
                    (
                        "duplicate_id",
                        f"id {_py(ids[i])!r} appears {copies} times in the input; no copy is kept",
                    )
                )

    if checks.small_classes:
        for i in np.flatnonzero(~label_null):
            rows = checks.small_classes.get(labels[i])
            if rows is not None:
                problems.setdefault(int(i), []).append(
                    (
                        "small_class",
                        f"class {_py(labels[i])!r} has {rows} valid rows; at least "
                        f"{checks.min_class_rows} are needed to judge it",
                    )
                )

    if checks.declared_labels is not None:
        for i in np.flatnonzero(~label_null):
            if _py(labels[i]) not in checks.declared_labels:
                problems.setdefault(int(i), []).append(
                    ("undeclared_label", f"label {_py(labels[i])!r} is not among the declared labels")
                )

    if checks.validator is not None:
        ok = np.ones(n, dtype=bool)
        if problems:
            ok[list(problems)] = False
        rows = np.flatnonzero(ok)
        if len(rows):
            frame = batch.take(pa.array(rows, pa.int64())).to_pandas()
            for j, names_failed in checks.validator.failures(frame).items():
                for name in names_failed:
                    problems.setdefault(int(rows[j]), []).append((name, f"failed {name}"))

    encoded = None
    if kinds.input.kind == "features":
        groups = _feature_vectors(batch, kinds, checks, problems)
    else:
        groups = {}
        ok = np.ones(n, dtype=bool)
        if problems:
            ok[list(problems)] = False
        encoded = _encode(batch, kinds, checks.encoder, np.flatnonzero(ok), problems)

    valid = np.zeros(n, dtype=bool)
    for rows, _ in groups.values():
        valid[rows] = True
    if encoded is not None:
        valid[encoded.rows] = True

    content = None
    if checks.collect_content or checks.content_duplicates:
        rows = np.flatnonzero(valid)
        if kinds.input.kind == "features":
            hi, lo = _grouped_vector_fingerprints(groups, rows)
        else:
            hi, lo = content_fingerprints(batch, kinds, rows)
        label_hash = pl.from_arrow(labels_arr.take(pa.array(rows, pa.int64()))).hash(seed=_ID_SEEDS[0]).to_numpy()
        take = pa.array(rows, pa.int64())
        id_hash = pl.from_arrow(ids_arr.take(take)).hash(seed=_ID_SEEDS[1]).to_numpy().astype(np.uint64, copy=False)
        content = (
            rows, hi, lo, label_hash.astype(np.uint64, copy=False), content_strata(batch, kinds, rows), id_hash,
        )
        if checks.content_duplicates:
            dup_hi = np.fromiter((k[0] for k in checks.content_duplicates), dtype=np.uint64)
            for j in np.flatnonzero(np.isin(hi, dup_hi)):
                hit = checks.content_duplicates.get((int(hi[j]), int(lo[j])))
                if hit is None:
                    continue
                first, conflict = hit
                i = int(rows[j])
                if conflict:
                    problems.setdefault(i, []).append(
                        ("conflicting_labels", "identical content appears with different labels")
                    )
                elif first != positions[i]:
                    f_idx, f_row = decode_position(first)
                    where = checks.file_paths.get(f_idx, f"file {f_idx}")
                    problems.setdefault(i, []).append(
                        ("duplicate_content", f"exact duplicate of {_basename(where)} row {f_row}")
                    )
                else:
                    continue
                valid[i] = False
        if encoded is not None and not valid[encoded.rows].all():
            keep = valid[encoded.rows]
            encoded.rows = encoded.rows[keep]
            encoded.inputs = {k: v[keep] for k, v in encoded.inputs.items()}
            if encoded.tokens is not None:
                encoded.tokens = [t for t, k in zip(encoded.tokens, keep) if k]
        for dim, (rows_d, X) in list(groups.items()):
            keep = valid[rows_d]
            if not keep.all():
                groups[dim] = (rows_d[keep], X[keep])
                if not keep.any():
                    del groups[dim]

    error_code = np.full(n, None, dtype=object)
    error = np.full(n, None, dtype=object)
    for i, items in problems.items():
        error_code[i] = ",".join(dict.fromkeys(code for code, _ in items))
        error[i] = "; ".join(dict.fromkeys(text for _, text in items))
    return Prepared(
        batch, positions, valid, error_code, error, labels, ids, groups, id_null, label_null,
        ids_arr, fp, encoded, content,
    )


def content_strata(batch: pa.RecordBatch, kinds, rows: np.ndarray) -> np.ndarray:
    """Each row's stratum for judging its repeats (:mod:`.content`): a text's length in
    words, 0 for other content."""
    if kinds.input.kind != "text" or len(rows) == 0:
        return np.zeros(len(rows), np.int64)
    values = batch.column(kinds.input.column).take(pa.array(rows, pa.int64())).to_pylist()
    from .inputs import text_of

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


def _feature_vectors(batch, kinds, checks, problems) -> dict:
    """The vectors of the rows that passed so far, grouped by length; bad ones rejected."""
    n = batch.num_rows
    names = batch.schema.names

    def reject(mask: np.ndarray, code: str, text) -> None:
        for i in np.flatnonzero(mask):
            problems.setdefault(int(i), []).append((code, text(int(i)) if callable(text) else text))

    fcol = (
        batch.column(kinds.features_column)
        if kinds.features_column in names
        else pa.nulls(n, pa.list_(pa.float64()))
    )
    if isinstance(fcol, pa.ChunkedArray):
        fcol = fcol.combine_chunks()
    if pa.types.is_binary(fcol.type) or pa.types.is_large_binary(fcol.type):
        # numbers written as text with a stray byte in some cell (the CSV or JSONL reader
        # typed the column binary): that row is rejected, the others parsed as text
        for i in np.flatnonzero(undecodable(fcol)):
            problems.setdefault(int(i), []).append(("bad_number", f"features: {_why_undecodable(fcol[i].as_py())}"))
        fcol = normalize_key(fcol, pa.string())
    if pa.types.is_string(fcol.type) or pa.types.is_large_string(fcol.type):
        fcol, bad = parse_number_text(fcol)
        for i, token in bad.items():
            problems.setdefault(i, []).append(
                ("bad_number", f"features: {token[:40]!r} is not a number")
            )
    elif pa.types.is_null(fcol.type):
        fcol = pa.nulls(n, pa.list_(pa.float64()))
    f_null = fcol.is_null().to_numpy(zero_copy_only=False)
    parsed_bad = np.zeros(n, dtype=bool)
    for i in problems:
        if any(code == "bad_number" for code, _ in problems[i]):
            parsed_bad[i] = True
    reject(f_null & ~parsed_bad, "missing_features", "features are null")
    lengths = pc.fill_null(pc.list_value_length(fcol), -1).to_numpy(zero_copy_only=False)
    reject(lengths == 0, "empty_features", "features are empty")
    if checks.expected_dim is not None:
        wrong = (lengths > 0) & (lengths != checks.expected_dim)
        reject(
            wrong,
            "wrong_length",
            lambda i: f"features have length {lengths[i]}; the data set's vectors have "
            f"length {checks.expected_dim}",
        )
    ok = np.ones(n, dtype=bool)
    if problems:
        ok[list(problems)] = False
    ok &= lengths > 0
    groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for dim in np.unique(lengths[ok]):
        rows = np.flatnonzero(ok & (lengths == dim))
        X, has_null = _vectors(fcol, rows, int(dim))
        finite = np.isfinite(X).all(axis=1)
        with np.errstate(invalid="ignore"):
            huge = finite & (np.abs(X) > MAX_FEATURE_MAGNITUDE).any(axis=1)
        bad_rows = has_null | ~finite | huge
        if checks.feature_range is not None:
            lo_v, hi_v = checks.feature_range
            with np.errstate(invalid="ignore"):
                outside = ~bad_rows & ((X < lo_v) | (X > hi_v)).any(axis=1)
            for j in np.flatnonzero(outside):
                problems.setdefault(int(rows[j]), []).append(
                    (
                        "out_of_range",
                        f"features outside [{lo_v:g}, {hi_v:g}] (min {X[j].min():g}, max {X[j].max():g})",
                    )
                )
            bad_rows = bad_rows | outside
        if bad_rows.any():
            for j in np.flatnonzero(bad_rows):
                i = int(rows[j])
                if any(code == "out_of_range" for code, _ in problems.get(i, [])):
                    continue
                if has_null[j]:
                    problems.setdefault(i, []).append(("null_in_features", "features contain null values"))
                elif np.isnan(X[j]).any():
                    problems.setdefault(i, []).append(("nan_features", "features contain NaN"))
                elif huge[j]:
                    k = int(np.argmax(np.abs(X[j])))
                    problems.setdefault(i, []).append(
                        ("huge_features", f"feature {k} is {float(X[j, k]):g}, beyond the +-{MAX_FEATURE_MAGNITUDE:.3g} "
                         "the scan computes with safely")
                    )
                else:
                    problems.setdefault(i, []).append(("inf_features", "features contain infinite values"))
            keep = ~bad_rows
            rows, X = rows[keep], X[keep]
        if len(rows):
            groups[int(dim)] = (rows, X)
    return groups


def _encode(batch, kinds, encoder, rows: np.ndarray, problems):
    """Encode the raw input of ``rows`` (batch indices); failures become problems."""
    from .inputs import Encoded

    if encoder is None:
        raise ValueError(f"a {kinds.input.kind} input needs an encoder (fitted on the training sample)")
    if len(rows) == 0:
        return Encoded(np.empty(0, np.int64), {}, {})
    sub = batch.take(pa.array(rows, pa.int64()))
    if kinds.input.kind == "tabular":
        enc = encoder.encode(sub)
    else:
        col = sub.column(kinds.input.column) if kinds.input.column in sub.schema.names else pa.nulls(len(rows))
        enc = encoder.encode(col)
    for j, (code, text) in enc.errors.items():
        problems.setdefault(int(rows[j]), []).append((code, text))
    enc.rows = rows[enc.rows]
    enc.errors = {}
    return enc


def label_input(encoded) -> np.ndarray | None:
    """The part of a batch's encoded rows the label detectors read: a table's encoded
    columns (2-D floats), which no network fitted to the labels has seen; None for
    images and text."""
    x = encoded.inputs.get("x") if encoded is not None else None
    if x is None or x.ndim != 2 or x.dtype.kind != "f":
        return None
    return x


def attach(prep: Prepared, representation: np.ndarray, probabilities: np.ndarray | None) -> Prepared:
    """Give the encoded rows their vectors: ``[representation | encoded table |
    probabilities]`` (see :class:`.engine.Layout`)."""
    rows = prep.encoded.rows
    if len(rows):
        parts = [representation]
        table = label_input(prep.encoded)
        if table is not None:
            parts.append(table)
        if probabilities is not None:
            parts.append(probabilities)
        X = parts[0] if len(parts) == 1 else np.hstack(parts)
        prep.groups = {int(X.shape[1]): (rows, np.asarray(X, dtype=np.float32))}
    else:
        prep.groups = {}
    return prep


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
