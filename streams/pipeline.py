"""Decode → detect → alert records: the processing shared by ``run`` and ``replay``.

The pipeline owns one :class:`~detector.monitor.ModelMonitor` per model with a baseline, remembers
where the recent events of each model came from (to give alerts a source range), and can be
snapshotted as arrays so a restarted service continues exactly where it stopped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from baselines.build import LoadedBaseline
from detector.adversarial import AdversarialDetector
from detector.anomaly import AnomalyDetector
from detector.errors import SnapshotError
from detector.labels import LabelJoin
from detector.monitor import FiredAlert, ModelMonitor, MonitorResult
from detector.performance import PerformanceMonitor
from detector.prepared import Preparer
from detector.schema import EventBatch
from detector.scoring import AnomalyScores
from detector.validation import InputValidator
from streams.alerts import alert_record
from streams.config import Settings
from streams.decode import DeadLetter, Decoder, DecodeResult
from streams.feedback import parse_feedback

log = logging.getLogger(__name__)

# Positions of events older than this many (per model, time windows) are forgotten; an alert whose
# window starts earlier reports its source from the oldest position still known.
MAX_TRACKED_POSITIONS = 1_000_000
# Smallest position buffer; it doubles as needed (and halves when mostly unused).
_MIN_POSITIONS = 1024
#: Features named in each per-event score record, largest contribution first.
SCORE_TOP_FEATURES = 3
# Snapshot entry holding the detection settings' digest the state was built with.
_DIGEST_KEY = "config_digest"


@dataclass(frozen=True)
class Positions:
    """Where each message of a chunk came from: a topic partition offset, or a file line.

    ``names`` are the topics or files of the chunk and ``source`` indexes them per message;
    ``partition`` is 0 for files; ``offset`` is the Kafka offset, or the 1-based line of a file;
    ``timestamp`` the Kafka message's timestamp (epoch ms, negative: none; None for files), which an
    event's ``ts`` may not exceed by more than ``max_future_ms`` (see :class:`~streams.decode.Decoder`).
    """

    kind: str  # "kafka" or "file"
    names: tuple[str, ...]
    source: npt.NDArray[np.int32]
    partition: npt.NDArray[np.int32]
    offset: npt.NDArray[np.int64]
    timestamp: npt.NDArray[np.int64] | None = None

    @classmethod
    def file_lines(cls, path: str, first_line: int, n: int) -> Positions:
        """Lines ``first_line .. first_line + n - 1`` of ``path``."""
        zeros = np.zeros(n, np.int32)
        return cls("file", (path,), zeros, zeros, np.arange(first_line, first_line + n, dtype=np.int64))

    def take(self, rows: npt.NDArray[Any]) -> Positions:
        """The positions of ``rows`` (indices or a boolean mask)."""
        ts = None if self.timestamp is None else self.timestamp[rows]
        return Positions(self.kind, self.names, self.source[rows], self.partition[rows], self.offset[rows], ts)

    def describe(self, i: int) -> dict[str, Any]:
        """The position of message ``i`` alone, for a dead letter."""
        name = self.names[self.source[i]]
        if self.kind == "file":
            return {"file": name, "line": int(self.offset[i])}
        return {"topic": name, "partition": int(self.partition[i]), "offset": int(self.offset[i])}


@dataclass
class ChunkResult:
    """What one chunk produced, to be delivered before its offsets are committed."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[DeadLetter, dict[str, Any]]] = field(default_factory=list)
    events_by_model: Counter[str] = field(default_factory=Counter)
    violations: Counter[tuple[str, str]] = field(default_factory=Counter)
    drift: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    labels: int = 0
    #: Per-event anomaly scores (``Pipeline(scores=True)`` only), in stream order per model.
    scores: list[dict[str, Any]] = field(default_factory=list)


