"""The scan's steps as plain functions over Arrow batches, with no Beam in them.

The Beam pipeline (:mod:`.beam_scan`) and the in-memory API (:mod:`poisonscan.api`) both
call these, so the two paths compute the same thing:

* pass 0 — :func:`id_fingerprints`: 128-bit fingerprints of ids, to find duplicates;
* pass 1 — :func:`class_partials`: per (class, vector length) mergeable partials: the
  detectors' accumulators and a bounded uniform sample (:class:`ClassPartial`);
* fit — :func:`fit_class` per class (parallel), then :func:`build_model`;
* pass 2 — :func:`score_batch`: every row scored and split into clean, flagged
  (candidates) and rejected parts;
* finish — :func:`finalize`: the budget, the quarantine list, the clean split, the
  rejected rows and the summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from poisonscan.detectors import (
    ClassVerdict,
    Detector,
    DetectorState,
    GroupTest,
    Reservoir,
    budget_cap,
    select_within_budget,
)
from poisonscan.detectors.decision import combine, strongest_group
from poisonscan.detectors.base import group_rows_by_label, label_sort_key

from .config import ScanConfig
from .rows import Prepared, fingerprints, key_values, normalize_key, priorities
from .sources import ColumnKinds, decode_position, encode_position

#: Columns added to rejected rows.
REJECT_COLUMNS = ("error", "error_code", "expectation", "source_file", "source_row")
#: Internal column carrying a row's position through part files.
POS = "__poisonscan_position"
_CAND_SCORE = "__poisonscan_score"
_CAND_DETECTORS = "__poisonscan_detectors"
#: The parts of a flagged row's input that carry the evidence (a text's trigger n-grams).
_CAND_HIGHLIGHTS = "__poisonscan_highlights"


def _raw(det: str) -> str:
    return f"__poisonscan_raw_{det}"


def _strength(det: str) -> str:
    return f"__poisonscan_strength_{det}"


def _why(det: str) -> str:
    return f"__poisonscan_why_{det}"


# pass 0 ---------------------------------------------------------------------------------
#: the verdicts of a scan in which every row was rejected, or none was read (the CLI
#: exits 6 for both)
NOTHING_SCANNED = "nothing scanned: every row was rejected"
NOTHING_READ = "nothing scanned: the input holds no rows"

N_ID_BUCKETS = 16


def _concat_keys(cls, parts):
    """Concatenate key sets field by field (hashes uint64, positions int64)."""
    names = [f.name for f in dataclass_fields(cls)]
    parts = [p for p in parts if len(p.hi)]
    if not parts:
        return cls(*(np.empty(0, np.int64 if n in ("positions", "stratum") else np.uint64) for n in names))
    return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


@dataclass
class IdKeys:
    """Fingerprints and positions of non-null ids (one bucket of one batch)."""

    hi: np.ndarray
    lo: np.ndarray
    positions: np.ndarray

    @staticmethod
    def concat(parts: Iterable["IdKeys"]) -> "IdKeys":
        return _concat_keys(IdKeys, parts)

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
    bucket = (keys.hi % N_ID_BUCKETS).astype(np.int64)
    out = []
    for b in np.unique(bucket):
        m = bucket == b
        out.append((int(b), IdKeys(keys.hi[m], keys.lo[m], keys.positions[m])))
    return out


def duplicate_ids(keys: Iterable[IdKeys]) -> dict[tuple[int, int], int]:
    """``{fingerprint: copies}`` of the ids seen more than once among ``keys``
    (:func:`batch_ids`): pass 0 in one process. The pipeline's per-bucket combine gives
    the same, bucket by bucket (a bucket holds every copy of its fingerprints)."""
    return IdKeys.concat(keys).duplicates()


@dataclass
class ContentKeys:
    """Content fingerprints, label hashes, positions, strata (a text's length in words,
    else 0) and id hashes of valid rows (one bucket). Of a repeated content, the copy
    of the lowest id hash is the one kept: the same copy whatever the row order."""

    hi: np.ndarray
    lo: np.ndarray
    label: np.ndarray
    positions: np.ndarray
    stratum: np.ndarray
    rank: np.ndarray

    @staticmethod
    def concat(parts: Iterable["ContentKeys"]) -> "ContentKeys":
        return _concat_keys(ContentKeys, parts)

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
    bucket = (hi % N_ID_BUCKETS).astype(np.int64)
    out = []
    for b in np.unique(bucket):
        m = bucket == b
        out.append((int(b), ContentKeys(hi[m], lo[m], lab[m], positions[m], stratum[m], rank[m])))
    return out


@dataclass
class RowSample:
    """A bounded uniform sample of whole rows (bottom-k by a hash of id and seed), for
    the user's aggregate expectations."""

    capacity: int
    priority: np.ndarray
    positions: np.ndarray
    table: pa.Table | None

    @classmethod
    def of(cls, prep: Prepared, capacity: int, seed: int) -> "RowSample":
        keep = np.lexsort((prep.positions, priorities(prep.ids_arrow, seed)))[:capacity]
        prio = priorities(prep.ids_arrow, seed)[keep]
        table = pa.Table.from_batches([prep.batch]).take(pa.array(keep, pa.int64()))
        return cls(capacity, prio, prep.positions[keep], table)

    def merge(self, other: "RowSample") -> "RowSample":
        if other.table is None or not len(other.positions):
            return self
        if self.table is None or not len(self.positions):
            return other
        prio = np.concatenate([self.priority, other.priority])
        pos = np.concatenate([self.positions, other.positions])
        table = pa.concat_tables([self.table, other.table], promote_options="permissive")
        keep = np.lexsort((pos, prio))[: self.capacity]
        return RowSample(self.capacity, prio[keep], pos[keep], table.take(pa.array(keep, pa.int64())))

    def frame(self):
        """The sample as a pandas DataFrame, in priority order (a hash of the ids: the
        same whatever order rows were read in; GX validates pandas)."""
        if self.table is None:
            return None
        order = np.lexsort((self.positions, self.priority))
        return self.table.take(pa.array(order, pa.int64())).to_pandas()


