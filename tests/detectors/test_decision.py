import numpy as np
import pytest

from poisonscan.detectors import GroupTest, InvalidParameterError, budget_cap, fit_two_groups, select_within_budget


def test_two_group_fit_recovers_a_planted_mixture():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 1900), rng.normal(9, 1, 100)])
    fit = fit_two_groups(x)
    assert fit.weight == pytest.approx(0.05, abs=0.01)
    assert fit.mean_group == pytest.approx(9, abs=0.3)
    assert fit.side == 1
    assert 2 < fit.cut < 8
    assert fit.separation > 7


def test_gaussian_class_is_not_poisoned():
    rng = np.random.default_rng(1)
    for seed in range(20):
        x = np.random.default_rng(seed).normal(size=4000)
        v = GroupTest().decide(0, "d", x, 100_000, two_sided=True)
        assert not v.poisoned, v.note
        assert not v.flags(x).any()


@pytest.mark.parametrize("dist", ["t3", "lognormal", "bimodal-near"])
def test_skewed_or_heavy_tailed_classes_are_not_poisoned(dist):
    rng = np.random.default_rng(2)
    x = {
        "t3": rng.standard_t(3, 4000),
        "lognormal": rng.lognormal(0, 0.5, 4000),
        "bimodal-near": np.concatenate([rng.normal(0, 1, 3000), rng.normal(4, 1, 1000)]),
    }[dist]
    v = GroupTest().decide(0, "d", x, 4000, two_sided=True)
    assert not v.poisoned, v.note


def test_separated_group_is_poisoned_and_flagged_exactly():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 3800), rng.normal(-12, 1.5, 200)])
    v = GroupTest().decide("a", "d", x, 4000, two_sided=True)
    assert v.poisoned
    assert v.side == -1
    flags = v.flags(x)
    assert flags[3800:].all() and not flags[:3800].any()
    # strength puts the group far from the main mass, the main mass near 0
    assert v.strength(x[3800:]).min() > 5
    assert abs(np.median(v.strength(x[:3800]))) < 0.5


def test_one_sided_statistic_ignores_a_low_group():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 1, 3800), rng.normal(-12, 1, 200)])
    assert not GroupTest().decide(0, "d", x, 4000, two_sided=False).poisoned


def test_group_size_bounds():
    rng = np.random.default_rng(5)
    tiny = np.concatenate([rng.normal(0, 1, 4000), rng.normal(20, 1, 3)])
    assert not GroupTest().decide(0, "d", tiny, 4003, two_sided=True).poisoned
    few = rng.normal(size=10)
    v = GroupTest().decide(0, "d", few, 10, two_sided=True)
    assert not v.poisoned and "too few" in v.note


def test_invalid_parameters_are_rejected_with_one_message_form():
    with pytest.raises(InvalidParameterError, match=r"The 'min_separation' parameter of GroupTest must be a float in \(0, inf\)\. Got -1 instead\."):
        GroupTest(min_separation=-1).decide(0, "d", np.zeros(50), 50, two_sided=True)
    with pytest.raises(InvalidParameterError, match="Unknown parameter"):
        GroupTest().set_params(min_seperation=3)


def test_budget_is_floor_of_one_and_a_half_rate_times_rows():
    assert budget_cap(None, 1000) is None
    assert budget_cap(0.01, 1000) == 15
    assert budget_cap(0.05, 999) == 74


def test_select_within_budget_most_suspicious_first_and_deterministic():
    strength = np.array([1.0, 5.0, 3.0, 5.0, 2.0])
    pos = np.array([10, 11, 12, 9, 13])
    np.testing.assert_array_equal(select_within_budget(strength, pos, 2), [3, 1])
    assert len(select_within_budget(strength, pos, None)) == 5
