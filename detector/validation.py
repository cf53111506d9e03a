"""Input validation: per-event violations of the schema and the baseline, and alerts when their rates rise.

:meth:`InputValidator.check` classifies every value of a batch against the reference, vectorized:

* ``"missing"``: a numeric feature is NaN or a categorical one is :data:`~detector.schema.MISSING`;
* ``"out_of_range"``: a numeric value outside ``[min - margin * (max - min), max + margin * (max - min)]``
  of the reference's observed range;
* ``"unseen_category"``: a categorical value is :data:`~detector.schema.UNSEEN`;
* ``"non_finite"``: a numeric value is ``±inf`` (the decoder turns overflowing numbers into NaN and
  reports them instead, see below).

The decoder (``streams.decode``) reports what only it can see as ``(reason, feature) -> count`` per
chunk: ``"wrong_type"``, ``"non_finite"``, ``"unexpected"`` (a feature the schema does not know) and
``("misaligned", "$probabilities")``. :meth:`InputValidator.update` takes them as ``extra``. The decoder
turns a wrong-typed or overflowing *numeric* value into NaN; so that it is not also counted as
``"missing"``, that many of the feature's NaNs in the batch are recounted under the decoder's reason.
(A wrong-typed *categorical* value that becomes ``UNSEEN`` is counted both as ``"wrong_type"`` and as
``"unseen_category"``: the batch does not say which ``UNSEEN`` codes it was.)

Per ``(feature, reason)`` the window rate is tested against the reference rate (the reference's own
missing rate for ``"missing"``, zero for the other reasons) with a one-sided binomial test; the
reference rate is floored at ``tolerance`` so that a stray event cannot be significant. A pair *fires*
when the test is significant at the budgeted ``alpha = false_alarm_rate / (tests x panes per window)``
**and** the rate exceeds the reference rate by ``min_increase``. Incidents follow the house rules of
:class:`~detector.decision.DriftPolicy` (see :class:`IncidentTracker`).

Model-level problems (no active baseline for a ``model_id``, oversize or undecodable messages) never
reach a validator: the decoder turns them into dead letters, counted by the stream layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from detector.decision import AlertDecision, IncidentTracker, Severity, Status, window_fields
from detector.errors import SchemaMismatchError, SnapshotError
from detector.reference import Reference
from detector.schema import MISSING, UNSEEN, EventBatch
from detector.window import PaneWindow, WindowCloses

__all__ = ["CHECK_REASONS", "REASONS", "IncidentTracker", "InputValidator", "ValidationReport", "reasons_of"]

#: Every reason a validator counts, in cell order.
REASONS: Final = ("missing", "out_of_range", "unseen_category", "non_finite", "wrong_type", "unexpected", "misaligned")
#: Reasons :meth:`InputValidator.check` finds in a batch; per-event code ``k + 1`` is ``CHECK_REASONS[k]``.
CHECK_REASONS: Final = ("missing", "out_of_range", "unseen_category", "non_finite")
#: Pseudo features of the model outputs, named as the decoder names them.
OUTPUT_KEYS: Final = ("$prediction", "$label", "$probabilities")
#: Column of the unexpected features beyond the named slots.
OTHER_UNEXPECTED: Final = "$other_unexpected"

_R = {r: k for k, r in enumerate(REASONS)}
_SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


# ------------------------------------------------------------------------------------------------
# Incident state machine shared by the validation and performance detectors


# ------------------------------------------------------------------------------------------------
# Per-event checks


@dataclass(frozen=True)
class ValidationReport:
    """Per-event violations of one batch, feature by feature.

    Attributes
    ----------
    features
        The schema's features, numeric first, in the column order of :attr:`codes`.
    codes
        ``(n_events, n_features)`` int8: 0 if the value is valid, else ``k + 1`` for reason
        :data:`CHECK_REASONS` ``[k]``.

    Examples
    --------
    >>> from detector.reference import fit_reference
    >>> from detector.schema import Schema
    >>> ref = fit_reference(EventBatch.from_arrays(np.arange(10.0)), Schema("m", numeric=("x",)))
    >>> rep = InputValidator(ref).check(EventBatch.from_arrays([[5.0], [np.nan], [1e3]]))
    >>> rep.codes[:, 0].tolist(), rep.counts
    ([0, 1, 2], {('missing', 'x'): 1, ('out_of_range', 'x'): 1})
    """

    features: tuple[str, ...]
    codes: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def mask(self, reason: str) -> npt.NDArray[np.bool_]:
        """``(n_events, n_features)`` bool: which values have ``reason``."""
        out: npt.NDArray[np.bool_] = self.codes == CHECK_REASONS.index(reason) + 1
        return out

    @property
    def invalid(self) -> npt.NDArray[np.bool_]:
        """``(n_events,)`` bool: events with at least one violation."""
        return np.asarray((self.codes != 0).any(axis=1))

    @property
    def counts(self) -> dict[tuple[str, str], int]:
        """``(reason, feature) -> count`` of the non-zero counts, as the decoder reports its own."""
        out: dict[tuple[str, str], int] = {}
        for k, reason in enumerate(CHECK_REASONS):
            per_feature = np.count_nonzero(self.codes == k + 1, axis=0)
            for j in np.flatnonzero(per_feature):
                out[reason, self.features[j]] = int(per_feature[j])
        return out


def _compact(rows: npt.NDArray[np.intp], cells: npt.NDArray[np.int64], n: int, sink: int) -> npt.NDArray[np.int64]:
    """Per-event cells from the ``(event row, cell)`` pairs of the violations, padded with ``sink``.

    Violations are rare, so the window counts one or two cells per event instead of one per
    feature: the counts it keeps are identical.
    """
    per_row = np.bincount(rows, minlength=n)
    width = max(int(per_row.max(initial=0)), 1)
    out = np.full((n, width), sink, dtype=np.int64)
    if len(rows):
        order = np.argsort(rows, kind="stable")
        r = rows[order]
        out[r, np.arange(len(r)) - np.repeat(np.cumsum(per_row) - per_row, per_row)] = cells[order]
    return out


class InputValidator:
    """Per-event input validation against a baseline, with windowed ``input_violation`` alerts.

    Parameters
    ----------
    reference
        The model's baseline: its schema, per-feature observed ranges and missing counts.
    margin
        Out-of-range margin as a fraction of the reference range ``max - min``.
    window, size, step, min_events
        Sliding window of the violation counts (see :class:`~detector.window.PaneWindow`).
    false_alarm_rate
        Expected false alarms per window length of a stable stream, over all tests together.
    tolerance
        Floor of the reference rate under test, so that a rare stray violation is never significant.
    min_increase
        Effect gate: a test fires only if its rate exceeds the reference rate by this much (absolute).
    critical_increase
        Rate increase at which an incident is ``critical``.
    unexpected_slots
        Unexpected feature names tracked by name (first come, first served); the rest are counted
        together under :data:`OTHER_UNEXPECTED`.
    resolve_after, cooldown
        Evaluations (pane closes); default one window each.

    Examples
    --------
    >>> from detector.reference import fit_reference
    >>> from detector.schema import Schema
    >>> rng = np.random.default_rng(3)
    >>> ref = fit_reference(EventBatch.from_arrays(rng.normal(size=(5000, 2))), Schema("m", numeric=("a", "b")))
    >>> val = InputValidator(ref, size=1000, step=250)
    >>> x = rng.normal(size=(4000, 2))
    >>> x[2000:, 1] = np.nan  # "b" suddenly arrives null
    >>> for d in val.update(EventBatch.from_arrays(x), seq=0):
    ...     print(d.kind, d.status, d.severity, d.columns, d.evidence["reason"], d.event_index)
    input_violation open critical ('b',) missing 2249
    """

    def __init__(
        self,
        reference: Reference,
        *,
        margin: float = 0.1,
        window: Literal["count", "time"] = "count",
        size: int = 2000,
        step: int = 200,
        min_events: int = 100,
        false_alarm_rate: float = 1e-3,
        tolerance: float = 1e-3,
        min_increase: float = 0.01,
        critical_increase: float = 0.1,
        unexpected_slots: int = 8,
        resolve_after: int | None = None,
        cooldown: int | None = None,
    ) -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not 0 < false_alarm_rate < 1:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
        if not 0 < min_increase <= critical_increase:
            raise ValueError("need 0 < min_increase <= critical_increase")
        if unexpected_slots < 0:
            raise ValueError(f"unexpected_slots must be >= 0, got {unexpected_slots}")
        self.reference = reference
        self.margin = margin
        self.window = window
        self.size = size
        self.step = step
        self.min_events = min_events
        self.false_alarm_rate = false_alarm_rate
        self.tolerance = tolerance
        self.min_increase = min_increase
        self.critical_increase = critical_increase
        self.unexpected_slots = unexpected_slots
        panes = size // step if size > 0 and step > 0 else 1
        self.resolve_after = panes if resolve_after is None else resolve_after
        self.cooldown = panes if cooldown is None else cooldown

        schema = reference.schema
        self._n_num = len(schema.numeric)
        self._n_cat = len(schema.categorical)
        self.features: tuple[str, ...] = schema.numeric + schema.categorical
        self._feature_index = {f: j for j, f in enumerate(self.features)}
        n_feat = len(self.features)
        n_rows = n_feat + len(OUTPUT_KEYS) + unexpected_slots + 1
        self._n_rows = n_rows
        self._first_slot = n_feat + len(OUTPUT_KEYS)
        n_r = len(REASONS)
        self._sink = n_rows * n_r
        # Reference range and rates, features in validator order (reference order starts with them).
        lo = reference.num_min[: self._n_num].astype(np.float64)
        hi = reference.num_max[: self._n_num].astype(np.float64)
        span = hi - lo
        self._lo = np.where(np.isfinite(lo), lo - margin * span, -np.inf)
        self._hi = np.where(np.isfinite(hi), hi + margin * span, np.inf)
        ref_rate = np.zeros((n_rows, n_r))
        n_ref = max(reference.n_events, 1)
        ref_rate[: self._n_num, _R["missing"]] = reference.num_missing[: self._n_num] / n_ref
        ref_rate[self._n_num : n_feat, _R["missing"]] = reference.cat_missing[: self._n_cat] / n_ref
        self._ref_rate = ref_rate
        ok = np.zeros((n_rows, n_r), dtype=bool)
        ok[: self._n_num, [_R[r] for r in ("missing", "out_of_range", "non_finite", "wrong_type")]] = True
        ok[self._n_num : n_feat, [_R[r] for r in ("missing", "unseen_category", "wrong_type")]] = True
        ok[n_feat : self._first_slot, [_R["wrong_type"], _R["non_finite"]]] = True
        ok[n_feat + OUTPUT_KEYS.index("$probabilities"), _R["misaligned"]] = True
        ok[self._first_slot :, _R["unexpected"]] = True
        self._applicable = ok
        self.n_tests = int(ok.sum())
        self.alpha = false_alarm_rate / (self.n_tests * panes)
        # Check code (1..4) of a feature -> reason column.
        self._code_reason = np.array([-1] + [_R[r] for r in CHECK_REASONS], dtype=np.int64)
        self._window = PaneWindow(n_rows * n_r + 1, by=window, size=size, step=step, min_events=min_events)
        self._tracker = IncidentTracker(n_rows * n_r, resolve_after=self.resolve_after, cooldown=self.cooldown)
        self._reset()

    def _reset(self) -> None:
        self._window._reset()
        self._tracker._reset()
        self._slot_names: list[str] = []
        self._last_rates = np.zeros((self._n_rows, len(REASONS)))
        self._totals = np.zeros((self._n_rows, len(REASONS)), dtype=np.int64)

    # -- names ----------------------------------------------------------------------------------
    def _row_name(self, row: int) -> str:
        n_feat = len(self.features)
        if row < n_feat:
            return self.features[row]
        if row < self._first_slot:
            return OUTPUT_KEYS[row - n_feat]
        k = row - self._first_slot
        if k < len(self._slot_names):
            return self._slot_names[k]
        return OTHER_UNEXPECTED

    def _row_of(self, reason: str, feature: str) -> int | None:
        """Row of ``(reason, feature)``, assigning an unexpected-feature slot on first sight."""
        if reason == "unexpected":
            if feature in self._slot_names:
                return self._first_slot + self._slot_names.index(feature)
            if len(self._slot_names) < self.unexpected_slots:
                self._slot_names.append(feature)
                return self._first_slot + len(self._slot_names) - 1
            return self._n_rows - 1
        if feature in self._feature_index:
            return self._feature_index[feature]
        if feature in OUTPUT_KEYS:
            return len(self.features) + OUTPUT_KEYS.index(feature)
        return None

    # -- metrics ---------------------------------------------------------------------------------
    @property
    def totals(self) -> dict[tuple[str, str], int]:
        """``(reason, feature) -> count`` of every violation counted since the start (for metrics)."""
        rows, cols = np.nonzero(self._totals)
        return {(REASONS[c], self._row_name(int(r))): int(self._totals[r, c]) for r, c in zip(rows, cols, strict=True)}

    @property
    def rates(self) -> dict[tuple[str, str], float]:
        """``(reason, feature) -> rate`` in the last evaluated window, for every tested pair."""
        rows, cols = np.nonzero(self._applicable)
        return {
            (REASONS[c], self._row_name(int(r))): float(self._last_rates[r, c])
            for r, c in zip(rows, cols, strict=True)
            if r < self._first_slot + len(self._slot_names) or r == self._n_rows - 1
        }

    # -- checks ----------------------------------------------------------------------------------
    def check(self, batch: EventBatch) -> ValidationReport:
        """Classify every feature value of ``batch`` (vectorized; no window state is touched)."""
        x, c = batch.numeric, batch.categorical
        if x.shape[1] != self._n_num or c.shape[1] != self._n_cat:
            raise SchemaMismatchError(
                f"batch has {x.shape[1]} numeric and {c.shape[1]} categorical features, the baseline of "
                f"{self.reference.schema.model_id!r} has {self._n_num} and {self._n_cat}"
            )
        codes = np.zeros((len(batch), len(self.features)), dtype=np.int8)
        num = codes[:, : self._n_num]
        with np.errstate(invalid="ignore"):
            num[(x < self._lo) | (x > self._hi)] = 2
        num[np.isinf(x)] = 4
        num[np.isnan(x)] = 1
        cat = codes[:, self._n_num :]
        cat[c == MISSING] = 1
        cat[c == UNSEEN] = 3
        return ValidationReport(self.features, codes)

    # -- detector --------------------------------------------------------------------------------
    def update(
        self, batch: EventBatch, *, seq: int = 0, extra: Mapping[tuple[str, str], int] | None = None
    ) -> list[AlertDecision]:
        """Count the violations of ``batch`` (plus the decoder's ``extra`` counts of its chunk).

        ``seq`` is the stream sequence number of the batch's first event (kept for the
        :class:`~detector.base.Detector` protocol; the window numbers events itself).
        Returns the ``input_violation`` records decided at the panes that closed, in stream order.
        """
        del seq
        n = len(batch)
        codes = self.check(batch).codes
        n_r = len(REASONS)
        # Only the violating cells, as (event row, cell) pairs: most values are fine.
        r, f = np.divmod(np.flatnonzero(codes.ravel()), codes.shape[1])  # np.nonzero(codes), ~2x faster in 1-D
        cells = f.astype(np.int64) * n_r + self._code_reason[codes[r, f]]
        extra_rows: list[npt.NDArray[np.intp]] = []
        extra_cells: list[npt.NDArray[np.int64]] = []
        if extra and n:
            missing_col = _R["missing"]
            for (why, feature), count in sorted(extra.items()):
                if count <= 0 or why not in _R or why == "missing":
                    continue
                row = self._row_of(why, feature)
                if row is None:
                    continue
                cell = row * n_r + _R[why]
                if row < self._n_num and why in ("wrong_type", "non_finite"):
                    # The decoder made these values NaN: recount that many "missing" as ``why``.
                    cells[np.flatnonzero(cells == row * n_r + missing_col)[:count]] = cell
                    continue
                extra_rows.append(np.arange(min(count, n), dtype=np.intp))
                extra_cells.append(np.full(min(count, n), cell, dtype=np.int64))
        if extra_rows:
            r = np.concatenate([r, *extra_rows])
            cells = np.concatenate([cells, *extra_cells])
        self._totals += np.bincount(cells, minlength=self._sink).reshape(self._n_rows, n_r)
        closes = self._window.update(_compact(r, cells, n, self._sink), batch.ts)
        self._window.clear_cell(self._sink)
        return self._decide(closes)

    def _decide(self, closes: WindowCloses) -> list[AlertDecision]:
        if len(closes) == 0:
            return []
        n_r = len(REASONS)
        e = len(closes)
        counts = closes.counts[:, : self._sink].reshape(e, self._n_rows, n_r)
        n_ev = closes.n_events.astype(np.float64)[:, None, None]
        rate = counts / n_ev
        p0 = np.maximum(self._ref_rate, self.tolerance)
        p_value = stats.binom.sf(counts - 1, closes.n_events[:, None, None], p0[None])
        excess = rate - self._ref_rate[None]
        fire = self._applicable & (p_value < self.alpha) & (excess >= self.min_increase)
        critical = excess >= self.critical_increase
        calm = ~fire & (excess < self.min_increase / 2)
        self._last_rates = rate[-1]
        out: list[AlertDecision] = []
        for k in range(e):
            for j, status, sev in self._tracker.step(
                fire[k].ravel(), calm[k].ravel(), critical[k].ravel(), pane=int(closes.pane[k])
            ):
                row, r = divmod(j, n_r)
                out.append(
                    self._decision(closes, k, row, r, status, sev, int(counts[k, row, r]), float(p_value[k, row, r]))
                )
        return out

    def _decision(
        self, c: WindowCloses, k: int, row: int, r: int, status: Status, sev: Severity, count: int, pv: float
    ) -> AlertDecision:
        feature, reason = self._row_name(row), REASONS[r]
        n = int(c.n_events[k])
        rate = count / n
        ref = float(self._ref_rate[row, r])
        threshold = ref + self.min_increase
        if status == "resolved":
            message = f"{reason!r} violations of {feature!r} are back to {rate:.2%} (baseline {ref:.2%})"
            threshold = ref + self.min_increase / 2
        else:
            message = (
                f"{reason!r} violations of {feature!r} rose to {rate:.2%} of {n} events "
                f"(baseline {ref:.2%}; binomial p={pv:.2e}, budgeted alpha {self.alpha:.1e})"
            )
        return AlertDecision(
            kind="input_violation",
            status=status,
            severity=sev,
            columns=(feature,),
            statistic="violation_rate",
            value=rate,
            threshold=threshold,
            p_value=pv,
            incident=int(self._tracker.incident[row * len(REASONS) + r]),
            **window_fields(c, k),
            message=message,
            evidence={
                "feature": feature,
                "reason": reason,
                "rate": rate,
                "reference_rate": ref,
                "count": count,
                "window_events": n,
                "alpha": self.alpha,
            },
        )

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays (window, incidents, unexpected-feature slots, totals)."""
        out = {f"window.{k}": v for k, v in self._window.snapshot().items()}
        out.update({f"incidents.{k}": v for k, v in self._tracker.snapshot().items()})
        out["slots"] = np.asarray(self._slot_names, dtype=np.str_)
        out["totals"] = self._totals.copy()
        out["last_rates"] = self._last_rates.copy()
        return out

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot` of a validator built with the same reference and parameters."""
        win = {k.partition(".")[2]: np.asarray(v) for k, v in state.items() if k.startswith("window.")}
        inc = {k.partition(".")[2]: np.asarray(v) for k, v in state.items() if k.startswith("incidents.")}
        try:
            slots = [str(s) for s in np.asarray(state["slots"]).tolist()]
            totals = np.array(state["totals"], dtype=np.int64)
            last = np.array(state["last_rates"], dtype=np.float64)
        except KeyError as e:
            raise SnapshotError(f"validator snapshot is missing {e.args[0]!r}") from None
        if totals.shape != self._totals.shape or len(slots) > self.unexpected_slots:
            raise SnapshotError("validator snapshot was taken with another schema or slot count")
        self._window.restore(win)
        self._tracker.restore(inc)
        self._slot_names, self._totals, self._last_rates = slots, totals, last


def reasons_of(codes: Sequence[int]) -> list[str]:
    """Names of check codes (0 is ``"ok"``).

    Examples
    --------
    >>> reasons_of([0, 1, 3])
    ['ok', 'missing', 'unseen_category']
    """
    return ["ok" if k == 0 else CHECK_REASONS[k - 1] for k in codes]
