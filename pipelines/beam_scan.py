"""The scan as one Apache Beam pipeline.

Beam code here only wires; every computation is a function of :mod:`.engine`, the same
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
import logging
import os
import pickle
import threading
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from . import engine
from .config import ScanConfig
from .content import ContentCheck
from poisonscan.expectations.docs_worker import DataDocsWorker

from .outputs import OutputDir, open_read, open_write, write_json, write_parquet, write_quarantine_csv
from .rows import RowChecks, prepare
from .sources import (
    ColumnKinds,
    ReadUnit,
    SourceError,
    check_columns,
    expand_sources,
    file_schema,
    is_local,
    plan_units,
    read_unit,
)

_NAMESPACE = "poisonscan"
CONTENT = "content"
ROWS = "rows"


#: the finished expectations, staged by the pipeline for the driver to render as Data Docs
DATA_DOCS_JOB = "data_docs_job.pkl"
#: pass 0's result when it ran before the pipeline (driver, or raw inputs' sampling)
DUPLICATES_FILE = "duplicates.pkl"


class ScanFailed(RuntimeError):
    """The pipeline failed (a detector, a reader or a writer raised)."""


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """What the driver worked out before the pipeline starts."""

    cfg: ScanConfig
    kinds: ColumnKinds
    file_paths: dict
    units: tuple
    #: raw inputs: the encoder and proxy fitted on the training sample
    representer: Any = None
    #: where RunInference loads the proxy's weights from
    weights_path: str | None = None
    #: the data-quality expectations (poisonscan.expectations.ExpectationPlan)
    expectations: Any = None

    @property
    def raw(self) -> bool:
        return self.kinds.input.kind != "features"

    @property
    def batch_rows(self) -> int:
        return engine.batch_rows_for(self.cfg, self.kinds.input.kind)

    @property
    def layout(self) -> engine.Layout:
        return self.representer.layout if self.representer else engine.Layout()

    @property
    def input_columns(self) -> list[str]:
        return [self.cfg.id_column, self.cfg.label_column, *self.kinds.input_columns]

    def detectors(self) -> list:
        labels = self.representer.probability_labels if self.representer else ()
        return self.cfg.build_detectors(self.kinds.input.kind, labels)

    def checks(self, **changes: Any) -> RowChecks:
        base = RowChecks(
            self.kinds,
            self.cfg.id_column,
            self.cfg.label_column,
            self.file_paths,
            seed=self.cfg.seed,
            min_class_rows=self.cfg.min_class_rows,
            encoder=self.representer.encoder if self.representer else None,
            declared_labels=self.expectations.declared_labels if self.expectations else None,
            feature_range=self.expectations.feature_range if self.expectations else None,
            validator=self.expectations.validator if self.expectations else None,
        )
        return dataclasses.replace(base, **changes)


def plan_scan(sources: Sequence[str], cfg: ScanConfig, format_override: str | None = None) -> ScanPlan:
    """Match and check the inputs; raise :class:`SourceError` before anything runs."""
    files = expand_sources(sources, format_override)
    schemas = [file_schema(f) for f in files]
    kinds = check_columns(files, schemas, cfg)
    cfg = dataclasses.replace(cfg, features_column=kinds.features_column)
    for f, schema in zip(files, schemas):
        clash = sorted(set(schema.names) & set(engine.REJECT_COLUMNS))
        if clash:
            raise SourceError(
                f"{f.path}: column(s) {', '.join(clash)} clash with the columns poisonscan "
                "adds to rejected rows; rename them"
            )
    units = plan_units(files)
    from poisonscan.expectations import plan as expectation_plan

    return ScanPlan(
        cfg, kinds, {f.index: f.path for f in files}, tuple(units),
        expectations=expectation_plan(cfg, kinds),
    )


# DoFns and CombineFns -----------------------------------------------------------------
class _ReadIdKeys(beam.DoFn):
    """Pass 0: fingerprints of every id in a unit, by bucket."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan

    def process(self, unit: ReadUnit):
        cfg = self.plan.cfg
        for batch, first in read_unit(unit, [cfg.id_column], cfg.batch_rows):
            yield from engine.batch_id_keys(batch, unit.file_index, first, self.plan.kinds, cfg.id_column)


