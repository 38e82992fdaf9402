"""The best F1 any detector can expect on the held-out planted shifts (family "shift").

For each shift condition the generator's true parameters are recomputed from its seed
(``build.parameters()`` in ``conditions.py``; nothing is scanned and the data are built
exactly as the benchmark builds them), then:

* Gaussian classes (unit noise plus the class's correlated directions, one population):
  :func:`common.best_f1` of the shift's Mahalanobis length in the class,
  sqrt(delta^T Sigma^-1 delta) with Sigma the class's true covariance, and the share of
  the class shifted: the F1 of the best cut along the true discriminant, in expectation.
* classes that are mixtures of Gaussian sub-populations, and Student-t classes: that
  formula does not hold. The limit is computed by Monte Carlo with the generator's true
  parameters: the best threshold on the likelihood ratio of the two true group densities
  (the class, and the class moved by the shift), F1 in expectation (the same ratio of
  expected counts as ``best_f1``) over ``MC_ROWS`` simulated rows of each group. The
  separation given for them is still the shift's Mahalanobis length in the class's true
  covariance (for a mixture: unit noise plus the spread of its sub-population means;
  Student-t with df degrees of freedom: df / (df - 2) on each coordinate).

With several shifted classes the harder one's limit is given (the lower best F1), as the
development part does.

    python benchmarks/heldout/limits.py       # every shift condition's separation and limit
"""

from __future__ import annotations

import os
import sys

import numpy as np

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from common import best_f1  # noqa: E402

MC_ROWS = 2_000_000  # simulated rows of each group (clean, shifted)
MC_SEED = 20240  # the Monte Carlo draws are seeded: the same figures every render
_CHUNK = 250_000


def _covariance(p: dict) -> np.ndarray:
    """The class's true covariance (all of it: noise, correlated directions and the
    spread of its sub-population means)."""
    dim = len(p["shift"])
    noise = p["heavy_df"] / (p["heavy_df"] - 2) if p["heavy_df"] else 1.0
    cov = noise * np.eye(dim)
    if p["loadings"] is not None:
        L = np.asarray(p["loadings"], float)
        cov += L @ L.T
    w, off = np.asarray(p["weights"], float), np.asarray(p["offsets"], float)
    centred = off - w @ off
    return cov + (centred * w[:, None]).T @ centred


def separation(p: dict) -> float:
    delta = np.asarray(p["shift"], float)
    return float(np.sqrt(delta @ np.linalg.solve(_covariance(p), delta)))


def _f1_from_scores(clean: np.ndarray, shifted: np.ndarray, share: float) -> float:
    """The best F1 in expectation over thresholds on a score (larger: more likely
    shifted), from samples of the score in each group."""
    scores = np.concatenate([shifted, clean])
    is_shifted = np.concatenate([np.ones(len(shifted), bool), np.zeros(len(clean), bool)])
    order = np.argsort(-scores, kind="stable")
    scores, is_shifted = scores[order], is_shifted[order]
    tp = share * np.cumsum(is_shifted) / len(shifted)
    fp = (1 - share) * np.cumsum(~is_shifted) / len(clean)
    last = np.r_[scores[1:] != scores[:-1], True]  # cut only between distinct scores
    return float((2 * tp / (tp + fp + share))[last].max())


def _mixture_scores(p: dict, rows: int, rng: np.random.Generator):
    """Log likelihood ratios (shifted vs clean) of simulated rows of each group: a
    mixture of Gaussians sharing the class's covariance, its copy moved by the shift.
    Whitened, the ratio depends on the rows only through the span of the whitened
    sub-population means and shift, so the rows are simulated in that span."""
    dim = len(p["shift"])
    cov = np.eye(dim)
    if p["loadings"] is not None:
        L = np.asarray(p["loadings"], float)
        cov += L @ L.T
    white = np.linalg.inv(np.linalg.cholesky(cov))
    means = np.asarray(p["offsets"], float) @ white.T
    shift = white @ np.asarray(p["shift"], float)
    basis, _ = np.linalg.qr(np.vstack([means, shift]).T)
    means, shift = means @ basis, shift @ basis
    logw = np.log(np.asarray(p["weights"], float))

    def logpdf(z):  # up to a constant shared by both groups
        d2 = ((z[:, None, :] - means[None]) ** 2).sum(-1)
        a = logw[None] - d2 / 2
        top = a.max(1)
        return top + np.log(np.exp(a - top[:, None]).sum(1))

    out = []
    for moved in (False, True):
        parts = []
        for start in range(0, rows, _CHUNK):
            n = min(_CHUNK, rows - start)
            sub = rng.choice(len(logw), n, p=np.exp(logw))
            z = means[sub] + rng.standard_normal((n, len(shift))) + (shift if moved else 0.0)
            parts.append(logpdf(z - shift) - logpdf(z))
        out.append(np.concatenate(parts))
    return out


