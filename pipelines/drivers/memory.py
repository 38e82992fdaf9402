"""The scan in memory: the same steps as the Beam pipeline, without Beam.

For notebooks, tests and data that fit in memory. It calls exactly the functions the
Beam pipeline calls (:mod:`..scan`), in the same order, so both give the same lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.io.outputs import join, open_read
from poisonscan.pipelines.io.parts import MemoryPartStore
from poisonscan.pipelines.io.sources import table_batches
from poisonscan.pipelines.report.html import REJECTED_MAX, ScanOutputs, render
from poisonscan.pipelines.scan.content import ContentCheck
from poisonscan.pipelines.scan.decisions import remembered_from
from poisonscan.pipelines.scan.finish import Passes, clean_schema, finish, iter_clean
from poisonscan.pipelines.scan.fit import (
    ROW_SAMPLE,
    RowSample,
    ScanModel,
    class_partials,
    fit_model,
)
from poisonscan.pipelines.scan.keys import (
    ContentKeys,
    IdKeys,
    batch_id_keys,
    content_keys,
)
from poisonscan.pipelines.scan.plan import MEMORY_SOURCE, plan_table
from poisonscan.pipelines.scan.reference import compare_to_reference
from poisonscan.pipelines.scan.representer import fit_representer, raw_sample
from poisonscan.pipelines.scan.rows import prepare
from poisonscan.pipelines.scan.score import score_batch, store_outcomes
from poisonscan.pipelines.scan.state import (
    PROXY_FILE,
    ScanState,
    StateError,
    check_reference_keys,
    check_reference_state,
    read_state,
    scan_state,
)


@dataclass
class ScanResult:
    """What a scan found.

    Attributes
    ----------
    quarantine : pyarrow.Table
        One row per quarantined example: id, label, score (higher = more suspicious),
        detectors, reason, source_file, source_row, content (the row's content
        fingerprint) and each detector's raw score.
    rejected : pyarrow.Table
        Rows that could not be scanned: error, error_code, source_file, source_row and the
        row as read.
    clean : pyarrow.Table or None
        The input minus quarantined and rejected rows.
    summary : dict
        The same content as summary.json.
    model : ScanModel
        Fitted detectors and per-class verdicts.
    review : tuple
        ``(review table, review data)``: what the report shows beyond the lists.
    state : ScanState
        What the scan fitted, mergeable with other scans' (as ``state.pkl`` of a Beam
        scan; :func:`poisonscan.pipelines.scan.state.merge_states`).
    """

    quarantine: pa.Table
    rejected: pa.Table
    clean: pa.Table | None
    summary: dict
    model: ScanModel
    review: tuple | None = None
    state: ScanState | None = None

    def report_html(self) -> str:
        """The review page (as ``report.html`` of a Beam scan), as a string."""

        table, data = self.review
        return render(ScanOutputs(self.summary, self.quarantine, self.rejected.slice(0, REJECTED_MAX),
                                  self.rejected.num_rows, table, data, None))

    def save_report(self, path: str) -> str:
        """Write the review page to ``path``; returns the path."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.report_html())
        return path