ROW_SAMPLE = 10_000


# views ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How a row's vector is laid out: ``[representation | encoded input | class
    probabilities]``.

    ``encoded`` is the width of the encoded input carried for the label detectors (the
    tabular encoder's standardised and one-hot columns: what no network fitted to the
    labels has seen), 0 for other inputs. ``probabilities`` is the number of out-of-fold
    probability columns, 0 when there are none (a features input, the user's model).
    """

    probabilities: int = 0
    encoded: int = 0
    #: whether the probabilities are out of fold (a cross-fitted proxy) rather than the
    #: full network's, which was fitted to the rows' labels
    out_of_fold: bool = False

    def split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(representation, probabilities or None)."""
        d = X.shape[1]
        rep = X[:, : d - self.probabilities - self.encoded]
        if not self.probabilities:
            return rep, None
        return rep, X[:, d - self.probabilities :]

    def encoded_input(self, X: np.ndarray) -> np.ndarray | None:
        """The encoded input columns, or None when none are carried."""
        if not self.encoded:
            return None
        d = X.shape[1]
        return X[:, d - self.probabilities - self.encoded : d - self.probabilities]


def batch_rows_for(cfg: ScanConfig, kind: str) -> int:
    """Rows per record batch: smaller for raw inputs, whose encoded form is larger."""
    return cfg.batch_rows if kind == "features" else min(cfg.batch_rows, 4096)


def view(det: Detector, X: np.ndarray, layout: Layout, tokens=None):
    """What detector ``det`` reads of rows whose vectors are ``X``."""
    if det.input == "tokens":
        if tokens is None:
            raise ValueError(f"the {det.name} detector needs a text input")
        return tokens
    rep, probs = layout.split(X)
    if det.input == "probabilities":
        if probs is None:
            raise ValueError(f"the {det.name} detector was set to read probabilities, and there are none")
        return probs
    if det.input == "unfitted":
        # label evidence must not come from a network fitted to the row's label: the
        # encoded table, else the proxy's out-of-fold probabilities, else the vectors
        # as given (a features input, the user's model)
        encoded = layout.encoded_input(X)
        if encoded is not None:
            return encoded
        if probs is not None and layout.out_of_fold:
            return probs
    return rep


def sample_view(det: Detector, sample, layout: Layout):
    from poisonscan.detectors.stats import ClassSample

    X = view(det, sample.X, layout, tokens=[]) if det.input != "tokens" else sample.X
    return ClassSample(X, sample.positions, sample.ids, sample.rows)


# pass 1 ---------------------------------------------------------------------------------
@dataclass
class ClassPartial:
    """Mergeable pass-1 state of one (class, vector length)."""

    rows: int
    accumulators: dict[str, Any]
    reservoir: Reservoir

    def merge(self, other: "ClassPartial", detectors: Sequence[Detector]) -> "ClassPartial":
        by_key = {d.accumulator_key: d for d in detectors}
        return ClassPartial(
            self.rows + other.rows,
            {
                key: d.merge_accumulators([self.accumulators[key], other.accumulators[key]])
                for key, d in by_key.items()
            },
            self.reservoir.merge(other.reservoir),
        )


def class_partials(
    prep: Prepared, detectors: Sequence[Detector], cfg: ScanConfig, layout: Layout = Layout()
) -> Iterator[tuple[tuple[Any, int], ClassPartial]]:
    """Per (class, vector length) partials of one validated batch."""
    if not prep.groups:
        return
    prio = priorities(prep.ids_arrow, cfg.seed)
    for dim, (rows, X) in prep.groups.items():
        y = prep.labels[rows]
        for label, idx in group_rows_by_label(y):
            Xl, yl, r = X[idx], y[idx], rows[idx]
            tokens = prep.tokens_of(r) if any(d.input == "tokens" for d in detectors) else None
            accs: dict = {}
            for d in detectors:  # detectors sharing statistics compute them once
                if d.accumulator_key not in accs:
                    accs[d.accumulator_key] = d.add_input(
                        d.create_accumulator(), view(d, Xl, layout, tokens), yl
                    )
            res = Reservoir.from_batch(
                cfg.sample_size, prio[r], prep.positions[r], Xl, prep.ids[r]
            )
            yield (label, dim), ClassPartial(len(idx), accs, res)


def merge_partials(parts: Iterable[ClassPartial], detectors: Sequence[Detector]) -> ClassPartial | None:
    out = None
    for p in parts:
        out = p if out is None else out.merge(p, detectors)
    return out


def choose_dim(rows_by_dim: Mapping[int, int]) -> int | None:
    """The data set's vector length: the one most rows have (ties: the shortest)."""
    if not rows_by_dim:
        return None
    return min(rows_by_dim, key=lambda d: (-rows_by_dim[d], d))


# fit ------------------------------------------------------------------------------------
@dataclass
class ClassModel:
    label: Any
    rows: int
    states: dict[str, DetectorState]
    verdicts: dict[str, ClassVerdict]
    sample_rows: int
    #: uniform subsample handed to the detectors that fit across classes (dropped once
    #: the model is built, so the side input stays small)
    shared_sample: Any = None
    accumulators: dict | None = None
    #: detectors whose flags count for this class (see decision.combine)
    active: dict = field(default_factory=dict)
    #: the class's 2-D projection for the report (see review.project_class)
    view: dict | None = None


@dataclass
class ScanModel:
    """Everything pass 2 needs: fitted detectors and per-class verdicts."""

    dim: int | None
    classes: dict[Any, ClassModel]
    small_classes: dict[Any, int]
    rows_by_dim: dict[int, int]
    states: dict[str, DetectorState] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)

    def verdict(self, label: Any, detector: str) -> ClassVerdict:
        return self.classes[label].verdicts[detector]

    def active_for(self, detector: str) -> set:
        """Classes where the detector's flags count (judged poisoned, and confirmed)."""
        return {label for label, cm in self.classes.items() if cm.active.get(detector)}

    @property
    def poisoned_classes(self) -> list:
        return [
            label
            for label in sorted(self.classes, key=label_sort_key)
            if any(self.classes[label].active.values())
        ]


