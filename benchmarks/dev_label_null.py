"""Do the label detectors keep their stated false-alarm rate when the labels are clean by
construction? (development part)

    python benchmarks/dev_label_null.py               # 10 seeds per set; docs/benchmarks.md
    BENCH_SEEDS=3 python benchmarks/dev_label_null.py HMDA
    BENCH_GENERATOR=trees BENCH_SEEDS=5 python benchmarks/dev_label_null.py   # its own section
    BENCH_GENERATOR=cells BENCH_SEEDS=20 python benchmarks/dev_label_null.py  # a synthetic table

For each development table of the clean-data benchmark (``matrix.CLEAN_REAL``), a
multinomial logistic regression of its own label on its encoded columns (poisonscan's
tabular encoder, standardised, C = 1) gives every row a probability per class; each seed
draws every row's label from those probabilities. Such labels hold no flip: they follow a
smooth model of the columns, the same family as ``label_consistency``'s own model, with
the natural noise of the real label (a table whose label a model predicts poorly gets
as much noise). With ``BENCH_GENERATOR=trees`` the probabilities are instead 5-fold
out-of-fold probabilities of gradient-boosted trees (scikit-learn's histogram boosting,
defaults) on the encoded columns: labels that depend on the columns jointly (as survival
depends on sex and class together), which no linear model of the columns holds, so the
linear model is misspecified, as it is on such real tables. With ``BENCH_GENERATOR=cells``
the table itself is synthetic (:func:`cells_table`): columns that take few values, so
that rows repeat and neighbours tie, and a label decided by two columns together. The
table is then scanned with the label detectors only (``scan_table(..., detectors=("label_consistency",
"knn_label"))``, default settings).

Every class judged poisoned is a false alarm. Each label detector states a family-wise
error: with clean labels, the probability that it judges any class poisoned is at most
``alpha`` (0.05); a class counts only when both judge it. Reported per set: scans with a
class judged, the rows quarantined, and per detector the scans in which it found some
class beyond its level (on its own).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import clean_real  # noqa: E402
import matrix  # noqa: E402
from common import write_section  # noqa: E402

DETECTORS = ("label_consistency", "knn_label")
# "logistic" (the label detectors' own model family) or "trees": out-of-fold probabilities
# of gradient-boosted trees, a model with interactions that no linear model of the
# columns holds
# "cells": a synthetic table of few distinct rows (sex, passenger class, whole years of
# age), its label drawn from a model with a sex x class interaction
GENERATOR = os.environ.get("BENCH_GENERATOR", "logistic")


def cells_table(n: int = 1000, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """A table whose columns take few values (2 x 3 x whole years: about 300 distinct
    rows in 1,000) and the probability of each row's label: survival decided by sex and
    class together (women of the first two classes mostly survive, of the third half;
    men of the first class a third, of the others one in seven), less with age, more
    for children. Synthetic: development data by construction."""
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, n)
    pclass = rng.choice([1, 2, 3], n, p=[0.25, 0.2, 0.55])
    age = np.clip(np.round(rng.gamma(4, 7.5, n)), 1, 80)
    women = np.array([0, 3.0, 2.0, 0.0])[pclass]
    men = np.array([0, -0.5, -1.8, -1.9])[pclass]
    logit = np.where(sex == 1, women, men) - 0.02 * (age - 30) + np.where(age < 10, 1.5, 0)
    p = 1 / (1 + np.exp(-logit))
    table = pa.table({"sex": np.where(sex == 1, "female", "male"), "pclass": [f"class {c}" for c in pclass],
                      "age": age})
    return table, np.column_stack([1 - p, p])


def generator(table: pa.Table, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class names, per-row class probabilities) of a logistic model of the label."""
    from sklearn.linear_model import LogisticRegression

    from poisonscan.pipelines.represent.encoders import TabularEncoder

    enc = TabularEncoder.fit(table, table.schema.names)
    X = enc.encode(table.combine_chunks().to_batches()[0]).inputs["x"].astype(np.float64)
    names = np.array(sorted(set(y.tolist())))
    codes = np.searchsorted(names, y)
    if GENERATOR == "trees":
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.model_selection import cross_val_predict

        model = HistGradientBoostingClassifier(max_iter=100, random_state=0)
        return names, cross_val_predict(model, X, codes, cv=5, method="predict_proba")
    Z = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(Z, codes)
    return names, model.predict_proba(Z)


