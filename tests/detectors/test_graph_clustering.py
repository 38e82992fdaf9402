import numpy as np

from poisonscan import scan
from poisonscan.detectors import GraphClustering


def weak_direction_group(rate, seed, classes=5, per=600, d=32, shift=8.0):
    """Classes with eight strong directions (sd 3) over unit noise; in class 0 a share
    ``rate`` of the rows is moved ``shift`` along a direction among the weak ones."""
    rng = np.random.default_rng(seed)
    scale = np.r_[np.full(8, 3.0), np.ones(d - 8)]
    X = np.concatenate([rng.normal(size=(per, d)) * scale + rng.normal(0, 6, d) for _ in range(classes)])
    y = np.repeat(np.arange(classes), per)
    truth = np.zeros(len(y), bool)
    if rate:
        idx = rng.choice(per, int(rate * per), replace=False)
        u = np.r_[np.zeros(8), rng.normal(size=d - 8)]
        X[idx] += shift * u / np.linalg.norm(u)
        truth[idx] = True
    return X.astype(np.float32), y, truth


def flagged(result, n):
    out = np.zeros(n, bool)
    out[result.quarantine["id"].to_pylist()] = True
    return out


def test_the_scan_judges_the_class_whose_rows_group_on_the_graph_and_spares_clean_data():
    X, y, truth = weak_direction_group(0.08, seed=0)
    result = scan(X, y, detectors=("graph_clustering",), seed=0)
    got = flagged(result, len(y))
    assert result.summary["classes_poisoned"] == [0]
    assert (got & truth).sum() / got.sum() >= 0.9 and (got & truth).sum() / truth.sum() >= 0.9
    reason = result.quarantine["reason"].to_pylist()[0]
    assert "separate cluster" in reason
    for seed in range(3):
        X, y, _ = weak_direction_group(0.0, seed=seed)
        clean = scan(X, y, detectors=("graph_clustering",), seed=0)
        assert clean.summary["classes_poisoned"] == [] and clean.quarantine.num_rows == 0


def test_a_few_rows_cut_off_from_the_graph_do_not_hold_the_split():
    # three near-identical rows far from the class form a component of their own: a
    # repeated eigenvalue would make the vector any mix of the parts; the vector is the
    # largest component's, those rows take its median, and the planted group is split off
    rng = np.random.default_rng(1)
    main = rng.normal(size=(400, 6))
    group = rng.normal(size=(40, 6)) * 0.6 + np.r_[4.0, np.zeros(5)]
    far = np.full((3, 6), 40.0) + rng.normal(size=(3, 6)) * 1e-3
    Z = np.concatenate([main, group, far])
    f = GraphClustering(n_components=6)._fiedler((Z - Z.mean(0)) / Z.std(0))
    in_group = np.r_[np.zeros(400, bool), np.ones(40, bool), np.zeros(3, bool)]
    f = f * np.sign(f[in_group].mean() - f[:400].mean())
    assert f[in_group].min() > np.percentile(f[:400], 99)
    assert np.all(f[-3:] == np.median(f[:-3]))


def test_near_copies_and_rows_without_neighbours_neither_stop_the_scan_nor_make_a_group():
    # most rows have near-copies, a few none: their edges are ~1e-200, whose products
    # underflowed to 0 / 0 ("array must not contain infs or NaNs"); and a class of many
    # small clumps has no one split: the vector is the largest clump's
    rng = np.random.default_rng(0)
    X, y = [], []
    for c in range(5):
        base = rng.normal(size=(100, 30))
        X += [np.repeat(base, 10, axis=0) + rng.normal(size=(1000, 30)) * 0.02, rng.normal(size=(6, 30))]
        y += [c] * 1006
    X, y = np.concatenate(X).astype(np.float32), np.array(y)
    result = scan(X, y, detectors=("graph_clustering",), seed=0)
    assert result.summary["rows_read"] == len(y)
    assert result.summary["classes_poisoned"] == []


def test_fits_are_the_same_whatever_the_row_order_within_the_sample():
    X, y, _ = weak_direction_group(0.08, seed=0)
    Xc = X[y == 0].astype(np.float64)
    det = GraphClustering()
    a = det._split(Xc)
    order = np.random.default_rng(0).permutation(len(Xc))
    b = det._split(Xc[order])
    assert a.sizes == b.sizes
    assert np.isclose(a.evidence, b.evidence, rtol=1e-6)
    np.testing.assert_allclose(a.statistic(Xc), b.statistic(Xc), rtol=1e-6, atol=1e-9)
