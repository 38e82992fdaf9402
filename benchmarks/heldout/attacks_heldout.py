"""Attack families per-class separation is built not to see: the held-out part.

    python benchmarks/heldout/attacks_heldout.py

Built and run to report, never to choose (``benchmarks/matrix.py``): the families of the
development part (``benchmarks/attacks.py``, ``dev_attacks.py``) again, each with a
trigger, rate, target class and representation of its own, and one family the development
part does not have (two attacks in one data set). Data: MNIST-5k. Representations: the
penultimate layers of held-out networks (``heldout/nets.py``: the MLP and the narrow CNN),
each trained once on each data set, poisoned or clean, with its own seed.

Every method sees the same representation, as in ``dev_attacks.py``: poisonscan runs its
default detectors and ``shared_group`` with no poison rate (``poisonscan.scan``); ART's spectral defence is told
the true poison rate (at least 1 %), its activation defence runs with defaults; cleanlab
reads 5-fold out-of-fold probabilities of a logistic regression on the representation
(``detectors_bench.art_methods``, ``cleanlab_method``). Scores: F1 (precision/recall)
against the rows to remove (the relabelled rows; for SIG the stamped target-class rows).
Cover rows (TaCT's, WaNet's noise mode) keep their true label and are not among them.
Each representation has one clean control (the same network recipe on clean MNIST-5k).

One more column, "untangling (alone)": a second poisonscan scan of the same representation
with the same seed and only the opt-in detector ``untangling`` named
(``detectors=("untangling",)``), scored as the poisonscan column is.

Only aggregate figures are printed and saved (``benchmarks/results/heldout/attacks_heldout.json``);
nothing is written to docs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)

import matrix  # noqa: E402
from attacks import rows_mask, sinusoid, warp, warp_field  # noqa: E402
from detectors_bench import ATTACK_DETECTORS, art_methods, cleanlab_method, prf, quarantined  # noqa: E402
from heldout import data, nets  # noqa: E402
from heldout.conditions import backdoor, blend, checker, coarse_checker, hollow, plus, solid  # noqa: E402

RESULTS = os.path.join(BENCH, "results", "heldout")
OUT = os.path.join(RESULTS, "attacks_heldout.json")

#: Held-out representations (keys of ``nets.NETWORKS``); not the development proxy.
MLP = "MLP 512-256, 8 epochs, seed 1001"
NARROW = "narrow CNN (base 16), 6 epochs, seed 1002"
REPRESENTATIONS = (NARROW, MLP)
SHORT = {MLP: "MLP", NARROW: "narrow CNN"}

#: The seed of poisonscan's random choices in every scan here (development uses 0-1).
SCAN_SEED = 2100


@dataclass
class Attack:
    family: str
    name: str
    images: np.ndarray
    labels: np.ndarray
    poisoned: np.ndarray  # rows to remove
    cover: np.ndarray  # triggered rows that keep their true label (not to remove)
    params: dict = field(default_factory=dict)


# builders ---------------------------------------------------------------------------------
def all_to_all(rate: float = 0.08, shift: int = 3, seed: int = 2101) -> Attack:
    """A 4x4 checkerboard in the top-left corner on ``rate`` of the rows, drawn from every
    class alike, each relabelled ``(y + shift) mod K``."""
    images, labels = data.mnist()
    k = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(labels), int(round(rate * len(labels))), replace=False))
    x, y = images.copy(), labels.copy()
    x[idx] = checker(1, 1, 4)(x[idx])
    y[idx] = (labels[idx] + shift) % k
    n = len(y)
    return Attack("all-to-all", f"4x4 checkerboard top-left {rate:.0%}, y -> (y + {shift}) mod {k}", x, y,
                  rows_mask(n, idx), np.zeros(n, bool),
                  {"trigger": "4x4 checkerboard, top-left (rows/cols 1-4)", "rate": rate,
                   "mapping": f"(y + {shift}) mod {k}", "seed": seed})


def sig(fraction: float = 0.4, target: int = 6, delta: float = 30 / 255, frequency: int = 4,
        seed: int = 2102) -> Attack:
    """A vertical sinusoid (varying down the rows) ``x + delta sin(2 pi i f / m)`` added to
    ``fraction`` of the target class's images; labels kept (clean label)."""
    images, labels = data.mnist()
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(labels == target)
    idx = np.sort(rng.choice(members, int(round(fraction * len(members))), replace=False))
    x = images.copy()
    x[idx] = sinusoid(x[idx], delta, frequency, axis=1)
    n = len(labels)
    return Attack("clean-label (SIG)",
                  f"vertical sinusoid f = {frequency}, delta {round(delta * 255)}/255, {fraction:.0%} of class {target}",
                  x, labels.copy(), rows_mask(n, idx), np.zeros(n, bool),
                  {"trigger": f"vertical sinusoid, frequency {frequency}, delta {round(delta * 255)}/255",
                   "target": target, "fraction_of_target": fraction, "rate": len(idx) / n, "seed": seed})


