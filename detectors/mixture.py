"""Two Gaussian groups or one, on one-dimensional scores: the fit every group test reads.

:func:`fit_two_groups` fits a two-component Gaussian mixture by EM from several starts
and reports the Bayes information criterion's verdict against one Gaussian, the groups'
separation and the posterior cut between them (Dempster, Laird and Rubin 1977; Schwarz
1978).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class TwoGroupFit:
    """Maximum-likelihood fit of one and two 1-D Gaussian components."""

    n: int
    weight: float  # share of the minor component
    mean_group: float
    sd_group: float
    mean_main: float
    sd_main: float
    delta_bic: float  # BIC(one component) - BIC(two components); > 0 favours two
    separation: float  # Ashman's D
    side: int  # +1 when the group lies above the main mass, -1 below
    cut: float | None  # posterior 1/2 point between the means; None when none exists


def _log_normal(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    z = (x - mean) / sd
    return -0.5 * z * z - math.log(sd) - _LOG_SQRT_2PI


def _em_two(x: np.ndarray, init_masks: np.ndarray, var_floor: float, max_iter: int):
    """EM for a two-component 1-D Gaussian mixture, from several hard initial splits at
    once (one row of ``init_masks`` each); a start stops iterating once it has converged.
    Returns the fit of best likelihood as ``(w, m1, s1, m2, s2, loglik)`` or None.

    Each step spends two transcendental functions per value and start: with
    ``d = l1 - l2`` (the components' log densities) and ``e = exp(-|d|)``, the row's log
    likelihood is ``max(l1, l2) + log1p(e)`` (numpy's ``logaddexp``, in whole-array steps)
    and component 1's responsibility ``1 / (1 + e)`` or ``e / (1 + e)`` by the sign of
    ``d``. The squared distances are computed once and turned into log densities in place.
    """
    n = x.shape[0]
    starts = init_masks.shape[0]
    r = init_masks.astype(np.float64)  # (k, n) responsibilities of component 1
    final = np.full((starts, 6), np.nan)
    final[:, 5] = -np.inf
    active = np.arange(starts)
    ll_prev = np.full(starts, -np.inf)
    for _ in range(max_iter):
        ra = r if active.size == starts else r[active]
        rb = 1.0 - ra
        n1 = ra.sum(axis=1)
        n2 = n - n1
        alive = (n1 > 1e-9) & (n2 > 1e-9)
        n1 = np.where(alive, n1, 1.0)
        n2 = np.where(alive, n2, 1.0)
        m1 = (ra @ x) / n1
        m2 = (rb @ x) / n2
        l1 = x[None, :] - m1[:, None]
        l1 *= l1
        l2 = x[None, :] - m2[:, None]
        l2 *= l2
        v1 = np.maximum(np.einsum("ij,ij->i", ra, l1) / n1, var_floor)
        v2 = np.maximum(np.einsum("ij,ij->i", rb, l2) / n2, var_floor)
        w = np.clip(n1 / n, 1e-300, 1 - 1e-16)
        l1 *= (-0.5 / v1)[:, None]
        l1 += (np.log(w) - 0.5 * np.log(v1) - _LOG_SQRT_2PI)[:, None]
        l2 *= (-0.5 / v2)[:, None]
        l2 += (np.log(1 - w) - 0.5 * np.log(v2) - _LOG_SQRT_2PI)[:, None]
        d = l1 - l2
        e = np.exp(-np.abs(d))
        ll = np.where(alive, (np.maximum(l1, l2) + np.log1p(e)).sum(axis=1), -np.inf)
        responsibility = np.where(d >= 0, 1.0, e) / (1.0 + e)
        if active.size == starts:
            r = responsibility
        else:
            r[active] = responsibility
        final[active] = np.stack([w, m1, np.sqrt(v1), m2, np.sqrt(v2), ll], axis=1)
        with np.errstate(invalid="ignore"):  # -inf - -inf for starts that died
            done = ~alive | (ll - ll_prev[active] <= 1e-8 * np.abs(ll))
        ll_prev[active] = ll
        active = active[~done]
        if active.size == 0:
            break
    if not np.isfinite(final[:, 5]).any():
        return None
    b = int(np.argmax(final[:, 5]))  # first best: deterministic
    return tuple(float(v) for v in final[b])


def _posterior_cut(w, m_group, s_group, m_main, s_main) -> float | None:
    """Point between the means where the group's posterior probability is one half."""

    def f(x: float) -> float:
        a = math.log(w) + float(_log_normal(np.array([x]), m_group, s_group)[0])
        b = math.log(1 - w) + float(_log_normal(np.array([x]), m_main, s_main)[0])
        return a - b

    lo, hi = m_main, m_group
    f_lo, f_hi = f(lo), f(hi)
    if f_hi <= 0 or f_lo >= 0:
        return None  # the group never dominates (or the main mass never does)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if f_mid > 0:
            hi = mid
        else:
            lo = mid
        if abs(hi - lo) <= 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def as_statistic(x, purpose: str) -> np.ndarray:
    """``x`` as a 1-D float64 array of at least 3 finite values (a clear error if not)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 3:
        raise ValueError(f"need at least 3 values to {purpose}, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the statistic contains NaN or infinite values")
    return x


def fit_two_groups(x: np.ndarray, *, max_iter: int = 100) -> TwoGroupFit:
    """Fit one and two Gaussian components to a 1-D sample.

    Deterministic: EM starts from fixed splits (the top and the bottom 1, 3, 10 and 30 %
    of the sample) and the best likelihood wins.
    """
    x = as_statistic(x, "fit two groups")
    n = x.shape[0]
    mean = float(x.mean())
    var = float(x.var())
    if var <= 0:
        return TwoGroupFit(n, 0.0, mean, 0.0, mean, 0.0, 0.0, 0.0, 1, None)
    var_floor = var * 1e-6
    ll_one = float(_log_normal(x, mean, math.sqrt(var)).sum())

    order = np.argsort(x, kind="stable")
    masks = []
    for q in (0.01, 0.03, 0.1, 0.3):
        k = max(1, int(round(q * n)))
        for tail in (order[-k:], order[:k]):
            mask = np.zeros(n, dtype=bool)
            mask[tail] = True
            masks.append(mask)
    best = _em_two(x, np.array(masks), var_floor, max_iter)
    if best is None:
        return TwoGroupFit(n, 0.0, mean, math.sqrt(var), mean, math.sqrt(var), 0.0, 0.0, 1, None)
    w, m1, s1, m2, s2, ll_two = best
    if w > 0.5:  # name the minor component "group"
        w, m1, s1, m2, s2 = 1 - w, m2, s2, m1, s1
    # BIC = k ln n - 2 ll; one component has 2 parameters, two have 5.
    delta_bic = (2 * math.log(n) - 2 * ll_one) - (5 * math.log(n) - 2 * ll_two)
    separation = abs(m1 - m2) / math.sqrt(0.5 * (s1 * s1 + s2 * s2))
    side = 1 if m1 >= m2 else -1
    cut = _posterior_cut(w, m1, s1, m2, s2) if w > 0 else None
    return TwoGroupFit(n, w, m1, s1, m2, s2, delta_bic, separation, side, cut)
