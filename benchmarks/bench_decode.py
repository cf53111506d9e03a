"""Throughput of decoding inference events: stdlib json, orjson, and :class:`streams.decode.Decoder`.

Run from the repository root, with BLAS pinned to one thread as the service does::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_decode.py [--events 200000] [--repeat 5]

Prints events/s (wall-clock median and CPU-time best of ``--repeat`` interleaved runs) of parsing
line by line with ``json.loads`` and ``orjson.loads`` (parse only, no columns), and of
``Decoder.decode`` (parse, validate and build the EventBatch) in chunks of 10,000, with its native
(C scanner) path first, without it (the typed msgspec path first), and without either. Compare
within one run: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.schema import Schema
from streams.decode import Decoder

N_NUMERIC = 32
COUNTRIES = ("DE", "FR", "US", "GB", "IT")
CLASSES = ("no", "yes")
CHUNK = 10_000


def make_events(n: int, seed: int = 0, *, rfc3339: bool = False) -> list[bytes]:
    """``n`` events: 32 numeric features, 1 categorical, a categorical prediction and probabilities."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_NUMERIC)).tolist()
    country = rng.integers(0, len(COUNTRIES), n).tolist()
    p_yes = rng.random(n).tolist()
    names = [f"f{j}" for j in range(N_NUMERIC)]
    t0 = 1_795_860_000_000
    out = []
    for i in range(n):
        ts = t0 + i * 7
        event = {
            "event_id": f"evt-{i:09d}",
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)) + f".{ts % 1000:03d}Z" if rfc3339 else ts,
            "model_id": "fraud-v3",
            "model_version": "3.1.0",
            "client_id": f"client-{i % 97}",
            "features": {**dict(zip(names, x[i], strict=True)), "country": COUNTRIES[country[i]]},
            "prediction": CLASSES[p_yes[i] > 0.5],
            "probabilities": {"no": 1.0 - p_yes[i], "yes": p_yes[i]},
        }
        out.append(orjson.dumps(event))
    # As if read from a JSONL file: one contiguous allocation after the generator's garbage is
    # gone. Built in place above, the messages sit between ~2 KB holes left by the event dicts,
    # and every decoder's own allocations then scatter over a 600 MB heap (slower by up to 2x).
    return b"\n".join(out).split(b"\n")


def schema() -> Schema:
    return Schema(
        "fraud-v3",
        numeric=tuple(f"f{j}" for j in range(N_NUMERIC)),
        categorical=("country",),
        categories=(COUNTRIES,),
        prediction="categorical",
        classes=CLASSES,
    )


def rates(methods: dict[str, Callable[[], object]], n: int, repeat: int) -> dict[str, tuple[float, float]]:
    """Events/s of each method: median over wall-clock runs and best over CPU-time runs.

    Runs are interleaved so that load from other processes on this shared machine hits every
    method alike; CPU time (``time.process_time``) leaves out the time spent waiting for a core.
    """
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {name: (n / statistics.median(wall[name]), n / min(cpu[name])) for name in methods}


def parse_each(loads: Callable[[bytes], object], lines: Sequence[bytes]) -> None:
    # Results are dropped at once, as a consumer would after use: keeping 200k dicts alive would
    # make the garbage collector, not the parser, dominate these baselines.
    for v in lines:
        loads(v)


def decode_all(
    decoder: Decoder, lines: Sequence[bytes], *, fast: bool = True, typed: bool = True, native: bool = True
) -> int:
    rows = dead = 0
    for start in range(0, len(lines), CHUNK):
        result = decoder._decode(
            lines[start : start + CHUNK], fast=fast, typed=fast and typed, native=fast and typed and native
        )
        rows += sum(len(b.batch) for b in result.batches)
        dead += len(result.dead)
    assert rows + dead == len(lines)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n, repeat = args.events, args.repeat

    lines = make_events(n)
    lines_rfc = make_events(n, rfc3339=True)
    # 1 message in 100 truncated: every 512-message part then takes the careful validation path
    lines_bad = [v[: len(v) // 2] if i % 100 == 50 else v for i, v in enumerate(lines)]
    decoder = Decoder({"fraud-v3": schema()})
    assert decode_all(decoder, lines) == n
    print(f"{n} events, {sum(map(len, lines)) / n:.0f} bytes each, median of {repeat} interleaved runs")

    methods: dict[str, Callable[[], object]] = {
        "json.loads line by line (parse only)": lambda: parse_each(json.loads, lines),
        "orjson.loads line by line (parse only)": lambda: parse_each(orjson.loads, lines),
        "Decoder.decode, chunks of 10,000": lambda: decode_all(decoder, lines),
        "  same, ts as RFC 3339 strings": lambda: decode_all(decoder, lines_rfc),
        "  same, 1% of messages truncated": lambda: decode_all(decoder, lines_bad),
        "  same, without the native (C) path": lambda: decode_all(decoder, lines, native=False),
        "  same, without the native and typed paths": lambda: decode_all(decoder, lines, typed=False),
        "  same, careful path only": lambda: decode_all(decoder, lines, fast=False),
    }
    results = rates(methods, n, repeat)
    base_wall, base_cpu = results["json.loads line by line (parse only)"]
    print(f"{'':42s} {'wall-clock (median)':>30s}   {'CPU time (best)':>30s}")
    for name, (w, c) in results.items():
        print(
            f"{name:42s} {w:>10,.0f} events/s {w / base_wall:6.2f}x json   "
            f"{c:>10,.0f} events/s {c / base_cpu:6.2f}x json"
        )


if __name__ == "__main__":
    main()
