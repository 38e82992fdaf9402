import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonscan.detectors import SpectralSignature

from ..conftest import planted


def fit(det, X, y, batches=1):
    acc = det.create_accumulator()
    for part in np.array_split(np.arange(len(y)), batches):
        acc = det.add_input(acc, X[part], y[part])
    return det.extract_output(acc, {})


def test_planted_group_scores_above_every_clean_row():
    X, y, poison = planted(seed=3)
    det = SpectralSignature()
    state = fit(det, X, y)
    scores = det.score(state, X, y)
    in_class = np.flatnonzero(y == 1)
    clean = np.setdiff1d(in_class, poison)
    assert scores[poison].min() > scores[clean].max()


def test_score_is_the_squared_centred_projection():
    X, y, _ = planted(seed=4, n_classes=2)
    det = SpectralSignature()
    state = fit(det, X, y)
    for label in (0, 1):
        Xc = X[y == label].astype(np.float64)
        centred = Xc - Xc.mean(0)
        v = np.linalg.svd(centred, full_matrices=False)[2][0]
        expected = (centred @ v) ** 2
        np.testing.assert_allclose(det.score(state, Xc, y[y == label]), expected, rtol=1e-4, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.floats(-1e4, 1e4), st.integers(0, 1000))
def test_scores_do_not_change_when_every_row_shifts(offset, seed):
    X, y, _ = planted(seed=seed, n_per_class=200, n_classes=2, dtype=np.float64)
    det = SpectralSignature()
    shift = np.full(X.shape[1], offset)
    a = det.score(fit(det, X, y), X, y)
    b = det.score(fit(det, X + shift, y), X + shift, y)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * (1 + np.abs(a).max()) * 1e-3)


def test_uncentred_scores_would_differ_under_shift():
    # the bug of several public implementations: scoring r.v instead of (r - mean).v
    X, y, _ = planted(seed=5, n_classes=1, poison_class=0, dtype=np.float64)
    det = SpectralSignature()
    state = fit(det, X, y)
    v = state.classes[0].direction
    shifted = X + 100.0
    assert not np.allclose((X @ v) ** 2, (shifted @ v) ** 2)
    np.testing.assert_allclose(det.score(state, X, y), det.score(fit(det, shifted, y), shifted, y), rtol=1e-6)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_split_batches_give_the_same_state(dtype, atol):
    # float32 vectors are multiplied in float32: the same state to float32 precision
    X, y, _ = planted(seed=6)
    X = X.astype(dtype)
    det = SpectralSignature()
    one = fit(det, X, y)
    many = fit(det, X, y, batches=9)
    merged = det.merge_accumulators(
        [det.add_input(det.create_accumulator(), X[p], y[p]) for p in np.array_split(np.arange(len(y)), 5)]
    )
    from_merge = det.extract_output(merged, {})
    for state in (many, from_merge):
        for label in one.classes:
            np.testing.assert_allclose(state.classes[label].mean, one.classes[label].mean, rtol=1e-12)
            np.testing.assert_allclose(
                np.abs(state.classes[label].direction), np.abs(one.classes[label].direction), atol=atol
            )


def test_permuting_rows_permutes_scores():
    X, y, _ = planted(seed=7)
    det = SpectralSignature()
    state = fit(det, X, y)
    perm = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_allclose(det.score(state, X[perm], y[perm]), det.score(state, X, y)[perm])


def test_string_labels_and_unknown_class():
    X, y, _ = planted(seed=8, n_classes=2)
    labels = np.array(["cat", "dog"], dtype=object)[y]
    det = SpectralSignature()
    state = fit(det, X, labels)
    assert set(state.classes) == {"cat", "dog"}
    with pytest.raises(ValueError, match="no fitted state"):
        det.score(state, X[:3], np.array(["bird"] * 3, dtype=object))


