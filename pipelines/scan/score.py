"""Pass 2: every row of a batch scored and split into clean, flagged (candidate) and
rejected parts, with the counts the finish step adds up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from poisonscan.detectors import (
    Detector,
)
from poisonscan.detectors.base import group_rows_by_label, label_sort_key
from poisonscan.pipelines.io.parts import PartStore
from poisonscan.pipelines.io.sources import decode_position
from poisonscan.pipelines.scan.columns import (
    CAND_CONTENT,
    CAND_DETECTORS,
    CAND_HIGHLIGHTS,
    CAND_SCORE,
    POS,
    raw_column,
    strength_column,
    why_column,
)
from poisonscan.pipelines.scan.fit import ScanModel, view
from poisonscan.pipelines.scan.review import ContrastRows
from poisonscan.pipelines.scan.rows import Prepared, content_of


# pass 2 ---------------------------------------------------------------------------------
@dataclass
class Counts:
    """Mergeable row counts of pass 2."""

    read: int = 0
    rejected: int = 0
    flagged: int = 0
    by_class: dict = field(default_factory=dict)  # label -> [read, valid, flagged, rejected]
    by_error: Counter = field(default_factory=Counter)
    #: earlier decisions met (``--decisions``): "released_earlier" (flagged, not
    #: quarantined again), "released_unchanged" (found under the same id, content and
    #: label), "released_changed" (its id found with other content or label: judged anew)
    decided: Counter = field(default_factory=Counter)

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
            self.decided + other.decided,
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
    scores = _Scores.of(prep, model, detectors)
    released_again = scores.release(prep)
    flagged, valid = scores.flagged, prep.valid
    pos = pa.array(prep.positions, pa.int64())
    batch = pa.Table.from_batches([prep.batch])
    contrast = ContrastRows.of(prep, batch, valid & ~flagged, set(model.poisoned_classes), seed)
    clean = None
    if keep_clean:
        mask = valid & ~flagged
        if mask.any():
            clean = batch.filter(pa.array(mask)).append_column(POS, pos.filter(pa.array(mask)))
    candidates = scores.candidates(prep, batch, pos, detectors) if flagged.any() else None
    rejected = _rejected_rows(prep, batch, pos, file_path) if (~valid).any() else None
    return BatchOutcome(
        clean,
        candidates,
        rejected,
        prep.positions[flagged],
        scores.combined[flagged],
        _counts(prep, flagged, released_again),
        contrast,
    )


@dataclass
class _Scores:
    """What the detectors said about a batch's rows, per detector and combined."""

    raw: dict
    strength: dict
    flagged_by: dict
    why: dict
    highlights: np.ndarray
    flagged: np.ndarray
    combined: np.ndarray

    @staticmethod
    def of(prep: Prepared, model: ScanModel, detectors: Sequence[Detector]) -> "_Scores":
        n = prep.n
        scores = _Scores(
            {d.name: np.full(n, np.nan) for d in detectors},
            {d.name: np.full(n, np.nan) for d in detectors},
            {d.name: np.zeros(n, dtype=bool) for d in detectors},
            {d.name: np.full(n, None, dtype=object) for d in detectors},
            np.full(n, None, dtype=object),
            np.zeros(n, dtype=bool),
            np.full(n, -np.inf),
        )
        if model.dim in prep.groups:
            rows, X = prep.groups[model.dim]
            for det in detectors:
                scores.apply(det, prep, model, rows, X)
            for det in detectors:
                f = scores.flagged_by[det.name]
                scores.flagged |= f
                scores.combined = np.where(f, np.maximum(scores.combined, scores.strength[det.name]), scores.combined)
        return scores

    def apply(self, det: Detector, prep: Prepared, model: ScanModel, rows: np.ndarray, X: np.ndarray) -> None:
        """Score the rows of the classes ``det`` judged poisoned; elsewhere it flags
        nothing, and skipping it keeps costly detectors off clean data."""
        judged = model.active_for(det.name)
        if not judged:
            return
        y = prep.labels[rows]
        sel = np.isin(y, np.array(sorted(judged, key=label_sort_key), dtype=y.dtype))
        if not sel.any():
            return
        ys, rs = y[sel], rows[sel]
        tokens = prep.tokens_of(rs) if det.input == "tokens" else None
        Xs = view(det, X[sel], model.layout, tokens)
        state = model.states[det.name]
        score, stat = det.evaluate(state, Xs, ys)
        self.raw[det.name][rs] = score
        for label, idx in group_rows_by_label(ys):
            verdict = model.verdict(label, det.name)
            self.strength[det.name][rs[idx]] = verdict.strength(stat[idx])
            self.flagged_by[det.name][rs[idx]] = verdict.flags(stat[idx])
        hit = self.flagged_by[det.name][rs]
        if hit.any():
            Xh = [Xs[i] for i in np.flatnonzero(hit)] if det.input == "tokens" else Xs[hit]
            self.why[det.name][rs[hit]] = det.describe(state, Xh, ys[hit], stat[hit], self.strength[det.name][rs[hit]])
            marked = det.highlights(state, Xh, ys[hit])
            for r, parts in zip(rs[hit], marked or []):
                self.highlights[r] = list(dict.fromkeys((self.highlights[r] or []) + list(parts)))

    def release(self, prep: Prepared) -> np.ndarray:
        """Unflag the rows a reviewer released earlier (same id, content and label);
        returns them."""
        if prep.released is None:
            return np.zeros(prep.n, dtype=bool)
        again = self.flagged & prep.released
        self.flagged = self.flagged & ~again
        return again

    def candidates(self, prep: Prepared, batch: pa.Table, pos: pa.Array, detectors: Sequence[Detector]) -> pa.Table:
        """The flagged rows, whole, with their combined score, detectors, highlights and
        each detector's raw score, strength and reason."""
        flagged = self.flagged
        m = pa.array(flagged)
        out = batch.filter(m).append_column(POS, pos.filter(m))
        out = out.append_column(CAND_SCORE, pa.array(self.combined[flagged]))
        out = out.append_column(CAND_CONTENT, pa.array(content_of(prep, np.flatnonzero(flagged)), pa.string()))
        names = [[d.name for d in detectors if self.flagged_by[d.name][i]] for i in np.flatnonzero(flagged)]
        out = out.append_column(CAND_DETECTORS, pa.array(names, pa.list_(pa.string())))
        out = out.append_column(
            CAND_HIGHLIGHTS, pa.array([self.highlights[i] or [] for i in np.flatnonzero(flagged)], pa.list_(pa.string()))
        )
        for det in detectors:
            r = self.raw[det.name][flagged]  # null where the detector was not applied
            out = out.append_column(raw_column(det.name), pa.array(r, mask=np.isnan(r)))
            st = np.where(self.flagged_by[det.name], self.strength[det.name], np.nan)[flagged]
            out = out.append_column(strength_column(det.name), pa.array(st, mask=np.isnan(st)))
            out = out.append_column(why_column(det.name), pa.array(list(self.why[det.name][flagged]), pa.string()))
        return out


