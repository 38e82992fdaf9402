"""One group of any shape a single hump can take: the log-concave yardstick of a split.

The own one-group null of the separated-group test (:func:`.calibration.own_null`) asks
whether *one Gaussian* group could split as the class's statistic does. Real classes are
rarely Gaussian along a statistic: a skewed class (a digit's slant along the top
principal direction of its features) passes that gate at p = 1e-25 and is then judged by
its peers alone. A *log-concave* density (the logarithm of the density concave: the
Gaussian, the skewed gamma and Gumbel shapes, the logistic and Laplace ones, every
uniform) has one hump and tails no heavier than exponential; a group split off by a few
standard deviations makes the density dip or bulge, which no log-concave density does.

:func:`fit_log_concave` is the maximum-likelihood log-concave density of a sample
(Walther 2002; Dümbgen and Rufibach 2009), computed on knots at the sample's quantiles,
and :func:`log_concave_p` compares the two-Gaussian mixture's likelihood with it. How
much more likely the mixture is on one log-concave group depends on the group's shape
and size; it is simulated for the shapes that favour the mixture most among those tried
(``tools/log_concave_null_table.py``), and the p-value is the largest of their tails:
"no single hump of these shapes splits like this". Skewed shapes (gamma, Gumbel) and the
uniform give the mixture far less (tests/detectors/test_logconcave.py). Detectors never
import Beam; this module needs numpy and scipy (scipy.linalg, scipy.special).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._log_concave_null import TABLE
from .calibration import gain_of
from .mixture import as_statistic, fit_two_groups

#: Knots of the fitted log-density (at most): the sample's quantiles. The density's
#: kinks are restricted to them, which lowers its likelihood by far less than a unit on
#: samples of up to 4,096 values.
KNOTS = 200


#: Coefficients of the series E(d) = (e^d - 1) / d = sum d^k / (k + 1)!, used where
#: |d| < 1/2 (the closed forms cancel there); 15 terms: error below 1e-17.
_COEF = np.array([1.0 / math.factorial(k + 1) for k in range(15)])
_COEF1 = np.array([k * c for k, c in enumerate(_COEF)])[1:]
_COEF2 = np.array([k * (k - 1) * c for k, c in enumerate(_COEF)])[2:]


def _series(coef: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = np.full_like(d, coef[-1])
    for c in coef[-2::-1]:  # Horner
        out *= d
        out += c
    return out


def _pieces(phi: np.ndarray, h: np.ndarray):
    """Integral of exp(phi) over each linear piece, ``h (e^b - e^a) / (b - a)``, with its
    gradient and Hessian in the piece's two end values (a, b). Where b - a is small the
    closed forms cancel, and the series of E(d) = (e^d - 1) / d is used."""
    a, b = phi[:-1], phi[1:]
    d = b - a
    ea, eb = h * np.exp(a), h * np.exp(b)
    small = np.abs(d) < 0.5
    ds = np.where(small, d, 0.0)
    e0, e1, e2 = _series(_COEF, ds), _series(_COEF1, ds), _series(_COEF2, ds)
    dl = np.where(small, 1.0, d)
    value = np.where(small, ea * e0, (eb - ea) / dl)
    ga = np.where(small, ea * (e0 - e1), (eb - ea - dl * ea) / dl**2)
    gb = np.where(small, ea * e1, (eb * (dl - 1) + ea) / dl**2)
    haa = np.where(small, ea * (e0 - 2 * e1 + e2), (2 * eb - ea * (dl * dl + 2 * dl + 2)) / dl**3)
    hab = np.where(small, ea * (e1 - e2), (eb * (dl - 2) + ea * (dl + 2)) / dl**3)
    hbb = np.where(small, ea * e2, (eb * (dl * dl - 2 * dl + 2) - 2 * ea) / dl**3)
    return value, ga, gb, haa, hab, hbb


@dataclass(frozen=True)
class LogConcaveFit:
    """A fitted log-concave density: piecewise linear ``log_density`` (normalised) at
    ``knots``, and the sample's log-likelihood under it."""

    knots: np.ndarray
    log_density: np.ndarray
    loglik: float


