"""Adversarial-query benchmark: ART 1.20.1 black-box attacks on a digits MLP vs AdversarialDetector.

Attack traffic (HopSkipJump, Boundary, Sign-OPT, ZOO through ``BlackBoxClassifier``; SimBA and Square
through ``BlackBoxClassifierNeuralNetwork``; uniform-random and Jacobian-augmentation extraction) is
recorded query by query and cached under ``.cache/bench/adversarial/``. It is interleaved by time
with benign clients (random test samples, noisy retries, single-class and heavy clients) and a flood,
per variant (one account, split round-robin over 10 / 100 accounts, mixed 1:1 with benign queries),
and run through the detector in batches, next to reference implementations of PRADA, Stateful
Detection (k-NN, raw L2) and a Blacklight-style hash index. Writes benchmarks/results/adversarial.md.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_adversarial.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
import warnings
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detector.adversarial import AdversarialArtifact, AdversarialDetector  # noqa: E402
from detector.schema import EventBatch  # noqa: E402

CACHE = ROOT / ".cache" / "bench" / "adversarial"
RESULTS = ROOT / "benchmarks" / "results" / "adversarial.md"
SEED = 20261128
N_TARGETS = 6  # attacked samples (= attacker accounts in the one-account variant) per attack


def victim() -> tuple[Any, Any, Any, Any, Any, Any]:
    """The victim and three disjoint splits: train (50%), reference (25%: calibration) and test (25%: traffic)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    x = d.data / 16.0
    xtr, xho, ytr, yho = train_test_split(x, d.target, test_size=0.5, random_state=0, stratify=d.target)
    xref, xte, _, yte = train_test_split(xho, yho, test_size=0.5, random_state=0, stratify=yho)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=0).fit(xtr, ytr)
    return clf, xtr, xref, xte, yte, ytr


class Recorder:
    def __init__(self, clf: Any) -> None:
        self.clf = clf
        self.rows: list[npt.NDArray[np.float64]] = []

    def __call__(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        x2 = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.rows.append(x2.copy())
        return np.asarray(self.clf.predict_proba(np.clip(x2, 0, 1)), dtype=np.float64)

    def take(self) -> npt.NDArray[np.float64]:
        out = np.concatenate(self.rows) if self.rows else np.empty((0, 64))
        self.rows = []
        return out


def _run(
    name: str, clf: Any, xte: npt.NDArray[np.float64], yte: npt.NDArray[np.int64]
) -> list[npt.NDArray[np.float64]]:
    """One query log per attacked sample."""
    from art.attacks.evasion import BoundaryAttack, HopSkipJump, SignOPTAttack, ZooAttack
    from art.estimators.classification import BlackBoxClassifier, BlackBoxClassifierNeuralNetwork

    rng = np.random.default_rng(SEED + zlib.crc32(name.encode()) % 1000)
    rec = Recorder(clf)
    pred = clf.predict(xte)
    ok = np.flatnonzero(pred == yte)
    targets = rng.choice(ok, N_TARGETS, replace=False)
    logs = []
    for t in targets:
        # ART draws from NumPy's global RNG; seeding it is the only way to make its attacks repeatable.
        np.random.seed(SEED + int(t))  # noqa: NPY002
        x0 = xte[t : t + 1]
        if name in ("simba", "square"):
            nn = BlackBoxClassifierNeuralNetwork(rec, input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))
            xin = x0.reshape(1, 1, 8, 8).astype(np.float32)
            if name == "simba":
                from art.attacks.evasion import SimBA

                atk: Any = SimBA(nn, attack="px", max_iter=300, epsilon=0.2, verbose=False)
            else:
                from art.attacks.evasion import SquareAttack

                atk = SquareAttack(nn, norm=np.inf, max_iter=200, eps=0.3, p_init=0.3, nb_restarts=1, verbose=False)
            atk.generate(xin)
        else:
            bb = BlackBoxClassifier(rec, input_shape=(64,), nb_classes=10, clip_values=(0.0, 1.0))
            if name == "hsj":
                atk = HopSkipJump(bb, max_iter=4, max_eval=150, init_eval=20, init_size=50, verbose=False)
            elif name == "boundary":
                atk = BoundaryAttack(
                    bb, targeted=False, max_iter=40, num_trial=10, sample_size=10, init_size=50, verbose=False
                )
            elif name == "signopt":
                atk = SignOPTAttack(
                    bb, targeted=False, num_trial=20, max_iter=20, query_limit=1500, k=50, verbose=False
                )
            elif name == "zoo":
                atk = ZooAttack(
                    bb,
                    max_iter=10,
                    nb_parallel=16,
                    use_resize=False,
                    use_importance=False,
                    binary_search_steps=1,
                    verbose=False,
                )
            else:
                raise ValueError(name)
            atk.generate(x0.astype(np.float32))
        logs.append(rec.take())
    return logs


