"""1,000,000 rows x 256 float32 with a planted direction in one class.

    python benchmarks/spectral_1m.py            # generate (once), run, write docs/benchmarks.md
    python benchmarks/spectral_1m.py generate   # only the data
    python benchmarks/spectral_1m.py plain DATA OUT   # the plain two-pass baseline alone

The data: ten classes of 100,000 rows; each class is a Gaussian around its own mean with
eight correlated directions of its own (sd 1.5) over unit noise. In class 3, 5,000 rows
(5 % of the class, 0.5 % of the data) are shifted 12 units along one random direction.

Compared in one run, each as a separate process (wall time and peak summed proportional set size):

* ``plain``: a two-pass pyarrow + numpy implementation of the same computation — per-class
  mean and covariance (pairwise merging), a uniform per-class sample of 4,096 rows, the
  top eigenvector, the separated-group decision on the sample (each class's group, then its
  evidence against the other classes', as the scan judges), then a second pass
  that scores every row and writes the flagged ones;
* ``poisonscan scan`` on the embedded FnApiRunner, one worker and two.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROWS = 1_000_000
DIM = 256
CLASSES = 10
TARGET = 3
POISON_PER_CLASS = 0.05
SHIFT = 12.0
ROW_GROUP = 65_536
SEED = 20261128
RATE = 0.005  # the true poison rate, given as the budget

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")
DATA = os.path.join(DATA_DIR, "spectral_1m.parquet")
TRUTH = os.path.join(DATA_DIR, "spectral_1m_truth.npy")


def generate(path: str = DATA, truth_path: str = TRUTH) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(SEED)
    means = rng.normal(0, 2.0, (CLASSES, DIM)).astype(np.float32)
    loadings = rng.normal(size=(CLASSES, DIM, 8)).astype(np.float32)
    loadings *= 1.5 / np.linalg.norm(loadings, axis=1, keepdims=True)  # sd 1.5 along each
    direction = rng.normal(size=DIM).astype(np.float32)
    direction /= np.linalg.norm(direction)
    labels = np.repeat(np.arange(CLASSES), ROWS // CLASSES)
    rng.shuffle(labels)
    target_rows = np.flatnonzero(labels == TARGET)
    poison = np.sort(rng.choice(target_rows, int(POISON_PER_CLASS * len(target_rows)), replace=False))
    is_poison = np.zeros(ROWS, dtype=bool)
    is_poison[poison] = True
    schema = pa.schema(
        [("id", pa.int64()), ("label", pa.int64()), ("features", pa.list_(pa.float32(), DIM))]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, ROWS, ROW_GROUP):
            stop = min(start + ROW_GROUP, ROWS)
            y = labels[start:stop]
            n = stop - start
            X = rng.standard_normal((n, DIM), dtype=np.float32)
            z = rng.standard_normal((n, 8), dtype=np.float32)
            for c in range(CLASSES):
                m = y == c
                X[m] += means[c] + z[m] @ loadings[c].T
            X[is_poison[start:stop]] += SHIFT * direction
            feats = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), DIM)
            writer.write_table(
                pa.table({"id": np.arange(start, stop), "label": y, "features": feats}, schema=schema),
                row_group_size=ROW_GROUP,
            )
    np.save(truth_path, poison)


# the plain baseline --------------------------------------------------------------------
def plain(data: str, out_dir: str) -> None:
    """Two passes with pyarrow and numpy; same statistics, sample and decision."""
    from poisonscan.detectors import GroupTest, budget_cap
    from poisonscan.detectors.decision import judge_scan

    started = time.perf_counter()
    pf = pq.ParquetFile(data, pre_buffer=False, buffer_size=8 << 20)  # stream, as the scan does
    sample_size = 4096
    stats: dict = {}
    samples: dict = {}
    ids_seen = []
    rng = np.random.default_rng(0)
    for batch in pf.iter_batches(batch_size=ROW_GROUP, columns=["id", "label", "features"]):
        ids = batch.column(0).to_numpy()
        y = batch.column(1).to_numpy()
        X = batch.column(2).flatten().to_numpy().reshape(len(y), -1)
        ok = np.isfinite(X).all(axis=1)
        ids_seen.append(ids)
        for c in np.unique(y[ok]):
            Xc = X[ok & (y == c)].astype(np.float64)
            n, mean = len(Xc), Xc.mean(0)
            m2 = (Xc - mean).T @ (Xc - mean)
            if c in stats:
                n0, mean0, m20 = stats[c]
                tot = n0 + n
                delta = mean - mean0
                stats[c] = (tot, mean0 + delta * n / tot, m20 + m2 + np.outer(delta, delta) * n0 * n / tot)
            else:
                stats[c] = (n, mean, m2)
            # bottom-k sample by a random priority
            prio = rng.random(n)
            old = samples.get(c)
            cand_p = prio if old is None else np.concatenate([old[0], prio])
            cand_x = Xc.astype(np.float32) if old is None else np.concatenate([old[1], Xc.astype(np.float32)])
            keep = np.argsort(cand_p)[:sample_size]
            samples[c] = (cand_p[keep], cand_x[keep])
    all_ids = np.concatenate(ids_seen)
    assert len(np.unique(all_ids)) == len(all_ids), "duplicate ids"
    test = GroupTest()
    model, first = {}, {}
    for c, (n, mean, m2) in stats.items():
        w, v = np.linalg.eigh(m2 / (n - 1))
        direction = v[:, -1]
        proj = samples[c][1].astype(np.float64) @ direction - mean @ direction
        model[c] = (mean @ direction, direction)
        first[c] = test.decide(int(c), "spectral", proj, n, two_sided=True)
    # the scan's second step: each class's group against its peers, at alpha / classes
    judged = judge_scan(first, test.level(len(first)), lambda label, verdict: None, alone_by_affinity=False)
    model = {c: (*model[c], judged[c]) for c in model}
    flagged_ids, flagged_strength = [], []
    for batch in pf.iter_batches(batch_size=ROW_GROUP, columns=["id", "label", "features"]):
        ids = batch.column(0).to_numpy()
        y = batch.column(1).to_numpy()
        X = batch.column(2).flatten().to_numpy().reshape(len(y), -1)
        for c in np.unique(y):
            offset, direction, verdict = model[c]
            if not verdict.poisoned:
                continue
            m = y == c
            proj = X[m].astype(np.float64) @ direction - offset
            f = verdict.flags(proj)
            flagged_ids.append(ids[m][f])
            flagged_strength.append(verdict.strength(proj[f]))
    ids = np.concatenate(flagged_ids) if flagged_ids else np.empty(0, np.int64)
    strength = np.concatenate(flagged_strength) if flagged_strength else np.empty(0)
    cap = budget_cap(RATE, len(all_ids))
    order = np.argsort(-strength, kind="stable")[:cap]
    os.makedirs(out_dir, exist_ok=True)
    pq.write_table(pa.table({"id": ids[order], "score": strength[order]}), os.path.join(out_dir, "quarantine.parquet"))
    print(json.dumps({"seconds": time.perf_counter() - started, "quarantined": int(len(order))}))


# the run --------------------------------------------------------------------------------
def accuracy(quarantine_path: str, labels_of_ids=None) -> dict:
    truth = set(np.load(TRUTH).tolist())
    q = pq.read_table(quarantine_path, columns=["id"])["id"].to_numpy()
    tp = int(np.isin(q, list(truth)).sum())
    out = {
        "quarantined": int(len(q)),
        "precision": tp / len(q) if len(q) else 0.0,
        "recall": tp / len(truth),
    }
    return out


def main() -> None:
    from common import BIN, machine, run_measured, write_section

    if not os.path.exists(DATA) or not os.path.exists(TRUTH):
        t = time.perf_counter()
        generate()
        print(f"generated {DATA} in {time.perf_counter() - t:.0f} s", flush=True)
    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    py = sys.executable
    scan = os.path.join(BIN, "poisonscan")
    common = [DATA, "--features-column", "features", "--expected-poison-rate", str(RATE), "-q"]
    spectral = ["--detectors", "spectral"]
    configs = {
        "plain pyarrow+numpy (spectral)": [py, os.path.abspath(__file__), "plain", DATA, os.path.join(results_dir, "plain")],
        "poisonscan --detectors spectral": [scan, "scan", *common, *spectral, "--out", os.path.join(results_dir, "spectral")],
        "poisonscan --detectors spectral --no-data-docs --no-report": [
            scan, "scan", *common, *spectral, "--no-data-docs", "--no-report", "--out", os.path.join(results_dir, "spectral_bare"),
        ],
        "poisonscan, default detectors": [scan, "scan", *common, "--out", os.path.join(results_dir, "default")],
        "poisonscan, default detectors, --workers 2": [scan, "scan", *common, "--workers", "2", "--out", os.path.join(results_dir, "default2")],
    }
    outs = {name: os.path.join(cmd[cmd.index("--out") + 1] if "--out" in cmd else cmd[-1], "quarantine.parquet") for name, cmd in configs.items()}
    repeats = int(os.environ.get("BENCH_REPEATS", "5"))
    runs: dict = {name: [] for name in configs}
    for _ in range(repeats):  # interleaved, so drift in the machine hits every config alike
        for name, cmd in configs.items():
            r = run_measured(cmd)
            if r.returncode != 0:
                raise SystemExit(f"{name} failed:\n{r.stderr}")
            runs[name].append(r)
            print(f"{name}: {r.seconds:.1f} s, peak {r.peak_mb:.0f} MB", flush=True)
    rows = []
    record = {"machine": machine(), "repeats": repeats, "configs": {}}
    for name in configs:
        secs = np.median([r.seconds for r in runs[name]])
        # each run against the plain run of its own round: drift in the machine between
        # rounds (other load, the page cache) cancels out of the ratio
        paired = [r.seconds / p.seconds for r, p in zip(runs[name], runs["plain pyarrow+numpy (spectral)"])]
        ratio = float(np.median(paired))
        cpu = np.median([r.cpu_seconds for r in runs[name]])
        peak = max(r.peak_mb for r in runs[name])
        acc = accuracy(outs[name])
        summary_path = os.path.join(os.path.dirname(outs[name]), "summary.json")
        clean_q = None
        if os.path.exists(summary_path):
            with open(summary_path) as f:
                s = json.load(f)
            clean_q = sum(c["rows_quarantined"] for c in s["classes"] if c["label"] != TARGET)
        record["configs"][name] = {"seconds": secs, "peak_mb": peak, "cpu_seconds": cpu, "x_plain_paired": paired, **acc, "clean_class_rows_quarantined": clean_q}
        rows.append(
            f"| {name} | {secs:.1f} | {ratio:.2f} ({min(paired):.2f}-{max(paired):.2f}) | {cpu:.1f} | {peak:,.0f} | {acc['recall']:.4f} | "
            f"{acc['precision']:.4f} | {'' if clean_q is None else clean_q} |"
        )
    with open(os.path.join(results_dir, "spectral_1m.json"), "w") as f:
        json.dump(record, f, indent=2)
    from poisonscan.detectors import default_detectors

    names = default_detectors("features")
    defaults = ", ".join(names[:-1]) + " and " + names[-1]
    text = f"""## Spectral signatures on 1,000,000 x 256 (planted direction)

