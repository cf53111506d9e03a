"""Joining late labels to their predictions by ``event_id``, in bounded memory.

Labels arrive inline on an event or later on a feedback topic (``{"event_id", "label", "ts"}``). A
:class:`LabelJoin` keeps the predictions still waiting for a label in a ring buffer of ``capacity``
slots (arrays, plus one dict from event id to slot) and pairs each arriving label with its prediction.

Contract (what happens to every id):

* **joined**: a label arrives within ``horizon_ms`` of its prediction's event time
  (``label ts - event ts <= horizon_ms``), whichever of the two arrives first.
* **duplicate_label**: a second label for an id already joined is ignored and counted, as long as the
  joined id is still remembered (until its slot is reused or the horizon has passed; after that a
  repeated label counts as ``unknown``). A repeated label for an id still waiting in the label buffer
  is a duplicate too. A repeated prediction id is ignored and counted as ``duplicate_prediction``.
* **expired**: a prediction that never joined: the watermark (latest event or label time seen) passed
  its event time by more than ``horizon_ms``, its slot was reused because ``capacity`` predictions
  arrived after it, or its label came later than the horizon.
* **unknown**: a label that never joined. Labels whose prediction has not arrived yet (the feedback
  consumer may run ahead of the inference one) are **kept briefly** in a second ring of
  ``label_capacity`` slots and joined when the prediction comes; they count as ``unknown`` when the
  watermark passes their label time by more than ``horizon_ms``, when their slot is reused, or when the
  prediction arrives but is older than the horizon allows.

Eviction is by time (horizon, against the watermark) and by insertion order (capacity). The watermark
moves once per call, to the latest time of the call's rows; so a batch whose times span less than the
horizon joins exactly the rows that the same rows added one at a time would, and only the split of the
never-joined labels between ``duplicate_label`` and ``unknown`` can differ (a label repeated after its
first copy timed out). Repeated prediction ids within one call are the other exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from detector.errors import SchemaMismatchError, SnapshotError
from detector.schema import MISSING

__all__ = ["JoinedBatch", "LabelJoin"]

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

_EMPTY, _WAITING, _JOINED = 0, 1, 2
_COUNTERS: Final = ("joined", "duplicate_label", "unknown", "expired", "duplicate_prediction")
_NO_TS: Final = np.iinfo(np.int64).min


@dataclass(frozen=True)
class JoinedBatch:
    """Predictions joined with their labels.

    Attributes
    ----------
    event_id : (m,) object array of str
    ts : (m,) int64 event time of the prediction (epoch ms)
    label_ts : (m,) int64 time of the label
    lag_ms : (m,) int64 label lag, ``label_ts - ts``
    prediction : (m,) float64 numeric predictions (NaN for classifiers)
    prediction_code : (m,) int32 predicted class codes (``MISSING`` for regressors)
    proba : (m, n_classes) float64 class probabilities (NaN rows where none were sent)
    label : (m,) float64 numeric labels
    label_code : (m,) int32 class codes of categorical labels
    """

    event_id: npt.NDArray[np.object_]
    ts: I64
    label_ts: I64
    lag_ms: I64
    prediction: F64
    prediction_code: I32
    proba: F64
    label: F64
    label_code: I32

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls, n_classes: int = 0) -> JoinedBatch:
        """A batch of no rows."""
        z = np.zeros(0, dtype=np.int64)
        return cls(
            np.zeros(0, dtype=object), z, z, z, np.zeros(0), np.zeros(0, np.int32), np.zeros((0, n_classes)),
            np.zeros(0), np.zeros(0, np.int32),
        )  # fmt: skip

    @classmethod
    def concat(cls, parts: list[JoinedBatch]) -> JoinedBatch:
        """Rows of ``parts`` one after the other."""
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))


class LabelJoin:
    """Bounded-memory join of predictions awaiting labels, keyed by event id.

    Parameters
    ----------
    capacity
        Predictions kept waiting for their label (ring buffer; the oldest is evicted first).
    horizon_ms
        Longest accepted label lag; older predictions expire, later labels do not join.
    label_capacity
        Early labels (arrived before their prediction) kept waiting; default ``capacity // 4``, at least 1.
    n_classes
        Width of the probability rows; taken from the first predictions when 0.

    Examples
    --------
    >>> j = LabelJoin(capacity=100, horizon_ms=1000)
    >>> ids = np.array(["a", "b", "c"], dtype=object)
    >>> _ = j.add_predictions(ids, np.array([0, 10, 20]), np.full(3, np.nan), np.array([1, 0, 1]),
    ...                       np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]))
    >>> out = j.add_labels(np.array(["b", "b", "zz"], dtype=object), np.full(3, np.nan), np.array([0, 0, 1]),
    ...                    np.array([510, 520, 530]))
    >>> out.event_id.tolist(), out.lag_ms.tolist(), out.label_code.tolist()
    (['b'], [500], [0])
    >>> _ = j.add_labels(np.array(["a"], dtype=object), np.full(1, np.nan), np.array([1]), np.array([5000]))
    >>> {k: v for k, v in j.counters.items() if v}
    {'joined': 1, 'duplicate_label': 1, 'unknown': 2, 'expired': 2}
    """

    def __init__(
        self, capacity: int, horizon_ms: int, *, label_capacity: int | None = None, n_classes: int = 0
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if horizon_ms < 0:
            raise ValueError(f"horizon_ms must be >= 0, got {horizon_ms}")
        if label_capacity is not None and label_capacity < 1:
            raise ValueError(f"label_capacity must be >= 1, got {label_capacity}")
        if n_classes < 0:
            raise ValueError(f"n_classes must be >= 0, got {n_classes}")
        self.capacity = capacity
        self.horizon_ms = horizon_ms
        self.label_capacity = max(capacity // 4, 1) if label_capacity is None else label_capacity
        self.n_classes = n_classes
        self._reset()

    def _reset(self) -> None:
        c, lc = self.capacity, self.label_capacity
        self._p_ids = np.full(c, "", dtype=object)
        self._p_ts = np.zeros(c, dtype=np.int64)
        self._p_pred = np.full(c, np.nan)
        self._p_code = np.full(c, MISSING, dtype=np.int32)
        self._p_proba = np.full((c, self.n_classes), np.nan)
        self._p_state = np.zeros(c, dtype=np.int8)
        self._p_head = 0
        self._p_index: dict[str, int] = {}
        self._l_ids = np.full(lc, "", dtype=object)
        self._l_ts = np.zeros(lc, dtype=np.int64)
        self._l_label = np.full(lc, np.nan)
        self._l_code = np.full(lc, MISSING, dtype=np.int32)
        self._l_state = np.zeros(lc, dtype=np.int8)
        self._l_head = 0
        self._l_index: dict[str, int] = {}
        self._watermark = int(_NO_TS)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._lag_sum = 0
        self._lag_max = 0

    # -- metrics ---------------------------------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        """Running counts: ``joined``, ``duplicate_label``, ``unknown``, ``expired``, ``duplicate_prediction``,
        and the current ``pending_predictions`` / ``pending_labels``."""
        out = dict(self._counts)
        out["pending_predictions"] = int(np.count_nonzero(self._p_state == _WAITING))
        out["pending_labels"] = int(np.count_nonzero(self._l_state == _WAITING))
        return out

    @property
    def mean_lag_ms(self) -> float:
        """Mean label lag of every joined event so far (NaN before the first join)."""
        n = self._counts["joined"]
        return self._lag_sum / n if n else float("nan")

    @property
    def max_lag_ms(self) -> int:
        """Largest label lag of a joined event so far."""
        return self._lag_max

    @property
    def watermark(self) -> int:
        """Latest event or label time seen (epoch ms)."""
        return self._watermark

    # -- internals -------------------------------------------------------------------------------
    def _check_width(self, k: int) -> None:
        if k == self._p_proba.shape[1]:
            return
        if self._p_head == 0 and self.n_classes == 0:
            self._p_proba = np.full((self.capacity, k), np.nan)
            return
        raise SchemaMismatchError(f"proba has {k} columns, this join keeps {self._p_proba.shape[1]}")

    def _advance(self, ts: I64) -> None:
        if len(ts) == 0:
            return
        self._watermark = max(self._watermark, int(ts.max()))
        cutoff = self._watermark - self.horizon_ms
        old = (self._p_state != _EMPTY) & (self._p_ts < cutoff)
        if old.any():
            self._counts["expired"] += int(np.count_nonzero(self._p_state[old] == _WAITING))
            for eid in self._p_ids[old].tolist():
                del self._p_index[eid]
            self._p_state[old] = _EMPTY
        old = (self._l_state == _WAITING) & (self._l_ts < cutoff)
        if old.any():
            self._counts["unknown"] += int(np.count_nonzero(old))
            for eid in self._l_ids[old].tolist():
                del self._l_index[eid]
            self._l_state[old] = _EMPTY

    def _joined(self, slots: list[int], label_ts: list[int], label: list[float], code: list[int]) -> JoinedBatch:
        """Rows of prediction ``slots`` with their labels (read before any slot is reused)."""
        if not slots:
            return JoinedBatch.empty(self._p_proba.shape[1])
        s = np.asarray(slots, dtype=np.intp)
        lts = np.asarray(label_ts, dtype=np.int64)
        ts = self._p_ts[s].copy()
        lag = lts - ts
        self._counts["joined"] += len(s)
        self._lag_sum += int(lag.sum())
        self._lag_max = max(self._lag_max, int(lag.max()))
        return JoinedBatch(
            event_id=self._p_ids[s].copy(),
            ts=ts,
            label_ts=lts,
            lag_ms=lag,
            prediction=self._p_pred[s].copy(),
            prediction_code=self._p_code[s].copy(),
            proba=self._p_proba[s].copy(),
            label=np.asarray(label, dtype=np.float64),
            label_code=np.asarray(code, dtype=np.int32),
        )

    # -- public ----------------------------------------------------------------------------------
    def add_predictions(
        self,
        event_id: npt.ArrayLike,
        ts: npt.ArrayLike,
        prediction: npt.ArrayLike,
        prediction_code: npt.ArrayLike,
        proba: npt.ArrayLike | None = None,
    ) -> JoinedBatch:
        """Keep predictions waiting for their labels; return those joined with labels that came first.

        The result is the same as adding the rows one at a time (the bookkeeping is plain dict work per
        row; the arrays are written once per call).
        """
        ids = [str(e) for e in np.asarray(event_id, dtype=object).reshape(-1).tolist()]
        t = np.asarray(ts, dtype=np.int64).reshape(-1)
        pred = np.asarray(prediction, dtype=np.float64).reshape(-1)
        code = np.asarray(prediction_code, dtype=np.int32).reshape(-1)
        n = len(ids)
        width = self._p_proba.shape[1]
        p = np.full((n, width), np.nan) if proba is None else np.asarray(proba, dtype=np.float64).reshape(n, -1)
        self._check_width(p.shape[1])
        if not len(t) == len(pred) == len(code) == n:
            raise SchemaMismatchError("event_id, ts, prediction and prediction_code must have the same length")
        self._advance(t)
        parts: list[JoinedBatch] = []
        # Chunks of at most ``capacity`` rows never reuse a slot within the chunk.
        for a in range(0, n, self.capacity):
            b = min(n, a + self.capacity)
            part = self._insert(ids[a:b], t[a:b], pred[a:b], code[a:b], p[a:b])
            if len(part):
                parts.append(part)
        return JoinedBatch.concat(parts) if parts else JoinedBatch.empty(self._p_proba.shape[1])

    def _insert(self, ids: list[str], t: I64, pred: F64, code: I32, p: F64) -> JoinedBatch:
        cap = self.capacity
        m = len(ids)
        ahead = (self._p_head + np.arange(m)) % cap  # slot of the r-th insert of this chunk
        old_state = self._p_state[ahead].tolist()
        old_ids = self._p_ids[ahead].tolist()
        cutoff = self._watermark - self.horizon_ms
        index, early = self._p_index, self._l_index
        counts = self._counts
        rows: list[int] = []  # chunk row of each insert
        early_rows: list[tuple[int, int]] = []  # (insert number, label slot)
        for i, (eid, ti) in enumerate(zip(ids, t.tolist(), strict=True)):
            if eid in index:
                counts["duplicate_prediction"] += 1
                continue
            if ti < cutoff:  # already beyond the horizon when it arrives
                counts["expired"] += 1
                continue
            r = len(rows)
            if old_state[r] != _EMPTY:
                if old_state[r] == _WAITING:
                    counts["expired"] += 1
                del index[old_ids[r]]
            index[eid] = int(ahead[r])
            rows.append(i)
            if early:
                ls = early.pop(eid, None)
                if ls is not None:
                    early_rows.append((r, ls))
        k = len(rows)
        if k == 0:
            return JoinedBatch.empty(self._p_proba.shape[1])
        slots = ahead[:k]
        sel = np.asarray(rows, dtype=np.intp)
        self._p_ids[slots] = np.asarray(ids, dtype=object)[sel]
        self._p_ts[slots] = t[sel]
        self._p_pred[slots] = pred[sel]
        self._p_code[slots] = code[sel]
        self._p_proba[slots] = p[sel]
        self._p_state[slots] = _WAITING
        self._p_head += k
        if not early_rows:
            return JoinedBatch.empty(self._p_proba.shape[1])
        r_arr = np.asarray([r for r, _ in early_rows], dtype=np.intp)
        l_arr = np.asarray([ls for _, ls in early_rows], dtype=np.intp)
        self._l_state[l_arr] = _EMPTY
        js = slots[r_arr]
        late = self._l_ts[l_arr] - self._p_ts[js] > self.horizon_ms
        if late.any():
            counts["unknown"] += int(late.sum())
            counts["expired"] += int(late.sum())
            self._p_state[js[late]] = _EMPTY
            for eid in self._p_ids[js[late]].tolist():
                del index[eid]
        ok = ~late
        self._p_state[js[ok]] = _JOINED
        l_ok = l_arr[ok]
        return self._joined(
            js[ok].tolist(), self._l_ts[l_ok].tolist(), self._l_label[l_ok].tolist(), self._l_code[l_ok].tolist()
        )

    def add_labels(
        self, event_id: npt.ArrayLike, label: npt.ArrayLike, label_code: npt.ArrayLike, ts: npt.ArrayLike
    ) -> JoinedBatch:
        """Join labels (feedback events) to their predictions; return the joined rows in label order.

        The result is the same as adding the labels one at a time.
        """
        ids = [str(e) for e in np.asarray(event_id, dtype=object).reshape(-1).tolist()]
        t = np.asarray(ts, dtype=np.int64).reshape(-1)
        lab = np.asarray(label, dtype=np.float64).reshape(-1)
        code = np.asarray(label_code, dtype=np.int32).reshape(-1)
        n = len(ids)
        if not len(t) == len(lab) == len(code) == n:
            raise SchemaMismatchError("event_id, label, label_code and ts must have the same length")
        index = self._p_index
        counts = self._counts
        slot0 = np.fromiter((index.get(e, -1) for e in ids), dtype=np.int64, count=n)
        safe = np.maximum(slot0, 0)
        state0 = self._p_state[safe].tolist()
        lag0 = (t - self._p_ts[safe]).tolist()
        t_list = t.tolist()
        changed: dict[int, int] = {}
        join_rows: list[int] = []
        join_slots: list[int] = []
        late_slots: list[int] = []
        early_rows: list[int] = []
        for i, eid in enumerate(ids):
            slot = index.get(eid)
            if slot is not None:
                state = changed.get(slot, state0[i])
                if state == _JOINED:
                    counts["duplicate_label"] += 1
                elif lag0[i] > self.horizon_ms:
                    counts["expired"] += 1
                    counts["unknown"] += 1
                    changed[slot] = _EMPTY
                    late_slots.append(slot)
                    del index[eid]
                else:
                    changed[slot] = _JOINED
                    join_rows.append(i)
                    join_slots.append(slot)
                continue
            if eid in self._l_index:
                counts["duplicate_label"] += 1
            elif t_list[i] < self._watermark - self.horizon_ms:
                counts["unknown"] += 1
            else:
                early_rows.append(i)
                self._l_index[eid] = -1  # placeholder: later duplicates in this batch see it
        if late_slots:
            self._p_state[np.asarray(late_slots, dtype=np.intp)] = _EMPTY
        if join_slots:
            self._p_state[np.asarray(join_slots, dtype=np.intp)] = _JOINED
        if early_rows:
            self._keep_early(ids, early_rows, t, lab, code)
        sel = np.asarray(join_rows, dtype=np.intp)
        out = self._joined(join_slots, t[sel].tolist(), lab[sel].tolist(), code[sel].tolist())
        self._advance(t)
        return out

    def _keep_early(self, ids: list[str], rows: list[int], t: I64, lab: F64, code: I32) -> None:
        """Put labels whose prediction has not arrived into the label ring (evicting the oldest)."""
        lcap = self.label_capacity
        for i in rows:
            eid = ids[i]
            ls = self._l_head % lcap
            self._l_head += 1
            if self._l_state[ls] == _WAITING:
                self._counts["unknown"] += 1
                del self._l_index[self._l_ids[ls]]
            self._l_ids[ls] = eid
            self._l_ts[ls] = t[i]
            self._l_label[ls] = lab[i]
            self._l_code[ls] = code[i]
            self._l_state[ls] = _WAITING
            self._l_index[eid] = ls

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays (ids as unicode arrays)."""
        scalars = [self._p_head, self._l_head, self._watermark, self._lag_sum, self._lag_max]
        scalars += [self._counts[k] for k in _COUNTERS]
        return {
            "p_ids": np.asarray(self._p_ids.tolist(), dtype=np.str_),
            "p_ts": self._p_ts.copy(),
            "p_pred": self._p_pred.copy(),
            "p_code": self._p_code.copy(),
            "p_proba": self._p_proba.copy(),
            "p_state": self._p_state.copy(),
            "l_ids": np.asarray(self._l_ids.tolist(), dtype=np.str_),
            "l_ts": self._l_ts.copy(),
            "l_label": self._l_label.copy(),
            "l_code": self._l_code.copy(),
            "l_state": self._l_state.copy(),
            "scalars": np.asarray(scalars, dtype=np.int64),
        }

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot` of a join with the same capacities."""
        try:
            arrays = {k: np.asarray(state[k]) for k in self.snapshot()}
        except KeyError as e:
            raise SnapshotError(f"label join snapshot is missing {e.args[0]!r}") from None
        if arrays["p_state"].shape != (self.capacity,) or arrays["l_state"].shape != (self.label_capacity,):
            raise SnapshotError("label join snapshot was taken with other capacities")
        self._p_ids = np.asarray(arrays["p_ids"].tolist(), dtype=object)
        self._l_ids = np.asarray(arrays["l_ids"].tolist(), dtype=object)
        self._p_ts = arrays["p_ts"].astype(np.int64)
        self._p_pred = arrays["p_pred"].astype(np.float64)
        self._p_code = arrays["p_code"].astype(np.int32)
        self._p_proba = arrays["p_proba"].astype(np.float64).reshape(self.capacity, -1)
        self._p_state = arrays["p_state"].astype(np.int8)
        self._l_ts = arrays["l_ts"].astype(np.int64)
        self._l_label = arrays["l_label"].astype(np.float64)
        self._l_code = arrays["l_code"].astype(np.int32)
        self._l_state = arrays["l_state"].astype(np.int8)
        s = [int(v) for v in arrays["scalars"]]
        self._p_head, self._l_head, self._watermark, self._lag_sum, self._lag_max = s[:5]
        self._counts = dict(zip(_COUNTERS, s[5:], strict=True))
        live = np.flatnonzero(self._p_state != _EMPTY)
        self._p_index = dict(zip(self._p_ids[live].tolist(), live.tolist(), strict=True))
        live = np.flatnonzero(self._l_state != _EMPTY)
        self._l_index = dict(zip(self._l_ids[live].tolist(), live.tolist(), strict=True))