def fit_class(
    label: Any,
    partial: ClassPartial,
    detectors: Sequence[Detector],
    group_test: GroupTest,
    shared_rows: int,
    layout: Layout = Layout(),
) -> ClassModel:
    """Fit the per-class detectors on one class and judge it; keep a subsample and the
    accumulators for the detectors that fit across classes."""
    sample = partial.reservoir.sample()
    sample.rows = partial.rows
    states, verdicts = {}, {}
    for det in detectors:
        if not det.per_class:
            continue
        state = det.extract_output(
            partial.accumulators[det.accumulator_key], {label: sample_view(det, sample, layout)}
        )
        states[det.name] = state
        verdicts[det.name] = det.judge(state, label, partial.rows, group_test)
    shared = partial.reservoir.head(shared_rows).sample()
    shared.rows = partial.rows
    across = {d.name: partial.accumulators[d.accumulator_key] for d in detectors if not d.per_class}
    from .review import project_class

    return ClassModel(
        label, partial.rows, states, verdicts, len(sample), shared, across,
        view=project_class(partial.reservoir, layout),
    )


def build_model(
    class_models: Iterable[ClassModel],
    small_classes: Mapping[Any, int],
    rows_by_dim: Mapping[int, int],
    detectors: Sequence[Detector],
    group_test: GroupTest,
    layout: Layout = Layout(),
) -> ScanModel:
    """Join the classes; fit and apply the detectors that look across classes."""
    classes = {m.label: m for m in sorted(class_models, key=lambda m: label_sort_key(m.label))}
    states = {}
    for det in detectors:
        if det.per_class:
            per_class = [m.states[det.name] for m in classes.values()]
            states[det.name] = DetectorState.union(per_class) if per_class else DetectorState(det.name)
            continue
        acc = det.merge_accumulators([m.accumulators[det.name] for m in classes.values()])
        state = det.extract_output(
            acc, {label: sample_view(det, m.shared_sample, layout) for label, m in classes.items()}
        )
        states[det.name] = state
        for label, m in classes.items():
            m.verdicts[det.name] = det.judge(state, label, m.rows, group_test)
    calibrated = [d for d in detectors if d.calibrated]
    if calibrated and classes:
        from poisonscan.detectors import judge_scan
        from poisonscan.detectors._pooled import Pooled

        level = group_test.level(len(classes) * len(calibrated))
        pooled = {}

        def pooled_for(det):
            if det.input not in pooled:
                pooled[det.input] = Pooled.of(
                    {label: sample_view(det, m.shared_sample, layout) for label, m in classes.items()}
                )
            return pooled[det.input]

        for det in calibrated:
            judged = judge_scan(
                {label: m.verdicts[det.name] for label, m in classes.items()},
                level,
                lambda label, verdict, det=det: det.group_affinity(states[det.name], verdict, pooled_for(det), label),
                peer_floor=det.peer_floor,
                needs_affinity=det.needs_affinity,
                alone_by_affinity=det.alone_by_affinity,
            )
            for label, m in classes.items():
                m.verdicts[det.name] = judged[label]
    finds = {d.name: d.finds for d in detectors}
    for m in classes.values():
        m.active = strongest_group(m.verdicts, combine(m.verdicts, finds), {d.name for d in calibrated})
        m.states = {}  # the joined states below serve every class
        m.shared_sample = None
        m.accumulators = None
    return ScanModel(
        choose_dim(rows_by_dim),
        classes,
        dict(small_classes),
        dict(rows_by_dim),
        states,
        layout,
    )


