"""Sliding windows of per-bin counts, kept as a ring of panes.

A window of ``size`` events (or milliseconds of event time) is cut into panes of ``step``; each pane
holds one count per histogram cell. Closing a pane adds it to the window's running sum and takes
out the pane that left, so an update costs O(cells), whatever the window size: the window is never
stored event by event. Panes are mergeable (sums), which is also what makes a snapshot small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detector.errors import SnapshotError

IntArray = npt.NDArray[np.int64]

# A batch is processed in chunks so that the per-pane count matrix of one chunk stays small.
_MAX_SEGMENT_CELLS = 1 << 22
_NO_TS = np.iinfo(np.int64).max


@dataclass(frozen=True)
class WindowCloses:
    """Windows evaluated during one update: one row per closed pane whose window was ready.

    Attributes
    ----------
    counts : (n_closes, n_cells) int64 window counts after the pane closed
    event_index : (n_closes,) index in the batch of the event at which the pane closed
    pane : (n_closes,) sequence number of the closed pane since the stream started
    n_events, start_ts, end_ts : (n_closes,) events in the window and their first and last event time
    start_seq : (n_closes,) stream sequence number (0-based count of events given to the window) of
        the first event of the window; the event at ``event_index`` has ``batch_seq + event_index``
    """

    counts: IntArray
    event_index: IntArray
    pane: IntArray
    n_events: IntArray
    start_ts: IntArray
    end_ts: IntArray
    start_seq: IntArray

    def __len__(self) -> int:
        return len(self.pane)


class PaneWindow:
    """Sliding window over a stream of histogram cells.

    Parameters
    ----------
    n_cells
        Number of histogram cells counted per pane (all columns and bins together).
    by
        ``"count"``: ``size`` and ``step`` are numbers of events, and a pane closes at its last event.
        ``"time"``: they are milliseconds of event time; a pane closes when the first event of a later
        pane arrives. Late events still inside the window are counted; older ones are dropped and
        counted in :attr:`late_dropped`.
    size, step
        Window length and pane length; ``size`` must be a multiple of ``step``. The window is
        evaluated each time a pane closes.
    min_events
        A window with fewer events is not evaluated (time windows during quiet periods).

    Examples
    --------
    >>> w = PaneWindow(2, by="count", size=4, step=2)
    >>> closes = w.update(np.array([[0], [1], [1], [1], [0], [0]]), np.arange(6))
    >>> closes.counts.tolist(), closes.event_index.tolist()
    ([[1, 3], [2, 2]], [3, 5])
    """

    def __init__(
        self,
        n_cells: int,
        *,
        by: Literal["count", "time"] = "count",
        size: int = 2000,
        step: int = 200,
        min_events: int = 1,
    ) -> None:
        if by not in ("count", "time"):
            raise ValueError(f"by must be 'count' or 'time', got {by!r}")
        if step <= 0 or size <= 0 or size % step:
            raise ValueError(f"size ({size}) must be a positive multiple of step ({step})")
        if n_cells <= 0:
            raise ValueError(f"n_cells must be positive, got {n_cells}")
        self.n_cells = n_cells
        self.by = by
        self.size = size
        self.step = step
        self.min_events = min_events
        self.n_panes = size // step
        self._reset()

    def _reset(self) -> None:
        p, c = self.n_panes, self.n_cells
        self._ring = np.zeros((p, c), dtype=np.int64)
        self._ring_events = np.zeros(p, dtype=np.int64)
        self._ring_min = np.full(p, _NO_TS, dtype=np.int64)
        self._ring_max = np.full(p, -_NO_TS, dtype=np.int64)
        self._ring_seq = np.full(p, _NO_TS, dtype=np.int64)
        self._window = np.zeros(c, dtype=np.int64)
        self._open = np.zeros(c, dtype=np.int64)
        self._open_events = 0
        self._open_min = _NO_TS
        self._open_max = -_NO_TS
        self._open_seq = _NO_TS
        self._open_id = -1  # pane id of the open pane; set by the first event
        self._closed = 0  # panes closed since the start
        self._seen = 0  # events seen
        self.late_dropped = 0

    # -- snapshot -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays; :meth:`restore` on a window with the same parameters continues identically."""
        scalars = [
            self._open_events,
            self._open_min,
            self._open_max,
            self._open_id,
            self._closed,
            self._seen,
            self.late_dropped,
            self._open_seq,
            self.n_cells,
            self.n_panes,
            self.step,
        ]
        return {
            "ring": self._ring.copy(),
            "ring_events": self._ring_events.copy(),
            "ring_min": self._ring_min.copy(),
            "ring_max": self._ring_max.copy(),
            "ring_seq": self._ring_seq.copy(),
            "window": self._window.copy(),
            "open": self._open.copy(),
            "scalars": np.asarray(scalars, dtype=np.int64),
        }

    def restore(self, state: dict[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot`."""
        try:
            s = [int(v) for v in state["scalars"]]
            if s[8:] != [self.n_cells, self.n_panes, self.step]:
                raise SnapshotError(
                    f"snapshot has cells/panes/step {s[8:]}, this window {[self.n_cells, self.n_panes, self.step]}"
                )
            ring = np.array(state["ring"], dtype=np.int64)
            window = np.array(state["window"], dtype=np.int64)
            opened = np.array(state["open"], dtype=np.int64)
            ring_events = np.array(state["ring_events"], dtype=np.int64)
            ring_min = np.array(state["ring_min"], dtype=np.int64)
            ring_max = np.array(state["ring_max"], dtype=np.int64)
            ring_seq = np.array(state["ring_seq"], dtype=np.int64)
        except KeyError as e:
            raise SnapshotError(f"window snapshot is missing {e.args[0]!r}") from None
        if ring.shape != self._ring.shape or window.shape != self._window.shape:
            raise SnapshotError(f"snapshot ring {ring.shape} does not fit this window {self._ring.shape}")
        self._ring, self._window, self._open = ring, window, opened
        self._ring_events, self._ring_min, self._ring_max, self._ring_seq = ring_events, ring_min, ring_max, ring_seq
        (
            self._open_events,
            self._open_min,
            self._open_max,
            self._open_id,
            self._closed,
            self._seen,
            self.late_dropped,
            self._open_seq,
        ) = s[:8]

    def clear_cell(self, cell: int) -> None:
        """Forget the counts of one cell (a padding cell whose counts depend on how events were batched)."""
        self._ring[:, cell] = 0
        self._window[cell] = 0
        self._open[cell] = 0

    @property
    def open_events(self) -> int:
        """Events counted in the open pane, which is not evaluated yet."""
        return self._open_events

    @property
    def oldest_seq(self) -> int:
        """Stream sequence number of the oldest event still counted (window or open pane).

        Later evaluations never reach further back; with nothing counted, the next event's number.
        """
        oldest = min(int(self._ring_seq.min()), self._open_seq)
        return self._seen if oldest == _NO_TS else oldest

    def flush(self, event_index: int = -1) -> WindowCloses:
        """Close the open pane of a time window now and evaluate the window, as a later pane would.

        For the end of a stream (a replay's last events) or a stream gone idle: otherwise the last,
        partial pane waits for an event of a later pane that may never come. Its events are then
        evaluated once; an event of the flushed pane arriving afterwards is a late event (still
        counted while inside the window). ``event_index`` is reported as the closing event's index
        (there is no batch: -1 stands for the last event given). Count windows close each pane at
        its last event, so for them this does nothing.
        """
        out: list[tuple[Any, ...]] = []
        if self.by == "time" and self._open_events:
            self._close(event_index, out)
        return self._closes(out)

    # -- update ---------------------------------------------------------------------------------
    def update(self, cells: npt.NDArray[np.integer[Any]], ts: npt.NDArray[np.int64]) -> WindowCloses:
        """Count the cells of a batch of events and evaluate the window at every pane that closes.

        Parameters
        ----------
        cells
            ``(n_events, k)`` cell index of each event in each of its ``k`` columns.
        ts
            ``(n_events,)`` event times in epoch milliseconds.
        """
        n = len(ts)
        out: list[tuple[Any, ...]] = []
        chunk = max(self.step, (_MAX_SEGMENT_CELLS // self.n_cells) * self.step // 2) if self.by == "count" else n
        start = 0
        while start < n:
            stop = n if self.by == "time" else min(n, start + chunk)
            self._update(cells[start:stop], ts[start:stop], start, out)
            start = stop
        return self._closes(out)

    def _closes(self, out: list[tuple[Any, ...]]) -> WindowCloses:
        if not out:
            empty = np.zeros(0, dtype=np.int64)
            return WindowCloses(np.zeros((0, self.n_cells), dtype=np.int64), *[empty] * 6)
        cols = list(zip(*out, strict=True))
        return WindowCloses(
            counts=np.stack(cols[0]),
            **{
                k: np.asarray(v, dtype=np.int64)
                for k, v in zip(
                    ("event_index", "pane", "n_events", "start_ts", "end_ts", "start_seq"), cols[1:], strict=True
                )
            },
        )

    def _update(
        self, cells: npt.NDArray[Any], ts: npt.NDArray[np.int64], offset: int, out: list[tuple[Any, ...]]
    ) -> None:
        n = len(ts)
        if n == 0:
            return
        count_ids = (self._seen + np.arange(n, dtype=np.int64)) // self.step
        pid = count_ids if self.by == "count" else ts // self.step
        if self._seen == 0:  # first event: pane ids can be negative (event times before the epoch)
            self._open_id = int(pid[0])
        wm = np.maximum.accumulate(np.maximum(pid, self._open_id))
        # Segments: runs of events that share the open pane (the watermark).
        seg_start = np.flatnonzero(np.r_[True, wm[1:] != wm[:-1]])
        seg_stop = np.r_[seg_start[1:], n]
        seg_of = np.repeat(np.arange(len(seg_start)), seg_stop - seg_start)
        on_time = pid == wm
        n_seg = len(seg_start)
        if n_seg * self.n_cells > _MAX_SEGMENT_CELLS and n > 1:
            # Many tiny time panes in one batch: split it so the count matrix stays small.
            half = n // 2
            self._update(cells[:half], ts[:half], offset, out)
            self._update(cells[half:], ts[half:], offset + half, out)
            return
        self._seen += n
        keys = cells + (seg_of * self.n_cells)[:, None]
        # order="K": the cells may be a column-major view; bincount does not care about order.
        flat = keys.ravel(order="K") if on_time.all() else keys[on_time].ravel(order="K")
        seg_counts = np.bincount(flat, minlength=n_seg * self.n_cells).reshape(n_seg, self.n_cells)
        # Per-segment summaries of the on-time events, as Python ints for the loop below.
        ev_counts = np.bincount(seg_of[on_time], minlength=n_seg).tolist()
        seg_min = np.minimum.reduceat(np.where(on_time, ts, _NO_TS), seg_start).tolist()
        seg_max = np.maximum.reduceat(np.where(on_time, ts, -_NO_TS), seg_start).tolist()
        seg_first = np.minimum.reduceat(np.where(on_time, np.arange(n), n), seg_start).tolist()
        starts, stops, marks = seg_start.tolist(), seg_stop.tolist(), wm[seg_start].tolist()
        late = np.flatnonzero(~on_time).tolist()
        late_pos = 0
        for s in range(n_seg):
            a, b = starts[s], stops[s]
            if marks[s] > self._open_id:
                self._advance_to(marks[s], offset + a, out)
            if ev_counts[s]:
                if self._open_seq == _NO_TS:
                    self._open_seq = self._seen - n + seg_first[s]
                self._open += seg_counts[s]
                self._open_events += ev_counts[s]
                self._open_min = min(self._open_min, seg_min[s])
                self._open_max = max(self._open_max, seg_max[s])
            while late_pos < len(late) and late[late_pos] < b:
                self._add_late(late[late_pos], cells, ts, pid)
                late_pos += 1
            if self.by == "count" and self._open_events == self.step:
                self._close(offset + b - 1, out)

    def _add_late(self, i: int, cells: npt.NDArray[Any], ts: npt.NDArray[np.int64], pid: npt.NDArray[np.int64]) -> None:
        p = int(pid[i])
        if p <= self._open_id - self.n_panes:
            self.late_dropped += 1
            return
        slot = p % self.n_panes
        np.add.at(self._ring[slot], cells[i], 1)
        np.add.at(self._window, cells[i], 1)
        self._ring_events[slot] += 1
        self._ring_min[slot] = min(self._ring_min[slot], int(ts[i]))
        self._ring_max[slot] = max(self._ring_max[slot], int(ts[i]))
        self._ring_seq[slot] = min(self._ring_seq[slot], self._seen - len(ts) + i)

    def _advance_to(self, new_id: int, event_index: int, out: list[tuple[Any, ...]]) -> None:
        # Close the open pane, then the empty panes of a gap in event time: a window's worth of empty
        # panes after the open one empties the ring, so at most n_panes + 1 closes.
        for _ in range(min(new_id - self._open_id, self.n_panes + 1)):
            self._close(event_index, out)
        self._open_id = new_id

    def _close(self, event_index: int, out: list[tuple[Any, ...]]) -> None:
        slot = self._open_id % self.n_panes
        self._window -= self._ring[slot]
        self._window += self._open
        self._ring[slot] = self._open
        self._ring_events[slot] = self._open_events
        self._ring_min[slot] = self._open_min
        self._ring_max[slot] = self._open_max
        self._ring_seq[slot] = self._open_seq
        self._open[...] = 0
        self._open_events = 0
        self._open_min, self._open_max, self._open_seq = _NO_TS, -_NO_TS, _NO_TS
        self._closed += 1
        self._open_id += 1
        n_events = int(self._ring_events.sum())
        if self._closed >= self.n_panes and n_events >= self.min_events:
            out.append(
                (
                    self._window.copy(),
                    event_index,
                    self._closed - 1,
                    n_events,
                    int(self._ring_min.min()),
                    int(self._ring_max.max()),
                    int(self._ring_seq.min()),
                )
            )
