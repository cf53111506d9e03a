"""The whole pipeline in memory: every detector on, chunking must not change what is detected."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from baselines.build import build_baseline, infer_schema, load_baseline
from baselines.store import BaselineStore
from streams.config import Settings
from streams.decode import Decoder, parse_events
from streams.pipeline import Pipeline, Positions
from streams.synthetic import SyntheticStream


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    lines = list(SyntheticStream(labels=True, n_clients=20).lines(12_000, seed=1))
    objs, _, _ = parse_events(lines)
    schema = infer_schema(objs, "credit-risk")
    batch = Decoder({"credit-risk": schema}).decode(lines).batches[0].batch
    store = BaselineStore(tmp_path_factory.mktemp("store"))
    build_baseline(store, batch, schema)
    return load_baseline(store, "credit-risk")


def _stream() -> list[bytes]:
    """Outliers, then a null feature, then values in other units: every detector has work."""
    out = []
    for i, line in enumerate(SyntheticStream(n_clients=20).lines(16_000, seed=2)):
        e = orjson.loads(line)
        if 4_000 <= i < 8_000 and i % 15 == 0:
            e["features"]["f03"] = 9.0
        if i >= 10_000:
            e["features"]["f10"] = None
        if i >= 13_000:
            e["features"]["f04"] = e["features"]["f04"] * 1000
        out.append(orjson.dumps(e))
    return out


def _run(baseline: Any, lines: list[bytes], chunk: int) -> list[dict[str, Any]]:
    settings = Settings()
    pipe = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    alerts: list[dict[str, Any]] = []
    for a in range(0, len(lines), chunk):
        part = lines[a : a + chunk]
        alerts += pipe.process(part, Positions.file_lines("s.jsonl", a + 1, len(part))).alerts
    return alerts


def test_all_detectors_fire_and_chunking_does_not_matter(baseline: Any) -> None:
    assert baseline.anomaly is not None and baseline.adversarial is not None and baseline.performance is not None
    lines = _stream()
    big = _run(baseline, lines, 4_000)
    kinds = {(a["kind"], tuple(a["features"])) for a in big if a["status"] == "open"}
    assert ("input_violation", ("f10",)) in kinds
    assert ("input_violation", ("f04",)) in kinds
    assert any(k == "anomaly_rate" and "f03" in f for k, f in kinds)
    ids = {orjson.loads(x)["event_id"] for x in lines}
    assert all(a["event_id"] in ids for a in big)
    # Every alert fires at or after the first change of the stream.
    assert min(int(a["event_id"].rsplit("-", 1)[1]) for a in big) >= 4_000
    small = _run(baseline, lines, 733)
    assert [a["alert_id"] for a in small] == [a["alert_id"] for a in big]
    assert [a["source"]["line"] for a in small] == [a["source"]["line"] for a in big]


def test_chunks_prepared_elsewhere_give_the_same_alerts(baseline: Any) -> None:
    from streams.ahead import prepare

    lines = _stream()
    settings = Settings()
    pipe = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    preparers = pipe.preparers()
    assert not preparers["credit-risk"].empty
    alerts: list[dict[str, Any]] = []
    for a in range(0, len(lines), 4_000):
        part = lines[a : a + 4_000]
        decoded = prepare(pipe.decoder.decode(part), preparers)
        assert all(
            mb.prepared and mb.prepared.anomaly and mb.prepared.queries and mb.prepared.cells is not None
            for mb in decoded.batches
        )
        alerts += pipe.process_decoded(decoded, Positions.file_lines("s.jsonl", a + 1, len(part))).alerts
    assert any(a["kind"] == "anomaly_rate" for a in alerts)
    assert alerts == _run(baseline, lines, 4_000)


def test_snapshot_restore_mid_stream(baseline: Any, tmp_path: Path) -> None:
    lines = _stream()
    settings = Settings()
    expected = _run(baseline, lines, 2_000)
    first = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    got = first.process(lines[:9_000], Positions.file_lines("s.jsonl", 1, 9_000)).alerts
    state = {k: np.array(v) for k, v in first.snapshot().items()}
    second = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    assert second.restore(state) == ["credit-risk"]
    got += second.process(lines[9_000:], Positions.file_lines("s.jsonl", 9_001, 7_000)).alerts
    assert [a["alert_id"] for a in got] == [a["alert_id"] for a in expected]


# -- event-time windows: the last pane, snapshots, the positions kept --------------------------------
TIME_WINDOW = {"drift": {"window": "time", "size": 20_000, "step": 2_000}}  # 2,000 / 200 events at 10 ms


def dense_last_pane_lines(n_clients: int = 50) -> list[bytes]:
    """16,000 stable events, then 1,500 with ``f02`` shifted by 3 sd, all inside the next 2 s pane.

    The drift of ``f02`` is only in that last pane, which no later event ever closes.
    """
    stream = SyntheticStream(n_clients=n_clients, shift_feature=2, shift_at=16_000, shift_by=3.0)
    out = []
    for i, line in enumerate(stream.lines(17_500, seed=3)):
        if i >= 16_000:
            e = orjson.loads(line)
            e["ts"] = stream.start_ts + 160_000 + (i - 16_000)
            line = orjson.dumps(e)
        out.append(line)
    return out


def _run_flushed(
    baseline: Any, lines: list[bytes], chunk: int, sections: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alerts of the chunks, alerts of the flush at the end)."""
    settings = Settings.model_validate(sections)
    pipe = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    alerts: list[dict[str, Any]] = []
    for a in range(0, len(lines), chunk):
        part = lines[a : a + chunk]
        alerts += pipe.process(part, Positions.file_lines("s.jsonl", a + 1, len(part))).alerts
    return alerts, pipe.flush().alerts


