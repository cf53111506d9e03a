"""The long-running service: Kafka in, alerts and dead letters out, at-least-once.

Per consumed batch: decode and detect, produce the alerts and dead letters, and — every
``checkpoint.interval_s`` — wait until Kafka acknowledged all of them, write the detector state
with the next offsets atomically, and only then commit those offsets. A crash replays at most one
checkpoint interval from the checkpoint, which recreates the same alerts with the same ids.

Several instances may share a consumer group (each with its own checkpoint directory). When
partitions are revoked, the instance delivers, checkpoints and commits what it processed of them,
then forgets them: it never commits (or checkpoints) offsets of a partition it no longer owns, and
drops messages of one that arrive after the revocation. On assignment, a checkpointed offset is used
only when it is ahead of the group's committed one (this instance stopped between its checkpoint
and its commit); otherwise the partition continues where the group left it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry

from baselines.build import LoadedBaseline, load_baseline
from baselines.errors import BaselineError
from baselines.store import BaselineStore
from streams.ahead import DecodeAhead
from streams.checkpoint import Checkpoint, CheckpointStore
from streams.config import Settings
from streams.errors import ConfigError, SourceError
from streams.kafka_io import DeliveringProducer, consumer_config, ensure_topics, producer_config
from streams.metrics import Metrics, serve
from streams.pipeline import ChunkResult, Pipeline, Positions
from streams.shm import Packed

log = logging.getLogger(__name__)

#: How long a new assignment waits for the group's committed offsets before trusting the checkpoint.
COMMITTED_TIMEOUT_S = 10.0


def _key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def open_store(settings: Settings) -> BaselineStore:
    """The baseline store of the settings, with its signing key if one is configured."""
    key = settings.baselines.signing_key
    return BaselineStore(
        settings.baselines.store,
        signing_key=key.get_secret_value().encode() if key is not None else None,
        key_id=settings.baselines.key_id,
    )


def load_active_baselines(store: BaselineStore, models: list[str] | None = None) -> dict[str, LoadedBaseline]:
    """Every model's active baseline (verified); raises if there is none at all."""
    wanted = models if models is not None else store.list_models()
    out: dict[str, LoadedBaseline] = {}
    for model_id in wanted:
        if store.active_version(model_id) is None:
            log.warning("model %s has no active baseline; its events will be dead letters", model_id)
            continue
        out[model_id] = load_baseline(store, model_id)
    if not out:
        raise BaselineError(f"no active baseline in {store.root}: build one with 'inferwatch baseline build'")
    return out


def make_pipeline(settings: Settings, baselines: Mapping[str, LoadedBaseline]) -> Pipeline:
    """The processing pipeline of these settings and baselines."""
    return Pipeline(
        baselines,
        settings,
        config_digest=settings.detection_digest(),
        max_message_bytes=settings.max_message_bytes,
        scores=settings.anomaly.enabled and settings.anomaly.scores_topic is not None,
    )


#: Commit errors that mean the group reassigned this member's partitions (not a failure of the service).
_MEMBERSHIP_LOST = frozenset(
    (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
     KafkaError._ASSIGNMENT_LOST, KafkaError.FENCED_INSTANCE_ID)
)  # fmt: skip


def kafka_positions(msgs: list[Any]) -> Positions:
    """Where each of ``msgs`` came from."""
    # map() over the C methods: at 100k messages/s a Python loop per message is a tenth of the budget
    n = len(msgs)
    topics = list(map(Message.topic, msgs))
    names = {t: i for i, t in enumerate(dict.fromkeys(topics))}
    src = np.zeros(n, np.int32) if len(names) <= 1 else np.fromiter(map(names.__getitem__, topics), np.int32, n)
    return Positions(
        "kafka",
        tuple(map(str, names)),
        src,
        np.fromiter(map(Message.partition, msgs), np.int32, n),
        np.fromiter(map(Message.offset, msgs), np.int64, n),
        np.fromiter(map(itemgetter(1), map(Message.timestamp, msgs)), np.int64, n),
    )


@dataclass
class _Fetched:
    """Owned messages of one fetch, until they are detected on."""

    events: list[Any]
    values: list[bytes | None]  # of events
    positions: Positions  # of events
    feedback: list[Any]
    ends: dict[str, int]  # next offset per "topic:partition" once this batch is handled
    n_fetched: int
    decoding: Future[Packed] | None = None


