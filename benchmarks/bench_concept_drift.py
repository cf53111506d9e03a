"""Concept-drift detection of inferwatch's monitor against river's drift detectors, on river's datasets.

Run from the repository root with the project venv (scripts/setup.sh)::

    .venv/bin/python benchmarks/bench_concept_drift.py            # full run: 3 seeds per generator, 23 min at load ~6
    .venv/bin/python benchmarks/bench_concept_drift.py --quick    # 1 seed, shorter streams, ~1-2 min
    .venv/bin/python benchmarks/bench_concept_drift.py --only sea_abrupt,rbf_abrupt --seeds 1

For each stream (a river concept-drift generator with a known drift position, or one of river's bundled
labelled datasets) one run, per seed:

1. draws ``train + reference + stream`` examples, in order;
2. fits a scikit-learn ``HistGradientBoostingClassifier`` on the first ``train`` examples (the pre-drift
   model);
3. turns the next ``reference`` examples into inference events (features, prediction, class probabilities,
   label) and builds a baseline from them with :func:`baselines.build.build_baseline`, as
   ``inferwatch baseline build`` would;
4. streams the remaining ``stream`` events through the monitor the service builds
   (:func:`streams.pipeline.build_monitor`, default :class:`streams.config.Settings`) twice: with the labels
   inline (so ``performance_drop`` can fire on actual accuracy) and without labels (the CBPE estimate and
   input/output drift only);
5. runs river's detectors on the same stream: ``ADWIN``, ``PageHinkley``, ``binary.DDM`` and
   ``binary.HDDMA`` on the model's 0/1 error stream (they need labels), and ``ADWIN`` and ``KSWIN`` on the
   model's confidence (label-free; KSWIN costs ~2 ms per event, so it runs on the first seed only).

Per detector it reports the delay (first alert at or after the drift position, minus the position; alerts
are the ``open`` records of our incidents, every detection for river), how many seeds detected the drift,
and false alerts: anything before the drift's transition starts (``position - width``). Streams without a
known drift count every alert, and say so.

Results go to ``benchmarks/results/concept_drift.md`` and ``concept_drift.json`` (``--quick``, ``--only``
and ``--seeds`` runs write to ``.cache/bench/results/`` unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 20261128
MODEL_ID = "concept-drift-bench"
TS0 = 1_790_000_000_000  # epoch ms of the first event; one event per second
CHUNK = 1_000  # events per ModelMonitor.update call
KSWIN_SEEDS = 1  # KSWIN runs on this many seeds only (~2 ms per update)

Example = tuple[dict[Any, Any], Any]
F64 = npt.NDArray[np.float64]


def log(msg: str) -> None:
    sys.stderr.write(f"[bench_concept_drift {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ============================================================================================== streams


@dataclass(frozen=True)
class StreamSpec:
    """One benchmark stream: how to draw it, where its drift is, and what kind of drift it is.

    ``drift_at`` and ``width`` are in stream coordinates (0 = first event after the reference); ``width``
    is river's ``ConceptDriftStream`` width (1 = abrupt). ``drift`` says what changes: ``real`` (P(y|x)
    only, the inputs keep their distribution), ``virtual`` (P(x) only, same labelling rule), ``both``, or
    ``none`` known.
    """

    name: str
    description: str
    drift: str
    make: Callable[[int], Iterable[Example]]
    train: int = 5_000
    reference: int = 5_000
    stream: int = 20_000
    drift_at: int | None = 10_000
    width: int = 1
    categorical: tuple[str, ...] = ()
    seeded: bool = True  # False: a fixed dataset, one run whatever --seeds says

    @property
    def total(self) -> int:
        return self.train + self.reference + self.stream

    @property
    def position(self) -> int:
        """river's ``position`` for this spec: its sigmoid is 0.5 at our ``drift_at`` (river counts from 1)."""
        assert self.drift_at is not None
        return self.train + self.reference + self.drift_at + 1

    @property
    def clean_until(self) -> int:
        """Stream index before which the old concept holds (>98% of examples): alerts before it are false."""
        if self.drift_at is None:
            return self.stream
        return self.drift_at if self.width <= 1 else self.drift_at - self.width


def _concept_drift(spec_position: Callable[[], int], width: int, old: Any, new: Any, seed: int) -> Iterable[Example]:
    from river.datasets import synth

    position = spec_position()
    if width <= 1:
        # river's ConceptDriftStream computes exp(-4 (t - position) / width), which overflows (OverflowError)
        # once |t - position| > ~177 width: it cannot make an abrupt drift this far into a stream. Its
        # sigmoid at width 1 is a switch at ``position`` anyway, so switch generators there.
        return _switch(old, new, position - 1)
    it: Iterable[Example] = synth.ConceptDriftStream(
        stream=old, drift_stream=new, position=position, width=width, seed=seed
    )
    return it


def _switch(old: Iterable[Example], new: Iterable[Example], at: int) -> Iterator[Example]:
    """The first ``at`` examples of ``old``, then ``new``."""
    yield from islice(old, at)
    yield from new