def find_duplicate_ids_here(plan: ScanPlan, stop: threading.Event | None = None) -> dict | None:
    """Pass 0 in this process: what :class:`FindDuplicateIds` computes (None if ``stop``
    was set before the last batch)."""
    cfg = plan.cfg
    keys = []
    for unit in plan.units:
        for batch, first in read_unit(unit, [cfg.id_column], cfg.batch_rows):
            if stop is not None and stop.is_set():
                return None
            keys.append(engine.batch_ids(batch, unit.file_index, first, plan.kinds, cfg.id_column))
    return engine.duplicate_ids(keys)


class _DriverPass0:
    """Pass 0 in a daemon thread of the driver, its result pickled to ``path``."""

    def __init__(self, plan: ScanPlan, path: str):
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(plan, path), name="poisonscan-pass0", daemon=True
        )
        self._thread.start()

    def _run(self, plan: ScanPlan, path: str) -> None:
        try:
            duplicates = find_duplicate_ids_here(plan, self._stop)
            if duplicates is not None:
                _write_pickle(duplicates, path)
        except BaseException as exc:  # raised by result(), in the driver's thread
            self._error = exc

    def result(self) -> None:
        """Wait for the file; raise what pass 0 raised (an unreadable row: SourceError)."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop at the next batch and wait: nothing is written once this returns."""
        self._stop.set()
        self._thread.join()


class _Repeated(beam.CombineFn):
    """One bucket's fingerprints (``engine.IdKeys`` or ``engine.ContentKeys``) -> the
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


class _MergeRowSamples(beam.CombineFn):
    def create_accumulator(self):
        return engine.RowSample(engine.ROW_SAMPLE, np.empty(0, np.uint64), np.empty(0, np.int64), None)

    def add_input(self, acc, sample):
        return acc.merge(sample)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out = out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


class _MergeDicts(beam.CombineFn):
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


class _ClassPartials(beam.DoFn):
    """Pass 1: validate and fold rows into per (class, length) partials."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan

    def setup(self):
        self.detectors = self.plan.detectors()

    def process(self, unit: ReadUnit, duplicates):
        checks = self.plan.checks(duplicates=duplicates, collect_content=True)
        for batch, first in read_unit(unit, self.plan.input_columns, self.plan.batch_rows):
            prep = prepare(batch, unit.file_index, first, checks)
            for key in engine.content_keys(prep):
                yield beam.pvalue.TaggedOutput(CONTENT, key)
            yield from engine.class_partials(prep, self.detectors, self.plan.cfg, self.plan.layout)


class _RawSample(beam.DoFn):
    """Raw inputs: a per-class sample of raw values, to train the proxy on."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan

    def process(self, unit: ReadUnit):
        from .represent import raw_sample

        for batch, first in read_unit(unit, self.plan.input_columns, self.plan.batch_rows):
            yield from raw_sample(batch, unit.file_index, first, self.plan.kinds, self.plan.cfg)


class _MergeReservoirs(beam.CombineFn):
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


class _ReadExamples(beam.DoFn):
    """Raw inputs: validate and encode each batch; key it for RunInference.

    The key carries the prepared batch itself (it never leaves the fused stage), so
    the representation comes back joined to its rows without a shuffle.
    """

    def __init__(self, plan: ScanPlan, second_pass: bool):
        self.plan = plan
        self.second_pass = second_pass

    def process(self, unit: ReadUnit, duplicates, model=None, content=None):
        import torch

        changes = {"duplicates": duplicates, "collect_content": not self.second_pass}
        if self.second_pass:
            changes["small_classes"] = model.small_classes
            changes["content_duplicates"] = content.rejections()
        checks = self.plan.checks(**changes)
        columns = None if self.second_pass else self.plan.input_columns
        for i, (batch, first) in enumerate(read_unit(unit, columns, self.plan.batch_rows)):
            prep = prepare(batch, unit.file_index, first, checks)
            example = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.plan.representer.example(prep).items()}
            yield (unit.key, i, prep), example


class _AttachPartials(beam.DoFn):
    """Raw inputs, pass 1: representation joined to its rows -> class partials."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan

    def setup(self):
        self.detectors = self.plan.detectors()

    def process(self, element):
        (_, _, prep), result = element
        _attach(prep, result)
        for key in engine.content_keys(prep):
            yield beam.pvalue.TaggedOutput(CONTENT, key)
        yield from engine.class_partials(prep, self.detectors, self.plan.cfg, self.plan.layout)


