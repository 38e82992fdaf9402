"""What a run stages in its output folder between the driver and the pipeline."""

from __future__ import annotations

import io
import pickle
from dataclasses import fields
from typing import Iterable

import numpy as np

from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.io.outputs import (
    OutputDir,
    PartWriter,
    open_read,
    open_write,
    write_json,
    write_parquet,
    write_quarantine_csv,
)
from poisonscan.pipelines.scan.finish import Finished, iter_clean
from poisonscan.pipelines.scan.keys import ContentKeys

#: the finished expectations, staged by the pipeline for the driver to render as Data Docs
DATA_DOCS_JOB = "data_docs_job.pkl"

#: pass 1's content fingerprints, one file per read unit (the command line's pipeline)
CONTENT_KEYS_DIR = "content_keys"

#: pass 0's result when it ran before the pipeline (driver, or raw inputs' sampling)
DUPLICATES_FILE = "duplicates.pkl"


def write_finished(fin: Finished, store, out: OutputDir, cfg: ScanConfig) -> None:
    """Write the finished tables into the output's staging folder."""
    write_parquet(fin.quarantine, out.staged("quarantine.parquet"))
    write_quarantine_csv(fin.quarantine, out.staged("quarantine.csv"))
    write_parquet(fin.rejected, out.staged("rejected.parquet"))
    review_table, review_data = fin.review
    write_parquet(review_table, out.staged("review.parquet"))
    write_json(review_data, out.staged("review.json"))
    if cfg.write_clean:

        writer = PartWriter(out.staged("clean.parquet"))
        rows = 0
        schema = fin.clean_schema
        if schema is not None:
            for table in iter_clean(store, fin.trimmed, schema, cfg.batch_rows):
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
        write_pickle(fin.expectations, out.staged(DATA_DOCS_JOB))
    write_json(fin.summary, out.staged("summary.json"))


def write_pickle(value, path: str) -> None:
    with open_write(path) as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_pickle(path: str):
    # files this run wrote to its own staging folder a moment ago
    with open_read(path) as f:
        return pickle.load(f)


def write_content_keys(path: str, keys: Iterable[tuple[int, ContentKeys]]) -> None:
    """One read unit's content fingerprints, by bucket, as one ``.npz`` file.

    Pass 1 of the command line leaves them in the staging folder instead of sending
    every row's key through a shuffle: the embedded runner holds a shuffle's whole output
    in memory several times over, which at 4M rows was the scan's peak. Named after the
    unit, so a retried bundle overwrites its own file and no key is counted twice.
    """
    by_bucket: dict[int, list[ContentKeys]] = {}
    for bucket, k in keys:
        by_bucket.setdefault(bucket, []).append(k)
    arrays = {}
    for bucket, parts in by_bucket.items():
        merged = ContentKeys.concat(parts)
        for f in fields(ContentKeys):
            arrays[f"{bucket}.{f.name}"] = getattr(merged, f.name)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with open_write(path) as f:
        f.write(buf.getvalue())


def read_content_bucket(paths: Iterable[str], bucket: int) -> ContentKeys:
    """One bucket's content fingerprints from every unit's file."""
    parts = []
    for path in paths:
        with open_read(path) as f, np.load(f, allow_pickle=False) as npz:
            if f"{bucket}.hi" in npz.files:
                parts.append(ContentKeys(*(npz[f"{bucket}.{fl.name}"] for fl in fields(ContentKeys))))
    return ContentKeys.concat(parts)
