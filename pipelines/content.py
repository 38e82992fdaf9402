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
rejected as it is for vectors, images and texts; otherwise repeats are reported (counts,
groups, conflicts) and every row is kept. Plain Python and numpy, no Beam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

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
    import numpy as np

    m = len(rows)
    if m < 2 or not columns:
        return 1.0, []
    codes = np.empty((len(columns), m), dtype=np.int64)
    for j, c in enumerate(columns):
        seen: dict = {}
        codes[j] = [seen.setdefault(_hashable(r.get(c)), len(seen)) for r in rows]

    def pairs(keys: np.ndarray) -> int:
        counts = np.unique(keys, return_counts=True)[1]
        return int((counts * (counts - 1) // 2).sum())

    def joined(group: np.ndarray, j: int) -> np.ndarray:
        return np.unique(group * (int(codes[j].max()) + 1) + codes[j], return_inverse=True)[1].ravel()

    total = m * (m - 1) // 2
    # a row's content, and its content without column j, as sums of random 64-bit
    # multiples of the value codes (distinct contents collide with chance ~2**-64)
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=len(columns), dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        terms = codes.astype(np.uint64) * weights[:, None]
        everything = terms.sum(axis=0, dtype=np.uint64)
        without = [pairs(everything - terms[j]) for j in range(len(columns))]
    exact = pairs(everything)
    held = max(range(len(columns)), key=lambda j: (without[j], columns[j]))
    p = 1.0
    steps = []
    group = np.zeros(m, dtype=np.int64)
    agreeing = total  # pairs agreeing on the columns so far
    left = [j for j in range(len(columns)) if j != held]
    while left and agreeing - exact >= MIN_PAIRS:
        best = None
        for j in left:
            g = joined(group, j)
            now = pairs(g)
            if best is None or now > best[1] or (now == best[1] and columns[j] < columns[best[0]]):
                best = (j, now, g)
        j, now, group = best
        left.remove(j)
        steps.append((columns[j], now / agreeing, "given the columns before"))
        p *= now / agreeing
        agreeing = now
    tail = []
    for j in [*left, held]:
        rest = total - without[j]  # pairs not agreeing on every other column
        tail.append((j, (pairs(codes[j]) - exact) / rest if rest else 0.0))
    for j, rate in sorted(tail, key=lambda t: (-t[1], columns[t[0]])):
        steps.append((columns[j], rate, "independent"))
        p *= rate
    return p, steps


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
    """Repeated content of a scan (pass 1) and whether it is rejected (pass 2).

    Parameters
    ----------
    repeated : mapping
        ``{content fingerprint: (first position, labels conflict, copies)}`` for content
        seen more than once among the valid rows.
    rows : int
        Valid rows whose content was fingerprinted.
    coincidence : float or None
        A table's probability that two distinct rows hold the same content
        (:func:`coincidence_probability`); None where the content identifies the row
        (vectors, images, texts).
    steps : sequence
        ``(column, agreement rate, how it was estimated)`` behind ``coincidence``.
    level : float
        Repeats are rejected when chance gives even one coinciding pair with probability
        below ``level``.
    """

    repeated: Mapping = field(default_factory=dict)
    rows: int = 0
    coincidence: float | None = None
    level: float = COINCIDENCE_LEVEL
    steps: tuple = ()

    @classmethod
    def of(cls, repeated: Mapping, rows: int, coincidence: tuple | None, level: float) -> "ContentCheck":
        """From pass 1's repeated content, its row count and the representer's
        ``(probability, steps)`` (None: the content identifies the row)."""
        if coincidence is None:
            return cls(repeated, rows, None, level)
        return cls(repeated, rows, float(coincidence[0]), level, tuple(coincidence[1]))

    @property
    def expected_pairs(self) -> float | None:
        """Coinciding pairs chance gives among ``rows``."""
        if self.coincidence is None:
            return None
        return self.rows * (self.rows - 1) / 2.0 * self.coincidence

    @property
    def chance(self) -> float | None:
        """Probability that chance gives at least one coinciding pair (Poisson)."""
        e = self.expected_pairs
        return None if e is None else -math.expm1(-e)

    @property
    def identifies_rows(self) -> bool:
        """Whether identical content is improbable by chance (repeats are rejected)."""
        chance = self.chance
        return chance is None or chance < self.level

    def rejections(self) -> dict:
        """``{fingerprint: (first position, labels conflict)}`` to reject in pass 2."""
        if not self.identifies_rows:
            return {}
        return {k: (v[0], v[1]) for k, v in self.repeated.items()}

    def counts(self) -> dict:
        groups = len(self.repeated)
        copies = sum(v[2] for v in self.repeated.values())
        conflict_groups = [v for v in self.repeated.values() if v[1]]
        return {
            "groups": groups,
            "rows_in_groups": copies,
            "repeats": copies - groups,
            "conflicting_groups": len(conflict_groups),
            "rows_in_conflicting_groups": sum(v[2] for v in conflict_groups),
        }

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
        e, chance = self.expected_pairs, self.chance
        why = (
            f"with these columns' values and how they go together, chance gives "
            f"{_fmt(e)} coinciding pairs among them; probability of at least one: {_fmt(chance)}"
        )
        if self.identifies_rows:
            return f"{seen}; {why}, below {self.level:g}: identical content is improbable by chance, so repeats are rejected"
        return f"{seen}; {why}, not below {self.level:g}: coincidences are expected, so no row is rejected for them"

    def to_dict(self) -> dict:
        out = {
            "rows": self.rows,
            **self.counts(),
            "identifies_rows": self.identifies_rows,
            "expected_coinciding_pairs": self.expected_pairs,
            "chance_of_a_coincidence": self.chance,
            "coincidence_level": self.level,
            "rejected": bool(self.identifies_rows and self.repeated),
            "explanation": self.explain(),
        }
        if self.coincidence is not None:
            out["coincidence_probability"] = self.coincidence
            out["agreement_by_column"] = [
                {"column": c, "rate": round(float(r), 6), "estimated": how} for c, r, how in self.steps
            ]
        return out


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if x >= 0.01 and x < 1e6:
        return f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"
    return f"{x:.2g}"
