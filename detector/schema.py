"""The columnar contract between decoding and detection.

Decoding (``streams``) turns inference events into an :class:`EventBatch` laid out by a
:class:`Schema`; every detector consumes that batch. Nothing here touches I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from detector.errors import SchemaMismatchError

#: Code of a categorical value that is absent or null.
MISSING = -1
#: Code of a categorical value that the reference data never showed.
UNSEEN = -2

PredictionKind = Literal["none", "numeric", "categorical"]


@dataclass(frozen=True)
class Schema:
    """Column layout of one model's inference events.

    Parameters
    ----------
    model_id
        The model these events belong to.
    numeric
        Names of numeric features, in column order of :attr:`EventBatch.numeric`.
    categorical
        Names of categorical features, in column order of :attr:`EventBatch.categorical`.
    categories
        For each categorical feature, its reference vocabulary; code ``k`` is ``categories[j][k]``.
    prediction
        ``"numeric"`` for regression, ``"categorical"`` for classification, ``"none"`` if events carry none.
    classes
        Class labels for categorical predictions, labels and probability columns.

    Examples
    --------
    >>> s = Schema("m", numeric=("x",), categorical=("c",), categories=(("a", "b"),))
    >>> s.category_index(0)["b"]
    1
    """

    model_id: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()
    prediction: PredictionKind = "none"
    classes: tuple[str, ...] = ()
    _index: tuple[dict[str, int], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.categories) != len(self.categorical):
            raise ValueError(
                f"categories has {len(self.categories)} vocabularies for {len(self.categorical)} categorical features"
            )
        names = self.numeric + self.categorical
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique across numeric and categorical features")
        if self.prediction not in ("none", "numeric", "categorical"):
            raise ValueError(f"prediction must be 'none', 'numeric' or 'categorical', got {self.prediction!r}")
        object.__setattr__(self, "_index", tuple({c: k for k, c in enumerate(vocab)} for vocab in self.categories))

    def category_index(self, j: int) -> dict[str, int]:
        """Map from category to code for categorical feature ``j``."""
        return self._index[j]

    @property
    def class_index(self) -> dict[str, int]:
        """Map from class label to its column in :attr:`EventBatch.proba`."""
        return {c: k for k, c in enumerate(self.classes)}


def _empty_f64(n: int) -> npt.NDArray[np.float64]:
    return np.full(n, np.nan)


@dataclass(frozen=True)
class EventBatch:
    """A batch of decoded inference events of one model, column by column.

    Missing numbers are NaN; categorical values are codes into :attr:`Schema.categories` with
    :data:`MISSING` and :data:`UNSEEN` as sentinels. Categorical predictions and labels are codes
    into :attr:`Schema.classes` (``UNSEEN`` for a class the reference never showed).

    Attributes
    ----------
    event_id : (n,) object array of str
    ts : (n,) int64 epoch milliseconds (event time)
    client_id : (n,) object array of str or None
    numeric : (n, n_numeric) float64
    categorical : (n, n_categorical) int32
    prediction : (n,) float64 for numeric predictions, else NaN
    prediction_code : (n,) int32 class codes for categorical predictions, else MISSING
    confidence : (n,) float64 max class probability, NaN where no probabilities were sent
    proba : (n, n_classes) float64 class probabilities, NaN rows where none were sent
    label : (n,) float64 numeric labels, NaN where none
    label_code : (n,) int32 class codes of categorical labels, MISSING where none
    """

    event_id: npt.NDArray[np.object_]
    ts: npt.NDArray[np.int64]
    client_id: npt.NDArray[np.object_]
    numeric: npt.NDArray[np.float64]
    categorical: npt.NDArray[np.int32]
    prediction: npt.NDArray[np.float64]
    prediction_code: npt.NDArray[np.int32]
    confidence: npt.NDArray[np.float64]
    proba: npt.NDArray[np.float64]
    label: npt.NDArray[np.float64]
    label_code: npt.NDArray[np.int32]

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("event_id", "client_id", "prediction", "prediction_code", "confidence", "label", "label_code"):
            if len(getattr(self, name)) != n:
                raise SchemaMismatchError(f"{name} has {len(getattr(self, name))} rows, ts has {n}")
        for name in ("numeric", "categorical", "proba"):
            a = getattr(self, name)
            if a.ndim != 2 or a.shape[0] != n:
                raise SchemaMismatchError(f"{name} must have shape (n={n}, k), got {a.shape}")

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_arrays(
        cls,
        numeric: npt.ArrayLike,
        *,
        categorical: npt.ArrayLike | None = None,
        ts: npt.ArrayLike | None = None,
        event_id: npt.ArrayLike | None = None,
        client_id: npt.ArrayLike | None = None,
        prediction: npt.ArrayLike | None = None,
        prediction_code: npt.ArrayLike | None = None,
        proba: npt.ArrayLike | None = None,
        label: npt.ArrayLike | None = None,
        label_code: npt.ArrayLike | None = None,
    ) -> EventBatch:
        """Build a batch from plain arrays, filling what is not given (tests, benchmarks, notebooks).

        Examples
        --------
        >>> b = EventBatch.from_arrays(np.zeros((3, 2)), ts=[1, 2, 3])
        >>> len(b), b.numeric.shape, b.categorical.shape
        (3, (3, 2), (3, 0))
        """
        x = np.ascontiguousarray(numeric, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        n = x.shape[0]
        cat = (
            np.empty((n, 0), dtype=np.int32)
            if categorical is None
            else np.ascontiguousarray(categorical, dtype=np.int32).reshape(n, -1)
        )
        p = np.empty((n, 0)) if proba is None else np.ascontiguousarray(proba, dtype=np.float64).reshape(n, -1)
        if p.shape[1]:
            with np.errstate(invalid="ignore"):
                conf = np.max(p, axis=1)
        else:
            conf = _empty_f64(n)
        return cls(
            event_id=np.asarray([str(i) for i in range(n)] if event_id is None else event_id, dtype=object),
            ts=np.arange(n, dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64),
            client_id=np.full(n, None, dtype=object) if client_id is None else np.asarray(client_id, dtype=object),
            numeric=x,
            categorical=cat,
            prediction=_empty_f64(n) if prediction is None else np.asarray(prediction, dtype=np.float64),
            prediction_code=np.full(n, MISSING, dtype=np.int32)
            if prediction_code is None
            else np.asarray(prediction_code, dtype=np.int32),
            confidence=conf,
            proba=p,
            label=_empty_f64(n) if label is None else np.asarray(label, dtype=np.float64),
            label_code=np.full(n, MISSING, dtype=np.int32)
            if label_code is None
            else np.asarray(label_code, dtype=np.int32),
        )

    def take(self, index: npt.NDArray[np.intp] | slice) -> EventBatch:
        """Rows ``index`` of this batch as a new batch."""
        return EventBatch(
            event_id=self.event_id[index],
            ts=self.ts[index],
            client_id=self.client_id[index],
            numeric=self.numeric[index],
            categorical=self.categorical[index],
            prediction=self.prediction[index],
            prediction_code=self.prediction_code[index],
            confidence=self.confidence[index],
            proba=self.proba[index],
            label=self.label[index],
            label_code=self.label_code[index],
        )