def test_time_window_last_pane_is_evaluated_by_the_flush_at_the_end(baseline: Any) -> None:
    lines = dense_last_pane_lines(n_clients=20)
    streamed, flushed = _run_flushed(baseline, lines, 4_000, TIME_WINDOW)
    assert not [a for a in streamed if a["kind"] == "feature_drift"], "drift before the last pane"
    drift = [a for a in flushed if a["kind"] == "feature_drift"]
    assert [(a["status"], a["features"]) for a in drift] == [("open", ["f02"])]
    last = orjson.loads(lines[-1])
    a = drift[0]
    assert a["event_id"] == last["event_id"] and a["event_ts"] == last["ts"] == a["window"]["end_ts"]
    assert a["source"]["line"] == a["source"]["line_end"] == len(lines)
    # The window is the 9 panes before and the flushed one: 1,800 + 1,500 events, from line 14,201.
    assert a["window"]["events"] == 3_300 and a["source"]["line_start"] == 14_201
    # Deterministic whatever the chunking; a count window has nothing to flush.
    again = _run_flushed(baseline, lines, 733, TIME_WINDOW)
    assert [x["alert_id"] for x in again[0] + again[1]] == [x["alert_id"] for x in streamed + flushed]
    assert again[1] == flushed
    assert _run_flushed(baseline, lines, 4_000, {})[1] == []


def test_time_window_snapshot_restore_keeps_alerts_sources_and_a_small_checkpoint(baseline: Any) -> None:
    lines = _stream()
    settings = Settings.model_validate(TIME_WINDOW)
    streamed, flushed = _run_flushed(baseline, lines, 2_000, TIME_WINDOW)
    expected = streamed + flushed
    assert expected, "the stream should alert"
    first = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    got = first.process(lines[:9_000], Positions.file_lines("s.jsonl", 1, 9_000)).alerts
    state = {k: np.array(v) for k, v in first.snapshot().items()}
    # Positions of the window's events (2,000) or of the count windows' reach (2,200), not a worst case.
    positions = {k: v for k, v in state.items() if "/positions." in k}
    assert len(positions[next(k for k in positions if k.endswith(".off"))]) <= 2_200
    assert sum(v.nbytes for v in positions.values()) < 64_000
    second = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    assert second.restore(state) == ["credit-risk"]
    got += second.process(lines[9_000:], Positions.file_lines("s.jsonl", 9_001, 7_000)).alerts
    got += second.flush().alerts
    assert [(a["alert_id"], a["source"]) for a in got] == [(a["alert_id"], a["source"]) for a in expected]


