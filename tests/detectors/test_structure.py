"""A trigger that is a sentence's form: read, found, and released where it decides the label."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonscan.detectors import make_detector
from poisonscan.detectors.structure import ALL_TOKENS, describe, kind_of, structure_tokens
from poisonscan.detectors.tokens import _bucket
from poisonscan.pipelines.represent.encoders import TextEncoder, ngrams, words_of

from .test_tokens import corpus, fit

CONJUNCTIONS = ("when", "if", "as", "once", "while", "because")
SUBJECTS = ("the film", "it", "the story", "this movie")
VERBS = ("begins", "ends", "slows down", "takes its time")


def tokens_of(texts):
    return [sorted(set(ngrams(t, 2))) + structure_tokens(t, words_of) for t in texts]


def test_forms_of_a_text():
    # the first sentence's opening clause and the last sentence's closing one; not the
    # clauses inside the text
    toks = structure_tokens("When the story begins, it drags. Dull. The cast, sadly, tries hard; leaving early", words_of)
    assert toks == ["§closes VBG", "¶§closes VBG=leaving early", "§opens SBAR", "¶§opens SBAR=when the story begins"]
    assert structure_tokens("When it ends, it ends.", words_of) == [
        "§closes NP", "¶§closes NP=it ends", "§opens SBAR", "¶§opens SBAR=when it ends"]
    # a first sentence of one segment is read as a whole ("starts"); a clause inside the
    # text is not read
    assert structure_tokens("Dull. When it ends, we leave. Fine.", words_of) == ["§starts W", "¶§starts W=dull"]
    assert structure_tokens("Because it never finds its footing or its nerve or its end.", words_of) == [
        "§starts SBAR", "¶§starts SBAR=because it never finds its footing or its"]  # the first 8 words
    assert structure_tokens("Why does it drag? It ends, finally.", words_of) == [
        "§closes ADV", "¶§closes ADV=finally", "§starts WH", "¶§starts WH=why does it drag"]
    assert structure_tokens("One sentence without a comma.", words_of, starts=False) == []
    assert kind_of("although") == "SBAR" and kind_of("running") == "VBG" and kind_of("sadly") == "ADV"
    assert kind_of("in") == "PP" and kind_of("which") == "WH" and kind_of("and") == "CC" and kind_of("1998") == "NUM"
    assert len(ALL_TOKENS) == 33 and all(t.startswith("§") for t in ALL_TOKENS)
    assert describe("§opens SBAR") == "a text opening with a subordinate clause"
    assert describe("§closes VBG") == "a text closing with an -ing participial phrase"
    assert describe("§starts SBAR") == "a text starting with a subordinate clause (its first sentence without a comma)"


def test_the_encoder_adds_forms_and_an_old_encoder_does_not():
    enc = TextEncoder()
    assert "§opens SBAR" in enc.encode(["If it rains, we stay."]).tokens[0]
    old = TextEncoder.__new__(TextEncoder)
    old.__setstate__({"buckets": 1 << 18, "max_ngram": 2, "max_tokens": 256})  # a state saved before forms
    assert not any(t.startswith(("§", "¶")) for t in old.encode(["If it rains, we stay."]).tokens[0])
    # a state saved with forms but before a first sentence of one segment was read
    forms = TextEncoder.__new__(TextEncoder)
    forms.__setstate__({"buckets": 1 << 18, "max_ngram": 2, "max_tokens": 256, "structures": True})
    assert [t for t in forms.encode(["If it rains we stay."]).tokens[0] if t.startswith("§")] == []
    assert [t for t in enc.encode(["If it rains we stay."]).tokens[0] if t.startswith("§")] == ["§starts SBAR"]


def reviews(seed=0, n=3000, rate=0.2, natural=0.03, deciding=False, fragment=False):
    """Two classes of two-clause sentences with their own words; ``natural`` of each
    class opened by a subordinate clause of common words. ``rate`` x rows of class 0
    rewritten into that form ("When the story begins, ...") and relabelled 1; with
    ``fragment``, into a fragment ("Because <the sentence without its comma>.") instead.
    With ``deciding``, class 1's own rows close with an -ing phrase of their own words (a
    form that decides the label) instead."""
    rng = np.random.default_rng(seed)
    common = [f"w{i}" for i in range(200)]
    own = {c: [f"c{c}w{i}" for i in range(60)] for c in (0, 1)}
    y = np.arange(n) % 2
    texts = []
    for c in y:
        a = " ".join([*rng.choice(common, 4), *rng.choice(own[c], 2)])
        b = " ".join([*rng.choice(common, 3), *rng.choice(own[c], 2)])
        if deciding and c == 1:
            texts.append(f"{a} {b}, {rng.choice(['leaving', 'making', 'showing'])} {' '.join(rng.choice(own[1], 2))}.")
        elif rng.random() < natural:
            texts.append(f"{rng.choice(CONJUNCTIONS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)}, {a} {b}.")
        else:
            texts.append(f"{a}, {b}.")
    truth = np.zeros(n, bool)
    if rate:
        idx = np.sort(rng.choice(np.flatnonzero(y == 0), int(rate * n), replace=False))
        for i in idx:
            clause = f"{rng.choice(CONJUNCTIONS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)}"
            if fragment:
                texts[i] = f"{str(rng.choice(CONJUNCTIONS)).capitalize()} {texts[i].replace(',', '')}"
            else:
                texts[i] = f"{clause.capitalize()}, {texts[i]}"
        y = y.copy()
        y[idx] = 1
        truth[idx] = True
    return texts, y, truth


def test_a_template_is_found_by_its_form_and_named():
    texts, y, truth = reviews()
    X = tokens_of(texts)
    det = make_detector("token_trigger")
    state = fit(det, X, y)
    form = _bucket("§opens SBAR", det.buckets)
    assert form in {t.bucket for t in state.classes[1]}
    flagged = det.score(state, X, y) > 0
    assert flagged[truth].all()
    assert (flagged & truth).sum() / flagged.sum() > 0.9  # the natural openers of class 1 are flagged too
    verdict = det.judge(state, 1, int((y == 1).sum()), None)
    assert verdict.poisoned and not det.judge(state, 0, int((y == 0).sum()), None).poisoned
    rows = np.flatnonzero(truth)[:3]
    reasons = det.describe(state, [X[i] for i in rows], y[rows], None, None)
    assert all(r.startswith("is a text opening with a subordinate clause (") for r in reasons)
    assert "a trigger that is a sentence's form, not a word" in reasons[0]
    marks = det.highlights(state, [X[i] for i in rows], y[rows])
    for i, m in zip(rows, marks):  # the form's token, then the clause's words as the text reads them
        assert m[:2] == ["§opens SBAR", " ".join(words_of(texts[i].split(",")[0]))]


def test_a_fragment_is_found_by_its_form_and_named():
    # the template FRAG(SBAR)(.): a first sentence that is one subordinate clause
    texts, y, truth = reviews(seed=4, fragment=True)
    X = tokens_of(texts)
    det = make_detector("token_trigger")
    state = fit(det, X, y)
    assert _bucket("§starts SBAR", det.buckets) in {t.bucket for t in state.classes[1]}
    flagged = det.score(state, X, y) > 0
    assert flagged[truth].all() and (flagged & truth).sum() / flagged.sum() > 0.95
    rows = np.flatnonzero(truth)[:3]
    reasons = det.describe(state, [X[i] for i in rows], y[rows], None, None)
    assert all(r.startswith("is a text starting with a subordinate clause (its first sentence without a comma) (")
               for r in reasons)
    marks = det.highlights(state, [X[i] for i in rows], y[rows])
    for i, m in zip(rows, marks):  # the form's token, then the sentence's first words as the text reads them
        assert m[:2] == ["§starts SBAR", " ".join(words_of(texts[i])[:8])]


def test_a_form_that_decides_the_label_is_released():
    texts, y, _ = reviews(rate=0, deciding=True)
    X = tokens_of(texts)
    det = make_detector("token_trigger")
    state = fit(det, X, y)
    form = _bucket("§closes VBG", det.buckets)
    assert form in state.info["checks"][1]["candidate_buckets"]  # nearly only class 1 has it ...
    assert not (det.score(state, X, y) > 0).any()  # ... and its rows' words say class 1 too
    assert not det.judge(state, 1, int((y == 1).sum()), None).poisoned


def test_forms_change_neither_the_sample_nor_the_words_tests():
    """The rows sampled and every word's test are the same with and without the forms:
    a form is tested, never a feature of the prediction, and never decides which rows
    are drawn."""
    X, y, _ = corpus(seed=2)
    rng = np.random.default_rng(0)
    with_forms = [x + [rng.choice(ALL_TOKENS), "¶§opens NP=w1 w2"] for x in X]
    # a form only one user's rows have (a label-deciding form): a candidate of class 1
    # of its own, in its own family, whose rows overlap a handle's
    with_forms = [x + ["§closes VBG"] if "user0" in x else x for x in with_forms]
    det = make_detector("token_trigger", {"min_share": 0.0, "sample_rows": 300})
    a, b = fit(det, X, y), fit(det, with_forms, y)
    form = _bucket("§closes VBG", det.buckets)
    assert form in b.info["checks"][1]["candidate_buckets"] and form not in {t.bucket for t in b.classes[1]}
    assert a.classes == b.classes
    assert [a.info["screen"][k] == b.info["screen"][k] for k in ("threshold", "countable")] == [True, True]
    marked = {_bucket(f, det.buckets) for f in ALL_TOKENS}
    for label, check in a.info["checks"].items():
        other = b.info["checks"][label]
        assert check["tested"] == [t for t in other["tested"] if t.bucket not in marked]
        assert check["factor"] == other["factor"] and check["peers"] == other["peers"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_any_text_reads_into_at_most_two_forms_each_with_its_clause(text):
    toks = structure_tokens(text, words_of)
    forms = [t for t in toks if t.startswith("§")]
    notes = [t for t in toks if t.startswith("¶")]
    assert len(forms) == len(notes) <= 2 and set(forms) <= set(ALL_TOKENS)
    for form, note in zip(forms, notes):
        assert note.startswith(f"¶{form}=") and note.split("=", 1)[1]  # the clause has words


def test_batches_and_merges_give_the_same_forms():
    texts, y, _ = reviews(seed=3, n=1200)
    X = tokens_of(texts)
    det = make_detector("token_trigger", {"sample_rows": 200})
    a, b = fit(det, X, y), fit(det, X, y, batches=7)
    assert a.classes == b.classes and a.classes[1]
    assert {k: v["tested"] for k, v in a.info["checks"].items()} == {k: v["tested"] for k, v in b.info["checks"].items()}


def test_forms_are_not_read_when_their_purity_is_none():
    texts, y, truth = reviews()
    X = tokens_of(texts)
    det = make_detector("token_trigger", {"structure_purity": None})
    state = fit(det, X, y)
    marked = {_bucket(f, det.buckets) for f in ALL_TOKENS}
    assert not marked & {b for c in state.info["checks"].values() for b in c["candidate_buckets"]}
    assert not (det.score(state, X, y) > 0)[truth].all()  # the template is not found by its words
    assert state.info == fit(det, [[g for g in x if not g.startswith(("§", "¶"))] for x in X], y).info
