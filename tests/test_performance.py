"""Performance against the baseline: metrics vs scikit-learn, performance_drop on labelled and estimated windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from detector.base import Artifact, Detector
from detector.decision import AlertDecision
from detector.errors import SnapshotError
from detector.labels import JoinedBatch, LabelJoin
from detector.performance import (
    LOG_LOSS_TOLERANCE,
    PerformanceMonitor,
    PerformanceReference,
    calibrate,
    fit_performance,
    per_event_log_loss,
    roc_auc_binned,
)
from detector.schema import MISSING, EventBatch, Schema

BINARY = Schema("m", numeric=("x",), prediction="categorical", classes=("neg", "pos"))
MULTI = Schema("m", numeric=("x",), prediction="categorical", classes=("a", "b", "c"))
REGRESSION = Schema("r", numeric=("x",), prediction="numeric")


def _classified(
    rng: np.random.Generator, n: int, *, k: int = 2, flip: float = 0.0, conc: float = 1.0, t0: int = 0
) -> EventBatch:
    """A calibrated classifier: the label is drawn from the predicted probabilities; ``flip`` changes the concept
    (labels move to another class for that share of events) without touching the inputs or the outputs."""
    proba = rng.dirichlet(np.full(k, conc), size=n)
    label = (proba.cumsum(axis=1) < rng.uniform(size=(n, 1))).sum(axis=1).clip(0, k - 1)
    flipped = rng.uniform(size=n) < flip
    label = np.where(flipped, (label + rng.integers(1, k, size=n)) % k, label).astype(np.int32)
    return EventBatch.from_arrays(
        rng.normal(size=(n, 1)),
        proba=proba,
        prediction_code=proba.argmax(axis=1),
        label_code=label,
        ts=t0 + np.arange(n) * 10,
        event_id=[f"e{t0 + i}" for i in range(n)],
    )


def _regressed(rng: np.random.Generator, n: int, *, noise: float = 1.0) -> EventBatch:
    x = rng.normal(size=n)
    pred = 2 * x
    return EventBatch.from_arrays(x, prediction=pred, label=pred + rng.normal(scale=noise, size=n))


def _joined(b: EventBatch) -> JoinedBatch:
    n = len(b)
    return JoinedBatch(
        b.event_id,
        b.ts,
        b.ts + 1000,
        np.full(n, 1000, np.int64),
        b.prediction,
        b.prediction_code,
        b.proba,
        b.label,
        b.label_code,
    )


@pytest.fixture(scope="module")
def binary_ref() -> PerformanceReference:
    return fit_performance(_classified(np.random.default_rng(0), 20_000), BINARY)


# -- metrics agree with scikit-learn --------------------------------------------------------------


def test_reference_metrics_match_sklearn_binary() -> None:
    b = _classified(np.random.default_rng(1), 5000)
    ref = fit_performance(b, BINARY)
    assert ref.accuracy == pytest.approx(accuracy_score(b.label_code, b.prediction_code), abs=1e-12)
    assert ref.log_loss == pytest.approx(log_loss(b.label_code, b.proba, labels=[0, 1]), rel=1e-9)
    assert ref.roc_auc == pytest.approx(roc_auc_score(b.label_code, b.proba[:, 1]), rel=1e-9)
    assert (ref.n, ref.n_pos + ref.n_neg, ref.task, ref.n_classes) == (5000, 5000, "classification", 2)
    assert set(ref.metrics) == {"accuracy", "log_loss", "roc_auc", "estimated_accuracy"}


def test_reference_metrics_match_sklearn_multiclass_with_unlabelled_rows() -> None:
    b = _classified(np.random.default_rng(2), 3000, k=3)
    label = b.label_code.copy()
    label[::7] = MISSING
    b = EventBatch.from_arrays(b.numeric, proba=b.proba, prediction_code=b.prediction_code, label_code=label)
    ref = fit_performance(b, MULTI)
    ok = label != MISSING
    assert ref.n == int(ok.sum())
    assert ref.accuracy == pytest.approx(accuracy_score(label[ok], b.prediction_code[ok]), abs=1e-12)
    assert ref.log_loss == pytest.approx(log_loss(label[ok], b.proba[ok], labels=[0, 1, 2]), rel=1e-9)
    assert np.isnan(ref.roc_auc)
    ll = per_event_log_loss(b.proba[ok], label[ok])
    assert ref.log_loss_std == pytest.approx(float(ll.std()))


def test_reference_metrics_match_sklearn_regression() -> None:
    b = _regressed(np.random.default_rng(3), 4000, noise=0.7)
    ref = fit_performance(b, REGRESSION)
    assert ref.mae == pytest.approx(mean_absolute_error(b.label, b.prediction), rel=1e-12)
    assert ref.rmse == pytest.approx(np.sqrt(mean_squared_error(b.label, b.prediction)), rel=1e-12)
    assert ref.error_std == pytest.approx(0.7, rel=0.05) and abs(ref.error_mean) < 0.05
    assert set(ref.metrics) == {"mae", "rmse"} and np.isnan(ref.accuracy)


def test_windowed_metrics_match_sklearn_on_the_window(binary_ref: PerformanceReference) -> None:
    rng = np.random.default_rng(4)
    b = _classified(rng, 1000)
    # Scores on the centres of the 200 AUC bins: the binned AUC is then exact.
    s = (rng.integers(0, 200, size=1000) + 0.5) / 200
    proba = np.column_stack([1 - s, s])
    b = EventBatch.from_arrays(b.numeric, proba=proba, prediction_code=proba.argmax(axis=1), label_code=b.label_code)
    mon = PerformanceMonitor(binary_ref, size=1000, step=500, auc_bins=200)
    mon.update_joined(_joined(b), seq=0)
    m = mon.metrics
    assert m["accuracy"] == pytest.approx(accuracy_score(b.label_code, b.prediction_code), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(b.label_code, proba), rel=1e-9)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(b.label_code, s), abs=1e-12)
    assert m["labelled_events"] == 1000


def test_windowed_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    ref = fit_performance(_regressed(rng, 5000), REGRESSION)
    b = _regressed(rng, 600, noise=1.3)
    mon = PerformanceMonitor(ref, size=600, step=200)
    mon.update_joined(_joined(b), seq=0)
    assert mon.metrics["mae"] == pytest.approx(mean_absolute_error(b.label, b.prediction), rel=1e-12)
    assert mon.metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(b.label, b.prediction)), rel=1e-12)


def test_binned_auc_is_close_to_exact_on_continuous_scores() -> None:
    rng = np.random.default_rng(6)
    y = rng.uniform(size=5000) < 0.4
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    b = np.minimum((s * 200).astype(int), 199)
    auc = float(roc_auc_binned(np.bincount(b[y], minlength=200), np.bincount(b[~y], minlength=200)))
    assert auc == pytest.approx(roc_auc_score(y, s), abs=2e-3)


# -- alerts --------------------------------------------------------------------------------------


def _drops(alerts: list[AlertDecision], *, estimated: bool | None = None) -> list[AlertDecision]:
    return [
        a
        for a in alerts
        if a.kind == "performance_drop"
        and a.status == "open"
        and (estimated is None or a.evidence["estimated"] is estimated)
    ]


def test_concept_change_fires_after_labels_arrive(binary_ref: PerformanceReference) -> None:
    """Inputs and outputs stay the same; 30% of labels change. Labels come 5 s late through the join."""
    rng = np.random.default_rng(7)
    mon = PerformanceMonitor(binary_ref, size=1000, step=200)
    join = LabelJoin(capacity=10_000, horizon_ms=60_000)
    alerts: list[AlertDecision] = []
    first_alert_at = None
    previous: EventBatch | None = None
    for k in range(12):
        b = _classified(rng, 500, flip=0.3 if k >= 6 else 0.0, t0=k * 5000)
        alerts += mon.update_estimated(b, seq=k * 500)
        alerts += mon.update_joined(join.add_predictions(b.event_id, b.ts, b.prediction, b.prediction_code, b.proba))
        assert _drops(alerts, estimated=True) == []  # the confidences did not change
        if previous is not None:  # the labels of the previous batch arrive now
            p = previous
            alerts += mon.update_joined(join.add_labels(p.event_id, p.label, p.label_code, p.ts + 5000))
        previous = b
        if first_alert_at is None and _drops(alerts):
            first_alert_at = k
    drops = _drops(alerts, estimated=False)
    assert {a.statistic for a in drops} >= {"accuracy", "log_loss", "roc_auc"}
    assert first_alert_at is not None and 7 <= first_alert_at <= 9  # once the flipped labels have arrived
    acc = next(a for a in drops if a.statistic == "accuracy")
    ev = acc.evidence
    assert ev["metric"] == "accuracy" and ev["estimated"] is False and ev["labelled_events"] == 1000
    assert ev["reference"] == binary_ref.accuracy and acc.value == ev["current"]
    assert ev["confidence_bound"] < acc.threshold == pytest.approx(binary_ref.accuracy - 0.02)
    assert acc.p_value is not None and acc.p_value < mon.alpha
    assert "accuracy" in acc.message and f"{binary_ref.accuracy:.4f}" in acc.message
    assert join.counters["joined"] == 5500 and join.counters["pending_predictions"] == 500


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_stable_labelled_stream_fires_nothing(binary_ref: PerformanceReference, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mon = PerformanceMonitor(binary_ref, size=1000, step=100)
    alerts = []
    for k in range(30):
        alerts += mon.update(_classified(rng, 1000, t0=k * 10_000), seq=k * 1000)  # inline labels
    assert alerts == []
    assert mon.metrics["accuracy"] == pytest.approx(binary_ref.accuracy, abs=0.05)


def test_regression_error_rise_fires_mae_and_rmse() -> None:
    rng = np.random.default_rng(13)
    ref = fit_performance(_regressed(rng, 10_000), REGRESSION)
    mon = PerformanceMonitor(ref, size=1000, step=200)
    assert mon.update_joined(_joined(_regressed(rng, 20_000)), seq=0) == []
    alerts = mon.update_joined(_joined(_regressed(rng, 3000, noise=1.5)), seq=20_000)
    assert {a.statistic for a in _drops(alerts)} == {"mae", "rmse"}
    rmse = next(a for a in alerts if a.statistic == "rmse")
    assert rmse.evidence["confidence_bound"] > rmse.threshold == pytest.approx(ref.rmse * 1.05)
    assert rmse.evidence["reference"] == ref.rmse
    assert mon.update_estimated(_regressed(rng, 100), seq=0) == []  # no CBPE for regression


def _near_perfect(rng: np.random.Generator, n: int, *, wrong: float) -> EventBatch:
    """A near-perfect binary classifier (as on river's Agrawal): confidences of 0.999 and more, and a share
    ``wrong`` of confidently wrong answers (probability 0.01 on the label)."""
    p = 1 - rng.uniform(1e-5, 1e-3, size=n)
    label = rng.integers(0, 2, size=n).astype(np.int32)
    p_label = np.where(rng.uniform(size=n) < wrong, 0.01, p)
    proba = np.where(
        label[:, None] == 1, np.column_stack([1 - p_label, p_label]), np.column_stack([p_label, 1 - p_label])
    )
    return EventBatch.from_arrays(
        rng.normal(size=(n, 1)), proba=proba, prediction_code=proba.argmax(axis=1), label_code=label
    )


@pytest.fixture(scope="module")
def near_perfect_ref() -> PerformanceReference:
    ref = fit_performance(_near_perfect(np.random.default_rng(40), 20_000, wrong=0.002), BINARY)
    assert 0.005 < ref.log_loss < 0.015 and ref.accuracy > 0.997  # ~0.01 nats
    return ref


def test_near_perfect_reference_tolerates_a_small_absolute_log_loss_rise(
    near_perfect_ref: PerformanceReference,
) -> None:
    # 0.6% of confident errors instead of 0.2%: the log loss about triples (+0.02 nats) and the accuracy drops by
    # 0.4 points. A 5% relative tolerance alone (0.0005 nats) fired on it; the absolute floor (0.05 nats) does not.
    events = _near_perfect(np.random.default_rng(41), 10_000, wrong=0.006)
    mon = PerformanceMonitor(near_perfect_ref, size=2000, step=200)
    assert _drops(mon.update(events, seq=0)) == []
    assert 0.01 < mon.metrics["log_loss"] - near_perfect_ref.log_loss < 0.03
    relative_only = PerformanceMonitor(near_perfect_ref, size=2000, step=200, log_loss_tolerance=0.0)
    assert {a.statistic for a in _drops(relative_only.update(events, seq=0))} == {"log_loss"}


def test_near_perfect_reference_still_fires_on_a_real_degradation(near_perfect_ref: PerformanceReference) -> None:
    # 5% of confident errors: +0.2 nats of log loss, 5 points of accuracy.
    mon = PerformanceMonitor(near_perfect_ref, size=2000, step=200)
    alerts = mon.update(_near_perfect(np.random.default_rng(42), 6_000, wrong=0.05), seq=0)
    drops = {a.statistic: a for a in _drops(alerts)}
    assert {"log_loss", "accuracy"} <= set(drops)
    ll = drops["log_loss"]
    assert ll.threshold == pytest.approx(near_perfect_ref.log_loss + 0.05)
    assert ll.evidence["confidence_bound"] > ll.threshold and ll.event_index == 1999  # the first full window


def test_the_relative_tolerance_rules_above_the_floor() -> None:
    # A weak multiclass model (log loss ~1.4 nats): 5% of it (0.07) is more than the 0.05 floor.
    ref = fit_performance(_classified(np.random.default_rng(43), 20_000, k=5), Schema(
        "m", numeric=("x",), prediction="categorical", classes=tuple("abcde")))  # fmt: skip
    mon = PerformanceMonitor(ref, size=1000, step=200)
    drops = _drops(mon.update(_classified(np.random.default_rng(44), 2000, k=5, flip=0.5), seq=0))
    ll = next(a for a in drops if a.statistic == "log_loss")
    assert ref.log_loss * 0.05 > 0.05 and ll.threshold == pytest.approx(ref.log_loss * 1.05)


def test_regression_error_floor() -> None:
    # A near-exact regressor (errors ~1e-3): with no floor a rise to 1.3e-3 fires; a floor of 0.01 (target units)
    # tolerates it, and a real rise (errors of 0.05) still fires.
    rng = np.random.default_rng(46)
    ref = fit_performance(_regressed(rng, 10_000, noise=1e-3), REGRESSION)
    small = _joined(_regressed(rng, 2000, noise=1.3e-3))
    no_floor = PerformanceMonitor(ref, size=1000, step=200)
    assert {a.statistic for a in _drops(no_floor.update_joined(small))} == {"mae", "rmse"}
    floored = PerformanceMonitor(ref, size=1000, step=200, error_tolerance=0.01)
    assert floored.update_joined(small) == []
    alerts = _drops(floored.update_joined(_joined(_regressed(rng, 2000, noise=0.05))))
    assert {a.statistic for a in alerts} == {"mae", "rmse"}
    rmse = next(a for a in alerts if a.statistic == "rmse")
    assert rmse.threshold == pytest.approx(ref.rmse + 0.01)


def test_settings_carry_the_loss_floors_into_the_monitor(tmp_path: Path) -> None:
    from baselines.build import build_baseline, load_baseline
    from baselines.store import BaselineStore
    from streams.config import Settings
    from streams.pipeline import build_monitor

    assert Settings().performance.log_loss_tolerance == LOG_LOSS_TOLERANCE
    assert Settings().performance.error_tolerance == 0.0
    store = BaselineStore(tmp_path)
    build_baseline(store, _classified(np.random.default_rng(47), 3000), BINARY, anomaly_learned="none")
    settings = Settings.model_validate({"performance": {"log_loss_tolerance": 0.2, "error_tolerance": 0.3}})
    perf = build_monitor(load_baseline(store, "m"), settings).performance
    assert perf is not None and (perf.log_loss_tolerance, perf.error_tolerance) == (0.2, 0.3)
    assert settings.detection_digest() != Settings().detection_digest()


# -- CBPE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_cbpe_estimate_tracks_the_true_accuracy(binary_ref: PerformanceReference, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mon = PerformanceMonitor(binary_ref, size=2000, step=2000)
    b = _classified(rng, 2000)
    mon.update_estimated(b, seq=0)
    true = accuracy_score(b.label_code, b.prediction_code)
    assert mon.metrics["estimated_accuracy"] == pytest.approx(true, abs=0.03)
    assert binary_ref.estimated_accuracy == pytest.approx(binary_ref.holdout_accuracy, abs=0.02)


def test_cbpe_estimate_drops_when_confidences_drop(binary_ref: PerformanceReference) -> None:
    rng = np.random.default_rng(23)
    mon = PerformanceMonitor(binary_ref, size=1000, step=200)
    assert mon.update_estimated(_classified(rng, 5000), seq=0) == []
    before = mon.metrics["estimated_accuracy"]
    unsure = _classified(rng, 3000, conc=6.0)  # probabilities pile up near 0.5
    alerts = mon.update_estimated(unsure, seq=5000)
    after = mon.metrics["estimated_accuracy"]
    true = accuracy_score(unsure.label_code, unsure.prediction_code)
    assert after < before - 0.1 and after == pytest.approx(true, abs=0.04)
    drops = _drops(alerts)
    assert len(drops) == 1 and drops[0].evidence["estimated"] is True and drops[0].statistic == "accuracy"
    assert drops[0].evidence["labelled_events"] == 0 and "CBPE" in drops[0].message
    assert np.isnan(mon.metrics["accuracy"])  # no labels yet


def test_calibration_is_monotone_and_serializable(binary_ref: PerformanceReference) -> None:
    assert np.all(np.diff(binary_ref.calibration_prob) >= 0)
    assert len(binary_ref.calibration_prob) == len(binary_ref.calibration_edges) + 1
    arrays, meta = binary_ref.to_arrays()
    json.dumps(meta)
    assert PerformanceReference.from_arrays(arrays, meta) == binary_ref
    with pytest.raises(SnapshotError):
        PerformanceReference.from_arrays(arrays, {**meta, "format": 99})
    assert isinstance(binary_ref, Artifact)
    rng = np.random.default_rng(0)
    edges, prob = calibrate(rng.uniform(size=100), rng.uniform(size=100) < 0.5, n_bins=4)
    assert len(edges) == 3 and np.all(np.diff(prob) >= 0)


# -- batches, snapshots --------------------------------------------------------------------------


def _key(a: AlertDecision) -> tuple[object, ...]:
    return (
        a.statistic,
        a.status,
        a.severity,
        a.event_index,
        a.pane,
        a.incident,
        a.window_events,
        a.window_start_seq,
        a.window_start_ts,
        a.window_end_ts,
        round(a.value, 9),
    )


def test_one_batch_equals_row_by_row(binary_ref: PerformanceReference) -> None:
    rng = np.random.default_rng(30)
    b1 = _classified(rng, 1200)
    b2 = _classified(rng, 1200, flip=0.4)
    whole = EventBatch.from_arrays(
        np.r_[b1.numeric, b2.numeric],
        proba=np.r_[b1.proba, b2.proba],
        prediction_code=np.r_[b1.prediction_code, b2.prediction_code],
        label_code=np.r_[b1.label_code, b2.label_code],
    )
    one = PerformanceMonitor(binary_ref, size=400, step=100)
    rows = PerformanceMonitor(binary_ref, size=400, step=100)
    a1 = one.update(whole, seq=0)
    a2 = []
    for i in range(len(whole)):
        a2 += [(a, i) for a in rows.update(whole.take(slice(i, i + 1)), seq=i)]
    assert len(a1) >= 2
    assert [_key(a) for a in a1] == [(*_key(a)[:3], i, *_key(a)[4:]) for a, i in a2]
    for k, v in one.snapshot().items():
        np.testing.assert_allclose(v, rows.snapshot()[k], rtol=1e-9, atol=1e-9)


def test_snapshot_round_trip_continues_identically(binary_ref: PerformanceReference) -> None:
    rng = np.random.default_rng(31)
    parts = [_classified(rng, 1500, flip=f) for f in (0.0, 0.3, 0.3)]
    whole = PerformanceMonitor(binary_ref, size=1000, step=250)
    expected = [a for p in parts for a in whole.update(p, seq=0)]
    first = PerformanceMonitor(binary_ref, size=1000, step=250)
    got = first.update(parts[0], seq=0) + first.update(parts[1], seq=0)
    second = PerformanceMonitor(binary_ref, size=1000, step=250)
    second.restore({k: np.array(v) for k, v in first.snapshot().items()})
    got += second.update(parts[2], seq=0)
    assert [_key(a) for a in got] == [_key(a) for a in expected] and len(got) >= 2
    assert second.metrics == pytest.approx(whole.metrics, nan_ok=True)
    with pytest.raises(SnapshotError):
        second.restore({"latest": np.zeros(1)})


def test_is_a_detector_and_validates_parameters(binary_ref: PerformanceReference) -> None:
    assert isinstance(PerformanceMonitor(binary_ref), Detector)
    for kwargs in (
        {"size": 1000, "step": 300},
        {"false_alarm_rate": 1.0},
        {"critical_factor": 0.5},
        {"auc_bins": 1},
        {"log_loss_tolerance": -0.01},
        {"error_tolerance": -1.0},
    ):
        with pytest.raises(ValueError):
            PerformanceMonitor(binary_ref, **kwargs)
    with pytest.raises(ValueError):
        fit_performance(_classified(np.random.default_rng(0), 10), Schema("m", numeric=("x",)))


def test_inline_labels_on_some_events_map_back_to_batch_rows(binary_ref: PerformanceReference) -> None:
    rng = np.random.default_rng(32)
    b = _classified(rng, 4000, flip=0.5)
    label = b.label_code.copy()
    label[::2] = MISSING  # only odd rows carry a label
    b = EventBatch.from_arrays(b.numeric, proba=b.proba, prediction_code=b.prediction_code, label_code=label)
    mon = PerformanceMonitor(binary_ref, size=500, step=100)
    alerts = mon.update(b, seq=0)
    labelled = [a for a in alerts if not a.evidence["estimated"]]
    assert labelled and all(a.event_index % 2 == 1 for a in labelled)
    assert [a.event_index for a in alerts] == sorted(a.event_index for a in alerts)
    assert labelled[0].event_index >= 2 * 500 - 1  # not before a full window of labelled events
    m = mon.metrics
    assert m["error_rate"] == pytest.approx(1 - m["accuracy"]) and m["labelled_events"] == 500


def test_events_without_probabilities_or_labels_are_skipped_quietly(binary_ref: PerformanceReference) -> None:
    rng = np.random.default_rng(33)
    b = _classified(rng, 1000)
    proba = b.proba.copy()
    proba[::3] = np.nan  # no probabilities sent: out of log loss, AUC and the estimate, still in accuracy
    label = b.label_code.copy()
    label[1::5] = MISSING
    b = EventBatch.from_arrays(b.numeric, proba=proba, prediction_code=b.prediction_code, label_code=label)
    mon = PerformanceMonitor(binary_ref, size=500, step=100, min_events=50)
    with np.errstate(all="raise"):
        assert mon.update(b, seq=0) == []
    ok = label != MISSING
    acc = accuracy_score(label[ok][-500:], b.prediction_code[ok][-500:])
    assert mon.metrics["accuracy"] == pytest.approx(acc)
    assert np.isfinite(mon.metrics["log_loss"]) and np.isfinite(mon.metrics["roc_auc"])