def split_small(
    partials: Mapping[Any, ClassPartial], min_rows: int
) -> tuple[dict[Any, ClassPartial], dict[Any, int]]:
    """Classes big enough to judge, and the valid-row counts of the others."""
    big = {k: p for k, p in partials.items() if p.rows >= min_rows}
    small = {k: p.rows for k, p in partials.items() if p.rows < min_rows}
    return big, small


def fit_model(
    partials: Mapping[tuple[Any, int], ClassPartial],
    detectors: Sequence[Detector],
    cfg: ScanConfig,
    layout: Layout = Layout(),
) -> ScanModel:
    """Pass-1 partials (merged per key) to a fitted model, in memory."""
    rows_by_dim: Counter = Counter()
    for (_, dim), p in partials.items():
        rows_by_dim[dim] += p.rows
    dim = choose_dim(rows_by_dim)
    per_class = {label: p for (label, d), p in partials.items() if d == dim}
    big, small = split_small(per_class, cfg.min_class_rows)
    group_test = cfg.build_group_test()
    models = [
        fit_class(label, p, detectors, group_test, cfg.shared_sample_size, layout)
        for label, p in big.items()
    ]
    return build_model(models, small, rows_by_dim, detectors, group_test, layout)


# pass 2 ---------------------------------------------------------------------------------
@dataclass
class Counts:
    """Mergeable row counts of pass 2."""

    read: int = 0
    rejected: int = 0
    flagged: int = 0
    by_class: dict = field(default_factory=dict)  # label -> [read, valid, flagged, rejected]
    by_error: Counter = field(default_factory=Counter)

    def merge(self, other: "Counts") -> "Counts":
        by_class = {k: list(v) for k, v in self.by_class.items()}
        for k, v in other.by_class.items():
            cur = by_class.setdefault(k, [0, 0, 0, 0])
            for i in range(4):
                cur[i] += v[i]
        return Counts(
            self.read + other.read,
            self.rejected + other.rejected,
            self.flagged + other.flagged,
            by_class,
            self.by_error + other.by_error,
        )


@dataclass
class BatchOutcome:
    """Pass-2 result of one batch."""

    clean: pa.Table | None
    candidates: pa.Table | None
    rejected: pa.Table | None
    flagged_positions: np.ndarray
    flagged_strength: np.ndarray
    counts: Counts
    contrast: Any = None  # review.ContrastRows: clean rows of poisoned classes


def score_batch(
    prep: Prepared,
    model: ScanModel,
    detectors: Sequence[Detector],
    file_path: str,
    *,
    keep_clean: bool,
    seed: int = 0,
) -> BatchOutcome:
    """Score one validated batch and split it into clean, candidate and rejected rows."""
    n = prep.n
    flagged = np.zeros(n, dtype=bool)
    combined = np.full(n, -np.inf)
    raw = {d.name: np.full(n, np.nan) for d in detectors}
    strength = {d.name: np.full(n, np.nan) for d in detectors}
    flagged_by = {d.name: np.zeros(n, dtype=bool) for d in detectors}
    why = {d.name: np.full(n, None, dtype=object) for d in detectors}
    highlights = np.full(n, None, dtype=object)
    if model.dim in prep.groups:
        rows, X = prep.groups[model.dim]
        y = prep.labels[rows]
        for det in detectors:
            # a detector is applied only to classes it judged poisoned: elsewhere it
            # flags nothing, and skipping it keeps costly detectors off clean data
            judged = model.active_for(det.name)
            if not judged:
                continue
            sel = np.isin(y, np.array(sorted(judged, key=label_sort_key), dtype=y.dtype))
            if not sel.any():
                continue
            ys, rs = y[sel], rows[sel]
            tokens = prep.tokens_of(rs) if det.input == "tokens" else None
            Xs = view(det, X[sel], model.layout, tokens)
            score, stat = det.evaluate(model.states[det.name], Xs, ys)
            raw[det.name][rs] = score
            for label, idx in group_rows_by_label(ys):
                verdict = model.verdict(label, det.name)
                r = rs[idx]
                strength[det.name][r] = verdict.strength(stat[idx])
                flagged_by[det.name][r] = verdict.flags(stat[idx])
            hit = flagged_by[det.name][rs]
            if hit.any():
                Xh = [Xs[i] for i in np.flatnonzero(hit)] if det.input == "tokens" else Xs[hit]
                why[det.name][rs[hit]] = det.describe(
                    model.states[det.name], Xh, ys[hit], stat[hit], strength[det.name][rs[hit]]
                )
                marked = det.highlights(model.states[det.name], Xh, ys[hit])
                for r, parts in zip(rs[hit], marked or []):
                    highlights[r] = list(dict.fromkeys((highlights[r] or []) + list(parts)))
        for det in detectors:
            f = flagged_by[det.name]
            flagged |= f
            combined = np.where(f, np.maximum(combined, strength[det.name]), combined)

    valid = prep.valid
    counts = Counts(read=n, rejected=int((~valid).sum()), flagged=int(flagged.sum()))
    for label, idx in _labels_with_rows(prep):
        counts.by_class[label] = [
            len(idx),
            int(valid[idx].sum()),
            int(flagged[idx].sum()),
            int((~valid[idx]).sum()),
        ]
    for codes in prep.error_code[~valid]:
        for code in codes.split(","):
            counts.by_error[code] += 1

    pos = pa.array(prep.positions, pa.int64())
    batch = pa.Table.from_batches([prep.batch])
    from .review import ContrastRows

    contrast = ContrastRows.of(prep, batch, valid & ~flagged, set(model.poisoned_classes), seed)
    clean = None
    if keep_clean:
        mask = valid & ~flagged
        if mask.any():
            clean = batch.filter(pa.array(mask)).append_column(POS, pos.filter(pa.array(mask)))
    candidates = None
    if flagged.any():
        m = pa.array(flagged)
        candidates = batch.filter(m).append_column(POS, pos.filter(m))
        candidates = candidates.append_column(_CAND_SCORE, pa.array(combined[flagged]))
        names = [
            [d.name for d in detectors if flagged_by[d.name][i]] for i in np.flatnonzero(flagged)
        ]
        candidates = candidates.append_column(_CAND_DETECTORS, pa.array(names, pa.list_(pa.string())))
        candidates = candidates.append_column(
            _CAND_HIGHLIGHTS, pa.array([highlights[i] or [] for i in np.flatnonzero(flagged)], pa.list_(pa.string()))
        )
        for det in detectors:
            r = raw[det.name][flagged]  # null where the detector was not applied
            candidates = candidates.append_column(_raw(det.name), pa.array(r, mask=np.isnan(r)))
            st = np.where(flagged_by[det.name], strength[det.name], np.nan)[flagged]
            candidates = candidates.append_column(
                _strength(det.name), pa.array(st, mask=np.isnan(st))
            )
            candidates = candidates.append_column(
                _why(det.name), pa.array(list(why[det.name][flagged]), pa.string())
            )
    rejected = None
    if (~valid).any():
        m = pa.array(~valid)
        _, rows_in_file = zip(*(decode_position(p) for p in prep.positions[~valid]))
        rejected = batch.filter(m)
        rejected = rejected.append_column("error", pa.array(list(prep.error[~valid]), pa.string()))
        rejected = rejected.append_column(
            "error_code", pa.array(list(prep.error_code[~valid]), pa.string())
        )
        rejected = rejected.append_column(
            "source_file", pa.array([file_path] * int((~valid).sum()), pa.string())
        )
        rejected = rejected.append_column("source_row", pa.array(rows_in_file, pa.int64()))
        rejected = rejected.append_column(POS, pos.filter(m))
    return BatchOutcome(
        clean,
        candidates,
        rejected,
        prep.positions[flagged],
        combined[flagged],
        counts,
        contrast,
    )


