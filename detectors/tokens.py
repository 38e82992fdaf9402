"""Trigger words in text, and trigger values in tables: features that nearly always carry
one label, far more often than that label's share of the data allows."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping, Sequence

import numpy as np

from ._params import Interval
from .base import Detector, DetectorState, label_sort_key, register
from .decision import ClassVerdict
from .stats import ClassSample


def _bucket(gram: str, buckets: int) -> int:
    return zlib.crc32(gram.encode("utf-8")) % buckets


@dataclass(frozen=True)
class Trigger:
    bucket: int
    label: Any
    rows: int  # rows containing it
    with_label: int  # of them, rows with ``label``
    p_value: float


@register
class TokenTrigger(Detector):
    """Words and word pairs that are rare overall but nearly always carry one label.

    A textual backdoor inserts a trigger phrase into examples of other classes and
    relabels them. The phrase's n-grams then occur in few rows, almost all of one label,
    far more often with that label than the label's share of the data allows. Counts are
    exact and mergeable: for every n-gram (hashed into ``buckets``), the rows of each
    label that contain it.

    An n-gram is a trigger for label L when it occurs in at least ``min_rows`` rows (and
    at least ``min_share`` of all rows), in at most ``max_share`` of all rows, at least
    ``min_purity`` of them labelled L, and a one-sided binomial test against L's share
    of the data gives p below ``alpha``. Rows of L containing a trigger are flagged; the
    reason names the n-gram. Score polarity: the number of trigger n-grams in a row
    (higher = more suspicious).

    The input is the n-grams of each row (the text encoder's words and word pairs).
    """

    name = "token_trigger"
    per_class = False
    finds = "backdoor"
    statistic_name = "trigger n-grams in the text"
    #: What a token is, in the class verdict's note.
    token_name = "n-gram"
    _parameter_constraints = {
        "buckets": [Interval(int, 1024, None)],
        "min_rows": [Interval(int, 2, None)],
        "min_share": [Interval(Real, 0, 1, closed="left")],
        "max_share": [Interval(Real, 0, 1, closed="right")],
        "min_purity": [Interval(Real, 0.5, 1, closed="both")],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(
        self,
        *,
        buckets: int = 1 << 22,
        min_rows: int = 20,
        min_share: float = 0.001,
        max_share: float = 0.1,
        min_purity: float = 0.98,
        alpha: float = 1e-12,
    ):
        self.buckets = buckets
        self.min_rows = min_rows
        self.min_share = min_share
        self.max_share = max_share
        self.min_purity = min_purity
        self.alpha = alpha

    @property
    def input(self) -> str:
        return "tokens"

    # accumulation: per label, (bucket, rows containing it) as sorted arrays ---------------
    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, X: Sequence[Sequence[str]], y: np.ndarray) -> dict:
        y = np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} token lists for {len(y)} labels")
        for label in np.unique(y) if len(y) else []:
            rows = [X[i] for i in np.flatnonzero(y == label)]
            ids = [np.unique([_bucket(g, self.buckets) for g in grams]) for grams in rows]
            flat = np.concatenate(ids) if ids else np.empty(0, np.int64)
            b, c = np.unique(flat, return_counts=True)
            key = label.item() if isinstance(label, np.generic) else label
            prev = accumulator.get(key)
            part = (len(rows), b.astype(np.int64), c.astype(np.int64))
            accumulator[key] = part if prev is None else _merge_counts(prev, part)
        return accumulator

    def merge_accumulators(self, accumulators: list) -> dict:
        out: dict = {}
        for acc in accumulators:
            for label, part in acc.items():
                out[label] = part if label not in out else _merge_counts(out[label], part)
        return out

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        from scipy.stats import binom

        self._validate_params()
        state = DetectorState(self.name)
        labels = sorted(accumulator, key=label_sort_key)
        total = sum(accumulator[label][0] for label in labels)
        for label in labels:
            state.classes[label] = []
        if total == 0:
            return state
        all_b = np.unique(np.concatenate([accumulator[label][1] for label in labels]))
        counts = np.zeros((len(labels), len(all_b)), dtype=np.int64)
        for i, label in enumerate(labels):
            _, b, c = accumulator[label]
            counts[i, np.searchsorted(all_b, b)] = c
        rows = counts.sum(axis=0)
        low = max(self.min_rows, int(np.ceil(self.min_share * total)))
        ok = (rows >= low) & (rows <= self.max_share * total)
        top = counts.argmax(axis=0)
        best = counts.max(axis=0)
        ok &= best >= self.min_purity * rows
        for j in np.flatnonzero(ok):
            label = labels[top[j]]
            prior = accumulator[label][0] / total
            p = float(binom.sf(best[j] - 1, rows[j], prior))
            if p < self.alpha:
                state.classes[label].append(Trigger(int(all_b[j]), label, int(rows[j]), int(best[j]), p))
        state.info["rows"] = total
        state.info["label_rows"] = {str(label): int(accumulator[label][0]) for label in labels}
        return state

    # scoring --------------------------------------------------------------------------------
    def _hits(self, state: DetectorState, X, y) -> list[list[Trigger]]:
        out = []
        for grams, label in zip(X, y):
            label = label.item() if isinstance(label, np.generic) else label
            triggers = state.classes.get(label)
            if triggers is None:
                raise ValueError(f"no fitted state for class {label!r}")
            if not triggers:
                out.append([])
                continue
            wanted = {t.bucket: t for t in triggers}
            ids = {_bucket(g, self.buckets) for g in grams}
            out.append([wanted[b] for b in sorted(ids & set(wanted))])
        return out

    def score(self, state: DetectorState, X, y) -> np.ndarray:
        return np.array([len(h) for h in self._hits(state, X, y)], dtype=np.float64)

    def judge(self, state, label, class_rows, group_test) -> ClassVerdict:
        triggers = state.classes.get(label, [])
        base = dict(label=label, detector=self.name, class_rows=int(class_rows), sample_rows=0,
                    cut=0.5, side=1, center=0.0, scale=1.0)
        if not triggers:
            return ClassVerdict(poisoned=False, note=f"no {self.token_name} nearly always carries this label", **base)
        strongest = max(triggers, key=lambda t: t.rows)
        note = (
            f"{len(triggers)} {self.token_name}(s) occur almost only with this label; the most common in "
            f"{strongest.rows} rows, {strongest.with_label / strongest.rows:.0%} of them with this label"
        )
        return ClassVerdict(
            poisoned=True, note=note, group_fraction=strongest.with_label / max(class_rows, 1),
            extra={"triggers": len(triggers), "strongest_rows": strongest.rows}, **base,
        )

    def _named(self, state, X, y) -> list[list[tuple[str, Trigger]]]:
        """Per row, (n-gram, trigger) for each trigger n-gram it contains, the longest first."""
        out = []
        for grams, hits in zip(X, self._hits(state, X, y)):
            by_bucket = {t.bucket: t for t in hits}
            named = [(g, by_bucket[b]) for g in set(grams) if (b := _bucket(g, self.buckets)) in by_bucket]
            out.append(sorted(named, key=lambda nt: (-len(nt[0]), nt[0])))
        return out

    def highlights(self, state, X, y) -> list[list[str]]:
        """The trigger n-grams each row contains, the longest first."""
        return [[g for g, _ in named] for named in self._named(state, X, y)]

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        total = state.info.get("rows", 0)
        out = []
        for named in self._named(state, X, y):
            gram, t = named[0]
            prior = state.info["label_rows"][str(t.label)] / max(total, 1)
            out.append(
                f"contains {gram!r}, which occurs in {t.rows:,} rows, {t.with_label / t.rows:.0%} "
                f"of them labelled {t.label!r} (that label's share of all rows: {prior:.0%})"
            )
        return out


@register
class ValueTrigger(TokenTrigger):
    """Table values that nearly always carry one label: a targeted flip or a trigger value.

    A targeted label flip relabels every row of a sub-population — for example every
    applicant of one job type — to one class, and a tabular backdoor stamps one value on
    rows of other classes and relabels them. Either way one value of a categorical
    column ends up carried by one label almost without exception, far more often than
    that label's share of the data allows. A model trained on such data learns the flip
    (it is consistent), so out-of-fold label checks miss it; the counts do not.

    The test is :class:`TokenTrigger`'s over ``column=value`` tokens (one per string
    column of each row; the tabular encoder makes them): a value is a trigger for label L when at least ``min_rows`` rows
    (and ``min_share`` of all rows) and at most ``max_share`` of all rows hold it, at
    least ``min_purity`` of them labelled L, and a one-sided binomial test against L's
    share of the data gives p below ``alpha``. Rows of L holding a trigger value are
    flagged, the reason names the column and value. A genuine value that decides the
    label by itself is flagged too; the reason says so, for a reviewer to release.
    Score polarity: the number of trigger values in a row (higher = more suspicious).
    """

    name = "value_trigger"
    # an exact count test, judged on its own (unlike the disagreement-based label
    # detectors, which must agree with each other)
    finds = "targeted label flip"
    statistic_name = "trigger values in the row"
    token_name = "column value"

    def __init__(
        self,
        *,
        buckets: int = 1 << 22,
        min_rows: int = 20,
        min_share: float = 0.001,
        max_share: float = 0.5,
        min_purity: float = 0.98,
        alpha: float = 1e-12,
    ):
        super().__init__(
            buckets=buckets, min_rows=min_rows, min_share=min_share, max_share=max_share,
            min_purity=min_purity, alpha=alpha,
        )

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        total = state.info.get("rows", 0)
        out = []
        for named in self._named(state, X, y):
            token, t = named[0]
            column, _, value = token.partition("=")
            prior = state.info["label_rows"][str(t.label)] / max(total, 1)
            out.append(
                f"has {column} = {value!r}, which {t.rows:,} rows have, {t.with_label / t.rows:.0%} "
                f"of them labelled {t.label!r} (that label's share of all rows: {prior:.0%}); "
                "a sub-population relabelled to one class, or a value that decides the label"
            )
        return out


def _merge_counts(a, b):
    n = a[0] + b[0]
    buckets = np.concatenate([a[1], b[1]])
    counts = np.concatenate([a[2], b[2]])
    u, inv = np.unique(buckets, return_inverse=True)
    return (n, u, np.bincount(inv, weights=counts, minlength=len(u)).astype(np.int64))
