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
the staged outputs into place only after the pipeline has succeeded.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from . import engine
from .config import ScanConfig
from .outputs import OutputDir, write_json, write_parquet, write_quarantine_csv
from .rows import RowChecks, prepare
from .sources import (
    ColumnKinds,
    ReadUnit,
    SourceError,
    check_columns,
    expand_sources,
    file_schema,
    plan_units,
    read_unit,
)

_NAMESPACE = "poisonscan"


class ScanFailed(RuntimeError):
    """The pipeline failed (a detector, a reader or a writer raised)."""


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """What the driver worked out before the pipeline starts."""

    cfg: ScanConfig
    kinds: ColumnKinds
    file_paths: dict
    units: tuple

    def checks(self, **changes: Any) -> RowChecks:
        base = RowChecks(
            self.kinds,
            self.cfg.id_column,
            self.cfg.label_column,
            self.file_paths,
            seed=self.cfg.seed,
            min_class_rows=self.cfg.min_class_rows,
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
    return ScanPlan(cfg, kinds, {f.index: f.path for f in files}, tuple(units))


# DoFns and CombineFns -----------------------------------------------------------------
class _ReadIdKeys(beam.DoFn):
    """Pass 0: fingerprints of every id in a unit, by bucket."""

    def __init__(self, plan: ScanPlan):
        self.plan = plan

    def process(self, unit: ReadUnit):
        cfg = self.plan.cfg
        for batch, first in read_unit(unit, [cfg.id_column], cfg.batch_rows):
            yield from engine.batch_id_keys(batch, unit.file_index, first, self.plan.kinds, cfg.id_column)


class _DuplicateIds(beam.CombineFn):
    """Collects one bucket's fingerprints and returns its duplicated ids."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, keys):
        acc.append(keys)
        return acc

    def merge_accumulators(self, accs):
        return [engine.IdKeys.concat(k for acc in accs for k in acc)]

    def extract_output(self, acc):
        return engine.IdKeys.concat(acc).duplicates()


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
        self.detectors = self.plan.cfg.build_detectors()

    def process(self, unit: ReadUnit, duplicates):
        cfg = self.plan.cfg
        checks = self.plan.checks(duplicates=duplicates)
        columns = [cfg.id_column, cfg.label_column, cfg.features_column]
        for batch, first in read_unit(unit, columns, cfg.batch_rows):
            prep = prepare(batch, unit.file_index, first, checks)
            yield from engine.class_partials(prep, self.detectors, cfg)


class _CombinePartials(beam.CombineFn):
    def __init__(self, cfg: ScanConfig):
        self.cfg = cfg
        self._detectors = None

    @property
    def detectors(self):
        if self._detectors is None:
            self._detectors = self.cfg.build_detectors()
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

    def __init__(self, cfg: ScanConfig):
        self.cfg = cfg

    def setup(self):
        self.detectors = self.cfg.build_detectors()
        self.group_test = self.cfg.build_group_test()

    def process(self, element, rows_by_dim):
        (label, dim), partial = element
        if dim != engine.choose_dim(rows_by_dim):
            return
        if partial.rows < self.cfg.min_class_rows:
            yield beam.pvalue.TaggedOutput(self.SMALL, (label, partial.rows))
            return
        yield engine.fit_class(
            label, partial, self.detectors, self.group_test, self.cfg.shared_sample_size
        )


class _ScoreUnit(beam.DoFn):
    """Pass 2: validate, score and split one unit; tables go to part files."""

    def __init__(self, plan: ScanPlan, parts_root: str):
        self.plan = plan
        self.parts_root = parts_root
        self.rows_read = Metrics.counter(_NAMESPACE, "rows_read")
        self.rows_rejected = Metrics.counter(_NAMESPACE, "rows_rejected")
        self.rows_flagged = Metrics.counter(_NAMESPACE, "rows_flagged")

    def setup(self):
        from .outputs import FilePartStore

        self.detectors = self.plan.cfg.build_detectors()
        self.store = FilePartStore(self.parts_root)

    def process(self, unit: ReadUnit, duplicates, model):
        cfg = self.plan.cfg
        checks = self.plan.checks(
            duplicates=duplicates, expected_dim=model.dim, small_classes=model.small_classes
        )
        path = self.plan.file_paths[unit.file_index]
        outcomes = (
            engine.score_batch(
                prepare(batch, unit.file_index, first, checks),
                model,
                self.detectors,
                path,
                keep_clean=cfg.write_clean,
            )
            for batch, first in read_unit(unit, None, cfg.batch_rows)
        )
        result = engine.store_outcomes(self.store, unit.key, outcomes)
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

    def process(self, unit_result, model):
        plan, out = self.plan, self.out
        detectors = plan.cfg.build_detectors()
        store = out.parts
        fin = engine.finish(
            store, model, unit_result, detectors, plan.cfg, plan.kinds, plan.file_paths,
            self.inputs, self.extra,
        )
        produced = write_finished(fin, store, out, plan.cfg)
        yield produced


def write_finished(fin: engine.Finished, store, out: OutputDir, cfg: ScanConfig) -> list[str]:
    """Write the finished tables into the output's staging folder; return their names."""
    write_parquet(fin.quarantine, out.staged("quarantine.parquet"))
    write_quarantine_csv(fin.quarantine, out.staged("quarantine.csv"))
    write_parquet(fin.rejected, out.staged("rejected.parquet"))
    produced = ["quarantine.parquet", "quarantine.csv", "rejected.parquet"]
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
        produced.append("clean.parquet")
    write_json(fin.summary, out.staged("summary.json"))
    produced.append("summary.json")
    return produced


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
            | "PerBucket" >> beam.CombinePerKey(_DuplicateIds())
            | "Values" >> beam.Values()
            | "All" >> beam.CombineGlobally(_MergeDicts())
        )