def _attach(prep, result) -> None:
    from .rows import attach

    out = result.inference
    rep = out["representation"]
    if len(prep.encoded.rows) == 0:
        rep = np.zeros((0, 0), np.float32)
    attach(prep, rep, out["probabilities"] if len(prep.encoded.rows) else None)


class _CombinePartials(beam.CombineFn):
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
        return engine.merge_partials([a for a in accs if a is not None], self.detectors)

    def extract_output(self, acc):
        return acc


class _FitClass(beam.DoFn):
    """Fit the detectors on one class and judge it (classes run in parallel)."""

    SMALL = "small"

    def __init__(self, plan: ScanPlan):
        self.plan = plan
        self.cfg = plan.cfg

    def setup(self):
        self.detectors = self.plan.detectors()
        self.group_test = self.cfg.build_group_test()

    def process(self, element, rows_by_dim):
        (label, dim), partial = element
        if dim != engine.choose_dim(rows_by_dim):
            return
        if partial.rows < self.cfg.min_class_rows:
            yield beam.pvalue.TaggedOutput(self.SMALL, (label, partial.rows))
            return
        yield engine.fit_class(
            label, partial, self.detectors, self.group_test, self.cfg.shared_sample_size,
            self.plan.layout,
        )


class _ScoreUnit(beam.DoFn):
    """Pass 2: validate, score and split one unit (features input) or one represented
    batch (raw input); tables go to part files named after the unit (and batch)."""

    def __init__(self, plan: ScanPlan, parts_root: str):
        self.plan = plan
        self.parts_root = parts_root
        self.rows_read = Metrics.counter(_NAMESPACE, "rows_read")
        self.rows_rejected = Metrics.counter(_NAMESPACE, "rows_rejected")
        self.rows_flagged = Metrics.counter(_NAMESPACE, "rows_flagged")

    def setup(self):
        from .outputs import FilePartStore

        self.detectors = self.plan.detectors()
        self.store = FilePartStore(self.parts_root)

    def process(self, element, duplicates, model, content):
        keep_clean = self.plan.cfg.write_clean
        sample_rows = bool(self.plan.expectations and self.plan.expectations.needs_sample)
        samples = []
        if self.plan.raw:
            (key, i, prep), result = element
            _attach(prep, result)
            path = self.plan.file_paths[int(key.split("-")[0])]
            if sample_rows:
                samples.append(engine.RowSample.of(prep, engine.ROW_SAMPLE, self.plan.cfg.seed))
            outcome = engine.score_batch(prep, model, self.detectors, path, keep_clean=keep_clean, seed=self.plan.cfg.seed)
            result = engine.store_outcomes(self.store, f"{key}-{i:06d}", [outcome])
        else:
            unit = element
            checks = self.plan.checks(
                duplicates=duplicates, expected_dim=model.dim, small_classes=model.small_classes,
                content_duplicates=content.rejections(),
            )
            path = self.plan.file_paths[unit.file_index]

            def scored(batch, first):
                prep = prepare(batch, unit.file_index, first, checks)
                if sample_rows:
                    samples.append(engine.RowSample.of(prep, engine.ROW_SAMPLE, self.plan.cfg.seed))
                return engine.score_batch(prep, model, self.detectors, path, keep_clean=keep_clean, seed=self.plan.cfg.seed)

            outcomes = (scored(b, f) for b, f in read_unit(unit, None, self.plan.batch_rows))
            result = engine.store_outcomes(self.store, unit.key, outcomes)
        for sample in samples:
            yield beam.pvalue.TaggedOutput(ROWS, sample)
        self.rows_read.inc(result.counts.read)
        self.rows_rejected.inc(result.counts.rejected)
        self.rows_flagged.inc(result.counts.flagged)
        yield result


class _ConcatResults(beam.CombineFn):
    def create_accumulator(self):
        return engine.UnitResult.concat([])

    def add_input(self, acc, result):
        return engine.UnitResult.concat([acc, result])

    def merge_accumulators(self, accs):
        return engine.UnitResult.concat(accs)

    def extract_output(self, acc):
        return acc


class _Finish(beam.DoFn):
    """Budget, quarantine list, rejected rows, clean split and summary, staged."""

    def __init__(self, plan: ScanPlan, out: OutputDir, inputs: Sequence[str], extra: dict):
        self.plan = plan
        self.out = out
        self.inputs = list(inputs)
        self.extra = extra

    def process(self, unit_result, model, rows, content):
        plan, out = self.plan, self.out
        detectors = plan.detectors()
        store = out.parts
        fin = engine.finish(
            store, model, unit_result, detectors, plan.cfg, plan.kinds, plan.file_paths,
            self.inputs, self.extra, expectations=plan.expectations, row_sample=rows.frame(),
            content=content,
        )
        write_finished(fin, store, out, plan.cfg)
        return []