`make bench` (`python benchmarks/spectral_1m.py`), on {machine()}; median of {repeats}
interleaved rounds, each run a separate process; x plain = the median over rounds of the
run's wall time over the plain run's in the same round (the range: lowest and highest);
peak = largest summed proportional set size (PSS) of the process tree.
Data: 10 classes x 100,000 rows, 256 float32, Parquet (row groups of 65,536, 1.0 GB); in
class {TARGET}, 5,000 rows (0.5 % of the data) shifted {SHIFT:g} units along one direction.
Scan: `poisonscan scan spectral_1m.parquet --features-column features
--expected-poison-rate {RATE}`.

| implementation | wall s | x plain (range) | CPU s | peak MB | recall | precision | rows quarantined in clean classes |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

The default detectors are {defaults} (`pixel_trigger` finds no
pixel values in these vectors and reads nothing). Peaks include the Data Docs helper where it runs (about 250 MB); with
`--workers 2` it is the sum over four processes (the driver, two workers, each with its
own Python, Beam, pyarrow and numpy, and the helper). Targets: spectral-only within 2x
the plain wall time, the default scan within 3x, both under 2 GB.
Every poisonscan run includes what a default scan does besides the detectors: the
data-quality suite (content fingerprints for duplicate rows), the Great Expectations
validation result and Data Docs, and the review report (report.html). The row with
`--no-data-docs --no-report` leaves out the two rendered outputs. Importing Great
Expectations costs about 2 s of CPU; a helper process does it at the lowest priority
while the passes run, in the moments they leave a core idle, so the Data Docs cost CPU
time (the CPU column: user + system time of every process of the run) but little wall
time. The foundation issue measured the spectral path at 1.29x plain, and issue 3 allows
it at most 10 % more: 1.42x.
Part of the scan's speed is arithmetic the plain baseline does not use: the scan
decodes the next Parquet batch in
a background thread, and on the embedded runner finds duplicated ids in a thread while
the pipeline is built.
"""
    write_section("spectral_1m", text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        generate()
    elif len(sys.argv) > 1 and sys.argv[1] == "plain":
        plain(sys.argv[2], sys.argv[3])
    else:
        main()
