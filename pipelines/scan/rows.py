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
not_a_number   a table's column of numbers holds a value that is not one (a typo):
               see :class:`..represent.encoders.TabularEncoder`
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
confirmed_poison  a reviewer confirmed this content, under this label, as poison in an
               earlier scan (``--decisions``; under another id only where the content
               identifies a row: see ``.decisions``)
missing_image, bad_image, missing_text, empty_text, bad_text  raw inputs that are null or unusable
non_integer_id, non_integer_label  a column of floats (pandas writes integers with a
               missing value as floats) holds an id or label that is not a whole number
               (a NaN is a missing id or label)
bad_id_encoding, bad_label_encoding  the id or label is not UTF-8 text (a stray byte
               in a CSV or JSONL cell)
unreadable_row a line of a CSV or JSONL file that its parser cannot read (not a JSON
               object, a CSV line with another number of fields than the header); it
               stands in its place as a row of nulls (:mod:`..io.lines`)
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

from poisonscan.expectations.results import label_variants
from poisonscan.pipelines.io.columns import ColumnKinds
from poisonscan.pipelines.io.sources import UNREADABLE, decode_position, encode_position
from poisonscan.pipelines.represent.encoders import Encoded
from poisonscan.pipelines.scan.cells import (
    _vectors,
    _why_undecodable,
    key_values,
    normalize_key,
    not_whole,
    parse_number_text,
    undecodable,
)
from poisonscan.pipelines.scan.decisions import content_text, label_text
from poisonscan.pipelines.scan.fingerprints import (
    _ID_SEEDS,
    _grouped_vector_fingerprints,
    content_fingerprints,
    content_strata,
    fingerprints,
    vector_fingerprints,
)
from poisonscan.pipelines.scan.values import plain

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
    #: images: file index -> the folder of the file, which relative image paths are read
    #: from (none for tables scanned in memory)
    folders: Mapping[int, str] = field(default_factory=dict)
    #: (fingerprint hi, lo) -> number of copies, for duplicated ids only.
    duplicates: Mapping[tuple[int, int], int] = field(default_factory=dict)
    #: Vector length every row must have (pass 2); None in pass 1 (rows are grouped).
    expected_dim: int | None = None
    #: Valid-row counts of classes too small to judge (pass 2).
    small_classes: Mapping[Any, int] = field(default_factory=dict)
    #: small class -> the labels it differs from only in white space at their ends
    label_variants: Mapping[Any, tuple] = field(default_factory=dict)
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
    #: scoring against a reference scan (pass 2): the classes it fitted; rows of other
    #: classes are rejected
    reference_classes: frozenset | None = None
    #: earlier reviewers' decisions (pass 2, :class:`.decisions.Remembered`) and the
    #: content check that says where content identifies a row (:class:`.content.ContentCheck`)
    remembered: Any = None
    content_rule: Any = None


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
    kinds: Any = None
    #: with earlier decisions: the valid rows a reviewer released under the same id,
    #: content and label (not quarantined again), and those whose id was released but
    #: whose content or label has changed since (judged anew)
    released: np.ndarray | None = None
    released_changed: np.ndarray | None = None

    def tokens_of(self, rows: np.ndarray) -> list:
        """The tokens of batch rows ``rows``: n-grams (text) or column=value (tables)."""
        where = {int(r): j for j, r in enumerate(self.encoded.rows)}
        return [self.encoded.tokens[where[int(r)]] for r in rows]

    @property
    def n(self) -> int:
        return self.batch.num_rows