def write_finished(fin: engine.Finished, store, out: OutputDir, cfg: ScanConfig) -> None:
    """Write the finished tables into the output's staging folder."""
    write_parquet(fin.quarantine, out.staged("quarantine.parquet"))
    write_quarantine_csv(fin.quarantine, out.staged("quarantine.csv"))
    write_parquet(fin.rejected, out.staged("rejected.parquet"))
    review_table, review_data = fin.review
    write_parquet(review_table, out.staged("review.parquet"))
    write_json(review_data, out.staged("review.json"))
    if cfg.write_clean:
        from .outputs import _PartWriter

        writer = _PartWriter(out.staged("clean.parquet"))
        rows = 0
        schema = fin.clean_schema
        if schema is not None:
            for table in engine.iter_clean(store, fin.trimmed, schema, cfg.batch_rows):
                writer.write(table)
                rows += table.num_rows
        if writer._writer is None:  # no clean rows: still write an empty file
            write_parquet((schema or fin.rejected.schema).empty_table(), out.staged("clean.parquet"))
        writer.close()
        if rows != fin.summary["rows_clean"]:
            raise RuntimeError(
                f"clean split has {rows} rows but the counts say {fin.summary['rows_clean']}"
            )
    if fin.expectations is not None and cfg.data_docs and out.local:
        # rendered by the driver, in the helper process that imported GX meanwhile
        _write_pickle(fin.expectations, out.staged(DATA_DOCS_JOB))
    write_json(fin.summary, out.staged("summary.json"))


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
            | "PerBucket" >> beam.CombinePerKey(_Repeated(engine.IdKeys))
            | "Values" >> beam.Values()
            | "All" >> beam.CombineGlobally(_MergeDicts())
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
        from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

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


def model_handler(plan: ScanPlan):
    """The PyTorch model handler for the proxy (state dict, loaded weights-only) or the
    user's model (TorchScript, or a state dict and its class)."""
    import functools

    import torch
    from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor

    from . import representations as reps

    device = "GPU" if torch.cuda.is_available() else "CPU"
    rep = plan.representer
    common = dict(device=device, max_batch_size=1, min_batch_size=1)
    if rep.proxy is not None:
        return PytorchModelHandlerKeyedTensor(
            state_dict_path=plan.weights_path,
            model_class=reps.ProxyEnsemble,
            model_params={"kind": rep.proxy.kind, "params": rep.proxy.params, "folds": rep.proxy.folds},
            inference_fn=reps.ensemble_inference,
            load_model_args={"weights_only": True},
            **common,
        )
    user = rep.user_model
    fn = functools.partial(reps.user_inference, layer=user.layer)
    if user.model_class is None:
        return PytorchModelHandlerKeyedTensor(torch_script_model_path=user.path, inference_fn=fn, **common)
    return PytorchModelHandlerKeyedTensor(
        state_dict_path=user.path,
        model_class=reps.import_class(user.model_class),
        model_params=dict(user.model_params),
        inference_fn=fn,
        load_model_args={"weights_only": True},
        **common,
    )


