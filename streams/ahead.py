"""Decoding in a second process while this one detects: the service's pipeline over two cores.

Decoding is about two thirds of the service's work per event (benchmarks/results/drift.md), and it
holds the GIL, so a thread cannot overlap it with detection; a child process can. The child gets a
copy of the decoder once and then only message values in and :class:`~streams.decode.DecodeResult`
values out, so results are the same as decoding in this process (``tests/test_service_kafka.py``).
It also does the detectors' work that needs no state (drift cells, anomaly scores, query features;
:mod:`detector.prepared`), which otherwise falls on the busier process.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from streams import process
from streams.decode import Decoder, DecodeResult
from streams.shm import ChunkSlots, Packed, bytes_per_event, pack_inline, unpack

if TYPE_CHECKING:
    from detector.prepared import Preparer

log = logging.getLogger(__name__)

#: ``model_id -> Preparer`` of a pipeline's monitors (:meth:`streams.pipeline.Pipeline.preparers`).
Preparers = Mapping[str, "Preparer"]

# The child process's own copy of the decoder and preparers; set once by the pool's initializer.
_decoder: Decoder | None = None
_preparers: Preparers = {}
_slots: ChunkSlots | None = None


def prepare(decoded: DecodeResult, preparers: Preparers) -> DecodeResult:
    """``decoded`` with each model's rows prepared by that model's preparer (the monitors' state-free
    work, see :mod:`detector.prepared`), to run in the decoding process."""
    if not preparers:
        return decoded
    batches = []
    for mb in decoded.batches:
        p = preparers.get(mb.model_id)
        batches.append(mb if p is None or p.empty else replace(mb, prepared=p(mb.batch)))
    return replace(decoded, batches=batches)


def _start(decoder: Decoder, preparers: Preparers, spec: tuple[str, int, int] | None) -> None:
    global _decoder, _preparers, _slots
    _decoder, _preparers = decoder, preparers
    _slots = None if spec is None else ChunkSlots.attach(spec)
    process.settle_child()


def _ready() -> bool:
    return _decoder is not None


def _decode(values: Sequence[bytes | None], record_ts: npt.NDArray[np.int64] | None, slot: int | None) -> Packed:
    assert _decoder is not None
    decoded = prepare(_decoder.decode(values, record_ts), _preparers)
    return pack_inline(decoded) if _slots is None else _slots.pack(decoded, slot)


class DecodeAhead:
    """Child processes that decode chunks for :meth:`Decoder.decode`; results in submission order.

    If the child dies (killed, out of memory), :meth:`result` decodes that chunk here and every
    later one too: slower, but nothing is lost and the service keeps running.

    Parameters
    ----------
    decoder
        The decoder to copy into the children; also the fallback here.
    processes
        How many child processes decode.
    preparers
        Per model, the monitor's state-free work on a batch, done in the child after decoding (the
        chunks decoded here are not prepared: the monitors do that work themselves).
    max_chunk
        Messages per chunk that the shared memory slots are sized for (:mod:`streams.shm`); larger
        chunks come back through the pipe.

    Examples
    --------
    >>> from detector.schema import Schema
    >>> ahead = DecodeAhead(Decoder({"m": Schema("m", numeric=("x",))}))
    >>> ahead.wait_started()
    >>> chunk = [b'{"event_id":"a","ts":1,"model_id":"m","features":{"x":2}}']
    >>> ahead.result(ahead.submit(chunk), chunk).batches[0].batch.numeric.tolist()
    [[2.0]]
    >>> ahead.close()
    """

    def __init__(
        self,
        decoder: Decoder,
        processes: int = 1,
        preparers: Preparers | None = None,
        max_chunk: int = 5_000,
    ) -> None:
        self.decoder = decoder
        # two chunks in flight per child and one being read here: more in flight go through the pipe
        self._slots = ChunkSlots.create(2 * processes + 1, max_chunk * bytes_per_event(decoder.schemas.values()))
        self._free = list(range(self._slots.n_slots if self._slots is not None else 0))
        self._slot_of: dict[Future[Packed], int] = {}
        # spawn: no fork of a process that holds librdkafka's threads
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            processes,
            mp_context=mp.get_context("spawn"),
            initializer=_start,
            initargs=(decoder, dict(preparers or {}), None if self._slots is None else self._slots.spec),
        )
        # A child takes a second or two to start (imports): chunks are decoded here until it answers.
        self._started = self._pool.submit(_ready)

    def submit(
        self, values: Sequence[bytes | None], record_ts: npt.NDArray[np.int64] | None = None
    ) -> Future[Packed] | None:
        """Start decoding ``values`` (with their messages' timestamps, see :meth:`Decoder.decode`) in a child;
        ``None`` (decode here) until one has started, or once they are gone."""
        if self._pool is None or not self._started.done():
            return None
        slot = self._free.pop() if self._free else None
        try:
            future = self._pool.submit(_decode, list(values), record_ts, slot)
        except RuntimeError as e:  # BrokenProcessPool, or shut down
            self._lost(e)
            return None
        if slot is not None:
            self._slot_of[future] = slot
        return future

    def result(
        self,
        future: Future[Packed] | None,
        values: Sequence[bytes | None],
        record_ts: npt.NDArray[np.int64] | None = None,
    ) -> DecodeResult:
        """The decoded ``values`` submitted as ``future``; decoded here if the child could not."""
        if future is not None:
            try:
                decoded: DecodeResult = unpack(self._slots, future.result())
                return decoded
            except Exception as e:  # the child died: no message may be lost for that
                self._lost(e)
            finally:
                slot = self._slot_of.pop(future, None)
                if slot is not None:
                    self._free.append(slot)
        return self.decoder.decode(values, record_ts)

    def wait_started(self) -> None:
        """Block until a child decodes (or is gone): for tests."""
        if self._pool is not None:
            try:
                self._started.result()
            except Exception as e:
                self._lost(e)

    def _lost(self, e: BaseException) -> None:
        if self._pool is not None:
            log.warning("the decoding process failed (%r); decoding in the service process from now on", e)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @property
    def alive(self) -> bool:
        """Whether chunks are still decoded in the child."""
        return self._pool is not None

    def close(self) -> None:
        """Stop the child process."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._slots is not None:
            self._slots.close()
            self._slots = None
