"""What every detector of the core looks like, so that :class:`~detector.monitor.ModelMonitor` can
compose them.

A detector is built from fitted reference artifacts (kept in the baseline) and keyword
hyper-parameters, updates on an :class:`~detector.schema.EventBatch`, returns
:class:`~detector.decision.AlertDecision` records in stream order, and exposes its state as arrays.
A fitted artifact converts to arrays plus JSON metadata for the baseline store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy.typing as npt

from detector.decision import AlertDecision
from detector.schema import EventBatch

Arrays = dict[str, npt.NDArray[Any]]


@runtime_checkable
class Detector(Protocol):
    """A stateful detector of one model."""

    def update(self, batch: EventBatch, *, seq: int) -> list[AlertDecision]:
        """Feed one batch; ``seq`` is the stream sequence number of the batch's first event."""
        ...

    def snapshot(self) -> Arrays:
        """State as arrays; :meth:`restore` on an identically built detector continues identically."""
        ...

    def restore(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot`."""
        ...


@runtime_checkable
class Artifact(Protocol):
    """Something fitted on reference data and stored in the baseline."""

    def to_arrays(self) -> tuple[Arrays, dict[str, Any]]:
        """Arrays and JSON-serializable metadata."""
        ...
