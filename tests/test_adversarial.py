"""AdversarialDetector: evasion search, extraction, floods and campaigns, per client, in bounded memory."""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from detector.adversarial import AdversarialArtifact, AdversarialDetector, SpaceSaving
from detector.decision import AlertDecision
from detector.errors import SchemaMismatchError, SnapshotError
from detector.schema import EventBatch

F, K = 16, 3
SALT = b"test-salt"


def softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


class Model:
    """A fixed linear softmax classifier: the victim of the synthetic attacks."""

    def __init__(self) -> None:
        self.w = np.random.default_rng(1).normal(size=(F, K)) * 2.0

    def proba(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return softmax(x @ self.w)


MODEL = Model()


@pytest.fixture(scope="module")
def artifact() -> AdversarialArtifact:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, F))
    # reference traffic log: 100 clients at one query per ~10 s, for one hour
    cl, ts = [], []
    for c in range(100):
        t = np.cumsum(rng.exponential(10.0, 360))
        cl += [f"r{c}"] * 360
        ts.append((t * 1000).astype(np.int64))
    return AdversarialArtifact.fit(x, MODEL.proba(x), client_id=np.array(cl, dtype=object), ts=np.concatenate(ts))


def batch(x: npt.NDArray[np.float64], clients: Any, ts: Any, first_id: int = 0) -> EventBatch:
    p = MODEL.proba(x)
    n = len(x)
    return EventBatch.from_arrays(
        x,
        client_id=np.asarray(clients, dtype=object),
        ts=np.asarray(ts, dtype=np.int64),
        proba=p,
        prediction_code=p.argmax(1),
        event_id=[f"e{first_id + i}" for i in range(n)],
    )


def boundary_walk(rng: np.random.Generator, n_grad: int = 60) -> npt.NDArray[np.float64]:
    """HopSkipJump-like: a binary search on the line to an adversarial point, then gradient-estimation queries
    around the boundary point."""
    x0 = rng.normal(size=F)
    c0 = MODEL.proba(x0[None])[0].argmax()
    while True:
        x1 = rng.normal(size=F) * 2
        if MODEL.proba(x1[None])[0].argmax() != c0:
            break
    qs = [x0, x1]
    lo, hi = 0.0, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        xm = x0 + mid * (x1 - x0)
        qs.append(xm)
        if MODEL.proba(xm[None])[0].argmax() == c0:
            lo = mid
        else:
            hi = mid
    xb = x0 + hi * (x1 - x0)
    delta = 0.01 * np.linalg.norm(x1 - x0)
    u = rng.normal(size=(n_grad, F))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    qs += list(xb + delta * u)
    return np.array(qs)


def retry_client(rng: np.random.Generator, n_inputs: int = 30) -> npt.NDArray[np.float64]:
    xs = []
    for _ in range(n_inputs):
        x = rng.normal(size=F)
        xs += [x + rng.normal(scale=0.01, size=F) for _ in range(3)]
    return np.array(xs)


def det(artifact: AdversarialArtifact, **kw: Any) -> AdversarialDetector:
    kw.setdefault("max_clients", 1000)
    kw.setdefault("index_bits", 12)
    kw.setdefault("probe_bits", 12)
    kw.setdefault("probe_log_bits", 14)
    return AdversarialDetector(artifact, salt=SALT, **kw)


def mixed_stream(rng: np.random.Generator) -> EventBatch:
    """Benign, retry, walking and flooding clients interleaved by time."""
    parts: list[tuple[Any, Any, Any]] = []
    for u in range(10):
        parts.append((rng.normal(size=(20, F)), [f"user{u}"] * 20, rng.uniform(0, 60_000) + np.arange(20) * 9_000.0))
    r = retry_client(rng, 10)
    parts.append((r, ["retry"] * len(r), np.arange(len(r)) * 2_000.0))
    w = boundary_walk(rng, 40)
    parts.append((w, ["eve"] * len(w), 5_000 + np.arange(len(w)) * 500.0))
    f = rng.normal(size=(400, F))
    parts.append((f, ["flood"] * 400, 10_000 + np.arange(400) * 10.0))
    x = np.concatenate([p[0] for p in parts])
    c = np.concatenate([np.asarray(p[1], dtype=object) for p in parts])
    t = np.concatenate([p[2] for p in parts]).astype(np.int64)
    o = np.argsort(t, kind="stable")
    return batch(x[o], c[o], t[o])


def key(a: AlertDecision) -> tuple[Any, ...]:
    """Everything an alert says, floats included to the last digit (the same events give the same alerts)."""
    ev = {k: tuple(v) if isinstance(v, list) else v for k, v in a.evidence.items()}
    return (a.kind, a.status, a.severity, a.client_id, a.pane, a.incident, a.statistic, a.value, sorted(ev.items()))


