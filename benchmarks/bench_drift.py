"""Throughput and detection of inferwatch's drift detection against its peers, on one generated stream.

Run from the repository root with the project venv (scripts/setup.sh)::

    .venv/bin/python benchmarks/bench_drift.py             # full run: 1M events, ~10-15 min
    .venv/bin/python benchmarks/bench_drift.py --quick     # 100k events, 1 repeat, ~2 min
    .venv/bin/python benchmarks/bench_drift.py --only core # one measurement (see --help for the names)

One run measures, on the same seeded stream (32 numeric features, the second half shifted on 4 of them,
a reference of 10k events), each repeat in a fresh process with BLAS limited to one thread (threadpoolctl):

* ``core``: :meth:`detector.monitor.ModelMonitor.update` on pre-decoded EventBatch chunks of 10,000;
* ``replay``: :func:`streams.replay.replay_file` over the JSONL file, alerts written to a JSONL file,
  against ``json``/``orjson``: parsing the same file line by line with ``json.loads`` / ``orjson.loads``;
* ``replay_stages``: where the replay's time goes (reading, decoding, detectors, the rest);
* ``kafka``: :class:`streams.service.Service` from start until ``inferwatch_events_consumed_total`` reaches
  the number of events already on the topic (a broker on this machine, started here unless ``--bootstrap``);
* peers: river ADWIN and KSWIN on each of the 32 features per event, ``scipy.stats.ks_2samp`` and
  alibi-detect ``KSDrift`` per 1,000-event window, a plain numpy PSI per 10,000-event chunk;
* the detection check: first alert after the shift on each shifted feature, and false alerts, for the core
  (and the replay, which must give the same alerts) and for river ADWIN.

Results go to ``benchmarks/results/drift.md`` and ``drift.json`` (``--quick`` and ``--only`` runs write to
``.cache/bench/results/`` unless ``--out`` is given, so they never replace the full run's results).
Generated data is cached under ``.cache/bench/``. alibi-detect 0.13.0 requires numpy<2, which the project
cannot have, so it runs in a separate venv (``.cache/bench/alibi-venv``, created on first use).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# Only the standard library and numpy at module level: the alibi-detect worker runs this file in a venv
# that has neither the project nor its dependencies.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 20261128
N_NUMERIC = 32
N_REFERENCE = 10_000
CHUNK = 10_000  # events per core / replay / PSI chunk
WINDOW = 1_000  # events per ks_2samp / KSDrift window
#: (feature index, shift in standard deviations) from the middle of the stream on.
SHIFTS: tuple[tuple[int, float], ...] = ((3, 0.5), (11, 0.75), (19, 1.0), (27, -1.0))
MODEL_ID = "credit-risk"
GEN_VERSION = 1  # bump when the generated stream changes
DECODED_VERSION = 3  # bump when the layout of the decoded cache changes
ALIBI_REQUIREMENTS = ("alibi-detect==0.13.0", "numpy==1.26.4", "scipy==1.17.1", "threadpoolctl==3.8.0")
KAFKA_TIMEOUT_S = 900.0
KAFKA_POLL_S = 0.02
GROUP_INSTANCES = 2  # service processes in the consumer group of the kafka_group measurement (one per core)

GROUPS = {
    "replay": ("replay", "replay_serial", "json", "orjson", "replay_stages"),
    "peers": ("adwin", "kswin", "ks2samp", "alibi", "psi"),
}
MEASUREMENTS = (
    "core",
    "core_drift",
    "replay",
    "replay_serial",
    "json",
    "orjson",
    "replay_stages",
    "kafka",
    "kafka_group",
    "kafka_drift",
    "kafka_group_drift",
    "adwin",
    "kswin",
    "ks2samp",
    "alibi",
    "psi",
)


def log(msg: str) -> None:
    sys.stderr.write(f"[bench_drift {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def feature_names() -> list[str]:
    return [f"f{i:02d}" for i in range(N_NUMERIC)]


# ============================================================================================== workers
# Each worker runs in a fresh process (``--worker NAME --config run.json``) and prints one line
# ``RESULT {json}``. Heavy imports happen inside the workers, then BLAS is limited to one thread.


def _limit_blas() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _blas_info() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer", "architecture")
    return [{k: i.get(k) for k in keys} for i in threadpool_info()]


def _load_decoded(cfg: dict[str, Any], name: str) -> Any:
    return np.load(Path(cfg["decoded"]) / f"{name}.npy")


class _Clock:
    """Wall and CPU time (all threads of this process, and of its child processes that ended) since construction."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time() + _children_cpu()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() + _children_cpu() - self.cpu


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _result(seconds: float, cpu: float, events: int, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "events": events,
        "rate": events / seconds,
        "rate_per_cpu_second": events / cpu if cpu > 0 else None,
        "load1_at_end": os.getloadavg()[0],
        **extra,
        "blas": _blas_info(),
    }


def _decoded_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """The decoded stream's EventBatch fields, as saved by :func:`_decode_file` (object columns rebuilt)."""
    d = Path(cfg["decoded"])
    cols = {f.stem: np.load(f) for f in sorted(d.glob("batch.*.npy"))}
    cols = {k.removeprefix("batch."): v for k, v in cols.items()}
    n = len(cols["ts"])
    cols["event_id"] = np.array([f"{MODEL_ID}-{i}" for i in range(n)], dtype=object)
    cols["client_id"] = cols["client_id"].astype(object)
    return cols


def _monitor(cfg: dict[str, Any], **extra: Any) -> Any:
    """The model's monitor as the service builds it (drift, and the other detectors its settings enable)."""
    from streams.pipeline import build_monitor
    from streams.service import load_active_baselines, open_store

    settings = _settings(cfg, **extra)
    return build_monitor(load_active_baselines(open_store(settings))[MODEL_ID], settings)


#: Settings of the drift-only core: issue 2's detection core, before the other detectors existed.
DRIFT_ONLY = {k: {"enabled": False} for k in ("validation", "performance", "anomaly", "adversarial")}


def w_core(cfg: dict[str, Any]) -> dict[str, Any]:
    return _run_core(cfg, _monitor(cfg))


def w_core_drift(cfg: dict[str, Any]) -> dict[str, Any]:
    return _run_core(cfg, _monitor(cfg, **DRIFT_ONLY))


def _run_core(cfg: dict[str, Any], monitor: Any) -> dict[str, Any]:
    from detector.schema import EventBatch

    limits = _limit_blas()
    cols = _decoded_fields(cfg)
    n = len(cols["ts"])
    starts = list(range(0, n, CHUNK))
    batches = [EventBatch(**{k: v[a : a + CHUNK] for k, v in cols.items()}) for a in starts]
    del cols
    alerts: list[tuple[int, str, str, list[str], str]] = []
    clock = _Clock()
    for a, batch in zip(starts, batches, strict=True):
        out = monitor.update(batch)
        for fired in out.alerts:
            d = fired.decision
            alerts.append((a + fired.row, d.kind, d.status, list(d.columns), d.severity))
    seconds, cpu = clock.stop()
    del limits
    parts = [
        k
        for k in ("drift", "policy", "validator", "performance", "labels", "anomaly", "adversarial")
        if getattr(monitor, k, None)
    ]
    return _result(seconds, cpu, n, alerts=alerts, monitored_columns=list(monitor.reference.names), components=parts)


def _file_alerts(path: Path) -> list[tuple[int, str, str, list[str], str]]:
    out = []
    with path.open("rb") as fh:
        for line in fh:
            a = json.loads(line)
            out.append((int(a["event_id"].rsplit("-", 1)[1]), a["kind"], a["status"], a["features"], a["severity"]))
    return out


