"""Model performance against the baseline: windowed metrics of labelled events, and an estimate before labels.

:func:`fit_performance` computes, on the labelled reference events, the metrics and the per-event
spread the tests need (a :class:`PerformanceReference`, stored in the baseline), plus a calibration
of the confidence for confidence-based performance estimation (CBPE, as in NannyML): each confidence
is mapped to the probability that the prediction is right (histogram binning on equal-mass bins,
made monotone by pool-adjacent-violators), fitted on one part of the reference and checked on the rest.

:class:`PerformanceMonitor` keeps count windows of *labelled* events (joined by
:class:`~detector.labels.LabelJoin`, or labelled inline) as a ring of mergeable pane sums (counts,
sums of log loss and of absolute/squared errors, per-class histograms of the positive-class score for
ROC AUC), and one window of *all* events for the CBPE estimate. At each pane close every metric is
tested one-sided against its reference value, shifted by a tolerance (the effect gate):

========================  ================================================================================
metric                    test (``alpha = false_alarm_rate / (metrics x panes per window)``)
========================  ================================================================================
``accuracy``              exact binomial: H0 ``accuracy >= ref - tolerance``; bound: Clopper–Pearson upper
``log_loss``              z test with the reference per-event std:
                          H0 ``mean <= ref + max(ref * rel_tol, log_loss_tol)``
``roc_auc`` (binary)      z test with the Hanley–McNeil standard error: H0 ``auc >= ref - tolerance``
``mae``, ``rmse``         z test on mean absolute / squared error with the reference per-event std:
                          H0 ``value <= ref + max(ref * rel_tol, error_tol)`` (RMSE squared for the test)
``estimated_accuracy``    z test of the mean calibrated confidence vs the reference estimate
========================  ================================================================================

The loss-type metrics (log loss, MAE, RMSE) tolerate a rise relative to the reference, with an absolute
floor: near a perfect reference (log loss close to 0, as for a model that is never wrong) a relative
tolerance alone is tiny (5% of 0.01 nats is 0.0005), and a handful of confident errors in a window is
significant against the tiny reference spread. Accuracy, ROC AUC (and so the error rate) have absolute
tolerances already.

A ``performance_drop`` incident follows the house rules (:class:`~detector.decision.IncidentTracker`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from detector.decision import AlertDecision, IncidentTracker, Severity, Status, window_fields
from detector.errors import SnapshotError
from detector.labels import JoinedBatch
from detector.schema import MISSING, EventBatch, Schema

__all__ = [
    "PerformanceMonitor",
    "PerformanceReference",
    "calibrate",
    "fit_performance",
    "per_event_log_loss",
    "roc_auc_binned",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Task = Literal["classification", "regression"]

FORMAT: Final = 1
#: Probability floor of the log loss (as scikit-learn's ``log_loss`` for float64).
LOG_LOSS_EPS: Final = float(np.finfo(np.float64).eps)
#: Default smallest tolerated rise of the windowed log loss, in nats per event. It matches the accuracy
#: tolerance (0.02): two more wrong answers in a hundred, made at 90% confidence, add 0.02 * ln(10) = 0.046
#: nats: a rise within what is tolerated for accuracy should not page anyone through the log loss either.
#: Near a perfect reference (log loss ~0.001) a 5% relative tolerance alone is 0.00005 nats, while one
#: wrong answer at 99% confidence in a window of 2,000 adds 0.0023. Above a reference of 1 nat (multiclass)
#: the relative tolerance is the larger.
LOG_LOSS_TOLERANCE: Final = 0.05
_SCALARS: Final = (
    "n",
    "accuracy",
    "log_loss",
    "log_loss_std",
    "n_log_loss",
    "roc_auc",
    "n_pos",
    "n_neg",
    "mae",
    "abs_error_std",
    "rmse",
    "sq_error_std",
    "error_mean",
    "error_std",
    "estimated_accuracy",
    "estimated_std",
    "holdout_accuracy",
)


# ------------------------------------------------------------------------------------------------
# Metric helpers


def per_event_log_loss(proba: F64, label_code: npt.NDArray[np.int32]) -> F64:
    """Log loss of each event: ``-log p[label]`` with rows renormalized and clipped as scikit-learn does.

    NaN where the row has no probabilities or the label is not a known class.

    Examples
    --------
    >>> per_event_log_loss(np.array([[0.25, 0.75], [0.5, 0.5]]), np.array([1, 0], dtype=np.int32)).round(4).tolist()
    [0.2877, 0.6931]
    """
    n, k = proba.shape
    ok = np.isfinite(proba).all(axis=1) & (label_code >= 0) & (label_code < k)
    out = np.full(n, np.nan)
    if not ok.any():
        return out
    p = np.clip(proba[ok], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    p = p / p.sum(axis=1, keepdims=True)
    out[ok] = -np.log(p[np.arange(len(p)), label_code[ok]])
    return out


def _auc_exact(score: F64, positive: npt.NDArray[np.bool_]) -> float:
    n1 = int(positive.sum())
    n0 = len(score) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = stats.rankdata(score)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_auc_binned(pos: npt.ArrayLike, neg: npt.ArrayLike) -> F64:
    """ROC AUC from histograms of the score of positive and negative events on shared ordered bins.

    Ties within a bin count one half, so it is exact when each bin holds one score value. Vectorized
    over leading axes; NaN where a class is empty.

    Examples
    --------
    >>> float(roc_auc_binned([0, 1, 3], [2, 1, 0]))
    0.9583333333333334
    """
    p = np.asarray(pos, dtype=np.float64)
    q = np.asarray(neg, dtype=np.float64)
    below = np.cumsum(q, axis=-1) - q
    n1, n0 = p.sum(axis=-1), q.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (p * (below + 0.5 * q)).sum(axis=-1) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _hanley_mcneil_se(auc: float, n1: float, n0: float) -> float:
    """Standard error of a ROC AUC of ``n1`` positives and ``n0`` negatives (Hanley & McNeil, 1982)."""
    a = min(max(auc, 1e-6), 1 - 1e-6)
    q1 = a / (2 - a)
    q2 = 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return float(np.sqrt(max(var, 0.0)))


def _pav(y: F64, w: F64) -> F64:
    """Weighted isotonic (non-decreasing) fit by pool-adjacent-violators."""
    vals: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(y.tolist(), w.tolist(), strict=True):
        vals.append(v)
        weights.append(wt)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = weights[-2] + weights[-1]
            merged = (vals[-2] * weights[-2] + vals[-1] * weights[-1]) / wsum if wsum > 0 else vals[-1]
            vals[-2:] = [merged]
            weights[-2:] = [wsum]
            sizes[-2:] = [sizes[-2] + sizes[-1]]
    return np.repeat(np.asarray(vals), sizes)


def calibrate(confidence: F64, correct: npt.NDArray[np.bool_], *, n_bins: int = 10) -> tuple[F64, F64]:
    """Map confidence -> probability of a correct prediction: equal-mass bins, monotone.

    Returns the interior bin edges and the probability of each bin (a confidence ``c`` is in bin
    ``searchsorted(edges, c, side="right")``). Bin rates are smoothed by half an event each way.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.5, 1.0, 20_000)
    >>> edges, prob = calibrate(conf, rng.uniform(size=conf.size) < conf, n_bins=5)
    >>> np.round(prob, 2).tolist()
    [0.55, 0.66, 0.75, 0.86, 0.95]
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if len(confidence) == 0:
        return np.zeros(0), np.full(1, np.nan)
    edges = np.unique(np.quantile(confidence, np.linspace(0, 1, n_bins + 1)[1:-1]))
    b = np.searchsorted(edges, confidence, side="right")
    n = np.bincount(b, minlength=len(edges) + 1).astype(np.float64)
    k = np.bincount(b, weights=correct.astype(np.float64), minlength=len(edges) + 1)
    return edges.astype(np.float64), _pav((k + 0.5) / (n + 1.0), n)


