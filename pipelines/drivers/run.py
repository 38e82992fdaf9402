"""Run a scan on a Beam runner: check the inputs, train the representation, run the
pipeline, render the Data Docs and move the staged outputs into place."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from poisonscan.expectations.docs_worker import DataDocsWorker
from poisonscan.expectations.results import statistics
from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.drivers.beam import build_pipeline, build_sampling_pipeline
from poisonscan.pipelines.drivers.processes import (
    quiet_beam,
    worker_output,
    worker_threads,
)
from poisonscan.pipelines.drivers.progress import PASSES, ProgressView
from poisonscan.pipelines.drivers.staging import (
    DATA_DOCS_JOB,
    DUPLICATES_FILE,
    read_pickle,
    write_pickle,
)
from poisonscan.pipelines.io.folders import IMAGE_FOLDER
from poisonscan.pipelines.io.outputs import (
    OutputDir,
    exists,
    join,
    open_read,
    open_write,
    write_json,
)
from poisonscan.pipelines.io.sources import SourceError, inputs_in_folder, is_local, read_unit
from poisonscan.pipelines.report.html import write_report
from poisonscan.pipelines.scan.decisions import (
    DECISIONS_FILE,
    DecisionsError,
    Remembered,
    remembered_from,
)
from poisonscan.pipelines.scan.keys import batch_ids, duplicate_ids
from poisonscan.pipelines.scan.plan import ScanPlan, plan_scan
from poisonscan.pipelines.scan.representer import fit_representer
from poisonscan.pipelines.scan.state import (
    PROXY_FILE,
    StateError,
    check_reference_keys,
    check_reference_state,
    read_state,
)


class ScanFailed(RuntimeError):
    """The pipeline failed (a detector, a reader or a writer raised)."""


def find_duplicate_ids_here(plan: ScanPlan, stop: threading.Event | None = None) -> dict | None:
    """Pass 0 in this process: what :class:`FindDuplicateIds` computes (None if ``stop``
    was set before the last batch)."""
    cfg = plan.cfg
    keys = []
    for unit in plan.units:
        for batch, first in read_unit(unit, [cfg.id_column], cfg.batch_rows):
            if stop is not None and stop.is_set():
                return None
            keys.append(batch_ids(batch, unit.file_index, first, plan.kinds, cfg.id_column))
    return duplicate_ids(keys)


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
                write_pickle(duplicates, path)
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


def pipeline_options(runner: str, workers: int | None, extra_args: Sequence[str]) -> PipelineOptions:
    args = [f"--runner={runner}", *extra_args]
    if not any(a.startswith("--default_sdk_harness_log_level") for a in extra_args):
        args.append("--default_sdk_harness_log_level=ERROR")
    if workers and workers > 1:
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    return PipelineOptions(args)


@dataclass(frozen=True)
class Runner:
    """Where the pipeline runs: a Beam runner, its worker processes (the FnApiRunner's),
    and any other Beam pipeline options, passed through."""

    name: str = "FnApiRunner"
    workers: int | None = None
    beam_args: tuple = ()
    #: how the run shows its progress on stderr: "bar", "log" or "off"
    #: (:class:`~.progress.ProgressView`)
    progress: str = "off"


def run_scan(
    sources: Sequence[str],
    out_dir: str,
    cfg: ScanConfig,
    runner: Runner = Runner(),
    format_override: str | None = None,
    reference: str | None = None,
    decisions: str | None = None,
) -> dict:
    """Scan ``sources`` with Beam and write the outputs to ``out_dir``.

    With ``reference`` (the output folder of an earlier scan), the rows are scored with
    that scan's fitted model, not refitted, and summary.json compares them with it
    (:mod:`..scan.reference`). With ``decisions`` (a decisions.parquet of ``poisonscan
    apply``, or a folder of them), earlier reviewers' decisions are carried forward
    (:mod:`..scan.decisions`).

    Returns the summary. Raises :class:`SourceError` (inputs unusable, nothing written),
    :class:`ConfigError` (a reference for inputs it cannot serve) or
    :class:`ScanFailed` (the pipeline failed, nothing written).
    """
    started = time.time()
    plan = plan_scan(sources, cfg, format_override)
    if reference is not None:
        plan = dataclasses.replace(plan, reference=check_reference(plan, reference))
    if decisions is not None:
        plan = dataclasses.replace(plan, decisions=load_decisions(decisions))
    _refuse_inputs_in_out(plan, out_dir)
    _refuse_decisions_in_out(out_dir)
    out = OutputDir(out_dir)
    out.prepare()
    run = _Run(plan, out, runner)
    try:
        run.pipelines()
        return run.outputs(started)
    except SourceError:
        run.stop_helpers()
        out.abort()
        raise
    except Exception as exc:
        run.stop_helpers()
        out.abort()
        text = _failure_text(exc)
        if run.worker_log:
            text += f" (worker output: {run.worker_log})"
        raise ScanFailed(text) from exc
    except BaseException:  # an interrupt (SIGINT, or SIGTERM through the CLI): nothing half-written
        run.stop_helpers()
        out.abort()
        raise
    finally:
        run.stop_helpers()  # after success both are done; after an interrupt they stop here


class _Run:
    """One run of the driver: its helpers (Data Docs, pass 0), the pipelines, and the
    outputs staged then committed."""

    def __init__(self, plan: ScanPlan, out: OutputDir, runner: Runner):
        self.plan, self.out, self.runner, self.workers = plan, out, runner.name, runner.workers
        self.progress = runner.progress
        self.options = pipeline_options(runner.name, runner.workers, runner.beam_args)
        self.extra = {"runner": runner.name, "workers": runner.workers or 1, "beam_args": list(runner.beam_args)}
        self.worker_log = None
        self.docs = None
        self.pass0 = None

    def stop_helpers(self) -> None:
        """Before the staging folder goes: both helpers write there (idempotent)."""
        if self.docs is not None:
            self.docs.close()
        if self.pass0 is not None:
            self.pass0.cancel()

    def pipelines(self) -> None:
        """Run the sampling pipeline and the representer's training (raw inputs), then
        the scan pipeline; its finish step stages the outputs."""
        plan, out = self.plan, self.out
        if plan.expectations is not None and plan.cfg.data_docs and out.local:
            self.docs = DataDocsWorker().start()  # imports GX on the other core while the passes run
        duplicates_file = None
        if _pass0_here(plan, self.runner):
            # the embedded runner reads the files on this machine anyway: pass 0 runs in
            # a thread while the pipeline is built (its reading and sorting release the
            # interpreter lock) and the pipeline reads its result from the staging folder
            duplicates_file = out.staged(DUPLICATES_FILE)
            self.pass0 = _DriverPass0(plan, duplicates_file)
        if self.progress != "off" and out.local:
            # steps on this machine leave their running counts here for the display
            folder = out.staged("progress")
            os.makedirs(folder, exist_ok=True)
            plan = self.plan = dataclasses.replace(plan, progress_dir=folder)
        with quiet_beam(), worker_threads(self.workers), worker_output(self.workers) as self.worker_log:
            if plan.raw and plan.reference:  # represented as the reference was: pass 0 in the pipeline
                plan = self.plan = reference_representer(plan, out)
                self.extra["representation"] = dict(plan.representer.info, reference=plan.reference)
            elif plan.raw:  # the sampling pipeline finds the duplicated ids too
                plan = self.plan = _train_representer(plan, out, self.options, self._run_pipeline, self.progress)
                duplicates_file = out.staged(DUPLICATES_FILE)
                self.extra["representation"] = plan.representer.info
            p = beam.Pipeline(options=self.options)
            inputs = [plan.file_paths[i] for i in sorted(plan.file_paths)]
            build_pipeline(p, plan, out, inputs, self.extra, duplicates_file)
            if self.pass0 is not None:
                self.pass0.result()
            self._run_pipeline(p)

    def _run_pipeline(self, p: beam.Pipeline) -> None:
        """Run ``p`` to its end, its progress shown (:class:`~.progress.ProgressView`)."""
        view = ProgressView(self.plan.progress_dir, _rows_per_pass(self.plan), self.progress).start()
        result = None
        try:
            result = p.run()
            result.wait_until_finish()
        finally:
            view.close(result)

    def outputs(self, started: float) -> dict:
        """Complete the staged summary, render the Data Docs and the report, commit."""
        out = self.out
        with open_read(out.staged("summary.json")) as f:
            summary = json.load(f)
        rendering = os.path.exists(out.staged(DATA_DOCS_JOB))
        if rendering:
            self.docs = self.docs or DataDocsWorker()
            done, results = read_pickle(out.staged(DATA_DOCS_JOB))
            os.remove(out.staged(DATA_DOCS_JOB))
            folder = out.staged("expectations")
            os.makedirs(folder, exist_ok=True)
            # the helper renders while this process writes the report; a failed
            # rendering fails the scan below, so the report's link never dangles
            self.docs.submit("poisonscan", done, results, statistics(results), folder)
            summary["expectations"]["data_docs"] = "expectations/data_docs/index.html"
            summary["expectations"]["validation_result"] = "expectations/validation_result.json"
        summary["seconds"] = round(time.time() - started, 3)
        summary["versions"] = versions()
        write_json(summary, out.staged("summary.json"))
        if self.plan.cfg.report:
            write_report(out.tmp, out.staged("report.html"), data_docs_pending=rendering)
        if rendering:
            self.docs.wait()
        out.commit(out.staged_outputs())
        return summary


def check_reference(plan: ScanPlan, folder: str) -> str:
    """The reference folder, once its state is known to serve this scan."""
    try:
        state = read_state(folder, open_read)
    except StateError as exc:
        raise SourceError(f"--reference {exc}") from None
    try:
        check_reference_state(state, plan.kinds.input.kind, plan.raw, plan.cfg.model is not None, folder)
        check_reference_keys(state, plan.kinds, plan.cfg.label_column, folder)
    except StateError as exc:
        raise SourceError(f"--reference {exc}") from None
    if plan.raw and state.representer.proxy is not None and not exists(join(folder, PROXY_FILE)):
        raise SourceError(f"--reference {folder}: no {PROXY_FILE} (the proxy's weights) beside its state")
    return folder


def load_decisions(decisions) -> Remembered:
    """The earlier decisions a scan carries forward; a :class:`SourceError` naming
    ``--decisions`` where they cannot be read."""
    try:
        return remembered_from(decisions)
    except DecisionsError as exc:
        raise SourceError(f"--decisions {exc}") from None


def reference_representer(plan: ScanPlan, out: OutputDir | None) -> ScanPlan:
    """Raw inputs with a reference: its encoder and proxy; nothing is trained. The
    workers load the weights from the reference's ``proxy.pt``, or, with ``out``, from a
    copy staged in this scan's output (so that this scan can be a reference in turn)."""
    rep = read_state(plan.reference, open_read).representer
    weights = None
    if rep.proxy is not None:
        weights = join(plan.reference, PROXY_FILE)
        if out is not None:
            with open_read(weights) as src, open_write(out.staged(PROXY_FILE)) as dst:
                shutil.copyfileobj(src, dst)
            weights = out.staged(PROXY_FILE)
    return dataclasses.replace(plan, representer=rep, weights_path=weights)


def _refuse_inputs_in_out(plan: ScanPlan, out_dir: str) -> None:
    """An output folder that holds input files (beside them, the scan's
    quarantine.parquet, rejected.parquet...) would be read by the next run with the same
    pattern: refused. Inputs in a subfolder (the demo's ``out/data/``) are fine. A
    folder of images is the other way round: an output folder inside it would be read
    as more images (the Data Docs' pictures, under a label named after the folder)."""
    image_folders = {u.path for u in plan.units if u.format == IMAGE_FOLDER}
    for folder in sorted(image_folders):
        if is_local(folder) and is_local(out_dir):
            root = os.path.realpath(folder.removeprefix("file://"))
            out = os.path.realpath(out_dir.removeprefix("file://"))
            if out == root or out.startswith(root + os.sep):
                raise SourceError(
                    f"--out {out_dir} lies in the folder of images {folder}: a later scan of it would read this "
                    "scan's outputs as images; write to another folder"
                )
    inside = inputs_in_folder([p for p in plan.file_paths.values() if p not in image_folders], out_dir)
    if inside:
        raise SourceError(
            f"--out {out_dir} holds input files ({os.path.basename(inside[0])}"
            f"{f' and {len(inside) - 1} more' if len(inside) > 1 else ''}): a later scan of the same "
            "files would read this scan's outputs; write to another folder"
        )


def _refuse_decisions_in_out(out_dir: str) -> None:
    """A folder where ``poisonscan apply`` wrote a reviewer's decisions (the audit
    record, and the final clean split beside it): a scan would remove them as the
    outputs of the scan it replaces, even one that reads them with ``--decisions``."""
    if exists(join(out_dir, DECISIONS_FILE)):
        raise SourceError(
            f"--out {out_dir} holds a reviewer's decisions ({DECISIONS_FILE}, written by poisonscan apply); "
            "a scan there would remove them with the earlier scan's outputs: write to another folder "
            f"(--decisions {out_dir} reads them from there)"
        )


def _pass0_here(plan: ScanPlan, runner: str) -> bool:
    """Whether the driver finds the duplicated ids itself: vectors read by the embedded
    runner on this machine (raw inputs find them with their training sample)."""
    return (
        runner == "FnApiRunner"
        and not plan.raw
        and all(is_local(path) for path in plan.file_paths.values())
    )


def _rows_per_pass(plan: ScanPlan) -> dict:
    """The rows each pass reads, where the inputs' metadata say (Parquet)."""
    rows = [u.rows for u in plan.units]
    total = sum(rows) if rows and all(r is not None for r in rows) else None
    return dict.fromkeys(PASSES, total)


def _train_representer(plan: ScanPlan, out: OutputDir, options, run_pipeline, progress: str) -> ScanPlan:
    """Sample raw values with Beam, then fit the encoder and train the proxy here (on
    the driver: a GPU when there is one) and save its weights for RunInference. The
    sampling pipeline leaves the duplicated ids in the staging folder
    (:data:`DUPLICATES_FILE`)."""

    p = beam.Pipeline(options=options)
    build_sampling_pipeline(p, plan, out)
    run_pipeline(p)
    samples = dict(read_pickle(out.staged("sample.pkl")))
    if not samples:
        raise SourceError(
            f"nothing to train the {plan.kinds.input.kind} proxy on: the input has no rows, or none holds both "
            "an id and a label")
    representer = fit_representer(plan.cfg, plan.kinds, samples, progress)
    weights = None
    if representer.proxy is not None:
        weights = out.staged(PROXY_FILE)
        with open_write(weights) as f:
            representer.proxy.save(f)
        # the workers load the weights from that file; the plan is pickled into every
        # step of the pipeline, so it must not carry them (a text proxy's are ~170 MB)
        representer = dataclasses.replace(
            representer, proxy=dataclasses.replace(representer.proxy, state_dict=None)
        )
    return dataclasses.replace(plan, representer=representer, weights_path=weights)


def versions() -> dict:

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
