import numpy as np

from poisonscan.detectors import ClassSample, Untangling
from poisonscan.detectors.calibration import own_null
from poisonscan.detectors.mixture import fit_two_groups

from .test_spectral import shared_strong_directions


def samples(X, y):
    return {c.item(): ClassSample(X[y == c], np.flatnonzero(y == c), np.flatnonzero(y == c)) for c in np.unique(y)}


def fit(det, X, y, batches=1):
    acc = det.create_accumulator()
    for part in np.array_split(np.arange(len(y)), batches):
        acc = det.add_input(acc, X[part], y[part])
    return det.extract_output(acc, samples(X, y))


def second_identity(rate, seed, classes=5, per=600, d=16):
    """Classes sharing one within-class covariance with four strong directions; in class
    0 a share ``rate`` of the rows is a second identity 6 SD away along a weak direction
    (source rows that carry a trigger)."""
    rng = np.random.default_rng(seed)
    scale = np.r_[np.full(4, 4.0), np.ones(d - 4)]
    X = np.concatenate([rng.normal(size=(per, d)) * scale + rng.normal(0, 5, d) for _ in range(classes)])
    y = np.repeat(np.arange(classes), per)
    truth = np.zeros(len(y), bool)
    idx = rng.choice(per, int(rate * per), replace=False)
    X[idx, 9] += 6.0
    truth[idx] = rate > 0
    return X.astype(np.float32), y, truth


def test_the_second_identity_stands_apart_on_the_untangled_line():
    X, y, truth = second_identity(0.08, seed=0)
    det = Untangling()
    state = fit(det, X, y)
    stat = det.statistic(state, X[y == 0], y[y == 0])
    poison = truth[y == 0]
    # the line runs from the main identity (at 0, unit spread) towards the second one
    assert stat[poison].min() > np.percentile(stat[~poison], 99)
    assert abs(np.median(stat[~poison])) < 0.2 and 0.8 < stat[~poison].std() < 1.2
    cls = state.classes[0]
    assert abs(cls.group_fraction - 0.08) < 0.02 and 5.0 < cls.separation < 7.0
    line = cls.direction / np.linalg.norm(cls.direction)
    assert abs(line[9]) > 0.9  # the weak direction, not one of the strong shared ones


def test_scan_judges_the_class_with_two_identities_and_spares_the_clean_data():
    from poisonscan import scan

    X, y, truth = second_identity(0.08, seed=1)
    result = scan(X, y, detectors=("untangling",), seed=0)
    flagged = np.zeros(len(y), bool)
    flagged[result.quarantine["id"].to_pylist()] = True
    assert result.summary["classes_poisoned"] == [0]
    assert (flagged & truth).sum() / flagged.sum() >= 0.9 and (flagged & truth).sum() / truth.sum() >= 0.9
    reason = result.quarantine["reason"].to_pylist()[0]
    assert "second identity" in reason
    clean = scan(*second_identity(0.0, seed=1)[:2], detectors=("untangling",), seed=0)
    assert clean.quarantine.num_rows == 0 and clean.summary["classes_poisoned"] == []


def test_a_shift_under_shared_strong_directions_is_untangled():
    from poisonscan import scan

    # the spectral signature's own top direction is a shared strong one here
    X, y, truth = shared_strong_directions(0.08, seed=1)
    result = scan(X, y, detectors=("untangling",), seed=0)
    flagged = np.zeros(len(y), bool)
    flagged[result.quarantine["id"].to_pylist()] = True
    assert result.summary["classes_poisoned"] == [0]
    assert (flagged & truth).sum() / flagged.sum() >= 0.9 and (flagged & truth).sum() / truth.sum() >= 0.7


def test_the_judged_statistic_is_cross_fitted():
    # few rows per dimension: a line chosen from a class's own rows splits pure noise
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 64))
    y = np.repeat(np.arange(5), 300)
    det = Untangling()
    state = fit(det, X, y)
    in_sample = [own_null(fit_two_groups(state.classes[c].projection(X[y == c])))[0] for c in range(5)]
    crossed = [own_null(fit_two_groups(state.calibration[c]))[0] for c in range(5)]
    assert sum(p < 1e-3 for p in in_sample) >= 3
    assert min(crossed) > 0.01


def test_state_does_not_depend_on_batches_and_one_class_has_a_line():
    X, y, _ = second_identity(0.08, seed=2)
    det = Untangling()
    a, b = fit(det, X, y), fit(det, X, y, batches=7)
    for c in range(5):
        np.testing.assert_allclose(a.classes[c].direction, b.classes[c].direction, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(a.calibration[c], b.calibration[c], rtol=1e-6, atol=1e-9)
    one = fit(det, X[y == 0], y[y == 0])  # no other class: S is the identity
    assert np.isfinite(one.calibration[0]).all() and one.classes[0].group_fraction > 0