def _sea_covariate_shift(seed: int, start: int) -> Iterator[Example]:
    """river's SEA (variant 0), keeping 9 in 10 examples with x0 < 5 out from ``start`` on: P(x) changes,
    the labelling rule does not (a purely virtual drift)."""
    from river.datasets import synth

    rng = random.Random(seed + 7)
    for i, (x, y) in enumerate(synth.SEA(variant=0, seed=seed)):
        # Rejection keeps the labelling function; examples are indexed by draw, so count kept ones.
        if i >= start and x[0] < 5 and rng.random() < 0.9:
            continue
        yield x, y


def _river_file(name: str) -> Callable[[int], Iterable[Example]]:
    def make(seed: int) -> Iterable[Example]:
        from river import datasets

        ds: Iterable[Example] = getattr(datasets, name)()
        return ds

    return make


def stream_specs(quick: bool) -> list[StreamSpec]:
    """Every stream of the benchmark (``quick``: shorter, same drift layout)."""
    from river.datasets import synth

    train, ref, n, at, wide = (3_000, 3_000, 10_000, 5_000, 1_000) if quick else (5_000, 5_000, 20_000, 10_000, 2_000)
    specs: list[StreamSpec] = []

    def add(name: str, desc: str, drift: str, old: Callable[[int], Any], new: Callable[[int], Any], width: int = 1,
            categorical: tuple[str, ...] = ()) -> None:  # fmt: skip
        holder: list[StreamSpec] = []

        def make(seed: int) -> Iterable[Example]:
            return _concept_drift(lambda: holder[0].position, width, old(seed), new(seed), seed)

        spec = StreamSpec(name, desc, drift, make, train, ref, n, at, width, categorical)
        holder.append(spec)
        specs.append(spec)

    add(
        "sea_abrupt",
        "SEA variant 0 → 2 (threshold 8 → 7), abrupt",
        "real",
        lambda s: synth.SEA(variant=0, seed=s),
        lambda s: synth.SEA(variant=2, seed=s + 1),
    )
    add(
        "sea_gradual",
        f"SEA variant 0 → 2, gradual (width {wide:,})",
        "real",
        lambda s: synth.SEA(variant=0, seed=s),
        lambda s: synth.SEA(variant=2, seed=s + 1),
        wide,
    )
    agrawal_cat = ("elevel", "car", "zipcode")
    add(
        "agrawal_abrupt",
        "Agrawal function 0 → 2, abrupt",
        "real",
        lambda s: synth.Agrawal(0, seed=s),
        lambda s: synth.Agrawal(2, seed=s + 1),
        categorical=agrawal_cat,
    )
    add(
        "agrawal_gradual",
        f"Agrawal function 0 → 2, gradual (width {wide:,})",
        "real",
        lambda s: synth.Agrawal(0, seed=s),
        lambda s: synth.Agrawal(2, seed=s + 1),
        wide,
        agrawal_cat,
    )
    add(
        "hyperplane_abrupt",
        "Hyperplane, 10 features: new random weights, abrupt",
        "real",
        lambda s: synth.Hyperplane(seed=s),
        lambda s: synth.Hyperplane(seed=s + 1000),
    )
    add(
        "sine_abrupt",
        "Sine function 0 → 2 (SINE1 → SINE2), abrupt",
        "real",
        lambda s: synth.Sine(0, seed=s),
        lambda s: synth.Sine(2, seed=s + 1),
    )
    add(
        "stagger_abrupt",
        "STAGGER function 0 → 1 (3 categorical features), abrupt",
        "real",
        lambda s: synth.STAGGER(0, seed=s),
        lambda s: synth.STAGGER(1, seed=s + 1),
        categorical=("size", "color", "shape"),
    )
    add(
        "rbf_abrupt",
        "RandomRBF, 10 features, 20 centroids: new centroids, abrupt",
        "both",
        lambda s: synth.RandomRBF(seed_model=s, seed_sample=s, n_centroids=20),
        lambda s: synth.RandomRBF(seed_model=s + 1000, seed_sample=s + 1, n_centroids=20),
    )
    add(
        "rbf_incremental",
        "RandomRBF → RandomRBFDrift (same centroids, then moving at speed 1e-4)",
        "both",
        lambda s: synth.RandomRBF(seed_model=s, seed_sample=s, n_centroids=20),
        lambda s: synth.RandomRBFDrift(
            seed_model=s, seed_sample=s + 1, n_centroids=20, change_speed=1e-4, n_drift_centroids=20
        ),
    )
    specs.append(
        StreamSpec(
            "sea_covariate", "SEA variant 0, 90% of x0 < 5 dropped from the drift on (labelling rule kept)",
            "virtual", lambda s: _sea_covariate_shift(s, train + ref + at), train, ref, n, at,
        )
    )  # fmt: skip
    specs.append(
        StreamSpec("sea_stationary", "SEA variant 0, no drift (control)", "none",
                   lambda s: synth.SEA(variant=0, seed=s), train, ref, n, None)
    )  # fmt: skip
    # river's bundled labelled classification datasets, in file order; none has an annotated drift.
    specs.append(
        StreamSpec("shuttle", "river Shuttle (bundled, 49,097 rows, 9 features), file order", "none",
                   _river_file("Shuttle"), 10_000, 5_000, 34_097, None, seeded=False)
    )  # fmt: skip
    specs.append(
        StreamSpec("bananas", "river Bananas (bundled, 5,300 rows, 2 features), file order", "none",
                   _river_file("Bananas"), 1_500, 1_500, 2_300, None, seeded=False)
    )  # fmt: skip
    specs.append(
        StreamSpec("phishing", "river Phishing (bundled, 1,250 rows, 9 features), file order", "none",
                   _river_file("Phishing"), 400, 350, 500, None, seeded=False)
    )  # fmt: skip
    return specs


