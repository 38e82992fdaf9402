"""Development part: backdoors under small perceptrons' features, beside ART and cleanlab.

    python benchmarks/dev_perceptron.py            # every condition; writes docs/benchmarks.md
    python benchmarks/dev_perceptron.py clean      # the clean controls only (no doc written)
    python benchmarks/dev_perceptron.py all-to-all # the all-to-all conditions only (no doc written)

The development part's other image conditions read poisonscan's proxy CNN. A user's own
network may be a plain perceptron, so these conditions represent MNIST-5k by the last
hidden layer of small perceptrons trained here, outside the scan, on the (poisoned)
images: ReLU layers, Adam (1e-3), batches of 64, one torch thread, seeded.

* poisoned: the development triggers of ``poisoning.py`` (the 3x3 patch on 1 and 3 % of
  the data, the 20 % noise blend on 2 and 5 %, relabelled 0) under two perceptrons,
  256-128 units for 5 epochs and 512 units for 10, seeds 0 and 1 (the data's and the
  network's);
* all-to-all (``attacks.all_to_all``: the 3x3 patch on 5 % of the data, each row relabelled to
  the next class) under the same two perceptrons and seeds; its scan names ``shared_group``
  beside the default detectors, as ``dev_attacks.py`` measures that family (the detector
  built for it runs only when named);
* clean controls: clean MNIST-5k under four perceptrons (256-128 for 5 epochs, 128-64 for
  20, 512 for 10, 1024-256 for 8), seeds 0-2.

poisonscan runs in memory with its default detectors and no poison rate; ART and cleanlab
as in ``detectors_bench.py`` (ART's spectral defence told the true rate, at least 1 %; 5 %
on clean controls). The held-out part's networks (``benchmarks/heldout/``) have other
widths, epochs and seeds.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import attacks  # noqa: E402
import matrix  # noqa: E402
import poisoning  # noqa: E402
from detectors_bench import art_methods, cleanlab_method, fmt, prf, quarantined  # noqa: E402

POISONED_NETS = (((256, 128), 5), ((512,), 10))
CLEAN_NETS = (((256, 128), 5), ((128, 64), 20), ((512,), 10), ((1024, 256), 8))
SEEDS = (0, 1)
CLEAN_SEEDS = (0, 1, 2)
#: An opt-in detector measured beside the defaults: a second scan of the same features with
#: the default detectors and it (its column; the poisonscan column stays the defaults).
WITH = "graph_clustering"
#: The all-to-all condition; its poisonscan scan names ``shared_group`` with the defaults.
ALL_TO_ALL = "MNIST-5k all-to-all patch 5% (scan: defaults and shared_group)"


def perceptron_features(images: np.ndarray, labels: np.ndarray, hidden: tuple, epochs: int, seed: int) -> np.ndarray:
    """The last hidden layer of a perceptron trained on ``images`` (ReLU, Adam)."""
    import torch

    torch.set_num_threads(1)  # one thread: the same bits on every machine with this torch
    torch.manual_seed(seed)
    X = torch.tensor(images.reshape(len(images), -1), dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.int64)
    layers, d = [], X.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(d, h), torch.nn.ReLU()]
        d = h
    body = torch.nn.Sequential(*layers)
    head = torch.nn.Linear(d, int(labels.max()) + 1)
    opt = torch.optim.Adam(list(body.parameters()) + list(head.parameters()), 1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(body(X[b])), y[b]).backward()
            opt.step()
    with torch.no_grad():
        return body(X).numpy().astype(np.float64)


def cases(only: str = ""):
    for seed in SEEDS:
        for hidden, epochs in POISONED_NETS:
            for kind, fn, rate in (("patch", poisoning.patch, 0.01), ("patch", poisoning.patch, 0.03),
                                   ("blend", poisoning.blend, 0.02), ("blend", poisoning.blend, 0.05)):
                if only in ("", "poisoned"):
                    yield f"MNIST-5k {kind} {rate:.0%}", "backdoor", hidden, epochs, seed, \
                        (lambda f=fn, r=rate, s=seed: f(r, seed=s))
            if only in ("", "poisoned", "all-to-all"):
                yield ALL_TO_ALL, "backdoor", hidden, epochs, seed, (lambda s=seed: attacks.all_to_all(seed=s))
    for seed in CLEAN_SEEDS:
        for hidden, epochs in CLEAN_NETS:
            if only in ("", "clean"):
                yield "MNIST-5k clean", "clean", hidden, epochs, seed, poisoning.clean_mnist


def run(name, kind, hidden, epochs, seed, build) -> dict:
    from poisonscan import scan
    from poisonscan.detectors import default_detectors

    data = build()
    t0 = time.perf_counter()
    H = perceptron_features(data.images, data.labels, hidden, epochs, seed)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    named = (*default_detectors("features"), "shared_group") if name == ALL_TO_ALL else None
    result = scan(H, data.labels, seed=seed, **({"detectors": named} if named else {}))
    scan_s = time.perf_counter() - t0
    truth = data.poisoned
    flagged = quarantined(result, len(truth))
    ids = np.array(result.quarantine["id"].to_pylist(), dtype=np.int64)
    by = {}
    for i, ds in zip(ids, result.quarantine["detectors"].to_pylist()):
        for d in ds:
            by[d] = by.get(d, 0) + 1
    row = {
        "case": name, "kind": kind, "net": "-".join(map(str, hidden)), "epochs": epochs, "seed": seed,
        "rows": len(truth), "poisoned": int(truth.sum()), "train_seconds": train_s, "scan_seconds": scan_s,
        "poisonscan": prf(flagged, truth), "classes_poisoned": result.summary["classes_poisoned"],
        "flagged_by": by,
    }
    both = scan(H, data.labels, seed=seed, detectors=(*(named or default_detectors("features")), WITH))
    row["with"] = {**prf(quarantined(both, len(truth)), truth), "classes_poisoned": both.summary["classes_poisoned"]}
    for method, f in {**art_methods(H, data.labels, truth.mean()), **cleanlab_method(H, data.labels)}.items():
        row[method] = prf(f, truth)
    return row


def main(argv):
    warnings.filterwarnings("ignore")
    matrix.check_disjoint()
    only = argv[0] if argv else ""
    rows = []
    for name, kind, hidden, epochs, seed, build in cases(only):
        row = run(name, kind, hidden, epochs, seed, build)
        rows.append(row)
        print(f"{row['case']} | perceptron {row['net']} ({epochs} epochs) seed {seed}: poisonscan "
              f"{fmt(row['poisonscan'], kind)} classes {row['classes_poisoned'] or 'none'} by {row['flagged_by']}; "
              f"with {WITH} {fmt(row['with'], kind)} classes {row['with']['classes_poisoned'] or 'none'}; "
              f"ART SS {fmt(row['ART spectral'], kind)}, ART AC {fmt(row['ART activation'], kind)}, "
              f"cleanlab {fmt(row['cleanlab'], kind)} [{row['train_seconds']:.0f} s train, {row['scan_seconds']:.0f} s scan]",
              flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "dev_perceptron.json"), "w") as f:
        json.dump(rows, f, indent=2)
    if not only:
        write_doc(rows)


def write_doc(rows):
    from common import machine, write_section

    lines = [
        "## Development part: backdoors under small perceptrons' features",
        "",
        f"`python benchmarks/dev_perceptron.py` on {machine()}: MNIST-5k represented by the last hidden "
        "layer of small perceptrons trained here on the (poisoned) images, outside the scan (the script's "
        "docstring: ReLU, Adam, one torch thread, seeded); the development triggers relabelled 0, and the "
        "all-to-all patch (5 %, each row relabelled to the next class; its scan names `shared_group` beside the "
        "defaults, as the attack families are measured). poisonscan: default detectors, no poison rate; "
        "ART's spectral defence told the true rate (at least 1 %; 5 % on clean controls), its activation "
        "defence with defaults; cleanlab on out-of-fold logistic regression. "
        "Cells: F1 (precision/recall) of the rows each method removes; on clean controls the share of rows "
        "removed. `flagged by`: the detectors behind poisonscan's quarantined rows. "
        f"`with {WITH}`: a second scan of the same features with the default detectors and the opt-in "
        f"`{WITH}` (docs/detectors.md), its classes judged in brackets.",
        "",
        f"| condition | perceptron | seed | poisonscan | classes judged | flagged by | with {WITH} | ART spectral "
        "| ART activation | cleanlab |",
        "| --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        k = r["kind"]
        by = ", ".join(f"{d} {n}" for d, n in sorted(r["flagged_by"].items())) or "—"
        lines.append(
            f"| {r['case']} | {r['net']}, {r['epochs']} epochs | {r['seed']} | **{fmt(r['poisonscan'], k)}** | "
            f"{', '.join(map(str, r['classes_poisoned'])) or 'none'} | {by} | {fmt(r['with'], k)} "
            f"({', '.join(map(str, r['with']['classes_poisoned'])) or 'none'}) | {fmt(r['ART spectral'], k)} | "
            f"{fmt(r['ART activation'], k)} | {fmt(r['cleanlab'], k)} |"
        )
    lines.append("")
    for net in sorted({r["net"] for r in rows if r["kind"] != "clean"}):
        f1 = [r["poisonscan"]["f1"] for r in rows if r["kind"] != "clean" and r["net"] == net]
        found = sum(f >= 0.8 for f in f1)
        with_f1 = [r["with"]["f1"] for r in rows if r["kind"] != "clean" and r["net"] == net]
        lines.append(f"- perceptron {net}: poisoned conditions with F1 >= 0.80: {found} of {len(f1)}; "
                     f"lowest F1 {min(f1):.2f}; with {WITH}: {sum(f >= 0.8 for f in with_f1)} of {len(with_f1)}, "
                     f"lowest {min(with_f1):.2f}.")
    clean = [r for r in rows if r["kind"] == "clean"]
    judged = sum(bool(r["classes_poisoned"]) for r in clean)
    worst = max(r["poisonscan"]["share"] for r in clean)
    lines.append(f"- clean controls with a class judged poisoned: {judged} of {len(clean)}; largest share "
                 f"quarantined {worst:.2%}; with {WITH}: {sum(bool(r['with']['classes_poisoned']) for r in clean)} "
                 f"of {len(clean)}, largest {max(r['with']['share'] for r in clean):.2%}.")
    write_section("dev_perceptron", "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
