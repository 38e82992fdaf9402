"""The scan as one Apache Beam pipeline.

Beam code here only wires; every computation is a function of the scan core (:mod:`..scan`), the same
ones the in-memory path calls. The source is read three times, and only small things
cross a stage boundary (the FnApiRunner keeps such PCollections in memory):

::

    units ─┬─ pass 0: read ids ─► fingerprints by bucket ─► duplicated ids ─────────┐ side
           ├─ pass 1: read, validate ─► per (class, length) partials ─► CombinePerKey │ input
           │            ─► fit each class (parallel) ─► model ──────────────────────┐ │
           └─ pass 2: read, validate, score (model, duplicates as side inputs) ◄────┴─┘
                        ─► part files per unit (clean / flagged / rejected rows)
                        ─► counts + flagged positions ─► finish: budget, quarantine,
                           rejected, clean split, summary (staged in the output dir)

The driver (:func:`run_scan`) checks the inputs before building the pipeline and moves
the staged outputs into place only after the pipeline has succeeded. On the embedded
runner with local files it runs pass 0 itself, in a thread while the pipeline is built,
and the pipeline reads the duplicated ids from the staging folder.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils.windowed_value import WindowedValue

from poisonscan.pipelines.drivers.combine import (
    MergeRepeated,
    combine_partials,
    concat_results,
    merge_dicts,
    merge_reservoirs,
    merge_row_samples,
)
from poisonscan.pipelines.drivers.progress import RowCounts
from poisonscan.pipelines.drivers.staging import (
    CONTENT_KEYS_DIR,
    DUPLICATES_FILE,
    read_content_bucket,
    read_pickle,
    write_content_keys,
    write_finished,
    write_pickle,
)
from poisonscan.pipelines.io.outputs import (
    FilePartStore,
    OutputDir,
    join,
    open_read,
    open_write,
)
from poisonscan.pipelines.io.parts import MemoryPartStore, PartStore
from poisonscan.pipelines.io.sources import ReadUnit, read_unit, table_batches
from poisonscan.pipelines.scan.content import ContentCheck
from poisonscan.pipelines.scan.finish import Passes, finish
from poisonscan.pipelines.scan.fit import (
    ROW_SAMPLE,
    RowSample,
    build_model,
    choose_dim,
    class_partials,
    each_at_once,
    fit_class,
    fit_imports,
)
from poisonscan.pipelines.scan.keys import (
    N_ID_BUCKETS,
    ContentKeys,
    IdKeys,
    batch_id_keys,
    content_keys,
)
from poisonscan.pipelines.scan.plan import ScanPlan
from poisonscan.pipelines.scan.reference import compare_to_reference
from poisonscan.pipelines.scan.representer import raw_sample
from poisonscan.pipelines.scan.rows import attach, prepare
from poisonscan.pipelines.scan.score import score_batch, store_outcomes
from poisonscan.pipelines.scan.state import STATE_FILE, dumps, read_state, scan_state

CONTENT = "content"

ROWS = "rows"

PARTS = "parts"


@dataclasses.dataclass(frozen=True)
class BatchUnit:
    """A table that arrived in a PCollection, standing where a read unit of a file
    would: ``file_index`` is its place among the input's tables (:mod:`.transform`)."""

    file_index: int
    table: pa.Table

    @property
    def key(self) -> str:
        return f"{self.file_index:06d}-000000"


def read_any(unit, columns: Sequence[str] | None, batch_rows: int):
    """``(batch, first row)`` of a read unit of a file or of a :class:`BatchUnit`."""
    if not isinstance(unit, BatchUnit):
        yield from read_unit(unit, columns, batch_rows)
        return
    table = unit.table
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    yield from table_batches(table, batch_rows)


