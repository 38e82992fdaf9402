"""The classes ranked by how far each stands out, and the near miss (summary.json,
``scan()``): planted data, clean data, and calibrated verdicts."""

import json

import numpy as np

from poisonscan import scan
from poisonscan.detectors.decision import ClassVerdict
from poisonscan.pipelines.scan.ranking import rank_classes

from ..conftest import planted


def check_ranking(summary):
    """Every class once, ranks 1..n, and the near miss is the first class judged clean."""
    ranking = summary["class_ranking"]
    assert [r["rank"] for r in ranking] == list(range(1, len(summary["classes"]) + 1))
    assert sorted(map(json.dumps, (r["label"] for r in ranking))) == sorted(
        json.dumps(c["label"]) for c in summary["classes"]
    )
    by_label = {json.dumps(c["label"]): c for c in summary["classes"]}
    for r in ranking:
        c = by_label[json.dumps(r["label"])]
        assert r["poisoned"] == c["poisoned"]
        if r["detector"] is not None:  # the evidence is that detector's verdict
            assert r["note"] == c["verdicts"][r["detector"]]["note"]
    clean = [r for r in ranking if r["poisoned"] is False]
    assert summary["near_miss"] == (clean[0] if clean else None)
    json.dumps(summary, allow_nan=False)  # summary.json stays strict JSON


def test_the_planted_class_ranks_first_and_a_class_too_small_to_judge_last():
    # five classes, one too small to judge: four are judged, each against its peers
    X, y, poison = planted(n_classes=5, n_poison=30, seed=0)
    keep = np.concatenate([np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:5]])  # class 3: too few rows
    s = scan(X[keep], y[keep], ids=keep).summary
    assert s["classes_poisoned"] == [1]
    check_ranking(s)
    first, *middle, last = s["class_ranking"]
    assert first["label"] == 1 and first["poisoned"] is True and first["counted"]
    assert first["detector"] in s["classes"][1]["verdicts"] and first["evidence"]
    assert all(r["poisoned"] is False for r in middle)
    assert last["label"] == 3 and last["poisoned"] is None and last["basis"] == "not judged"
    assert last["evidence"].startswith("too few valid rows")
    # the runner-up: the class that stands out most of those judged clean
    assert s["near_miss"]["label"] == middle[0]["label"] and s["near_miss"]["rank"] == 2


def test_a_clean_scan_still_ranks_every_class_and_names_the_closest():
    X, y, _ = planted(n_poison=0, seed=21)
    s = scan(X, y).summary
    assert s["classes_poisoned"] == [] and s["rows_quarantined"] == 0
    check_ranking(s)
    assert len(s["class_ranking"]) == 4
    near = s["near_miss"]
    assert near == s["class_ranking"][0] and near["rank"] == 1 and near["poisoned"] is False
    assert near["detector"] and near["evidence"] and near["note"]
    if near["basis"] == "separation":  # detectors without a calibrated p-value yet
        assert "no calibrated p-value" in near["evidence"]


def summary_class(label, verdicts, counted=(), poisoned=None):
    """A class as summary.json holds it, from real verdicts."""
    poisoned = bool(counted) if poisoned is None else poisoned
    return {
        "label": label,
        "status": "scanned",
        "poisoned": poisoned,
        "verdicts": {v.detector: {**v.to_dict(), "counted": v.detector in counted} for v in verdicts},
    }


def verdict(label, detector, p=None, level=None, separation=0.0, poisoned=False, note="", **kw):
    return ClassVerdict(
        label=label, detector=detector, poisoned=poisoned, class_rows=500, sample_rows=500,
        note=note or f"{detector} on {label}", p_value=p, level=level, separation=separation, **kw,
    )


def test_calibrated_evidence_ranks_by_p_over_level_and_the_rest_after():
    classes = [
        # strongest spectre evidence: 2e-3 against 1e-3, twice the level (the near miss)
        summary_class("b", [verdict("b", "spectral", 0.5, 1e-3, 1.0), verdict("b", "spectre", 2e-3, 1e-3, 4.0)]),
        # no calibrated p-value yet: ranked after every class with one, however separated
        summary_class("d", [verdict("d", "spectral", separation=5.9, delta_bic=-3.0),
                            verdict("d", "activation_clustering", separation=4.0, delta_bic=12.0)]),
        summary_class("a", [verdict("a", "spectral", 2e-4, 1e-3, 9.0, poisoned=True)], counted=("spectral",)),
        summary_class("c", [verdict("c", "spectral", 1e-2, 1e-3, 2.0)]),
        {"label": "e", "status": "too few valid rows to judge (3 < 20); rejected", "poisoned": None},
        summary_class("f", [verdict("f", "spectral", separation=3.0)]),
    ]
    ranking, near = rank_classes(classes)
    assert [r["label"] for r in ranking] == ["a", "b", "c", "d", "f", "e"]
    a, b, c, d, f, e = ranking
    assert a["ratio"] == 0.2 and a["poisoned"] and a["evidence"] == "spectral: p = 0.0002, below the level 0.001"
    assert b["detector"] == "spectre" and b["ratio"] == 2.0 and b["basis"] == "p-value"
    assert b["evidence"] == "spectre: p = 0.002, 2 times the level 0.001"
    assert c["ratio"] == 10.0
    # without p-values: two groups preferred by the BIC outrank a larger separation without
    assert d["basis"] == "separation" and d["detector"] == "activation_clustering" and d["ratio"] is None
    assert d["evidence"].startswith("activation_clustering (no calibrated p-value): two groups fit better")
    assert f["basis"] == "separation" and e["basis"] == "not judged" and e["poisoned"] is None
    assert near == b
    # a detector's verdict that was not confirmed shows as such
    lone = summary_class("g", [verdict("g", "knn_label", 1e-5, 1e-3, poisoned=True)], poisoned=False)
    ranking, near = rank_classes([lone])
    assert near["label"] == "g" and "not confirmed" in near["evidence"]
    assert rank_classes([]) == ([], None)
