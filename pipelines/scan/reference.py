"""New rows against a reference scan: what differs (``--reference``).

Scoring against a reference uses the reference's fitted model as it is; this module
reports, per class, how the new rows differ from the reference's:

* **label mix**: the class's share of the rows, reference against new (a two-proportion
  test per class, and a chi-square test of the whole mix);
* **shift**: the distance between the class's mean in the reference's sample and in the
  new rows' sample, in units of the pooled per-coordinate SD, against the same distance
  with the two samples' rows shuffled between them (a permutation test);
* **a new group**: the class judged poisoned when the new rows are judged on their own
  (their own fit, as a scan without ``--reference``), and not in the reference.

A class differs when one of these is beyond ``alpha`` divided by the number of tests
(classes x 2, plus the mix): Bonferroni, so in new rows drawn like the reference's the
chance that any class is reported as differing is at most ``alpha``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from poisonscan.detectors.base import label_sort_key
from poisonscan.pipelines.scan.fit import ScanModel
from poisonscan.pipelines.scan.state import ScanState
from poisonscan.pipelines.scan.values import plain

PERMUTATIONS = 199


def _samples(partials: Mapping, dim) -> dict:
    return {label: p for (label, d), p in partials.items() if d == dim}


def shift_test(A: np.ndarray, B: np.ndarray, seed: int = 0, permutations: int = PERMUTATIONS) -> tuple[float, float]:
    """``(shift, p)``: the distance between the means of ``A`` and ``B`` in pooled
    per-coordinate SDs, and the share of row shuffles between the two samples that give
    a distance at least as large (add-one: ``p >= 1 / (permutations + 1)``)."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if len(A) < 2 or len(B) < 2:
        return 0.0, 1.0
    pooled = np.vstack([A, B])
    sd = pooled.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = pooled / sd
    n, total = len(A), Z.sum(axis=0)
    m = len(Z) - n
    observed = float(np.linalg.norm(Z[:n].mean(axis=0) - Z[n:].mean(axis=0)))
    rng = np.random.default_rng(seed)
    beyond = 0
    for start in range(0, permutations, 256):  # shuffles in blocks: one product each
        k = min(256, permutations - start)
        member = np.zeros((k, len(Z)))
        for row in member:
            row[rng.choice(len(Z), n, replace=False)] = 1.0
        sums = member @ Z
        dist = np.linalg.norm(sums / n - (total - sums) / m, axis=1)
        beyond += int((dist >= observed - 1e-12).sum())
    return observed, (1 + beyond) / (1 + permutations)


def _share_p(a: int, na: int, b: int, nb: int) -> float:
    """Two-sided two-proportion z test (1.0 where either side has no rows)."""
    # SciPy: imported on first use
    from scipy.stats import norm

    if na == 0 or nb == 0:
        return 1.0
    pooled = (a + b) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    if se == 0:
        return 1.0
    return float(2 * norm.sf(abs(a / na - b / nb) / se))


def compare_to_reference(
    reference: ScanState,
    partials: Mapping,
    new_model: ScanModel,
    where: str,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """summary.json's ``reference`` block: the new rows (``partials``, and
    ``new_model`` fitted on them alone) against ``reference`` (saved in ``where``)."""
    dim = reference.dim
    ref, new = _samples(reference.partials, dim), _samples(partials, dim)
    labels = sorted(set(ref) | set(new), key=label_sort_key)
    n_ref = sum(p.rows for p in ref.values())
    n_new = sum(p.rows for p in new.values())
    tests = 2 * len(labels) + 1
    level = alpha / tests
    # enough shuffles that a shift can reach the level (p >= 1 / (shuffles + 1))
    shuffles = int(min(max(PERMUTATIONS, np.ceil(2 / level)), 9_999))
    mix_p = 1.0
    if len(labels) > 1 and n_ref and n_new:
        # SciPy: imported on first use
        from scipy.stats import chi2_contingency

        table = np.array([[ref[lb].rows if lb in ref else 0 for lb in labels],
                          [new[lb].rows if lb in new else 0 for lb in labels]])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] > 1:
            mix_p = float(chi2_contingency(table)[1])
    judged_ref = set(reference.model.poisoned_classes)
    judged_new = set(new_model.poisoned_classes)
    classes, differing = [], []
    for i, label in enumerate(labels):
        a = ref[label].rows if label in ref else 0
        b = new[label].rows if label in new else 0
        share_p = _share_p(a, n_ref, b, n_new)
        shift, shift_p = 0.0, 1.0
        if label in ref and label in new:
            # in id order: the shuffles pick rows by index, and a reservoir's own row
            # order depends on the order its partials were merged in
            A, B = ref[label].reservoir.sample().X, new[label].reservoir.sample().X
            if getattr(A, "dtype", None) is not None and A.dtype != object and A.ndim == 2 and A.shape[1:] == B.shape[1:]:
                shift, shift_p = shift_test(A, B, seed + i, shuffles)
        why = []
        if share_p < level:
            why.append(f"its share of the rows went from {a / max(n_ref, 1):.1%} to {b / max(n_new, 1):.1%}")
        if shift_p < level:
            why.append(f"its mean moved {shift:.2f} pooled SDs (p = {shift_p:.3f})")
        if label in judged_new and label not in judged_ref:
            why.append("its new rows, judged on their own, hold a separated group the reference did not")
        if label not in ref:
            why.append("the reference has no rows of it")
        entry = {
            "label": plain(label),
            "rows_reference": a,
            "rows_new": b,
            "share_reference": a / n_ref if n_ref else None,
            "share_new": b / n_new if n_new else None,
            "share_p_value": share_p,
            "shift_sd": shift,
            "shift_p_value": shift_p,
            "judged_in_reference": label in judged_ref,
            "judged_in_new_rows": label in judged_new,
            "differs": bool(why),
            "why": "; ".join(why),
        }
        classes.append(entry)
        if why:
            differing.append(plain(label))
    return {
        "folder": where,
        "rows_reference": n_ref,
        "rows_new": n_new,
        "label_mix_p_value": mix_p,
        "level": level,
        "alpha": alpha,
        "classes_differing": differing,
        "label_mix_changed": mix_p < level,
        "classes": classes,
    }


__all__ = ["compare_to_reference", "shift_test"]
