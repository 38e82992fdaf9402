import numpy as np
import pyarrow as pa
import pytest

from poisonscan.pipelines.io.columns import ColumnKinds
from poisonscan.pipelines.io.kinds import InputSpec
from poisonscan.pipelines.io.sources import decode_position
from poisonscan.pipelines.scan.cells import parse_number_text
from poisonscan.pipelines.scan.rows import RowChecks, prepare

KINDS = ColumnKinds(pa.int64(), pa.string(), InputSpec("features", ("features",)), "list", None)


def checks(**kw):
    return RowChecks(KINDS, "id", "label", {0: "data.parquet"}, **kw)


def bad_batch():
    feats = pa.array(
        [
            [1.0, 2.0, 3.0],  # 0 ok
            None,  # 1 null features
            [1.0, float("nan"), 3.0],  # 2 NaN
            [1.0, float("inf"), 3.0],  # 3 inf
            [1.0, None, 3.0],  # 4 null value
            [1.0, 2.0],  # 5 wrong length (pass 2)
            [],  # 6 empty
            [4.0, 5.0, 6.0],  # 7 null id
            [4.0, 5.0, 6.0],  # 8 null label
            [7.0, 8.0, 9.0],  # 9 ok
        ],
        pa.list_(pa.float64()),
    )
    return pa.record_batch(
        {
            "id": pa.array([0, 1, 2, 3, 4, 5, 6, None, 8, 9], pa.int64()),
            "label": pa.array(["a"] * 8 + [None, "b"]),
            "features": feats,
        }
    )


def test_every_bad_row_gets_its_reason():
    prep = prepare(bad_batch(), 0, 100, checks(expected_dim=3))
    codes = list(prep.error_code)
    assert codes == [
        None,
        "missing_features",
        "nan_features",
        "inf_features",
        "null_in_features",
        "wrong_length",
        "empty_features",
        "missing_id",
        "missing_label",
        None,
    ]
    assert prep.valid.tolist() == [c is None for c in codes]
    assert "length 2" in prep.error[5] and "length 3" in prep.error[5]
    rows, X = prep.groups[3]
    np.testing.assert_array_equal(rows, [0, 9])
    np.testing.assert_array_equal(X, [[1, 2, 3], [7, 8, 9]])
    assert [decode_position(p) for p in prep.positions[:2]] == [(0, 100), (0, 101)]


def test_pass_one_groups_rows_by_length():
    prep = prepare(bad_batch(), 0, 0, checks())
    assert sorted(prep.groups) == [2, 3]
    assert prep.groups[2][0].tolist() == [5]


def test_every_copy_of_a_shared_id_is_rejected():
    batch = pa.record_batch(
        {"id": pa.array([5, 6, 5]), "label": pa.array(["a", "a", "a"]), "features": pa.array([[1.0]] * 3)}
    )
    from poisonscan.pipelines.scan.keys import IdKeys, batch_id_keys

    keys = IdKeys.concat(k for _, k in batch_id_keys(batch, 0, 0, KINDS, "id"))
    dups = keys.duplicates()
    assert list(dups.values()) == [2]
    prep = prepare(batch, 0, 0, checks(duplicates=dups))
    assert list(prep.error_code) == ["duplicate_id", None, "duplicate_id"]
    assert prep.error[0] == prep.error[2] == "id 5 appears 2 times in the input; no copy is kept"


def test_small_classes_are_rejected_with_their_size():
    prep = prepare(bad_batch(), 0, 0, checks(expected_dim=3, small_classes={"b": 1}, min_class_rows=20))
    assert prep.error_code[9] == "small_class"
    assert "1 valid rows" in prep.error[9] and "20" in prep.error[9]