def tact(rate: float = 0.012, cover_rate: float = 0.015, source: int = 3, target: int = 8,
         cover: tuple = (2, 5), seed: int = 2103) -> Attack:
    """A 4x4 hollow square (top-right) on ``rate`` of the data, all from ``source``,
    relabelled ``target``; the same square on ``cover_rate`` of the data from the
    ``cover`` classes, labels kept."""
    images, labels = data.mnist()
    rng = np.random.default_rng(seed)
    n = len(labels)
    stamp = hollow(1, 23, 4)
    idx = np.sort(rng.choice(np.flatnonzero(labels == source), int(round(rate * n)), replace=False))
    covered = np.sort(rng.choice(np.flatnonzero(np.isin(labels, cover)), int(round(cover_rate * n)), replace=False))
    x, y = images.copy(), labels.copy()
    x[idx] = stamp(x[idx])
    x[covered] = stamp(x[covered])
    y[idx] = target
    return Attack("source-specific (TaCT)",
                  f"hollow square {source} -> {target} {rate:.1%}, cover {cover_rate:.1%} of {cover[0]}, {cover[1]}",
                  x, y, rows_mask(n, idx), rows_mask(n, covered),
                  {"trigger": "4x4 hollow square, top-right (rows 1-4, cols 23-26)", "source": source,
                   "target": target, "cover_classes": list(cover), "rate": rate, "cover_rate": cover_rate,
                   "seed": seed})


def wanet(rate: float = 0.06, cover_ratio: float = 2.0, target: int = 4, k: int = 6, s: float = 0.75,
          field_seed: int = 20250, seed: int = 2104) -> Attack:
    """Warped images of other classes (``rate`` of the data) relabelled ``target``;
    noise-mode cover rows (``cover_ratio`` times as many; the warp plus uniform noise in
    [-1, 1] pixels on the flow) keep their labels."""
    images, labels = data.mnist()
    rng = np.random.default_rng(seed)
    n, size = len(labels), images.shape[1]
    flow = warp_field(size, k, s, np.random.default_rng(field_seed))
    n_poison, n_cover = int(round(rate * n)), int(round(cover_ratio * rate * n))
    chosen = rng.choice(np.flatnonzero(labels != target), n_poison + n_cover, replace=False)
    idx, covered = np.sort(chosen[:n_poison]), np.sort(chosen[n_poison:])
    x, y = images.copy(), labels.copy()
    x[idx] = warp(x[idx], flow)
    for i in covered:
        x[i] = warp(x[i : i + 1], flow + rng.uniform(-1, 1, size=flow.shape))[0]
    y[idx] = target
    return Attack("warping (WaNet)", f"warp k = {k}, s = {s:g} -> {target} {rate:.0%}, noise cover x{cover_ratio:g}",
                  x, y, rows_mask(n, idx), rows_mask(n, covered),
                  {"trigger": f"warp field k = {k}, s = {s:g} pixels (field seed {field_seed})", "target": target,
                   "rate": rate, "cover": f"noise mode x{cover_ratio:g}", "cover_rate": n_cover / n, "seed": seed})


def low_rate(rate: float = 0.002, target: int = 9, seed: int = 2105) -> Attack:
    """A 5x5 plus sign (bottom-left) on ``rate`` of the data (10 images of MNIST-5k),
    rows of other classes relabelled ``target``."""
    images, labels = data.mnist()
    n = len(labels)
    x, y, mask, _ = backdoor(images, labels, [(target, rate, plus(22, 5))], seed)
    return Attack("very low rate", f"plus sign bottom-left -> {target} {rate:.1%} ({int(mask.sum())} images)",
                  x, y, mask, np.zeros(n, bool),
                  {"trigger": "5x5 plus sign, bottom-left (centre row 22, col 5)", "target": target, "rate": rate,
                   "images": int(mask.sum()), "seed": seed})