def _labels_with_rows(prep: Prepared):
    """(label, row indices) over the batch rows whose label is present."""
    idx_all = np.flatnonzero(~prep.label_null)
    for label, idx in group_rows_by_label(prep.labels[idx_all]):
        yield label, idx_all[idx]


# finish ---------------------------------------------------------------------------------
class PartStore:
    """Where pass 2 leaves its per-unit tables (files on the output filesystem, or memory)."""

    kinds = ("clean", "candidates", "rejected")

    def write(self, kind: str, key: str, table: pa.Table) -> None:  # pragma: no cover
        raise NotImplementedError

    def writer(self, kind: str, key: str):  # pragma: no cover
        """An object with ``write(table)`` and ``close()`` streaming one part."""
        raise NotImplementedError

    def keys(self, kind: str) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def read(self, kind: str, key: str) -> pa.Table:  # pragma: no cover
        raise NotImplementedError

    def schema(self, kind: str, key: str) -> pa.Schema:
        return self.read(kind, key).schema

    def iter_tables(self, kind: str, key: str, batch_rows: int) -> Iterator[pa.Table]:
        table = self.read(kind, key)
        for batch in table.to_batches(max_chunksize=batch_rows):
            yield pa.Table.from_batches([batch], schema=table.schema)


class MemoryPartStore(PartStore):
    def __init__(self):
        self._tables: dict[str, dict[str, list[pa.Table]]] = {k: {} for k in self.kinds}

    def write(self, kind: str, key: str, table: pa.Table) -> None:
        self._tables[kind].setdefault(key, []).append(table)

    def writer(self, kind: str, key: str) -> "_MemoryWriter":
        return _MemoryWriter(self, kind, key)

    def keys(self, kind: str) -> list[str]:
        return sorted(self._tables[kind])

    def read(self, kind: str, key: str) -> pa.Table:
        return pa.concat_tables(self._tables[kind][key], promote_options="permissive")


class _MemoryWriter:
    def __init__(self, store: MemoryPartStore, kind: str, key: str):
        self.store, self.kind, self.key = store, kind, key

    def write(self, table: pa.Table) -> None:
        if table is not None and table.num_rows:
            self.store.write(self.kind, self.key, table)

    def close(self) -> None:
        pass


@dataclass
class UnitResult:
    """What pass 2 reports for one read unit (its tables are in the part store)."""

    counts: Counts
    flagged_positions: np.ndarray
    flagged_strength: np.ndarray
    contrast: Any = None  # review.ContrastRows

    @staticmethod
    def concat(results: Iterable["UnitResult"]) -> "UnitResult":
        from .review import ContrastRows

        results = list(results)
        counts = Counts()
        contrast = ContrastRows()
        for r in results:
            counts = counts.merge(r.counts)
            if r.contrast is not None:
                contrast = contrast.merge(r.contrast)
        if not results:
            return UnitResult(counts, np.empty(0, np.int64), np.empty(0), contrast)
        return UnitResult(
            counts,
            np.concatenate([r.flagged_positions for r in results]).astype(np.int64),
            np.concatenate([r.flagged_strength for r in results]).astype(np.float64),
            contrast,
        )