def build_monitor(baseline: LoadedBaseline, settings: Settings) -> ModelMonitor:
    """One model's detectors, from its baseline and the detection settings."""
    ref = baseline.reference
    v = settings.validation
    validator = (
        InputValidator(
            ref, margin=v.margin, size=v.size, step=v.step, min_events=v.min_events,
            false_alarm_rate=v.false_alarm_rate, min_increase=v.min_increase,
        )
        if v.enabled
        else None
    )  # fmt: skip
    p = settings.performance
    performance = labels = None
    if p.enabled and baseline.performance is not None:
        performance = PerformanceMonitor(
            baseline.performance, size=p.size, step=p.step, min_events=p.min_events,
            false_alarm_rate=p.false_alarm_rate, tolerance=p.tolerance,
            log_loss_tolerance=p.log_loss_tolerance, error_tolerance=p.error_tolerance,
        )  # fmt: skip
        if p.feedback_topic:
            labels = LabelJoin(p.join_capacity, p.join_horizon_ms, n_classes=len(ref.schema.classes))
    a = settings.anomaly
    anomaly = None
    if a.enabled and baseline.anomaly is not None:
        anomaly = AnomalyDetector(
            baseline.anomaly, size=a.size, step=a.step, min_events=a.min_events,
            false_alarm_rate=a.false_alarm_rate, min_ratio=a.min_ratio,
        )  # fmt: skip
    d = settings.adversarial
    adversarial = None
    if d.enabled and baseline.adversarial is not None:
        key = d.pseudonymize_key.get_secret_value().encode() if d.pseudonymize_key else None
        adversarial = AdversarialDetector(
            baseline.adversarial, max_clients=d.max_clients, salt=d.salt.get_secret_value().encode(),
            pseudonymize_key=key, campaign_interval_s=d.campaign_interval_s, ignore_clients=d.ignore_clients,
        )  # fmt: skip
    return ModelMonitor(
        ref, **settings.drift.monitor_args(), validator=validator, performance=performance, labels=labels,
        anomaly=anomaly, adversarial=adversarial,
    )  # fmt: skip