def two_attacks(rate: float = 0.025, seed: int = 2106) -> Attack:
    """Two backdoors in one data set, never on the same row: a 3x3 white square mid-left
    relabelled 1, and a 15 % blend of a 4-pixel checkerboard relabelled 7, each on
    ``rate`` of the data."""
    images, labels = data.mnist()
    n = len(labels)
    plan = [(1, rate, solid(12, 1, 3)), (7, rate, blend(coarse_checker(), 0.15))]
    x, y, mask, per_target = backdoor(images, labels, plan, seed)
    return Attack("two attacks", f"square mid-left -> 1 + checker blend -> 7, {rate:.1%} each", x, y, mask,
                  np.zeros(n, bool),
                  {"trigger": "3x3 white square mid-left (rows 12-14, cols 1-3) -> 1; "
                              "15 % blend of a 4-pixel checkerboard -> 7",
                   "targets": [1, 7], "rate_each": rate, "per_target": {str(t): c for t, c in per_target.items()},
                   "seed": seed})


FAMILIES = (all_to_all, sig, tact, wanet, low_rate, two_attacks)


def check_contract() -> None:
    """The held-out conditions must not reuse development values (``matrix.py``)."""
    matrix.check_disjoint()
    dev_rates = set(matrix.DEVELOPMENT["rate"])
    for label in ("8 %", "40 % of the target class", "1.2 % + 1.5 % cover", "6 % + 12 % cover", "0.2 %", "2.5 %"):
        if label in dev_rates:
            raise SystemExit(f"held-out rate {label!r} is a development rate")
    for rep in REPRESENTATIONS:
        if "proxy" in rep or rep not in nets.NETWORKS:
            raise SystemExit(f"{rep!r} is not a held-out network")


