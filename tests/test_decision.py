"""DriftPolicy state machine and ModelMonitor alerting bands over several seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from detector.decision import AlertDecision, DriftPolicy, IncidentTracker
from detector.drift import DriftReport
from detector.errors import SnapshotError
from detector.monitor import ModelMonitor
from detector.reference import CONFIDENCE_COLUMN, PREDICTION_COLUMN, Reference, fit_reference
from detector.schema import EventBatch, Schema

# -- DriftPolicy on hand-made reports ----------------------------------------------------------------

FIRE = (0.15, 1e-12)  # warning-level PSI, significant
CRIT = (0.40, 1e-30)  # critical PSI
MID = (0.07, 0.3)  # between psi_resolve and psi_warning: neither firing nor calm
CALM = (0.01, 0.6)
NOISY = (0.30, 0.5)  # large PSI but not significant (tiny window)
SIGNIF_SMALL = (0.02, 1e-20)  # significant but harmless (huge window)


def _report(
    rows: Sequence[Sequence[tuple[float, float]]],
    first_pane: int = 0,
    names: tuple[str, ...] = ("x", "y"),
    is_numeric: Sequence[bool] | None = None,
) -> DriftReport:
    """One evaluation per row; each row gives (psi, p_value) per column."""
    e, k = len(rows), len(names)
    arr = np.asarray(rows, dtype=np.float64).reshape(e, k, 2)
    pane = np.arange(first_pane, first_pane + e, dtype=np.int64)
    num = np.ones(k, bool) if is_numeric is None else np.asarray(is_numeric, bool)
    return DriftReport(
        names=names,
        roles=("feature",) * k,
        is_numeric=num,
        event_index=pane * 100 + 99,
        pane=pane,
        n_events=np.full(e, 1_000),
        start_ts=pane * 10,
        end_ts=pane * 10 + 999,
        start_seq=pane * 100 - 900,
        psi=arr[..., 0],
        js=arr[..., 0] / 2,
        ks=np.where(num, arr[..., 0] / 3, np.nan),
        p_value=arr[..., 1],
        missing_rate=np.zeros((e, k)),
        unseen_rate=np.zeros((e, k)),
    )


def _policy(**kw: float) -> DriftPolicy:
    args = {"panes_per_window": 4, "resolve_after": 3, "cooldown": 5, **kw}
    return DriftPolicy(("x", "y"), ("feature", "feature"), **args)  # type: ignore[arg-type]


def _summary(alerts: list[AlertDecision]) -> list[tuple[str, str, str, int, int]]:
    return [(a.columns[0], a.status, a.severity, a.pane, a.incident) for a in alerts]


SCRIPT = (
    [[CALM, CALM]] * 3
    + [[FIRE, CALM]] * 3  # opens at pane 3
    + [[CRIT, CALM]] * 2  # escalates once at pane 6
    + [[FIRE, CALM], [MID, CALM], [CALM, CALM], [MID, CALM]]  # no flapping, calm streak broken
    + [[CALM, CALM]] * 3  # resolved at pane 14 (3 calm evaluations)
    + [[FIRE, CALM]] * 5  # cooldown: the 5 evaluations after the resolve (panes 15..19) cannot open
    + [[FIRE, FIRE]]  # pane 20: x opens again; y fires for the first time
)
EXPECTED = [
    ("x", "open", "warning", 3, 3),
    ("x", "update", "critical", 6, 3),
    ("x", "resolved", "info", 14, 3),
    ("x", "open", "warning", 20, 20),
    ("y", "open", "warning", 20, 20),
]


def test_policy_lifecycle_one_open_escalation_resolved_cooldown() -> None:
    alerts = _policy().decide(_report(SCRIPT))
    assert _summary(alerts) == EXPECTED
    opened = alerts[0]
    assert (opened.kind, opened.statistic, opened.value, opened.threshold) == ("feature_drift", "psi", 0.15, 0.1)
    assert opened.p_value == 1e-12
    assert (opened.event_index, opened.window_events, opened.window_start_seq) == (399, 1_000, -600)
    assert opened.evidence["test"] == "ks" and opened.evidence["alpha"] == pytest.approx(1e-3 / 8)
    assert "'x'" in opened.message
    resolved = alerts[2]
    assert resolved.threshold == 0.05 and resolved.evidence["psi_peak"] == 0.40


def test_policy_batch_equals_one_evaluation_at_a_time() -> None:
    rows = SCRIPT * 2 + [[CALM, CALM]] * 7
    whole = _policy().decide(_report(rows))
    pol = _policy()
    one_by_one = [a for i, r in enumerate(rows) for a in pol.decide(_report([r], first_pane=i))]
    assert one_by_one == whole
    assert [a.status for a in whole].count("open") == 6


class StepOracle:
    """The incident state machine one evaluation at a time, vectorized over tests: the shape
    :class:`IncidentTracker` had before it moved only the tests that fire or are open, kept as an
    independent reference for :meth:`IncidentTracker.run`."""

    def __init__(self, n: int, resolve_after: int, cooldown: int) -> None:
        self.resolve_after, self.cooldown = resolve_after, cooldown
        self.severity = np.zeros(n, dtype=np.int8)
        self.incident = np.full(n, -1, dtype=np.int64)
        self.calm = np.zeros(n, dtype=np.int64)
        self.cool = np.zeros(n, dtype=np.int64)

    def step(self, fire: Any, calm: Any, critical: Any, pane: int) -> list[tuple[int, str, str]]:
        names = ("info", "warning", "critical")
        out: list[tuple[int, str, str]] = []
        is_open = self.severity > 0
        for j in np.flatnonzero(fire & ~is_open & (self.cool == 0)).tolist():
            self.severity[j] = 2 if critical[j] else 1
            self.incident[j], self.calm[j] = pane, 0
            out.append((j, "open", names[self.severity[j]]))
        for j in np.flatnonzero(is_open & fire & (np.where(critical, 2, 1) > self.severity)).tolist():
            self.severity[j] = 2 if critical[j] else 1
            out.append((j, "update", names[self.severity[j]]))
        self.calm[is_open] = np.where(calm[is_open], self.calm[is_open] + 1, 0)
        for j in np.flatnonzero(is_open & (self.calm >= self.resolve_after)).tolist():
            out.append((j, "resolved", "info"))
            self.severity[j], self.calm[j], self.cool[j] = 0, 0, self.cooldown + 1
        np.maximum(self.cool - 1, 0, out=self.cool)
        return out


@pytest.mark.parametrize("seed", range(6))
def test_tracker_run_equals_step_by_step(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, e_n = 7, 400
    fire = rng.random((e_n, n)) < [0.0, 0.02, 0.1, 0.3, 0.6, 0.9, 0.1]
    calm = ~fire & (rng.random((e_n, n)) < 0.7)
    critical = fire & (rng.random((e_n, n)) < 0.3)
    panes = np.arange(1000, 1000 + e_n, dtype=np.int64)
    one = StepOracle(n, resolve_after=3, cooldown=2)
    stepped = IncidentTracker(n, resolve_after=3, cooldown=2)
    expected, was = [], []
    for e in range(e_n):
        was.append(one.severity > 0)
        done = one.step(fire[e], calm[e], critical[e], int(panes[e]))
        assert stepped.step(fire[e], calm[e], critical[e], pane=int(panes[e])) == done
        expected += [(e, j, status, sev, int(one.incident[j])) for j, status, sev in done]
    many = IncidentTracker(n, resolve_after=3, cooldown=2)
    got, got_was, start = [], [], 0
    while start < e_n:
        stop = min(e_n, start + int(rng.integers(1, 60)))
        records, was_open = many.run(fire[start:stop], calm[start:stop], critical[start:stop], panes=panes[start:stop])
        got += [(start + e, j, status, sev, inc) for e, j, status, sev, inc in records]
        got_was.append(was_open)
        start = stop
    assert got == expected
    np.testing.assert_array_equal(np.concatenate(got_was), np.array(was))
    oracle = {"severity": one.severity, "incident": one.incident, "calm": one.calm, "cooldown": one.cool}
    for t in (many, stepped):
        assert {k: v.tolist() for k, v in t.snapshot().items()} == {k: v.tolist() for k, v in oracle.items()}
    assert {status for _, _, status, _, _ in got} == {"open", "update", "resolved"}


def test_policy_never_reopens_while_open() -> None:
    rng = np.random.default_rng(0)
    states = [FIRE, CRIT, MID, NOISY]  # none of them calm
    rows = [[states[i], CALM] for i in rng.integers(0, len(states), size=500)]
    alerts = _policy().decide(_report([[FIRE, CALM], *rows]))
    assert [a.status for a in alerts] == ["open", "update"]  # no calm streak of 3: never resolved


def test_policy_fires_only_when_significant_and_large() -> None:
    pol = _policy(false_alarm_rate=0.01)
    alpha = pol.alpha
    assert alpha == pytest.approx(0.01 / (2 * 4))
    assert pol.decide(_report([[NOISY, SIGNIF_SMALL]])) == []  # either gate alone does not fire
    assert pol.decide(_report([[(0.0999, 1e-30), (0.5, alpha * 1.01)]])) == []
    fired = pol.decide(_report([[(0.1, alpha * 0.99), CALM]]))
    assert _summary(fired) == [("x", "open", "warning", 0, 0)]
    assert pol.decide(_report([[(0.25, 1e-9), (np.nan, np.nan)]], first_pane=1))[0].severity == "critical"


def test_policy_nan_statistics_never_fire() -> None:
    nan = (np.nan, np.nan)
    assert _policy().decide(_report([[nan, nan]] * 20)) == []


def test_policy_kinds_and_columns_follow_roles() -> None:
    names = ("f", PREDICTION_COLUMN, CONFIDENCE_COLUMN)
    pol = DriftPolicy(names, ("feature", "prediction", "confidence"), panes_per_window=1)
    alerts = pol.decide(_report([[FIRE, FIRE, FIRE]], names=names, is_numeric=[True, False, True]))
    assert [(a.kind, a.columns, a.evidence["test"]) for a in alerts] == [
        ("feature_drift", ("f",), "ks"),
        ("prediction_drift", (), "chi2"),
        ("confidence_drift", (), "ks"),
    ]
    assert alerts[1].evidence["ks_statistic"] is None


def test_policy_snapshot_restore_mid_incident() -> None:
    rows = SCRIPT
    cut = 7  # x is open and critical
    pol = _policy()
    head = pol.decide(_report(rows[:cut]))
    other = _policy()
    other.restore({k: v.copy() for k, v in pol.snapshot().items()})
    tail = other.decide(_report(rows[cut:], first_pane=cut))
    assert _summary(head + tail) == EXPECTED


def test_policy_restore_mismatch_raises() -> None:
    state = _policy().snapshot()
    with pytest.raises(SnapshotError):
        DriftPolicy(("x", "y", "z"), ("feature",) * 3, panes_per_window=4).restore(state)
    del state["calm"]
    with pytest.raises(SnapshotError):
        _policy().restore(state)


@pytest.mark.parametrize(
    "kw",
    [
        {"false_alarm_rate": 0.0},
        {"false_alarm_rate": 1.0},
        {"panes_per_window": 0},
        {"psi_resolve": 0.0},
        {"psi_resolve": 0.2},
        {"psi_warning": 0.3, "psi_critical": 0.2},
    ],
)
def test_policy_invalid_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _policy(**kw)


# -- ModelMonitor on simulated streams ---------------------------------------------------------------

N_NUM = 16
NUM_NAMES = tuple(f"f{i:02d}" for i in range(N_NUM))
SCHEMA = Schema("m", numeric=NUM_NAMES, categorical=("region",), categories=(("a", "b", "c", "d", "e"),))
P_CAT = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
SEEDS = range(10)
SHIFTED = 5  # index of the drifting feature


def _events(rng: np.random.Generator, n: int, shift: float = 0.0, at: int = 0, column: int = SHIFTED) -> EventBatch:
    x = rng.normal(size=(n, N_NUM))
    x[at:, column] += shift
    c = rng.choice(5, size=(n, 1), p=P_CAT)
    return EventBatch.from_arrays(x, categorical=c)


def _reference(rng: np.random.Generator, n: int = 20_000) -> Reference:
    return fit_reference(_events(rng, n), SCHEMA)


def test_monitor_alpha_budget() -> None:
    ref = _reference(np.random.default_rng(0), 1_000)
    mon = ModelMonitor(ref, size=2_000, step=200, false_alarm_rate=1e-3)
    assert mon.policy.alpha == pytest.approx(1e-3 / (17 * 10))
    assert mon.policy.resolve_after == 10 and mon.policy.cooldown == 10


@pytest.mark.parametrize("seed", SEEDS)
def test_stable_stream_raises_no_alert(seed: int) -> None:
    rng = np.random.default_rng(1_000 + seed)
    mon = ModelMonitor(_reference(rng))
    res = mon.update(_events(rng, 100_000))
    assert len(res.drift) == (100_000 - 2_000) // 200 + 1
    assert res.decisions == []
    assert np.nanmax(res.drift.psi) < 0.1  # the effect-size gate alone would hold


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_shift_detected_quickly_and_only_after_it(seed: int) -> None:
    rng = np.random.default_rng(2_000 + seed)
    mon = ModelMonitor(_reference(rng))
    shift_at = 50_000
    alerts = mon.update(_events(rng, 100_000, shift=0.4, at=shift_at)).decisions
    assert alerts, "the shift was never detected"
    assert all(a.event_index >= shift_at for a in alerts)
    assert all(a.columns == (NUM_NAMES[SHIFTED],) and a.kind == "feature_drift" for a in alerts)
    opens = [a for a in alerts if a.status == "open"]
    assert len(opens) == 1
    assert opens[0].event_index - shift_at < 5_000
    assert all(a.status == "update" and a.severity == "critical" for a in alerts[1:])


def test_drift_episode_opens_once_and_resolves() -> None:
    rng = np.random.default_rng(7)
    mon = ModelMonitor(_reference(rng))
    start, stop, n = 30_000, 40_000, 70_000
    x = _events(rng, n)
    x.numeric[start:stop, SHIFTED] += 1.0
    alerts, at = [], []
    for a in range(0, n, 3_333):  # a stream of batches that do not line up with the panes
        res = mon.update(x.take(slice(a, a + 3_333)))
        alerts += res.decisions
        at += [a + d.event_index for d in res.decisions]  # event_index is within its batch
    statuses = [a.status for a in alerts]
    assert statuses[0] == "open" and statuses[-1] == "resolved"
    assert statuses.count("open") == 1 and statuses.count("resolved") == 1
    assert set(statuses[1:-1]) <= {"update"}
    assert len({a.incident for a in alerts}) == 1
    assert start <= at[0] < start + 2_000
    # resolved once the drifted events left the window and it stayed calm for resolve_after evaluations
    assert stop + 2_000 <= at[-1] < stop + 6_000
    assert alerts[-1].window_start_seq >= stop  # the resolving window holds no drifted event


@pytest.mark.parametrize("seed", range(3))
def test_large_windows_ignore_significant_but_harmless_shift(seed: int) -> None:
    rng = np.random.default_rng(3_000 + seed)
    ref = _reference(rng, 100_000)
    for shift in (0.02, 0.1):
        mon = ModelMonitor(ref, size=50_000, step=5_000)
        res = mon.update(_events(rng, 100_000, shift=shift))  # shifted from the start
        assert len(res.drift) == 11
        assert res.decisions == []
        p = res.drift.p_value[:, SHIFTED]
        if shift == 0.1:
            # significance alone would have fired: only the PSI gate holds it back
            assert np.all(p < mon.policy.alpha)
        assert np.all(res.drift.psi[:, SHIFTED] < 0.05)


def test_monitor_snapshot_restore_mid_incident() -> None:
    rng = np.random.default_rng(11)
    ref = _reference(rng)
    batch = _events(rng, 40_000)
    batch.numeric[15_000:25_000, SHIFTED] += 0.5
    full = ModelMonitor(ref)
    expected = full.update(batch)
    assert [a.status for a in expected.decisions] == ["open", "update", "resolved"]
    cut = expected.decisions[0].event_index + 301  # open, not yet escalated
    first = ModelMonitor(ref)
    head = first.update(batch.take(slice(0, cut)))
    state = first.snapshot()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert {k.split(".")[0] for k in state} == {"seq", "drift", "policy"}
    second = ModelMonitor(ref)
    second.restore({k: v.copy() for k, v in state.items()})
    tail = second.update(batch.take(slice(cut, None)))
    assert [a.status for a in head.decisions] == ["open"]
    assert [a.status for a in tail.decisions] == ["update", "resolved"]  # no second "open"
    for got, want in zip(tail.decisions, expected.decisions[1:], strict=True):
        assert got.event_index + cut == want.event_index
        assert (got.status, got.severity, got.pane, got.incident, got.value, got.window_start_seq) == (
            want.status,
            want.severity,
            want.pane,
            want.incident,
            want.value,
            want.window_start_seq,
        )
    for f in ("psi", "p_value", "pane", "start_seq"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(head.drift, f), getattr(tail.drift, f)]), getattr(expected.drift, f)
        )


def test_monitor_restore_rejects_unknown_entries() -> None:
    ref = _reference(np.random.default_rng(0), 1_000)
    state = ModelMonitor(ref).snapshot()
    state["extra.thing"] = np.zeros(1)
    with pytest.raises(SnapshotError):
        ModelMonitor(ref).restore(state)