def _uniform(rng: np.random.Generator) -> list[npt.NDArray[np.float64]]:
    return [rng.uniform(0, 1, size=(600, 64)) for _ in range(N_TARGETS)]


def _jacobian(clf: Any, xte: npt.NDArray[np.float64], rng: np.random.Generator) -> list[npt.NDArray[np.float64]]:
    """Papernot et al. Jacobian-based dataset augmentation against a local logistic substitute."""
    from sklearn.linear_model import LogisticRegression

    logs = []
    for _ in range(N_TARGETS):
        s = xte[rng.choice(len(xte), 10, replace=False)]
        queried = [s]
        labels = clf.predict(s)
        lam = 0.1
        for rnd in range(5):
            xs = np.concatenate(queried)
            sub = LogisticRegression(max_iter=300).fit(xs, labels) if len(set(labels)) > 1 else None
            cur = np.concatenate(queried)
            if sub is None:
                grad = rng.normal(size=cur.shape)
            else:
                w = sub.coef_  # (K, F): d logit_k / dx
                cls_idx = np.searchsorted(sub.classes_, labels)
                grad = w[np.clip(cls_idx, 0, len(w) - 1)]
            new = np.clip(cur + lam * (-1) ** rnd * np.sign(grad), 0, 1)
            queried.append(new)
            labels = np.concatenate([labels, clf.predict(new)])
            if sum(len(q) for q in queried) > 600:
                break
        logs.append(np.concatenate(queried)[:600])
    return logs


ATTACKS = ("hsj", "boundary", "signopt", "zoo", "simba", "square")