# ------------------------------------------------------------------------------------------------
# Reference


@dataclass(frozen=True)
class PerformanceReference:
    """Reference performance of a model, fitted by :func:`fit_performance` on labelled reference events.

    Metrics that do not apply to the task are NaN. ``*_std`` are per-event standard deviations (what
    the windowed z tests scale by). ``estimated_accuracy`` / ``estimated_std`` are the mean and std of
    the calibrated confidence on the hold-out part of the reference, ``holdout_accuracy`` the actual
    accuracy there (how far the estimate is from the truth on reference-like data).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> proba = rng.dirichlet([1, 1], size=2000)
    >>> label = (rng.uniform(size=2000) < proba[:, 1]).astype(np.int32)
    >>> batch = EventBatch.from_arrays(np.zeros((2000, 1)), proba=proba, prediction_code=proba.argmax(1),
    ...                                label_code=label)
    >>> ref = fit_performance(batch, Schema("m", numeric=("x",), prediction="categorical", classes=("a", "b")))
    >>> round(ref.accuracy, 3), round(ref.roc_auc, 3), PerformanceReference.from_arrays(*ref.to_arrays()) == ref
    (0.743, 0.832, True)
    """

    task: Task
    n_classes: int
    n: int
    accuracy: float
    log_loss: float
    log_loss_std: float
    n_log_loss: int
    roc_auc: float
    n_pos: int
    n_neg: int
    mae: float
    abs_error_std: float
    rmse: float
    sq_error_std: float
    error_mean: float
    error_std: float
    estimated_accuracy: float
    estimated_std: float
    holdout_accuracy: float
    calibration_edges: F64
    calibration_prob: F64

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PerformanceReference):
            return NotImplemented
        same = (self.task, self.n_classes) == (other.task, other.n_classes)
        scal = all(np.array_equal(getattr(self, k), getattr(other, k), equal_nan=True) for k in _SCALARS)
        arr = all(
            np.array_equal(getattr(self, k), getattr(other, k), equal_nan=True)
            for k in ("calibration_edges", "calibration_prob")
        )
        return same and scal and arr

    __hash__ = None  # type: ignore[assignment]

    @property
    def metrics(self) -> dict[str, float]:
        """The reference values of the metrics that apply (as in ``Reference.performance``)."""
        keys = ("accuracy", "log_loss", "roc_auc") if self.task == "classification" else ("mae", "rmse")
        out = {k: float(getattr(self, k)) for k in keys if np.isfinite(getattr(self, k))}
        if np.isfinite(self.estimated_accuracy):
            out["estimated_accuracy"] = self.estimated_accuracy
        return out

    def calibrated(self, confidence: F64) -> F64:
        """Probability that each prediction is right, from its confidence (NaN stays NaN)."""
        p = self.calibration_prob[np.searchsorted(self.calibration_edges, confidence, side="right")]
        return np.where(np.isfinite(confidence), p, np.nan)

    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON metadata for the baseline store (see :meth:`from_arrays`)."""
        meta: dict[str, Any] = {"format": FORMAT, "task": self.task, "n_classes": self.n_classes}
        meta.update({k: getattr(self, k) for k in _SCALARS})
        meta = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in meta.items()}
        arrays = {"calibration_edges": self.calibration_edges.copy(), "calibration_prob": self.calibration_prob.copy()}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]) -> PerformanceReference:
        """Rebuild a reference written by :meth:`to_arrays`."""
        if meta.get("format") != FORMAT:
            raise SnapshotError(f"performance reference format {meta.get('format')!r} is not supported")
        try:
            ints = {"n", "n_log_loss", "n_pos", "n_neg"}
            scal = {k: (int(meta[k]) if k in ints else float("nan" if meta[k] is None else meta[k])) for k in _SCALARS}
            return cls(
                task=meta["task"],
                n_classes=int(meta["n_classes"]),
                calibration_edges=np.asarray(arrays["calibration_edges"], dtype=np.float64),
                calibration_prob=np.asarray(arrays["calibration_prob"], dtype=np.float64),
                **scal,  # type: ignore[arg-type]
            )
        except KeyError as e:
            raise SnapshotError(f"performance reference is missing {e.args[0]!r}") from None


def fit_performance(
    batch: EventBatch,
    schema: Schema,
    *,
    n_bins: int = 10,
    calibration_fraction: float = 0.5,
    seed: int = 0,
) -> PerformanceReference:
    """Reference performance of the labelled events of ``batch``.

    Parameters
    ----------
    batch
        Reference events with predictions and labels (unlabelled rows are ignored).
    schema
        ``prediction="categorical"`` (classification) or ``"numeric"`` (regression).
    n_bins
        Confidence bins of the CBPE calibration.
    calibration_fraction
        Share of the labelled events the calibration is fitted on; the estimate is checked on the rest
        (all events when 1).
    seed
        Seed of the calibration split.
    """
    if schema.prediction not in ("categorical", "numeric"):
        raise ValueError("performance needs a schema with prediction='categorical' or 'numeric'")
    if not 0 < calibration_fraction <= 1:
        raise ValueError(f"calibration_fraction must be in (0, 1], got {calibration_fraction}")
    nan = float("nan")
    out: dict[str, Any] = dict.fromkeys(_SCALARS, nan)
    out.update(n=0, n_log_loss=0, n_pos=0, n_neg=0)
    edges, prob = np.zeros(0), np.full(1, np.nan)
    k = len(schema.classes)
    if schema.prediction == "categorical":
        task: Task = "classification"
        ok = (batch.label_code != MISSING) & (batch.prediction_code != MISSING)
        if not ok.any():
            raise ValueError("no labelled reference events to fit the performance on")
        correct = batch.label_code[ok] == batch.prediction_code[ok]
        out["n"] = int(ok.sum())
        out["accuracy"] = float(correct.mean())
        proba = batch.proba[ok]
        lab = batch.label_code[ok]
        if proba.shape[1]:
            ll = per_event_log_loss(proba, lab)
            good = np.isfinite(ll)
            if good.any():
                out.update(
                    log_loss=float(ll[good].mean()), log_loss_std=float(ll[good].std()), n_log_loss=int(good.sum())
                )
            if proba.shape[1] == 2:
                auc_ok = np.isfinite(proba).all(axis=1) & (lab >= 0) & (lab < 2)
                pos = lab[auc_ok] == 1
                out.update(roc_auc=_auc_exact(proba[auc_ok, 1], pos), n_pos=int(pos.sum()), n_neg=int((~pos).sum()))
        conf = batch.confidence[ok]
        has = np.isfinite(conf)
        if has.any():
            idx = np.flatnonzero(has)
            rng = np.random.default_rng(seed)
            order = rng.permutation(idx)
            n_fit = max(1, round(calibration_fraction * len(order)))
            fit, check = order[:n_fit], order[n_fit:]
            if len(check) == 0:
                check = fit
            edges, prob = calibrate(conf[fit], correct[fit], n_bins=n_bins)
            cal = prob[np.searchsorted(edges, conf[check], side="right")]
            out.update(
                estimated_accuracy=float(cal.mean()),
                estimated_std=float(cal.std()),
                holdout_accuracy=float(correct[check].mean()),
            )
    else:
        task = "regression"
        k = 0
        ok = np.isfinite(batch.label) & np.isfinite(batch.prediction)
        if not ok.any():
            raise ValueError("no labelled reference events to fit the performance on")
        err = batch.prediction[ok] - batch.label[ok]
        out.update(
            n=int(ok.sum()),
            mae=float(np.abs(err).mean()),
            abs_error_std=float(np.abs(err).std()),
            rmse=float(np.sqrt(np.mean(err**2))),
            sq_error_std=float((err**2).std()),
            error_mean=float(err.mean()),
            error_std=float(err.std()),
        )
    return PerformanceReference(task=task, n_classes=k, calibration_edges=edges, calibration_prob=prob, **out)


# ------------------------------------------------------------------------------------------------
# Windows of pane sums


@dataclass(frozen=True)
class _Closes:
    event_index: I64
    pane: I64
    sums: F64  # (e, n_stats)
    hist: I64  # (e, n_hist)
    n_events: I64
    start_ts: I64
    end_ts: I64
    start_seq: I64

    def __len__(self) -> int:
        return len(self.pane)


class _SumWindow:
    """Count window of per-event float sums and integer histogram cells, as a ring of panes."""

    def __init__(self, n_stats: int, n_hist: int, *, size: int, step: int) -> None:
        self.n_stats, self.n_hist, self.size, self.step = n_stats, n_hist, size, step
        self.n_panes = size // step
        self._reset()

    def _reset(self) -> None:
        p = self.n_panes
        self.ring = np.zeros((p, self.n_stats))
        self.ring_hist = np.zeros((p, self.n_hist), dtype=np.int64)
        # per pane: events, min ts, max ts, first seq
        self.ring_meta = np.zeros((p, 4), dtype=np.int64)
        self.open = np.zeros(self.n_stats)
        self.open_hist = np.zeros(self.n_hist, dtype=np.int64)
        self.open_meta = np.array([0, np.iinfo(np.int64).max, np.iinfo(np.int64).min, -1], dtype=np.int64)
        self.counters = np.zeros(2, dtype=np.int64)  # closed panes, events seen

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        keys = ("ring", "ring_hist", "ring_meta", "open", "open_hist", "open_meta", "counters")
        return {k: getattr(self, k).copy() for k in keys}

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        for k, v in self.snapshot().items():
            if k not in state or np.shape(state[k]) != v.shape:
                raise SnapshotError(f"window snapshot has no {k!r} of shape {v.shape}")
        for k, v in self.snapshot().items():
            setattr(self, k, np.array(state[k], dtype=v.dtype))

    def update(self, vals: F64, hist_cells: I64, ts: I64) -> _Closes:
        """``vals`` (m, n_stats) per-event values; ``hist_cells`` (m,) cell or ``n_hist`` for none."""
        m = len(ts)
        rows: list[tuple[Any, ...]] = []
        i = 0
        seen = int(self.counters[1])
        while i < m:
            take = min(self.step - int(self.open_meta[0]), m - i)
            seg = slice(i, i + take)
            self.open += vals[seg].sum(axis=0)
            self.open_hist += np.bincount(hist_cells[seg], minlength=self.n_hist + 1)[: self.n_hist]
            if self.open_meta[3] < 0:
                self.open_meta[3] = seen + i
            self.open_meta[0] += take
            self.open_meta[1] = min(int(self.open_meta[1]), int(ts[seg].min()))
            self.open_meta[2] = max(int(self.open_meta[2]), int(ts[seg].max()))
            i += take
            if self.open_meta[0] == self.step:
                row = self._close(i - 1)
                if row is not None:
                    rows.append(row)
        self.counters[1] += m
        if not rows:
            z = np.zeros(0, dtype=np.int64)
            return _Closes(z, z, np.zeros((0, self.n_stats)), np.zeros((0, self.n_hist), np.int64), z, z, z, z)
        cols = list(zip(*rows, strict=True))
        return _Closes(
            event_index=np.asarray(cols[0], dtype=np.int64),
            pane=np.asarray(cols[1], dtype=np.int64),
            sums=np.stack(cols[2]),
            hist=np.stack(cols[3]),
            n_events=np.asarray(cols[4], dtype=np.int64),
            start_ts=np.asarray(cols[5], dtype=np.int64),
            end_ts=np.asarray(cols[6], dtype=np.int64),
            start_seq=np.asarray(cols[7], dtype=np.int64),
        )

    def _close(self, event_index: int) -> tuple[Any, ...] | None:
        slot = int(self.counters[0]) % self.n_panes
        self.ring[slot] = self.open
        self.ring_hist[slot] = self.open_hist
        self.ring_meta[slot] = self.open_meta
        self.open = np.zeros(self.n_stats)
        self.open_hist = np.zeros(self.n_hist, dtype=np.int64)
        self.open_meta = np.array([0, np.iinfo(np.int64).max, np.iinfo(np.int64).min, -1], dtype=np.int64)
        self.counters[0] += 1
        closed = int(self.counters[0])
        if closed < self.n_panes:
            return None
        meta = self.ring_meta
        return (
            event_index,
            closed - 1,
            self.ring.sum(axis=0),
            self.ring_hist.sum(axis=0),
            int(meta[:, 0].sum()),
            int(meta[:, 1].min()),
            int(meta[:, 2].max()),
            int(meta[:, 3].min()),
        )


# ------------------------------------------------------------------------------------------------
# Monitor

# Columns of the labelled pane sums.
_N_ACC, _CORRECT, _N_LL, _LL, _N_REG, _ABS, _SQ = range(7)
# Columns of the estimate pane sums.
_N_EST, _P_EST = range(2)


class PerformanceMonitor:
    """Windowed performance of labelled events against a :class:`PerformanceReference`, plus CBPE.

    Parameters
    ----------
    reference
        The stored reference performance.
    size, step
        Count windows (labelled events for actual metrics, all events with a confidence for the
        estimate), evaluated at each pane of ``step`` events.
    min_events
        A metric is not tested on fewer contributing events in the window (AUC: per class).
    false_alarm_rate
        Expected false alarms per window length of a stable stream, over the metrics together
        (the estimate has a budget of its own).
    tolerance
        Absolute drop of accuracy, ROC AUC and estimated accuracy that is tolerated (effect gate).
    relative_tolerance
        Relative rise of log loss, MAE and RMSE that is tolerated.
    log_loss_tolerance
        Smallest rise of log loss (nats per event) that is tolerated: the tolerated rise is
        ``max(relative_tolerance * reference, log_loss_tolerance)``. Guards near-perfect references.
    error_tolerance
        The same floor for MAE and RMSE, in the units of the target: the tolerated rise is
        ``max(relative_tolerance * reference, error_tolerance)``. 0 (no floor) by default: no value fits
        every target's scale.
    critical_factor
        An incident is ``critical`` when the current value is beyond ``critical_factor`` tolerances.
    auc_bins
        Bins of the positive-class score for the windowed ROC AUC.
    resolve_after, cooldown
        Evaluations (pane closes); default one window each.

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> schema = Schema("m", numeric=("x",), prediction="categorical", classes=("a", "b"))
    >>> def events(n, flip=0.0):
    ...     proba = rng.dirichlet([2, 2], size=n)
    ...     label = (rng.uniform(size=n) < proba[:, 1]).astype(np.int32)
    ...     label = np.where(rng.uniform(size=n) < flip, 1 - label, label)
    ...     return EventBatch.from_arrays(np.zeros((n, 1)), proba=proba, prediction_code=proba.argmax(1),
    ...                                   label_code=label)
    >>> mon = PerformanceMonitor(fit_performance(events(20_000), schema), size=1000, step=250)
    >>> mon.update(events(3000), seq=0)
    []
    >>> for a in mon.update(events(3000, flip=0.3), seq=3000):  # the concept changes, inputs do not
    ...     print(a.statistic, a.status, a.severity, a.event_index, a.evidence["estimated"])
    log_loss open warning 499 False
    roc_auc open critical 499 False
    accuracy open warning 749 False
    accuracy update critical 999 False
    """

    def __init__(
        self,
        reference: PerformanceReference,
        *,
        size: int = 2000,
        step: int = 200,
        min_events: int = 100,
        false_alarm_rate: float = 1e-3,
        tolerance: float = 0.02,
        relative_tolerance: float = 0.05,
        log_loss_tolerance: float = LOG_LOSS_TOLERANCE,
        error_tolerance: float = 0.0,
        critical_factor: float = 5.0,
        auc_bins: int = 200,
        resolve_after: int | None = None,
        cooldown: int | None = None,
    ) -> None:
        if step <= 0 or size <= 0 or size % step:
            raise ValueError(f"size ({size}) must be a positive multiple of step ({step})")
        if not 0 < false_alarm_rate < 1:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
        if min(tolerance, relative_tolerance, log_loss_tolerance, error_tolerance) < 0 or critical_factor < 1:
            raise ValueError(
                "need tolerance, relative_tolerance, log_loss_tolerance and error_tolerance >= 0 and "
                "critical_factor >= 1"
            )
        if auc_bins < 2:
            raise ValueError(f"auc_bins must be >= 2, got {auc_bins}")
        self.reference = reference
        self.size = size
        self.step = step
        self.min_events = min_events
        self.false_alarm_rate = false_alarm_rate
        self.tolerance = tolerance
        self.relative_tolerance = relative_tolerance
        self.log_loss_tolerance = log_loss_tolerance
        self.error_tolerance = error_tolerance
        self.critical_factor = critical_factor
        self.auc_bins = auc_bins
        panes = size // step
        self.resolve_after = panes if resolve_after is None else resolve_after
        self.cooldown = panes if cooldown is None else cooldown
        ref = reference
        if ref.task == "classification":
            names = ["accuracy"]
            if np.isfinite(ref.log_loss):
                names.append("log_loss")
            if np.isfinite(ref.roc_auc):
                names.append("roc_auc")
        else:
            names = ["mae", "rmse"]
        self.metric_names: tuple[str, ...] = tuple(names)
        self.alpha = false_alarm_rate / (len(names) * panes)
        self.alpha_estimated = false_alarm_rate / panes
        self._z = float(special.ndtri(1 - self.alpha))
        self._z_est = float(special.ndtri(1 - self.alpha_estimated))
        self._has_estimate = bool(np.isfinite(ref.estimated_accuracy))
        self._labelled = _SumWindow(7, 2 * auc_bins, size=size, step=step)
        self._estimated = _SumWindow(2, 0, size=size, step=step)
        self._tracker = IncidentTracker(len(names), resolve_after=self.resolve_after, cooldown=self.cooldown)
        self._tracker_est = IncidentTracker(1, resolve_after=self.resolve_after, cooldown=self.cooldown)
        self._reset()

    def _reset(self) -> None:
        self._labelled._reset()
        self._estimated._reset()
        self._tracker._reset()
        self._tracker_est._reset()
        self._latest = np.full(len(self.metric_names) + 2, np.nan)  # metrics, estimated, labelled events

    # -- metrics ---------------------------------------------------------------------------------
    @property
    def metrics(self) -> dict[str, float]:
        """Latest windowed values for the metrics registry: each metric (plus ``error_rate`` for
        classifiers), ``estimated_accuracy`` and ``labelled_events``; NaN before the first full window."""
        keys = (*self.metric_names, "estimated_accuracy", "labelled_events")
        out = {k: float(v) for k, v in zip(keys, self._latest, strict=True)}
        if "accuracy" in out:
            out["error_rate"] = 1.0 - out["accuracy"]
        return out

    # -- per-event values ------------------------------------------------------------------------
    def _rows(self, joined: JoinedBatch) -> tuple[F64, I64, npt.NDArray[np.bool_]]:
        n = len(joined)
        vals = np.zeros((n, 7))
        cells = np.full(n, 2 * self.auc_bins, dtype=np.int64)
        if self.reference.task == "classification":
            keep = (joined.label_code != MISSING) & (joined.prediction_code != MISSING)
            vals[:, _N_ACC] = 1.0
            vals[:, _CORRECT] = joined.label_code == joined.prediction_code
            if joined.proba.shape[1] and "log_loss" in self.metric_names:
                ll = per_event_log_loss(joined.proba, joined.label_code)
                good = np.isfinite(ll)
                vals[:, _N_LL] = good
                vals[:, _LL] = np.where(good, ll, 0.0)
            if joined.proba.shape[1] == 2 and "roc_auc" in self.metric_names:
                ok = np.isfinite(joined.proba).all(axis=1) & (joined.label_code >= 0) & (joined.label_code < 2)
                b = np.clip((np.nan_to_num(joined.proba[:, 1]) * self.auc_bins).astype(np.int64), 0, self.auc_bins - 1)
                cells = np.where(ok, joined.label_code.astype(np.int64) * self.auc_bins + b, cells)
        else:
            err = joined.prediction - joined.label
            keep = np.isfinite(err)
            vals[:, _N_REG] = 1.0
            vals[:, _ABS] = np.abs(err)
            vals[:, _SQ] = err**2
        return vals, cells, keep

    # -- updates ---------------------------------------------------------------------------------
    def update(self, batch: EventBatch, *, seq: int = 0) -> list[AlertDecision]:
        """:class:`~detector.base.Detector` entry: the estimate on every event, actual metrics on the
        events labelled inline (label lag 0). Records are in stream order; ``event_index`` is the row in
        ``batch``."""
        out = self.update_estimated(batch, seq=seq)
        if self.reference.task == "classification":
            inline = np.flatnonzero(batch.label_code != MISSING)
        else:
            inline = np.flatnonzero(np.isfinite(batch.label))
        if len(inline):
            b = batch.take(inline)
            joined = JoinedBatch(
                b.event_id, b.ts, b.ts, np.zeros(len(b), np.int64), b.prediction, b.prediction_code, b.proba,
                b.label, b.label_code,
            )  # fmt: skip
            labelled = [replace(a, event_index=int(inline[a.event_index])) for a in self.update_joined(joined, seq=seq)]
            out = sorted(out + labelled, key=lambda a: a.event_index)
        return out

    def update_joined(self, joined: JoinedBatch, *, seq: int = 0) -> list[AlertDecision]:
        """Add labelled (joined) events; return the ``performance_drop`` records of the panes that closed.

        ``event_index`` of a record is its row in ``joined`` (rows without a usable label are skipped
        but keep their index).
        """
        del seq
        vals, cells, keep = self._rows(joined)
        idx = np.flatnonzero(keep)
        closes = self._labelled.update(vals[idx], cells[idx], joined.ts[idx])
        return self._decide_labelled(closes, idx)

    def update_estimated(self, batch: EventBatch, *, seq: int = 0) -> list[AlertDecision]:
        """Add unlabelled events (their confidences); return the estimated ``performance_drop`` records."""
        del seq
        if not self._has_estimate:
            return []
        p = self.reference.calibrated(batch.confidence)
        idx = np.flatnonzero(np.isfinite(p))
        vals = np.stack([np.ones(len(idx)), p[idx]], axis=1)
        closes = self._estimated.update(vals, np.zeros(len(idx), dtype=np.int64), batch.ts[idx])
        return self._decide_estimated(closes, idx)

    # -- decisions -------------------------------------------------------------------------------
    def _tests(self, s: F64, hist: I64) -> tuple[F64, F64, F64, F64, F64]:
        """Per metric: current value, null (threshold), p-value, confidence bound, critical value."""
        ref, tol, rt, cf = self.reference, self.tolerance, self.relative_tolerance, self.critical_factor
        m = len(self.metric_names)
        cur, null, pv, bound, crit = (np.full(m, np.nan) for _ in range(5))
        for j, name in enumerate(self.metric_names):
            if name == "accuracy":
                n, k = s[_N_ACC], s[_CORRECT]
                null[j], crit[j] = ref.accuracy - tol, ref.accuracy - cf * tol
                if n >= self.min_events:
                    cur[j] = k / n
                    pv[j] = special.bdtr(round(k), round(n), min(max(null[j], 0.0), 1.0))
                    bound[j] = 1.0 if k >= n else special.betaincinv(k + 1, n - k, 1 - self.alpha)
            elif name == "roc_auc":
                neg, pos = hist[: self.auc_bins], hist[self.auc_bins :]
                n1, n0 = float(pos.sum()), float(neg.sum())
                null[j], crit[j] = ref.roc_auc - tol, ref.roc_auc - cf * tol
                if min(n1, n0) >= self.min_events:
                    cur[j] = float(roc_auc_binned(pos, neg))
                    se0 = max(_hanley_mcneil_se(float(null[j]), n1, n0), 1e-12)
                    pv[j] = special.ndtr((cur[j] - null[j]) / se0)
                    bound[j] = min(cur[j] + self._z * _hanley_mcneil_se(float(cur[j]), n1, n0), 1.0)
            else:
                # Loss-type metrics: higher is worse; z test of the window mean vs the tolerated reference,
                # ``ref + max(ref * rel_tol, floor)`` (critical: ``critical_factor`` such rises).
                if name == "log_loss":
                    n, total, r, sd = s[_N_LL], s[_LL], ref.log_loss, ref.log_loss_std
                    rise = max(r * rt, self.log_loss_tolerance)
                    null_mean, crit_mean = r + rise, r + cf * rise
                elif name == "mae":
                    n, total, r, sd = s[_N_REG], s[_ABS], ref.mae, ref.abs_error_std
                    rise = max(r * rt, self.error_tolerance)
                    null_mean, crit_mean = r + rise, r + cf * rise
                else:  # rmse, tested on the mean squared error
                    n, total, r, sd = s[_N_REG], s[_SQ], ref.rmse**2, ref.sq_error_std
                    rise = max(ref.rmse * rt, self.error_tolerance)
                    null_mean, crit_mean = (ref.rmse + rise) ** 2, (ref.rmse + cf * rise) ** 2
                root = name == "rmse"
                null[j] = np.sqrt(null_mean) if root else null_mean
                crit[j] = -(np.sqrt(crit_mean) if root else crit_mean)  # negated: "below" is worse below
                if n >= self.min_events:
                    mean = total / n
                    se = max(sd, 1e-12) / np.sqrt(n)
                    pv[j] = special.ndtr(-(mean - null_mean) / se)
                    lo = max(mean - self._z * se, 0.0)
                    cur[j] = np.sqrt(mean) if root else mean
                    bound[j] = np.sqrt(lo) if root else lo
        return cur, null, pv, bound, crit

    def _decide_labelled(self, c: _Closes, idx: I64) -> list[AlertDecision]:
        out: list[AlertDecision] = []
        lower_is_worse = np.array([n in ("accuracy", "roc_auc") for n in self.metric_names])
        for e in range(len(c)):
            cur, null, pv, bound, crit = self._tests(c.sums[e], c.hist[e])
            self._latest[: len(cur)] = cur
            self._latest[-1] = c.n_events[e]
            tested = np.isfinite(pv)
            fire = tested & (pv < self.alpha)
            signed = np.where(lower_is_worse, cur, -cur)
            signed_null = np.where(lower_is_worse, null, -null)
            calm = ~fire & (~tested | (signed >= signed_null))
            critical = fire & (signed < crit)
            for j, status, sev in self._tracker.step(fire, calm, critical, pane=int(c.pane[e])):
                out.append(
                    self._decision(
                        c, e, int(idx[c.event_index[e]]), self.metric_names[j], status, sev,
                        float(cur[j]), float(null[j]), float(pv[j]), float(bound[j]), estimated=False,
                        incident=int(self._tracker.incident[j]),
                    )
                )  # fmt: skip
        return out

    def _decide_estimated(self, c: _Closes, idx: I64) -> list[AlertDecision]:
        out: list[AlertDecision] = []
        ref = self.reference
        for e in range(len(c)):
            n = float(c.n_events[e])
            if n == 0:
                continue
            cur = c.sums[e, _P_EST] / n
            self._latest[-2] = cur
            null = ref.estimated_accuracy - self.tolerance
            se = max(ref.estimated_std, 1e-12) / np.sqrt(n)
            pv = float(special.ndtr((cur - null) / se))
            fire = np.array([n >= self.min_events and pv < self.alpha_estimated])
            calm = np.array([not fire[0] and cur >= null])
            critical = np.array([cur < ref.estimated_accuracy - self.critical_factor * self.tolerance])
            for _, status, sev in self._tracker_est.step(fire, calm, critical & fire, pane=int(c.pane[e])):
                out.append(
                    self._decision(
                        c, e, int(idx[c.event_index[e]]), "accuracy", status, sev, float(cur), float(null), pv,
                        float(min(cur + self._z_est * se, 1.0)), estimated=True,
                        incident=int(self._tracker_est.incident[0]),
                    )
                )  # fmt: skip
        return out

    def _decision(
        self,
        c: _Closes,
        e: int,
        event_index: int,
        metric: str,
        status: Status,
        sev: Severity,
        cur: float,
        null: float,
        pv: float,
        bound: float,
        *,
        estimated: bool,
        incident: int,
    ) -> AlertDecision:
        ref_value = self.reference.estimated_accuracy if estimated else float(getattr(self.reference, metric))
        what = f"estimated {metric} (CBPE)" if estimated else metric
        side = "upper" if estimated or metric in ("accuracy", "roc_auc") else "lower"
        n = int(c.n_events[e])
        alpha = self.alpha_estimated if estimated else self.alpha
        if status == "resolved":
            message = f"{what} is back within tolerance of its baseline: {cur:.4f} (baseline {ref_value:.4f})"
        else:
            message = (
                f"{what} dropped from its baseline {ref_value:.4f} to {cur:.4f} over {n} "
                f"{'events' if estimated else 'labelled events'} ({side} {1 - alpha:.4%} bound {bound:.4f} "
                f"beyond the tolerated {null:.4f}; p={pv:.2e})"
            )
        return AlertDecision(
            kind="performance_drop",
            status=status,
            severity=sev,
            columns=(),
            statistic=metric,
            value=cur,
            threshold=null,
            p_value=pv,
            incident=incident,
            **(window_fields(c, e) | {"event_index": event_index}),
            message=message,
            evidence={
                "metric": metric,
                "reference": ref_value,
                "current": cur,
                "confidence_bound": bound,
                "bound_side": side,
                "tolerated": null,
                "estimated": estimated,
                "labelled_events": 0 if estimated else n,
                "alpha": alpha,
            },
        )

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays (both windows, incident state, latest values)."""
        out = {f"labelled.{k}": v for k, v in self._labelled.snapshot().items()}
        out.update({f"estimated.{k}": v for k, v in self._estimated.snapshot().items()})
        out.update({f"incidents.{k}": v for k, v in self._tracker.snapshot().items()})
        out.update({f"incidents_est.{k}": v for k, v in self._tracker_est.snapshot().items()})
        out["latest"] = self._latest.copy()
        return out

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot` of a monitor built with the same reference and parameters."""
        parts: dict[str, dict[str, npt.NDArray[Any]]] = {
            "labelled": {},
            "estimated": {},
            "incidents": {},
            "incidents_est": {},
        }
        for key, value in state.items():
            prefix, _, name = key.partition(".")
            if prefix in parts:
                parts[prefix][name] = np.asarray(value)
        if "latest" not in state or np.shape(state["latest"]) != self._latest.shape:
            raise SnapshotError("performance snapshot has no 'latest' of the right shape")
        self._labelled.restore(parts["labelled"])
        self._estimated.restore(parts["estimated"])
        self._tracker.restore(parts["incidents"])
        self._tracker_est.restore(parts["incidents_est"])
        self._latest = np.array(state["latest"], dtype=np.float64)
