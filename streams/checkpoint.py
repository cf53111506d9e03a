"""Atomic checkpoints of detector state together with the input offsets it covers."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_META = "__checkpoint_meta__"


@dataclass
class Checkpoint:
    """Detector state and the next offset to read per ``"topic:partition"``."""

    state: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class CheckpointStore:
    """One checkpoint file in a directory, replaced atomically (write, fsync, rename, fsync dir).

    A crash leaves either the previous or the new checkpoint, never a torn one.

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> store.save(Checkpoint({"a": np.arange(3)}, {"t:0": 42}))
    >>> cp = store.load()
    >>> cp.state["a"].tolist(), cp.offsets
    ([0, 1, 2], {'t:0': 42})
    """

    def __init__(self, directory: str | os.PathLike[str], name: str = "checkpoint.npz") -> None:
        self.dir = Path(directory)
        self.path = self.dir / name

    def load(self) -> Checkpoint | None:
        """The last checkpoint, or None if there is none yet."""
        if not self.path.exists():
            return None
        with np.load(self.path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode())
        return Checkpoint(state=arrays, offsets={k: int(v) for k, v in meta.pop("offsets").items()}, meta=meta)

    def save(self, cp: Checkpoint) -> None:
        """Write ``cp`` atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({**cp.meta, "offsets": cp.offsets}).encode()
        buf = io.BytesIO()
        arrays: dict[str, Any] = {**cp.state, _META: np.frombuffer(meta, dtype=np.uint8)}
        np.savez(buf, allow_pickle=False, **arrays)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