def river_datasets_status() -> list[dict[str, Any]]:
    """Which of river's labelled classification datasets this machine has, and why not when it has not."""
    from river import datasets

    out = []
    for name in sorted(datasets.__all__):
        cls = getattr(datasets, name)
        if not isinstance(cls, type):
            continue
        try:
            ds = cls()
        except Exception as e:  # a dataset whose constructor needs something else: say so, keep going
            out.append({"name": name, "available": False, "why": f"constructor failed: {e!r}"})
            continue
        task = str(getattr(ds, "task", ""))
        if "classification" not in task.lower():
            continue
        remote = hasattr(ds, "url")
        row = {"name": name, "task": task, "n_samples": getattr(ds, "n_samples", None), "bundled": not remote}
        if remote:
            downloaded = bool(getattr(ds, "is_downloaded", False))
            row["available"] = downloaded
            if not downloaded:
                host = str(ds.url).split("/")[2]
                row["why"] = f"not bundled: river downloads it from {host}, unreachable here (no DNS)"
        else:
            row["available"] = True
        out.append(row)
    return out


# ============================================================================================== one run


@dataclass
class Drawn:
    """One seed's examples as arrays: the model's numeric matrix, the labels, and the event features."""

    names: list[str]
    x: F64
    y: npt.NDArray[np.str_]
    features: list[dict[str, Any]]


def draw(spec: StreamSpec, seed: int) -> Drawn:
    rows = list(islice(spec.make(seed), spec.total))
    if len(rows) < spec.total:
        raise RuntimeError(f"{spec.name}: {len(rows)} examples, {spec.total} needed")
    keys = list(rows[0][0])
    names = [str(k) if not isinstance(k, int) else f"x{k}" for k in keys]
    x = np.array([[float(r[k]) for k in keys] for r, _ in rows], dtype=np.float64)
    y = np.array([str(label) for _, label in rows])
    cat = set(spec.categorical)
    # Categorical features become strings in the events (the chi-square path); the model reads codes.
    features = [
        {n: (str(int(v)) if n in cat else float(v)) for n, v in zip(names, row, strict=True)} for row in x.tolist()
    ]
    return Drawn(names, x, y, features)


def events(d: Drawn, lo: int, hi: int, proba: F64, classes: Sequence[str], *, offset: int) -> list[bytes]:
    """Inference events ``lo..hi-1`` of the drawn examples (``proba`` rows aligned with ``lo``), labels inline."""
    import orjson

    out = []
    for k, i in enumerate(range(lo, hi)):
        p = proba[k]
        ev = {
            "event_id": f"{MODEL_ID}-{i - offset}",
            "ts": TS0 + 1000 * (i - offset),
            "model_id": MODEL_ID,
            "features": d.features[i],
            "prediction": classes[int(np.argmax(p))],
            "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p, strict=True)},
            "label": str(d.y[i]),
        }
        out.append(orjson.dumps(ev))
    return out


def monitor_alerts(store: Path, batch: Any) -> list[dict[str, Any]]:
    """Every alert record of the service's monitor (default settings) on ``batch``, fed in chunks."""
    from baselines.build import load_baseline
    from baselines.store import BaselineStore
    from streams.config import Settings
    from streams.pipeline import build_monitor

    settings = Settings.model_validate({"baselines": {"store": str(store)}})
    monitor = build_monitor(load_baseline(BaselineStore(store), MODEL_ID), settings)
    out = []
    for a in range(0, len(batch), CHUNK):
        for fired in monitor.update(batch.take(slice(a, a + CHUNK))).alerts:
            dec = fired.decision
            estimated = bool(dec.evidence.get("estimated", False)) if dec.kind == "performance_drop" else False
            out.append(
                {
                    # Alerts on late-joined labels have no row; labels are inline here, so every alert has one.
                    "at": a + (fired.row if fired.row is not None else 0),
                    "kind": dec.kind + (" (estimated)" if estimated else ""),
                    "status": dec.status,
                    "severity": dec.severity,
                    "columns": list(dec.columns),
                    "statistic": dec.statistic,
                    "value": float(dec.value),
                }
            )
    return out


def river_detections(err: F64, conf: F64, *, seed: int, kswin: bool) -> dict[str, list[int]]:
    """Indices where each river detector signalled a drift (they reset themselves after one)."""
    from river import drift as _drift
    from river.drift import binary as _binary

    # river's constructors are untyped; Any keeps mypy --strict quiet without a cast per call.
    drift: Any = _drift
    binary: Any = _binary
    on_error: dict[str, Any] = {
        "ADWIN(error)": drift.ADWIN(),
        "PageHinkley(error)": drift.PageHinkley(),
        "DDM(error)": binary.DDM(),
        "HDDM_A(error)": binary.HDDMA(),
    }
    on_conf: dict[str, Any] = {"ADWIN(confidence)": drift.ADWIN()}
    if kswin:
        on_conf["KSWIN(confidence)"] = drift.KSWIN(seed=seed)
    hits: dict[str, list[int]] = {k: [] for k in (*on_error, *on_conf)}
    for values, dets in ((err.tolist(), on_error), (conf.tolist(), on_conf)):
        for name, det in dets.items():
            found = hits[name]
            for i, v in enumerate(values):
                det.update(v)
                if det.drift_detected:
                    found.append(i)
    return hits


