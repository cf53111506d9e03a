"""Reference statistics of a model: what "normal" looks like, computed once from reference data.

A :class:`Reference` holds, for every monitored column, the quantile bin edges and reference
histogram (numeric) or category frequencies (categorical). Monitored columns are the model's
features plus its prediction and confidence, each with a *role* that decides the alert kind.
It converts to and from plain arrays + JSON metadata, which is what the baseline store keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detector.errors import SchemaMismatchError, SnapshotError
from detector.schema import MISSING, UNSEEN, EventBatch, Schema

Role = Literal["feature", "prediction", "confidence"]

#: Column names given to the model outputs among the monitored columns.
PREDICTION_COLUMN = "__prediction__"
CONFIDENCE_COLUMN = "__confidence__"

FORMAT = 1

# The array fields of a Reference, as stored in a baseline.
_ARRAYS = (
    "edges", "num_counts", "num_missing", "num_mean", "num_std", "num_min", "num_max",
    "cat_sizes", "cat_counts", "cat_missing",
)  # fmt: skip


@dataclass(frozen=True)
class Reference:
    """Per-column reference distributions of one model.

    Numeric columns are binned into ``n_bins`` reference-quantile bins (``edges`` holds the
    ``n_bins - 1`` interior edges; a value ``x`` falls in bin ``sum(x >= edges)``); categorical
    columns keep one count per reference category plus one "unseen" slot. Missing values are
    counted apart and never enter the distributions.

    Build one with :func:`fit_reference`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> schema = Schema("m", numeric=("x", "y"))
    >>> ref = fit_reference(EventBatch.from_arrays(rng.normal(size=(1000, 2))), schema, n_bins=10)
    >>> ref.num_names, ref.edges.shape, int(ref.num_counts.sum(axis=1)[0])
    (('x', 'y'), (2, 9), 1000)
    """

    schema: Schema
    n_events: int
    num_names: tuple[str, ...]
    num_roles: tuple[Role, ...]
    edges: npt.NDArray[np.float64]  # (n_num, n_bins - 1)
    num_counts: npt.NDArray[np.int64]  # (n_num, n_bins)
    num_missing: npt.NDArray[np.int64]  # (n_num,)
    num_mean: npt.NDArray[np.float64]
    num_std: npt.NDArray[np.float64]
    num_min: npt.NDArray[np.float64]
    num_max: npt.NDArray[np.float64]
    cat_names: tuple[str, ...]
    cat_roles: tuple[Role, ...]
    cat_sizes: npt.NDArray[np.int64]  # (n_cat,) categories known per column
    cat_counts: npt.NDArray[np.int64]  # (n_cat, max_categories + 1); the last slot is "unseen" (0 here)
    cat_missing: npt.NDArray[np.int64]
    performance: Mapping[str, float] = field(default_factory=dict)

    @property
    def n_bins(self) -> int:
        """Number of bins of each numeric column."""
        return int(self.num_counts.shape[1])

    @property
    def names(self) -> tuple[str, ...]:
        """All monitored columns, numeric first."""
        return self.num_names + self.cat_names

    @property
    def roles(self) -> tuple[Role, ...]:
        """Role of each column of :attr:`names`."""
        return self.num_roles + self.cat_roles

    def columns(self, batch: EventBatch) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32]]:
        """The monitored numeric and categorical columns of ``batch``, in reference order."""
        s = self.schema
        if batch.numeric.shape[1] != len(s.numeric) or batch.categorical.shape[1] != len(s.categorical):
            raise SchemaMismatchError(
                f"batch has {batch.numeric.shape[1]} numeric and {batch.categorical.shape[1]} categorical "
                f"features, the reference of {s.model_id!r} has {len(s.numeric)} and {len(s.categorical)}"
            )
        num = [batch.numeric]
        cat = [batch.categorical]
        if PREDICTION_COLUMN in self.num_names:
            num.append(batch.prediction[:, None])
        if CONFIDENCE_COLUMN in self.num_names:
            num.append(batch.confidence[:, None])
        if PREDICTION_COLUMN in self.cat_names:
            cat.append(batch.prediction_code[:, None])
        x = num[0] if len(num) == 1 else np.concatenate(num, axis=1)
        c = cat[0] if len(cat) == 1 else np.concatenate(cat, axis=1)
        return x, c

    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON-serializable metadata from which :meth:`from_arrays` rebuilds this reference."""
        arrays: dict[str, npt.NDArray[Any]] = {name: getattr(self, name) for name in _ARRAYS}
        s = self.schema
        meta = {
            "format": FORMAT,
            "schema": {
                "model_id": s.model_id,
                "numeric": list(s.numeric),
                "categorical": list(s.categorical),
                "categories": [list(c) for c in s.categories],
                "prediction": s.prediction,
                "classes": list(s.classes),
            },
            "n_events": self.n_events,
            "num_names": list(self.num_names),
            "num_roles": list(self.num_roles),
            "cat_names": list(self.cat_names),
            "cat_roles": list(self.cat_roles),
            "performance": dict(self.performance),
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]) -> Reference:
        """Rebuild a reference written by :meth:`to_arrays`."""
        if meta.get("format") != FORMAT:
            raise SnapshotError(f"reference format {meta.get('format')!r} is not supported (expected {FORMAT})")
        try:
            sm = meta["schema"]
            schema = Schema(
                sm["model_id"],
                numeric=tuple(sm["numeric"]),
                categorical=tuple(sm["categorical"]),
                categories=tuple(tuple(c) for c in sm["categories"]),
                prediction=sm["prediction"],
                classes=tuple(sm["classes"]),
            )
            return cls(
                schema=schema,
                n_events=int(meta["n_events"]),
                num_names=tuple(meta["num_names"]),
                num_roles=tuple(meta["num_roles"]),
                cat_names=tuple(meta["cat_names"]),
                cat_roles=tuple(meta["cat_roles"]),
                performance={k: float(v) for k, v in meta.get("performance", {}).items()},
                **{k: np.asarray(arrays[k]) for k in _ARRAYS},
            )
        except KeyError as e:
            raise SnapshotError(f"reference is missing {e.args[0]!r}") from None


