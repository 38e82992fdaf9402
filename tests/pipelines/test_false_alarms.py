"""The scan's false-alarm rate, split between the families of evidence that run."""

import itertools
import math

import pytest

from poisonscan import ScanConfig, scan
from poisonscan.detectors import (
    ExcessTest,
    available_detectors,
    default_detectors,
    make_detector,
    spent_false_alarms,
    split_false_alarms,
)
from poisonscan.pipelines.config import ConfigError

from ..conftest import planted

KINDS = ("features", "image", "text", "tabular")


def held(det, split):
    """The level parameter of ``det`` that its family's share set."""
    if det.alarm_family == "triggers":
        return det.family_alpha
    if det.alarm_family == "groups":
        return None
    return det.alpha


@pytest.mark.parametrize("kind", KINDS)
def test_the_shares_add_up_to_the_rate_for_any_selection(kind):
    names = default_detectors(kind)
    for r in range(1, len(names) + 1):
        for chosen in itertools.combinations(names, r):
            for rate in (0.05, 0.2):
                cfg = ScanConfig(detectors=chosen, false_alarm_rate=rate)
                dets = cfg.build_detectors(kind)
                split = split_false_alarms(rate, dets)
                # the whole rate where a family besides the triggers runs, never more
                if set(split) - {"triggers"}:
                    assert math.isclose(sum(split.values()), rate)
                else:
                    assert sum(split.values()) < rate
                # every other family gets the same share; the triggers what they spend
                others = {f: s for f, s in split.items() if f != "triggers"}
                assert len(set(round(s, 12) for s in others.values())) <= 1
                for det in dets:
                    want = rate if det.alarm_family == "triggers" else split[det.alarm_family]
                    if det.alarm_family != "groups":
                        assert held(det, split) == pytest.approx(want)
                group_alpha = cfg.build_group_test(dets).alpha
                if "groups" in split:
                    assert group_alpha == pytest.approx(split["groups"] / 2)
                # what the families spend with the parameters so set is the split, and
                # the summary's bound is the rate
                spent = spent_false_alarms(dets, group_alpha)
                assert spent == pytest.approx(split)
                assert cfg.false_alarms(dets)["bound"] == pytest.approx(sum(split.values()))


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_rate_each_family_keeps_its_own_level(kind):
    cfg = ScanConfig()
    dets = cfg.build_detectors(kind, ("a", "b"))
    for det in dets:  # nothing set beyond what the kind asks for
        assert det.get_params() == make_detector(det.name, type(det).params_for(kind, ("a", "b"))).get_params()
        if det.alarm_family in ("labels", "class_flip"):
            assert det.alpha == 0.05
        if det.alarm_family == "triggers":
            assert det.family_alpha == 0.05
    assert cfg.build_group_test(dets).alpha == 0.05
    fa = cfg.false_alarms(dets)
    assert fa["rate"] is None
    assert fa["families"]["groups"]["share"] == pytest.approx(0.10)  # the group test and its step-down
    assert fa["families"]["labels"]["share"] == pytest.approx(0.05)
    assert fa["bound"] == pytest.approx(sum(f["share"] for f in fa["families"].values()))
    assert fa["bound"] > 0.15


def test_the_default_text_scan_spends_two_trigger_families_and_halves_the_rest():
    cfg = ScanConfig(false_alarm_rate=0.05)
    dets = cfg.build_detectors("text", ("neg", "pos"))
    split = split_false_alarms(0.05, dets)
    registered = len(available_detectors())
    assert split["triggers"] == pytest.approx(2 * 0.05 / registered)  # words and sentence forms
    assert split["groups"] == split["labels"] == pytest.approx((0.05 - split["triggers"]) / 2)
    assert set(split) == {"groups", "labels", "triggers"}


def test_a_users_parameter_is_taken_as_given():
    cfg = ScanConfig(false_alarm_rate=0.05, detector_params={"label_consistency": {"alpha": 0.05}},
                     group_params={"alpha": 0.03})
    dets = {d.name: d for d in cfg.build_detectors("tabular")}
    share = split_false_alarms(0.05, list(dets.values()))["labels"]
    assert dets["label_consistency"].alpha == 0.05
    assert dets["knn_label"].alpha == pytest.approx(share) and share < 0.05
    assert cfg.build_group_test(list(dets.values())).alpha == 0.03


@pytest.mark.parametrize("rate", [0, 1, 1.5, -0.1, True, "0.05"])
def test_an_invalid_rate_is_a_usage_error(rate):
    with pytest.raises(ConfigError, match="false-alarm-rate must be in"):
        ScanConfig(false_alarm_rate=rate)


@pytest.mark.parametrize("classes", [2, 3, 4, 10])
@pytest.mark.parametrize("alpha", [0.05, 0.0154, 0.0077, 0.001])
def test_enough_redraws_to_reach_the_level(classes, alpha):
    test = ExcessTest(alpha=alpha)
    level = test.level(classes)
    most = test.most_draws(classes)
    assert most >= 100
    assert (1 + 1) / (1 + most) < level  # one redraw as strong still reaches it
    assert ExcessTest(alpha=alpha, draws=50).most_draws(classes) == 50
    if alpha == 0.05:
        assert most == 100  # the default level's redraws, as before


def test_the_summary_states_the_split_and_a_lower_rate_judges_no_more():
    X, y, poison = planted(seed=3)
    wide = scan(X, y, false_alarm_rate=0.2)
    narrow = scan(X, y, false_alarm_rate=0.001)
    for result, rate in ((wide, 0.2), (narrow, 0.001)):
        fa = result.summary["false_alarms"]
        assert fa["rate"] == rate
        assert math.isclose(sum(f["share"] for f in fa["families"].values()), rate)
        assert math.isclose(fa["bound"], rate)
        assert result.summary["decision"]["alpha"] == pytest.approx(fa["families"]["groups"]["share"] / 2)
        assert "spectral" in fa["families"]["groups"]["detectors"]
    assert set(narrow.summary["classes_poisoned"]) <= set(wide.summary["classes_poisoned"])
    for c_wide, c_narrow in zip(wide.summary["classes"], narrow.summary["classes"]):
        for name, v in c_narrow["verdicts"].items():
            if v.get("level") is not None and c_wide["verdicts"][name].get("level") is not None:
                assert v["level"] <= c_wide["verdicts"][name]["level"]
    assert wide.summary["classes_poisoned"] == [1]
    assert sorted(wide.quarantine["id"].to_pylist()) == poison.tolist()