def store_outcomes(store: PartStore, key: str, outcomes: Iterable[BatchOutcome]) -> UnitResult:
    """Stream one unit's pass-2 tables into the store (one part per kind)."""
    writers = {kind: store.writer(kind, key) for kind in PartStore.kinds}
    results = []
    try:
        for out in outcomes:
            for kind in PartStore.kinds:
                writers[kind].write(getattr(out, kind))
            results.append(UnitResult(out.counts, out.flagged_positions, out.flagged_strength, out.contrast))
    finally:
        for w in writers.values():
            w.close()
    return UnitResult.concat(results)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null), cast to its types."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def unified_schema(schemas: Sequence[pa.Schema], drop: Sequence[str] = ()) -> pa.Schema | None:
    schemas = [pa.schema([f for f in s if f.name not in drop]) for s in schemas]
    if not schemas:
        return None
    return pa.unify_schemas(schemas, promote_options="permissive")


def quarantine_schema(kinds: ColumnKinds, detectors: Sequence[str]) -> pa.Schema:
    fields = [
        pa.field("id", kinds.id_type),
        pa.field("label", kinds.label_type),
        pa.field("score", pa.float64()),
        pa.field("detectors", pa.list_(pa.string())),
        pa.field("reason", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_row", pa.int64()),
    ]
    fields += [pa.field(f"score_{d}", pa.float64()) for d in detectors]
    return pa.schema(fields)


def select_quarantine(
    positions: np.ndarray, strength: np.ndarray, cap: int | None
) -> np.ndarray:
    """Positions of the flagged rows that are quarantined (budget applied), sorted."""
    keep = select_within_budget(strength, positions, cap)
    return np.sort(positions[keep])


def build_quarantine(
    candidates: pa.Table | None,
    selected: np.ndarray,
    model: ScanModel,
    detectors: Sequence[Detector],
    kinds: ColumnKinds,
    cfg: ScanConfig,
    file_paths: Mapping[int, str],
) -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
    """(quarantine list, flagged rows not quarantined because of the budget, the
    quarantined rows as read in the list's order)."""
    schema = quarantine_schema(kinds, [d.name for d in detectors])
    if candidates is None or candidates.num_rows == 0:
        return schema.empty_table(), None, None
    pos = candidates.column(POS).to_numpy()
    chosen = np.isin(pos, selected)
    trimmed = candidates.filter(pa.array(~chosen)) if not chosen.all() else None
    q = candidates.filter(pa.array(chosen))
    n = q.num_rows
    ids = normalize_key(q.column(cfg.id_column), kinds.id_type)
    labels_arr = normalize_key(q.column(cfg.label_column), kinds.label_type)
    labels = [_py(v) for v in key_values(labels_arr)]
    qpos = q.column(POS).to_numpy()
    flagged_counts = _flagged_counts(candidates, cfg, kinds, detectors)
    whys = {d.name: q.column(_why(d.name)).to_pylist() for d in detectors}
    dets = q.column(_CAND_DETECTORS).to_pylist()
    reasons = []
    for i in range(n):
        label = labels[i]
        parts = []
        for det in detectors:
            phrase = whys[det.name][i]
            if phrase is None:
                continue
            verdict = model.verdict(label, det.name)
            group = flagged_counts.get((label, det.name), 0)
            judged = (
                f"; a clean class would show evidence this strong with probability "
                f"{verdict.p_value:.0e} (the scan's threshold: {verdict.level:.0e})"
                if verdict.p_value is not None and verdict.level is not None
                else ""
            )
            parts.append(
                f"{det.name}: {phrase}; {det.name} flags {group:,} rows "
                f"({group / max(verdict.class_rows, 1):.1%}) of class {fmt_label(label)}{judged}"
            )
        reasons.append(" | ".join(parts))
    src = [decode_position(p) for p in qpos]
    table = pa.Table.from_arrays(
        [
            ids,
            labels_arr,
            q.column(_CAND_SCORE),
            pa.array(dets, pa.list_(pa.string())),
            pa.array(reasons, pa.string()),
            pa.array([file_paths.get(f, str(f)) for f, _ in src], pa.string()),
            pa.array([r for _, r in src], pa.int64()),
        ]
        + [q.column(_raw(d.name)) for d in detectors],
        schema=schema,
    )
    order = pa.array(np.lexsort((qpos, -table.column("score").to_numpy())))
    return table.take(order), trimmed, q.take(order)


def _flagged_counts(candidates, cfg, kinds, detectors) -> dict:
    labels = key_values(normalize_key(candidates.column(cfg.label_column), kinds.label_type))
    out: dict = {}
    for det in detectors:
        st = candidates.column(_strength(det.name)).is_valid().to_numpy(zero_copy_only=False)
        for label, idx in group_rows_by_label(labels[st]) if st.any() else []:
            out[(label, det.name)] = len(idx)
    return out


def strip_internal(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in table.column_names if c.startswith("__poisonscan_")])


