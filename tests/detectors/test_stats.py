import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonscan.detectors import MeanCov, Reservoir


def test_meancov_matches_numpy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 5))
    s = MeanCov.from_batch(X)
    assert s.n == 1000
    np.testing.assert_allclose(s.mean, X.mean(0))
    np.testing.assert_allclose(s.covariance(), np.cov(X, rowvar=False), rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=6), st.integers(0, 10_000))
def test_merging_split_batches_equals_one_batch(sizes, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(sum(sizes), 3)) * 5 + 2
    whole = MeanCov.from_batch(X)
    parts = np.split(X, np.cumsum(sizes)[:-1])
    merged = MeanCov.empty(3)
    for part in parts:
        merged = merged.merge(MeanCov.from_batch(part))
    assert merged.n == whole.n
    np.testing.assert_allclose(merged.mean, whole.mean, atol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9, atol=1e-9)


def test_stable_far_from_the_origin():
    # raw sums of squares lose every digit here; the pairwise update does not
    rng = np.random.default_rng(1)
    X = 1e9 + rng.normal(size=(20_000, 2))
    merged = MeanCov.empty(2)
    for part in np.array_split(X, 50):
        merged = merged.merge(MeanCov.from_batch(part))
    np.testing.assert_allclose(merged.covariance(), np.cov(X - 1e9, rowvar=False), rtol=1e-6)


def test_reservoir_independent_of_arrival_order_and_split():
    rng = np.random.default_rng(2)
    n = 500
    prio = rng.integers(0, 2**63, n, dtype=np.uint64)
    pos = np.arange(n, dtype=np.int64)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    ids = np.arange(n)
    whole = Reservoir.from_batch(50, prio, pos, X, ids).sample()
    perm = rng.permutation(n)
    parts = np.array_split(perm, 7)
    merged = None
    for part in parts[::-1]:
        r = Reservoir.from_batch(50, prio[part], pos[part], X[part], ids[part])
        merged = r if merged is None else merged.merge(r)
    got = merged.sample()
    np.testing.assert_array_equal(got.positions, whole.positions)
    np.testing.assert_array_equal(got.X, whole.X)
    assert len(got) == 50
    # bottom-k by priority
    np.testing.assert_array_equal(np.sort(got.positions), np.sort(pos[np.argsort(prio)[:50]]))