def to_arrow(data: Any) -> pa.Table:
    """A pyarrow Table from a pyarrow Table/RecordBatch, a polars or a pandas DataFrame."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__
    if module.startswith("polars"):

        return data.to_arrow(compat_level=pl.CompatLevel.oldest())
    if module.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(
        f"expected a pyarrow Table, a polars or a pandas DataFrame; got {type(data).__name__}"
    )


def scan_table(
    data: Any, config: ScanConfig | None = None, *, reference: Any = None, decisions: Any = None, **settings: Any
) -> ScanResult:
    """Scan a table held in memory.

    Parameters
    ----------
    data : pyarrow.Table, polars.DataFrame or pandas.DataFrame
        One row per example, with id, label and features columns.
    config : ScanConfig, optional
        The settings; or give them as keyword arguments (``features_column=...``).
    reference : ScanState or str, optional
        An earlier scan's state (``result.state``) or output folder: score the rows with
        its fitted model instead of refitting, and compare them with it
        (``summary["reference"]``). Raw inputs are represented with the reference's
        encoder and proxy (nothing is trained).
    decisions : str or Remembered, optional
        Earlier reviewers' decisions to carry forward (a decisions.parquet of
        ``poisonscan apply`` or a folder of them; :mod:`poisonscan.pipelines.scan.decisions`):
        released rows are not quarantined again, confirmed rows are rejected as
        ``confirmed_poison`` (``summary["earlier_decisions"]``).
    """
    cfg = dataclasses.replace(config, **settings) if config else ScanConfig(**settings)
    table = to_arrow(data)
    plan = plan_table(table.schema, cfg)
    if decisions is not None:
        plan = dataclasses.replace(plan, decisions=remembered_from(decisions))
    cfg, kinds = plan.cfg, plan.kinds
    ref_state, where = _reference(reference, plan)
    # pass 0: duplicated ids
    keys = [
        k
        for batch, first in table_batches(table, cfg.batch_rows)
        for _, k in batch_id_keys(batch, 0, first, kinds, cfg.id_column)
    ]
    duplicates = IdKeys.concat(keys).duplicates()
    if plan.raw and ref_state is not None:  # represented as the reference was
        plan = dataclasses.replace(plan, representer=ref_state.representer)
    elif plan.raw:  # a training sample per class, the encoder and the proxy
        samples: dict = {}
        for batch, first in table_batches(table, plan.batch_rows):
            for label, res in raw_sample(batch, 0, first, kinds, cfg, duplicates):
                samples[label] = res if label not in samples else samples[label].merge(res)
        plan = dataclasses.replace(plan, representer=fit_representer(cfg, kinds, samples))
    scan = _InMemory(plan, table, plan.checks(duplicates=duplicates))
    new_model, content_check = scan.pass1()
    model = new_model if ref_state is None else ref_state.model
    store, unit, rows = scan.pass2(model, content_check, reference=ref_state is not None)
    extra = {"representation": plan.representer.info} if plan.representer else None
    compared = None
    if ref_state is not None:
        compared = compare_to_reference(ref_state, scan.partials, new_model, where, seed=cfg.seed)
    passes = Passes(store, model, unit, row_sample=rows.frame(), content=content_check, reference=compared,
                    own_model=new_model if ref_state is not None else None)
    fin = finish(plan, passes, [MEMORY_SOURCE], extra)
    schema = clean_schema(store, fin.trimmed) or table.schema
    clean_parts = list(iter_clean(store, fin.trimmed, schema, cfg.batch_rows))
    clean = pa.concat_tables(clean_parts) if clean_parts else schema.empty_table()
    state = scan_state(kinds.input.kind, scan.partials, new_model, cfg, plan.layout, plan.representer)
    return ScanResult(fin.quarantine, fin.rejected, clean, fin.summary, model, fin.review, state)


def _reference(reference: Any, plan) -> tuple:
    """(state, where it came from) of a ``reference`` given as a state or a folder."""
    if reference is None:
        return None, None
    if isinstance(reference, ScanState):
        state, where = reference, "<state>"
    else:
        state, where = read_state(str(reference), open_read), str(reference)
    check_reference_state(state, plan.kinds.input.kind, plan.raw, plan.cfg.model is not None, where)
    check_reference_keys(state, plan.kinds, plan.cfg.label_column, where)
    if plan.raw:
        rep = state.representer
        if rep.proxy is not None and rep.proxy.state_dict is None:
            if where == "<state>":
                raise StateError("the state holds no proxy weights: give the reference's output folder")
            with open_read(join(where, PROXY_FILE)) as f:
                rep = dataclasses.replace(rep, proxy=rep.proxy.with_weights(f))
            state = dataclasses.replace(state, representer=rep)
    return state, where


class _InMemory:
    """Passes 1 and 2 over a table's record batches, with the scan core's functions."""

    def __init__(self, plan, table: pa.Table, checks):
        self.plan, self.table, self.checks = plan, table, checks
        self.detectors = plan.detectors()

    def prepared(self, checks):
        """The table's batches validated (and represented, for raw inputs)."""
        rep = self.plan.representer
        for batch, first in table_batches(self.table, self.plan.batch_rows):
            prep = prepare(batch, 0, first, checks)
            yield rep.represent(prep) if rep else prep

    def pass1(self):
        """Per-class partials, then the fitted model; the repeated content judged."""
        cfg, layout, detectors = self.plan.cfg, self.plan.layout, self.detectors
        partials: dict = {}
        content: list = []
        bounds: dict = {}
        for prep in self.prepared(dataclasses.replace(self.checks, collect_content=True)):
            content += [k for _, k in content_keys(prep)]
            for key, part in class_partials(prep, detectors, cfg, layout, bounds):
                prev = partials.get(key)
                partials[key] = part if prev is None else prev.merge(part, detectors)
        model = fit_model(partials, detectors, cfg, layout)
        self.partials = partials
        rep = self.plan.representer
        content_check = ContentCheck.of(
            ContentKeys.concat(content).duplicates(),
            sum(p.rows for p in partials.values()),
            rep.coincidence if rep else None,
            cfg.coincidence_level,
        )
        return model, content_check

    def pass2(self, model, content_check, reference: bool = False):
        """Every row scored into a part store; a uniform row sample where the user's
        aggregate expectations need one. With a ``reference`` model, rows of classes it
        did not fit are rejected."""
        cfg = self.plan.cfg
        checks = self.plan.scoring_checks(self.checks.duplicates, model, content_check, reference)
        store = MemoryPartStore()
        sample = [RowSample(ROW_SAMPLE, np.empty(0, np.uint64), np.empty(0, np.int64), None)]

        def outcomes():  # one batch at a time, as the store takes them
            for prep in self.prepared(checks):
                if self.plan.expectations.needs_sample:
                    sample[0] = sample[0].merge(RowSample.of(prep, ROW_SAMPLE, cfg.seed))
                yield score_batch(prep, model, self.detectors, MEMORY_SOURCE, keep_clean=True, seed=cfg.seed)

        unit = store_outcomes(store, "000000-000000", outcomes())
        return store, unit, sample[0]


