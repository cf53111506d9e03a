"""DriftMonitor: binning into cells, batch invariance, null behaviour, snapshots, detection."""

from __future__ import annotations

import itertools
from dataclasses import fields

import numpy as np
import pytest

from detector.drift import DriftMonitor, DriftReport
from detector.errors import SchemaMismatchError, SnapshotError
from detector.reference import Reference, fit_reference
from detector.schema import MISSING, UNSEEN, EventBatch, Schema

SCHEMA = Schema("m", numeric=("a", "b", "c"), categorical=("u", "v"), categories=(("x", "y", "z", "w"), ("p", "q")))
PU = np.array([0.4, 0.3, 0.2, 0.1])
ARRAY_FIELDS = [f.name for f in fields(DriftReport) if f.name not in ("names", "roles")]


def _batch(rng: np.random.Generator, n: int, *, shift: float = 0.0, t0: int = 0) -> EventBatch:
    x = rng.normal(size=(n, 3))
    x[:, 2] += shift
    c = np.column_stack([rng.choice(4, size=n, p=PU), rng.choice(2, size=n)]).astype(np.int32)
    return EventBatch.from_arrays(x, categorical=c, ts=t0 + np.arange(n) * 10)


def _reference(seed: int = 0, n: int = 20_000) -> Reference:
    return fit_reference(_batch(np.random.default_rng(seed), n), SCHEMA, n_bins=10)


def _feed(mon: DriftMonitor, batch: EventBatch, sizes: list[int] | None = None) -> dict[str, np.ndarray]:
    n = len(batch)
    bounds = [0, n] if sizes is None else [int(v) for v in np.cumsum([0, *sizes])]
    reps = []
    for a, b in itertools.pairwise(bounds):
        r = mon.update(batch.take(slice(a, b)))
        assert r.names == mon.reference.names
        reps.append((r, a))
    out = {f: np.concatenate([getattr(r, f) for r, _ in reps]) for f in ARRAY_FIELDS if f != "is_numeric"}
    out["event_index"] = np.concatenate([r.event_index + a for r, a in reps])
    return out


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# -- cells -------------------------------------------------------------------------------------------


def test_cells_layout() -> None:
    ref = _reference()
    mon = DriftMonitor(ref)
    e = ref.edges
    x = np.array(
        [
            [e[0, 0] - 1.0, e[1, 0], np.nan],  # below the first edge; exactly on an edge goes up
            [e[0, -1], np.nan, np.inf],
            [-np.inf, e[1, 4] + 1e-9, e[2, 4] - 1e-9],
        ]
    )
    c = np.array([[0, 1], [UNSEEN, MISSING], [3, UNSEEN]], dtype=np.int32)
    cells = mon.cells(EventBatch.from_arrays(x, categorical=c)).copy()
    nb = ref.n_bins  # 10 bins + 1 missing slot per numeric column
    cw = ref.cat_counts.shape[1] + 1  # 4 categories + unseen + missing per categorical column
    assert cw == 6
    num0 = 3 * (nb + 1)
    expected = [
        [0, (nb + 1) + 1, 2 * (nb + 1) + nb, num0 + 0, num0 + cw + 1],
        [nb - 1, (nb + 1) + nb, 2 * (nb + 1) + nb - 1, num0 + 4, num0 + cw + 5],
        [0, (nb + 1) + 5, 2 * (nb + 1) + 4, num0 + 3, num0 + cw + 4],
    ]
    assert cells.tolist() == expected
    assert cells.max() < 3 * (nb + 1) + 2 * cw


def test_cells_bins_agree_with_reference_binning() -> None:
    ref = _reference()
    mon = DriftMonitor(ref)
    rng = np.random.default_rng(9)
    b = _batch(rng, 3_000)
    cells = mon.cells(b).copy()
    for j in range(3):
        expected = np.searchsorted(ref.edges[j], b.numeric[:, j], side="right")
        np.testing.assert_array_equal(cells[:, j] - j * (ref.n_bins + 1), expected)


def test_empty_batch() -> None:
    mon = DriftMonitor(_reference(), size=100, step=50)
    rep = mon.update(_batch(np.random.default_rng(0), 10).take(slice(0, 0)))
    assert len(rep) == 0 and rep.psi.shape == (0, 5)
    rep = mon.update(_batch(np.random.default_rng(0), 200))
    assert len(rep) == 3


