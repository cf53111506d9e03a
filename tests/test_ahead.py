"""Tests of streams.ahead: decoding in a child process gives what decoding here gives, and survives its death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
from test_decode import assert_same

from detector.schema import Schema
from streams.ahead import DecodeAhead
from streams.decode import Decoder

SCHEMA = Schema("m", numeric=("x", "y"), categorical=("c",), categories=(("a", "b"),))


def chunk(start: int, n: int) -> list[bytes | None]:
    out: list[bytes | None] = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "ts": i,
                "model_id": "m",
                "client_id": f"c{i % 3}",
                "features": {"x": i / 7, "c": "ab"[i % 2]},
            }
        )
        for i in range(start, start + n)
    ]
    out[1] = b"{not json"
    out[2] = None
    return out


def test_chunks_come_back_decoded_in_order_as_here() -> None:
    decoder = Decoder({"m": SCHEMA})
    ahead = DecodeAhead(decoder, processes=2, max_chunk=100)
    ahead.wait_started()
    try:
        chunks = [chunk(k * 100, 100) for k in range(8)]
        futures = [ahead.submit(c) for c in chunks]
        # five shared memory slots: the chunks submitted beyond them come back through the pipe
        assert len(ahead._slot_of) == 5
        for f, c in zip(futures, chunks, strict=True):
            assert_same(ahead.result(f, c), decoder.decode(c))
        assert ahead.alive and not ahead._slot_of
        again = chunk(900, 100)  # the slots are free again
        assert_same(ahead.result(ahead.submit(again), again), decoder.decode(again))
        big = chunk(1000, 300)  # larger than a slot: through the pipe
        assert_same(ahead.result(ahead.submit(big), big), decoder.decode(big))
        # with the messages' timestamps: events dated an hour and more after theirs are dead letters there too
        rts = np.arange(4_000_000, 4_000_100, dtype=np.int64) - np.where(np.arange(100) % 10 == 0, 3_600_001, 0)
        dated = chunk(4_000_000, 100)  # (an event's ts is its number)
        got = ahead.result(ahead.submit(dated, rts), dated, rts)
        assert_same(got, decoder.decode(dated, rts))
        assert sum(d.reason == "future_ts" for d in got.dead) == 10
    finally:
        ahead.close()
    assert not ahead.alive


def test_a_child_prepares_what_the_monitor_would_compute() -> None:
    from baselines.anomaly_fit import fit_anomaly_model
    from detector.binning import Binner
    from detector.prepared import Preparer
    from detector.reference import fit_reference
    from detector.schema import EventBatch

    rng = np.random.default_rng(0)
    schema = Schema("m", numeric=("x", "y"))
    model = fit_anomaly_model(rng.normal(size=(5000, 2)), numeric_names=("x", "y"), seed=0)
    binner = Binner(fit_reference(EventBatch.from_arrays(rng.normal(size=(5000, 2))), schema))
    decoder = Decoder({"m": schema})
    ahead = DecodeAhead(decoder, preparers={"m": Preparer(binner=binner, anomaly=model)}, max_chunk=200)
    ahead.wait_started()
    try:
        for c in (chunk(0, 150), chunk(150, 400)):  # in a slot, and through the pipe
            got = ahead.result(ahead.submit(c), c)
            assert_same(got, decoder.decode(c))
            (mb,) = got.batches
            assert mb.prepared is not None and mb.prepared.anomaly is not None
            assert np.array_equal(mb.prepared.cells, binner.cells(mb.batch))
            want = model.score(mb.batch.numeric, mb.batch.categorical)
            for name in ("score", "p_value", "flag", "raw", "contributions"):
                assert np.array_equal(getattr(mb.prepared.anomaly, name), getattr(want, name)), name
    finally:
        ahead.close()


def test_a_killed_child_loses_nothing() -> None:
    decoder = Decoder({"m": SCHEMA})
    ahead = DecodeAhead(decoder)
    ahead.wait_started()
    try:
        first = chunk(0, 50)
        assert_same(ahead.result(ahead.submit(first), first), decoder.decode(first))
        pool = ahead._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        later = [chunk(k * 50, 50) for k in range(1, 4)]
        futures = [ahead.submit(c) for c in later]
        for f, c in zip(futures, later, strict=True):
            assert_same(ahead.result(f, c), decoder.decode(c))
        assert not ahead.alive
    finally:
        ahead.close()


def test_children_end_with_their_killed_parent(tmp_path: Path) -> None:
    # the service killed: its decoding child must not wait on its queue for ever, holding its memory
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from detector.schema import Schema\n"
        "from streams.ahead import DecodeAhead\n"
        "from streams.decode import Decoder\n"
        "if __name__ == '__main__':\n"
        "    ahead = DecodeAhead(Decoder({'m': Schema('m', numeric=('x',))}))\n"
        "    ahead.wait_started()\n"
        "    print(*ahead._pool._processes, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    (child,) = [int(p) for p in proc.stdout.split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # (a zombie has ended)
    except FileNotFoundError:
        return False