def scan(
    X: Any,
    y: Any,
    ids: Any = None,
    config: ScanConfig | None = None,
    **settings: Any,
) -> ScanResult:
    """Scan vectors held in numpy arrays.

    Parameters
    ----------
    X : array-like of shape (n, d)
        One representation per row.
    y : array-like of shape (n,)
        Labels (integers or strings).
    ids : array-like of shape (n,), optional
        Row ids; ``0 .. n-1`` when omitted.

    Examples
    --------
    >>> import numpy as np
    >>> from poisonscan import scan
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 16)).astype("float32")
    >>> y = np.repeat([0, 1], 1000)
    >>> X[:60] += 8 * np.eye(16, dtype="float32")[0]   # a planted group in class 0
    >>> result = scan(X, y)
    >>> sorted(result.quarantine["id"].to_pylist()) == list(range(60))
    True
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features); got shape {X.shape}")
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have one label per row of X; got shape {y.shape} for {X.shape[0]} rows")
    ids = np.arange(X.shape[0]) if ids is None else np.asarray(ids)
    if ids.shape != (X.shape[0],):
        raise ValueError(f"ids must have one id per row of X; got shape {ids.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    features = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])
    table = pa.table({"id": pa.array(ids.tolist()), "label": pa.array(y.tolist()), "features": features})
    cfg = dataclasses.replace(config, **settings) if config else ScanConfig(**settings)
    cfg = dataclasses.replace(cfg, id_column="id", label_column="label", features_column="features")
    return scan_table(table, cfg)
