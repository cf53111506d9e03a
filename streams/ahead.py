"""Decoding in a second process while this one detects: the service's pipeline over two cores.

Decoding is about two thirds of the service's work per event (benchmarks/results/drift.md), and it
holds the GIL, so a thread cannot overlap it with detection; a child process can. The child gets a
copy of the decoder once and then only message values in and :class:`~streams.decode.DecodeResult`
values out, so results are the same as decoding in this process (``tests/test_service_kafka.py``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from streams.decode import Decoder, DecodeResult

log = logging.getLogger(__name__)

# The child process's own copy of the decoder; set once by the pool's initializer.
_decoder: Decoder | None = None


def _start(decoder: Decoder) -> None:
    global _decoder
    _decoder = decoder


def _ready() -> bool:
    return _decoder is not None


def _decode(values: Sequence[bytes | None]) -> DecodeResult:
    assert _decoder is not None
    return _decoder.decode(values)


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

    def __init__(self, decoder: Decoder, processes: int = 1) -> None:
        self.decoder = decoder
        # spawn: no fork of a process that holds librdkafka's threads
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            processes, mp_context=mp.get_context("spawn"), initializer=_start, initargs=(decoder,)
        )
        # A child takes a second or two to start (imports): chunks are decoded here until it answers.
        self._started = self._pool.submit(_ready)

    def submit(self, values: Sequence[bytes | None]) -> Future[DecodeResult] | None:
        """Start decoding ``values`` in a child; ``None`` (decode here) until one has started, or
        once they are gone."""
        if self._pool is None or not self._started.done():
            return None
        try:
            return self._pool.submit(_decode, list(values))
        except RuntimeError as e:  # BrokenProcessPool, or shut down
            self._lost(e)
            return None

    def result(self, future: Future[DecodeResult] | None, values: Sequence[bytes | None]) -> DecodeResult:
        """The decoded ``values`` submitted as ``future``; decoded here if the child could not."""
        if future is not None:
            try:
                return future.result()
            except Exception as e:  # the child died: no message may be lost for that
                self._lost(e)
        return self.decoder.decode(values)

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
