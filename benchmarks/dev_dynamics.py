"""Training dynamics of the proxy as evidence of poison: a development study (issue 18).

    python benchmarks/dev_dynamics.py              # seed 0; writes docs/benchmarks.md
    BENCH_SEEDS=0,1 python benchmarks/dev_dynamics.py

ABL (Li et al., NeurIPS 2021) and BaDLoss (ICLR 2025) rest on one premise: a network
learns poisoned rows at a different pace from clean ones. Before a detector is built on
it, this measures the premise on the development attack families (``attacks.py``, the
MNIST-5k patch and blend of ``poisoning.py``) and the clean control, with the scan's own
image proxy (``make_net("image")``: the small CNN, Adam at 1e-3, batches of 64, seeded)
snapshotted after it has seen 1,280, 2,560, 5,120 and 10,240 rows (a quarter of an
epoch to two epochs of the 5,000 rows). For each snapshot and each row: the margin of its
own label (log-probability of its label minus the largest other), and

* **AUC**: how well a low margin ranks the rows to remove above the others (0.5: no
  information; below 0.5: the poisoned rows are the *better* learned ones);
* **disputed**: the share of the rows to remove, and of the other rows, whose label
  another class makes at least 10 times more likely (the label detectors' strong
  disagreement);
* **label_consistency on the snapshot**: the label detector's calibrated verdict with the
  snapshot's probabilities as its input (``source="probabilities"``): F1 of the rows it
  flags, the share of the other rows flagged, the classes judged.

Development data only; nothing here sets a default.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attacks  # noqa: E402
import poisoning  # noqa: E402
from common import machine, write_section  # noqa: E402
from detectors_bench import prf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
#: rows seen by the proxy at each snapshot
SEEN = (1_280, 2_560, 5_120, 10_240)
BATCH = 64
#: another class this many times likelier than the label: a strong disagreement
ODDS = 10.0

CASES = {
    "one-to-one patch 2 %": lambda seed: poisoning.patch(0.02, seed=seed),
    "one-to-one blend 2 %": lambda seed: poisoning.blend(0.02, seed=seed),
    **{family: (lambda seed, b=build: b(seed=seed)) for family, build in attacks.FAMILIES.items()},
    "clean control": lambda seed: poisoning.clean_mnist(),
}


def snapshots(images: np.ndarray, labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Class probabilities of every row under the proxy after it has seen each of SEEN rows."""
    import torch
    import torch.nn as nn

    from poisonscan.pipelines.represent.proxy import make_net

    torch.manual_seed(seed)
    net = make_net("image", {"size": images.shape[1], "channels": 1, "classes": int(labels.max()) + 1})
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(np.ascontiguousarray(images[:, None], dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    rng = np.random.default_rng(seed)
    out, seen = [], 0
    while seen < SEEN[-1]:
        order = torch.from_numpy(rng.permutation(len(labels)))
        for start in range(0, len(labels), BATCH):
            idx = order[start : start + BATCH]
            net.train()
            opt.zero_grad()
            loss_fn(net.head(net.features({"x": x[idx]})), y[idx]).backward()
            opt.step()
            before, seen = seen, seen + len(idx)
            if any(before < s <= seen for s in SEEN):
                net.eval()
                with torch.no_grad():
                    out.append(torch.softmax(net.head(net.features({"x": x})), 1).numpy().astype(np.float32))
            if seen >= SEEN[-1]:
                break
    return out


def margin(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    L = np.log(np.clip(P, 1e-30, 1.0))
    own = L[np.arange(len(y)), y]
    L = L.copy()
    L[np.arange(len(y)), y] = -np.inf
    return own - L.max(1)


def label_consistency(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list]:
    """Rows flagged and classes judged by ``label_consistency`` reading ``P``."""
    from poisonscan.detectors import GroupTest, LabelConsistency
    from poisonscan.detectors.stats import ClassSample

    det = LabelConsistency(source="probabilities", probability_labels=tuple(range(P.shape[1])))
    samples = {int(c): ClassSample(P[y == c], np.flatnonzero(y == c).astype(np.int64), np.flatnonzero(y == c))
               for c in np.unique(y)}
    state = det.extract_output({}, samples)
    flags, judged = np.zeros(len(y), bool), []
    for c in np.unique(y):
        m = y == c
        v = det.judge(state, int(c), int(m.sum()), GroupTest())
        judged += [int(c)] if v.poisoned else []
        flags[m] = v.flags(det.statistic(state, P[m], y[m]))
    return flags, judged


def run_case(name: str, build, seed: int) -> dict:
    from sklearn.metrics import roc_auc_score

    data = build(seed)
    t0 = time.perf_counter()
    snaps = snapshots(data.images, data.labels, seed)
    truth = data.poisoned
    row = {"case": name, "data": data.name, "seed": seed, "poisoned": int(truth.sum()), "rows": len(truth),
           "snapshots": []}
    for seen, P in zip(SEEN, snaps):
        m = margin(P, data.labels)
        strong = m < -np.log(ODDS)
        flags, judged = label_consistency(P, data.labels)
        row["snapshots"].append({
            "seen": seen,
            "auc": float(roc_auc_score(truth, -m)) if truth.any() else None,
            "disputed_poison": float(strong[truth].mean()) if truth.any() else None,
            "disputed_other": float(strong[~truth].mean()),
            "f1": prf(flags, truth)["f1"] if truth.any() else None,
            "flagged_other": float((flags & ~truth).sum() / (~truth).sum()),
            "judged": judged,
        })
    row["seconds"] = time.perf_counter() - t0
    return row


def cell(s: dict) -> str:
    if s["auc"] is None:
        return (f"disputed {s['disputed_other']:.1%}; LC flags {s['flagged_other']:.2%}, "
                f"classes {','.join(map(str, s['judged'])) or 'none'}")
    return (f"AUC {s['auc']:.2f}; disputed {s['disputed_poison']:.0%} / {s['disputed_other']:.1%}; "
            f"LC F1 {s['f1']:.2f}, other rows {s['flagged_other']:.2%}")


def render(rows: list, seeds: list) -> str:
    head = "| family | seed | " + " | ".join(f"after {s:,} rows" for s in SEEN) + " |"
    lines = [
        "## Training dynamics of the proxy (development study)",
        "",
        f"`python benchmarks/dev_dynamics.py` on {machine()}, seeds {', '.join(map(str, seeds))}: the scan's image proxy "
        "trained on each development attack family of MNIST-5k (and the one-to-one patch and blend at 2 %), "
        "snapshotted after it has seen the rows named in the columns (5,000 rows: a quarter of an epoch to two "
        "epochs). Cells: AUC of a low own-label margin for the rows to remove (0.5: no information); the share "
        "of those rows, and of the other rows, whose label another class makes 10 times likelier; "
        "`label_consistency` reading the snapshot's probabilities: F1 and the share of the other rows flagged "
        "(on the clean control: the share flagged and the classes judged). A study of the premise of ABL "
        "and BaDLoss; no detector reads these snapshots yet.",
        "",
        head,
        "| --- | --- | " + " | ".join("---" for _ in SEEN) + " |",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['seed']} | " + " | ".join(cell(s) for s in r["snapshots"]) + " |")
    return "\n".join(lines)


def main() -> None:
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    seeds = [int(s) for s in os.environ.get("BENCH_SEEDS", "0").split(",")]
    rows = []
    for seed in seeds:
        for name, build in CASES.items():
            row = run_case(name, build, seed)
            rows.append(row)
            print(f"seed {seed} {name} [{row['seconds']:.0f} s]: "
                  + " | ".join(cell(s) for s in row["snapshots"]), flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "dev_dynamics.json"), "w") as f:
        json.dump(rows, f, indent=1)
    write_section("dev_dynamics", render(rows, seeds))


if __name__ == "__main__":
    main()
