"""Benign traffic of other shapes than the digits benchmark's, through AdversarialDetector: false alarms.

Each trial fits the artifact on a synthetic model's reference traffic (with the reference clients' ids and times
where a baseline built from reference events would have them) and sends benign clients of the same kind. A client
is *named* when a warning or critical ``evasion_probing`` or ``model_extraction`` alert, or a campaign alert
listing it, names it (``query_flood`` is left out: the trials' rates are arbitrary). Also tells what the
calibration found (structured-step, probe, line and flip limits). Seeded; about a minute. Writes
benchmarks/results/benign_shapes.md.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_benign_shapes.py
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detector.adversarial import AdversarialArtifact, AdversarialDetector  # noqa: E402
from detector.schema import EventBatch  # noqa: E402

F64 = npt.NDArray[np.float64]
HOUR_MS = 3_600_000


@dataclass
class Traffic:
    x: F64
    proba: F64
    client: npt.NDArray[np.object_]
    ts: npt.NDArray[np.int64]


def softmax(z: F64) -> F64:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def linear_model(rows: Callable[[np.random.Generator, int], F64], k: int, seed: int) -> Callable[[F64], F64]:
    """A fixed softmax-linear model over ``rows``' features, standardized by a sample of 100 clients' rows."""
    rng = np.random.default_rng(seed)
    sample = np.concatenate([rows(rng, 20) for _ in range(100)])
    mean, std = sample.mean(axis=0), sample.std(axis=0) + 1e-9
    w = rng.normal(size=(sample.shape[1], k))

    def proba(x: F64) -> F64:
        return softmax((x - mean) / std @ w)

    return proba


def client(rows: Callable[[np.random.Generator, int], F64], per: int, gap_ms: int, proba: Callable[[F64], F64],
           seed: int, name: str) -> Traffic:  # fmt: skip
    """One client sending ``per`` rows (one sequence from ``rows``), ``gap_ms`` apart, from a random start within
    the hour."""
    rng = np.random.default_rng(seed)
    x = rows(rng, per)
    ts = int(rng.integers(0, HOUR_MS)) + np.arange(per, dtype=np.int64) * gap_ms
    return Traffic(x, proba(x), np.full(per, name, dtype=object), ts)


# ----------------------------------------------------------------------------------------- the trials


def flags(lo: float, hi: float) -> Callable[[np.random.Generator, int], F64]:
    rate = np.random.default_rng(5).uniform(lo, hi, (4, 32))

    def rows(rng: np.random.Generator, n: int) -> F64:
        y = rng.integers(0, 4, n)
        return (rng.random((n, 32)) < rate[y]).astype(np.float64)

    return rows


def counts(rng: np.random.Generator, n: int) -> F64:
    return rng.poisson(2.0 + rng.integers(0, 4, n)[:, None], (n, 32)).astype(np.float64)


def amounts(rng: np.random.Generator, n: int) -> F64:
    return np.round(rng.lognormal(11.0 + 0.2 * rng.integers(0, 4, n)[:, None], 1.0, (n, 32)))


def gaussian(f: int) -> Callable[[np.random.Generator, int], F64]:
    def rows(rng: np.random.Generator, n: int) -> F64:
        return rng.normal(size=(n, f))

    return rows


def sensor(kind: str) -> Callable[[np.random.Generator, int], F64]:
    """One device's readings, one a second."""

    def rows(rng: np.random.Generator, n: int) -> F64:
        if kind == "walk":
            return np.cumsum(rng.normal(0, 0.05, (n, 8)), axis=0) + rng.normal(size=8) + rng.normal(0, 0.01, (n, 8))
        if kind == "oscillation":
            t = np.arange(n)[:, None] * 0.05
            return np.sin(t * rng.uniform(0.5, 2.0, 8) + rng.uniform(0, 6, 8)) + rng.normal(0, 0.02, (n, 8))
        # warming up: every reading moves a little along one direction
        return rng.normal(size=8) + np.arange(n)[:, None] * 0.01 * rng.normal(size=8) + rng.normal(0, 0.005, (n, 8))

    return rows


