"""Anomaly scores against plain reference implementations, calibration bands, and the anomaly_rate alert."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats
from scipy.spatial.distance import mahalanobis

from baselines.anomaly_fit import _categorical_tail, fit_anomaly_model
from detector.anomaly import AnomalyDetector
from detector.base import Artifact, Detector
from detector.decision import AlertDecision
from detector.errors import SchemaMismatchError
from detector.schema import MISSING, UNSEEN, EventBatch
from detector.scoring import AnomalyModel

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
F = 8
NAMES = tuple(f"x{i}" for i in range(F))


def reference_like(rng: np.random.Generator, n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32]]:
    """Mixed marginals (normal, skewed, heavy-tailed, correlated), 1% missing, one categorical."""
    z = rng.normal(size=(n, F))
    x = z.copy()
    x[:, 1] = np.exp(0.5 * z[:, 1])  # lognormal
    x[:, 2] = rng.standard_t(5, size=n)
    x[:, 3] = 0.8 * z[:, 0] + 0.6 * z[:, 3]  # correlated with x0
    x[:, 4] = rng.exponential(size=n)
    x[rng.random((n, F)) < 0.01] = np.nan
    c = rng.choice(4, size=(n, 1), p=[0.6, 0.3, 0.09, 0.01]).astype(np.int32)
    c[rng.random(n) < 0.01, 0] = MISSING
    return x, c


def fit(rows: int = 50_000, seed: int = 0, **kw: object) -> AnomalyModel:
    rng = np.random.default_rng(1000 + seed)
    x, c = reference_like(rng, rows)
    return fit_anomaly_model(
        x,
        c,
        numeric_names=NAMES,
        categorical_names=("c",),
        categorical_sizes=(4,),
        seed=seed,
        **kw,  # type: ignore[arg-type]
    )


def fit_rows(n: int, seed: int, calibration_fraction: float = 0.3) -> npt.NDArray[np.intp]:
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[round(n * calibration_fraction) :])


@pytest.fixture(scope="module")
def loda_model() -> AnomalyModel:
    return fit(learned="loda")


@functools.cache
def plain_model(learned: str, seed: int, exact_pyod: bool = True) -> AnomalyModel:
    ref = _plain()[0]
    names = tuple(f"f{i}" for i in range(6))
    return fit_anomaly_model(ref, numeric_names=names, learned=learned, seed=seed, exact_pyod=exact_pyod)  # type: ignore[arg-type]


@functools.cache
def _plain() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(6000, 6)) @ rng.normal(size=(6, 6))
    fresh = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 6))
    return ref, fresh


@pytest.fixture(scope="module")
def plain_data() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return _plain()


# -- scores against reference implementations --------------------------------------------------
def test_tail_equals_plain_ecdf_formula_at_grid_knots(
    plain_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
) -> None:
    ref, _ = plain_data
    names = tuple(f"f{i}" for i in range(6))
    m = fit_anomaly_model(ref, numeric_names=names, learned="none", seed=3)
    xf = ref[fit_rows(len(ref), 3)]
    n = len(xf)
    # evaluate exactly at the tabulated knots of each feature
    cells = m.tail.n_cells
    grid = m.tail.lo + np.arange(0, cells, 7)[:, None] / m.tail.inv_w
    ours = m.score(grid).contributions
    le = (xf[None, :, :] <= grid[:, None, :]).sum(axis=1)
    ge = (xf[None, :, :] >= grid[:, None, :]).sum(axis=1)
    plain = -np.log(np.maximum(np.minimum(le, ge), 1) / (n + 1))
    np.testing.assert_allclose(ours, plain, rtol=1e-9, atol=1e-9)


def test_tail_score_ranks_like_pyod_ecod(plain_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> None:
    from pyod.models.ecod import ECOD

    ref, fresh = plain_data
    m = plain_model("none", 3)
    ecod = ECOD().fit(ref[fit_rows(len(ref), 3)])
    ours = m.score(fresh).raw[:, m.scorers.index("tail")]
    rho = stats.spearmanr(ours, ecod.decision_function(fresh)).statistic
    assert rho > 0.97
    # the most anomalous events agree too
    top_ours = set(np.argsort(-ours)[:30])
    top_ecod = set(np.argsort(-ecod.decision_function(fresh))[:30])
    assert len(top_ours & top_ecod) >= 15  # ECOD refits its ECDF on train + test; we extrapolate tails


def test_tail_extrapolates_beyond_the_reference() -> None:
    rng = np.random.default_rng(0)
    m = fit_anomaly_model(rng.normal(size=(5000, 1)), numeric_names=("a",), learned="none")
    c = m.score(np.array([[0.0], [3.0], [5.0], [8.0], [-8.0], [np.inf]])).contributions[:, 0]
    assert c[0] < 1.0 < c[1] < c[2] < c[3]
    assert c[4] > c[2] and np.isfinite(c[5]) and c[5] > c[3]


def test_mahalanobis_equals_scipy(plain_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> None:
    _ref, fresh = plain_data
    m = plain_model("none", 3)
    x = fresh[:200].copy()
    x[0, 2] = np.nan
    ours = m.score(x).raw[:, m.scorers.index("mahalanobis")]
    imputed = np.where(np.isnan(x), m.median, x)
    plain = np.array([mahalanobis(r, m.location, m.precision) ** 2 for r in imputed])
    np.testing.assert_allclose(ours, plain, rtol=1e-8)


def test_mahalanobis_location_is_robust() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 3))
    x[:200] += 20.0  # 5% gross outliers in the reference
    m = fit_anomaly_model(x, numeric_names=("a", "b", "c"), learned="none", seed=0)
    assert np.abs(m.location).max() < 0.1
    assert np.abs(np.diag(np.linalg.inv(m.precision)) - 1).max() < 0.15


def test_loda_equals_pyod_decision_function(
    plain_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
) -> None:
    from pyod.models.loda import LODA

    ref, fresh = plain_data
    m = plain_model("loda", 5)
    pyod = LODA(random_state=5).fit(ref[fit_rows(len(ref), 5)])
    x = np.vstack([fresh, fresh * 5])  # also far outside the histograms
    np.testing.assert_allclose(m.score(x).raw[:, m.scorers.index("loda")], pyod.decision_function(x), rtol=1e-12)


def test_loda_without_pyod_lookup_uses_the_histogram_bin(
    plain_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
) -> None:
    _ref, fresh = plain_data
    m = plain_model("loda", 5, exact_pyod=False)
    assert m.loda is not None
    p = fresh[:500] @ m.loda.proj.T
    width = 1.0 / m.loda.inv_w
    lo = m.loda.lo - width  # the stored lo is shifted by one width
    k = np.clip(np.floor((p - lo) / width), 0, m.loda.neglog.shape[1] - 1).astype(int)
    plain = np.take_along_axis(m.loda.neglog.T, k, axis=0).mean(axis=1)
    np.testing.assert_allclose(m.score(fresh[:500]).raw[:, 2], plain, rtol=1e-9)


def test_iforest_equals_sklearn_and_pyod(plain_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> None:
    from pyod.models.iforest import IForest

    ref, fresh = plain_data
    m = plain_model("iforest", 4)
    pyod = IForest(random_state=4).fit(ref[fit_rows(len(ref), 4)])
    ours = m.score(fresh).raw[:, m.scorers.index("iforest")]
    np.testing.assert_allclose(ours, -pyod.detector_.score_samples(fresh), rtol=1e-12)
    np.testing.assert_allclose(ours + pyod.detector_.offset_, pyod.decision_function(fresh), rtol=1e-12, atol=1e-12)


def test_categorical_tail_by_reference_frequency() -> None:
    codes = np.array([0] * 60 + [1] * 30 + [2] * 9 + [3] * 1 + [MISSING] * 5 + [UNSEEN] * 0, dtype=np.int32)
    t = _categorical_tail(codes, 5)  # unseen, missing, categories 0..4 (4 never seen)
    unseen, missing, c0, c1, c2, c3, c4 = t
    assert c0 < c1 < c2 < missing < c3 < unseen
    assert c0 == pytest.approx(0.0, abs=1e-12)  # the mode's tail mass is everything
    assert c4 == unseen  # a known category never seen in the reference is as rare as unseen
    assert np.all(_categorical_tail(np.repeat(np.arange(4, dtype=np.int32), 100), 4)[2:] == 0.0)  # uniform


def test_missing_and_unseen_are_scored_explicitly(loda_model: AnomalyModel) -> None:
    x = np.zeros((4, F))
    x[1, 0] = np.nan
    c = np.array([[0], [0], [MISSING], [UNSEEN]], dtype=np.int32)
    s = loda_model.score(x, c)
    assert s.contributions[1, 0] == pytest.approx(loda_model.num_missing[0])
    assert 3.0 < s.contributions[1, 0] < s.contributions[3, F]  # 1% missing is rarer than usual, unseen rarest
    assert s.contributions[2, F] > s.contributions[0, F]
    assert np.all(np.isfinite(s.score))


def test_scores_flags_and_sign(loda_model: AnomalyModel) -> None:
    rng = np.random.default_rng(3)
    x, c = reference_like(rng, 1000)
    x[:10, 0] = 9.0
    s = loda_model.score(x, c)
    assert (s.flag[:10].all() and s.score[:10].min() > s.score[10:].max() - 1e-9) or s.flag[:10].all()
    np.testing.assert_allclose(s.score, -np.log10(s.p_value), rtol=1e-12)
    assert np.array_equal(s.flag, s.p_value <= loda_model.fpr * (1 + 1e-12))
    assert (s.top_features(2)[:10, 0] == 0).all()


# -- calibration --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("learned", ["loda", "iforest"])
def test_flag_rate_on_fresh_reference_like_data_is_calibrated(seed: int, learned: str) -> None:
    m = fit(rows=60_000, seed=seed, learned=learned)
    x, c = reference_like(np.random.default_rng(50 + seed), 200_000)
    rate = m.score(x, c).flag.mean()
    assert 0.5e-3 <= rate <= 2e-3, rate


def test_p_values_are_uniform_in_the_bulk(loda_model: AnomalyModel) -> None:
    x, c = reference_like(np.random.default_rng(9), 100_000)
    p = loda_model.score(x, c).p_value
    for q in (0.5, 0.1, 0.01):
        assert abs(np.mean(p <= q) / q - 1) < 0.15


# -- storage -------------------------------------------------------------------------------------
@pytest.mark.parametrize("learned", ["loda", "iforest", "none"])
def test_to_arrays_round_trip(learned: str) -> None:
    m = fit(rows=6000, learned=learned)
    assert isinstance(m, Artifact)
    arrays, meta = m.to_arrays()
    assert all(NAME.match(k) for k in arrays)
    assert all(a.dtype != object for a in arrays.values())
    back = AnomalyModel.from_arrays({k: a.copy() for k, a in arrays.items()}, json.loads(json.dumps(meta)))
    x, c = reference_like(np.random.default_rng(4), 3000)
    a, b = m.score(x, c), back.score(x, c)
    assert back.learned == learned
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.contributions, b.contributions)


# -- the anomaly_rate alert ----------------------------------------------------------------------
def stream(n: int, seed: int, burst: tuple[int, int] | None = None) -> EventBatch:
    rng = np.random.default_rng(seed)
    x, c = reference_like(rng, n)
    if burst is not None:
        a, b = burst
        hit = a + np.flatnonzero(rng.random(b - a) < 0.05)
        x[hit[:, None], [0, 2, 5]] = 6.0 * np.nanstd(x[:, [0, 2, 5]], axis=0)
    ids = np.array([f"e{i}" for i in range(n)], dtype=object)
    return EventBatch.from_arrays(x, categorical=c, event_id=ids, ts=np.arange(n) * 10)


def key(d: AlertDecision, offset: int) -> tuple[object, ...]:
    return (
        d.status,
        d.severity,
        d.columns,
        offset + d.event_index,
        d.pane,
        d.incident,
        round(d.value, 12),
        d.window_events,
        d.window_start_seq,
        json.dumps(d.evidence, sort_keys=True),
    )


def test_burst_of_outliers_opens_one_incident_naming_its_features(loda_model: AnomalyModel) -> None:
    det = AnomalyDetector(loda_model, size=2000, step=200)
    assert isinstance(det, Detector)
    out = det.update(stream(40_000, 11, burst=(20_000, 26_000)), seq=0)
    opens = [d for d in out if d.status == "open"]
    assert len(opens) == 1
    o = opens[0]
    assert o.kind == "anomaly_rate" and o.statistic == "flag_rate"
    assert 20_000 <= o.event_index < 21_000
    assert set(o.columns[:3]) == {"x0", "x2", "x5"}
    assert o.value >= o.threshold == pytest.approx(3 * loda_model.fpr)
    assert o.p_value is not None and o.p_value < det.alpha
    ev = o.evidence
    assert len(ev["top_events"]) == 5 and all(20_000 <= int(e["event_id"][1:]) < 26_000 for e in ev["top_events"])
    assert ev["expected_rate"] == loda_model.fpr and ev["flagged"] >= 5
    statuses = [d.status for d in out]
    assert statuses[-1] == "resolved" and statuses.count("resolved") == 1
    assert out[-1].incident == o.incident and out[-1].event_index > 26_000


def test_clean_stream_fires_nothing(loda_model: AnomalyModel) -> None:
    det = AnomalyDetector(loda_model, size=2000, step=200)
    b = stream(200_000, 12)
    assert det.update(b, seq=0) == []
    assert det.last_scores is not None and len(det.last_scores) == 200_000


def burst_records(model: AnomalyModel) -> tuple[EventBatch, list[tuple[object, ...]]]:
    """A stream with a burst of outliers and the records a detector gives on it in one batch."""
    b = stream(3000, 13, burst=(1000, 1800))
    expected = [key(d, 0) for d in AnomalyDetector(model, size=400, step=100, min_events=50).update(b, seq=0)]
    assert expected
    return b, expected


def test_batch_equals_row_by_row(loda_model: AnomalyModel) -> None:
    b, expected = burst_records(loda_model)
    many = AnomalyDetector(loda_model, size=400, step=100, min_events=50)
    rng = np.random.default_rng(0)
    got, i = [], 0
    while i < len(b):
        j = min(len(b), i + int(rng.choice([1, 1, 7, 150])))
        got += [key(d, i) for d in many.update(b.take(slice(i, j)), seq=i)]
        i = j
    assert got == expected


def test_scores_given_from_elsewhere_give_the_same_records_and_must_fit_the_batch(loda_model: AnomalyModel) -> None:
    b, expected = burst_records(loda_model)
    given = AnomalyDetector(loda_model, size=400, step=100, min_events=50)
    scores = loda_model.score(b.numeric, b.categorical)  # (what a decoding process sends)
    assert [key(d, 0) for d in given.update(b, seq=0, scores=scores)] == expected
    assert given.last_scores is scores
    with pytest.raises(SchemaMismatchError):
        given.update(b.take(slice(0, 10)), seq=3000, scores=scores)


def test_snapshot_restore_continues_identically(loda_model: AnomalyModel) -> None:
    b = stream(8000, 14, burst=(3000, 5000))
    ref = AnomalyDetector(loda_model, size=1000, step=100)
    expected = [key(d, 0) for d in ref.update(b, seq=0)]
    first = AnomalyDetector(loda_model, size=1000, step=100)
    got = [key(d, 0) for d in first.update(b.take(slice(0, 3900)), seq=0)]
    state = first.snapshot()
    assert all(NAME.match(k) for k in state) and all(a.dtype != object for a in state.values())
    second = AnomalyDetector(loda_model, size=1000, step=100)
    second.restore({k: np.array(v) for k, v in state.items()})
    got += [key(d, 3900) for d in second.update(b.take(slice(3900, None)), seq=3900)]
    assert got == expected


def test_time_windows(loda_model: AnomalyModel) -> None:
    det = AnomalyDetector(loda_model, window="time", size=20_000, step=2000)  # ts step 10 ms: 2000 events
    out = det.update(stream(30_000, 15, burst=(15_000, 20_000)), seq=0)
    assert [d.status for d in out][:1] == ["open"]
    assert set(out[0].columns[:3]) == {"x0", "x2", "x5"}


def test_invalid_parameters(loda_model: AnomalyModel) -> None:
    with pytest.raises(ValueError):
        AnomalyDetector(loda_model, size=1000, step=300)
    with pytest.raises(ValueError):
        AnomalyDetector(loda_model, min_ratio=1.0, resolve_ratio=2.0)
    with pytest.raises(ValueError):
        fit_anomaly_model(np.zeros((100, 1)), numeric_names=("a",), learned="knn")  # type: ignore[arg-type]
