"""Histogram cells of events against a :class:`~detector.reference.Reference`, for the drift windows to count.

Separate from :mod:`detector.drift` (and its scipy statistics) so that a decoding process can bin
batches without importing them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from detector.reference import Reference
from detector.schema import MISSING, UNSEEN, EventBatch


class Binner:
    """Histogram cell of every event in every monitored column of a reference, for counting.

    Numeric columns are binned with the reference's edges (a value's cell is the number of edges at
    or below it; NaN goes to the missing cell), categorical codes map to their category, unseen or
    missing cell; each column's cells are offset into one row of counts. Picklable without its
    buffers (a decoding process bins the next batch while this one counts).

    Examples
    --------
    >>> from detector.reference import fit_reference
    >>> from detector.schema import Schema
    >>> ref = fit_reference(EventBatch.from_arrays(np.arange(100.0)[:, None]), Schema("m", numeric=("a",)), n_bins=4)
    >>> Binner(ref).cells(EventBatch.from_arrays(np.array([[-1.0], [50.0], [1e9], [np.nan]]))).ravel().tolist()
    [0, 2, 3, 4]
    """

    def __init__(self, reference: Reference) -> None:
        ref = reference
        if ref.n_bins > 255:  # bins and the missing slot are counted in uint8 by cells()
            raise ValueError(f"at most 255 bins per column are supported, the reference has {ref.n_bins}")
        self.reference = reference
        self.n_num = len(ref.num_names)
        self.n_cat = len(ref.cat_names)
        self.num_width = ref.n_bins + 1  # bins, then missing
        self.cat_width = ref.cat_counts.shape[1] + 1  # categories, unseen, then missing
        self.n_cells = self.n_num * self.num_width + self.n_cat * self.cat_width
        self._num_offset = (np.arange(self.n_num) * self.num_width).astype(np.int32)
        self._cat_offset = (self.n_num * self.num_width + np.arange(self.n_cat) * self.cat_width).astype(np.int32)
        # One (n_num, 1) column of edges per comparison pass over the column-major batch.
        self._edges_cols = [np.ascontiguousarray(ref.edges[:, k : k + 1]) for k in range(ref.edges.shape[1])]
        self._buf_cap = -1  # no buffers yet: even an empty first batch allocates them

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if k not in ("_cells_t", "_acc", "_cmp", "_xt")}
        state["_buf_cap"] = -1
        return state

    def _buffers(
        self, n: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        # Reused across batches: allocating these per batch makes glibc fault them back in each time.
        if n > self._buf_cap:
            self._buf_cap = max(n, 1024)
            self._cells_t = np.empty((self.n_num + self.n_cat, self._buf_cap), dtype=np.int32)
            self._acc = np.empty((self.n_num, self._buf_cap), dtype=np.uint8)
            self._cmp = np.empty((self.n_num, self._buf_cap), dtype=np.bool_)
            self._xt = np.empty(self.n_num * self._buf_cap, dtype=np.float64)
        xt = self._xt[: self.n_num * n].reshape(self.n_num, n)  # contiguous, as the comparisons want
        return self._cells_t[:, :n], self._acc[:, :n], self._cmp[:, :n], xt

    def cells(self, batch: EventBatch) -> npt.NDArray[np.int32]:
        """Cell of every event in every monitored column, ``(n_events, n_columns)``.

        The result is a view of a buffer reused by the next call.
        """
        x, c = self.reference.columns(batch)
        n = len(batch)
        cells_t, acc, cmp, xt = self._buffers(n)
        # Column-major: each comparison is one long run against a scalar edge per column, ~2x
        # faster than broadcasting a row of edges over short rows, and 3-6x faster than searchsorted.
        np.copyto(xt, x.T)
        acc[...] = 0
        ones = cmp.view(np.uint8)
        for e in self._edges_cols:
            np.greater_equal(xt, e, out=cmp)
            np.add(acc, ones, out=acc)
        np.isnan(xt, out=cmp)
        acc[cmp] = self.num_width - 1
        np.add(acc, self._num_offset[:, None], out=cells_t[: self.n_num], casting="unsafe")
        if self.n_cat:
            cat = cells_t[self.n_num :]
            cat[...] = c.T
            unseen_slot = self.cat_width - 2
            cat[cat == UNSEEN] = unseen_slot
            cat[cat == MISSING] = unseen_slot + 1
            cat += self._cat_offset[:, None]
        return cells_t.T