class FitModel(beam.PTransform):
    """Pass 1: read units -> one :class:`~.engine.ScanModel` (classes fitted in parallel)."""

    def __init__(self, plan: ScanPlan):
        super().__init__()
        self.plan = plan

    def expand(self, pcolls):
        units, duplicates = pcolls
        cfg = self.plan.cfg
        partials = (
            units
            | "Accumulate" >> beam.ParDo(
                _ClassPartials(self.plan), duplicates=beam.pvalue.AsSingleton(duplicates)
            )
            | "CombinePerClass" >> beam.CombinePerKey(_CombinePartials(cfg))
        )
        rows_by_dim = (
            partials
            | "RowsPerLength" >> beam.Map(lambda kv: (kv[0][1], kv[1].rows))
            | "SumRowsPerLength" >> beam.CombinePerKey(sum)
        )
        fitted = partials | "FitClasses" >> beam.ParDo(
            _FitClass(cfg), rows_by_dim=beam.pvalue.AsDict(rows_by_dim)
        ).with_outputs(_FitClass.SMALL, main="classes")
        detectors = cfg.build_detectors()
        group_test = cfg.build_group_test()
        return (
            fitted.classes
            | "GatherClasses" >> beam.combiners.ToList()
            | "BuildModel" >> beam.Map(
                lambda models, small, dims: engine.build_model(
                    models, dict(small), dims, detectors, group_test
                ),
                small=beam.pvalue.AsList(fitted[_FitClass.SMALL]),
                dims=beam.pvalue.AsDict(rows_by_dim),
            )
        )


class ScoreUnits(beam.PTransform):
    """Pass 2: read units, score every row, leave tables in part files; -> one
    :class:`~.engine.UnitResult` (counts and flagged positions of the whole input)."""

    def __init__(self, plan: ScanPlan, parts_root: str):
        super().__init__()
        self.plan = plan
        self.parts_root = parts_root

    def expand(self, pcolls):
        units, duplicates, model = pcolls
        return (
            units
            | "Score" >> beam.ParDo(
                _ScoreUnit(self.plan, self.parts_root),
                duplicates=beam.pvalue.AsSingleton(duplicates),
                model=beam.pvalue.AsSingleton(model),
            )
            | "Combine" >> beam.CombineGlobally(_ConcatResults())
        )


def build_pipeline(
    p: beam.Pipeline, plan: ScanPlan, out: OutputDir, inputs: Sequence[str], extra: dict
) -> beam.PCollection:
    units = (
        p
        | "Units" >> beam.Create(list(plan.units))
        | "SpreadUnits" >> beam.Reshuffle()
    )
    duplicates = units | "Pass0DuplicateIds" >> FindDuplicateIds(plan)
    model = (units, duplicates) | "Pass1FitModel" >> FitModel(plan)
    results = (units, duplicates, model) | "Pass2Score" >> ScoreUnits(plan, out.parts.root)
    return results | "Finish" >> beam.ParDo(
        _Finish(plan, out, inputs, extra), model=beam.pvalue.AsSingleton(model)
    )


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
    out = OutputDir(out_dir)
    out.prepare()
    options = pipeline_options(runner, workers, beam_args)
    extra = {"runner": runner, "workers": workers or 1, "beam_args": list(beam_args)}
    worker_log = None
    try:
        with _quiet_beam(), _worker_threads(workers), _worker_output(workers) as worker_log:
            p = beam.Pipeline(options=options)
            build_pipeline(p, plan, out, [plan.file_paths[i] for i in sorted(plan.file_paths)], extra)
            result = p.run()
            result.wait_until_finish()
        import json

        from .outputs import open_read

        with open_read(out.staged("summary.json")) as f:
            summary = json.load(f)
        summary["seconds"] = round(time.time() - started, 3)
        summary["versions"] = versions()
        write_json(summary, out.staged("summary.json"))
        produced = ["quarantine.parquet", "quarantine.csv", "rejected.parquet", "summary.json"]
        if cfg.write_clean:
            produced.insert(3, "clean.parquet")
        out.commit(produced)
        return summary
    except SourceError:
        out.abort()
        raise
    except Exception as exc:
        out.abort()
        text = _failure_text(exc)
        if worker_log:
            text += f" (worker output: {worker_log})"
        raise ScanFailed(text) from exc


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
