"""Fit the anomaly scorers of :mod:`detector.scoring` on a baseline's reference data.

The reference rows are split (seeded) into a *fit* part, on which every scorer is fitted, and a
held-out *calibration* part, on which raw scores are turned into p-values. The learned detectors
come from pyod / scikit-learn and are exported as plain arrays, so the core scores them in numpy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.schema import MISSING, UNSEEN
from detector.scoring import (
    AnomalyModel,
    GridFunction,
    IForestScorer,
    Learned,
    LodaScorer,
    TailCalibration,
    average_path_length,
)

F64 = npt.NDArray[np.float64]


def _tail_rows(n: int) -> int:
    """Reference points beyond each end of a tail grid; the exponential tail is fitted on them."""
    return max(1, min(max(20, math.ceil(0.001 * n)), n // 4))


def _numeric_tail(v: F64, n_cells: int) -> tuple[F64, F64, tuple[float, float]]:
    """Grid knots, ``-log min(F, S)`` there, and the outer exponential-tail slopes of one feature."""
    n = len(v)
    if n == 0:
        return np.array([0.0, 1.0]), np.zeros(2), (0.0, 0.0)
    s = np.sort(v)
    k = _tail_rows(n) if n >= 8 else 0
    a, b = float(s[k]), float(s[n - 1 - k])
    if not b > a:
        b = a + max(abs(a) * 1e-9, 1e-12)
    edges = np.linspace(a, b, n_cells + 1)
    left = np.searchsorted(s, edges, side="right")  # #{v <= e}
    right = n - np.searchsorted(s, edges, side="left")  # #{v >= e}
    tail = np.maximum(np.minimum(left, right), 1) / (n + 1)
    values = -np.log(tail)
    spread = float(np.subtract(*np.quantile(s, [0.75, 0.25]))) or float(np.std(s)) or 1.0
    lo_excess = float(np.mean(a - s[:k])) if k else 0.0
    hi_excess = float(np.mean(s[n - k :] - b)) if k else 0.0
    slopes = (1.0 / (lo_excess if lo_excess > 0 else spread), 1.0 / (hi_excess if hi_excess > 0 else spread))
    return edges, values, slopes


def _categorical_tail(codes: npt.NDArray[np.int32], size: int) -> F64:
    """``-log`` tail mass per outcome (unseen, missing, category 0..size-1) of one categorical feature.

    The tail mass of an outcome is the smoothed reference probability of all outcomes at most as
    frequent as it: the rarest category scores highest, a uniform feature scores 0 everywhere.
    """
    n = len(codes)
    counts = np.zeros(size + 2)
    counts[0] = np.count_nonzero((codes == UNSEEN) | (codes >= size))
    counts[1] = np.count_nonzero(codes == MISSING)
    valid = codes[(codes >= 0) & (codes < size)]
    counts[2:] = np.bincount(valid, minlength=size)[:size]
    p = (counts + 1.0) / (n + len(counts))
    order = np.sort(p)
    cum = np.cumsum(order)
    tail = cum[np.searchsorted(order, p, side="right") - 1]
    return np.maximum(-np.log(np.minimum(tail, 1.0)), 0.0)


def _gpd(excess: F64) -> tuple[float, float]:
    """Generalized Pareto ``(sigma, xi)`` of threshold excesses by probability-weighted moments
    (Hosking & Wallis 1987), ``xi`` clipped to [0, 0.5]: never lighter than exponential."""
    y = np.sort(excess)
    k = len(y)
    a0 = float(np.mean(y))
    if k < 5 or a0 <= 0:
        return (a0 if a0 > 0 else 1.0), 0.0
    a1 = float(np.mean(y * (1.0 - (np.arange(1, k + 1) - 0.35) / k)))
    denom = a0 - 2.0 * a1
    xi = a0 / denom - 2.0 if denom > 0 else 0.5
    xi = min(max(xi, 0.0), 0.5)
    return a0 * (1.0 - xi), xi  # the mean excess of a GPD is sigma / (1 - xi)


def _calibration(scores: F64, n_cells: int, tail_fraction: float | None) -> tuple[F64, F64, float, float, float]:
    """Knots and ``-log p`` of an upper-tail p-value of ``scores`` (empirical below the top
    ``tail_fraction``), and the threshold, scale and shape of the generalized Pareto tail above it."""
    c = np.sort(scores[np.isfinite(scores)])
    m = len(c)
    if m < 2:
        return np.array([0.0, 1.0]), np.zeros(2), 1.0, 1.0, 0.0
    frac = tail_fraction if tail_fraction is not None else min(0.1, max(0.01, 100.0 / m))
    k = max(1, min(m - 1, math.ceil(frac * m)))
    u = float(c[m - 1 - k])
    sigma, xi = _gpd(c[c > u] - u)
    if not sigma > 0:
        sigma = float(np.std(c)) or 1.0
    a = float(c[0])
    b = u if u > a else a + max(abs(a) * 1e-9, 1e-12)
    edges = np.linspace(a, b, n_cells + 1)
    ge = m - np.searchsorted(c, edges, side="left")  # #{c >= t}
    values = -np.log((ge + 1.0) / (m + 1.0))
    return edges, values, b, sigma, xi


def _tail_calibration(parts: list[tuple[F64, F64, float, float, float]], n_cells: int) -> TailCalibration:
    grid = GridFunction.from_knots([p[0] for p in parts], [p[1] for p in parts], [(0.0, 0.0)] * len(parts), n_cells)
    u, sigma, xi = (np.array([p[i] for p in parts], dtype=np.float64) for i in (2, 3, 4))
    return TailCalibration(grid, u, sigma, xi)


def _loda(x: F64, *, n_bins: int, n_cuts: int, seed: int, exact_pyod: bool) -> LodaScorer:
    from pyod.models.loda import LODA

    det = LODA(n_bins=n_bins, n_random_cuts=n_cuts, random_state=seed).fit(x)
    limits = np.asarray(det.limits_, dtype=np.float64)
    lo = limits[:, 0].copy()
    width = (limits[:, -1] - limits[:, 0]) / n_bins
    inv_w = np.divide(1.0, width, out=np.zeros_like(width), where=width > 0)
    if not exact_pyod:
        # pyod looks up histogram[k] for p in (limits[k-1], limits[k]]: one bin to the right of
        # np.histogram's bin. Shifting lo by one width gives the histogram's own bin.
        lo += width
    # pyod weighs each cut by 1 / n_cuts and then divides the sum by n_cuts again: keep its scale
    weights = np.asarray(det.weights, dtype=np.float64)[:, None]
    neglog = -np.log(np.asarray(det.histograms_, dtype=np.float64)) * weights
    return LodaScorer(proj=np.asarray(det.projections_, dtype=np.float64), lo=lo, inv_w=inv_w, neglog=neglog)


def _iforest(x: F64, *, n_trees: int, max_samples: int | str, seed: int) -> IForestScorer:
    from pyod.models.iforest import IForest

    forest = IForest(n_estimators=n_trees, max_samples=max_samples, random_state=seed).fit(x).detector_
    depth = max(max(int(est.tree_.max_depth) for est in forest.estimators_), 1)
    n_internal = 2**depth - 1
    t_count = len(forest.estimators_)
    feature = np.zeros((t_count, n_internal), dtype=np.int64)
    threshold = np.full((t_count, n_internal), np.inf)  # padding nodes always go left
    leaf_value = np.zeros((t_count, 2**depth))
    for i, (est, cols) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
        t = est.tree_
        cols = np.asarray(cols, dtype=np.int64)
        value = t.compute_node_depths() + average_path_length(t.n_node_samples) - 1.0
        stack = [(0, 0, 0)]  # (sklearn node, heap position, depth)
        while stack:
            node, pos, d = stack.pop()
            if t.children_left[node] < 0:  # leaf: fill every leaf slot below its heap position
                span = 2 ** (depth - d)
                first = pos * span + span - 1 - n_internal
                leaf_value[i, first : first + span] = value[node]
                continue
            feature[i, pos] = cols[t.feature[node]]
            threshold[i, pos] = t.threshold[node]
            stack.append((int(t.children_left[node]), 2 * pos + 1, d + 1))
            stack.append((int(t.children_right[node]), 2 * pos + 2, d + 1))
    return IForestScorer(
        feature=feature,
        threshold=threshold,
        leaf_value=leaf_value,
        norm=float(t_count * average_path_length([forest._max_samples])[0]),
    )


def _robust_covariance(x: F64, *, max_rows: int, seed: int) -> tuple[F64, F64]:
    from sklearn.covariance import EmpiricalCovariance, MinCovDet

    rng = np.random.default_rng(seed)
    sub = x if len(x) <= max_rows else x[rng.choice(len(x), max_rows, replace=False)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est: Any = MinCovDet(random_state=seed).fit(sub)
    except (ValueError, np.linalg.LinAlgError):
        est = EmpiricalCovariance().fit(sub)
    loc = np.asarray(est.location_, dtype=np.float64)
    cov = np.asarray(est.covariance_, dtype=np.float64)
    scale = float(np.mean(np.diag(cov))) or 1.0
    cov = cov + np.eye(len(cov)) * scale * 1e-9
    return loc, np.asarray(np.linalg.inv(cov), dtype=np.float64)


def _flat(k: int) -> GridFunction:
    return GridFunction.from_knots([np.array([0.0, 1.0])] * k, [np.zeros(2)] * k, [(0.0, 0.0)] * k, 1)


def _no_calibration(k: int) -> TailCalibration:
    return TailCalibration(_flat(k), np.full(k, np.inf), np.ones(k), np.zeros(k))


def fit_anomaly_model(
    numeric: npt.ArrayLike,
    categorical: npt.ArrayLike | None = None,
    *,
    numeric_names: Sequence[str],
    categorical_names: Sequence[str] = (),
    categorical_sizes: Sequence[int] = (),
    learned: Learned = "loda",
    fpr: float = 1e-3,
    seed: int = 0,
    calibration_fraction: float = 0.3,
    n_cells: int = 1024,
    tail_fraction: float | None = None,
    mcd_max_rows: int = 5_000,
    loda_bins: int = 10,
    loda_cuts: int = 100,
    exact_pyod: bool = True,
    iforest_trees: int = 100,
    iforest_max_samples: int | str = "auto",
) -> AnomalyModel:
    """Fit and calibrate the anomaly scorers on reference rows.

    Parameters
    ----------
    numeric, categorical
        Reference rows as in :class:`~detector.schema.EventBatch` (NaN / ``MISSING`` for missing).
    numeric_names, categorical_names, categorical_sizes
        Column names and, per categorical feature, the number of known categories.
    learned
        The learned multivariate detector: ``"loda"`` (pyod LODA), ``"iforest"`` (pyod / scikit-learn
        Isolation Forest) or ``"none"``. It sees the numeric features (missing = reference median).
    fpr
        Calibrated false-positive rate of the per-event flag.
    seed
        Seeds the split, MCD, LODA and the forest.
    calibration_fraction
        Share of the reference held out to calibrate p-values.
    n_cells
        Grid cells of each tabulated function (tail scores, calibration).
    tail_fraction
        Top share of calibration scores modelled by a generalized Pareto tail (default ``100 / n``
        clipped to [0.01, 0.1]).
    mcd_max_rows
        MinCovDet runs on at most this many fit rows.
    loda_bins, loda_cuts, exact_pyod
        LODA histogram bins and projections; ``exact_pyod`` keeps pyod's histogram lookup (scores
        equal to its ``decision_function``), else the histogram's own bin is used.
    iforest_trees, iforest_max_samples
        Isolation Forest size.
    """
    if learned not in ("loda", "iforest", "none"):
        raise ValueError(f"learned must be 'loda', 'iforest' or 'none', got {learned!r}")
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    x = np.asarray(numeric, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    n = len(x)
    c = np.zeros((n, 0), dtype=np.int32) if categorical is None else np.asarray(categorical, np.int32).reshape(n, -1)
    if x.shape[1] != len(numeric_names) or c.shape[1] != len(categorical_names):
        raise ValueError("numeric/categorical columns do not match the given names")
    if len(categorical_sizes) != len(categorical_names):
        raise ValueError("categorical_sizes needs one size per categorical feature")
    if x.shape[1] + c.shape[1] == 0:
        raise ValueError("no features to score")
    n_cal = round(n * calibration_fraction)
    if n_cal < 10 or n - n_cal < 10:
        raise ValueError(f"need at least 10 fit and 10 calibration rows, got {n - n_cal} and {n_cal}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    fit_rows, cal_rows = np.sort(perm[n_cal:]), np.sort(perm[:n_cal])
    xf, cf = x[fit_rows], c[fit_rows]
    n_fit = len(fit_rows)
    f = x.shape[1]

    # tail scorer
    knots, values, slopes = [], [], []
    for j in range(f):
        kj, vj, sj = _numeric_tail(xf[~np.isnan(xf[:, j]), j], n_cells)
        knots.append(kj)
        values.append(vj)
        slopes.append(sj)
    tail = GridFunction.from_knots(knots, values, slopes, n_cells) if f else _flat(0)
    n_missing = np.isnan(xf).sum(axis=0)
    num_missing = np.maximum(-np.log((n_missing + 1.0) / (n_fit + 1.0)), 0.0)
    sizes = np.asarray(categorical_sizes, dtype=np.int64)
    width = 2 + (int(sizes.max()) if len(sizes) else 0)
    cat_table = np.zeros((len(sizes), width))
    for j, size in enumerate(sizes):
        cat_table[j, : size + 2] = _categorical_tail(cf[:, j], int(size))
        cat_table[j, size + 2 :] = cat_table[j, 0]

    # robust Mahalanobis and the learned detector, on median-imputed numeric features
    median = np.zeros(f)
    for j in range(f):
        col = xf[:, j]
        col = col[~np.isnan(col)]
        median[j] = float(np.median(col)) if col.size else 0.0
    xi = np.where(np.isnan(xf), median, xf)
    scorers = ["tail"]
    location, precision = np.zeros(f), np.zeros((f, f))
    loda = iforest = None
    if f:
        scorers.append("mahalanobis")
        location, precision = _robust_covariance(xi, max_rows=mcd_max_rows, seed=seed)
        if learned == "loda":
            loda = _loda(xi, n_bins=loda_bins, n_cuts=loda_cuts, seed=seed, exact_pyod=exact_pyod)
            scorers.append("loda")
        elif learned == "iforest":
            iforest = _iforest(xi, n_trees=iforest_trees, max_samples=iforest_max_samples, seed=seed)
            scorers.append("iforest")

    def build(cal: TailCalibration, comb: TailCalibration, contrib_mean: F64) -> AnomalyModel:
        return AnomalyModel(
            numeric_names=tuple(numeric_names),
            categorical_names=tuple(categorical_names),
            scorers=tuple(scorers),
            fpr=fpr,
            n_fit=n_fit,
            n_calibration=n_cal,
            tail=tail,
            num_missing=num_missing,
            cat_table=cat_table,
            cat_sizes=sizes,
            contrib_mean=contrib_mean,
            median=median,
            location=location,
            precision=precision,
            calibration=cal,
            combined=comb,
            loda=loda,
            iforest=iforest,
        )

    # calibration on the held-out rows: per scorer, then the largest per-scorer -log p
    draft = build(_no_calibration(len(scorers)), _no_calibration(1), np.zeros(f + c.shape[1]))
    held = draft.score(x[cal_rows], c[cal_rows])
    z = draft.calibration_input(held.raw)
    cal = _tail_calibration([_calibration(z[:, j], n_cells, tail_fraction) for j in range(len(scorers))], n_cells)
    comb = _tail_calibration([_calibration(np.max(cal(z), axis=1), n_cells, tail_fraction)], n_cells)
    return build(cal, comb, held.contributions.mean(axis=0))