def draw(names: np.ndarray, P: np.ndarray, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(len(P))
    return names[np.minimum((P.cumsum(1) < u[:, None]).sum(1), len(names) - 1)]


def scan_once(table: pa.Table, y: np.ndarray, seed: int) -> dict:
    from poisonscan import scan_table

    t = table.append_column("id", pa.array(np.arange(len(y)))).append_column("label", pa.array(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = scan_table(t, tabular_columns=list(table.column_names), detectors=DETECTORS, seed=seed,
                       data_docs=False, report=False)
    beyond = {d: False for d in DETECTORS}
    for c in r.summary["classes"]:
        for name, v in (c.get("verdicts") or {}).items():
            if v.get("p_value") is not None and v["p_value"] < v["level"]:
                beyond[name] = True
    return {"judged": [str(c) for c in r.summary["classes_poisoned"]], "quarantined": r.summary["rows_quarantined"],
            "beyond": beyond}


def main(argv: list[str]) -> None:
    matrix.check_disjoint()
    seeds = int(os.environ.get("BENCH_SEEDS", "10"))
    if GENERATOR == "cells":
        names = ["cells (synthetic)"]
    else:
        names = argv or [n for n in matrix.CLEAN_REAL["development"] if clean_real.SETS[n][0] == "tabular"]
    results = {}
    for name in names:
        if GENERATOR == "cells":
            table, P = cells_table()
            classes = np.array(["died", "survived"])
            accuracy = float(np.mean(P.max(1)))  # the model's expected accuracy on its own labels
        else:
            table, y = clean_real.SETS[name][1]()
            classes, P = generator(table, y)
            accuracy = float((classes[P.argmax(1)] == y).mean())
        runs = []
        start = time.perf_counter()
        for seed in range(seeds):
            runs.append(scan_once(table, draw(classes, P, seed), seed))
            r = runs[-1]
            print(f"{name} seed {seed}: judged {r['judged']} quarantined {r['quarantined']} beyond {r['beyond']}",
                  flush=True)
        results[name] = {"rows": table.num_rows, "classes": len(classes), "accuracy": accuracy, "runs": runs,
                         "seconds": time.perf_counter() - start}
    text = render(results, seeds)
    print(text)
    if not argv or GENERATOR == "cells":
        write_section("dev_label_null" if GENERATOR == "logistic" else f"dev_label_null_{GENERATOR}", text)


def render(results: dict, seeds: int) -> str:
    source = ("a logistic model of its own encoded columns (C = 1; no flip, the natural noise of the real label)"
              if GENERATOR == "logistic" else
              "its model (`cells_table`: 1,000 rows of sex, passenger class and age in whole years, about 300 "
              "distinct rows; survival decided by sex and class together, less with age, more for children): "
              "a table of few distinct rows whose label no linear model of the columns holds"
              if GENERATOR == "cells" else
              "5-fold out-of-fold probabilities of gradient-boosted trees on its encoded columns (scikit-learn's "
              "histogram boosting, defaults; no flip, but the label depends on columns jointly, which no linear "
              "model of the columns holds; `label_consistency` then takes as its null the mixture of its linear, "
              "quadratic and regularised trees models where a richer one fits the labels better, `knn_label` "
              "reads neighbours)")
    lines = [
        "## Label detectors on labels clean by construction (development part)"
        + {"logistic": "", "trees": ", drawn from trees", "cells": ", a synthetic table of few distinct rows"}[GENERATOR],
        "",
        f"`{'' if GENERATOR == 'logistic' else 'BENCH_GENERATOR=' + GENERATOR + ' '}benchmarks/dev_label_null.py`, "
        f"{seeds} seeds per set: each " + ("table's label drawn from " if GENERATOR == "cells" else "development table's label redrawn from ") + f"{source}, "
        "scanned with the two label detectors, default settings. Every class judged poisoned is a false alarm; "
        "each detector states that with clean labels it judges any class with probability at most 0.05, and a "
        "class counts only when both judge it.",
        "",
        "| set | rows | classes | generator's accuracy on the real label | scans with a class judged | rows quarantined (mean) | label_consistency beyond its level | knn_label beyond its level |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    total = judged_total = 0
    for name, r in results.items():
        runs = r["runs"]
        judged = sum(bool(x["judged"]) for x in runs)
        total += len(runs)
        judged_total += judged
        lines.append(
            f"| {name} | {r['rows']:,} | {r['classes']} | {r['accuracy']:.2f} | {judged} of {len(runs)} | "
            f"{np.mean([x['quarantined'] for x in runs]):.1f} | "
            + " | ".join(f"{sum(x['beyond'][d] for x in runs)} of {len(runs)}" for d in DETECTORS) + " |"
        )
    lines += ["", f"{judged_total} of {total} scans with a class judged poisoned (stated: at most 5 % per detector)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
