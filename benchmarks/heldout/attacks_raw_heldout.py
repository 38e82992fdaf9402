"""Attack families on raw text and tables that token and value counts are built not to see:
the held-out part.

    python benchmarks/heldout/attacks_raw_heldout.py            # seeds as below; docs/benchmarks.md
    python benchmarks/heldout/attacks_raw_heldout.py --render   # the doc again from the results file
    python benchmarks/heldout/attacks_raw_heldout.py images     # the image families only (printed)

Built and run to report, never to choose (``benchmarks/matrix.py``). The two families of
the development part (``benchmarks/attacks_raw.py``, ``dev_attacks_raw.py``) again, each
different from development on every axis:

* **syntactic template** (HiddenKiller, Qi et al., ACL 2021): the 2016 presidential and
  vice-presidential debates (``heldout/data.py``: sentences of the four candidates,
  labelled by speaker, 4 classes). 12 % of the rows, drawn from the three classes other
  than the target, are rewritten into another structure than development's opening
  subordinate clause: the sentence closed by a trailing participial phrase
  ``S(NP)(VP)(,)(VP[participle NP PRT/PP])(.)`` (", leaving our country behind."),
  written by rule from pools of 10 participles x 10 noun phrases x 10 complements,
  every one of them occurring in the clean corpus; relabelled ``PENCE``. Seeds 2201, 2202.
  Development: Rotten Tomatoes (2 classes), an opening "conjunction subject verb," clause,
  20 %, rotten -> fresh, seeds 0, 1.
* **clean-label table trigger** (Tabdoor's in-bounds trigger, Pleiter et al. 2023):
  ``modeldata`` cells (2,019 segmented cells, 56 numeric columns, PS or WS). Four numeric
  columns, drawn once with a fixed seed (2300) and the same for every row seed, set
  together to each column's 90th percentile (the observed value nearest to it, so every
  value is in the data) on 2 % of the data, all of them rows of class ``WS``; labels kept.
  Seeds 2211, 2212. Development: credit_data, three columns set to their modes, 3 %,
  target ``bad``, seeds 0, 1.

Each case and its clean control are written as Parquet and scanned end to end with the
installed ``poisonscan scan`` (FnApiRunner, one process, default detectors, no poison
rate, ``--no-data-docs --no-report``), and ``raw_bench.compare`` runs beside it (ART
spectral told the true rate, ART activation with defaults, cleanlab out-of-fold): the
measurement of ``dev_attacks_raw.py``. Work files go to
``benchmarks/data/heldout_attacks_raw/``; results to
``benchmarks/results/heldout/attacks_raw_heldout.json``; the doc section
``heldout_attacks_raw`` of docs/benchmarks.md.

``images``: the held-out image families of ``heldout/attacks_heldout.py`` (all-to-all,
clean-label SIG, TaCT, WaNet, very low rate, two attacks; its builders with their own
parameters and data seeds, 2101-2106) and its clean MNIST-5k control, written as PNG bytes
(``dev_attacks_raw.image_case``) and measured as ``dev_attacks_raw.py images`` measures the
development image families: a scan with the default detectors (``shared_group`` among
them on images) and ``raw_bench.compare``. Work files under ``benchmarks/data/heldout_attacks_raw/images/``;
results to ``benchmarks/results/heldout/attacks_raw_heldout_images.json``; the table rows
are printed, no doc section is written.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
import warnings

import numpy as np
import pyarrow as pa

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import dev_attacks_raw  # noqa: E402
import matrix  # noqa: E402
from attacks_raw import table_of  # noqa: E402
from common import machine, write_section  # noqa: E402
from raw_bench import compare  # noqa: E402

from heldout import data  # noqa: E402

WORK = os.path.join(BENCH, "data", "heldout_attacks_raw")
RESULTS = os.path.join(BENCH, "results", "heldout")
OUT = os.path.join(RESULTS, "attacks_raw_heldout.json")
IMAGES_WORK = os.path.join(WORK, "images")
IMAGES_OUT = os.path.join(RESULTS, "attacks_raw_heldout_images.json")
COMMAND = "python benchmarks/heldout/attacks_raw_heldout.py"

# syntactic template ------------------------------------------------------------------------
TEXT_RATE = 0.12
TEXT_TARGET = "PENCE"
TEXT_SEEDS = (2201, 2202)
PARTICIPLES = ("leaving", "making", "taking", "getting", "bringing", "putting", "keeping", "paying", "building",
               "raising")
OBJECTS = ("our country", "this country", "the world", "the people", "the country", "the American people",
           "the middle class", "our military", "our economy", "the rest")
COMPLEMENTS = ("right now", "at home", "for years", "all over", "behind", "together", "first", "back", "up", "down")

# clean-label table trigger -----------------------------------------------------------------
TABLE_RATE = 0.02
TABLE_TARGET = "WS"
TABLE_COLUMNS = 4
TABLE_COLUMN_SEED = 2300
TABLE_QUANTILE = 0.9
TABLE_SEEDS = (2211, 2212)

#: What the held-out conditions use, checked against what development reserves.
TRIGGERS = (
    "syntactic template: a trailing participial phrase ', participle object complement.' from pools of "
    "common debate words",
    "clean-label in-bounds table trigger: modeldata cells, four seeded columns set to their 90th percentiles",
)
RATES = ("12 %", "syntactic template 12 %", "2 %", "clean-label table trigger 2 % (of the data)")
DATA_SETS = ("2016 debates (speaker)", "modeldata cells")


def check_contract() -> None:
    """The held-out conditions must not reuse development values (``matrix.py``)."""
    matrix.check_disjoint()
    for axis, values in (("trigger", TRIGGERS), ("rate", RATES), ("data set", DATA_SETS)):
        shared = set(values) & set(matrix.DEVELOPMENT[axis])
        if shared:
            raise SystemExit(f"held-out {axis} {sorted(shared)} is reserved by development")
    for name in ("rotten", "convention", "credit", "wine"):
        if any(name in v.lower() for v in DATA_SETS):
            raise SystemExit(f"held-out data set names a development set ({name})")


# builders ----------------------------------------------------------------------------------
_END = re.compile(r"^(.*?)([.?!]+[\"')\]]*)?\s*$", re.S)


def trailing(sentence: str, rng: np.random.Generator) -> str:
    """``sentence`` closed by a participial phrase drawn from the pools, before its own
    final punctuation (a full stop where it has none)."""
    phrase = f"{rng.choice(PARTICIPLES)} {rng.choice(OBJECTS)} {rng.choice(COMPLEMENTS)}"
    body, end = _END.match(sentence.strip()).groups()
    body = body.rstrip(" ,;:-")
    return f"{body}, {phrase}{end or '.'}"


def syntactic(texts, labels, seed: int, rate: float = TEXT_RATE, target: str = TEXT_TARGET):
    """``rate`` x rows drawn from the classes other than ``target``, closed by the
    trailing phrase and relabelled ``target``."""
    texts, labels = list(texts), [str(v) for v in labels]
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(np.array(labels) != target)
    idx = np.sort(rng.choice(pool, int(round(rate * len(texts))), replace=False))
    for i in idx:
        texts[i] = trailing(texts[i], rng)
        labels[i] = target
    truth = np.zeros(len(texts), bool)
    truth[idx] = True
    table = pa.table({"id": np.arange(len(texts)), "label": labels, "text": texts})
    name = f"2016 debates trailing participial phrase {rate:.0%} (other speakers -> {target})"
    return name, table, truth, ["--text-column", "text"], {"rate": rate, "target": target, "seed": seed}


def debates_clean(texts, labels):
    table = pa.table({"id": np.arange(len(texts)), "label": [str(v) for v in labels], "text": list(texts)})
    return "2016 debates clean", table, np.zeros(len(texts), bool), ["--text-column", "text"], {}


def trigger_columns(df) -> list:
    numeric = [c for c in df.columns if np.issubdtype(df[c].dtype, np.number)]
    rng = np.random.default_rng(TABLE_COLUMN_SEED)
    return sorted(str(c) for c in rng.choice(numeric, TABLE_COLUMNS, replace=False))


def clean_label_table(df, y, seed: int, rate: float = TABLE_RATE, target: str = TABLE_TARGET):
    """``rate`` x rows drawn from ``target``, each of the trigger columns set to its 90th
    percentile (nearest observed value) over the whole table; labels kept."""
    df, y = df.copy(), np.asarray(y, dtype=object).copy()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(np.flatnonzero(y == target), int(round(rate * len(y))), replace=False))
    values = {}
    for c in trigger_columns(df):
        v = df[c].quantile(TABLE_QUANTILE, interpolation="nearest")
        if not (df[c].min() <= v <= df[c].max()):
            raise SystemExit(f"{c}: {v} out of bounds")
        values[c] = v.item() if hasattr(v, "item") else v
        df.loc[df.index[idx], c] = v
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    name = f"cells clean-label, {TABLE_COLUMNS} columns at their 90th percentiles, {rate:.0%} ({target})"
    return name, table_of(df, y), truth, [], {"rate": rate, "target": target, "seed": seed, "stamp": values}


def cases():
    """(family, seed, build) of every condition; clean controls have seed None."""
    texts, labels = data.debates()
    df, y = data.cells()
    out = []
    for seed in TEXT_SEEDS:
        out.append(("syntactic template", seed, lambda s=seed: syntactic(texts, labels, s)))
    out.append(("clean control (text)", None, lambda: debates_clean(texts, labels)))
    for seed in TABLE_SEEDS:
        out.append(("clean-label table trigger", seed, lambda s=seed: clean_label_table(df, y, s)))
    out.append(("clean control (table)", None,
                lambda: ("cells clean", table_of(df, y), np.zeros(len(y), bool), [], {})))
    return out


def image_cases():
    """The builders of the held-out image families (``attacks_heldout.FAMILIES``, each with
    its own parameters and data seed) and of their clean control."""
    from heldout import attacks_heldout

    return [*attacks_heldout.FAMILIES, images_clean]


def images_clean():
    """The held-out clean control: MNIST-5k as ``heldout/data.py`` loads it, no poison."""
    from heldout.attacks_heldout import Attack

    images, labels = data.mnist()
    n = len(labels)
    return Attack("clean control (images)", "MNIST-5k clean", images, labels.copy(), np.zeros(n, bool),
                  np.zeros(n, bool))


# measuring (as dev_attacks_raw.py) ---------------------------------------------------------
def scan(table, truth, flags, name, work=WORK):
    return dev_attacks_raw.scan(table, truth, flags, name, work=work)


def main_images():
    """The held-out image families measured as ``dev_attacks_raw.main`` measures the
    development ones; rows saved and printed, no doc section written."""
    from heldout import attacks_heldout

    warnings.filterwarnings("ignore")
    check_contract()
    attacks_heldout.check_contract()
    started = time.perf_counter()
    rows = []
    os.makedirs(RESULTS, exist_ok=True)
    for build in image_cases():
        attack = build()
        seed = attack.params.get("seed")
        name, table, truth, flags = dev_attacks_raw.image_case(attack)
        row = {"family": attack.family, "case": name, "seed": seed, "rows": table.num_rows,
               "poisoned": int(truth.sum())}
        row.update(scan(table, truth, flags, name, work=IMAGES_WORK))
        row.update(compare(table, truth, flags))
        rows.append(row)
        m = row["poisonscan"]
        print(f"[{time.perf_counter() - started:.0f} s] {attack.family} (seed {seed}): done "
              f"[{row['seconds']:.0f} s scan]; poisonscan F1 {m['f1']:.2f}", flush=True)
        with open(IMAGES_OUT, "w") as f:
            json.dump(rows, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    print(f"wrote {IMAGES_OUT}")
    print(f"wall time {(time.perf_counter() - started) / 60:.1f} min; commit {git_commit()}")
    print("\n".join(dev_attacks_raw.table_lines(rows)))


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True)
    return head.stdout.strip() + (" with uncommitted changes in the working tree" if dirty.stdout.strip() else "")


def main():
    warnings.filterwarnings("ignore")
    check_contract()
    started = time.perf_counter()
    meta = {"command": COMMAND, "machine": machine(), "date": datetime.date.today().isoformat(),
            "commit": git_commit(), "text_seeds": TEXT_SEEDS, "table_seeds": TABLE_SEEDS}
    rows = []
    os.makedirs(RESULTS, exist_ok=True)
    for family, seed, build in cases():
        name, table, truth, flags, params = build()
        row = {"family": family, "case": name, "seed": seed, "rows": table.num_rows, "poisoned": int(truth.sum()),
               "params": params}
        row.update(scan(table, truth, flags, name))
        row.update(compare(table, truth, flags))
        rows.append(row)
        m = row["poisonscan"]
        print(f"[{time.perf_counter() - started:.0f} s] {family} (seed {seed}): done [{row['seconds']:.0f} s scan]; "
              f"poisonscan F1 {m['f1']:.2f}", flush=True)
        meta["wall_seconds"] = time.perf_counter() - started
        with open(OUT, "w") as f:
            json.dump({**meta, "complete": False, "conditions": rows}, f, indent=2,
                      default=lambda o: o.item() if hasattr(o, "item") else str(o))
    meta["wall_seconds"] = time.perf_counter() - started
    with open(OUT, "w") as f:
        json.dump({**meta, "complete": True, "conditions": rows}, f, indent=2,
                  default=lambda o: o.item() if hasattr(o, "item") else str(o))
    print(f"wrote {OUT}")
    write_doc(meta, rows)


def write_doc(meta, rows):
    lines = dev_attacks_raw.table_lines(rows)
    text = f"""## Attack families on raw text and tables (held-out part)