@pytest.mark.parametrize("n_bins", [2, 255, 256, 300])
def test_bin_count_limit(n_bins: int) -> None:
    rng = np.random.default_rng(12)
    ref = fit_reference(EventBatch.from_arrays(rng.normal(size=(5_000, 1))), Schema("m", numeric=("x",)), n_bins=n_bins)
    if n_bins > 255:
        with pytest.raises(ValueError, match="255"):
            DriftMonitor(ref)
        return
    cells = DriftMonitor(ref).cells(EventBatch.from_arrays(np.array([[np.nan], [1e9], [-1e9]])))
    assert cells.ravel().tolist() == [n_bins, n_bins - 1, 0]


def test_schema_mismatch() -> None:
    mon = DriftMonitor(_reference())
    with pytest.raises(SchemaMismatchError):
        mon.update(EventBatch.from_arrays(np.zeros((5, 2))))


# -- batch invariance --------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["count", "time"])
def test_batch_equals_chunks(window: str) -> None:
    ref = _reference()
    rng = np.random.default_rng(1)
    n = 1_500
    b = _batch(rng, n, shift=0.0)
    b.numeric[rng.random((n, 3)) < 0.05] = np.nan
    b.categorical[rng.random((n, 2)) < 0.03] = MISSING
    b.categorical[rng.random((n, 2)) < 0.02] = UNSEEN
    if window == "time":  # jittered event times: some late, some too late
        b.ts[:] = np.arange(n) * 10 + rng.integers(-5_000, 1_000, size=n) * (rng.random(n) < 0.1)
    kw = (
        {"size": 300, "step": 75, "min_events": 50}
        if window == "count"
        else {"size": 3_000, "step": 750, "min_events": 50}
    )

    def make() -> DriftMonitor:
        return DriftMonitor(ref, window=window, **kw)  # type: ignore[arg-type]

    m0 = make()
    whole = _feed(m0, b)
    assert len(whole["pane"]) > 15
    for chunk in (1, 7, 1_000):
        m = make()
        _assert_same(whole, _feed(m, b, [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])))
        assert m.late_dropped == m0.late_dropped
    if window == "time":
        assert m0.late_dropped > 0


def test_cells_binned_elsewhere_give_the_same_statistics() -> None:
    import pickle

    ref = _reference()
    b = _batch(np.random.default_rng(2), 1_200, shift=0.3)
    b.numeric[::17, 1] = np.nan
    b.categorical[::13, 0] = UNSEEN
    here = DriftMonitor(ref, size=300, step=75, min_events=50)
    whole = _feed(here, b)
    binner = pickle.loads(pickle.dumps(here.binner))  # (a decoding process's copy, without buffers)
    given = DriftMonitor(ref, size=300, step=75, min_events=50)
    reps = []
    for a in range(0, len(b), 500):
        part = b.take(slice(a, a + 500))
        cells = binner.cells(part).copy()
        reps.append((given.update(part, cells=cells), a))
    got = {f: np.concatenate([getattr(r, f) for r, _ in reps]) for f in ARRAY_FIELDS if f != "is_numeric"}
    got["event_index"] = np.concatenate([r.event_index + a for r, a in reps])
    _assert_same(whole, got)
    with pytest.raises(SchemaMismatchError):
        given.update(b.take(slice(0, 10)), cells=cells)


# -- null behaviour ----------------------------------------------------------------------------------


def test_stable_stream_psi_small_and_ks_pvalues_roughly_uniform() -> None:
    ref = fit_reference(_batch(np.random.default_rng(2), 100_000), SCHEMA)  # default 20 bins
    mon = DriftMonitor(ref, size=1_000, step=1_000)  # disjoint windows
    rep = mon.update(_batch(np.random.default_rng(3), 400_000))
    assert len(rep) == 400
    # E[PSI] ~ (bins - 1) (1/n + 1/m) ~ 0.019 here
    assert 0.01 < np.nanmean(rep.psi[:, :3]) < 0.03
    assert np.nanmax(rep.psi) < 0.07
    assert np.nanmax(rep.js) < 0.1
    pv = rep.p_value[:, :3].ravel()  # KS p-values of the numeric columns
    assert np.isfinite(pv).all()
    # Binned D <= exact D and the asymptotic law make KS conservative (mean p ~0.65 with 20 bins at
    # n=1000): it must not be anti-conservative, nor degenerate.
    assert 0.45 < pv.mean() < 0.75
    for level in (0.05, 0.1, 0.25, 0.5):
        assert np.mean(pv < level) < 1.2 * level + 0.01
        assert np.mean(pv < level) > 0.25 * level
    cp = rep.p_value[:, 3:].ravel()
    assert 0.4 < cp.mean() < 0.6 and np.mean(cp < 0.05) < 0.08
    np.testing.assert_array_equal(rep.missing_rate, 0.0)
    np.testing.assert_array_equal(rep.unseen_rate, 0.0)
    assert np.isnan(rep.ks[:, 3:]).all() and (rep.ks[:, :3] > 0).all()