def _nan(arr) -> np.ndarray:
    """Which values of a float column are NaN (False for other types)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_floating(arr.type):
        return np.zeros(len(arr), dtype=bool)
    return pc.fill_null(pc.is_nan(arr), False).to_numpy(zero_copy_only=False)


def _raw_null(batch: pa.RecordBatch, column: str) -> np.ndarray:
    if column not in batch.schema.names:
        return np.ones(batch.num_rows, dtype=bool)
    return batch.column(column).is_null().to_numpy(zero_copy_only=False)


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
    batch, unreadable = _unreadable(batch)
    n = batch.num_rows
    kinds = checks.kinds
    positions = encode_position(file_index, first_row + np.arange(n, dtype=np.int64))
    problems: dict[int, list[tuple[str, str]]] = {}
    keys = _Keys.of(batch, checks, problems)
    fp = fingerprints(keys.ids_arr) if need_fingerprints or checks.duplicates else None
    _check_duplicate_ids(checks, keys, fp, problems)
    _check_labels(checks, keys, problems)
    _check_user_rows(batch, checks, problems)

    encoded = None
    if kinds.input.kind == "features":
        groups = _feature_vectors(batch, kinds, checks, problems)
    else:
        groups = {}
        encoded = _encode(
            batch, kinds, checks.encoder, _without(n, problems), problems, checks.folders.get(file_index)
        )

    valid = np.zeros(n, dtype=bool)
    for rows, _ in groups.values():
        valid[rows] = True
    if encoded is not None:
        valid[encoded.rows] = True

    content = None
    if checks.collect_content or checks.content_duplicates or checks.remembered is not None:
        content = _content_keys(batch, checks, keys, groups, np.flatnonzero(valid), encoded)
        _check_confirmed(checks, keys, content, valid, problems)
        _check_repeated_content(checks, content, positions, valid, problems)
        _keep_valid(groups, encoded, valid)
    released = _released(checks, keys, content, valid)

    for i, reason in unreadable.items():  # a row of nulls: its other reasons say nothing
        problems[i] = [("unreadable_row", f"the line could not be read: {reason}")]
    error_code = np.full(n, None, dtype=object)
    error = np.full(n, None, dtype=object)
    for i, items in problems.items():
        error_code[i] = ",".join(dict.fromkeys(code for code, _ in items))
        error[i] = "; ".join(dict.fromkeys(text for _, text in items))
    return Prepared(
        batch, positions, valid, error_code, error, keys.labels, keys.ids, groups, keys.id_null,
        keys.label_null, keys.ids_arr, fp, encoded, content, kinds, *released,
    )


def _unreadable(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[int, str]]:
    """The batch without the column that marks a file's unreadable lines (rows of nulls
    in their place, :mod:`..io.lines`), and ``{row: why its line could not be read}``."""
    if UNREADABLE not in batch.schema.names:
        return batch, {}
    i = batch.schema.get_field_index(UNREADABLE)
    reasons = batch.column(i)
    rows = np.flatnonzero(~reasons.is_null().to_numpy(zero_copy_only=False))
    return batch.drop_columns([UNREADABLE]), {int(r): reasons[int(r)].as_py() for r in rows}


def _reject(problems: dict, mask: np.ndarray, code: str, text) -> None:
    """Record ``code`` for every row in ``mask``; ``text`` is a string or row -> string."""
    for i in np.flatnonzero(mask):
        problems.setdefault(int(i), []).append((code, text(int(i)) if callable(text) else text))


def _without(n: int, problems: dict) -> np.ndarray:
    """The rows of a batch of ``n`` that no check has rejected so far."""
    ok = np.ones(n, dtype=bool)
    if problems:
        ok[list(problems)] = False
    return np.flatnonzero(ok)


@dataclass
class _Keys:
    """A batch's ids and labels, normalised, with their nulls."""

    ids_arr: pa.Array
    labels_arr: pa.Array
    ids: np.ndarray
    labels: np.ndarray
    id_null: np.ndarray
    label_null: np.ndarray

    @staticmethod
    def of(batch: pa.RecordBatch, checks: RowChecks, problems: dict) -> "_Keys":
        """Read the keys; reject rows whose id or label is missing or not UTF-8 text."""
        n, names, kinds = batch.num_rows, batch.schema.names, checks.kinds

        def column(name, target):
            return normalize_key(batch.column(name), target) if name in names else pa.nulls(n, target)

        ids_arr = column(checks.id_column, kinds.id_type)
        labels_arr = column(checks.label_column, kinds.label_type)
        keys = _Keys(
            ids_arr, labels_arr, key_values(ids_arr), key_values(labels_arr),
            ids_arr.is_null().to_numpy(zero_copy_only=False),
            labels_arr.is_null().to_numpy(zero_copy_only=False),
        )
        # null only after normalize_key: a binary value that is not UTF-8, or a float
        # that is not a whole number (NaN: a missing value written as a float)
        for role, column, null in (("id", checks.id_column, keys.id_null), ("label", checks.label_column, keys.label_null)):
            raw = batch.column(column) if column in names else pa.nulls(n)
            nan = _nan(raw)
            fractional = not_whole(raw) & ~nan
            bad = null & ~_raw_null(batch, column) & ~nan & ~fractional
            _reject(problems, bad, f"bad_{role}_encoding", f"the {role} is not valid UTF-8 text")
            _reject(problems, fractional, f"non_integer_{role}", lambda i, role=role, raw=raw: (
                f"the {role} {raw[i].as_py()!r} is not a whole number (ids and labels are integers or strings)"))
            _reject(problems, null & ~bad & ~fractional, f"missing_{role}",
                    lambda i, role=role, nan=nan: f"{role} is " + ("NaN" if nan[i] else "null"))
        return keys


