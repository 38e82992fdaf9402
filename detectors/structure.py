"""The shallow form of a text as tokens: a trigger that is a sentence form.

A syntactic backdoor (HiddenKiller, Qi et al., ACL 2021) paraphrases the poisoned rows
into one syntactic template, such as ``S(SBAR)(,)(NP)(VP)(.)``: a sentence opened by a
subordinate clause. Every word of the paraphrase can be common; what the poisoned rows
share is the form. Of the ten templates the SCPN paraphraser (Iyyer et al., NAACL 2018)
offers by default (HiddenKiller's is the last of them), five are read here: a sentence opened by a
subordinate clause or by a prepositional phrase set off by a comma (``S(SBAR)(,)...``,
``S(PP)(,)...``), two clauses joined by a comma and a conjunction
(``S(S)(,)(CC)(S)(.)``), a fragment that is a subordinate clause (``FRAG(SBAR)(.)``,
"because it never finds its footing.") and a wh- question (``SBARQ(WHADVP)(SQ)(.)``,
"why does it never find its footing?"); the plain sentences (``S(NP)(VP)(.)`` and its
kin) are every text's form and are not told apart. A clause set off at a sentence's end
is read the same way ("..., leaving us cold").

No parser ships here, so the form is read shallowly, at the text's two edges: the
text's first and last sentences (split after ``.``, ``!`` or ``?``), each split at commas
and semicolons into segments; where the first sentence has two or more segments, its
opening segment, and where the last has, its closing one, named by the kind of its first
word (:data:`KINDS`: a word list for the closed classes, suffixes for participles and
adverbs). Where the first sentence is one segment (no comma or semicolon), it is named
by the kind of its first word as a whole: a fragment opened by "because", a question
opened by "why". A paraphrased short text is one sentence, and in a longer text a form
read in every sentence is held by too many clean texts to stand out (docs/detectors.md).
Each text gives the tokens ``"§opens <kind>"`` or ``"§starts <kind>"``, and
``"§closes <kind>"`` (at most 3 x 11 distinct tokens in any corpus), counted by
``token_trigger`` like its words, and for each a note ``"¶<token>=<the clause's words>"``
that names the clause for a reviewer (a whole sentence's first :data:`NOTE_WORDS`) and is
never counted.
"""

from __future__ import annotations

import re
from typing import Callable

#: Marks a structure token: counted and tested as a word is, named by :func:`describe`.
STRUCTURE_MARK = "§"
#: Marks a note: the words of the clause a structure token stands for (never counted).
NOTE_MARK = "¶"

_SUBORDINATORS = frozenset(
    "after although as because before if lest once since though till unless until when whenever whereas "
    "wherever whether while whilst".split()
)
_WH = frozenset("how what where which who whom whose why".split())
_PREPOSITIONS = frozenset(
    "about above across against along amid among around at behind below beneath beside besides between beyond "
    "by despite during except for from in inside into like near of off on onto outside over past per through "
    "throughout to toward towards under underneath unlike upon with within without".split()
)
_COORDINATORS = frozenset("and but nor or plus so yet".split())
_ADVERBS = frozenset(
    "again also always even finally hence however indeed instead just maybe meanwhile never now often only "
    "otherwise perhaps rather sometimes still then therefore thus too".split()
)
_NOUN_PHRASE = frozenset(
    "a all an any both each every few he her here his i it its many me most much my no one our several she some "
    "that the their them there these they this those us we you your".split()
)
_INTERJECTIONS = frozenset("look oh ok okay please listen thanks well wow yeah yes".split())

#: The kinds of a clause's first word, in the order they are tried.
KINDS = {
    "SBAR": "a subordinate clause",
    "WH": "a wh- clause",
    "PP": "a prepositional phrase",
    "CC": "a coordinated clause",
    "ADV": "an adverb",
    "INTJ": "an interjection",
    "NP": "a noun phrase",
    "VBG": "an -ing participial phrase",
    "VBN": "an -ed participial phrase",
    "NUM": "a number",
    "W": "another word",
}
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_SEGMENT = re.compile(r"[,;]")


def kind_of(word: str) -> str:
    """The kind of a clause's first word (lower-cased), a key of :data:`KINDS`."""
    for kind, words in (("SBAR", _SUBORDINATORS), ("WH", _WH), ("PP", _PREPOSITIONS), ("CC", _COORDINATORS),
                        ("ADV", _ADVERBS), ("INTJ", _INTERJECTIONS), ("NP", _NOUN_PHRASE)):
        if word in words:
            return kind
    if word.isdigit():
        return "NUM"
    if len(word) >= 5 and word.endswith("ing"):
        return "VBG"
    if len(word) >= 4 and word.endswith("ed"):
        return "VBN"
    if len(word) >= 4 and word.endswith("ly"):
        return "ADV"
    return "W"


#: Every structure token there can be (their buckets mark them among the counted tokens).
ALL_TOKENS = tuple(f"{STRUCTURE_MARK}{where} {kind}" for where in ("opens", "closes", "starts") for kind in KINDS)
#: The most words of a whole sentence a ``starts`` note names.
NOTE_WORDS = 8


def structure_tokens(text: str, words: Callable[[str], list], starts: bool = True) -> list[str]:
    """The structure tokens of ``text`` and their notes: how its first sentence opens (or,
    one segment, starts) and its last closes, its words read by ``words`` (the text
    encoder's reading: lower-cased). ``starts`` False: no ``starts`` token (encoders
    fitted before they were read)."""
    sentences = _SENTENCE.split(text)
    read: dict = {}  # sentence index -> its segments' words (the empty segments out)

    def first_with_words(order) -> list:
        for i in order:
            if i not in read:
                read[i] = [p for p in (words(s) for s in _SEGMENT.split(sentences[i])) if p]
            if read[i]:
                return read[i]
        return []

    found: dict = {}
    for where, parts in (("opens", first_with_words(range(len(sentences)))),
                         ("closes", first_with_words(reversed(range(len(sentences)))))):
        if len(parts) == 1 and where == "opens" and starts:
            found[f"{STRUCTURE_MARK}starts {kind_of(parts[0][0])}"] = " ".join(parts[0][:NOTE_WORDS])
        if len(parts) < 2:
            continue
        part = parts[0] if where == "opens" else parts[-1]
        found[f"{STRUCTURE_MARK}{where} {kind_of(part[0])}"] = " ".join(part)
    return [t for token, clause in sorted(found.items()) for t in (token, f"{NOTE_MARK}{token}={clause}")]


def describe(token: str) -> str:
    """A structure token in words: "a text opening with a subordinate clause"."""
    where, _, kind = token[len(STRUCTURE_MARK):].partition(" ")
    if where == "starts":
        return f"a text starting with {KINDS.get(kind, kind)} (its first sentence without a comma)"
    return f"a text {'opening' if where == 'opens' else 'closing'} with {KINDS.get(kind, kind)}"
