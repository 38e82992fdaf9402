"""The shallow structure of a sentence as tokens: a trigger that is a sentence form.

A syntactic backdoor (HiddenKiller, Qi et al., ACL 2021) paraphrases the poisoned rows
into one syntactic template, such as ``S(SBAR)(,)(NP)(VP)(.)``: a sentence opened by a
subordinate clause. Every word of the paraphrase can be common; what the poisoned rows
share is the form. The templates such attacks use (the most frequent top-level templates
of the SCPN paraphraser's parses) differ mostly in the clause that opens or closes the
sentence, set off by a comma: a subordinate clause ("When the story begins, ..."), a
prepositional phrase ("In the end, ..."), a participial phrase ("..., leaving us cold"),
an adverb ("Sadly, ..."), a coordinated clause ("..., but ...").

No parser ships here, so the form is read shallowly: a text's sentences (split after
``.``, ``!`` or ``?``), each split at commas and semicolons into segments, and the
segment that opens and the one that closes a sentence of two or more segments named by
the kind of its first word (:data:`KINDS`: a word list for the closed classes,
suffixes for participles and adverbs). Each text gives, once each, the tokens
``"§opens <kind>"`` and ``"§closes <kind>"`` of its sentences — at most 2 x 11 distinct
tokens in any corpus — counted by ``token_trigger`` like its words, and for each a note
``"¶<token>=<the segment's words>"`` that names the clause for a reviewer and is never
counted.
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
ALL_TOKENS = tuple(f"{STRUCTURE_MARK}{where} {kind}" for where in ("opens", "closes") for kind in KINDS)


def structure_tokens(text: str, words: Callable[[str], list]) -> list[str]:
    """The structure tokens of ``text`` and their notes (the first clause of each kind),
    its words read by ``words`` (the text encoder's reading: lower-cased)."""
    found: dict = {}
    for sentence in _SENTENCE.split(text):
        parts = [words(s) for s in _SEGMENT.split(sentence)]
        parts = [p for p in parts if p]
        if len(parts) < 2:
            continue
        for where, part in (("opens", parts[0]), ("closes", parts[-1])):
            token = f"{STRUCTURE_MARK}{where} {kind_of(part[0])}"
            found.setdefault(token, " ".join(part))
    return [t for token, clause in sorted(found.items()) for t in (token, f"{NOTE_MARK}{token}={clause}")]


def describe(token: str) -> str:
    """A structure token in words: "a sentence opening with a subordinate clause"."""
    where, _, kind = token[len(STRUCTURE_MARK):].partition(" ")
    return f"a sentence {'opening' if where == 'opens' else 'closing'} with {KINDS.get(kind, kind)}"
