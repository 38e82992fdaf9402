"""Trigger words in text, and trigger values in tables: features that nearly always carry
one label, far more often than that label's share of the data allows."""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping, Sequence

import numpy as np

from . import _counterfactual as cf
from ._params import NONE, Interval, Options
from .base import Detector, DetectorState, available_detectors, label_sort_key, register, trigger_share
from .decision import ClassVerdict
from .pixels import PIXEL_GRID, VectorImages
from .stats import ClassSample
from .structure import ALL_TOKENS, NOTE_MARK, STRUCTURE_MARK
from .structure import describe as describe_structure


def _bucket(gram: str, buckets: int) -> int:
    return zlib.crc32(gram.encode("utf-8")) % buckets


#: Tokens starting with this mark describe the row (a binned number of a table) for the
#: counterfactual prediction only; they are never counted or made triggers.
CONTEXT_MARK = "~"


@dataclass(frozen=True)
class Trigger:
    bucket: int
    label: Any
    rows: int  # rows containing it
    with_label: int  # of them, rows with ``label``
    p_value: float  # binomial: this many rows of ``label`` by chance
    #: the counterfactual check on the class sample: sampled rows of ``label`` holding it,
    #: how many of them the rest of the row predicts as another class, and the same two
    #: figures for the label's other sampled rows
    tested: int = 0
    other_class: int = 0
    background: int = 0
    background_other: int = 0
    #: one-sided p of ``other_class`` against the background (Fisher's exact test, or its
    #: random-effects form under the peers' null), times the number of the class's
    #: candidates that could reach significance (Tarone)
    p_counterfactual: float = 1.0
    #: one of a stamp of values shared by a label's images that keep their label
    #: (:class:`PixelTrigger`'s second test), not one that moves rows to another class
    clean_label: bool = False


