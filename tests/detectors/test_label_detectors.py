"""Label consistency, kNN labels, activation clustering and how verdicts combine."""

import numpy as np
import pytest

from poisonscan.detectors import (
    ActivationClustering,
    ExcessTest,
    GroupTest,
    KnnLabel,
    LabelConsistency,
)
from poisonscan.detectors.decision import ClassVerdict, combine
from poisonscan.detectors.excess import Disputed
from poisonscan.detectors.stats import ClassSample


def blobs(n_per_class=300, classes=5, d=12, seed=0, spread=6.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(classes, d))
    y = np.repeat(np.arange(classes), n_per_class)
    X = centers[y] + rng.normal(size=(len(y), d))
    return X, y, centers


def samples_of(X, y):
    return {
        int(c): ClassSample(X[y == c].astype(np.float32), np.flatnonzero(y == c).astype(np.int64), np.flatnonzero(y == c))
        for c in np.unique(y)
    }


def flip(y, n, seed=0, classes=5):
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(y), n, replace=False))
    y = y.copy()
    y[idx] = (y[idx] + rng.integers(1, classes, n)) % classes
    return y, idx


def verdicts_and_flags(det, X, y):
    state = det.extract_output({}, samples_of(X, y))
    flags = np.zeros(len(y), bool)
    verdicts = {}
    for c in np.unique(y):
        verdicts[int(c)] = det.judge(state, int(c), int((y == c).sum()), GroupTest())
    if det.calibrated:  # the second step: each class against its peers
        from poisonscan.detectors import judge_scan
        from poisonscan.detectors._pooled import Pooled

        pooled = Pooled.of(samples_of(X, y))
        verdicts = judge_scan(
            verdicts, GroupTest().level(len(verdicts)),
            lambda label, v: det.group_affinity(state, v, pooled, label),
            peer_floor=det.peer_floor, alone_by_affinity=det.alone_by_affinity,
        )
    for c in np.unique(y):
        m = y == c
        flags[m] = verdicts[int(c)].flags(det.statistic(state, X[m], y[m]))
    return state, verdicts, flags


def test_flipped_labels_are_found_by_both_label_detectors():
    X, y, _ = blobs()
    y_bad, flipped = flip(y, 60)
    truth = np.zeros(len(y), bool)
    truth[flipped] = True
    for det in (LabelConsistency(), KnnLabel()):
        _, verdicts, flags = verdicts_and_flags(det, X, y_bad)
        assert all(v.poisoned for v in verdicts.values()), det.name
        assert flags[truth].mean() > 0.9 and flags[~truth].mean() < 0.01, det.name


def test_clean_labels_give_clean_verdicts():
    X, y, _ = blobs(seed=1)
    for det in (LabelConsistency(), KnnLabel()):
        _, verdicts, flags = verdicts_and_flags(det, X, y)
        assert not any(v.poisoned for v in verdicts.values()), det.name
        assert not flags.any()


def test_knn_reason_names_the_neighbours():
    X, y, _ = blobs(seed=2)
    y_bad, flipped = flip(y, 30, seed=2)
    det = KnnLabel()
    state = det.extract_output({}, samples_of(X, y_bad))
    i = flipped[0]
    text = det.describe(state, X[[i]], y_bad[[i]], np.array([1.0]), np.array([5.0]))[0]
    assert f"label {y_bad[i]} disagrees with" in text and f"of them {y[i]})" in text


def _judged(test, evidence, redraw):
    shares = test.resample(evidence, redraw, seed=0)
    return {c: test.decide(c, "d", np.zeros(e[1]), e[1], 0.0, Disputed(e[0], e[2], len(evidence), test.spread(evidence, c), shares[c]))
            for c, e in evidence.items()}


def _poisson_redraw(means, rows=1000):
    """Redraws whose counts follow the Poisson model at the given true means, each with the
    expected count the calibration reports (``means`` as (true, reported) per class)."""
    return lambda rng: {c: (int(rng.poisson(true)), rows, reported) for c, (true, reported) in means.items()}