class FitModel(beam.PTransform):
    """Pass 1: read units -> (one :class:`~.engine.ScanModel`, classes fitted in parallel;
    ``{content fingerprint: (first position, labels conflict)}`` of repeated content)."""

    def __init__(self, plan: ScanPlan):
        super().__init__()
        self.plan = plan

    def expand(self, pcolls):
        units, duplicates = pcolls
        plan = self.plan
        if plan.raw:
            outputs = (
                (units, duplicates) | "Represent" >> Represent(plan, second_pass=False)
                | "Accumulate" >> beam.ParDo(_AttachPartials(plan)).with_outputs(CONTENT, main="partials")
            )
        else:
            outputs = units | "Accumulate" >> beam.ParDo(
                _ClassPartials(plan), duplicates=beam.pvalue.AsSingleton(duplicates)
            ).with_outputs(CONTENT, main="partials")
        partials = outputs.partials | "CombinePerClass" >> beam.CombinePerKey(_CombinePartials(plan))
        rows_by_dim = (
            partials
            | "RowsPerLength" >> beam.Map(lambda kv: (kv[0][1], kv[1].rows))
            | "SumRowsPerLength" >> beam.CombinePerKey(sum)
        )
        coincidence = plan.representer.coincidence if plan.raw else None
        level = plan.cfg.coincidence_level
        content = (
            outputs[CONTENT]
            | "ContentPerBucket" >> beam.CombinePerKey(_Repeated(engine.ContentKeys))
            | "ContentValues" >> beam.Values()
            | "AllRepeatedContent" >> beam.CombineGlobally(_MergeDicts())
            | "JudgeRepeats" >> beam.Map(
                lambda repeated, dims: ContentCheck.of(repeated, sum(dims.values()), coincidence, level),
                dims=beam.pvalue.AsDict(rows_by_dim),
            )
        )
        fitted = partials | "FitClasses" >> beam.ParDo(
            _FitClass(plan), rows_by_dim=beam.pvalue.AsDict(rows_by_dim)
        ).with_outputs(_FitClass.SMALL, main="classes")
        detectors = plan.detectors()
        group_test = plan.cfg.build_group_test()
        layout = plan.layout
        model = (
            fitted.classes
            | "GatherClasses" >> beam.combiners.ToList()
            | "BuildModel" >> beam.Map(
                lambda models, small, dims: engine.build_model(
                    models, dict(small), dims, detectors, group_test, layout
                ),
                small=beam.pvalue.AsList(fitted[_FitClass.SMALL]),
                dims=beam.pvalue.AsDict(rows_by_dim),
            )
        )
        return model, content


class ScoreUnits(beam.PTransform):
    """Pass 2: read units, score every row, leave tables in part files; -> one
    :class:`~.engine.UnitResult` (counts and flagged positions of the whole input)."""

    def __init__(self, plan: ScanPlan, parts_root: str):
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
        ).with_outputs(ROWS, main="results")
        results = outputs.results | "Combine" >> beam.CombineGlobally(_ConcatResults())
        rows = outputs[ROWS] | "RowSample" >> beam.CombineGlobally(_MergeRowSamples())
        return results, rows


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
            | "ReadDuplicateIds" >> beam.Map(_read_pickle)
        )
    model, content = (units, dups) | "Pass1FitModel" >> FitModel(plan)
    results, rows = (units, dups, model, content) | "Pass2Score" >> ScoreUnits(plan, out.parts.root)
    return results | "Finish" >> beam.ParDo(
        _Finish(plan, out, inputs, extra),
        model=beam.pvalue.AsSingleton(model),
        rows=beam.pvalue.AsSingleton(rows),
        content=beam.pvalue.AsSingleton(content),
    )


def build_sampling_pipeline(p: beam.Pipeline, plan: ScanPlan, out: OutputDir) -> None:
    """Raw inputs: duplicated ids and the per-class training sample, written to the
    output's staging folder for the driver."""
    units = p | "Units" >> _units(plan)
    (
        units
        | "Pass0DuplicateIds" >> FindDuplicateIds(plan)
        | "WriteDuplicates" >> beam.Map(_write_pickle, path=out.staged(DUPLICATES_FILE))
    )
    (
        units
        | "SampleRaw" >> beam.ParDo(_RawSample(plan))
        | "MergeSamples" >> beam.CombinePerKey(_MergeReservoirs())
        | "GatherSamples" >> beam.combiners.ToList()
        | "WriteSample" >> beam.Map(_write_pickle, path=out.staged("sample.pkl"))
    )


def _units(plan: ScanPlan) -> beam.PTransform:
    # Create redistributes two or more elements itself (a reshuffle of their encoded
    # form), so the units spread over the workers with no reshuffle of our own
    return beam.Create(list(plan.units), reshuffle=True)


def _write_pickle(value, path: str) -> None:
    with open_write(path) as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def _read_pickle(path: str):
    # files this run wrote to its own staging folder a moment ago
    with open_read(path) as f:
        return pickle.load(f)


def pipeline_options(runner: str, workers: int | None, extra_args: Sequence[str]) -> PipelineOptions:
    args = [f"--runner={runner}", *extra_args]
    if not any(a.startswith("--default_sdk_harness_log_level") for a in extra_args):
        args.append("--default_sdk_harness_log_level=ERROR")
    if workers and workers > 1:
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    return PipelineOptions(args)