def test_artifact_round_trip(artifact: AdversarialArtifact) -> None:
    arrays, meta = artifact.to_arrays()
    import re

    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", k) for k in arrays)
    back = AdversarialArtifact.from_arrays(arrays, meta)
    assert back.tau_near == artifact.tau_near and np.array_equal(back.projection, artifact.projection)
    assert 0 < artifact.tau_near < artifact.tau_close and artifact.rate_max > 0
    assert (back.struct_share, back.struct_coords, back.probe_blocks) == (0.6, 2, 15)  # continuous: the fixed limits
    with pytest.raises(SnapshotError):
        AdversarialArtifact.from_arrays(arrays, {**meta, "format": 99})
    # a baseline built before the structured-step, probe and flip limits were calibrated keeps the fixed ones
    old = {k: v for k, v in meta.items() if k not in ("struct_share", "struct_coords", "probe_blocks", "p_flip")}
    back = AdversarialArtifact.from_arrays(arrays, old)
    assert (back.struct_share, back.struct_coords, back.probe_blocks, back.p_flip) == (0.6, max(2, F // 8), 32, 0.0)


def test_benign_retry_client_does_not_alarm(artifact: AdversarialArtifact) -> None:
    rng = np.random.default_rng(2)
    d = det(artifact)
    x = retry_client(rng, 60)
    out = d.update(batch(x, ["retry"] * len(x), np.arange(len(x)) * 2_000), seq=0)
    assert out == []


def test_boundary_walk_fires_evasion_probing_naming_the_client(artifact: AdversarialArtifact) -> None:
    rng = np.random.default_rng(3)
    d = det(artifact)
    w = boundary_walk(rng)
    out = d.update(batch(w, ["eve"] * len(w), np.arange(len(w)) * 500), seq=100)
    ev = [a for a in out if a.kind == "evasion_probing" and a.status == "open"]
    assert len(ev) == 1 and ev[0].client_id == "eve"
    assert ev[0].event_index < 20  # within the first 20 queries of the search
    assert ev[0].pane == 100 + ev[0].event_index  # row within the batch; pane is the stream position
    assert ev[0].columns == () and ev[0].evidence["event_id"] == f"e{ev[0].event_index}"
    assert all(not isinstance(v, np.ndarray) for v in ev[0].evidence.values())  # statistics, no raw vectors


def test_flood_fires_query_flood(artifact: AdversarialArtifact) -> None:
    rng = np.random.default_rng(4)
    d = det(artifact)
    x = rng.normal(size=(2000, F))
    out = d.update(batch(x, ["flooder"] * 2000, np.arange(2000) * 10), seq=0)  # 100 queries/s
    fl = [a for a in out if a.kind == "query_flood" and a.status == "open"]
    assert len(fl) == 1 and fl[0].client_id == "flooder"
    assert fl[0].evidence["heavy_hitters"][0][0] == "flooder"
    assert d.heavy_hitters_top(1)[0] == ("flooder", 2000, 0)


def test_ignored_clients_are_skipped(artifact: AdversarialArtifact) -> None:
    """An internal batch job at 100 queries/s is no flood when its id is ignored, and no heavy hitter; the same
    queries from another id still are, in the same batch."""
    x = np.random.default_rng(4).normal(size=(4000, F))
    ids = np.array(["batch-job", "flooder"] * 2000, dtype=object)
    d = det(artifact, ignore_clients=["batch-job"])
    out = d.update(batch(x, ids, np.arange(4000) * 5), seq=0)
    assert [a.client_id for a in out if a.kind == "query_flood" and a.status == "open"] == ["flooder"]
    assert [k for k, _, _ in d.heavy_hitters_top(2)] == ["flooder"] and d.n_clients == 1


def test_evicted_client_coming_back_restarts(artifact: AdversarialArtifact) -> None:
    rng = np.random.default_rng(5)
    d = det(artifact, max_clients=4, evict_chunk=1)
    for i, c in enumerate(["a", "b", "c", "d", "e", "f"]):
        d.update(batch(rng.normal(size=(5, F)), [c] * 5, np.full(5, i * 1000)), seq=i * 5)
    assert d.n_clients == 4
    snap = d.snapshot()
    assert "a" not in set(snap["client.id"].tolist())
    d.update(batch(rng.normal(size=(3, F)), ["a"] * 3, np.full(3, 10_000)), seq=100)
    snap = d.snapshot()
    ids = snap["client.id"].tolist()
    assert d.n_clients == 4 and "a" in ids
    assert snap["client.count"][ids.index("a")] == 3  # state restarted
    with pytest.raises(ValueError):  # one batch larger than the table
        det(artifact, max_clients=2).update(batch(rng.normal(size=(3, F)), ["x", "y", "z"], [0, 0, 0]), seq=0)


def test_batch_equals_row_by_row(artifact: AdversarialArtifact) -> None:
    b = mixed_stream(np.random.default_rng(6))
    whole = det(artifact).update(b, seq=0)
    one = det(artifact)
    rows: list[AlertDecision] = []
    for i in range(len(b)):
        rows += one.update(b.take(slice(i, i + 1)), seq=i)
    assert {a.kind for a in whole} >= {"evasion_probing", "query_flood"}
    assert [key(a) for a in whole] == [key(a) for a in rows]
    chunks = det(artifact)
    mid: list[AlertDecision] = []
    for s in range(0, len(b), 37):
        mid += chunks.update(b.take(slice(s, s + 37)), seq=s)
    assert [key(a) for a in whole] == [key(a) for a in mid]


def test_query_features_computed_elsewhere_give_the_same_alerts(artifact: AdversarialArtifact) -> None:
    import pickle

    b = mixed_stream(np.random.default_rng(6))
    b.client_id[::11] = None  # (skipped: the features of the other rows are used)
    whole = det(artifact).update(b, seq=0)
    assert {a.kind for a in whole} >= {"evasion_probing", "query_flood"}
    given = det(artifact)
    featurizer = pickle.loads(pickle.dumps(given.featurizer))  # (a decoding process's copy)
    got: list[AlertDecision] = []
    for s in range(0, len(b), 97):
        part = b.take(slice(s, s + 97))
        got += given.update(part, seq=s, features=featurizer(part))
    assert [key(a) for a in got] == [key(a) for a in whole]
    with pytest.raises(SchemaMismatchError):
        given.update(b.take(slice(0, 97)), seq=len(b), features=featurizer(b.take(slice(0, 5))))


def test_snapshot_restore_continues(artifact: AdversarialArtifact) -> None:
    b = mixed_stream(np.random.default_rng(7))
    n_alerts = 0
    for h in (len(b) // 8, len(b) // 4, len(b) // 2):
        ref = det(artifact)
        ref.update(b.take(slice(0, h)), seq=0)
        expected = ref.update(b.take(slice(h, len(b))), seq=h)
        first = det(artifact)
        first.update(b.take(slice(0, h)), seq=0)
        state = first.snapshot()
        assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
        second = det(artifact)
        second.restore(state)
        got = second.update(b.take(slice(h, len(b))), seq=h)
        assert [key(a) for a in got] == [key(a) for a in expected]
        n_alerts += len(expected)
    assert n_alerts > 0
    with pytest.raises(SnapshotError):
        det(artifact, history=12).restore(state)


def test_memory_is_bounded_per_client(artifact: AdversarialArtifact) -> None:
    d = det(artifact, max_clients=5000)
    # ring and counters, plus the structured-step state: 2 raw queries (float16 values, 16-byte fingerprints, a byte
    # of re-send count)
    assert d.bytes_per_client() <= 1100 + 2 * (2 * F + 16 + 1) + 11
    rng = np.random.default_rng(8)
    for s in range(0, 12_000, 3000):  # more clients than the cap
        ids = [f"c{i}" for i in range(s, s + 3000)]
        d.update(batch(rng.normal(size=(3000, F)), ids, np.full(3000, s)), seq=s)
    assert d.n_clients <= 5000
    index = d._ix.nbytes + d._pt.nbytes + d._plog.nbytes  # the global tables (fixed size)
    assert d._pt.nbytes == 8 * 2**12 * 8 and d._plog.nbytes == 2**14 * 56  # 8 bands of 8-byte slots; the log
    assert (d.memory_bytes() - index) / 5000 <= 1500


def test_pseudonymized_ids_are_stable_and_not_raw(artifact: AdversarialArtifact) -> None:
    rng = np.random.default_rng(9)
    w = boundary_walk(rng)
    names = []
    for _ in range(2):
        d = det(artifact, pseudonymize_key=b"k1")
        out = d.update(batch(w, ["eve"] * len(w), np.arange(len(w)) * 500), seq=0)
        names.append({a.client_id for a in out})
    expected = "p-" + hmac.new(b"k1", b"eve", hashlib.sha256).hexdigest()[:16]
    assert names[0] == names[1] == {expected}
    d = det(artifact, pseudonymize_key=b"k2")
    other = {a.client_id for a in d.update(batch(w, ["eve"] * len(w), np.arange(len(w)) * 500), seq=0)}
    assert other and other != names[0] and "eve" not in other
    assert all(
        "eve" not in a.message for a in d.update(batch(w, ["eve"] * len(w), np.arange(len(w)) * 500), seq=len(w))
    )


def test_split_search_over_20_clients_is_one_campaign(artifact: AdversarialArtifact) -> None:
    rng = np.random.default_rng(10)
    w = boundary_walk(rng, n_grad=200)
    clients = [f"sybil{i % 20}" for i in range(len(w))]
    rng2 = np.random.default_rng(11)
    benign = rng2.normal(size=(200, F))
    x = np.concatenate([w, benign])
    c = clients + [f"user{i % 40}" for i in range(200)]
    t = np.r_[np.arange(len(w)) * 500, rng2.uniform(0, len(w) * 500, 200)].astype(np.int64)
    o = np.argsort(t, kind="stable")
    d = det(artifact)
    out = d.update(batch(x[o], np.asarray(c, dtype=object)[o], t[o]), seq=0)
    camp = [a for a in out if a.client_id is None]
    assert camp and {a.evidence["campaign"] for a in camp} == {camp[0].evidence["campaign"]}
    assert camp[0].status == "open" and {a.incident for a in camp} == {camp[0].incident}
    sybils = {f"sybil{i}" for i in range(20)}
    listed = set(camp[-1].evidence["clients"])
    assert listed <= sybils and len(listed) >= 10  # updates are sent as the campaign doubles
    state = d.snapshot()
    assert state["campaign.id"].tolist() == [int(camp[0].evidence["campaign"][1:])]
    assert set(state["campaign.members"].tolist()) == sybils


@pytest.mark.parametrize(("gain", "offset"), [(1.0, 1.5), (0.5, 0.0), (0.3, 1.0)])
def test_population_shift_is_left_to_drift(artifact: AdversarialArtifact, gain: float, offset: float) -> None:
    """Every client's inputs move (a recalibrated sensor: gain and offset) and the anomaly flags turn on for
    everyone: no client is singled out, neither as a search nor as an ood extraction (that is drift)."""
    rng = np.random.default_rng(12)
    parts: list[tuple[Any, Any, Any]] = []
    for u in range(200):
        parts.append((rng.normal(size=(40, F)), [f"user{u}"] * 40, rng.uniform(0, 300_000) + np.arange(40) * 9_000.0))
    for u in range(20):
        r = retry_client(rng, 15)
        parts.append((r, [f"retry{u}"] * len(r), rng.uniform(0, 300_000) + np.arange(len(r)) * 2_000.0))
    x = np.concatenate([p[0] for p in parts])
    c = np.concatenate([np.asarray(p[1], dtype=object) for p in parts])
    t = np.concatenate([p[2] for p in parts]).astype(np.int64)
    o = np.argsort(t, kind="stable")
    x, c, t = x[o], c[o], t[o]
    shifted = t >= 200_000
    x[shifted] = x[shifted] * gain + offset
    b = batch(x, c, t)
    d = det(artifact, max_clients=5000)
    out: list[AlertDecision] = []
    for s in range(0, len(b), 500):
        out += d.update(b.take(slice(s, s + 500)), seq=s, ood=shifted[s : s + 500])
    assert [a for a in out if a.kind in ("evasion_probing", "model_extraction")] == []
    # the same shift confined to one client is still that client's anomaly
    d = det(artifact, max_clients=5000)
    one = c == "user0"
    x2 = np.where(one[:, None], x, np.where(shifted[:, None], (x - offset) / gain, x))
    out = d.update(batch(x2, c, t), seq=0, ood=shifted & one)
    assert {a.client_id for a in out if a.severity != "info"} == {"user0"}


def test_heavy_hitters_counted_on_slots_match_plain_space_saving(artifact: AdversarialArtifact) -> None:
    """The detector counts heavy hitters on client slots and names only the keys that can enter the summary;
    the summary is the one plain Space-Saving keeps over the same keys."""
    rng = np.random.default_rng(13)
    d = det(artifact, heavy_hitters=8)
    plain = SpaceSaving(8)
    for s in range(0, 3000, 500):
        ids = np.array([f"c{i}" for i in rng.zipf(1.5, 500) % 200], dtype=object)
        d.update(batch(rng.normal(size=(500, F)), ids, np.full(500, s * 10)), seq=s)
        plain.add(ids)
    assert d.heavy_hitters_top(8) == plain.top(8)


def test_popular_input_does_not_pull_a_heavy_client_into_a_campaign(artifact: AdversarialArtifact) -> None:
    """A split search probes around a boundary point that a heavy benign client also sends (with tiny noise):
    the client collects boundary hits, but they are a small share of its queries, so the campaign lists the
    sybils only."""
    rng = np.random.default_rng(14)
    w = boundary_walk(rng, n_grad=200)
    xb = w[-200:].mean(axis=0)
    near_xb = xb + rng.normal(scale=0.0025 * np.linalg.norm(w[1] - w[0]), size=(60, F))
    heavy = np.concatenate([rng.normal(size=(300, F)), near_xb])
    x = np.concatenate([w, heavy])
    c = [f"sybil{i % 20}" for i in range(len(w))] + ["heavy"] * len(heavy)
    t = np.r_[np.arange(len(w)) * 500, np.sort(rng.uniform(0, len(w) * 500, len(heavy)))].astype(np.int64)
    o = np.argsort(t, kind="stable")
    d = det(artifact)
    out = d.update(batch(x[o], np.asarray(c, dtype=object)[o], t[o]), seq=0)
    assert [a for a in out if a.client_id is None]
    state = d.snapshot()
    heavy_row = state["client.id"].tolist().index("heavy")
    assert state["client.camp_hits"][heavy_row] >= 2  # it did collect boundary hits
    assert "heavy" not in set(state["campaign.members"].tolist())


def test_popular_borderline_inputs_with_noise_are_no_campaign(artifact: AdversarialArtifact) -> None:
    """Many clients each send, among ordinary queries, a noisy copy of one of a few popular borderline inputs (a
    photo of one ambiguous object): cross-client near-duplicates whose class flips, one per client. No campaign."""
    rng = np.random.default_rng(15)
    border: list[npt.NDArray[np.float64]] = []
    while len(border) < 5:
        x = rng.normal(size=F)
        p = MODEL.proba(x[None])[0]
        top = np.sort(p)[-2:]
        if top[1] - top[0] < 0.05:
            border.append(x)
    xs, cs = [], []
    for u in range(400):
        xs += [border[int(rng.integers(0, 5))] + rng.normal(scale=0.02, size=F), *rng.normal(size=(2, F))]
        cs += [f"user{u}"] * 3
    o = rng.permutation(len(xs))
    d = det(artifact, max_clients=5000)
    out = d.update(batch(np.array(xs)[o], np.asarray(cs, dtype=object)[o], np.arange(len(xs)) * 100), seq=0)
    assert [a for a in out if a.client_id is None] == []


@pytest.mark.parametrize("noise", [0.02, 0.3])
def test_popular_ood_inputs_with_noise_are_no_warning_campaign(artifact: AdversarialArtifact, noise: float) -> None:
    """Many clients each send, among ordinary queries, a noisy copy of one of a few popular out-of-distribution
    inputs (a placeholder image): new ood inputs near other clients' ones, for many clients their first query. With
    little noise that is what a search split over new accounts looks like before it moves: at most an ``info``
    campaign. With more (copies the index still matches, but further apart than the reference's near-duplicates)
    they are no walk steps at all. (At noise 0.2 a few of the 3,000 pairs per input fall within the near-duplicate
    radius by chance, so whether the index happens to match one of them turns on its cell offsets.)"""
    rng = np.random.default_rng(16)
    blank = [np.full(F, 6.0) * rng.choice([-1.0, 1.0], size=F) for _ in range(5)]
    xs, cs, ood = [], [], []
    for u in range(400):
        xs += [blank[int(rng.integers(0, 5))] + rng.normal(scale=noise, size=F), *rng.normal(size=(2, F))]
        cs += [f"user{u}"] * 3
        ood += [True, False, False]
    o = rng.permutation(len(xs))
    d = det(artifact, max_clients=5000)
    b = batch(np.array(xs)[o], np.asarray(cs, dtype=object)[o], np.arange(len(xs)) * 100)
    camp = [a for a in d.update(b, seq=0, ood=np.asarray(ood)[o]) if a.client_id is None]
    if noise > 0.1:
        assert camp == []
    else:
        assert camp and {a.severity for a in camp} == {"info"}  # (the walk links are seen)
        assert not any(a.evidence["moving"] for a in camp)


def ood_walk_stream(
    rng: np.random.Generator, moving: bool, accounts: int = 20, n: int = 80, noise: float | None = None
) -> tuple[EventBatch, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """A search split round-robin over ``accounts`` whose steps are all out of distribution, among benign clients:
    moving on (steps along a direction, like HopSkipJump's or Sign-OPT's), or hovering (noise around one point, like
    Boundary's first hundred steps); ``noise`` (per feature) is 0.005 and 0.02 unless given. Returns the batch, the
    ood flags and which events are the search's."""
    x0 = np.full(F, 5.0) * rng.choice([-1.0, 1.0], size=F)
    u = rng.normal(size=F)
    u /= np.linalg.norm(u)
    drift = np.arange(n)[:, None] * 0.05 * u if moving else 0.0
    if noise is None:
        noise = 0.005 if moving else 0.02
    steps = x0 + drift + rng.normal(scale=noise, size=(n, F))
    benign = rng.normal(size=(300, F))
    x = np.concatenate([steps, benign])
    c = np.asarray([f"sybil{i % accounts}" for i in range(n)] + [f"user{i % 60}" for i in range(300)], dtype=object)
    t = np.r_[np.arange(n) * 500, rng.uniform(0, n * 500, 300)].astype(np.int64)
    o = np.argsort(t, kind="stable")
    attack = np.r_[np.ones(n, dtype=bool), np.zeros(300, dtype=bool)][o]
    return batch(x[o], c[o], t[o]), attack.copy(), attack


@pytest.mark.parametrize("moving", [True, False])
def test_split_ood_walk_is_a_campaign(artifact: AdversarialArtifact, moving: bool) -> None:
    """New out-of-distribution inputs near each other, one account after another. Moving on, a search: a
    ``warning`` campaign within a dozen steps. Hovering, it looks like a popular ood input resent with noise by new
    accounts: ``info`` as early, ``warning`` once the accounts' second steps show they send nothing else. The
    records do not depend on the batching."""
    b, ood, attack = ood_walk_stream(np.random.default_rng(60), moving)
    out = det(artifact).update(b, seq=0, ood=ood)
    camp = [a for a in out if a.client_id is None and a.kind == "evasion_probing"]
    assert camp and camp[0].status == "open" and {a.evidence["campaign"] for a in camp} == {"c0"}
    assert set().union(*(a.evidence["clients"] for a in camp)) <= {f"sybil{i}" for i in range(20)}
    steps = np.cumsum(attack)  # the search's steps up to each row

    def at(a: AlertDecision) -> int:
        return int(steps[a.event_index])

    warn = [a for a in camp if a.severity != "info"]
    if moving:
        assert warn and at(warn[0]) <= 12, [(a.severity, at(a)) for a in camp]
        assert warn[0].evidence["moving"]
    else:
        assert camp[0].severity == "info" and at(camp[0]) <= 10, [(a.severity, at(a)) for a in camp]
        assert warn and warn[0].status == "update" and 20 < at(warn[0]) <= 25, [(a.severity, at(a)) for a in camp]
        assert not any(a.evidence["moving"] for a in camp)
    for seed in (1, 2):
        d = det(artifact)
        got: list[AlertDecision] = []
        s = 0
        for e in random_bounds(np.random.default_rng(seed), len(b), 40):
            got += [a for a in d.update(b.take(slice(s, e)), seq=s, ood=ood[s:e]) if a.kind == "evasion_probing"]
            s = e
        want = [a for a in out if a.kind == "evasion_probing"]
        assert [(*key(a)[:3], a.pane, a.evidence.get("clients")) for a in got] == [
            (*key(a)[:3], a.pane, a.evidence.get("clients")) for a in want
        ]


def test_split_line_search_is_a_campaign_before_campaign_hits(artifact: AdversarialArtifact) -> None:
    """A line search split over accounts (steps along one direction: HopSkipJump's and Sign-OPT's binary searches)
    is reported as a search once four walk steps line up, before the ``campaign_hits`` links other campaigns wait
    for. The noisy steps of the moving walk above (the same direction, noise a tenth of the step) do not line up."""
    d = det(artifact)
    b, ood, attack = ood_walk_stream(np.random.default_rng(60), moving=True, noise=1e-4)
    camp = [a for a in d.update(b, seq=0, ood=ood) if a.client_id is None and a.kind == "evasion_probing"]
    assert camp and camp[0].status == "open" and camp[0].severity == "warning"
    assert camp[0].evidence["line"] and camp[0].evidence["walk_steps"] < d.campaign_hits
    assert int(np.cumsum(attack)[camp[0].event_index]) <= 6
    b, ood, _ = ood_walk_stream(np.random.default_rng(60), moving=True)
    assert not any(a.evidence.get("line") for a in det(artifact).update(b, seq=0, ood=ood) if a.client_id is None)


def test_synthetic_extraction_diluted_with_ordinary_queries_is_caught(artifact: AdversarialArtifact) -> None:
    """Synthetic extraction (a fresh input, then a point at a short step from it: Jacobian-style augmentation) hidden
    among ordinary queries, three per pair: one query in five is close to an earlier one, far above the reference
    rate. Caught by the close-query test; the ordinary clients around it are not."""
    rng = np.random.default_rng(70)
    ref = rng.normal(size=(1, F))
    u = rng.normal(size=(1, F))
    unit = float(np.linalg.norm(artifact.embed(ref + u) - artifact.embed(ref)))
    step = 0.5 * (artifact.tau_near + artifact.tau_close) / unit  # close, but no near-duplicate
    xs: list[npt.NDArray[np.float64]] = []
    for _ in range(40):
        seed = rng.normal(size=F)
        d = rng.normal(size=F)
        d *= float(np.linalg.norm(u)) / float(np.linalg.norm(d))
        xs += [seed, seed + step * d, *rng.normal(size=(3, F))]
    x = np.array(xs)
    users = rng.normal(size=(600, F))
    allx = np.concatenate([x, users])
    c = np.asarray(["jack"] * len(x) + [f"user{i % 30}" for i in range(600)], dtype=object)
    t = np.r_[np.arange(len(x)) * 2_000, rng.uniform(0, len(x) * 2_000, 600)].astype(np.int64)
    o = np.argsort(t, kind="stable")
    out = det(artifact).update(batch(allx[o], c[o], t[o]), seq=0)
    got = [a for a in out if a.kind == "model_extraction" and a.severity != "info"]
    assert got and {a.client_id for a in got} == {"jack"}, [(a.client_id, a.statistic) for a in got]
    assert got[0].statistic == "close_query_rate"
    jack = np.flatnonzero(c[o] == "jack")
    assert int((jack <= got[0].event_index).sum()) <= 60


def test_constructor_validates(artifact: AdversarialArtifact) -> None:
    with pytest.raises(ValueError):
        AdversarialDetector(artifact, salt=b"")
    with pytest.raises(ValueError):
        AdversarialDetector(artifact, salt=SALT, max_clients=0)
    with pytest.raises(ValueError):
        AdversarialDetector(artifact, salt=SALT, alpha=2.0)
    with pytest.raises(ValueError):
        AdversarialDetector(artifact, salt=SALT, ood_window=8)


def test_space_saving_keeps_heavy_keys() -> None:
    s = SpaceSaving(3)
    rng = np.random.default_rng(0)
    keys = np.array(["h"] * 300 + [f"k{i}" for i in rng.integers(0, 50, 700)], dtype=object)
    for part in np.array_split(rng.permutation(keys), 7):
        s.add(part)
    top = s.top(1)[0]
    assert top[0] == "h" and top[1] - top[2] <= 300 <= top[1]


def campaign_stream(rng: np.random.Generator) -> EventBatch:
    """Two split searches (20 and 8 sybils) with benign users and a heavy client that resends, with tiny noise, a
    point the first search probes around (its count grows during the batch: the campaign share rule must read it
    at the hit's row)."""
    w = boundary_walk(rng, n_grad=200)
    w2 = boundary_walk(rng, n_grad=120)
    xb = w[-200:].mean(axis=0)
    heavy = np.concatenate(
        [rng.normal(size=(150, F)), xb + rng.normal(scale=0.0025 * np.linalg.norm(w[1] - w[0]), size=(40, F))]
    )
    benign = rng.normal(size=(300, F))
    x = np.concatenate([w, w2, heavy, benign])
    c = (
        [f"sybil{i % 20}" for i in range(len(w))]
        + [f"bot{i % 8}" for i in range(len(w2))]
        + ["heavy"] * len(heavy)
        + [f"user{i % 40}" for i in range(len(benign))]
    )
    t = np.r_[
        np.arange(len(w)) * 500,
        20_000 + np.arange(len(w2)) * 700,
        np.sort(rng.uniform(0, len(w) * 500, len(heavy))),
        rng.uniform(0, len(w) * 500, len(benign)),
    ]
    o = np.argsort(t.astype(np.int64), kind="stable")
    return batch(x[o], np.asarray(c, dtype=object)[o], t.astype(np.int64)[o])


def feed(d: AdversarialDetector, b: EventBatch, bounds: list[int], start: int = 0) -> list[tuple[Any, ...]]:
    """Alerts of ``b[start:]`` fed in chunks ending at ``bounds``, keyed on stream position (``pane``), with the
    row mapping checked."""
    out: list[tuple[Any, ...]] = []
    s = start
    for e in bounds:
        for a in d.update(b.take(slice(s, e)), seq=s):
            assert a.pane == s + a.event_index and a.evidence["event_id"] == f"e{a.pane}"
            out.append((*key(a), a.columns, tuple(a.evidence.get("clients", ()))))
        s = e
    return out


def evasion_feeder(b: EventBatch) -> Callable[..., list[tuple[Any, ...]]]:
    """``fed(d, bounds, start=0)``: the ``evasion_probing`` alerts of :func:`feed` over ``b`` (query floods of heavy
    clients carry heavy-hitter lists, sketches merged per batch, which batchings may tell apart)."""

    def fed(d: AdversarialDetector, bounds: list[int], start: int = 0) -> list[tuple[Any, ...]]:
        return [a for a in feed(d, b, bounds, start) if a[0] == "evasion_probing"]

    return fed


def random_bounds(rng: np.random.Generator, n: int, most: int) -> list[int]:
    """Ends of random chunks of 1..most-1 events covering ``n`` events."""
    cuts = np.cumsum(rng.integers(1, most, size=n))
    return [*cuts[cuts < n].tolist(), n]


def fed_across_restore(
    artifact: AdversarialArtifact, fed: Callable[..., list[tuple[Any, ...]]], n: int, h: int, chunk: int
) -> tuple[list[tuple[Any, ...]], AdversarialDetector]:
    """Alerts of events ``0..h`` fed in chunks of ``chunk``, then the rest by a detector restored from the
    snapshot at ``h``; and that second detector. ``fed(d, bounds, start=0)`` feeds one stream."""
    first = det(artifact)
    got = fed(first, [*range(chunk, h, chunk), h])
    second = det(artifact)
    second.restore(first.snapshot())
    return got + fed(second, [n], start=h), second


def test_campaign_decisions_do_not_depend_on_batch_boundaries(artifact: AdversarialArtifact) -> None:
    """The same events give the same alerts (campaigns included) in one batch, row by row, in random chunks and
    across a snapshot/restore: per-client state is read as it was at each event, never after the batch."""
    b = campaign_stream(np.random.default_rng(16))
    n = len(b)
    whole = feed(det(artifact), b, [n])
    assert sum(1 for a in whole if a[3] is None) >= 2  # campaign alerts, the thing under test
    assert feed(det(artifact), b, list(range(1, n + 1))) == whole
    rng = np.random.default_rng(17)
    for _ in range(3):
        assert feed(det(artifact), b, random_bounds(rng, n, 120)) == whole

    def fed(d: AdversarialDetector, bounds: list[int], start: int = 0) -> list[tuple[Any, ...]]:
        return feed(d, b, bounds, start)

    for h in (n // 3, 2 * n // 3):
        assert fed_across_restore(artifact, fed, n, h, 100)[0] == whole


@pytest.mark.parametrize("ood", [False, True])
def test_resending_one_input_is_no_search(artifact: AdversarialArtifact, ood: bool) -> None:
    """A client retrying one input 30 times with small noise: its queries are a tight cluster (and near-duplicates
    of an ood input, when it is one), but no class flips, no small margin and no steady progress, so no search."""
    rng = np.random.default_rng(18)
    for _ in range(5):
        x0 = rng.normal(size=F) * (4.0 if ood else 1.0)
        x = x0 + rng.normal(scale=0.01, size=(30, F))
        d = det(artifact)
        out = d.update(batch(x, ["retry"] * 30, np.arange(30) * 2_000), seq=0, ood=np.full(30, ood))
        assert [a for a in out if a.kind == "evasion_probing"] == [], out
    # the same client then walking along the boundary is still caught (the retries do not mask a search)
    w = boundary_walk(rng)
    out = d.update(batch(w, ["retry"] * len(w), 60_000 + np.arange(len(w)) * 500), seq=30)
    assert [a.client_id for a in out if a.kind == "evasion_probing" and a.status == "open"] == ["retry"]


def zoo_like(rng: np.random.Generator, n: int = 40, h: float = 1e-4) -> npt.NDArray[np.float64]:
    """ZOO-like coordinate search: from an input, pairs of queries ``x +- h e_i`` (a finite difference on one
    coordinate), then a small step of ``x`` along that coordinate; every query differs from a recent one in one or
    two coordinates, by ``h``, far below what a float16 value shows."""
    x = rng.normal(size=F)
    qs = [x.copy()]
    while len(qs) < n:
        i = int(rng.integers(0, F))
        e = np.zeros(F)
        e[i] = h
        qs += [x + e, x - e]
        x[i] -= 1e-3 * rng.choice([-1.0, 1.0])
    return np.array(qs[:n])


def square_like(rng: np.random.Generator, n: int = 40, eps: float = 0.3) -> npt.NDArray[np.float64]:
    """Square-attack-like: the input sent 3 times, then each candidate (a patch of 4 coordinates moved by +-eps from
    the current best) followed by 2 exact re-queries of the current best."""
    best = rng.normal(size=F)
    qs = [best.copy() for _ in range(3)]
    while len(qs) < n:
        cand = best.copy()
        at = int(rng.integers(0, F - 4))
        cand[at : at + 4] += eps * rng.choice([-1.0, 1.0])
        if rng.random() < 0.3:  # accepted
            best = cand
        qs += [cand, best.copy(), best.copy()]
    return np.array(qs[:n])


@pytest.mark.parametrize("attack", [zoo_like, square_like])
def test_coordinate_searches_are_caught_within_10_queries(artifact: AdversarialArtifact, attack: Any) -> None:
    """ZOO- and Square-like searches show no class flips, no small margins and no line steps (in float16, ZOO's
    steps are invisible), but their queries change a few coordinates, or many by one amount, of a recent query:
    structured steps."""
    rng = np.random.default_rng(24)
    for _ in range(5):
        x = attack(rng)
        d = det(artifact)
        out = d.update(batch(x, ["eve"] * len(x), np.arange(len(x)) * 500), seq=0)
        ev = [a for a in out if a.kind == "evasion_probing" and a.status == "open"]
        assert len(ev) == 1 and ev[0].client_id == "eve"
        assert ev[0].event_index < 10, ev[0].event_index
        # (one step can be enough: from an input sent three times, and flipping its class)
        assert ev[0].evidence["structured_steps"] >= 1
    # mixed 1:1 with ordinary queries on the same account: still caught (each query is compared with two before it)
    x = attack(rng)
    mixed = np.empty((2 * len(x), F))
    mixed[0::2], mixed[1::2] = x, rng.normal(size=(len(x), F))
    out = det(artifact).update(batch(mixed, ["eve"] * len(mixed), np.arange(len(mixed)) * 250), seq=0)
    ev = [a for a in out if a.kind == "evasion_probing" and a.status == "open"]
    assert ev and ev[0].event_index < 24


def short_square(rng: np.random.Generator, flip: bool, eps: float = 0.3) -> npt.NDArray[np.float64]:
    """A Square run that succeeds at once (ART's, on an easy input): the input sent three times, then the input plus
    vertical stripes of +-eps, sent twice; a quarter of the coordinates stay as they were (in a bounded input domain,
    the clip leaves those at a bound). With ``flip`` the stripes change the predicted class (their signs follow the
    gradient towards another class, scaled up until they do)."""
    while True:
        x0 = rng.normal(size=F)
        c0 = MODEL.proba(x0[None])[0].argmax()
        sign = rng.choice([-1.0, 1.0], size=F)
        if flip:
            sign = np.sign(MODEL.w[:, (c0 + 1) % K] - MODEL.w[:, c0])
        sign[rng.choice(F, F // 4, replace=False)] = 0.0
        e = eps
        while flip and MODEL.proba((x0 + e * sign)[None])[0].argmax() == c0 and e < 8:
            e *= 1.5
        adv = x0 + e * sign
        if (MODEL.proba(adv[None])[0].argmax() != c0) == flip:
            return np.array([x0, x0, x0, adv, adv])


@pytest.mark.parametrize("flip", [False, True])
def test_square_succeeding_in_five_queries_is_caught(artifact: AdversarialArtifact, flip: bool) -> None:
    """Square's first step after sending its input three times: the re-sends were the search querying its start
    point (they count once the step shows it), and a step changing the class is what a search looks for. Caught by
    its last query, or its fourth when the class changes (then also mixed 1:1 with ordinary queries on the account);
    a client re-sending inputs exactly (an HTTP retry), or the same with small noise, is not."""
    rng = np.random.default_rng(31)
    for _ in range(5):
        x = short_square(rng, flip)
        mixed = np.empty((2 * len(x), F))
        mixed[0::2], mixed[1::2] = x, rng.normal(size=(len(x), F))
        for q, step in ((x, 1), (mixed, 2))[: 2 if flip else 1]:
            out = det(artifact).update(batch(q, ["eve"] * len(q), np.arange(len(q)) * 500), seq=0)
            ev = [a for a in out if a.kind == "evasion_probing" and a.status == "open"]
            assert len(ev) == 1, out
            assert ev[0].event_index == step * (3 if flip else 4), ev[0].event_index
    d = det(artifact)
    resend = np.repeat(rng.normal(size=(20, F)), 3, axis=0)
    noisy = resend + rng.normal(scale=0.01, size=resend.shape)
    for name, q in (("resend", resend), ("noisy", noisy)):
        out = d.update(batch(q, [name] * len(q), np.arange(len(q)) * 1_000), seq=0)
        assert [a for a in out if a.kind == "evasion_probing"] == []


def benign_clients(rng: np.random.Generator) -> EventBatch:
    """Benign clients of every kind: ordinary, noisy retries, one class only (from a small pool: exact repeats
    too), heavy (a larger pool, many exact repeats) and clients that resend the same bytes (an HTTP retry)."""
    pool = rng.normal(size=(400, F))
    cls = MODEL.proba(pool).argmax(1)
    parts: list[tuple[Any, Any, Any]] = []
    for u in range(40):
        parts.append((rng.normal(size=(40, F)), [f"user{u}"] * 40, rng.uniform(0, 60_000) + np.arange(40) * 9_000.0))
    for u in range(10):
        r = retry_client(rng, 15)
        parts.append((r, [f"retry{u}"] * len(r), rng.uniform(0, 60_000) + np.arange(len(r)) * 2_000.0))
    for u in range(6):
        one = pool[cls == u % K][:12]
        x = one[rng.integers(0, len(one), 60)]
        parts.append((x, [f"oneclass{u}"] * 60, rng.uniform(0, 60_000) + np.arange(60) * 5_000.0))
    for u in range(2):
        x = pool[rng.integers(0, 60, 600)]
        parts.append((x, [f"heavy{u}"] * 600, rng.uniform(0, 60_000) + np.arange(600) * 900.0))
    for u in range(5):
        x = np.repeat(rng.normal(size=(15, F)), rng.integers(1, 5, 15), axis=0)
        parts.append((x, [f"resend{u}"] * len(x), rng.uniform(0, 60_000) + np.arange(len(x)) * 1_000.0))
    x = np.concatenate([p[0] for p in parts])
    c = np.concatenate([np.asarray(p[1], dtype=object) for p in parts])
    t = np.concatenate([p[2] for p in parts]).astype(np.int64)
    o = np.argsort(t, kind="stable")
    return batch(x[o], c[o], t[o])


def test_benign_clients_take_no_structured_steps_for_a_search(artifact: AdversarialArtifact) -> None:
    b = benign_clients(np.random.default_rng(25))
    d = det(artifact)
    out = d.update(b, seq=0)
    assert [a for a in out if a.kind == "evasion_probing"] == []
    state = d.snapshot()
    assert state["client.ev_s"].max() < 2  # far from the threshold (4)
    # a client editing one input a coordinate at a time, with pauses, stays below it too: a few structured steps
    x0 = np.random.default_rng(26).normal(size=F)
    edits = []
    for i in range(3):
        x0 = x0.copy()
        x0[i] += 0.5
        edits += [x0, *np.random.default_rng(i).normal(size=(4, F))]
    out = d.update(batch(np.array(edits), ["editor"] * len(edits), 10**6 + np.arange(len(edits)) * 1000), seq=len(b))
    assert [a for a in out if a.kind == "evasion_probing"] == []


def test_structured_steps_do_not_depend_on_batch_boundaries(artifact: AdversarialArtifact) -> None:
    """Coordinate searches among benign clients: the same alerts and the same state in one batch, row by row, in
    random chunks and across a snapshot/restore (the raw rings and the structured-step CUSUM included)."""
    rng = np.random.default_rng(27)
    b0 = benign_clients(rng)
    z, s = zoo_like(rng, 60), square_like(rng, 60)
    x = np.concatenate([b0.numeric, z, s])
    c = np.concatenate([b0.client_id, np.full(len(z), "zoo", dtype=object), np.full(len(s), "square", dtype=object)])
    t = np.r_[b0.ts, 5_000 + np.arange(len(z)) * 3_000, 7_000 + np.arange(len(s)) * 3_000].astype(np.int64)
    o = np.argsort(t, kind="stable")
    b = batch(x[o], c[o], t[o])
    n = len(b)

    feed_ev = evasion_feeder(b)
    d = det(artifact)
    whole = feed_ev(d, [n])
    ref = d.snapshot()
    assert {a[3] for a in whole if a[0] == "evasion_probing" and a[1] == "open"} == {"zoo", "square"}
    runs = [list(range(1, n + 1))]
    for _ in range(2):
        runs.append(random_bounds(rng, n, 200))
    for bounds in runs:
        d = det(artifact)
        assert feed_ev(d, bounds) == whole
        state = d.snapshot()
        assert all(np.array_equal(v, ref[k]) for k, v in state.items() if k.startswith("client."))
    assert ref["client.raw_rep"].max() >= 2  # chains of exact re-sends (Square's, the resend clients') are counted
    for h in (n // 3, 2 * n // 3):
        assert fed_across_restore(artifact, feed_ev, n, h, 150)[0] == whole


def test_structured_steps_with_many_features(artifact: AdversarialArtifact) -> None:
    """Beyond 64 features the raw values of a salted subset of 64 are kept (the fingerprint still covers all):
    a one-coordinate step and a 20-coordinate patch are caught, the same in one batch or row by row."""
    wide = 200
    rng = np.random.default_rng(29)
    w = rng.normal(size=(wide, K))
    ref = rng.random((600, wide))
    art = AdversarialArtifact.fit(ref, softmax(ref @ w))
    x0 = rng.random(wide)
    zoo = [x0.copy()]
    while len(zoo) < 30:
        e = np.zeros(wide)
        e[rng.integers(0, wide)] = 1e-4
        zoo += [x0 + e, x0 - e]
        x0 = x0 + 10 * e
    best = rng.random(wide)
    sq = [best] * 3
    while len(sq) < 30:
        cand = best.copy()
        at = int(rng.integers(0, wide - 20))
        cand[at : at + 20] = np.clip(cand[at : at + 20] + 0.1 * rng.choice([-1.0, 1.0]), 0, 1)
        sq += [cand, best, best]
    x = np.concatenate([zoo, sq, rng.random((200, wide))])
    c = np.asarray(["zoo"] * 30 + ["square"] * 30 + [f"u{i % 20}" for i in range(200)], dtype=object)
    t = np.r_[np.arange(60) % 30 * 1000 + np.arange(60) // 30, rng.integers(0, 30_000, 200)]
    o = np.argsort(t, kind="stable")
    p = softmax(x[o] @ w)
    b = EventBatch.from_arrays(x[o], client_id=c[o], ts=t[o], proba=p, prediction_code=p.argmax(1))

    def run(bounds: list[int]) -> list[tuple[Any, ...]]:
        d = AdversarialDetector(art, max_clients=100, salt=SALT)
        out, s0 = [], 0
        for e in bounds:
            out += [(a.kind, a.status, a.client_id, a.pane) for a in d.update(b.take(slice(s0, e)), seq=s0)]
            s0 = e
        return out

    whole = run([len(b)])
    assert {a[2] for a in whole if a[:2] == ("evasion_probing", "open")} == {"zoo", "square"}
    assert run(list(range(1, len(b) + 1))) == whole


def test_snapshot_of_an_older_layout_is_refused(artifact: AdversarialArtifact) -> None:
    """A snapshot without the structured-step state (written before it existed) raises SnapshotError: the pipeline
    then starts the detector afresh instead of resuming clients with half their state."""
    d = det(artifact)
    d.update(batch(np.random.default_rng(28).normal(size=(5, F)), ["a"] * 5, np.arange(5)), seq=0)
    state = d.snapshot()
    old = {k: v for k, v in state.items() if k != "meta.state" and not k.startswith(("client.raw", "client.ev_s"))}
    with pytest.raises(SnapshotError):
        det(artifact).restore(old)
    # layout 2: written before the probe table and the clients' probe counts existed
    with pytest.raises(SnapshotError):
        det(artifact).restore({**state, "meta.state": np.asarray(2, dtype=np.int64)})
    det(artifact).restore(state)


def test_decayed_rate_is_bit_identical_across_batchings(artifact: AdversarialArtifact) -> None:
    """Bursts separated by quiet hours (so one batch spans many decay times, the fallback path too): the decayed
    rate, its state and the flood alerts are bit-identical in one batch, row by row and in chunks."""
    rng = np.random.default_rng(19)
    t = np.concatenate([h * 36_000_000 + np.sort(rng.integers(0, 20_000, 300)) for h in range(4)])  # 10 h apart
    c = np.where(rng.random(len(t)) < 0.8, "burst", "calm").astype(object)
    b = batch(rng.normal(size=(len(t), F)), c, t)
    n = len(b)
    runs = []
    for bounds in ([n], list(range(1, n + 1)), [*range(97, n, 97), n]):
        d = det(artifact)
        runs.append((feed(d, b, bounds), d.snapshot()))
    assert any(a[0] == "query_flood" and a[1] == "open" for a in runs[0][0])
    for out, state in runs[1:]:
        assert out == runs[0][0]  # the alerts, evidence.rate_per_s included
        assert all(np.array_equal(v, runs[0][1][k]) for k, v in state.items() if k.startswith("client."))


# -- vectorized helpers against their plain definitions ----------------------------------------------------------


def test_stable_order_equals_stable_argsort() -> None:
    from detector.adversarial import _stable_order

    rng = np.random.default_rng(21)
    for n, hi in ((0, 1), (1, 5), (1000, 7), (5000, 1 << 20)):
        a = rng.integers(0, hi, size=n).astype(np.int64)
        o, s = _stable_order(a)
        assert np.array_equal(o, np.argsort(a, kind="stable"))
        assert np.array_equal(s, a[np.argsort(a, kind="stable")])


def test_row_take_and_put_equal_fancy_indexing() -> None:
    from detector.adversarial import _put_rows, _take_rows

    rng = np.random.default_rng(22)
    a = rng.normal(size=(50, 4, 3)).astype(np.float16)
    for idx in (np.zeros(0, dtype=np.int64), rng.permutation(50)[:17]):
        assert np.array_equal(_take_rows(a, idx), a[idx])
        v = rng.normal(size=(len(idx), 4, 3))
        b, c = a.copy(), a.copy()
        _put_rows(b, idx, v)
        c[idx] = v
        assert np.array_equal(b, c)
    with pytest.raises(ValueError):
        _take_rows(a[:, ::2], np.zeros(1, dtype=np.int64))


def split_coordinate_stream(
    rng: np.random.Generator, attack: Any, accounts: int, n: int = 60
) -> tuple[EventBatch, set[str], str]:
    """A coordinate-wise search (``attack``) split round-robin over ``accounts`` ids, among benign clients of every
    kind and a benign client that sends, among its ordinary queries, the very input the search starts from (and,
    later, a step of it): (batch, the search's accounts, the benign client's id)."""
    b0 = benign_clients(rng)
    q = attack(rng, n)
    sybils = [f"sy{i % accounts}" for i in range(len(q))]
    own = np.concatenate([rng.normal(size=(8, F)), q[:1], rng.normal(size=(6, F)), q[5:6], rng.normal(size=(5, F))])
    x = np.concatenate([b0.numeric, q, own])
    c = np.concatenate([b0.client_id, np.asarray(sybils, dtype=object), np.full(len(own), "origin", dtype=object)])
    t0 = 20_000
    t = np.r_[b0.ts, t0 + np.arange(len(q)) * 500, t0 - 8 * 1_000 + np.arange(len(own)) * 1_000].astype(np.int64)
    o = np.argsort(t, kind="stable")
    return batch(x[o], c[o], t[o]), set(sybils), "origin"


@pytest.mark.parametrize("accounts", [6, 30, 60])
@pytest.mark.parametrize("attack", [zoo_like, square_like])
def test_split_coordinate_search_is_one_campaign(artifact: AdversarialArtifact, attack: Any, accounts: int) -> None:
    """ZOO- and Square-like searches split round-robin over 6, 30 and 60 accounts (one query each at 60): no
    account shows anything, but each step is a near-copy (a few coordinates changed) of the step before, sent by
    another account. One campaign alert lists the accounts; the benign client that sent the original input (and a
    step) among ordinary queries is not listed, nor is any other benign client."""
    rng = np.random.default_rng(30 + accounts)
    b, sybils, origin = split_coordinate_stream(rng, attack, accounts)
    d = det(artifact)
    out = d.update(b, seq=0)
    camp = [a for a in out if a.client_id is None]
    assert camp and camp[0].status == "open" and {a.evidence["campaign"] for a in camp} == {"c0"}
    assert camp[0].evidence["probe_hits"] >= d.campaign_hits and camp[0].evidence["boundary_hits"] == 0
    listed = set(camp[-1].evidence["clients"])
    assert listed <= sybils and len(listed) >= 3
    # early: the campaign needs 3 accounts and 6 linking hits (Square re-queries its best point after each
    # candidate: a probe hit of the candidate, and its copies count while the best is a step, not its own input; it
    # starts with 3 copies of its input, which are none)
    steps = np.isin(b.client_id[: camp[0].event_index + 1].astype(str), list(sybils)).sum()
    assert b.client_id[camp[0].event_index] in listed and steps <= 12, steps
    assert [a for a in out if a.kind == "evasion_probing" and a.client_id == origin] == []
    state = d.snapshot()
    assert origin not in set(state["campaign.members"].tolist())
    row = state["client.id"].tolist().index(origin)
    assert state["client.probe"][row] >= 1  # it did take part in probe hits
    # the benign traffic goes on for minutes after the search: the campaign is resolved and forgotten
    assert camp[-1].status == "resolved" and camp[-1].severity == "info"
    assert camp[-1].window_end_ts >= 300_000 + max(a.window_end_ts for a in camp[:-1])
    assert len(state["campaign.id"]) == 0


def test_split_coordinate_campaign_does_not_depend_on_batch_boundaries(artifact: AdversarialArtifact) -> None:
    """The probe table and the probe counts give the same alerts and state in one batch, row by row, in random
    chunks and across a snapshot/restore (the probe table, the counts and the campaign's chain included)."""
    rng = np.random.default_rng(40)
    b1, _, _ = split_coordinate_stream(rng, zoo_like, 7)
    # a second search, Square-like over 40 accounts (one or two queries each), later among the same benign traffic
    q = square_like(rng, 60)
    x = np.concatenate([b1.numeric, q])
    c = np.concatenate([b1.client_id, np.asarray([f"sq{i % 40}" for i in range(len(q))], dtype=object)])
    t = np.r_[b1.ts, 60_000 + np.arange(len(q)) * 700].astype(np.int64)
    o = np.argsort(t, kind="stable")
    b = batch(x[o], c[o], t[o])
    n = len(b)

    feed_camp = evasion_feeder(b)
    d = det(artifact)
    whole = feed_camp(d, [n])
    ref = d.snapshot()
    assert sum(1 for a in whole if a[3] is None and a[1] == "open") == 2
    assert sum(1 for a in whole if a[3] is None and a[1] == "resolved") == 2  # (minutes of benign traffic after)
    runs = [list(range(1, n + 1))]
    for _ in range(2):
        runs.append(random_bounds(rng, n, 300))
    for bounds in runs:
        d = det(artifact)
        assert feed_camp(d, bounds) == whole
        state = d.snapshot()
        assert all(
            np.array_equal(v, ref[k], equal_nan=v.dtype.kind == "f")
            for k, v in state.items()
            if k.startswith(("client.", "probe.", "campaign."))
        )
    for h in (n // 3, 2 * n // 3):
        got, second = fed_across_restore(artifact, feed_camp, n, h, 200)
        assert got == whole
        assert all(np.array_equal(v, ref[k]) for k, v in second.snapshot().items() if k.startswith("probe."))


def test_probe_hits_need_another_account_and_a_few_changed_coordinates(artifact: AdversarialArtifact) -> None:
    """One account's own coordinate search, exact resends of one input by many accounts and noisy copies of it
    (every coordinate changed) are no probe hits; a copy with two coordinates changed, from another account, is."""
    rng = np.random.default_rng(41)
    d = det(artifact)
    x0 = rng.normal(size=F)
    zoo = zoo_like(rng, 30)
    step = x0.copy()
    step[[2, 9]] += 0.1
    x = np.concatenate([zoo, np.tile(x0, (5, 1)), x0 + rng.normal(scale=1e-3, size=(5, F)), step[None]])
    c = ["eve"] * 30 + [f"resend{i}" for i in range(5)] + [f"noisy{i}" for i in range(5)] + ["editor"]
    d.update(batch(x, c, np.arange(len(x)) * 100), seq=0)
    state = d.snapshot()
    probe = dict(zip(state["client.id"].tolist(), state["client.probe"].tolist(), strict=True))
    assert probe["eve"] == 0 and all(probe[f"resend{i}"] == 0 for i in range(4))
    assert all(probe[f"noisy{i}"] == 0 for i in range(5))
    # the edit matches the latest query of that input (the last exact resend): one hit, counted for both clients
    assert probe["editor"] == 1 and probe["resend4"] == 1
    assert sum(probe.values()) == 2


def test_exact_copies_of_a_probe_hit_are_probe_hits_for_a_while(artifact: AdversarialArtifact) -> None:
    """A split search's re-queries of its best point come from other accounts: an exact copy of a query that was a
    probe hit (or of a copy of one) is a probe hit too, for both clients, while the first hit is at most
    ``probe_window_s`` old; copies of an input that was none (a popular input) stay none, in one batch or row by
    row."""
    rng = np.random.default_rng(42)
    x0 = rng.normal(size=F)
    step = x0.copy()
    step[[2, 9]] += 0.1
    win = 300_000
    y = rng.normal(size=F)
    x1 = rng.normal(size=F)
    step1 = x1.copy()
    step1[[4, 13]] -= 0.1
    t1 = 10 * win  # (far from the rest)
    x = np.stack([x0, step, step, step, y, y, step, x1, step1, x1, x1])
    c = ["a", "b", "c", "d", "e", "f", "late", "a1", "b1", "g1", "h1"]
    t = [0, 1_000, 2_000, 3_000, 4_000, 5_000, 1_000 + win + 1, t1, t1 + 1_000, t1 + 2_000, t1 + 2_000 + win]
    probes = []
    for bounds in ([len(x)], list(range(1, len(x) + 1))):
        d = det(artifact)
        s = 0
        for e in bounds:
            d.update(batch(x[s:e], c[s:e], t[s:e], first_id=s), seq=s)
            s = e
        state = d.snapshot()
        probes.append(dict(zip(state["client.id"].tolist(), state["client.probe"].tolist(), strict=True)))
    assert probes[0] == probes[1]
    # b's step hits a's input; c copies b's step, d copies c's copy; e and f send one input (a copy of no hit); the
    # late copy of the step comes after the window of b's hit. Later, g1 steps back to a1's input (a hit of b1's
    # step), and h1 sends that input again once b1's step is older than the window but g1's hit is not: it copies
    # no hit, as the input was none when first sent (a benign client sending the input a search started from)
    want = {"a": 1, "b": 2, "c": 2, "d": 1, "e": 0, "f": 0, "late": 0, "a1": 1, "b1": 2, "g1": 1, "h1": 0}
    assert probes[0] == want


def split_ood_stream(rng: np.random.Generator, accounts: int = 40, per: int = 4) -> tuple[EventBatch, Any, set[str]]:
    """Uniform-random extraction split round-robin over ``accounts`` ids (``per`` queries each, all ood) among benign
    clients of every kind, and benign accounts that look ood-ish: one whose first query is ood (then ordinary ones),
    ordinary ones with an ood query now and then, and one resending one ood input exactly. (batch, ood flags, the
    extraction's accounts)."""
    b0 = benign_clients(rng)
    q = rng.uniform(-6, 6, size=(accounts * per, F))
    ids = [f"x{i % accounts}" for i in range(len(q))]
    odd = rng.normal(size=(4, 20, F))
    odd[0, 0] *= 8  # first query ood
    odd[1, ::7] *= 8
    odd[2, 3::10] *= 8
    odd[3] = odd[3, :1] * 8  # one ood input resent exactly
    x = np.concatenate([b0.numeric, q, odd.reshape(-1, F)])
    c = np.concatenate(
        [b0.client_id, np.asarray(ids, dtype=object), np.repeat([f"oddish{u}" for u in range(4)], 20).astype(object)]
    )
    t = np.r_[b0.ts, 30_000 + np.arange(len(q)) * 250, np.tile(35_000 + np.arange(20) * 1_000, 4)].astype(np.int64)
    ood = np.r_[np.zeros(len(b0), dtype=bool), np.ones(len(q), dtype=bool), (np.abs(odd) > 4).any(-1).ravel()]
    o = np.argsort(t, kind="stable")
    return batch(x[o], c[o], t[o]), ood[o], set(ids)


def test_split_uniform_extraction_is_one_campaign(artifact: AdversarialArtifact) -> None:
    """Uniform-random queries split over 40 accounts, 4 each: no account reaches its own ood test (3 ood queries)
    before its third, but together they send far more ood queries than the reference rate allows. A
    ``model_extraction`` campaign alert lists accounts with two ood queries and nothing else, early; no benign account
    is listed, ood-ish ones included (a first query ood, an ood query now and then, one ood input resent)."""
    rng = np.random.default_rng(50)
    b, ood, accounts = split_ood_stream(rng)
    d = det(artifact)
    out = d.update(b, seq=0, ood=ood)
    camp = [a for a in out if a.client_id is None and a.kind == "model_extraction"]
    assert camp and camp[0].status == "open" and {a.evidence["campaign"] for a in camp} == {"x0"}
    assert all(a.status == "update" for a in camp[1:-1])
    # ended: resolved at the event ood_window events after its last query that counted
    assert camp[-1].status == "resolved" and camp[-1].severity == "info"
    last = max(i for i in range(len(b)) if ood[i] and b.client_id[i] in accounts)
    assert camp[-1].event_index - last <= d.ood_window + 1
    listed = set().union(*(a.evidence["clients"] for a in camp))
    assert listed <= accounts and len(listed) >= 30
    assert camp[0].p_value is not None and camp[0].p_value < d.alpha
    # before any account's own test could fire (its third query): within the second round of queries
    steps = np.isin(b.client_id[: camp[0].event_index + 1].astype(str), list(accounts)).sum()
    assert steps <= 2 * len(accounts), steps
    first_own = [a.event_index for a in out if a.kind == "model_extraction" and a.client_id in accounts]
    assert not first_own or camp[0].event_index < min(first_own)
    named = {a.client_id for a in out if a.client_id is not None}
    assert named <= accounts | {f"heavy{u}" for u in range(2)}, named  # (heavy benign clients: query floods)


def test_split_extraction_updates_come_at_most_once_per_interval(artifact: AdversarialArtifact) -> None:
    """The campaign names accounts joining it by updates at most every ``campaign_interval_s`` of event time: far
    fewer records than one per new account, and still every account that joined is named. When the extraction
    stops (here after each account's second query, the one that makes it join), the last ones are named by an
    update at an event of another client once the interval has passed."""
    b, ood, accounts = split_ood_stream(np.random.default_rng(50))
    attack = np.isin(b.client_id.astype(str), list(accounts))
    keep = np.flatnonzero(~attack | (b.ts < 50_000))  # (rounds of 40 queries, 10 s each, from 30 s on)
    b, ood = b.take(keep), ood[keep]
    seen: dict[float, list[AlertDecision]] = {}
    for every in (0.0, 10.0):
        out = det(artifact, campaign_interval_s=every).update(b, seq=0, ood=ood)
        camp = [a for a in out if a.client_id is None and a.kind == "model_extraction"]
        assert camp[-1].status == "resolved" and camp[-1].evidence["new_clients"] == []
        camp = seen[every] = camp[:-1]
        new = [a.evidence["new_clients"] for a in camp]
        assert sum(map(len, new)) == camp[-1].evidence["n_clients"] == len(set().union(*new)) == len(accounts)
        if every:
            assert (np.diff([a.window_end_ts for a in camp]) >= every * 1000).all()
            assert b.client_id[camp[-1].event_index] not in accounts
        else:
            assert all(len(n) == 1 for n in new[1:])
    assert 1 < len(seen[10.0]) < len(seen[0.0]) / 4


def test_ood_flags_stay_with_their_events_when_some_have_no_client(artifact: AdversarialArtifact) -> None:
    """Events without a client id are skipped; the ood flags of the others stay theirs (not shifted onto them by
    the skipped rows): the alerts are those of the batch without the skipped events."""
    rng = np.random.default_rng(51)
    b, ood, _ = split_ood_stream(rng)
    n = len(b)
    gaps = rng.random(n) < 0.3  # client-less rows (not ood) slipped in between
    order = np.argsort(np.r_[np.arange(n), np.flatnonzero(gaps) + 0.5], kind="stable")
    x = np.r_[b.numeric, rng.normal(size=(int(gaps.sum()), F))][order]
    ids = np.r_[b.client_id, np.full(int(gaps.sum()), None, dtype=object)][order]
    ts = np.r_[b.ts, b.ts[gaps]][order]
    flags = np.r_[ood, np.zeros(int(gaps.sum()), dtype=bool)][order]
    with_gaps = batch(x, ids, ts)
    keep = np.flatnonzero(ids != None)  # noqa: E711
    got = det(artifact).update(with_gaps, seq=0, ood=flags)
    want = det(artifact).update(with_gaps.take(keep), seq=0, ood=flags[keep])
    assert want and [(a.kind, a.status, a.client_id, keep[a.event_index]) for a in want] == [
        (a.kind, a.status, a.client_id, a.event_index) for a in got
    ]


def test_far_ood_queries_name_split_extraction_accounts_after_one_query(artifact: AdversarialArtifact) -> None:
    """The same split extraction with its queries flagged far out of distribution (``far_ood``: the anomaly
    detector's p-value beyond fpr**2): each account is named after its first query, so the campaign opens within
    the first round instead of the second; the ood-ish benign accounts (ood, not far out) stay unnamed."""
    b, ood, accounts = split_ood_stream(np.random.default_rng(50))
    attack = np.isin(b.client_id.astype(str), list(accounts))
    far = attack & ood

    def first(**kw: Any) -> tuple[int, set[str]]:
        out = det(artifact).update(b, seq=0, ood=ood, **kw)
        camp = [a for a in out if a.client_id is None and a.kind == "model_extraction"]
        assert camp and camp[0].status == "open"
        listed = set().union(*(a.evidence["clients"] for a in camp))
        return int(attack[: camp[0].event_index + 1].sum()), listed

    steps, listed = first(far_ood=far)
    assert steps <= len(accounts) // 2 and listed <= accounts, steps
    plain, _ = first()
    assert plain > len(accounts) >= steps
    with pytest.raises(SchemaMismatchError):
        det(artifact).update(b, seq=0, ood=ood, far_ood=far[:5])


def test_split_uniform_campaign_does_not_depend_on_batch_boundaries(artifact: AdversarialArtifact) -> None:
    """The ood window gives the same alerts and state in one batch, row by row, in random chunks and across a
    snapshot/restore."""
    rng = np.random.default_rng(51)
    b, ood, _ = split_ood_stream(rng, 30, 4)
    n = len(b)

    def fed(d: AdversarialDetector, bounds: list[int], start: int = 0) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        s = start
        for e in bounds:
            for a in d.update(b.take(slice(s, e)), seq=s, ood=ood[s:e]):
                if a.kind == "model_extraction":
                    out.append((*key(a), tuple(a.evidence.get("clients", ()))))
            s = e
        return out

    d = det(artifact, ood_window=256)
    whole = fed(d, [n])
    ref = d.snapshot()
    assert any(a[3] is None for a in whole)
    for bounds in (list(range(1, n + 1)), random_bounds(rng, n, 300)):
        d = det(artifact, ood_window=256)
        assert fed(d, bounds) == whole
        state = d.snapshot()
        assert all(np.array_equal(v, ref[k]) for k, v in state.items() if k.startswith("ood."))
    for h in (n // 3, 2 * n // 3):
        first = det(artifact, ood_window=256)
        got = fed(first, [*range(100, h, 100), h])
        second = det(artifact, ood_window=256)
        second.restore(first.snapshot())
        assert got + fed(second, [n], start=h) == whole


def discrete_rows(kind: str, rng: np.random.Generator, n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any]]:
    """Rows of discrete features and their classes: ``binary`` (32 flags, class-dependent rates), ``flags`` (32 rare
    flags: most rows differ from some other in a flag or two), ``counts`` (32 small Poisson counts) or ``amounts``
    (32 amounts in cents, mostly beyond float16's range)."""
    y = rng.integers(0, 4, n)
    if kind == "counts":
        return rng.poisson(2.0 + y[:, None], (n, 32)).astype(np.float64), y
    if kind == "amounts":
        return np.round(rng.lognormal(11.0 + 0.2 * y[:, None], 1.0, (n, 32))), y
    lo, hi = (0.1, 0.9) if kind == "binary" else (0.01, 0.12)
    rate = np.random.default_rng(5).uniform(lo, hi, (4, 32))
    return (rng.random((n, 32)) < rate[y]).astype(np.float64), y


@pytest.mark.parametrize("kind", ["binary", "flags", "counts", "amounts"])
def test_benign_clients_on_discrete_features_do_not_alarm(kind: str) -> None:
    """On discrete features consecutive benign queries differ by one amount (a flag flips by 1, a count by 1 or 2)
    and rows often differ from another account's in a few columns: what structured steps and probe hits look for.
    The artifact calibrates both tests on the reference rows, so benign clients, some sending the same rows as
    others, raise no evasion alert; a one-coordinate search over counts is still caught (the benign steps of count
    rows change many coordinates). Amounts beyond float16's range raise no warning (the raw values keep them as
    inf)."""
    rng = np.random.default_rng(41)
    w = np.random.default_rng(42).normal(size=(32, 4))

    def proba(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return softmax((x - x.mean(axis=0)) @ w)

    xr, _ = discrete_rows(kind, rng, 3000)
    art = AdversarialArtifact.fit(xr, proba(xr))
    if kind in ("binary", "flags"):  # every benign step moves its values by one amount: the share test is off
        assert art.struct_share > 1
    if kind == "flags":  # rows differ from another in a flag or two: so are probe hits
        assert art.probe_blocks == 0
    xs, cs, ts = [], [], []
    shared, _ = discrete_rows(kind, rng, 50)  # inputs several accounts send
    for u in range(120):
        m = int(rng.integers(20, 60))
        x, _ = discrete_rows(kind, rng, m)
        pick = rng.random(m) < 0.3
        x[pick] = shared[rng.integers(0, len(shared), int(pick.sum()))]
        xs.append(x)
        cs += [f"user{u}"] * m
        ts.append(rng.uniform(0, 600_000) + np.cumsum(rng.exponential(5_000.0, m)))
    x, c, t = np.concatenate(xs), np.array(cs, dtype=object), np.concatenate(ts).astype(np.int64)
    o = np.argsort(t, kind="stable")
    p = proba(x[o])
    b = EventBatch.from_arrays(x[o], client_id=c[o], ts=t[o], proba=p, event_id=np.arange(len(o)).astype(str))
    d = det(art)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = d.update(b, seq=0)
    assert [a for a in out if a.kind == "evasion_probing"] == []
    if kind == "counts":
        q = [x[o][0].copy()]
        for i in range(30):  # one count up and down by one, coordinate after coordinate
            step = q[-1].copy()
            step[i % 32] += 1.0 if i % 2 == 0 else -1.0
            q.append(step)
        qa = np.array(q)
        ev = d.update(
            EventBatch.from_arrays(
                qa, client_id=np.full(len(qa), "eve", dtype=object), ts=t.max() + np.arange(len(qa)), proba=proba(qa)
            ),
            seq=len(o),
        )
        opened = [a for a in ev if a.kind == "evasion_probing" and a.status == "open"]
        assert [a.client_id for a in opened] == ["eve"] and opened[0].event_index < 10


@pytest.mark.parametrize("f", [1, 2, 3])
def test_benign_clients_of_a_model_with_few_features_do_not_alarm(f: int) -> None:
    """In one to three dimensions benign consecutive queries line up (in one, always), and most fingerprint blocks
    hold no column: the line test is off (the artifact finds benign steps passing it) and the probe table reads
    only the bands that hold a column (an empty band matches every query, and two unrelated queries' 4-bit block
    hashes agree often enough to look like a probe hit). Before, every client of a one-feature model was a search
    and clients of a two-feature model formed campaigns."""
    rng = np.random.default_rng(50 + f)
    w = rng.normal(size=(f, 3))

    def proba(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return softmax(x @ w)

    xr = rng.normal(size=(3000, f))
    art = AdversarialArtifact.fit(xr, proba(xr))
    assert art.cos_line > 1
    n = 12_000
    x = rng.normal(size=(n, f))
    c = np.array([f"user{u}" for u in rng.integers(0, 200, n)], dtype=object)
    t = np.sort(rng.integers(0, 3_600_000, n))
    b = EventBatch.from_arrays(x, client_id=c, ts=t, proba=proba(x), event_id=np.arange(n).astype(str))
    out = det(art).update(b, seq=0)
    assert [a for a in out if a.kind == "evasion_probing"] == []


def sensor_readings(rng: np.random.Generator, n: int, kind: str) -> npt.NDArray[np.float64]:
    """One device's readings, one a second: a slow random walk, or slow oscillations (each at its own pace)."""
    if kind == "walk":
        return np.cumsum(rng.normal(0, 0.05, (n, F)), axis=0) + rng.normal(size=F) + rng.normal(0, 0.01, (n, F))
    t = np.arange(n)[:, None] * 0.05
    return np.sin(t * rng.uniform(0.5, 2.0, F) + rng.uniform(0, 6, F)) + rng.normal(0, 0.02, (n, F))


@pytest.mark.parametrize("kind", ["walk", "sine"])
def test_devices_sending_slowly_changing_readings_do_not_alarm(kind: str) -> None:
    """A device's consecutive readings are far closer than random rows: calibrated on shuffled reference rows
    alone, every device was a synthetic-extraction client (its queries "closer than benign clients come"). With
    the reference clients' own sequences (client ids and times of the rows), the thresholds and the benign rate of
    close queries are theirs, and no device is named; a client walking along the decision boundary still is."""
    ref = [sensor_readings(np.random.default_rng(1000 + i), 60, kind) for i in range(100)]
    xr = np.concatenate(ref)
    clients = np.repeat([f"ref{i}" for i in range(100)], 60).astype(object)
    times = np.tile(np.arange(60) * 1000, 100)
    art = AdversarialArtifact.fit(xr, MODEL.proba(xr), client_id=clients, ts=times)
    xs, cs, ts = [], [], []
    for i in range(100):
        xs.append(sensor_readings(np.random.default_rng(i), 200, kind))
        cs += [f"dev{i}"] * 200
        ts.append(np.arange(200) * 1000 + i)
    x, c, t = np.concatenate(xs), np.array(cs, dtype=object), np.concatenate(ts)
    o = np.argsort(t, kind="stable")
    d = det(art)
    out = d.update(batch(x[o], c[o], t[o]), seq=0)
    assert [a for a in out if a.severity != "info" and a.kind != "query_flood"] == []
    w = boundary_walk(np.random.default_rng(3))
    ev = d.update(batch(w, ["eve"] * len(w), t.max() + 1 + np.arange(len(w)) * 500), seq=len(x))
    assert [a.client_id for a in ev if a.kind == "evasion_probing" and a.status == "open"] == ["eve"]


def test_partners_scoring_customers_of_a_model_deciding_on_fields_it_cannot_see_do_not_alarm() -> None:
    """The model's class rests on categorical fields (the detector sees numeric features only) and its numeric
    features are coarse bands: different customers are the same numeric input, predicted differently. Such class
    flips among near-duplicates made campaigns of benign partners (boundary hits); the artifact measures how often
    benign near-duplicates differ in class (``p_flip``) and, this often, flips are no evidence."""

    def customers(n: int, r: np.random.Generator) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        bands = r.integers(0, 3, (n, 4)).astype(np.float64)
        fields = r.integers(0, 5, (n, 3))
        logits = np.stack([fields[:, 0] == 0, fields[:, 1] == 1, fields[:, 2] >= 3], 1) * 3.0 + bands[:, :3] * 0.2
        return bands, softmax(logits)

    xr, pr = customers(3000, np.random.default_rng(1))
    clients = np.array([f"r{i}" for i in np.random.default_rng(2).integers(0, 100, 3000)], dtype=object)
    art = AdversarialArtifact.fit(
        xr, pr, client_id=clients, ts=np.sort(np.random.default_rng(3).integers(0, 3_600_000, 3000))
    )
    assert art.p_flip > 0.1
    rng = np.random.default_rng(4)
    n = 20_000
    x, p = customers(n, rng)
    c = np.array([f"partner{i}" for i in rng.integers(0, 50, n)], dtype=object)
    t = np.sort(rng.integers(0, 3_600_000, n))
    b = EventBatch.from_arrays(x, client_id=c, ts=t, proba=p, event_id=np.arange(n).astype(str))
    out = det(art).update(b, seq=0)
    assert [a for a in out if a.kind == "evasion_probing"] == []
    # nor are they synthetic extraction: a band's neighbours sit exactly at the smallest benign distance, the edge
    # of the "close" band, which the calibration places on the float16 values the detector compares
    assert [a for a in out if a.kind == "model_extraction" and a.severity != "info"] == []