def test_numbers_written_as_text():
    col = pa.array(["[1, 2.5, 3]", "1 2 3", "1;2;3", "[1, x, 3]", None, ""])
    lists, bad = parse_number_text(col)
    assert lists.to_pylist()[:3] == [[1.0, 2.5, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    assert bad == {3: "x"}
    assert lists.to_pylist()[3:] == [None, None, []]


def test_text_features_in_a_batch():
    batch = pa.record_batch(
        {"id": pa.array([1, 2]), "label": pa.array(["a", "a"]), "features": pa.array(["[1, 2]", "[1, oops]"])}
    )
    kinds = ColumnKinds(pa.int64(), pa.string(), InputSpec("features", ("features",)), "text", None)
    prep = prepare(batch, 0, 0, RowChecks(kinds, "id", "label"))
    assert list(prep.error_code) == [None, "bad_number"]
    assert "'oops'" in prep.error[1]


def test_vector_fingerprints_are_by_value():
    from poisonscan.pipelines.scan.fingerprints import vector_fingerprints

    X = np.random.default_rng(0).normal(size=(500, 37)).astype(np.float32)
    hi, lo = vector_fingerprints(X)
    assert len(set(zip(hi.tolist(), lo.tolist()))) == 500
    same = vector_fingerprints(X.astype(np.float64))  # the same numbers, stored wider
    assert (same[0] == hi).all() and (same[1] == lo).all()
    Y = X.copy()
    Y[7, 30] = np.nextafter(Y[7, 30], np.float32(np.inf))  # one ulp
    changed = vector_fingerprints(Y)
    assert np.flatnonzero(changed[0] != hi).tolist() == [7] and changed[1][7] != lo[7]
    ints = np.arange(12).reshape(3, 4)
    assert (vector_fingerprints(ints)[0] == vector_fingerprints(ints.astype(np.float32))[0]).all()
    signed = np.zeros((2, 4))
    signed[1, 2] = -0.0
    assert len(set(vector_fingerprints(signed)[0].tolist())) == 1
    assert len(set(vector_fingerprints(signed.astype(np.float32))[0].tolist())) == 1
    # sign flips and small integers: the raw bit patterns differ only in high bits
    base = np.array([[1.0, 2.0, 3.0, 4.0]])
    flips = np.vstack([base, base * [[-1, -1, 1, 1]], base * [[-1, 1, -1, 1]], -base])
    fp = vector_fingerprints(flips)
    assert len(set(zip(fp[0].tolist(), fp[1].tolist()))) == 4
    binary = np.unique(np.random.default_rng(1).integers(0, 2, size=(100_000, 64)), axis=0)
    fb = vector_fingerprints(binary)
    assert len(np.unique(fb[0])) == len(np.unique(fb[1])) == len(binary)
    # the length is part of the content: a zero vector of 4 is not one of 5
    assert vector_fingerprints(np.zeros((1, 4)))[0] != vector_fingerprints(np.zeros((1, 5)))[0]
    # float64 rows that float32 cannot hold: compared at full width, row by row
    mixed = np.array([[0.5, 2.0], [0.1, 2.0], [1e300, 1.0], [0.5, 2.0]])
    fm = vector_fingerprints(mixed)
    assert fm[0][0] == fm[0][3] == vector_fingerprints(np.float32([[0.5, 2.0]]))[0][0]
    assert fm[0][1] != vector_fingerprints(mixed[1:2].astype(np.float32))[0][0]  # 0.1 != float32(0.1)
    assert len({fm[0][0], fm[0][1], fm[0][2]}) == 3
    # the same bytes read at two widths are different content
    wide_row = np.array([[0.1]])
    as_two_float32 = wide_row.view(np.float32)
    assert vector_fingerprints(wide_row)[0] != vector_fingerprints(as_two_float32)[0]


def test_read_ahead_keeps_order_errors_and_its_bound():
    import threading
    import time

    from poisonscan.pipelines.io.sources import read_ahead

    produced = []

    def source(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad batch {i}")
            produced.append(i)
            yield i

    assert list(read_ahead(source(50))) == list(range(50))
    # at most one item decoded ahead of the caller while it works on the current one
    produced.clear()
    for i in read_ahead(source(6)):
        time.sleep(0.1)
        assert len(produced) <= i + 2
    # what the source raises comes out at the same point of the sequence
    got = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for i in read_ahead(source(10, fail_at=3)):
            got.append(i)
    assert got == [0, 1, 2]
    # a caller that stops early stops the thread
    before = threading.active_count()
    it = read_ahead(source(1000))
    assert next(it) == 0
    it.close()
    assert threading.active_count() == before and len(produced) < 1000