def test_position_ring_grows_trims_and_describes_like_a_full_list() -> None:
    from streams.pipeline import _PositionRing

    rng = np.random.default_rng(4)
    ring = _PositionRing(max_positions=50_000)
    topics = ("a", "b")
    seqs: list[tuple[str, int, int]] = []  # every event's (topic, partition, offset), by sequence number
    oldest = 0
    for step in range(60):
        n = int(rng.integers(1, 3_000))
        src = rng.integers(0, 2, n).astype(np.int32)
        part = rng.integers(0, 3, n).astype(np.int32)
        off = np.arange(len(seqs), len(seqs) + n, dtype=np.int64) * 2
        pos = Positions("kafka", topics, src, part, off)
        rows = np.arange(n, dtype=np.int64)
        # Before adding: a range reaching into the chunk, as process() asks it.
        start = int(rng.integers(max(ring.lo, oldest), ring.seen + 1))
        end = ring.seen + int(rng.integers(0, n))
        got = ring.describe(start, end, pos, rows)
        ring.add(pos, rows)
        seqs += [(topics[s], int(p), int(o)) for s, p, o in zip(src, part, off, strict=True)]
        want = [seqs[i] for i in range(start, end + 1)]
        assert (got["topic"], got["partition"], got["offset"]) == want[-1]
        assert {(r["topic"], r["partition"]) for r in got["ranges"]} == {(t, p) for t, p, _ in want}
        for r in got["ranges"]:
            offs = [o for t, p, o in want if (t, p) == (r["topic"], r["partition"])]
            assert (r["offset_start"], r["offset_end"]) == (min(offs), max(offs))
        # Keep a window that sometimes grows, sometimes shrinks.
        oldest = max(oldest, ring.seen - int(rng.integers(1, 8_000)))
        ring.trim(oldest)
        assert ring.lo == max(oldest, ring.seen - 50_000) or ring.lo == ring.seen - 1
        assert ring.capacity >= ring.seen - ring.lo and ring.capacity <= max(1024, 4 * (ring.seen - ring.lo) + 4_096)
        if step % 7 == 0:
            copy = _PositionRing(max_positions=50_000)
            copy.restore(ring.snapshot(), ring.seen)
            assert copy.describe(ring.lo, ring.seen - 1) == ring.describe(ring.lo, ring.seen - 1)
            ring = copy
    # A checkpoint written before the live range was stored alone (a full circular buffer) still restores.
    old = _PositionRing(max_positions=50_000)
    cap = 1_000
    live = np.arange(ring.seen - cap, ring.seen)
    old_state = {
        "src": np.zeros(cap, np.int32),
        "part": np.zeros(cap, np.int32),
        "off": np.zeros(cap, np.int64),
        "seen": np.asarray(ring.seen),
        "sources": np.asarray(["a", "b"]),
    }
    old_state["off"][live % cap] = live * 2
    old.restore(old_state, ring.seen)
    assert (old.lo, old.seen) == (ring.seen - cap, ring.seen)
    assert old.describe(ring.seen - 10, ring.seen - 1)["ranges"][0]["offset_start"] == (ring.seen - 10) * 2
    # A snapshot of another stream position starts afresh at the monitor's.
    fresh = _PositionRing()
    fresh.restore(old_state, ring.seen + 5)
    assert (fresh.lo, fresh.seen) == (ring.seen + 5, ring.seen + 5) and fresh.describe(0, ring.seen + 4) == {}


