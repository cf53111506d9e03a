"""streams.files.read_jsonl_chunks: the lines and line numbers of a file, however its chunks fall."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from streams.errors import SourceError
from streams.files import read_jsonl_chunks


def lines_one_by_one(data: bytes) -> tuple[list[bytes], list[int]]:
    """What the reader must give, as a loop over the file's lines would: every line without its trailing ``\\r``
    and ``\\n``, unless it is whitespace only, with its 1-based number."""
    out, numbers = [], []
    for number, line in enumerate(io.BytesIO(data), 1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            out.append(line)
            numbers.append(number)
    return out, numbers


def tricky(rng: np.random.Generator) -> bytes:
    pieces = [b'{"event_id": "e', b"}", b"", b"   ", b"\t", b"\r", b'{"x": 1}\r', b'{"s": "a b"}', b" {} "]
    n = int(rng.integers(0, 60))
    body = b"\n".join(
        pieces[int(rng.integers(0, len(pieces)))] + str(i).encode() * int(rng.integers(0, 3)) for i in range(n)
    )
    return body + (b"\n" if rng.random() < 0.5 else b"")


@pytest.mark.parametrize("seed", range(12))
def test_lines_and_numbers_do_not_depend_on_chunks(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = tricky(rng)
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    want = lines_one_by_one(data)
    for chunk in (1, 3, 1000):
        got = list(read_jsonl_chunks(path, chunk))
        assert all(0 < len(c) <= chunk for c, _ in got)
        assert ([x for c, _ in got for x in c], [x for _, n in got for x in n]) == want, chunk


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read input file"):
        list(read_jsonl_chunks(tmp_path / "nope.jsonl", 10))
