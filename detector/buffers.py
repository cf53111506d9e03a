"""Working buffers reused from batch to batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


class Scratch:
    """Named working arrays that keep their memory between batches.

    glibc hands large freed temporaries back to the operating system and the next batch faults them in
    again, page by page (several microseconds a page on a virtual machine): a detector's large
    intermediates cost more in page faults than in arithmetic. A detector writes them into these buffers
    instead (``out=``). They are not state: never snapshotted, their contents meaningless between calls.

    Examples
    --------
    >>> s = Scratch()
    >>> a = s.get("x", (20, 30), np.float64)
    >>> b = s.get("x", (300,), np.int64)  # the same memory, another shape
    >>> a.shape, b.shape, s.nbytes
    ((20, 30), (300,), 4800)
    """

    def __init__(self) -> None:
        self._bufs: dict[str, npt.NDArray[np.uint8]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(b.nbytes for b in self._bufs.values())

    def get(self, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """An uninitialized C-contiguous array of ``shape`` and ``dtype`` in buffer ``name`` (grown if needed).

        Two arrays of one name share memory: use one name per array alive at the same time.
        """
        dt = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        buf = self._bufs.get(name)
        if buf is None or buf.nbytes < size:
            buf = np.empty(max(size, 64), dtype=np.uint8)
            self._bufs[name] = buf
        out: npt.NDArray[Any] = buf[:size].view(dt).reshape(shape)
        return out
