"""Attack families on raw text, tables and images that per-class separation and token
and value counts cannot see, development part: the baseline.

    python benchmarks/dev_attacks_raw.py          # seeds 0, 1; writes docs/benchmarks.md
    python benchmarks/dev_attacks_raw.py images   # the image families only (printed)
    python benchmarks/dev_attacks_raw.py text     # the text and table families only (printed)
    BENCH_SEEDS=0 python benchmarks/dev_attacks_raw.py images   # one seed

The families of ``attacks_raw.py`` (a syntactic template on 20 % of Rotten Tomatoes,
rotten reviews relabelled fresh, and on 10 % of the convention speeches' paragraphs; a
syntactic fragment on 20 % of Rotten Tomatoes; an in-bounds clean-label trigger on 3 % of
``credit_data``, three columns of bad applicants set to their most common values), the
image families of ``attacks.py`` on MNIST-5k (all-to-all, SIG, TaCT, WaNet, the 5-image
patch, two attacks in one set) written as PNG bytes, and their clean controls, each
written as Parquet and scanned end to end with ``poisonscan scan`` (Beam, FnApiRunner,
one process, default detectors, no poison rate; the proxy network trained inside the
scan), as ``raw_bench.py`` scans (on images the defaults include ``shared_group``, the
cross-class view built for all-to-all). Beside it, on
the same data: ART's spectral defence (told the true poison rate) and activation
defence (defaults) on the representation of the proxy network the scan trains (same
recipe and seed), and cleanlab's ``find_label_issues`` on out-of-fold probabilities of
that network cross-fitted on 3 folds (``raw_bench.compare``). Development data only: the
held-out part of these families is built apart (``matrix.py``).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attacks  # noqa: E402
import attacks_raw  # noqa: E402
import matrix  # noqa: E402
import poisoning  # noqa: E402
from common import BIN, machine, run_measured, write_section  # noqa: E402
from detectors_bench import prf  # noqa: E402
from dev_triggers import rotten_tomatoes  # noqa: E402
from raw_bench import compare, image_case  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "data", "dev_attacks_raw")
SEEDS = tuple(int(s) for s in os.environ.get("BENCH_SEEDS", "0,1").split(","))
#: The families whose rows are images (their table has the image-only cells).
IMAGE_FAMILIES = (*attacks.FAMILIES, "clean control (images)")


def image_cases():
    out = []
    for family, build in attacks.FAMILIES.items():
        for seed in SEEDS:
            out.append((family, seed, lambda b=build, s=seed: image_case(b(seed=s))))
    out.append(("clean control (images)", None, lambda: image_case(poisoning.clean_mnist())))
    return out


def cases(only: str = ""):
    """(family, seed, build) of every condition; clean controls have seed None."""
    if only == "images":
        return image_cases()
    texts, labels = rotten_tomatoes()
    df, y, _ = poisoning.credit_data(False)
    out = []
    for seed in SEEDS:
        out.append(("syntactic template", seed, lambda s=seed: attacks_raw.syntactic(texts, labels, seed=s)))
    for seed in SEEDS:
        out.append(("syntactic fragment", seed, lambda s=seed: attacks_raw.fragments(texts, labels, seed=s)))
    out.append(("clean control (text)", None, lambda: attacks_raw.reviews_clean(texts, labels)))
    paragraphs = attacks_raw.convention_paragraphs()
    for seed in SEEDS:
        out.append(("syntactic template", seed, lambda s=seed: attacks_raw.syntactic_paragraphs(*paragraphs, seed=s)))
    out.append(("clean control (text)", None, lambda: attacks_raw.paragraphs_clean(*paragraphs)))
    for seed in SEEDS:
        out.append(("clean-label table trigger", seed, lambda s=seed: attacks_raw.clean_label_table(df, y, seed=s)))
    out.append(("clean control (table)", None,
                lambda: ("credit_data clean", attacks_raw.table_of(df, y), np.zeros(len(y), bool), [])))
    return out if only == "text" else out + image_cases()


def scan(table, truth, flags, name, work=WORK):
    """Write ``table`` as Parquet under ``work``, scan it with the CLI (default detectors, no
    poison rate) and measure the quarantine against ``truth``."""
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "case.parquet")
    pq.write_table(table, src)
    out = os.path.join(work, "scan")
    run = run_measured([os.path.join(BIN, "poisonscan"), "scan", src, "--out", out, "-q", "--no-data-docs",
                        "--no-report", *flags])
    if run.returncode != 0:
        raise SystemExit(f"{name}: scan failed:\n{run.stderr}")
    q = pq.read_table(os.path.join(out, "quarantine.parquet"))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    flag = np.zeros(len(truth), bool)
    flag[np.array(q["id"].to_pylist(), dtype=np.int64)] = True
    by: dict = {}
    for ds in q["detectors"].to_pylist():
        for d in ds:
            by[d] = by.get(d, 0) + 1
    return {"poisonscan": prf(flag, truth), "classes_poisoned": [str(c) for c in summary["classes_poisoned"]],
            "flagged_by": by, "seconds": run.seconds,
            "clean_flagged": float((flag & ~truth).sum() / max((~truth).sum(), 1))}


def main(argv):
    warnings.filterwarnings("ignore")
    matrix.check_disjoint()
    only = argv[0] if argv else ""
    rows = []
    for family, seed, build in cases(only):
        name, table, truth, flags = build()
        row = {"family": family, "case": name, "seed": seed, "rows": table.num_rows, "poisoned": int(truth.sum())}
        row.update(scan(table, truth, flags, name))
        row.update(compare(table, truth, flags))
        rows.append(row)
        m = row["poisonscan"]
        print(f"{name} (seed {seed}): poisonscan F1 {m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f}), "
              f"clean rows {row['clean_flagged']:.2%}, classes {row['classes_poisoned'] or 'none'} by "
              f"{row['flagged_by']}; ART SS {row['ART spectral']['f1']:.2f}, AC {row['ART activation']['f1']:.2f}, "
              f"cleanlab {row['cleanlab']['f1']:.2f} [{row['seconds']:.0f} s]", flush=True)
        # written after every condition: a run stopped early keeps what it measured
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "dev_attacks_raw" + (f"_{only}" if only else "") + ".json"), "w") as f:
            json.dump(rows, f, indent=2)
    if only:
        print("\n".join(table_lines(rows)))
    else:
        write_doc(rows)


def cell(m, row):
    if row["poisoned"] == 0:
        return f"{m['share']:.2%}"
    return f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"


def table_lines(rows):
    """The table rows of docs/benchmarks.md for ``rows`` (this file's and the held-out part's)."""
    lines = []
    for r in rows:
        clean = r["poisoned"] == 0
        by = ", ".join(f"{d} {n}" for d, n in sorted(r["flagged_by"].items())) or "—"
        lines.append(
            f"| {r['family']} | {r['case']} | {'—' if r['seed'] is None else r['seed']} | {r['rows']:,} | "
            f"{r['poisoned']:,} | **{cell(r['poisonscan'], r)}** | {'—' if clean else format(r['clean_flagged'], '.2%')} | "
            f"{', '.join(r['classes_poisoned']) or 'none'} | {by} | {cell(r['ART spectral'], r)} | "
            f"{cell(r['ART activation'], r)} | {cell(r['cleanlab'], r)} |"
        )
    return lines


def write_doc(rows):
    images = [r for r in rows if r["family"] in IMAGE_FAMILIES]
    lines = table_lines([r for r in rows if r["family"] not in IMAGE_FAMILIES])
    text = f"""## Attack families on raw text, tables and images (development part)