class _PositionRing:
    """Source positions of a model's recent events, indexed by stream sequence number.

    Holds the events from :attr:`lo` to :attr:`seen` (exclusive): those a later alert's window can
    still reach back to (see :meth:`Pipeline.process`). The buffer is circular, grows on demand
    and shrinks when mostly unused, so an event-time window costs its own events, not a worst case;
    a snapshot holds the live range alone, oldest first.
    """

    def __init__(self, max_positions: int = MAX_TRACKED_POSITIONS) -> None:
        self.max_positions = max_positions
        self._clear(0)

    def _clear(self, seq: int) -> None:
        # The model's last event: the alerts of a flushed pane fire at it (there is no batch then).
        self.last_event: tuple[str, int] | None = None
        self.kind = "file"
        self.sources: list[str] = []
        self._source_idx: dict[str, int] = {}
        self.seen = self.lo = seq
        self._place(_MIN_POSITIONS, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64))

    def _place(self, capacity: int, src: npt.NDArray[Any], part: npt.NDArray[Any], off: npt.NDArray[Any]) -> None:
        """New buffers of ``capacity`` holding the live range, given oldest first."""
        at = np.arange(self.lo, self.seen, dtype=np.int64) % capacity
        self.src, self.part, self.off = (
            np.zeros(capacity, np.int32),
            np.zeros(capacity, np.int32),
            np.zeros(capacity, np.int64),
        )
        self.src[at], self.part[at], self.off[at] = src, part, off
        self.capacity = capacity

    def _live(self) -> npt.NDArray[np.int64]:
        return np.arange(self.lo, self.seen, dtype=np.int64) % self.capacity

    def _relayout(self, capacity: int) -> None:
        live = self._live()
        self._place(capacity, self.src[live], self.part[live], self.off[live])

    def add(self, pos: Positions, rows: npt.NDArray[np.int64]) -> None:
        """Record the positions of ``rows`` of a chunk, the next events of this model."""
        n = len(rows)
        end = self.seen + n
        lo = max(self.lo, end - self.max_positions)
        if end - lo > self.capacity:
            self.lo = min(lo, self.seen)
            self._relayout(min(max(2 * self.capacity, _pow2(end - lo)), self.max_positions))
        keep = rows[max(lo - self.seen, 0) :]
        idx = np.arange(end - len(keep), end, dtype=np.int64) % self.capacity
        self.src[idx] = self._ids(pos)[pos.source[keep]]
        self.part[idx] = pos.partition[keep]
        self.off[idx] = pos.offset[keep]
        self.seen, self.lo, self.kind = end, lo, pos.kind

    def trim(self, oldest: int) -> None:
        """Forget the events before sequence number ``oldest`` (the last event is always kept)."""
        self.lo = max(self.lo, min(oldest, self.seen - 1))
        live = self.seen - self.lo
        if self.capacity > _MIN_POSITIONS and 4 * live < self.capacity:
            self._relayout(max(_MIN_POSITIONS, _pow2(2 * live)))

    def _ids(self, pos: Positions) -> npt.NDArray[np.int32]:
        for name in pos.names:
            if name not in self._source_idx:
                self._source_idx[name] = len(self.sources)
                self.sources.append(name)
        return np.asarray([self._source_idx[name] for name in pos.names], dtype=np.int32)

    def _span(self, a: int, b: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """Sources, partitions and offsets of events ``a .. b - 1``: one or two slices of the circular buffers
        (an alert's window can reach back thousands of events, and a chunk can make thousands of alerts)."""
        i = a % self.capacity
        j = i + max(b - a, 0)
        if j <= self.capacity:
            return self.src[i:j], self.part[i:j], self.off[i:j]
        k = j - self.capacity
        cat = np.concatenate
        return cat([self.src[i:], self.src[:k]]), cat([self.part[i:], self.part[:k]]), cat([self.off[i:], self.off[:k]])

    def describe(
        self,
        start_seq: int,
        end_seq: int,
        pos: Positions | None = None,
        rows: npt.NDArray[np.int64] | None = None,
    ) -> dict[str, Any]:
        """Source range of events ``start_seq .. end_seq``; the events from :attr:`seen` on are
        ``rows`` of ``pos`` (the chunk being processed, not yet added)."""
        first, stop = max(start_seq, self.lo), min(end_seq + 1, self.seen)
        pieces = [self._span(first, stop)] if stop > first else []
        kind = self.kind
        new = np.zeros(0, dtype=np.int64)
        if pos is not None and rows is not None:
            new = rows[max(start_seq - self.seen, 0) : max(end_seq - self.seen + 1, 0)]
            kind = pos.kind
        if kind == "file":  # (the offsets alone, and the last event's file)
            offs = [x[2] for x in pieces if len(x[2])]
            if pos is not None and len(new):
                offs.append(pos.offset[new])
                last_file = pos.names[pos.source[new[-1]]]
            elif offs:
                last_file = self.sources[pieces[-1][0][-1]]
            if not offs:
                return {}
            return {
                "file": last_file,
                "line_start": min(int(o.min()) for o in offs),
                "line_end": max(int(o.max()) for o in offs),
                "line": int(offs[-1][-1]),
            }
        if pos is not None and len(new):
            pieces.append((self._ids(pos)[pos.source[new]], pos.partition[new], pos.offset[new]))
        if not pieces:
            return {}
        last_src, last_part, last_off = (int(x[-1]) for x in pieces[-1])
        src, part, off = (np.concatenate(c) for c in zip(*pieces, strict=True))
        key = (src.astype(np.int64) << 32) | part.astype(np.int64)  # (partitions are >= 0)
        ranges = []
        for k in np.unique(key).tolist():  # sorted by topic, then partition
            sel = key == k
            ranges.append(
                {
                    "topic": self.sources[k >> 32],
                    "partition": k & 0xFFFFFFFF,
                    "offset_start": int(off[sel].min()),
                    "offset_end": int(off[sel].max()),
                }
            )
        return {
            "topic": self.sources[last_src],
            "partition": last_part,
            "offset": last_off,
            "ranges": ranges,
        }

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        live = self._live()
        return {
            "src": self.src[live],
            "part": self.part[live],
            "off": self.off[live],
            "seen": np.asarray(self.seen, dtype=np.int64),
            "lo": np.asarray(self.lo, dtype=np.int64),
            "kind": np.asarray(self.kind, dtype=np.str_),
            "sources": np.asarray(self.sources, dtype=np.str_),
            **(
                {}
                if self.last_event is None
                else {
                    "last_event_id": np.asarray(self.last_event[0], dtype=np.str_),
                    "last_event_ts": np.asarray(self.last_event[1], dtype=np.int64),
                }
            ),
        }

    def restore(self, state: Mapping[str, npt.NDArray[Any]], seq: int) -> None:
        """Continue from a :meth:`snapshot`; ``seq`` is the restored monitor's sequence number.

        Positions are a convenience for alert sources: a snapshot that does not fit starts afresh at
        ``seq``, so later alerts still name their own events.
        """
        self._clear(seq)
        try:
            seen = int(state["seen"])
            src, part, off = (np.asarray(state[k]) for k in ("src", "part", "off"))
            if "lo" in state:
                lo = int(state["lo"])
            else:  # written before the live range was stored alone: a full circular buffer
                lo = max(seen - len(src), 0)
                at = np.arange(lo, seen, dtype=np.int64) % max(len(src), 1)
                src, part, off = src[at], part[at], off[at]
            kind = str(state["kind"]) if "kind" in state else "kafka"
            sources = [str(s) for s in state["sources"]]
            last = (str(state["last_event_id"]), int(state["last_event_ts"])) if "last_event_id" in state else None
        except (KeyError, ValueError, IndexError):
            return
        if seen != seq or not len(src) == len(part) == len(off) == seen - lo:
            return
        self.seen, self.lo, self.kind, self.last_event = seen, lo, kind, last
        self.sources, self._source_idx = sources, {s: i for i, s in enumerate(sources)}
        self._place(max(_MIN_POSITIONS, _pow2(seen - lo)), src, part, off)


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


class Pipeline:
    """Processes chunks of raw inference events for every model that has a baseline.

    Parameters
    ----------
    baselines
        ``model_id -> LoadedBaseline``; events of other models become dead letters.
    settings
        The detection sections (drift, validation, performance) configure each model's monitor.
    config_digest
        Digest of the detection settings, part of every alert id.
    max_message_bytes
        Larger messages are dead letters; so are events dated more than ``settings.max_future_ms`` after
        their Kafka message.
    """

    def __init__(
        self,
        baselines: Mapping[str, LoadedBaseline],
        settings: Settings,
        *,
        config_digest: str,
        max_message_bytes: int = 1_048_576,
        scores: bool = False,
    ) -> None:
        self.baselines = dict(baselines)
        self.scores = scores
        self.config_digest = config_digest
        self.decoder = Decoder(
            {m: b.reference.schema for m, b in self.baselines.items()},
            max_message_bytes=max_message_bytes,
            max_future_ms=settings.max_future_ms,
        )
        self._settings = settings
        self.monitors = {m: build_monitor(b, settings) for m, b in self.baselines.items()}
        # Count windows reach back at most size + step events; the event-time drift window as far
        # as its oldest event still counted (asked of the monitor after each chunk).
        counted = [w.size + w.step for w in (settings.validation, settings.anomaly, settings.performance) if w.enabled]
        if settings.drift.window == "count":
            counted.append(settings.drift.size + settings.drift.step)
        self._keep_recent = max(counted, default=1)
        self._positions = {m: _PositionRing() for m in self.baselines}

    def preparers(self) -> dict[str, Preparer]:
        """Each monitor's state-free work on a batch, for a decoding process to do (see
        :func:`streams.ahead.prepare`); the prepared chunks go to :meth:`process_decoded`."""
        return {m: mon.preparer for m, mon in self.monitors.items()}

    def process(self, values: Sequence[bytes | None], positions: Positions) -> ChunkResult:
        """Decode and detect on one chunk; returns alerts and dead letters in stream order."""
        return self.process_decoded(self.decoder.decode(values, positions.timestamp), positions)

    def process_decoded(self, decoded: DecodeResult, positions: Positions) -> ChunkResult:
        """Detect on one chunk decoded by a :class:`Decoder` of the same schemas (possibly in another
        process); the same result as :meth:`process` of its messages."""
        out = ChunkResult()
        out.violations.update(decoded.violations)
        for dead in decoded.dead:
            out.dead.append((dead, positions.describe(dead.index)))
        for mb in decoded.batches:
            model_id = mb.model_id
            ring = self._positions[model_id]
            first_seq = ring.seen
            result = self.monitors[model_id].update(mb.batch, violations=mb.violations, prepared=mb.prepared)
            out.events_by_model[model_id] += len(mb.batch)
            for fired in result.alerts:
                if fired.row is None:
                    source: dict[str, Any] = {}
                else:
                    start = min(fired.decision.window_start_seq, first_seq + fired.row)
                    source = ring.describe(start, first_seq + fired.row, positions, mb.index)
                out.alerts.append(self._record(model_id, fired, source))
            ring.add(positions, mb.index)
            if len(mb.batch):
                ring.last_event = (str(mb.batch.event_id[-1]), int(mb.batch.ts[-1]))
            ring.trim(min(self.monitors[model_id].oldest_seq, ring.seen - self._keep_recent))
            self._observe_drift(out, model_id, result)
            if self.scores and result.extras.get("scores") is not None:
                out.scores.extend(self._score_records(model_id, mb.batch, result.extras["scores"]))
        return out

    def flush(self, models: Sequence[str] | None = None) -> ChunkResult:
        """Evaluate the open event-time pane of each model (all, or ``models``) now.

        For the end of a replay (deterministic: same input, same alerts) and, in the live service, a
        model whose events stopped arriving. The alerts fire at the model's last event, with the
        source range of their window. Count windows have nothing to flush.
        """
        out = ChunkResult()
        for model_id in self.monitors if models is None else models:
            ring = self._positions[model_id]
            if ring.last_event is None:
                continue  # no event since the start (or the snapshot): nothing is open
            event_id, event_ts = ring.last_event
            result = self.monitors[model_id].flush(event_id=event_id, event_ts=event_ts)
            for fired in result.alerts:
                source = ring.describe(fired.decision.window_start_seq, ring.seen - 1)
                out.alerts.append(self._record(model_id, fired, source))
            self._observe_drift(out, model_id, result)
        return out

    def open_events(self, model_id: str) -> int:
        """Events of ``model_id`` waiting in an open pane of its drift window."""
        return self.monitors[model_id].open_events

    @staticmethod
    def _observe_drift(out: ChunkResult, model_id: str, result: MonitorResult) -> None:
        rep = result.drift
        if len(rep):
            out.drift[model_id] = {
                "psi": dict(zip(rep.names, rep.psi[-1].tolist(), strict=True)),
                "p_value": dict(zip(rep.names, rep.p_value[-1].tolist(), strict=True)),
            }

    def _score_records(self, model_id: str, batch: EventBatch, scores: AnomalyScores) -> list[dict[str, Any]]:
        """One record per event: its anomaly score, flag and the features that contribute most."""
        names = np.asarray(scores.features, dtype=object)
        version = self.baselines[model_id].version
        return [
            {
                "event_id": event_id,
                "model_id": model_id,
                "baseline_version": version,
                "event_ts": ts,
                "score": score,
                "flag": flag,
                "top_features": top,
            }
            for event_id, ts, score, flag, top in zip(
                batch.event_id.tolist(),
                batch.ts.tolist(),
                scores.score.tolist(),
                scores.flag.tolist(),
                names[scores.top_features(SCORE_TOP_FEATURES)].tolist(),
                strict=True,
            )
        ]

    def _record(self, model_id: str, fired: FiredAlert, source: Mapping[str, Any]) -> dict[str, Any]:
        return alert_record(
            fired.decision,
            model_id=model_id,
            baseline_version=self.baselines[model_id].version,
            config_digest=self.config_digest,
            event_id=fired.event_id,
            event_ts=fired.event_ts,
            source=source,
        )

    def process_feedback(self, values: Sequence[bytes | None], positions: Positions) -> ChunkResult:
        """Join late labels (``{"event_id", "label", "ts"[, "model_id"]}`` messages) to predictions."""
        out = ChunkResult()
        labels = parse_feedback(values, max_message_bytes=self.decoder.max_message_bytes)
        for dead in labels.dead:
            out.dead.append((dead, positions.describe(dead.index)))
        for model_id, mon in self.monitors.items():
            schema = self.baselines[model_id].reference.schema
            rows = labels.rows_for(model_id)
            if not rows:
                continue
            ids, label, code, ts = labels.encode(rows, schema)
            where = {**positions.describe(labels.index[rows[0]]), "feedback": True}
            for fired in mon.update_labels(ids, label, code, ts):
                out.alerts.append(self._record(model_id, fired, where))
        out.labels = len(labels.index)
        return out

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """All detector state of every model, as one flat dict of arrays."""
        state: dict[str, npt.NDArray[Any]] = {_DIGEST_KEY: np.asarray(self.config_digest)}
        for m, mon in self.monitors.items():
            version = self.baselines[m].version
            for k, v in mon.snapshot().items():
                state[f"{m}/{version}/monitor.{k}"] = v
            for k, v in self._positions[m].snapshot().items():
                state[f"{m}/{version}/positions.{k}"] = v
        return state

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> list[str]:
        """Restore what matches the current baselines; returns the models restored.

        State saved against another baseline version, or with other detection settings (window size,
        step, thresholds), is ignored: a promoted baseline or a new configuration starts its windows
        afresh.
        """
        digest = state.get(_DIGEST_KEY)
        if digest is not None and str(digest) != self.config_digest:
            log.warning(
                "checkpoint state was built with other detection settings (%s, now %s); detectors start afresh",
                digest,
                self.config_digest,
            )
            return []
        grouped: dict[tuple[str, str], dict[str, dict[str, npt.NDArray[Any]]]] = {}
        for key, value in state.items():
            if key == _DIGEST_KEY:
                continue
            model, version, rest = key.split("/", 2)
            part, _, name = rest.partition(".")
            grouped.setdefault((model, version), {"monitor": {}, "positions": {}})[part][name] = value
        restored = []
        for (model, version), parts in grouped.items():
            if model in self.monitors and self.baselines[model].version == version:
                try:
                    self.monitors[model].restore(parts["monitor"])
                except SnapshotError as e:
                    # e.g. written by an older inferwatch whose detector state had another layout: the
                    # offsets still hold, so no event is lost; only this model's windows start empty.
                    log.warning(
                        "checkpoint state of %s/%s cannot be restored (%s); its detectors start afresh",
                        model,
                        version,
                        e,
                    )
                    self.monitors[model] = build_monitor(self.baselines[model], self._settings)
                    continue
                self._positions[model].restore(parts["positions"], self.monitors[model].seq)
                restored.append(model)
            else:
                log.info("checkpoint state of %s/%s does not match an active baseline; ignored", model, version)
        return restored
