"""Syntactic templates at several rates, ``token_trigger`` alone, in memory (development part).

    python benchmarks/dev_template_rates.py            # every template, rates 1-20 %
    python benchmarks/dev_template_rates.py question   # one template

The templates of ``attacks_raw.py`` on Rotten Tomatoes (rotten reviews rewritten and
relabelled fresh): the opening clause ``S(SBAR)(,)(NP)(VP)(.)`` ("When the story begins,
..."), the fragment ``FRAG(SBAR)(.)`` and the wh- question ``SBARQ(WHADVP)(SQ)(.)``. Each
set's texts are read into tokens as ``dev_triggers.py`` reads them (words, word pairs and
the sentence forms of ``detectors/structure.py``) and ``token_trigger`` is fitted and
scored on them with its defaults: no proxy, no scan, so the figures are the detector's
alone (a scan adds the other detectors' flags). Seeds 0 and 1. Printed only; the figures
in docs are quoted from its output. Development data only.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attacks_raw  # noqa: E402
import dev_triggers  # noqa: E402
import matrix  # noqa: E402

TEMPLATES = {"clause": attacks_raw.syntactic, "fragment": attacks_raw.fragments, "question": attacks_raw.questions}
RATES = (0.01, 0.03, 0.05, 0.10, 0.20)
SEEDS = (0, 1)


def measure(build, texts, labels, rate, seed) -> dict:
    from poisonscan.detectors import make_detector

    _, table, truth, _ = build(texts, labels, rate=rate, seed=seed)
    rows = table.column("review").to_pylist()
    y = np.array(table.column("label").to_pylist(), dtype=object)
    tokens = dev_triggers.text_tokens(rows)
    det = make_detector("token_trigger")
    state = det.extract_output(det.add_input(det.create_accumulator(), tokens, y), {})
    flag = det.score(state, tokens, y) > 0
    return dev_triggers.prf(flag, truth)


def main(argv):
    matrix.check_disjoint()
    names = argv or list(TEMPLATES)
    texts, labels = dev_triggers.rotten_tomatoes()
    print("| template | rate | seed | F1 (P/R) | clean rows quarantined |\n| --- | ---: | ---: | --- | ---: |")
    for name in names:
        for rate in RATES:
            for seed in SEEDS:
                m = measure(TEMPLATES[name], texts, labels, rate, seed)
                print(f"| {name} | {rate:.0%} | {seed} | {m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f}) | "
                      f"{m['clean_flagged']:.2%} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
