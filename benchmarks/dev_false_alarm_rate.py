"""A scan-wide false-alarm rate against each family's own level (development part).

By default each family of evidence is judged at its own level (the group detectors at 5 %
and up to as much again for their step-down, the label detectors at 5 %, `class_flip`
at 5 %, `shared_group` at 5 %, a trigger detector at 0.4 %), so a clean scan may have a
class judged with a chance up to 15-20 % (summary.json's ``false_alarms.bound``).
``--false-alarm-rate 0.05`` splits 5 % between them (docs/detectors.md, "The whole scan's
bound"). This script scans every condition twice in one run, with the default levels and
with ``false_alarm_rate=0.05``, and reports what the lower bound costs and buys:

* vectors: every condition of ``dev_bench.py`` (planted Gaussian shifts, MNIST-5k under a
  CNN, digits pixels, few classes, correlated covariances, a wide CNN with batch norm),
  default detectors;
* tables: the label flips of ``dev_labels.py`` (digits, wine, credit_data), seeds 0 and 1,
  the label detectors and `class_flip`;
* text: Rotten Tomatoes (``raw_bench.py``'s reviews), clean and with its trigger phrase on
  3 %, default detectors, in memory.

Development data only; nothing here chooses a default. ``render`` writes the section
again from the last run's results.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np
import pyarrow as pa

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dev_bench  # noqa: E402
import dev_labels  # noqa: E402
import matrix  # noqa: E402
from common import machine, write_section  # noqa: E402
from detectors_bench import prf  # noqa: E402

RATE = 0.05


def flags_of(result, n: int) -> np.ndarray:
    flag = np.zeros(n, bool)
    if result.quarantine.num_rows:
        flag[np.asarray(result.quarantine.column("id").to_pylist(), dtype=np.int64)] = True
    return flag


def cell(flag: np.ndarray, truth: np.ndarray, result) -> dict:
    return {**prf(flag, truth), "judged": result.summary["classes_poisoned"],
            "bound": result.summary["false_alarms"]["bound"]}


def both(scan_once, truth: np.ndarray) -> dict:
    out = {}
    for key, rate in (("default", None), ("rate", RATE)):
        t0 = time.perf_counter()
        result = scan_once(rate)
        out[key] = {**cell(flags_of(result, len(truth)), truth, result), "seconds": time.perf_counter() - t0}
    return out


def vector_rows(families):
    from poisonscan import scan

    for fam in families:
        for name, kind, seed, build in dev_bench.FAMILIES[fam]():
            X, y, truth, *_ = build()
            truth = np.asarray(truth, bool)
            yield {"part": "vectors", "case": name, "seed": seed, "clean": kind == "clean",
                   **both(lambda rate: scan(X, y, seed=seed, false_alarm_rate=rate), truth)}


def table_rows(seeds=(0, 1)):
    from poisonscan import scan_table

    cache = {}
    for data, name, make in dev_labels.conditions():
        if data not in cache:
            cache[data] = dev_labels.DATA[data]()
        table, y0 = cache[data]
        for seed in seeds:
            rng = np.random.default_rng(seed)
            y, idx = (y0.copy(), np.zeros(0, np.int64)) if make is None else make(y0, rng)
            truth = np.zeros(len(y), bool)
            truth[idx] = True
            t = table.append_column("label", pa.array(y)).append_column("id", pa.array(np.arange(len(y))))

            def once(rate, t=t, seed=seed):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return scan_table(t, tabular_columns=tuple(table.schema.names), detectors=dev_labels.DETECTORS,
                                      seed=seed, data_docs=False, report=False, false_alarm_rate=rate)

            yield {"part": "tables", "case": f"{data} {name}", "seed": seed, "clean": make is None, **both(once, truth)}


def text_rows():
    import raw_bench

    from poisonscan import scan_table

    for rate in (0.0, 0.03):
        name, table, truth, _ = raw_bench.text_case(rate)

        def once(fa, table=table):
            return scan_table(table, text_column="review", data_docs=False, report=False, false_alarm_rate=fa)

        yield {"part": "text", "case": name, "seed": 0, "clean": not rate, **both(once, np.asarray(truth, bool))}


def fmt(m: dict, clean: bool) -> str:
    judged = ",".join(map(str, m["judged"])) or "none"
    if clean:
        return f"{m['share']:.2%} ({judged})"
    return f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"


def render(rows) -> str:
    lines = ["| part | condition | seed | default levels | `--false-alarm-rate 0.05` |",
             "| --- | --- | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['part']} | {r['case']} | {r['seed']} | {fmt(r['default'], r['clean'])} | "
                     f"{fmt(r['rate'], r['clean'])} |")
    clean = [r for r in rows if r["clean"]]
    poisoned = [r for r in rows if not r["clean"]]
    judged = {k: sum(bool(r[k]["judged"]) for r in clean) for k in ("default", "rate")}
    lost = [r for r in poisoned if r["rate"]["f1"] < r["default"]["f1"] - 0.005]
    gained = [r for r in poisoned if r["rate"]["f1"] > r["default"]["f1"] + 0.005]
    bounds = {k: sorted({round(r[k]["bound"], 4) for r in rows}) for k in ("default", "rate")}
    secs = {k: sum(r[k]["seconds"] for r in rows) for k in ("default", "rate")}
    lost_lines = "".join(
        f"\n- {r['part']}, {r['case']}, seed {r['seed']}: {r['default']['f1']:.2f} -> {r['rate']['f1']:.2f}"
        for r in lost
    ) or "\n- none"
    return f"""## A scan-wide false-alarm rate against each family's own level (development part)

