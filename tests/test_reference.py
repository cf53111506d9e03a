"""fit_reference and the Reference array round trip."""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from detector.errors import SchemaMismatchError, SnapshotError
from detector.reference import CONFIDENCE_COLUMN, PREDICTION_COLUMN, Reference, fit_reference
from detector.schema import MISSING, UNSEEN, EventBatch, Schema


def _features(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.column_stack([rng.normal(size=n), rng.exponential(2.0, size=n), rng.integers(0, 5, size=n)])
    x[rng.random(n) < 0.1, 0] = np.nan
    x[rng.random(n) < 0.02, 1] = np.nan
    c = np.column_stack([rng.choice(3, size=n, p=[0.5, 0.3, 0.2]), rng.choice(2, size=n)]).astype(np.int32)
    c[rng.random(n) < 0.05, 0] = MISSING
    c[rng.random(n) < 0.03, 1] = UNSEEN
    return x, c


SCHEMA = Schema("m", numeric=("a", "b", "k"), categorical=("u", "v"), categories=(("r", "g", "b"), ("yes", "no")))


def test_numeric_edges_counts_and_missing() -> None:
    rng = np.random.default_rng(0)
    n, n_bins = 5_000, 10
    x, c = _features(rng, n)
    ref = fit_reference(EventBatch.from_arrays(x, categorical=c), SCHEMA, n_bins=n_bins)
    assert ref.num_names == ("a", "b", "k") and ref.num_roles == ("feature",) * 3
    assert ref.edges.shape == (3, n_bins - 1) and ref.num_counts.shape == (3, n_bins)
    assert ref.n_bins == n_bins and ref.n_events == n
    qs = np.arange(1, n_bins) / n_bins
    for j in range(3):
        v = x[:, j][~np.isnan(x[:, j])]
        np.testing.assert_allclose(ref.edges[j], np.quantile(v, qs), rtol=1e-12)
        assert ref.num_missing[j] == np.isnan(x[:, j]).sum()
        assert ref.num_counts[j].sum() == v.size == n - ref.num_missing[j]
        # x falls in bin sum(x >= edges)
        np.testing.assert_array_equal(
            ref.num_counts[j], np.bincount((v[:, None] >= ref.edges[j]).sum(axis=1), minlength=n_bins)
        )
        assert (ref.num_mean[j], ref.num_std[j], ref.num_min[j], ref.num_max[j]) == pytest.approx(
            (v.mean(), v.std(), v.min(), v.max())
        )
    assert ref.num_missing[0] > 300
    # continuous columns: quantile bins hold (nearly) equal counts
    assert ref.num_counts[0].max() - ref.num_counts[0].min() <= 1
    # a discrete column piles its ties into the bins above repeated edges
    assert (ref.num_counts[2] == 0).sum() > 0


def test_categorical_counts_sizes_and_missing() -> None:
    rng = np.random.default_rng(1)
    x, c = _features(rng, 3_000)
    ref = fit_reference(EventBatch.from_arrays(x, categorical=c), SCHEMA)
    assert ref.cat_names == ("u", "v") and ref.cat_roles == ("feature", "feature")
    np.testing.assert_array_equal(ref.cat_sizes, [3, 2])
    assert ref.cat_counts.shape == (2, 4)  # max categories + the unseen slot
    np.testing.assert_array_equal(ref.cat_counts[0], [*np.bincount(c[c[:, 0] >= 0, 0], minlength=3), 0])
    np.testing.assert_array_equal(
        ref.cat_counts[1], [*np.bincount(c[c[:, 1] >= 0, 1], minlength=2), 0, (c[:, 1] == UNSEEN).sum()]
    )
    np.testing.assert_array_equal(ref.cat_missing, [(c[:, 0] == MISSING).sum(), 0])
    assert ref.cat_counts.sum(axis=1).tolist() == [3_000 - ref.cat_missing[0], 3_000]
    assert ref.names == ("a", "b", "k", "u", "v") and ref.roles == ("feature",) * 5


def test_all_missing_column_has_empty_distribution() -> None:
    x = np.column_stack([np.arange(100.0), np.full(100, np.nan)])
    ref = fit_reference(EventBatch.from_arrays(x), Schema("m", numeric=("a", "b")), n_bins=4)
    assert ref.num_counts[1].sum() == 0 and ref.num_missing[1] == 100
    assert np.isnan(ref.num_mean[1])


def test_numeric_prediction_and_performance() -> None:
    rng = np.random.default_rng(2)
    n = 2_000
    x = rng.normal(size=(n, 2))
    pred = x @ [1.0, -2.0]
    label = pred + rng.normal(0, 0.5, size=n)
    label[:500] = np.nan  # unlabelled rows
    schema = Schema("reg", numeric=("a", "b"), prediction="numeric")
    ref = fit_reference(EventBatch.from_arrays(x, prediction=pred, label=label), schema, n_bins=8)
    assert ref.num_names == ("a", "b", PREDICTION_COLUMN)
    assert ref.num_roles == ("feature", "feature", "prediction")
    assert CONFIDENCE_COLUMN not in ref.names  # no probabilities, no confidence column
    np.testing.assert_allclose(ref.edges[2], np.quantile(pred, np.arange(1, 8) / 8))
    err = pred[500:] - label[500:]
    assert ref.performance["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-12)
    assert ref.performance["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-12)
    assert ref.performance["labelled"] == 1_500
    assert "accuracy" not in ref.performance


def test_categorical_prediction_confidence_and_accuracy() -> None:
    rng = np.random.default_rng(3)
    n = 3_000
    x = rng.normal(size=(n, 1))
    proba = rng.dirichlet([2.0, 1.0, 1.0], size=n)
    proba[:100] = np.nan  # events sent without probabilities
    pred = np.argmax(np.nan_to_num(proba), axis=1).astype(np.int32)
    pred[:50] = MISSING
    label = pred.copy()
    flip = rng.random(n) < 0.2
    label[flip] = (label[flip] + 1) % 3
    label[:50] = 0  # labelled, but no prediction: not scored
    label[50:400] = MISSING
    schema = Schema("clf", numeric=("x",), prediction="categorical", classes=("a", "b", "c"))
    batch = EventBatch.from_arrays(x, prediction_code=pred, proba=proba, label_code=label)
    ref = fit_reference(batch, schema, n_bins=5)
    assert ref.num_names == ("x", CONFIDENCE_COLUMN) and ref.num_roles == ("feature", "confidence")
    assert ref.cat_names == (PREDICTION_COLUMN,) and ref.cat_roles == ("prediction",)
    assert ref.names == ("x", CONFIDENCE_COLUMN, PREDICTION_COLUMN)
    assert ref.roles == ("feature", "confidence", "prediction")
    np.testing.assert_array_equal(ref.cat_sizes, [3])
    np.testing.assert_array_equal(ref.cat_counts[0], [*np.bincount(pred[pred >= 0], minlength=3), 0])
    assert ref.cat_missing[0] == 50
    conf = np.max(proba, axis=1)
    assert ref.num_missing[1] == 100
    np.testing.assert_allclose(ref.edges[1], np.quantile(conf[100:], np.arange(1, 5) / 5))
    ok = slice(400, None)
    assert ref.performance["accuracy"] == pytest.approx(np.mean(label[ok] == pred[ok]), rel=1e-12)
    assert ref.performance["labelled"] == n - 400
    assert 0.7 < ref.performance["accuracy"] < 0.9


def test_columns_of_batch_follow_reference_order() -> None:
    schema = Schema("clf", numeric=("x", "y"), prediction="categorical", classes=("a", "b"))
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    batch = EventBatch.from_arrays(np.arange(6.0).reshape(3, 2), proba=proba, prediction_code=[0, 1, 0])
    ref = fit_reference(batch, schema, n_bins=2)
    x, c = ref.columns(batch)
    np.testing.assert_array_equal(x, [[0, 1, 0.9], [2, 3, 0.7], [4, 5, 0.5]])
    np.testing.assert_array_equal(c, [[0], [1], [0]])
    with pytest.raises(SchemaMismatchError):
        ref.columns(EventBatch.from_arrays(np.zeros((2, 3))))


@pytest.mark.parametrize("kwargs", [{"n_bins": 1}, {"n_bins": 0}])
def test_fit_reference_rejects_bad_bins(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        fit_reference(EventBatch.from_arrays(np.zeros((10, 1))), Schema("m", numeric=("x",)), **kwargs)


def test_fit_reference_rejects_empty_batch() -> None:
    with pytest.raises(ValueError):
        fit_reference(EventBatch.from_arrays(np.zeros((0, 1))), Schema("m", numeric=("x",)))


# -- round trip --------------------------------------------------------------------------------------


def _fitted() -> Reference:
    rng = np.random.default_rng(4)
    x, c = _features(rng, 1_000)
    schema = Schema(
        "m",
        numeric=SCHEMA.numeric,
        categorical=SCHEMA.categorical,
        categories=SCHEMA.categories,
        prediction="categorical",
        classes=("lo", "hi"),
    )
    pred = rng.integers(0, 2, size=1_000).astype(np.int32)
    proba = np.column_stack([1 - pred * 0.8, pred * 0.8 + 0.1])
    batch = EventBatch.from_arrays(x, categorical=c, prediction_code=pred, proba=proba, label_code=pred)
    return fit_reference(batch, schema, n_bins=7)


def _assert_references_equal(a: Reference, b: Reference) -> None:
    for f in fields(Reference):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype, f.name
            np.testing.assert_array_equal(va, vb, err_msg=f.name)
        else:
            assert va == vb, f.name


def test_to_arrays_from_arrays_round_trip_is_exact() -> None:
    import json

    ref = _fitted()
    assert ref.performance["accuracy"] == 1.0
    arrays, meta = ref.to_arrays()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    meta = json.loads(json.dumps(meta))  # the metadata must survive JSON
    back = Reference.from_arrays({k: v.copy() for k, v in arrays.items()}, meta)
    _assert_references_equal(ref, back)
    assert back.schema.category_index(0) == {"r": 0, "g": 1, "b": 2}


def test_from_arrays_bad_format_raises() -> None:
    arrays, meta = _fitted().to_arrays()
    for bad in (None, 0, 2, "1"):
        m = copy.deepcopy(meta)
        m["format"] = bad
        with pytest.raises(SnapshotError):
            Reference.from_arrays(arrays, m)
    m = copy.deepcopy(meta)
    del m["format"]
    with pytest.raises(SnapshotError):
        Reference.from_arrays(arrays, m)


@pytest.mark.parametrize("missing", ["edges", "cat_counts"])
def test_from_arrays_missing_array_raises(missing: str) -> None:
    arrays, meta = _fitted().to_arrays()
    del arrays[missing]
    with pytest.raises(SnapshotError, match=missing):
        Reference.from_arrays(arrays, meta)


@pytest.mark.parametrize("missing", ["schema", "num_names", "n_events"])
def test_from_arrays_missing_meta_raises(missing: str) -> None:
    arrays, meta = _fitted().to_arrays()
    del meta[missing]
    with pytest.raises(SnapshotError, match=missing):
        Reference.from_arrays(arrays, meta)
