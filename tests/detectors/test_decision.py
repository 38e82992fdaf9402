import numpy as np
import pytest

from poisonscan.detectors import (
    GroupTest,
    InvalidParameterError,
    budget_cap,
    fit_two_groups,
    judge_scan,
    select_within_budget,
)


def test_two_group_fit_recovers_a_planted_mixture():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 1900), rng.normal(9, 1, 100)])
    fit = fit_two_groups(x)
    assert fit.weight == pytest.approx(0.05, abs=0.01)
    assert fit.mean_group == pytest.approx(9, abs=0.3)
    assert fit.side == 1
    assert 2 < fit.cut < 8
    assert fit.separation > 7


def judge(stats: dict, affinity=None, alpha=0.05, two_sided=True, **kw):
    """Both steps of the group test over the classes of one detector."""
    test = GroupTest(alpha=alpha)
    first = {c: test.decide(c, "d", x, len(x), two_sided=two_sided) for c, x in stats.items()}
    assert not any(v.poisoned for v in first.values())  # the first step never decides
    level = test.level(len(stats))
    return judge_scan(first, level, affinity or (lambda label, v: None), **kw)


def test_gaussian_classes_own_null_is_calibrated():
    ps = [GroupTest().decide(0, "d", np.random.default_rng(s).normal(size=4000), 4000, two_sided=True).extra["own_p"]
          for s in range(40)]
    # one Gaussian group: own-null p-values spread over (0, 1), few small ones
    assert np.mean(np.array(ps) < 0.05) <= 0.15
    assert np.median(ps) > 0.2


def test_clean_scan_judges_no_class():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        out = judge({c: rng.normal(size=3000) for c in range(8)})
        assert not any(v.poisoned for v in out.values()), [v.note for v in out.values()]


@pytest.mark.parametrize("dist", ["t3", "lognormal", "bimodal-near"])
def test_classes_alike_in_shape_are_not_poisoned(dist):
    # skewed, heavy-tailed or naturally split classes: every class shows the same
    # evidence, so none stands out from its peers
    rng = np.random.default_rng(2)
    make = {
        "t3": lambda: rng.standard_t(3, 4000),
        "lognormal": lambda: rng.lognormal(0, 0.5, 4000),
        "bimodal-near": lambda: np.concatenate([rng.normal(0, 1, 3000), rng.normal(4, 1, 1000)]),
    }[dist]
    out = judge({c: make() for c in range(8)})
    assert not any(v.poisoned for v in out.values()), [v.note for v in out.values()]
    # their own one-group null alone would have called them split: the peers decide
    if dist != "t3":
        assert min(v.extra["own_p"] for v in out.values()) < 1e-3


def test_a_class_that_stands_out_is_poisoned_and_flagged_exactly():
    rng = np.random.default_rng(3)
    stats = {c: rng.normal(size=4000) for c in range(1, 8)}
    stats["a"] = np.concatenate([rng.normal(0, 1, 3800), rng.normal(-6, 1.0, 200)])
    out = judge(stats)
    v = out["a"]
    assert v.poisoned, v.note
    assert not any(out[c].poisoned for c in range(1, 8))
    assert v.side == -1 and v.p_value < v.level == pytest.approx(0.05 / 8)
    x = stats["a"]
    flags = v.flags(x)
    assert flags[3800:].mean() > 0.95 and flags[:3800].mean() < 0.01
    # strength puts the group far from the main mass, the main mass near 0
    assert np.median(v.strength(x[3800:])) > 4
    assert abs(np.median(v.strength(x[:3800]))) < 0.5


def test_two_or_three_poisoned_classes_do_not_hide_one_another():
    # the strongest class's yardstick holds the second's evidence: only a step-down that
    # keeps going past a step that does not reject (generalised ESD) finds both
    rng = np.random.default_rng(4)
    for targets in (("a", "b"), ("a", "b", "c")):
        stats = {c: rng.normal(size=3000) for c in range(7 - len(targets) + 1)}
        for i, t in enumerate(targets):
            stats[t] = np.concatenate([rng.normal(0, 1, 2880 - 200 * i), rng.normal(7 + i, 1, 120 + 200 * i)])
        out = judge(stats)
        assert {c for c, v in out.items() if v.poisoned} == set(targets), [v.note for v in out.values()]


def test_evidence_outliers_step_down():
    from poisonscan.detectors.decision import evidence_outliers

    level = 0.05 / 8
    clean = {c: z for c, z in enumerate([-0.8, -0.3, 0.0, 0.2, 0.5, 0.9])}
    assert evidence_outliers(clean, level) == set()
    # the first step alone does not reject (the second outlier widens its yardstick)
    two = dict(clean, a=30.0, b=25.0)
    assert evidence_outliers(two, level) == {"a", "b"}
    # at most a minority: four of eight standing out together are not outliers
    many = dict(clean, a=30.0, b=29.0, c=28.0, d=27.0)
    del many[0], many[1]
    assert evidence_outliers(many, level) == set()
    # missing evidence is never ranked
    assert evidence_outliers(dict(two, z=None), level) == {"a", "b"}


