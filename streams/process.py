"""Process-wide settings of inferwatch's processes (the service, a replay, their decoding children).

- One BLAS thread: the detectors make many small BLAS calls, which are 4-370x slower when BLAS
  threads fight the service's own threads (or its other process) on a busy machine (benchmarks/).
- A decoding child exits when its parent does (:func:`exit_with_parent`): killed, the service would
  otherwise leave it waiting on its queue for ever, holding its memory.
- glibc keeps freed memory for reuse: by default it gives every temporary of more than a few
  hundred KiB back to the system when freed and takes it again on the next batch, one page fault
  per 4 KiB (each batch's decoded arrays and scores are megabytes; on the virtual machines measured
  here a fault of never-touched memory costs ~10 us). Costs memory held at the peak (a batch's worth).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time

from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest: bigger blocks are still mapped (and lazily zeroed)
_TRIM_THRESHOLD = 256 << 20


def settle() -> None:
    """Apply the settings to this process (idempotent); call after the imports that load BLAS."""
    threadpool_limits(1)
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): its allocator's defaults
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)):
        log.debug("mallopt refused the thresholds; the allocator keeps its defaults")


def settle_child() -> None:
    """:func:`settle` for a decoding child, which also ends with its parent (:func:`exit_with_parent`)."""
    settle()
    exit_with_parent()


def exit_with_parent(poll_s: float = 1.0) -> None:
    """End this process (``os._exit``) within ``poll_s`` of its parent's death, from a daemon thread.

    A child of :mod:`multiprocessing` holds both ends of its queues, so it never sees its parent go.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="inferwatch-exit-with-parent", daemon=True).start()