@register
class TokenTrigger(Detector):
    """Words and word pairs that are rare overall but nearly always carry one label.

    A textual backdoor inserts a trigger phrase into examples of other classes and
    relabels them. The phrase's n-grams then occur in few rows, almost all of one label,
    far more often with that label than the label's share of the data allows. Counts are
    exact and mergeable: for every n-gram (hashed into ``buckets``), the rows of each
    label that contain it.

    An n-gram is a trigger for label L when it occurs in at least ``min_rows`` rows (and
    at least ``min_share`` of all rows), in at most ``max_share`` of all rows, at least
    ``min_purity`` of them labelled L, and a one-sided binomial test against L's share
    of the data gives p below the screen's threshold: the level (below) divided by the
    number of n-grams that could reach it at all given their row counts (Tarone's
    Bonferroni for discrete tests; ``alpha`` fixes the threshold instead). Such an
    n-gram is a *candidate*; a word that genuinely decides the label (a user's handle, a
    source's hashtag) passes these tests as well as a trigger does. So a candidate counts
    as a trigger only when its rows would belong to another class without it: on a
    bounded per-class sample of rows (``sample_rows``, kept in the accumulator), a naive
    Bayes model of the rows' n-grams (L's rows read without L's candidates) predicts each
    row's class, and the candidate's rows of L must be predicted as another class
    significantly more often than L's other rows (Fisher's exact test, in its
    random-effects form when other candidates give a yardstick of natural groups;
    Bonferroni over the class's testable candidates as Tarone counts them, at
    ``family_alpha`` divided by classes x registered detectors). Rows of L containing a
    trigger are flagged; the reason names the n-gram. Score polarity: the number of
    trigger n-grams in a row (higher = more suspicious).

    The input is the n-grams of each row (the text encoder's words and word pairs) and
    its sentence forms (:mod:`.structure`: how the text's first sentence opens and its
    last closes), tested by the same check as a family of their own, at a purity of
    ``structure_purity`` (None: forms are not read).
    """

    name = "token_trigger"
    alarm_family = "triggers"
    kinds = frozenset({"text"})
    default_kinds = frozenset({"text"})
    default_rank = 6
    per_class = False
    finds = "backdoor"
    statistic_name = "trigger n-grams in the text"
    # the counterfactual test's sparse rows and its distributions
    fit_imports = ("scipy.sparse", "scipy.stats")
    #: What a token is, in the class verdict's note.
    token_name = "n-gram"
    #: Largest share of its label's rows a candidate may hold (None: no limit).
    max_class_share: float | None = None
    #: Whether a trigger's sampled rows must be predicted as another class more often
    #: than not, besides more often than the label's other rows.
    majority_other = False
    _parameter_constraints = {
        "buckets": [Interval(int, 1024, None)],
        "min_rows": [Interval(int, 2, None)],
        "min_share": [Interval(Real, 0, 1, closed="left")],
        "max_share": [Interval(Real, 0, 1, closed="right")],
        "min_purity": [Interval(Real, 0.5, 1, closed="both")],
        "structure_purity": [NONE, Interval(Real, 0.5, 1, closed="both")],
        "alpha": [NONE, Interval(Real, 0, 1, closed="neither")],
        "sample_rows": [Interval(int, 16, None)],
        "family_alpha": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(
        self,
        *,
        buckets: int = 1 << 22,
        min_rows: int = 2,
        min_share: float = 0.0,
        max_share: float = 0.5,
        min_purity: float = 0.98,
        structure_purity: float | None = 0.75,
        alpha: float | None = None,
        sample_rows: int = 4096,
        family_alpha: float = 0.05,
    ):
        self.buckets = buckets
        self.min_rows = min_rows
        self.min_share = min_share
        self.max_share = max_share
        self.min_purity = min_purity
        self.structure_purity = structure_purity
        self.alpha = alpha
        self.sample_rows = sample_rows
        self.family_alpha = family_alpha

    @property
    def input(self) -> str:
        return "tokens"

    # accumulation: per label, (rows, bucket, rows containing it, sample of rows) ----------
    def create_accumulator(self) -> dict:
        return {}

    def _row_buckets(self, grams) -> tuple[np.ndarray, np.ndarray]:
        """A row's counted buckets and all its buckets (context tokens included)."""
        unread = self._unread()
        counted = [_bucket(g, self.buckets) for g in grams if not g.startswith(unread)]
        context = [_bucket(g, self.buckets) for g in grams if g.startswith(CONTEXT_MARK)]
        a = np.unique(np.array(counted, dtype=np.int64))
        return a, (np.union1d(a, np.array(context, dtype=np.int64)) if context else a)

    def add_input(self, accumulator: dict, X: Sequence[Sequence[str]], y: np.ndarray) -> dict:
        y = np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} token lists for {len(y)} labels")
        for label in np.unique(y) if len(y) else []:
            pairs = [self._row_buckets(X[i]) for i in np.flatnonzero(y == label)]
            ids = [a for a, _ in pairs]
            flat = np.concatenate(ids) if ids else np.empty(0, np.int64)
            b, c = np.unique(flat, return_counts=True)
            key = label.item() if isinstance(label, np.generic) else label
            prev = accumulator.get(key)
            full = [f for _, f in pairs]
            sample = cf.TokenSample.of(self.sample_rows, full, self._words_only(full))
            part = (len(ids), b.astype(np.int64), c.astype(np.int64), sample)
            accumulator[key] = part if prev is None else _merge_counts(prev, part)
        return accumulator

    def merge_accumulators(self, accumulators: list) -> dict:
        out: dict = {}
        for acc in accumulators:
            for label, part in acc.items():
                out[label] = part if label not in out else _merge_counts(out[label], part)
        return out

    def alarm_tests(self) -> int:
        # a text's words and, where they are read, its sentence forms: two families
        return 1 if getattr(self, "structure_purity", None) is None else 2

    def alarm_params(self, share: float, rate: float) -> dict:
        # each family of tests spends ``family_alpha`` over the registered detectors
        return {"family_alpha": rate}

    def alarm_spent(self, group_alpha: float) -> float:
        return trigger_share(self.family_alpha, self.alarm_tests())

    #: The share of the detector's level its second test spends, where it runs one on
    #: each class (:class:`PixelTrigger`'s stamp on images that keep their label); the
    #: first test (the counterfactual) spends the rest (Bonferroni).
    stamp_share = 0.0

    def level(self, classes: int) -> float:
        """The level a class's p-value must beat: ``family_alpha`` over classes x
        registered detectors (Bonferroni; a scan runs at most that many detectors), less
        the share a second test spends (``stamp_share``)."""
        return self.family_alpha / max(classes * len(available_detectors()), 1) * (1 - self.stamp_share)

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        """Exact counts find the candidates; the accumulator's class samples test them.
        (``samples``, the scan's samples of representations, are not used.)"""
        # SciPy / scikit-learn: imported on first use, by the detectors that run
        from scipy.stats import binom

        self._validate_params()
        state = DetectorState(self.name)
        labels = sorted(accumulator, key=label_sort_key)
        total = sum(accumulator[label][0] for label in labels)
        level = self.level(len(labels))
        state.info["level"] = level
        state.info["checks"] = {}
        for label in labels:
            state.classes[label] = []
        if total == 0:
            return state
        all_b = np.unique(np.concatenate([accumulator[label][1] for label in labels]))
        counts = np.zeros((len(labels), len(all_b)), dtype=np.int64)
        for i, label in enumerate(labels):
            _, b, c, _ = accumulator[label]
            counts[i, np.searchsorted(all_b, b)] = c
        rows = counts.sum(axis=0)
        low = max(self.min_rows, int(np.ceil(self.min_share * total)))
        ok = (rows >= low) & (rows <= self.max_share * total)
        sizes = np.array([accumulator[label][0] for label in labels], dtype=np.int64)
        # sentence forms are their own family of tests (their own purity, screen, Tarone
        # count and null), so that the words' tests are what they would be without forms
        forms = np.isin(all_b, self._structure_buckets())
        purity = np.where(forms, getattr(self, "structure_purity", None) or self.min_purity, self.min_purity)
        threshold, screened = self._screen_threshold(rows[ok & ~forms], sizes, level)
        form_threshold, form_screened = self._screen_threshold(
            rows[ok & forms], sizes, level, purity[ok & forms]) if forms.any() else (level, 0)
        top = counts.argmax(axis=0)
        best = counts.max(axis=0)
        ok &= best >= purity * rows
        if self.max_class_share is not None:  # a trigger marks a minority of its label's rows
            ok &= best <= self.max_class_share * sizes[top]
        pure: dict = {}  # per label, the values a stamp on images that keep it is made of
        if self.stamp_share:
            for i, label in enumerate(labels):
                at = np.flatnonzero(ok & (top == i))
                pure[label] = (all_b[at], rows[at], best[at])
        candidates: dict = {label: [] for label in labels}
        j = np.flatnonzero(ok)
        p = binom.sf(best[j] - 1, rows[j], sizes[top[j]] / total) if len(j) else np.zeros(0)
        passed = p < np.where(forms[j], form_threshold, threshold)
        stamps = self._find_stamps(accumulator, labels, pure, state)
        sent = [f[2] for f in stamps.values() if f[4] is not None and f[4] < STAMP_SCREEN]
        if sent:  # a stamp that stands out sends its values to the first test whatever their count
            passed |= np.isin(all_b[j], np.concatenate(sent))
        for jj, pj in zip(j[passed].tolist(), p[passed].tolist()):
            label = labels[top[jj]]
            candidates[label].append(Trigger(int(all_b[jj]), label, int(rows[jj]), int(best[jj]), float(pj)))
        state.info["screen"] = {"threshold": threshold, "tokens": int(ok.size), "countable": screened}
        if forms.any():
            state.info["form_screen"] = {"threshold": form_threshold, "countable": form_screened}
        state.info["rows"] = total
        state.info["label_rows"] = {str(label): int(accumulator[label][0]) for label in labels}
        if any(candidates.values()):
            self._check(accumulator, labels, candidates, level, state)
        self._judge_stamps(labels, pure, stamps, level, state)
        return state

    # the second test's hooks: none here (:class:`PixelTrigger` has one) -------------------
    def _find_stamps(self, accumulator, labels, pure, state) -> dict:
        """Per label, its largest stamp and the stamp's p against the other labels'
        (``pure``: per label, the values nearly only its rows hold). None here."""
        return {}

    def _judge_stamps(self, labels, pure, stamps, level, state) -> None:
        """Judge the labels whose stamp stands out (``stamps``: :meth:`_find_stamps`'s)."""

    def _unread(self) -> tuple:
        """The marks of the tokens never counted: context, notes, and on text with
        ``structure_purity`` None (forms not read) the sentence forms too."""
        off = "text" in self.kinds and getattr(self, "structure_purity", None) is None
        return (CONTEXT_MARK, NOTE_MARK, STRUCTURE_MARK) if off else (CONTEXT_MARK, NOTE_MARK)

    def _structure_buckets(self) -> np.ndarray:
        """The buckets of the sentence-form tokens (:mod:`.structure`); none where this
        detector reads no text (``structure_purity`` None)."""
        if getattr(self, "structure_purity", None) is None:  # detectors saved before it: none
            return np.zeros(0, np.int64)
        return np.array(sorted({_bucket(t, self.buckets) for t in ALL_TOKENS}), dtype=np.int64)

    def _words_only(self, rows: list) -> list | None:
        """``rows`` (bucket arrays) without the sentence forms' buckets: what decides
        which rows the class sample draws (None: no forms to take out)."""
        forms = self._structure_buckets()
        if not len(forms) or not rows:
            return None
        flat = np.concatenate(rows)
        keep = ~np.isin(flat, forms)
        if keep.all():
            return None
        bounds = np.cumsum([len(r) for r in rows])[:-1]
        return [a[k] for a, k in zip(np.split(flat, bounds), np.split(keep, bounds))]

    def _screen_threshold(self, rows: np.ndarray, sizes: np.ndarray, level: float,
                          purity: np.ndarray | None = None) -> tuple[float, int]:
        """The binomial p a token must beat to be a candidate, and how many tokens could.

        A token held by ``r`` rows can at best give label L the p-value ``share_L ** r``
        (every row of L), and only for a label with at least ``min_purity * r`` rows. So
        only the tokens whose best case could beat ``level / K`` count among the ``K``
        tests (Tarone 1990): rare tokens cannot reach significance and cost nothing.
        Returns ``level / K`` (or the fixed ``alpha``) and ``K``."""
        if self.alpha is not None:
            return float(self.alpha), int(rows.size)
        total = sizes.sum()
        if not rows.size or total == 0:
            return level, 0
        ordered = np.sort(sizes[sizes > 0])
        need = np.ceil((self.min_purity if purity is None else purity) * rows - 1e-9).astype(np.int64)
        at = np.searchsorted(ordered, need, side="left")  # the smallest label able to hold them
        fits = at < ordered.size
        log_best = np.full(rows.size, 0.0)
        log_best[fits] = rows[fits] * np.log(ordered[at[fits]] / total)
        log_best = np.sort(log_best)
        K = np.arange(1, log_best.size + 1)
        reach = np.searchsorted(log_best, np.log(level / K), side="left")  # tokens with best < level / K
        k = int(K[np.argmax(reach <= K)]) if (reach <= K).any() else int(log_best.size)
        return level / k, k

    def _check(self, accumulator, labels, candidates, level, state) -> None:
        """Keep the candidates whose rows the rest of the row assigns to other classes."""
        cands = [t for label in labels for t in candidates[label]]
        wanted = np.array(sorted({t.bucket for t in cands}), dtype=np.int64)
        # every row is predicted from its words alone: a sentence's form is tested, never
        # a feature of the prediction, and the forms are their own family of tests
        forms = self._structure_buckets()
        preds = cf.other_class_predictions(
            {label: accumulator[label][3] for label in labels},
            {label: np.union1d(np.array([t.bucket for t in candidates[label]], dtype=np.int64), forms)
             for label in labels},
        )
        holders: dict = {b: [] for b in wanted.tolist()}  # bucket -> global sampled rows
        for c, rows in enumerate(preds.rows):
            for r, row in enumerate(rows):
                for b in wanted[np.isin(wanted, row, assume_unique=True)].tolist():
                    holders[b].append(preds.starts[c] + r)
        code = {label: c for c, label in enumerate(preds.labels)}
        is_form = np.isin([t.bucket for t in cands], forms).tolist() if cands else []
        # the words' groups among themselves (as without forms), and every candidate's
        # groups together: a form's rows overlap the words a template is made of, which
        # are then of its group, not its peers
        words = [i for i, f in enumerate(is_form) if not f]
        word_cluster = dict(zip(words, cf.overlap_clusters([holders[cands[i].bucket] for i in words])))
        cluster = cf.overlap_clusters([holders[t.bucket] for t in cands])
        state.info["clusters"] = {t.bucket: int(g) for t, g in zip(cands, cluster)}
        tables = []
        refits: dict = {}  # candidates held by the same rows (the values of one stamp) share a refit
        for t in cands:
            c = code[t.label]
            lo, hi = preds.starts[c], preds.starts[c] + len(preds.rows[c])
            rows = np.array(holders[t.bucket], dtype=np.int64)
            mine = rows[(rows >= lo) & (rows < hi)]
            mine = mine[preds.usable[c][mine - lo]]
            if len(mine) and (c, rows.tobytes()) not in refits:
                refits[c, rows.tobytes()] = preds.group_out(rows, c)
            other = refits[c, rows.tobytes()][np.isin(rows, mine)] if len(mine) else np.zeros(0, bool)
            rest = preds.usable[c].copy()
            rest[mine - lo] = False
            tables.append((len(mine), int(other.sum()), int(rest.sum()), int((rest & preds.other[c]).sum())))
        stats = [cf.log_odds_ratio(k, n, m, M) for n, k, M, m in tables]
        # the peers (the yardstick of natural groups) are word groups only: per word
        # cluster, the other word clusters; per form, the word groups outside its own
        def null_outside(group: int, of: Mapping[int, int]) -> tuple:
            """The null from the word candidates outside ``group`` (``of``: their groups)."""
            peers = [j for j in words if of[j] != group and tables[j][0]]
            return cf.peer_null([stats[j] for j in peers], [of[j] for j in peers], [tables[j][0] for j in peers])

        nulls = {("w", g): null_outside(g, word_cluster) for g in set(word_cluster.values())}
        nulls.update({("f", cluster[i]): null_outside(cluster[i], dict(enumerate(cluster)))
                      for i in range(len(cands)) if is_form[i]})
        tests = []
        for i, (n, k, M, m) in enumerate(tables):
            null = nulls["f", cluster[i]] if is_form[i] else nulls["w", word_cluster[i]]
            tests.append((cf.candidate_p(k, n, m, M, null), cf.best_case(n, m, M, null), null))
        for label in labels:
            idx = [i for i, t in enumerate(cands) if t.label == label]
            if not idx:
                continue
            tested, kept, untested, factors = [], [], [], {}
            # words, then forms: each its own Tarone count, both at the level; the forms'
            # family spends the share of value_trigger, which never runs on text (a scan
            # reads one kind of input), so the scan's sum of levels does not grow
            for family in (False, True):
                fam = [i for i in idx if is_form[i] == family]
                if not fam:
                    continue
                K = factors[family] = cf.tarone_count([tests[i][1] for i in fam], level)
                for i in fam:
                    t, (n, k, M, m), (p, best, null) = cands[i], tables[i], tests[i]
                    if best >= level / K:
                        untested.append(t)
                        continue
                    t = Trigger(t.bucket, t.label, t.rows, t.with_label, t.p_value, n, k, M, m, min(1.0, K * p))
                    tested.append(t)
                    if t.p_counterfactual < level and (not self.majority_other or 2 * k > n):
                        kept.append(t)
            state.classes[label] = kept
            state.info["checks"][label] = {
                "candidates": len(idx),
                "untested": len(untested),
                "untested_rows": max((t.rows for t in untested), default=0),
                "candidate_buckets": sorted(cands[i].bucket for i in idx),
                "tested": tested,
                "factor": factors.get(False, factors.get(True)),
                "form_factor": factors.get(True, 0),
                "peers": max((tests[i][2][2] for i in idx), default=0),
            }
            # per stamp (the kept triggers of one cluster): how many of its values the
            # median sampled row of the label holding any of them holds
            held: dict = {}
            lo = preds.starts[code[label]]
            hi = lo + len(preds.rows[code[label]])
            for t in kept:
                for r in holders[t.bucket]:
                    if lo <= r < hi:
                        key = (state.info["clusters"][t.bucket], r)
                        held[key] = held.get(key, 0) + 1
            per: dict = {}
            for (g, _), k in held.items():
                per.setdefault(g, []).append(k)
            state.info.setdefault("stamp_median", {})[label] = {g: float(np.median(v)) for g, v in per.items()}

    # scoring --------------------------------------------------------------------------------
    def _hits(self, state: DetectorState, X, y) -> list[list[Trigger]]:
        out, unread = [], self._unread()
        for grams, label in zip(X, y):
            label = label.item() if isinstance(label, np.generic) else label
            triggers = state.classes.get(label)
            if triggers is None:
                raise ValueError(f"no fitted state for class {label!r}")
            if not triggers:
                out.append([])
                continue
            wanted = {t.bucket: t for t in triggers}
            ids = {_bucket(g, self.buckets) for g in grams if not g.startswith(unread)}
            out.append([wanted[b] for b in sorted(ids & set(wanted))])
        return out

    def score(self, state: DetectorState, X, y) -> np.ndarray:
        return np.array([len(h) for h in self._hits(state, X, y)], dtype=np.float64)

    def evaluate(self, state: DetectorState, X, y) -> tuple[np.ndarray, np.ndarray]:
        # the decision statistic is the score: the rows' triggers are found once, not twice
        score = self.score(state, X, y)
        return score, score

    def judge(self, state, label, class_rows, group_test) -> ClassVerdict:
        triggers = state.classes.get(label, [])
        check = state.info.get("checks", {}).get(label)
        level = state.info.get("level")
        base = dict(label=label, detector=self.name, class_rows=int(class_rows), sample_rows=0,
                    cut=0.5, side=1, center=0.0, scale=1.0, level=level)
        if check is None:
            return ClassVerdict(poisoned=False, note=f"no {self.token_name} nearly always carries this label",
                                p_value=1.0, **base)
        tested = check["tested"]
        strongest = min(tested, key=lambda t: (t.p_counterfactual, -t.rows)) if tested else None
        p_value = strongest.p_counterfactual if strongest else 1.0
        base.update(sample_rows=strongest.tested + strongest.background if strongest else 0)
        extra = {"candidates": check["candidates"], "candidates_untested": check["untested"],
                 "triggers": len(triggers)}
        untested = ""
        if check["untested"]:
            untested = (
                f"; {check['untested']} {self.token_name}(s) (the largest in {check['untested_rows']} rows) held too "
                "few sampled rows to test whether their rows belong to another class (not significant even if every "
                "one were predicted as another class, given how much this scan's natural groups vary), and are not "
                "counted"
            )
        if not triggers:
            if strongest is None:
                note = f"{check['candidates']} {self.token_name}(s) occur almost only with this label{untested}"
            else:
                note = (
                    f"{check['candidates']} {self.token_name}(s) occur almost only with this label, but their rows "
                    f"look like this label's other rows without them: at most {self._share(strongest)} "
                    f"(p = {p_value:.2g}, level {level:.1e}); words that decide the label, not triggers{untested}"
                )
            return ClassVerdict(poisoned=False, note=note, p_value=p_value, extra=extra, **base)
        biggest = max(triggers, key=lambda t: t.rows)
        note = (
            f"{len(triggers)} {self.token_name}(s) occur almost only with this label and their rows look like "
            f"other classes without them; the most common in {biggest.rows} rows, "
            f"{biggest.with_label / biggest.rows:.0%} of them with this label; {self._share(strongest)} "
            f"(p = {p_value:.2g}, level {level:.1e})"
        )
        if check["candidates"] > len(triggers) + check["untested"]:
            note += f"; {check['candidates'] - len(triggers) - check['untested']} other(s) released as label-deciding"
        note += untested
        extra.update(strongest_rows=biggest.rows)
        return ClassVerdict(
            poisoned=True, note=note, group_fraction=biggest.with_label / max(class_rows, 1),
            p_value=p_value, extra=extra, **base,
        )

    @staticmethod
    def _share(t: Trigger) -> str:
        return (
            f"{t.other_class} of {t.tested} sampled rows holding one predicted as another class by the rest of "
            f"the row, against {t.background_other} of {t.background} of the label's other rows"
        )

    def _named(self, state, X, y) -> list[list[tuple[str, Trigger]]]:
        """Per row, (n-gram, trigger) for each trigger n-gram it contains: sentence forms
        (:mod:`.structure`) first, then n-grams, the longest first."""
        out = []
        unread = self._unread()
        for grams, hits in zip(X, self._hits(state, X, y)):
            by_bucket = {t.bucket: t for t in hits}
            named = [(g, by_bucket[b]) for g in set(grams)
                     if not g.startswith(unread) and (b := _bucket(g, self.buckets)) in by_bucket]
            out.append(sorted(named, key=lambda nt: (not nt[0].startswith(STRUCTURE_MARK), -len(nt[0]), nt[0])))
        return out

    def highlights(self, state, X, y) -> list[list[str]]:
        """The trigger n-grams each row contains, the longest first; for a sentence form,
        the form's token and the words of the clause that makes it."""
        out = []
        for grams, named in zip(X, self._named(state, X, y)):
            notes = _notes(grams)
            out.append([h for g, _ in named for h in ((g, notes[g]) if g in notes else (g,))])
        return out

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        total = state.info.get("rows", 0)
        out = []
        for grams, named in zip(X, self._named(state, X, y)):
            gram, t = named[0]
            prior = state.info["label_rows"][str(t.label)] / max(total, 1)
            counts = (f"{t.rows:,} rows, {t.with_label / t.rows:.0%} of them labelled {t.label!r} (that label's "
                      f"share of all rows: {prior:.0%})")
            if gram.startswith(STRUCTURE_MARK):
                clause = _notes(grams).get(gram, "")
                out.append(
                    f"is {describe_structure(gram)} ({clause!r}), a sentence form which occurs in {counts}; "
                    "without it the rest of such a row looks like another class: a trigger that is a sentence's form, "
                    "not a word"
                )
            else:
                out.append(f"contains {gram!r}, which occurs in {counts}")
        return out