def iter_clean(
    store: PartStore, trimmed: pa.Table | None, schema: pa.Schema, batch_rows: int
) -> Iterator[pa.Table]:
    """The clean split in input order, conformed to ``schema``: the clean parts plus
    the flagged rows that the budget left out."""
    trimmed_by_unit: dict = {}
    if trimmed is not None and trimmed.num_rows:
        tpos = trimmed.column(POS).to_numpy()
        for key in store.keys("candidates"):
            kpos = store.read("candidates", key).column(POS).to_numpy()
            m = np.isin(tpos, kpos)
            if m.any():
                trimmed_by_unit[key] = strip_candidate_columns(trimmed.filter(pa.array(m)))
    clean_keys = set(store.keys("clean"))
    for key in sorted(clean_keys | set(trimmed_by_unit)):
        if key not in trimmed_by_unit:
            for t in store.iter_tables("clean", key, batch_rows):
                yield conform(strip_internal(t), schema)
            continue
        parts = [trimmed_by_unit[key]]
        if key in clean_keys:
            parts.insert(0, store.read("clean", key))
        t = pa.concat_tables(
            [conform(p, schema.append(pa.field(POS, pa.int64()))) for p in parts]
        )
        t = t.take(pa.array(np.argsort(t.column(POS).to_numpy(), kind="stable")))
        yield conform(strip_internal(t), schema)


def strip_candidate_columns(table: pa.Table) -> pa.Table:
    keep = [c for c in table.column_names if not c.startswith("__poisonscan_") or c == POS]
    return table.select(keep)


def rejected_table(store: PartStore, kinds: ColumnKinds, cfg: ScanConfig, expectations=None) -> pa.Table:
    parts = [store.read("rejected", key) for key in store.keys("rejected")]
    if not parts:
        return pa.schema(
            [
                pa.field("error", pa.string()),
                pa.field("error_code", pa.string()),
                pa.field("expectation", pa.string()),
                pa.field("source_file", pa.string()),
                pa.field("source_row", pa.int64()),
                pa.field(cfg.id_column, kinds.id_type),
                pa.field(cfg.label_column, kinds.label_type),
            ]
        ).empty_table()
    schema = unified_schema([p.schema for p in parts])
    t = pa.concat_tables([conform(p, schema) for p in parts])
    t = t.take(pa.array(np.argsort(t.column(POS).to_numpy(), kind="stable")))
    t = strip_internal(t)
    names = [
        expectations.names_of(c) if expectations is not None else None
        for c in t.column("error_code").to_pylist()
    ]
    t = t.append_column("expectation", pa.array(names, pa.string()))
    # the reasons first, then the row as read
    front = list(REJECT_COLUMNS)
    return t.select(front + [c for c in t.column_names if c not in front])


def clean_schema(store: PartStore, trimmed: pa.Table | None) -> pa.Schema | None:
    schemas = [store.schema("clean", k) for k in store.keys("clean")]
    if trimmed is not None and trimmed.num_rows:
        schemas.append(strip_candidate_columns(trimmed).schema)
    s = unified_schema(schemas, drop=[POS])
    return s


@dataclass
class Finished:
    """The scan's results: tables to write or return, and how to stream the clean split."""

    quarantine: pa.Table
    rejected: pa.Table
    summary: dict
    trimmed: pa.Table | None
    clean_schema: pa.Schema | None
    #: (expectations as evaluated, their GX-shaped results), to render
    expectations: tuple | None = None
    #: (review.parquet, review.json): what the report shows beyond the lists
    review: tuple | None = None


def finish(
    store: PartStore,
    model: ScanModel,
    unit_result: UnitResult,
    detectors: Sequence[Detector],
    cfg: ScanConfig,
    kinds: ColumnKinds,
    file_paths: Mapping[int, str],
    inputs: Sequence[str],
    extra_settings: Mapping[str, Any] | None = None,
    expectations=None,
    row_sample=None,
    content=None,
) -> Finished:
    """Apply the budget and build the quarantine list, rejected rows, expectation
    results and summary. ``content`` is the scan's :class:`~.content.ContentCheck`."""
    counts = unit_result.counts
    valid_rows = counts.read - counts.rejected
    cap = budget_cap(cfg.expected_poison_rate, valid_rows)
    selected = select_quarantine(unit_result.flagged_positions, unit_result.flagged_strength, cap)
    cand_keys = store.keys("candidates")
    candidates = (
        pa.concat_tables([store.read("candidates", k) for k in cand_keys], promote_options="permissive")
        if cand_keys
        else None
    )
    quarantine, trimmed, quarantined = build_quarantine(
        candidates, selected, model, detectors, kinds, cfg, file_paths
    )
    rejected = rejected_table(store, kinds, cfg, expectations)
    summary = summarize(
        model=model,
        counts=counts,
        quarantine=quarantine,
        cap=cap,
        flagged=len(unit_result.flagged_positions),
        cfg=cfg,
        detectors=detectors,
        inputs=inputs,
        extra_settings=extra_settings,
    )
    if content is not None:
        summary["repeated_content"] = content.to_dict()
    checked = None
    if expectations is not None:
        from poisonscan.expectations.results import expectation_results, summary_block

        class_rows = {label: v[0] for label, v in counts.by_class.items()}
        done, results = expectation_results(
            expectations.suite,
            rows_read=counts.read,
            by_error=dict(counts.by_error),
            rejected=rejected,
            id_column=cfg.id_column,
            label_column=cfg.label_column,
            class_rows=class_rows,
            dimension=model.dim if kinds.input.kind == "features" else None,
            sample=row_sample,
            content=content,
        )
        summary["expectations"] = summary_block(done, results, expectations.names)
        checked = (done, results)
    schema = clean_schema(store, trimmed) if cfg.write_clean else None
    from .review import build_review

    review = build_review(
        quarantined=quarantined, quarantine=quarantine, model=model, detectors=detectors,
        contrast=unit_result.contrast, selected=selected, flagged=unit_result.flagged_positions,
        kinds=kinds, cfg=cfg, highlight_column=_CAND_HIGHLIGHTS,
    )
    return Finished(quarantine, rejected, summary, trimmed, schema, checked, review)