def test_detection_digest_follows_the_adversarial_settings_without_carrying_secrets() -> None:
    base = Settings()
    digests = {
        base.detection_digest(),
        Settings.model_validate({"adversarial": {"salt": "another salt"}}).detection_digest(),
        Settings.model_validate({"adversarial": {"max_clients": 10}}).detection_digest(),
        Settings.model_validate({"adversarial": {"pseudonymize_key": "k"}}).detection_digest(),
        Settings.model_validate({"adversarial": {"ignore_clients": ["batch-job"]}}).detection_digest(),
    }
    assert len(digests) == 5
    # no client ignored: the digest of a configuration without the setting
    assert (
        Settings.model_validate({"adversarial": {"ignore_clients": []}}).detection_digest() == base.detection_digest()
    )
    # service-only settings (where to read, how often to checkpoint) keep the alert ids
    assert Settings.model_validate({"checkpoint": {"interval_s": 7}}).detection_digest() == base.detection_digest()


def test_state_of_an_older_layout_starts_that_model_afresh(baseline: Any) -> None:
    # a checkpoint written by a version whose adversarial state had other arrays must not stop the service
    lines = _stream()
    settings = Settings()
    first = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    first.process(lines[:3_000], Positions.file_lines("s.jsonl", 1, 3_000))
    state = {k: np.array(v) for k, v in first.snapshot().items() if not k.endswith("adversarial.client.slot")}
    assert len(state) < len(first.snapshot())
    second = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    assert second.restore(state) == []
    fresh = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    rest = lines[3_000:6_000]
    pos = Positions.file_lines("s.jsonl", 3_001, len(rest))
    assert [a["alert_id"] for a in second.process(rest, pos).alerts] == [
        a["alert_id"] for a in fresh.process(rest, pos).alerts
    ]


def test_file_replay_decoded_ahead_in_another_process_equals_decoding_in_line(baseline: Any, tmp_path: Path) -> None:
    from streams.replay import replay_file

    lines = _stream()[:9_000]
    lines[17] = b'{"event_id": "broken", "features": '
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    runs = []
    for ahead in (False, True):
        alerts: list[dict[str, Any]] = []
        dead: list[tuple[str, Any]] = []
        summary = replay_file(
            Settings(), {"credit-risk": baseline}, str(path), alerts.append,
            lambda d, w, dead=dead: dead.append((d.reason, w)), chunk_size=2_000, decode_ahead=ahead,
        )  # fmt: skip
        runs.append((summary, alerts, dead))
    (s0, a0, d0), (s1, a1, d1) = runs
    assert s0 == s1 and s0.events == 8_999 and s0.dead_letters == 1
    assert a0 and a0 == a1
    assert d0 == d1 == [("not_json", {"file": str(path), "line": 18})]


def test_per_event_scores_name_the_outlying_feature_and_only_when_asked(baseline: Any) -> None:
    lines = _stream()[3_000:5_000]  # outliers in f03 every 15th event from 4,000 on
    settings = Settings()
    quiet = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    assert quiet.process(lines, Positions.file_lines("s.jsonl", 1, len(lines))).scores == []
    pipe = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest(), scores=True)
    scores: list[dict[str, Any]] = []
    for a in range(0, len(lines), 700):
        part = lines[a : a + 700]
        scores += pipe.process(part, Positions.file_lines("s.jsonl", a + 1, len(part))).scores
    events = [orjson.loads(line) for line in lines]
    assert [s["event_id"] for s in scores] == [e["event_id"] for e in events]
    assert [s["event_ts"] for s in scores] == [e["ts"] for e in events]
    assert {s["model_id"] for s in scores} == {"credit-risk"}
    assert {s["baseline_version"] for s in scores} == {baseline.version}
    assert all(len(s["top_features"]) == 3 and isinstance(s["score"], float) for s in scores)
    outliers = [s for s, e in zip(scores, events, strict=True) if e["features"]["f03"] == 9.0]
    others = [s for s, e in zip(scores, events, strict=True) if e["features"]["f03"] != 9.0]
    assert len(outliers) == 67
    assert all(s["flag"] and s["top_features"][0] == "f03" for s in outliers)
    assert sum(s["flag"] for s in others) < 0.01 * len(others)
    assert min(s["score"] for s in outliers) > max(s["score"] for s in others)