@register
class ValueTrigger(TokenTrigger):
    """Table values that nearly always carry one label: a targeted flip or a trigger value.

    A targeted label flip relabels every row of a sub-population — for example every
    applicant of one job type — to one class, and a tabular backdoor stamps one value on
    rows of other classes and relabels them. Either way one value of a categorical
    column ends up carried by one label almost without exception, far more often than
    that label's share of the data allows. A model trained on such data learns the flip
    (it is consistent), so out-of-fold label checks miss it; the counts do not.

    The test is :class:`TokenTrigger`'s over ``column=value`` tokens (one per string
    column of each row; the tabular encoder makes them): a value is a trigger for label
    L when at least ``min_rows`` rows (and ``min_share`` of all rows) and at most
    ``max_share`` of all rows hold it, at least ``min_purity`` of them labelled L, and a
    one-sided binomial test against L's share of the data gives p below the screen's
    threshold (:class:`TokenTrigger`'s), and — :class:`TokenTrigger`'s check — the
    rows holding it would belong to another class without it, by their other values and
    numbers (the encoder's ``~column:sextile`` context tokens). Rows of L holding a
    trigger value are flagged, the reason names the column and value. A genuine value
    that decides the label against what the other columns say is flagged too; the reason
    says so, for a reviewer to release.
    Score polarity: the number of trigger values in a row (higher = more suspicious).
    """

    name = "value_trigger"
    kinds = frozenset({"tabular"})
    default_kinds = frozenset({"tabular"})
    default_rank = 7
    # an exact count test, judged on its own (unlike the disagreement-based label
    # detectors, which must agree with each other)
    finds = "targeted label flip"
    statistic_name = "trigger values in the row"
    token_name = "column value"

    def __init__(
        self,
        *,
        buckets: int = 1 << 22,
        min_rows: int = 2,
        min_share: float = 0.0,
        max_share: float = 0.5,
        min_purity: float = 0.98,
        alpha: float | None = None,
        sample_rows: int = 4096,
        family_alpha: float = 0.05,
    ):
        super().__init__(
            buckets=buckets, min_rows=min_rows, min_share=min_share, max_share=max_share,
            min_purity=min_purity, structure_purity=None, alpha=alpha, sample_rows=sample_rows,
            family_alpha=family_alpha,
        )

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        total = state.info.get("rows", 0)
        out = []
        for named in self._named(state, X, y):
            token, t = named[0]
            column, _, value = token.partition("=")
            prior = state.info["label_rows"][str(t.label)] / max(total, 1)
            out.append(
                f"has {column} = {value!r}, which {t.rows:,} rows have, {t.with_label / t.rows:.0%} "
                f"of them labelled {t.label!r} (that label's share of all rows: {prior:.0%}); "
                "a sub-population relabelled to one class, or a value that decides the label against what "
                "the row's other columns say"
            )
        return out


