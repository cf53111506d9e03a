"""Per-event anomaly scores and the ``anomaly_rate`` alert.

Every event gets a score from up to three scorers, all fitted on the baseline's reference data
(see :func:`baselines.anomaly_fit.fit_anomaly_model`) and evaluated here in plain numpy:

``tail``
    ECOD-style per-feature tail score: for a numeric feature ``-log min(F(x), S(x))`` with ``F``/``S``
    the reference left/right empirical tail probabilities (pyod's ECOD takes the larger of the left,
    right and skew-corrected tail scores per dimension, which is this), an exponential tail beyond
    the reference's outer quantiles, and ``-log`` of the smoothed reference missing rate for a
    missing value. A categorical value scores ``-log`` of the reference mass of categories at most as
    frequent as it (its tail probability), an unseen one ``-log(1 / (N + 1))``. Summed over features;
    the per-feature terms are kept as contributions.
``mahalanobis``
    Squared Mahalanobis distance to a robust (MCD) location and precision; missing values are imputed
    with the reference median.
``loda`` or ``iforest``
    A learned multivariate detector: pyod's LODA (sparse random projections + 1-d histograms, the
    same lookup as pyod's ``decision_function``) or an Isolation Forest exported from scikit-learn as
    node arrays and traversed level by level (``2 ** (-E[h] / c(psi))``, scikit-learn's
    ``-score_samples``).

Calibration: on a held-out part of the reference, each raw score becomes ``-log p`` (empirical upper
tail, generalized Pareto beyond the top ``tail_fraction``), and the *largest* of them (the min-p of the
scorers) is calibrated again on the same held-out rows. That combined p-value has the configured
false-positive rate whatever the correlation between scorers (Bonferroni would be conservative by
up to the number of scorers). ``flag = p <= fpr`` and ``score = -log10 p``: higher = more anomalous.

All functions here are vectorized over events; piecewise-linear functions (tail scores, calibration)
are tabulated on uniform grids so that evaluating one costs a multiply, a gather and a fused add,
not a binary search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detector.errors import SchemaMismatchError, SnapshotError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Learned = Literal["loda", "iforest", "none"]

FORMAT = 1
_CHUNK = 512  # rows scored at a time: temporaries stay in cache and below glibc's mmap threshold
_BIG = 1e150  # inputs beyond it (+-inf included) are clipped to it: their squares stay finite
_LOG_SCALE = frozenset({"mahalanobis"})  # scorers calibrated on log(raw)


# -- building blocks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridFunction:
    """``k`` piecewise-linear functions of one variable each, tabulated on uniform grids.

    Function ``j`` is linear on each of ``n_cells`` cells of ``[lo[j], lo[j] + n_cells / inv_w[j]]``
    and continues linearly beyond both ends with the slopes of the two outer cells ``0`` and
    ``n_cells + 1`` (``base`` / ``slope`` have ``n_cells + 2`` columns; cell ``i`` covers grid position
    ``g = (x - lo) * inv_w + 1`` in ``[i, i + 1)`` and evaluates to ``base[i] + (g - i) * slope[i]``).

    Examples
    --------
    >>> f = GridFunction.from_knots([np.array([0.0, 1.0, 2.0])], [np.array([0.0, 1.0, 0.0])], [(0.0, 0.0)], 4)
    >>> f(np.array([[-1.0], [0.5], [1.0], [1.75], [3.0]])).ravel().tolist()
    [0.0, 0.5, 1.0, 0.25, 0.0]
    """

    lo: F64
    inv_w: F64
    base: F64
    slope: F64

    @property
    def n_cells(self) -> int:
        """Interior cells of each grid."""
        return int(self.base.shape[1]) - 2

    @classmethod
    def from_knots(
        cls,
        knots: Sequence[F64],
        values: Sequence[F64],
        outer_slopes: Sequence[tuple[float, float]],
        n_cells: int,
    ) -> GridFunction:
        """Tabulate the linear interpolation of ``values`` at increasing ``knots`` per function.

        ``outer_slopes[j]`` is the slope (per unit of x) to the left of the first knot and to the
        right of the last one.
        """
        k = len(knots)
        lo = np.zeros(k)
        inv_w = np.ones(k)
        base = np.zeros((k, n_cells + 2))
        slope = np.zeros((k, n_cells + 2))
        for j in range(k):
            xk = np.asarray(knots[j], dtype=np.float64)
            yk = np.asarray(values[j], dtype=np.float64)
            a, b = float(xk[0]), float(xk[-1])
            if not b > a:  # a single value: widen so the grid has positive width
                b = a + max(abs(a) * 1e-9, 1e-12)
                xk, yk = np.array([a, b]), np.array([yk[0], yk[0]])
            w = (b - a) / n_cells
            edges = a + w * np.arange(n_cells + 1)
            edges[-1] = b
            ye = np.interp(edges, xk, yk)
            lo[j], inv_w[j] = a, 1.0 / w
            base[j, 1:-1] = ye[:-1]
            slope[j, 1:-1] = np.diff(ye)
            sl, sr = outer_slopes[j]
            # cell 0: g < 1 means x < a; value ye[0] + (a - x) * sl = ye[0] + (1 - g) * w * sl
            base[j, 0] = ye[0] + w * sl
            slope[j, 0] = -w * sl
            # cell n+1: g >= n + 1 means x >= b; value ye[-1] + (g - n - 1) * w * sr
            base[j, -1] = ye[-1]
            slope[j, -1] = w * sr
        return cls(lo, inv_w, base, slope)

    def __call__(self, x: F64, out: F64 | None = None) -> F64:
        """Evaluate function ``j`` on column ``j`` of ``x`` (``(n, k)``, finite)."""
        n_cells = self.n_cells
        g = x - self.lo
        g *= self.inv_w
        g += 1.0
        np.clip(g, -1e15, 1e15, out=g)  # (x is finite: the same as maximum then minimum, in one pass)
        idx = np.floor(g)
        np.clip(idx, 0.0, n_cells + 1, out=idx)
        g -= idx
        flat = idx.astype(np.intp)
        flat += np.arange(x.shape[1], dtype=np.intp) * (n_cells + 2)
        res = out if out is not None and out.shape == g.shape and out.dtype == np.float64 else np.empty_like(g)
        np.take(self.slope, flat, out=res)
        res *= g
        res += np.take(self.base, flat)
        if out is not None and res is not out:
            out[...] = res
            return out
        return res

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        """Arrays named ``prefix.lo`` etc."""
        return {f"{prefix}.{k}": getattr(self, k) for k in ("lo", "inv_w", "base", "slope")}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], prefix: str) -> GridFunction:
        """Inverse of :meth:`to_arrays`."""
        return cls(*(np.asarray(arrays[f"{prefix}.{k}"], dtype=np.float64) for k in ("lo", "inv_w", "base", "slope")))


@dataclass(frozen=True)
class TailCalibration:
    """``-log p`` of an upper-tail p-value per column: empirical (tabulated) up to a threshold ``u``,
    generalized Pareto above it.

    ``-log p(t) = grid(t) + log1p(xi * max(t - u, 0) / sigma) / xi`` (``max(t - u, 0) / sigma`` for
    ``xi = 0``, the exponential tail); ``grid`` is flat beyond ``u``. A heavy tail (``xi > 0``) keeps
    the p-values of extreme raw scores honest where an exponential tail would make them too small.

    Examples
    --------
    >>> g = GridFunction.from_knots([np.array([0.0, 1.0])], [np.array([0.0, 1.0])], [(0.0, 0.0)], 2)
    >>> cal = TailCalibration(g, np.array([1.0]), np.array([0.5]), np.array([0.0]))
    >>> cal(np.array([[-1.0], [0.5], [2.0]])).ravel().tolist()
    [0.0, 0.5, 3.0]
    """

    grid: GridFunction
    u: F64
    sigma: F64
    xi: F64

    def __call__(self, t: F64) -> F64:
        """``-log p`` of column ``j`` of ``t`` (``(n, k)``) under function ``j``."""
        h = self.grid(t)
        y = t - self.u
        np.maximum(y, 0.0, out=y)
        y /= self.sigma
        heavy = self.xi > 1e-9
        if heavy.any():
            xi = np.where(heavy, self.xi, 1.0)
            np.copyto(y, np.log1p(y * xi) / xi, where=heavy)
        h += y
        return h

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        """Arrays named ``prefix.lo`` etc."""
        return {
            **self.grid.to_arrays(prefix),
            f"{prefix}.u": self.u,
            f"{prefix}.sigma": self.sigma,
            f"{prefix}.xi": self.xi,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], prefix: str) -> TailCalibration:
        """Inverse of :meth:`to_arrays`."""
        grid = GridFunction.from_arrays(arrays, prefix)
        return cls(grid, *(np.asarray(arrays[f"{prefix}.{k}"], dtype=np.float64) for k in ("u", "sigma", "xi")))


def average_path_length(n: npt.ArrayLike) -> F64:
    """``c(n)``: average path length of an unsuccessful search in a binary search tree of ``n`` nodes.

    Examples
    --------
    >>> average_path_length([1, 2, 256]).round(4).tolist()
    [0.0, 1.0, 10.2448]
    """
    m = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(m)
    out[m == 2] = 1.0
    big = m > 2
    out[big] = 2.0 * (np.log(m[big] - 1.0) + np.euler_gamma) - 2.0 * (m[big] - 1.0) / m[big]
    return out


@dataclass(frozen=True)
class LodaScorer:
    """pyod's LODA as arrays: ``mean_i neglog_i[bin_i(x @ proj_i)]`` over random projections.

    ``neglog_i`` is ``-log`` of histogram ``i`` times pyod's weight of the projection (``1 / n_cuts``).

    ``bin_i(p) = clip(ceil((p - lo_i) * inv_w_i), 0, n_bins - 1)``: the index pyod's
    ``decision_function`` looks up (``searchsorted(limits[:n_bins - 1], p, side="left")`` on equal-width
    limits).
    """

    proj: F64  # (n_cuts, n_features)
    lo: F64
    inv_w: F64
    neglog: F64  # (n_cuts, n_bins): weight * -log of the normalized histogram (+1e-12 as pyod)

    _q: F64 = field(init=False, repr=False, compare=False)
    _b: F64 = field(init=False, repr=False, compare=False)
    _table: F64 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # h = (n_bins - 1) - (p - lo) * inv_w in one matmul; floor(clip(h)) = n_bins - 1 - bin, so the
        # lookup uses the reversed table and needs no ceil (one pass less over (n, n_cuts)).
        n_bins = self.neglog.shape[1]
        object.__setattr__(self, "_q", np.ascontiguousarray((-self.proj * self.inv_w[:, None]).T))
        object.__setattr__(self, "_b", (n_bins - 1) + self.lo * self.inv_w)
        object.__setattr__(self, "_table", np.ascontiguousarray(self.neglog[:, ::-1]).ravel())

    def score(self, x: F64) -> F64:
        """Raw LODA score of each row of finite ``x``."""
        n_cuts, n_bins = self.neglog.shape
        h = x @ self._q
        h += self._b
        np.clip(h, 0.0, n_bins - 0.5, out=h)
        flat = h.astype(np.intp)
        flat += np.arange(n_cuts, dtype=np.intp) * n_bins
        total: F64 = np.take(self._table, flat).sum(axis=1)
        total /= n_cuts
        return total


@dataclass(frozen=True)
class IForestScorer:
    """An Isolation Forest as complete binary trees of one depth, traversed level by level.

    Each tree is stored in heap order (children of node ``i`` are ``2i + 1`` and ``2i + 2``): a leaf of
    scikit-learn's tree above the full depth is padded with nodes of infinite threshold (always
    left), and every leaf slot below it holds its value. A level then costs two gathers and a compare,
    with no child lookups. ``leaf_value`` is the leaf's depth plus ``c(n_node_samples) - 1`` as in
    scikit-learn, and the raw score is ``2 ** (-sum_trees leaf_value / (n_trees * c(max_samples)))``
    (= ``-score_samples``). Inputs are rounded to float32 first, as scikit-learn's trees compare
    float32 features.
    """

    feature: I64  # (n_trees, 2**depth - 1)
    threshold: F64  # (n_trees, 2**depth - 1)
    leaf_value: F64  # (n_trees, 2**depth)
    norm: float  # n_trees * c(max_samples)

    @property
    def depth(self) -> int:
        """Depth of the (padded) trees."""
        return int(self.leaf_value.shape[1]).bit_length() - 1

    def score(self, x: F64) -> F64:
        """Raw Isolation Forest score (higher = more anomalous) of each row of finite ``x``."""
        n, f = x.shape
        n_trees, n_internal = self.feature.shape
        xf = x.astype(np.float32).astype(np.float64).ravel()
        rowbase = (np.arange(n, dtype=np.intp) * f)[:, None]
        tree_base = np.arange(n_trees, dtype=np.intp) * n_internal
        feature = self.feature.astype(np.intp).ravel()
        threshold = self.threshold.ravel()
        node = np.zeros((n, n_trees), dtype=np.intp)
        for _ in range(self.depth):
            at = node + tree_base
            right = np.take(xf, np.take(feature, at) + rowbase) > np.take(threshold, at)
            node *= 2
            node += 1
            node += right
        node -= n_internal
        node += np.arange(n_trees, dtype=np.intp) * self.leaf_value.shape[1]
        total: F64 = np.take(self.leaf_value, node).sum(axis=1)
        return np.exp2(-total / self.norm) if self.norm > 0 else np.ones(n)


@dataclass(frozen=True)
class AnomalyScores:
    """Scores of one batch of events.

    Attributes
    ----------
    score : (n,) ``-log10 p_value``; higher = more anomalous
    p_value : (n,) calibrated p-value of the event under the reference distribution
    flag : (n,) ``p_value <= fpr``
    raw : (n, n_scorers) raw score of each scorer (columns named by :attr:`scorers`)
    contributions : (n, n_features) per-feature tail scores (numeric then categorical features)
    """

    score: F64
    p_value: F64
    flag: npt.NDArray[np.bool_]
    raw: F64
    contributions: F64
    scorers: tuple[str, ...]
    features: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.score)

    def top_features(self, k: int = 3) -> npt.NDArray[np.intp]:
        """Indices into :attr:`features` of the ``k`` largest contributions of each event, largest first."""
        k = min(k, self.contributions.shape[1])
        if k == 0:
            return np.zeros((len(self), 0), dtype=np.intp)
        part = np.argpartition(-self.contributions, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(self.contributions, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)


# -- the fitted model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AnomalyModel:
    """Fitted anomaly scorers and their calibration; stored in the baseline.

    Build with :func:`baselines.anomaly_fit.fit_anomaly_model`; store with :meth:`to_arrays`, load
    with :meth:`from_arrays`; score with :meth:`score`.

    Attributes
    ----------
    tail : per-numeric-feature ``-log min(F, S)`` as grid functions
    num_missing : (n_numeric,) tail score of a missing numeric value
    cat_table : (n_categorical, 2 + max_categories) tail score of unseen (column 0), missing
        (column 1) and category ``k`` (column ``2 + k``)
    contrib_mean : (n_features,) mean contribution on the calibration rows (evidence ranks by excess)
    median, location, precision : imputation values and robust Mahalanobis parameters
    calibration : ``-log p`` of each scorer's raw score
    combined : ``-log p`` of the largest per-scorer ``-log p`` (the combined, calibrated p-value)
    """

    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    scorers: tuple[str, ...]
    fpr: float
    n_fit: int
    n_calibration: int
    tail: GridFunction
    num_missing: F64
    cat_table: F64
    cat_sizes: I64
    contrib_mean: F64
    median: F64
    location: F64
    precision: F64
    calibration: TailCalibration
    combined: TailCalibration
    loda: LodaScorer | None = None
    iforest: IForestScorer | None = None
    _chol: F64 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {self.fpr}")
        if len(self.calibration.u) != len(self.scorers) or len(self.combined.u) != 1:
            raise ValueError("calibration needs one function per scorer and one combined function")
        f = len(self.numeric_names)
        chol: F64 = np.zeros((f, 0))
        if "mahalanobis" in self.scorers and f:
            p = 0.5 * (self.precision + self.precision.T)
            chol = np.asarray(np.linalg.cholesky(p), dtype=np.float64)  # precision = L L^T, so d^2 = |z L|^2
        object.__setattr__(self, "_chol", chol)

    @property
    def features(self) -> tuple[str, ...]:
        """Numeric then categorical feature names (columns of the contributions)."""
        return self.numeric_names + self.categorical_names

    @property
    def learned(self) -> Learned:
        """The learned detector in use."""
        return "loda" if self.loda is not None else "iforest" if self.iforest is not None else "none"

    @property
    def log_threshold(self) -> float:
        """``-log fpr``: an event is flagged when its combined ``-log p`` reaches this."""
        return -math.log(self.fpr)

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, numeric: npt.ArrayLike, categorical: npt.ArrayLike | None = None) -> AnomalyScores:
        """Score a batch: ``numeric`` ``(n, n_numeric)`` float with NaN = missing, ``categorical``
        ``(n, n_categorical)`` int codes (``MISSING`` = -1, ``UNSEEN`` = -2)."""
        x = np.asarray(numeric, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1) if len(self.numeric_names) > 1 else x.reshape(-1, 1)
        n = x.shape[0]
        c = (
            np.zeros((n, 0), dtype=np.int32)
            if categorical is None
            else np.asarray(categorical, dtype=np.int32).reshape(n, -1)
        )
        if x.shape[1] != len(self.numeric_names) or c.shape[1] != len(self.categorical_names):
            raise SchemaMismatchError(
                f"expected {len(self.numeric_names)} numeric and {len(self.categorical_names)} categorical columns, "
                f"got {x.shape[1]} and {c.shape[1]}"
            )
        s = len(self.scorers)
        out_h = np.empty(n)
        raw = np.empty((n, s))
        contrib = np.empty((n, len(self.features)))
        for a in range(0, n, _CHUNK):
            b = min(n, a + _CHUNK)
            self._score_chunk(x[a:b], c[a:b], raw[a:b], contrib[a:b])
        # (n, n_scorers) is small: calibrating it in one go saves two dozen calls per chunk
        m = np.max(self.calibration(self.calibration_input(raw)), axis=1, keepdims=True)  # largest -log p
        np.maximum(self.combined(m)[:, 0], 0.0, out=out_h)
        p = np.exp(-out_h)
        return AnomalyScores(
            score=out_h / math.log(10.0),
            p_value=p,
            flag=out_h >= self.log_threshold,
            raw=raw,
            contributions=contrib,
            scorers=self.scorers,
            features=self.features,
        )

    def _score_chunk(self, x: F64, c: npt.NDArray[np.int32], raw: F64, contrib: F64) -> None:
        f = x.shape[1]
        missing = np.isnan(x)
        any_missing = bool(missing.any())
        xi = np.where(missing, self.median, x) if any_missing else x
        if not (np.abs(xi) <= _BIG).all():  # also finite absurd values (1e300), whose squares overflow
            xi = np.clip(xi, -_BIG, _BIG)
        if f:
            self.tail(xi, out=contrib[:, :f])
            if any_missing:
                np.copyto(contrib[:, :f], np.broadcast_to(self.num_missing, x.shape), where=missing)
        if c.shape[1]:
            width = self.cat_table.shape[1]
            code = np.where(c >= self.cat_sizes, -2, c).astype(np.intp)
            code += 2 + np.arange(c.shape[1], dtype=np.intp) * width
            contrib[:, f:] = np.take(self.cat_table, code)
        for j, name in enumerate(self.scorers):
            if name == "tail":
                contrib.sum(axis=1, out=raw[:, j])
            elif name == "mahalanobis":
                z = xi - self.location
                y = z @ self._chol
                np.einsum("ij,ij->i", y, y, out=raw[:, j])
            elif name == "loda" and self.loda is not None:
                raw[:, j] = self.loda.score(xi)
            elif name == "iforest" and self.iforest is not None:
                raw[:, j] = self.iforest.score(xi)

    def calibration_input(self, raw: F64) -> F64:
        """Raw scores on the scale their p-values are calibrated on: the squared Mahalanobis distance
        on a log scale (its far tail is polynomial for heavy-tailed features, which a generalized
        Pareto fit near the 97th percentile underestimates; in logs that tail is exponential)."""
        out = raw.copy()
        for j, name in enumerate(self.scorers):
            if name in _LOG_SCALE:
                np.log(np.maximum(out[:, j], 1e-300), out=out[:, j])
        return out

    # -- storage ---------------------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON-serializable metadata from which :meth:`from_arrays` rebuilds this model."""
        arrays: dict[str, npt.NDArray[Any]] = {
            **self.tail.to_arrays("tail"),
            **self.calibration.to_arrays("calibration"),
            **self.combined.to_arrays("combined"),
            "num_missing": self.num_missing,
            "cat_table": self.cat_table,
            "cat_sizes": self.cat_sizes,
            "contrib_mean": self.contrib_mean,
            "median": self.median,
            "location": self.location,
            "precision": self.precision,
        }
        meta: dict[str, Any] = {
            "format": FORMAT,
            "numeric_names": list(self.numeric_names),
            "categorical_names": list(self.categorical_names),
            "scorers": list(self.scorers),
            "fpr": self.fpr,
            "n_fit": self.n_fit,
            "n_calibration": self.n_calibration,
            "learned": self.learned,
        }
        if self.loda is not None:
            arrays.update({f"loda.{k}": getattr(self.loda, k) for k in ("proj", "lo", "inv_w", "neglog")})
        if self.iforest is not None:
            t = self.iforest
            arrays.update({f"iforest.{k}": getattr(t, k) for k in ("feature", "threshold", "leaf_value")})
            meta["iforest"] = {"norm": t.norm}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]) -> AnomalyModel:
        """Rebuild a model from :meth:`to_arrays` output."""
        if meta.get("format") != FORMAT:
            raise SnapshotError(f"anomaly model format {meta.get('format')!r} is not supported (expected {FORMAT})")
        try:
            f64 = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if np.asarray(v).dtype.kind == "f"}
            loda = iforest = None
            if meta["learned"] == "loda":
                loda = LodaScorer(*(f64[f"loda.{k}"] for k in ("proj", "lo", "inv_w", "neglog")))
            elif meta["learned"] == "iforest":
                iforest = IForestScorer(
                    feature=np.asarray(arrays["iforest.feature"], dtype=np.int64),
                    threshold=f64["iforest.threshold"],
                    leaf_value=f64["iforest.leaf_value"],
                    norm=float(meta["iforest"]["norm"]),
                )
            return cls(
                numeric_names=tuple(meta["numeric_names"]),
                categorical_names=tuple(meta["categorical_names"]),
                scorers=tuple(meta["scorers"]),
                fpr=float(meta["fpr"]),
                n_fit=int(meta["n_fit"]),
                n_calibration=int(meta["n_calibration"]),
                tail=GridFunction.from_arrays(arrays, "tail"),
                num_missing=f64["num_missing"],
                cat_table=f64["cat_table"],
                cat_sizes=np.asarray(arrays["cat_sizes"], dtype=np.int64),
                contrib_mean=f64["contrib_mean"],
                median=f64["median"],
                location=f64["location"],
                precision=f64["precision"],
                calibration=TailCalibration.from_arrays(arrays, "calibration"),
                combined=TailCalibration.from_arrays(arrays, "combined"),
                loda=loda,
                iforest=iforest,
            )
        except KeyError as e:
            raise SnapshotError(f"anomaly model is missing {e.args[0]!r}") from None
