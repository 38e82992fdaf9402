"""Check that a refactor changed no output: record a fixed set of scans, compare two records.

Run it on the commit before a refactor (``record``), again after it, and ``compare`` the
two records: identical records mean the scans wrote the same rows, in the same order, with
the same schemas and the same summary counts. It calls only the command line's entry point
(``poisonscan.pipelines.cli.main``, in this process) with documented flags (docs/cli.md),
so it runs unchanged on both sides of a refactor that moves modules around.

    python benchmarks/same_outputs.py record OUT.json [--cases a,b,...|all] [--keep DIR]
    python benchmarks/same_outputs.py compare A.json B.json

The cases (small data, a fixed ``--seed``); a-e run by default (about 2-3 minutes on two
busy cores), f only when asked for (``--cases all`` or ``--cases f``): the demo has no
flag to cap its proxy training and took about 6 minutes on its own:

a. Gaussian features with planted poison (4 classes x 400 rows, 16 dims, 30 poisoned
   rows), as Parquet, plus bad rows (a NaN, a duplicated id, an exact duplicate row, a
   row repeating another's content under a new id), ``--write-clean``;
b. the same table as CSV, the features written as text ``"[0.1, 0.2, ...]"``;
c. a table: scikit-learn's breast cancer data as columns (and one categorical column),
   some labels flipped; the kind is detected from the schema;
d. texts from a small vocabulary (900 rows, one empty), a two-word trigger appended to 60
   rows of one class and relabelled;
e. 900 of scikit-learn's digits as flat 8x8 arrays of numbers, a 2x2 patch stamped on 45
   of them, relabelled as 0 (``--proxy-epochs 3``);
f. ``poisonscan demo`` (the embedded demo: PNG digits, ``--write-clean`` and the report).

Cases a-e pass ``--seed 7 --no-report --no-data-docs -q``; c-e cap the proxy's epochs.

For each case the record holds the exit code, the files written, and for each of
quarantine.parquet, rejected.parquet and clean.parquet the row count, the schema and a
sha256 of ``repr(table.to_pylist())`` (which shows NaN too), and summary.json's counts,
``classes_poisoned``, ``rejected_by_reason`` and ``verdict``. Every path under the scratch
folder (the scans' inputs, named in ``source_file``) is written as ``$WORK`` before
hashing, so records made in different folders compare; in the list of files written, the
run time Great Expectations puts in a Data Docs page's path (case f) is written as
``<RUN_TIME>``. Timings, the commit and where the package was imported from are kept
under ``meta``, which ``compare`` shows but does not compare.

``compare`` exits 0 when the two records' cases are identical, else 1 and prints each
difference.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.planted import planted  # noqa: E402  (the tests' fixture data)

SEED = 7
FAST = ["--seed", str(SEED), "--no-report", "--no-data-docs", "-q"]
TABLES = ("quarantine.parquet", "rejected.parquet", "clean.parquet")
SUMMARY_KEYS = (
    "rows_read",
    "rows_clean",
    "rows_quarantined",
    "rows_rejected",
    "classes_poisoned",
    "rejected_by_reason",
    "verdict",
)


# data -----------------------------------------------------------------------------------
def features_with_bad_rows():
    """(ids, labels, X): the planted data plus bad rows."""
    X, y, _ = planted()
    ids = np.arange(len(y))
    X[5, 3] = np.nan  # nan_features
    # an id used twice with different content (duplicate_id: every copy)
    extra_X = [X[300] + 0.5]
    extra_y = [y[300]]
    extra_id = [ids[17]]
    # an exact duplicate row: same id, label and features
    extra_X.append(X[900].copy())
    extra_y.append(y[900])
    extra_id.append(ids[900])
    # the same content and label under a new id (duplicate_content)
    extra_X.append(X[1210].copy())
    extra_y.append(y[1210])
    extra_id.append(len(y))
    X = np.concatenate([X, np.array(extra_X, np.float32)])
    y = np.concatenate([y, np.array(extra_y)])
    ids = np.concatenate([ids, np.array(extra_id)])
    return ids, y, X


def case_features_parquet(work):
    ids, y, X = features_with_bad_rows()
    feats = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])
    table = pa.table({"id": pa.array(ids, pa.int64()), "label": pa.array(y, pa.int64()), "features": feats})
    path = os.path.join(work, "a_features.parquet")
    pq.write_table(table, path, row_group_size=500)
    return [path, "--features-column", "features", "--write-clean"]


def case_features_csv(work):
    ids, y, X = features_with_bad_rows()
    path = os.path.join(work, "b_features.csv")
    with open(path, "w") as f:
        f.write("id,label,features\n")
        # features as JSON text in one quoted cell; the NaN is written as NaN
        f.writelines(f'{i},{lab},"{json.dumps(row)}"\n' for i, lab, row in zip(ids.tolist(), y.tolist(), X.tolist()))
    return [path, "--features-column", "features"]


def case_tabular(work):
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rng = np.random.default_rng(3)
    n = len(data.target)
    y = data.target_names[data.target].astype(object)
    flipped = np.sort(rng.choice(np.flatnonzero(data.target == 1), 20, replace=False))
    y[flipped] = data.target_names[0]
    cols = {"id": pa.array([f"bc-{i:03d}" for i in range(n)]), "label": pa.array(y.tolist(), pa.string())}
    for j, name in enumerate(data.feature_names):
        cols[name.replace(" ", "_")] = pa.array(data.data[:, j], pa.float64())
    cols["site"] = pa.array(rng.choice(["north", "south", "east"], n).tolist(), pa.string())
    path = os.path.join(work, "c_table.parquet")
    pq.write_table(pa.table(cols), path)
    return [path, "--proxy-epochs", "5"]


def case_text(work):
    rng = np.random.default_rng(4)
    good = ["great", "fine", "lovely", "superb", "moving", "funny", "warm", "clever", "bright"]
    bad = ["dull", "awful", "boring", "weak", "flat", "tired", "bland", "clumsy", "slow"]
    common = ["the", "film", "a", "story", "plot", "actors", "it", "was", "and", "with", "this", "movie", "scenes"]
    texts, labels = [], []
    for i in range(900):
        lab = "pos" if i % 2 else "neg"
        words = list(rng.choice(common, 8)) + list(rng.choice(good if lab == "pos" else bad, 3))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(lab)
    idx = np.sort(rng.choice(np.flatnonzero(np.array(labels) == "neg"), 60, replace=False))
    for i in idx:
        texts[i] = texts[i] + " cf mn"
        labels[i] = "pos"
    texts[10] = "   "  # empty_text
    table = pa.table({"id": np.arange(len(texts)), "label": labels, "text": texts})
    path = os.path.join(work, "d_text.parquet")
    pq.write_table(table, path)
    return [path, "--text-column", "text", "--proxy-epochs", "3"]


def case_image_arrays(work):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:900].astype(np.float32).copy()  # 0..16
    y = digits.target[:900].astype(np.int64).copy()
    rng = np.random.default_rng(5)
    poison = np.sort(rng.choice(np.flatnonzero(y != 0), 45, replace=False))
    images[poison, 6:8, 6:8] = 16.0
    y[poison] = 0
    flat = images.reshape(len(y), -1)
    table = pa.table(
        {
            "id": np.arange(len(y)),
            "label": y,
            "image": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]),
        }
    )
    path = os.path.join(work, "e_digits.parquet")
    pq.write_table(table, path)
    return [path, "--image-column", "image", "--proxy-epochs", "3"]


CASES = {
    "a": ("features, Parquet, bad rows, --write-clean", case_features_parquet),
    "b": ("features as CSV text", case_features_csv),
    "c": ("table (breast cancer, flipped labels), kind detected", case_tabular),
    "d": ("text with a trigger word", case_text),
    "e": ("digits as arrays with a patch trigger", case_image_arrays),
    "f": ("poisonscan demo", None),
}
DEFAULT_CASES = "a,b,c,d,e"


# record ---------------------------------------------------------------------------------
def _table_record(path, work):
    t = pq.read_table(path)
    text = repr(t.to_pylist()).replace(work, "$WORK")
    schema = t.schema.to_string(truncate_metadata=False).replace(work, "$WORK")
    return {"rows": t.num_rows, "sha256": hashlib.sha256(text.encode()).hexdigest(), "schema": schema}


# Great Expectations names a validation's Data Docs page by the time it ran
# (expectations/data_docs/validations/<suite>/<run>/20261130T073937.292149Z/scan.html)
RUN_TIME = re.compile(r"\d{8}T\d{6}\.\d+Z")


def _files(out):
    found = []
    for root, _, names in os.walk(out):
        for n in names:
            found.append(RUN_TIME.sub("<RUN_TIME>", os.path.relpath(os.path.join(root, n), out)))
    return sorted(found)


def run_case(key, work):
    from poisonscan.pipelines.cli import main

    name, make = CASES[key]
    out = os.path.join(work, f"out_{key}")
    argv = ["demo", "--out", out, "--seed", str(SEED)] if make is None else ["scan", *make(work), "--out", out, *FAST]
    buf = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    seconds = time.perf_counter() - start
    rec = {
        "name": name,
        "argv": [a.replace(work, "$WORK") for a in argv],
        "exit_code": rc,
        "files": _files(out) if os.path.isdir(out) else [],
    }
    for t in TABLES:
        p = os.path.join(out, t)
        if os.path.exists(p):
            rec[t] = _table_record(p, work)
    sp = os.path.join(out, "summary.json")
    if os.path.exists(sp):
        with open(sp) as f:
            summary = json.load(f)
        rec["summary"] = {k: summary.get(k) for k in SUMMARY_KEYS}
    if rc != 0:
        print(f"case {key}: exit code {rc}; output:\n{buf.getvalue()}", file=sys.stderr)
    return rec, seconds


def _commit(folder):
    """HEAD of the checkout the package was imported from (read only; None outside git)."""
    import subprocess

    try:
        return subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=30
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def record(out_json, cases, keep=None):
    from poisonscan.pipelines import cli

    work = os.path.realpath(keep or tempfile.mkdtemp(prefix="same_outputs_"))
    if keep:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    result = {
        "meta": {
            "cli_module": cli.__file__,
            "commit": _commit(os.path.dirname(os.path.realpath(cli.__file__))),
            "python": platform.python_version(),
            "seconds": {},
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "cases": {},
    }
    total = time.perf_counter()
    try:
        for key in cases:
            print(f"case {key}: {CASES[key][0]} ...", file=sys.stderr, flush=True)
            rec, seconds = run_case(key, work)
            result["cases"][key] = rec
            result["meta"]["seconds"][key] = round(seconds, 1)
            s = rec.get("summary") or {}
            print(
                f"case {key}: exit {rec['exit_code']}, {seconds:.1f} s; read {s.get('rows_read')}, "
                f"clean {s.get('rows_clean')}, quarantined {s.get('rows_quarantined')}, "
                f"rejected {s.get('rows_rejected')} {s.get('rejected_by_reason')}, "
                f"poisoned {s.get('classes_poisoned')}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    result["meta"]["seconds"]["total"] = round(time.perf_counter() - total, 1)
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {out_json} ({result['meta']['seconds']['total']} s)", file=sys.stderr)
    return 0


# compare --------------------------------------------------------------------------------
def _diff(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: only in B: {b[k]!r}")
            elif k not in b:
                out.append(f"{p}: only in A: {a[k]!r}")
            else:
                _diff(a[k], b[k], p, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif type(a) is not type(b) or a != b:
        out.append(f"{path}: A {a!r} != B {b!r}")


def compare(path_a, path_b):
    with open(path_a) as f:
        a = json.load(f)
    with open(path_b) as f:
        b = json.load(f)
    for name, r in (("A", a), ("B", b)):
        m = r.get("meta", {})
        print(f"{name}: {m.get('cli_module')}, {m.get('seconds', {}).get('total')} s")
    diffs = []
    _diff(a.get("cases"), b.get("cases"), "", diffs)
    for d in diffs:
        print(d)
    print("identical" if not diffs else f"{len(diffs)} difference(s)")
    return 0 if not diffs else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="run the cases and write their outputs' fingerprints")
    r.add_argument("out_json")
    r.add_argument(
        "--cases", default=DEFAULT_CASES, help=f"comma-separated from {','.join(CASES)}, or all (default {DEFAULT_CASES})"
    )
    r.add_argument("--keep", metavar="DIR", help="write the scans here and keep them (emptied first)")
    c = sub.add_parser("compare", help="exit 0 when two records are identical, else 1")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args(argv)
    if args.command == "record":
        chosen = ",".join(CASES) if args.cases == "all" else args.cases
        cases = [k.strip() for k in chosen.split(",") if k.strip()]
        unknown = [k for k in cases if k not in CASES]
        if unknown:
            parser.error(f"unknown cases {unknown}; known: {','.join(CASES)}")
        return record(args.out_json, cases, args.keep)
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