@register
class PixelTrigger(TokenTrigger):
    """Pixel values stamped at one place on images that nearly all carry one label.

    A patch or blend backdoor stamps the same pattern at the same place on images of
    other classes and relabels them. Where the images share a plain background (scans,
    documents, digits, rendered glyphs), the stamp puts values at that place that the
    clean images of the data set rarely have there, and the images holding them are
    nearly all of one label. The test is :class:`TokenTrigger`'s over the images' pixel
    tokens (:func:`poisonscan.pipelines.represent.encoders.pixel_tokens` makes them: a
    grey token grid of at most 32 x 32 cells in 16 levels; a cell off its usual level is
    a token, and so is each 2 x 2 block holding one): a value is a trigger for label L
    when at least ``min_rows`` rows and at most ``max_share`` of all rows hold it, at
    least ``min_purity`` of them labelled L, a one-sided binomial test against L's share
    gives p below the screen's threshold, and the rows holding it would belong to
    another class without it (a naive Bayes model of the rest of the image predicts
    them as another class significantly more often than L's other images). A stroke
    that only one digit makes is held by images of that digit and nothing else, so it
    is never a trigger. Every class count is tested, two classes included.

    A second test finds a stamp added to images that keep their label (clean-label:
    SIG's sinusoid, a patch or blend on some of the target's own images), which the
    first keeps by construction: per label, the values nearly only its images hold,
    clustered by the images holding them; the largest cluster's size (most images x
    values, each of so many images holding at least so many of them) is compared with
    the other labels' largest (:func:`.calibration.peer_p_value`, four classes or more).
    The two tests share the detector's level (``stamp_share`` to the second).

    It cannot see a trigger whose values vary from image to image (a warp, a pattern at
    a random place), a stamp on images of several labels that keep them (cover
    samples), a clean-label stamp of few values or one on more than half its label's
    images, or one drowned by busy backgrounds in which the same values occur
    naturally. Score polarity: the number of trigger tokens in a row (higher = more
    suspicious).

    With ``source="vectors"`` (the scan sets it for a features input) the rows are
    vectors, read as grey images where they are pixel values
    (:class:`.pixels.VectorImages`: a square number of values, most rows on one scale
    of at most 256 intensities); the tokens are then counted on the scan's class
    samples, since a vector's range and background are known only once a sample is
    drawn. Vectors that are not pixel values (a network's features, measurements) are
    not read, and no class is judged.
    """

    name = "pixel_trigger"
    kinds = frozenset({"image", "features"})
    default_kinds = frozenset({"image", "features"})
    default_rank = 12
    finds = "backdoor"
    statistic_name = "trigger pixel values in the image"
    token_name = "pixel value"
    # The values that make a class what it is (a 0's empty centre) are held by most of
    # its images and, left out, leave the rest looking like any class: a stamp marks a
    # minority of its label, and its images, without it, mostly look like another class
    # (the images were taken from other classes), not merely more often than the rest.
    max_class_share = 0.5
    majority_other = True
    stamp_share = 0.25
    _parameter_constraints = {**TokenTrigger._parameter_constraints, "source": [Options(("tokens", "vectors"))]}

    @classmethod
    def params_for(cls, kind: str, probability_labels: tuple = ()) -> dict:
        # a features input: the vectors themselves, where they are pixel values
        return {"source": "vectors"} if kind == "features" else {}

    def __init__(
        self,
        *,
        source: str = "tokens",
        buckets: int = 1 << 22,
        min_rows: int = 2,
        min_share: float = 0.0,
        max_share: float = 0.5,
        min_purity: float = 0.98,
        alpha: float | None = None,
        sample_rows: int = 4096,
        family_alpha: float = 0.05,
    ):
        super().__init__(
            buckets=buckets, min_rows=min_rows, min_share=min_share, max_share=max_share,
            min_purity=min_purity, structure_purity=None, alpha=alpha, sample_rows=sample_rows,
            family_alpha=family_alpha,
        )
        self.source = source

    @property
    def input(self) -> str:
        return "representation" if self.source == "vectors" else "tokens"

    # vectors: nothing to count in the pass (the class samples are read at the fit) -------
    def add_input(self, accumulator: dict, X, y: np.ndarray) -> dict:
        if self.source != "vectors":
            return super().add_input(accumulator, X, y)
        self._check_batch(X, y)
        return accumulator

    def merge_accumulators(self, accumulators: list) -> dict:
        return super().merge_accumulators(accumulators) if self.source != "vectors" else {}

    def extract_output(self, accumulator: dict, samples: Mapping[Any, ClassSample]) -> DetectorState:
        """Images: :class:`TokenTrigger`'s. Vectors: where the class samples are pixel
        values, their tokens counted and tested the same way (the counts are the
        samples', a few hundred to 1,024 rows a class, not the input's)."""
        if self.source != "vectors":
            return super().extract_output(accumulator, samples)
        self._validate_params()
        labels = sorted(samples, key=label_sort_key)
        sampled = [np.asarray(samples[label].X) for label in labels]
        reader, why = VectorImages.fit(sampled) if labels else (None, "no rows")
        if reader is None:
            state = DetectorState(self.name)
            state.info.update(level=self.level(len(labels)), checks={}, not_pixels=why)
            for label in labels:
                state.classes[label] = []
            return state
        counted: dict = {}  # the samples' tokens, counted as the images' are in the pass
        for label, X in zip(labels, sampled):
            TokenTrigger.add_input(self, counted, reader.tokens(X), np.full(len(X), label, dtype=object))
        state = super().extract_output(counted, samples)
        state.info["vectors"] = reader
        return state

    def _tokens(self, state: DetectorState, X):
        """The rows as pixel tokens (vectors are read as the fit read the samples)."""
        if self.source != "vectors":
            return X
        reader = state.info.get("vectors")
        return reader.tokens(X) if reader is not None else [[] for _ in range(len(X))]

    def score(self, state: DetectorState, X, y) -> np.ndarray:
        return super().score(state, self._tokens(state, X), y)

    def highlights(self, state, X, y) -> list[list[str]]:
        return super().highlights(state, self._tokens(state, X), y)

    def judge(self, state, label, class_rows, group_test) -> ClassVerdict:
        why = state.info.get("not_pixels")
        if why is None:
            stamp = state.info.get("stamps", {}).get(label)
            if stamp is None:
                return super().judge(state, label, class_rows, group_test)
            return self._judge_stamp(state, label, class_rows, group_test, stamp)
        return ClassVerdict(
            poisoned=False, note=f"not read: the vectors are not pixel values ({why})", p_value=1.0,
            label=label, detector=self.name, class_rows=int(class_rows), sample_rows=0, cut=0.5, side=1,
            center=0.0, scale=1.0, level=state.info.get("level"),
        )

    # the second test: a stamp on images that keep their label ----------------------------
    def _find_stamps(self, accumulator, labels, pure, state) -> dict:
        """Each label's largest stamp and its p against the other labels' (see the class
        docstring): ``pure`` holds, per label, the values nearly only its images hold
        (buckets, rows holding each, of them the label's). Returns, per label with a
        stamp, :func:`_largest_stamp`'s tuple with that p appended."""
        from .calibration import peer_p_value

        found = {label: _largest_stamp(accumulator[label][3], pure[label][0]) for label in labels}
        evidence = {label: math.log(f[0] * f[1]) if f else 0.0 for label, f in found.items()}
        state.info["stamps"] = {}
        out = {}
        for label in labels:
            f = found[label]
            if f is None:
                continue
            p = peer_p_value(evidence[label], [evidence[o] for o in labels if o != label], STAMP_FLOOR)
            others = [o for o in labels if o != label and found[o] is not None]
            rival = max(others, key=lambda o: evidence[o], default=None)
            state.info["stamps"][label] = {
                "values": f[0], "rows": f[1], "sample_rows": len(accumulator[label][3]),
                "evidence": evidence[label], "p": p, "judged": False,
                "largest_elsewhere": None if rival is None else list(found[rival][:2]),
            }
            out[label] = (*f, p)
        return out

    def _judge_stamps(self, labels, pure, stamps, level, state) -> None:
        """The stamp test: a label whose largest stamp stands out from the other labels'
        at the test's level is judged, unless the first test judged it; its stamp's
        values are then its triggers, one cluster."""
        level = level * self.stamp_share / (1 - self.stamp_share)
        state.info["stamp_level"] = level
        for label, (_, _, buckets, median, p) in stamps.items():
            if p is None or p >= level or state.classes[label]:
                continue
            state.info["stamps"][label]["judged"] = True
            at = {b: i for i, b in enumerate(pure[label][0].tolist())}
            state.classes[label] = [
                Trigger(b, label, int(pure[label][1][at[b]]), int(pure[label][2][at[b]]), p, clean_label=True)
                for b in buckets.tolist()
            ]
            for b in buckets.tolist():
                state.info.setdefault("clusters", {})[b] = STAMP_CLUSTER
            state.info.setdefault("stamp_median", {})[label] = {STAMP_CLUSTER: median}

    def _judge_stamp(self, state, label, class_rows, group_test, stamp) -> ClassVerdict:
        """The verdict where the label has a stamp: the counterfactual test's, with the
        stamp's test beside it; judged by the stamp where that test judged it."""
        p = stamp["p"]
        against = "too few classes to compare it with" if p is None else f"against the other classes p = {p:.1e}"
        words = (f"its largest stamp: {stamp['rows']} of {stamp['sample_rows']} sampled images each hold at least "
                 f"{stamp['values']} of the same values at the same places, values nearly only this label's images "
                 f"hold ({_rival(stamp)}; {against})")
        level = state.info.get("stamp_level")
        extra = {"stamp_values": stamp["values"], "stamp_rows": stamp["rows"], "stamp_evidence": stamp["evidence"],
                 "stamp_p": p}
        if not stamp["judged"]:
            v = super().judge(state, label, class_rows, group_test)
            # the stamp's p on the counterfactual's scale: below the verdict's level where it
            # is below its own, so the classes rank by whichever test comes nearer
            scaled = 1.0 if p is None else min(1.0, p * state.info["level"] / level)
            return dataclasses.replace(v, note=f"{v.note}; {words}", p_value=min(v.p_value, scaled),
                                       extra={**v.extra, **extra})
        note = (f"{words}: a trigger stamped on this label's images, whether they kept their label (clean-label) or "
                f"were relabelled and the test of their other values could not tell; p = {p:.2g}, level {level:.1e}")
        return ClassVerdict(
            poisoned=True, note=note, label=label, detector=self.name, class_rows=int(class_rows),
            sample_rows=int(stamp["sample_rows"]), cut=0.5, side=1, center=0.0, scale=1.0, level=level,
            group_fraction=stamp["rows"] / max(stamp["sample_rows"], 1), p_value=p,
            extra={**extra, "triggers": len(state.classes.get(label, []))},
        )

    def _hits(self, state: DetectorState, X, y) -> list[list[Trigger]]:
        """A row's triggers, counted only where it holds at least half as many of a
        stamp's values as the median sampled image holding any of them: a stamp is the
        trigger values whose sampled images overlap (one patch, one blend), and a clean
        image can share one of its values by chance (a stroke on a blend's faint
        background), not most of what the stamped images share."""
        clusters = state.info.get("clusters", {})
        medians = state.info.get("stamp_median", {})
        out = []
        for label, hits in zip(y, super()._hits(state, X, y)):
            label = label.item() if isinstance(label, np.generic) else label
            held: dict = {}
            for t in hits:
                g = clusters[t.bucket]
                held[g] = held.get(g, 0) + 1
            out.append([t for t in hits if 2 * held[clusters[t.bucket]] >= medians[label][clusters[t.bucket]]])
        return out

    def _named(self, state, X, y) -> list[list[tuple[str, Trigger]]]:
        """As :class:`TokenTrigger`'s, but a stamp found by the stamp test names first the
        value most of its images hold, so its images name the same value (the review
        groups a row by its first) where each holds a different share of the stamp."""
        out = super()._named(state, X, y)
        for named in out:
            if named and named[0][1].clean_label:
                named.sort(key=lambda nt: (-nt[1].rows, -len(nt[0]), nt[0]))
        return out

    def describe(self, state, X, y, statistic, strength) -> list[str]:
        total = state.info.get("rows", 0)
        reader = state.info.get("vectors")
        out = []
        for named in self._named(state, self._tokens(state, X), y):
            token, t = named[0]
            what = _pixel_words(token)
            prior = state.info["label_rows"][str(t.label)] / max(total, 1)
            more = _more_cells(token, [tok for tok, _ in named[1:]])
            if t.clean_label:
                stamp = state.info["stamps"][t.label]
                at = "" if reader is None else f", {_vector_values(token, reader.side, reader.channels)}"
                out.append(
                    f"has {what}{at}{more}, one of a stamp: {stamp['rows']} of the {stamp['sample_rows']} sampled "
                    f"images of label {t.label!r} each hold at least {stamp['values']} of the same values at the same "
                    f"places, values nearly only that label's images hold ({_rival(stamp)}): a trigger stamped on "
                    "images of that label, whether they kept it (clean-label) or were relabelled"
                )
                continue
            if reader is None:
                out.append(
                    f"has {what}{more}, which {t.rows:,} images have, {t.with_label / t.rows:.0%} of them "
                    f"labelled {t.label!r} (that label's share of all rows: {prior:.0%}), and without it the "
                    "rest of such an image looks like another class: a trigger stamped on images of other classes"
                )
                continue
            side = f"{reader.side} x {reader.side}"
            article = "an" if side[0] == "8" or side.startswith(("11 ", "18 ")) else "a"
            image = f"{article} {side} grey image"
            if reader.channels > 1:
                order = "its channels one after another" if reader.layout == "chw" else "each pixel's channels together"
                image = f"{article} {side} colour image, {order}, made grey"
            out.append(
                f"has {what}{more}, {_vector_values(token, reader.side, reader.channels)} (read as {image}), "
                f"which {t.rows:,} of the scan's sampled rows have, "
                f"{t.with_label / t.rows:.0%} of them labelled {t.label!r} (that label's share of the sampled "
                f"rows: {prior:.0%}), and without it the rest of such a row looks like another class: a trigger "
                "stamped on rows of other classes"
            )
        return out


