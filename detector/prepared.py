"""Per-event work that needs no detector state, so it can run where a batch is decoded.

The detectors keep state from batch to batch, but part of their work on a batch depends only on its
events and the baseline: the histogram cells the drift windows count, the anomaly scores of each
event, and what the adversarial detector reads from each query (:mod:`detector.queries`). A
:class:`Preparer` does that part; a decoding process can run it on the next batch while this process
detects on the current one, and :meth:`~detector.monitor.ModelMonitor.update` takes the
:class:`Prepared` result (or computes the same itself when given none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detector.binning import Binner
from detector.queries import QueryFeatures, QueryFeaturizer
from detector.schema import EventBatch
from detector.scoring import AnomalyModel, AnomalyScores


@dataclass(frozen=True)
class Prepared:
    """The state-free results for one batch: its drift cells (``(n_events, n_columns)``), its anomaly
    scores and its query features (each None: not computed, or no such detector)."""

    cells: npt.NDArray[np.int32] | None = None
    anomaly: AnomalyScores | None = None
    queries: QueryFeatures | None = None


@dataclass(frozen=True)
class Preparer:
    """Computes :class:`Prepared` for batches of one model; picklable (arrays of the baseline only).

    Get it from :attr:`ModelMonitor.preparer <detector.monitor.ModelMonitor.preparer>`.

    Examples
    --------
    >>> import numpy as np
    >>> from baselines.anomaly_fit import fit_anomaly_model
    >>> rng = np.random.default_rng(0)
    >>> model = fit_anomaly_model(rng.normal(size=(5000, 2)), numeric_names=("a", "b"), seed=0)
    >>> prepared = Preparer(anomaly=model)(EventBatch.from_arrays(np.array([[0.0, 0.0], [9.0, 0.0]])))
    >>> prepared.anomaly.flag.tolist(), prepared.cells is None
    ([False, True], True)
    """

    binner: Binner | None = None
    anomaly: AnomalyModel | None = None
    queries: QueryFeaturizer | None = None

    @property
    def empty(self) -> bool:
        """Whether there is nothing to prepare."""
        return self.binner is None and self.anomaly is None and self.queries is None

    def __call__(self, batch: EventBatch) -> Prepared:
        cells = None
        if self.binner is not None:
            # a copy (the binner reuses its buffer), laid out as the binner's own result: column-major
            cells = np.ascontiguousarray(self.binner.cells(batch).T).T
        scores = None if self.anomaly is None else self.anomaly.score(batch.numeric, batch.categorical)
        return Prepared(cells=cells, anomaly=scores, queries=None if self.queries is None else self.queries(batch))
