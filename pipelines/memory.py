"""The scan in memory: the same steps as the Beam pipeline, without Beam.

For notebooks, tests and data that fit in memory. It calls exactly the functions the
Beam pipeline calls (:mod:`.engine`), in the same order, so both give the same lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .config import ScanConfig
from .engine import (
    IdKeys,
    MemoryPartStore,
    ScanModel,
    batch_id_keys,
    class_partials,
    clean_schema,
    finish,
    fit_model,
    iter_clean,
    score_batch,
    store_outcomes,
)
from poisonscan.expectations import plan as expectation_plan

from .content import ContentCheck
from .engine import ROW_SAMPLE, ContentKeys, Layout, RowSample, batch_rows_for, content_keys
from .represent import fit_representer, raw_sample
from .rows import RowChecks, prepare
from .sources import SourceFile, check_columns, table_batches

MEMORY_SOURCE = "<memory>"


@dataclass
class ScanResult:
    """What a scan found.

    Attributes
    ----------
    quarantine : pyarrow.Table
        One row per quarantined example: id, label, score (higher = more suspicious),
        detectors, reason, source_file, source_row and each detector's raw score.
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
    """

    quarantine: pa.Table
    rejected: pa.Table
    clean: pa.Table | None
    summary: dict
    model: ScanModel
    review: tuple | None = None

    def report_html(self) -> str:
        """The review page (as ``report.html`` of a Beam scan), as a string."""
        from .report import REJECTED_MAX, ScanOutputs, render

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
        import polars as pl

        return data.to_arrow(compat_level=pl.CompatLevel.oldest())
    if module.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(
        f"expected a pyarrow Table, a polars or a pandas DataFrame; got {type(data).__name__}"
    )


def scan_table(data: Any, config: ScanConfig | None = None, **settings: Any) -> ScanResult:
    """Scan a table held in memory.

    Parameters
    ----------
    data : pyarrow.Table, polars.DataFrame or pandas.DataFrame
        One row per example, with id, label and features columns.
    config : ScanConfig, optional
        The settings; or give them as keyword arguments (``features_column=...``).
    """
    cfg = dataclasses.replace(config, **settings) if config else ScanConfig(**settings)
    table = to_arrow(data)
    src = SourceFile(0, MEMORY_SOURCE, "memory")
    kinds = check_columns([src], [table.schema], cfg)
    cfg = dataclasses.replace(cfg, features_column=kinds.features_column)
    rows_per_batch = batch_rows_for(cfg, kinds.input.kind)
    file_paths = {0: MEMORY_SOURCE}
    exp = expectation_plan(cfg, kinds)
    checks = RowChecks(
        kinds,
        cfg.id_column,
        cfg.label_column,
        file_paths,
        seed=cfg.seed,
        min_class_rows=cfg.min_class_rows,
        declared_labels=exp.declared_labels,
        feature_range=exp.feature_range,
        validator=exp.validator,
    )

    # pass 0: duplicated ids
    keys = [
        k
        for batch, first in table_batches(table, cfg.batch_rows)
        for _, k in batch_id_keys(batch, 0, first, kinds, cfg.id_column)
    ]
    checks.duplicates = IdKeys.concat(keys).duplicates()

    # raw inputs: a training sample per class, the encoder and the proxy
    representer = None
    if kinds.input.kind != "features":
        samples: dict = {}
        for batch, first in table_batches(table, rows_per_batch):
            for label, res in raw_sample(batch, 0, first, kinds, cfg):
                samples[label] = res if label not in samples else samples[label].merge(res)
        representer = fit_representer(cfg, kinds, samples)
        checks.encoder = representer.encoder
    layout = representer.layout if representer else Layout()
    detectors = cfg.build_detectors(
        kinds.input.kind, representer.probability_labels if representer else ()
    )

    def prepared(batch, first, chk):
        prep = prepare(batch, 0, first, chk)
        return representer.represent(prep) if representer else prep

    # pass 1: per-class partials, then the fitted model; content fingerprints
    partials: dict = {}
    content: list = []
    checks1 = dataclasses.replace(checks, collect_content=True)
    for batch, first in table_batches(table, rows_per_batch):
        prep = prepared(batch, first, checks1)
        content += [k for _, k in content_keys(prep)]
        for key, part in class_partials(prep, detectors, cfg, layout):
            prev = partials.get(key)
            partials[key] = part if prev is None else prev.merge(part, detectors)
    model = fit_model(partials, detectors, cfg, layout)

    content_check = ContentCheck.of(
        ContentKeys.concat(content).duplicates(),
        sum(p.rows for p in partials.values()),
        representer.coincidence if representer else None,
        cfg.coincidence_level,
    )

    # pass 2: score every row
    checks2 = dataclasses.replace(
        checks,
        expected_dim=model.dim,
        small_classes=model.small_classes,
        content_duplicates=content_check.rejections(),
    )
    store = MemoryPartStore()
    rows = RowSample(ROW_SAMPLE, np.empty(0, np.uint64), np.empty(0, np.int64), None)

    def scored(batch, first):
        nonlocal rows
        prep = prepared(batch, first, checks2)
        if exp.needs_sample:
            rows = rows.merge(RowSample.of(prep, ROW_SAMPLE, cfg.seed))
        return score_batch(prep, model, detectors, MEMORY_SOURCE, keep_clean=True, seed=cfg.seed)

    outcomes = (scored(batch, first) for batch, first in table_batches(table, rows_per_batch))
    unit = store_outcomes(store, "000000-000000", outcomes)
    extra = {"representation": representer.info} if representer else None
    fin = finish(
        store, model, unit, detectors, cfg, kinds, file_paths, [MEMORY_SOURCE], extra,
        expectations=exp, row_sample=rows.frame(), content=content_check,
    )
    schema = clean_schema(store, fin.trimmed) or table.schema
    clean_parts = list(iter_clean(store, fin.trimmed, schema, cfg.batch_rows))
    clean = pa.concat_tables(clean_parts) if clean_parts else schema.empty_table()
    return ScanResult(fin.quarantine, fin.rejected, clean, fin.summary, model, fin.review)


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
