"""The log-concave yardstick: one hump of any such shape against a group split off."""

import math

import numpy as np
import pytest

from poisonscan.detectors import GroupTest, judge_scan
from poisonscan.detectors.logconcave import (
    _pieces,
    fit_log_concave,
    log_concave_null,
    log_concave_p,
    mixture_gain,
)


def _gaussian_loglik(x):
    return -0.5 * len(x) * (1 + math.log(2 * math.pi * x.var()))


@pytest.mark.parametrize("draw", ["normal", "gamma", "uniform", "mixture"])
def test_fit_is_a_normalised_concave_density_at_least_as_likely_as_a_gaussian(draw):
    rng = np.random.default_rng(1)
    x = {
        "normal": lambda: rng.normal(3, 2, 700),
        "gamma": lambda: rng.gamma(2, size=700),
        "uniform": lambda: rng.random(700),
        "mixture": lambda: np.r_[rng.normal(0, 1, 600), rng.normal(6, 1, 100)],
    }[draw]()
    fit = fit_log_concave(x)
    h = np.diff(fit.knots)
    assert _pieces(fit.log_density, h)[0].sum() == pytest.approx(1.0, abs=1e-4)
    slopes = np.diff(fit.log_density) / h
    assert np.all(np.diff(slopes) <= 1e-9)  # concave
    assert fit.loglik == pytest.approx(np.interp(x, fit.knots, fit.log_density).sum(), abs=1e-6)
    assert fit.loglik >= _gaussian_loglik(x) - 0.05
    if draw == "mixture":  # two humps: the mixture explains it far better
        assert mixture_gain(x) > 50


def test_fit_is_the_optimum():
    """No feasible step from the fitted log-density raises the likelihood: along random
    concave perturbations the normalised log-likelihood does not improve."""
    rng = np.random.default_rng(2)
    x = rng.logistic(size=500)
    fit = fit_log_concave(x)
    h = np.diff(fit.knots)
    for _ in range(20):
        # a concave bump keeps the density concave when added with a small weight
        c = rng.normal(fit.knots.mean(), 1.0)
        bump = -np.abs(fit.knots - c) * rng.uniform(0.01, 0.2)
        phi = fit.log_density + bump
        phi = phi - math.log(_pieces(phi, h)[0].sum())
        assert np.interp(x, fit.knots, phi).sum() <= fit.loglik + 1e-3


@pytest.mark.parametrize(
    "shape",
    ["normal", "gamma", "gumbel", "logistic", "laplace", "uniform", "two humps 2 SD apart"],
)
def test_one_log_concave_group_is_not_a_split(shape):
    """On samples of one log-concave group the p-value is rarely small: 20 samples of
    each shape at two sizes, none below 1e-3 and at most two below 0.05."""
    rng = np.random.default_rng(3)
    draw = {
        "normal": lambda n: rng.normal(size=n),
        "gamma": lambda n: rng.gamma(2, size=n),
        "gumbel": lambda n: rng.gumbel(size=n),
        "logistic": lambda n: rng.logistic(size=n),
        "laplace": lambda n: rng.laplace(size=n),
        "uniform": lambda n: rng.random(n),
        "two humps 2 SD apart": lambda n: rng.normal(size=n) + 2.0 * (rng.random(n) < 0.3),
    }[shape]
    ps = np.array([log_concave_p(draw(n))[0] for n in (300, 1500) for _ in range(10)])
    assert ps.min() > 1e-3
    assert (ps < 0.05).sum() <= 2


@pytest.mark.parametrize("share,shift", [(0.05, 6.0), (0.2, 4.0), (0.02, 8.0)])
def test_a_group_split_off_is_not_one_hump(share, shift):
    rng = np.random.default_rng(4)
    n = 2000
    x = rng.normal(size=n) + shift * (np.arange(n) < share * n)
    p, gain = log_concave_p(x)
    assert p < 1e-6 and gain > 0


def test_skewness_passes_the_gaussian_gate_but_not_this_one():
    """A skewed class (log-normal) is far from one Gaussian group and is one hump."""
    from poisonscan.detectors.calibration import own_null
    from poisonscan.detectors.mixture import fit_two_groups

    rng = np.random.default_rng(5)
    x = rng.lognormal(0, 0.6, 1500)
    assert own_null(fit_two_groups(x))[0] < 1e-20
    assert log_concave_p(x)[0] > 0.05


def test_null_table_is_clamped_to_its_sizes_and_has_a_spread_per_shape():
    from poisonscan.detectors._log_concave_null import SHAPES

    small = log_concave_null(20)
    assert small.shape == (len(SHAPES), 2)
    np.testing.assert_array_equal(log_concave_null(5), small)  # clamped to the table
    np.testing.assert_array_equal(log_concave_null(10_000), log_concave_null(4096))
    assert all((log_concave_null(n)[:, 1] > 0).all() for n in (20, 200, 1000, 4096))