# DoFns and CombineFns -----------------------------------------------------------------
class _ReadIdKeys(beam.DoFn):
    """Pass 0: fingerprints of every id in a unit, by bucket."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan

    def setup(self):
        self.counts = RowCounts("pass0", self.plan.progress_dir)

    def process(self, unit: ReadUnit):
        cfg = self.plan.cfg
        for batch, first in read_any(unit, [cfg.id_column], cfg.batch_rows):
            self.counts.add(read=batch.num_rows)
            yield from batch_id_keys(batch, unit.file_index, first, self.plan.kinds, cfg.id_column)

    def finish_bundle(self):
        self.counts.flush()


class _ClassPartials(beam.DoFn):
    """Pass 1: validate and fold rows into per (class, length) partials."""

    def __init__(self, plan: ScanPlan, keys_root: str | None = None):
        self.plan = plan
        self.keys_root = keys_root

    def setup(self):
        self.detectors = self.plan.detectors()
        self.counts = RowCounts("pass1", self.plan.progress_dir)

    def start_bundle(self):
        # the sample bounds cover what this bundle has emitted (a failed bundle's
        # output is dropped with it)
        self.bounds = {}

    def process(self, unit: ReadUnit, duplicates):
        checks = self.plan.checks(duplicates=duplicates, collect_content=True)
        keys = []
        for batch, first in read_any(unit, self.plan.input_columns, self.plan.batch_rows):
            prep = prepare(batch, unit.file_index, first, checks)
            self.counts.add(read=batch.num_rows, valid=int(prep.valid.sum()))
            keys.extend(content_keys(prep))
            yield from class_partials(prep, self.detectors, self.plan.cfg, self.plan.layout, self.bounds)
        yield from _content_output(keys, self.keys_root, unit.key)

    def finish_bundle(self):
        self.counts.flush()


class _RawSample(beam.DoFn):
    """Raw inputs: a per-class sample of raw values, to train the proxy on."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan

    def setup(self):
        self.counts = RowCounts("sample", self.plan.progress_dir)

    def process(self, unit: ReadUnit, duplicates):
        for batch, first in read_any(unit, self.plan.input_columns, self.plan.batch_rows):
            self.counts.add(read=batch.num_rows)
            yield from raw_sample(
                batch, unit.file_index, first, self.plan.kinds, self.plan.cfg, duplicates,
                self.plan.folders.get(unit.file_index),
            )

    def finish_bundle(self):
        self.counts.flush()


class _ReadExamples(beam.DoFn):
    """Raw inputs: validate and encode each batch; key it for RunInference.

    The key carries the prepared batch itself (it never leaves the fused stage), so
    the representation comes back joined to its rows without a shuffle.
    """

    def __init__(self, plan: ScanPlan, second_pass: bool):
        self.plan = plan
        self.second_pass = second_pass

    def process(self, unit: ReadUnit, duplicates, model=None, content=None):
        # torch: heavy to import; only scans of raw inputs need it
        import torch

        if self.second_pass:
            checks = self.plan.scoring_checks(duplicates, model, content, bool(self.plan.reference))
        else:
            checks = self.plan.checks(duplicates=duplicates, collect_content=True)
        columns = None if self.second_pass else self.plan.input_columns
        for i, (batch, first) in enumerate(read_any(unit, columns, self.plan.batch_rows)):
            prep = prepare(batch, unit.file_index, first, checks)
            example = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.plan.representer.example(prep).items()}
            yield (unit.key, i, prep), example


class _AttachPartials(beam.DoFn):
    """Raw inputs, pass 1: representation joined to its rows -> class partials."""

    def __init__(self, plan: ScanPlan, keys_root: str | None = None):
        self.plan = plan
        self.keys_root = keys_root

    def setup(self):
        self.detectors = self.plan.detectors()
        self.counts = RowCounts("pass1", self.plan.progress_dir)

    def start_bundle(self):
        self.bounds = {}  # as in _ClassPartials

    def process(self, element):
        (unit_key, batch_index, prep), result = element
        _attach(prep, result)
        self.counts.add(read=prep.batch.num_rows, valid=int(prep.valid.sum()))
        yield from _content_output(content_keys(prep), self.keys_root, f"{unit_key}-{batch_index:06d}")
        yield from class_partials(prep, self.detectors, self.plan.cfg, self.plan.layout, self.bounds)

    def finish_bundle(self):
        self.counts.flush()


def _content_output(keys: list, keys_root: str | None, name: str):
    """Pass 1's content fingerprints: each (bucket, keys) as an element, or (with a
    ``keys_root``) one file of them named after the element, and its path."""
    if keys_root is None:
        for key in keys:
            yield beam.pvalue.TaggedOutput(CONTENT, key)
    elif keys:
        path = join(keys_root, f"{name}.npz")
        write_content_keys(path, keys)
        yield beam.pvalue.TaggedOutput(CONTENT, path)


