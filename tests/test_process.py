"""Tests of streams.process: the process-wide settings apply, and again without harm."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from streams import process


def test_settle_leaves_one_blas_thread_and_numpy_working() -> None:
    process.settle()
    process.settle()
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    assert blas and all(i["num_threads"] == 1 for i in blas)
    # large temporaries are still allocated, zeroed and freed correctly
    for n in (1 << 10, 1 << 22, 1 << 26):
        a = np.zeros(n // 8)
        assert not a.any()
        a += 1.0
        assert a.sum() == n // 8
