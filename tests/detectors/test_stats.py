import numpy as np
import pytest
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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=8), st.integers(1, 60), st.integers(0, 10_000), st.booleans())
def test_a_bounded_reader_keeps_the_same_sample(sizes, capacity, seed, string_ids):
    # a reader that copies only the rows its SampleBound admits, merged in any order,
    # keeps the very sample of the unbounded reservoir (priorities tie often here)
    from poisonscan.detectors.stats import SampleBound

    rng = np.random.default_rng(seed)
    n = sum(sizes)
    prio = rng.integers(0, 20, n).astype(np.uint64)
    pos = rng.permutation(n).astype(np.int64) * 3
    X = rng.normal(size=(n, 2)).astype(np.float32)
    ids = np.array([f"r{i}" for i in range(n)], dtype=object) if string_ids else np.arange(n)
    whole = Reservoir.from_batch(capacity, prio, pos, X, ids).sample()
    bound = SampleBound(capacity)
    parts = []
    for part in np.split(np.arange(n), np.cumsum(sizes)[:-1]):
        admitted = part[bound.admit(prio[part], pos[part])]
        assert np.all(np.diff(admitted) > 0)
        parts.append(Reservoir.from_batch(capacity, prio[admitted], pos[admitted], X[admitted], ids[admitted]))
    for order in (parts, parts[::-1]):
        merged = order[0]
        for r in order[1:]:
            merged = merged.merge(r)
        got = merged.sample()
        np.testing.assert_array_equal(got.positions, whole.positions)
        np.testing.assert_array_equal(got.X, whole.X)
        np.testing.assert_array_equal(got.ids, whole.ids)
    # the bound holds the sample's own pairs
    np.testing.assert_array_equal(np.sort(bound.positions), np.sort(whole.positions))


def test_a_bound_admits_few_rows_once_it_is_full():
    # what it is for: of 100 batches of 100 rows, a 50-row sample needs about
    # 50 * (1 + ln 200) ~ 315 rows copied, not 10,000
    from poisonscan.detectors.stats import SampleBound

    rng = np.random.default_rng(3)
    bound = SampleBound(50)
    admitted = 0
    for b in range(100):
        prio = rng.integers(0, 2**63, 100, dtype=np.uint64)
        admitted += len(bound.admit(prio, np.arange(b * 100, b * 100 + 100, dtype=np.int64)))
    assert 50 < admitted < 600


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])
def test_grouping_integer_labels_matches_a_sort_by_label(dtype):
    from poisonscan.detectors.base import group_rows_by_label

    info = np.iinfo(dtype)
    rng = np.random.default_rng(int(info.bits))
    cases = [
        rng.integers(0, 10, 5000),  # class ids: the counting sort on 8 bits
        rng.integers(0, 300, 5000) + (max(int(info.min), -150)),  # a wider range: on 16 bits
        np.array([info.min, info.max, info.min, info.max - 1], dtype=dtype),  # the type's ends (a general sort from 32 bits)
        np.array([info.max] * 3 + [info.max - 1] * 2, dtype=dtype),  # near the top: y - min must not overflow
        np.array([info.min] * 4, dtype=dtype),
    ]
    for y in cases:
        y = y.astype(dtype)
        got = group_rows_by_label(y)
        labels = sorted(set(y.tolist()))
        assert [lab for lab, _ in got] == labels
        assert all(type(lab) is int for lab, _ in got)  # plain Python values (dictionary keys)
        for lab, idx in got:
            assert np.array_equal(idx, np.flatnonzero(y == lab))  # every row, in input order


def test_the_scatter_matrix_is_exact_to_float32_whatever_the_row_order():
    """Found by the fuzz benchmark: float32 products made the scatter matrix of the same
    rows reversed differ by ~3e-7 of its largest entry, so the fitted model and every
    score differed. Float64 products differ in the last bits only, which ``rounded``
    removes; extreme magnitudes stay exact too."""
    rng = np.random.default_rng(5)

    def exact(X):
        C = X.astype(np.float64) - X.astype(np.float64).mean(0)
        return C.T @ C

    cases = {
        "class vectors": rng.normal(size=(5000, 64)) * 1.5 + 3,
        "far from the origin": 1e6 + rng.normal(size=(3000, 4)),
        "a constant column": np.c_[rng.normal(size=(500, 3)), np.full(500, 7.0)],
        "large": rng.normal(size=(200, 4)) * 1e18,
        "tiny": rng.normal(size=(135, 28)) * 1e-13,
        "one column tiny": np.c_[rng.normal(size=(200, 2)), rng.normal(size=(200, 1)) * 1e-18],
    }
    for name, X in cases.items():
        X = X.astype(np.float32)
        got, want = MeanCov.from_batch(X).m2, exact(X)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max(), err_msg=name)
        assert np.array_equal(got, got.T), name
        for order in (np.arange(len(X))[::-1], rng.permutation(len(X))):
            again = MeanCov.from_batch(X[order]).rounded()
            assert np.array_equal(again.m2, MeanCov.from_batch(X).rounded().m2), name
