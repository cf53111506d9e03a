"""Rolling drift statistics of every monitored column against a :class:`~detector.reference.Reference`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detector.binning import Binner
from detector.errors import SchemaMismatchError
from detector.reference import Reference, Role
from detector.schema import EventBatch
from detector.stats import BinnedComparison, chi2_homogeneity
from detector.window import PaneWindow

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DriftReport:
    """Drift statistics of every window evaluated during one update.

    Rows are evaluations (pane closes), columns are the reference's monitored columns in
    :attr:`names` order (numeric first). ``p_value`` comes from a KS test for numeric columns and a
    chi-square test for categorical ones; ``ks`` is NaN for categorical columns.

    Attributes
    ----------
    names, roles : monitored columns and their roles (feature, prediction, confidence)
    is_numeric : (n_columns,) bool
    event_index, pane, n_events, start_ts, end_ts, start_seq : (n_evals,) as in
        :class:`~detector.window.WindowCloses`
    psi, js, ks, p_value : (n_evals, n_columns) float64
    missing_rate, unseen_rate : (n_evals, n_columns) share of the window's events missing / unseen
    """

    names: tuple[str, ...]
    roles: tuple[Role, ...]
    is_numeric: npt.NDArray[np.bool_]
    event_index: IntArray
    pane: IntArray
    n_events: IntArray
    start_ts: IntArray
    end_ts: IntArray
    start_seq: IntArray
    psi: FloatArray
    js: FloatArray
    ks: FloatArray
    p_value: FloatArray
    missing_rate: FloatArray
    unseen_rate: FloatArray

    def __len__(self) -> int:
        return len(self.pane)


class DriftMonitor:
    """Sliding-window drift of features, prediction and confidence against a reference.

    Each batch is binned with the reference's edges (vectorized comparisons, no per-event Python)
    and counted into a :class:`~detector.window.PaneWindow`; each time a pane closes, PSI,
    Jensen–Shannon distance and a KS test (numeric) or chi-square test (categorical) are computed
    for every column at once.

    Parameters
    ----------
    reference
        The stored reference distributions.
    window, size, step, min_events
        Passed to :class:`~detector.window.PaneWindow`: ``window="count"`` counts events,
        ``window="time"`` milliseconds of event time.

    Examples
    --------
    >>> from detector.reference import fit_reference
    >>> from detector.schema import Schema
    >>> rng = np.random.default_rng(7)
    >>> schema = Schema("m", numeric=("a", "b"))
    >>> ref = fit_reference(EventBatch.from_arrays(rng.normal(size=(5000, 2))), schema)
    >>> mon = DriftMonitor(ref, size=1000, step=500)
    >>> x = rng.normal(size=(2000, 2))
    >>> x[1000:, 1] += 1.0  # b shifts by one standard deviation half way
    >>> rep = mon.update(EventBatch.from_arrays(x))
    >>> rep.event_index.tolist(), (rep.psi[:, 1] > 0.25).tolist(), bool((rep.psi[:, 0] < 0.1).all())
    ([999, 1499, 1999], [False, True, True], True)
    """

    def __init__(
        self,
        reference: Reference,
        *,
        window: Literal["count", "time"] = "count",
        size: int = 2000,
        step: int = 200,
        min_events: int = 100,
    ) -> None:
        self.reference = reference
        self.window = window
        self.size = size
        self.step = step
        self.min_events = min_events
        ref = reference
        self.binner = Binner(ref)
        self._ref_num = BinnedComparison(ref.num_counts)
        self._ref_cat = BinnedComparison(ref.cat_counts)
        self._ref_cat_counts = ref.cat_counts
        self._pane_window = PaneWindow(self.binner.n_cells, by=window, size=size, step=step, min_events=min_events)
        self._reset()

    def _reset(self) -> None:
        self._pane_window._reset()

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State as arrays (see :meth:`restore`)."""
        return self._pane_window.snapshot()

    def restore(self, state: dict[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot` taken with the same reference and window."""
        self._pane_window.restore(state)

    @property
    def late_dropped(self) -> int:
        """Events that arrived after their window had passed (time windows only)."""
        return self._pane_window.late_dropped

    def cells(self, batch: EventBatch) -> npt.NDArray[np.int32]:
        """:meth:`Binner.cells` of the batch (a view of a buffer reused by the next call)."""
        return self.binner.cells(batch)

    def update(self, batch: EventBatch, *, cells: npt.NDArray[np.int32] | None = None) -> DriftReport:
        """Add a batch; return the statistics of every window evaluated on the way.

        ``cells``: the batch's :meth:`cells`, computed elsewhere (a decoding process).
        """
        if cells is None:
            cells = self.cells(batch)
        elif cells.shape != (len(batch), self.binner.n_num + self.binner.n_cat):
            raise SchemaMismatchError(f"cells of shape {cells.shape} for {len(batch)} events")
        closes = self._pane_window.update(cells, batch.ts)
        return self._report(closes.counts, closes)

    def flush(self) -> DriftReport:
        """Evaluate the open pane of an event-time window now (see :meth:`PaneWindow.flush`)."""
        closes = self._pane_window.flush()
        return self._report(closes.counts, closes)

    @property
    def open_events(self) -> int:
        """Events in the open pane, not evaluated yet."""
        return self._pane_window.open_events

    @property
    def oldest_seq(self) -> int:
        """Stream sequence number of the oldest event a later window can still include."""
        return self._pane_window.oldest_seq

    def _report(self, counts: IntArray, closes: Any) -> DriftReport:
        e = len(counts)
        bn = self.binner
        nn, nc = bn.n_num, bn.n_cat
        num = counts[:, : nn * bn.num_width].reshape(e, nn, bn.num_width)
        cat = counts[:, nn * bn.num_width :].reshape(e, nc, bn.cat_width)
        num_hist, num_missing = num[..., :-1], num[..., -1]
        cat_hist, cat_missing = cat[..., :-1], cat[..., -1]
        num_psi, num_js, d, ks_p = self._ref_num.compare(num_hist)
        cat_psi, cat_js, _, _ = self._ref_cat.compare(cat_hist)
        _, _, chi_p = chi2_homogeneity(cat_hist, self._ref_cat_counts)
        total = closes.n_events[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            missing = np.concatenate([num_missing, cat_missing], axis=1) / total
            unseen = np.concatenate([np.zeros((e, nn)), cat_hist[..., -1]], axis=1) / total
        ref = self.reference
        return DriftReport(
            names=ref.names,
            roles=ref.roles,
            is_numeric=np.r_[np.ones(nn, bool), np.zeros(nc, bool)],
            event_index=closes.event_index,
            pane=closes.pane,
            n_events=closes.n_events,
            start_ts=closes.start_ts,
            end_ts=closes.end_ts,
            start_seq=closes.start_seq,
            psi=np.concatenate([num_psi, cat_psi], axis=1),
            js=np.concatenate([num_js, cat_js], axis=1),
            ks=np.concatenate([d, np.full((e, nc), np.nan)], axis=1),
            p_value=np.concatenate([ks_p, chi_p], axis=1),
            missing_rate=missing,
            unseen_rate=unseen,
        )
