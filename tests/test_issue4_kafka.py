"""Issue 4 end to end against the real broker: per-client adversarial alerts name the attacker, never a benign client.

A small model (a fixed linear softmax over 16 features, 3 classes) gets a baseline built by
``inferwatch baseline build`` from reference events that carry ``probabilities`` and ``client_id``
(so the build fits the adversarial calibration, including the normal per-client rate). The live
stream interleaves, by event time:

* 40 ordinary clients sending random reference-like inputs, one every ~10 s;
* a retry client that resends each of its inputs 2-4 times with tiny noise (the known false
  positive of stateful detectors: near-duplicates, but the same class, large margins, no progress);
* one attacker running a HopSkipJump-style evasion search at 2 queries/s: binary searches on the
  line from its input to an input of another class, probes around the boundary point (near-duplicates
  whose predicted class flips, small top-2 margins) and steps along the estimated gradient.

The stream is produced to a topic, ``inferwatch run`` consumes it, and the alerts topic is read
back: an ``evasion_probing`` alert must name the attacker within its first queries, and no adversarial
alert may name a benign client. ``inferwatch replay`` of the same events as a file must give the
same adversarial alerts (same ids). Generated with numpy, seeded (no ART); about 20 s.

Helpers and fixtures come from ``tests/test_service_kafka.py``; its ``setup`` fixture builds the
service config from a ``baseline`` fixture, which this module overrides with the toy model's store.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from test_service_kafka import (
    ServiceProcess,
    _tail,
    produce,
    read_topic,
    replay_file_alerts,
    run_cli,
    sample,
    services,
    setup,
    write_jsonl,
)

from baselines.build import load_baseline
from baselines.store import BaselineStore

pytestmark = pytest.mark.kafka

__all__ = ["services", "setup"]  # fixtures re-exported into this module

F64 = npt.NDArray[np.float64]

MODEL_ID = "toy-softmax"
N_FEATURES, CLASSES = 16, ("c0", "c1", "c2")
FEATURES = tuple(f"f{j:02d}" for j in range(N_FEATURES))
# The weights' seed differs from every data seed, so the model is fixed whatever the stream.
WEIGHTS = np.random.default_rng(1).normal(size=(N_FEATURES, len(CLASSES))) * 2.0
T0_MS = 1_767_225_600_000  # 2026-01-01: a fixed past (the topics keep their messages forever)
REF_EVENTS, REF_CLIENTS = 3_000, 60
ADVERSARIAL = ("evasion_probing", "model_extraction", "query_flood")
ATTACKER = "attacker-0"
# The goal for iterative evasion searches is a median of <= 10 queries; one search may take a few more.
MAX_QUERIES_BEFORE_ALERT = 20
CONSUME_TIMEOUT_S = 40.0


def proba(x: F64) -> F64:
    """The model: softmax of a fixed linear map."""
    logits = x @ WEIGHTS
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def predict(x: F64) -> npt.NDArray[np.int64]:
    return np.asarray(proba(x).argmax(axis=1), dtype=np.int64)


def event_lines(x: F64, clients: Sequence[str], ts: npt.NDArray[np.int64], prefix: str) -> list[bytes]:
    """Inference events of the README contract, ids ``{prefix}-{i}``."""
    p = proba(x)
    return [
        orjson.dumps(
            {
                "event_id": f"{prefix}-{i}",
                "ts": int(ts[i]),
                "model_id": MODEL_ID,
                "client_id": clients[i],
                "features": dict(zip(FEATURES, x[i].round(6).tolist(), strict=True)),
                "prediction": CLASSES[int(p[i].argmax())],
                "probabilities": dict(zip(CLASSES, p[i].round(6).tolist(), strict=True)),
            }
        )
        for i in range(len(x))
    ]


# -- streams ---------------------------------------------------------------------------------------
def evasion_search(rng: np.random.Generator, iterations: int = 4, probes: int = 30) -> F64:
    """The queries of a HopSkipJump-like untargeted search from a random input.

    Each iteration: a binary search on the segment from the input to the current adversarial point
    (the queries converge on the decision boundary, flipping class), ``probes`` queries on a small
    sphere around the boundary point (near-duplicates on both sides of it), and a step along the
    gradient direction estimated from the probes' classes.
    """
    x0 = rng.normal(size=N_FEATURES)
    c0 = predict(x0[None])[0]
    adv = rng.normal(size=N_FEATURES) * 2.0
    while predict(adv[None])[0] == c0:
        adv = rng.normal(size=N_FEATURES) * 2.0
    queries = [x0, adv]
    for _ in range(iterations):
        lo, hi = 0.0, 1.0
        for _ in range(10):
            mid = (lo + hi) / 2
            xm = x0 + mid * (adv - x0)
            queries.append(xm)
            if predict(xm[None])[0] == c0:
                lo = mid
            else:
                hi = mid
        xb = x0 + hi * (adv - x0)
        radius = float(np.linalg.norm(xb - x0))
        u = rng.normal(size=(probes, N_FEATURES))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        around = xb + 0.02 * radius * u
        queries += list(around)
        sign = np.where(predict(around) != c0, 1.0, -1.0)
        g = (sign[:, None] * u).mean(axis=0)
        step = xb + 0.3 * radius * g / (np.linalg.norm(g) + 1e-12)
        queries.append(step)
        adv = step if predict(step[None])[0] != c0 else xb
    return np.asarray(queries)


@functools.cache
def live_stream(attacker_searches: bool = True) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    """Lines and client of every event, sorted by event time (about 1,250 events over ~10 minutes).

    ``attacker_searches=False`` makes the attacker benign (random inputs at the same rate): the
    check that the test can fail.
    """
    rng = np.random.default_rng(4)
    parts: list[tuple[F64, list[str], F64]] = []  # inputs, clients, seconds after the start
    for c in range(40):
        n = 25
        t = rng.uniform(0, 300) + np.cumsum(rng.exponential(10.0, n))
        parts.append((rng.normal(size=(n, N_FEATURES)), [f"user-{c}"] * n, t))
    xs: list[F64] = []
    ts: list[float] = []
    t_retry = rng.uniform(0, 100)
    for _ in range(20):
        x0 = rng.normal(size=N_FEATURES)
        for _ in range(int(rng.integers(2, 5))):
            xs.append(x0 + rng.normal(0.0, 0.01, N_FEATURES))
            ts.append(t_retry)
            t_retry += rng.uniform(0.5, 3.0)
        t_retry += rng.exponential(15.0)
    parts.append((np.asarray(xs), ["retry-0"] * len(xs), np.asarray(ts)))
    search = evasion_search(rng)
    if not attacker_searches:
        search = rng.normal(size=search.shape)
    parts.append((search, [ATTACKER] * len(search), np.arange(len(search), dtype=np.float64) * 0.5 + 150.0))
    x = np.concatenate([p[0] for p in parts])
    clients = [c for p in parts for c in p[1]]
    t_ms = T0_MS + 3_600_000 + (np.concatenate([p[2] for p in parts]) * 1000).astype(np.int64)
    order = np.argsort(t_ms, kind="stable")
    sorted_clients = [clients[i] for i in order]
    return tuple(event_lines(x[order], sorted_clients, t_ms[order], MODEL_ID)), tuple(sorted_clients)


def reference_lines() -> list[bytes]:
    """One hour of benign reference traffic: 60 clients, one query per ~10 s each."""
    rng = np.random.default_rng(100)
    x = rng.normal(size=(REF_EVENTS, N_FEATURES))
    clients = [f"ref-{i % REF_CLIENTS}" for i in range(REF_EVENTS)]
    t = np.concatenate([np.cumsum(rng.exponential(10.0, REF_EVENTS // REF_CLIENTS)) for _ in range(REF_CLIENTS)])
    per_client = t.reshape(REF_CLIENTS, -1).T.reshape(-1)  # event i belongs to client i % 60
    return event_lines(x, clients, T0_MS + (per_client * 1000).astype(np.int64), "ref")


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Overrides ``test_service_kafka.baseline`` for ``setup``: the toy model's store and version."""
    root = tmp_path_factory.mktemp("toy-baseline")
    ref = write_jsonl(root / "reference.jsonl", reference_lines())
    store = root / "store"
    out = run_cli("baseline", "build", "--input", str(ref), "--out", str(store))
    version = out.stdout.strip().splitlines()[-1]
    loaded = load_baseline(BaselineStore(store), MODEL_ID)
    assert loaded.adversarial is not None, "reference events with probabilities must give an adversarial calibration"
    return store, version


