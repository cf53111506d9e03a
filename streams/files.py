"""JSONL files: reading events in chunks for replay, writing alerts and dead letters."""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from streams.decode import DeadLetter
from streams.errors import SourceError


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
