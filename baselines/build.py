"""Baselines from reference data: schema inference, fitting, and loading back as a Reference."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from baselines.adversarial_fit import fit_adversarial_from_batch
from baselines.anomaly_fit import fit_anomaly_model
from baselines.errors import BaselineError
from baselines.store import BaselineInfo, BaselineStore
from detector.adversarial import AdversarialArtifact
from detector.errors import SnapshotError
from detector.performance import PerformanceReference, fit_performance
from detector.reference import Reference, fit_reference
from detector.schema import EventBatch, PredictionKind, Schema
from detector.scoring import AnomalyModel

#: Categories kept per categorical feature; rarer ones count as unseen when monitored.
MAX_CATEGORIES = 1000


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _category(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _vocabulary(counts: Counter[str]) -> tuple[str, ...]:
    # Most frequent first, ties by name: the same data always gives the same codes.
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(k for k, _ in ranked[:MAX_CATEGORIES])


def infer_schema(events: Iterable[Mapping[str, Any]], model_id: str) -> Schema:
    """Infer the column layout of a model from its reference events.

    A feature is numeric when every non-null value it takes is a number, categorical otherwise;
    the prediction likewise. Class labels come from probability keys, categorical predictions and
    labels.

    Examples
    --------
    >>> evs = [{"features": {"x": 1.5, "c": "a"}, "prediction": "yes", "probabilities": {"yes": 0.9, "no": 0.1}},
    ...        {"features": {"x": None, "c": "b"}, "prediction": "no"}]
    >>> s = infer_schema(evs, "m")
    >>> s.numeric, s.categorical, s.categories, s.prediction, s.classes
    (('x',), ('c',), (('a', 'b'),), 'categorical', ('no', 'yes'))
    """
    kinds: dict[str, set[str]] = {}
    cats: dict[str, Counter[str]] = {}
    outputs: dict[str, set[str]] = {"n": set(), "c": set()}  # prediction and label values by kind
    classes: set[str] = set()
    n_proba = 0
    for ev in events:
        feats = ev.get("features")
        if isinstance(feats, Mapping):
            for name, v in feats.items():
                seen = kinds.setdefault(name, set())
                if v is None:
                    continue
                seen.add("n" if _is_number(v) else "c")
                cats.setdefault(name, Counter())[_category(v)] += 1
        for key in ("prediction", "label"):
            v = ev.get(key)
            if v is not None:
                outputs["n" if _is_number(v) else "c"].add(_category(v))
        proba = ev.get("probabilities")
        if isinstance(proba, Mapping):
            classes.update(str(k) for k in proba)
        elif isinstance(proba, list):
            n_proba = max(n_proba, len(proba))
    numeric = tuple(sorted(n for n, k in kinds.items() if k and k <= {"n"}))
    categorical = tuple(sorted(n for n, k in kinds.items() if "c" in k))
    # Probabilities or any non-numeric output make it a classifier; numeric class ids then
    # become class labels by their string form.
    prediction: PredictionKind = "none"
    if classes or n_proba or outputs["c"]:
        prediction = "categorical"
        classes |= outputs["c"] | outputs["n"]
        if not classes:
            classes = {str(k) for k in range(n_proba)}
    elif outputs["n"]:
        prediction = "numeric"
    return Schema(
        model_id,
        numeric=numeric,
        categorical=categorical,
        categories=tuple(_vocabulary(cats[n]) for n in categorical),
        prediction=prediction,
        classes=tuple(sorted(classes)),
    )


@dataclass(frozen=True)
class LoadedBaseline:
    """A verified baseline from the store, ready for the detectors.

    ``performance`` is present when the reference events were labelled, ``anomaly`` when the
    model has numeric features, ``adversarial`` when the reference events carry class probabilities.
    """

    reference: Reference
    info: BaselineInfo
    performance: PerformanceReference | None = None
    anomaly: AnomalyModel | None = None
    adversarial: AdversarialArtifact | None = None

    @property
    def version(self) -> str:
        """The baseline's content-addressed version id."""
        return self.info.version


