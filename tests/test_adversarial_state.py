"""The adversarial detector's shortcut over runs of events that change no incident state."""

from __future__ import annotations

import numpy as np
import pytest

from detector.adversarial import _quiet_run


def _step_by_step(lv: list[int], calm_now: list[bool], cur: int, cool: int, calm: int, resolve_after: int):  # type: ignore[no-untyped-def]
    """The detector's per-event state machine for one kind: (records emitted, cool, calm) after the run."""
    emitted = 0
    for level, is_calm in zip(lv, calm_now, strict=True):
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
            emitted += 1
            if status == "resolved":
                cur, calm, cool = 0, 0, 5
    return emitted, cool, calm


@pytest.mark.parametrize("seed", range(200))
def test_quiet_run_agrees_with_stepping_event_by_event(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    lv = rng.choice([0, 0, 0, 1, 2], size=m) * (rng.random(m) < rng.random())
    calm_now = rng.random(m) < rng.uniform(0.3, 1.0)
    cur, cool, calm = int(rng.integers(0, 3)), int(rng.integers(0, 8)), int(rng.integers(0, 12))
    resolve_after = int(rng.integers(3, 20))
    emitted, cool_after, calm_after = _step_by_step(lv.tolist(), calm_now.tolist(), cur, cool, calm, resolve_after)
    got = _quiet_run(lv, calm_now, cur, cool, calm, resolve_after)
    if got is None:
        assert emitted > 0
    else:
        assert emitted == 0
        assert got == (cool_after, calm_after)


def test_quiet_run_takes_the_common_cases() -> None:
    calm = np.ones(50, dtype=bool)
    assert _quiet_run(np.zeros(50, dtype=np.int64), calm, 0, 0, 0, 64) == (0, 0)  # nothing open, nothing firing
    assert _quiet_run(np.ones(50, dtype=np.int64), ~calm, 1, 3, 7, 64) == (0, 0)  # open, same level, not calm
    assert _quiet_run(np.ones(50, dtype=np.int64), calm, 0, 0, 0, 64) is None  # opens