def _settings(cfg: dict[str, Any], **extra: Any) -> Any:
    from streams.config import Settings

    return Settings.model_validate({"baselines": {"store": cfg["store"]}, **extra})


def w_replay(cfg: dict[str, Any]) -> dict[str, Any]:
    return _run_replay(cfg, decode_ahead=True)


def w_replay_serial(cfg: dict[str, Any]) -> dict[str, Any]:
    return _run_replay(cfg, decode_ahead=False)


def _run_replay(cfg: dict[str, Any], *, decode_ahead: bool) -> dict[str, Any]:
    from streams.files import JsonlWriter, dead_letter_record
    from streams.replay import replay_file
    from streams.service import load_active_baselines, open_store

    limits = _limit_blas()
    settings = _settings(cfg)
    baselines = load_active_baselines(open_store(settings))
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        alerts_path, dead_path = Path(tmp) / "alerts.jsonl", Path(tmp) / "dead.jsonl"
        clock = _Clock()
        with JsonlWriter(alerts_path) as aw, JsonlWriter(dead_path) as dw:
            summary = replay_file(
                settings,
                baselines,
                cfg["stream"],
                aw.write,
                lambda d, where: dw.write(dead_letter_record(d, where)),
                chunk_size=CHUNK,
                decode_ahead=decode_ahead,
            )
        seconds, cpu = clock.stop()
        alerts = _file_alerts(alerts_path)
    del limits
    return _result(seconds, cpu, summary.events, dead_letters=summary.dead_letters, alerts=alerts)


def _parse_file(cfg: dict[str, Any], loads: Callable[[bytes], Any]) -> dict[str, Any]:
    limits = _limit_blas()
    n = 0
    clock = _Clock()
    with open(cfg["stream"], "rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    seconds, cpu = clock.stop()
    del limits
    return _result(seconds, cpu, n)


def w_json(cfg: dict[str, Any]) -> dict[str, Any]:
    return _parse_file(cfg, json.loads)


def w_orjson(cfg: dict[str, Any]) -> dict[str, Any]:
    import orjson

    return _parse_file(cfg, orjson.loads)


def w_replay_stages(cfg: dict[str, Any]) -> dict[str, Any]:
    """The replay loop of :func:`streams.replay.replay_file`, with its stages timed."""
    from streams.files import read_jsonl_chunks
    from streams.pipeline import Positions
    from streams.service import load_active_baselines, make_pipeline, open_store

    limits = _limit_blas()
    settings = _settings(cfg)
    pipeline = make_pipeline(settings, load_active_baselines(open_store(settings)))
    spent = {"read": 0.0, "decode": 0.0, "detect": 0.0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t

        return wrapper

    pipeline.decoder.decode = timed("decode", pipeline.decoder.decode)  # type: ignore[method-assign]
    for mon in pipeline.monitors.values():
        mon.update = timed("detect", mon.update)  # type: ignore[method-assign]
    n = 0
    clock = _Clock()
    chunks = read_jsonl_chunks(cfg["stream"], CHUNK)
    while True:
        t = time.perf_counter()
        item = next(chunks, None)
        spent["read"] += time.perf_counter() - t
        if item is None:
            break
        lines, numbers = item
        zeros = np.zeros(len(lines), np.int32)
        pipeline.process(lines, Positions("file", (cfg["stream"],), zeros, zeros, np.asarray(numbers)))
        n += len(lines)
    seconds, cpu = clock.stop()
    spent["rest"] = seconds - sum(spent.values())
    del limits
    return _result(seconds, cpu, n, stages=spent)


def w_kafka(cfg: dict[str, Any], name: str = "kafka") -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from streams.service import Service

    k = cfg[name]
    run = f"{k['run']}-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bench-kafka-state-") as state:
        settings = _settings(
            cfg,
            kafka={
                "bootstrap_servers": k["bootstrap"],
                "topics": [k["topic"]],
                "group_id": f"inferwatch-bench-{run}",
                "alerts_topic": f"inferwatch-bench-{run}.alerts",
                "dead_letter_topic": f"inferwatch-bench-{run}.dead-letters",
            },
            checkpoint={"dir": state},
            metrics={"port": 0},
            **(DRIFT_ONLY if k["drift_only"] else {}),
        )
        registry = CollectorRegistry()
        service = Service(settings, registry)
        limits = _limit_blas()
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                service.run()
            except BaseException as e:
                failure.append(e)

        want = k["events"]
        worker = threading.Thread(target=serve, name="inferwatch-service", daemon=True)
        t_ready = t_first = None
        done = 0.0
        c0 = time.process_time()
        t0 = time.perf_counter()
        worker.start()
        while True:
            time.sleep(KAFKA_POLL_S)
            now = time.perf_counter()
            done = registry.get_sample_value("inferwatch_events_consumed_total", {"model_id": MODEL_ID}) or 0.0
            if t_ready is None and service.ready.is_set():
                t_ready = now
            if t_first is None and done > 0:
                t_first = now
            if done >= want:
                break
            if failure:
                raise RuntimeError(f"service failed: {failure[0]!r}")
            if now - t0 > KAFKA_TIMEOUT_S:
                raise RuntimeError(f"service consumed {done:.0f} of {want} events in {KAFKA_TIMEOUT_S:.0f} s")
        t_end = time.perf_counter()
        cpu = time.process_time() - c0
        busy = registry.get_sample_value("inferwatch_batch_seconds_sum") or 0.0
        batches = registry.get_sample_value("inferwatch_batch_seconds_count") or 0.0
        alerts = sum(
            s.value
            for m in registry.collect()
            if m.name == "inferwatch_alerts"
            for s in m.samples
            if s.name.endswith("_total")
        )
        service.stop()
        worker.join(60)
        del limits
    assert t_first is not None and t_ready is not None
    seconds = t_end - t0
    return _result(
        seconds,
        cpu,
        int(done),
        ready_s=t_ready - t0,
        first_event_s=t_first - t0,
        rate_from_first_event=done / (t_end - t_first),
        busy_s=busy,
        batches=int(batches),
        alerts=int(alerts),
    )


def _serve_instance(settings_json: str, consumed: Any, stop: Any) -> None:
    """One ``Service`` of a consumer group (in its own process): publishes its consumed count until ``stop``."""
    from prometheus_client import CollectorRegistry

    from streams.config import Settings
    from streams.service import Service

    limits = _limit_blas()
    registry = CollectorRegistry()
    service = Service(Settings.model_validate_json(settings_json), registry)
    worker = threading.Thread(target=service.run, name="inferwatch-service", daemon=True)
    worker.start()
    while not stop.is_set():
        consumed.value = registry.get_sample_value("inferwatch_events_consumed_total", {"model_id": MODEL_ID}) or 0.0
        stop.wait(KAFKA_POLL_S)
    service.stop()
    worker.join(60)
    del limits


def w_kafka_group(cfg: dict[str, Any], name: str = "kafka_group") -> dict[str, Any]:
    """Two ``Service`` processes in one consumer group on a two-partition topic (scaling out by partitions)."""
    import multiprocessing as mp
    import resource

    k = cfg[name]
    run = f"{k['run']}-{os.getpid()}"
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    with tempfile.TemporaryDirectory(prefix="bench-kafka-group-") as state:
        counters, procs = [], []
        for i in range(k["instances"]):
            settings = _settings(
                cfg,
                kafka={
                    "bootstrap_servers": k["bootstrap"],
                    "topics": [k["topic"]],
                    "group_id": f"inferwatch-bench-{run}",
                    "alerts_topic": f"inferwatch-bench-{run}.alerts",
                    "dead_letter_topic": f"inferwatch-bench-{run}.dead-letters",
                },
                checkpoint={"dir": f"{state}/{i}"},
                metrics={"port": 0},
                **(DRIFT_ONLY if k["drift_only"] else {}),
            )
            counters.append(ctx.Value("d", 0.0))
            procs.append(ctx.Process(target=_serve_instance, args=(settings.model_dump_json(), counters[-1], stop)))
        want = k["events"]
        t_first = None
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        while True:
            time.sleep(KAFKA_POLL_S)
            now = time.perf_counter()
            done = sum(c.value for c in counters)
            if t_first is None and done > 0:
                t_first = now
            if done >= want:
                break
            if not all(p.is_alive() for p in procs):
                raise RuntimeError("a service instance exited early")
            if now - t0 > KAFKA_TIMEOUT_S:
                raise RuntimeError(f"the group consumed {done:.0f} of {want} events in {KAFKA_TIMEOUT_S:.0f} s")
        t_end = time.perf_counter()
        stop.set()
        for p in procs:
            p.join(90)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert t_first is not None
    seconds = t_end - t0
    return _result(
        seconds,
        cpu.ru_utime + cpu.ru_stime,
        int(done),
        first_event_s=t_first - t0,
        rate_from_first_event=done / (t_end - t_first),
        per_instance=[int(c.value) for c in counters],
    )


def _numeric(cfg: dict[str, Any], name: str = "batch.numeric") -> Any:
    x = _load_decoded(cfg, name)
    return np.ascontiguousarray(x[:, :N_NUMERIC])


def w_adwin(cfg: dict[str, Any]) -> dict[str, Any]:
    from river import drift

    limits = _limit_blas()
    x = _numeric(cfg)
    n = len(x)
    detectors = [drift.ADWIN() for _ in range(N_NUMERIC)]
    hits: list[tuple[int, int]] = []
    clock = _Clock()
    for a in range(0, n, CHUNK):
        for i, row in enumerate(x[a : a + CHUNK].tolist(), start=a):
            for j, (d, v) in enumerate(zip(detectors, row, strict=True)):
                d.update(v)
                if d.drift_detected:
                    hits.append((i, j))
    seconds, cpu = clock.stop()
    del limits
    return _result(seconds, cpu, n, hits=hits, params="ADWIN() defaults: delta=0.002, clock=32")


def w_kswin(cfg: dict[str, Any]) -> dict[str, Any]:
    from river import drift

    limits = _limit_blas()
    n = cfg["kswin_prefix"]
    x = _numeric(cfg)[:n]
    detectors = [drift.KSWIN(seed=SEED + j) for j in range(N_NUMERIC)]
    hits: list[tuple[int, int]] = []
    clock = _Clock()
    for i, row in enumerate(x.tolist()):
        for j, (d, v) in enumerate(zip(detectors, row, strict=True)):
            d.update(v)
            if d.drift_detected:
                hits.append((i, j))
    seconds, cpu = clock.stop()
    del limits
    return _result(seconds, cpu, n, hits=hits, params="KSWIN(alpha=0.005, window_size=100, stat_size=30)")


def _windowed(cfg: dict[str, Any], test: Callable[[Any], Any]) -> dict[str, Any]:
    """Run ``test(window) -> flagged`` on every full window; the rate and the flagged window ends."""
    x = _numeric(cfg)
    n = len(x) - len(x) % WINDOW
    flagged = []
    clock = _Clock()
    for a in range(0, n, WINDOW):
        if test(x[a : a + WINDOW]):
            flagged.append(a + WINDOW - 1)
    seconds, cpu = clock.stop()
    return _result(seconds, cpu, n, flagged=flagged)


def w_ks2samp(cfg: dict[str, Any]) -> dict[str, Any]:
    from scipy import stats

    limits = _limit_blas()
    ref = _numeric(cfg, "ref_numeric")
    alpha = 0.05 / N_NUMERIC

    def test(w: Any) -> bool:
        return bool((stats.ks_2samp(ref, w, axis=0, method="asymp").pvalue < alpha).any())

    out = _windowed(cfg, test)
    del limits
    import scipy

    return {
        **out,
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__},
        "python": sys.executable,
        "params": "ks_2samp(ref, window, axis=0, method='asymp'); flagged if any p < 0.05/32",
    }


