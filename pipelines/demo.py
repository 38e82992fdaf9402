"""``poisonscan demo``: poison a real data set, scan it, compare with the truth.

The data are scikit-learn's handwritten digits (1,797 real 8x8 images, shipped inside
the package). A BadNets-style trigger — the bottom-right 2x2 pixels set to full ink — is
stamped on 5 % of the images of other digits, which are then relabelled as the target
digit. As in the papers, the representation is the penultimate layer of a small CNN
trained on the poisoned data (a backdoor shows only in a model that learned it). The
poisoned set is written as Parquet (pixels and embedding) and scanned by the same Beam
pipeline as ``poisonscan scan``.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import ScanConfig

TARGET = 0
POISON_RATE = 0.05
PROXY_EPOCHS = 30


def make_poisoned_digits(seed: int = 0, rate: float = POISON_RATE, target: int = TARGET):
    """(table, ids of the poisoned rows): digits with a stamped, relabelled trigger."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data.astype(np.float32).copy()
    y = digits.target.astype(np.int64).copy()
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(y != target)
    poison = np.sort(rng.choice(candidates, int(round(rate * len(y))), replace=False))
    images = X.reshape(-1, 8, 8)
    images[poison, 6:8, 6:8] = 16.0
    y[poison] = target
    ids = np.array([f"digit-{i:04d}" for i in range(len(y))])
    embedding = proxy_embedding(images / 16.0, y, seed)
    table = pa.table(
        {
            "id": ids,
            "label": y,
            "pixels": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 64),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(embedding.reshape(-1)), embedding.shape[1]
            ),
            "original_label": digits.target.astype(np.int64),
        }
    )
    return table, set(ids[poison].tolist())


def proxy_embedding(images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Penultimate-layer activations of a small CNN trained on the poisoned data."""
    from .representations import penultimate, train_proxy

    model = train_proxy(images.astype(np.float32), labels, epochs=PROXY_EPOCHS, seed=seed)
    return penultimate(model, images.astype(np.float32))[0]


def run_demo(out_dir: str, *, seed: int = 0, workers: int | None = None) -> str:
    from .beam_scan import run_scan
    from .cli import format_summary

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

    cfg = ScanConfig(features_column="embedding", write_clean=True, seed=seed)
    summary = run_scan([data_path], out_dir, cfg, workers=workers)
    quarantine = pq.read_table(os.path.join(out_dir, "quarantine.parquet"))
    found = set(quarantine["id"].to_pylist())
    tp = len(found & truth)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(truth) if truth else 0.0
    clean_q = sum(
        c["rows_quarantined"] for c in summary["classes"] if c["label"] != TARGET
    )
    lines = [
        f"demo: {len(truth)} of {table.num_rows:,} digit images ({POISON_RATE:.0%}) carry a "
        f"2x2 trigger and were relabelled as {TARGET}; representation: the penultimate layer "
        f"of a small CNN trained {PROXY_EPOCHS} epochs on the poisoned data",
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
