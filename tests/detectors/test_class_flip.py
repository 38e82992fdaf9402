"""Class-to-class label flips: one pair of classes with far more look-alikes than the rest."""

import numpy as np
import pytest

from poisonscan import scan

from ..conftest import planted
from ..planted import planted_class_flip


def flip_verdicts(X, y):
    result = scan(X, y, seed=0, detectors=("class_flip",))
    flagged = np.zeros(len(y), dtype=bool)
    flagged[np.array(result.quarantine["id"].to_pylist(), dtype=np.int64)] = True
    verdicts = {c["label"]: c["verdicts"]["class_flip"] for c in result.summary["classes"]}
    return flagged, verdicts, result


@pytest.mark.parametrize("seed", [0, 1])
def test_a_share_of_one_class_relabelled_as_another_is_found(seed):
    X, y, flipped = planted_class_flip(seed=seed)
    flagged, verdicts, result = flip_verdicts(X, y)
    truth = np.zeros(len(y), dtype=bool)
    truth[flipped] = True
    assert [label for label, v in verdicts.items() if v["poisoned"]] == [2]
    assert (flagged & truth).sum() >= 0.95 * truth.sum() and (flagged & ~truth).sum() <= 2
    v = verdicts[2]
    assert v["p_value"] < v["level"] and v["source"] == 0
    assert v["share_of_source_look_alikes"] == pytest.approx(0.3, abs=0.05)
    reasons = result.quarantine["reason"].to_pylist()
    assert all("carry label 0" in r for r in reasons)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_classes_random_flips_and_a_pair_that_looks_alike_are_not_judged(seed):
    # clean Gaussian classes
    X, y, _ = planted(seed=seed, n_classes=6, n_poison=0)
    flagged, verdicts, _ = flip_verdicts(X, y)
    assert not flagged.any() and not any(v["poisoned"] for v in verdicts.values())
    # random flips spread over every pair: the per-row label detectors' to find
    rng = np.random.default_rng(seed)
    yf = y.copy()
    idx = rng.choice(len(y), int(0.08 * len(y)), replace=False)
    yf[idx] = (y[idx] + rng.integers(1, 6, len(idx))) % 6
    assert not flip_verdicts(X, yf)[0].any()
    # two classes whose rows overlap by nature (centres 1.5 SD apart): both directions
    # show look-alikes, and a few per cent of a class is not a flip
    X2 = X.copy()
    centre = X2[y == 0].mean(axis=0)
    X2[y == 1] += (centre + 1.5 / np.sqrt(X.shape[1]) - X2[y == 1].mean(axis=0)).astype(X.dtype)
    flagged, verdicts, _ = flip_verdicts(X2, y)
    assert not any(v["poisoned"] for v in verdicts.values())


def test_a_flip_below_the_smallest_share_is_left_to_the_row_detectors():
    X, y, flipped = planted_class_flip(share=0.04)
    flagged, verdicts, _ = flip_verdicts(X, y)
    assert not flagged.any()
    v = verdicts[2]
    assert v["p_value"] < v["level"] and "smallest flip reported" in v["note"]


def test_two_classes_are_too_few_to_judge():
    X, y, _ = planted_class_flip(n_classes=2, source=0, target=1)
    flagged, verdicts, _ = flip_verdicts(X, y)
    assert not flagged.any()
    assert all("at least 3 classes" in v["note"] for v in verdicts.values())
