"""What holding torch to one thread costs, and what it buys: raw inputs scanned end to end
with ``--proxy-threads 1`` (the default) and ``--proxy-threads 2``.

    python benchmarks/proxy_threads.py          # writes docs/benchmarks.md (section proxy_threads)
    python benchmarks/proxy_threads.py scale    # also scale.py's 50,000 raw images

Cases (the builders of ``raw_bench.py``): raw MNIST-5k with a patch on 3 % of the rows,
raw Rotten Tomatoes with the trigger phrase on 3 %, and the credit table with its targeted
flip; with ``scale``, also ``scale.py``'s 50,000 raw images (the digits moved and noised,
2 % stamped). Each is scanned four times in turn (2, 1, 2, 1 threads), in one run, so the
ratios compare scans made on the same machine at the same time. For each count: the median wall
time of the scan and of the proxy's training, and whether the two scans at that count gave
the same quarantine (they must: the same input and seed); across the counts, whether the
quarantines are the same (they need not be: the networks differ in their last bits).
"""

from __future__ import annotations

import json
import os
import statistics
import sys

import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import raw_bench  # noqa: E402
import scale  # noqa: E402
from common import BIN, machine, run_measured, write_section  # noqa: E402

WORK = os.path.join(raw_bench.WORK, "threads")
ORDER = (2, 1, 2, 1)


def cases(at_scale: bool):
    """(name, Parquet path, rows, scan flags) of each case, written under WORK."""
    built = (raw_bench.mnist_case("patch", 0.03), raw_bench.text_case(0.03), raw_bench.table_case(True))
    for i, (name, table, _truth, flags) in enumerate(built):
        src = os.path.join(WORK, f"case{i}.parquet")
        pq.write_table(table, src)
        yield name, src, table.num_rows, flags
    if at_scale:
        path = os.path.join(scale.DATA_DIR, "scale_images.parquet")
        if not os.path.exists(path + ".truth.npy"):
            os.makedirs(scale.DATA_DIR, exist_ok=True)
            scale.images(path)
        yield "scale.py's raw images", path, scale.IMAGES, ["--image-column", "image"]


def scan(src: str, flags: list, threads: int, out: str) -> dict:
    run = run_measured([os.path.join(BIN, "poisonscan"), "scan", src, "--out", out, "-q", "--no-data-docs",
                        "--no-report", "--proxy-threads", str(threads), *flags])
    if run.returncode != 0:
        raise SystemExit(f"scan of {src} at {threads} threads failed:\n{run.stderr}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    ids = sorted(map(str, pq.read_table(os.path.join(out, "quarantine.parquet"))["id"].to_pylist()))
    return {"seconds": run.seconds, "proxy_seconds": summary["settings"]["representation"]["seconds"], "ids": ids}


def main(argv: list) -> None:
    os.makedirs(WORK, exist_ok=True)
    lines = [
        "| case | rows | scan s, 1 thread | scan s, 2 threads | ratio | proxy s, 1 thread | proxy s, 2 threads | ratio "
        "| same list at each count | same list across counts (quarantined at 1 / 2) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, src, rows, flags in cases(argv[:1] == ["scale"]):
        runs: dict = {1: [], 2: []}
        for i, threads in enumerate(ORDER):
            runs[threads].append(scan(src, flags, threads, os.path.join(WORK, f"scan{i}")))
        wall = {t: statistics.median(r["seconds"] for r in runs[t]) for t in runs}
        proxy = {t: statistics.median(r["proxy_seconds"] for r in runs[t]) for t in runs}
        repeat = all(r[0]["ids"] == r[1]["ids"] for r in runs.values())
        across = runs[1][0]["ids"] == runs[2][0]["ids"]
        row = (f"| {name} | {rows:,} | {wall[1]:.1f} | {wall[2]:.1f} | {wall[1] / wall[2]:.2f} | "
               f"{proxy[1]:.1f} | {proxy[2]:.1f} | {proxy[1] / proxy[2]:.2f} | {'yes' if repeat else '**no**'} | "
               f"{'yes' if across else 'no'} ({len(runs[1][0]['ids'])} / {len(runs[2][0]['ids'])}) |")
        print(row, flush=True)
        lines.append(row)
    text = "\n".join([
        "## The proxy at one thread and at two",
        "",
        f"`python benchmarks/proxy_threads.py{' scale' if argv[:1] == ['scale'] else ''}` on {machine()}. Each case scanned end to end "
        "(Beam, FnApiRunner, no poison rate) four times in turn, at 2, 1, 2 and 1 torch threads "
        "(`--proxy-threads`); medians of two scans. \"proxy s\" is the proxy's training, inside the scan.",
        "",
        *lines,
    ])
    write_section("proxy_threads", text)


if __name__ == "__main__":
    main(sys.argv[1:])