def _check_duplicate_ids(checks: RowChecks, keys: _Keys, fp, problems: dict) -> None:
    """Reject every copy of an id that pass 0 found more than once."""
    if not checks.duplicates:
        return
    for i, copies in duplicated_ids(fp, checks.duplicates, keys.id_null):
        problems.setdefault(i, []).append(
            (
                "duplicate_id",
                f"id {plain(keys.ids[i])!r} appears {copies} times in the input; no copy is kept",
            )
        )


def duplicated_ids(fp, duplicates: Mapping, null: np.ndarray) -> list[tuple[int, int]]:
    """(row, copies) of the rows whose id fingerprint pass 0 found more than once."""
    if not duplicates:
        return []
    hi, lo = fp
    dup_hi = np.fromiter((k[0] for k in duplicates), dtype=np.uint64)
    out = []
    for i in np.flatnonzero(np.isin(hi, dup_hi) & ~null):
        copies = duplicates.get((int(hi[i]), int(lo[i])))
        if copies is not None:
            out.append((int(i), copies))
    return out


def small_class_variants(small: Mapping, classes) -> dict:
    """Each class too small to judge whose label differs from other labels only in
    white space at its ends -> those labels ('cat ' -> ('cat',))."""
    out = {}
    for group in label_variants(classes):
        for label in group:
            if label in small:
                out[label] = tuple(v for v in group if v != label)
    return out


def variant_note(twins) -> str:
    """" (it differs from class 'cat' only in white space at its ends)" for a label with
    such twins."""
    if not twins:
        return ""
    names = [repr(plain(t)) for t in twins]
    which = f"class {names[0]}" if len(names) == 1 else f"classes {', '.join(names[:-1])} and {names[-1]}"
    return f" (it differs from {which} only in white space at its ends)"


def _check_labels(checks: RowChecks, keys: _Keys, problems: dict) -> None:
    """Reject rows of classes too small to judge, and labels outside ``--labels``."""
    labels, has_label = keys.labels, np.flatnonzero(~keys.label_null)
    if checks.small_classes:
        for i in has_label:
            rows = checks.small_classes.get(labels[i])
            if rows is not None:
                problems.setdefault(int(i), []).append(
                    (
                        "small_class",
                        f"class {plain(labels[i])!r} has {rows} valid rows; at least "
                        f"{checks.min_class_rows} are needed to judge it{variant_note(checks.label_variants.get(labels[i]))}",
                    )
                )
    if checks.reference_classes is not None:
        for i in has_label:
            if plain(labels[i]) not in checks.reference_classes:
                problems.setdefault(int(i), []).append(
                    ("not_in_reference", f"class {plain(labels[i])!r} was not scanned in the reference; "
                     "scan without --reference to judge it")
                )
    if checks.declared_labels is not None:
        for i in has_label:
            if plain(labels[i]) not in checks.declared_labels:
                problems.setdefault(int(i), []).append(
                    ("undeclared_label", f"label {plain(labels[i])!r} is not among the declared labels")
                )