#: Fewest sampled images a stamp is held by, and fewest that must hold a value for it to
#: be one of a stamp's: a group, as the decision counts one (``min_group_rows``).
STAMP_MIN_ROWS = 5
#: The least spread, in natural-log units, of the labels' stamp statistic
#: ``log(values x images)`` (:func:`.calibration.peer_p_value`'s floor): half a unit, a
#: factor of 1.65 in a stamp's size. Chosen on the development part: on MNIST-5k (clean
#: and the attack families of ``benchmarks/attacks.py``) and the scikit-learn digits the
#: peers' own spread was 0.4-0.8, so the floor rarely binds; at 1.0 the SIG stamp's p
#: was 3e-5 against a level of 1e-4, at 0.5 2e-7; a clean set's class came no nearer
#: than 5e-3 (at 1.0, 1.4e-2).
STAMP_FLOOR = 0.5
#: The cluster id a judged stamp's values share (the counterfactual test's are >= 0).
STAMP_CLUSTER = -1
#: A label's largest stamp whose p against the other labels' is below this sends its
#: values to the first test (the counterfactual) even where the binomial screen would
#: not: a handful of stamped, relabelled images (five of MNIST-5k's 5,000) hold too few
#: rows for the screen over the data set's ~10,000 countable values, but their stamp
#: stands out. A screen, not a verdict: the first test decides, at its level, its
#: Tarone count covering the values sent. Chosen on the development part: the 5-image
#: patch found in seeds 0 and 1 (p 1.9e-3), no class judged in the 132 clean subsets of
#: the digits and MNIST-5k (the smallest stamp p there 0.011), nor in clean MNIST-5k
#: (class 1's stamp, p 0.04, sent and not kept).
STAMP_SCREEN = 0.05


