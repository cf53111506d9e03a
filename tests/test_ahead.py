"""Tests of streams.ahead: decoding in a child process gives what decoding here gives, and survives its death."""

from __future__ import annotations

import os
import signal

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
    ahead = DecodeAhead(decoder, processes=2)
    ahead.wait_started()
    try:
        chunks = [chunk(k * 100, 100) for k in range(5)]
        futures = [ahead.submit(c) for c in chunks]
        for f, c in zip(futures, chunks, strict=True):
            assert_same(ahead.result(f, c), decoder.decode(c))
        assert ahead.alive
    finally:
        ahead.close()
    assert not ahead.alive


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