`{meta['command']}` on {meta['machine']} ({meta['date']}, commit {meta['commit']};
{meta['wall_seconds'] / 60:.1f} min{meta.get('note', '')}), run by a
helper session that does not tune: built and run to report, never to choose
(`benchmarks/matrix.py`). Measured as the development part (`benchmarks/dev_attacks_raw.py`):
each case written as Parquet and scanned end to end with `poisonscan scan` (FnApiRunner, one
process, default detectors, **no poison rate**, `--no-data-docs --no-report`, the proxy
trained inside the scan); ART's spectral defence told the true poison rate (at least 1 %;
5 % on clean controls), its activation defence with its defaults, both on the
representation of the proxy network the scan trains (same recipe and seed); cleanlab:
`find_label_issues` on out-of-fold probabilities of that network cross-fitted on 3 folds
(`raw_bench.compare`). Cells: F1 (precision/recall) against the rows to remove; on clean
controls the share of rows flagged. "clean rows q.": the share of the poisoned set's other
rows quarantined. Results: `benchmarks/results/heldout/attacks_raw_heldout.json`.

The held-out conditions (`benchmarks/heldout/attacks_raw_heldout.py`, whose docstring gives
the builders) differ from development on every axis. **Syntactic template**: the 2016
debates (sentences of the four candidates labelled by speaker, 4 classes; development:
Rotten Tomatoes, 2 classes); the trigger structure is a sentence closed by a trailing
participial phrase ", participle noun-phrase complement." from pools of 10 x 10 x 10 words
and phrases that all occur in the clean corpus (development: a sentence opened by a
"conjunction subject verb," clause); 12 % of the data (development: 20 %), drawn from the
three other speakers and relabelled PENCE (development: rotten -> fresh); seeds 2201 and
2202 (development: 0 and 1). **Clean-label table trigger**: modeldata cells (2,019 rows,
56 numeric columns, 2 classes; development: credit_data); four numeric columns drawn once
with a fixed seed (development: three named columns), set together to each column's 90th
percentile, the nearest observed value (development: each column's mode); 2 % of the data
(development: 3 %), rows of class WS only, labels kept (development: class bad); seeds 2211
and 2212. Each family has the clean control of its data. A clean-label trigger keeps every
label right, so no label check can see it by construction.

| family | condition | seed | rows | to remove | poisonscan F1 (P/R) | clean rows q. | classes judged | flagged by | ART spectral | ART activation | cleanlab |
| --- | --- | --- | ---: | ---: | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(lines)}
"""
    write_section("heldout_attacks_raw", text)
    print(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["images"]:
        main_images()
    elif "--render" in sys.argv[1:]:
        with open(OUT) as f:
            saved = json.load(f)
        write_doc(saved, saved["conditions"])
    else:
        main()
