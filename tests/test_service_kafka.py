"""End-to-end tests of ``inferwatch run`` and ``inferwatch replay --topic`` against the real broker.

Everything goes through the installed console script as a subprocess and real Kafka clients: the
service reads a topic the test fills with a real producer, and the test reads the alerts and
dead-letter topics, the consumer group's committed offsets, the checkpoint file and the Prometheus
endpoint back. Every wait is bounded and fails with what was seen so far and the service's log.

Event streams come from :class:`streams.synthetic.SyntheticStream` (seeded, so every run sees the
same events and the same alert ids); message timestamps are the events' ``ts``. Those lie in a
fixed past, so every topic here is created with ``retention.ms=-1`` (the broker's default 7-day
retention would otherwise delete them under the test's feet).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client.parser import text_string_to_metric_families
from test_pipeline import dense_last_pane_lines

from streams.alerts import ALERT_KINDS
from streams.checkpoint import CheckpointStore
from streams.synthetic import SyntheticStream

pytestmark = pytest.mark.kafka

TopicFactory = Callable[..., str]  # the kafka_topic_factory fixture of tests/conftest.py

REPO = Path(__file__).resolve().parent.parent
MODEL = "credit-risk"
KEEP = {"retention.ms": "-1"}  # event timestamps are in a fixed past; never let retention delete them

N_EVENTS = 30_000
SHIFT_AT = 15_000
SHIFT_FEATURE = "f05"
DRIFT = SyntheticStream(shift_feature=5, shift_at=SHIFT_AT, shift_by=0.4)
STABLE = SyntheticStream()
INTERVAL_MS = DRIFT.interval_ms
DETECTION_DELAY_MAX = 5_000

READY_TIMEOUT_S = 30.0
PROCESS_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0
CHECKPOINT_INTERVAL_S = 1.0


def _inferwatch() -> str:
    """The console script of the interpreter running the tests (the project venv), else the repo's venv."""
    here = Path(sys.executable).parent / "inferwatch"
    return str(here if here.exists() else REPO / ".venv" / "bin" / "inferwatch")


def _clean_env() -> dict[str, str]:
    """The environment without INFERWATCH__* overrides, so only the test's config file counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH__")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _index(event_id: str) -> int:
    """Stream index of a synthetic event id (``credit-risk-12345`` -> 12345)."""
    return int(event_id.rsplit("-", 1)[1])


def _without_source(alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "source"} for a in alerts]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_cli(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run ``inferwatch ARGS``; fail the test with its output unless it exits 0."""
    proc = subprocess.run(
        [_inferwatch(), *args], capture_output=True, text=True, timeout=timeout, env=_clean_env(), check=False
    )
    assert proc.returncode == 0, (
        f"inferwatch {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
        f"stderr:\n{proc.stderr[-3000:]}"
    )
    return proc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_jsonl(path: Path, lines: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


# -- streams ---------------------------------------------------------------------------------------
@functools.cache
def drift_lines() -> tuple[bytes, ...]:
    """30,000 events; ``f05`` shifts by 0.4 sd from event 15,000 on."""
    return tuple(DRIFT.lines(N_EVENTS, seed=2))


@functools.cache
def incident_lines() -> tuple[bytes, ...]:
    """30,000 events with a whole incident: ``f05`` shifts by 0.7 sd over events 10,000..17,999, then
    returns. A replay gives ``open`` (~11k), ``update`` to critical (~11.6k) and ``resolved`` (~21k)."""
    shifted = SyntheticStream(shift_feature=5, shift_at=0, shift_by=0.7)
    return (
        *STABLE.lines(10_000, seed=2),
        *shifted.lines(8_000, seed=3, offset=10_000),
        *STABLE.lines(12_000, seed=4, offset=18_000),
    )


def ts_of(index: int) -> int:
    return STABLE.start_ts + index * INTERVAL_MS


# -- Kafka helpers ---------------------------------------------------------------------------------
def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    *,
    timestamps: Sequence[int] | None = None,
    keys: Sequence[bytes | None] | None = None,
    rate: float | None = None,
    first: int = 0,
) -> list[tuple[int, int]]:
    """Produce ``values`` in order (idempotent, acks=all); returns (partition, offset) per value.

    ``rate`` paces production (messages per second) so a service has something left to do when a
    test interrupts it. ``first`` is the index of ``values[0]`` (for pacing and the return value).
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 30_000}
    )
    where: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(i: int) -> Callable[[KafkaError | None, Message], None]:
        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(f"{i}: {err}")
            else:
                where[i] = (msg.partition(), msg.offset())

        return cb

    t0 = time.monotonic()
    for j, value in enumerate(values):
        i = first + j
        kwargs: dict[str, Any] = {}
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[j]
        if keys is not None:
            kwargs["key"] = keys[j]
        while True:
            try:
                producer.produce(topic, value=value, on_delivery=on_delivery(i), **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        if j % 500 == 0:
            producer.poll(0)
            if rate is not None:
                ahead = j / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages to {topic} not delivered within 30 s"
    assert not errors, f"delivery errors to {topic}: {errors[:5]}"
    return [where[first + j] for j in range(len(values))]


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every message of ``topic`` up to its current end, partition by partition in offset order."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        want = sum(ends.values())
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts if ends[p] > 0])
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < want:
            assert time.monotonic() < deadline, f"read {len(got)} of {want} messages of {topic} in {timeout} s"
            for m in c.consume(1000, 0.5):
                assert m.error() is None, f"reading {topic}: {m.error()}"
                if m.offset() < ends[m.partition()]:
                    got.append(m)
    finally:
        c.close()
    return sorted(got, key=lambda m: (m.partition(), m.offset()))


def end_offsets(bootstrap: str, topic: str, partitions: int = 1) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-watermarks"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int]:
    """The group's committed offsets (negative: none), read without joining the group."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        c.close()


# -- metrics ---------------------------------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def samples_named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


