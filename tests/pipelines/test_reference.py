"""Daily increments: new rows scored against an earlier scan's state (--reference)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan import ScanConfig, scan_table
from poisonscan.pipelines.cli import main
from poisonscan.pipelines.drivers.run import run_scan

from ..conftest import permuted_samples

CFG = ScanConfig(features_column="features", data_docs=False, report=False)
CENTERS = np.random.default_rng(99).normal(scale=4, size=(4, 16))


def day(n, seed, poison=0, shift_class=None, mix=(0.25, 0.25, 0.25, 0.25), extra_class=0):
    """A day's rows: four Gaussian classes; ``poison`` rows of class 2 stamped (+8 in
    three coordinates); ``shift_class`` moved 1 SD; ``extra_class`` rows of a class 7."""
    rng = np.random.default_rng(seed)
    y = rng.choice(4, n, p=list(mix))
    X = CENTERS[y] + rng.normal(size=(n, 16))
    if shift_class is not None:
        X[y == shift_class, 0] += 1.0
    stamped = np.flatnonzero(y == 2)[:poison]
    X[stamped, :3] += 8.0
    if extra_class:
        y[-extra_class:] = 7
    ids = np.arange(n) + seed * 100_000
    table = pa.table({"id": ids, "label": y, "features": pa.array(list(X.astype(np.float32)), pa.list_(pa.float32()))})
    return table, set(ids[stamped].tolist())


def _write(tmp_path, name, table):
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return str(path)


def _summary(folder):
    with open(folder / "summary.json") as f:
        return json.load(f)


def test_a_new_day_is_scored_with_the_reference_model_and_compared_with_it(tmp_path):
    mon, mon_poison = day(3000, 1, poison=60)
    tue, tue_poison = day(3000, 2, poison=30, extra_class=10)
    run_scan([_write(tmp_path, "mon", mon)], str(tmp_path / "mon"), CFG)
    s_mon = _summary(tmp_path / "mon")
    assert s_mon["classes_poisoned"] == [2]
    run_scan([_write(tmp_path, "tue", tue)], str(tmp_path / "tue"), CFG, reference=str(tmp_path / "mon"))
    s = _summary(tmp_path / "tue")
    q = pq.read_table(tmp_path / "tue" / "quarantine.parquet")
    # the reference's model flags the new stamped rows: no refit
    assert set(q["id"].to_pylist()) == tue_poison
    c2 = {c["label"]: c for c in s["classes"]}[2]
    c2_mon = {c["label"]: c for c in s_mon["classes"]}[2]
    assert c2["verdicts"] == c2_mon["verdicts"]  # the reference's verdicts, as they were
    # a class the reference never saw cannot be scored with it: rejected, with the reason
    r = pq.read_table(tmp_path / "tue" / "rejected.parquet")
    assert set(r["error_code"].to_pylist()) == {"not_in_reference"} and r.num_rows == 10
    assert "class 7 was not scanned in the reference" in r["error"][0].as_py()
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == 3000
    ref = s["reference"]
    assert ref["folder"] == str(tmp_path / "mon") and ref["rows_reference"] == 3000
    assert 7 in ref["classes_differing"]
    # the same scan in memory, from the reference's state
    mem = scan_table(tue, CFG, reference=str(tmp_path / "mon"))
    assert sorted(mem.quarantine["id"].to_pylist()) == sorted(q["id"].to_pylist())
    assert mem.summary["reference"]["classes_differing"] == ref["classes_differing"]


def test_the_comparison_finds_a_shifted_class_and_a_changed_mix_and_nothing_in_a_like_day():
    base = scan_table(day(3000, 1)[0], CFG)
    like = scan_table(day(3000, 2)[0], CFG, reference=base.state).summary["reference"]
    assert like["classes_differing"] == [] and not like["label_mix_changed"]
    moved = scan_table(day(3000, 3, shift_class=1, mix=(0.4, 0.2, 0.2, 0.2))[0], CFG, reference=base.state)
    ref = moved.summary["reference"]
    by = {c["label"]: c for c in ref["classes"]}
    assert ref["label_mix_changed"] and by[0]["differs"] and "share of the rows went from" in by[0]["why"]
    assert by[1]["shift_p_value"] < ref["level"] and 0.8 < by[1]["shift_sd"] < 1.3
    assert by[2]["shift_p_value"] > ref["level"] and by[3]["shift_p_value"] > ref["level"]
    assert moved.summary["rows_quarantined"] == 0


def test_a_reference_that_cannot_serve_is_refused_in_one_line(tmp_path, capsys):
    src = _write(tmp_path, "d", day(600, 1)[0])
    assert main(["scan", src, "--features-column", "features", "--out", str(tmp_path / "o"), "--reference",
                 str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("poisonscan: error: --reference") and "no state.pkl" in err and "\n" not in err
    run_scan([src], str(tmp_path / "vectors"), CFG)
    images = pa.table({"id": [1, 2], "label": [0, 1], "image": pa.array([b"x", b"y"], pa.binary())})
    img = _write(tmp_path, "img", images)
    assert main(["scan", img, "--image-column", "image", "--out", str(tmp_path / "p"), "--reference",
                 str(tmp_path / "vectors"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("vectors: a scan of vectors, this input is image input") and "\n" not in err
    assert not (tmp_path / "p").exists()
    with pytest.raises(Exception, match="a scan of vectors, this input is image input"):
        scan_table(images, image_column="image", reference=str(tmp_path / "vectors"))


def test_labels_or_widths_unlike_the_reference_s_are_refused_or_named(tmp_path, capsys):
    table = day(3000, 1, poison=60)[0]
    run_scan([_write(tmp_path, "d", table)], str(tmp_path / "ref"), CFG)
    assert _summary(tmp_path / "ref")["classes_poisoned"] == [2]
    # the same labels written as text: refused, not every row rejected as of an unknown class
    text = table.set_column(1, "label", pa.array([str(v) for v in table["label"].to_pylist()]))
    assert main(["scan", _write(tmp_path, "t", text), "--features-column", "features", "--out",
                 str(tmp_path / "o"), "--reference", str(tmp_path / "ref"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "its classes are labels written as integers (0, 1, 2, ...)" in err and "holds text" in err
    with pytest.raises(Exception, match="its classes are labels written as integers"):
        scan_table(text, CFG, reference=str(tmp_path / "ref"))  # in memory as well
    # vectors of another width: rejected, naming the reference's width; the summary
    # describes the rows read, and no class of the reference counts as judged here
    narrow = table.set_column(2, "features", pa.array([v[:8] for v in table["features"].to_pylist()],
                                                      pa.list_(pa.float32())))
    run_scan([_write(tmp_path, "n", narrow)], str(tmp_path / "n"), CFG, reference=str(tmp_path / "ref"))
    s = _summary(tmp_path / "n")
    r = pq.read_table(tmp_path / "n" / "rejected.parquet")
    assert s["rows_rejected"] == 3000 and "the reference scan's vectors have length 16" in r["error"][0].as_py()
    assert s["vector_lengths_seen"] == {"8": 3000} and s["classes_poisoned"] == []
    assert not any(c["poisoned"] for c in s["classes"])
    mem = scan_table(narrow, CFG, reference=str(tmp_path / "ref")).summary
    assert mem["classes_poisoned"] == [] and mem["vector_lengths_seen"] == {"8": 3000}
    # a fixed-size column declares its width: refused before anything runs
    fixed = table.set_column(2, "features", pa.FixedSizeListArray.from_arrays(
        pa.array(np.zeros(3000 * 8, np.float32)), 8))
    assert main(["scan", _write(tmp_path, "f", fixed), "--features-column", "features", "--out",
                 str(tmp_path / "f"), "--reference", str(tmp_path / "ref"), "-q"]) == 1
    assert "its vectors have 16 numbers; these inputs' features column 'features' holds 8" in capsys.readouterr().err


@pytest.mark.slow
def test_raw_rows_are_represented_as_the_reference_was(tmp_path):
    """A table scanned with a trained proxy; the next day's rows go through the same
    encoder and proxy (its weights beside the state), with no training, through Beam and
    in memory; a scan with --reference can serve as a reference in turn."""
    from poisonscan.pipelines.io.sources import SourceError
    from poisonscan.pipelines.scan.state import dumps, loads

    from ..conftest import credit_table

    table, _ = credit_table(flip=True)
    perm = np.random.default_rng(0).permutation(table.num_rows)
    mon, tue = table.take(perm[:600]), table.take(perm[600:])
    cfg = ScanConfig(data_docs=False, report=False)
    run_scan([_write(tmp_path, "mon", mon)], str(tmp_path / "mon"), cfg)
    tue_path = _write(tmp_path, "tue", tue)
    run_scan([tue_path], str(tmp_path / "tue"), cfg, reference=str(tmp_path / "mon"))
    s_mon, s = _summary(tmp_path / "mon"), _summary(tmp_path / "tue")
    assert (tmp_path / "mon" / "proxy.pt").exists() and (tmp_path / "tue" / "proxy.pt").exists()
    rep = s["settings"]["representation"]
    assert rep.pop("reference") == str(tmp_path / "mon") and rep == s_mon["settings"]["representation"]
    assert s["rows_quarantined"] > 0 and s["reference"]["rows_reference"] == 600
    assert s["rows_read"] == s["rows_clean"] + s["rows_quarantined"] + s["rows_rejected"] == 600
    q = pq.read_table(tmp_path / "tue" / "quarantine.parquet")["id"].to_pylist()
    # the same rows in memory, from the folder or from the state in memory (pickled and back)
    assert scan_table(tue, cfg, reference=str(tmp_path / "mon")).quarantine["id"].to_pylist() == q
    state = loads(dumps(scan_table(mon, cfg).state))
    assert state.representer.proxy.state_dict  # the weights travel as numpy arrays
    assert scan_table(tue, cfg, reference=state).quarantine["id"].to_pylist() == q
    # Tuesday's output serves as a reference too (its own fitted model, Monday's encoder
    # and weights, copied beside its state)
    run_scan([tue_path], str(tmp_path / "wed"), cfg, reference=str(tmp_path / "tue"))
    s_wed = _summary(tmp_path / "wed")
    assert s_wed["settings"]["representation"] == dict(rep, reference=str(tmp_path / "tue"))
    assert (tmp_path / "wed" / "proxy.pt").read_bytes() == (tmp_path / "mon" / "proxy.pt").read_bytes()
    assert s_wed["rows_read"] == s_wed["rows_clean"] + s_wed["rows_quarantined"] + s_wed["rows_rejected"] == 600
    # rows of a class the reference never fitted cannot be scored with its model: rejected,
    # through Beam as in memory, not passed into the clean split unscanned
    labels = np.array(tue["label"].to_pylist(), dtype=object)
    labels[:10] = "waitlisted"
    thu = tue.set_column(tue.schema.get_field_index("label"), "label", pa.array(labels.tolist()))
    run_scan([_write(tmp_path, "thu", thu)], str(tmp_path / "thu"), cfg, reference=str(tmp_path / "mon"))
    r = pq.read_table(tmp_path / "thu" / "rejected.parquet")
    assert r["error_code"].to_pylist() == ["not_in_reference"] * 10
    assert sorted(r["id"].to_pylist()) == sorted(thu["id"].to_pylist()[:10])
    r_mem = scan_table(thu, cfg, reference=str(tmp_path / "mon")).rejected
    assert sorted(r_mem["id"].to_pylist()) == sorted(r["id"].to_pylist())
    # a reference of another input kind is refused, in one line
    vectors = _write(tmp_path, "vectors", day(200, 5)[0])
    with pytest.raises(SourceError, match="a scan of tabular input, this input is vectors"):
        run_scan([vectors], str(tmp_path / "x"), CFG, reference=str(tmp_path / "mon"))
    assert not (tmp_path / "x").exists()


def test_the_comparison_does_not_turn_on_the_order_of_a_samples_rows():
    # a class sample's own row order follows the order its partials were merged in (one
    # worker or many, bundles of any size); the shift test reads the rows in id order
    from poisonscan.pipelines.scan.reference import compare_to_reference

    base = scan_table(day(3000, 1)[0], CFG)
    new = scan_table(day(3000, 3, shift_class=1)[0], CFG)
    figures = [
        [(c["label"], c["shift_sd"], c["shift_p_value"]) for c in compare_to_reference(
            base.state, partials, new.state.model, "base")["classes"]]
        for partials in (new.state.partials, permuted_samples(new.state.partials, 1),
                         permuted_samples(new.state.partials, 2))
    ]
    assert figures[0] == figures[1] == figures[2]
    assert len(figures[0]) == 4
