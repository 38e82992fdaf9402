"""The pipeline's CombineFns: each merges what the scan core computes per bundle.

:class:`Merge` is one CombineFn over any mergeable value of the core (it folds them with
the value's own merge, as TFDV's one CombineFn folds any statistics generator);
:class:`MergeRepeated` gathers a bucket's fingerprints and sorts them once.
"""

from __future__ import annotations

from typing import Any, Callable

import apache_beam as beam
import numpy as np

from poisonscan.pipelines.scan.fit import ROW_SAMPLE, RowSample
from poisonscan.pipelines.scan.plan import ScanPlan
from poisonscan.pipelines.scan.score import UnitResult


class Merge(beam.CombineFn):
    """Fold values with ``merge(a, b)``, starting from ``empty()`` (or from the first
    value, when there is no empty one; then no value gives None)."""

    def __init__(self, merge: Callable[[Any, Any], Any], empty: Callable[[], Any] | None = None):
        self._fold = merge
        self._empty = empty

    def create_accumulator(self):
        return self._empty() if self._empty is not None else None

    def add_input(self, acc, value):
        return value if acc is None else self._fold(acc, value)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            if a is not None:
                out = a if out is None else self._fold(out, a)
        return out

    def extract_output(self, acc):
        return acc


def _merge(a, b):
    return a.merge(b)


def _union(a: dict, b: dict) -> dict:
    return {**a, **b}


def _concat_results(a: UnitResult, b: UnitResult) -> UnitResult:
    return UnitResult.concat([a, b])


def _no_results() -> UnitResult:
    return UnitResult.concat([])


def _no_rows() -> RowSample:
    return RowSample(ROW_SAMPLE, np.empty(0, np.uint64), np.empty(0, np.int64), None)


def merge_row_samples() -> Merge:
    """Pass 2's uniform row samples (for the user's aggregate expectations)."""
    return Merge(_merge, _no_rows)


def merge_dicts() -> Merge:
    """Dicts of disjoint keys (the duplicated ids or contents of every bucket)."""
    return Merge(_union, dict)


def merge_reservoirs() -> Merge:
    """A class's raw-value samples (the proxy's training sample)."""
    return Merge(_merge)


def concat_results() -> Merge:
    """The read units' counts and flagged positions."""
    return Merge(_concat_results, _no_results)


class _MergePartials:
    """``a.merge(b, detectors)`` for a class's pass-1 partials; the detectors are built
    from the plan in the worker, once."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan
        self._detectors = None

    def __call__(self, a, b):
        if self._detectors is None:
            self._detectors = self.plan.detectors()
        return a.merge(b, self._detectors)

    def __getstate__(self):
        return {"plan": self.plan, "_detectors": None}


def combine_partials(plan: ScanPlan) -> Merge:
    """A class's pass-1 partials (accumulators and samples) per (class, vector length)."""
    return Merge(_MergePartials(plan))


class MergeRepeated(beam.CombineFn):
    """One bucket's fingerprints (``IdKeys`` or ``ContentKeys``) -> the ones seen more
    than once. The fingerprints are gathered and sorted once, not merged pairwise."""

    def __init__(self, keys_type):
        self.keys_type = keys_type

    def create_accumulator(self):
        return []

    def add_input(self, acc, keys):
        acc.append(keys)
        return acc

    def merge_accumulators(self, accs):
        return [self.keys_type.concat(k for acc in accs for k in acc)]

    def extract_output(self, acc):
        return self.keys_type.concat(acc).duplicates()