def w_alibi(cfg: dict[str, Any]) -> dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    import alibi_detect
    import scipy
    from alibi_detect.cd import KSDrift

    limits = _limit_blas()
    detector = KSDrift(_numeric(cfg, "ref_numeric"), p_val=0.05)
    out = _windowed(cfg, lambda w: bool(detector.predict(w)["data"]["is_drift"]))
    del limits
    versions = {"alibi-detect": alibi_detect.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
    return {
        **out,
        "versions": versions,
        "python": sys.executable,
        "params": "KSDrift(x_ref, p_val=0.05) defaults: bonferroni, two-sided; predict per window",
    }


def w_psi(cfg: dict[str, Any]) -> dict[str, Any]:
    limits = _limit_blas()
    ref = _numeric(cfg, "ref_numeric")
    x = _numeric(cfg)
    n_bins = 20
    qs = np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = [np.quantile(ref[:, j], qs) for j in range(N_NUMERIC)]
    ref_p = np.stack(
        [np.bincount(np.searchsorted(e, ref[:, j], side="right"), minlength=n_bins) for j, e in enumerate(edges)]
    ) / len(ref)
    ref_p = np.maximum(ref_p, 1e-4)
    worst = []
    clock = _Clock()
    for a in range(0, len(x), CHUNK):
        xb = x[a : a + CHUNK]
        counts = np.stack(
            [np.bincount(np.searchsorted(e, xb[:, j], side="right"), minlength=n_bins) for j, e in enumerate(edges)]
        )
        p = np.maximum(counts / len(xb), 1e-4)
        psi = np.sum((p - ref_p) * np.log(p / ref_p), axis=1)
        worst.append(float(psi.max()))
    seconds, cpu = clock.stop()
    del limits
    return _result(
        seconds,
        cpu,
        len(x),
        params="20 reference-quantile bins, searchsorted + bincount per column",
        max_psi_first_chunk=worst[0],
        max_psi_last_chunk=worst[-1],
    )


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "core": w_core,
    "core_drift": w_core_drift,
    "replay": w_replay,
    "replay_serial": w_replay_serial,
    "json": w_json,
    "orjson": w_orjson,
    "replay_stages": w_replay_stages,
    "kafka": w_kafka,
    "kafka_group": w_kafka_group,
    "kafka_drift": lambda cfg: w_kafka(cfg, "kafka_drift"),
    "kafka_group_drift": lambda cfg: w_kafka_group(cfg, "kafka_group_drift"),
    "adwin": w_adwin,
    "kswin": w_kswin,
    "ks2samp": w_ks2samp,
    "alibi": w_alibi,
    "psi": w_psi,
}


def run_worker(name: str, config: str) -> None:
    cfg = json.loads(Path(config).read_text())
    result = WORKERS[name](cfg)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


# ============================================================================================== data


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()[:12]


def _source_digest(paths: Sequence[Path]) -> str:
    return _digest(*(p.read_bytes() for p in paths))