`python benchmarks/dev_attacks_raw.py` on {machine()}, seeds {', '.join(map(str, SEEDS))}: the
families of `benchmarks/attacks_raw.py` (its docstring gives the builders and their
sources) scanned end to end with `poisonscan scan` (FnApiRunner, one process, default
detectors, **no poison rate**, the proxy trained inside the scan). ART's spectral defence is
told the true poison rate (at least 1 %; 5 % on clean controls) and its activation defence
runs with its defaults, both on the representation of the proxy network the scan trains
(same recipe and seed); cleanlab: `find_label_issues` on out-of-fold probabilities of that
network cross-fitted on 3 folds. Cells: F1 (precision/recall) against the rows to remove;
on clean controls the share of rows flagged. "clean rows q.": the share of the poisoned
set's other rows quarantined. A clean-label trigger keeps every label right, so no label
check can see it by construction.

| family | condition | seed | rows | to remove | poisonscan | clean rows q. | classes judged | flagged by | ART spectral | ART activation | cleanlab |
| --- | --- | --- | ---: | ---: | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(lines)}

The image families of `benchmarks/attacks.py` (as `dev_attacks.py` builds them, on MNIST-5k
at their literature rates) written as PNG bytes and scanned the same way: the scan trains
its own proxy CNN on the images and every detector reads what that scan reads (its
representation; `pixel_trigger` the pixels; on images the defaults include
`shared_group`, the cross-class view); ART and cleanlab read the representation of the
proxy the scan trains, as above. Cover rows (a trigger on rows that keep their true label: TaCT's, WaNet's) are not
among the rows to remove.

| family | condition | seed | rows | to remove | poisonscan | clean rows q. | classes judged | flagged by | ART spectral | ART activation | cleanlab |
| --- | --- | --- | ---: | ---: | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(table_lines(images))}
"""
    write_section("dev_attacks_raw", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