def run_one(spec: StreamSpec, seed: int, *, kswin: bool) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from baselines.build import build_baseline, infer_schema
    from baselines.store import BaselineStore
    from detector.schema import MISSING
    from streams.decode import Decoder

    t0 = time.perf_counter()
    d = draw(spec, seed)
    t_draw = time.perf_counter() - t0
    tr, ref_end = spec.train, spec.train + spec.reference
    model = HistGradientBoostingClassifier(random_state=seed).fit(d.x[:tr], d.y[:tr])
    classes = [str(c) for c in model.classes_]
    proba = model.predict_proba(d.x[tr:])
    ref_lines = events(d, tr, ref_end, proba[: spec.reference], classes, offset=tr)
    stream_lines = events(d, ref_end, spec.total, proba[spec.reference :], classes, offset=ref_end)
    ref_objs = [json.loads(line) for line in ref_lines]
    schema = infer_schema(ref_objs, MODEL_ID)
    decoder = Decoder({MODEL_ID: schema})
    ref_batch = decoder.decode(ref_lines).batches[0].batch
    decoded = decoder.decode(stream_lines)
    if decoded.dead or len(decoded.batches) != 1:
        raise RuntimeError(f"{spec.name}: {len(decoded.dead)} dead letters decoding the stream")
    batch = decoded.batches[0].batch
    with tempfile.TemporaryDirectory(prefix="bench-concept-drift-") as tmp:
        store = Path(tmp) / "baselines"
        t1 = time.perf_counter()
        info = build_baseline(BaselineStore(store), ref_batch, schema, seed=seed, promote=True)
        t_build = time.perf_counter() - t1
        t2 = time.perf_counter()
        labelled = monitor_alerts(store, batch)
        t_monitor = time.perf_counter() - t2
        unlabelled_batch = dataclasses.replace(
            batch, label=np.full(len(batch), np.nan), label_code=np.full(len(batch), MISSING, dtype=np.int32)
        )
        unlabelled = monitor_alerts(store, unlabelled_batch)
    pred = np.asarray(classes)[np.argmax(proba[spec.reference :], axis=1)]
    y_stream = d.y[ref_end:]
    err = (pred != y_stream).astype(np.float64)
    conf = np.max(proba[spec.reference :], axis=1)
    t3 = time.perf_counter()
    river = river_detections(err, conf, seed=seed, kswin=kswin)
    t_river = time.perf_counter() - t3
    ref_pred = np.asarray(classes)[np.argmax(proba[: spec.reference], axis=1)]
    after = spec.drift_at + max(spec.width, 1) if spec.drift_at is not None else None
    return {
        "stream": spec.name,
        "seed": seed,
        "baseline_version": info.version,
        "features": d.names,
        "categorical": list(spec.categorical),
        "classes": classes,
        "accuracy": {
            "reference": float(np.mean(ref_pred == d.y[tr:ref_end])),
            "before_drift": float(1 - err[: spec.clean_until].mean()),
            "after_drift": float(1 - err[after:].mean()) if after is not None and after < len(err) else None,
        },
        "mean_confidence": {
            "before_drift": float(conf[: spec.clean_until].mean()),
            "after_drift": float(conf[after:].mean()) if after is not None and after < len(conf) else None,
        },
        "monitor_labelled": labelled,
        "monitor_unlabelled": unlabelled,
        "river": river,
        "seconds": {
            "draw": t_draw,
            "baseline_build": t_build,
            "monitor_labelled": t_monitor,
            "river": t_river,
            "total": time.perf_counter() - t0,
        },
    }


# ============================================================================================== TCPD

#: river.drift.datasets: bundled series of the Turing Change Point Dataset, with each annotator's change points.
TCPD = ("AirlinePassengers", "Apple", "Bitcoin", "BrentSpotPrice", "Occupancy", "RunLog", "UKCoalEmploy")
TCPD_MARGIN = 5  # the TCPD benchmark's margin: a detection within 5 points of an annotation matches it
#: Our windows scaled to series of a few hundred points (the defaults, 2,000 events, exceed most series).
TCPD_SETTINGS: dict[str, Any] = {"size": 50, "step": 10, "min_events": 20}


def consensus_change_points(annotations: dict[str, list[int]], margin: int = TCPD_MARGIN) -> list[int]:
    """Annotated change points that more than half of the annotators mark within ``margin`` points.

    Examples
    --------
    >>> consensus_change_points({"a": [10, 50], "b": [12], "c": [90]})
    [11]
    """
    marks = [sorted(v) for v in annotations.values()]
    need = len(marks) / 2
    agreed = sorted(
        p for m in marks for p in m if sum(any(abs(p - q) <= margin for q in other) for other in marks) > need
    )
    groups: list[list[int]] = []
    for p in agreed:
        if groups and p - groups[-1][-1] <= margin:
            groups[-1].append(p)
        else:
            groups.append([p])
    return [int(statistics.median(g)) for g in groups]


