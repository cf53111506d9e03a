"""Tests of streams.shm: objects through shared memory slots come back equal, as copies, or inline."""

from __future__ import annotations

import numpy as np
import pytest

from streams import shm
from streams.shm import ChunkSlots, pack_inline, unpack


def sample(n: int) -> dict[str, object]:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 5))
    return {
        "x": x,
        "codes": rng.integers(-2, 9, size=(n, 3)).astype(np.int32),
        "flag": x[:, 0] > 0,
        "ids": np.array([f"e{i}" for i in range(n)], dtype=object),
        "strided": x[:, 1],  # not contiguous: pickled inline
        "empty": np.zeros((0, 4)),
        "name": "m",
    }


def assert_equal(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            w = b[k]
            assert isinstance(w, np.ndarray) and w.dtype == v.dtype and np.array_equal(w, v), k
        else:
            assert b[k] == v


def test_objects_come_back_equal_from_any_slot_and_as_copies() -> None:
    slots = ChunkSlots.create(2, 1 << 20)
    assert slots is not None
    sender = ChunkSlots.attach(slots.spec)
    try:
        first, second = sample(1000), sample(7)
        p1, p2 = sender.pack(first, 0), sender.pack(second, 1)
        assert (p1.slot, p2.slot) == (0, 1) and len(p1.sizes) >= 3
        got = slots.unpack(p1)
        assert_equal(first, got)
        sender.pack(sample(900), 0)  # the slot is written again: what was unpacked stays as it was
        assert_equal(first, got)
        assert_equal(second, unpack(slots, p2))
        got["x"][0, 0] = 1.0  # (a copy, writable)
    finally:
        sender.close()
        slots.close()
        slots.close()


def test_too_large_or_no_slot_goes_inline(caplog: pytest.LogCaptureFixture) -> None:
    slots = ChunkSlots.create(1, 4096)
    assert slots is not None
    try:
        big = sample(1000)
        packed = slots.pack(big, 0)
        assert packed.slot is None and packed.sizes == () and packed.oversize > 4096
        with caplog.at_level("WARNING", logger="streams.shm"):
            assert_equal(big, slots.unpack(packed))
            slots.unpack(packed)
        assert sum("did not fit a shared memory slot" in r.getMessage() for r in caplog.records) == 1  # (once)
        assert slots.pack(big, None).slot is None and slots.pack(big, None).oversize == 0
        with pytest.raises(ValueError):
            slots.pack(big, 1)
        small = slots.pack({"a": np.ones(1)}, 0)
        assert small.slot == 0
    finally:
        slots.close()
    with pytest.raises(ValueError, match="closed"):
        slots.unpack(small)


def test_without_shared_memory_everything_goes_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shm.shared_memory, "SharedMemory", refuse)
    assert ChunkSlots.create(3, 1 << 20) is None
    obj = sample(10)
    assert_equal(obj, unpack(None, pack_inline(obj)))


def test_a_tmpfs_without_room_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # writing beyond a full tmpfs would kill the process (SIGBUS), so too little room means the pipe
    monkeypatch.setattr(shm, "_free_bytes", lambda path: 3 << 20)
    fits = ChunkSlots.create(1, 1 << 20)  # 1 MiB of 3
    assert fits is not None
    fits.close()
    assert ChunkSlots.create(3, 1 << 20) is None