def _stream_class() -> Any:
    from dataclasses import dataclass

    from streams.synthetic import SyntheticStream

    @dataclass(frozen=True)
    class ShiftedStream(SyntheticStream):
        """SyntheticStream with several features shifted from ``shift_at`` on; the model's output follows them."""

        shifts: tuple[tuple[int, float], ...] = ()

        def arrays(self, n: int, *, seed: int, offset: int = 0) -> dict[str, np.ndarray]:
            a = super().arrays(n, seed=seed, offset=offset)
            after = a["idx"] >= self.shift_at
            for j, by in self.shifts:
                a["x"][after, j] += by
            # Same scoring rule as SyntheticStream, applied to the shifted features.
            w = np.linspace(1.0, -1.0, self.n_numeric) / np.sqrt(self.n_numeric)
            a["p"] = 1 / (1 + np.exp(-(a["x"] @ w)))
            return a

    return ShiftedStream


def _write_stream(path: Path, n: int, *, seed: int, shift_at: int, shifts: tuple[tuple[int, float], ...]) -> None:
    stream = _stream_class()(
        n_numeric=N_NUMERIC, categorical=False, model_id=MODEL_ID, shift_at=shift_at, shifts=shifts
    )
    tmp = path.with_suffix(".tmp")
    part = 100_000
    with tmp.open("wb") as fh:
        for k, offset in enumerate(range(0, n, part)):
            fh.write(b"\n".join(stream.lines(min(part, n - offset), seed=seed * 1000 + k, offset=offset)) + b"\n")
    os.replace(tmp, path)


def _decode_file(path: Path, decoder: Any) -> dict[str, Any]:
    """Decode a JSONL file in chunks; every numeric EventBatch field, concatenated."""
    from dataclasses import fields

    from detector.schema import EventBatch
    from streams.files import read_jsonl_chunks

    parts: dict[str, list[Any]] = {}
    for lines, _ in read_jsonl_chunks(path, CHUNK):
        r = decoder.decode(lines)
        if r.dead or len(r.batches) != 1:
            raise RuntimeError(f"{path}: {len(r.dead)} dead letters, {len(r.batches)} models in a chunk")
        batch = r.batches[0].batch
        for f in fields(EventBatch):
            value = getattr(batch, f.name)
            if value.dtype != object:
                parts.setdefault(f.name, []).append(value)
            elif f.name == "client_id":  # the adversarial detector's key; event ids are rebuilt instead
                parts.setdefault(f.name, []).append(value.astype(str))
    return {k: np.concatenate(v) for k, v in parts.items()}


def prepare_data(cache: Path, events: int) -> dict[str, Any]:
    """Generate (once) the stream, the reference, the decoded arrays; build the baseline store."""
    from baselines.build import build_baseline, infer_schema
    from baselines.store import BaselineStore
    from streams.decode import Decoder, parse_events

    shift_at = events // 2
    gen_key = _digest(GEN_VERSION, events, SEED, SHIFTS, N_NUMERIC, _source_digest([ROOT / "streams/synthetic.py"]))
    stream = cache / f"stream-{events}-{gen_key}.jsonl"
    reference = cache / f"reference-{N_REFERENCE}-{gen_key}.jsonl"
    cache.mkdir(parents=True, exist_ok=True)
    if not reference.exists():
        log(f"generating the reference: {N_REFERENCE:,} events -> {reference}")
        _write_stream(reference, N_REFERENCE, seed=SEED + 1, shift_at=N_REFERENCE, shifts=())
    if not stream.exists():
        log(f"generating the stream: {events:,} events, shift at {shift_at:,} -> {stream} (once; ~1 min per 1M)")
        t = time.perf_counter()
        _write_stream(stream, events, seed=SEED, shift_at=shift_at, shifts=SHIFTS)
        log(f"  generated in {time.perf_counter() - t:.0f} s, {stream.stat().st_size / 1e9:.2f} GB")

    ref_lines = reference.read_bytes().splitlines()
    objs, _, _ = parse_events(ref_lines)
    schema = infer_schema(objs, MODEL_ID)
    decoder = Decoder({MODEL_ID: schema})
    ref_batch = decoder.decode(ref_lines).batches[0].batch

    decode_src = [ROOT / "streams/decode.py", ROOT / "streams/_native.c", ROOT / "detector/schema.py"]
    decoded = cache / f"decoded-{events}-{gen_key}-{_digest(DECODED_VERSION, _source_digest(decode_src))}"
    if not (decoded / "done").exists():
        log(f"decoding the stream once for the core and the peers -> {decoded}")
        t = time.perf_counter()
        shutil.rmtree(decoded, ignore_errors=True)
        decoded.mkdir()
        for k, v in _decode_file(stream, decoder).items():
            np.save(decoded / f"batch.{k}.npy", v)
        np.save(decoded / "ref_numeric.npy", ref_batch.numeric)
        (decoded / "done").touch()
        log(f"  decoded in {time.perf_counter() - t:.0f} s")
        for old in cache.glob(f"decoded-{events}-*"):
            if old != decoded:
                shutil.rmtree(old, ignore_errors=True)

    store = cache / "run" / "baselines"
    shutil.rmtree(store, ignore_errors=True)
    info = build_baseline(BaselineStore(store), ref_batch, schema, source={"bench": gen_key}, promote=True)
    return {
        "stream": str(stream),
        "reference": str(reference),
        "decoded": str(decoded),
        "store": str(store),
        "baseline_version": info.version,
        "events": events,
        "shift_at": shift_at,
        "bytes_per_event": stream.stat().st_size / events,
        "schema": {
            "numeric": len(schema.numeric),
            "categorical": len(schema.categorical),
            "prediction": schema.prediction,
            "classes": list(schema.classes),
        },
    }


# ============================================================================================== kafka


@contextlib.contextmanager
def kafka_broker(bootstrap: str | None, run_dir: str) -> Iterator[str]:
    """A broker's bootstrap address: the given one, or our own (started here, stopped on exit)."""
    if bootstrap:
        yield bootstrap
        return
    script = ROOT / "scripts" / "kafka-broker.sh"
    env = {**os.environ, "INFERWATCH_KAFKA_RUN_DIR": run_dir}
    running = subprocess.run(["bash", str(script), "status"], env=env, capture_output=True, check=False)
    log(f"starting a Kafka broker in {run_dir}" if running.returncode else f"reusing the broker in {run_dir}")
    started = subprocess.run(
        ["bash", str(script), "start"], env=env, capture_output=True, text=True, check=False, timeout=900
    )
    if started.returncode:
        raise RuntimeError(f"kafka-broker.sh start failed: {started.stderr[-2000:]}")
    address = started.stdout.strip().splitlines()[-1]
    try:
        yield address
    finally:
        if running.returncode:  # we started it
            subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, check=False, timeout=120)
            log("stopped the Kafka broker")