def fit_log_concave(x: np.ndarray, knots: int = KNOTS, gap: float = 1e-6) -> LogConcaveFit:
    """The maximum-likelihood log-concave density of ``x``.

    The log-density phi is piecewise linear between knots at the sample's quantiles and
    concave; it minimises ``integral(exp(phi)) - sum(phi(x_i)) / n`` (whose minimiser
    integrates to one, Silverman 1982): a smooth convex problem in the knot values with
    linear constraints (every change of slope non-positive), solved by a log-barrier
    interior-point method whose Newton steps are banded linear systems. Deterministic;
    the likelihood is within ``gap`` x n of the optimum on the knots (0.004 at 4,096
    values).
    """
    # SciPy: imported on first use, by the detectors that run
    from scipy.linalg import solveh_banded

    x = np.sort(as_statistic(x, "fit a log-concave density"))
    n = x.shape[0]
    scale = float(x.std())
    if scale <= 0:
        raise ValueError("the statistic does not vary: no density to fit")
    z = (x - float(np.median(x))) / scale
    t = np.unique(np.quantile(z, np.linspace(0.0, 1.0, min(knots, n))))
    # knots a rounding error apart (quantiles between near-equal values) make the Newton
    # systems singular (1 / h of 1e15): of such a run only the last knot is kept
    t = t[np.r_[np.diff(t) > 1e-8, True]]
    t[0] = z[0]
    m = t.shape[0]
    if m < 3:
        raise ValueError("the statistic takes fewer than three distinct values")
    h = np.diff(t)
    # each value's phi interpolates its two knots: the weights the objective puts on them
    j = np.clip(np.searchsorted(t, z, side="right") - 1, 0, m - 2)
    f = (z - t[j]) / h[j]
    w = (np.bincount(j, 1 - f, m) + np.bincount(j + 1, f, m)) / n
    inv_h = 1.0 / h

    def slope_changes(phi):  # (D phi)_l, l = 1 .. m - 2: must stay negative
        s = np.diff(phi) * inv_h
        return np.diff(s)

    def objective(phi):
        return float(_pieces(phi, h)[0].sum() - w @ phi)

    # D as three diagonals: (D phi)_l = u_l phi_{l-1} + v_l phi_l + u'_l phi_{l+1}
    lo, hi = inv_h[:-1], inv_h[1:]
    d_left, d_mid, d_right = lo, -(lo + hi), hi

    def newton_step(phi, tt):
        _, ga, gb, haa, hab, hbb = _pieces(phi, h)
        grad = -w.copy()
        grad[:-1] += ga
        grad[1:] += gb
        r = -slope_changes(phi)  # > 0
        q = 1.0 / r
        grad *= tt
        # barrier gradient: D^T (1 / r)
        grad[:-2] += d_left * q
        grad[1:-1] += d_mid * q
        grad[2:] += d_right * q
        # Hessian, as upper bands (row 2: diagonal, row 1: first, row 0: second above)
        band = np.zeros((3, m))
        diag = np.zeros(m)
        diag[:-1] += haa
        diag[1:] += hbb
        diag *= tt
        off1 = tt * hab  # (k, k + 1)
        off2 = np.zeros(m - 2)
        q2 = q * q
        # D^T diag(q2) D: each row l of D touches phi_{l-1}, phi_l, phi_{l+1}
        diag[:-2] += q2 * d_left**2
        diag[1:-1] += q2 * d_mid**2
        diag[2:] += q2 * d_right**2
        off1[:-1] += q2 * d_left * d_mid  # (l - 1, l)
        off1[1:] += q2 * d_mid * d_right  # (l, l + 1)
        off2 += q2 * d_left * d_right  # (l - 1, l + 1)
        band[2] = diag
        band[1, 1:] = off1
        band[0, 2:] = off2
        try:
            step = -solveh_banded(band, grad)
        except np.linalg.LinAlgError:  # rounding near active constraints: a small ridge
            band[2] += 1e-9 * float(band[2].max())
            step = -solveh_banded(band, grad)
        return step, float(-grad @ step)

    def barrier(phi, tt):
        r = -slope_changes(phi)
        if np.any(r <= 0) or phi.max() > 500:  # infeasible, or a step far off the optimum
            return math.inf
        return tt * objective(phi) - float(np.log(r).sum())

    # start from the Gaussian of the sample's mean and spread (strictly concave)
    mu, sd = float(z.mean()), float(z.std())
    phi = -0.5 * ((t - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)
    tt = 1.0
    while True:
        for _ in range(100):  # centring by damped Newton steps
            step, decrement = newton_step(phi, tt)
            if decrement / 2 <= 1e-3 * gap:
                break
            # the longest step that keeps every slope change negative, then backtracking
            grow = np.diff(np.diff(step) * inv_h)
            room = -slope_changes(phi)
            limit = float(np.min(room[grow > 0] / grow[grow > 0])) if np.any(grow > 0) else math.inf
            size, current = min(1.0, 0.99 * limit), barrier(phi, tt)
            while barrier(phi + size * step, tt) > current - 0.25 * size * decrement:
                size *= 0.5
                if size < 1e-12:
                    break
            phi = phi + size * step
        if (m - 2) / tt < gap:  # the duality gap, per value of the sample
            break
        tt *= 50.0
    # the fitted density, normalised, at the sample, in the sample's own units
    phi = phi - math.log(float(_pieces(phi, h)[0].sum()))
    at = phi[j] + f * (phi[j + 1] - phi[j])
    centre = float(np.median(x))
    return LogConcaveFit(centre + scale * t, phi - math.log(scale), float(at.sum() - n * math.log(scale)))


def mixture_gain(x: np.ndarray) -> float:
    """The two-Gaussian mixture's log-likelihood (:func:`.mixture.fit_two_groups`) over
    the log-concave fit's."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    ll_one = -0.5 * n * (1.0 + math.log(2 * math.pi * float(x.var())))
    return ll_one + gain_of(fit_two_groups(x)) - fit_log_concave(x).loglik


def log_concave_null(n: int) -> np.ndarray:
    """Mean and standard deviation of the mixture's gain over the log-concave fit for n
    values of one log-concave group, for each simulated shape (:mod:`._log_concave_null`),
    interpolated in log n: an array of shape (shapes, 2)."""
    sizes = np.log([row[0] for row in TABLE])
    x = math.log(min(max(n, TABLE[0][0]), TABLE[-1][0]))
    stats = np.array([row[1] for row in TABLE])  # (sizes, shapes, 2)
    return np.array([[np.interp(x, sizes, stats[:, k, i]) for i in (0, 1)] for k in range(stats.shape[1])])


def log_concave_p(x: np.ndarray) -> tuple[float, float]:
    """How improbable the two-group split of ``x`` is for one log-concave group.

    Returns ``(p_value, gain)``: ``gain`` is the two-Gaussian mixture's log-likelihood over
    the maximum-likelihood log-concave density's (:func:`mixture_gain`), and the p-value
    the largest upper tail, at that gain, of the normal distributions with the mean and
    spread the gain has on simulated samples of the same size from each log-concave shape
    of the table (:func:`log_concave_null`): the shapes that favour the mixture most.
    """
    # SciPy: imported on first use, by the detectors that run
    from scipy import special

    x = np.asarray(x, dtype=np.float64)
    gain = mixture_gain(x)
    null = log_concave_null(x.shape[0])
    # floating point says nothing below 1e-300 (calibration.Z_MAX)
    return max(1e-300, float(special.ndtr(-(gain - null[:, 0]) / null[:, 1]).max())), gain
