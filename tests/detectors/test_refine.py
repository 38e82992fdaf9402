"""The cut of a judged class along its group's discriminant direction (detectors/refine.py)."""

import dataclasses

import numpy as np
import pytest

from poisonscan.detectors import (
    GroupTest,
    RelativeSpectral,
    SpectralSignature,
    judge_scan,
)
from poisonscan.detectors.refine import posterior, refine_group
from poisonscan.detectors.stats import ClassSample


def natural_class(seed, n=20_000, d=32, share=0.25, shift=4.0):
    """One class: unit noise plus six natural directions of sd 1.5 (variance close to
    what the shift adds), and ``share`` of the rows shifted ``shift`` SD along a random
    direction. Returns X, the poisoned mask."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(d, 6))
    loadings *= 1.5 / np.linalg.norm(loadings, axis=0)
    X = rng.normal(size=(n, d)) + rng.normal(size=(n, 6)) @ loadings.T
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    poison = rng.random(n) < share
    X[poison] += shift * direction
    return X, poison


def scan_of_classes(classes, *, first_seed, n, share, shift=5.0):
    """``classes`` classes of :func:`natural_class`, 10 units apart; class 1 alone holds
    the shifted group. Returns X, y, the poisoned mask."""
    parts = [natural_class(first_seed + c, n=n, share=share if c == 1 else 0.0, shift=shift) for c in range(classes)]
    X = np.vstack([part + 10.0 * c for c, (part, _) in enumerate(parts)])
    y = np.repeat(np.arange(classes), n)
    return X, y, np.concatenate([poison for _, poison in parts])


def f1(flags, truth):
    tp = (flags & truth).sum()
    return 2 * tp / (flags.sum() + truth.sum())


def fitted(det, X, y, sample_rows=4096):
    acc = det.add_input(det.create_accumulator(), X, y)
    samples = {}
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)[:sample_rows]
        samples[int(label)] = ClassSample(X[idx].astype(np.float32), idx, idx)
    return det.extract_output(acc, samples)


def judged(det, state, y):
    test = GroupTest()
    first = {int(c): det.judge(state, int(c), int((y == c).sum()), test) for c in np.unique(y)}
    return judge_scan(first, test.level(len(first)), lambda label, v: None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discriminant_cut_beats_the_top_direction_where_natural_directions_compete(seed):
    X, poison = natural_class(seed)
    sample = slice(0, 4096)
    mean = X.mean(0)
    eigvals, eigvecs = np.linalg.eigh(np.cov(X.T))
    top = eigvecs[:, -1]
    stat = (X[sample] - mean) @ top
    ref = refine_group(X[sample], mean, stat, eigen=(eigvals, eigvecs))
    assert ref is not None
    assert ref.separation_after > ref.separation_before
    assert 1 <= ref.components <= 32
    # the top direction's own cut, and the refinement's, applied to every row
    from poisonscan.detectors import fit_two_groups

    first = fit_two_groups(stat)
    before = first.side * ((X - mean) @ top - first.cut) > 0
    after = ref.fit.side * ((X - mean) @ ref.direction - ref.fit.cut) > 0
    assert f1(after, poison) > f1(before, poison) + 0.01
    assert f1(after, poison) > 0.93
    # the group's share is found again
    assert ref.fit.weight == pytest.approx(0.25, abs=0.03)


def test_refinement_is_deterministic_and_needs_a_group():
    X, _ = natural_class(3)
    mean = X.mean(0)
    eig = np.linalg.eigh(np.cov(X.T))
    stat = (X[:4096] - mean) @ eig[1][:, -1]
    a = refine_group(X[:4096], mean, stat, eigen=eig)
    b = refine_group(X[:4096].copy(), mean, stat.copy(), eigen=lambda: eig)
    np.testing.assert_array_equal(a.direction, b.direction)
    assert a.components == b.components
    # one Gaussian group, no natural directions: nothing to cut, so no refinement asked
    # for is spent on it (its first fit has no posterior cut) or none beats the statistic
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(4096, 16))
    ez = np.linalg.eigh(np.cov(Z.T))
    r = refine_group(Z, Z.mean(0), (Z - Z.mean(0)) @ ez[1][:, -1], eigen=ez)
    assert r is None or r.fit.cut is not None
    # too few rows to refine
    assert refine_group(X[:50], mean, stat[:50], eigen=eig) is None


def test_posterior_is_a_probability_and_rises_towards_the_group():
    from poisonscan.detectors import fit_two_groups

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 3000), rng.normal(5, 1, 1000)])
    fit = fit_two_groups(x)
    grid = np.linspace(-3, 8, 50) * fit.side
    p = posterior(fit, grid)
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) * fit.side >= -1e-12)
    assert posterior(fit, np.array([fit.cut]))[0] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("cls", [SpectralSignature, RelativeSpectral])
def test_settle_moves_only_a_judged_class_cut(cls):
    """Class 1 holds the group (5 SD in a quarter); classes 0 and 2-5 are clean. Settling keeps the judgment
    (poisoned, p-value, level) and moves class 1's cut and direction only; unjudged
    classes and their scores are as they were."""
    X, y, truth = scan_of_classes(6, first_seed=10, n=6000, share=0.25)
    det = cls()
    state = fitted(det, X, y)
    verdicts = judged(det, state, y)
    assert [c for c, v in verdicts.items() if v.poisoned] == [1]
    before_scores = det.score(state, X, y)
    before_flags = verdicts[1].flags(det.statistic(state, X[y == 1], y[y == 1]))
    settled = {c: det.settle(state, c, v) for c, v in verdicts.items()}
    for c in (0, 2, 3, 4, 5):
        assert settled[c] is verdicts[c]
        assert not state.classes[c].settled
    v = settled[1]
    assert (v.poisoned, v.p_value, v.level) == (verdicts[1].poisoned, verdicts[1].p_value, verdicts[1].level)
    assert state.classes[1].settled and v.extra["refined"]["separation_after"] > v.extra["refined"]["separation_before"]
    after_scores = det.score(state, X, y)
    np.testing.assert_array_equal(after_scores[y != 1], before_scores[y != 1])
    after_flags = v.flags(det.statistic(state, X[y == 1], y[y == 1]))
    assert f1(after_flags, truth[y == 1]) > f1(before_flags, truth[y == 1])
    assert "best separates" in det.explain(state, 1, 3.0)
    assert "best separates" in det.statistic_label(state, 1)  # the report's histogram title
    assert det.statistic_label(state, 0) == det.statistic_name
    # settling twice changes nothing more
    assert det.settle(state, 1, dataclasses.replace(verdicts[1])) == verdicts[1]


def test_a_small_shifted_group_under_the_natural_directions_is_found_on_a_lower_direction():
    """3 % of class 1 shifted 5 SD: less variance than the class's six natural directions
    (sd 1.5), so the top direction holds no group. The search of the next principal
    directions finds it (Bonferroni over the directions searched), the cut is refined,
    and the clean classes, searched the same way, are not judged."""
    X, y, truth = scan_of_classes(8, first_seed=20, n=8000, share=0.03)
    det = SpectralSignature()
    state = fitted(det, X, y)
    top_only = SpectralSignature(directions=1)
    assert not judged(top_only, fitted(top_only, X, y), y)[1].poisoned
    verdicts = judged(det, state, y)
    assert [c for c, v in verdicts.items() if v.poisoned] == [1]
    v = verdicts[1]
    assert v.extra["direction"] > 1 and v.extra["directions_searched"] == 32
    assert "principal direction" in v.note and state.classes[1].component >= 1
    assert all(state.classes[c].pending is None for c in range(8))  # dropped once judged
    assert det.statistic_label(state, 1) == f"projection on principal direction {v.extra['direction']}"
    v = det.settle(state, 1, v)
    flags = v.flags(det.statistic(state, X[y == 1], y[y == 1]))
    assert f1(flags, truth[y == 1]) > 0.9


def test_a_refinement_that_grows_into_a_natural_split_is_refused(monkeypatch):
    """A class split naturally in two (47 % of it 5 SD away along one direction), and a
    group of about 9 % of the class, inside one side of the split, 2.5 SD away along
    another. The detector's statistic sees the small group; followed freely, the
    discriminant drifts to the natural split (a group of ~46 %), a larger group that holds
    the judged one. The refinement refuses it and the detector's own cut stays."""
    from poisonscan.detectors import fit_two_groups
    from poisonscan.detectors import refine as module

    rng = np.random.default_rng(0)
    n, d = 4096, 16
    X = rng.normal(size=(n, d))
    natural = rng.random(n) < 0.47
    X[natural, 0] += 5.0
    small = natural & (rng.random(n) < 0.19)
    X[small, 1] += 2.5
    mean = X.mean(0)
    eig = np.linalg.eigh(np.cov(X.T))
    stat = (X - mean)[:, 1]
    first = fit_two_groups(stat)
    assert first.weight == pytest.approx(small.mean(), abs=0.03)
    assert refine_group(X, mean, stat, eigen=eig) is None
    monkeypatch.setattr(module, "MAX_SHARE_GROWTH", float("inf"))
    free = refine_group(X, mean, stat, eigen=eig)
    assert free is not None and free.fit.weight > 0.4