def produce_topic(bootstrap: str, stream: str, events: int, partitions: int = 1) -> dict[str, Any]:
    """Put every event of the stream on a fresh topic; returns its name and the time it took."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from streams.kafka_io import ensure_topics

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while not admin.list_topics(timeout=10).brokers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no broker answers at {bootstrap}")
        time.sleep(0.5)
    topic = f"inferwatch-bench-{uuid.uuid4().hex[:8]}.events"
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], partitions=partitions)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            "acks": "all",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    t = time.perf_counter()
    with open(stream, "rb") as fh:
        for i, line in enumerate(fh):
            while True:
                try:
                    # round-robin: librdkafka's sticky partitioner sends long runs to one partition
                    producer.produce(topic, line.rstrip(b"\n"), partition=i % partitions)
                    break
                except BufferError:
                    producer.poll(0.05)
    if producer.flush(300):
        raise RuntimeError("events still queued after 300 s")
    seconds = time.perf_counter() - t
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-check-{uuid.uuid4().hex[:8]}"})
    held = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)]
    c.close()
    if sum(held) != events:
        raise RuntimeError(f"topic {topic} holds {sum(held)} events, expected {events}")
    return {"topic": topic, "produce_seconds": seconds, "partitions": partitions, "held": held, "compression": "lz4"}


# ============================================================================================== orchestration


def call_worker(name: str, config: Path, python: str, timeout: float = 3600) -> dict[str, Any]:
    worker = name.split("@")[0]
    cmd = [python, str(Path(__file__).resolve()), "--worker", worker, "--config", str(config)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"worker {name} exited {proc.returncode}: {tail}")
    out: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    out["process_seconds"] = time.perf_counter() - t
    return out


def ensure_alibi_python(path: str | None, cache: Path, setup: bool) -> tuple[str | None, str]:
    """The interpreter of a venv with alibi-detect 0.13.0, creating it if allowed; (None, why) if there is none."""
    if path:
        return path, "given with --alibi-python"
    venv = cache / "alibi-venv"
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import alibi_detect.cd, threadpoolctl"]
    if py.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return str(py), f"separate venv {venv}"
    if not setup:
        return None, f"no alibi-detect venv at {venv} and --no-alibi-setup"
    log(f"creating {venv} with {' '.join(ALIBI_REQUIREMENTS)} (once; a few minutes)")
    base = getattr(sys, "_base_executable", sys.executable)
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *ALIBI_REQUIREMENTS],
    ]
    for step in steps:
        r = subprocess.run(step, capture_output=True, text=True, check=False, timeout=1800)
        if r.returncode:
            return None, f"creating the alibi-detect venv failed: {' '.join(step)}: {r.stderr[-1500:]}"
    return str(py), f"separate venv {venv} (created now)"


def machine_context() -> dict[str, Any]:
    cpu = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu MHz", "cache size", "cpu family", "model") and key not in cpu:
                cpu[key] = value.strip()
    versions = {}
    for mod in ("numpy", "scipy", "river", "orjson", "threadpoolctl", "pydantic", "prometheus_client"):
        with contextlib.suppress(Exception):
            versions[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        import confluent_kafka

        versions["confluent_kafka"] = confluent_kafka.__version__
        versions["librdkafka"] = confluent_kafka.libversion()[0]
    git: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "detector", "streams", "baselines"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        git["uncommitted_in_detector_streams_baselines"] = status
    sources = sorted([*ROOT.glob("detector/*.py"), *ROOT.glob("streams/*.py"), *ROOT.glob("baselines/*.py")])
    git["source_digest"] = _source_digest(sources)
    git["file_digests"] = {str(f.relative_to(ROOT)): _source_digest([f]) for f in sources}
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "versions": versions,
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))},
        "git": git,
    }


def median_of(runs: list[dict[str, Any]], key: str = "rate") -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def detection_summary(hits: Sequence[tuple[int, str, str]], shift_at: int, drift_kind: str) -> dict[str, Any]:
    """Delay per shifted feature and false alerts, from (event index, column or "", kind) of every alert.

    The delay is that of the first ``drift_kind`` alert on the feature at or after the shift. False: every alert
    before the shift, and alerts on unshifted features after it. Alerts of other kinds on the shifted features, and
    alerts on no feature (prediction, confidence), after the shift are counted apart by kind.
    """
    from collections import Counter

    names = feature_names()
    shifted = {names[j] for j, _ in SHIFTS}
    first: dict[str, int | None] = {}
    for j, _ in SHIFTS:
        after = [i for i, col, kind in hits if col == names[j] and kind == drift_kind and i >= shift_at]
        first[names[j]] = min(after) if after else None
    before = [h for h in hits if h[0] < shift_at]
    unshifted_after = [h for h in hits if h[0] >= shift_at and h[1] in names and h[1] not in shifted]
    other_after = Counter(
        f"{kind} on {col or 'the model output'}"
        for i, col, kind in hits
        if i >= shift_at and (col not in names or (col in shifted and kind != drift_kind))
    )
    return {
        "first_after_shift": first,
        "delay": {k: (v - shift_at if v is not None else None) for k, v in first.items()},
        "false_before_shift": len(before),
        "false_before_shift_examples": before[:10],
        "false_after_shift_unshifted_features": len(unshifted_after),
        "false_after_shift_examples": unshifted_after[:10],
        "other_after_shift": dict(other_after),
        "alerts_total": len(hits),
    }


def core_hits(alerts: Sequence[Sequence[Any]]) -> list[tuple[int, str, str]]:
    """Incidents opened at warning or critical severity, as (event index, column or "", kind)."""
    return [
        (int(idx), cols[0] if cols else "", kind)
        for idx, kind, status, cols, severity in alerts
        if status == "open" and severity != "info"
    ]


def info_notes(alerts: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Info-level incidents opened, by kind (signals for a person to look at, not alarms)."""
    from collections import Counter

    return dict(Counter(kind for _, kind, status, _, severity in alerts if status == "open" and severity == "info"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, help="events in the stream (default 1,000,000; --quick 100,000)")
    p.add_argument("--quick", action="store_true", help="100k events, 1 repeat, short KSWIN prefix")
    p.add_argument("--repeats", type=int, help="fresh processes per measurement (default 3; --quick 1)")
    p.add_argument("--kswin-prefix", type=int, help="events given to KSWIN (default 2,000; --quick 500)")
    p.add_argument("--only", help=f"comma list of {', '.join(MEASUREMENTS)} or the groups {', '.join(GROUPS)}")
    p.add_argument("--skip", default="", help="comma list of measurements or groups to leave out")
    p.add_argument("--out", type=Path, help="results directory (default benchmarks/results for a full run)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench")
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("INFERWATCH_BOOTSTRAP"),
        help="Kafka bootstrap address (default $INFERWATCH_BOOTSTRAP, else a broker started here)",
    )
    p.add_argument("--kafka-run-dir", default="/tmp/inferwatch-bench-kafka", help="run dir of our own broker")
    p.add_argument("--alibi-python", help="python of a venv with alibi-detect 0.13.0")
    p.add_argument("--no-alibi-setup", action="store_true", help="do not create the alibi-detect venv")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.config)
        return 0

    events = args.events or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    kswin_prefix = args.kswin_prefix or (500 if args.quick else 2_000)
    wanted: list[str] = []
    for item in args.only.split(",") if args.only else MEASUREMENTS:
        wanted += GROUPS.get(item.strip(), (item.strip(),))
    skipped = {m for item in args.skip.split(",") if item.strip() for m in GROUPS.get(item.strip(), (item.strip(),))}
    bad = [m for m in [*wanted, *skipped] if m not in MEASUREMENTS]
    if bad:
        p.error(f"unknown measurement(s) {bad}; choose from {MEASUREMENTS} or {tuple(GROUPS)}")
    wanted = [m for m in MEASUREMENTS if m in wanted and m not in skipped]
    partial = args.quick or args.only is not None or bool(skipped) or args.events is not None
    out_dir = args.out or (args.cache / "results" if partial else ROOT / "benchmarks" / "results")

    started = time.time()
    load_before = os.getloadavg()
    context = machine_context()
    log(f"{events:,} events, {repeats} repeat(s), measuring {', '.join(wanted)}; load {load_before}")
    data = prepare_data(args.cache, events)
    cfg: dict[str, Any] = {**data, "kswin_prefix": min(kswin_prefix, events)}
    config = args.cache / "run" / "config.json"
    config.write_text(json.dumps(cfg, indent=1))

    results: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    notes: dict[str, Any] = {}

    def measure(name: str, python: str = sys.executable) -> None:
        try:
            r = call_worker(name, config, python)
            results.setdefault(name, []).append(r)
            log(f"  {name:18s} {r['rate']:>12,.0f} events/s  ({r['seconds']:.2f} s)")
        except Exception as e:  # one failed measurement must not lose the others
            errors[name] = str(e)
            log(f"  {name} FAILED: {str(e)[-800:]}")

    alibi_py = None
    if "alibi" in wanted:
        alibi_py, notes["alibi_venv"] = ensure_alibi_python(args.alibi_python, args.cache, not args.no_alibi_setup)
        if alibi_py is None:
            errors["alibi"] = notes["alibi_venv"]

    # Round-robin over the measurements, one fresh process each, so slow drifts of the machine's load
    # spread over all of them instead of favouring whichever ran first.
    local = [m for m in wanted if not m.startswith("kafka") and m not in ("alibi", "replay_stages")]
    for rep in range(repeats):
        log(f"repeat {rep + 1}/{repeats}")
        for name in local:
            measure(name)
        if alibi_py:
            measure("alibi", alibi_py)
            if rep == 0:  # calibration of the other venv: once is enough
                measure("ks2samp@alibi-venv", alibi_py)
    if "replay_stages" in wanted:
        measure("replay_stages")

    # One broker for all: a topic of one partition for one service, of GROUP_INSTANCES for the group,
    # each produced once; every run consumes it in a consumer group of its own.
    kafka_runs = [
        (n, parts)
        for n, parts in (
            ("kafka", 1),
            ("kafka_group", GROUP_INSTANCES),
            ("kafka_drift", 1),
            ("kafka_group_drift", GROUP_INSTANCES),
        )
        if n in wanted
    ]
    if kafka_runs:
        try:
            with kafka_broker(args.bootstrap, args.kafka_run_dir) as bootstrap:
                topics: dict[int, dict[str, Any]] = {}
                for name, partitions in kafka_runs:
                    try:
                        if partitions not in topics:
                            log(f"producing {events:,} events to a {partitions}-partition topic at {bootstrap}")
                            topics[partitions] = produce_topic(bootstrap, data["stream"], events, partitions)
                            log(f"  produced in {topics[partitions]['produce_seconds']:.1f} s")
                        produced = topics[partitions]
                        notes[name] = {**produced, "bootstrap": bootstrap, "own_broker": not args.bootstrap}
                        cfg[name] = {
                            "bootstrap": bootstrap,
                            "topic": produced["topic"],
                            "events": events,
                            "instances": partitions,
                            "run": uuid.uuid4().hex[:8],
                            "drift_only": name.endswith("_drift"),
                        }
                        config.write_text(json.dumps(cfg, indent=1))
                        for rep in range(repeats):
                            log(f"{name} repeat {rep + 1}/{repeats}")
                            measure(name)
                    except Exception as e:
                        errors[name] = str(e)
                        log(f"  {name} FAILED: {e}")
        except Exception as e:  # the broker itself
            for name, _ in kafka_runs:
                errors[name] = str(e)
            log(f"  Kafka broker FAILED: {e}")

    load_after = os.getloadavg()
    before, after = context["git"]["file_digests"], machine_context()["git"]["file_digests"]
    changed = sorted(f for f in before.keys() | after.keys() if before.get(f) != after.get(f))
    if changed:
        notes["code_changed_during_run"] = (
            f"{', '.join(changed)} changed while the benchmark ran: a measurement that started after the change "
            "(and imports that file) ran the new version"
        )
        log(notes["code_changed_during_run"])
    report = build_report(
        args,
        context,
        data,
        cfg,
        results,
        errors,
        notes,
        repeats,
        events,
        load_before,
        load_after,
        time.time() - started,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "drift.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out_dir / "drift.md").write_text(render_markdown(report))
    log(f"wrote {out_dir / 'drift.md'} and drift.json in {time.time() - started:.0f} s")
    return 1 if errors else 0


# ============================================================================================== report

GOALS = (
    ("core_drift", "drift core >= 1,000,000 events/s", lambda m: m.get("core_drift"), 1_000_000.0),
    ("core", "core, every detector on >= 1,000,000 events/s", lambda m: m.get("core"), 1_000_000.0),
    ("replay_vs_json", "file replay >= 2x json.loads line by line", lambda m: m.get("replay_vs_json"), 2.0),
    (
        "replay_serial_vs_json",
        "file replay in one process >= 2x json.loads line by line",
        lambda m: m.get("replay_serial_vs_json"),
        2.0,
    ),
    ("kafka", "Kafka end to end >= 100,000 events/s", lambda m: m.get("kafka"), 100_000.0),
    (
        "kafka_group",
        "Kafka end to end, 2 service processes in one group >= 100,000 events/s",
        lambda m: m.get("kafka_group"),
        100_000.0,
    ),
    (
        "kafka_drift",
        "Kafka end to end, drift detection only >= 100,000 events/s",
        lambda m: m.get("kafka_drift"),
        100_000.0,
    ),
    (
        "kafka_group_drift",
        "Kafka end to end, drift only, 2 service processes in one group >= 100,000 events/s",
        lambda m: m.get("kafka_group_drift"),
        100_000.0,
    ),
    ("core_drift_vs_adwin", "drift core >= 6x river ADWIN x32", lambda m: m.get("core_drift_vs_adwin"), 6.0),
    ("core_drift_vs_alibi", "drift core >= 30x alibi-detect KSDrift", lambda m: m.get("core_drift_vs_alibi"), 30.0),
)


def build_report(
    args: argparse.Namespace,
    context: dict[str, Any],
    data: dict[str, Any],
    cfg: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    errors: dict[str, str],
    notes: dict[str, Any],
    repeats: int,
    events: int,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    wall: float,
) -> dict[str, Any]:
    med = {name: median_of(runs) for name, runs in results.items()}
    med_cpu = {name: median_of(runs, "rate_per_cpu_second") for name, runs in results.items()}
    peers = ("adwin", "kswin", "ks2samp", "alibi", "psi")
    pairs = {f"core_vs_{peer}": ("core", peer) for peer in peers}
    pairs.update({f"core_drift_vs_{peer}": ("core_drift", peer) for peer in peers})
    pairs.update(
        replay_vs_json=("replay", "json"),
        replay_serial_vs_json=("replay_serial", "json"),
        replay_vs_orjson=("replay", "orjson"),
        kafka_vs_replay=("kafka", "replay"),
        alibi_venv_ks2samp_vs_project_ks2samp=("ks2samp@alibi-venv", "ks2samp"),
    )
    ratios: dict[str, float] = {}
    ratios_cpu: dict[str, float] = {}
    for key, (a, b) in pairs.items():
        for src, dst in ((med, ratios), (med_cpu, ratios_cpu)):
            if src.get(a) and src.get(b):
                dst[key] = src[a] / src[b]  # type: ignore[operator]
    goals = []
    for key, text, get, target in GOALS:
        value, value_cpu = get({**med, **ratios}), get({**med_cpu, **ratios_cpu})
        goals.append(
            {
                "goal": key,
                "text": text,
                "target": target,
                "value": value,
                "value_per_cpu_second": value_cpu,
                "met": None if value is None else value >= target,
            }
        )

    shift_at = data["shift_at"]
    detection: dict[str, Any] = {}
    if results.get("core"):
        core_alerts = results["core"][0]["alerts"]
        detection["core"] = detection_summary(core_hits(core_alerts), shift_at, "feature_drift")
        detection["core"]["records"] = len(core_alerts)
        detection["core"]["info_notes"] = info_notes(core_alerts)
        detection["core_runs_identical"] = all(r["alerts"] == core_alerts for r in results["core"])
        if results.get("replay"):
            detection["replay_alerts_identical_to_core"] = all(
                [list(a) for a in r["alerts"]] == [list(a) for a in core_alerts]
                for r in results["replay"] + results.get("replay_serial", [])
            )
    if results.get("adwin"):
        names = feature_names()
        hits = [(int(i), names[j], "drift") for i, j in results["adwin"][0]["hits"]]
        detection["adwin"] = detection_summary(hits, shift_at, "drift")
    for peer in ("ks2samp", "alibi"):
        if results.get(peer):
            flagged = results[peer][0]["flagged"]
            after = [i for i in flagged if i >= shift_at]
            detection[peer] = {
                "windows_flagged_before_shift": sum(i < shift_at for i in flagged),
                "first_flagged_after_shift": after[0] if after else None,
                "delay": after[0] - shift_at if after else None,
                "windows": events // WINDOW,
            }
    for runs in results.values():  # bulky per-event lists stay only in the first run
        for r in runs[1:]:
            for k in ("alerts", "hits", "flagged"):
                r.pop(k, None)
    return {
        "benchmark": "benchmarks/bench_drift.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "wall_seconds": wall,
        "machine": {**context, "load_average_before": load_before, "load_average_after": load_after},
        "stream": {
            "events": events,
            "reference_events": N_REFERENCE,
            "numeric_features": N_NUMERIC,
            "seed": SEED,
            "shift_at": shift_at,
            "shifts_sd": {feature_names()[j]: by for j, by in SHIFTS},
            "bytes_per_event": data["bytes_per_event"],
            "schema": data["schema"],
            "file": data["stream"],
            "baseline_version": data["baseline_version"],
            "chunk": CHUNK,
            "window": WINDOW,
            "kswin_prefix": cfg["kswin_prefix"],
        },
        "repeats": repeats,
        "medians": med,
        "medians_per_cpu_second": med_cpu,
        "ratios": ratios,
        "ratios_per_cpu_second": ratios_cpu,
        "goals": goals,
        "detection": detection,
        "runs": results,
        "errors": errors,
        "notes": notes,
    }


def _fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def render_markdown(r: dict[str, Any]) -> str:
    m, med, ratios, runs = r["machine"], r["medians"], r["ratios"], r["runs"]
    med_cpu, ratios_cpu = r["medians_per_cpu_second"], r["ratios_per_cpu_second"]
    s = r["stream"]
    out: list[str] = []
    w = out.append
    w("# Drift detection benchmark\n")
    w(
        f"`{r['command']}` — {r['date_utc']} UTC, {r['wall_seconds'] / 60:.1f} min. Generated by "
        "`benchmarks/bench_drift.py`; rerun it rather than editing this file (see `benchmarks/README.md`).\n"
    )
    w(
        "Each figure is the **median of fresh processes** (one process per repeat, repeats interleaved), BLAS "
        "limited to one thread with threadpoolctl. *events/s* is wall time; *per CPU-s* divides by the CPU time "
        "of the measuring process (all its threads), which other processes' load on this shared machine disturbs "
        "far less. Absolute numbers move with the load: compare within this file, as ratios.\n"
    )

    w("## Goals\n")
    w("| goal | measured (wall) | met | same on CPU time |\n|---|---:|---|---:|")

    def show(v: float | None, events: bool) -> str:
        return "not measured" if v is None else (f"{v:,.0f} events/s" if events else f"{v:.1f}x")

    for g in r["goals"]:
        met = "—" if g["met"] is None else ("**yes**" if g["met"] else "**no**")
        ev = g["target"] > 100
        w(f"| {g['text']} | {show(g['value'], ev)} | {met} | {show(g['value_per_cpu_second'], ev)} |")
    w("")

    w("## Throughput\n")
    w(
        f"Stream: {s['events']:,} events × {s['numeric_features']} numeric features "
        f"({s['bytes_per_event']:.0f} bytes of JSON each, with a categorical prediction and its probabilities), "
        f"reference {s['reference_events']:,} events, seed {s['seed']}. Repeats: {r['repeats']}.\n"
    )
    w("| measurement | events/s | range | per CPU-s | load (1 min) | what is timed |\n|---|---:|---|---:|---|---|")
    rows = [
        ("core", "detection core: `ModelMonitor.update` on pre-decoded EventBatch chunks of 10,000, every detector on"),
        ("core_drift", "the same with drift detection only (validation, anomaly, adversarial, performance off)"),
        (
            "replay",
            "`replay_file` over the JSONL file: read, decode, all detectors, alerts to a JSONL file; a second process "
            "reads and decodes ahead (the default on 2+ cores); per CPU-s counts both processes",
        ),
        ("replay_serial", "the same in one process (`--no-decode-ahead`)"),
        ("json", "`json.loads` of each line of the same file (parse only)"),
        ("orjson", "`orjson.loads` of each line of the same file (parse only)"),
        ("kafka", "`Service` from start until `inferwatch_events_consumed_total` = all events on the topic"),
        (
            "kafka_group",
            f"{GROUP_INSTANCES} `Service` processes in one consumer group on a {GROUP_INSTANCES}-partition topic, "
            "from start until their consumed counts add up to all events; per CPU-s counts both processes",
        ),
        (
            "kafka_drift",
            "`kafka` with drift detection only (validation, anomaly, adversarial, performance off); "
            "`kafka.decode_ahead` is then off by default (with detection this cheap it does not pay)",
        ),
        ("kafka_group_drift", "`kafka_group` with the settings of `kafka_drift`"),
        ("adwin", "river `ADWIN()` on each of the 32 features, per event"),
        ("kswin", f"river `KSWIN()` ×32, per event, on the first {s['kswin_prefix']:,} events"),
        ("ks2samp", "`scipy.stats.ks_2samp(ref, window, axis=0, method='asymp')` per 1,000-event window"),
        ("alibi", "alibi-detect `KSDrift(ref, p_val=0.05).predict(window)` per 1,000-event window"),
        ("ks2samp@alibi-venv", "the ks_2samp measurement again, in the alibi-detect venv (calibration)"),
        ("psi", "plain numpy PSI (searchsorted + bincount per column) per 10,000-event chunk"),
    ]
    for name, what in rows:
        if name in runs:
            rates = [x["rate"] for x in runs[name]]
            load = [x["load1_at_end"] for x in runs[name]]
            loads = f"{min(load):.1f}–{max(load):.1f}"
            w(
                f"| {name} | {_fmt_rate(med[name])} | {min(rates):,.0f}–{max(rates):,.0f} "
                f"| {_fmt_rate(med_cpu.get(name))} | {loads} | {what} |"
            )
        elif name in r["errors"]:
            w(f"| {name} | failed | | | | {r['errors'][name][:300]} |")
    w("")
    if ratios:
        w("| ratio | wall | CPU time |\n|---|---:|---:|")
        labels = {
            "core_vs_adwin": "core / river ADWIN×32",
            "core_vs_kswin": "core / river KSWIN×32",
            "core_vs_ks2samp": "core / scipy ks_2samp",
            "core_vs_alibi": "core / alibi-detect KSDrift",
            "core_vs_psi": "core / plain numpy PSI",
            "core_drift_vs_adwin": "drift core / river ADWIN×32",
            "core_drift_vs_kswin": "drift core / river KSWIN×32",
            "core_drift_vs_ks2samp": "drift core / scipy ks_2samp",
            "core_drift_vs_alibi": "drift core / alibi-detect KSDrift",
            "core_drift_vs_psi": "drift core / plain numpy PSI",
            "replay_vs_json": "file replay / json.loads",
            "replay_serial_vs_json": "file replay in one process / json.loads",
            "replay_vs_orjson": "file replay / orjson.loads",
            "kafka_vs_replay": "Kafka service / file replay",
            "alibi_venv_ks2samp_vs_project_ks2samp": "ks_2samp in the alibi venv / in the project venv",
        }
        for k, v in ratios.items():
            c = ratios_cpu.get(k)
            w(f"| {labels.get(k, k)} | {v:,.2f}x | {'—' if c is None else f'{c:,.2f}x'} |")
        w("")

    if "kafka" in runs:
        k = runs["kafka"]
        n = r["notes"].get("kafka", {})
        w("### Kafka details\n")
        w(
            f"Topic with 1 partition, lz4, produced before timing in {n.get('produce_seconds', 0):.1f} s "
            f"({'broker started by the benchmark' if n.get('own_broker') else 'given broker'}, {n.get('bootstrap')}). "
            "Service defaults: batch_size 5,000, checkpoint every 2 s, alerts produced to Kafka, decoding in a "
            "second process (`kafka.decode_ahead`, by default only with the anomaly or adversarial detector on: "
            "not in the drift-only measurements).\n"
        )
        w(
            "| repeat | events/s from start | ready after | first event after | events/s from first event "
            "| pipeline busy | batches |\n|---|---:|---:|---:|---:|---:|---:|"
        )
        for i, x in enumerate(k, 1):
            w(
                f"| {i} | {x['rate']:,.0f} | {x['ready_s']:.2f} s | {x['first_event_s']:.2f} s "
                f"| {x['rate_from_first_event']:,.0f} | {x['busy_s'] / x['seconds']:.0%} of {x['seconds']:.1f} s "
                f"| {x['batches']} |"
            )
        w("\n'Pipeline busy' is `inferwatch_batch_seconds_sum` (decode, detect, produce alerts) over the wall time.\n")

    if "replay_stages" in runs:
        st = runs["replay_stages"][0]
        total = st["seconds"]
        w("### Where the replay's time goes (one run, stages timed inside the replay loop)\n")
        w("| stage | seconds | share | events/s of the stage alone |\n|---|---:|---:|---:|")
        for name, sec in st["stages"].items():
            w(f"| {name} | {sec:.2f} | {sec / total:.0%} | {st['events'] / sec:,.0f} |")
        w(f"| total | {total:.2f} | 100% | {st['rate']:,.0f} |\n")
        w(
            "read = `read_jsonl_chunks`; decode = `Decoder.decode`; detect = `ModelMonitor.update`; "
            "rest = alert records, source positions, loop.\n"
        )

    d = r["detection"]
    if d:
        w("## Detection check (same run, same stream)\n")
        w(
            f"Shift from event {s['shift_at']:,} on: "
            + ", ".join(f"{k} {v:+g} sd" for k, v in s["shifts_sd"].items())
            + ". Core: the monitor the service builds (components listed below), default settings: drift window "
            "2,000 events evaluated every 200, false-alarm budget 1e-3 per window, PSI ≥ 0.1 to open an incident; "
            "an alert is an incident opened. ADWIN: river defaults (delta 0.002); every detection counts. "
            "Delay = index of the first drift alert on the feature at or after the shift − shift index.\n"
        )
        cols = [k for k in s["shifts_sd"]]
        w(
            "| detector | "
            + " | ".join(f"delay {c}" for c in cols)
            + " | false alerts before shift | false alerts on unshifted features after shift "
            "| other alerts after shift |"
        )
        w("|---|" + "---:|" * len(cols) + "---:|---:|---|")
        for name, label in (("core", "inferwatch core"), ("adwin", "river ADWIN×32")):
            if name in d:
                x = d[name]
                delays = " | ".join("missed" if x["delay"][c] is None else f"{x['delay'][c]:,}" for c in cols)
                other = ", ".join(f"{v} {k}" for k, v in x["other_after_shift"].items()) or "none"
                w(
                    f"| {label} | {delays} | {x['false_before_shift']} | "
                    f"{x['false_after_shift_unshifted_features']} | {other} |"
                )
        w("")
        if "core" in runs:
            w(f"- Core monitor components: {', '.join(runs['core'][0].get('components', []))}.")
        if d.get("core", {}).get("info_notes"):
            notes = ", ".join(f"{v} {k}" for k, v in d["core"]["info_notes"].items())
            w(f"- Info-level notes of the core (not counted as alerts above): {notes}.")
        if "core_runs_identical" in d:
            w(f"- Core alerts identical in every repeat: {d['core_runs_identical']}.")
        if "replay_alerts_identical_to_core" in d:
            w(
                "- File replay (both ways) produced exactly the core's alert records: "
                f"{d['replay_alerts_identical_to_core']}."
            )
        for peer in ("ks2samp", "alibi"):
            if peer in d:
                x = d[peer]
                w(
                    f"- {peer}: {x['windows_flagged_before_shift']} of {x['windows'] // 2} windows flagged before the "
                    f"shift; first flagged window after it ends {x['delay']} events after the shift."
                )
        w("")

    w("## Machine\n")
    cpu = m["cpu"]
    w(
        f"- CPU: {cpu.get('model name', '?')} (family {cpu.get('cpu family', '?')}, model {cpu.get('model', '?')}, "
        f"{cpu.get('cpu MHz', '?')} MHz, cache {cpu.get('cache size', '?')}); {m['cores_usable']} usable cores of "
        f"{m['cores_online']}; {m['memory_gib']} GiB; Linux {m['kernel']}."
    )
    w(
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in m['load_average_before'])}; "
        f"after: {', '.join(f'{x:.2f}' for x in m['load_average_after'])}."
    )
    w(f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".")
    if "alibi" in runs:
        a = runs["alibi"][0]
        w(
            f"- alibi-detect: {', '.join(f'{k} {v}' for k, v in a['versions'].items())} in `{a['python']}` — "
            "alibi-detect 0.13.0 declares `numpy<2.0.0` and the project pins numpy 2.4.6, so pip cannot install it in "
            "the project venv (ResolutionImpossible); it runs in that separate venv, and the ks_2samp calibration row "
            "shows how that venv compares with the project's on the same scipy call."
        )
    w(f"- OPENBLAS_*/OMP_*/MKL_* environment: {m['openblas_env'] or 'none set'} (left as found).")
    blas = runs.get("core", runs.get("replay", [{}]))[0].get("blas", [])
    for b in blas:
        w(
            f"- BLAS in the workers (threadpoolctl, after limiting): {b.get('internal_api')} {b.get('version')} "
            f"{b.get('architecture') or ''} {b.get('threading_layer') or ''}, num_threads={b.get('num_threads')} "
            f"({Path(b.get('prefix') or '').name})."
        )
    g = m["git"]
    dirty = ", ".join(g.get("uncommitted_in_detector_streams_baselines") or []) or "none"
    w(
        f"- Code: commit {g.get('commit', '?')[:12]}, source digest {g.get('source_digest')}; uncommitted changes in "
        f"detector/, streams/, baselines/: {dirty}."
    )
    w("")
    if "code_changed_during_run" in r["notes"]:
        w(f"**Warning**: {r['notes']['code_changed_during_run']}.\n")
    if r["errors"]:
        w("## Errors\n")
        for k, v in r["errors"].items():
            w(f"- {k}: `{v[:1000]}`")
        w("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