def _repeated_in_bucket(bucket: int, paths: list[str]) -> dict:
    return read_content_bucket(paths, bucket).duplicates()


def _attach(prep, result) -> None:

    out = result.inference
    rep = out["representation"]
    if len(prep.encoded.rows) == 0:
        rep = np.zeros((0, 0), np.float32)
    attach(prep, rep, out["probabilities"] if len(prep.encoded.rows) else None)


class _FitClass(beam.DoFn):
    """Fit the detectors on one class and judge it (classes run in parallel)."""

    SMALL = "small"

    def __init__(self, plan: ScanPlan):
        self.plan = plan
        self.cfg = plan.cfg

    def setup(self):
        self.detectors = self.plan.detectors()
        self.group_test = self.cfg.build_group_test(self.detectors)
        self.counts = RowCounts("fit", self.plan.progress_dir)

    def start_bundle(self):
        self.pending = []  # (label, partial, timestamp, window) of the bundle's classes

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam, rows_by_dim=None):
        (label, dim), partial = element
        if dim != choose_dim(rows_by_dim):
            pass  # rows of another vector length: rejected in pass 2
        elif partial.rows < self.cfg.min_class_rows:
            yield beam.pvalue.TaggedOutput(self.SMALL, (label, partial.rows))
        else:
            self.pending.append((label, partial, timestamp, window))
            return  # counted once fitted, in finish_bundle
        self.counts.add(read=partial.rows, classes=1)

    def finish_bundle(self):
        """The bundle's classes, fitted side by side on the worker's cores
        (:func:`.fit.each_at_once`): one class per element keeps classes spread over
        workers, and a worker given several fits them at once."""
        pending, self.pending = self.pending, []

        def fit(item):
            label, partial, _, _ = item
            return fit_class(
                label, partial, self.detectors, self.group_test, self.cfg.shared_sample_size,
                self.plan.layout,
            )

        imports = fit_imports(self.detectors)
        for (_, partial, timestamp, window), model in zip(pending, each_at_once(fit, pending, imports)):
            self.counts.add(read=partial.rows, classes=1)
            yield WindowedValue(model, timestamp, [window])
        self.counts.flush()


class _ScoreUnit(beam.DoFn):
    """Pass 2: validate, score and split one unit (features input) or one represented
    batch (raw input). Its tables (clean / flagged / rejected rows) go to part files
    named after the unit (and batch) under ``parts_root``; with no ``parts_root`` they
    are emitted instead, tagged :data:`PARTS`, as ``(kind, key, table)``."""

    def __init__(self, plan: ScanPlan, parts_root: str | None):
        self.plan = plan
        self.parts_root = parts_root

    def setup(self):
        self.detectors = self.plan.detectors()
        self.counts = RowCounts("pass2", self.plan.progress_dir)

    def finish_bundle(self):
        self.counts.flush()

    def _scored(self, prep, model, path, keep_clean: bool, samples: list | None):
        if samples is not None:
            samples.append(RowSample.of(prep, ROW_SAMPLE, self.plan.cfg.seed))
        outcome = score_batch(prep, model, self.detectors, path, keep_clean=keep_clean, seed=self.plan.cfg.seed)
        c = outcome.counts
        self.counts.add(read=c.read, rejected=c.rejected, flagged=c.flagged)
        return outcome

    def _store(self) -> PartStore:
        return FilePartStore(self.parts_root) if self.parts_root is not None else MemoryPartStore()

    def process(self, element, duplicates, model, content):
        keep_clean = self.plan.cfg.write_clean or self.parts_root is None
        sample_rows = bool(self.plan.expectations and self.plan.expectations.needs_sample)
        samples = []
        store = self._store()
        if self.plan.raw:
            (key, i, prep), result = element
            _attach(prep, result)
            path = self.plan.file_paths.get(int(key.split("-")[0]))
            outcome = self._scored(prep, model, path, keep_clean, samples if sample_rows else None)
            result = store_outcomes(store, f"{key}-{i:06d}", [outcome])
        else:
            unit = element
            checks = self.plan.scoring_checks(duplicates, model, content, bool(self.plan.reference))
            path = self.plan.file_paths.get(unit.file_index)
            preps = (prepare(b, unit.file_index, f, checks) for b, f in read_any(unit, None, self.plan.batch_rows))
            outcomes = (self._scored(prep, model, path, keep_clean, samples if sample_rows else None) for prep in preps)
            result = store_outcomes(store, unit.key, outcomes)
        for sample in samples:
            yield beam.pvalue.TaggedOutput(ROWS, sample)
        if isinstance(store, MemoryPartStore):
            for kind in PartStore.kinds:
                for key in store.keys(kind):
                    yield beam.pvalue.TaggedOutput(PARTS, (kind, key, store.read(kind, key)))
        yield result


