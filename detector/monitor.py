"""One model's detectors behind one batch interface."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detector.adversarial import AdversarialDetector
from detector.anomaly import AnomalyDetector
from detector.decision import AlertDecision, DriftPolicy
from detector.drift import DriftMonitor, DriftReport
from detector.errors import SnapshotError
from detector.labels import JoinedBatch, LabelJoin
from detector.performance import PerformanceMonitor
from detector.prepared import Prepared, Preparer
from detector.reference import Reference
from detector.schema import MISSING, EventBatch
from detector.validation import InputValidator


@dataclass(frozen=True)
class FiredAlert:
    """An alert record with the event it fired at.

    ``row`` is the row of the batch given to :meth:`ModelMonitor.update` when the alert fired on
    it, and None when it fired outside a batch: on a label joined later (the event then is an
    earlier one), or at :meth:`ModelMonitor.flush` (the event is the one given to it).
    """

    decision: AlertDecision
    event_id: str
    event_ts: int
    row: int | None


@dataclass(frozen=True)
class MonitorResult:
    """What one batch produced: alerts in stream order and the drift statistics behind them."""

    alerts: list[FiredAlert]
    drift: DriftReport
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def decisions(self) -> list[AlertDecision]:
        """The alert records alone."""
        return [a.decision for a in self.alerts]


def _on_batch(batch: EventBatch, decisions: list[AlertDecision]) -> list[FiredAlert]:
    return [
        FiredAlert(d, str(batch.event_id[d.event_index]), int(batch.ts[d.event_index]), d.event_index)
        for d in decisions
    ]


def _on_joined(joined: JoinedBatch, decisions: list[AlertDecision]) -> list[FiredAlert]:
    return [FiredAlert(d, str(joined.event_id[d.event_index]), int(joined.ts[d.event_index]), None) for d in decisions]


class ModelMonitor:
    """All detectors of one model, updated together on each batch of its events.

    Parameters
    ----------
    reference
        The model's reference distributions (from its baseline).
    window, size, step, min_events
        Sliding window of the drift statistics (see :class:`~detector.drift.DriftMonitor`).
    false_alarm_rate, psi_warning, psi_critical, psi_resolve
        Drift decision thresholds (see :class:`~detector.decision.DriftPolicy`).
    validator, performance, labels, anomaly, adversarial
        Optional detectors sharing the stream: input validation, performance against the reference
        (estimated from confidences, actual from inline labels), the join of late labels, per-event
        anomaly scores, and per-client adversarial detection (given the anomaly flags as its
        out-of-distribution signal).

    Examples
    --------
    >>> from detector.reference import fit_reference
    >>> from detector.schema import Schema
    >>> rng = np.random.default_rng(1)
    >>> ref = fit_reference(EventBatch.from_arrays(rng.normal(size=(10_000, 3))), Schema("m", numeric=("a", "b", "c")))
    >>> mon = ModelMonitor(ref, size=1000, step=100)
    >>> x = rng.normal(size=(6000, 3))
    >>> x[3000:, 2] += 0.5
    >>> for a in mon.update(EventBatch.from_arrays(x)).alerts:
    ...     d = a.decision
    ...     print(d.kind, d.status, d.severity, d.columns, a.event_id)
    feature_drift open warning ('c',) 3499
    feature_drift update critical ('c',) 3899
    """

    def __init__(
        self,
        reference: Reference,
        *,
        window: Literal["count", "time"] = "count",
        size: int = 2000,
        step: int = 200,
        min_events: int = 100,
        false_alarm_rate: float = 1e-3,
        psi_warning: float = 0.1,
        psi_critical: float = 0.25,
        psi_resolve: float = 0.05,
        validator: InputValidator | None = None,
        performance: PerformanceMonitor | None = None,
        labels: LabelJoin | None = None,
        anomaly: AnomalyDetector | None = None,
        adversarial: AdversarialDetector | None = None,
    ) -> None:
        self.reference = reference
        self.drift = DriftMonitor(reference, window=window, size=size, step=step, min_events=min_events)
        self.policy = DriftPolicy(
            reference.names,
            reference.roles,
            panes_per_window=size // step,
            false_alarm_rate=false_alarm_rate,
            psi_warning=psi_warning,
            psi_critical=psi_critical,
            psi_resolve=psi_resolve,
        )
        self.validator = validator
        self.performance = performance
        self.labels = labels if performance is not None else None
        self.anomaly = anomaly
        self.adversarial = adversarial
        self._seq = 0

    @property
    def seq(self) -> int:
        """Events seen so far: the stream sequence number of the next event."""
        return self._seq

    @property
    def open_events(self) -> int:
        """Events in the open pane of the drift window, not evaluated until it closes (or :meth:`flush`)."""
        return self.drift.open_events

    @property
    def oldest_seq(self) -> int:
        """Sequence number of the oldest event a later drift evaluation can still include."""
        return self.drift.oldest_seq

    def flush(self, *, event_id: str, event_ts: int) -> MonitorResult:
        """Evaluate the open pane of an event-time drift window now (end of a replay, idle stream).

        There is no batch: the alerts fire at the event given (the caller's last event of this
        model), with ``row=None``. Count windows have nothing to flush. Deterministic: the same
        events followed by a flush give the same alerts.
        """
        report = self.drift.flush()
        alerts = [FiredAlert(d, event_id, event_ts, None) for d in self.policy.decide(report)]
        return MonitorResult(alerts=alerts, drift=report)

    @property
    def preparer(self) -> Preparer:
        """What :meth:`update` computes from a batch alone (no state), to run elsewhere (a decoding process)."""
        return Preparer(
            binner=self.drift.binner,
            anomaly=None if self.anomaly is None else self.anomaly.model,
            queries=None if self.adversarial is None else self.adversarial.featurizer,
        )

    def update(
        self,
        batch: EventBatch,
        *,
        violations: Mapping[tuple[str, str], int] | None = None,
        prepared: Prepared | None = None,
    ) -> MonitorResult:
        """Feed one batch of this model's events.

        ``violations`` are the decoder's feature-level counts for these events (wrong types,
        non-finite numbers, unexpected features), which the validator adds to its windows.
        ``prepared`` is :attr:`preparer` applied to ``batch`` (computed here when None).
        """
        seq = self._seq
        report = self.drift.update(batch, cells=None if prepared is None else prepared.cells)
        decisions = self.policy.decide(report)
        if self.validator is not None:
            decisions += self.validator.update(batch, seq=seq, extra=violations)
        extras: dict[str, Any] = {}
        ood = far = None
        if self.anomaly is not None:
            decisions += self.anomaly.update(batch, seq=seq, scores=None if prepared is None else prepared.anomaly)
            scores = extras["scores"] = self.anomaly.last_scores
            if scores is not None:
                ood, far = scores.flag, scores.p_value <= self.anomaly.expected_rate**2
        if self.adversarial is not None:
            queries = None if prepared is None else prepared.queries
            decisions += self.adversarial.update(batch, seq=seq, ood=ood, far_ood=far, features=queries)
        alerts = _on_batch(batch, decisions)
        if self.performance is not None:
            alerts += _on_batch(batch, self.performance.update(batch, seq=seq))
            if self.labels is not None:
                waiting = np.flatnonzero((batch.label_code == MISSING) & ~np.isfinite(batch.label))
                b = batch.take(waiting)
                joined = self.labels.add_predictions(b.event_id, b.ts, b.prediction, b.prediction_code, b.proba)
                if len(joined):
                    alerts += _on_joined(joined, self.performance.update_joined(joined, seq=seq))
        alerts.sort(key=lambda a: (a.row is None, a.row or 0))
        self._seq += len(batch)
        return MonitorResult(alerts=alerts, drift=report, extras=extras)

    def update_labels(
        self,
        event_id: npt.ArrayLike,
        label: npt.ArrayLike,
        label_code: npt.ArrayLike,
        ts: npt.ArrayLike,
    ) -> list[FiredAlert]:
        """Feed late labels (from a feedback stream); alerts fire at the labelled events."""
        if self.labels is None or self.performance is None:
            return []
        joined = self.labels.add_labels(event_id, label, label_code, ts)
        if not len(joined):
            return []
        return _on_joined(joined, self.performance.update_joined(joined, seq=self._seq))

    def _components(self) -> dict[str, Any]:
        parts: dict[str, Any] = {"drift": self.drift, "policy": self.policy}
        for name in ("validator", "performance", "labels", "anomaly", "adversarial"):
            if getattr(self, name) is not None:
                parts[name] = getattr(self, name)
        return parts

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """All detector state as one flat dict of arrays, keys prefixed by component."""
        out: dict[str, npt.NDArray[Any]] = {"seq": np.asarray(self._seq, dtype=np.int64)}
        for name, part in self._components().items():
            out.update({f"{name}.{k}": v for k, v in part.snapshot().items()})
        return out

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot` taken by a monitor built the same way."""
        parts = self._components()
        grouped: dict[str, dict[str, npt.NDArray[Any]]] = {name: {} for name in parts}
        for key, value in state.items():
            if key == "seq":
                continue
            prefix, _, name = key.partition(".")
            if prefix not in grouped:
                raise SnapshotError(f"snapshot entry {key!r} has no detector here (built with other components?)")
            grouped[prefix][name] = np.asarray(value)
        for name, part in parts.items():
            if not grouped[name]:
                raise SnapshotError(f"snapshot has no state for {name!r}")
            part.restore(grouped[name])
        self._seq = int(state.get("seq", 0))