def test_excess_test_needs_more_than_its_redraws_show():
    test = ExcessTest(alpha=0.05)
    # 12 strong disagreements where the calibration expects 10, and redraws agree: chance
    v = _judged(test, {0: (12, 1000, 10.0), 1: (10, 1000, 10.0)}, _poisson_redraw({0: (10, 10.0), 1: (10, 10.0)}))
    assert not v[0].poisoned and v[0].p_value > 0.2 and v[0].level == 0.05
    assert v[0].extra["redraws"] < 100  # no class could reach its level: redrawing stopped early
    # 40 where it expects 10: flipped labels, beyond every redraw
    v = _judged(test, {0: (40, 1000, 10.0), 1: (10, 1000, 10.0)}, _poisson_redraw({0: (10, 10.0), 1: (10, 10.0)}))
    assert v[0].poisoned and v[0].p_value < 0.02 and "about 10.0" in v[0].note and not v[1].poisoned
    assert v[0].extra["redraws"] == 100 and v[0].extra["poisson_p_value"] < 1e-9
    # a calibration that understates what clean labels give (expects 10 where redraws
    # without flips show 25): the Poisson tail says p < 1e-4, the redraws say chance
    v = _judged(test, {0: (25, 1000, 10.0), 1: (10, 1000, 10.0)}, _poisson_redraw({0: (25, 10.0), 1: (10, 10.0)}))
    assert v[0].extra["poisson_p_value"] < 1e-4 and not v[0].poisoned and v[0].p_value > 0.2
    # deterministic for a seed
    again = _judged(test, {0: (25, 1000, 10.0), 1: (10, 1000, 10.0)}, _poisson_redraw({0: (25, 10.0), 1: (10, 10.0)}))
    assert again[0].p_value == v[0].p_value