def _counts(prep: Prepared, flagged: np.ndarray, released_again: np.ndarray) -> Counts:
    valid = prep.valid
    counts = Counts(read=prep.n, rejected=int((~valid).sum()), flagged=int(flagged.sum()))
    if prep.released is not None:
        counts.decided.update({
            "released_earlier": int(released_again.sum()),
            "released_unchanged": int(prep.released.sum()),
            "released_changed": int(prep.released_changed.sum()),
        })
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
    return counts


def _rejected_rows(prep: Prepared, batch: pa.Table, pos: pa.Array, file_path: str) -> pa.Table:
    """The rejected rows, whole, with their errors and where they were read."""
    invalid = ~prep.valid
    m = pa.array(invalid)
    _, rows_in_file = zip(*(decode_position(p) for p in prep.positions[invalid]))
    out = batch.filter(m)
    out = out.append_column("error", pa.array(list(prep.error[invalid]), pa.string()))
    out = out.append_column("error_code", pa.array(list(prep.error_code[invalid]), pa.string()))
    out = out.append_column("source_file", pa.array([file_path] * int(invalid.sum()), pa.string()))
    out = out.append_column("source_row", pa.array(rows_in_file, pa.int64()))
    return out.append_column(POS, pos.filter(m))


def _labels_with_rows(prep: Prepared):
    """(label, row indices) over the batch rows whose label is present."""
    idx_all = np.flatnonzero(~prep.label_null)
    for label, idx in group_rows_by_label(prep.labels[idx_all]):
        yield label, idx_all[idx]


@dataclass
class UnitResult:
    """What pass 2 reports for one read unit (its tables are in the part store)."""

    counts: Counts
    flagged_positions: np.ndarray
    flagged_strength: np.ndarray
    contrast: Any = None  # review.ContrastRows

    @staticmethod
    def concat(results: Iterable["UnitResult"]) -> "UnitResult":

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
