"""``poisonscan demo``: poison a real data set, scan its raw images, compare with the truth.

The data are scikit-learn's handwritten digits (1,797 real 8x8 images, shipped inside
the package). A BadNets-style trigger — the bottom-right 2x2 pixels set to full ink — is
stamped on 5 % of the images of other digits, which are then relabelled as the target
digit. The images are written as PNG bytes to Parquet and scanned by the same Beam
pipeline as ``poisonscan scan --image-column image``: it trains a small CNN on the
poisoned images (a backdoor shows only in a model that learned it) and scans its
penultimate-layer representation.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from poisonscan.pipelines.config import ScanConfig
from poisonscan.pipelines.drivers.run import Runner, run_scan
from poisonscan.pipelines.report.console import format_summary

TARGET = 0
POISON_RATE = 0.05


def make_poisoned_digits(seed: int = 0, rate: float = POISON_RATE, target: int = TARGET):
    """(table with PNG images, ids of the poisoned rows)."""
    # scikit-learn: about 0.5 s to import; only the demo's data need it here
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32).copy()  # 0..16
    y = digits.target.astype(np.int64).copy()
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(y != target)
    poison = np.sort(rng.choice(candidates, int(round(rate * len(y))), replace=False))
    images[poison, 6:8, 6:8] = 16.0
    y[poison] = target
    pixels = np.round(images * (255 / 16)).astype(np.uint8)
    png = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        png.append(buf.getvalue())
    ids = np.array([f"digit-{i:04d}" for i in range(len(y))])
    table = pa.table(
        {
            "id": ids,
            "label": y,
            "image": pa.array(png, pa.binary()),
            "original_label": digits.target.astype(np.int64),
        }
    )
    return table, set(ids[poison].tolist())


def run_demo(out_dir: str, *, seed: int = 0, workers: int | None = None) -> str:

    data_dir = os.path.join(out_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    table, truth = make_poisoned_digits(seed)
    # the truth column stays out of the scanned file
    data_path = os.path.join(data_dir, "digits_poisoned.parquet")
    pq.write_table(table.drop_columns(["original_label"]), data_path)
    with open(os.path.join(data_dir, "truth.csv"), "w") as f:
        f.write("id,original_label\n")
        for i, orig in zip(table["id"].to_pylist(), table["original_label"].to_pylist()):
            if i in truth:
                f.write(f"{i},{orig}\n")

    cfg = ScanConfig(image_column="image", write_clean=True, seed=seed)
    # progress bars at a terminal; nothing in a log, where the demo prints its findings only
    progress = "bar" if sys.stderr.isatty() else "off"
    summary = run_scan([data_path], out_dir, cfg, Runner(workers=workers, progress=progress))
    quarantine = pq.read_table(os.path.join(out_dir, "quarantine.parquet"))
    found = set(quarantine["id"].to_pylist())
    tp = len(found & truth)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(truth) if truth else 0.0
    clean_q = sum(
        c["rows_quarantined"] for c in summary["classes"] if c["label"] != TARGET
    )
    rep = summary["settings"].get("representation", {})
    lines = [
        f"demo: {len(truth)} of {table.num_rows:,} digit images ({POISON_RATE:.0%}) carry a "
        f"2x2 trigger and were relabelled as {TARGET}; the scan trained a small CNN on the raw "
        f"images ({rep.get('epochs')} epochs, {rep.get('seconds', 0):.1f} s) for their representation",
        format_summary(summary, out_dir),
        "",
        f"against the truth: {tp} of {len(found)} quarantined rows are poisoned "
        f"(precision {precision:.2f}); {tp} of {len(truth)} poisoned rows found "
        f"(recall {recall:.2f}); {clean_q} rows quarantined in the nine clean classes",
    ]
    if quarantine.num_rows:
        top = quarantine.slice(0, 1).to_pylist()[0]
        lines += [
            "most suspicious row:",
            f"  {top['id']} (label {top['label']}, score {top['score']:.1f}): {top['reason']}",
        ]
    lines.append(f"poisoned data: {data_path}; truth: {os.path.join(data_dir, 'truth.csv')}")
    return "\n".join(lines)