# -- helpers ---------------------------------------------------------------------------------------
def named(alert: dict[str, Any]) -> set[str]:
    """Clients an alert names: its ``client_id``, or the accounts of a campaign alert."""
    if alert["client_id"] is not None:
        return {alert["client_id"]}
    return set(alert["evidence"].get("clients", []))


def _summary(alerts: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["kind"], a["status"], a["severity"], sorted(named(a)), a["event_id"], a["statistic"]) for a in alerts]


def _run_service(
    kafka_bootstrap: str, setup: Callable[..., ServiceProcess], lines: Sequence[bytes]
) -> tuple[ServiceProcess, list[dict[str, Any]]]:
    """Produce ``lines`` (message timestamp = event time), wait until all are consumed, SIGTERM, read the alerts."""
    svc = setup().start()
    timestamps = [orjson.loads(line)["ts"] for line in lines]
    positions = produce(kafka_bootstrap, svc.events_topic, lines, timestamps=timestamps)
    assert positions == [(0, i) for i in range(len(lines))]

    def consumed(s: Any) -> float:
        return sample(s, "inferwatch_events_consumed_total", model_id=MODEL_ID) or 0.0

    metrics = svc.wait_for(f"{len(lines)} events consumed", lambda s: consumed(s) >= len(lines), CONSUME_TIMEOUT_S)
    assert consumed(metrics) == len(lines)
    rc = svc.terminate()
    assert rc == 0, f"exit code {rc} after SIGTERM; log:\n{_tail(svc.log)}"
    values = [m.value() for m in read_topic(kafka_bootstrap, svc.alerts_topic)]
    return svc, [orjson.loads(v) for v in values if v is not None]


