"""JSONL files: reading events in chunks for replay, writing alerts and dead letters."""

from __future__ import annotations

import base64
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import IO, Any

import orjson

from streams import process
from streams.ahead import Preparers, prepare
from streams.decode import DeadLetter, Decoder, DecodeResult
from streams.errors import SourceError
from streams.shm import ChunkSlots, bytes_per_event, pack_inline, unpack


def read_jsonl_chunks(path: str | os.PathLike[str], chunk_size: int) -> Iterator[tuple[list[bytes], list[int]]]:
    """Yield ``(lines, line_numbers)`` chunks of the non-blank lines of a file (1-based numbers)."""
    p = Path(path)
    try:
        fh = p.open("rb")
    except OSError as e:
        raise SourceError(f"cannot read input file {p}: {e.strerror}") from None
    with fh:
        lines: list[bytes] = []
        numbers: list[int] = []
        for number, line in enumerate(fh, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            lines.append(line)
            numbers.append(number)
            if len(lines) >= chunk_size:
                yield lines, numbers
                lines, numbers = [], []
        if lines:
            yield lines, numbers


_Decoded = Iterator[tuple[DecodeResult, list[int]]]


def read_decoded_chunks(
    path: str | os.PathLike[str],
    chunk_size: int,
    decoder: Decoder,
    *,
    ahead: bool,
    preparers: Preparers | None = None,
) -> _Decoded:
    """``(decoded chunk, line numbers)`` of a JSONL file, decoded here or, with ``ahead``, by a child
    process (with a copy of ``decoder``) that stays at most two chunks ahead: the same results.

    The child also applies ``preparers`` to the chunks, see :func:`streams.ahead.prepare`."""
    if not ahead:
        return _decoded_here(str(path), chunk_size, decoder)
    return _decoded_ahead(str(path), chunk_size, decoder, dict(preparers or {}))


def _decoded_here(path: str, chunk_size: int, decoder: Decoder) -> _Decoded:
    for lines, numbers in read_jsonl_chunks(path, chunk_size):
        yield decoder.decode(lines), numbers


def _decode_worker(
    path: str,
    chunk_size: int,
    decoder: Decoder,
    out: Any,
    preparers: Preparers,
    spec: tuple[str, int, int] | None,
    free: Any,
) -> None:
    process.settle_child()
    slots = None if spec is None else ChunkSlots.attach(spec)
    try:
        for decoded, numbers in _decoded_here(path, chunk_size, decoder):
            decoded = prepare(decoded, preparers)
            if slots is None:
                packed = pack_inline(decoded)
            else:
                slot = free.get()  # (blocks while the parent holds every slot: it is behind anyway)
                packed = slots.pack(decoded, slot)
                if packed.slot is None:  # too large for a slot: it went inline
                    free.put(slot)
            out.put((packed, numbers))
    except SourceError as e:
        out.put(e)
    except BaseException as e:  # reported to the parent, which raises it
        out.put(SourceError(f"decoding {path} failed: {e!r}"))
    else:
        out.put(None)
    finally:
        if slots is not None:
            slots.close()


# Slots of decoded chunks in shared memory: two queued, one being written (the parent copies a chunk
# out and frees its slot before it detects on it).
_SLOTS = 3


def _decoded_ahead(path: str, chunk_size: int, decoder: Decoder, preparers: Preparers) -> _Decoded:
    """The chunks of :func:`_decoded_here`, decoded by a child process at most two chunks ahead."""
    ctx = mp.get_context("spawn")  # no fork of a process that may hold library threads
    queue = ctx.Queue(maxsize=2)
    free = ctx.Queue()
    slots = ChunkSlots.create(_SLOTS, chunk_size * bytes_per_event(decoder.schemas.values()))
    for i in range(_SLOTS if slots is not None else 0):
        free.put(i)
    args = (path, chunk_size, decoder, queue, preparers, None if slots is None else slots.spec, free)
    worker = ctx.Process(target=_decode_worker, args=args, name="inferwatch-decode")
    worker.start()
    try:
        while True:
            try:
                item = queue.get(timeout=5.0)
            except Empty:
                if not worker.is_alive():
                    raise SourceError(f"the decoding process of {path} exited ({worker.exitcode})") from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            packed, numbers = item
            decoded = unpack(slots, packed)
            if packed.slot is not None:
                free.put(packed.slot)
            yield decoded, numbers
    finally:
        if worker.is_alive():
            worker.terminate()
        worker.join(10)
        if slots is not None:
            slots.close()


class JsonlWriter:
    """Appends JSON objects as lines; ``path='-'`` writes to standard output."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            self._fh: IO[bytes] = sys.stdout.buffer if self.path == "-" else Path(path).open("wb")  # noqa: SIM115 (closed by close())
        except OSError as e:
            raise SourceError(f"cannot write {path}: {e.strerror}") from None
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(orjson.dumps(record) + b"\n")
        self.count += 1

    def close(self) -> None:
        self._fh.flush()
        if self.path != "-":
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dead_letter_record(dead: DeadLetter, where: dict[str, Any]) -> dict[str, Any]:
    """A dead letter as a JSON object (for files; on Kafka the raw bytes are the message value)."""
    return {
        "reason": dead.reason,
        "detail": dead.detail,
        "source": where,
        "raw_base64": base64.b64encode(dead.raw).decode("ascii"),
    }


class Progress:
    """A one-line progress display on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, label: str, total: int | None = None, *, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._start = time.monotonic()
        self._last = 0.0

    def update(self, done: int, *, force: bool = False, **extra: object) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9)
        pct = f" {100 * done / self.total:5.1f}%" if self.total else ""
        more = "".join(f"  {k} {v}" for k, v in extra.items())
        sys.stderr.write(f"\r{self.label}{pct}  {done:,} events  {rate:,.0f}/s{more}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