def run_scan(
    sources: Sequence[str],
    out_dir: str,
    cfg: ScanConfig,
    *,
    runner: str = "FnApiRunner",
    workers: int | None = None,
    beam_args: Sequence[str] = (),
    format_override: str | None = None,
) -> dict:
    """Scan ``sources`` with Beam and write the outputs to ``out_dir``.

    Returns the summary. Raises :class:`SourceError` (inputs unusable, nothing written)
    or :class:`ScanFailed` (the pipeline failed, nothing written).
    """
    started = time.time()
    plan = plan_scan(sources, cfg, format_override)
    _refuse_inputs_in_out(plan, out_dir)
    out = OutputDir(out_dir)
    out.prepare()
    options = pipeline_options(runner, workers, beam_args)
    extra = {"runner": runner, "workers": workers or 1, "beam_args": list(beam_args)}
    worker_log = None
    docs = None
    pass0 = None

    def stop_helpers() -> None:
        # before the staging folder goes: both write there (each call is idempotent)
        if docs is not None:
            docs.close()
        if pass0 is not None:
            pass0.cancel()

    try:
        if plan.expectations is not None and cfg.data_docs and out.local:
            docs = DataDocsWorker().start()  # imports GX on the other core while the passes run
        duplicates_file = None
        if _pass0_here(plan, runner):
            # the embedded runner reads the files on this machine anyway: pass 0 runs in
            # a thread while the pipeline is built (its reading and sorting release the
            # interpreter lock) and the pipeline reads its result from the staging folder
            duplicates_file = out.staged(DUPLICATES_FILE)
            pass0 = _DriverPass0(plan, duplicates_file)
        with _quiet_beam(), _worker_threads(workers), _worker_output(workers) as worker_log:
            if plan.raw:  # the sampling pipeline finds the duplicated ids too
                plan = _train_representer(plan, out, options)
                duplicates_file = out.staged(DUPLICATES_FILE)
                extra["representation"] = plan.representer.info
            p = beam.Pipeline(options=options)
            inputs = [plan.file_paths[i] for i in sorted(plan.file_paths)]
            build_pipeline(p, plan, out, inputs, extra, duplicates_file)
            if pass0 is not None:
                pass0.result()
            result = p.run()
            result.wait_until_finish()
        import json

        with open_read(out.staged("summary.json")) as f:
            summary = json.load(f)
        rendering = os.path.exists(out.staged(DATA_DOCS_JOB))
        if rendering:
            from poisonscan.expectations.results import statistics

            docs = docs or DataDocsWorker()
            done, results = _read_pickle(out.staged(DATA_DOCS_JOB))
            os.remove(out.staged(DATA_DOCS_JOB))
            folder = out.staged("expectations")
            os.makedirs(folder, exist_ok=True)
            # the helper renders while this process writes the report; a failed
            # rendering fails the scan below, so the report's link never dangles
            docs.submit("poisonscan", done, results, statistics(results), folder)
            summary["expectations"]["data_docs"] = "expectations/data_docs/index.html"
            summary["expectations"]["validation_result"] = "expectations/validation_result.json"
        summary["seconds"] = round(time.time() - started, 3)
        summary["versions"] = versions()
        write_json(summary, out.staged("summary.json"))
        if cfg.report:
            from .report import write_report

            write_report(out.tmp, out.staged("report.html"), data_docs_pending=rendering)
        if rendering:
            docs.wait()
        out.commit(out.staged_outputs())
        return summary
    except SourceError:
        stop_helpers()
        out.abort()
        raise
    except Exception as exc:
        stop_helpers()
        out.abort()
        text = _failure_text(exc)
        if worker_log:
            text += f" (worker output: {worker_log})"
        raise ScanFailed(text) from exc
    except BaseException:  # an interrupt (SIGINT, or SIGTERM through the CLI): nothing half-written
        stop_helpers()
        out.abort()
        raise
    finally:
        stop_helpers()  # after success both are done; after an interrupt they stop here


def _refuse_inputs_in_out(plan: ScanPlan, out_dir: str) -> None:
    """An output folder that holds input files (beside them, the scan's
    quarantine.parquet, rejected.parquet...) would be read by the next run with the same
    pattern: refused. Inputs in a subfolder (the demo's ``out/data/``) are fine."""
    if not is_local(out_dir):
        return
    out = os.path.realpath(out_dir.removeprefix("file://"))
    inside = [
        p for p in plan.file_paths.values()
        if is_local(p) and os.path.dirname(os.path.realpath(p.removeprefix("file://"))) == out
    ]
    if inside:
        raise SourceError(
            f"--out {out_dir} holds input files ({os.path.basename(inside[0])}"
            f"{f' and {len(inside) - 1} more' if len(inside) > 1 else ''}): a later scan of the same "
            "files would read this scan's outputs; write to another folder"
        )


