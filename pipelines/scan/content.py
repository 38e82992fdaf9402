"""Repeated content: a duplicated record, or a coincidence the columns make likely?

Two rows with the same feature vector, image or text are the same record: the content
identifies the row, and a repeat is a duplicate (``duplicate_content``) or, under another
label, a conflict (``conflicting_labels``). Two rows of a table of a few categorical
columns are not: in a table of sex, age and class, many passengers share their values,
and two of them with different fates are the nature of the data, not a corrupted label.

For a table, the scan asks how many coinciding pairs chance alone would give:
:func:`coincidence_probability` estimates, on a uniform sample of rows, the probability
that two distinct rows hold the same content (column by column, each column's agreement
given the columns before it, exact copies left out), and ``n`` rows give
``n (n - 1) / 2`` times that coinciding pairs on average. If the chance of even one
coincidence (``1 - exp(-expected pairs)``, Poisson) is below the scan's
``coincidence_level`` (0.01 by default), repeated content is improbable by chance and is
rejected as it is for vectors and images; otherwise repeats are reported (counts,
groups, conflicts) and every row is kept.

A text is judged by its length: "Thank you." said by many speakers is a coincidence, a
review of forty words repeated under another label is not. :func:`text_coincidence`
treats the texts of each length (in words) as a table whose columns are the word
positions and estimates, length by length, the same probability; a repeated text is
rejected only where chance gives even one coinciding pair among the texts of its length
with probability below the level. Plain Python and numpy, no Beam.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from poisonscan.pipelines.represent.encoders import text_of

#: Default ``coincidence_level``: repeats are rejected where chance would give even one
#: coinciding pair with probability below this.
COINCIDENCE_LEVEL = 0.01

#: Fewest sampled pairs (not exact copies) agreeing on the columns so far for the next
#: column's conditional agreement to be estimated from them (relative error about 1/7);
#: below it the remaining columns are taken as independent.
MIN_PAIRS = 50


def coincidence_probability(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> tuple[float, list]:
    """Probability that two distinct rows of a table hold the same content, estimated
    from a uniform sample of its rows; and the estimate's steps.

    By the chain rule, ``P(all columns agree) = prod_j P(column j agrees | the columns
    before agree)``. Taken to the end, the chain gives the observed share of identical
    pairs, duplicated records included, so one column is kept out of it: the one whose
    agreement says most, i.e. whose removal makes the most pairs agree on all the other
    columns (a column that merely repeats others, such as a postcode's district, never
    is). The rest are chained greedily: next is the column that most often agrees among
    the sampled pairs agreeing on the columns so far (columns that go together are taken
    together), its conditional agreement being the share of those pairs that also agree
    on it. The chain stops as soon as fewer than :data:`MIN_PAIRS` pairs that are not
    exact copies agree on the columns so far (copies cannot keep it going). Every column
    left out then enters with its agreement rate among the pairs that do *not* agree on
    all other columns, which leaves exact copies out and is the column's own rate if it
    is independent of the rest: where it goes with the rest, the estimate is too low,
    never too high, so repeats err towards being rejected.
    """

    m = len(rows)
    if m < 2 or not columns:
        return 1.0, []
    codes = np.empty((len(columns), m), dtype=np.int64)
    for j, c in enumerate(columns):
        seen: dict = {}
        codes[j] = [seen.setdefault(_hashable(r.get(c)), len(seen)) for r in rows]
    total = m * (m - 1) // 2
    # a row's content, and its content without column j, as sums of random 64-bit
    # multiples of the value codes (distinct contents collide with chance ~2**-64)
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=len(columns), dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        terms = codes.astype(np.uint64) * weights[:, None]
        everything = terms.sum(axis=0, dtype=np.uint64)
        without = [_pairs(everything - terms[j]) for j in range(len(columns))]
    exact = _pairs(everything)
    held = max(range(len(columns)), key=lambda j: (without[j], columns[j]))
    p, steps, left = _chain(codes, columns, [j for j in range(len(columns)) if j != held], total, exact)
    tail = []
    for j in [*left, held]:
        rest = total - without[j]  # pairs not agreeing on every other column
        tail.append((j, (_pairs(codes[j]) - exact) / rest if rest else 0.0))
    for j, rate in sorted(tail, key=lambda t: (-t[1], columns[t[0]])):
        steps.append((columns[j], rate, "independent"))
        p *= rate
    return p, steps


def _pairs(keys: np.ndarray) -> int:
    """Pairs of rows that share a key."""
    counts = np.unique(keys, return_counts=True)[1]
    return int((counts * (counts - 1) // 2).sum())


def _chain(codes: np.ndarray, columns: Sequence[str], left: list, total: int, exact: int) -> tuple[float, list, list]:
    """The greedy chain of :func:`coincidence_probability`: (its product, its steps, the
    columns it did not reach)."""
    p = 1.0
    steps = []
    group = np.zeros(codes.shape[1], dtype=np.int64)
    agreeing = total  # pairs agreeing on the columns so far
    left = list(left)
    while left and agreeing - exact >= MIN_PAIRS:
        best = None
        for j in left:
            g = np.unique(group * (int(codes[j].max()) + 1) + codes[j], return_inverse=True)[1].ravel()
            now = _pairs(g)
            if best is None or now > best[1] or (now == best[1] and columns[j] < columns[best[0]]):
                best = (j, now, g)
        j, now, group = best
        left.remove(j)
        steps.append((columns[j], now / agreeing, "given the columns before"))
        p *= now / agreeing
        agreeing = now
    return p, steps, left


#: Word positions a text's chance estimate chains one by one; the words after them enter
#: as one column (two long texts that agree on their first words and differ later are
#: distinct texts either way).
TEXT_POSITIONS = 16


def text_coincidence(texts: Sequence[Any]) -> dict:
    """``{length in words: (share of texts, probability that two distinct texts of that
    length are the same text, steps)}``, estimated on a uniform sample of texts.

    The texts of one length are a table whose columns are the word positions (split on
    white space, as written); :func:`coincidence_probability` chains them. A length with
    a single sampled text has probability 0 (nothing to say it coincides). Texts of one
    word have no other column to judge a repeat against: their word enters at the rate
    at which the words of the shortest longer texts agree (the least length above one
    with two sampled texts, every position pooled), measured on the scanned data rather
    than assumed.
    """

    words = []
    for t in texts:
        try:
            words.append(text_of(t).split() if t is not None else [])
        except UnicodeDecodeError:
            continue  # rejected as bad_text
    words = [w for w in words if w]
    m = len(words)
    by_length: dict[int, list] = {}
    for w in words:
        by_length.setdefault(len(w), []).append(w)
    out = {}
    for length, group in sorted(by_length.items()):
        if len(group) < 2:
            out[length] = (len(group) / m, 0.0, [])
            continue
        if length == 1:
            nearest = min((k for k, g in by_length.items() if k > 1 and len(g) > 1), default=None)
            rate = _agreement([x for w in by_length.get(nearest, []) for x in w])
            how = f"as the words of texts of {nearest} words agree" if nearest else "no longer texts to compare"
            out[length] = (len(group) / m, rate, [("word 1", rate, how)])
            continue
        cols = [f"word {i + 1}" for i in range(min(length, TEXT_POSITIONS))]
        if length > TEXT_POSITIONS:
            cols.append(f"words {TEXT_POSITIONS + 1}+")
        rows = [
            dict(zip(cols, [*w[:TEXT_POSITIONS], *([tuple(w[TEXT_POSITIONS:])] if length > TEXT_POSITIONS else [])]))
            for w in group
        ]
        p, steps = coincidence_probability(rows, cols)
        out[length] = (len(group) / m, p, steps)
    return out


def _agreement(values: Sequence[Any]) -> float:
    """Share of pairs of ``values`` that are equal."""

    n = len(values)
    if n < 2:
        return 0.0
    return sum(c * (c - 1) for c in Counter(values).values()) / (n * (n - 1))


def _hashable(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return ("nan",)  # NaN equals itself as stored content
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


@dataclass(frozen=True)
class ContentCheck:
    """Repeated content of a scan (pass 1) and which of it is rejected (pass 2).

    Parameters
    ----------
    repeated : mapping
        ``{content fingerprint: (first position, labels conflict, copies, stratum)}`` for
        content seen more than once among the valid rows; the stratum is a text's length
        in words (0 for other content).
    rows : int
        Valid rows whose content was fingerprinted.
    coincidence : mapping or None
        ``{stratum: (share of rows, probability that two distinct rows of the stratum
        hold the same content, steps)}``: one stratum (0) for a table
        (:func:`coincidence_probability`), one per length for texts
        (:func:`text_coincidence`); None where the content identifies the row (vectors,
        images). A stratum the sample never saw has probability 0.
    level : float
        Repeats of a stratum are rejected when chance gives even one coinciding pair
        among its rows with probability below ``level``.
    """

    repeated: Mapping = field(default_factory=dict)
    rows: int = 0
    coincidence: Mapping | None = None
    level: float = COINCIDENCE_LEVEL

    @classmethod
    def of(cls, repeated: Mapping, rows: int, coincidence: Mapping | None, level: float) -> "ContentCheck":
        """From pass 1's repeated content, its row count and the representer's
        coincidence estimate (None: the content identifies the row)."""
        if coincidence is not None:
            coincidence = {int(k): (float(v[0]), float(v[1]), tuple(v[2])) for k, v in coincidence.items()}
        return cls(repeated, rows, coincidence, level)

    @property
    def by_length(self) -> bool:
        """Whether strata are text lengths (words) rather than one table."""
        return self.coincidence is not None and set(self.coincidence) != {0}

    def expected_pairs(self, stratum: int = 0) -> float | None:
        """Coinciding pairs chance gives among the rows of ``stratum``."""
        if self.coincidence is None:
            return None
        share, p, _ = self.coincidence.get(stratum, (0.0, 0.0, ()))
        n = self.rows * share
        return max(n * (n - 1) / 2.0, 0.0) * p

    def chance(self, stratum: int = 0) -> float | None:
        """Probability that chance gives at least one coinciding pair (Poisson)."""
        e = self.expected_pairs(stratum)
        return None if e is None else -math.expm1(-e)

    def rejects(self, stratum: int = 0) -> bool:
        """Whether identical content of ``stratum`` is improbable by chance (rejected)."""
        chance = self.chance(stratum)
        return chance is None or chance < self.level

    @property
    def identifies_rows(self) -> bool:
        """Whether every repeat found is rejected (for a table: its one stratum)."""
        if not self.by_length:
            return self.rejects(0)
        return all(self.rejects(v[3]) for v in self.repeated.values())

    def rule(self) -> "ContentCheck":
        """This check without its repeated groups: what :meth:`rejects` needs, small
        enough to carry to every worker."""
        return ContentCheck({}, self.rows, self.coincidence, self.level)

    def rejections(self) -> dict:
        """``{fingerprint: (first position, labels conflict)}`` to reject in pass 2."""
        return {k: (v[0], v[1]) for k, v in self.repeated.items() if self.rejects(v[3])}

    def counts(self) -> dict:
        groups = list(self.repeated.values())
        conflicting = [v for v in groups if v[1]]
        rejected = [v for v in groups if self.rejects(v[3])]
        return {
            "groups": len(groups),
            "rows_in_groups": sum(v[2] for v in groups),
            "repeats": sum(v[2] for v in groups) - len(groups),
            "conflicting_groups": len(conflicting),
            "rows_in_conflicting_groups": sum(v[2] for v in conflicting),
            "groups_rejected": len(rejected),
            "rows_in_rejected_groups": sum(v[2] for v in rejected),
        }

    def _lengths(self) -> list[dict]:
        """Per text length holding repeats: rows in groups, chance, rejected."""
        out = {}
        for v in self.repeated.values():
            d = out.setdefault(v[3], {"words": int(v[3]), "groups": 0, "rows_in_groups": 0})
            d["groups"] += 1
            d["rows_in_groups"] += v[2]
        for s, d in out.items():
            d["expected_coinciding_pairs"] = self.expected_pairs(s)
            d["chance_of_a_coincidence"] = self.chance(s)
            d["rejected"] = self.rejects(s)
        return [out[s] for s in sorted(out)]

    def explain(self) -> str:
        """One sentence for the reviewer: what repeats there are and why they are or are
        not rejected."""
        c = self.counts()
        seen = (
            f"{c['rows_in_groups']:,} of {self.rows:,} rows share their content with another row "
            f"({c['groups']:,} groups, {c['conflicting_groups']:,} of them under different labels)"
            if c["groups"]
            else f"no two of {self.rows:,} rows share their content"
        )
        if self.coincidence is None:
            return f"{seen}; the content identifies a row, so repeats are rejected"
        if self.by_length:
            lengths = self._lengths()
            kept = [d for d in lengths if not d["rejected"]]
            gone = [d for d in lengths if d["rejected"]]
            parts = [seen]
            if kept:
                parts.append(
                    f"texts of {_words(kept)} are common enough that chance gives a coinciding pair among "
                    f"those of their length with probability at least {self.level:g}, so their "
                    f"{sum(d['rows_in_groups'] for d in kept):,} repeated rows are kept"
                )
            if gone:
                parts.append(
                    f"texts of {_words(gone)} identify a row (chance of a coincidence below {self.level:g}), "
                    f"so their {sum(d['rows_in_groups'] for d in gone):,} repeated rows are rejected"
                )
            if not lengths:
                parts.append("texts are judged by their length in words against what chance gives")
            return "; ".join(parts)
        e, chance = self.expected_pairs(0), self.chance(0)
        why = (
            f"with these columns' values and how they go together, chance gives "
            f"{_fmt(e)} coinciding pairs among them; probability of at least one: {_fmt(chance)}"
        )
        if self.rejects(0):
            return f"{seen}; {why}, below {self.level:g}: identical content is improbable by chance, so repeats are rejected"
        return f"{seen}; {why}, not below {self.level:g}: coincidences are expected, so no row is rejected for them"

    def to_dict(self) -> dict:
        out = {
            "rows": self.rows,
            **self.counts(),
            "identifies_rows": self.identifies_rows,
            "coincidence_level": self.level,
            "rejected": bool(any(self.rejects(v[3]) for v in self.repeated.values())),
            "explanation": self.explain(),
        }
        if self.by_length:
            out["by_length"] = self._lengths()
        else:
            out["expected_coinciding_pairs"] = self.expected_pairs(0)
            out["chance_of_a_coincidence"] = self.chance(0)
        if self.coincidence is not None and not self.by_length:
            _, p, steps = self.coincidence.get(0, (0.0, 0.0, ()))
            out["coincidence_probability"] = p
            out["agreement_by_column"] = [
                {"column": c, "rate": round(float(r), 6), "estimated": how} for c, r, how in steps
            ]
        return out


def _words(lengths: list[dict]) -> str:
    """'1–3 and 5 words' from per-length entries."""
    ns = [d["words"] for d in lengths]
    runs, start = [], ns[0]
    for a, b in zip(ns, ns[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}–{a}")
            if b is not None:
                start = b
    text = ", ".join(runs[:-1]) + (" and " if len(runs) > 1 else "") + runs[-1]
    return f"{text} word{'s' if ns != [1] else ''}"


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if x >= 0.01 and x < 1e6:
        return f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"
    return f"{x:.2g}"