def _check_user_rows(batch: pa.RecordBatch, checks: RowChecks, problems: dict) -> None:
    """The user's row expectations (GX, on the rows that passed so far, as pandas)."""
    if checks.validator is None:
        return
    rows = _without(batch.num_rows, problems)
    if len(rows):
        frame = batch.take(pa.array(rows, pa.int64())).to_pandas()
        for j, names_failed in checks.validator.failures(frame).items():
            for name in names_failed:
                problems.setdefault(int(rows[j]), []).append((name, f"failed {name}"))


def _content_keys(batch: pa.RecordBatch, checks: RowChecks, keys: _Keys, groups: dict, rows: np.ndarray,
                  encoded=None) -> tuple:
    """(rows, content fingerprint hi, lo, label hash, stratum, id hash) of the valid rows."""
    kinds = checks.kinds
    if kinds.input.kind == "features":
        hi, lo = _grouped_vector_fingerprints(groups, rows)
    else:
        hi, lo = _input_content(batch, kinds, rows, encoded)
    take = pa.array(rows, pa.int64())
    label_hash = pl.from_arrow(keys.labels_arr.take(take)).hash(seed=_ID_SEEDS[0]).to_numpy()
    id_hash = pl.from_arrow(keys.ids_arr.take(take)).hash(seed=_ID_SEEDS[1]).to_numpy().astype(np.uint64, copy=False)
    return rows, hi, lo, label_hash.astype(np.uint64, copy=False), content_strata(batch, kinds, rows), id_hash


def _check_repeated_content(checks: RowChecks, content: tuple, positions, valid, problems: dict) -> None:
    """Reject the repeats the content check judged: every copy of conflicting content,
    every copy but the kept one of duplicated content (pass 2)."""
    if not checks.content_duplicates:
        return
    rows, hi, lo = content[:3]
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


def _check_confirmed(checks: RowChecks, keys: _Keys, content: tuple, valid: np.ndarray, problems: dict) -> None:
    """Reject the rows whose content and label a reviewer confirmed as poison: under
    any id where the content identifies a row, under the confirmed id elsewhere."""
    remembered = checks.remembered
    if remembered is None or not remembered.confirmed:
        return
    rows, hi, lo, _, strata = content[:5]
    rule = checks.content_rule
    for j, decided in remembered.confirmed_among(hi, lo):
        i = int(rows[j])
        label, row_id = label_text(keys.labels[i]), label_text(keys.ids[i])
        was = ""
        who = decided.get((row_id, label))
        if who is None:  # another id: the same row only where content identifies a row
            if rule is not None and not rule.rejects(int(strata[j])):
                continue
            under = sorted((k[0], v) for k, v in decided.items() if k[1] == label)
            if not under:
                continue  # confirmed under another label: this row is judged anew
            was, who = f" as id {under[0][0]!r}", under[0][1]
        reviewer, time = who
        by = f" by {reviewer}" if reviewer else ""
        when = f" ({time})" if time else ""
        problems.setdefault(i, []).append(
            ("confirmed_poison", f"confirmed as poison{by}{when} in an earlier scan{was}")
        )
        valid[i] = False