def _largest_stamp(sample: cf.TokenSample, pure: np.ndarray):
    """The largest stamp in one label's sampled images: values nearly only this label
    holds (``pure``), each held by at least :data:`STAMP_MIN_ROWS` sampled images
    (identical images counted once throughout: a repeated image is not a stamp),
    clustered by the images holding them (:func:`._counterfactual.overlap_clusters`, two
    values joined where they share half of the larger set of images). A cluster's size
    is its largest rectangle: the most images x values such that each of so many images
    holds at least so many of its values, at least :data:`STAMP_MIN_ROWS` images.
    Returns (values, images, the cluster's buckets, the median number of its values
    those images hold) of the largest, or None where no cluster has enough images."""
    if not len(pure) or not len(sample):
        return None
    flat = sample.flat.astype(np.int64)
    row = np.repeat(np.arange(len(sample)), np.diff(sample.offsets))
    _, first = np.unique(sample.priority, return_index=True)  # one image of each content
    distinct = np.zeros(len(sample), bool)
    distinct[first] = True
    hit = np.isin(flat, pure) & distinct[row]
    buckets, inverse = np.unique(flat[hit], return_inverse=True)
    held = np.bincount(inverse, minlength=len(buckets))
    holders = np.split(row[hit][np.argsort(inverse, kind="stable")], np.cumsum(held)[:-1])
    keep = np.flatnonzero(held >= STAMP_MIN_ROWS)
    if not keep.size:
        return None
    holders = [holders[i] for i in keep.tolist()]
    cluster = np.array(cf.overlap_clusters(holders, of_larger=True))
    best = None
    for g in np.unique(cluster).tolist():
        idx = np.flatnonzero(cluster == g)
        per = np.bincount(np.concatenate([holders[i] for i in idx.tolist()]), minlength=len(sample))
        counts = np.sort(per[distinct])[::-1]
        if counts.size < STAMP_MIN_ROWS or counts[STAMP_MIN_ROWS - 1] == 0:
            continue
        k = np.arange(1, counts.size + 1)
        area = np.where(k >= STAMP_MIN_ROWS, k * counts, 0)
        at = int(np.argmax(area))  # the first of the largest: fewest images
        values, images = int(counts[at]), at + 1
        if best is None or values * images > best[0] * best[1]:
            core = per >= values
            best = (values, images, buckets[keep[idx]], float(np.median(per[core])))
    return best