`python benchmarks/dev_false_alarm_rate.py` on {machine()}: every condition scanned twice
in one run, with the default levels (each family of evidence at its own level) and with
`false_alarm_rate=0.05` split between the families (docs/detectors.md, "The whole scan's
bound"). Vectors: the conditions of `dev_bench.py`, default detectors; tables: the label
flips of `dev_labels.py`, the label detectors and `class_flip`; text: Rotten Tomatoes,
default detectors, in memory. Cells: F1 (precision/recall); on clean controls the share
of rows quarantined and the classes judged.

{chr(10).join(lines)}

Clean controls with any class judged: **{judged['default']} of {len(clean)} with the default levels,
{judged['rate']} of {len(clean)} at 0.05**. The scans' stated bound (summary.json's
`false_alarms.bound`): {', '.join(f'{b:.3f}' for b in bounds['default'])} with the default levels,
{', '.join(f'{b:.3f}' for b in bounds['rate'])} at 0.05. Poisoned conditions whose F1 fell at
0.05 ({len(lost)} of {len(poisoned)}):{lost_lines}

F1 rose at 0.05 on {len(gained)} (a class no longer judged stops costing precision). Scan
time, all conditions: {secs['default']:.0f} s with the default levels, {secs['rate']:.0f} s at 0.05.
"""


def main(argv):
    warnings.filterwarnings("ignore")
    matrix.check_disjoint()
    if argv == ["render"]:  # the section again from the last run's results
        with open(os.path.join(HERE, "results", "dev_false_alarm_rate.json")) as f:
            write_section("dev_false_alarm_rate", render(json.load(f)))
        return
    parts = argv or ["vectors", "tables", "text"]
    rows = []
    for part in parts:
        gen = {"vectors": lambda: vector_rows(list(dev_bench.FAMILIES)), "tables": table_rows, "text": text_rows}[part]
        for row in gen():
            rows.append(row)
            print(f"[{row['part']}] {row['case']} seed {row['seed']}: default {fmt(row['default'], row['clean'])}, "
                  f"0.05 {fmt(row['rate'], row['clean'])} "
                  f"[{row['default']['seconds']:.1f} s, {row['rate']['seconds']:.1f} s]", flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "dev_false_alarm_rate.json"), "w") as f:
        json.dump(rows, f, indent=2, default=str)
    if not argv:
        write_section("dev_false_alarm_rate", render(rows))
    else:
        print(render(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
