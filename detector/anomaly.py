"""The ``anomaly_rate`` alert: too many anomalous events in a window.

Each event's anomaly score comes from the baseline's scorers (:mod:`detector.scoring`); this
detector tests the share of flagged events per window and keeps the evidence (top events, features).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from detector.decision import AlertDecision, Severity, Status, window_fields
from detector.errors import SchemaMismatchError, SnapshotError
from detector.schema import EventBatch
from detector.scoring import AnomalyModel, AnomalyScores
from detector.window import PaneWindow

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# -- the anomaly_rate alert ----------------------------------------------------------------------
_SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
# A feature is evidence when its tail score over the flagged events exceeds its reference mean by at
# least this many nats per flagged event (the flagged values are e times rarer than usual, or more).
_MIN_EXCESS = 1.0
_STATE = ("seen", "watermark", "severity", "incident", "calm", "cooldown")


class AnomalyDetector:
    """Scores every event and alerts when the share of flagged events in a window is too high.

    At each pane close, ``k`` flagged events among the ``n`` of the window are tested against the
    calibrated rate ``fpr`` with a one-sided binomial test at ``alpha = false_alarm_rate /
    panes_per_window`` (one test family, the same budget as the drift alerts). The alert fires when
    the test is significant **and** the observed rate is at least ``min_ratio`` times the calibrated
    rate with at least ``min_flagged`` flagged events. One incident gives ``open``, an ``update`` when
    the rate reaches ``critical_ratio`` times the calibrated rate, and ``resolved`` after
    ``resolve_after`` calm evaluations (rate below ``resolve_ratio`` times the calibrated one),
    followed by ``cooldown`` evaluations without a new ``open``.

    Evidence: the calibrated and observed rates, the flagged count, the ``top_k`` most anomalous
    events of the window (ids and scores, kept per pane) and the ``top_k`` features whose tail
    contributions over the flagged events exceed their reference mean the most.

    Parameters
    ----------
    model
        The fitted :class:`AnomalyModel` (from the baseline).
    window, size, step, min_events
        Sliding window as in :class:`~detector.window.PaneWindow`.
    false_alarm_rate, min_ratio, critical_ratio, min_flagged, resolve_ratio, resolve_after, cooldown
        Decision thresholds, see above (``resolve_after`` and ``cooldown`` default to one window).
    top_k
        Events and features reported as evidence.

    Examples
    --------
    >>> from baselines.anomaly_fit import fit_anomaly_model
    >>> rng = np.random.default_rng(0)
    >>> model = fit_anomaly_model(rng.normal(size=(20_000, 4)), numeric_names=("a", "b", "c", "d"), seed=0)
    >>> det = AnomalyDetector(model, size=2000, step=500)
    >>> x = rng.normal(size=(9000, 4))
    >>> x[3000:3300, 1] += 8.0
    >>> for a in det.update(EventBatch.from_arrays(x), seq=0):
    ...     print(a.kind, a.status, a.severity, a.columns[0] if a.columns else "-", a.event_index)
    anomaly_rate open critical b 3499
    anomaly_rate resolved info - 6999
    """

    def __init__(
        self,
        model: AnomalyModel,
        *,
        window: Literal["count", "time"] = "count",
        size: int = 2000,
        step: int = 200,
        min_events: int = 100,
        false_alarm_rate: float = 1e-3,
        min_ratio: float = 3.0,
        critical_ratio: float = 10.0,
        min_flagged: int = 5,
        resolve_ratio: float = 2.0,
        resolve_after: int | None = None,
        cooldown: int | None = None,
        top_k: int = 5,
    ) -> None:
        if not 0 < false_alarm_rate < 1:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
        if not 0 < resolve_ratio <= min_ratio <= critical_ratio:
            raise ValueError("ratios must satisfy 0 < resolve_ratio <= min_ratio <= critical_ratio")
        if step <= 0 or size <= 0 or size % step:
            raise ValueError(f"size ({size}) must be a positive multiple of step ({step})")
        if top_k < 1 or min_flagged < 1:
            raise ValueError("top_k and min_flagged must be >= 1")
        self.model = model
        self.window = window
        self.size = size
        self.step = step
        self.min_events = min_events
        self.false_alarm_rate = false_alarm_rate
        self.min_ratio = min_ratio
        self.critical_ratio = critical_ratio
        self.min_flagged = min_flagged
        self.resolve_ratio = resolve_ratio
        self.panes_per_window = size // step
        self.resolve_after = self.panes_per_window if resolve_after is None else resolve_after
        self.cooldown = self.panes_per_window if cooldown is None else cooldown
        self.top_k = top_k
        self.expected_rate = model.fpr
        self.alpha = false_alarm_rate / self.panes_per_window
        self._reset()

    def _reset(self) -> None:
        p, k = self.panes_per_window, self.top_k
        self._window = PaneWindow(2, by=self.window, size=self.size, step=self.step, min_events=self.min_events)
        self._top_score = np.full((p, k), -np.inf)
        self._top_id = np.full((p, k), "", dtype=object)
        self._slot_pane = np.full(p, -1, dtype=np.int64)
        self._slot_contrib = np.zeros((p, len(self.model.features)))
        self._slot_flagged = np.zeros(p, dtype=np.int64)
        self._state = np.array([0, -1, 0, -1, 0, 0], dtype=np.int64)  # see _STATE
        self._peak = np.zeros(1)
        self.last_scores: AnomalyScores | None = None

    # -- snapshot -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays (window, per-pane evidence, incident state)."""
        out = {f"window.{k}": v for k, v in self._window.snapshot().items()}
        out.update(
            {
                "top_score": self._top_score.copy(),
                "top_id": np.asarray(self._top_id.astype(str)),
                "slot_pane": self._slot_pane.copy(),
                "slot_contrib": self._slot_contrib.copy(),
                "slot_flagged": self._slot_flagged.copy(),
                "state": self._state.copy(),
                "peak": self._peak.copy(),
            }
        )
        return out

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot`."""
        win = {k.partition(".")[2]: np.asarray(v) for k, v in state.items() if k.startswith("window.")}
        try:
            parts = {
                k: np.asarray(state[k])
                for k in ("top_score", "top_id", "slot_pane", "slot_contrib", "slot_flagged", "state", "peak")
            }
        except KeyError as e:
            raise SnapshotError(f"anomaly snapshot is missing {e.args[0]!r}") from None
        if parts["top_score"].shape != self._top_score.shape or parts["slot_contrib"].shape != self._slot_contrib.shape:
            raise SnapshotError("anomaly snapshot was taken with another window, top_k or feature set")
        self._window.restore(win)
        self._top_score = parts["top_score"].astype(np.float64)
        self._top_id = parts["top_id"].astype(str).astype(object)
        self._slot_pane = parts["slot_pane"].astype(np.int64)
        self._slot_contrib = parts["slot_contrib"].astype(np.float64)
        self._slot_flagged = parts["slot_flagged"].astype(np.int64)
        self._state = parts["state"].astype(np.int64)
        self._peak = parts["peak"].astype(np.float64)

    # -- update ---------------------------------------------------------------------------------
    def update(self, batch: EventBatch, *, seq: int, scores: AnomalyScores | None = None) -> list[AlertDecision]:
        """Score a batch (kept in :attr:`last_scores`) and return its ``anomaly_rate`` records.

        ``scores``: the batch's scores by :attr:`model`, computed elsewhere (a decoding process); they
        are what this method would compute, so the records are the same.
        """
        n = len(batch)
        if scores is None:
            scores = self.model.score(batch.numeric, batch.categorical)
        elif len(scores) != n or scores.features != self.model.features:
            raise SchemaMismatchError(f"scores of {len(scores)} events for a batch of {n}, or of other features")
        self.last_scores = scores
        if n == 0:
            return []
        seen_before = int(self._state[0])
        if self.window == "count":
            pane = (seen_before + np.arange(n, dtype=np.int64)) // self.step
        else:
            pid = batch.ts // self.step
            start = int(self._state[1]) if self._state[1] >= 0 else int(pid[0])
            pane = np.maximum.accumulate(np.maximum(pid, start))
            self._state[1] = pane[-1]
        self._state[0] = seen_before + n
        closes = self._window.update(scores.flag.astype(np.int64)[:, None], batch.ts)
        out: list[AlertDecision] = []
        # The per-pane evidence is read only when a record is made: it is accumulated up to the record's
        # pane then (and at the end of the batch), many panes at once.
        done = 0
        cut = 0

        def catch_up() -> None:
            nonlocal done
            if cut > done:
                self._accumulate(batch, scores, pane, done, cut)
                done = cut

        if len(closes):
            k = closes.counts[:, 1]
            n_w = closes.n_events
            p_values = stats.binom.sf(k - 1, n_w, self.expected_rate)
            for i in range(len(closes)):
                e = int(closes.event_index[i])
                cut = max(cut, e + 1 if self.window == "count" else e)
                closed_pane = int(pane[e]) if self.window == "count" else int(pane[e]) - 1
                out.extend(self._decide(closes, i, float(p_values[i]), closed_pane, seq - seen_before, catch_up))
        cut = n
        catch_up()
        return out

    def _accumulate(self, batch: EventBatch, scores: AnomalyScores, pane: I64, a: int, b: int) -> None:
        """Add events ``a:b`` to the per-pane evidence (top events, flagged count and contributions).

        As pane after pane in stream order, vectorized: a pane's slot is reset when a later pane takes it, so
        only the last pane of each slot is applied. Top events: the ``top_k`` candidates of a pane come from
        ``argpartition`` (row by row, the same candidates as one pane at a time) and merge with the slot's by
        a stable sort.
        """
        k, ppw = self.top_k, self.panes_per_window
        if b <= a:
            return
        edges = np.flatnonzero(pane[a + 1 : b] != pane[a : b - 1]) + a + 1
        starts = np.r_[a, edges]
        stops = np.r_[edges, b]
        panes = pane[starts]
        slots = panes % ppw
        _, last = np.unique(slots[::-1], return_index=True)
        keep = np.sort(len(slots) - 1 - last)
        starts, stops, panes, slots = starts[keep], stops[keep], panes[keep], slots[keep]
        fresh = self._slot_pane[slots] != panes
        if fresh.any():
            fs = slots[fresh]
            self._slot_pane[fs] = panes[fresh]
            self._top_score[fs] = -np.inf
            self._top_id[fs] = ""
            self._slot_contrib[fs] = 0.0
            self._slot_flagged[fs] = 0
        lens = stops - starts
        # candidates per pane, padded with (-inf, "") when a pane has fewer than k events: they sort after
        # every real score and equal the empty entries a pane starts with
        cand_score = np.full((len(starts), k), -np.inf)
        cand_id = np.full((len(starts), k), "", dtype=object)
        for length in np.unique(lens).tolist():
            g = np.flatnonzero(lens == length)
            idx = starts[g][:, None] + np.arange(length)[None, :]
            sc = scores.score[idx]
            if length > k:
                pick = np.argpartition(-sc, k - 1, axis=1)[:, :k]
                idx = np.take_along_axis(idx, pick, axis=1)
            cand_score[g, : idx.shape[1]] = scores.score[idx]
            cand_id[g, : idx.shape[1]] = batch.event_id[idx]
        all_scores = np.concatenate([self._top_score[slots], cand_score], axis=1)
        all_ids = np.concatenate([self._top_id[slots], cand_id], axis=1)
        best = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        self._top_score[slots] = np.take_along_axis(all_scores, best, axis=1)
        self._top_id[slots] = np.take_along_axis(all_ids, best, axis=1)
        n_flagged = np.r_[0, np.cumsum(scores.flag[a:b], dtype=np.int64)]
        nf_all = n_flagged[stops - a] - n_flagged[starts - a]
        for j in np.flatnonzero(nf_all).tolist():  # flagged events are rare
            s, t, slot = int(starts[j]), int(stops[j]), int(slots[j])
            flagged = scores.flag[s:t]
            self._slot_contrib[slot] += scores.contributions[s:t][flagged].sum(axis=0)
            self._slot_flagged[slot] += int(nf_all[j])

    def _decide(
        self, c: Any, i: int, p_value: float, closed_pane: int, seq_offset: int, catch_up: Callable[[], None]
    ) -> list[AlertDecision]:
        """Step the incident at close ``i``; ``catch_up`` brings the per-pane evidence up to it (before a record)."""
        st = self._state
        k, n_w = int(c.counts[i, 1]), int(c.n_events[i])
        rate = k / n_w if n_w else 0.0
        r0 = self.expected_rate
        fire = p_value < self.alpha and rate >= self.min_ratio * r0 and k >= self.min_flagged
        calm = not fire and rate < self.resolve_ratio * r0
        severity = 2 if rate >= self.critical_ratio * r0 else 1
        out: list[AlertDecision] = []
        was_open = st[2] > 0
        if not was_open:
            if fire and st[5] == 0:
                st[2], st[3], st[4] = severity, int(c.pane[i]), 0
                self._peak[0] = rate
                catch_up()
                out.append(self._record("open", c, i, rate, k, p_value, closed_pane, seq_offset))
        else:
            self._peak[0] = max(self._peak[0], rate)
            if fire and severity > st[2]:
                st[2] = severity
                catch_up()
                out.append(self._record("update", c, i, rate, k, p_value, closed_pane, seq_offset))
            st[4] = st[4] + 1 if calm else 0
            if st[4] >= self.resolve_after:
                catch_up()
                out.append(self._record("resolved", c, i, rate, k, p_value, closed_pane, seq_offset))
                st[2], st[4], st[5] = 0, 0, self.cooldown + 1
        st[5] = max(st[5] - 1, 0)
        return out

    def _evidence(self, closed_pane: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        in_window = (self._slot_pane > closed_pane - self.panes_per_window) & (self._slot_pane <= closed_pane)
        sc = self._top_score[in_window].ravel()
        ids = self._top_id[in_window].ravel()
        order = np.argsort(-sc, kind="stable")[: self.top_k]
        events = [{"event_id": str(ids[j]), "score": float(sc[j])} for j in order if np.isfinite(sc[j])]
        nf = int(self._slot_flagged[in_window].sum())
        excess = self._slot_contrib[in_window].sum(axis=0) - nf * self.model.contrib_mean
        top = np.argsort(-excess, kind="stable")[: self.top_k]
        names = self.model.features
        feats = [{"feature": names[j], "excess": float(excess[j])} for j in top if nf and excess[j] >= _MIN_EXCESS * nf]
        return events, feats

    def _record(
        self, status: Status, c: Any, i: int, rate: float, k: int, p_value: float, closed_pane: int, seq_offset: int
    ) -> AlertDecision:
        r0 = self.expected_rate
        events, feats = self._evidence(closed_pane)
        names = () if status == "resolved" else tuple(f["feature"] for f in feats)
        sev: Severity = "info" if status == "resolved" else _SEVERITIES[int(self._state[2])]
        n_w = int(c.n_events[i])
        if status == "resolved":
            message = f"anomalous events are back to the calibrated rate: {rate:.3%} (peak {self._peak[0]:.3%})"
        else:
            message = (
                f"{k} of {n_w} events ({rate:.3%}) flagged anomalous, {rate / r0:.1f}x the calibrated {r0:.3%} "
                f"(binomial p={p_value:.2e}, budgeted alpha {self.alpha:.1e})"
                + (f"; top features: {', '.join(names)}" if names else "")
            )
        return AlertDecision(
            kind="anomaly_rate",
            status=status,
            severity=sev,
            columns=names,
            statistic="flag_rate",
            value=rate,
            threshold=r0 * (self.resolve_ratio if status == "resolved" else self.min_ratio),
            p_value=p_value,
            incident=int(self._state[3]),
            **window_fields(c, i, seq_offset=seq_offset),
            message=message,
            evidence={
                "expected_rate": r0,
                "observed_rate": rate,
                "flagged": k,
                "alpha": self.alpha,
                "rate_peak": float(self._peak[0]),
                "top_events": events,
                "top_features": feats,
            },
        )