def test_a_label_a_model_predicts_poorly_is_not_called_flipped():
    # overlapping classes whose labels are drawn from a logistic model (3 % positives):
    # many rows disagree with any model, and the calibration expects them
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4000, 6))
    logit = -4.2 + 1.5 * X[:, 0] + 0.8 * X[:, 1]
    y = (rng.random(4000) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    for det in (LabelConsistency(), KnnLabel()):
        _, verdicts, flags = verdicts_and_flags(det, X, y)
        assert not any(v.poisoned for v in verdicts.values()), (det.name, [v.note for v in verdicts.values()])
        assert all(v.p_value is not None and v.level is not None for v in verdicts.values())


def test_a_label_that_depends_on_columns_jointly_is_not_called_flipped():
    # clean labels that follow x0, reversed where x1 > 0.8 (as survival follows sex,
    # except in some classes): a linear model is confidently wrong in that region, and
    # labels drawn from it cannot show that; trees hold the interaction
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    sign = np.where(X[:, 1] > 0.8, -1.0, 1.0)
    y = (rng.random(3000) < 1 / (1 + np.exp(-4 * sign * X[:, 0]))).astype(np.int64)
    state, verdicts, flags = verdicts_and_flags(LabelConsistency(model="linear"), X, y)
    assert all(v.poisoned for v in verdicts.values())  # the misspecified null
    state, verdicts, flags = verdicts_and_flags(LabelConsistency(model="auto"), X, y)
    choice = state.info["model_choice"]
    assert choice["chosen"] != "linear" and choice["weights"]["trees"] > 0.5
    assert choice["log_loss"]["trees"] < choice["log_loss"]["linear"]
    assert choice["log_loss"][choice["chosen"]] <= min(choice["log_loss"].values())
    assert not any(v.poisoned for v in verdicts.values()) and not flags.any()
    # random flips are noise no model of the columns learns: they do not make trees win
    X, y, _ = blobs()
    y_bad, _ = flip(y, 60)
    state = LabelConsistency(model="auto").extract_output({}, samples_of(X, y_bad))
    assert state.info["model_choice"]["chosen"] == "linear"


def sex_and_class_table(n=2000, seed=0):
    """Sex, one of three classes (one-hot) and an age group: 42 distinct rows; the label
    decided by sex and class together, less with age."""
    rng = np.random.default_rng(seed)
    sex, pclass = rng.integers(0, 2, n), rng.choice(3, n, p=[0.25, 0.2, 0.55])
    age = rng.integers(1, 8, n).astype(float)
    logit = np.where(sex == 1, np.array([3.0, 2.0, 0.0])[pclass], np.array([-0.5, -1.8, -1.9])[pclass])
    y = (rng.random(n) < 1 / (1 + np.exp(-(logit - 0.2 * (age - 3))))).astype(np.int64)
    return np.column_stack([sex, np.eye(3)[pclass], age]), y


def test_a_label_decided_by_two_categorical_columns_together_is_not_called_flipped():
    # a table of few distinct rows (sex, one of three classes, an age group: 42 in 2,000
    # rows) whose label is decided by sex and class together: the linear null is
    # confidently wrong for whole cells and judges a class; the quadratic model (columns
    # and their products) holds the interaction and fits better out of fold than the
    # other two: it carries the mixture that is the null
    X, y = sex_and_class_table()
    _, verdicts, _ = verdicts_and_flags(LabelConsistency(model="linear"), X, y)
    assert verdicts[1].poisoned
    state, verdicts, flags = verdicts_and_flags(LabelConsistency(model="auto"), X, y)
    loss = state.info["model_choice"]["log_loss"]
    weights = state.info["model_choice"]["weights"]
    assert loss["quadratic"] < min(loss["linear"], loss["trees"]) and weights["quadratic"] > 0.5
    # the reviewer reads which null the verdict was made against
    assert "labels judged against a mixture of models of the columns (weights: linear" in verdicts[1].note
    # columns that do not vary (none at all, or not in one fold's training rows) fit
    from poisonscan.detectors._pooled import QuadraticModel

    rare = np.column_stack([np.zeros(200), np.r_[np.ones(3), np.zeros(197)]])
    for X, kinds in ((np.zeros((200, 3)), {"linear", "trees"}), (rare, {"linear", "quadratic", "trees"})):
        state = LabelConsistency(model="auto").extract_output({}, samples_of(X, np.repeat([0, 1], 100)))
        loss = state.info["model_choice"]["log_loss"]
        assert kinds <= set(loss) and all(np.isfinite(v) for v in loss.values())
    p = QuadraticModel.fit(np.zeros((10, 2)), np.repeat([0, 1], 5), 0.1).proba(np.ones((3, 2)), 2)
    assert np.allclose(p, 0.5)
    assert not any(v.poisoned for v in verdicts.values()) and not flags.any()


def test_a_binary_class_with_flips_is_found():
    X, y, _ = blobs(n_per_class=300, classes=2, seed=7, spread=1.5)
    rng = np.random.default_rng(7)
    idx = rng.choice(np.flatnonzero(y == 1), 36, replace=False)  # 12 % of class 1 -> 0
    y_bad = y.copy()
    y_bad[idx] = 0
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    det = LabelConsistency()
    _, verdicts, flags = verdicts_and_flags(det, X, y_bad)
    assert verdicts[0].poisoned and verdicts[0].p_value < verdicts[0].level, verdicts[0].note
    assert not verdicts[1].poisoned
    assert flags[truth].mean() > 0.8 and flags[~truth].mean() < 0.01


def test_label_evidence_counts_only_when_the_label_detectors_agree():
    def v(p):
        return ClassVerdict(label=0, detector="x", poisoned=p, class_rows=10, sample_rows=10, note="")

    finds = {"spectre": "backdoor", "label_consistency": "flipped labels", "knn_label": "flipped labels"}
    assert combine({"spectre": v(True), "label_consistency": v(False), "knn_label": v(True)}, finds) == {
        "spectre": True, "label_consistency": False, "knn_label": False,
    }
    assert combine({"spectre": v(False), "label_consistency": v(True), "knn_label": v(True)}, finds) == {
        "spectre": False, "label_consistency": True, "knn_label": True,
    }


def half_poisoned_class(seed=0):
    """Class 0 is half poison: rows of classes 1-4 moved by a shared offset (a trigger)."""
    X, y, centers = blobs(n_per_class=400, seed=seed, spread=4.0)
    rng = np.random.default_rng(seed)
    src = rng.choice(np.flatnonzero(y != 0), 400, replace=False)
    trigger = np.zeros(X.shape[1])
    trigger[:3] = 25.0
    Xp = np.concatenate([X, X[src] + trigger])
    yp = np.concatenate([y, np.zeros(400, dtype=np.int64)])
    truth = np.concatenate([np.zeros(len(y), bool), np.ones(400, bool)])
    return Xp, yp, truth


def test_activation_clustering_picks_the_cluster_that_looks_like_other_classes():
    X, y, truth = half_poisoned_class()
    det = ActivationClustering(rows_per_class=2000)
    state, verdicts, flags = verdicts_and_flags(det, X, y)
    assert verdicts[0].poisoned, verdicts[0].note
    assert not any(verdicts[c].poisoned for c in (1, 2, 3, 4))
    assert flags[truth].mean() > 0.95 and flags[~truth].mean() < 0.01


def test_activation_clustering_ignores_a_natural_split():
    # two well-separated sub-populations of class 0, neither resembling another class
    X, y, _ = blobs(n_per_class=400, seed=4)
    X = X.copy()
    X[np.flatnonzero(y == 0)[:150], 5:8] += 9.0
    det = ActivationClustering(rows_per_class=2000)
    _, verdicts, flags = verdicts_and_flags(det, X, y)
    assert not verdicts[0].poisoned, verdicts[0].note
    assert not flags.any()


def test_thin_flips_need_only_weak_evidence_once_the_data_hold_flips():
    test = ExcessTest(alpha=0.05, class_alpha=0.05)
    clean = _poisson_redraw({c: (0.9, 0.9) for c in range(10)}, rows=180)
    # 4 strong disagreements where 0.9 are expected (Poisson p ~ 0.013): alone, among ten
    # classes' redraws, some class shows that often
    alone = {0: (4, 180, 0.9), **{c: (1, 180, 0.9) for c in range(1, 10)}}
    v = _judged(test, alone, clean)[0]
    assert not v.poisoned and v.p_value > 0.025 and v.level == 0.05 / 2
    evidence = {0: (4, 180, 0.9), **{c: (9, 180, 0.9) for c in range(1, 10)}}  # 9 flips each
    pooled = test.spread(evidence, 0)
    assert pooled[0] == 72 and abs(pooled[1] - 8 * 0.9) < 1e-9 and pooled[2] < 1e-30  # itself and one other left out
    v = _judged(test, evidence, clean)[0]
    assert v.poisoned and "the other classes hold flipped labels too" in v.note and v.level == 0.05
    # one flipped class (a targeted flip) does not lower the bar for the others
    targeted = {0: (4, 180, 0.9), **{c: (1, 180, 0.9) for c in range(1, 10)}}
    targeted[7] = (60, 180, 0.9)
    assert test.spread(targeted, 0)[2] > 0.05 / 20
    v = _judged(test, targeted, clean)
    assert not v[0].poisoned and v[7].poisoned
    # nor can the class judged speak for itself, and two classes pool nothing
    assert test.spread({0: (4, 180, 0.9), 1: (9, 180, 0.9)}, 0) is None



def spectral_affinity(X, y, **params):
    """First-step verdicts of spectral and the affinity test of each class's group."""
    from poisonscan.detectors import SpectralSignature
    from poisonscan.detectors._pooled import Pooled

    det = SpectralSignature(**params)
    state = det.extract_output(det.add_input(det.create_accumulator(), X, y), samples_of(X, y))
    pooled = Pooled.of(samples_of(X, y))
    out = {}
    for c in np.unique(y):
        v = det.judge(state, int(c), int((y == c).sum()), GroupTest())
        out[int(c)] = (v, det.group_affinity(state, v, pooled, int(c)))
    return out


def test_a_group_of_poison_looks_like_other_classes():
    # poison taken from other classes (with a trigger): its rows look like them
    X, y, truth = half_poisoned_class()
    keep = np.flatnonzero(~truth | (np.cumsum(truth) <= 60))  # 60 poison rows: a minority
    first, (means, p) = spectral_affinity(X[keep], y[keep])[0]
    assert first.extra["candidate"] and means[1] > means[0] and p < 1e-6
    # a natural sub-population, far from every other class, does not
    X, y, _ = blobs(n_per_class=400, seed=4)
    X = X.copy()
    X[np.flatnonzero(y == 0)[:60], 5:8] += 12.0
    first, (means, p) = spectral_affinity(X, y)[0]
    assert first.extra["candidate"] and p > 0.01


def test_neighbours_tied_at_the_kth_distance_all_count():
    # a table whose columns take few values: 30 identical rows, 9 of them labelled 1
    # (30 %), and 40 rows elsewhere. Which 10 of the 29 copies are "the 10 nearest" would be
    # decided by their order; all of them count, so every copy sees the cell's own rate
    from poisonscan.detectors._pooled import Pooled
    from poisonscan.detectors.knn_label import neighbour_counts, project, reference_set

    X = np.vstack([np.zeros((30, 3)), np.random.default_rng(0).normal(5, 1, size=(40, 3))])
    y = np.r_[np.ones(9, int), np.zeros(21, int), np.zeros(40, int)]
    pooled = Pooled.of(samples_of(X, y))
    knn = reference_set(pooled, 3)
    counts = neighbour_counts(knn, knn.refs, 10, pooled.positions)
    cell = np.flatnonzero(np.isin(pooled.positions, np.arange(30)))
    assert (counts[cell].sum(axis=1) == 29).all()  # the row itself left out, every copy in
    own = pooled.codes[cell]
    assert (counts[cell, 1] == 9 - own).all()
    # pass 2 meets the same rows: one copy with the row's own label is left out, as in pass 1
    again = neighbour_counts(knn, project(knn, X[pooled.positions[cell]]), 10, own_codes=own)
    assert (again == counts[cell]).all()


def test_a_tree_label_model_survives_a_data_only_state():
    # a saved scan state is read back with an unpickler that builds data only; the trees
    # are kept as their training rows and fitted again, identically, when read
    import io
    import pickle

    from poisonscan.detectors._pooled import TreeModel
    from poisonscan.pipelines.scan.state import _DataOnly

    X, y, _ = blobs(n_per_class=60, classes=3, seed=4)
    model = TreeModel.fit(X, y, seed=0)
    back = _DataOnly(io.BytesIO(pickle.dumps(model))).load()
    assert np.array_equal(back.proba(X, 3), model.proba(X, 3))
    # a whole state whose null is the mixture of the three models scores alike when read
    X, y = sex_and_class_table()
    det = LabelConsistency(model="auto")
    state = det.extract_output({}, samples_of(X, y))
    assert state.info["model_choice"]["chosen"] == "mixture"
    back = _DataOnly(io.BytesIO(pickle.dumps(state))).load()
    assert np.array_equal(det.score(back, X, y), det.score(state, X, y))


def test_mixture_weights_maximise_the_out_of_fold_likelihood():
    from poisonscan.detectors.label_consistency import _log_loss, mixture_weights

    rng = np.random.default_rng(0)
    truth = rng.dirichlet(np.ones(3), size=2000)
    codes = np.array([rng.choice(3, p=p) for p in truth])
    blurred = 0.5 * truth + 0.5 / 3
    # the true probabilities take (almost) all the weight from a blurred copy and noise
    w = mixture_weights([blurred, truth, np.full_like(truth, 1 / 3)], codes)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.9
    # two halves of the truth, each right on its own rows: the mixture beats both
    half = np.arange(2000) < 1000
    a = np.where(half[:, None], truth, 1 / 3)
    b = np.where(half[:, None], 1 / 3, truth)
    w = mixture_weights([a, b], codes)
    mixed = w[0] * a + w[1] * b
    assert _log_loss(mixed, codes) < min(_log_loss(a, codes), _log_loss(b, codes))
    assert 0.3 < w[0] < 0.7


def test_the_f1_cut_flags_the_rows_that_maximise_the_expected_f1():
    """Brute force over every count of most-likely rows; every row more likely a flip
    than not is always flagged (the best cut is at half the F1 it reaches)."""
    from poisonscan.detectors._pooled import f1_cut

    rng = np.random.default_rng(0)
    for _ in range(20):
        z = rng.normal(-2.0, 2.0, size=rng.integers(5, 300))
        pi = 1 / (1 + np.exp(-z))
        cut = f1_cut(z)
        flagged = z > cut
        expected = [2 * pi[z >= t].sum() / ((z >= t).sum() + pi.sum()) for t in z]
        assert 2 * pi[flagged].sum() / (flagged.sum() + pi.sum()) == pytest.approx(max(expected))
        assert flagged[pi > 0.5].all()
    assert f1_cut(np.empty(0)) == 0.0


def test_the_calibration_takes_out_a_prior_shift_instead_of_reading_it_as_flips():
    """Probabilities from a model fitted to other class shares (30 % of class 1) than the
    sample's (half): without the shift the floors read the mismatch as 20 % flips into
    class 1; with it the floors stay near 0 and the shift is the log of the shares' odds."""
    from poisonscan.detectors._pooled import NoiseCalibration

    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * x))).astype(np.int64)
    z = 1.5 * x + np.log(0.3 / 0.7)
    P = np.c_[1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))]
    plain = NoiseCalibration.fit(P, y)
    assert plain.floors[1] > 0.15
    shifted = NoiseCalibration.fit(P, y, shift=True)
    assert shifted.floors.sum() < 0.01
    assert shifted.temperature == pytest.approx(0.75, abs=0.05)
    assert shifted.bias[1] - shifted.bias[0] == pytest.approx(np.log(0.7 / 0.3) / 0.75, abs=0.1)
    null = NoiseCalibration.without_flips(P, y, shift=True)
    assert null.bias[1] - null.bias[0] == pytest.approx(shifted.bias[1] - shifted.bias[0], abs=0.05)
