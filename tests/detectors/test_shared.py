"""The cross-class view: one group that most classes hold (all-to-all poison)."""

import numpy as np
import pytest

from poisonscan import scan
from poisonscan.detectors import GroupTest, make_detector

from ..conftest import planted
from ..planted import planted_all_to_all


def shared_verdicts(X, y):
    result = scan(X, y, seed=0, detectors=("shared_group",))
    flagged = np.zeros(len(y), dtype=bool)
    flagged[np.array(result.quarantine["id"].to_pylist(), dtype=np.int64)] = True
    verdicts = {c["label"]: c["verdicts"]["shared_group"] for c in result.summary["classes"]}
    return flagged, verdicts


@pytest.mark.parametrize("seed", [0, 1])
def test_all_to_all_poison_is_found_in_every_class(seed):
    X, y, poison = planted_all_to_all(seed=seed)
    flagged, verdicts = shared_verdicts(X, y)
    truth = np.zeros(len(y), dtype=bool)
    truth[poison] = True
    assert all(v["poisoned"] for v in verdicts.values())
    assert (flagged & truth).sum() >= 0.9 * truth.sum() and not (flagged & ~truth).any()
    v = verdicts[2]
    # a model that never saw the groups takes the group's rows for other classes
    taken, rows = v["group_taken_for_other"]
    assert taken >= 0.9 * rows and v["p_value"] < v["level"] and v["scan_p"] < v["level"]
    assert "another class" in v["note"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_class_poison_and_clean_classes_are_not_judged(seed):
    # a group in one class is the per-class detectors' to judge; clean Gaussian classes
    # and a shared sub-population with correct labels hold no all-to-all poison
    X, y, _ = planted(seed=seed, n_classes=6)
    assert not shared_verdicts(X, y)[0].any()
    X, y, _ = planted(seed=seed, n_classes=6, n_poison=0)
    assert not shared_verdicts(X, y)[0].any()
    rng = np.random.default_rng(seed)
    sub = rng.random(len(y)) < 0.2
    u = rng.normal(size=X.shape[1])
    X = X + np.outer(sub, 4.0 * u / np.linalg.norm(u)).astype(X.dtype)
    flagged, verdicts = shared_verdicts(X, y)
    assert not flagged.any() and not any(v["poisoned"] for v in verdicts.values())


def test_three_classes_are_too_few_to_judge():
    X, y, poison = planted_all_to_all(n_classes=3)
    flagged, verdicts = shared_verdicts(X, y)
    assert not flagged.any()
    assert all("needs at least 4" in v["note"] for v in verdicts.values())


def test_verdict_only_with_half_the_classes():
    # the same trigger in two of eight classes: not "most classes"
    X, y, poison = planted_all_to_all(n_classes=8, seed=3)
    keep = ~np.isin(np.arange(len(y)), poison[y[poison] >= 2])
    det = make_detector("shared_group")
    from .test_contract import fit

    state = fit(det, X[keep], y[keep])
    test = GroupTest()
    verdicts = [det.judge(state, c, int((y[keep] == c).sum()), test) for c in range(8)]
    assert not any(v.poisoned for v in verdicts)
    assert state.info["needed"] == 4 and state.info["scan_p"] >= test.level(8)
