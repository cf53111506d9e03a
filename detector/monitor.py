"""One model's detectors behind one batch interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detector.decision import AlertDecision, DriftPolicy
from detector.drift import DriftMonitor, DriftReport
from detector.errors import SnapshotError
from detector.reference import Reference
from detector.schema import EventBatch


@dataclass(frozen=True)
class MonitorResult:
    """What one batch produced: alert records in stream order and the drift statistics behind them."""

    alerts: list[AlertDecision]
    drift: DriftReport


class ModelMonitor:
    """All detectors of one model, updated together on each batch of its events.

    Parameters
    ----------
    reference
        The model's reference distributions (from its baseline).
    window, size, step, min_events
        Sliding window of the drift statistics (see :class:`~detector.drift.DriftMonitor`).
    false_alarm_rate, psi_warning, psi_critical, psi_resolve
        Decision thresholds (see :class:`~detector.decision.DriftPolicy`).

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
    ...     print(a.kind, a.status, a.severity, a.columns, a.event_index)
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

    def update(self, batch: EventBatch) -> MonitorResult:
        """Feed one batch of this model's events."""
        report = self.drift.update(batch)
        return MonitorResult(alerts=self.policy.decide(report), drift=report)

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """All detector state as one flat dict of arrays, keys prefixed by component."""
        out = {f"drift.{k}": v for k, v in self.drift.snapshot().items()}
        out.update({f"policy.{k}": v for k, v in self.policy.snapshot().items()})
        return out

    def restore(self, state: dict[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot`."""
        parts: dict[str, dict[str, npt.NDArray[Any]]] = {"drift": {}, "policy": {}}
        for key, value in state.items():
            prefix, _, name = key.partition(".")
            if prefix not in parts:
                raise SnapshotError(f"unknown snapshot entry {key!r}")
            parts[prefix][name] = np.asarray(value)
        self.drift.restore(parts["drift"])
        self.policy.restore(parts["policy"])
