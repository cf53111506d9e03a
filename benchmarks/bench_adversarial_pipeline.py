"""Adversarial detection through the whole pipeline: file replay and the real Kafka broker, plus throughput.

``bench_adversarial.py`` runs :class:`detector.adversarial.AdversarialDetector` on in-memory arrays. This
script sends the same digits-victim attack streams through what a user runs:

1. The victim and its reference split come from ``bench_adversarial.victim()``; the reference split is
   written as inference events (with ``probabilities`` and ``client_id``) and the baseline is built with
   ``inferwatch baseline build``, which fits every detector's calibration, the adversarial one included.
2. Per variant (``single``, ``split10``, ``split100``, ``mixed``: ``bench_adversarial``'s ART attack traffic
   interleaved by time with benign clients and a flooder), the stream is written as JSONL inference events
   and run (a) through :func:`streams.replay.replay_file` and (b) produced to a topic of a real Apache
   Kafka broker and consumed by :class:`streams.service.Service`, whose alerts are read back from the
   alerts topic. Per attack: instances detected, queries before the first alert, the kind that fired
   first; over benign accounts: how many were named by an adversarial alert; and whether the file and
   Kafka runs gave the same alert ids.
3. Throughput: a stream of reference-like events from 100,000 distinct active clients, whole-pipeline
   file replay against ``json.loads`` of each line of the same file, each repeat a fresh process with
   BLAS limited to one thread (threadpoolctl), repeats interleaved; plus one run with its stages timed.

Run from the repository root::

    .venv/bin/python benchmarks/bench_adversarial_pipeline.py            # everything, ~10 min
    .venv/bin/python benchmarks/bench_adversarial_pipeline.py --quick    # smaller throughput stream, 1 repeat

Without ``--bootstrap`` (or ``$INFERWATCH_BOOTSTRAP``) a broker is started with ``scripts/kafka-broker.sh``
in ``.cache/bench/adversarial-pipeline-kafka`` and stopped at the end. A full run writes
``benchmarks/results/adversarial_pipeline.md`` and ``.json``; partial runs write to ``.cache/bench/results/``.
Generated files are cached in ``.cache/bench/adversarial-pipeline/`` under names carrying a digest of
their inputs (``bench_adversarial.py`` and this generator), so an attack-traffic change regenerates them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODEL_ID = "digits-mlp"
SALT = "bench-salt"  # bench_adversarial's detector salt: the same index geometry
MAX_CLIENTS_DETECTION = 50_000  # bench_adversarial's cap for the attack streams
T0_MS = 1_793_491_200_000  # 2026-11-01T00:00Z: event times are this plus the streams' own clocks
REF_T0_MS = T0_MS - 7_200_000  # the reference hour ends an hour before the live streams start
VARIANTS = ("single", "split10", "split100", "mixed")
ADVERSARIAL = ("evasion_probing", "model_extraction", "query_flood")
RANK = {"info": 0, "warning": 1, "critical": 2}
CHUNK = 10_000  # replay chunk (the replay_file default)
OTHER_CHUNK = 3_333  # a second replay in chunks that cut the stream elsewhere
KAFKA_TIMEOUT_S = 600.0
GENERATOR_VERSION = "1"  # bump when this file's stream generation changes

CACHE = ROOT / ".cache" / "bench" / "adversarial-pipeline"
RESULTS = ROOT / "benchmarks" / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _limit_blas() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _blas_info() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "num_threads", "architecture")
    return [{k: i.get(k) for k in keys} for i in threadpool_info()]


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:12]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# ============================================================================================== data


def _event_line(
    event_id: str, ts: int, client: str, x: npt.NDArray[np.float64], p: npt.NDArray[np.float64], names: list[str]
) -> bytes:
    import orjson

    return orjson.dumps(
        {
            "event_id": event_id,
            "ts": ts,
            "model_id": MODEL_ID,
            "client_id": client,
            "features": dict(zip(names, x.round(6).tolist(), strict=True)),
            "prediction": str(int(np.argmax(p))),
            "probabilities": {str(k): v for k, v in enumerate(p.round(6).tolist())},
        }
    )


def write_events(
    path: Path,
    x: npt.NDArray[np.float64],
    proba: npt.NDArray[np.float64],
    clients: Sequence[str],
    ts: npt.NDArray[np.int64],
    prefix: str = "e",
) -> int:
    """Write inference events (README contract) as JSONL, ids ``{prefix}{i}``; atomically (tmp + rename)."""
    names = [f"f{j:02d}" for j in range(x.shape[1])]
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        for s in range(0, len(x), 50_000):
            e = min(len(x), s + 50_000)
            fh.write(
                b"".join(
                    _event_line(f"{prefix}{i}", int(ts[i]), str(clients[i]), x[i], proba[i], names) + b"\n"
                    for i in range(s, e)
                )
            )
    tmp.replace(path)
    return len(x)


def peak_rates(clients: npt.NDArray[Any], ts: npt.NDArray[np.int64], tau_s: float) -> dict[str, tuple[float, int]]:
    """Per client: peak exponentially decayed rate (events/s) and the index (in its sorted events) where it peaks."""
    out: dict[str, tuple[float, int]] = {}
    for c in sorted(set(clients.tolist())):
        t = np.sort(ts[clients == c]).astype(np.float64) / 1000.0
        r, best, at = 0.0, 0.0, 0
        for j in range(len(t)):
            r = r * float(np.exp(-(t[j] - t[j - 1]) / tau_s)) + 1.0 if j else 1.0
            if r > best:
                best, at = r, j
        out[str(c)] = (best / tau_s, at)
    return out


def reference_schedule(
    n: int, seed: int, rate_tau_s: float = 60.0, min_ordinary: int = 40
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64], int]:
    """Client ids and times for ``n`` reference rows that keep the per-client rate ceiling of
    ``bench_adversarial.reference_log`` (one hour, 210 clients, 10 of them heavy).

    The ceiling is ``rate_factor`` x the 99.9% quantile of the clients' peak decayed rates, i.e. about the top
    two peaks. The reference split has too few rows for the whole hour, so it gets the events of the two
    heaviest clients in the longest window before their peaks that leaves ``min_ordinary`` rows (older
    events add ``exp(-window / tau)`` at most to a decayed rate), and spreads the remaining rows over ordinary
    clients at their own pace. Returns the clients, the times and the window (seconds).
    """
    import bench_adversarial as ba

    cl, ts = ba.reference_log(np.random.default_rng(ba.SEED))  # the stream bench_adversarial calibrates with
    peaks = peak_rates(cl, ts, rate_tau_s)
    top = sorted(peaks, key=lambda c: -peaks[c][0])[:2]
    for window_s in range(300, 0, -10):
        clients: list[str] = []
        times: list[int] = []
        for c in top:
            t = np.sort(ts[cl == c])[: peaks[c][1] + 1]
            keep = t[t >= t[-1] - window_s * 1000]
            clients += [c] * len(keep)
            times += keep.tolist()
        if len(clients) <= n - min_ordinary:
            break
    else:
        raise ValueError(f"the reference split ({n} rows) is too small for the heavy clients' peaks")
    rng = np.random.default_rng(seed)
    ordinary = [c for c in sorted(peaks) if c not in top and peaks[c][0] < 0.2]
    rest = n - len(clients)
    per = {c: 0 for c in ordinary}
    for j in range(rest):
        per[ordinary[j % len(ordinary)]] += 1
    for c, m in per.items():
        if m:
            t = np.sort(ts[cl == c])
            s = int(rng.integers(0, max(1, len(t) - m)))
            clients += [c] * m
            times += t[s : s + m].tolist()
    order = rng.permutation(n)  # rows of the reference split get clients and times in random order
    return np.asarray(clients, dtype=object)[order], np.asarray(times, dtype=np.int64)[order], window_s


def prepare(cache: Path, throughput_events: int, n_clients: int, variants: Sequence[str]) -> dict[str, Any]:
    """Reference and stream files (cached) and the per-event labels of every attack stream (``.npz``): client,
    group, attack instance, query index. ``throughput_events=0``: no throughput stream."""
    import bench_adversarial as ba

    cache.mkdir(parents=True, exist_ok=True)
    key = _digest(_file_digest(ROOT / "benchmarks" / "bench_adversarial.py"), GENERATOR_VERSION)
    ref_path = cache / f"reference-{key}.jsonl"
    stream_paths = {v: cache / f"stream-{v}-{key}.jsonl" for v in variants}
    meta_paths = {v: cache / f"stream-{v}-{key}.npz" for v in variants}
    tkey = _digest(key, throughput_events, n_clients)
    tp_path = cache / f"throughput-{tkey}.jsonl"
    wanted = [ref_path, *stream_paths.values(), *meta_paths.values(), *([tp_path] if throughput_events else [])]
    need = [p for p in wanted if not p.exists()]
    info: dict[str, Any] = {}
    if need:
        log(f"generating {len(need)} file(s) (the victim takes a minute)")
        clf, _, xref, xte, yte, _ = ba.victim()
        logs = ba.attack_logs()
        info["attack_queries"] = {k: [len(a) for a in v] for k, v in logs.items()}
        if not ref_path.exists():
            cl, ts, _ = reference_schedule(len(xref), seed=ba.SEED)
            write_events(ref_path, xref, clf.predict_proba(xref), cl.tolist(), REF_T0_MS + ts, prefix="ref")
        horizon = 3600.0
        for v in variants:
            if stream_paths[v].exists() and meta_paths[v].exists():
                continue
            # bench_adversarial.main's construction of each variant, seed for seed
            vr = np.random.default_rng(ba.SEED + zlib.crc32(v.encode()) % 97)
            parts = ba.benign_parts(xte, yte, vr, horizon) + ba.attack_parts(logs, v, xte, vr, horizon)
            parts.append(ba.flood_part(xte, vr))
            st = ba.assemble(parts)
            proba = clf.predict_proba(np.clip(st.x, 0, 1))
            write_events(stream_paths[v], st.x, proba, st.client.tolist(), T0_MS + st.ts)
            np.savez(
                meta_paths[v],
                client=st.client.astype(str),
                group=st.group.astype(str),
                inst=st.inst,
                qidx=st.qidx,
            )
        if throughput_events and not tp_path.exists():
            rng = np.random.default_rng(ba.SEED + 7)
            n = throughput_events
            # every client once in the first n_clients events, then uniformly: all of them stay active
            first = rng.permutation(n_clients)
            ids = np.r_[first, rng.integers(0, n_clients, max(0, n - n_clients))][:n]
            rows = rng.integers(0, len(xte), n)
            x = np.clip(xte[rows] + rng.normal(0.0, 0.05, (n, xte.shape[1])), 0.0, 1.0)
            names = np.array([f"client-{i}" for i in range(n_clients)], dtype=object)
            ts = T0_MS + np.sort(rng.integers(0, 3_600_000, n))
            write_events(tp_path, x, clf.predict_proba(x), names[ids].tolist(), ts)
    _, _, window_s = reference_schedule(sum(1 for _ in ref_path.open("rb")), seed=ba.SEED)
    return {
        "key": key,
        "reference": str(ref_path),
        "reference_heavy_window_s": window_s,
        "streams": {v: str(p) for v, p in stream_paths.items()},
        "meta": {v: str(p) for v, p in meta_paths.items()},
        "throughput": str(tp_path),
        "throughput_events": throughput_events,
        "throughput_clients": n_clients,
        **info,
    }


def build_store(reference: str, store: Path) -> dict[str, Any]:
    """``inferwatch baseline build`` of the reference events; the adversarial calibration it stored."""
    from baselines.build import load_baseline
    from baselines.store import BaselineStore

    exe = Path(sys.executable).parent / "inferwatch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERWATCH__")}
    t = time.perf_counter()
    proc = subprocess.run(
        [str(exe), "baseline", "build", "--input", reference, "--out", str(store)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=1800,
    )
    if proc.returncode:
        raise RuntimeError(f"inferwatch baseline build failed: {proc.stderr[-2000:]}")
    version = proc.stdout.strip().splitlines()[-1]
    loaded = load_baseline(BaselineStore(store), MODEL_ID)
    if loaded.adversarial is None:
        raise RuntimeError("the baseline has no adversarial calibration (reference events without probabilities?)")
    _, meta = loaded.adversarial.to_arrays()
    components = []
    with contextlib.suppress(Exception):
        manifest = json.loads((Path(loaded.info.path) / "manifest.json").read_text())
        components = manifest.get("meta", manifest).get("components", [])
    return {
        "version": version,
        "seconds": time.perf_counter() - t,
        "adversarial": {k: v for k, v in meta.items() if k != "format"},
        "components": components,
    }


def bench_artifact_reference(reference: str) -> dict[str, float]:
    """The calibration as bench_adversarial fits it in memory: the same reference rows and probabilities (read
    back from the reference events), with its whole hour of reference traffic for the rate ceiling."""
    import bench_adversarial as ba

    from detector.adversarial import AdversarialArtifact

    with open(reference, "rb") as fh:
        events = [json.loads(line) for line in fh]
    x = np.array([[e["features"][f"f{j:02d}"] for j in range(len(e["features"]))] for e in events])
    proba = np.array([[e["probabilities"][str(k)] for k in range(len(e["probabilities"]))] for e in events])
    cr, tr = ba.reference_log(np.random.default_rng(ba.SEED))
    art = AdversarialArtifact.fit(x, proba, client_id=cr, ts=tr, seed=0)
    _, meta = art.to_arrays()
    return {k: float(v) for k, v in meta.items() if k != "format"}


# ============================================================================================== settings


def _settings(store: str, **extra: Any) -> Any:
    from streams.config import Settings

    adversarial = {"salt": SALT, "max_clients": MAX_CLIENTS_DETECTION, **extra.pop("adversarial", {})}
    return Settings.model_validate({"baselines": {"store": store}, "adversarial": adversarial, **extra})


# ============================================================================================== file replay


def run_file(store: str, stream: str, chunk_size: int = CHUNK) -> dict[str, Any]:
    """``replay_file`` over one stream in chunks of ``chunk_size`` events; its alert records and timing."""
    from streams.replay import replay_file
    from streams.service import load_active_baselines, open_store

    settings = _settings(store)
    baselines = load_active_baselines(open_store(settings))
    alerts: list[dict[str, Any]] = []
    dead: list[Any] = []
    t, c = time.perf_counter(), time.process_time()
    summary = replay_file(
        settings, baselines, stream, alerts.append, lambda d, w: dead.append((d.reason, w)), chunk_size=chunk_size
    )
    return {
        "alerts": alerts,
        "events": summary.events,
        "dead_letters": summary.dead_letters,
        "seconds": time.perf_counter() - t,
        "cpu_seconds": time.process_time() - c,
    }


# ============================================================================================== kafka


@contextlib.contextmanager
def kafka_broker(bootstrap: str | None, run_dir: Path) -> Iterator[tuple[str, str]]:
    """(bootstrap address, how we got it): the given broker, or one started here and stopped on exit."""
    if bootstrap:
        yield bootstrap, "given (--bootstrap / $INFERWATCH_BOOTSTRAP)"
        return
    script = ROOT / "scripts" / "kafka-broker.sh"
    env = {**os.environ, "INFERWATCH_KAFKA_RUN_DIR": str(run_dir)}
    running = subprocess.run(["bash", str(script), "status"], env=env, capture_output=True, check=False)
    log(f"starting a Kafka broker in {run_dir}" if running.returncode else f"reusing the broker in {run_dir}")
    started = subprocess.run(
        ["bash", str(script), "start"], env=env, capture_output=True, text=True, check=False, timeout=900
    )
    if started.returncode:
        raise RuntimeError(f"kafka-broker.sh start failed: {started.stderr[-2000:]}")
    address = started.stdout.strip().splitlines()[-1]
    try:
        yield address, ("started by this run" if running.returncode else "already running in the run dir")
    finally:
        if running.returncode:  # we started it: stop it
            subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, check=False, timeout=120)
            log("stopped the Kafka broker")


def _create_topic(bootstrap: str, name: str) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    # Event times lie in the past: never let the broker's 7-day retention delete them mid-run.
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1, config={"retention.ms": "-1"})]
    )
    futures[name].result(timeout=60)
    deadline = time.monotonic() + 60
    while True:
        t = admin.list_topics(topic=name, timeout=10).topics.get(name)
        if t is not None and t.error is None and all(p.leader >= 0 for p in t.partitions.values()) and t.partitions:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {name} not ready")
        time.sleep(0.1)


def produce_file(bootstrap: str, topic: str, path: str) -> dict[str, Any]:
    """Every line of ``path`` as a message (timestamp = the event's ``ts``), in file order."""
    import orjson
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    t = time.perf_counter()
    with open(path, "rb") as fh:
        for line in fh:
            value = line.rstrip(b"\n")
            ts = int(orjson.loads(value)["ts"])
            while True:
                try:
                    producer.produce(topic, value, key=MODEL_ID.encode(), timestamp=ts, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
            if n % 5000 == 0:
                producer.poll(0)
    if producer.flush(300) or errors:
        raise RuntimeError(f"producing to {topic}: {errors[:3]} (undelivered after 300 s?)")
    return {"messages": n, "seconds": time.perf_counter() - t}


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of every message of a one-partition topic, in offset order."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        out: list[tuple[bytes | None, bytes]] = []
        if high <= 0:
            return out
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 120
        while len(out) < high:
            if time.monotonic() > deadline:
                raise RuntimeError(f"read {len(out)} of {high} messages of {topic}")
            for m in c.consume(1000, 0.5):
                if m.error() is not None:
                    raise RuntimeError(f"reading {topic}: {m.error()}")
                value = m.value()
                if value is not None and (m.offset() or 0) < high:
                    out.append((m.key(), value))
        return out
    finally:
        c.close()


def run_kafka(bootstrap: str, store: str, stream: str, events: int) -> dict[str, Any]:
    """Produce the stream to a fresh topic, run the service on it until every event is consumed, stop it
    (which delivers every alert and commits), and read the alerts topic back."""
    import orjson
    from prometheus_client import CollectorRegistry

    from streams.service import Service

    run = uuid.uuid4().hex[:8]
    topic, alerts_topic, dead_topic = (f"iw-advbench-{run}.{s}" for s in ("events", "alerts", "dead-letters"))
    _create_topic(bootstrap, topic)
    produced = produce_file(bootstrap, topic, stream)
    with tempfile.TemporaryDirectory(prefix="bench-advpipe-state-") as state:
        settings = _settings(
            store,
            kafka={
                "bootstrap_servers": bootstrap,
                "topics": [topic],
                "group_id": f"iw-advbench-{run}",
                "alerts_topic": alerts_topic,
                "dead_letter_topic": dead_topic,
            },
            checkpoint={"dir": state},
            metrics={"port": 0},
        )
        registry = CollectorRegistry()
        service = Service(settings, registry)
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                service.run()
            except BaseException as e:  # reported by the waiting loop
                failure.append(e)

        worker = threading.Thread(target=serve, name="inferwatch-service", daemon=True)
        t, c = time.perf_counter(), time.process_time()
        worker.start()
        done = invalid = 0.0

        def count_invalid() -> float:
            return float(
                sum(
                    s.value
                    for m in registry.collect()
                    if m.name == "inferwatch_events_invalid"
                    for s in m.samples
                    if s.name.endswith("_total")
                )
            )

        while done + invalid < events:  # dead letters are consumed too: they count towards the end
            time.sleep(0.05)
            done = registry.get_sample_value("inferwatch_events_consumed_total", {"model_id": MODEL_ID}) or 0.0
            invalid = count_invalid()
            if failure:
                raise RuntimeError(f"service failed: {failure[0]!r}")
            if time.perf_counter() - t > KAFKA_TIMEOUT_S:
                raise RuntimeError(f"service consumed {done:.0f} of {events} events in {KAFKA_TIMEOUT_S:.0f} s")
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        service.stop()
        worker.join(120)
        if worker.is_alive() or failure:
            raise RuntimeError(f"service did not stop cleanly: {failure[:1]}")
    records = read_topic(bootstrap, alerts_topic)
    alerts = [orjson.loads(v) for _, v in records]
    keyed = all(k == a["alert_id"].encode() for (k, _), a in zip(records, alerts, strict=True))
    return {
        "alerts": alerts,
        "events": int(done),
        "dead_letters": int(invalid),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "produce_seconds": produced["seconds"],
        "topic": topic,
        "alerts_keyed_by_id": keyed,
    }


# ============================================================================================== evaluation


def named(alert: dict[str, Any]) -> list[str]:
    """Clients an alert names: its ``client_id``, or the accounts of a campaign alert."""
    if alert["client_id"] is not None:
        return [alert["client_id"]]
    return [str(c) for c in alert["evidence"].get("clients", [])]


def evaluate(meta: dict[str, npt.NDArray[Any]], alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per attack and over benign accounts, from the adversarial alert records of one run.

    An attack instance is detected when an ``open``/``update`` adversarial alert of severity warning or
    critical names one of its accounts (a campaign alert counts for every account it lists); queries before
    the first alert = the instance's own queries up to and including the event the alert fired at.
    """
    client, group, inst, qidx = meta["client"], meta["group"], meta["inst"], meta["qidx"]
    n = len(client)
    first: dict[str, tuple[int, str]] = {}  # client -> (stream index, kind) of its first warning+ alert
    info: set[str] = set()
    for a in sorted(alerts, key=lambda a: int(a["event_id"][1:])):
        if a["kind"] not in ADVERSARIAL or a["status"] not in ("open", "update"):
            continue
        i = int(a["event_id"][1:])
        kind = a["kind"] if a["client_id"] is not None else "campaign"
        for c in named(a):
            if RANK[a["severity"]] >= RANK["warning"]:
                if c not in first:
                    first[c] = (i, kind)
            else:
                info.add(c)
    attacks: dict[str, dict[str, Any]] = {}
    is_attack = np.array([not g.startswith("benign") and g != "flood" for g in group.tolist()]) if n else np.zeros(0)
    for g in sorted(set(group[is_attack].tolist())):
        m = (group == g) & (qidx >= 0)
        delays: list[int] = []
        kinds: Counter[str] = Counter()
        insts = sorted(set(inst[m].tolist()))
        for k in insts:
            idx = np.flatnonzero(m & (inst == k))
            accounts = set(client[(group == g) & (inst == k)].tolist())
            hits = [first[c] for c in accounts if c in first]
            if hits:
                at, kind = min(hits)
                delays.append(int((idx <= at).sum()))
                kinds[kind] += 1
        attacks[g] = {
            "instances": len(insts),
            "detected": len(delays),
            "queries_before_alert": delays,
            "median": float(np.median(delays)) if delays else None,
            "p90": float(np.quantile(delays, 0.9)) if delays else None,
            "first_kind": dict(kinds),
        }
    benign = np.array([g.startswith("benign") for g in group.tolist()], dtype=bool)
    per_type: dict[str, list[int]] = {}
    for t in sorted(set(group[benign].tolist())):
        accounts = set(client[group == t].tolist())
        per_type[t.split(":", 1)[1]] = [len(accounts & set(first)), len(accounts)]
    benign_accounts = set(client[benign].tolist())
    return {
        "attacks": attacks,
        "benign_accounts": len(benign_accounts),
        "benign_flagged": sorted(benign_accounts & set(first)),
        "benign_info": len(benign_accounts & info),
        "benign_per_type": per_type,
        "flooder_flagged": "flooder-0" in first,
        "flooder_kind": first.get("flooder-0", (0, None))[1],
        "campaign_alerts": [
            {"status": a["status"], "clients": len(named(a)), "event": a["event_id"]}
            for a in alerts
            if a["kind"] == "evasion_probing" and a["client_id"] is None
        ],
        "alerts_by_kind": dict(Counter(f"{a['kind']}/{a['status']}" for a in alerts)),
    }


def compare(first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Alert ids of two runs over the same events (all kinds, and adversarial only), and what differs:
    (kind, status, client or ``campaign``, event id) of every alert only one run produced."""

    def ids(alerts: Sequence[dict[str, Any]], adv: bool) -> set[str]:
        return {a["alert_id"] for a in alerts if not adv or a["kind"] in ADVERSARIAL}

    def show(alerts: Sequence[dict[str, Any]], only: set[str]) -> list[list[Any]]:
        rows = [a for a in alerts if a["alert_id"] in only]
        return [[a["kind"], a["status"], a["client_id"] or "campaign", a["event_id"]] for a in rows]

    out: dict[str, Any] = {}
    for label, adv in (("all", False), ("adversarial", True)):
        f, k = ids(first, adv), ids(second, adv)
        out[label] = {"first": len(f), "second": len(k), "common": len(f & k), "same": f == k}
    a, b = ids(first, False), ids(second, False)
    out["only_first"] = show(first, a - b)
    out["only_second"] = show(second, b - a)
    return out


# ============================================================================================== throughput workers


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``: per address space, unlike ``ru_maxrss``, which a
    worker would inherit from the parent that spawned it)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _result(seconds: float, cpu: float, events: int, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "events": events,
        "rate": events / seconds,
        "rate_per_cpu_second": events / cpu if cpu > 0 else None,
        "load1_at_end": os.getloadavg()[0],
        "max_rss_mib": _peak_rss_mib(),
        **extra,
        "blas": _blas_info(),
    }


def w_replay(cfg: dict[str, Any]) -> dict[str, Any]:
    """Whole-pipeline file replay: read, decode, every detector, alert records to a JSONL file (fsync)."""
    from streams import process
    from streams.files import JsonlWriter, dead_letter_record
    from streams.replay import replay_file
    from streams.service import load_active_baselines, open_store

    process.settle()  # what ``inferwatch replay`` does first (one BLAS thread, freed memory kept)
    settings = _settings(cfg["store"], adversarial={"max_clients": cfg["max_clients"]})
    baselines = load_active_baselines(open_store(settings))
    with tempfile.TemporaryDirectory(prefix="bench-advpipe-replay-") as tmp:
        with JsonlWriter(Path(tmp) / "alerts.jsonl") as aw, JsonlWriter(Path(tmp) / "dead.jsonl") as dw:
            t, c = time.perf_counter(), _cpu_with_children()
            summary = replay_file(
                settings,
                baselines,
                cfg["stream"],
                aw.write,
                lambda d, w: dw.write(dead_letter_record(d, w)),
                chunk_size=CHUNK,
            )
            seconds, cpu = time.perf_counter() - t, _cpu_with_children() - c
        kinds = Counter(json.loads(line)["kind"] for line in (Path(tmp) / "alerts.jsonl").open("rb"))
    return _result(seconds, cpu, summary.events, dead_letters=summary.dead_letters, alerts=dict(kinds))


def _cpu_with_children() -> float:
    """CPU time of this process and of its ended children (the replay's decoding process)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + r.ru_utime + r.ru_stime


def _parse_file(cfg: dict[str, Any], loads: Callable[[bytes], Any]) -> dict[str, Any]:
    limits = _limit_blas()
    n = 0
    t, c = time.perf_counter(), time.process_time()
    with open(cfg["stream"], "rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    del limits
    return _result(seconds, cpu, n)


def w_json(cfg: dict[str, Any]) -> dict[str, Any]:
    """``json.loads`` of each line of the same file: the parse alone, as the goal states it."""
    return _parse_file(cfg, json.loads)


def w_orjson(cfg: dict[str, Any]) -> dict[str, Any]:
    """``orjson.loads`` of each line (the parser the decoder uses): what parsing alone can reach."""
    import orjson

    return _parse_file(cfg, orjson.loads)


def w_stages(cfg: dict[str, Any]) -> dict[str, Any]:
    """The replay loop in one process with its stages timed: read, decode, prepare (what a replay's decoding
    process computes besides decoding), the monitor (and the adversarial and anomaly detectors in it)."""
    from streams import process
    from streams.ahead import prepare
    from streams.files import read_jsonl_chunks
    from streams.pipeline import Positions
    from streams.service import load_active_baselines, make_pipeline, open_store

    process.settle()
    settings = _settings(cfg["store"], adversarial={"max_clients": cfg["max_clients"]})
    pipeline = make_pipeline(settings, load_active_baselines(open_store(settings)))
    preparers = pipeline.preparers()
    spent = {"read": 0.0, "decode": 0.0, "prepare": 0.0, "detect": 0.0, "adversarial": 0.0, "anomaly": 0.0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0

        return wrapper

    decode = timed("decode", pipeline.decoder.decode)
    prepared = timed("prepare", prepare)
    tracked: list[Any] = []
    for mon in pipeline.monitors.values():
        mon.update = timed("detect", mon.update)  # type: ignore[method-assign]
        for part in ("adversarial", "anomaly"):
            det = getattr(mon, part, None)
            if det is not None:
                det.update = timed(part, det.update)
                if part == "adversarial":
                    tracked.append(det)
    n = 0
    t, c = time.perf_counter(), time.process_time()
    chunks = read_jsonl_chunks(cfg["stream"], CHUNK)
    while True:
        t0 = time.perf_counter()
        item = next(chunks, None)
        spent["read"] += time.perf_counter() - t0
        if item is None:
            break
        lines, numbers = item
        zeros = np.zeros(len(lines), np.int32)
        decoded = prepared(decode(lines), preparers)
        pipeline.process_decoded(decoded, Positions("file", (cfg["stream"],), zeros, zeros, np.asarray(numbers)))
        n += len(lines)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    spent["rest"] = seconds - spent["read"] - spent["decode"] - spent["prepare"] - spent["detect"]
    clients = int(tracked[0].n_clients) if tracked else 0
    return _result(seconds, cpu, n, stages=spent, tracked_clients=clients)


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "replay": w_replay,
    "json": w_json,
    "orjson": w_orjson,
    "stages": w_stages,
}


def call_worker(name: str, config: Path, timeout: float = 3600) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--config", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {name} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-3000:]}")
    out: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return out


# ============================================================================================== context


def machine_context() -> dict[str, Any]:
    cpu: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("model name", "cpu MHz", "cache size") and k not in cpu:
                cpu[k] = v.strip()
    versions: dict[str, str] = {}
    for mod in ("numpy", "scipy", "sklearn", "orjson", "threadpoolctl", "pydantic"):
        with contextlib.suppress(Exception):
            versions[mod] = str(__import__(mod).__version__)
    with contextlib.suppress(Exception):
        import confluent_kafka

        versions["confluent_kafka"] = str(confluent_kafka.__version__)
        versions["librdkafka"] = confluent_kafka.libversion()[0]
    git: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        git["uncommitted"] = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "detector",
                "streams",
                "baselines",
                "benchmarks/bench_adversarial.py",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    git["adversarial_py_sha256"] = _file_digest(ROOT / "detector" / "adversarial.py")
    git["bench_adversarial_py_sha256"] = _file_digest(ROOT / "benchmarks" / "bench_adversarial.py")
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "blas_env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))},
        "git": git,
    }


# ============================================================================================== main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="150k-event throughput stream, 1 repeat")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--events", type=int, help="events of the throughput stream (default 300,000; --quick 150,000)")
    p.add_argument("--clients", type=int, default=100_000, help="distinct active clients of the throughput stream")
    p.add_argument("--repeats", type=int, help="fresh processes per throughput measurement (default 3; --quick 1)")
    p.add_argument("--skip", default="", help="comma list of: kafka, throughput")
    p.add_argument("--out", type=Path, help="results directory (default benchmarks/results for a full run)")
    p.add_argument("--bootstrap", default=os.environ.get("INFERWATCH_BOOTSTRAP"), help="Kafka bootstrap address")
    p.add_argument("--kafka-run-dir", type=Path, default=ROOT / ".cache" / "bench" / "adversarial-pipeline-kafka")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        cfg = json.loads(Path(args.config).read_text())
        print("RESULT " + json.dumps(WORKERS[args.worker](cfg)), flush=True)
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if bad := [v for v in variants if v not in VARIANTS]:
        p.error(f"unknown variant(s) {bad}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if bad := sorted(skip - {"kafka", "throughput"}):
        p.error(f"unknown --skip {bad}")
    events = args.events or (150_000 if args.quick else 300_000)
    repeats = args.repeats or (1 if args.quick else 3)
    partial = args.quick or bool(skip) or args.events is not None or set(variants) != set(VARIANTS)
    out_dir = args.out or (ROOT / ".cache" / "bench" / "results" if partial else RESULTS)

    limits = _limit_blas()  # the victim, baseline build and replays here: one BLAS thread, like the workers
    started = time.time()
    load_before = os.getloadavg()
    context = machine_context()
    log(f"variants {variants}; throughput {events:,} events / {args.clients:,} clients x {repeats}; load {load_before}")
    data = prepare(CACHE, 0 if "throughput" in skip else events, args.clients, variants)
    run_dir = CACHE / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix="store-", dir=run_dir))
    report: dict[str, Any] = {
        "args": vars(args) | {"out": str(out_dir), "kafka_run_dir": str(args.kafka_run_dir)},
        "data": data,
        "context": context,
        "load_before": load_before,
        "errors": {},
    }
    report["args"].pop("worker", None)
    report["args"].pop("config", None)
    report["baseline"] = build_store(data["reference"], store)
    log(f"baseline {report['baseline']['version']} in {report['baseline']['seconds']:.1f} s")
    try:
        report["bench_adversarial_calibration"] = bench_artifact_reference(data["reference"])
    except Exception as e:  # only a comparison; the run goes on without it
        report["errors"]["bench_adversarial_calibration"] = repr(e)

    # -- detection: file replay and Kafka
    det: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        bootstrap = how = None
        if "kafka" not in skip:
            try:
                bootstrap, how = stack.enter_context(kafka_broker(args.bootstrap, args.kafka_run_dir))
                report["kafka"] = {"bootstrap": bootstrap, "broker": how}
            except Exception as e:
                report["errors"]["kafka_broker"] = repr(e)
        for v in variants:
            meta = dict(np.load(data["meta"][v]))
            entry: dict[str, Any] = {"events": len(meta["client"])}
            f = run_file(str(store), data["streams"][v])
            entry["file"] = {k: f[k] for k in ("events", "dead_letters", "seconds", "cpu_seconds")}
            entry["file"]["eval"] = evaluate(meta, f["alerts"])
            log(f"{v}: file replay {f['events']:,} events in {f['seconds']:.1f} s, {len(f['alerts'])} alerts")
            # The same replay in other chunks: Kafka batches fall wherever consume() cuts them, so any
            # file/Kafka difference should show up here too if it comes from batch boundaries.
            f2 = run_file(str(store), data["streams"][v], chunk_size=OTHER_CHUNK)
            entry["chunking"] = compare(f["alerts"], f2["alerts"])
            log(f"{v}: chunks of {OTHER_CHUNK} give the same alert ids: {entry['chunking']['all']['same']}")
            if bootstrap:
                try:
                    k = run_kafka(bootstrap, str(store), data["streams"][v], entry["events"])
                    entry["kafka"] = {key: k[key] for key in k if key != "alerts"}
                    entry["kafka"]["eval"] = evaluate(meta, k["alerts"])
                    entry["agreement"] = compare(f["alerts"], k["alerts"])
                    log(
                        f"{v}: Kafka {k['events']:,} events in {k['seconds']:.1f} s, {len(k['alerts'])} alerts; "
                        f"same ids as file: {entry['agreement']['all']['same']}"
                    )
                except Exception as e:
                    report["errors"][f"kafka_{v}"] = repr(e)
                    log(f"{v}: Kafka failed: {e!r}")
            det[v] = entry
    report["detection"] = det

    # -- throughput
    if "throughput" not in skip:
        cfg = {"store": str(store), "stream": data["throughput"], "max_clients": 1_000_000}
        config = run_dir / "throughput.json"
        config.write_text(json.dumps(cfg))
        runs: dict[str, list[dict[str, Any]]] = {"replay": [], "json": [], "orjson": []}
        for r in range(repeats):
            for name in ("replay", "json", "orjson"):
                try:
                    res = call_worker(name, config)
                    runs[name].append(res)
                    log(
                        f"throughput {name} #{r + 1}: {res['rate']:,.0f} events/s ({res['seconds']:.1f} s, "
                        f"load {res['load1_at_end']:.1f})"
                    )
                except Exception as e:
                    report["errors"][f"{name}_{r}"] = repr(e)
        try:
            runs["stages"] = [call_worker("stages", config)]
        except Exception as e:
            report["errors"]["stages"] = repr(e)
        report["throughput"] = {"runs": runs, "config": cfg}
    report["load_after"] = os.getloadavg()
    report["wall_seconds"] = time.time() - started
    report["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    del limits

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adversarial_pipeline.json").write_text(json.dumps(report, indent=1, default=str))
    md = render(report, partial)
    (out_dir / "adversarial_pipeline.md").write_text(md)
    print(md)
    log(f"wrote {out_dir / 'adversarial_pipeline.md'}")
    return 0


# ============================================================================================== report


def _median(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _q(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def render(r: dict[str, Any], partial: bool) -> str:
    L: list[str] = []
    cmd = "python benchmarks/bench_adversarial_pipeline.py" + (" (partial run)" if partial else "")
    L.append("# Adversarial detection through the whole pipeline: file replay and Kafka\n")
    L.append(
        f"`{cmd}` — {r['finished']}, {r['wall_seconds'] / 60:.1f} min. Generated by "
        "`benchmarks/bench_adversarial_pipeline.py`; rerun it rather than editing this file.\n"
    )
    b = r["baseline"]
    L.append(
        "The digits victim and the attack traffic of `benchmarks/bench_adversarial.py` (ART 1.20.1 query logs "
        "cached in `.cache/bench/adversarial/`), written as JSONL inference events and sent through what a "
        "user runs: the baseline is built by `inferwatch baseline build` from the reference split (449 "
        "events with probabilities and client ids), then each stream goes (a) through "
        "`streams.replay.replay_file` and (b) onto a topic of a real Apache Kafka broker, consumed by "
        "`streams.service.Service` (the code of `inferwatch run`), whose alerts are read back from the alerts "
        f"topic. Baseline `{MODEL_ID}/{b['version']}` (components {', '.join(b['components']) or '?'}); "
        f"settings: defaults, `adversarial.salt` = bench_adversarial's, `adversarial.max_clients` "
        f"{MAX_CLIENTS_DETECTION:,} for the attack streams.\n"
    )
    L.append("## Goals\n")
    L.append("| goal (issue 4) | measured | met |")
    L.append("|---|---|---|")
    det = r.get("detection", {})
    src = "kafka" if all("kafka" in e for e in det.values()) and det else "file"
    goal_rows = _goal_rows(det, src)
    L += goal_rows
    tp = r.get("throughput")
    if tp:
        rep, js = _median(tp["runs"]["replay"], "rate"), _median(tp["runs"]["json"], "rate")
        repc, jsc = (
            _median(tp["runs"]["replay"], "rate_per_cpu_second"),
            _median(tp["runs"]["json"], "rate_per_cpu_second"),
        )
        if rep and js:
            ratio = rep / js
            ratio_c = (repc / jsc) if repc and jsc else None
            L.append(
                f"| with {r['data']['throughput_clients']:,} active clients the whole pipeline (file replay) "
                f">= 2x `json.loads` of its input | {ratio:.2f}x wall, "
                f"{'–' if ratio_c is None else f'{ratio_c:.2f}x'} CPU | **{'yes' if ratio >= 2 else 'no'}** |"
            )
    L.append(
        f"\nDetection figures are from the alerts the {'Kafka service published on the alerts topic' if src == 'kafka' else 'file replay wrote'}"  # noqa: E501
        f"; the file replay {'gave the same alert ids' if _all_same(det) else 'differed (see below)'}.\n"
    )

    # -- per attack
    L.append("## Attacks (real pipeline)\n")
    L.append(
        "An attack instance (one attacked sample, 6 per attack) is detected when an `open`/`update` adversarial "
        "alert of severity warning or critical names one of its accounts (`client_id`, or the accounts listed "
        "by a campaign alert). *q* = the instance's own queries up to the event the first such alert fired at. "
        "*first alert* = the kind of that alert (campaign = `evasion_probing` with `client_id` null).\n"
    )
    L.append("| variant | attack | detected | median q | p90 q | first alert |")
    L.append("|---|---|---|---:|---:|---|")
    for v, e in det.items():
        ev = e.get(src, e["file"])["eval"]
        for g, a in ev["attacks"].items():
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(a["first_kind"].items()))
            L.append(
                f"| {v} | {g} | {a['detected']}/{a['instances']} | {_q(a['median'])} | {_q(a['p90'])} | "
                f"{kinds or '–'} |"
            )
    L.append("\n## Benign accounts, flooder, campaigns\n")
    L.append(
        "| variant | benign accounts named (warning+) | by type (named/accounts) | info notes on benign | "
        "flooder (50/s) | campaign alerts (clients listed) |"
    )
    L.append("|---|---|---|---|---|---|")
    for v, e in det.items():
        ev = e.get(src, e["file"])["eval"]
        bt = ", ".join(f"{t} {a}/{n}" for t, (a, n) in ev["benign_per_type"].items())
        ca = ev["campaign_alerts"]
        opened = sum(c["status"] == "open" for c in ca)
        camps = (
            f"{opened} opened, {len(ca) - opened} other records; up to {max(c['clients'] for c in ca)} clients listed"
            if ca
            else "none"
        )
        fl = f"yes ({ev['flooder_kind']})" if ev["flooder_flagged"] else "no"
        L.append(
            f"| {v} | {len(ev['benign_flagged'])}/{ev['benign_accounts']} | {bt} | {ev['benign_info']} | {fl} | "
            f"{camps} |"
        )
    flagged = {v: e.get(src, e["file"])["eval"]["benign_flagged"] for v, e in det.items()}
    if any(flagged.values()):
        L.append(
            "\nBenign accounts named: "
            + "; ".join(f"{v}: {', '.join(c[:8])}{' …' if len(c) > 8 else ''}" for v, c in flagged.items() if c)
            + "."
        )

    # -- agreement
    L.append("\n## File replay vs Kafka\n")
    L.append(
        "Alert ids are deterministic (model, baseline, settings, incident, stream position), so the same events must "
        f"give the same ids whatever the transport. *chunks* = the file replay again in chunks of {OTHER_CHUNK:,} "
        f"instead of {CHUNK:,} events (Kafka batches are cut wherever `consume()` returns).\n"
    )
    L.append(
        "| variant | events | file replay | Kafka service (start to all consumed) | alert ids, all kinds "
        "(file / Kafka / common) | adversarial ids (file / Kafka / common) | file = Kafka | file = file in "
        "other chunks | dead letters (file / Kafka) |"
    )
    L.append("|---|---:|---|---|---|---|---|---|---|")
    diffs: list[str] = []
    for v, e in det.items():
        f = e["file"]
        k = e.get("kafka")
        ch = e.get("chunking", {})
        chs = "–"
        if ch:
            al_ch = ch["all"]
            differ = f"{al_ch['first'] - al_ch['common']} / {al_ch['second'] - al_ch['common']} differ"
            chs = "**yes**" if al_ch["same"] else f"**no** ({differ})"
        fr = f"{f['events'] / f['seconds']:,.0f} ev/s ({f['seconds']:.1f} s)"
        if ch and not ch["all"]["same"]:
            diffs.append(f"{v}, chunks {CHUNK:,} vs {OTHER_CHUNK:,}: " + _diff_text(ch))
        if k is None:
            L.append(f"| {v} | {e['events']:,} | {fr} | not run | – | – | – | {chs} | {f['dead_letters']} |")
            continue
        ag = e["agreement"]
        kr = f"{k['events'] / k['seconds']:,.0f} ev/s ({k['seconds']:.1f} s)"
        al, ad = ag["all"], ag["adversarial"]
        if not al["same"]:
            diffs.append(f"{v}, file vs Kafka: " + _diff_text(ag))
        L.append(
            f"| {v} | {e['events']:,} | {fr} | {kr} | {al['first']} / {al['second']} / {al['common']} | "
            f"{ad['first']} / {ad['second']} / {ad['common']} | **{'yes' if al['same'] else 'no'}** | {chs} | "
            f"{f['dead_letters']} / {k['dead_letters']} |"
        )
    if diffs:
        L.append("\nWhat differs (kind, status, client, event):\n")
        L += [f"- {d}" for d in diffs]
    if r.get("kafka"):
        L.append(
            f"\nBroker: Apache Kafka 4.1.1 at {r['kafka']['bootstrap']} ({r['kafka']['broker']}); one partition "
            "per events topic (lz4, message timestamp = event `ts`, key = model id), service defaults "
            "(batch_size 5,000, checkpoint every 2 s); alerts read back from the alerts topic "
            "(keyed by `alert_id`: "
            f"{'yes' if all(e.get('kafka', {}).get('alerts_keyed_by_id', True) for e in det.values()) else 'NO'})."
        )
    by_kind = {v: e.get(src, e["file"])["eval"]["alerts_by_kind"] for v, e in det.items()}
    L.append(
        "\nAll alert records per variant (kind/status: count): "
        + "; ".join(f"{v}: " + ", ".join(f"{k} {n}" for k, n in sorted(c.items())) for v, c in by_kind.items())
        + "."
    )

    # -- calibration
    L.append("\n## Calibration stored in the baseline\n")
    mine = b["adversarial"]
    other = r.get("bench_adversarial_calibration") or {}
    names = ("tau_near", "tau_knn", "tau_close", "p_close", "cos_line", "margin_low", "rate_max", "cell")
    L.append("| | " + " | ".join(names) + " |")
    L.append("|---|" + "---:|" * len(names))
    L.append(
        "| baseline built by `inferwatch baseline build` | " + " | ".join(f"{float(mine[n]):.4g}" for n in names) + " |"
    )
    if other:
        L.append(
            "| `bench_adversarial.py` in memory (same rows + its 1 h reference-traffic log) | "
            + " | ".join(f"{float(other[n]):.4g}" for n in names)
            + " |"
        )
    L.append(
        "\nThe reference split has 449 rows, too few for bench_adversarial's whole hour of reference traffic "
        "(210 clients); the reference events carry the last "
        f"{r['data']['reference_heavy_window_s']} s before the peak of its two heaviest clients "
        "(which set the rate ceiling) and the rest of the rows over ordinary clients. Out-of-distribution flags "
        "come from the baseline's anomaly scorers (ECOD-style, robust Mahalanobis, LODA at fpr 1e-3) where "
        "bench_adversarial uses a Ledoit-Wolf Mahalanobis distance fitted on the training split.\n"
    )

    # -- throughput
    if tp:
        L.append("## Throughput with 100,000 active clients\n")
        cfg = tp["config"]
        L.append(
            f"Stream: {r['data']['throughput_events']:,} events from {r['data']['throughput_clients']:,} distinct "
            f"clients (each client once in the first {r['data']['throughput_clients']:,} events, then uniformly at "
            "random), 64 features "
            "(test-split digits + N(0, 0.05) noise, clipped), the victim's prediction and 10 class "
            f"probabilities; {_line_bytes(cfg['stream'])} bytes of JSON per event. Whole pipeline = "
            "`replay_file` with every detector on (drift, validation, anomaly, adversarial with "
            f"`max_clients` {cfg['max_clients']:,}), alert records written to a JSONL file (fsync). "
            "`json.loads` = reading the same file line by line and `json.loads` of each line (parse only). "
            f"Each figure is the median of {len(tp['runs']['replay'])} fresh processes, repeats interleaved, "
            "BLAS limited to one thread with threadpoolctl.\n"
        )
        L.append("| measurement | events/s (wall) | range | events per CPU-s | load (1 min) at end | peak RSS |")
        L.append("|---|---:|---|---:|---|---:|")
        for name, label in (
            ("replay", "whole pipeline (file replay)"),
            ("json", "`json.loads` line by line"),
            ("orjson", "`orjson.loads` line by line (reference: the decoder's parser)"),
        ):
            rs = tp["runs"].get(name, [])
            if not rs:
                continue
            rates = [x["rate"] for x in rs]
            loads = ", ".join(f"{x['load1_at_end']:.1f}" for x in rs)
            L.append(
                f"| {label} | {_median(rs, 'rate'):,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | "
                f"{_median(rs, 'rate_per_cpu_second') or 0:,.0f} | "
                f"{loads} | {_median(rs, 'max_rss_mib'):,.0f} MiB |"
            )
        rep, js = _median(tp["runs"]["replay"], "rate"), _median(tp["runs"]["json"], "rate")
        repc = _median(tp["runs"]["replay"], "rate_per_cpu_second")
        jsc = _median(tp["runs"]["json"], "rate_per_cpu_second")
        if rep and js:
            L.append(
                f"\nRatio whole pipeline / `json.loads`: **{rep / js:.2f}x** on wall time, "
                f"**{(repc or 0) / (jsc or 1):.2f}x** on CPU time (goal >= 2x)."
            )
        orj, orjc = (
            _median(tp["runs"].get("orjson", []), "rate"),
            _median(tp["runs"].get("orjson", []), "rate_per_cpu_second"),
        )
        if orj and js and rep:
            L.append(
                f"For scale: `orjson.loads` alone (the parser inside the decoder) is {orj / js:.2f}x `json.loads` "
                f"on wall time ({(orjc or 0) / (jsc or 1):.2f}x on CPU time) on these events, and the whole pipeline "
                f"runs at {rep / orj:.2f}x the speed of `orjson.loads` alone.\n"
            )
        else:
            L.append("")
        st = tp["runs"].get("stages")
        if st:
            s = st[0]
            sp = s["stages"]
            tot = s["seconds"]
            L.append(
                f"Where the replay's time goes (one more run in one process, stages timed; {s['tracked_clients']:,} "
                "clients tracked at the end). In a replay, read, decode and prepare run in the decoding process, "
                "detect and the rest in the main one:\n"
            )
            L.append("| stage | seconds | share | events/s of the stage alone |")
            L.append("|---|---:|---:|---:|")
            rows = [
                ("read (`read_jsonl_chunks`)", sp["read"]),
                ("decode (`Decoder.decode`)", sp["decode"]),
                ("prepare (`streams.ahead.prepare`: drift cells, anomaly scores, queries)", sp.get("prepare", 0.0)),
                ("detect (`ModelMonitor.update`)", sp["detect"]),
                ("  of which adversarial (`AdversarialDetector.update`)", sp["adversarial"]),
                ("  of which anomaly (`AnomalyDetector.update`)", sp["anomaly"]),
                ("rest (alert records, positions, loop)", sp["rest"]),
                ("total", tot),
            ]
            for label, secs in rows:
                L.append(
                    f"| {label} | {secs:.2f} | {100 * secs / tot:.0f}% | {s['events'] / secs if secs > 0 else 0:,.0f} |"
                )
            L.append("")

    # -- machine
    c = r["context"]
    L.append("## Machine\n")
    v = c["versions"]
    blas = (tp or {}).get("runs", {}).get("replay", [{}])[0].get("blas") if tp else None
    L.append(
        f"- CPU: {c['cpu'].get('model name', '?')}, {c['cores_online']} cores online ({c['cores_usable']} usable), "
        f"{c['memory_gib']} GiB; kernel {c['kernel']}. Shared with other sessions: load average "
        f"{', '.join(f'{x:.2f}' for x in r['load_before'])} before, "
        f"{', '.join(f'{x:.2f}' for x in r['load_after'])} after (1/5/15 min)."
    )
    L.append(f"- Python {c['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".")
    if blas:
        L.append(
            "- BLAS in the workers (threadpoolctl, after limiting): "
            + "; ".join(f"{x.get('internal_api')} {x.get('version')} {x.get('num_threads')} thread(s)" for x in blas)
            + f"; environment {c['blas_env'] or '{}'}."
        )
    g = c["git"]
    L.append(
        f"- Commit {g.get('commit', '?')[:12]}; uncommitted changes in the measured code: "
        f"{', '.join(g.get('uncommitted', [])) or 'none'}; detector/adversarial.py sha256 "
        f"{g['adversarial_py_sha256']}, bench_adversarial.py sha256 {g['bench_adversarial_py_sha256']}."
    )
    if r["errors"]:
        L.append("\n## Errors\n")
        for k, e in r["errors"].items():
            L.append(f"- {k}: {e}")
    return "\n".join(L) + "\n"


def _diff_text(c: dict[str, Any], n: int = 6) -> str:
    def fmt(rows: list[list[Any]]) -> str:
        shown = "; ".join(" ".join(str(x) for x in row) for row in rows[:n])
        return (shown + (f"; … ({len(rows)} in all)" if len(rows) > n else "")) or "none"

    return f"only in the first run: {fmt(c['only_first'])} — only in the second: {fmt(c['only_second'])}"


def _all_same(det: dict[str, Any]) -> bool:
    return bool(det) and all(e.get("agreement", {}).get("all", {}).get("same", False) for e in det.values())


def _goal_rows(det: dict[str, Any], src: str) -> list[str]:
    """The issue's detection goals, from the real pipeline's alerts."""
    iterative = ("hsj", "boundary", "signopt", "zoo", "simba", "square")
    rows: list[str] = []
    for v, e in det.items():
        ev = e.get(src, e["file"])["eval"]
        at = ev["attacks"]
        misses = [g for g in iterative if g in at and at[g]["detected"] < at[g]["instances"]]
        slow = [g for g in iterative if at.get(g, {}).get("median") is not None and at[g]["median"] > 10]
        ok = not misses and not slow and all(g in at for g in iterative)
        med = ", ".join(f"{g} {_q(at[g]['median'])}" for g in iterative if g in at)
        rows.append(
            f"| {v}: every iterative evasion attack detected, median <= 10 queries | "
            f"{'missed: ' + ', '.join(misses) + '; ' if misses else ''}medians {med} | "
            f"**{'yes' if ok else 'no'}** |"
        )
        for g, lim in (("jacobian", 150), ("uniform", 50)):
            if g in at:
                a = at[g]
                good = a["detected"] == a["instances"] and a["median"] is not None and a["median"] <= lim
                rows.append(
                    f"| {v}: {g} extraction within <= {lim} queries | {a['detected']}/{a['instances']}, "
                    f"median {_q(a['median'])} | **{'yes' if good else 'no'}** |"
                )
        nb = len(ev["benign_flagged"])
        rows.append(
            f"| {v}: zero benign accounts flagged (retry clients included) | {nb}/{ev['benign_accounts']} | "
            f"**{'yes' if nb == 0 else 'no'}** |"
        )
        if v == "split100":
            camps = [c for c in ev["campaign_alerts"] if c["status"] == "open"]
            rows.append(
                f"| split100: caught as a campaign | {len(camps)} campaign alerts opened | "
                f"**{'yes' if camps else 'no'}** |"
            )
    return rows


def _line_bytes(path: str) -> int:
    with open(path, "rb") as fh:
        lines = [len(fh.readline()) for _ in range(1000)]
    return int(np.mean([n for n in lines if n])) if any(lines) else 0


if __name__ == "__main__":
    sys.exit(main())