def test_adversarial_detector_gets_the_anomaly_flags_and_far_out_ones(
    baseline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor hands the adversarial detector the anomaly scorers' ood flags and, as ``far_ood``, the events
    beyond the squared false-positive rate (one of those names an account of a split extraction)."""
    from detector.adversarial import AdversarialDetector
    from detector.anomaly import AnomalyDetector

    seen: list[tuple[Any, Any, Any]] = []
    scores: list[Any] = []
    adv_update, an_update = AdversarialDetector.update, AnomalyDetector.update

    def adv(self: AdversarialDetector, batch: Any, **kw: Any) -> Any:
        seen.append((kw["ood"], kw["far_ood"], scores[-1]))
        return adv_update(self, batch, **kw)

    def an(self: AnomalyDetector, batch: Any, **kw: Any) -> Any:
        out = an_update(self, batch, **kw)
        scores.append((self.last_scores, self.expected_rate))
        return out

    monkeypatch.setattr(AdversarialDetector, "update", adv)
    monkeypatch.setattr(AnomalyDetector, "update", an)
    _run(baseline, _stream(), 4_000)
    assert seen
    for ood, far, (s, fpr) in seen:
        assert np.array_equal(ood, s.flag) and np.array_equal(far, s.p_value <= fpr**2)
    assert any(far.any() for _, far, _ in seen) and not all(np.array_equal(o, f) for o, f, _ in seen)


def test_prepared_chunks_fit_the_shared_memory_bound(baseline: Any) -> None:
    """A decoded chunk with everything the decoding process prepares for every detector fits the slots sized
    by ``bytes_per_event`` (else every chunk takes the pipe: correct, but slower)."""
    import pickle

    from streams.ahead import prepare
    from streams.shm import bytes_per_event

    settings = Settings()
    pipe = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    lines = _stream()[:2_000]
    decoded = prepare(pipe.decoder.decode(lines), pipe.preparers())
    assert decoded.batches[0].prepared is not None
    buffers: list[pickle.PickleBuffer] = []
    pickle.dumps(decoded, protocol=5, buffer_callback=buffers.append)
    size = sum(b.raw().nbytes for b in buffers)
    assert size <= len(lines) * bytes_per_event(pipe.decoder.schemas.values()), size / len(lines)


def test_absurd_values_raise_no_warning_and_leave_the_detectors_state_finite(baseline: Any) -> None:
    """Finite but absurd values (1e300, the largest double) reach the detectors with an ``out_of_range`` count. They
    must not overflow into inf and NaN in state shared by all events: one such event once made the adversarial
    detector's population sums NaN for good (snapshots included)."""
    lines = []
    for i, line in enumerate(SyntheticStream(n_clients=20).lines(3_000, seed=2)):
        e = orjson.loads(line)
        if i % 250 == 7:
            e["features"]["f03"] = (1e300, -1e300, 1e9, 1.7e308)[(i // 250) % 4]
        lines.append(orjson.dumps(e))
    settings = Settings()
    pipe = Pipeline({"credit-risk": baseline}, settings, config_digest=settings.detection_digest())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.process(lines, Positions.file_lines("s.jsonl", 1, len(lines)))
    state = pipe.snapshot()
    population = next(v for k, v in state.items() if k.endswith("adversarial.meta.population"))
    assert np.isfinite(population).all()
    rings = next(v for k, v in state.items() if k.endswith("adversarial.client.ring"))
    assert np.isfinite(rings.astype(np.float32)).all()