def _released(checks: RowChecks, keys: _Keys, content: tuple | None, valid: np.ndarray) -> tuple:
    """(released, released_changed) of the batch's rows (see :class:`Prepared`); both
    None without earlier decisions."""
    remembered = checks.remembered
    if remembered is None or content is None:
        return None, None
    n = len(valid)
    released, changed = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    ids = remembered.released_ids
    if not len(ids) or not valid.any():
        return released, changed
    named = pc.is_in(keys.ids_arr.cast(pa.string()), ids)
    hit = valid & pc.fill_null(named, False).to_numpy(zero_copy_only=False)
    if not hit.any():
        return released, changed
    rows, hi, lo = content[:3]
    for i in np.flatnonzero(hit):
        j = int(np.searchsorted(rows, i))  # content rows are the valid rows, ascending
        decided = remembered.released.get((int(hi[j]), int(lo[j])), {})
        if (label_text(keys.ids[i]), label_text(keys.labels[i])) in decided:
            released[i] = True
        else:
            changed[i] = True
    return released, changed


def content_of(prep: Prepared, rows: np.ndarray) -> list[str]:
    """The content fingerprints of valid batch rows ``rows``, as :func:`.decisions.content_text`
    (the scan's own where it computed them, else computed as pass 1 does)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    if prep.content is not None:
        at = np.searchsorted(prep.content[0], rows)
        hi, lo = prep.content[1][at], prep.content[2][at]
    elif prep.kinds.input.kind == "features":
        hi, lo = np.zeros(len(rows), np.uint64), np.zeros(len(rows), np.uint64)
        for rows_d, X in prep.groups.values():
            sel = np.isin(rows, rows_d)
            if sel.any():
                hi[sel], lo[sel] = vector_fingerprints(X[np.searchsorted(rows_d, rows[sel])])
    else:
        hi, lo = _input_content(prep.batch, prep.kinds, rows, prep.encoded)
    return [content_text(h, lo_) for h, lo_ in zip(hi.tolist(), lo.tolist())]


def _keep_valid(groups: dict, encoded, valid: np.ndarray) -> None:
    """Drop the rows ``valid`` no longer holds from the vector groups and encoded inputs."""
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


def _feature_vectors(batch, kinds, checks, problems) -> dict:
    """The vectors of the rows that passed so far, grouped by length; bad ones rejected."""
    n = batch.num_rows
    fcol = _feature_column(batch, kinds, problems)
    f_null = fcol.is_null().to_numpy(zero_copy_only=False)
    parsed_bad = np.zeros(n, dtype=bool)
    for i in problems:
        if any(code == "bad_number" for code, _ in problems[i]):
            parsed_bad[i] = True
    _reject(problems, f_null & ~parsed_bad, "missing_features", "features are null")
    lengths = pc.fill_null(pc.list_value_length(fcol), -1).to_numpy(zero_copy_only=False)
    _reject(problems, lengths == 0, "empty_features", "features are empty")
    if checks.expected_dim is not None:
        _reject(
            problems,
            (lengths > 0) & (lengths != checks.expected_dim),
            "wrong_length",
            lambda i: f"features have length {lengths[i]}; the "
            f"{'reference scan' if checks.reference_classes is not None else 'data set'}'s vectors have "
            f"length {checks.expected_dim}",
        )
    ok = np.zeros(n, dtype=bool)
    ok[_without(n, problems)] = True
    ok &= lengths > 0
    groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for dim in np.unique(lengths[ok]):
        rows = np.flatnonzero(ok & (lengths == dim))
        X, has_null = _vectors(fcol, rows, int(dim))
        bad_rows = _check_values(X, has_null, rows, checks, problems)
        if bad_rows.any():  # a masked copy of every batch cost ~2 s per 1M x 256 pass
            rows, X = rows[~bad_rows], X[~bad_rows]
        if len(rows):
            groups[int(dim)] = (rows, X)
    return groups


def _feature_column(batch, kinds, problems) -> pa.Array:
    """The features as a list array: numbers written as text parsed (a cell that does
    not parse or decode rejects its row), a missing column as nulls."""
    n = batch.num_rows
    if kinds.features_column not in batch.schema.names:
        return pa.nulls(n, pa.list_(pa.float64()))
    fcol = batch.column(kinds.features_column)
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
    return fcol


def _check_values(X: np.ndarray, has_null: np.ndarray, rows: np.ndarray, checks, problems) -> np.ndarray:
    """Which vectors (of one length) hold a null, NaN, infinite, huge or out-of-range
    value; each is rejected with the first reason that applies."""
    # the batch's minimum and maximum first (NaN propagates into them and fails both
    # comparisons, an infinity fails one): a batch within bounds, nearly every batch,
    # needs nothing more. Otherwise row minima and maxima, and only the rows that fail
    # are looked at again. (Row-wise reductions cost ~3 times the whole-batch ones.)
    with np.errstate(invalid="ignore"):
        low, high = (float(X.min()), float(X.max())) if X.size else (np.nan, np.nan)
        if -MAX_FEATURE_MAGNITUDE <= low and high <= MAX_FEATURE_MAGNITUDE:  # False for NaN
            in_bounds = np.ones(len(rows), dtype=bool)
        else:
            in_bounds = (X.max(axis=1) <= MAX_FEATURE_MAGNITUDE) & (X.min(axis=1) >= -MAX_FEATURE_MAGNITUDE)
    huge = np.zeros(len(rows), dtype=bool)
    failed = np.flatnonzero(~in_bounds)
    if failed.size:
        huge[failed] = np.isfinite(X[failed]).all(axis=1)
    bad_rows = has_null | ~in_bounds
    outside = np.zeros(len(rows), dtype=bool)
    if checks.feature_range is not None:
        lo_v, hi_v = checks.feature_range
        with np.errstate(invalid="ignore"):
            if lo_v <= low and high <= hi_v:  # the batch's extremes, from above
                outside = np.zeros(len(rows), dtype=bool)
            else:
                outside = ~bad_rows & ((X < lo_v) | (X > hi_v)).any(axis=1)
        for j in np.flatnonzero(outside):
            problems.setdefault(int(rows[j]), []).append(
                (
                    "out_of_range",
                    f"features outside [{lo_v:g}, {hi_v:g}] (min {X[j].min():g}, max {X[j].max():g})",
                )
            )
    for j in np.flatnonzero(bad_rows):
        i = int(rows[j])
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
    return bad_rows | outside


def _encode(batch, kinds, encoder, rows: np.ndarray, problems, folder: str | None = None):
    """Encode the raw input of ``rows`` (batch indices); failures become problems. An
    image's relative path is read from ``folder``, the folder of the batch's file."""

    if encoder is None:
        raise ValueError(f"a {kinds.input.kind} input needs an encoder (fitted on the training sample)")
    if len(rows) == 0:
        return Encoded(np.empty(0, np.int64), {}, {})
    sub = batch.take(pa.array(rows, pa.int64()))
    if kinds.input.kind == "tabular":
        enc = encoder.encode(sub)
    else:
        col = sub.column(kinds.input.column) if kinds.input.column in sub.schema.names else pa.nulls(len(rows))
        enc = encoder.encode(col, folder) if kinds.input.kind == "image" else encoder.encode(col)
    for j, (code, text) in enc.errors.items():
        problems.setdefault(int(rows[j]), []).append((code, text))
    enc.rows = rows[enc.rows]
    enc.errors = {}
    enc.file_content = {int(rows[j]): fp for j, fp in enc.file_content.items()}
    return enc


def _input_content(batch: pa.RecordBatch, kinds, rows: np.ndarray, encoded) -> tuple[np.ndarray, np.ndarray]:
    """Content fingerprints of raw-input ``rows``: of their input columns, and for an
    image read from a file, of the file's bytes (two files under the same name in two
    folders are two images; a file rewritten under its name is new content)."""
    hi, lo = content_fingerprints(batch, kinds, rows)
    files = encoded.file_content if encoded is not None else {}
    if files:
        hi, lo = hi.copy(), lo.copy()
        for j, r in enumerate(rows.tolist()):
            if r in files:
                hi[j], lo[j] = files[r]
    return hi, lo


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
    probabilities]`` (see :class:`.fit.Layout`)."""
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


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