class _Finish(beam.DoFn):
    """Budget, quarantine list, rejected rows, clean split and summary, staged."""

    def __init__(self, plan: ScanPlan, out: OutputDir, inputs: Sequence[str], extra: dict):
        self.plan = plan
        self.out = out
        self.inputs = list(inputs)
        self.extra = extra

    def process(self, unit_result, model, rows, content, partials, new_model, reference=None):
        plan, out = self.plan, self.out
        passes = Passes(out.parts, model, unit_result, row_sample=rows.frame(), content=content,
                        reference=reference_block(plan, reference, partials, new_model),
                        own_model=new_model if reference is not None else None)
        fin = finish(plan, passes, self.inputs, self.extra)
        write_finished(fin, out.parts, out, plan.cfg)
        with open_write(out.staged(STATE_FILE)) as f:
            # the new rows' own state (with --reference too), to merge with other scans'
            f.write(dumps(scan_state(
                plan.kinds.input.kind, dict(partials), new_model, plan.cfg, plan.layout, plan.representer
            )))
        return []


def reference_block(plan: ScanPlan, reference, partials, new_model) -> dict | None:
    """summary.json's comparison of the new rows with the ``reference`` state (None: no
    reference)."""
    if reference is None:
        return None
    return compare_to_reference(reference, dict(partials), new_model, plan.reference, seed=plan.cfg.seed)


def with_reference(p: beam.Pipeline, plan: ScanPlan, model) -> tuple:
    """(the model pass 2 scores with, the reference state or None): the scan's own
    model, or the reference's, read once from its state file (not carried in the graph)."""
    if not plan.reference:
        return model, None
    state = (
        p
        | "ReferenceFolder" >> beam.Create([plan.reference])
        | "ReadReference" >> beam.Map(read_state, open_read)
    )
    return state | "ReferenceModel" >> beam.Map(lambda s: s.model), state


def reference_side(state) -> dict:
    """The Finish step's side input of the reference state (none without one)."""
    return {} if state is None else {"reference": beam.pvalue.AsSingleton(state)}


# the pipeline -------------------------------------------------------------------------
class FindDuplicateIds(beam.PTransform):
    """Pass 0: read units' ids -> ``{fingerprint: first position}`` of duplicated ids."""

    def __init__(self, plan: ScanPlan):
        super().__init__()
        self.plan = plan

    def expand(self, units):
        return (
            units
            | "ReadIds" >> beam.ParDo(_ReadIdKeys(self.plan))
            | "PerBucket" >> beam.CombinePerKey(MergeRepeated(IdKeys))
            | "Values" >> beam.Values()
            | "All" >> beam.CombineGlobally(merge_dicts())
        )


class Represent(beam.PTransform):
    """Raw inputs: units -> ((unit key, batch index, prepared batch), PredictionResult).

    Each record batch's encoded rows go through Beam's RunInference with the PyTorch
    model handler (the trained proxy, or the user's model), keyed by the batch of rows
    they came from.
    """

    def __init__(self, plan: ScanPlan, second_pass: bool):
        super().__init__()
        self.plan = plan
        self.second_pass = second_pass

    def expand(self, pcolls):
        # torch: a heavy import, needed only by scans of raw inputs
        from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

        # torch: heavy to import; only scans of raw inputs need it
        from poisonscan.pipelines.drivers.inference import model_handler

        units, duplicates = pcolls[:2]
        side = {"duplicates": beam.pvalue.AsSingleton(duplicates)}
        if self.second_pass:
            side["model"] = beam.pvalue.AsSingleton(pcolls[2])
            side["content"] = beam.pvalue.AsSingleton(pcolls[3])
        return (
            units
            | "ReadEncode" >> beam.ParDo(_ReadExamples(self.plan, self.second_pass), **side)
            | "RunInference" >> RunInference(KeyedModelHandler(model_handler(self.plan)))
        )