def _with_prefix(prefix: str, arrays: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in arrays.items()}


def _under_prefix(prefix: str, arrays: Mapping[str, Any]) -> dict[str, Any]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _labelled(batch: EventBatch, schema: Schema) -> bool:
    if schema.prediction == "categorical":
        return bool((batch.label_code >= 0).sum() >= 10)
    if schema.prediction == "numeric":
        return bool(np.isfinite(batch.label).sum() >= 10)
    return False


def build_baseline(
    store: BaselineStore,
    batch: EventBatch,
    schema: Schema,
    *,
    n_bins: int = 20,
    source: Mapping[str, Any] | None = None,
    actor: str = "inferwatch",
    promote: bool | None = None,
    seed: int = 0,
    anomaly_learned: str = "loda",
    anomaly_fpr: float = 1e-3,
) -> BaselineInfo:
    """Fit every reference artifact of ``batch`` and save them together as a new baseline version.

    Always the drift reference; the performance reference (metrics and the confidence calibration
    of the estimate) when at least a few reference events carry labels; the anomaly scorers when
    the model has numeric features; the adversarial calibration when events carry probabilities.
    """
    reference = fit_reference(batch, schema, n_bins=n_bins)
    arrays, meta = reference.to_arrays()
    meta = {**meta, "n_bins": n_bins, "source": dict(source or {}), "components": ["drift"]}
    if _labelled(batch, schema):
        perf_arrays, perf_meta = fit_performance(batch, schema, seed=seed).to_arrays()
        arrays.update(_with_prefix("performance", perf_arrays))
        meta["performance_reference"] = perf_meta
        meta["components"].append("performance")
    if schema.numeric and len(batch) >= 200:
        model = fit_anomaly_model(
            batch.numeric, batch.categorical, numeric_names=schema.numeric, categorical_names=schema.categorical,
            categorical_sizes=[len(c) for c in schema.categories], learned=anomaly_learned,  # type: ignore[arg-type]
            fpr=anomaly_fpr, seed=seed,
        )  # fmt: skip
        anomaly_arrays, anomaly_meta = model.to_arrays()
        arrays.update(_with_prefix("anomaly", anomaly_arrays))
        meta["anomaly"] = anomaly_meta
        meta["components"].append("anomaly")
    if schema.numeric and batch.proba.shape[1] >= 2 and np.isfinite(batch.proba).all(axis=1).sum() >= 200:
        adv_arrays, adv_meta = fit_adversarial_from_batch(batch, seed=seed).to_arrays()
        arrays.update(_with_prefix("adversarial", adv_arrays))
        meta["adversarial"] = adv_meta
        meta["components"].append("adversarial")
    return store.save(schema.model_id, arrays, meta, actor=actor, promote=promote)


def load_baseline(store: BaselineStore, model_id: str, version: str | None = None) -> LoadedBaseline:
    """Load and verify a baseline (the active version by default) as a :class:`LoadedBaseline`."""
    stored = store.load(model_id, version)
    meta = stored.meta
    try:
        reference = Reference.from_arrays(stored.arrays, meta)
        performance = (
            PerformanceReference.from_arrays(_under_prefix("performance", stored.arrays), meta["performance_reference"])
            if "performance_reference" in meta
            else None
        )
        anomaly = (
            AnomalyModel.from_arrays(_under_prefix("anomaly", stored.arrays), meta["anomaly"])
            if "anomaly" in meta
            else None
        )
        adversarial = (
            AdversarialArtifact.from_arrays(_under_prefix("adversarial", stored.arrays), meta["adversarial"])
            if "adversarial" in meta
            else None
        )
    except (SnapshotError, KeyError, ValueError) as e:
        raise BaselineError(f"baseline {model_id}/{stored.info.version} cannot be read: {e}") from None
    return LoadedBaseline(
        reference=reference, info=stored.info, performance=performance, anomaly=anomaly, adversarial=adversarial
    )