# measuring --------------------------------------------------------------------------------
def measure(H: np.ndarray, labels: np.ndarray, truth: np.ndarray, cover: np.ndarray) -> dict:
    from poisonscan import scan

    started = time.perf_counter()
    result = scan(H, labels, seed=SCAN_SEED, detectors=ATTACK_DETECTORS)
    scan_s = time.perf_counter() - started
    flag = quarantined(result, len(labels))
    clean = ~truth
    out = {
        "poisonscan": prf(flag, truth),
        "poisonscan_clean_rows_share": float((flag & clean).sum() / max(clean.sum(), 1)),
        "poisonscan_cover_rows_share": float((flag & cover).sum() / cover.sum()) if cover.any() else None,
        "classes_poisoned": [str(c) for c in result.summary["classes_poisoned"]],
        "scan_seconds": scan_s,
    }
    started = time.perf_counter()
    alone = scan(H, labels, seed=SCAN_SEED, detectors=("untangling",))
    f = quarantined(alone, len(labels))
    out["untangling"] = prf(f, truth)
    out["untangling"]["clean_rows_share"] = float((f & clean).sum() / max(clean.sum(), 1))
    out["untangling_classes_poisoned"] = [str(c) for c in alone.summary["classes_poisoned"]]
    out["untangling_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    others = {**art_methods(H, labels, float(truth.mean())), **cleanlab_method(H, labels)}
    for name, f in others.items():
        f = np.asarray(f, dtype=bool)
        out[name] = prf(f, truth)
        out[name]["clean_rows_share"] = float((f & clean).sum() / max(clean.sum(), 1))
    out["baseline_seconds"] = time.perf_counter() - started
    return out


def fscore(m: dict) -> str:
    return f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"


def run_one(rep: str, build) -> dict:
    attack = build()
    H, info = nets.trained_features(rep, attack.images, attack.labels)
    row = {
        "family": attack.family,
        "condition": attack.name,
        "representation": SHORT[rep],
        "network": rep,
        "rows": int(len(attack.labels)),
        "poisoned": int(attack.poisoned.sum()),
        "cover": int(attack.cover.sum()),
        "params": attack.params,
        "train_accuracy": info["train_accuracy"],
        "train_seconds": info["seconds"],
    }
    row.update(measure(H, attack.labels, attack.poisoned, attack.cover))
    return row


def run_control(rep: str) -> dict:
    images, labels = data.mnist()
    H, info = nets.trained_features(rep, images, labels)
    n = len(labels)
    row = {"representation": SHORT[rep], "network": rep, "rows": n, "train_accuracy": info["train_accuracy"],
           "train_seconds": info["seconds"]}
    row.update(measure(H, labels, np.zeros(n, bool), np.zeros(n, bool)))
    return row


def render(rows: list, controls: list) -> str:
    lines = [
        "| family | condition | representation | rows | poisoned | poisonscan F1 (P/R) | clean rows q. "
        "| untangling (alone) F1 (P/R) | clean rows q. | ART spectral | ART activation | cleanlab |",
        "|" + " --- |" * 12,
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['condition']} | {r['representation']} | — | — | error: {r['error']} "
                         "| — | — | — | — | — | — |")
            continue
        lines.append(
            f"| {r['family']} | {r['condition']} | {r['representation']} | {r['rows']} | {r['poisoned']} | "
            f"**{fscore(r['poisonscan'])}** | {r['poisonscan_clean_rows_share']:.2%} | {fscore(r['untangling'])} | "
            f"{r['untangling']['clean_rows_share']:.2%} | {fscore(r['ART spectral'])} | "
            f"{fscore(r['ART activation'])} | {fscore(r['cleanlab'])} |"
        )
    lines += [
        "",
        "Clean controls (MNIST-5k, no poison; ART spectral told 5 %):",
        "",
        "| representation | rows | poisonscan share quarantined | classes judged poisoned "
        "| untangling (alone) share quarantined | classes judged poisoned | ART spectral | ART activation | cleanlab |",
        "|" + " --- |" * 9,
    ]
    for c in controls:
        if "error" in c:
            lines.append(f"| {c['representation']} | — | error: {c['error']} | — | — | — | — | — | — |")
            continue
        classes = ", ".join(c["classes_poisoned"]) or "none"
        alone = ", ".join(c["untangling_classes_poisoned"]) or "none"
        lines.append(
            f"| {c['representation']} | {c['rows']} | {c['poisonscan']['share']:.2%} | {classes} | "
            f"{c['untangling']['share']:.2%} | {alone} | "
            f"{c['ART spectral']['share']:.2%} | {c['ART activation']['share']:.2%} | {c['cleanlab']['share']:.2%} |"
        )
    covers = [r for r in rows if "error" not in r and r.get("poisonscan_cover_rows_share") is not None]
    if covers:
        lines += ["", "Cover rows (trigger, true label kept) quarantined by poisonscan: " + "; ".join(
            f"{r['family']} / {r['representation']}: {r['poisonscan_cover_rows_share']:.2%} of {r['cover']}"
            for r in covers) + "."]
    return "\n".join(lines)


def main() -> None:
    warnings.filterwarnings("ignore")
    check_contract()
    started = time.perf_counter()
    rows, controls = [], []
    for rep in REPRESENTATIONS:
        try:
            c = run_control(rep)
            print(f"[{time.perf_counter() - started:.0f} s] clean control / {SHORT[rep]}: poisonscan "
                  f"{c['poisonscan']['share']:.2%} quarantined, classes {c['classes_poisoned']}", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            traceback.print_exc()
            c = {"representation": SHORT[rep], "network": rep, "error": f"{type(e).__name__}: {e}"[:200]}
        controls.append(c)
    for build in FAMILIES:
        for rep in REPRESENTATIONS:
            try:
                r = run_one(rep, build)
                print(f"[{time.perf_counter() - started:.0f} s] {r['family']} / {r['representation']}: poisonscan "
                      f"{fscore(r['poisonscan'])}, clean rows {r['poisonscan_clean_rows_share']:.2%}", flush=True)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                r = {"family": build.__name__, "condition": build.__name__, "representation": SHORT[rep],
                     "error": f"{type(e).__name__}: {e}"[:200]}
            rows.append(r)
    wall = time.perf_counter() - started
    text = render(rows, controls)
    print()
    print(text)
    print(f"\nwall time {wall / 60:.1f} min")
    os.makedirs(RESULTS, exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"scan_seed": SCAN_SEED, "wall_seconds": wall, "conditions": rows, "clean_controls": controls},
                  f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