class FitModel(beam.PTransform):
    """Pass 1: read units -> (one :class:`~..scan.fit.ScanModel`, classes fitted in parallel;
    ``{content fingerprint: (first position, labels conflict)}`` of repeated content;
    ``((class, vector length), merged partial)`` per class)."""

    def __init__(self, plan: ScanPlan, keys_root: str | None = None):
        super().__init__()
        self.plan = plan
        self.keys_root = keys_root

    def expand(self, pcolls):
        units, duplicates = pcolls
        plan = self.plan
        if plan.raw:
            outputs = (
                (units, duplicates) | "Represent" >> Represent(plan, second_pass=False)
                | "Accumulate" >> beam.ParDo(_AttachPartials(plan, self.keys_root)).with_outputs(
                    CONTENT, main="partials"
                )
            )
        else:
            outputs = units | "Accumulate" >> beam.ParDo(
                _ClassPartials(plan, self.keys_root), duplicates=beam.pvalue.AsSingleton(duplicates)
            ).with_outputs(CONTENT, main="partials")
        partials = outputs.partials | "CombinePerClass" >> beam.CombinePerKey(combine_partials(plan))
        rows_by_dim = (
            partials
            | "RowsPerLength" >> beam.Map(lambda kv: (kv[0][1], kv[1].rows))
            | "SumRowsPerLength" >> beam.CombinePerKey(sum)
        )
        coincidence = plan.representer.coincidence if plan.raw else None
        level = plan.cfg.coincidence_level
        if self.keys_root is None:  # every key through a shuffle, bucket by bucket
            repeated = (
                outputs[CONTENT]
                | "ContentPerBucket" >> beam.CombinePerKey(MergeRepeated(ContentKeys))
                | "ContentValues" >> beam.Values()
            )
        else:  # keys in files: each bucket read from every file, one bucket at a time
            repeated = (
                units.pipeline
                | "ContentBuckets" >> beam.Create(list(range(N_ID_BUCKETS)), reshuffle=True)
                | "ContentPerBucket" >> beam.Map(_repeated_in_bucket, paths=beam.pvalue.AsList(outputs[CONTENT]))
            )
        content = (
            repeated
            | "AllRepeatedContent" >> beam.CombineGlobally(merge_dicts())
            | "JudgeRepeats" >> beam.Map(
                lambda repeated, dims: ContentCheck.of(repeated, sum(dims.values()), coincidence, level),
                dims=beam.pvalue.AsDict(rows_by_dim),
            )
        )
        fitted = partials | "FitClasses" >> beam.ParDo(
            _FitClass(plan), rows_by_dim=beam.pvalue.AsDict(rows_by_dim)
        ).with_outputs(_FitClass.SMALL, main="classes")
        detectors = plan.detectors()
        group_test = plan.cfg.build_group_test(detectors)
        layout = plan.layout
        model = (
            fitted.classes
            | "GatherClasses" >> beam.combiners.ToList()
            | "BuildModel" >> beam.Map(
                lambda models, small, dims: build_model(
                    models, dict(small), dims, detectors, group_test, layout
                ),
                small=beam.pvalue.AsList(fitted[_FitClass.SMALL]),
                dims=beam.pvalue.AsDict(rows_by_dim),
            )
        )
        # every (class, vector length)'s merged partials, for the saved state: read as a
        # list side input (a ToList combine moved the ~5 MB a class twice more between
        # stages, 0.9 s of a 1M x 256 scan)
        return model, content, partials


class ScoreUnits(beam.PTransform):
    """Pass 2: read units, score every row, leave tables in part files under
    ``parts_root`` (or, with None, emit them); -> (one
    :class:`~..scan.score.UnitResult`: counts and flagged positions of the whole input;
    the row sample; the emitted ``(kind, key, table)`` parts)."""

    def __init__(self, plan: ScanPlan, parts_root: str | None):
        super().__init__()
        self.plan = plan
        self.parts_root = parts_root

    def expand(self, pcolls):
        units, duplicates, model, content = pcolls
        elements = (
            (units, duplicates, model, content) | "Represent" >> Represent(self.plan, second_pass=True)
            if self.plan.raw
            else units
        )
        outputs = elements | "Score" >> beam.ParDo(
            _ScoreUnit(self.plan, self.parts_root),
            duplicates=beam.pvalue.AsSingleton(duplicates),
            model=beam.pvalue.AsSingleton(model),
            content=beam.pvalue.AsSingleton(content),
        ).with_outputs(ROWS, PARTS, main="results")
        results = outputs.results | "Combine" >> beam.CombineGlobally(concat_results())
        rows = outputs[ROWS] | "RowSample" >> beam.CombineGlobally(merge_row_samples())
        return results, rows, outputs[PARTS]