def dead_letter_headers(reason: str, detail: str, where: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Kafka headers of a dead letter: why, and where the original came from."""
    headers = [("inferwatch.reason", reason.encode()), ("inferwatch.detail", detail.encode())]
    headers += [(f"inferwatch.source.{k}", str(v).encode()) for k, v in where.items()]
    return headers


def publish(producer: DeliveringProducer, settings: Settings, out: ChunkResult) -> None:
    """Produce the alerts (keyed by id, for compaction and deduplication), dead letters and, if
    configured, per-event anomaly scores (keyed by event id) of a chunk."""
    for alert in out.alerts:
        producer.produce(settings.kafka.alerts_topic, orjson.dumps(alert), key=alert["alert_id"].encode())
    for dead, where in out.dead:
        producer.produce(
            settings.kafka.dead_letter_topic, dead.raw, headers=dead_letter_headers(dead.reason, dead.detail, where)
        )
    topic = settings.anomaly.scores_topic
    if topic is not None:
        for record in out.scores:
            producer.produce(topic, orjson.dumps(record), key=record["event_id"].encode())


class Service:
    """``inferwatch run``: consume, detect, publish, checkpoint, commit; until :meth:`stop`.

    Parameters
    ----------
    settings
        The configuration tree.
    registry
        Prometheus registry for the service's metrics (served on ``settings.metrics`` if port > 0).
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics_port: int | None = None
        self._stop = threading.Event()
        self.ready = threading.Event()
        # Next offset to read per "topic:partition", for the partitions assigned to this instance only.
        self._offsets: dict[str, int] = {}
        self._assigned: set[str] = set()
        self._restored_offsets: dict[str, int] = {}
        self._dirty = False
        # Fetched batches not yet detected on, oldest first, and the process decoding them.
        self._pending: deque[_Fetched] = deque()
        self._ahead: DecodeAhead | None = None
        # Processing (monotonic) time of each model's last event, for the idle flush of time panes.
        self._last_event_at: dict[str, float] = {}
        conf = settings.kafka.consumer
        # librdkafka's incremental (cooperative) protocols hand over partitions one by one and
        # need incremental_assign / incremental_unassign; the eager ones replace the assignment.
        self._incremental = "cooperative" in str(conf.get("partition.assignment.strategy", "")) or (
            str(conf.get("group.protocol", "classic")) == "consumer"
        )

    def stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint, commit and return."""
        self._stop.set()

    def run(self) -> None:
        """Run until :meth:`stop`; raises a :class:`~streams.errors.StreamsError` on fatal problems."""
        s = self.settings
        store = open_store(s)
        self.pipeline = make_pipeline(s, load_active_baselines(store))
        self.checkpoints = CheckpointStore(s.checkpoint.dir)
        cp = self.checkpoints.load()
        if cp is not None:
            restored = self.pipeline.restore(cp.state)
            self._restored_offsets = dict(cp.offsets)
            log.info("resumed from checkpoint: models %s, offsets %s", restored, cp.offsets)
        # A restored open pane is idle from now on until its model's events arrive again.
        self._last_event_at = dict.fromkeys(self.pipeline.monitors, time.monotonic())
        common = s.kafka.common()
        outputs = [s.kafka.alerts_topic, s.kafka.dead_letter_topic]
        if s.anomaly.enabled and s.anomaly.scores_topic:
            outputs.append(s.anomaly.scores_topic)
        ensure_topics(common, outputs)
        self.producer = DeliveringProducer(producer_config(s.kafka))
        consumer = Consumer(consumer_config(s.kafka))
        try:
            ahead = s.kafka.decode_ahead
            if ahead is None:
                # It pays when detection costs more than decoding, as the anomaly and adversarial
                # detectors do; for drift alone, shipping batches between processes costs more than
                # it saves (benchmarks/: 71k against 87k events/s on 2 cores).
                ahead = (os.cpu_count() or 1) > 1 and (s.anomaly.enabled or s.adversarial.enabled)
            # Starts (imports) while the consumer joins its group; batches are decoded here until it has.
            self._ahead = (
                DecodeAhead(self.pipeline.decoder, preparers=self.pipeline.preparers(), max_chunk=s.kafka.batch_size)
                if ahead
                else None
            )
            try:
                consumer.list_topics(timeout=15)
            except KafkaException as e:
                raise SourceError(f"cannot reach Kafka at {s.kafka.bootstrap_servers}: {e}") from None
            topics = [*s.kafka.topics, *([s.performance.feedback_topic] if s.performance.feedback_topic else [])]
            consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
            self._consumer = consumer
            if s.metrics.port > 0:
                try:
                    self.metrics_port = serve(self.registry, s.metrics.host, s.metrics.port)
                except OSError as e:
                    raise ConfigError(
                        f"cannot serve metrics on {s.metrics.host}:{s.metrics.port}: {e.strerror or e}"
                    ) from None
            log.info(
                "consuming %s from %s; alerts to %s; metrics on %s:%s",
                s.kafka.topics,
                s.kafka.bootstrap_servers,
                s.kafka.alerts_topic,
                s.metrics.host,
                self.metrics_port,
            )
            self.ready.set()
            self._loop(consumer)
            self._finish_ready(more_coming=False)
            self._commit(consumer)
        finally:
            consumer.close()
            if self._ahead is not None:
                self._ahead.close()

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        restored = {_key(tp): self._restored_offsets[_key(tp)] for tp in parts if _key(tp) in self._restored_offsets}
        committed: dict[str, int] = {}
        if restored:
            try:
                committed = {_key(tp): tp.offset for tp in consumer.committed(parts, timeout=COMMITTED_TIMEOUT_S)}
            except KafkaException as e:
                log.warning("committed offsets unavailable (%s); resuming from the checkpoint's", e)
        for tp in parts:
            key = _key(tp)
            # Offsets only move forward: another instance of the group may have gone further since
            # this checkpoint was written, and its commit then wins.
            if key in restored and restored[key] > committed.get(key, -1):
                tp.offset = restored[key]
                self._offsets[key] = restored[key]
        self._assigned.update(_key(tp) for tp in parts)
        log.info("assigned %s", sorted(_key(tp) for tp in parts))
        if self._incremental:
            consumer.incremental_assign(parts)
        else:
            consumer.assign(parts)

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Still the owner: finish what was fetched, then deliver, checkpoint and commit it, revoked
        # partitions included, so the next owner starts exactly after it.
        self._finish_ready(more_coming=False)
        self._commit(consumer)
        self._forget(consumer, parts, "revoked")

    def _on_lost(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # No longer the owner (session timed out): committing now could move another member's
        # offsets, so forget the partitions; the new owner reprocesses from the group's commit.
        # What was fetched is still detected on: the alerts it repeats carry the same ids.
        self._finish_ready(more_coming=False)
        reached = {_key(tp): self._offsets[_key(tp)] for tp in parts if _key(tp) in self._offsets}
        self._forget(consumer, parts, "lost")
        # This instance's windows hold the events up to where it got: should the partition come back to it before
        # another member commits beyond that, it goes on from there (as from a checkpoint), not from the group's
        # commit, which would count those events twice.
        self._restored_offsets.update(reached)

    def _forget(self, consumer: Consumer, parts: list[TopicPartition], why: str) -> None:
        keys = {_key(tp) for tp in parts}
        for key in keys:
            self._offsets.pop(key, None)
            self._restored_offsets.pop(key, None)
        self._assigned -= keys
        if keys and self._offsets:
            self._dirty = True  # the next checkpoint no longer names them
        log.info("%s %s", why, sorted(keys))
        if self._incremental:
            consumer.incremental_unassign(parts)
        else:
            consumer.unassign()

    def _loop(self, consumer: Consumer) -> None:
        s = self.settings
        last_checkpoint = last_lag = time.monotonic()
        while not self._stop.is_set():
            msgs = consumer.consume(s.kafka.batch_size, s.kafka.batch_timeout_s)
            self.producer.poll(0)
            now = time.monotonic()
            if msgs:
                self._pending.append(self._accept(msgs))
            self._finish_ready(more_coming=bool(msgs))
            self._flush_idle(now)
            if self._dirty and now - last_checkpoint >= s.checkpoint.interval_s:
                self._commit(consumer)
                last_checkpoint = now
            if now - last_lag >= 1.0:
                self._observe_lag(consumer)
                last_lag = now

    def _accept(self, msgs: list[Any]) -> _Fetched:
        """The messages of a fetch this instance owns, split into events and feedback."""
        feedback_topic = self.settings.performance.feedback_topic
        n_fetched = len(msgs)
        errors = list(map(Message.error, msgs))
        if errors.count(None) != len(msgs):
            for e in errors:
                if e is not None:
                    log.warning("consumer error: %s", e)
            msgs = [m for m, e in zip(msgs, errors, strict=True) if e is None]
        # Each attribute read once per message, as columns: at 100k messages/s every pass costs.
        at = kafka_positions(msgs)
        if not msgs:
            return _Fetched([], [], at, [], {}, n_fetched)
        # One code per topic partition; offsets rise within one, so its last message is its end.
        code = at.source.astype(np.int64) << 32 | at.partition
        order = np.argsort(code, kind="stable")
        sorted_code = code[order]
        last = np.flatnonzero(np.append(sorted_code[1:] != sorted_code[:-1], True))
        ends: dict[str, int] = {}
        disowned: list[int] = []
        for c, i in zip(sorted_code[last].tolist(), order[last].tolist(), strict=True):
            key = f"{at.names[c >> 32]}:{c & 0xFFFFFFFF}"
            if key in self._assigned:
                ends[key] = int(at.offset[i]) + 1
            else:  # fetched before its revocation: the next owner reads it from our commit
                disowned.append(c)
        keep = np.isin(code, disowned, invert=True) if disowned else None
        if feedback_topic is not None and feedback_topic in at.names:
            is_feedback = at.source == at.names.index(feedback_topic)
            fb = is_feedback if keep is None else is_feedback & keep
            feedback = list(compress(msgs, fb.tolist()))
            keep = ~is_feedback if keep is None else keep & ~is_feedback
        else:
            feedback = []
        if keep is not None:
            msgs, at = list(compress(msgs, keep.tolist())), at.take(keep)
        fetched = _Fetched(msgs, list(map(Message.value, msgs)), at, feedback, ends, n_fetched)
        if self._ahead is not None and msgs:
            fetched.decoding = self._ahead.submit(fetched.values, fetched.positions.timestamp)
        return fetched

    def _finish_ready(self, more_coming: bool) -> None:
        """Detect on the fetched batches, all of them, or all but the last while more arrive (it is
        being decoded in the other process meanwhile)."""
        keep = 1 if self._ahead is not None and more_coming else 0
        while len(self._pending) > keep:
            self._finish(self._pending.popleft())

    def _finish(self, fetched: _Fetched) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        if fetched.events:
            positions = fetched.positions
            if self._ahead is None:
                out = self.pipeline.process(fetched.values, positions)
            else:
                decoded = self._ahead.result(fetched.decoding, fetched.values, positions.timestamp)
                out = self.pipeline.process_decoded(decoded, positions)
            self._publish(out)
            for model_id in out.events_by_model:
                self._last_event_at[model_id] = now
        if fetched.feedback:
            fb = fetched.feedback
            self._publish(self.pipeline.process_feedback(list(map(Message.value, fb)), kafka_positions(fb)))
        self._offsets.update(fetched.ends)
        self.metrics.observe_monitors(self.pipeline.monitors)
        self.metrics.batch_events.observe(fetched.n_fetched)
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        self._dirty = True

    def _publish(self, out: ChunkResult) -> None:
        publish(self.producer, self.settings, out)
        self.metrics.observe_chunk(out)
        for a in out.alerts:
            log.info("alert %s %s %s %s: %s", a["alert_id"][:12], a["status"], a["kind"], a["features"], a["message"])

    def _flush_idle(self, now: float) -> None:
        """Evaluate the open time pane of every model without events for ``drift.idle_timeout_s``.

        Processing-time driven, unlike everything else: a live run differs from a replay of the
        same events only when a stream pauses mid-pane (a replay flushes at its end alone).
        """
        timeout = self.settings.drift.idle_timeout_s
        if timeout is None or self.settings.drift.window != "time":
            return
        idle = [m for m, at in self._last_event_at.items() if now - at >= timeout and self.pipeline.open_events(m) > 0]
        if not idle:
            return
        log.info("closing the open time pane of idle models %s", idle)
        self._publish(self.pipeline.flush(idle))
        self.metrics.observe_monitors(self.pipeline.monitors)
        self._dirty = True

    def _commit(self, consumer: Consumer) -> None:
        """Deliver, checkpoint, then commit: offsets never pass what was durably handled."""
        if not self._dirty:
            return
        try:
            self.producer.flush()
        except Exception:
            self.metrics.delivery_failures.inc()
            raise
        self.checkpoints.save(Checkpoint(self.pipeline.snapshot(), dict(self._offsets)))
        self.metrics.checkpoints.inc()
        tps = [TopicPartition(k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]), v) for k, v in self._offsets.items()]
        if tps:
            try:
                consumer.commit(offsets=tps, asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() not in _MEMBERSHIP_LOST:
                    raise
                # The group dropped this member while the commit waited (the broker did not answer for longer
                # than the session): the partitions are no longer ours to commit, and on_lost forgets them. Their
                # next owner, this instance again perhaps, re-reads from the group's last commit.
                log.warning("commit refused, the group no longer counts this member: %s", e.args[0].str())
                return
        self._dirty = False

    def _observe_lag(self, consumer: Consumer) -> None:
        try:
            for tp in consumer.assignment():
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                pos = self._offsets.get(f"{tp.topic}:{tp.partition}")
                if pos is not None and high >= 0:
                    self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                        max(high - pos, 0)
                    )
        except KafkaException as e:
            log.debug("lag unavailable: %s", e)