def session(rng: np.random.Generator, n: int) -> F64:
    """A user re-scored every minute while a session runs: 'minutes in session' ticks up by one."""
    base = rng.normal(size=12)
    x = np.repeat(base[None], n, axis=0)
    x[:, 0] = np.arange(n)
    if rng.random() < 0.5:
        x[:, 1] = np.round(rng.normal(size=n), 1)
    return x


def bag_of_words(rng: np.random.Generator, n: int) -> F64:
    topic = np.random.default_rng(6).dirichlet(np.full(1000, 0.05), 4)
    y, length = rng.integers(0, 4, n), rng.poisson(30, n)
    return np.stack([rng.multinomial(length[i], topic[y[i]]) for i in range(n)]).astype(np.float64)


def customers(rng: np.random.Generator, n: int) -> F64:
    """4 coarse numeric bands (the columns the detector sees), then 3 categorical fields as codes (the model's
    input too, not the detector's), which decide the class."""
    return np.hstack([rng.integers(0, 3, (n, 4)), rng.integers(0, 5, (n, 3))]).astype(np.float64)


def customer_model(x: F64) -> F64:
    fields = x[:, 4:]
    logits = np.stack([fields[:, 0] == 0, fields[:, 1] == 1, fields[:, 2] >= 3], 1) * 3.0 + x[:, :3] * 0.2
    return softmax(logits)


@dataclass
class Trial:
    name: str
    rows: Callable[[np.random.Generator, int], F64]
    proba: Callable[[F64], F64]
    ref_per: int  # rows per reference client (the reference: 100 clients)
    live_per: int
    live_clients: int = 300
    gap_ms: int = 10_000
    with_ids: bool = True  # the reference carries its clients' ids and times
    seen: int | None = None  # the detector sees the first ``seen`` columns (None: all)
    expect_named: bool = False  # a case shown for contrast: it names clients


def linear(name: str, rows: Callable[[np.random.Generator, int], F64], k: int, seed: int, *args: Any,
           **kw: Any) -> Trial:  # fmt: skip
    """A trial of ``rows`` scored by a fixed linear model with ``k`` classes (:func:`linear_model`)."""
    return Trial(name, rows, linear_model(rows, k, seed), *args, **kw)


def trials() -> list[Trial]:
    return [
        linear("binary flags (32)", flags(0.1, 0.9), 4, 1, 30, 40),
        linear("rare flags (32)", flags(0.01, 0.12), 4, 1, 30, 40),
        linear("small counts (32)", counts, 4, 1, 30, 40),
        linear("amounts in cents (32, beyond float16)", amounts, 4, 1, 30, 40),
        linear("1 feature", gaussian(1), 3, 2, 30, 40),
        linear("2 features", gaussian(2), 3, 2, 30, 40),
        linear("3 features", gaussian(3), 3, 2, 30, 40),
        linear("sensors: slow random walk (8)", sensor("walk"), 3, 3, 60, 200, 200, 1000),
        linear("sensors: slow oscillation (8)", sensor("oscillation"), 3, 3, 60, 200, 200, 1000),
        linear("sensors: warm-up ramp (8)", sensor("ramp"), 3, 3, 60, 200, 200, 1000),
        linear("sessions re-scored each minute (12)", session, 3, 4, 30, 40, 300, 60_000),
        linear(
            "sessions, reference without client ids", session, 3, 4, 30, 40, 300, 60_000,
            with_ids=False, expect_named=True,
        ),
        linear("bag of words (1,000 counts)", bag_of_words, 4, 5, 30, 20, 300),
        Trial(
            "partners scoring customers, class decided by fields the detector does not see (4 bands)",
            customers, customer_model, 30, 400, 50, 1000, seen=4,
        ),
    ]  # fmt: skip


def reference(t: Trial) -> tuple[F64, F64, npt.NDArray[np.object_] | None, npt.NDArray[np.int64] | None]:
    parts = [client(t.rows, t.ref_per, t.gap_ms, t.proba, 1000 + c, f"ref{c}") for c in range(100)]
    x = np.concatenate([p.x for p in parts])[:, : t.seen]
    proba = np.concatenate([p.proba for p in parts])
    if not t.with_ids:
        return x, proba, None, None
    return x, proba, np.concatenate([p.client for p in parts]), np.concatenate([p.ts for p in parts])