def _pass0_here(plan: ScanPlan, runner: str) -> bool:
    """Whether the driver finds the duplicated ids itself: vectors read by the embedded
    runner on this machine (raw inputs find them with their training sample)."""
    return (
        runner == "FnApiRunner"
        and not plan.raw
        and all(is_local(path) for path in plan.file_paths.values())
    )


def _train_representer(plan: ScanPlan, out: OutputDir, options) -> ScanPlan:
    """Sample raw values with Beam, then fit the encoder and train the proxy here (on
    the driver: a GPU when there is one) and save its weights for RunInference. The
    sampling pipeline leaves the duplicated ids in the staging folder
    (:data:`DUPLICATES_FILE`)."""
    from .represent import fit_representer

    p = beam.Pipeline(options=options)
    build_sampling_pipeline(p, plan, out)
    p.run().wait_until_finish()
    samples = dict(_read_pickle(out.staged("sample.pkl")))
    if not samples:
        raise SourceError("no row with an id and a label to train the proxy on")
    representer = fit_representer(plan.cfg, plan.kinds, samples)
    weights = None
    if representer.proxy is not None:
        weights = out.staged("proxy.pt")
        with open_write(weights) as f:
            representer.proxy.save(f)
        # the workers load the weights from that file; the plan is pickled into every
        # step of the pipeline, so it must not carry them (a text proxy's are ~170 MB)
        representer = dataclasses.replace(
            representer, proxy=dataclasses.replace(representer.proxy, state_dict=None)
        )
    return dataclasses.replace(plan, representer=representer, weights_path=weights)


def versions() -> dict:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("poisonscan", "apache-beam", "pyarrow", "numpy", "polars", "scikit-learn", "torch", "great-expectations"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _failure_text(exc: BaseException) -> str:
    """The innermost useful message of a pipeline failure."""
    text = str(exc)
    for marker in ("SourceError: ", "ValueError: ", "RuntimeError: "):
        if marker in text:
            tail = text.rsplit(marker, 1)[1].strip().splitlines()
            if tail:
                return f"{marker[:-2]}: {tail[0]}"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


class _worker_threads:
    """Give each worker process its share of the cores for BLAS and OpenMP.

    Worker processes inherit the environment; left alone, each would start one BLAS
    thread per core and N workers would oversubscribe the machine N times (measured: a
    1M x 256 scan with two workers on two cores took 19-25 s instead of 14.5 s).
    Variables the user has set are left as they are.
    """

    _VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

    def __init__(self, workers: int | None):
        self.workers = workers or 1
        self.saved: dict = {}

    def __enter__(self):
        import os

        if self.workers > 1:
            share = str(max(1, (os.cpu_count() or 1) // self.workers))
            for var in self._VARS:
                if var not in os.environ:
                    self.saved[var] = None
                    os.environ[var] = share
        return self

    def __exit__(self, *exc):
        import os

        for var in self.saved:
            os.environ.pop(var, None)
        return False


class _worker_output:
    """Send what worker processes print to a log file instead of the terminal.

    Worker processes of the multi-processing FnApiRunner inherit file descriptor 2 and
    log their start-up at INFO before any option can quieten them; their output goes to
    a temporary file whose path is returned (and named in the error if the run fails).
    """

    def __init__(self, workers: int | None):
        self.active = bool(workers and workers > 1)
        self.path = None

    def __enter__(self):
        if not self.active:
            return None
        import os
        import sys
        import tempfile

        sys.stderr.flush()
        fd, self.path = tempfile.mkstemp(prefix="poisonscan-workers-", suffix=".log")
        self._saved = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        return self.path

    def __exit__(self, exc_type, *rest):
        if not self.active:
            return False
        import os
        import sys

        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if exc_type is None:
            os.remove(self.path)
        return False


class _quiet_beam:
    """Keep Beam's chatter (and its copy of a failure's traceback) off the terminal
    during a run; a failure is reported once, by the caller."""

    def __enter__(self):
        self.logger = logging.getLogger("apache_beam")
        self.level = self.logger.level
        if self.level == logging.NOTSET or self.level == logging.ERROR:
            self.logger.setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False
