"""From drift statistics to alerts: false-alarm budget, hysteresis and cooldown.

A column *fires* in a window when its test is significant at the budgeted level **and** its PSI
reaches the warning threshold. Significance alone would fire on tiny, harmless differences once
windows are large; the effect size alone would fire on noise once windows are small. Per column an
incident is a small state machine::

    closed --fire--> open --PSI rises past critical--> update (escalations only, no flapping)
    open --calm for ``resolve_after`` evaluations--> resolved (cooldown) --> closed

so one drift gives one ``open`` record, an ``update`` when its severity changes, and a
``resolved`` record when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypedDict

import numpy as np
import numpy.typing as npt

from detector.drift import DriftReport
from detector.errors import SnapshotError
from detector.reference import Role

Status = Literal["open", "update", "resolved"]
Severity = Literal["info", "warning", "critical"]

KIND_OF_ROLE: dict[str, str] = {
    "feature": "feature_drift",
    "prediction": "prediction_drift",
    "confidence": "confidence_drift",
}
_SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


class ClosedWindows(Protocol):
    """Windows evaluated at pane closes, one row each (a window's ``WindowCloses``, a ``DriftReport``)."""

    @property
    def event_index(self) -> npt.NDArray[Any]: ...
    @property
    def pane(self) -> npt.NDArray[Any]: ...
    @property
    def n_events(self) -> npt.NDArray[Any]: ...
    @property
    def start_ts(self) -> npt.NDArray[Any]: ...
    @property
    def end_ts(self) -> npt.NDArray[Any]: ...
    @property
    def start_seq(self) -> npt.NDArray[Any]: ...


class WindowFields(TypedDict):
    """The fields of an :class:`AlertDecision` that place it in its stream and window."""

    event_index: int
    pane: int
    window_start_ts: int
    window_end_ts: int
    window_events: int
    window_start_seq: int


def window_fields(c: ClosedWindows, i: int, *, seq_offset: int = 0) -> WindowFields:
    """The :class:`AlertDecision` fields that describe window ``i`` of ``c`` (event, pane, time and
    sequence range); ``seq_offset`` turns a window-relative start sequence into the stream's."""
    return WindowFields(
        event_index=int(c.event_index[i]),
        pane=int(c.pane[i]),
        window_start_ts=int(c.start_ts[i]),
        window_end_ts=int(c.end_ts[i]),
        window_events=int(c.n_events[i]),
        window_start_seq=int(c.start_seq[i]) + seq_offset,
    )


@dataclass(frozen=True)
class AlertDecision:
    """One alert record decided by the core, before the stream layer adds ids and sources.

    ``incident`` is the sequence point (pane, or event sequence number for per-event detectors) at
    which the incident opened: ``open``, ``update`` and ``resolved`` records of one incident share
    it; ``pane`` is the sequence point at which this record was decided. ``client_id`` is set by
    per-client detectors.
    """

    kind: str
    status: Status
    severity: Severity
    columns: tuple[str, ...]
    statistic: str
    value: float
    threshold: float
    p_value: float | None
    event_index: int
    pane: int
    incident: int
    window_start_ts: int
    window_end_ts: int
    window_events: int
    window_start_seq: int
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    client_id: str | None = None


class IncidentTracker:
    """Per-test incident state: open, escalate (``update``), resolve, cool down.

    The state machine shared by the decision layers (drift, validation, performance): per
    evaluation, the caller says which tests *fire*, which are *calm* and which are *critical*::

        closed --fire--> open --fires critical--> update (escalation only)
        open --calm for ``resolve_after`` evaluations--> resolved --``cooldown`` evaluations--> closed

    Parameters
    ----------
    n
        Number of tests tracked.
    resolve_after
        Consecutive calm evaluations before an open incident is ``resolved``.
    cooldown
        Evaluations after ``resolved`` during which the test cannot open again.

    Examples
    --------
    >>> t = IncidentTracker(2, resolve_after=2, cooldown=0)
    >>> f, no = np.array([True, False]), np.array([False, False])
    >>> t.step(f, ~f, no, pane=5)
    [(0, 'open', 'warning')]
    >>> t.step(f, ~f, f, pane=6), t.step(no, ~no, no, pane=7), t.step(no, ~no, no, pane=8)
    ([(0, 'update', 'critical')], [], [(0, 'resolved', 'info')])
    >>> int(t.incident[0])
    5
    """

    _KEYS: Final = ("severity", "incident", "calm", "cooldown")

    def __init__(self, n: int, *, resolve_after: int, cooldown: int) -> None:
        if n < 0 or resolve_after < 1 or cooldown < 0:
            raise ValueError("need n >= 0, resolve_after >= 1 and cooldown >= 0")
        self.n = n
        self.resolve_after = resolve_after
        self.cooldown = cooldown
        self._reset()

    def _reset(self) -> None:
        self._severity = np.zeros(self.n, dtype=np.int8)  # 0 closed, else index into _SEVERITIES
        self._incident = np.full(self.n, -1, dtype=np.int64)
        self._calm = np.zeros(self.n, dtype=np.int64)
        self._cooldown = np.zeros(self.n, dtype=np.int64)

    @property
    def incident(self) -> npt.NDArray[np.int64]:
        """Pane at which each test's current (or last) incident opened."""
        return self._incident

    @property
    def active(self) -> npt.NDArray[np.bool_]:
        """Which tests have an open incident."""
        out: npt.NDArray[np.bool_] = self._severity > 0
        return out

    def severity(self, j: int) -> Severity:
        """Current severity of test ``j`` (``"info"`` when closed)."""
        return _SEVERITIES[int(self._severity[j])]

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays."""
        return {k: getattr(self, "_" + k).copy() for k in self._KEYS}

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot`."""
        for k in self._KEYS:
            if k not in state or np.shape(state[k]) != (self.n,):
                raise SnapshotError(f"incident snapshot has no {k!r} for {self.n} tests")
        for k in self._KEYS:
            cur = getattr(self, "_" + k)
            setattr(self, "_" + k, np.array(state[k], dtype=cur.dtype))

    def run(
        self,
        fire: npt.NDArray[np.bool_],
        calm: npt.NDArray[np.bool_],
        critical: npt.NDArray[np.bool_],
        *,
        panes: npt.NDArray[np.int64],
    ) -> tuple[list[tuple[int, int, Status, Severity, int]], npt.NDArray[np.bool_]]:
        """Advance by ``len(panes)`` evaluations at once (rows of the ``(evaluations, n)`` inputs).

        Returns the transitions ``(evaluation, test, status, severity, incident)`` in stream order
        (per evaluation: opens, then updates, then resolves, each by test), and which tests were open
        at the start of each evaluation. Only tests that fire or are open step through the machine,
        one by one in plain Python: there are few of them, and numpy calls per evaluation cost more
        than the whole machine.
        """
        e_n = len(panes)
        was_open = np.zeros((e_n, self.n), dtype=bool)
        if not fire.any() and not self._severity.any():  # the common case: only cooldowns run down
            np.maximum(self._cooldown - e_n, 0, out=self._cooldown)
            return [], was_open
        involved = np.flatnonzero(fire.any(axis=0) | (self._severity > 0)).tolist()
        idle = np.ones(self.n, dtype=bool)
        idle[involved] = False
        np.maximum(self._cooldown - e_n, 0, out=self._cooldown, where=idle)
        found: list[tuple[int, int, int, Status, Severity, int]] = []
        pane_l = panes.tolist()
        for j in involved:
            sev, inc, calm_n, cool = (int(a[j]) for a in (self._severity, self._incident, self._calm, self._cooldown))
            f_l, c_l, cr_l = fire[:, j].tolist(), calm[:, j].tolist(), critical[:, j].tolist()
            for e in range(e_n):
                if sev == 0:
                    if f_l[e] and cool == 0:
                        sev, inc, calm_n = (2 if cr_l[e] else 1), pane_l[e], 0
                        found.append((e, 0, j, "open", _SEVERITIES[sev], inc))
                else:
                    was_open[e, j] = True
                    if f_l[e] and (2 if cr_l[e] else 1) > sev:
                        sev = 2 if cr_l[e] else 1
                        found.append((e, 1, j, "update", _SEVERITIES[sev], inc))
                    calm_n = calm_n + 1 if c_l[e] else 0
                    if calm_n >= self.resolve_after:
                        found.append((e, 2, j, "resolved", "info", inc))
                        sev, calm_n, cool = 0, 0, self.cooldown + 1
                cool = max(cool - 1, 0)
            self._severity[j], self._incident[j], self._calm[j], self._cooldown[j] = sev, inc, calm_n, cool
        found.sort(key=lambda r: r[:3])
        return [(e, j, status, sev_s, inc) for e, _, j, status, sev_s, inc in found], was_open

    def step(
        self,
        fire: npt.NDArray[np.bool_],
        calm: npt.NDArray[np.bool_],
        critical: npt.NDArray[np.bool_],
        *,
        pane: int,
    ) -> list[tuple[int, Status, Severity]]:
        """Advance by one evaluation; return the ``(test, status, severity)`` transitions."""
        records, _ = self.run(fire[None, :], calm[None, :], critical[None, :], panes=np.array([pane], dtype=np.int64))
        return [(j, status, severity) for _, j, status, severity, _ in records]


class DriftPolicy:
    """Turns :class:`~detector.drift.DriftReport` rows into :class:`AlertDecision` records.

    Parameters
    ----------
    names, roles
        Monitored columns and their roles, as in the report.
    panes_per_window
        Evaluations per window length; overlapping windows share events, so the budget is spread
        over this many tests per window.
    false_alarm_rate
        Expected false alarms per window length of a stable stream, over all columns together
        (Bonferroni over columns and the evaluations of one window).
    psi_warning, psi_critical
        PSI at which an incident opens as ``warning`` / is ``critical`` (0.1 / 0.25 are the usual
        "moderate" / "major shift" marks).
    psi_resolve
        An open incident calms down while its PSI stays below this and its test is not significant.
    resolve_after
        Consecutive calm evaluations before ``resolved`` (default: one window, so the drifted events
        have left it).
    cooldown
        Evaluations after ``resolved`` during which the column cannot open again (default: one window).

    Examples
    --------
    >>> from detector.drift import DriftReport
    >>> pol = DriftPolicy(("x",), ("feature",), panes_per_window=1, resolve_after=1, cooldown=0)
    >>> def rep(v, p):
    ...     one = np.array([[v]])
    ...     z = np.zeros(1, dtype=np.int64)
    ...     return DriftReport(("x",), ("feature",), np.ones(1, bool), z, z, z + 500, z, z, z,
    ...                        one, one, one, np.array([[p]]), one * 0, one * 0)
    >>> [d.status for d in pol.decide(rep(0.3, 1e-9))], [d.status for d in pol.decide(rep(0.01, 0.5))]
    (['open'], ['resolved'])
    """

    def __init__(
        self,
        names: Sequence[str],
        roles: Sequence[Role],
        *,
        panes_per_window: int,
        false_alarm_rate: float = 1e-3,
        psi_warning: float = 0.1,
        psi_critical: float = 0.25,
        psi_resolve: float = 0.05,
        resolve_after: int | None = None,
        cooldown: int | None = None,
    ) -> None:
        if not 0 < false_alarm_rate < 1:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
        if not 0 < psi_resolve <= psi_warning <= psi_critical:
            raise ValueError("thresholds must satisfy 0 < psi_resolve <= psi_warning <= psi_critical")
        if panes_per_window < 1:
            raise ValueError(f"panes_per_window must be >= 1, got {panes_per_window}")
        self.names = tuple(names)
        self.roles = tuple(roles)
        self.panes_per_window = panes_per_window
        self.false_alarm_rate = false_alarm_rate
        self.psi_warning = psi_warning
        self.psi_critical = psi_critical
        self.psi_resolve = psi_resolve
        self.resolve_after = panes_per_window if resolve_after is None else resolve_after
        self.cooldown = panes_per_window if cooldown is None else cooldown
        self.alpha = false_alarm_rate / (max(len(self.names), 1) * panes_per_window)
        self._reset()

    def _reset(self) -> None:
        n = len(self.names)
        self._tracker = IncidentTracker(n, resolve_after=self.resolve_after, cooldown=self.cooldown)
        self._peak = np.zeros(n, dtype=np.float64)

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays."""
        return {**self._tracker.snapshot(), "peak": self._peak.copy()}

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot`."""
        if "peak" not in state or np.shape(state["peak"]) != (len(self.names),):
            raise SnapshotError(f"policy snapshot has no 'peak' for {len(self.names)} columns")
        self._tracker.restore(state)
        self._peak = np.array(state["peak"], dtype=np.float64)

    def decide(self, report: DriftReport) -> list[AlertDecision]:
        """Alert records for every evaluation of ``report``, in stream order."""
        if len(report) == 0:
            return []
        psi = np.nan_to_num(report.psi, nan=0.0)
        p = np.nan_to_num(report.p_value, nan=1.0)
        fire = (p < self.alpha) & (psi >= self.psi_warning)
        calm = (psi < self.psi_resolve) & ~fire
        critical = psi >= self.psi_critical
        records, was_open = self._tracker.run(fire, calm, critical, panes=report.pane)
        # The peak PSI of each open incident, as it stands at each of its records.
        peak_at: dict[tuple[int, int], float] = {}
        opened = {(e, j) for e, j, status, _, _ in records if status == "open"}
        wanted = {(e, j) for e, j, _, _, _ in records}
        for j in sorted({j for _, j, _, _, _ in records} | set(np.flatnonzero(was_open.any(axis=0)).tolist())):
            pk = float(self._peak[j])
            col, open_col = psi[:, j].tolist(), was_open[:, j].tolist()
            for e in range(len(col)):
                if open_col[e]:
                    pk = max(pk, col[e])
                if (e, j) in opened:
                    pk = col[e]
                if (e, j) in wanted:
                    peak_at[e, j] = pk
            self._peak[j] = pk
        return [
            self._decision(report, e, j, status, severity, peak_at[e, j], incident)
            for e, j, status, severity, incident in records
        ]

    def _decision(
        self, r: DriftReport, e: int, j: int, status: Status, sev: Severity, peak: float, incident: int
    ) -> AlertDecision:
        name, role = self.names[j], self.roles[j]
        kind = KIND_OF_ROLE[role]
        value = float(np.nan_to_num(r.psi[e, j]))
        pv = float(r.p_value[e, j])
        test = "ks" if r.is_numeric[j] else "chi2"
        what = {"feature": f"feature {name!r}", "prediction": "the prediction", "confidence": "the confidence"}[role]
        if status == "resolved":
            message = f"{what} is back to its baseline distribution (PSI {value:.3f}, peak {peak:.3f})"
        else:
            message = (
                f"{what} drifted from its baseline: PSI {value:.3f} >= {self.psi_warning} "
                f"({test} p={pv:.2e}, budgeted alpha {self.alpha:.1e})"
            )
        return AlertDecision(
            kind=kind,
            status=status,
            severity=sev,
            columns=(name,) if role == "feature" else (),
            statistic="psi",
            value=value,
            threshold=self.psi_resolve if status == "resolved" else self.psi_warning,
            p_value=None if np.isnan(pv) else pv,
            incident=incident,
            **window_fields(r, e),
            message=message,
            evidence={
                "column": name,
                "test": test,
                "alpha": self.alpha,
                "js_distance": float(np.nan_to_num(r.js[e, j])),
                "ks_statistic": None if np.isnan(r.ks[e, j]) else float(r.ks[e, j]),
                "psi_peak": peak,
                "missing_rate": float(np.nan_to_num(r.missing_rate[e, j])),
                "unseen_rate": float(np.nan_to_num(r.unseen_rate[e, j])),
            },
        )