def summarize(
    *,
    model: ScanModel,
    counts: Counts,
    quarantine: pa.Table,
    cap: int | None,
    flagged: int,
    cfg: ScanConfig,
    detectors: Sequence[Detector],
    inputs: Sequence[str],
    extra_settings: Mapping[str, Any] | None = None,
) -> dict:
    """summary.json: counts that add up, per-class figures and verdicts, the classes
    ranked by their strongest evidence (``review.rank_classes``), settings."""
    q_labels = Counter(
        _py(v) for v in quarantine.column("label").to_pylist()
    ) if quarantine.num_rows else Counter()
    rows_q = quarantine.num_rows
    valid = counts.read - counts.rejected
    classes = []
    labels = set(counts.by_class) | set(model.classes) | set(model.small_classes)
    for label in sorted(labels, key=label_sort_key):
        read, v, _flag, rej = counts.by_class.get(label, [0, 0, 0, 0])
        entry = {
            "label": label,
            "rows_read": read,
            "rows_valid": v,
            "rows_quarantined": q_labels.get(label, 0),
            "rows_rejected": rej,
            "rows_clean": v - q_labels.get(label, 0),
        }
        if label in model.classes:
            cm = model.classes[label]
            entry["status"] = "scanned"
            entry["poisoned"] = any(cm.active.values())
            entry["sample_rows"] = cm.sample_rows
            entry["verdicts"] = {
                name: {**vd.to_dict(), "counted": bool(cm.active.get(name))}
                for name, vd in cm.verdicts.items()
            }
        elif label in model.small_classes:
            entry["status"] = (
                f"too few valid rows to judge ({model.small_classes[label]} < {cfg.min_class_rows}); rejected"
            )
            entry["poisoned"] = None
        else:
            entry["status"] = "no valid rows"
            entry["poisoned"] = None
        classes.append(entry)
    det_summary = {}
    for det in detectors:
        poisoned = [label for label, cm in model.classes.items() if cm.active.get(det.name)]
        n_flag = int(
            sum(1 for ds in quarantine.column("detectors").to_pylist() if det.name in ds)
        ) if rows_q else 0
        det_summary[det.name] = {
            "params": det.get_params(),
            "classes_poisoned": poisoned,
            "rows_quarantined": n_flag,
        }
    # every row read is accounted for, class by class
    unlabelled = counts.by_error.get("missing_label", 0) + counts.by_error.get("bad_label_encoding", 0)
    if (
        sum(c["rows_read"] for c in classes) + unlabelled != counts.read
        or sum(c["rows_quarantined"] for c in classes) != rows_q
        or any(c["rows_clean"] < 0 for c in classes)
        or rows_q > counts.flagged
    ):
        raise RuntimeError(
            f"row accounting failed: read {counts.read}, quarantined {rows_q} of "
            f"{counts.flagged} flagged, rejected {counts.rejected}"
        )
    poisoned_classes = model.poisoned_classes
    from .review import rank_classes

    ranking, near_miss = rank_classes(classes)
    settings = cfg.to_dict()
    if extra_settings:
        settings.update(extra_settings)
    return {
        "verdict": "poison found" if rows_q else (
            "no poison found" if valid else NOTHING_SCANNED if counts.read else NOTHING_READ
        ),
        "rows_read": counts.read,
        "rows_clean": valid - rows_q,
        "rows_quarantined": rows_q,
        "rows_rejected": counts.rejected,
        "classes_poisoned": poisoned_classes,
        "budget": {
            "expected_poison_rate": cfg.expected_poison_rate,
            "max_rows": cap,
            "rows_flagged": flagged,
            "rows_left_in_clean_by_budget": flagged - rows_q,
        },
        "rejected_by_reason": dict(sorted(counts.by_error.items())),
        "dimension": model.dim,
        "vector_lengths_seen": {str(k): v for k, v in sorted(model.rows_by_dim.items())},
        "classes": classes,
        "class_ranking": ranking,
        "near_miss": near_miss,
        "detectors": det_summary,
        "decision": cfg.build_group_test().get_params(),
        "inputs": list(inputs),
        "settings": settings,
    }


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def fmt_label(label: Any) -> str:
    """A label as a reader expects it: 7 or 'cat'."""
    label = _py(label)
    return repr(label) if isinstance(label, str) else str(label)