def _student_scores(p: dict, rows: int, rng: np.random.Generator):
    """Log likelihood ratios of simulated rows of each group: independent Student-t
    coordinates, and the same moved by the shift."""
    df, delta = p["heavy_df"], np.asarray(p["shift"], float)
    out = []
    for moved in (False, True):
        parts = []
        for start in range(0, rows, _CHUNK):
            x = rng.standard_t(df, (min(_CHUNK, rows - start), len(delta))) + (delta if moved else 0.0)
            parts.append((-(df + 1) / 2 * (np.log1p((x - delta) ** 2 / df) - np.log1p(x ** 2 / df))).sum(1))
        out.append(np.concatenate(parts))
    return out


def sd_ratio(p: dict) -> float:
    """The class's sd along the shift in the drawn rows over its true sd there. The
    shift is planted in units of the former; where the direction is picked from the
    drawn rows (the class's weakest), the rows are narrower along it than the generator
    (ratio below 1) and a scan of that one sample can beat the limit in expectation."""
    delta = np.asarray(p["shift"], float)
    u = delta / np.linalg.norm(delta)
    return float(p["sample_sd"] / np.sqrt(u @ _covariance(p) @ u))


def class_limit(p: dict, rows: int = MC_ROWS, seed: int = MC_SEED) -> dict:
    """{separation, best_f1, method, sd_ratio} for one shifted class."""
    sep = separation(p)
    out = _class_limit(p, sep, rows, seed)
    out["sd_ratio"] = sd_ratio(p)
    return out


def _class_limit(p: dict, sep: float, rows: int, seed: int) -> dict:
    one_population = len(p["weights"]) == 1 or not np.any(p["offsets"])
    if p["heavy_df"] is None and one_population:
        return {"separation": sep, "best_f1": best_f1(sep, p["share"]), "method": "exact"}
    rng = np.random.default_rng(seed)
    if p["heavy_df"] is not None:
        if p["loadings"] is not None or not one_population:
            return {"separation": sep, "best_f1": None, "method": "not computed (not Gaussian)"}
        clean, shifted = _student_scores(p, rows, rng)
    else:
        clean, shifted = _mixture_scores(p, rows, rng)
    return {"separation": sep, "best_f1": _f1_from_scores(clean, shifted, p["share"]), "method": "Monte Carlo"}


def condition_limit(cond, rows: int = MC_ROWS) -> dict | None:
    """The limit of a shift condition (the harder shifted class's), or None where the
    condition is not a planted shift with known parameters."""
    parameters = getattr(cond.build, "parameters", None)
    if cond.family != "shift" or parameters is None:
        return None
    limits = [class_limit(p, rows) for p in parameters()]
    known = [lim for lim in limits if lim["best_f1"] is not None]
    if len(known) < len(limits):
        return next(lim for lim in limits if lim["best_f1"] is None)
    return min(known, key=lambda lim: lim["best_f1"])


def limits_by_name(rows: int = MC_ROWS) -> dict:
    """Condition name -> its limit, for every shift condition."""
    from heldout import conditions

    out = {}
    for c in conditions.conditions():
        lim = condition_limit(c, rows)
        if lim is not None:
            out[c.name] = lim
    return out


def cell(lim: dict | None) -> str:
    """The table's "best possible F1" cell."""
    if lim is None:
        return "—"
    if lim["best_f1"] is None:
        return f"{lim['method']} (separation {lim['separation']:.2f})"
    how = "" if lim["method"] == "exact" else "; Monte Carlo"
    return f"{lim['best_f1']:.3f} (separation {lim['separation']:.2f}{how})"


if __name__ == "__main__":
    for name, lim in limits_by_name().items():
        print(f"{name}: {cell(lim)}")