def _strong_rows(rng, n, basis, strong=10):
    """``n`` rows of unit noise whose first ``strong`` directions of ``basis`` have sd 3."""
    d = basis.shape[0]
    return (rng.normal(size=(n, d)) * np.r_[np.full(strong, 3.0), np.ones(d - strong)]) @ basis.T


def _plant(rng, X, rows, share, shift):
    """Shift ``share`` of the first ``rows`` rows of X by ``shift`` SD along a random unit
    direction (in place); returns the poisoned mask over X."""
    direction = rng.normal(size=X.shape[1])
    direction /= np.linalg.norm(direction)
    poison = np.zeros(len(X), bool)
    poison[rng.choice(rows, int(round(share * rows)), replace=False)] = True
    X[poison] += shift * direction
    return poison


def strong_class(seed, n=2000, d=64, share=0.2, shift=4.0, strong=10):
    """One class whose first ``strong`` directions have sd 3 (the rest unit), and
    ``share`` of its rows shifted ``shift`` SD along a random direction (mostly weak
    ones): the group adds less variance than the strong directions hold. Returns X, the
    poisoned mask."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = _strong_rows(rng, n, basis, strong)
    return X, _plant(rng, X, n, share, shift)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_discriminant_is_chosen_for_the_judged_group_not_a_speck(seed):
    """A group of 20 % on the first weak principal direction. Among the discriminants
    kept in the top m directions, those with m below the strong ones cannot reach the
    group, and their held-out fits find specks of a few rows far out, whose separation
    can exceed the group's. A held-out fit whose group is not of the judged group's
    share (within MAX_SHARE_GROWTH either way) counts for nothing, so the refinement
    cuts the group (before that rule, no refinement at all for these seeds)."""
    from poisonscan.detectors import fit_two_groups
    from poisonscan.detectors.refine import MAX_SHARE_GROWTH

    X, poison = strong_class(seed)
    mean = X.mean(0)
    eigvals, eigvecs = np.linalg.eigh(np.cov(X.T))
    weak = eigvecs[:, -11]  # the eleventh largest: the first weak direction
    stat = (X - mean) @ weak
    ref = refine_group(X, mean, stat, eigen=(eigvals, eigvecs))
    assert ref is not None and ref.components > 10
    assert 1 / MAX_SHARE_GROWTH < ref.fit.weight / 0.2 < MAX_SHARE_GROWTH
    after = ref.fit.side * ((X - mean) @ ref.direction - ref.fit.cut) > 0
    first = fit_two_groups(stat)
    before = first.side * (stat - first.cut) > 0
    assert f1(after, poison) > max(0.85, f1(before, poison) + 0.01)
    # the halves' cross-fitted projections (the odd rows first), the group on the upper side
    order = np.r_[np.flatnonzero(np.arange(len(X)) % 2 == 1), np.flatnonzero(np.arange(len(X)) % 2 == 0)]
    assert ref.crossed[poison[order]].mean() > ref.crossed[~poison[order]].mean() + 2.5


def strong_scan(seed, share=0.2, per=2000, d=64):
    """Five classes sharing ten strong directions (sd 3, the rest unit), ``share`` of
    class 0 shifted 4 SD along a random direction. Returns X, y, the poisoned mask."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = np.vstack([_strong_rows(rng, per, basis) + rng.normal(0, 3, size=d) for _ in range(5)])
    return X, np.repeat(np.arange(5), per), _plant(rng, X, per, share, 4.0)