def shared_strong_directions(rate, seed, classes=5, per=1200, d=32, strong=6):
    """Classes that share a few strong directions of variation; in class 0 a share
    ``rate`` is shifted 4 SD along a random direction (mostly among the weak ones)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scale = np.r_[np.full(strong, 3.0), np.ones(d - strong)]
    X = np.concatenate([(rng.normal(size=(per, d)) * scale) @ basis.T + rng.normal(0, 3, d) for _ in range(classes)])
    y = np.repeat(np.arange(classes), per)
    truth = np.zeros(len(y), bool)
    if rate:
        u = rng.normal(size=d)
        idx = rng.choice(per, int(rate * per), replace=False)
        X[idx] += 4.0 * u / np.linalg.norm(u)
        truth[idx] = True
    return X.astype(np.float32), y, truth


def test_relative_spectral_finds_a_shift_under_shared_strong_directions():
    from poisonscan import scan
    from poisonscan.detectors import RelativeSpectral

    X, y, truth = shared_strong_directions(0.08, seed=1)
    # the class's own top direction is one of the shared strong ones; relative to the
    # other classes' variation, the shift's direction is the top one
    own, rel = SpectralSignature(), RelativeSpectral()
    for det in (own, rel):
        state = fit(det, X, y)
        cos = abs(state.classes[0].direction @ (X[truth].mean(0) - X[(y == 0) & ~truth].mean(0)))
        cos /= np.linalg.norm(state.classes[0].direction) * np.linalg.norm(X[truth].mean(0) - X[(y == 0) & ~truth].mean(0))
        assert (cos > 0.9) == (det is rel), (det.name, cos)
    result = scan(X, y, detectors=("spectral", "relative_spectral"), seed=0)
    flagged = np.zeros(len(y), bool)
    flagged[result.quarantine["id"].to_pylist()] = True
    assert result.summary["classes_poisoned"] == [0]
    assert (flagged & truth).sum() / flagged.sum() >= 0.9 and (flagged & truth).sum() / truth.sum() >= 0.7
    clean = scan(*shared_strong_directions(0, seed=1)[:2], detectors=("spectral", "relative_spectral"), seed=0)
    assert clean.quarantine.num_rows == 0 and clean.summary["classes_poisoned"] == []


def test_relative_spectral_with_one_class_is_the_spectral_signature():
    from poisonscan.detectors import RelativeSpectral

    X, y, _ = planted(seed=5)
    one = y == 1
    a = fit(SpectralSignature(), X[one], y[one]).classes[1].direction
    b = fit(RelativeSpectral(), X[one], y[one]).classes[1].direction
    assert abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_a_searched_split_wider_than_the_main_mass_is_a_tail_not_a_shifted_copy(seed):
    """The search of the lower principal directions looks for shifted copies of some of a
    class's rows, which keep the class's spread. A skewed or heavy tail also fits two
    Gaussians, as a wider minor component a little way off: refused. Shifted copies (1-25 %
    of the rows, 4-6 SD) and groups tighter than the class are kept."""
    from poisonscan.detectors import fit_two_groups
    from poisonscan.detectors.spectral import wider_than_a_shifted_copy

    def tail(x):
        return wider_than_a_shifted_copy(fit_two_groups(x))

    rng = np.random.default_rng(seed)
    for share, shift in ((0.01, 6.0), (0.03, 5.0), (0.10, 4.0), (0.25, 4.0)):
        group = int(share * 4000)
        copy = np.r_[rng.normal(size=4000 - group), rng.normal(shift, 1.0, group)]
        assert not tail(copy), (share, shift)
    tight = np.r_[rng.normal(size=3880), rng.normal(5.0, 0.5, 120)]
    assert not tail(tight)
    wide_tail = np.r_[rng.normal(size=3200), rng.normal(-1.5, 3.0, 800)]
    assert tail(wide_tail)
    assert tail(rng.gamma(2.0, size=4000))  # skewed, one group


def test_only_principal_directions_that_hold_variance_are_searched():
    """Columns that never vary (a blank pixel, a dead unit) give principal directions of
    float rounding: their projections are a few stray values, not a group, so they are
    not searched; with ``directions=None`` every direction that holds variance is."""
    from poisonscan.detectors.spectral import searchable
    from poisonscan.detectors.stats import ClassSample

    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(size=(600, 40)), np.full((600, 24), 0.5)]).astype(np.float32)
    y = np.repeat([0, 1], 300)
    assert searchable(np.linalg.eigvalsh(np.cov(X[y == 0].astype(np.float64), rowvar=False))) == 40
    assert searchable(np.zeros(5)) == 1
    samples = {c: ClassSample(X[y == c], np.flatnonzero(y == c), np.flatnonzero(y == c)) for c in (0, 1)}

    def searched(det):
        state = det.extract_output(det.add_input(det.create_accumulator(), X, y), samples)
        return {c: state.classes[c].pending[2].shape[1] for c in (0, 1)}

    assert searched(SpectralSignature(directions=None)) == {0: 40, 1: 40}
    assert searched(SpectralSignature()) == {0: 32, 1: 32}
    assert searched(SpectralSignature(directions=64)) == {0: 40, 1: 40}