class ScanPasses(beam.PTransform):
    """Passes 1 and 2 and the reference: (read units, duplicated ids) -> a dict of
    PCollections: ``model`` (the one pass 2 scored with: this scan's, or the
    reference's), ``new_model`` (this scan's own), ``content`` (the repeated-content
    check), ``partials``, ``results``, ``rows`` (the row sample), ``parts`` (emitted
    tables, when no ``parts_root``), and ``reference`` (its state, with a reference).

    The one core of the command line's pipeline and of :class:`~.transform.ScanTables`;
    they differ only in their sources (files read in units, or tables) and sinks (a
    finish that writes files, or one that emits PCollections). ``parts_root`` and
    ``keys_root`` put pass 2's tables and pass 1's content fingerprints in files
    (the command line) instead of PCollections.
    """

    def __init__(self, plan: ScanPlan, parts_root: str | None = None, keys_root: str | None = None):
        super().__init__()
        self.plan, self.parts_root, self.keys_root = plan, parts_root, keys_root

    def expand(self, pcolls):
        units, dups = pcolls
        plan = self.plan
        new_model, content, partials = (units, dups) | "Pass1FitModel" >> FitModel(plan, self.keys_root)
        model, reference = with_reference(units.pipeline, plan, new_model)
        results, rows, parts = (units, dups, model, content) | "Pass2Score" >> ScoreUnits(plan, self.parts_root)
        out = dict(model=model, new_model=new_model, content=content, partials=partials,
                   results=results, rows=rows, parts=parts)
        if reference is not None:
            out["reference"] = reference
        return out


def build_pipeline(
    p: beam.Pipeline,
    plan: ScanPlan,
    out: OutputDir,
    inputs: Sequence[str],
    extra: dict,
    duplicates_file: str | None = None,
) -> beam.PCollection:
    units = p | "Units" >> _units(plan)
    if duplicates_file is None:
        dups = units | "Pass0DuplicateIds" >> FindDuplicateIds(plan)
    else:  # found before this pipeline (by the driver, or the sampling pipeline)
        dups = (
            p
            | "DuplicateIdsFile" >> beam.Create([duplicates_file])
            | "ReadDuplicateIds" >> beam.Map(read_pickle)
        )
    scan = (units, dups) | "Scan" >> ScanPasses(plan, out.parts.root, out.staged(CONTENT_KEYS_DIR))
    return scan["results"] | "Finish" >> beam.ParDo(
        _Finish(plan, out, inputs, extra),
        model=beam.pvalue.AsSingleton(scan["model"]),
        rows=beam.pvalue.AsSingleton(scan["rows"]),
        content=beam.pvalue.AsSingleton(scan["content"]),
        partials=beam.pvalue.AsList(scan["partials"]),
        new_model=beam.pvalue.AsSingleton(scan["new_model"]),
        **reference_side(scan.get("reference")),
    )


def build_sampling_pipeline(p: beam.Pipeline, plan: ScanPlan, out: OutputDir) -> None:
    """Raw inputs: duplicated ids and the per-class training sample, written to the
    output's staging folder for the driver."""
    units = p | "Units" >> _units(plan)
    dups = units | "Pass0DuplicateIds" >> FindDuplicateIds(plan)
    dups | "WriteDuplicates" >> beam.Map(write_pickle, path=out.staged(DUPLICATES_FILE))
    (
        units
        | "SampleRaw" >> beam.ParDo(_RawSample(plan), duplicates=beam.pvalue.AsSingleton(dups))
        | "MergeSamples" >> beam.CombinePerKey(merge_reservoirs())
        | "GatherSamples" >> beam.combiners.ToList()
        | "WriteSample" >> beam.Map(write_pickle, path=out.staged("sample.pkl"))
    )


def _units(plan: ScanPlan) -> beam.PTransform:
    # Create redistributes two or more elements itself (a reshuffle of their encoded
    # form), so the units spread over the workers with no reshuffle of our own
    return beam.Create(list(plan.units), reshuffle=True)
