"""InputValidator: each reason per event, windowed input_violation alerts, batch invariance, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from detector.base import Detector
from detector.decision import AlertDecision
from detector.errors import SchemaMismatchError, SnapshotError
from detector.reference import Reference, fit_reference
from detector.schema import MISSING, UNSEEN, EventBatch, Schema
from detector.validation import CHECK_REASONS, OTHER_UNEXPECTED, IncidentTracker, InputValidator, reasons_of

SCHEMA = Schema("m", numeric=("a", "b", "c"), categorical=("color",), categories=(("r", "g", "b"),))
C_MISSING = 0.05  # "c" is missing in 5% of the reference: a baseline rate, not a violation


def _batch(rng: np.random.Generator, n: int, *, t0: int = 0) -> EventBatch:
    x = rng.normal(size=(n, 3))
    x[:, 1] = rng.uniform(10.0, 20.0, size=n)
    x[rng.uniform(size=n) < C_MISSING, 2] = np.nan
    cat = rng.choice(3, size=(n, 1), p=[0.5, 0.3, 0.2]).astype(np.int32)
    return EventBatch.from_arrays(x, categorical=cat, ts=t0 + np.arange(n) * 10)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return fit_reference(_batch(np.random.default_rng(0), 20_000), SCHEMA)


def _with(batch: EventBatch, numeric: np.ndarray | None = None, categorical: np.ndarray | None = None) -> EventBatch:
    return EventBatch.from_arrays(
        batch.numeric if numeric is None else numeric,
        categorical=batch.categorical if categorical is None else categorical,
        ts=batch.ts,
    )


def _key(d: AlertDecision) -> tuple[object, ...]:
    return (
        d.kind,
        d.status,
        d.severity,
        d.columns,
        d.evidence["reason"],
        d.event_index,
        d.pane,
        d.incident,
        d.evidence["count"],
        d.window_events,
        d.window_start_seq,
        d.window_start_ts,
        d.window_end_ts,
    )


def _opens(alerts: list[AlertDecision]) -> set[tuple[str, str]]:
    return {(a.columns[0], a.evidence["reason"]) for a in alerts if a.status == "open"}


# -- per-event checks ---------------------------------------------------------------------------


def test_check_finds_each_reason(reference: Reference) -> None:
    lo, hi = float(reference.num_min[1]), float(reference.num_max[1])
    x = np.array(
        [
            [0.0, 15.0, 0.0],
            [np.nan, 15.0, 0.0],  # missing a
            [0.0, hi + 0.05 * (hi - lo), 0.0],  # within the 10% margin: valid
            [0.0, hi + 0.2 * (hi - lo), 0.0],  # out of range b (above)
            [0.0, lo - 0.2 * (hi - lo), np.inf],  # out of range b (below), non-finite c
            [0.0, 15.0, 0.0],
        ]
    )
    cat = np.array([[0], [1], [MISSING], [UNSEEN], [2], [UNSEEN]], dtype=np.int32)
    rep = InputValidator(reference).check(EventBatch.from_arrays(x, categorical=cat))
    assert rep.features == ("a", "b", "c", "color")
    assert rep.counts == {
        ("missing", "a"): 1,
        ("missing", "color"): 1,
        ("out_of_range", "b"): 2,
        ("unseen_category", "color"): 2,
        ("non_finite", "c"): 1,
    }
    assert rep.invalid.tolist() == [False, True, True, True, True, True]
    assert rep.mask("out_of_range")[:, 1].tolist() == [False, False, False, True, True, False]
    assert reasons_of(rep.codes[4].tolist()) == ["ok", "out_of_range", "non_finite", "ok"]
    assert set(CHECK_REASONS) == {r for r, _ in rep.counts}


@pytest.mark.parametrize(("margin", "expected"), [(0.0, True), (0.1, False), (0.3, False)])
def test_margin_is_a_fraction_of_the_reference_range(reference: Reference, margin: float, expected: bool) -> None:
    lo, hi = float(reference.num_min[1]), float(reference.num_max[1])
    x = np.array([[0.0, hi + 0.05 * (hi - lo), 0.0]])
    rep = InputValidator(reference, margin=margin).check(EventBatch.from_arrays(x, categorical=[[0]]))
    assert bool(rep.mask("out_of_range")[0, 1]) is expected


def test_check_rejects_other_schemas(reference: Reference) -> None:
    with pytest.raises(SchemaMismatchError):
        InputValidator(reference).check(EventBatch.from_arrays(np.zeros((2, 2))))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"margin": -1},
        {"false_alarm_rate": 0},
        {"tolerance": 0},
        {"min_increase": 0.2, "critical_increase": 0.1},
        {"unexpected_slots": -1},
    ],
)
def test_bad_parameters_raise(reference: Reference, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        InputValidator(reference, **kwargs)  # type: ignore[arg-type]


def test_is_a_detector(reference: Reference) -> None:
    assert isinstance(InputValidator(reference), Detector)


# -- alerts: each reason fires ------------------------------------------------------------------


def test_feature_suddenly_null_fires_missing(reference: Reference) -> None:
    rng = np.random.default_rng(1)
    b = _batch(rng, 10_000)
    x = b.numeric.copy()
    x[6000:, 0] = np.nan
    val = InputValidator(reference, size=1000, step=100)
    alerts = val.update(_with(b, numeric=x), seq=0)
    assert _opens(alerts) == {("a", "missing")}
    first = alerts[0]
    assert first.kind == "input_violation" and first.statistic == "violation_rate"
    assert 6000 <= first.event_index < 6100  # the first pane with enough nulls to be significant
    assert "'a'" in first.message and "missing" in first.message
    ev = first.evidence
    assert ev["reason"] == "missing" and ev["reference_rate"] == 0.0 and ev["window_events"] == 1000
    assert ev["rate"] == pytest.approx(ev["count"] / 1000) and first.p_value is not None
    assert first.p_value < val.alpha


def test_feature_in_other_units_fires_out_of_range(reference: Reference) -> None:
    rng = np.random.default_rng(2)
    b = _batch(rng, 8000)
    x = b.numeric.copy()
    x[4000:, 1] *= 1000.0  # b now arrives in other units
    alerts = InputValidator(reference, size=1000, step=100).update(_with(b, numeric=x), seq=0)
    assert _opens(alerts) == {("b", "out_of_range")}
    assert alerts[0].severity == "critical" and 4000 <= alerts[0].event_index < 4100


def test_unseen_categories_fire(reference: Reference) -> None:
    rng = np.random.default_rng(3)
    b = _batch(rng, 8000)
    cat = b.categorical.copy()
    cat[4000:][rng.uniform(size=4000) < 0.05] = UNSEEN
    alerts = InputValidator(reference, size=2000, step=200).update(_with(b, categorical=cat), seq=0)
    assert _opens(alerts) == {("color", "unseen_category")}
    assert alerts[0].severity == "warning"


def test_reference_missing_rate_is_the_baseline(reference: Reference) -> None:
    rng = np.random.default_rng(4)
    val = InputValidator(reference, size=2000, step=200)
    assert val.update(_batch(rng, 20_000), seq=0) == []  # c is missing 5% of the time, as in the reference
    b = _batch(rng, 10_000)
    x = b.numeric.copy()
    x[rng.uniform(size=len(b)) < 0.15, 2] = np.nan
    assert _opens(val.update(_with(b, numeric=x), seq=20_000)) == {("c", "missing")}


def test_rare_stray_violations_never_alert(reference: Reference) -> None:
    rng = np.random.default_rng(5)
    b = _batch(rng, 50_000)
    x = b.numeric.copy()
    x[::1000, 0] = 1e9  # one out-of-range event per thousand
    cat = b.categorical.copy()
    cat[500::2000] = UNSEEN
    val = InputValidator(reference, size=1000, step=100)
    assert val.update(_with(b, numeric=x, categorical=cat), seq=0) == []
    assert val.totals[("out_of_range", "a")] == 50


def test_clean_stream_of_100k_events_fires_nothing(reference: Reference) -> None:
    rng = np.random.default_rng(6)
    val = InputValidator(reference, size=2000, step=200)
    alerts = []
    for k in range(50):
        alerts += val.update(_batch(rng, 2000, t0=k * 20_000), seq=k * 2000)
    assert alerts == []
    assert set(val.totals) <= {("missing", "c")}
    assert val.rates[("missing", "c")] == pytest.approx(C_MISSING, abs=0.02)


def test_incident_resolves_after_recovery(reference: Reference) -> None:
    rng = np.random.default_rng(7)
    b = _batch(rng, 12_000)
    x = b.numeric.copy()
    x[3000:6000, 0] = np.nan
    alerts = InputValidator(reference, size=1000, step=100).update(_with(b, numeric=x), seq=0)
    statuses = [a.status for a in alerts]
    assert statuses[0] == "open" and statuses[-1] == "resolved" and statuses.count("open") == 1
    assert len({a.incident for a in alerts}) == 1
    assert 7000 <= alerts[-1].event_index < 8200  # one window of calm after the nulls have left it


# -- the decoder's counts ------------------------------------------------------------------------


def test_decoder_wrong_type_is_recounted_from_missing(reference: Reference) -> None:
    rng = np.random.default_rng(8)
    val = InputValidator(reference, size=1000, step=100)
    alerts = []
    for k in range(10):
        b = _batch(rng, 500, t0=k * 5000)
        x = b.numeric.copy()
        bad = np.flatnonzero(rng.uniform(size=500) < 0.3) if k >= 5 else np.zeros(0, dtype=np.intp)
        x[bad, 0] = np.nan  # the decoder made the strings NaN ...
        extra = {("wrong_type", "a"): len(bad)} if len(bad) else None  # ... and counted them
        alerts += val.update(_with(b, numeric=x), seq=k * 500, extra=extra)
    assert _opens(alerts) == {("a", "wrong_type")}
    assert ("missing", "a") not in val.totals and val.totals[("wrong_type", "a")] > 0


def test_decoder_only_reasons_fire_and_name_the_feature(reference: Reference) -> None:
    rng = np.random.default_rng(9)
    val = InputValidator(reference, size=1000, step=100, unexpected_slots=1)
    alerts = []
    for k in range(10):
        b = _batch(rng, 500, t0=k * 5000)
        extra = {("missing", "$label"): 500, ("wrong_type", "nobody"): 3}  # ignored: labels are optional
        if k >= 4:
            extra |= {
                ("unexpected", "new_feature"): 400,
                ("unexpected", "another"): 100,
                ("misaligned", "$probabilities"): 50,
                ("wrong_type", "color"): 100,
            }
        alerts += val.update(b, seq=k * 500, extra=extra)
    # One named slot: it goes to the first unexpected name (in sorted order within a chunk).
    assert _opens(alerts) == {
        ("another", "unexpected"),
        (OTHER_UNEXPECTED, "unexpected"),
        ("$probabilities", "misaligned"),
        ("color", "wrong_type"),
    }
    assert all("$label" not in key for key in val.totals)


# -- batches, snapshots --------------------------------------------------------------------------


def _dirty(seed: int, n: int) -> EventBatch:
    rng = np.random.default_rng(seed)
    b = _batch(rng, n)
    x = b.numeric.copy()
    x[n // 3 :, 0] = np.where(rng.uniform(size=n - n // 3) < 0.2, np.nan, x[n // 3 :, 0])
    x[n // 2 :, 1] *= 100
    cat = b.categorical.copy()
    cat[2 * n // 3 :] = UNSEEN
    return _with(b, numeric=x, categorical=cat)


def test_one_batch_equals_row_by_row(reference: Reference) -> None:
    b = _dirty(10, 2400)
    one = InputValidator(reference, size=400, step=100)
    rows = InputValidator(reference, size=400, step=100)
    a1 = one.update(b, seq=0)
    a2 = []
    for i in range(len(b)):
        a2 += [(d, i) for d in rows.update(b.take(slice(i, i + 1)), seq=i)]
    assert len(a1) >= 3
    assert [_key(d) for d in a1] == [(*_key(d)[:5], i, *_key(d)[6:]) for d, i in a2]
    assert one.totals == rows.totals
    for k, v in one.snapshot().items():
        np.testing.assert_array_equal(v, rows.snapshot()[k])


def test_snapshot_round_trip_continues_identically(reference: Reference) -> None:
    b = _dirty(11, 6000)
    extra = {("unexpected", "zz"): 700}
    full = InputValidator(reference, size=1000, step=100)
    expected = full.update(b.take(slice(0, 3000)), seq=0, extra=extra)
    expected += full.update(b.take(slice(3000, 6000)), seq=3000)
    first = InputValidator(reference, size=1000, step=100)
    got = first.update(b.take(slice(0, 3000)), seq=0, extra=extra)
    state = {k: np.array(v) for k, v in first.snapshot().items()}
    second = InputValidator(reference, size=1000, step=100)
    second.restore(state)
    got += second.update(b.take(slice(3000, 6000)), seq=3000)
    assert [_key(d) for d in got] == [_key(d) for d in expected]
    assert ("zz", "unexpected") in _opens(got)
    with pytest.raises(SnapshotError):
        InputValidator(reference).restore({k: v for k, v in state.items() if k != "totals"})


def test_incident_tracker_cooldown_blocks_reopening() -> None:
    t = IncidentTracker(1, resolve_after=1, cooldown=2)
    yes, no = np.array([True]), np.array([False])
    assert t.step(yes, no, no, pane=0) == [(0, "open", "warning")]
    assert t.step(no, yes, no, pane=1) == [(0, "resolved", "info")]
    assert t.step(yes, no, no, pane=2) == [] and t.step(yes, no, no, pane=3) == []
    assert t.step(yes, no, no, pane=4) == [(0, "open", "warning")]
    clone = IncidentTracker(1, resolve_after=1, cooldown=2)
    clone.restore(t.snapshot())
    assert clone.step(no, yes, no, pane=5) == t.step(no, yes, no, pane=5)