# ==================================================================================================
def test_evasion_search_alert_names_the_attacker_and_no_benign_client(
    kafka_bootstrap: str,
    setup: Callable[..., ServiceProcess],
    baseline: tuple[Path, str],
    tmp_path: Path,
) -> None:
    lines, clients = live_stream()
    client_of = {f"{MODEL_ID}-{i}": c for i, c in enumerate(clients)}
    svc, alerts = _run_service(kafka_bootstrap, setup, lines)
    adversarial = [a for a in alerts if a["kind"] in ADVERSARIAL]
    seen = _summary(adversarial)

    # -- the attacker is caught as an evasion search, early in its search
    evasion = [a for a in adversarial if a["kind"] == "evasion_probing" and a["status"] == "open"]
    caught = [a for a in evasion if ATTACKER in named(a)]
    assert caught, f"no evasion_probing alert names {ATTACKER}; adversarial alerts: {seen}; log:\n{_tail(svc.log)}"
    first = caught[0]
    attacker_ids = [f"{MODEL_ID}-{i}" for i, c in enumerate(clients) if c == ATTACKER]
    assert client_of[first["event_id"]] == ATTACKER, f"fired at another client's event {first['event_id']}"
    queries = attacker_ids.index(first["event_id"]) + 1
    assert queries <= MAX_QUERIES_BEFORE_ALERT, f"evasion_probing after {queries} of the attacker's queries"
    assert first["severity"] in ("warning", "critical")

    # -- no adversarial alert names a benign client (the retry client included)
    benign = [a for a in adversarial if named(a) - {ATTACKER}]
    assert not benign, f"adversarial alerts naming benign clients: {_summary(benign)}"

    # -- the contract: statistics and event ids as evidence, never feature vectors; a Kafka source
    assert first["model_id"] == MODEL_ID and first["baseline_version"] == baseline[1]
    assert first["features"] == [] and first["evidence"]["event_id"] == first["event_id"]
    for a in adversarial:
        for value in a["evidence"].values():
            assert not (isinstance(value, list) and value and all(isinstance(v, float) for v in value)), (
                f"a vector in the evidence of {a['kind']}: {a['evidence']}"
            )
    assert first["source"]["topic"] == svc.events_topic

    # -- file replay of the same events: the same adversarial alerts, with the same ids
    replayed = replay_file_alerts(baseline, lines, tmp_path, "issue4")
    from_file = {a["alert_id"] for a in replayed if a["kind"] in ADVERSARIAL}
    assert from_file == {a["alert_id"] for a in adversarial}, (
        f"file replay {_summary([a for a in replayed if a['kind'] in ADVERSARIAL])} vs Kafka {seen}"
    )