def test_judge_scan_asks_the_shape_only_of_classes_it_would_judge():
    """A class standing out from its peers is judged only when its statistic is not one
    hump; the shape is computed for that class alone."""
    rng = np.random.default_rng(6)
    test = GroupTest()
    stats = {c: rng.normal(size=1000) for c in range(6)}
    stats[0] = np.r_[rng.normal(size=950), rng.normal(7, 1, 50)]
    first = {c: test.decide(c, "d", x, len(x), two_sided=True) for c, x in stats.items()}
    level = test.level(len(stats))
    asked = []

    def shape(p):
        def ask(label, verdict):
            asked.append(label)
            return p
        return ask

    one_hump = judge_scan(first, level, lambda label, v: None, shape=shape(0.3))
    assert asked == [0]
    assert not one_hump[0].poisoned
    assert one_hump[0].extra["one_hump_p"] == 0.3
    assert "a single hump of any shape (skewed or long-tailed, not two groups)" in one_hump[0].note
    split = judge_scan(first, level, lambda label, v: None, shape=shape(1e-12))
    assert split[0].poisoned and split[0].p_value < level
    assert not any(split[c].poisoned for c in range(1, 6))


def _few_classes(stats):
    test = GroupTest()
    first = {c: test.decide(c, "d", x, len(x), two_sided=True) for c, x in stats.items()}
    shape = lambda label, verdict: log_concave_p(stats[label])[0]  # noqa: E731
    return first, test.level(len(stats) * 3), shape


def test_without_peers_a_class_is_judged_by_its_shape_where_the_other_classes_are_one_hump():
    """Two or three classes: a split-off group is judged by the class's own nulls (one
    Gaussian group, one log-concave hump), provided the other classes are one hump; a
    scan whose every class is two humps (natural sub-populations) judges none."""
    rng = np.random.default_rng(11)
    stats = {0: np.r_[rng.normal(size=1350), rng.normal(6, 1, 150)], 1: rng.gamma(4, size=1500)}
    first, level, shape = _few_classes(stats)
    without = judge_scan(first, level, lambda label, v: None, shape=shape, alone_by_affinity=False)
    assert not without[0].poisoned and "so it cannot be judged" in without[0].note
    judged = judge_scan(first, level, lambda label, v: None, shape=shape, alone_by_affinity=False, alone_by_shape=True)
    assert judged[0].poisoned and judged[0].extra["one_hump_p"] < level
    assert "judged by its own shape" in judged[0].note
    assert not judged[1].poisoned  # skewed, one hump: its own Gaussian null fails, the shape holds

    halves = {c: np.r_[rng.normal(size=750), rng.normal(5, 1, 750)] for c in (1, 2)}
    first, level, shape = _few_classes({0: stats[0], **halves})
    natural = judge_scan(first, level, lambda label, v: None, shape=shape, alone_by_affinity=False, alone_by_shape=True)
    assert not any(v.poisoned for v in natural.values())
    assert "another class is not a single hump either" in natural[0].note

    first, level, shape = _few_classes({0: stats[0]})
    alone = judge_scan(first, level, lambda label, v: None, shape=shape, alone_by_affinity=False, alone_by_shape=True)
    assert not alone[0].poisoned  # one class: nothing to check the yardstick on


def test_scan_of_two_classes_judges_a_shifted_group_and_no_clean_class():
    """End to end: two Gaussian classes, 10 % of one shifted 6 SD, are judged by
    `spectral` alone; their clean control, and two classes of two sub-populations
    each, are not."""
    from poisonscan import scan

    def classes(shift, natural=0.0, seed=0):
        rng = np.random.default_rng(seed)
        X = np.concatenate([rng.normal(size=(1500, 32)) + rng.normal(0, 3, 32) for _ in range(2)])
        y = np.repeat([0, 1], 1500)
        for c in (0, 1) if natural else ():
            u = rng.normal(size=32)
            X[np.flatnonzero(y == c)[:750]] += natural * u / np.linalg.norm(u)
        truth = np.zeros(len(y), bool)
        if shift:
            u = rng.normal(size=32)
            truth[:150] = True
            X[:150] += shift * u / np.linalg.norm(u)
        return X.astype(np.float32), y, truth

    X, y, truth = classes(6.0)
    r = scan(X, y, seed=0, detectors=("spectral",))
    q = np.zeros(len(y), bool)
    q[np.asarray(r.quarantine["id"].to_pylist(), dtype=int)] = True
    assert r.summary["classes_poisoned"] == [0]
    assert (q & truth).sum() >= 0.95 * truth.sum() and (q & ~truth).sum() <= 5
    for X, y, _ in (classes(0.0), classes(0.0, natural=5.0, seed=1)):
        assert scan(X, y, seed=0, detectors=("spectral",)).summary["classes_poisoned"] == []


@pytest.mark.parametrize(
    "x,message",
    [([1.0, 2.0], "at least 3 values"), ([1.0, np.nan, 2.0, 3.0], "NaN or infinite"), ([2.0] * 10, "does not vary")],
)
def test_bad_statistics_get_a_clear_error(x, message):
    with pytest.raises(ValueError, match=message):
        fit_log_concave(np.array(x))
