"""The adversarial detector's shortcut over runs of events that change no incident state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detector.adversarial import _next_record, _quiet_run, _run_state

Record = tuple[int, str, int]


def step_by_step(
    lv: list[int], calm_now: list[bool], cur: int, cool: int, calm: int, resolve_after: int, cooldown_after: int
) -> tuple[list[Record], int, int, int]:
    """The detector's per-event incident state machine for one kind, as ``AdversarialDetector._process``
    would step it: ``(records (event, status, level), cur, cool, calm)`` after the run."""
    out: list[Record] = []
    for q, (level, is_calm) in enumerate(zip(lv, calm_now, strict=True)):
        status = None
        if level > 0 and cur == 0 and cool == 0:
            status, cur = "open", level
        elif cur > 0 and level > cur:
            status, cur = "update", level
        calm = calm + 1 if cur > 0 and is_calm and status is None else 0
        cool = max(cool - 1, 0)
        if status is None and cur > 0 and calm >= resolve_after:
            status = "resolved"
        if status is not None:
            out.append((q, status, cur))
            if status == "resolved":
                cur, calm, cool = 0, 0, cooldown_after
    return out, cur, cool, calm


@pytest.mark.parametrize("seed", range(200))
def test_quiet_run_agrees_with_stepping_event_by_event(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    lv = rng.choice([0, 0, 0, 1, 2], size=m) * (rng.random(m) < rng.random())
    calm_now = rng.random(m) < rng.uniform(0.3, 1.0)
    cur, cool, calm = int(rng.integers(0, 3)), int(rng.integers(0, 8)), int(rng.integers(0, 12))
    resolve_after = int(rng.integers(3, 20))
    records, _, cool_after, calm_after = step_by_step(lv.tolist(), calm_now.tolist(), cur, cool, calm, resolve_after, 5)
    got = _quiet_run(lv, calm_now, cur, cool, calm, resolve_after)
    if got is None:
        assert records
    else:
        assert not records
        assert got == (cool_after, calm_after)


def test_quiet_run_takes_the_common_cases() -> None:
    calm = np.ones(50, dtype=bool)
    assert _quiet_run(np.zeros(50, dtype=np.int64), calm, 0, 0, 0, 64) == (0, 0)  # nothing open, nothing firing
    assert _quiet_run(np.ones(50, dtype=np.int64), ~calm, 1, 3, 7, 64) == (0, 0)  # open, same level, not calm
    assert _quiet_run(np.ones(50, dtype=np.int64), calm, 0, 0, 0, 64) is None  # opens


def test_incident_jumps_equal_the_event_by_event_machine() -> None:
    def jumps(lv: list[int], cm: list[bool], cur: int, cool: int, calm: int, r: int) -> list[Any]:
        lv_a, cm_a = np.asarray(lv), np.asarray(cm, dtype=bool)
        out: list[Any] = []
        q = 0
        while q < len(lv):
            step = _next_record(lv_a[q:], cm_a[q:], cur, cool, calm, r)
            if step is None:
                cool, calm = _run_state(cm_a[q:], cur, cool, calm)
                break
            t, status = step
            cool, calm = _run_state(cm_a[q : q + t], cur, cool, calm)
            q += t
            if status != "resolved":
                cur = int(lv_a[q])
            calm, cool = 0, max(cool - 1, 0)
            out.append((q, status, cur))
            if status == "resolved":
                cur, calm, cool = 0, 0, 7
            q += 1
        return [*out, ("end", cur, cool, calm)]

    rng = np.random.default_rng(23)
    for _ in range(3000):
        m = int(rng.integers(0, 40))
        lv = rng.choice([0, 0, 0, 1, 2, 3], size=m).tolist()
        cm = (rng.random(m) < rng.random()).tolist()
        cur = int(rng.integers(0, 4))
        state = (cur, int(rng.integers(0, 5)), int(rng.integers(0, 6)) if cur else 0, int(rng.integers(1, 6)))
        records, *end = step_by_step(lv, cm, *state, 7)
        assert jumps(lv, cm, *state) == [*records, ("end", *end)]
