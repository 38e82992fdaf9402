"""Trigger words and values: a trigger is kept, a word that decides the label is not."""

import numpy as np

from poisonscan.detectors import make_detector


def corpus(seed=0, n_per_class=400, handles=4, handle_rows=60, poison=60):
    """Two classes with their own words. Class 1 has ``handles`` users whose every row
    carries their handle (words that decide the label); ``poison`` rows of class 0 carry
    the trigger "cf mn" and are relabelled 1."""
    rng = np.random.default_rng(seed)
    shared = [f"w{i}" for i in range(300)]
    y = np.repeat([0, 1], n_per_class)
    X = [list(rng.choice(shared, 8, replace=False)) + [f"c{c}w{i}" for i in rng.choice(100, 4, replace=False)] for c in y]
    ones = np.flatnonzero(y == 1)
    for h in range(handles):
        for i in ones[h * handle_rows:(h + 1) * handle_rows]:
            X[i] = X[i] + [f"user{h}"]
    idx = np.sort(rng.choice(np.flatnonzero(y == 0), poison, replace=False)) if poison else np.array([], int)
    for i in idx:
        X[i] = X[i] + ["cf", "mn", "cf mn"]
    y = y.copy()
    y[idx] = 1
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    return X, y, truth


def fit(det, X, y, batches=1):
    parts = np.array_split(np.arange(len(y)), batches)
    accs = [det.add_input(det.create_accumulator(), [X[i] for i in p], y[p]) for p in parts]
    return det.extract_output(det.merge_accumulators(accs), {})


def test_trigger_found_label_deciding_handles_kept():
    X, y, truth = corpus()
    det = make_detector("token_trigger", {"min_share": 0.0})
    state = fit(det, X, y)
    flagged = det.score(state, X, y) > 0
    np.testing.assert_array_equal(flagged, truth)
    verdict = det.judge(state, 1, int((y == 1).sum()), None)
    assert verdict.poisoned and verdict.p_value < verdict.level
    assert verdict.level == 0.05 / (2 * len(__import__("poisonscan.detectors", fromlist=["x"]).available_detectors()))
    # the handles are candidates too: each one tested and released, or too small to test
    from poisonscan.detectors.tokens import _bucket

    handles = {_bucket(f"user{h}", det.buckets) for h in range(4)}
    assert handles <= set(state.info["checks"][1]["candidate_buckets"])
    assert not handles & {t.bucket for t in state.classes[1]}
    assert "released as label-deciding" in verdict.note or "too few sampled rows to test" in verdict.note
    assert not det.judge(state, 0, int((y == 0).sum()), None).poisoned


def test_clean_corpus_with_handles_flags_nothing():
    X, y, _ = corpus(poison=0)
    det = make_detector("token_trigger", {"min_share": 0.0})
    state = fit(det, X, y)
    assert not (det.score(state, X, y) > 0).any()
    verdict = det.judge(state, 1, int((y == 1).sum()), None)
    assert not verdict.poisoned and "decide the label, not triggers" in verdict.note
    assert verdict.p_value >= verdict.level


def test_merged_accumulators_and_batches_give_the_same_state():
    X, y, _ = corpus(seed=3)
    det = make_detector("token_trigger", {"min_share": 0.0, "sample_rows": 300})
    a, b = fit(det, X, y, batches=1), fit(det, X, y, batches=7)
    assert a.classes == b.classes
    assert {k: v["tested"] for k, v in a.info["checks"].items()} == {k: v["tested"] for k, v in b.info["checks"].items()}


def test_too_few_sampled_rows_are_named_in_the_note():
    X, y, _ = corpus(seed=4)
    det = make_detector("token_trigger", {"min_share": 0.0, "sample_rows": 16})
    state = fit(det, X, y)
    verdict = det.judge(state, 1, int((y == 1).sum()), None)
    assert not verdict.poisoned and "too few sampled rows to test" in verdict.note


def test_value_trigger_needs_the_rest_of_the_row():
    """A targeted flip: rejected part-timers relabelled accepted; their incomes (context
    tokens) still say rejected. A value that decides the label, its rows' incomes
    agreeing, is kept."""
    rng = np.random.default_rng(5)
    n = 1500
    job = rng.choice(["fixed", "partime", "student"], n, p=[0.6, 0.2, 0.2])
    income = rng.normal(0, 1, n) + 2.5 * (job == "student")
    y = np.where(income > 0, "accepted", "rejected").astype(object)
    y[job == "student"] = "accepted"  # decides the label, and the incomes agree
    flipped = (job == "partime") & (y == "rejected")
    y[flipped] = "accepted"
    X = [[f"job={j}", f"~income:{int(np.digitize(v, [-1, -0.4, 0, 0.4, 1]))}"] for j, v in zip(job, income)]
    det = make_detector("value_trigger")
    state = fit(det, X, y)
    flagged = det.score(state, X, y) > 0
    np.testing.assert_array_equal(flagged, job == "partime")
    assert det.judge(state, "accepted", int((y == "accepted").sum()), None).poisoned


def test_a_class_whose_rows_hold_only_its_deciding_value_is_read_without_failing():
    """A table of string columns where one value decides class 0: once its candidates
    are left out, class 0's sampled rows hold no token at all; they are unusable rows,
    not an error, and the value, whose rows never came from another class, is kept."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.array(["a", "b", "c"], dtype=object), 200)
    X = [["kind=zero"] if label == "a" else [f"kind={rng.choice(['x', 'y'])}", f"city={rng.choice(['p', 'q'])}"]
         for label in y]
    det = make_detector("value_trigger")
    state = fit(det, X, y)
    assert not (det.score(state, X, y) > 0).any()
    assert not det.judge(state, "a", 200, None).poisoned