def attack_logs() -> dict[str, list[npt.NDArray[np.float64]]]:
    """Query logs per attack (cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    clf, _, _, xte, yte, _ = victim()
    out: dict[str, list[npt.NDArray[np.float64]]] = {}
    for name in (*ATTACKS, "uniform", "jacobian"):
        f = CACHE / f"{name}.npz"
        if f.exists():
            z = np.load(f)
            out[name] = [z[k] for k in sorted(z.files, key=lambda s: int(s.split("_")[1]))]
            continue
        t0 = time.perf_counter()
        rng = np.random.default_rng(SEED + len(name))
        try:
            if name == "uniform":
                logs = _uniform(rng)
            elif name == "jacobian":
                logs = _jacobian(clf, xte, rng)
            else:
                logs = _run(name, clf, xte, yte)
        except Exception as e:  # an attack that cannot run here is reported as missing
            print(f"{name}: failed: {type(e).__name__}: {e}")
            continue
        np.savez(f, *logs)
        out[name] = logs
        print(f"{name}: {[len(a) for a in logs]} queries in {time.perf_counter() - t0:.1f}s")
    return out


# ----------------------------------------------------------------------------------------- stream


@dataclass
class Stream:
    x: npt.NDArray[np.float64]
    client: npt.NDArray[np.object_]
    ts: npt.NDArray[np.int64]
    group: npt.NDArray[np.object_]  # "benign:<type>", "flood" or attack name
    inst: npt.NDArray[np.int64]  # attack instance (or -1)
    qidx: npt.NDArray[np.int64]  # index of the query within its attack instance (-1 for benign filler)
    proba: npt.NDArray[np.float64] | None = None
    ood: npt.NDArray[np.bool_] | None = None


def _part(x: Any, client: Any, ts: Any, group: str, inst: int = -1, qidx: Any = None) -> dict[str, Any]:
    n = len(x)
    return {
        "x": np.asarray(x, dtype=np.float64),
        "client": np.asarray(client, dtype=object).reshape(-1)
        if not isinstance(client, str)
        else np.full(n, client, dtype=object),
        "ts": np.asarray(ts, dtype=np.int64),
        "group": np.full(n, group, dtype=object),
        "inst": np.full(n, inst, dtype=np.int64),
        "qidx": np.full(n, -1, dtype=np.int64) if qidx is None else np.asarray(qidx, dtype=np.int64),
    }


def benign_parts(
    xte: npt.NDArray[np.float64], yte: npt.NDArray[np.int64], rng: np.random.Generator, horizon_s: float, tag: str = ""
) -> list[dict[str, Any]]:
    parts = []
    for c in range(300):  # ordinary clients
        n = int(rng.integers(20, 61))
        t0 = rng.uniform(0, horizon_s * 0.8)
        ts = (t0 + np.cumsum(rng.exponential(15.0, n))) * 1000
        parts.append(_part(xte[rng.integers(0, len(xte), n)], f"user{tag}-{c}", ts, "benign:normal"))
    for c in range(50):  # retries: the same input resent 1-3 times with small noise
        xs, tss = [], []
        t = rng.uniform(0, horizon_s * 0.8)
        for _ in range(30):
            x0 = xte[rng.integers(0, len(xte))]
            for _r in range(1 + int(rng.integers(1, 4))):
                xs.append(np.clip(x0 + rng.normal(0, 0.01, 64), 0, 1))
                tss.append(t)
                t += rng.uniform(0.5, 3.0)
            t += rng.exponential(20.0)
        parts.append(_part(np.array(xs), f"retry{tag}-{c}", np.array(tss) * 1000, "benign:retry"))
    for c in range(20):  # one class only
        k = c % 10
        pool = xte[yte == k]
        n = 40
        ts = (rng.uniform(0, horizon_s * 0.8) + np.cumsum(rng.exponential(10.0, n))) * 1000
        parts.append(_part(pool[rng.integers(0, len(pool), n)], f"oneclass{tag}-{c}", ts, "benign:single-class"))
    for c in range(5):  # heavy clients, ~1 query/s
        n = 3000
        ts = (rng.uniform(0, 200) + np.cumsum(rng.exponential(1.0, n))) * 1000
        parts.append(_part(xte[rng.integers(0, len(xte), n)], f"heavy{tag}-{c}", ts, "benign:heavy"))
    return parts


def attack_parts(
    logs: dict[str, list[npt.NDArray[np.float64]]],
    variant: str,
    xte: npt.NDArray[np.float64],
    rng: np.random.Generator,
    horizon_s: float,
) -> list[dict[str, Any]]:
    parts = []
    for name, insts in logs.items():
        for i, q in enumerate(insts):
            n = len(q)
            t0 = rng.uniform(0, horizon_s * 0.5)
            ts = (t0 + np.arange(n) * 0.5) * 1000  # 2 queries/s: below the flood ceiling
            base = f"{name}-{i}"
            if variant == "single":
                parts.append(_part(q, base, ts, name, i, np.arange(n)))
            elif variant.startswith("split"):
                k = int(variant[5:])
                ids = np.array([f"{base}-s{k}-{j}" for j in range(k)], dtype=object)[np.arange(n) % k]
                parts.append(_part(q, ids, ts, name, i, np.arange(n)))
            elif variant == "mixed":  # 1:1 with benign queries on the same account
                parts.append(_part(q, base, ts, name, i, np.arange(n)))
                parts.append(_part(xte[rng.integers(0, len(xte), n)], base, ts + 250, name, i, np.full(n, -1)))
    return parts


def flood_part(xte: npt.NDArray[np.float64], rng: np.random.Generator) -> dict[str, Any]:
    n = 6000
    ts = (rng.uniform(0, 600) + np.cumsum(rng.exponential(1 / 50.0, n))) * 1000
    return _part(xte[rng.integers(0, len(xte), n)], "flooder-0", ts, "flood", 0, np.arange(n))


def assemble(parts: list[dict[str, Any]]) -> Stream:
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    o = np.argsort(cat["ts"], kind="stable")
    return Stream(**{k: v[o] for k, v in cat.items()})


def write_jsonl(stream: Stream, path: Path, model_id: str = "digits-mlp") -> int:
    """Write the stream as inference-event JSONL lines (event_id, ts, model_id, client_id, features, prediction,
    probabilities); the lead replays it through files and Kafka."""
    assert stream.proba is not None
    names = [f"f{j:02d}" for j in range(stream.x.shape[1])]
    with path.open("w", encoding="utf-8") as f:
        for i in range(len(stream.ts)):
            p = stream.proba[i]
            f.write(
                json.dumps(
                    {
                        "event_id": f"e{i}",
                        "ts": int(stream.ts[i]),
                        "model_id": model_id,
                        "client_id": str(stream.client[i]),
                        "features": dict(zip(names, stream.x[i].round(6).tolist(), strict=True)),
                        "prediction": str(int(np.argmax(p))),
                        "probabilities": {str(k): round(float(v), 6) for k, v in enumerate(p)},
                    }
                )
                + "\n"
            )
    return len(stream.ts)


# ----------------------------------------------------------------------------------------- OOD + reference


class Mahalanobis:
    """Squared Mahalanobis distance (Ledoit-Wolf covariance of the training rows), threshold at ``fpr`` on the
    held-out reference rows."""

    def __init__(self, x: npt.NDArray[np.float64], xcal: npt.NDArray[np.float64], fpr: float = 1e-3) -> None:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(x)
        self.mu = lw.location_
        self.prec = lw.precision_
        self.thr = float(np.quantile(self.score(xcal), 1 - fpr))

    def score(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        d = x - self.mu
        return np.asarray(np.einsum("ij,jk,ik->i", d, self.prec, d), dtype=np.float64)

    def flag(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return self.score(x) > self.thr


def reference_log(rng: np.random.Generator) -> tuple[Any, Any]:
    """Client ids and times of one hour of benign reference traffic: 200 ordinary clients (one query per ~15 s)
    and 10 heavy ones (~1/s)."""
    cl, tss = [], []
    for c in range(210):
        gap = 1.0 if c < 10 else 15.0
        t = rng.uniform(0, 300) + np.cumsum(rng.exponential(gap, int(3600 / gap)))
        t = t[t < 3600]
        cl.append(np.full(len(t), f"ref-{c}", dtype=object))
        tss.append((t * 1000).astype(np.int64))
    return np.concatenate(cl), np.concatenate(tss)


# ----------------------------------------------------------------------------------------- runs


def run_detector(stream: Stream, det: AdversarialDetector, batch: int = 2000) -> tuple[list[Any], float]:
    assert stream.proba is not None and stream.ood is not None
    alerts: list[Any] = []
    dt = 0.0
    for s in range(0, len(stream.ts), batch):
        e = min(len(stream.ts), s + batch)
        p = stream.proba[s:e]
        b = EventBatch.from_arrays(
            stream.x[s:e],
            ts=stream.ts[s:e],
            client_id=stream.client[s:e],
            event_id=[f"e{i}" for i in range(s, e)],
            proba=p,
            prediction_code=np.argmax(p, axis=1),
        )
        t0 = time.perf_counter()
        alerts.extend(det.update(b, seq=s, ood=stream.ood[s:e]))
        dt += time.perf_counter() - t0
    return alerts, dt


def first_alerts(alerts: list[Any], min_severity: str = "warning") -> dict[str, int]:
    """Per client: the stream position of the first open/update alert (>= min_severity) naming it (a campaign
    alert names every client it lists; ``pane`` is the stream position, ``event_index`` the row in its batch)."""
    rank = {"info": 0, "warning": 1, "critical": 2}
    first: dict[str, int] = {}
    for a in alerts:
        if a.status in ("open", "update") and rank[a.severity] >= rank[min_severity]:
            names = a.evidence.get("clients", []) if a.client_id is None else [a.client_id]
            for c in names:
                first[c] = min(first.get(c, a.pane), a.pane)
    return first


def flags_from_alerts(stream: Stream, first: dict[str, int]) -> npt.NDArray[np.bool_]:
    """Per-event flag: the event's client has been named by an alert (``first_alerts``) at or before the event."""
    n = len(stream.ts)
    pos = defaultdict(list)
    for i, c in enumerate(stream.client):
        pos[c].append(i)
    flag = np.zeros(n, dtype=bool)
    for c, at in first.items():
        idx = np.asarray(pos.get(c, []), dtype=np.int64)
        flag[idx[idx >= at]] = True
    return flag