# -- the service as a subprocess -------------------------------------------------------------------
class ServiceProcess:
    """``inferwatch run --config CONFIG`` with its log in a file and its metrics scraped over HTTP."""

    def __init__(
        self,
        config: Path,
        log: Path,
        port: int,
        *,
        events_topic: str,
        alerts_topic: str,
        dead_topic: str,
        group: str,
        checkpoint_dir: Path,
    ) -> None:
        self.config, self.log, self.port = config, log, port
        self.events_topic, self.alerts_topic, self.dead_topic = events_topic, alerts_topic, dead_topic
        self.group, self.checkpoint_dir = group, checkpoint_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log.open("ab") as fh:
            fh.write(b"\n==== start ====\n")
            self.proc = subprocess.Popen(
                [_inferwatch(), "run", "--config", str(self.config)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
            )
        self.wait_ready()
        return self

    def _alive(self) -> None:
        assert self.proc is not None
        rc = self.proc.poll()
        if rc is not None:
            pytest.fail(f"inferwatch run exited with {rc}; log:\n{_tail(self.log)}", pytrace=False)

    def scrape(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            assert resp.status == 200
            return parse_metrics(resp.read().decode())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self._alive()
            try:
                self.scrape()
                return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"inferwatch run not serving metrics after {READY_TIMEOUT_S} s; log:\n{_tail(self.log)}",
                    pytrace=False,
                )
            time.sleep(0.1)

    def wait_for(self, what: str, predicate: Callable[[Samples], bool], timeout: float = PROCESS_TIMEOUT_S) -> Samples:
        """Scrape until ``predicate`` holds; fail with the last values and the log otherwise."""
        deadline = time.monotonic() + timeout
        last: Samples = {}
        while True:
            self._alive()
            last = self.scrape()
            if predicate(last):
                return last
            if time.monotonic() > deadline:
                shown = {k: v for k, v in last.items() if k[0].startswith("inferwatch_") and "bucket" not in k[0]}
                pytest.fail(
                    f"timed out after {timeout} s waiting for {what}; metrics: {shown}\nlog:\n{_tail(self.log)}",
                    pytrace=False,
                )
            time.sleep(0.1)

    def consumed(self, samples: Samples | None = None) -> float:
        return sample(samples or self.scrape(), "inferwatch_events_consumed_total", model_id=MODEL) or 0.0

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM; returns the exit code, failing if it does not exit within ``timeout``."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(
                f"inferwatch run did not exit within {timeout} s of SIGTERM; log:\n{_tail(self.log)}", pytrace=False
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Services started by a test; any still running at its end are killed."""
    started: list[ServiceProcess] = []
    yield started
    for s in started:
        s.cleanup()


# -- the baseline store, once per module -----------------------------------------------------------
@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store with the active baseline of ``credit-risk`` built by ``inferwatch baseline build``
    from 20,000 stable reference events; returns (store, version)."""
    root = tmp_path_factory.mktemp("baseline")
    ref = write_jsonl(root / "reference.jsonl", list(STABLE.lines(20_000, seed=1)))
    store = root / "store"
    out = run_cli("baseline", "build", "--input", str(ref), "--out", str(store))
    version = out.stdout.strip().splitlines()[-1]
    assert len(version) == 16, f"unexpected version output {out.stdout!r}"
    return store, version


@pytest.fixture
def setup(
    kafka_bootstrap: str,
    kafka_topic_factory: TopicFactory,
    baseline: tuple[Path, str],
    tmp_path: Path,
    services: list[ServiceProcess],
) -> Callable[..., ServiceProcess]:
    """``setup(partitions=1, **settings) -> ServiceProcess`` (not started): unique topics, group,
    checkpoint dir and metrics port; ``settings`` update the config sections."""

    def make(partitions: int = 1, **sections: dict[str, Any]) -> ServiceProcess:
        events = kafka_topic_factory(partitions=partitions, prefix="iw-events", config=KEEP)
        alerts = kafka_topic_factory(prefix="iw-alerts", config=KEEP)
        dead = kafka_topic_factory(prefix="iw-dead", config=KEEP)
        port = _free_port()
        config: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "topics": [events],
                "group_id": f"iw-test-{events}",
                "alerts_topic": alerts,
                "dead_letter_topic": dead,
                "batch_size": 2000,
                "batch_timeout_s": 0.2,
                # A SIGKILLed member must not hold the partition for the default 45 s on restart.
                "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            "baselines": {"store": str(baseline[0])},
            "checkpoint": {"dir": str(tmp_path / "state"), "interval_s": CHECKPOINT_INTERVAL_S},
            "metrics": {"host": "127.0.0.1", "port": port},
            "logging": {"level": "INFO"},
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        path = tmp_path / "config.json"
        path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        svc = ServiceProcess(
            path,
            tmp_path / "service.log",
            port,
            events_topic=events,
            alerts_topic=alerts,
            dead_topic=dead,
            group=config["kafka"]["group_id"],
            checkpoint_dir=tmp_path / "state",
        )
        services.append(svc)
        return svc

    return make


def replay_file_alerts(
    baseline: tuple[Path, str], lines: Sequence[bytes], tmp: Path, name: str
) -> list[dict[str, Any]]:
    """Alerts of ``inferwatch replay --input`` over ``lines``."""
    events = write_jsonl(tmp / f"{name}.jsonl", lines)
    out = tmp / f"{name}-alerts.jsonl"
    run_cli("replay", "--baselines", str(baseline[0]), "--input", str(events), "--alerts", str(out))
    return read_jsonl(out)


# ==================================================================================================
# 1. inferwatch run: detection, the alert contract, metrics, clean shutdown
# ==================================================================================================
@pytest.mark.parametrize("decode_ahead", [True, False], ids=["decode-ahead", "decode-here"])
def test_run_detects_shift_publishes_contract_alert_and_stops_cleanly(
    kafka_bootstrap: str, setup: Callable[..., ServiceProcess], baseline: tuple[Path, str], decode_ahead: bool
) -> None:
    # No periodic checkpoint: the offsets that SIGTERM leaves committed are the shutdown path's work.
    svc = setup(checkpoint={"interval_s": 3600}, kafka={"decode_ahead": decode_ahead}).start()
    lines = drift_lines()
    timestamps = [orjson.loads(line)["ts"] for line in lines]
    positions = produce(kafka_bootstrap, svc.events_topic, lines, timestamps=timestamps)
    assert positions == [(0, i) for i in range(N_EVENTS)]

    svc.wait_for(f"{N_EVENTS} events consumed", lambda s: svc.consumed(s) >= N_EVENTS)
    lag_key = {"topic": svc.events_topic, "partition": "0"}
    metrics = svc.wait_for("consumer lag 0", lambda s: sample(s, "inferwatch_consumer_lag", **lag_key) == 0.0)

    # -- metrics, over HTTP
    assert svc.consumed(metrics) == N_EVENTS
    assert samples_named(metrics, "inferwatch_events_invalid_total") == {}
    assert (sample(metrics, "inferwatch_batch_seconds_count") or 0) >= 1
    assert sample(metrics, "inferwatch_batch_seconds_bucket", le="+Inf") == sample(
        metrics, "inferwatch_batch_seconds_count"
    )
    assert (sample(metrics, "inferwatch_batch_seconds_sum") or 0) > 0
    drift = samples_named(metrics, "inferwatch_drift_statistic")
    psi = {dict(k)["column"]: v for k, v in drift.items() if dict(k)["statistic"] == "psi"}
    pvalues = {dict(k)["column"]: v for k, v in drift.items() if dict(k)["statistic"] == "p_value"}
    features = [f"f{i:02d}" for i in range(16)] + ["region"]
    assert set(features) <= set(psi), f"psi gauges missing for {set(features) - set(psi)}"
    assert set(features) <= set(pvalues), f"p_value gauges missing for {set(features) - set(pvalues)}"
    assert psi[SHIFT_FEATURE] == max(psi[f] for f in features), f"f05 is not the most drifted feature: {psi}"
    assert psi[SHIFT_FEATURE] >= 0.1 and all(0.0 <= p <= 1.0 for p in pvalues.values())
    assert sample(metrics, "inferwatch_checkpoints_total") == 0
    # Nothing is committed before it is checkpointed (no auto-commit behind the service's back).
    assert committed_offsets(kafka_bootstrap, svc.group, svc.events_topic) == [OFFSET_INVALID]

    # -- clean shutdown and committed offsets
    t0 = time.monotonic()
    rc = svc.terminate()
    assert rc == 0, f"exit code {rc} after SIGTERM; log:\n{_tail(svc.log)}"
    assert time.monotonic() - t0 < 8.0, f"SIGTERM took {time.monotonic() - t0:.1f} s"
    assert end_offsets(kafka_bootstrap, svc.events_topic) == [N_EVENTS]
    assert committed_offsets(kafka_bootstrap, svc.group, svc.events_topic) == [N_EVENTS]
    cp = CheckpointStore(svc.checkpoint_dir).load()
    assert cp is not None and cp.offsets == {f"{svc.events_topic}:0": N_EVENTS}

    # -- the alerts topic
    msgs = read_topic(kafka_bootstrap, svc.alerts_topic)
    alerts = [orjson.loads(m.value()) for m in msgs]
    assert alerts, f"no alert published; log:\n{_tail(svc.log)}"
    assert [m.key() for m in msgs] == [a["alert_id"].encode() for a in alerts], "alerts must be keyed by alert_id"
    by_kind = Counter((a["kind"], a["status"]) for a in alerts)
    for (kind, status), n in by_kind.items():
        assert sample(metrics, "inferwatch_alerts_total", model_id=MODEL, kind=kind, status=status) == n
    assert sum(samples_named(metrics, "inferwatch_alerts_total").values()) == len(alerts)

    early = [a for a in alerts if _index(a["event_id"]) < SHIFT_AT]
    assert not early, f"alerts before the shift at {SHIFT_AT}: {[(a['kind'], a['event_id']) for a in early]}"
    opened = [
        a for a in alerts if a["kind"] == "feature_drift" and a["status"] == "open" and SHIFT_FEATURE in a["features"]
    ]
    assert opened, f"no feature_drift open alert naming {SHIFT_FEATURE}: {[(a['kind'], a['features']) for a in alerts]}"
    alert = opened[0]
    at = _index(alert["event_id"])
    assert SHIFT_AT <= at < SHIFT_AT + DETECTION_DELAY_MAX, f"detected at {at}, shift at {SHIFT_AT}"

    # -- every field of the contract
    contract = {
        "alert_id",
        "incident_id",
        "status",
        "kind",
        "severity",
        "model_id",
        "baseline_version",
        "event_id",
        "event_ts",
        "window",
        "features",
        "client_id",
        "statistic",
        "value",
        "threshold",
        "p_value",
        "message",
        "evidence",
        "source",
    }
    assert set(alert) == contract, f"fields differ from the contract: {set(alert) ^ contract}"
    assert isinstance(alert["alert_id"], str) and len(alert["alert_id"]) == 32
    int(alert["alert_id"], 16)
    assert len({a["alert_id"] for a in alerts}) == len(alerts), "duplicate alert ids"
    assert alert["kind"] == "feature_drift" and alert["kind"] in ALERT_KINDS
    assert alert["severity"] in ("warning", "critical")
    assert alert["model_id"] == MODEL
    assert alert["baseline_version"] == baseline[1]
    assert alert["event_ts"] == timestamps[at] == ts_of(at)
    window = alert["window"]
    assert set(window) == {"start_ts", "end_ts", "events"}
    assert window["events"] == 2000, "count window of drift.size events"
    assert window["end_ts"] == alert["event_ts"]
    assert window["start_ts"] == ts_of(at - window["events"] + 1)
    assert alert["features"] == [SHIFT_FEATURE]
    assert alert["client_id"] is None
    assert alert["statistic"] == "psi"
    assert isinstance(alert["value"], float) and isinstance(alert["threshold"], float)
    assert alert["value"] >= alert["threshold"] > 0
    assert alert["threshold"] == (0.1 if alert["severity"] == "warning" else 0.25)
    assert isinstance(alert["p_value"], float) and 0.0 <= alert["p_value"] < 1e-3
    assert isinstance(alert["message"], str) and SHIFT_FEATURE in alert["message"]
    assert isinstance(alert["evidence"], dict) and alert["evidence"].get("column") == SHIFT_FEATURE
    assert alert["source"] == {
        "topic": svc.events_topic,
        "partition": 0,
        "offset": at,
        "ranges": [
            {"topic": svc.events_topic, "partition": 0, "offset_start": at - window["events"] + 1, "offset_end": at}
        ],
    }
    # The live service and a file replay of the same events agree, ids included.
    replayed = replay_file_alerts(baseline, lines, svc.log.parent, "drift")
    assert _without_source(alerts) == _without_source(replayed)


def test_run_with_metrics_port_in_use_fails_in_one_line(setup: Callable[..., ServiceProcess]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        svc = setup(metrics={"port": port}, logging={"level": "WARNING"})
        proc = subprocess.run(
            [_inferwatch(), "run", "--config", str(svc.config)],
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT_S,
            env=_clean_env(),
            check=False,
        )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"inferwatch: error: cannot serve metrics on 127.0.0.1:{port}"), (
        proc.stderr
    )


# ==================================================================================================
# 2. Dead letters
# ==================================================================================================
def _event(i: int, **change: Any) -> dict[str, Any]:
    ev: dict[str, Any] = orjson.loads(next(STABLE.lines(1, seed=100 + i, offset=i)))
    for k, v in change.items():
        if v is None:
            ev.pop(k)
        else:
            ev[k] = v
    return ev


def test_run_sends_bad_messages_to_dead_letters_and_keeps_running(
    kafka_bootstrap: str, setup: Callable[..., ServiceProcess]
) -> None:
    max_bytes = 4096
    svc = setup(max_message_bytes=max_bytes).start()
    good = list(STABLE.lines(3000, seed=5))
    assert max(len(x) for x in good) < max_bytes
    oversize = orjson.dumps(_event(900_001, padding="x" * 10_000))
    bad: list[tuple[bytes | None, str]] = [
        (b'{"event_id": "broken-1", "features": ', "not_json"),
        (orjson.dumps(_event(900_002, event_id=None)), "missing_field"),
        (orjson.dumps(_event(900_003, model_id="ghost-model")), "no_baseline"),
        (oversize, "oversize"),
        (None, "not_json"),  # a tombstone
        (b"\xff\xfe not utf-8 \xc3", "not_utf8"),
        (b"[1, 2, 3]", "not_object"),
        (orjson.dumps(_event(900_004, ts="yesterday")), "bad_type"),
        # dated two hours after the message's own timestamp (now): a wrong clock
        (orjson.dumps(_event(900_005, ts=int(time.time() * 1000) + 7_200_000)), "future_ts"),
    ]
    # Interleave: the bad messages spread over the stream, the last one after most good events.
    values: list[bytes | None] = []
    expect_reason: dict[int, str] = {}
    step = len(good) // len(bad)
    for k, (raw, reason) in enumerate(bad):
        values.extend(good[k * step : (k + 1) * step])
        expect_reason[len(values)] = reason
        values.append(raw)
    values.extend(good[len(bad) * step :])
    positions = produce(kafka_bootstrap, svc.events_topic, values)
    produced = len(values)
    assert positions == [(0, i) for i in range(produced)]

    metrics = svc.wait_for(
        "every message consumed or dead-lettered",
        lambda s: svc.consumed(s) + sum(samples_named(s, "inferwatch_events_invalid_total").values()) >= produced,
    )
    assert svc.proc is not None and svc.proc.poll() is None, "the service stopped on bad input"
    # Still alive and consuming: a good event after all of that is processed.
    produce(kafka_bootstrap, svc.events_topic, list(STABLE.lines(1, seed=6, offset=3000)), first=produced)
    produced += 1
    metrics = svc.wait_for("the event after the dead letters", lambda s: svc.consumed(s) >= len(good) + 1)

    invalid = {dict(k)["reason"]: v for k, v in samples_named(metrics, "inferwatch_events_invalid_total").items()}
    assert invalid == dict(Counter(expect_reason.values())), invalid
    consumed = svc.consumed(metrics)
    assert consumed == len(good) + 1
    assert consumed + sum(invalid.values()) == produced, "a message was lost or counted twice"

    rc = svc.terminate()
    assert rc == 0, f"exit code {rc}; log:\n{_tail(svc.log)}"
    assert committed_offsets(kafka_bootstrap, svc.group, svc.events_topic) == [produced]

    dead = read_topic(kafka_bootstrap, svc.dead_topic)
    assert len(dead) == len(bad), f"{len(dead)} dead letters for {len(bad)} bad messages"
    for m in dead:
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        assert headers.get("inferwatch.source.topic") == svc.events_topic
        assert headers.get("inferwatch.source.partition") == "0"
        offset = int(headers["inferwatch.source.offset"])
        assert offset in expect_reason, f"dead letter for offset {offset}, which was a good event"
        assert headers["inferwatch.reason"] == expect_reason[offset], (offset, headers)
        assert headers["inferwatch.detail"].strip(), f"empty detail for {headers}"
        assert "\n" not in headers["inferwatch.detail"]
        original = values[offset]
        assert m.value() == (original if original is not None else b""), f"dead letter {offset} is not the raw bytes"
    assert sorted(
        int(dict((k, v.decode()) for k, v in m.headers() or [])["inferwatch.source.offset"]) for m in dead
    ) == sorted(expect_reason)
    by_reason = {dict((k, v.decode()) for k, v in m.headers() or [])["inferwatch.reason"]: m for m in dead}
    oversize_detail = dict((k, v.decode()) for k, v in by_reason["oversize"].headers() or [])["inferwatch.detail"]
    assert str(len(oversize)) in oversize_detail and str(max_bytes) in oversize_detail
    no_baseline = dict((k, v.decode()) for k, v in by_reason["no_baseline"].headers() or [])["inferwatch.detail"]
    assert "ghost-model" in no_baseline


# ==================================================================================================
# 3. Restarts: no loss, no duplicates (SIGTERM); no loss (SIGKILL)
# ==================================================================================================
class Feeder:
    """Produces ``lines[first:]`` of the incident stream in a background thread at a steady rate."""

    RATE = 6000.0

    def __init__(self, bootstrap: str, topic: str, first: int) -> None:
        self.error: BaseException | None = None
        lines = incident_lines()[first:]
        ts = [ts_of(i) for i in range(first, first + len(lines))]

        def run() -> None:
            try:
                produce(bootstrap, topic, lines, timestamps=ts, rate=self.RATE, first=first)
            except BaseException as e:
                self.error = e

        self.thread = threading.Thread(target=run, name="feeder", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(PROCESS_TIMEOUT_S)
        assert not self.thread.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error


# Restart scenario on the incident stream (open ~11.0k, update ~11.6k, resolved ~21k):
#   1. events 0..9,999 are produced and processed; the first periodic checkpoint records offset 10,000;
#   2. the rest is produced at 6,000 events/s; once 14,000 are processed (the open and update alerts
#      published, the next periodic checkpoint still seconds away) the service is interrupted;
#   3. it is restarted while the stream goes on, and stopped with SIGTERM at the end.
RESTART_CHECKPOINT_S = 6.0
FIRST_CHECKPOINT = 10_000
INTERRUPT_AT = 14_000


def _checkpoint_offset(svc: ServiceProcess) -> int | None:
    cp = CheckpointStore(svc.checkpoint_dir).load()
    return None if cp is None else cp.offsets.get(f"{svc.events_topic}:0")


def _restart_case(
    kafka_bootstrap: str, svc: ServiceProcess, baseline: tuple[Path, str], interrupt: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Returns (alerts on the topic at the end, alerts on it before the restart, replay alerts, facts)."""
    events, group = svc.events_topic, svc.group
    svc.start()
    lines = incident_lines()
    produce(kafka_bootstrap, events, lines[:FIRST_CHECKPOINT], timestamps=[ts_of(i) for i in range(FIRST_CHECKPOINT)])
    deadline = time.monotonic() + RESTART_CHECKPOINT_S + PROCESS_TIMEOUT_S
    while _checkpoint_offset(svc) != FIRST_CHECKPOINT:
        assert time.monotonic() < deadline, f"no checkpoint at offset {FIRST_CHECKPOINT}: {_checkpoint_offset(svc)}"
        time.sleep(0.1)
    first_checkpoint_ns = (svc.checkpoint_dir / "checkpoint.npz").stat().st_mtime_ns

    feeder = Feeder(kafka_bootstrap, events, FIRST_CHECKPOINT)
    svc.wait_for(
        f"{INTERRUPT_AT} events consumed and the incident's open and update alerts published",
        lambda s: svc.consumed(s) >= INTERRUPT_AT and sum(samples_named(s, "inferwatch_alerts_total").values()) >= 2,
    )
    time.sleep(0.3)  # let the producer's acknowledgements of those alerts arrive (linger.ms=5)
    facts = {"consumed_seen_before_stop": int(svc.consumed(svc.scrape()))}
    if interrupt == "term":
        rc = svc.terminate()
        assert rc == 0, f"exit code {rc} after SIGTERM; log:\n{_tail(svc.log)}"
    else:
        svc.kill()
    stopped_ns = time.time_ns()
    # The next periodic checkpoint is due RESTART_CHECKPOINT_S after the first (minus a batch).
    assert stopped_ns - first_checkpoint_ns < (RESTART_CHECKPOINT_S - 1.0) * 1e9, (
        f"too slow for this scenario: interrupted {(stopped_ns - first_checkpoint_ns) / 1e9:.1f} s after the "
        f"checkpoint, when the next one may already have been written"
    )
    cp_offset = _checkpoint_offset(svc)
    assert cp_offset is not None
    facts["checkpoint_offset"] = cp_offset
    facts["committed_at_stop"] = committed_offsets(kafka_bootstrap, group, events)[0]
    before = [orjson.loads(m.value()) for m in read_topic(kafka_bootstrap, svc.alerts_topic)]

    svc.start()
    feeder.join()
    svc.wait_for("the rest of the stream", lambda s: svc.consumed(s) >= N_EVENTS - cp_offset)
    time.sleep(0.5)  # anything beyond the expected count would show now
    facts["consumed_after_restart"] = int(svc.consumed(svc.scrape()))
    rc = svc.terminate()
    assert rc == 0, f"exit code {rc} after the final SIGTERM; log:\n{_tail(svc.log)}"
    assert committed_offsets(kafka_bootstrap, group, events) == [N_EVENTS]

    alerts = [orjson.loads(m.value()) for m in read_topic(kafka_bootstrap, svc.alerts_topic)]
    assert alerts[: len(before)] == before
    replayed = replay_file_alerts(baseline, lines, svc.log.parent, "incident")
    statuses = [a["status"] for a in replayed]
    assert statuses == ["open", "update", "resolved"], f"the incident stream changed: {statuses}"
    assert [_index(a["event_id"]) < INTERRUPT_AT for a in replayed] == [True, True, False]
    assert [a["status"] for a in before] == ["open", "update"], "the interruption did not fall inside the incident"
    return alerts, before, replayed, facts


def test_restart_after_sigterm_neither_loses_nor_duplicates(
    kafka_bootstrap: str, setup: Callable[..., ServiceProcess], baseline: tuple[Path, str]
) -> None:
    svc = setup(checkpoint={"interval_s": RESTART_CHECKPOINT_S})
    alerts, _, replayed, facts = _restart_case(kafka_bootstrap, svc, baseline, "term")
    # A clean stop delivers, checkpoints and commits exactly what it processed; the restart starts there.
    assert facts["checkpoint_offset"] == facts["committed_at_stop"] >= facts["consumed_seen_before_stop"], facts
    assert facts["consumed_after_restart"] == N_EVENTS - facts["checkpoint_offset"], facts
    ids = [a["alert_id"] for a in alerts]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes, f"duplicate alert ids after a clean restart: {dupes}"
    assert ids == [a["alert_id"] for a in replayed]
    assert _without_source(alerts) == _without_source(replayed)


def test_restart_after_sigkill_loses_nothing(
    kafka_bootstrap: str, setup: Callable[..., ServiceProcess], baseline: tuple[Path, str]
) -> None:
    svc = setup(checkpoint={"interval_s": RESTART_CHECKPOINT_S})
    alerts, before, replayed, facts = _restart_case(kafka_bootstrap, svc, baseline, "kill")
    # Nothing after the last checkpoint was committed; the restart resumed from the checkpoint and
    # processed exactly the events after its offset: those of one checkpoint interval again, no more.
    assert facts["checkpoint_offset"] == facts["committed_at_stop"] == FIRST_CHECKPOINT, facts
    assert facts["consumed_after_restart"] == N_EVENTS - FIRST_CHECKPOINT, facts
    assert facts["consumed_seen_before_stop"] > INTERRUPT_AT - 1, facts
    ids = [a["alert_id"] for a in alerts]
    assert set(ids) == {a["alert_id"] for a in replayed}, "alerts lost or invented across the SIGKILL"
    # The alerts published after the checkpoint were published again, as identical records.
    counts = Counter(ids)
    assert {i: counts[i] for i in (a["alert_id"] for a in before)} == {a["alert_id"]: 2 for a in before}, counts
    assert sum(counts.values()) == len(replayed) + len(before)
    first_of: dict[str, dict[str, Any]] = {}
    for a in alerts:
        assert first_of.setdefault(a["alert_id"], a) == a, f"two different records with id {a['alert_id']}"


BROKER_PAUSE_S = 10.0  # longer than the consumer's session (6 s in these tests): the group drops the member


def test_broker_paused_mid_stream_loses_nothing(
    kafka_broker: tuple[str, Path | None], setup: Callable[..., ServiceProcess], baseline: tuple[Path, str]
) -> None:
    """The broker stops answering (paused, as in a long GC pause or a network partition) for longer than the
    consumer's session while the service works through events it already fetched: its checkpoints' commits wait
    for the broker, the group drops the member meanwhile, and the commit is refused when the broker answers again
    (it once ended the service). The service keeps running and gets the partition back; it goes on from where it
    had got, not from the group's last commit (that counted events twice, and the alerts differed from a replay's),
    and processes the stream to its end: the alerts of a file replay, each once."""
    bootstrap, run_dir = kafka_broker
    if run_dir is None:
        pytest.skip("the broker is external ($INFERWATCH_BOOTSTRAP): this test pauses one it started itself")
    pid = int((run_dir / "pid").read_text())
    svc = setup().start()
    lines = incident_lines()
    ts = [ts_of(i) for i in range(len(lines))]
    produce(bootstrap, svc.events_topic, lines[:INTERRUPT_AT], timestamps=ts[:INTERRUPT_AT])
    svc.wait_for("the first events", lambda s: svc.consumed(s) >= 1_000)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(BROKER_PAUSE_S)
        assert svc.proc is not None and svc.proc.poll() is None, f"the service stopped:\n{_tail(svc.log)}"
    finally:
        os.kill(pid, signal.SIGCONT)
    produce(bootstrap, svc.events_topic, lines[INTERRUPT_AT:], timestamps=ts[INTERRUPT_AT:])
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while committed_offsets(bootstrap, svc.group, svc.events_topic) != [N_EVENTS]:
        assert svc.proc is not None and svc.proc.poll() is None, f"the service stopped:\n{_tail(svc.log)}"
        assert time.monotonic() < deadline, f"offsets not committed to the end:\n{_tail(svc.log)}"
        time.sleep(0.5)
    rc = svc.terminate()
    assert rc == 0, f"exit code {rc}; log:\n{_tail(svc.log)}"
    log_text = svc.log.read_text()
    assert "lost [" in log_text, "the pause did not make the group drop the member"
    alerts = [orjson.loads(m.value()) for m in read_topic(bootstrap, svc.alerts_topic)]
    replayed = replay_file_alerts(baseline, lines, svc.log.parent, "paused")
    # the partition came back to this instance, which went on where it had got: each alert once, as in a replay
    assert [a["alert_id"] for a in alerts] == [a["alert_id"] for a in replayed]
    assert _without_source(alerts) == _without_source(replayed)


def test_restart_with_other_detection_settings_starts_windows_afresh(
    kafka_bootstrap: str, setup: Callable[..., ServiceProcess]
) -> None:
    """An operator changes drift.size/step and restarts: the checkpointed windows no longer fit.
    The service keeps the offsets (no event is read twice or skipped) and starts its windows afresh,
    as after a baseline promotion, instead of refusing to start."""
    svc = setup()
    lines = incident_lines()
    ts = [ts_of(i) for i in range(N_EVENTS)]
    half = 12_000
    svc.start()
    produce(kafka_bootstrap, svc.events_topic, lines[:half], timestamps=ts[:half])
    svc.wait_for(f"{half} events consumed", lambda s: svc.consumed(s) >= half)
    assert svc.terminate() == 0
    cp = CheckpointStore(svc.checkpoint_dir).load()
    assert cp is not None and cp.offsets == {f"{svc.events_topic}:0": half}

    config = orjson.loads(svc.config.read_bytes())
    config["drift"] = {"size": 1000, "step": 100}
    svc.config.write_bytes(orjson.dumps(config))
    svc.start()
    produce(kafka_bootstrap, svc.events_topic, lines[half:], timestamps=ts[half:], first=half)
    svc.wait_for("the rest of the stream", lambda s: svc.consumed(s) >= N_EVENTS - half)
    assert svc.consumed() == N_EVENTS - half
    assert svc.terminate() == 0
    assert committed_offsets(kafka_bootstrap, svc.group, svc.events_topic) == [N_EVENTS]
    # Fresh windows (of the new size) see the rest of the incident, open it anew and resolve it.
    alerts = [orjson.loads(m.value()) for m in read_topic(kafka_bootstrap, svc.alerts_topic)]
    after = [(a["status"], a["features"]) for a in alerts if _index(a["event_id"]) >= half]
    assert after == [("open", [SHIFT_FEATURE]), ("resolved", [SHIFT_FEATURE])], after
    reopened = next(a for a in alerts if _index(a["event_id"]) >= half)
    assert half + 999 <= _index(reopened["event_id"]) < 18_000 and reopened["window"]["events"] == 1000


# ==================================================================================================
# 4. Replay from a topic
# ==================================================================================================
@pytest.fixture(scope="module")
def replay_topics(kafka_bootstrap: str, kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    """The drift stream on a 1-partition topic and on a 3-partition topic keyed by client."""
    suffix = f"{time.time_ns():x}"
    names = {"single": f"iw-replay-1p-{suffix}", "keyed": f"iw-replay-3p-{suffix}"}
    futures = kafka_admin.create_topics(
        [
            NewTopic(names["single"], num_partitions=1, replication_factor=1, config=KEEP),
            NewTopic(names["keyed"], num_partitions=3, replication_factor=1, config=KEEP),
        ],
        operation_timeout=30,
        request_timeout=30,
    )
    for f in futures.values():
        f.result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        topics = kafka_admin.list_topics(timeout=10).topics
        if all(n in topics and all(p.leader >= 0 for p in topics[n].partitions.values()) for n in names.values()):
            break
        assert time.monotonic() < deadline, "replay topics not ready"
        time.sleep(0.1)
    lines = drift_lines()
    ts = [orjson.loads(line)["ts"] for line in lines]
    produce(kafka_bootstrap, names["single"], lines, timestamps=ts)
    keys = [orjson.loads(line)["client_id"].encode() for line in lines]
    where = produce(kafka_bootstrap, names["keyed"], lines, timestamps=ts, keys=keys)
    assert len({p for p, _ in where}) == 3, "keyed events did not spread over the 3 partitions"
    yield names
    for f in kafka_admin.delete_topics(list(names.values()), operation_timeout=10).values():
        with contextlib.suppress(KafkaException):  # best effort: the test broker is thrown away anyway
            f.result(timeout=15)


@pytest.fixture(scope="module")
def file_alerts(baseline: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """``inferwatch replay --input`` of the drift stream."""
    alerts = replay_file_alerts(baseline, drift_lines(), tmp_path_factory.mktemp("file-replay"), "drift")
    assert any(a["kind"] == "feature_drift" and a["features"] == [SHIFT_FEATURE] for a in alerts)
    return alerts


def replay_topic(
    kafka_bootstrap: str, baseline: tuple[Path, str], topic: str, start: int, end: int, alerts: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "replay",
        "--baselines",
        str(baseline[0]),
        "--topic",
        topic,
        "--from",
        str(start),
        "--to",
        str(end),
        "--alerts",
        alerts,
        "--bootstrap-servers",
        kafka_bootstrap,
    )


def test_replay_topic_whole_range_equals_file_replay(
    kafka_bootstrap: str,
    baseline: tuple[Path, str],
    replay_topics: dict[str, str],
    file_alerts: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    out = tmp_path / "alerts.jsonl"
    replay_topic(kafka_bootstrap, baseline, replay_topics["single"], ts_of(0), ts_of(N_EVENTS - 1) + 1, str(out))
    alerts = read_jsonl(out)
    assert _without_source(alerts) == _without_source(file_alerts)
    for a in alerts:
        at = _index(a["event_id"])
        assert a["source"]["topic"] == replay_topics["single"]
        assert (a["source"]["partition"], a["source"]["offset"]) == (0, at)
        assert a["source"]["ranges"] == [
            {
                "topic": replay_topics["single"],
                "partition": 0,
                "offset_start": at - a["window"]["events"] + 1,
                "offset_end": at,
            }
        ]


def test_replay_topic_sub_range_replays_only_that_range(
    kafka_bootstrap: str,
    baseline: tuple[Path, str],
    replay_topics: dict[str, str],
    tmp_path: Path,
) -> None:
    lo, hi = 8_000, 22_000
    out = tmp_path / "alerts.jsonl"
    replay_topic(kafka_bootstrap, baseline, replay_topics["single"], ts_of(lo), ts_of(hi), str(out))
    alerts = read_jsonl(out)
    assert alerts, "the shift at 15,000 lies inside [8,000, 22,000): it must be detected"
    for a in alerts:
        assert lo <= _index(a["event_id"]) < hi
        assert ts_of(lo) <= a["window"]["start_ts"] <= a["window"]["end_ts"] < ts_of(hi)
        for r in a["source"]["ranges"]:
            assert lo <= r["offset_start"] <= r["offset_end"] < hi, r
    # Exactly what a file replay of those events alone gives.
    expected = replay_file_alerts(baseline, drift_lines()[lo:hi], tmp_path, "sub-range")
    assert _without_source(alerts) == _without_source(expected)


def test_replay_topic_publishes_alerts_to_a_topic(
    kafka_bootstrap: str,
    kafka_topic_factory: TopicFactory,
    baseline: tuple[Path, str],
    replay_topics: dict[str, str],
    tmp_path: Path,
) -> None:
    target = kafka_topic_factory(prefix="iw-replayed-alerts", config=KEEP)
    start, end = ts_of(0), ts_of(N_EVENTS - 1) + 1
    replay_topic(kafka_bootstrap, baseline, replay_topics["single"], start, end, f"topic:{target}")
    out = tmp_path / "alerts.jsonl"
    replay_topic(kafka_bootstrap, baseline, replay_topics["single"], start, end, str(out))
    msgs = read_topic(kafka_bootstrap, target)
    published = [orjson.loads(m.value()) for m in msgs]
    assert published, "nothing published"
    assert published == read_jsonl(out)
    assert [m.key() for m in msgs] == [a["alert_id"].encode() for a in published]


def test_replay_of_three_partitions_is_deterministic(
    kafka_bootstrap: str,
    baseline: tuple[Path, str],
    replay_topics: dict[str, str],
    file_alerts: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    start, end = ts_of(0), ts_of(N_EVENTS - 1) + 1
    outs = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    for out in outs:
        replay_topic(kafka_bootstrap, baseline, replay_topics["keyed"], start, end, str(out))
    first, second = (o.read_bytes() for o in outs)
    assert first, "no alerts from the 3-partition replay"
    assert first == second, "two replays of the same topic range differ"
    # Event times are distinct, so the (timestamp, partition, offset) merge restores the stream order.
    alerts = read_jsonl(outs[0])
    assert _without_source(alerts) == _without_source(file_alerts)
    for a in alerts:
        parts = {r["partition"] for r in a["source"]["ranges"]}
        assert parts == {0, 1, 2}, f"a 2,000-event window should span all partitions: {a['source']}"


# ==================================================================================================
# 5. Consumer groups: two instances hand over partitions; event-time panes of an idle stream
# ==================================================================================================
def produce_to_partitions(
    bootstrap: str, topic: str, values: Sequence[bytes], partitions: Sequence[int], timestamps: Sequence[int]
) -> list[tuple[int, int]]:
    """Produce ``values[i]`` to partition ``partitions[i]``; returns (partition, offset) per value."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    where: dict[int, tuple[int, int]] = {}

    def on_delivery(i: int) -> Callable[[KafkaError | None, Message], None]:
        def cb(err: KafkaError | None, msg: Message) -> None:
            assert err is None, f"{i}: {err}"
            where[i] = (msg.partition(), msg.offset())

        return cb

    for i, (value, p, ts) in enumerate(zip(values, partitions, timestamps, strict=True)):
        producer.produce(topic, value=value, partition=p, timestamp=ts, on_delivery=on_delivery(i))
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return [where[i] for i in range(len(values))]


def _member_partitions(admin: AdminClient, group: str) -> list[int]:
    """Partitions assigned to each member of ``group`` (sorted), as the group coordinator sees it."""
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException:
        return []
    return sorted(len(m.assignment.topic_partitions) for m in desc.members)


def _handled(samples: Samples) -> float:
    """Events consumed plus messages dead-lettered, by one instance."""
    consumed = sample(samples, "inferwatch_events_consumed_total", model_id=MODEL) or 0.0
    return consumed + sum(samples_named(samples, "inferwatch_events_invalid_total").values())


def test_two_instances_in_one_group_hand_over_partitions_without_loss_or_duplicates(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    setup: Callable[..., ServiceProcess],
    services: list[ServiceProcess],
    tmp_path: Path,
) -> None:
    """Instance A reads both partitions; B joins the group mid-stream and takes one over.

    The periodic checkpoint is far away, so the only commit before the handover is the one A makes
    when its partitions are revoked: every message must then be handled by exactly one instance.
    Dead letters (one per bad message, whatever the detector state) show it message by message.
    """
    a = setup(partitions=2, checkpoint={"interval_s": 60.0})
    config = orjson.loads(a.config.read_bytes())
    port_b = _free_port()
    config["metrics"]["port"] = port_b
    config["checkpoint"]["dir"] = str(tmp_path / "state-b")
    config_b = tmp_path / "config-b.json"
    config_b.write_bytes(orjson.dumps(config))
    b = ServiceProcess(
        config_b,
        tmp_path / "service-b.log",
        port_b,
        events_topic=a.events_topic,
        alerts_topic=a.alerts_topic,
        dead_topic=a.dead_topic,
        group=a.group,
        checkpoint_dir=tmp_path / "state-b",
    )
    services.append(b)

    n, first_part, last_part = 24_000, 6_000, 2_000
    values = list(STABLE.lines(n, seed=7))
    bad = set(range(250, n, 500))
    for i in bad:
        values[i] = f'{{"event_id": "broken-{i}", '.encode()  # truncated JSON: a dead letter
    partitions = [i % 2 for i in range(n)]
    ts = [ts_of(i) for i in range(n)]

    a.start()
    where = produce_to_partitions(
        kafka_bootstrap, a.events_topic, values[:first_part], partitions[:first_part], ts[:first_part]
    )
    a.wait_for(f"{first_part} messages handled by A", lambda s: _handled(s) >= first_part)

    # The rest arrives at a steady rate while B joins: the handover falls inside the stream.
    rest: list[tuple[int, int]] = []

    def feed() -> None:
        for k in range(first_part, n - last_part, 2_000):
            rest.extend(
                produce_to_partitions(
                    kafka_bootstrap, a.events_topic, values[k : k + 2_000], partitions[k : k + 2_000], ts[k : k + 2_000]
                )
            )
            time.sleep(0.6)

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    b.start()
    feeder.start()
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while _member_partitions(kafka_admin, a.group) != [1, 1]:
        assert time.monotonic() < deadline, f"B was never assigned a partition; log:\n{_tail(b.log)}"
        time.sleep(0.2)
    feeder.join(PROCESS_TIMEOUT_S)
    assert not feeder.is_alive()
    # The last messages come after the handover, whenever it happened: both instances get some.
    k = n - last_part
    rest += produce_to_partitions(kafka_bootstrap, a.events_topic, values[k:], partitions[k:], ts[k:])
    where += rest
    assert len(where) == n

    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while _handled(a.scrape()) + _handled(b.scrape()) < n:
        assert time.monotonic() < deadline, (
            f"handled {_handled(a.scrape())} + {_handled(b.scrape())} of {n}\nA:\n{_tail(a.log)}\nB:\n{_tail(b.log)}"
        )
        time.sleep(0.1)
    time.sleep(1.0)  # a message handled twice would show now
    sa, sb = a.scrape(), b.scrape()
    assert _handled(sa) + _handled(sb) == n, "a message was handled by both instances"
    assert _handled(sb) > 0 and _handled(sa) > first_part, (_handled(sa), _handled(sb))
    # B stops first and hands its partition back to A, which stops last: its final commit and
    # checkpoint must not carry a stale offset of the partition B owned in between.
    assert b.terminate() == 0
    assert a.terminate() == 0
    ends = end_offsets(kafka_bootstrap, a.events_topic, 2)
    assert committed_offsets(kafka_bootstrap, a.group, a.events_topic, 2) == ends == [n // 2, n // 2]
    # Each checkpoint names only the partition its instance owned at the end, at its end offset.
    offsets = [CheckpointStore(svc.checkpoint_dir).load() for svc in (a, b)]
    assert offsets[0] is not None and offsets[1] is not None
    assert len(offsets[0].offsets) == len(offsets[1].offsets) == 1, (offsets[0].offsets, offsets[1].offsets)
    assert {**offsets[0].offsets, **offsets[1].offsets} == {f"{a.events_topic}:{p}": end for p, end in enumerate(ends)}

    dead = read_topic(kafka_bootstrap, a.dead_topic)
    got = Counter(
        (int(h["inferwatch.source.partition"]), int(h["inferwatch.source.offset"]))
        for h in ({k: v.decode() for k, v in m.headers() or []} for m in dead)
    )
    assert not [k for k, c in got.items() if c > 1], "a bad message was dead-lettered twice"
    assert set(got) == {where[i] for i in bad}, "a bad message was lost"
    ids = Counter(orjson.loads(m.value())["alert_id"] for m in read_topic(kafka_bootstrap, a.alerts_topic))
    assert not [i for i, c in ids.items() if c > 1], "duplicate alert ids across the handover"


TIME_WINDOW = {"window": "time", "size": 20_000, "step": 2_000, "idle_timeout_s": 2.0}  # 2,000 / 200 events


def test_idle_stream_closes_the_open_time_pane_like_a_replay_at_its_end(
    kafka_bootstrap: str, setup: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    svc = setup(drift=TIME_WINDOW)
    lines = dense_last_pane_lines()
    ts = [orjson.loads(x)["ts"] for x in lines]
    # Everything is on the topic before the service starts, so it pauses only at the end.
    produce(kafka_bootstrap, svc.events_topic, lines, timestamps=ts)
    svc.start()
    svc.wait_for("the stream and then the idle timeout", lambda s: svc.consumed(s) >= len(lines))
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while "closing the open time pane" not in svc.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"the idle pane was never closed; log:\n{_tail(svc.log)}"
        time.sleep(0.1)
    time.sleep(0.5)
    assert svc.terminate() == 0
    live = [orjson.loads(m.value()) for m in read_topic(kafka_bootstrap, svc.alerts_topic)]
    drift = [a for a in live if a["kind"] == "feature_drift"]
    assert [(a["status"], a["features"], a["event_id"]) for a in drift] == [
        ("open", ["f02"], orjson.loads(lines[-1])["event_id"])
    ]
    assert drift[0]["source"]["offset"] == len(lines) - 1

    # A file replay and a topic-range replay evaluate the last pane at their end: the same alerts.
    events = write_jsonl(tmp_path / "dense.jsonl", lines)
    from_file, from_topic = tmp_path / "file-alerts.jsonl", tmp_path / "topic-alerts.jsonl"
    common = ("replay", "--baselines", str(orjson.loads(svc.config.read_bytes())["baselines"]["store"]))
    run_cli(*common, "--input", str(events), "--alerts", str(from_file), "--config", str(svc.config))
    run_cli(
        *common, "--topic", svc.events_topic, "--from", str(ts[0]), "--to", str(ts[-1] + 1),
        "--alerts", str(from_topic), "--config", str(svc.config),
    )  # fmt: skip
    assert _without_source(read_jsonl(from_file)) == _without_source(live)
    assert read_jsonl(from_topic) == live
