"""PaneWindow arithmetic against brute-force recounts, batch invariance and snapshots."""

from __future__ import annotations

import io
import itertools
from typing import Any

import numpy as np
import pytest

from detector.errors import SnapshotError
from detector.window import PaneWindow, WindowCloses

FIELDS = ("counts", "event_index", "pane", "n_events", "start_ts", "end_ts", "start_seq")


def _cells(rng: np.random.Generator, n: int, n_cells: int, k: int = 3) -> np.ndarray:
    return rng.integers(0, n_cells, size=(n, k)).astype(np.int32)


def _feed(w: PaneWindow, cells: np.ndarray, ts: np.ndarray, sizes: list[int] | None = None) -> dict[str, np.ndarray]:
    """Feed ``cells`` in chunks of ``sizes`` (all at once if None); event_index made stream-global."""
    n = len(ts)
    bounds = [0, n] if sizes is None else list(np.cumsum([0, *sizes]))
    assert bounds[-1] == n
    parts: list[WindowCloses] = []
    offsets = []
    for a, b in itertools.pairwise(bounds):
        parts.append(w.update(cells[a:b], ts[a:b]))
        offsets.append(a)
    out = {f: np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS[1:]}
    out["counts"] = np.concatenate([p.counts for p in parts]).reshape(-1, w.n_cells)
    out["event_index"] = np.concatenate([p.event_index + o for p, o in zip(parts, offsets, strict=True)])
    return out


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)


def _random_sizes(rng: np.random.Generator, n: int, hi: int) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(0, hi), n - sum(sizes))))
    return sizes


