"""Recalibrating a predictive standard deviation on held-out residuals.

A seed ensemble's spread is the disagreement that training randomness alone produces; on
MatBench it covers too few test errors (35-46 % within 1 std, where a normal error would
give 68 %). Nor is the spread's shape the errors' shape: part of every error (noise in the
data, what no member learns) does not show in the members' disagreement, so scaling the
spread alone leaves the rows of small spread overconfident and no single factor gives
68 % and 95 % at once. The calibrated std is therefore

    std_calibrated = scale * sqrt(std**2 + floor**2)

with ``floor >= 0`` (in the units of y) the error the spread misses and ``scale`` the
overall factor; ``floor = 0`` is the plain variance scale, a large ``floor`` a constant
error bar. Both are chosen on held-out rows (the inner validation split): ``floor`` by the
normal likelihood of the rows' errors (a proper score, so it rewards error bars that are
wide where the errors are large and narrow where they are small, which coverage pooled
over all rows cannot tell apart), then ``scale`` so that the fraction of the rows' errors
within ``z_p`` calibrated std is ``p`` over the central intervals p = 0.1, 0.2, ..., 0.9,
0.95 (``z_p`` the normal quantile: 1 std for 68 %, 1.96 for 95 %): the least squared gap
of that calibration curve, which a few large residuals do not dominate as they dominate a
fitted variance.

With heavy-tailed errors one std cannot cover 68 % and 95 % at once (the 95 % interval needs
more than 1.96 of the std that covers 68 %). Intervals at a chosen probability therefore come
from the held-out rows' own standardised errors ``|y - mean| / std_calibrated`` (split
conformal prediction with normalised scores): the interval at probability ``p`` is
``mean +- q_p * std_calibrated`` with ``q_p`` the ``ceil((n + 1) p)``-th smallest of the ``n``
rows' scores (:func:`interval_quantile`), which covers at least ``p`` of new errors that are
exchangeable with those rows, whatever the errors' distribution.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["calibrated_std", "fit_std_calibration", "interval_coverage", "interval_quantile"]

#: Central-interval probabilities the scale is fitted to.
LEVELS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])


def interval_coverage(y_true, y_mean, y_std, k=1.0):
    """Fraction of samples with ``|y_true - y_mean| <= k * y_std`` (per target for 2-D ``y``)."""
    errors = np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_mean, dtype=float))
    return np.mean(errors <= k * np.asarray(y_std, dtype=float), axis=0)


def _scale_1d(z):
    """The scale c and its calibration gap for standardised errors ``z`` (>= 0)."""
    z = np.sort(z)
    quantiles = norm.ppf(0.5 + LEVELS / 2)
    # coverage(c, p) = fraction of z <= c * q_p steps up at c = z_i / q_p: fit on a fine log grid
    # spanning all of them (0.3 % apart: far below what a few hundred rows can resolve)
    low, high = max(z[0], z[-1] * 1e-6), z[-1]
    grid = np.geomspace(low / quantiles[-1], high / quantiles[0], 6000)
    covered = np.searchsorted(z, grid[:, None] * quantiles[None, :], side="right") / len(z)
    gap = ((covered - LEVELS) ** 2).sum(axis=1)
    best = int(np.argmin(gap))
    return float(grid[best]), float(gap[best])


def calibrated_std(std, scale, floor=0.0):
    """``scale * sqrt(std**2 + floor**2)``: a std recalibrated by :func:`fit_std_calibration`."""
    return scale * np.sqrt(np.square(np.asarray(std, dtype=float)) + np.square(floor))


def fit_std_calibration(residuals, std, *, min_samples=10):
    """The ``(scale, floor)`` that calibrate ``std`` to held-out ``residuals`` (y - mean).

    The calibrated std is ``scale * sqrt(std**2 + floor**2)`` (:func:`calibrated_std`);
    ``floor`` is searched from 0 (the spread's shape kept, only scaled) to constant error
    bars by the normal likelihood, then ``scale`` fitted to the calibration curve (see the
    module's docstring).

    Parameters
    ----------
    residuals, std : array-like of shape (n_samples,) or (n_samples, n_targets)
        Held-out errors of the mean prediction and the std predicted for them. Rows with a
        non-finite value are left out.
    min_samples : int, default=10
        Fewer usable rows (per target) raise a ValueError.

    Returns
    -------
    scale, floor : float, or ndarrays of shape (n_targets,) for 2-D input

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import calibrated_std, fit_std_calibration, interval_coverage
    >>> rng = np.random.default_rng(0)
    >>> std = rng.uniform(0.5, 2.0, size=2000)
    >>> errors = 3.0 * std * rng.normal(size=2000)      # the std is 3x too small
    >>> scale, floor = fit_std_calibration(errors, std)
    >>> calibrated = calibrated_std(std, scale, floor)
    >>> [float(interval_coverage(errors, 0.0, calibrated, k=k).round(2)) for k in (1, 2)]
    [0.68, 0.96]
    """
    residuals = np.asarray(residuals, dtype=float)
    std = np.asarray(std, dtype=float)
    if residuals.shape != std.shape or residuals.ndim not in (1, 2):
        raise ValueError(f"residuals {residuals.shape} and std {std.shape} must have one shape, 1-D or 2-D.")
    r2, s2 = residuals.reshape(len(residuals), -1), std.reshape(len(std), -1)
    scales, floors = [], []
    for r, s in zip(r2.T, s2.T):
        usable = (s >= 0) & np.isfinite(s) & np.isfinite(r)
        r, s = np.abs(r[usable]), s[usable]
        if len(r) < min_samples:
            raise ValueError(
                f"Only {len(r)} held-out rows to calibrate on (min_samples={min_samples}): use a larger "
                "validation_fraction or more data."
            )
        if not r.max() > 0:
            raise ValueError("All held-out residuals are 0: there is no error to scale the std to.")
        typical = max(np.median(s[s > 0]) if (s > 0).any() else 0.0, np.median(r), np.finfo(float).tiny)
        candidates = np.concatenate([[0.0], typical * np.geomspace(1e-2, 1e2, 41)])
        best = None
        for floor in candidates:
            variance = s**2 + floor**2
            if not (variance > 0).all():
                continue  # a zero std with no floor: no interval at all
            # normal log-likelihood with the best variance factor for this floor (closed form)
            nll = np.log(np.mean(r**2 / variance)) + np.mean(np.log(variance))
            if best is None or nll < best[0] - 1e-12:
                best = (nll, float(floor))
        floor = best[1]
        scales.append(_scale_1d(r / np.sqrt(s**2 + floor**2))[0])
        floors.append(floor)
    if residuals.ndim == 1:
        return scales[0], floors[0]
    return np.array(scales), np.array(floors)


def interval_quantile(scores, coverage):
    """The multiple of the std that covers ``coverage`` of new errors: split conformal's quantile.

    ``scores`` are held-out rows' standardised errors ``|y - mean| / std``; the result is the
    ``ceil((n + 1) * coverage)``-th smallest of the ``n`` finite ones (per target for 2-D
    scores), so ``|y - mean| <= q * std`` holds for at least ``coverage`` of new rows that are
    exchangeable with the held-out ones (and for at most ``coverage + 1 / (n + 1)`` when the
    scores have no ties). ``inf`` when ``n`` rows cannot promise that much (``coverage > n /
    (n + 1)``): an honest unbounded interval rather than a too-narrow one.

    The computation is one order statistic, written here rather than taken from a conformal
    library (MAPIE): its prefit wrappers would need the ensemble's own held-out split passed
    back in, for the same number.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_atomsets import interval_quantile
    >>> scores = np.arange(1, 20) / 10.0            # 19 held-out rows
    >>> float(interval_quantile(scores, 0.5)), float(interval_quantile(scores, 0.95)), interval_quantile(scores, 0.99)
    (1.0, 1.9, inf)
    """
    coverage = float(coverage)
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be a probability strictly between 0 and 1; got {coverage!r}.")
    scores = np.asarray(scores, dtype=float)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D or 2-D (rows, targets); got shape {scores.shape}.")
    if (scores < 0).any():
        raise ValueError("scores are standardised absolute errors and cannot be negative.")
    columns = scores.reshape(len(scores), -1)
    quantiles = []
    for column in columns.T:
        column = np.sort(column[np.isfinite(column)])
        rank = int(np.ceil((len(column) + 1) * coverage))  # 1-based
        quantiles.append(float(column[rank - 1]) if rank <= len(column) else np.inf)
    return quantiles[0] if scores.ndim == 1 else np.array(quantiles)