def run_tcpd(name: str, seed: int) -> dict[str, Any]:
    """Our feature drift and river's detectors on one annotated series: delay to the first consensus change
    point, and detections before it. The reference is the first half of the segment before that point; the
    stream is everything after the reference."""
    import orjson
    from river import drift as _drift
    from river.drift import datasets as cpd

    from baselines.build import build_baseline, infer_schema, load_baseline
    from baselines.store import BaselineStore
    from streams.config import Settings
    from streams.decode import Decoder
    from streams.pipeline import build_monitor

    ds = getattr(cpd, name)()
    ys = [y for _, y in ds]
    cols = sorted(ys[0]) if isinstance(ys[0], dict) else ["value"]
    x = np.array([[float(y[c]) for c in cols] if isinstance(y, dict) else [float(y)] for y in ys])
    cps = consensus_change_points(ds.annotations)
    row: dict[str, Any] = {"dataset": name, "n": len(x), "columns": cols, "annotators": len(ds.annotations),
                           "consensus_change_points": cps}  # fmt: skip
    max_annot = max((max(v) for v in ds.annotations.values() if v), default=0)
    if max_annot < len(x) // 4 and len(x) > 1000:
        # BrentSpotPrice: 8,195 daily prices in river, annotations up to ~480 (TCPD annotated a subsampled series).
        row["skipped"] = f"annotations reach index {max_annot} of {len(x):,} rows: they index another sampling"
        return row
    if not cps or cps[0] < 60:
        row["skipped"] = "first consensus change point too early for a reference (< 60 points)"
        return row
    first = cps[0]
    ref_n = first // 2
    lines = [
        orjson.dumps({"event_id": f"{name}-{i}", "ts": TS0 + 1000 * i, "model_id": MODEL_ID,
                      "features": dict(zip(cols, map(float, x[i]), strict=True))})
        for i in range(len(x))
    ]  # fmt: skip
    schema = infer_schema([json.loads(b) for b in lines[:ref_n]], MODEL_ID)
    decoder = Decoder({MODEL_ID: schema})
    with tempfile.TemporaryDirectory(prefix="bench-concept-drift-tcpd-") as tmp:
        store = Path(tmp)
        build_baseline(BaselineStore(store), decoder.decode(lines[:ref_n]).batches[0].batch, schema, seed=seed)
        settings = Settings.model_validate({"baselines": {"store": tmp}, "drift": TCPD_SETTINGS,
                                            "validation": TCPD_SETTINGS, "anomaly": TCPD_SETTINGS})  # fmt: skip
        monitor = build_monitor(load_baseline(BaselineStore(store), MODEL_ID), settings)
        result = monitor.update(decoder.decode(lines[ref_n:]).batches[0].batch)
    ours: dict[str, set[int]] = {}
    for fired in result.alerts:
        # One incident per column: several columns opening at one event are one detection.
        if fired.decision.status == "open" and fired.row is not None:
            ours.setdefault(fired.decision.kind, set()).add(ref_n + fired.row)
    drift: Any = _drift  # untyped constructors
    dets: dict[str, Any] = {"ADWIN": drift.ADWIN(), "PageHinkley": drift.PageHinkley(), "KSWIN": drift.KSWIN(seed=seed)}
    river_hits: dict[str, list[int]] = {k: [] for k in dets}
    for k, det in dets.items():
        # river's detectors are univariate: they read the first column in name order, from the end of
        # the reference on, as ours (which reads every column).
        for i, v in enumerate(x[ref_n:, 0].tolist(), start=ref_n):
            det.update(v)
            if det.drift_detected:
                river_hits[k].append(i)
    hits = {f"ours: {k}": sorted(v) for k, v in ours.items()} | river_hits
    row["reference"] = [0, ref_n]
    row["detections"] = hits
    row["summary"] = {
        k: {
            "before_first_change": sum(1 for i in v if i < first - TCPD_MARGIN),
            "delay_to_first_change": next((i - first for i in v if i >= first - TCPD_MARGIN), None),
            "total": len(v),
        }
        for k, v in hits.items()
    }
    return row


# ============================================================================================== summary

#: Our detector columns: (label, run, predicate on an alert record).
OURS: tuple[tuple[str, str, Callable[[dict[str, Any]], bool]], ...] = (
    ("performance_drop", "monitor_labelled", lambda a: a["kind"] == "performance_drop"),
    ("performance_drop (estimated, no labels)", "monitor_unlabelled",
     lambda a: a["kind"] == "performance_drop (estimated)"),
    ("feature_drift", "monitor_unlabelled", lambda a: a["kind"] == "feature_drift"),
    ("prediction/confidence drift", "monitor_unlabelled",
     lambda a: a["kind"] in ("prediction_drift", "confidence_drift")),
    ("anomaly_rate / input_violation", "monitor_unlabelled",
     lambda a: a["kind"] in ("anomaly_rate", "input_violation")),
    ("any alert, labels inline", "monitor_labelled", lambda a: True),
)  # fmt: skip
RIVER = ("ADWIN(error)", "PageHinkley(error)", "DDM(error)", "HDDM_A(error)", "ADWIN(confidence)", "KSWIN(confidence)")


def _hits(run: dict[str, Any], detector: str) -> list[int] | None:
    for label, key, pred in OURS:
        if label == detector:
            return sorted(a["at"] for a in run[key] if a["status"] == "open" and pred(a))
    got: list[int] | None = run["river"].get(detector)
    return got


