"""Fuzz benchmark: generated inputs through the Python API and the CLI (not in CI).

    python benchmarks/fuzz.py                  # 10,000 API inputs, 500 CLI inputs
    python benchmarks/fuzz.py --api 300 --cli 30

The generator is the property-based tests' (``tests/fuzzing.py``: every input kind, odd
values, odd labels and ids). Through the API each input must give a finished scan with
every row accounted for (and, for vectors and tables of 60 rows or more, the same lists
for the rows reversed) or a clear one-line refusal. Through the CLI (``poisonscan scan``
on the input written as Parquet, CSV or JSONL) each run must end with a documented exit
code, at most one line of error and no traceback, and either a complete output folder
whose counts add up or no output folder at all. Every failure is counted and its first
line kept; nothing stops the run. Figures go to docs/reliability.md (section ``fuzz``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, write_section  # noqa: E402

EXIT_CODES = {0, 1, 2, 3, 4, 5, 6}


def run_api(count: int, seed: int) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hyp_seed

    from tests.fuzzing import check, tables

    outcomes: Counter = Counter()
    failures: list[str] = []

    @hyp_seed(seed)
    @settings(max_examples=count, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(tables())
    def one(case):
        table, extra = case
        try:
            outcomes[check(table, extra)] += 1
        except Exception as exc:  # counted, never shrunk: the benchmark wants the rate
            outcomes["failed"] += 1
            saved = _keep_failure(table, extra, len(failures))
            failures.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]} (input: {saved})")

    started = time.perf_counter()
    one()
    return {"outcomes": dict(outcomes), "failures": failures, "seconds": time.perf_counter() - started}


def _keep_failure(table, extra: dict, n: int) -> str:
    """Save a failing input (Parquet, and its settings as JSON) to reproduce it later."""
    import pyarrow.parquet as pq

    folder = os.path.join(ROOT, "benchmarks", "results", "fuzz_failures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"api-{n:03d}.parquet")
    pq.write_table(table, path)
    with open(path[: -len(".parquet")] + ".json", "w") as f:
        json.dump(extra, f, default=str)
    return os.path.relpath(path, ROOT)


def _write(table, folder: str, fmt: str) -> str:
    import pyarrow.parquet as pq

    path = os.path.join(folder, f"in.{fmt}")
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "jsonl":
        with open(path, "w") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row, default=float) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        cols = {}
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_list(col.type):
                col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
            cols[name] = col
        pacsv.write_csv(pa.table(cols), path)
    return path


def run_cli(count: int, seed: int) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hyp_seed

    from poisonscan.pipelines.cli import main as cli_main
    from tests.fuzzing import tables

    outcomes: Counter = Counter()
    codes: Counter = Counter()
    failures: list[str] = []
    formats = ["parquet", "csv", "jsonl"]

    @hyp_seed(seed)
    @settings(max_examples=count, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(tables())
    def one(case):
        table, extra = case
        fmt = formats[sum(outcomes.values()) % len(formats)]
        folder = tempfile.mkdtemp(prefix="poisonscan-fuzz-")
        try:
            src = _write(table, folder, fmt)
            out = os.path.join(folder, "out")
            args = ["scan", src, "--out", out, "-q", "--no-data-docs", "--no-report", "--proxy-epochs", "1"]
            if "text_column" in extra:
                args += ["--text-column", extra["text_column"]]
            if "tabular_columns" in extra:
                args += ["--tabular-columns", ",".join(extra["tabular_columns"])]
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = cli_main(args)
            codes[rc] += 1
            text = err.getvalue()
            problems = []
            if rc not in EXIT_CODES:
                problems.append(f"exit code {rc}")
            if "Traceback" in text:
                problems.append("traceback: " + text.strip().splitlines()[-1][:160])
            errors = [ln for ln in text.splitlines() if ln.startswith("poisonscan: error")]
            if len(errors) > 1:
                problems.append(f"{len(errors)} error lines")
            if rc == 1 and any("[while running" in ln for ln in errors):
                # a step of the pipeline failed: a crash in one line, not a refusal
                problems.append("pipeline step failed: " + errors[0][:160])
            if rc in (0, 3, 4, 5, 6):
                with open(os.path.join(out, "summary.json")) as f:
                    s = json.load(f)
                if s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] != s["rows_read"]:
                    problems.append("rows do not add up")
                if s["rows_read"] != table.num_rows and fmt == "parquet":
                    problems.append(f"read {s['rows_read']} of {table.num_rows} rows")
            elif os.path.exists(out):
                problems.append(f"exit {rc} left an output folder")
            if problems:
                outcomes["failed"] += 1
                failures.append(f"{fmt}: " + "; ".join(problems))
            else:
                outcomes["scanned" if rc != 1 and rc != 2 else "refused"] += 1
        except Exception as exc:
            outcomes["failed"] += 1
            failures.append(f"{fmt}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]} "
                            f"({traceback.extract_tb(exc.__traceback__)[-1].name})")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    started = time.perf_counter()
    one()
    return {"outcomes": dict(outcomes), "codes": dict(codes), "failures": failures,
            "seconds": time.perf_counter() - started}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", type=int, default=10_000, help="inputs through scan_table")
    parser.add_argument("--cli", type=int, default=500, help="inputs through poisonscan scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    api = run_api(args.api, args.seed) if args.api else None
    print("api", json.dumps(api and {k: v for k, v in api.items() if k != "failures"}), flush=True)
    cli = run_cli(args.cli, args.seed + 1) if args.cli else None
    print("cli", json.dumps(cli and {k: v for k, v in cli.items() if k != "failures"}), flush=True)
    lines = [
        "## Fuzz benchmark",
        "",
        f"`python benchmarks/fuzz.py --api {args.api} --cli {args.cli} --seed {args.seed}` on {machine()}: "
        "inputs from `tests/fuzzing.py` (every input kind; NaN, infinities, huge and tiny magnitudes, "
        "constant and repeated vectors, one to five classes, integer and string labels, ids with markup, "
        "control characters and formula prefixes, empty and long texts).",
        "",
        "| path | inputs | scanned | refused with a one-line error | failures | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in (("Python API (`scan_table`)", api), ("CLI (`poisonscan scan`, Parquet/CSV/JSONL)", cli)):
        if r is None:
            continue
        o = r["outcomes"]
        total = sum(o.values())
        lines.append(f"| {name} | {total:,} | {o.get('scanned', 0):,} | {o.get('refused', 0):,} | "
                     f"{o.get('failed', 0):,} | {r['seconds']:.0f} |")
    if cli:
        lines += ["", "CLI exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(cli["codes"].items())) + "."]
    fails = (api["failures"] if api else []) + (cli["failures"] if cli else [])
    if fails:
        lines += ["", "Failures (first line of each, up to 20):", ""]
        lines += [f"- `{f}`" for f in fails[:20]]
    else:
        lines += ["", "No unhandled exception, no lost row, no order dependence found."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("fuzz", text, os.path.join(ROOT, "docs", "reliability.md"))


if __name__ == "__main__":
    main(sys.argv[1:])
