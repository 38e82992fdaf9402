"""Label flips on the development text corpora, poisonscan beside cleanlab (development only).

    python benchmarks/dev_text_labels.py            # seed 0; writes docs/benchmarks.md
    BENCH_SEEDS=0,1 python benchmarks/dev_text_labels.py

Development corpora only (``matrix.DEVELOPMENT``, the ones ``dev_triggers.py`` reads): the
convention speeches' sentences labelled by party, without and with the speaker's handle
(a word that decides the label), Rotten Tomatoes reviews (fresh or rotten) and, 4,000
rows of them with the plot summaries (three classes). Each with random flips (8 % of the
rows, each given another label at random), a class-to-class flip (20 % of one class
relabelled as another) and its clean control.

* poisonscan: ``poisonscan.scan_table`` on the texts with the default detectors, no
  poison rate;
* cleanlab: ``find_label_issues`` on 5-fold out-of-fold probabilities of a logistic
  regression (scikit-learn's defaults) on TF-IDF of words and word pairs of every row:
  comparable out-of-fold probabilities.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dev_labels  # noqa: E402
import dev_triggers  # noqa: E402
import matrix  # noqa: E402
from common import write_section  # noqa: E402
from dev_labels import class_flip  # noqa: E402

# each file is read once, whichever corpora are cut from it
_conventions_read = functools.cache(dev_triggers.conventions)
_rotten_tomatoes_read = functools.cache(dev_triggers.rotten_tomatoes_with_plots)


def _conventions(handles: bool):
    texts, labels = _conventions_read()
    if not handles:  # each sentence starts with its speaker's handle
        texts = [t.split(" ", 1)[1] for t in texts]
    return texts, labels


CORPORA = {
    "conventions": lambda: _conventions(False),
    "conventions + handles": lambda: _conventions(True),
    "Rotten Tomatoes": lambda: dev_triggers.reviews_only(*_rotten_tomatoes_read()),
    "Rotten Tomatoes with plots, 4,000 rows": lambda: dev_triggers.subset(*_rotten_tomatoes_read(), 4000),
}
TARGETED = {  # source -> target of the class-to-class flip
    "conventions": ("democrat", "republican"),
    "conventions + handles": ("democrat", "republican"),
    "Rotten Tomatoes": ("fresh", "rotten"),
    "Rotten Tomatoes with plots, 4,000 rows": ("rotten", "fresh"),
}


def random_flips(y, rate, rng):
    classes = sorted(set(y.tolist()))
    idx = np.sort(rng.choice(len(y), int(round(rate * len(y))), replace=False))
    y = y.copy()
    for i in idx:
        y[i] = rng.choice([c for c in classes if c != y[i]])
    return y, idx


def conditions():
    for corpus in CORPORA:
        source, target = TARGETED[corpus]
        yield corpus, "random flips 8 %", lambda y, r: random_flips(y, 0.08, r)
        yield corpus, f"20 % of {source} -> {target}", lambda y, r, s=source, t=target: class_flip(y, s, t, 0.20, r)
        yield corpus, "clean", None


def cleanlab_flags(texts, y):
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(texts)
    _, codes = np.unique(y, return_inverse=True)
    P = cross_val_predict(LogisticRegression(max_iter=1000), X, codes,
                          cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    flag = np.zeros(len(y), bool)
    flag[find_label_issues(codes, P)] = True
    return flag


def poisonscan_flags(texts, y, seed):
    from poisonscan import scan_table

    table = pa.table({"text": texts, "id": np.arange(len(y)), "label": y})
    res = scan_table(table, text_column="text", seed=seed, data_docs=False, report=False)
    flag = np.zeros(len(y), bool)
    if res.quarantine.num_rows:
        flag[np.asarray(res.quarantine.column("id").to_pylist(), dtype=np.int64)] = True
    return flag, res.summary.get("classes_poisoned", [])


def _load(corpus):
    texts, labels = CORPORA[corpus]()
    return texts, np.asarray(labels, dtype=str)


def main():
    matrix.check_disjoint()
    seeds = [int(s) for s in os.environ.get("BENCH_SEEDS", "0").split(",")]
    rows = dev_labels.run(conditions(), _load, poisonscan_flags, lambda texts, y, seed: cleanlab_flags(texts, y),
                          seeds, width=40)
    write_section("dev_text_labels", render(rows, seeds))


def render(rows, seeds):
    return dev_labels.render(
        rows, seeds, "Label flips on the development text corpora", "dev_text_labels.py",
        "with the default detectors, no poison rate (`label_consistency` reads the out-of-fold probabilities of a "
        "linear model of the words, cross-fitted on the proxy's training sample). cleanlab: `find_label_issues` "
        "on 5-fold out-of-fold probabilities of a logistic regression on TF-IDF of words and word pairs.", sep=", ")


if __name__ == "__main__":
    main()
