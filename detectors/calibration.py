"""Yardsticks fitted to the scanned data: how much evidence of a group a clean class shows.

A detector's statistic on a class's sample is split into two Gaussian components
(:mod:`.decision`). How large a two-group likelihood gain means something depends on the
class: a Gaussian class, a skewed one and one with natural sub-populations each give
different gains by chance. Three yardsticks, none of them a tuned constant:

* **the class's own one-group null** (:func:`own_null`): the gain the class shows is
  compared with the gains the same fit gives on samples of one Gaussian group of the
  same size (a parametric bootstrap of the likelihood-ratio test, "could one group have
  given this split?"). The gain does not depend on the group's mean or spread, so the
  simulation is done once, by size, and kept as a table (``tools/gaussian_null_table.py``);
  a gamma distribution fitted to the simulated gains gives the tail.
* **the class's peers** (:func:`peer_p_value`): a poisoned class stands out from the other
  classes of the same scan on the same statistic. Each class's own-null evidence is put on
  a z scale; a class is compared with the mean and spread of the others (a prediction
  interval, Student's t). Natural sub-populations that every class has raise every class's
  evidence alike, and widen the yardstick where some classes have them; one class beyond
  all the others stands out.
* **affinity** (computed elsewhere, :func:`poisonscan.detectors._pooled.affinity_test`):
  a group taken from other classes and relabelled looks like those classes (required for
  tables, in addition to the peers).

"""

from __future__ import annotations

import math

import numpy as np

from ._gaussian_null import TABLE
from .mixture import fit_two_groups

#: Largest z a p-value is mapped to (p = 1e-300): beyond it, floating point says nothing.
Z_MAX = 37.0


def gain_of(fit) -> float:
    """Log-likelihood gain of two components over one, from a :class:`TwoGroupFit`."""
    return max(0.0, 0.5 * (fit.delta_bic + 3.0 * math.log(fit.n)))


def simulate_gaussian_gain(n: int, draws: int, seed: int) -> np.ndarray:
    """Two-group gains of ``draws`` samples of ``n`` standard normal values."""
    rng = np.random.default_rng(seed)
    return np.array([gain_of(fit_two_groups(rng.standard_normal(n))) for _ in range(draws)])


def gaussian_null(n: int) -> tuple[float, float]:
    """Mean and standard deviation of the two-group gain of ``n`` Gaussian values,
    interpolated in log n from the simulated table (:mod:`._gaussian_null`)."""

    sizes = np.log([row[0] for row in TABLE])
    x = math.log(min(max(n, TABLE[0][0]), TABLE[-1][0]))
    mean = float(np.interp(x, sizes, [row[1] for row in TABLE]))
    sd = float(np.interp(x, sizes, [row[2] for row in TABLE]))
    return mean, sd


def own_null(fit) -> tuple[float, float]:
    """The class's own one-group yardstick for a two-group fit of its statistic.

    Returns ``(p_value, z)``: the probability that one Gaussian group of the same size
    shows at least the fit's likelihood gain (the tail of a gamma distribution with the
    simulated mean and spread, :func:`gaussian_null`), and that probability on a z scale
    (capped at :data:`Z_MAX`). The gain does not depend on the group's mean or variance,
    so one table serves every class. A class whose statistic is not Gaussian (skewed,
    heavy-tailed, with natural sub-populations) passes this test easily: it is a gate,
    and the class's peers and the group's affinity decide (:mod:`.decision`).
    """
    gain = gain_of(fit)
    m, s = gaussian_null(fit.n)
    k, theta = m * m / (s * s), s * s / m
    log_p = gamma_log_sf(gain / theta, k)
    return math.exp(log_p), z_of_log_p(log_p)


# The tails below are scipy.special's functions, the ones scipy.stats' distributions call
# (scipy.stats.gamma.logsf, norm.isf, t.sf, f.sf give the same numbers): scipy.stats
# takes about 0.8 s to import, a tenth of a spectral scan of a million rows on two cores,
# and scipy.special a fifth of that.


def gamma_log_sf(x: float, shape: float) -> float:
    """log P(X > x) for X ~ Gamma(shape, scale 1), accurate in both tails: the upper
    regularised incomplete gamma above the median, log1p of minus the lower one below it
    (as scipy.stats.gamma.logsf computes it)."""
    # SciPy: imported on first use, by the detectors that run
    from scipy import special

    if not x > 0:
        return 0.0
    with np.errstate(divide="ignore"):
        if x > special.gammaincinv(shape, 0.5):
            return float(np.log(special.gammaincc(shape, x)))
        return float(np.log1p(-special.gammainc(shape, x)))


def z_of_log_p(log_p: float) -> float:
    """The standard normal quantile with upper tail exp(log_p), capped at Z_MAX."""
    # SciPy: imported on first use, by the detectors that run
    from scipy import special

    if log_p < -690:  # below 1e-300
        return Z_MAX
    return float(min(Z_MAX, max(-Z_MAX, -special.ndtri(math.exp(log_p)))))


def peer_p_value(value: float, peers: list[float], floor: float) -> float | None:
    """How improbable ``value`` is among ``peers`` (the same statistic in the scan's
    other classes): the one-sided Student-t prediction interval of a new draw from the
    peers' distribution, ``(value - mean) / (sd sqrt(1 + 1/k))`` with k - 1 degrees of
    freedom, the spread taken as at least ``floor`` (the spread a clean class's statistic
    has by its own null). Mean and standard deviation, not median and MAD: a peer with a
    natural sub-population widens the yardstick, which is what a clean class of this
    data may show. None with fewer than three peers."""
    # SciPy: imported on first use, by the detectors that run
    from scipy import special

    peers = np.asarray([p for p in peers if np.isfinite(p)], dtype=np.float64)
    k = peers.shape[0]
    if k < 3:
        return None
    spread = max(floor, float(peers.std(ddof=1)))
    stat = (value - float(peers.mean())) / (spread * math.sqrt(1 + 1 / k))
    return float(special.stdtr(k - 1, -stat))  # Student's t upper tail