def _rival(stamp: dict) -> str:
    """The largest stamp of any other label, in words."""
    rival = stamp.get("largest_elsewhere")
    if rival is None:
        return "no other label's images share such values"
    return f"the largest of any other label: {rival[1]} images each holding {rival[0]} such values"


def _vector_values(token: str, side: int, channels: int = 1) -> str:
    """The positions in a vector of the cells a pixel token covers: "value 27" or
    "values 27, 28, 55, 56" (from 0, row by row); for a colour image or one larger than
    the token grid, the pixels' rows and columns."""
    f = -(-side // PIXEL_GRID)  # a grid cell averages f x f pixels of a larger image
    cells = _cells(token)
    if f > 1 or channels > 1:
        rows = sorted({r * f + i for r, _ in cells for i in range(f)})
        cols = sorted({c * f + i for _, c in cells for i in range(f)})
        return f"the vector's pixels in {_span('row', rows)} and {_span('column', cols)}"
    at = sorted(r * side + c for r, c in cells)
    return "in the vector " + (f"value {at[0]}" if len(at) == 1 else "values " + ", ".join(str(a) for a in at))


def _more_cells(first: str, tokens: list[str]) -> str:
    """The other trigger values a row holds besides ``first``, by where they lie: " (and
    2 more trigger values within it)" when they lie on its cells (a block's single cells),
    else the rows and columns of the grey grid all of them cover together, " (one of 3
    trigger values it holds, which together cover rows 6-7 and columns 6-8 of the
    grid)": overlapping blocks of one stamp are one place, not several."""
    if not tokens:
        return ""
    plural = "s" if len(tokens) > 1 else ""
    own = _cells(first)
    if all(_cells(tok) <= own for tok in tokens):
        return f" (and {len(tokens)} more trigger value{plural} within it)"
    cells = set(own).union(*(_cells(tok) for tok in tokens))
    rows, cols = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
    return (f" (one of {len(tokens) + 1} trigger values it holds, which together cover {_span('row', rows)} "
            f"and {_span('column', cols)} of the grid)")


def _cells(token: str) -> frozenset:
    """The grid cells a pixel token covers: one (``px``), or a 2 x 2 block (``blk``)."""
    kind, where, _ = _parts(token)
    r, c = (int(v) for v in where.split(","))
    size = 2 if kind == "blk" else 1
    return frozenset((r + i, c + j) for i in range(size) for j in range(size))


def _span(name: str, values: list[int]) -> str:
    """``row 6`` or ``rows 6-7`` (contiguous) or ``rows 2, 6-7``."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"{name}{'s' if len(values) > 1 else ''} {text}"


def _cell(where: str) -> str:
    """``r,c`` as ``(r, c)``."""
    return "(" + where.replace(",", ", ") + ")"


def _parts(token: str) -> tuple[str, str, str]:
    """``px r,c=l`` / ``blk r,c=a.b.c.d`` as (kind, ``r,c``, value)."""
    kind, _, rest = token.partition(" ")
    where, _, value = rest.partition("=")
    return kind, where, value


def _pixel_words(token: str) -> str:
    """``px r,c=l`` / ``blk r,c=a.b.c.d`` in words."""
    kind, where, value = _parts(token)
    if kind == "blk":
        return (f"the 2x2 block of grey levels {value.replace('.', ', ')} (of 16) at cell {_cell(where)} (row, "
                f"column from the top left) of the image's grey grid")
    return (f"grey level {value} (of 16) at cell {_cell(where)} (row, column from the top left) of the image's "
            "grey grid")


def _notes(grams) -> dict:
    """A row's sentence forms and the words of the clause that makes each
    (:mod:`.structure`'s notes)."""
    return dict(g[len(NOTE_MARK):].split("=", 1) for g in grams if g.startswith(NOTE_MARK))


def _merge_counts(a, b):
    n = a[0] + b[0]
    buckets = np.concatenate([a[1], b[1]])
    counts = np.concatenate([a[2], b[2]])
    u, inv = np.unique(buckets, return_inverse=True)
    return (n, u, np.bincount(inv, weights=counts, minlength=len(u)).astype(np.int64), a[3].merge(b[3]))