def summarize(spec: StreamSpec, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per detector: delays, seeds detected, false alerts (before ``clean_until``), over the runs."""
    out: dict[str, Any] = {}
    for det in [label for label, _, _ in OURS] + list(RIVER):
        delays: list[int] = []
        false = 0
        n_runs = 0
        for run in runs:
            hits = _hits(run, det)
            if hits is None:
                continue
            n_runs += 1
            false += sum(1 for i in hits if i < spec.clean_until)
            if spec.drift_at is not None:
                after = [i for i in hits if i >= spec.clean_until]
                if after:
                    delays.append(after[0] - spec.drift_at)
        out[det] = {
            "runs": n_runs,
            "detected": len(delays),
            "delays": delays,
            "median_delay": statistics.median(delays) if delays else None,
            "false_alerts": false,
            "events_before_drift": spec.clean_until * n_runs,
        }
    kinds: dict[str, int] = {}
    columns: dict[str, int] = {}
    for run in runs:
        for a in run["monitor_labelled"] + run["monitor_unlabelled"]:
            if a["status"] == "open" and a["at"] >= spec.clean_until:
                kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
                if a["kind"] in ("feature_drift", "input_violation", "anomaly_rate"):
                    for c in a["columns"]:
                        columns[c] = columns.get(c, 0) + 1
    acc = {k: _median([r["accuracy"][k] for r in runs]) for k in ("reference", "before_drift", "after_drift")}
    conf = {k: _median([r["mean_confidence"][k] for r in runs]) for k in ("before_drift", "after_drift")}
    return {"detectors": out, "kinds_after_drift": kinds, "columns_after_drift": columns, "accuracy": acc,
            "mean_confidence": conf}  # fmt: skip


def _median(values: Sequence[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


# ============================================================================================== context


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
        h.update(b"\x1f")
    return h.hexdigest()[:12]


def machine_context() -> dict[str, Any]:
    """CPU, memory, load, versions and the code the numbers belong to."""
    cpu: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu MHz", "cache size") and key not in cpu:
                cpu[key] = value.strip()
    versions: dict[str, str] = {}
    for mod in ("numpy", "scipy", "river", "sklearn", "pyod", "threadpoolctl"):
        with contextlib.suppress(Exception):
            versions[mod] = str(__import__(mod).__version__)
    git: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        git["uncommitted_in_detector_streams_baselines"] = subprocess.run(
            ["git", "status", "--porcelain", "--", "detector", "streams", "baselines"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
    sources = sorted([*ROOT.glob("detector/*.py"), *ROOT.glob("streams/*.py"), *ROOT.glob("baselines/*.py")])
    git["source_digest"] = _digest(sources)
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "git": git,
    }


# ============================================================================================== report


def _cell(s: dict[str, Any], known: bool) -> str:
    if not s["runs"]:
        return "–"
    fa = f"{s['false_alerts']} FA"
    if not known:
        return f"{s['false_alerts']} alerts"
    if not s["detected"]:
        return f"missed ({s['runs']}) · {fa}"
    return f"{s['median_delay']:,.0f} ({s['detected']}/{s['runs']}) · {fa}"


def render(r: dict[str, Any]) -> str:
    from streams.config import Settings

    out: list[str] = []
    w = out.append
    m = r["machine"]
    perf = Settings().performance
    w("# Concept-drift detection benchmark\n")
    w(
        f"`{r['command']}` — {r['started']}, {r['seconds'] / 60:.1f} min. Generated by "
        "`benchmarks/bench_concept_drift.py`; rerun it rather than editing this file (see `benchmarks/README.md`).\n"
    )
    w(
        "Each stream: a pre-drift model (scikit-learn `HistGradientBoostingClassifier`) fitted on the first "
        "`train` examples, a baseline built from the next `reference` examples (features, prediction, "
        "probabilities, label), then `stream` events through the monitor the service builds (default settings: "
        "windows of 2,000 events evaluated every 200). Our monitor runs twice: labels inline (`performance_drop` "
        "on actual accuracy, log loss, ROC AUC) and without labels (CBPE estimate, input/output drift, anomaly "
        "rate, input validation). river's detectors read the same stream: the model's 0/1 error (needs labels) "
        f"or its confidence (label-free). Seeds: {r['seeds']} per generator (KSWIN: first {KSWIN_SEEDS}).\n"
    )
    w(
        f"`performance_drop` tolerates a drop of accuracy and ROC AUC of {perf.tolerance} and a rise of log loss of "
        f"5% of the reference or {perf.log_loss_tolerance} nats, whichever is larger (`performance.tolerance`, "
        "`performance.log_loss_tolerance`). The floor keeps a near-perfect model (Agrawal: reference log loss "
        "under 0.0001 nats) from alerting on a few confident errors, such as the first new-concept examples of a "
        "gradual drift well before its transition. On models with a reference log loss under 1 nat it makes the "
        "log loss test less sensitive: a few hundred events later on SEA and Hyperplane, more on a slow drift "
        "(RBF incremental).\n"
    )
    w(
        "Cells: **median delay** in events after the drift position (river's `position`, the centre of a "
        "gradual transition, so gradual delays can be negative) **(seeds detected / seeds) · false alerts**, "
        "summed over seeds, i.e. alerts before the transition starts (`position − width`; for gradual streams "
        "the first 98% of the old concept). Our alerts are incident `open` records; river's are every "
        "`drift_detected`. Streams without a known drift show every alert.\n"
    )
    specs = {s["name"]: s for s in r["streams"]}
    dets = [label for label, _, _ in OURS] + list(RIVER)
    short = {
        "performance_drop": "ours: perf_drop (labels)",
        "performance_drop (estimated, no labels)": "ours: perf_drop est. (no labels)",
        "feature_drift": "ours: feature_drift",
        "prediction/confidence drift": "ours: pred/conf drift",
        "anomaly_rate / input_violation": "ours: anomaly/violation",
        "any alert, labels inline": "ours: any",
    }
    w("## Results\n")
    w("| stream | drift | acc. ref → after | " + " | ".join(short.get(d, d) for d in dets) + " |")
    w("|---|---|---|" + "---|" * len(dets))
    for name, summ in r["summary"].items():
        spec = specs[name]
        known = spec["drift_at"] is not None
        acc = summ["accuracy"]
        acc_s = f"{acc['reference']:.3f} → {acc['after_drift']:.3f}" if acc["after_drift"] is not None else (
            f"{acc['reference']:.3f} → {acc['before_drift']:.3f}")  # fmt: skip
        cells = [_cell(summ["detectors"][d], known) for d in dets]
        w(f"| {name} | {spec['drift']} | {acc_s} | " + " | ".join(cells) + " |")
    w("")
    w("Drift kinds: **real** = only P(y|x) changes (inputs keep their distribution); **virtual** = only P(x) "
      "changes (same labelling rule); **both**; **none** = no drift known (controls: every alert there is "
      "either a false alarm or unannotated structure in the file order).\n")  # fmt: skip
    w("## Streams\n")
    w("| stream | what | train / reference / stream | drift at (stream index) | width | "
      "accuracy before → after | confidence before → after | our alert kinds after the drift (open records, "
      "both runs, all seeds) | columns named |")  # fmt: skip
    w("|---|---|---|---|---|---|---|---|---|")
    for name, summ in r["summary"].items():
        s = specs[name]
        acc, conf = summ["accuracy"], summ["mean_confidence"]
        after_a = f"{acc['after_drift']:.3f}" if acc["after_drift"] is not None else "–"
        after_c = f"{conf['after_drift']:.3f}" if conf["after_drift"] is not None else "–"
        kinds = ", ".join(f"{k} ×{v}" for k, v in sorted(summ["kinds_after_drift"].items())) or "none"
        cols = ", ".join(f"{k} ×{v}" for k, v in sorted(summ["columns_after_drift"].items(), key=lambda kv: -kv[1]))
        w(
            f"| {name} | {s['description']} | {s['train']:,} / {s['reference']:,} / {s['stream']:,} | "
            f"{s['drift_at'] if s['drift_at'] is not None else '–'} | {s['width']:,} | "
            f"{acc['before_drift']:.3f} → {after_a} | {conf['before_drift']:.3f} → {after_c} | {kinds} | "
            f"{cols or '–'} |"
        )
    w("")
    if r["tcpd"]:
        w("## river's annotated change-point series (`river.drift.datasets`, TCPD)\n")
        w(
            "Bundled with river: real series with change points marked by several annotators. A *consensus* change "
            f"point is one that more than half of the annotators mark within ±{TCPD_MARGIN} points. No model here: "
            "the series' values are the features. Our monitor (feature drift, input validation, anomaly rate) gets "
            "a baseline from the first half of the segment before the first consensus change point and reads the "
            f"rest, with windows scaled to these short series ({TCPD_SETTINGS}; the defaults, 2,000 events, are "
            "longer than most series); river's ADWIN, PageHinkley and KSWIN (defaults) read the first column from "
            "the same point. Cells: delay to the first consensus change point (detections from "
            f"{TCPD_MARGIN} points before it count) · detections before it · all detections. Ours counts incident "
            "`open` records (several columns opening at one point are one detection): an incident that opened "
            "before the change and is still open shows as *missed*, since nothing new opens.\n"
        )
        det_names = sorted(
            {k for t in r["tcpd"] for k in t.get("summary", {})}, key=lambda k: (not k.startswith("ours"), k)
        )
        w("| series | rows | columns | consensus change points | reference | " + " | ".join(det_names) + " |")
        w("|---|---:|---|---|---|" + "---|" * len(det_names))
        for t in r["tcpd"]:
            cps = ", ".join(map(str, t["consensus_change_points"])) or "none"
            if "skipped" in t:
                w(f"| {t['dataset']} | {t['n']:,} | {', '.join(t['columns'])} | {cps} | skipped: {t['skipped']} |"
                  + " |" * len(det_names))  # fmt: skip
                continue
            cells = []
            for k in det_names:
                s = t["summary"].get(k)
                if s is None:
                    cells.append("none")
                    continue
                d = "missed" if s["delay_to_first_change"] is None else f"{s['delay_to_first_change']:+d}"
                cells.append(f"{d} · {s['before_first_change']} before · {s['total']}")
            ref = t["reference"]
            w(f"| {t['dataset']} | {t['n']:,} | {', '.join(t['columns'])} | {cps} | {ref[0]}–{ref[1] - 1} | "
              + " | ".join(cells) + " |")  # fmt: skip
        w("")
    w("## river's labelled classification datasets on this machine\n")
    w("| dataset | task | rows | available | why not / how used |")
    w("|---|---|---:|---|---|")
    used = {"Shuttle", "Bananas", "Phishing"}
    for d in r["river_datasets"]:
        unused = "bundled; not used (no drift annotated; too small or not a plain class label)"
        why = d.get("why") or ("used above (file order, no annotated drift)" if d["name"] in used else unused)
        n = f"{d['n_samples']:,}" if isinstance(d.get("n_samples"), int) else "?"
        w(f"| {d['name']} | {d.get('task', '')} | {n} | {'yes' if d['available'] else '**no**'} | {why} |")
    w("")
    w("## Machine\n")
    w(f"- CPU: {m['cpu'].get('model name', '?')}; {m['cores_usable']} usable cores of {m['cores_online']}; "
      f"{m['memory_gib']} GiB; kernel {m['kernel']}.")  # fmt: skip
    w(f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in r['load_before'])}; after: "
      f"{', '.join(f'{x:.2f}' for x in r['load_after'])}. Shared machine: times are indicative only.")  # fmt: skip
    w(f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".")
    w("- BLAS limited to one thread (threadpoolctl) for the whole run.")
    g = m["git"]
    dirty = ", ".join(g.get("uncommitted_in_detector_streams_baselines") or []) or "none"
    w(f"- Code: commit {str(g.get('commit', '?'))[:12]}, source digest {g.get('source_digest')}; uncommitted "
      f"changes in detector/, streams/, baselines/: {dirty}.")  # fmt: skip
    sec = r["timing"]
    w(f"- Time per run (median over runs): draw {sec['draw']:.1f} s, baseline build {sec['baseline_build']:.1f} s, "
      f"our monitor (one pass, labels inline) {sec['monitor_labelled']:.2f} s, river detectors {sec['river']:.1f} s "
      "(KSWIN included on the first seed).")  # fmt: skip
    if r["errors"]:
        w("\n## Errors\n")
        for k, v in r["errors"].items():
            w(f"- {k}: `{v[:1000]}`")
    return "\n".join(out) + "\n"


# ============================================================================================== main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, streams of 10k events")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per generator (default 3, --quick 1)")
    parser.add_argument("--only", default="", help="comma-separated stream names")
    parser.add_argument("--out", type=Path, default=None, help="directory for concept_drift.md/.json")
    args = parser.parse_args(argv)
    partial = bool(args.quick or args.only or args.seeds is not None)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    out_dir = args.out or (ROOT / ".cache/bench/results" if partial else ROOT / "benchmarks/results")

    from threadpoolctl import threadpool_limits

    # One BLAS thread: the machine is shared and the service runs that way too.
    limits = threadpool_limits(limits=1)
    started = datetime.now(UTC)
    load_before = list(os.getloadavg())
    t0 = time.perf_counter()
    specs = stream_specs(args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in specs} - {"tcpd"}
        if unknown:
            parser.error(f"unknown streams: {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in wanted]
    runs: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        for k in range(seeds if spec.seeded else 1):
            seed = SEED + k
            log(f"{spec.name} seed {seed}")
            try:
                run = run_one(spec, seed, kswin=k < KSWIN_SEEDS)
            except Exception as e:  # one failed stream is reported, the others still run
                errors[f"{spec.name}/{seed}"] = repr(e)
                log(f"  FAILED: {e!r}")
                continue
            runs.setdefault(spec.name, []).append(run)
            log(f"  {run['seconds']['total']:.1f} s; accuracy {run['accuracy']}")
    tcpd: list[dict[str, Any]] = []
    for name in TCPD if not args.only or "tcpd" in args.only.split(",") else ():
        log(f"TCPD {name}")
        try:
            tcpd.append(run_tcpd(name, SEED))
        except Exception as e:  # reported, the others still run
            errors[f"tcpd/{name}"] = repr(e)
            log(f"  FAILED: {e!r}")
    del limits
    summary = {s.name: summarize(s, runs[s.name]) for s in specs if s.name in runs}
    all_runs = [r for rs in runs.values() for r in rs]
    result: dict[str, Any] = {
        "command": "python benchmarks/bench_concept_drift.py" + (" " + " ".join(sys.argv[1:]) if argv is None and
                                                                  len(sys.argv) > 1 else ""),
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "seconds": time.perf_counter() - t0,
        "seeds": seeds,
        "base_seed": SEED,
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
        "machine": machine_context(),
        "streams": [
            {k: v for k, v in dataclasses.asdict(s).items() if k != "make"} | {"clean_until": s.clean_until}
            for s in specs
        ],
        "river_datasets": river_datasets_status(),
        "timing": {
            k: _median([r["seconds"][k] for r in all_runs]) or 0.0
            for k in ("draw", "baseline_build", "monitor_labelled", "river")
        },
        "summary": summary,
        "tcpd": tcpd,
        "runs": runs,
        "errors": errors,
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "concept_drift.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out_dir / "concept_drift.md").write_text(render(result))
    log(f"wrote {out_dir / 'concept_drift.md'} and concept_drift.json in {result['seconds'] / 60:.1f} min")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