# -- count windows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "step"), [(4, 2), (20, 5), (30, 30), (100, 10)])
def test_count_window_equals_brute_force_recount(size: int, step: int) -> None:
    rng = np.random.default_rng(size * 1000 + step)
    n, n_cells = 457, 7
    cells = _cells(rng, n, n_cells)
    ts = np.sort(rng.integers(0, 10_000, size=n))
    w = PaneWindow(n_cells, by="count", size=size, step=step)
    out = _feed(w, cells, ts)

    expected_idx = np.arange(size - 1, n, step)  # a pane closes at its last event; first window full at size
    np.testing.assert_array_equal(out["event_index"], expected_idx)
    np.testing.assert_array_equal(out["pane"], (expected_idx + 1) // step - 1)
    for r, i in enumerate(expected_idx):
        lo = i - size + 1
        np.testing.assert_array_equal(out["counts"][r], np.bincount(cells[lo : i + 1].ravel(), minlength=n_cells))
        assert out["n_events"][r] == size
        assert out["start_seq"][r] == lo
        assert out["start_ts"][r] == ts[lo : i + 1].min()
        assert out["end_ts"][r] == ts[lo : i + 1].max()


def test_count_window_docstring_case() -> None:
    w = PaneWindow(2, by="count", size=4, step=2)
    c = w.update(np.array([[0], [1], [1], [1], [0], [0]]), np.arange(6))
    assert c.counts.tolist() == [[1, 3], [2, 2]]
    assert c.event_index.tolist() == [3, 5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_window_batch_row_and_chunk_invariant(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_cells = 1_000, 9
    cells, ts = _cells(rng, n, n_cells), np.arange(n) * 3
    make = lambda: PaneWindow(n_cells, by="count", size=60, step=15)  # noqa: E731
    whole = _feed(make(), cells, ts)
    assert len(whole["pane"]) > 50
    _assert_same(whole, _feed(make(), cells, ts, [1] * n))
    _assert_same(whole, _feed(make(), cells, ts, _random_sizes(rng, n, 40)))
    _assert_same(whole, _feed(make(), cells, ts, [0, 7, 0, n - 7]))


@pytest.mark.parametrize("by", ["count", "time"])
def test_large_batch_is_split_internally(by: str) -> None:
    """Enough cells (and, for time, panes) that update() splits the batch: same result as small pieces."""
    rng = np.random.default_rng(3)
    n_cells, n = 10_000, 1_000  # count: 838-event chunks; time: 500 panes x 10k cells > 4M
    cells, ts = _cells(rng, n, n_cells, k=2), np.arange(n) * 2
    make = lambda: PaneWindow(n_cells, by=by, size=40, step=4)  # type: ignore[arg-type]  # noqa: E731
    whole = _feed(make(), cells, ts)
    assert len(whole["pane"]) > 200
    _assert_same(whole, _feed(make(), cells, ts, [100] * 10))


# -- time windows ------------------------------------------------------------------------------------


def _brute_time(
    cells: np.ndarray, ts: np.ndarray, n_cells: int, size: int, step: int, min_events: int
) -> tuple[dict[str, np.ndarray], int]:
    """Event-by-event model of a time window: panes are ``ts // step``; a pane closes when an event of a
    later pane arrives; an event older than the window at its arrival is dropped."""
    n_panes = size // step
    kept: list[tuple[int, int, int]] = []  # (pane, index, ts)
    open_id: int | None = None
    closed = 0
    dropped = 0
    rows: dict[str, list[Any]] = {f: [] for f in FIELDS}
    for i, t in enumerate(ts.tolist()):
        p = t // step
        if open_id is None:
            open_id = p
        if p > open_id:
            for q in range(open_id, p):
                closed += 1
                win = [(pp, j, tt) for pp, j, tt in kept if q - n_panes < pp <= q]
                if closed >= n_panes and len(win) >= min_events:
                    idx = np.array([j for _, j, _ in win], dtype=np.int64)
                    rows["counts"].append(np.bincount(cells[idx].ravel(), minlength=n_cells))
                    rows["event_index"].append(i)
                    rows["n_events"].append(len(win))
                    rows["start_ts"].append(min(tt for _, _, tt in win))
                    rows["end_ts"].append(max(tt for _, _, tt in win))
                    rows["start_seq"].append(int(idx.min()))
            open_id = p
        if p <= open_id - n_panes:
            dropped += 1
            continue
        kept.append((p, i, t))
    out = {f: np.asarray(v, dtype=np.int64) for f, v in rows.items() if f not in ("counts", "pane")}
    out["counts"] = np.asarray(rows["counts"], dtype=np.int64).reshape(-1, n_cells)
    return out, dropped


def _time_stream(rng: np.random.Generator, n: int, late_share: float, gaps: bool) -> np.ndarray:
    """Mostly increasing event times (ms) with some late events and, optionally, long silences."""
    inc = rng.exponential(40.0, size=n)
    if gaps:
        gap = rng.random(n) < 0.01
        inc[gap] += rng.choice([300.0, 1_000.0, 1_300.0, 5_000.0], size=int(gap.sum()))
    ts = np.cumsum(inc).astype(np.int64) + 1_700_000_000_000
    late = rng.random(n) < late_share
    ts[late] -= rng.integers(0, 2_500, size=int(late.sum()))
    return ts


@pytest.mark.parametrize(
    ("seed", "late_share", "gaps", "min_events"),
    [
        (0, 0.0, False, 1),
        (1, 0.1, False, 1),
        (2, 0.1, True, 1),
        (3, 0.2, True, 5),
        (4, 0.05, True, 15),
    ],
)
def test_time_window_equals_brute_force(seed: int, late_share: float, gaps: bool, min_events: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_cells, size, step = 1_500, 6, 1_000, 250
    ts = _time_stream(rng, n, late_share, gaps)
    cells = _cells(rng, n, n_cells)
    w = PaneWindow(n_cells, by="time", size=size, step=step, min_events=min_events)
    out = _feed(w, cells, ts)
    exp, dropped = _brute_time(cells, ts, n_cells, size, step, min_events)
    assert len(exp["event_index"]) > 20
    for f in FIELDS:
        if f != "pane":
            np.testing.assert_array_equal(out[f], exp[f], err_msg=f)
    assert w.late_dropped == dropped
    assert (dropped > 0) == (late_share > 0)
    assert np.all(np.diff(out["pane"]) > 0)
    assert np.all(out["n_events"] >= min_events)


@pytest.mark.parametrize("seed", [10, 11])
def test_time_window_batch_row_and_chunk_invariant(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_cells = 1_200, 5
    ts = _time_stream(rng, n, 0.15, gaps=True)
    cells = _cells(rng, n, n_cells)
    make = lambda: PaneWindow(n_cells, by="time", size=1_000, step=200, min_events=3)  # noqa: E731
    whole = _feed(make(), cells, ts)
    assert len(whole["pane"]) > 20
    _assert_same(whole, _feed(make(), cells, ts, [1] * n))
    _assert_same(whole, _feed(make(), cells, ts, _random_sizes(rng, n, 60)))


def test_time_window_negative_event_times() -> None:
    """Pane ids below zero (clock skew, times before the epoch) are ordinary panes."""
    ts = np.array([-250, -150, -50, 50, 150, 250, 350, 450])
    cells = np.zeros((8, 1), dtype=np.int32)
    make = lambda: PaneWindow(1, by="time", size=300, step=100)  # noqa: E731
    whole = _feed(make(), cells, ts)
    assert whole["event_index"].tolist() == [3, 4, 5, 6, 7]
    assert whole["n_events"].tolist() == [3] * 5
    assert whole["start_ts"].tolist() == [-250, -150, -50, 50, 150]
    _assert_same(whole, _feed(make(), cells, ts, [1] * 8))


def test_time_window_gap_closes_empty_panes() -> None:
    w = PaneWindow(2, by="time", size=3_000, step=1_000)
    c = w.update(np.array([[0], [0], [1]]), np.array([0, 500, 2_100]))
    # ts 2100 closes pane 0 and the empty pane 1: two closes, not yet a full window of 3 panes
    assert len(c) == 0
    c = w.update(np.array([[1]]), np.array([3_000]))
    assert c.counts.tolist() == [[2, 1]]
    assert (c.n_events.tolist(), c.start_ts.tolist(), c.end_ts.tolist(), c.start_seq.tolist()) == (
        [3],
        [0],
        [2_100],
        [0],
    )
    c = w.update(np.array([[0]]), np.array([4_000]))  # pane 0 leaves the window
    assert c.counts.tolist() == [[0, 2]]
    assert (c.n_events.tolist(), c.start_ts.tolist(), c.start_seq.tolist()) == ([2], [2_100], [2])


def test_time_window_gap_longer_than_window_empties_it() -> None:
    w = PaneWindow(2, by="time", size=3, step=1)
    c = w.update(np.array([[0], [1]]), np.array([0, 10]))
    assert c.counts.tolist() == [[1, 0]]  # the last window that still holds the event at ts 0
    c = w.update(np.array([[1]]), np.array([11]))
    assert c.counts.tolist() == [[0, 1]]  # only the event at ts 10: the one at ts 0 is long gone
    assert (c.n_events.tolist(), c.start_ts.tolist(), c.end_ts.tolist(), c.start_seq.tolist()) == ([1], [10], [10], [1])


def test_time_window_late_events_counted_or_dropped() -> None:
    w = PaneWindow(3, by="time", size=300, step=100)
    w.update(np.array([[0], [0], [0]]), np.array([0, 100, 250]))  # open pane is 2
    c = w.update(np.array([[1], [2]]), np.array([150, 350]))  # 150 is late but in the window
    assert w.late_dropped == 0
    assert c.counts.tolist() == [[3, 1, 0]]  # panes 0..2: ts 0, 100, 150, 250
    assert (c.n_events.tolist(), c.start_ts.tolist(), c.end_ts.tolist()) == ([4], [0], [250])
    c = w.update(np.array([[2], [1], [2]]), np.array([99, 120, 400]))  # 99 is too late now
    assert w.late_dropped == 1
    assert c.counts.tolist() == [[2, 2, 1]]  # panes 1..3: ts 100, 120, 150, 250, 350
    assert (c.n_events.tolist(), c.start_ts.tolist(), c.end_ts.tolist()) == ([5], [100], [350])


def test_time_window_min_events() -> None:
    w = PaneWindow(1, by="time", size=200, step=100, min_events=3)
    c = w.update(np.zeros((6, 1), dtype=np.int32), np.array([0, 50, 150, 250, 450, 460]))
    # pane 0 closes at ts 150 (window not yet full); pane 1 at ts 250 (panes 0..1: 0, 50, 150);
    # panes 2 and 3 at ts 450 (150, 250 and 250 only: too few)
    assert c.n_events.tolist() == [3]
    assert c.event_index.tolist() == [3]
    c = w.update(np.zeros((1, 1), dtype=np.int32), np.array([500]))
    assert len(c) == 0  # pane 4 closes: panes 3..4 hold 450 and 460 only


# -- snapshots ---------------------------------------------------------------------------------------


def _roundtrip(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("by", ["count", "time"])
def test_snapshot_restore_continues_identically(by: str) -> None:
    rng = np.random.default_rng(20)
    n, n_cells = 1_500, 8
    ts = _time_stream(rng, n, 0.1, gaps=True) if by == "time" else np.arange(n, dtype=np.int64)
    cells = _cells(rng, n, n_cells)
    kw: dict[str, Any] = {"by": by, "size": 1_000 if by == "time" else 60, "step": 250 if by == "time" else 20}
    for cut in (1, 333, 700, 1_499):
        full = PaneWindow(n_cells, **kw)
        full.update(cells[:cut], ts[:cut])
        expected = full.update(cells[cut:], ts[cut:])

        first = PaneWindow(n_cells, **kw)
        first.update(cells[:cut], ts[:cut])
        state = first.snapshot()
        assert all(isinstance(v, np.ndarray) for v in state.values())
        second = PaneWindow(n_cells, **kw)
        second.restore(_roundtrip(state))
        got = second.update(cells[cut:], ts[cut:])
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(got, f), getattr(expected, f), err_msg=f"{f} at cut {cut}")
        assert second.late_dropped == full.late_dropped


def test_snapshot_is_a_copy() -> None:
    w = PaneWindow(2, by="count", size=4, step=2)
    w.update(np.array([[0], [1], [1]]), np.arange(3))
    state = w.snapshot()
    before = {k: v.copy() for k, v in state.items()}
    w.update(np.array([[0], [0], [0]]), np.arange(3, 6))
    for k in state:
        np.testing.assert_array_equal(state[k], before[k])


@pytest.mark.parametrize(
    "other",
    [
        {"n_cells": 5, "size": 60, "step": 20},
        {"n_cells": 4, "size": 80, "step": 20},
        {"n_cells": 4, "size": 60, "step": 30},
    ],
)
def test_restore_with_other_parameters_raises(other: dict[str, int]) -> None:
    w = PaneWindow(4, by="count", size=60, step=20)
    w.update(np.zeros((30, 1), dtype=np.int32), np.arange(30))
    target = PaneWindow(other.pop("n_cells"), by="count", **other)
    with pytest.raises(SnapshotError):
        target.restore(w.snapshot())


def test_restore_incomplete_snapshot_raises() -> None:
    w = PaneWindow(4, by="count", size=60, step=20)
    state = w.snapshot()
    del state["ring"]
    with pytest.raises(SnapshotError, match="ring"):
        PaneWindow(4, by="count", size=60, step=20).restore(state)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"by": "events"},
        {"size": 0},
        {"step": 0},
        {"step": -10, "size": 100},
        {"size": 100, "step": 30},
        {"n_cells": 0},
    ],
)
def test_invalid_parameters_raise(kwargs: dict[str, Any]) -> None:
    n_cells = kwargs.pop("n_cells", 3)
    with pytest.raises(ValueError):
        PaneWindow(n_cells, **kwargs)


def test_empty_update() -> None:
    w = PaneWindow(3, by="count", size=4, step=2)
    c = w.update(np.zeros((0, 2), dtype=np.int32), np.zeros(0, dtype=np.int64))
    assert len(c) == 0 and c.counts.shape == (0, 3)


# -- flush of the open time pane (end of a replay, idle stream) -------------------------------------
def test_flush_evaluates_the_open_time_pane_as_a_later_event_would() -> None:
    rng = np.random.default_rng(11)
    n_cells = 12
    ts = np.sort(rng.integers(0, 1_000, size=400)).astype(np.int64)
    cells = _cells(rng, len(ts), n_cells)
    flushed = PaneWindow(n_cells, by="time", size=200, step=50)
    woken = PaneWindow(n_cells, by="time", size=200, step=50)
    before = flushed.update(cells, ts)
    assert flushed.open_events > 0
    got = flushed.flush(event_index=-1)
    # The same events followed by one event of the next pane: its first close is the flush's.
    later = woken.update(np.vstack([cells, cells[:1]]), np.r_[ts, (ts[-1] // 50 + 1) * 50])
    assert len(got) == 1 and len(later) == len(before) + 1
    for f in FIELDS[:1] + FIELDS[2:]:
        np.testing.assert_array_equal(getattr(got, f)[0], getattr(later, f)[-1], err_msg=f)
    assert got.event_index.tolist() == [-1]
    assert got.end_ts[0] == ts[-1] and got.n_events[0] == int(np.sum(ts >= ts[-1] // 50 * 50 - 150))
    # Nothing left open: a second flush evaluates nothing.
    assert flushed.open_events == 0 and len(flushed.flush()) == 0


def test_flush_then_late_events_of_the_flushed_pane_are_still_counted() -> None:
    w = PaneWindow(3, by="time", size=20, step=10, min_events=1)
    w.update(np.array([[0], [1], [2]]), np.array([0, 10, 21]))
    closes = w.flush()
    assert closes.counts.tolist() == [[0, 1, 1]] and closes.pane.tolist() == [2]
    # An event of the flushed pane (21..29) arrives after the flush: a late event, inside the window.
    w.update(np.array([[2]]), np.array([25]))
    assert w.late_dropped == 0 and w.open_events == 0
    after = w.update(np.array([[0]]), np.array([40]))
    # The pane of 30..39 closes empty: the window is now panes 20..29 (with the late event) and 30..39.
    assert after.counts.tolist() == [[0, 0, 2]]


def test_flush_of_a_count_window_does_nothing() -> None:
    w = PaneWindow(2, by="count", size=4, step=2)
    w.update(np.array([[0], [1], [1], [1], [0]]), np.arange(5))
    state = w.snapshot()
    assert len(w.flush()) == 0
    for k, v in w.snapshot().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)


def test_flush_is_snapshot_safe_and_deterministic() -> None:
    rng = np.random.default_rng(5)
    ts = np.sort(rng.integers(0, 5_000, size=2_000)).astype(np.int64)
    cells = _cells(rng, len(ts), 20)
    a = PaneWindow(20, by="time", size=1_000, step=100)
    a.update(cells[:1_200], ts[:1_200])
    b = PaneWindow(20, by="time", size=1_000, step=100)
    b.restore(a.snapshot())
    fa, fb = a.flush(), b.flush()
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(fa, f), getattr(fb, f), err_msg=f)
    ra, rb = a.update(cells[1_200:], ts[1_200:]), b.update(cells[1_200:], ts[1_200:])
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(ra, f), getattr(rb, f), err_msg=f)


def test_oldest_seq_is_the_first_event_a_later_window_can_include() -> None:
    w = PaneWindow(2, by="time", size=20, step=10)
    assert w.oldest_seq == 0
    w.update(np.zeros((5, 1), np.int32), np.array([0, 5, 12, 18, 25]))
    assert w.oldest_seq == 0  # panes 0..9 and 10..19 are the window, 20..29 is open
    w.update(np.zeros((1, 1), np.int32), np.array([31]))
    assert w.oldest_seq == 2  # pane 0..9 left the window
    w.update(np.zeros((1, 1), np.int32), np.array([90]))
    assert w.oldest_seq == 6  # a gap emptied the window: only the open pane's event is left