def _numeric_summary(x: npt.NDArray[np.float64], n_bins: int) -> dict[str, Any]:
    finite = np.isfinite(x)
    n_num = x.shape[1]
    edges = np.full((n_num, n_bins - 1), np.inf)
    counts = np.zeros((n_num, n_bins), dtype=np.int64)
    stats = np.full((4, n_num), np.nan)
    qs = np.linspace(0, 1, n_bins + 1)[1:-1]
    for j in range(n_num):
        v = x[finite[:, j], j]
        if v.size == 0:
            continue
        e = np.quantile(v, qs)
        edges[j] = e
        counts[j] = np.bincount(np.searchsorted(e, v, side="right"), minlength=n_bins)
        stats[:, j] = v.mean(), v.std(), v.min(), v.max()
    return {
        "edges": edges,
        "num_counts": counts,
        "num_missing": (~finite).sum(axis=0).astype(np.int64),
        "num_mean": stats[0],
        "num_std": stats[1],
        "num_min": stats[2],
        "num_max": stats[3],
    }


def _categorical_summary(c: npt.NDArray[np.int32], sizes: list[int]) -> dict[str, Any]:
    width = max(sizes, default=0) + 1
    counts = np.zeros((len(sizes), width), dtype=np.int64)
    missing = np.zeros(len(sizes), dtype=np.int64)
    for j, k in enumerate(sizes):
        col = c[:, j]
        missing[j] = int(np.count_nonzero(col == MISSING))
        known = col[col >= 0]
        counts[j, :k] = np.bincount(known, minlength=k)[:k]
        counts[j, -1] = np.count_nonzero(col == UNSEEN)
    return {"cat_sizes": np.asarray(sizes, dtype=np.int64), "cat_counts": counts, "cat_missing": missing}


def reference_performance(batch: EventBatch, schema: Schema) -> dict[str, float]:
    """Performance of the model on the labelled rows of ``batch`` (empty if none are labelled)."""
    perf: dict[str, float] = {}
    if schema.prediction == "categorical":
        # Only known classes count: an unseen label never matches, even an unseen prediction.
        ok = (batch.label_code >= 0) & (batch.prediction_code != MISSING)
        if ok.any():
            perf["accuracy"] = float(np.mean(batch.label_code[ok] == batch.prediction_code[ok]))
            perf["labelled"] = float(ok.sum())
    elif schema.prediction == "numeric":
        ok = np.isfinite(batch.label) & np.isfinite(batch.prediction)
        if ok.any():
            err = batch.prediction[ok] - batch.label[ok]
            perf["mae"] = float(np.mean(np.abs(err)))
            perf["rmse"] = float(np.sqrt(np.mean(err**2)))
            perf["labelled"] = float(ok.sum())
    return perf


def fit_reference(batch: EventBatch, schema: Schema, *, n_bins: int = 20) -> Reference:
    """Compute the reference distributions of every monitored column of ``batch``.

    The prediction becomes a monitored column when the schema declares one, and the confidence
    (max class probability) when the reference events carry probabilities.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2, got {n_bins}")
    if len(batch) == 0:
        raise ValueError("cannot fit a reference on zero events")
    num_names: list[str] = list(schema.numeric)
    num_roles: list[Role] = ["feature"] * len(schema.numeric)
    cat_names: list[str] = list(schema.categorical)
    cat_roles: list[Role] = ["feature"] * len(schema.categorical)
    sizes = [len(c) for c in schema.categories]
    if schema.prediction == "numeric":
        num_names.append(PREDICTION_COLUMN)
        num_roles.append("prediction")
    elif schema.prediction == "categorical":
        cat_names.append(PREDICTION_COLUMN)
        cat_roles.append("prediction")
        sizes.append(len(schema.classes))
    if np.isfinite(batch.confidence).any():
        num_names.append(CONFIDENCE_COLUMN)
        num_roles.append("confidence")
    partial = Reference(
        schema=schema,
        n_events=len(batch),
        num_names=tuple(num_names),
        num_roles=tuple(num_roles),
        cat_names=tuple(cat_names),
        cat_roles=tuple(cat_roles),
        performance={},
        **_numeric_summary(np.empty((0, len(num_names))), n_bins),
        **_categorical_summary(np.empty((0, len(cat_names)), dtype=np.int32), sizes),
    )
    x, c = partial.columns(batch)
    return Reference(
        schema=schema,
        n_events=len(batch),
        num_names=partial.num_names,
        num_roles=partial.num_roles,
        cat_names=partial.cat_names,
        cat_roles=partial.cat_roles,
        performance=reference_performance(batch, schema),
        **_numeric_summary(x, n_bins),
        **_categorical_summary(c, sizes),
    )