def test_a_group_that_is_a_shoulder_on_its_found_direction_is_two_humps_on_the_discriminant():
    """20 % of class 0 shifted 4 SD under ten shared strong directions. Along the
    principal direction the group is found on, it is a shoulder on one hump: the
    one-hump test there alone would clear the class. Each half projected on the
    discriminant fitted on the other half shows two humps, so the class is judged and
    cut near the best possible; the clean classes are not judged."""
    from poisonscan.detectors.base import Detector

    X, y, truth = strong_scan(0)
    det = SpectralSignature()
    state = fitted(det, X, y)
    test = GroupTest()
    first = {c: det.judge(state, c, 2000, test) for c in range(5)}
    level = test.level(5)
    assert Detector.group_shape(det, state, first[0], 0) > level  # the found direction alone
    verdicts = judge_scan(first, level, lambda label, v: None,
                          shape=lambda label, v: det.group_shape(state, v, label))
    assert [c for c, v in verdicts.items() if v.poisoned] == [0]
    assert verdicts[0].extra["one_hump_p"] < level
    v = det.settle(state, 0, verdicts[0])
    assert f1(v.flags(det.statistic(state, X[y == 0], y[y == 0])), truth[y == 0]) > 0.85


def test_a_group_of_more_than_a_third_of_its_class_is_not_read_on_the_discriminant():
    """A natural split of a class into two styles holds nearly half of it; poison is a
    minority of its label. A refined group above DISCRIMINANT_VIEW_MAX_SHARE is judged
    on the direction it was found on alone."""
    from poisonscan.detectors import spectral as module
    from poisonscan.detectors.base import Detector

    X, y, _ = strong_scan(0, share=0.45)
    det = SpectralSignature()
    state = fitted(det, X, y)
    v = det.judge(state, 0, 2000, GroupTest())
    ref = state.classes[0].refinement
    assert ref is not None and ref.crossed is not None
    assert ref.fit.weight > module.DISCRIMINANT_VIEW_MAX_SHARE
    assert det.group_shape(state, v, 0) == Detector.group_shape(det, state, v, 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_skewed_clean_class_stays_one_hump_on_the_discriminant(seed):
    """One clean class, skewed (gamma with shape 2) along one direction beside three
    natural directions of sd 2.5, all turned at random: one hump of a log-concave shape.
    Its two-group split is improbable for one Gaussian and the discriminant separates
    it a little better than the top direction, so it is refined; each half projected
    on the other half's discriminant is a log-concave density projected on a fixed
    direction, log-concave again: the one-hump test on it stays far above any level."""
    from poisonscan.detectors.logconcave import log_concave_p

    rng = np.random.default_rng(seed)
    n, d = 2000, 16
    X = rng.normal(size=(n, d))
    X[:, 0] = 2.0 * rng.gamma(2.0, size=n)
    X[:, 1:4] *= 2.5
    turn, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = X @ turn.T
    mean = X.mean(0)
    eig = np.linalg.eigh(np.cov(X.T))
    ref = refine_group(X, mean, (X - mean) @ eig[1][:, -1], eigen=eig, max_own_p=1.0)
    assert ref is not None and ref.crossed is not None and ref.crossed.shape == (n,)
    assert log_concave_p(ref.crossed)[0] > 0.5


def correlated_classes(classes=5, per=1500, d=48, share=0.10, shift=6.0, seed=0):
    """Classes sharing one covariance far from round (A A^T, A = G / sqrt(d) + 0.3 I:
    variances over about two orders of magnitude, along no axis); in class 0 ``share`` of
    the rows shifted ``shift`` SD along a random direction, the length measured in that
    covariance, so the shift lies mostly along the class's weak directions."""
    rng = np.random.default_rng(seed)
    mixer = rng.normal(size=(d, d)) / np.sqrt(d) + 0.3 * np.eye(d)
    X = rng.normal(size=(classes * per, d)) @ mixer.T + np.repeat(rng.normal(0, 3, size=(classes, d)), per, axis=0)
    y = np.repeat(np.arange(classes), per)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    length = np.sqrt(u @ np.linalg.solve(mixer @ mixer.T, u))
    truth = np.zeros(len(y), bool)
    truth[rng.choice(per, int(share * per), replace=False)] = True
    X[truth] += shift / length * u
    return X, y, truth


def test_a_shift_along_the_weak_directions_of_a_correlated_covariance_is_found_and_cut():
    """A shift of 6 SD in the class's own covariance, where that covariance is far from
    round, shows mostly on the class's weakest principal directions: beyond the 32 the
    search stops at by default (d = 48), and beyond the top 32 directions a discriminant
    could once be kept in. With ``directions=None`` every resolved direction is
    searched, and the discriminant may use every direction the sample supports."""
    X, y, truth = correlated_classes()
    capped = SpectralSignature()
    assert capped.directions == 32
    assert not judged(capped, fitted(capped, X, y, sample_rows=1024), y)[0].poisoned
    det = SpectralSignature(directions=None)
    state = fitted(det, X, y, sample_rows=1024)
    verdicts = judged(det, state, y)
    assert [c for c, v in verdicts.items() if v.poisoned] == [0]
    assert verdicts[0].extra["directions_searched"] == 48
    assert state.classes[0].refinement.components == 48  # neither 32 nor any power of two
    v = det.settle(state, 0, verdicts[0])
    flags = v.flags(det.statistic(state, X[y == 0], y[y == 0]))
    assert f1(flags, truth[y == 0]) > 0.95
    # the same classes without the shift: none judged
    clean, yc, _ = correlated_classes(share=0.0)
    assert not any(v.poisoned for v in judged(det, fitted(det, clean, yc, sample_rows=1024), yc).values())
