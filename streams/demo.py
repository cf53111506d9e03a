"""``inferwatch demo``: a synthetic model's traffic with drift injected half way, on a real broker."""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from baselines.build import build_baseline, infer_schema
from streams.config import Settings
from streams.decode import Decoder, parse_events
from streams.kafka_io import ensure_topics
from streams.service import Service, open_store
from streams.synthetic import SyntheticStream


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_demo(bootstrap: str, *, workdir: Path, events: int = 40_000, rate: float = 8000.0) -> int:
    """Run the demo; returns 0 when the injected drift was caught and nothing fired before it."""
    run_id = uuid.uuid4().hex[:8]
    workdir.mkdir(parents=True, exist_ok=True)
    shift_at = events // 2
    # Event times end now: the broker's retention would delete days-old synthetic events mid-demo.
    start_ts = int(time.time() * 1000) - events * 10
    model = SyntheticStream(shift_feature=5, shift_at=shift_at, shift_by=0.5, start_ts=start_ts)
    _say(f"inferwatch demo {run_id}: model {model.model_id!r}, {model.n_numeric} numeric features + 'region'")

    # 1. A baseline from reference traffic (the model's validation data, say).
    ref_lines = list(SyntheticStream().lines(20_000, seed=1))
    objs, _, _ = parse_events(ref_lines)
    schema = infer_schema(objs, model.model_id)
    batch = Decoder({model.model_id: schema}).decode(ref_lines).batches[0].batch
    settings = Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topics": [f"demo-{run_id}.events"],
                "group_id": f"inferwatch-demo-{run_id}",
                "alerts_topic": f"demo-{run_id}.alerts",
                "dead_letter_topic": f"demo-{run_id}.dead-letters",
            },
            "baselines": {"store": str(workdir / "baselines")},
            "checkpoint": {"dir": str(workdir / f"state-{run_id}")},
            "metrics": {"port": _free_port()},
        }
    )
    info = build_baseline(open_store(settings), batch, schema, source={"demo": run_id}, promote=True)
    open_store(settings).promote(model.model_id, info.version, reason="demo")
    _say(f"baseline {model.model_id}/{info.version} built from {len(batch):,} reference events and promoted")

    k = settings.kafka
    ensure_topics(k.common(), [*k.topics, k.alerts_topic, k.dead_letter_topic])

    # 2. The detector service, as `inferwatch run` would start it.
    service = Service(settings)
    failure: list[BaseException] = []

    def _serve() -> None:
        try:
            service.run()
        except BaseException as e:  # reported below, the demo must not hang
            failure.append(e)
            service.ready.set()

    worker = threading.Thread(target=_serve, name="inferwatch-service", daemon=True)
    worker.start()
    service.ready.wait(60)
    if failure:
        _say(f"service failed to start: {failure[0]}")
        return 1
    _say(f"detector running; Prometheus metrics at http://127.0.0.1:{service.metrics_port}/metrics")

    # 3. Print alerts as they arrive on the alerts topic.
    alerts: list[dict[str, Any]] = []
    stop_reader = threading.Event()

    def _read_alerts() -> None:
        c = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"demo-reader-{run_id}", "auto.offset.reset": "earliest"}
        )
        c.subscribe([k.alerts_topic])
        try:
            while not stop_reader.is_set():
                m = c.poll(0.2)
                value = None if m is None or m.error() is not None else m.value()
                if value is None:
                    continue
                a = orjson.loads(value)
                alerts.append(a)
                # info records are leads for a person (e.g. a heavy client covering every class), not alarms
                label = "note " if a["severity"] == "info" else "ALERT"
                _say(
                    f"  {label} [{a['severity']:>8}] {a['status']:>8} {a['kind']} {a['features']} at "
                    f"{a['event_id']}: {a['message']}"
                )
        finally:
            c.close()

    reader = threading.Thread(target=_read_alerts, name="alert-reader", daemon=True)
    reader.start()

    # 4. Stream the traffic, paced, with a few broken messages on the way.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    topic = k.topics[0]
    _say(f"streaming {events:,} events to {topic}; feature f05 shifts by 0.5 sd at event {shift_at:,}")
    t0 = time.monotonic()
    for i, line in enumerate(model.lines(events, seed=2)):
        ts = model.start_ts + i * model.interval_ms
        p.produce(topic, line, timestamp=ts)
        if i % 10_000 == 5_000:
            p.produce(topic, b'{"event_id": "broken-' + str(i).encode() + b'", "features": ')
        if i % 1000 == 0:
            p.poll(0)
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        if i == shift_at:
            _say(f"  ... drift injected at event {shift_at:,}")
    p.flush(30)

    # 5. Wait until the service has caught up, then stop it cleanly.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = (
            service.registry.get_sample_value("inferwatch_events_consumed_total", {"model_id": model.model_id}) or 0.0
        )
        if done >= events:
            break
        time.sleep(0.5)
    time.sleep(2)
    service.stop()
    worker.join(30)
    stop_reader.set()
    reader.join(10)
    reg = service.registry
    consumed = reg.get_sample_value("inferwatch_events_consumed_total", {"model_id": model.model_id}) or 0
    invalid = sum(
        s.value
        for m in reg.collect()
        if m.name == "inferwatch_events_invalid"
        for s in m.samples
        if s.name.endswith("_total")
    )
    opened = [a for a in alerts if a["status"] == "open"]
    early = [a for a in opened if a["severity"] != "info" and int(a["event_id"].rsplit("-", 1)[1]) < shift_at]
    caught = [a for a in opened if a["features"] == ["f05"]]
    _say(
        f"done: {int(consumed):,} events, {int(invalid)} dead letters (topic {k.dead_letter_topic}), "
        f"{len(alerts)} alert records"
    )
    if failure:
        _say(f"service failed: {failure[0]}")
        return 1
    if not caught or early:
        _say("demo FAILED: the injected drift was not caught, or a warning fired before it")
        return 1
    delay = int(caught[0]["event_id"].rsplit("-", 1)[1]) - shift_at
    _say(f"drift of f05 caught {delay:,} events after it started; no warning or critical alert before it")
    return 0
