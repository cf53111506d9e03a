"""Issue 3 end to end against the real broker: input validation, anomaly rate and performance via feedback.

Each test runs ``inferwatch run`` as a subprocess (helpers and fixtures of ``tests/test_service_kafka.py``),
produces a synthetic stream with an injected change at event ``CHANGE_AT`` with a real producer, stops the
service with SIGTERM (which delivers every alert) and reads the alerts topic back. Every wait is bounded.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer
from test_service_kafka import (
    KEEP,
    MODEL,
    STABLE,
    ServiceProcess,
    _index,
    _tail,
    baseline,
    produce,
    read_topic,
    run_cli,
    sample,
    services,
    setup,
    write_jsonl,
)

from streams.synthetic import SyntheticStream

pytestmark = pytest.mark.kafka

__all__ = ["baseline", "services", "setup"]  # fixtures re-exported into this module

TopicFactory = Callable[..., str]

N = 24_000
CHANGE_AT = 12_000
PHASE2_AT = 18_000  # test 1: f03 in other units from here on
DELAY_MAX = 4_000  # events after a change within which its alert must open
CONSUME_TIMEOUT_S = 40.0


def _wait(svc: ServiceProcess, what: str, predicate: Callable[[Any], bool], timeout: float = CONSUME_TIMEOUT_S) -> Any:
    """``svc.wait_for`` that reports a service that died mid-scrape by its exit code and log
    (rather than as the metrics endpoint's connection error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return svc.wait_for(what, predicate, timeout=max(deadline - time.monotonic(), 0.0))
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            time.sleep(0.5)
            assert svc.proc is not None
            rc = svc.proc.poll()
            if rc is not None:
                pytest.fail(
                    f"inferwatch run exited with {rc} while waiting for {what}; log:\n{_tail(svc.log)}", pytrace=False
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"metrics endpoint failing ({e!r}) while waiting for {what}; log:\n{_tail(svc.log)}", pytrace=False
                )


def _stop_and_read_alerts(kafka_bootstrap: str, svc: ServiceProcess) -> list[dict[str, Any]]:
    """SIGTERM (flushes every alert), then the whole alerts topic."""
    rc = svc.terminate()
    assert rc == 0, f"exit code {rc} after SIGTERM; log:\n{_tail(svc.log)}"
    return [orjson.loads(m.value()) for m in read_topic(kafka_bootstrap, svc.alerts_topic)]


def _summary(alerts: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (a["kind"], a["status"], a["features"], a["event_id"], a["statistic"], a["evidence"].get("reason"))
        for a in alerts
    ]


def _produce_stream(kafka_bootstrap: str, topic: str, lines: Sequence[bytes]) -> None:
    timestamps = [orjson.loads(line)["ts"] for line in lines]
    positions = produce(kafka_bootstrap, topic, lines, timestamps=timestamps)
    assert positions == [(0, i) for i in range(len(lines))]


# ==================================================================================================
# 1. input_violation: a feature goes missing, then another arrives in other units
# ==================================================================================================
def violation_lines() -> list[bytes]:
    out = []
    for i, line in enumerate(STABLE.lines(N, seed=2)):
        if i >= CHANGE_AT:
            ev = orjson.loads(line)
            ev["features"]["f10"] = None
            if i >= PHASE2_AT:
                ev["features"]["f03"] = ev["features"]["f03"] * 1000.0
            line = orjson.dumps(ev)
        out.append(line)
    return out


def test_input_violation_missing_then_out_of_range(kafka_bootstrap: str, setup: Callable[..., ServiceProcess]) -> None:
    svc = setup().start()
    _produce_stream(kafka_bootstrap, svc.events_topic, violation_lines())
    metrics = _wait(svc, f"{N} events consumed", lambda s: svc.consumed(s) >= N)
    assert (sample(metrics, "inferwatch_violation_rate", model_id=MODEL, reason="missing", feature="f10") or 0) > 0.5
    alerts = _stop_and_read_alerts(kafka_bootstrap, svc)
    seen = _summary(alerts)

    violations = [a for a in alerts if a["kind"] == "input_violation"]
    early = [a for a in violations if _index(a["event_id"]) < CHANGE_AT]
    assert not early, f"input_violation alerts before the change at {CHANGE_AT}: {_summary(early)}"

    missing = [
        a for a in violations
        if a["status"] == "open" and "f10" in a["features"] and a["evidence"].get("reason") == "missing"
    ]  # fmt: skip
    assert missing, f"no input_violation open alert naming f10 with reason 'missing'; alerts: {seen}"
    at = _index(missing[0]["event_id"])
    assert CHANGE_AT <= at < CHANGE_AT + DELAY_MAX, f"f10 missing detected at {at}, change at {CHANGE_AT}"
    assert missing[0]["evidence"].get("feature") == "f10", f"evidence {missing[0]['evidence']}"

    f03 = [a for a in violations if "f03" in a["features"]]
    early_f03 = [a for a in f03 if _index(a["event_id"]) < PHASE2_AT]
    assert not early_f03, f"input_violation naming f03 before {PHASE2_AT}: {_summary(early_f03)}"
    ranges = [a for a in f03 if a["status"] == "open" and a["evidence"].get("reason") == "out_of_range"]
    assert ranges, f"no input_violation open alert naming f03 with reason 'out_of_range'; alerts: {seen}"
    assert ranges[0]["evidence"].get("feature") == "f03", f"evidence {ranges[0]['evidence']}"
    at3 = _index(ranges[0]["event_id"])
    assert PHASE2_AT <= at3 < PHASE2_AT + DELAY_MAX, f"f03 out of range detected at {at3}, change at {PHASE2_AT}"
    assert _index(missing[0]["event_id"]) < at3


# ==================================================================================================
# 2. anomaly_rate: every 20th event is an outlier in f03 and f07
# ==================================================================================================
def anomaly_lines() -> list[bytes]:
    out = []
    for i, line in enumerate(STABLE.lines(N, seed=3)):
        if i >= CHANGE_AT and i % 20 == 0:
            ev = orjson.loads(line)
            ev["features"]["f03"] = 8.0
            ev["features"]["f07"] = -7.5
            line = orjson.dumps(ev)
        out.append(line)
    return out


def test_anomaly_rate_after_injection(kafka_bootstrap: str, setup: Callable[..., ServiceProcess]) -> None:
    scores_topic = f"iw-scores-{uuid.uuid4().hex[:10]}"
    svc = setup(anomaly={"scores_topic": scores_topic}).start()
    lines = anomaly_lines()
    _produce_stream(kafka_bootstrap, svc.events_topic, lines)
    _wait(svc, f"{N} events consumed", lambda s: svc.consumed(s) >= N)
    alerts = _stop_and_read_alerts(kafka_bootstrap, svc)
    seen = _summary(alerts)

    # -- the optional scores topic: one record per event, keyed by its id, naming what is odd
    msgs = read_topic(kafka_bootstrap, scores_topic)
    scores = [orjson.loads(m.value()) for m in msgs]
    assert [s["event_id"] for s in scores] == [orjson.loads(line)["event_id"] for line in lines]
    assert [m.key() for m in msgs] == [s["event_id"].encode() for s in scores]
    injected = [s for s in scores if _index(s["event_id"]) >= CHANGE_AT and _index(s["event_id"]) % 20 == 0]
    assert injected and all(s["flag"] and {"f03", "f07"} & set(s["top_features"][:2]) for s in injected)
    assert sum(s["flag"] for s in scores) < 2 * len(injected)

    early = [a for a in alerts if _index(a["event_id"]) < CHANGE_AT]
    assert not early, f"alerts before the injection at {CHANGE_AT}: {_summary(early)}"
    opened = [a for a in alerts if a["kind"] == "anomaly_rate" and a["status"] == "open"]
    assert opened, f"no anomaly_rate open alert; alerts: {seen}"
    alert = opened[0]
    at = _index(alert["event_id"])
    assert CHANGE_AT <= at < CHANGE_AT + DELAY_MAX, f"anomaly_rate opened at {at}, injection at {CHANGE_AT}"
    assert {"f03", "f07"} <= set(alert["features"]), f"anomaly_rate features {alert['features']} lack f03/f07"
    assert alert["model_id"] == MODEL and alert["severity"] in ("warning", "critical")


# ==================================================================================================
# 3. performance_drop from labels on a feedback topic (concept change, inputs unchanged)
# ==================================================================================================
LABELLED = SyntheticStream(labels=True)
LABEL_DELAY_MS = 3_000  # label event time: a few seconds after the prediction
FLIP_SHARE = 0.4


@pytest.fixture(scope="module")
def labelled_baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled-baseline")
    ref = write_jsonl(root / "reference.jsonl", list(LABELLED.lines(20_000, seed=1)))
    store = root / "store"
    run_cli("baseline", "build", "--input", str(ref), "--out", str(store))
    return store


def feedback_values() -> list[bytes]:
    """One feedback message per live event; 40 % of the labels flipped from ``CHANGE_AT`` on."""
    a = LABELLED.arrays(N, seed=2)
    rng = np.random.default_rng(11)
    flip = (a["idx"] >= CHANGE_AT) & (rng.random(N) < FLIP_SHARE)
    label = a["label"].astype(bool) ^ flip
    return [
        orjson.dumps(
            {
                "event_id": f"{MODEL}-{i}",
                "label": "approve" if label[i] else "deny",
                "ts": int(a["ts"][i]) + LABEL_DELAY_MS,
            }
        )
        for i in range(N)
    ]


def test_performance_drop_from_feedback_topic(
    kafka_bootstrap: str,
    kafka_topic_factory: TopicFactory,
    setup: Callable[..., ServiceProcess],
    labelled_baseline: Path,
) -> None:
    feedback_topic = kafka_topic_factory(prefix="iw-feedback", config=KEEP)
    svc = setup(baselines={"store": str(labelled_baseline)}, performance={"feedback_topic": feedback_topic}).start()
    lines = list(STABLE.lines(N, seed=2))  # the same events as LABELLED.arrays(N, seed=2), without labels
    assert b'"label"' not in lines[0]
    feedback = feedback_values()

    # Events at ~6000/s in the background; labels follow only for events the service has consumed.
    errors: list[BaseException] = []

    def produce_events() -> None:
        try:
            timestamps = [orjson.loads(line)["ts"] for line in lines]
            produce(kafka_bootstrap, svc.events_topic, lines, timestamps=timestamps, rate=6000)
        except BaseException as e:
            errors.append(e)

    events_thread = threading.Thread(target=produce_events, daemon=True)
    events_thread.start()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    sent = 0
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while sent < N:
        assert not errors, f"producing events failed: {errors[0]!r}"
        assert time.monotonic() < deadline, (
            f"only {sent} of {N} labels sent in {CONSUME_TIMEOUT_S} s (consumed {svc.consumed()}); "
            f"log:\n{_tail(svc.log)}"
        )
        upto = min(int(svc.consumed(_wait(svc, "a metrics scrape", lambda s: True))), N)
        for i in range(sent, upto):
            while True:
                try:
                    producer.produce(feedback_topic, feedback[i], timestamp=int(orjson.loads(feedback[i])["ts"]))
                    break
                except BufferError:
                    producer.poll(0.05)
        sent = max(sent, upto)
        producer.poll(0)
        time.sleep(0.2)
    assert producer.flush(30) == 0, "feedback not delivered within 30 s"
    events_thread.join(30)
    assert not events_thread.is_alive() and not errors, f"producing events failed: {errors[:1]}"

    def joined(s: Any) -> float:
        return sample(s, "inferwatch_label_join", model_id=MODEL, counter="joined") or 0.0

    metrics = _wait(svc, f"{N} labels joined", lambda s: joined(s) >= N)
    assert joined(metrics) == N
    assert (sample(metrics, "inferwatch_feedback_labels_total") or 0) == N
    accuracy = sample(metrics, "inferwatch_performance", model_id=MODEL, metric="accuracy")
    assert accuracy is not None and 0.0 < accuracy < 1.0, f"inferwatch_performance accuracy: {accuracy}"
    assert (sample(metrics, "inferwatch_label_join", model_id=MODEL, counter="unknown") or 0) == 0

    alerts = _stop_and_read_alerts(kafka_bootstrap, svc)
    seen = _summary(alerts)
    drift = [a for a in alerts if a["kind"] == "feature_drift"]
    assert not drift, f"feature_drift alerts with unchanged inputs: {_summary(drift)}"
    perf = [a for a in alerts if a["kind"] == "performance_drop"]
    early = [a for a in perf if _index(a["event_id"]) < CHANGE_AT]
    assert not early, f"performance_drop before the concept change at {CHANGE_AT}: {_summary(early)}"
    labelled = [
        a for a in perf
        if a["status"] == "open"
        and a["evidence"].get("estimated") is False
        and a["statistic"] in ("accuracy", "log_loss")
    ]  # fmt: skip
    assert labelled, f"no performance_drop open alert on accuracy or log_loss from labels; alerts: {seen}"
    alert = labelled[0]
    at = _index(alert["event_id"])
    assert CHANGE_AT <= at < CHANGE_AT + DELAY_MAX, f"performance_drop at {at}, concept change at {CHANGE_AT}"
    assert alert["source"].get("feedback") is True and alert["source"].get("topic") == feedback_topic