def live(t: Trial) -> Traffic:
    parts = [client(t.rows, t.live_per, t.gap_ms, t.proba, c, f"c{c}") for c in range(t.live_clients)]
    x = np.concatenate([p.x for p in parts])[:, : t.seen]
    tr = Traffic(
        x,
        np.concatenate([p.proba for p in parts]),
        np.concatenate([p.client for p in parts]),
        np.concatenate([p.ts for p in parts]),
    )
    o = np.argsort(tr.ts, kind="stable")
    return Traffic(tr.x[o], tr.proba[o], tr.client[o], tr.ts[o])


def run(t: Trial) -> dict[str, object]:
    x, proba, cid, ts = reference(t)
    t0 = time.perf_counter()
    art = AdversarialArtifact.fit(x, proba, client_id=cid, ts=ts)
    fit_s = time.perf_counter() - t0
    tr = live(t)
    det = AdversarialDetector(art, salt=b"bench-salt", max_clients=50_000)
    alerts = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(0, len(tr.x), 5000):
            e = slice(s, s + 5000)
            b = EventBatch.from_arrays(tr.x[e], client_id=tr.client[e], ts=tr.ts[e], proba=tr.proba[e])
            alerts += det.update(b, seq=s)
    named: dict[str, set[str]] = {"evasion_probing": set(), "model_extraction": set()}
    for a in alerts:
        if a.kind in named and a.severity in ("warning", "critical"):
            names = a.evidence.get("clients") if a.client_id is None else [a.client_id]
            named[a.kind].update(str(n) for n in names or [])
    return {
        "events": len(tr.x),
        "clients": t.live_clients,
        "evasion": len(named["evasion_probing"]),
        "extraction": len(named["model_extraction"]),
        "campaigns": sum(1 for a in alerts if a.client_id is None and a.status == "open" and a.severity != "info"),
        "warnings": len(caught),
        "limits": (
            f"share {art.struct_share:.2f}, coords {art.struct_coords}, blocks {art.probe_blocks}, "
            f"cos_line {art.cos_line:.2f}, p_flip {art.p_flip:.2f}, p_close {art.p_close:.2f}"
        ),
        "fit_s": fit_s,
    }


def main() -> None:
    t0 = time.perf_counter()
    rows = []
    for t in trials():
        r = run(t)
        rows.append((t, r))
        print(f"{t.name}: evasion {r['evasion']}, extraction {r['extraction']} of {r['clients']}", flush=True)
    import subprocess

    import numpy
    import scipy

    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "detector"], capture_output=True, text=True, cwd=ROOT)

    lines = [
        "# Benign traffic of other shapes: false alarms of the adversarial detector\n",
        f"Generated by `benchmarks/bench_benign_shapes.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"wall time {time.perf_counter() - t0:.0f} s.\n",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; Python "
        f"{platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}; commit "
        f"{commit.stdout.strip() or '?'}, uncommitted changes in detector/: "
        f"{'yes' if dirty.stdout.strip() else 'none'}.\n",
        "Each trial: a synthetic model, 100 reference clients (their ids and times given to the calibration, as a "
        "baseline built from reference events with client ids has them, unless said), then benign live clients of "
        "the same kind. *Named*: accounts named by a warning or critical `evasion_probing` or `model_extraction` "
        "alert, or listed by such a campaign alert (floods left out: the trials' rates are arbitrary). Every "
        "figure should be 0, except in the row marked *contrast*: without the reference clients' own sequences, "
        "users re-scored every minute look like synthetic extraction (`inferwatch baseline build` warns when "
        "reference events lack client ids).\n",
        "| benign traffic | events | clients | named for evasion | named for extraction | campaigns | "
        "RuntimeWarnings | calibration found |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t, r in rows:
        name = t.name + (" (*contrast*)" if t.expect_named else "")
        lines.append(
            f"| {name} | {r['events']:,} | {r['clients']} | {r['evasion']} | {r['extraction']} | "
            f"{r['campaigns']} | {r['warnings']} | {r['limits']} |"
        )
    out = ROOT / "benchmarks" / "results" / "benign_shapes.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
