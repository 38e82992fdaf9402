"""Repeated content: duplicated records are rejected, chance coincidences are kept."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poisonscan import ScanConfig, scan_table
from poisonscan.pipelines.drivers.run import run_scan
from poisonscan.pipelines.scan.content import (
    MIN_PAIRS,
    ContentCheck,
    coincidence_probability,
)


def passengers(n=900, seed=0):
    """A table like the Titanic's: sex, class and age in years; survival depends on
    them with noise, so many rows share their values and some of those differ in fate."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n, p=[0.36, 0.64])
    cls = rng.choice(["1st", "2nd", "3rd"], n, p=[0.25, 0.2, 0.55])
    age = np.clip(rng.normal(30, 13, n).round(), 1, 80).astype(np.int64)
    logit = 1.5 * (sex == "female") - 1.0 * (cls == "3rd") + 0.8 * (cls == "1st") - 0.02 * (age - 30) - 0.6
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pa.table({"id": np.arange(n), "label": y, "sex": sex, "passengerClass": cls, "age": age})


def measurements(n=600, copies=30, seed=0):
    """Continuous columns, ``copies`` rows repeated as records (new ids), one of them
    under the other label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(y[:, None], 1.0, (n, 4)).round(4)
    src = rng.choice(n, copies, replace=False)
    X = np.vstack([X, X[src]])
    y2 = y[src].copy()
    y2[0] = 1 - y2[0]
    y = np.concatenate([y, y2])
    cols = {f"x{j}": X[:, j] for j in range(4)}
    return pa.table({"id": np.arange(len(y)), "label": np.where(y == 1, "b", "a"), **cols}), src


def test_probability_of_independent_columns_matches_their_product():
    rng = np.random.default_rng(0)
    rows = [{"a": int(a), "b": int(b)} for a, b in zip(rng.integers(0, 4, 4000), rng.integers(0, 5, 4000))]
    p, steps = coincidence_probability(rows, ["a", "b"])
    assert p == pytest.approx(1 / 20, rel=0.1)
    assert [s[0] for s in steps] == ["a", "b"]  # the most often agreeing column first


def test_columns_that_go_together_are_chained_and_copies_do_not_vouch_for_themselves():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 6, 3000)
    # b repeats a (a postcode and its district): together they coincide as often as a alone
    rows = [{"a": int(v), "b": int(v) * 7, "c": int(w)} for v, w in zip(base, rng.integers(0, 3, 3000))]
    p, steps = coincidence_probability(rows, ["a", "b", "c"])
    assert p == pytest.approx(1 / 18, rel=0.15)
    assert steps[1][2] == "given the columns before" and steps[1][1] == pytest.approx(1.0)
    # continuous values: no two rows agree, however many exact copies the sample holds
    cont = [{"x": float(v), "z": float(w)} for v, w in rng.normal(size=(500, 2))]
    p, _ = coincidence_probability(cont + cont[:100], ["x", "z"])
    assert p == 0.0
    assert MIN_PAIRS > 0


def test_content_check_rejects_only_improbable_repeats():
    repeated = {(1, 2): (10, False, 2, 0), (3, 4): (11, True, 3, 0)}
    identifying = ContentCheck.of(repeated, 1000, {0: (1.0, 1e-12, [])}, 0.01)
    assert identifying.identifies_rows and identifying.rejections() == {(1, 2): (10, False), (3, 4): (11, True)}
    chance = ContentCheck.of(repeated, 1000, {0: (1.0, 1e-3, [])}, 0.01)
    assert not chance.identifies_rows and chance.rejections() == {}
    assert chance.expected_pairs() == pytest.approx(1000 * 999 / 2 * 1e-3)
    d = chance.to_dict()
    assert d["rows_in_groups"] == 5 and d["conflicting_groups"] == 1 and d["rejected"] is False
    assert "no row is rejected" in d["explanation"]
    vectors = ContentCheck.of(repeated, 1000, None, 0.01)
    assert vectors.identifies_rows and "identifies a row" in vectors.explain()


def test_chance_coincidences_stay_and_are_reported_beam_equals_memory(tmp_path):
    table = passengers()
    src = tmp_path / "passengers.parquet"
    pq.write_table(table, src, row_group_size=250)
    out = tmp_path / "out"
    run_scan([str(src)], str(out), ScanConfig(write_clean=True))
    s = json.loads((out / "summary.json").read_text())
    mem = scan_table(table).summary
    for summary in (s, mem):
        assert summary["rows_rejected"] == 0
        rc = summary["repeated_content"]
        assert rc["rows_in_groups"] > 300 and rc["conflicting_groups"] > 10  # seen...
        assert rc["identifies_rows"] is False and rc["rejected"] is False  # ...and kept
        assert rc["expected_coinciding_pairs"] > 100
    assert s["repeated_content"] == mem["repeated_content"]
    dup = next(r for r in s["expectations"]["results"] if r["expectation"].startswith("expect_compound_columns_to_be_unique"))
    assert dup["success"] and "coincidences are expected" in dup["result"]["details"]
    assert pq.read_table(out / "clean.parquet").num_rows + s["rows_quarantined"] == table.num_rows
    # the reviewer reads why in the report
    assert "coincidences are expected" in (out / "report.html").read_text()


def test_duplicated_records_of_measurements_are_rejected():
    table, src = measurements()
    s = scan_table(table).summary
    rc = s["repeated_content"]
    assert rc["identifies_rows"] is True and rc["groups"] == len(src)
    assert s["rejected_by_reason"] == {"conflicting_labels": 2, "duplicate_content": len(src) - 1}


def speeches(seed=0):
    """Sentences of two parties' speeches: short courtesies ("Thank you.", "God bless
    America.") said in both, built from a small vocabulary so that they coincide by
    chance; longer sentences built from a large one, so that two are never the same; and
    ``copied`` long sentences repeated as records, one of them under the other label."""
    rng = np.random.default_rng(seed)
    short_words = ["Thank", "you.", "God", "bless", "America.", "Good", "evening.", "Yes.", "Why?", "so", "much."]
    texts, labels = [], []
    for i in range(3000):
        party = ("dem", "rep")[i % 2]
        n = int(rng.integers(1, 4)) if rng.random() < 0.3 else int(rng.integers(8, 30))
        vocab = short_words if n < 4 else [f"w{j}{'xyz'[j % 3]}" for j in range(4000)]
        texts.append(" ".join(rng.choice(vocab, n)))
        labels.append(party)
    copied = [i for i in range(3000) if len(texts[i].split()) >= 8][:25]
    for k, i in enumerate(copied):
        texts.append(texts[i])
        labels.append(labels[i] if k else ("rep" if labels[i] == "dem" else "dem"))
    return pa.table({"id": np.arange(len(texts)), "label": labels, "text": texts}), copied


@pytest.mark.slow
def test_texts_are_judged_by_their_length_beam_equals_memory(tmp_path):
    from poisonscan.pipelines.scan.content import text_coincidence

    table, copied = speeches()
    texts = table.column("text").to_pylist()
    strata = text_coincidence(texts)
    # one-word texts of 6 possible words agree often; long texts of a large vocabulary never
    assert strata[1][1] > 0.05 and strata[20][1] == 0.0
    assert sum(v[0] for v in strata.values()) == pytest.approx(1.0)
    s = scan_table(table, text_column="text").summary
    rc = s["repeated_content"]
    by_length = {d["words"]: d for d in rc["by_length"]}
    assert all(not d["rejected"] for w, d in by_length.items() if w < 4)  # courtesies stay
    assert all(d["rejected"] for w, d in by_length.items() if w >= 8)  # copied records go
    assert s["rejected_by_reason"] == {"conflicting_labels": 2, "duplicate_content": len(copied) - 1}
    assert "are kept" in rc["explanation"] and "are rejected" in rc["explanation"]
    src = tmp_path / "speeches.parquet"
    pq.write_table(table, src, row_group_size=700)
    run_scan([str(src)], str(tmp_path / "out"), ScanConfig(text_column="text"))
    beam = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert beam["repeated_content"] == rc and beam["rejected_by_reason"] == s["rejected_by_reason"]


def test_coincidence_level_is_a_probability():
    from poisonscan.pipelines.config import ConfigError

    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ConfigError, match="coincidence-level"):
            ScanConfig(coincidence_level=bad)
