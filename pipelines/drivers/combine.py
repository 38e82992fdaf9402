"""The pipeline's CombineFns: each merges what the scan core computes per bundle."""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from poisonscan.pipelines.scan.fit import ROW_SAMPLE, RowSample, merge_partials
from poisonscan.pipelines.scan.plan import ScanPlan
from poisonscan.pipelines.scan.score import UnitResult


class MergeRepeated(beam.CombineFn):
    """One bucket's fingerprints (``IdKeys`` or ``ContentKeys``) -> the
    ones seen more than once."""

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


class MergeRowSamples(beam.CombineFn):
    def create_accumulator(self):
        return RowSample(ROW_SAMPLE, np.empty(0, np.uint64), np.empty(0, np.int64), None)

    def add_input(self, acc, sample):
        return acc.merge(sample)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out = out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


class MergeDicts(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, d):
        acc.update(d)
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return acc


class MergeReservoirs(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, acc, res):
        return res if acc is None else acc.merge(res)

    def merge_accumulators(self, accs):
        out = None
        for a in accs:
            if a is not None:
                out = a if out is None else out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


class CombinePartials(beam.CombineFn):
    def __init__(self, plan: ScanPlan):
        self.plan = plan
        self._detectors = None

    @property
    def detectors(self):
        if self._detectors is None:
            self._detectors = self.plan.detectors()
        return self._detectors

    def create_accumulator(self):
        return None

    def add_input(self, acc, partial):
        return partial if acc is None else acc.merge(partial, self.detectors)

    def merge_accumulators(self, accs):
        return merge_partials([a for a in accs if a is not None], self.detectors)

    def extract_output(self, acc):
        return acc


class ConcatResults(beam.CombineFn):
    def create_accumulator(self):
        return UnitResult.concat([])

    def add_input(self, acc, result):
        return UnitResult.concat([acc, result])

    def merge_accumulators(self, accs):
        return UnitResult.concat(accs)

    def extract_output(self, acc):
        return acc