class StatefulKNN:
    """Chen, Carlini, Wagner 2020: mean raw-L2 distance to the k nearest queries of the account's history."""

    def __init__(self, ref: npt.NDArray[np.float64], k: int = 10, buf: int = 500, fpr: float = 1e-3) -> None:
        self.k, self.buf = k, buf
        d = np.sqrt(((ref[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        knn = np.sort(d, axis=1)[:, :k].mean(1)
        self.thr = float(np.quantile(knn, fpr))
        self.hist: dict[str, list[npt.NDArray[np.float64]]] = defaultdict(list)

    def step(self, c: str, x: npt.NDArray[np.float64]) -> bool:
        h = self.hist[c]
        flag = False
        if len(h) >= self.k:
            d = np.sqrt(((np.asarray(h) - x) ** 2).sum(1))
            flag = bool(np.partition(d, self.k - 1)[: self.k].mean() < self.thr)
        h.append(x)
        if len(h) > self.buf:
            h.pop(0)
        return flag


class Prada:
    """Juuti et al. 2019: per-client minimum distances to earlier queries; Shapiro-Wilk W below delta."""

    def __init__(self, ref: npt.NDArray[np.float64], rng: np.random.Generator, min_n: int = 20) -> None:
        from scipy.stats import shapiro

        self.shapiro = shapiro
        self.min_n = min_n
        ws = []
        for _ in range(200):  # benign accounts simulated from the reference rows
            q = ref[rng.choice(len(ref), int(rng.integers(min_n, 100)), replace=False)]
            dm = [np.sqrt(((q[:j] - q[j]) ** 2).sum(1)).min() for j in range(1, len(q))]
            ws.append(shapiro(dm).statistic)
        self.delta = float(np.quantile(ws, 0.005))
        self.g: dict[str, list[npt.NDArray[np.float64]]] = defaultdict(list)
        self.dmin: dict[str, list[float]] = defaultdict(list)

    def step(self, c: str, x: npt.NDArray[np.float64]) -> bool:
        g = self.g[c]
        if g:
            self.dmin[c].append(float(np.sqrt(((np.asarray(g[-500:]) - x) ** 2).sum(1)).min()))
        g.append(x)
        d = self.dmin[c]
        if len(d) >= self.min_n and len(d) % 5 == 0:
            w = self.shapiro(d[-200:]).statistic
            return bool(w < self.delta)
        return False


class BlacklightLike:
    """Li et al. 2022: quantize, hash sliding windows of the flattened input, keep the top hashes, one global
    index; a query sharing >= T hashes with a stored one is flagged."""

    def __init__(self, step: float = 0.2, window: int = 20, top: int = 30, match: int = 15) -> None:
        self.step, self.window, self.top, self.match = step, window, top, match
        self.index: dict[int, int] = {}
        self.next = 0
        self.mult = np.random.default_rng(7).integers(1, 2**31, size=window, dtype=np.int64)

    def step_(self, x: npt.NDArray[np.float64]) -> bool:
        q = np.floor(x / self.step).astype(np.int64)
        win = np.lib.stride_tricks.sliding_window_view(q, self.window)
        h = np.unique((win * self.mult).sum(1))[-self.top :]
        ids = [self.index.get(int(v)) for v in h]
        cnt: dict[int, int] = defaultdict(int)
        for i in ids:
            if i is not None:
                cnt[i] += 1
        flag = bool(cnt) and max(cnt.values()) >= self.match
        for v in h:
            self.index[int(v)] = self.next
        self.next += 1
        return flag


def run_references(
    stream: Stream, xref: npt.NDArray[np.float64], rng: np.random.Generator
) -> dict[str, npt.NDArray[np.bool_]]:
    knn, prada, bl = StatefulKNN(xref), Prada(xref, rng), BlacklightLike()
    out = {n: np.zeros(len(stream.ts), dtype=bool) for n in ("Stateful k-NN", "PRADA", "Blacklight-like")}
    for i in range(len(stream.ts)):
        c, x = str(stream.client[i]), stream.x[i]
        out["Stateful k-NN"][i] = knn.step(c, x)
        out["PRADA"][i] = prada.step(c, x)
        out["Blacklight-like"][i] = bl.step_(x)
    return out


# ----------------------------------------------------------------------------------------- metrics


def per_attack(
    stream: Stream, flags: npt.NDArray[np.bool_], client_first: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Per attack: detection rate (an instance counts once any of its accounts is named), queries before the
    first alert (median, p90, over detected instances: the instance's queries up to the alert's position),
    share of attack queries flagged. ``client_first``: each client's first alert position; without it (the
    per-query reference detectors), each client's first flagged query."""
    res: dict[str, dict[str, Any]] = {}
    is_attack = ~np.char.startswith(stream.group.astype(str), "benign") & (stream.group != "flood")
    groups = sorted(set(stream.group[is_attack].tolist()))
    if client_first is None:
        client_first = {}
        for i in np.flatnonzero(flags):
            client_first.setdefault(str(stream.client[i]), int(i))
    for g in groups:
        m = (stream.group == g) & (stream.qidx >= 0)
        delays, det, n_inst = [], 0, 0
        for inst in sorted(set(stream.inst[m].tolist())):
            mi = np.flatnonzero(m & (stream.inst == inst))
            n_inst += 1
            # first alert on any of the instance's accounts (it may fire on a mixed-in benign query)
            clients = set(stream.client[mi].tolist())
            firsts = [client_first[c] for c in clients if c in client_first]
            if firsts:
                det += 1
                f = min(firsts)
                delays.append(int((mi <= f).sum()))
        res[g] = {
            "instances": n_inst,
            "detected": det,
            "queries": int(m.sum()),
            "median": float(np.median(delays)) if delays else float("nan"),
            "p90": float(np.quantile(delays, 0.9)) if delays else float("nan"),
            "flagged_share": float(flags[m].mean()) if m.any() else float("nan"),
        }
    return res


def campaign_summary(stream: Stream, alerts: list[Any]) -> str:
    """Campaign alerts against the attack instances whose accounts they list: how many campaigns (opened
    incidents) each caught instance got, whether a campaign mixed instances, and benign accounts listed."""
    owner: dict[str, str] = {}
    for c, g, i in zip(stream.client.tolist(), stream.group.tolist(), stream.inst.tolist(), strict=True):
        owner.setdefault(str(c), "benign" if str(g).startswith("benign") or g == "flood" else f"{g}-{i}")
    members: dict[str, set[str]] = defaultdict(set)
    n_updates = 0
    for a in alerts:
        if a.client_id is None:
            members[a.evidence["campaign"]].update(a.evidence["clients"])
            n_updates += a.status == "update"
    per_inst: dict[str, int] = defaultdict(int)
    mixed = benign = 0
    for names in members.values():
        owners = {owner.get(c, "benign") for c in names}
        benign += sum(owner.get(c, "benign") == "benign" for c in names)
        inst = owners - {"benign"}
        mixed += len(inst) > 1
        for o in inst:
            per_inst[o] += 1
    by_attack: dict[str, int] = defaultdict(int)
    for o in per_inst:
        by_attack[o.rsplit("-", 1)[0]] += 1
    return (
        f"{len(members)} campaigns ({n_updates} updates) for {len(per_inst)} attack instances "
        f"({', '.join(f'{k} {v}/{N_TARGETS}' for k, v in sorted(by_attack.items())) or 'none'}); campaigns per "
        f"caught instance: max {max(per_inst.values(), default=0)}; campaigns mixing instances: {mixed}; "
        f"benign accounts listed: {benign}"
    )


def benign_stats(stream: Stream, flags: npt.NDArray[np.bool_]) -> dict[str, Any]:
    m = np.char.startswith(stream.group.astype(str), "benign")
    clients = set(stream.client[m].tolist())
    flagged = {str(c) for c in stream.client[m & flags]}
    per_type = {}
    for t in sorted(set(stream.group[m].tolist())):
        mt = stream.group == t
        per_type[t] = (len({str(c) for c in stream.client[mt & flags]}), len(set(stream.client[mt].tolist())))
    return {
        "accounts": len(clients),
        "flagged": len(flagged),
        "query_rate": float(flags[m].mean()),
        "per_type": per_type,
    }


# ----------------------------------------------------------------------------------------- perf


def perf(
    art: AdversarialArtifact, xte: npt.NDArray[np.float64], probs: npt.NDArray[np.float64], quick: bool
) -> dict[str, float]:
    rng = np.random.default_rng(1)
    out: dict[str, float] = {}
    n_active = 100_000
    n = 200_000 if quick else 1_000_000
    bs = 10_000
    det = AdversarialDetector(art, max_clients=2 * n_active, salt=b"bench-salt")
    rows = rng.integers(0, len(xte), n)
    x = np.clip(xte[rows] + rng.normal(0, 0.05, (n, 64)), 0, 1)
    p = probs[rows]
    cl = np.array([f"client-{i}" for i in range(n_active)], dtype=object)[rng.integers(0, n_active, n)]
    ts = np.sort(rng.integers(0, 3_600_000, n))
    batches = [
        EventBatch.from_arrays(
            x[s : s + bs],
            ts=ts[s : s + bs],
            client_id=cl[s : s + bs],
            proba=p[s : s + bs],
            prediction_code=p[s : s + bs].argmax(1),
            event_id=[f"e{i}" for i in range(s, min(n, s + bs))],
        )
        for s in range(0, n, bs)
    ]
    # warm: every client tracked
    warm = EventBatch.from_arrays(
        x[:n_active],
        ts=np.zeros(n_active, dtype=np.int64),
        client_id=np.array([f"client-{i}" for i in range(n_active)], dtype=object),
        proba=p[:n_active],
        prediction_code=p[:n_active].argmax(1),
    )
    det.update(warm, seq=0)
    gc.collect()
    # CPU time of this process, not wall time: the machine is shared, and both sides of the ratio are
    # measured the same way in the same run
    t0 = time.process_time()
    for k, b in enumerate(batches):
        det.update(b, seq=n_active + k * bs)
    out["update_eps"] = n / (time.process_time() - t0)
    out["active_clients"] = float(det.n_clients)
    # json.loads of the same events as inference-event lines
    names = [f"f{j:02d}" for j in range(64)]
    lines = [
        json.dumps(
            {
                "event_id": f"e{i}",
                "ts": int(ts[i]),
                "model_id": "m",
                "client_id": str(cl[i]),
                "features": dict(zip(names, x[i].round(6).tolist(), strict=True)),
                "prediction": str(int(p[i].argmax())),
                "probabilities": {str(k): round(float(v), 6) for k, v in enumerate(p[i])},
            }
        )
        for i in range(20_000)
    ]
    t0 = time.process_time()
    parsed = [json.loads(s) for s in lines]
    arr = np.array([list(d["features"].values()) for d in parsed])
    out["json_eps"] = len(lines) / (time.process_time() - t0)
    assert arr.shape == (20_000, 64)
    del det, batches
    gc.collect()
    # memory: 1,000,000 tracked clients
    n_mem = 200_000 if quick else 1_000_000
    rss0 = _rss()
    det = AdversarialDetector(art, max_clients=n_mem, salt=b"bench-salt")
    bs = 50_000
    for s in range(0, n_mem, bs):
        ids = np.array([f"client-{i}" for i in range(s, s + bs)], dtype=object)
        r = rng.integers(0, len(xte), bs)
        b = EventBatch.from_arrays(
            xte[r], ts=np.full(bs, s, dtype=np.int64), client_id=ids, proba=probs[r], prediction_code=probs[r].argmax(1)
        )
        det.update(b, seq=s)
    gc.collect()
    out["mem_clients"] = float(det.n_clients)
    out["memory_bytes"] = float(det.memory_bytes())
    out["rss_delta"] = float(_rss() - rss0)
    out["bytes_per_slot"] = det.bytes_per_client()
    return out


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller perf runs, no reference detectors")
    ap.add_argument("--jsonl", type=Path, help="also write the single-account stream as JSONL here")
    args = ap.parse_args()
    t_start = time.perf_counter()
    clf, xtr, xref, xte, yte, _ = victim()
    logs = attack_logs()
    rng = np.random.default_rng(SEED)
    cr, tr = reference_log(rng)
    art = AdversarialArtifact.fit(xref, clf.predict_proba(xref), client_id=cr, ts=tr, seed=0)
    maha = Mahalanobis(xtr, xref)
    horizon = 3600.0
    rows: list[tuple[str, str, dict[str, Any]]] = []
    benign_rows: list[tuple[str, str, dict[str, Any]]] = []
    info_notes: dict[str, int] = {}
    campaign_rows: list[tuple[str, int, int]] = []
    campaign_notes: dict[str, str] = {}
    flood_rows: list[tuple[str, bool, float]] = []
    stream_sizes = {}
    t_det = 0.0
    n_det = 0
    for variant in ("single", "split10", "split100", "mixed"):
        vr = np.random.default_rng(SEED + zlib.crc32(variant.encode()) % 97)
        parts = benign_parts(xte, yte, vr, horizon) + attack_parts(logs, variant, xte, vr, horizon)
        parts.append(flood_part(xte, vr))
        st = assemble(parts)
        st.proba = clf.predict_proba(np.clip(st.x, 0, 1))
        st.ood = maha.flag(st.x)
        stream_sizes[variant] = len(st.ts)
        if variant == "single" and args.jsonl:
            write_jsonl(st, args.jsonl)
        det = AdversarialDetector(
            art,
            max_clients=50_000,
            salt=b"bench-salt",
            pseudonymize_key=None,
            **json.loads(os.environ.get("BENCH_DETECTOR_KW", "{}")),
        )
        alerts, dt = run_detector(st, det)
        t_det += dt
        n_det += len(st.ts)
        named = first_alerts(alerts)
        flag = flags_from_alerts(st, named)
        if os.environ.get("BENCH_DEBUG"):
            ben = {str(c) for c in st.client[np.char.startswith(st.group.astype(str), "benign")]}
            from collections import Counter

            print(
                variant,
                Counter(
                    (a.kind, a.statistic, a.severity, str(a.client_id).split("-")[0])
                    for a in alerts
                    if a.status == "open" and a.client_id in ben
                ),
            )
            for a in alerts:
                if a.client_id is None and set(a.evidence["clients"]) & ben:
                    print("  campaign", a.status, a.evidence["campaign"], sorted(a.evidence["clients"])[:12])
        named_info = first_alerts(alerts, "info")
        methods: dict[str, npt.NDArray[np.bool_]] = {
            "inferwatch": flag,
            "inferwatch, info too": flags_from_alerts(st, named_info),
        }
        if not args.quick:
            methods.update(run_references(st, xref, np.random.default_rng(3)))
        firsts = {"inferwatch": named, "inferwatch, info too": named_info}
        for mname, fl in methods.items():
            for g, r in per_attack(st, fl, firsts.get(mname)).items():
                rows.append((variant, f"{g}|{mname}", r))
            benign_rows.append((variant, mname, benign_stats(st, fl)))
        info = [a for a in alerts if a.severity == "info" and a.status == "open"]
        info_notes[variant] = len({a.client_id for a in info if a.client_id is not None})
        camps = [a for a in alerts if a.client_id is None and a.status == "open"]
        for a in camps:
            campaign_rows.append((variant, int(a.evidence["n_clients"]), int(a.pane)))
        campaign_notes[variant] = campaign_summary(st, alerts)
        fl_alerts = [a for a in alerts if a.kind == "query_flood" and a.status == "open"]
        flood_rows.append(
            (
                variant,
                any(a.client_id == "flooder-0" for a in fl_alerts),
                float(len({a.client_id for a in fl_alerts} - {"flooder-0"})),
            )
        )
        print(f"{variant}: {len(st.ts)} events, {len(alerts)} alerts, detector {len(st.ts) / dt:,.0f} ev/s", flush=True)
    if os.environ.get("BENCH_NOPERF"):  # detection tables only
        pf = dict.fromkeys(
            ("update_eps", "json_eps", "active_clients", "mem_clients", "memory_bytes", "rss_delta", "bytes_per_slot"),
            float("nan"),
        )
    else:
        pf = perf(art, xte, clf.predict_proba(xte), args.quick)
    report(
        rows,
        benign_rows,
        info_notes,
        campaign_rows,
        campaign_notes,
        flood_rows,
        stream_sizes,
        pf,
        art,
        logs,
        time.perf_counter() - t_start,
        args.quick,
    )


def report(
    rows: Any,
    benign_rows: Any,
    info_notes: Any,
    campaign_rows: Any,
    campaign_notes: dict[str, str],
    flood_rows: Any,
    sizes: Any,
    pf: dict[str, float],
    art: AdversarialArtifact,
    logs: Any,
    wall: float,
    quick: bool,
) -> None:
    import numpy
    import scipy
    import sklearn

    try:
        import art as art_pkg

        art_v = art_pkg.__version__
    except Exception:
        art_v = "?"
    L: list[str] = []
    L.append("# Adversarial-query detection benchmark\n")
    L.append(
        f"Generated by `benchmarks/bench_adversarial.py{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; wall time {wall:.0f} s.\n"
    )
    L.append(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; Python "
        f"{platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}, scikit-learn "
        f"{sklearn.__version__}, ART {art_v}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}.\n"
    )
    L.append(
        "Victim: MLPClassifier(64 hidden) on sklearn digits (64 features scaled to [0, 1]). Attack budgets per "
        "attacked sample (6 per attack): "
        + ", ".join(f"{k} {int(np.mean([len(a) for a in v]))} queries" for k, v in logs.items())
        + ".\n"
    )
    L.append(
        f"Calibrated thresholds (from reference traffic only): tau_near {art.tau_near:.3f}, tau_knn "
        f"{art.tau_knn:.3f}, tau_close {art.tau_close:.3f} (benign rate {art.p_close:.3f}), |cos| line "
        f"{art.cos_line:.3f}, margin_low {art.margin_low:.3f}, rate ceiling {art.rate_max:.2f}/s; structured steps: "
        f"a share >= {art.struct_share:.2f} moved by one amount or 1 to {art.struct_coords} coordinates changed, "
        f"probe hits: 1 to {art.probe_blocks} blocks changed (capped by the detector's probe_blocks).\n"
    )
    L.append("Streams per variant (events): " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + ".\n")
    L.append("\n## Attacks\n")
    L.append(
        "Detection = instance (attacked sample) has a warning/critical alert naming one of its accounts, or a "
        "campaign alert listing one. Queries = the attack's own queries up to the event the first such alert fired "
        "at (for the per-query reference detectors: the first flagged query). Share flagged = the attack's queries "
        "sent by an account already named. *Info too* (and *inferwatch, info too* below): `info` records count as "
        "well (a campaign linked by "
        "out-of-distribution walk steps alone, before it shows class flips, probe hits, steady progress or accounts "
        "sending nothing else; natural-data extraction notes on heavy clients).\n"
    )
    L.append("| variant | attack | method | detected | median q | p90 q | share flagged | info too: detected, q |")
    L.append("|---|---|---|---|---|---|---|---|")
    info_too = {(v, k.split("|")[0]): r for v, k, r in rows if k.endswith("|inferwatch, info too")}
    for variant, key, r in rows:
        g, m = key.split("|")
        if m == "inferwatch, info too":
            continue
        i = info_too.get((variant, g)) if m == "inferwatch" else None
        extra = f"{i['detected']}/{i['instances']}, {i['median']:.0f}" if i else ""
        L.append(
            f"| {variant} | {g} | {m} | {r['detected']}/{r['instances']} | {r['median']:.0f} | {r['p90']:.0f} "
            f"| {r['flagged_share']:.2f} | {extra} |"
        )
    L.append("\n## Benign accounts\n")
    L.append("| variant | method | accounts flagged | per-query flag rate | by type (flagged/accounts) |")
    L.append("|---|---|---|---|---|")
    for variant, m, b in benign_rows:
        bt = ", ".join(f"{k[7:]} {a}/{n}" for k, (a, n) in b["per_type"].items())
        L.append(f"| {variant} | {m} | {b['flagged']}/{b['accounts']} | {b['query_rate']:.4f} | {bt} |")
    L.append(
        "\nInfo-level notes (natural-data extraction: heavy + all classes evenly), accounts: "
        + ", ".join(f"{k} {v}" for k, v in info_notes.items())
        + " (expected: the 5 heavy benign clients and"
        " the flooder; info is not counted as flagged).\n"
    )
    L.append("\n## Campaigns and floods\n")
    by_v: dict[str, list[int]] = defaultdict(list)
    for v, n, _ in campaign_rows:
        by_v[v].append(n)
    for v in sizes:
        L.append(f"- {v}: {len(by_v[v])} campaign alerts, clients listed per campaign: {sorted(by_v[v])}")
    L.append("")
    for v in sizes:
        L.append(f"- {v}: {campaign_notes.get(v, '')}")
    for v, ok, other in flood_rows:
        L.append(f"- {v}: flooder (50/s) flagged: {ok}; other accounts with query_flood: {other:.0f}")
    L.append("\n## Throughput and memory\n")
    L.append(
        f"- update with {pf['active_clients']:,.0f} tracked/active clients, batches of 10,000, 64 features: "
        f"**{pf['update_eps']:,.0f} events/s** (CPU time); json.loads of the same events (parse + features to "
        f"array): {pf['json_eps']:,.0f} events/s (ratio {pf['update_eps'] / pf['json_eps']:.1f}x)."
    )
    L.append(
        f"- {pf['mem_clients']:,.0f} tracked clients: memory_bytes {pf['memory_bytes'] / 2**20:,.0f} MiB, RSS "
        f"delta {pf['rss_delta'] / 2**20:,.0f} MiB ({pf['rss_delta'] / max(pf['mem_clients'], 1):,.0f} B per "
        f"client incl. id map and global index); fixed arrays {pf['bytes_per_slot']:.0f} B per client slot."
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(L) + "\n", encoding="utf-8")
    print("\n".join(L))


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    main()
