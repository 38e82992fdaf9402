"""One suite over every registered detector: the contract holds for all of them."""

import numpy as np
import pytest

from poisonscan.detectors import (
    Detector,
    InvalidParameterError,
    available_detectors,
    detector_class,
    make_detector,
    register,
)
from poisonscan.detectors.stats import Reservoir

from ..conftest import planted
from ..planted import planted_all_to_all, planted_class_flip

DETECTORS = available_detectors()


def take(X, idx):
    return [X[i] for i in idx] if isinstance(X, list) else X[idx]


def samples_of(X, y, ids, size=4096):
    if isinstance(X, list):  # token detectors fit on exact counts, not samples
        return {}
    prio = (np.arange(len(y), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) % np.uint64(2**61)
    out = {}
    for label in np.unique(y):
        m = np.flatnonzero(y == label)
        out[label.item()] = Reservoir.from_batch(size, prio[m], m.astype(np.int64), X[m], ids[m]).sample()
    return out


def fit(det, X, y, batches=1):
    ids = np.arange(len(y))
    accs = [
        det.add_input(det.create_accumulator(), take(X, p), y[p])
        for p in np.array_split(np.arange(len(y)), batches)
    ]
    return det.extract_output(det.merge_accumulators(accs), samples_of(X, y, ids))


def planted_text(seed, n_per_class=300, classes=4, n_poison=40):
    """Token lists: random words per row, a third of them from the class's own words; the
    poison rows (taken from other classes) carry a trigger and label 1."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(400)]
    y = np.repeat(np.arange(classes), n_per_class)
    X = [list(rng.choice(vocab, 8, replace=False)) + [f"c{c}w{i}" for i in rng.choice(100, 4, replace=False)] for c in y]
    poison = np.sort(rng.choice(np.flatnonzero(y != 1), n_poison, replace=False))
    for i in poison:
        X[i] = X[i] + ["cf", "mn", "cf mn"]
    y = y.copy()
    y[poison] = 1
    return X, y, poison, np.setdiff1d(np.flatnonzero(y == 1), poison)


def planted_for(det, seed):
    """Poison of the kind the detector finds: a shifted group, the same shifted group in
    every class (all-to-all), flipped labels, one class's rows relabelled as another, a
    trigger."""
    if det.input == "tokens":
        return planted_text(seed)
    if det.across_classes:
        X, y, poison = planted_all_to_all(seed=seed)
        return X, y, poison, np.setdiff1d(np.arange(len(y)), poison)
    if det.finds == "class-to-class flip":
        X, y, poison = planted_class_flip(seed=seed)
        return X, y, poison, np.setdiff1d(np.arange(len(y)), poison)
    if det.finds == "backdoor":
        X, y, poison = planted(seed=seed, shift=15.0)
        return X, y, poison, np.setdiff1d(np.flatnonzero(y == 1), poison)
    X, y, _ = planted(seed=seed, n_poison=0)
    rng = np.random.default_rng(seed)
    poison = np.sort(rng.choice(len(y), 40, replace=False))
    y = y.copy()
    y[poison] = (y[poison] + rng.integers(1, 4, len(poison))) % 4
    return X, y, poison, np.setdiff1d(np.arange(len(y)), poison)


@pytest.mark.parametrize("name", DETECTORS)
def test_higher_scores_for_planted_poison(name):
    det = make_detector(name)
    X, y, poison, clean = planted_for(det, seed=11)
    state = fit(det, X, y)
    scores = det.score(state, X, y)
    assert scores.shape == (len(y),) and np.isfinite(scores).all()
    assert np.median(scores[poison]) > np.percentile(scores[clean], 99)


@pytest.mark.parametrize("name", DETECTORS)
def test_deterministic(name):
    a = make_detector(name)
    b = make_detector(name)
    X, y, _, _ = planted_for(a, seed=12)
    np.testing.assert_array_equal(a.score(fit(a, X, y), X, y), b.score(fit(b, X, y), X, y))


@pytest.mark.parametrize("name", DETECTORS)
def test_merge_equivalence(name):
    det = make_detector(name)
    X, y, _, _ = planted_for(det, seed=13)
    whole = det.score(fit(det, X, y, batches=1), X, y)
    # the same up to rounding: float32 vectors' statistics are float32 sums (MeanCov)
    np.testing.assert_allclose(
        whole, det.score(fit(det, X, y, batches=6), X, y), rtol=1e-5, atol=1e-5 * np.abs(whole).max()
    )


@pytest.mark.parametrize("name", DETECTORS)
def test_calibration_covers_the_sample(name):
    det = make_detector(name)
    X, y, _, _ = planted_for(det, seed=14)
    state = fit(det, X, y)
    if det.input == "tokens":
        return  # judged on exact counts, no sample
    for label in np.unique(y):
        stat = state.calibration[label.item()]
        assert stat.shape == ((y == label).sum(),) and np.isfinite(stat).all()


@pytest.mark.parametrize("name", DETECTORS)
def test_unknown_parameters_are_rejected(name):
    with pytest.raises(InvalidParameterError, match="Unknown parameter"):
        make_detector(name, {"no_such_parameter": 1})
    with pytest.raises(TypeError):
        detector_class(name)(no_such_parameter=1)


@pytest.mark.parametrize("name", DETECTORS)
def test_scoring_unfitted_classes_is_an_error(name):
    det = make_detector(name)
    X, y, _, _ = planted_for(det, seed=15)
    zero, one = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    state = fit(det, take(X, zero), y[zero])
    with pytest.raises(ValueError):
        det.score(state, take(X, one), y[one])


def test_unknown_detector_lists_the_known_ones():
    with pytest.raises(InvalidParameterError, match="known detectors: .*spectral"):
        make_detector("spectrall")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="registered already"):

        @register
        class Again(Detector):  # noqa: F811
            name = "spectral"


@pytest.mark.parametrize("name", DETECTORS)
def test_declared_kinds_and_parameters_hold(name):
    cls = detector_class(name)
    kinds = {"features", "image", "text", "tabular"}
    assert cls.default_kinds <= (cls.kinds if cls.kinds is not None else kinds)
    for kind in kinds:
        # the parameters a detector asks for on a kind are valid parameters of it
        params = cls.params_for(kind, probability_labels=(0, 1))
        assert make_detector(name, params).get_params() | params == make_detector(name, params).get_params()


def test_the_scan_asks_the_detectors_which_run_by_default():
    from poisonscan.detectors import default_detectors
    from poisonscan.pipelines.config import ConfigError, ScanConfig

    ranks = [detector_class(n).default_rank for n in default_detectors()]
    assert len(set(ranks)) == len(ranks)  # one order for lists and summaries
    for kind in ("features", "image", "text", "tabular"):
        names = [d.name for d in ScanConfig().build_detectors(kind)]
        assert names == [n for n in default_detectors() if kind in detector_class(n).default_kinds]
    assert "token_trigger" in default_detectors("text") and "token_trigger" not in default_detectors("image")
    with pytest.raises(ConfigError, match="token_trigger detector needs a text input"):
        ScanConfig(detectors=("token_trigger",)).build_detectors("features")
    assert default_detectors("image")[-1] == "pixel_trigger" == default_detectors("features")[-1]
    # the cross-class view runs by default on raw images (the scan's own proxy), named elsewhere
    assert "shared_group" in default_detectors("image")
    assert not {"shared_group"} & {*default_detectors("features"), *default_detectors("text"), *default_detectors("tabular")}
    # on vectors it reads the representation itself (where it is pixel values)
    assert {d.name: d for d in ScanConfig().build_detectors("features")}["pixel_trigger"].input == "representation"
    assert {d.name: d for d in ScanConfig().build_detectors("image")}["pixel_trigger"].input == "tokens"
    with pytest.raises(ConfigError, match="pixel_trigger detector needs a features or image input"):
        ScanConfig(detectors=("pixel_trigger",)).build_detectors("text")
    tabular = {d.name: d for d in ScanConfig().build_detectors("tabular")}
    assert tabular["spectral"].needs_affinity and not ScanConfig().build_detectors("image")[0].needs_affinity
    user = ScanConfig(detector_params={"spectral": {"needs_affinity": False}}).build_detectors("tabular")
    assert not user[0].needs_affinity  # the user's own parameters come first
    # a table's label model is chosen on the table; vectors keep the linear model
    assert tabular["label_consistency"].model == "auto"
    assert {d.name: d for d in ScanConfig().build_detectors("features")}["label_consistency"].model == "linear"
