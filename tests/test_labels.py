"""LabelJoin: late, early, duplicate and never-arriving labels; capacity; accounting; snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from detector.errors import SchemaMismatchError, SnapshotError
from detector.labels import JoinedBatch, LabelJoin

NAN = np.nan


def _ids(*xs: object) -> np.ndarray:
    return np.array([str(x) for x in xs], dtype=object)


def _predict(j: LabelJoin, ids: list[int], ts: list[int] | np.ndarray) -> JoinedBatch:
    n = len(ids)
    codes = np.asarray(ids, dtype=np.int32) % 2
    proba = np.column_stack([1 - codes * 0.8 - 0.1, codes * 0.8 + 0.1])
    return j.add_predictions(_ids(*ids), np.asarray(ts), np.full(n, NAN), codes, proba)


def _label(j: LabelJoin, ids: list[int], ts: list[int] | np.ndarray, codes: list[int] | None = None) -> JoinedBatch:
    n = len(ids)
    c = np.asarray(ids, dtype=np.int32) % 2 if codes is None else np.asarray(codes, dtype=np.int32)
    return j.add_labels(_ids(*ids), np.full(n, NAN), c, np.asarray(ts))


def test_late_labels_within_the_horizon_join() -> None:
    j = LabelJoin(capacity=1000, horizon_ms=60_000)
    assert len(_predict(j, list(range(100)), np.arange(100) * 10)) == 0
    out = _label(j, list(range(99, -1, -1)), 5000 + np.arange(99, -1, -1) * 10)  # labels in any order
    assert out.event_id.tolist() == [str(i) for i in range(99, -1, -1)]
    assert out.lag_ms.tolist() == [5000] * 100
    assert out.ts.tolist() == (np.arange(99, -1, -1) * 10).tolist()
    np.testing.assert_array_equal(out.prediction_code, np.arange(99, -1, -1) % 2)
    np.testing.assert_allclose(out.proba[:, 1], (np.arange(99, -1, -1) % 2) * 0.8 + 0.1)
    c = j.counters
    assert c["joined"] == 100 and c["pending_predictions"] == 0 and c["expired"] == 0 and c["unknown"] == 0
    assert j.mean_lag_ms == 5000 and j.max_lag_ms == 5000


def test_labels_after_the_horizon_are_not_joined() -> None:
    j = LabelJoin(capacity=100, horizon_ms=1000)
    _predict(j, [1, 2, 3], [0, 0, 0])
    assert len(_label(j, [1], [1000])) == 1  # exactly at the horizon: joined
    assert len(_label(j, [2], [1001])) == 0  # one ms late: the prediction expired, the label is unknown
    assert len(_label(j, [3], [1002])) == 0  # expired by the watermark meanwhile
    c = j.counters
    assert (c["joined"], c["expired"], c["unknown"], c["pending_predictions"], c["pending_labels"]) == (1, 2, 1, 0, 1)
    # An id the join no longer knows looks like an early label: it waits one horizon, then is unknown.
    _predict(j, [4], [2003])
    assert (j.counters["unknown"], j.counters["pending_labels"]) == (2, 0)


def test_never_arriving_labels_expire_with_the_watermark() -> None:
    j = LabelJoin(capacity=100, horizon_ms=1000)
    _predict(j, list(range(10)), [0] * 10)
    assert j.counters["pending_predictions"] == 10
    _predict(j, [100], [999])
    assert j.counters["expired"] == 0
    _predict(j, [101], [1001])  # the watermark passes the horizon of the first ten
    c = j.counters
    assert c["expired"] == 10 and c["pending_predictions"] == 2
    assert len(_label(j, [3], [1002])) == 0 and j.counters["unknown"] == 0  # kept: its prediction may come
    _predict(j, [102], [2003])
    assert j.counters["unknown"] == 1 and j.counters["pending_labels"] == 0


def test_duplicate_labels_are_counted_and_ignored() -> None:
    j = LabelJoin(capacity=100, horizon_ms=10_000)
    _predict(j, [1, 2], [0, 0])
    out = _label(j, [1, 1, 2], [10, 11, 12], codes=[0, 1, 0])  # a duplicate in the same batch
    assert out.event_id.tolist() == ["1", "2"] and out.label_code.tolist() == [0, 0]  # the first label wins
    assert len(_label(j, [2, 1], [20, 21])) == 0  # and in a later batch
    assert j.counters["duplicate_label"] == 3 and j.counters["joined"] == 2


def test_early_labels_wait_for_their_prediction() -> None:
    j = LabelJoin(capacity=100, horizon_ms=10_000)
    assert len(_label(j, [7, 8, 8], [100, 100, 101])) == 0  # the feedback consumer ran ahead
    assert j.counters["pending_labels"] == 2 and j.counters["duplicate_label"] == 1
    out = _predict(j, [6, 7, 8], [50, 60, 70])
    assert out.event_id.tolist() == ["7", "8"] and out.lag_ms.tolist() == [40, 30]
    assert len(_label(j, [7], [200])) == 0 and j.counters["duplicate_label"] == 2
    assert j.counters["pending_labels"] == 0 and j.counters["pending_predictions"] == 1


def test_capacity_evicts_the_oldest_prediction() -> None:
    j = LabelJoin(capacity=10, horizon_ms=10**9, label_capacity=3)
    _predict(j, list(range(15)), list(range(15)))
    assert j.counters["expired"] == 5 and j.counters["pending_predictions"] == 10
    out = _label(j, list(range(15)), [100] * 15)
    assert sorted(out.event_id.tolist(), key=int) == [str(i) for i in range(5, 15)]
    c = j.counters
    # Labels of the evicted ids wait as early labels, and the label ring (3 slots) evicts the oldest two.
    assert c["unknown"] == 2 and c["pending_labels"] == 3


def test_a_batch_larger_than_the_capacity_keeps_its_early_joins() -> None:
    j = LabelJoin(capacity=4, horizon_ms=10**9, label_capacity=20)
    _label(j, list(range(10)), [5] * 10)
    out = _predict(j, list(range(10)), list(range(10)))
    assert out.event_id.tolist() == [str(i) for i in range(10)]
    assert out.ts.tolist() == list(range(10)) and out.prediction_code.tolist() == [i % 2 for i in range(10)]
    assert j.counters["expired"] == 0


def test_duplicate_predictions_and_widths() -> None:
    j = LabelJoin(capacity=10, horizon_ms=100)
    _predict(j, [1, 1], [0, 0])
    assert j.counters["duplicate_prediction"] == 1
    with pytest.raises(SchemaMismatchError):
        j.add_predictions(_ids(2), np.array([0]), np.array([NAN]), np.array([0]), np.ones((1, 3)) / 3)
    with pytest.raises(ValueError):
        LabelJoin(capacity=0, horizon_ms=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_prediction_and_label_is_accounted_for(seed: int) -> None:
    rng = np.random.default_rng(seed)
    j = LabelJoin(capacity=300, horizon_ms=2000, label_capacity=50)
    n_pred = n_lab = 0
    joined_ids: list[str] = []
    t = 0
    for step in range(60):
        t += 100
        ids = list(range(step * 40, step * 40 + 40))
        out = _predict(j, ids, t + rng.integers(-50, 50, size=40))
        joined_ids += out.event_id.tolist()
        n_pred += 40
        # Labels arrive now for events of the last 3 s (some beyond the 2 s horizon, some of events still to
        # come), some twice, some never.
        k = int(rng.integers(0, 41))
        lab = np.maximum(step * 40 + 60 - rng.integers(0, 1200, size=k), 0).tolist()
        out = _label(j, lab, t + rng.integers(-50, 50, size=k))
        joined_ids += out.event_id.tolist()
        n_lab += k
        c = j.counters
        assert c["joined"] + c["expired"] + c["pending_predictions"] + c["duplicate_prediction"] == n_pred
        assert c["joined"] + c["duplicate_label"] + c["unknown"] + c["pending_labels"] == n_lab
        assert len(joined_ids) == c["joined"] == len(set(joined_ids))
    c = j.counters
    assert c["joined"] > 200 and c["expired"] > 0 and c["duplicate_label"] > 0 and c["unknown"] > 0


def test_snapshot_round_trip_continues_identically() -> None:
    def run(j: LabelJoin, part: int) -> list[tuple[object, ...]]:
        rng = np.random.default_rng(part)
        out = []
        for step in range(part * 20, part * 20 + 20):
            ids = list(range(step * 10, step * 10 + 10))
            a = _predict(j, ids, [step * 100] * 10)
            b = _label(j, rng.choice(step * 10 + 20, size=8).tolist(), [step * 100 + 50] * 8)
            out += [
                tuple(np.asarray(getattr(x, f)).tolist().__repr__() for f in JoinedBatch.__dataclass_fields__)
                for x in (a, b)
            ]
        return out

    whole = LabelJoin(capacity=64, horizon_ms=1500, label_capacity=8)
    expected = run(whole, 0) + run(whole, 1)
    first = LabelJoin(capacity=64, horizon_ms=1500, label_capacity=8)
    got = run(first, 0)
    second = LabelJoin(capacity=64, horizon_ms=1500, label_capacity=8)
    second.restore({k: np.array(v) for k, v in first.snapshot().items()})
    assert second.counters == first.counters
    got += run(second, 1)
    assert got == expected and second.counters == whole.counters
    with pytest.raises(SnapshotError):
        LabelJoin(capacity=65, horizon_ms=1500, label_capacity=8).restore(first.snapshot())


def test_batches_give_the_same_joins_as_one_row_at_a_time() -> None:
    rng = np.random.default_rng(42)
    steps = []
    for step in range(40):
        pred_ids = list(range(step * 30, step * 30 + 30))  # unique prediction ids
        lab_ids = np.maximum(step * 30 + 40 - rng.integers(0, 900, size=25), 0).tolist()  # late, early, repeated
        steps.append(
            (
                pred_ids,
                step * 100 + rng.integers(-30, 30, size=30),
                lab_ids,
                step * 100 + rng.integers(-30, 30, size=25),
            )
        )

    def run(one_by_one: bool) -> tuple[list[tuple[object, ...]], dict[str, int]]:
        j = LabelJoin(capacity=200, horizon_ms=1500, label_capacity=40)
        rows: list[tuple[object, ...]] = []

        def keep(out: JoinedBatch) -> None:
            rows.extend(
                zip(
                    out.event_id.tolist(),
                    out.ts.tolist(),
                    out.lag_ms.tolist(),
                    out.label_code.tolist(),
                    out.prediction_code.tolist(),
                    out.proba[:, 1].tolist(),
                    strict=True,
                )
            )

        for pred_ids, pts, lab_ids, lts in steps:
            if one_by_one:
                for i in range(len(pred_ids)):
                    keep(_predict(j, pred_ids[i : i + 1], pts[i : i + 1]))
                for i in range(len(lab_ids)):
                    keep(_label(j, lab_ids[i : i + 1], lts[i : i + 1]))
            else:
                keep(_predict(j, pred_ids, pts))
                keep(_label(j, lab_ids, lts))
        return rows, j.counters

    rows_batch, counters_batch = run(False)
    rows_one, counters_one = run(True)
    assert counters_batch["joined"] > 100 and counters_batch["duplicate_label"] > 0 and counters_batch["expired"] > 0
    assert rows_batch == rows_one
    # The watermark moves once per call: a label repeated after its first copy timed out in the label ring
    # is "unknown" row by row but a "duplicate_label" within one batch; nothing else differs.
    merged = {k: v for k, v in counters_batch.items() if k not in ("unknown", "duplicate_label")}
    assert merged == {k: v for k, v in counters_one.items() if k not in ("unknown", "duplicate_label")}
    lost = ("unknown", "duplicate_label")
    assert sum(counters_batch[k] for k in lost) == sum(counters_one[k] for k in lost)
