"""Decoded chunks from a decoding process through shared memory instead of a pipe.

A decoded chunk of 10,000 events with 64 features and their anomaly scores is ~12 MB of arrays.
Through a pipe it is written, read and copied in 64 KiB pieces, which cost the receiving process
(the one that detects, the busier one) more CPU than the copy itself. Here the sender writes the
arrays into a slot of a shared segment and sends only the rest of the pickle; the receiver copies
the arrays out (so nothing it keeps refers to the slot) and the slot is free again.

Without shared memory (no ``/dev/shm``, or too small) or for a chunk larger than a slot, the object
goes in the message as an ordinary pickle: slower, same result.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from detector.schema import Schema

log = logging.getLogger(__name__)


_SHM_DIR = "/dev/shm"  # where POSIX shared memory lives on Linux


def _free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):  # no such directory (not Linux): shm_open reports any problem itself
        return None
    return st.f_bavail * st.f_frsize


def bytes_per_event(schemas: Iterable[Schema]) -> int:
    """A generous bound of the array bytes one decoded and prepared event takes, over ``schemas``: its
    features, probabilities and per-event fields; its anomaly scores and contributions; what the adversarial
    detector reads from it (embedding, float16 coordinates, fingerprint, probe positions); its drift cells.
    (64 features and 10 classes: 1,737 bytes, within the bound's 2,160.)"""
    widest = max((len(s.numeric) + len(s.categorical) + len(s.classes) for s in schemas), default=0)
    return 8 * (3 * widest + 48)


@dataclass(frozen=True)
class Packed:
    """A pickled object whose arrays are in slot ``slot`` (their sizes in order), or in ``head``
    itself when ``slot`` is None."""

    head: bytes
    slot: int | None = None
    sizes: tuple[int, ...] = ()
    oversize: int = 0  #: when inline because the arrays did not fit the slot: their bytes


def pack_inline(obj: Any, oversize: int = 0) -> Packed:
    """``obj`` as an ordinary pickle, arrays included (``oversize``: see :attr:`Packed.oversize`)."""
    return Packed(pickle.dumps(obj, protocol=5), oversize=oversize)


class ChunkSlots:
    """``n_slots`` slots of ``slot_bytes`` in one shared memory segment.

    The receiving process :meth:`create`\\ s it and passes :attr:`spec` to the sender, which
    :meth:`attach`\\ es; which slots are free is the callers' business (a slot is written by one
    :meth:`pack` and read by one :meth:`unpack`).

    Examples
    --------
    >>> slots = ChunkSlots.create(2, 1 << 16)
    >>> other = ChunkSlots.attach(slots.spec)  # (in the sending process)
    >>> packed = other.pack({"x": np.arange(3.0), "id": "a"}, slot=1)
    >>> packed.slot, len(packed.sizes)
    (1, 1)
    >>> slots.unpack(packed)["x"].tolist()
    [0.0, 1.0, 2.0]
    >>> other.close(); slots.close()
    """

    def __init__(self, shm: shared_memory.SharedMemory, n_slots: int, slot_bytes: int, *, owner: bool) -> None:
        self._shm = shm
        self.n_slots = n_slots
        self.slot_bytes = slot_bytes
        self._owner = owner
        self._warned = False
        assert shm.buf is not None  # (None only once closed)
        self._mem: np.ndarray[Any, np.dtype[np.uint8]] | None = np.frombuffer(shm.buf, dtype=np.uint8)

    @classmethod
    def create(cls, n_slots: int, slot_bytes: int) -> ChunkSlots | None:
        """A new segment, or None (logged) when the system cannot give one."""
        if n_slots < 1 or slot_bytes < 1:
            raise ValueError("need n_slots >= 1 and slot_bytes >= 1")
        size = n_slots * slot_bytes
        # The segment is a sparse file on a tmpfs: creating it succeeds whatever its size, and writing
        # a page the tmpfs has no room for kills the writer (SIGBUS). Leave room for others, too.
        free = _free_bytes(_SHM_DIR)
        if free is not None and size > free // 2:
            log.warning(
                "%s has %d MiB free, too little for %d MiB of decoded chunks: they go through the pipe",
                _SHM_DIR,
                free >> 20,
                size >> 20,
            )
            return None
        try:
            shm = shared_memory.SharedMemory(create=True, size=size)
        except OSError as e:
            log.warning("no shared memory for decoded chunks (%s): they go through the pipe", e)
            return None
        return cls(shm, n_slots, slot_bytes, owner=True)

    @property
    def spec(self) -> tuple[str, int, int]:
        """What :meth:`attach` needs: the segment's name, the slot count and size."""
        return self._shm.name, self.n_slots, self.slot_bytes

    @classmethod
    def attach(cls, spec: tuple[str, int, int]) -> ChunkSlots:
        """The segment :meth:`create`\\ d elsewhere."""
        name, n_slots, slot_bytes = spec
        return cls(shared_memory.SharedMemory(name=name), n_slots, slot_bytes, owner=False)

    def pack(self, obj: Any, slot: int | None) -> Packed:
        """``obj`` pickled with its contiguous arrays written to ``slot`` (None: no slot, all inline)."""
        if slot is None or self._mem is None:
            return pack_inline(obj)
        if not 0 <= slot < self.n_slots:
            raise ValueError(f"slot {slot} out of range")
        buffers: list[pickle.PickleBuffer] = []
        head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        total = sum(r.nbytes for r in raws)
        if total > self.slot_bytes:
            return pack_inline(obj, oversize=total)
        at = slot * self.slot_bytes
        for r in raws:
            self._mem[at : at + r.nbytes] = np.frombuffer(r, dtype=np.uint8)
            at += r.nbytes
        return Packed(head, slot, tuple(r.nbytes for r in raws))

    def unpack(self, packed: Packed) -> Any:
        """The object of :meth:`pack`; its arrays are copies (the slot may be written again at once)."""
        if packed.slot is None:
            if packed.oversize and not self._warned:
                # (a bound that no longer holds makes every chunk take the slow path: say so, once)
                log.warning(
                    "a decoded chunk of %d bytes of arrays did not fit a shared memory slot of %d: such chunks "
                    "go through the pipe, slower",
                    packed.oversize,
                    self.slot_bytes,
                )
                self._warned = True
            return pickle.loads(packed.head)
        if self._mem is None:
            raise ValueError("slots are closed")
        at = packed.slot * self.slot_bytes
        buffers = []
        for n in packed.sizes:
            buffers.append(self._mem[at : at + n].copy())
            at += n
        return pickle.loads(packed.head, buffers=buffers)

    def close(self) -> None:
        """Detach; the creator also removes the segment."""
        if self._mem is None:
            return
        self._mem = None  # (the segment cannot close while an array views it)
        self._shm.close()
        if self._owner:
            self._shm.unlink()


def unpack(slots: ChunkSlots | None, packed: Packed) -> Any:
    """:meth:`ChunkSlots.unpack`, or an inline :class:`Packed` without slots."""
    if slots is None:
        if packed.slot is not None:
            raise ValueError("a packed slot without slots")
        return pickle.loads(packed.head)
    return slots.unpack(packed)