def test_separation_as_a_second_peer_statistic():
    # every class holds a natural sub-population, found with certainty (the evidence of
    # each is at its cap), so the evidence cannot tell the classes apart; one class's
    # group lies far further out, which its separation shows against the peers'
    rng = np.random.default_rng(8)

    def cls(shift):
        return np.concatenate([rng.normal(0, 1, 3000), rng.normal(shift, 1, 600)])

    stats = {c: cls(3.5 + 0.1 * c) for c in range(6)}
    stats["p"] = cls(10.0)
    out = judge(stats, two_sided=False)
    assert not out["p"].poisoned  # the evidence alone: every class alike
    out = judge(stats, two_sided=False, separation_floor=0.5)
    assert {c for c, v in out.items() if v.poisoned} == {"p"}
    extra = out["p"].extra
    assert extra["peer_p"] == pytest.approx(2 * min(extra["peer_p_evidence"], extra["peer_p_separation"]))
    assert "its group's separation p" in out["p"].note
    # the same classes without the far group: none judged on either statistic
    del stats["p"]
    assert not any(v.poisoned for v in judge(stats, two_sided=False, separation_floor=0.5).values())


def test_natural_sub_populations_in_every_class_are_not_poison():
    rng = np.random.default_rng(6)
    # every class holds a natural sub-population; class 0's is no farther than the rest
    stats = {c: np.concatenate([rng.normal(0, 1, 3600), rng.normal(5, 1, 400)]) for c in range(6)}
    out = judge(stats, affinity=lambda label, v: ((0.3, 0.9), 1e-40))
    assert not any(v.poisoned for v in out.values())
    # with peers, the affinity test is not what judges
    assert all("look like other classes" not in v.note for v in out.values())


def test_without_peers_only_affinity_decides():
    rng = np.random.default_rng(7)
    stats = {c: np.concatenate([rng.normal(0, 1, 3600), rng.normal(7, 1, 400)]) for c in (0, 1)}
    assert not any(v.poisoned for v in judge(stats).values())
    out = judge(stats, affinity=lambda label, v: ((0.2, 0.8), 1e-20) if label == 1 else ((0.5, 0.5), 0.6))
    assert out[1].poisoned and not out[0].poisoned


def test_needs_affinity_requires_it():
    rng = np.random.default_rng(8)
    stats = {c: rng.normal(size=3000) for c in range(1, 8)}
    stats[0] = np.concatenate([rng.normal(0, 1, 2800), rng.normal(8, 1, 200)])
    assert judge(stats)[0].poisoned
    out = judge(stats, affinity=lambda label, v: ((0.5, 0.5), 0.4), needs_affinity=True)
    assert not out[0].poisoned


def test_one_sided_statistic_ignores_a_low_group():
    rng = np.random.default_rng(4)
    stats = {c: rng.normal(size=4000) for c in range(1, 8)}
    stats[0] = np.concatenate([rng.normal(0, 1, 3800), rng.normal(-12, 1, 200)])
    out = judge(stats, two_sided=False)
    assert not out[0].poisoned and "low scores" in out[0].note


def test_group_size_bounds():
    rng = np.random.default_rng(5)
    tiny = np.concatenate([rng.normal(0, 1, 4000), rng.normal(20, 1, 3)])
    assert not GroupTest().decide(0, "d", tiny, 4003, two_sided=True).extra["candidate"]
    few = rng.normal(size=10)
    v = GroupTest().decide(0, "d", few, 10, two_sided=True)
    assert not v.poisoned and "too few" in v.note


def test_level_is_alpha_over_tests():
    assert GroupTest().level(30) == pytest.approx(0.05 / 30)
    assert GroupTest(alpha=0.01).level(1) == pytest.approx(0.01)


def test_invalid_parameters_are_rejected_with_one_message_form():
    with pytest.raises(InvalidParameterError, match=r"The 'alpha' parameter of GroupTest must be a float in \(0, 1\)\. Got 2 instead\."):
        GroupTest(alpha=2).decide(0, "d", np.zeros(50), 50, two_sided=True)
    with pytest.raises(InvalidParameterError, match="Unknown parameter"):
        GroupTest().set_params(min_separation=3)


def test_budget_is_floor_of_one_and_a_half_rate_times_rows():
    assert budget_cap(None, 1000) is None
    assert budget_cap(0.01, 1000) == 15
    assert budget_cap(0.05, 999) == 74


def test_select_within_budget_most_suspicious_first_and_deterministic():
    strength = np.array([1.0, 5.0, 3.0, 5.0, 2.0])
    pos = np.array([10, 11, 12, 9, 13])
    np.testing.assert_array_equal(select_within_budget(strength, pos, 2), [3, 1])
    assert len(select_within_budget(strength, pos, None)) == 5
