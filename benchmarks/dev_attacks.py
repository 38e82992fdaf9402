"""Attack families per-class separation cannot see, development part: the baseline.

    python benchmarks/dev_attacks.py              # seed 0; docs/benchmarks.md
    BENCH_SEEDS=0,1 python benchmarks/dev_attacks.py

Each family of ``attacks.py`` at its literature rate on MNIST-5k, and the clean control,
measured as ``detectors_bench.py`` measures the one-to-one backdoors: every method sees the
same representation, the penultimate layer of the small CNN trained on the poisoned data
(5 epochs); poisonscan runs its default detectors and ``shared_group`` with no poison rate; ART's spectral
defence is told the true poison rate, ART's activation defence runs with its defaults;
cleanlab gets 5-fold out-of-fold probabilities of a logistic regression on the
representation. Development data only: the held-out part of this family matrix is built
apart (``matrix.py``).
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attacks  # noqa: E402
import matrix  # noqa: E402
import poisoning  # noqa: E402
from detectors_bench import ATTACK_DETECTORS as DETECTORS  # noqa: E402
from detectors_bench import run_case  # noqa: E402

EPOCHS = 5
#: Opt-in detectors built for these families, each measured named alone on the same
#: representation (its own column; the poisonscan column is the scan above).
ALONE = ("untangling",)


def clean_share(m: dict, rows: int, poisoned: int) -> float:
    """Share of the unpoisoned rows flagged."""
    return m["flagged"] * (1 - m["precision"]) / max(rows - poisoned, 1) if m["flagged"] else 0.0


def cell(m: dict, row: dict) -> str:
    if row["kind"] == "clean":
        return f"{m['share']:.2%}"
    return f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})"


def alone_cell(m: dict, row: dict) -> str:
    """A detector named alone: as :func:`cell`, with the classes it judged on clean data
    and the share of the other rows it flagged on poisoned data."""
    if row["kind"] == "clean":
        return f"{m['share']:.2%} (classes {', '.join(map(str, m['classes_poisoned'])) or 'none'})"
    return f"{cell(m, row)}, other rows {clean_share(m, row['rows'], row['poisoned']):.2%}"


def main() -> None:
    warnings.filterwarnings("ignore")
    matrix.check_disjoint()
    seeds = [int(s) for s in os.environ.get("BENCH_SEEDS", "0").split(",")]
    rows = []
    for seed in seeds:
        for family, build in attacks.FAMILIES.items():
            row = run_case("backdoor", lambda b=build: b(seed=seed), EPOCHS, seed, DETECTORS, ALONE)
            row["family"] = family
            rows.append(row)
            print(f"seed {seed} {family}: {row['case']}: poisonscan {cell(row['poisonscan'], row)} "
                  f"(clean rows {clean_share(row['poisonscan'], row['rows'], row['poisoned']):.2%}), "
                  f"ART SS {cell(row['ART spectral'], row)}, ART AC {cell(row['ART activation'], row)}, "
                  f"cleanlab {cell(row['cleanlab'], row)} [{row['proxy_seconds'] + row['scan_seconds']:.0f} s]",
                  flush=True)
        row = run_case("clean", poisoning.clean_mnist, EPOCHS, seed, DETECTORS, ALONE)
        row["family"] = "clean control"
        rows.append(row)
        print(f"seed {seed} clean control: poisonscan {cell(row['poisonscan'], row)}, classes "
              f"{row['classes_poisoned']}", flush=True)
    text = render(rows, seeds)
    print(text)
    from common import write_section

    write_section("dev_attacks", text)


def render(rows: list, seeds: list) -> str:
    from common import machine

    short = {"spectral": "spectral", "spectre": "spectre", "activation_clustering": "act. clust.",
             "label_consistency": "label cons.", "knn_label": "kNN label", "shared_group": "shared group",
             "relative_spectral": "rel. spectral"}
    lines = [
        "## Attack families per-class separation cannot see (development part)",
        "",
        f"`python benchmarks/dev_attacks.py` on {machine()}, seeds {', '.join(map(str, seeds))}: the families of "
        "`benchmarks/attacks.py` on MNIST-5k at their literature rates (all-to-all patch 5 %, each row relabelled "
        "to the next class; SIG sinusoid on 30 % of class 0, labels kept; TaCT 1 -> 0 on 2 % with the same patch "
        "on 2 % of classes 7 and 9 as cover; WaNet warp k = 4, s = 0.5 on 10 % with twice as many noise-mode "
        "cover rows; the patch on 0.1 %, 5 images; two attacks in one set, the patch to class 0 and the blend to "
        "class 6 on 2.5 % of the data each). Every method sees the same representation: the penultimate "
        "layer of the small CNN trained on the poisoned data (5 epochs). poisonscan: default detectors and `shared_group`, no "
        "poison rate. ART's spectral defence is told the true poison rate (at least 1 %), its activation "
        "defence runs with defaults; cleanlab: out-of-fold logistic regression on the representation. Cells: "
        "F1 (precision/recall) against the rows to remove (cover rows, which keep their true label, are not "
        "among them); the clean control: share of rows flagged. `shared_group` (the cross-class view, "
        "docs/detectors.md) is the first detector built for these families and covers all-to-all; the other "
        "detector columns were there before it. `untangling` (SCAn's two identities, docs/detectors.md) runs only "
        "when named: its column is a second scan of the same representation with it alone (on clean controls: "
        "share flagged and classes judged).",
        "",
        "| family | condition | seed | poisonscan | clean rows q. | " + " | ".join(short[d] for d in DETECTORS)
        + "".join(f" | {d} (alone)" for d in ALONE) + " | ART spectral | ART activation | cleanlab |",
        "|" + " --- |" * (8 + len(DETECTORS) + len(ALONE)),
    ]
    for r in rows:
        q = "—" if r["kind"] == "clean" else f"{clean_share(r['poisonscan'], r['rows'], r['poisoned']):.2%}"
        lines.append(
            f"| {r['family']} | {r['case']} | {r['seed']} | **{cell(r['poisonscan'], r)}** | {q} | "
            + " | ".join(cell(r["detectors"][d], r) for d in DETECTORS)
            + "".join(f" | {alone_cell(r['alone'][d], r)}" for d in ALONE)
            + f" | {cell(r['ART spectral'], r)} | {cell(r['ART activation'], r)} | {cell(r['cleanlab'], r)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
