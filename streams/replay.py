"""Deterministic replays of a JSONL file or of a time range of a Kafka topic, for forensics.

Replays use event time only, so the same input, baselines and settings always give the same
alerts, with the same ids, as the live service would from the same starting state. At the end of
the input the open pane of an event-time window is evaluated (:meth:`Pipeline.flush`), so the last
events are not left out; the live service does the same after ``drift.idle_timeout_s`` without events.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Message, TopicPartition

from baselines.build import LoadedBaseline
from streams.config import Settings
from streams.decode import DeadLetter
from streams.errors import SourceError
from streams.files import Progress, read_decoded_chunks
from streams.kafka_io import PartitionRange, consumer_config, time_range_offsets
from streams.pipeline import ChunkResult, Positions
from streams.service import kafka_positions, make_pipeline

log = logging.getLogger(__name__)

STALL_TIMEOUT_S = 30.0
#: Files from this size on are decoded ahead by a second process when there is a second core.
DECODE_AHEAD_MIN_BYTES = 64 * 1024 * 1024
#: Broker requests of a replay (metadata, offsets for times); an unreachable broker fails this fast.
REQUEST_TIMEOUT_S = 15.0

AlertSink = Callable[[dict[str, Any]], None]
DeadSink = Callable[[DeadLetter, dict[str, Any]], None]


@dataclass(frozen=True)
class ReplaySummary:
    """Counts of one replay."""

    events: int
    dead_letters: int
    alerts: int


class _Tally:
    def __init__(self, on_alert: AlertSink, on_dead: DeadSink, progress: Progress) -> None:
        self.on_alert, self.on_dead, self.progress = on_alert, on_dead, progress
        self.events = self.dead = self.alerts = 0

    def add(self, out: ChunkResult) -> None:
        for a in out.alerts:
            self.on_alert(a)
        for dead, where in out.dead:
            self.on_dead(dead, where)
        self.events += sum(out.events_by_model.values())
        self.dead += len(out.dead)
        self.alerts += len(out.alerts)
        self.progress.update(self.events + self.dead, alerts=self.alerts)

    def summary(self) -> ReplaySummary:
        self.progress.update(self.events + self.dead, force=True, alerts=self.alerts)
        self.progress.close()
        return ReplaySummary(self.events, self.dead, self.alerts)


def replay_file(
    settings: Settings,
    baselines: Mapping[str, LoadedBaseline],
    path: str,
    on_alert: AlertSink,
    on_dead: DeadSink,
    *,
    chunk_size: int = 10_000,
    progress: Progress | None = None,
    decode_ahead: bool | None = None,
) -> ReplaySummary:
    """Run detection over a JSONL file of events in file order.

    With ``decode_ahead`` (default: files of 64 MiB or more, on a machine with more than one core) a
    second process reads and decodes the next chunks while this one detects: the same alerts, in
    about the time of the slower half instead of the sum of both.
    """
    pipeline = make_pipeline(settings, baselines)
    tally = _Tally(on_alert, on_dead, progress or Progress("replay", enabled=False))
    if decode_ahead is None:  # a decoding process takes a second to start: worth it for large files only
        decode_ahead = (os.cpu_count() or 1) > 1 and _size(path) >= DECODE_AHEAD_MIN_BYTES
    chunks = read_decoded_chunks(path, chunk_size, pipeline.decoder, ahead=decode_ahead, preparers=pipeline.preparers())
    for decoded, numbers in chunks:
        zeros = np.zeros(len(numbers), np.int32)
        positions = Positions("file", (str(path),), zeros, zeros, np.asarray(numbers))
        tally.add(pipeline.process_decoded(decoded, positions))
    tally.add(pipeline.flush())
    return tally.summary()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # reading it will report the problem


def _merged(consumer: Consumer, ranges: list[PartitionRange], batch: int) -> Iterator[list[Message]]:
    """Messages of all ranges in (timestamp, partition, offset) order, whatever order Kafka returns.

    A message is released once every unfinished partition has buffered a later timestamp (a
    k-way merge on per-partition watermarks), so the order does not depend on fetch timing.
    """
    left = {(r.topic, r.partition): r for r in ranges}
    buffers: dict[tuple[str, int], list[Message]] = {k: [] for k in left}
    heap: list[tuple[int, int, int, str, int]] = []  # (ts, partition, offset, topic, seq)
    store: dict[int, Message] = {}
    seq = 0
    idle_since = time.monotonic()
    while left or heap:
        if left:
            msgs = consumer.consume(batch, 1.0)
            if msgs:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > STALL_TIMEOUT_S:
                missing = ", ".join(f"{t}[{p}]" for t, p in left)
                raise SourceError(f"no messages for {STALL_TIMEOUT_S:.0f} s while replaying {missing}")
            for m in msgs:
                topic, partition, offset = m.topic(), m.partition(), m.offset()
                if m.error() is not None or topic is None or partition is None or offset is None:
                    log.warning("consumer error: %s", m.error())
                    continue
                key = (topic, partition)
                r = left.get(key)
                if r is None or offset >= r.end:
                    continue
                entry: tuple[int, int, int, str, int] = (m.timestamp()[1], partition, offset, topic, seq)
                heapq.heappush(heap, entry)
                store[seq] = m
                seq += 1
                buffers[key].append(m)
                if offset >= r.end - 1:
                    del left[key]
                    consumer.incremental_unassign([TopicPartition(topic, partition)])
        # Safe to emit up to the smallest newest-timestamp of the partitions still being read.
        limit = min((buffers[k][-1].timestamp()[1] if buffers[k] else -1 for k in left), default=None)
        out: list[Message] = []
        while heap and (limit is None or heap[0][0] < limit):
            out.append(store.pop(heapq.heappop(heap)[4]))
        for k in list(buffers):
            buffers[k] = buffers[k][-1:]
        if out:
            yield out


def replay_topic(
    settings: Settings,
    baselines: Mapping[str, LoadedBaseline],
    topic: str,
    from_ms: int,
    to_ms: int,
    on_alert: AlertSink,
    on_dead: DeadSink,
    *,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Run detection over the messages of ``topic`` with timestamps in ``[from_ms, to_ms)``.

    The range is found with the broker's offsets-for-times; nothing is committed (a throwaway
    consumer group), so a replay never moves the live service's offsets.
    """
    pipeline = make_pipeline(settings, baselines)
    conf = consumer_config(settings.kafka, group_id=f"inferwatch-replay-{uuid.uuid4().hex[:12]}")
    consumer = Consumer(conf)
    tally = _Tally(on_alert, on_dead, progress or Progress("replay", enabled=False))
    try:
        ranges = time_range_offsets(consumer, topic, from_ms, to_ms, timeout=REQUEST_TIMEOUT_S)
        total = sum(r.end - r.start for r in ranges)
        tally.progress.total = total
        if not ranges:
            return tally.summary()
        consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges])
        for msgs in _merged(consumer, ranges, settings.kafka.batch_size):
            tally.add(pipeline.process([m.value() for m in msgs], kafka_positions(msgs)))
        tally.add(pipeline.flush())
    finally:
        consumer.close()
    return tally.summary()