def test_missing_and_unseen_rates() -> None:
    mon = DriftMonitor(_reference(), size=1_000, step=500)
    rng = np.random.default_rng(4)
    b = _batch(rng, 1_000)
    b.numeric[:100, 1] = np.nan
    b.categorical[:250, 0] = UNSEEN
    b.categorical[500:550, 1] = MISSING
    rep = mon.update(b)
    assert len(rep) == 1
    np.testing.assert_allclose(rep.missing_rate[0], [0, 0.1, 0, 0, 0.05])
    np.testing.assert_allclose(rep.unseen_rate[0], [0, 0, 0, 0.25, 0])
    assert rep.p_value[0, 3] < 1e-20 and rep.psi[0, 3] > 1  # unseen values are drift
    assert rep.p_value[0, 1] > 1e-3  # missing values are not in the distribution


# -- snapshots ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["count", "time"])
def test_snapshot_restore_continuity(window: str) -> None:
    ref = _reference()
    rng = np.random.default_rng(5)
    b = _batch(rng, 5_000, shift=0.3)
    kw = {"size": 1_000, "step": 200} if window == "count" else {"size": 5_000, "step": 1_000}
    full = DriftMonitor(ref, window=window, **kw)  # type: ignore[arg-type]
    expected = _feed(full, b)
    for cut in (1, 1_234, 3_000):
        first = DriftMonitor(ref, window=window, **kw)  # type: ignore[arg-type]
        head = _feed(first, b.take(slice(0, cut)))
        second = DriftMonitor(ref, window=window, **kw)  # type: ignore[arg-type]
        second.restore({k: v.copy() for k, v in first.snapshot().items()})
        tail = _feed(second, b.take(slice(cut, None)))
        tail["event_index"] += cut
        _assert_same(expected, {k: np.concatenate([head[k], tail[k]]) for k in head})


def test_restore_into_other_reference_raises() -> None:
    mon = DriftMonitor(_reference(), size=1_000, step=200)
    mon.update(_batch(np.random.default_rng(0), 300))
    other_schema = Schema("m", numeric=("a", "b"))
    other = fit_reference(EventBatch.from_arrays(np.zeros((10, 2))), other_schema)
    with pytest.raises(SnapshotError):
        DriftMonitor(other, size=1_000, step=200).restore(mon.snapshot())
    with pytest.raises(SnapshotError):
        DriftMonitor(_reference(), size=1_000, step=100).restore(mon.snapshot())


# -- detection ---------------------------------------------------------------------------------------


def test_shift_is_detected_in_the_shifted_column_only() -> None:
    ref = _reference(seed=6)
    mon = DriftMonitor(ref, size=2_000, step=500)
    rng = np.random.default_rng(7)
    before = mon.update(_batch(rng, 4_000))
    after = mon.update(_batch(rng, 4_000, shift=1.0))
    assert np.all(before.psi < 0.05) and np.all(before.p_value > 1e-4)
    full = after.event_index >= 1_999  # windows made only of shifted events
    assert full.sum() == 5
    assert np.all(after.psi[full, 2] > 0.5)
    assert np.all(after.p_value[full, 2] < 1e-50)
    assert np.all(after.ks[full, 2] > 0.3)
    others = [0, 1, 3, 4]
    assert np.all(after.psi[:, others] < 0.05)
    assert np.all(after.p_value[:, others] > 1e-4)
    assert np.all(np.diff(after.psi[:4, 2]) > 0)  # rises as the shifted events fill the window


def test_categorical_shift_is_detected() -> None:
    ref = _reference(seed=8)
    mon = DriftMonitor(ref, size=2_000, step=1_000)
    rng = np.random.default_rng(9)
    b = _batch(rng, 2_000)
    b.categorical[:, 0] = rng.choice(4, size=2_000, p=PU[::-1])
    rep = mon.update(b)
    assert rep.psi[0, 3] > 0.5 and rep.p_value[0, 3] < 1e-50
    assert rep.p_value[0, 4] > 1e-4
