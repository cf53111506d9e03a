"""detector.stats against scipy (and a plain numpy PSI) on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from detector.stats import PSI_EPSILON, chi2_homogeneity, js_distance, ks_binned, psi


def _random_counts(rng: np.random.Generator, shape: tuple[int, ...], zero_share: float = 0.3) -> np.ndarray:
    """Count vectors with some bins forced to zero (but never an all-zero vector)."""
    c = rng.integers(0, 50, size=shape)
    c[rng.random(shape) < zero_share] = 0
    c[..., 0] += 1
    return c


# -- PSI ---------------------------------------------------------------------------------------------


def _psi_plain(p: np.ndarray, q: np.ndarray, eps: float = PSI_EPSILON) -> float:
    pp = np.maximum(p / p.sum(), eps)
    qq = np.maximum(q / q.sum(), eps)
    return float(np.sum((pp - qq) * np.log(pp / qq)))


def test_psi_matches_plain_formula() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = int(rng.integers(2, 25))
        p, q = _random_counts(rng, (b,)), _random_counts(rng, (b,))
        assert float(psi(p, q)) == pytest.approx(_psi_plain(p, q), rel=1e-12, abs=1e-15)


def test_psi_known_values_and_symmetry() -> None:
    assert float(psi([50, 50], [50, 50])) == 0.0
    # 0.3 ln(0.8/0.5) + (-0.3) ln(0.2/0.5)
    assert float(psi([80, 20], [50, 50])) == pytest.approx(0.3 * np.log(1.6) - 0.3 * np.log(0.4), rel=1e-12)
    rng = np.random.default_rng(1)
    p, q = _random_counts(rng, (10,)), _random_counts(rng, (10,))
    assert float(psi(p, q)) == pytest.approx(float(psi(q, p)), rel=1e-12)
    assert float(psi(p, q)) > 0


def test_psi_empty_bin_is_finite_and_uses_epsilon() -> None:
    value = float(psi([100, 0], [50, 50]))
    assert np.isfinite(value)
    assert value == pytest.approx((1 - 0.5) * np.log(2) + (PSI_EPSILON - 0.5) * np.log(PSI_EPSILON / 0.5))
    assert float(psi([100, 0], [50, 50], epsilon=1e-2)) < value


def test_psi_vectorized_over_leading_axes() -> None:
    rng = np.random.default_rng(2)
    p = _random_counts(rng, (3, 4, 9))
    q = _random_counts(rng, (4, 9))  # broadcast like the reference in DriftMonitor
    out = psi(p, q)
    assert out.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert out[i, j] == pytest.approx(_psi_plain(p[i, j], q[j]), rel=1e-12)


# -- Jensen-Shannon ----------------------------------------------------------------------------------


def test_js_distance_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        b = int(rng.integers(2, 25))
        p, q = _random_counts(rng, (b,), zero_share=0.5), _random_counts(rng, (b,), zero_share=0.5)
        assert float(js_distance(p, q)) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-10)


def test_js_distance_bounds() -> None:
    assert float(js_distance([1, 0], [0, 1])) == pytest.approx(1.0)
    assert float(js_distance([3, 0, 7], [30, 0, 70])) == pytest.approx(0.0, abs=1e-7)
    rng = np.random.default_rng(4)
    d = js_distance(_random_counts(rng, (500, 12)), _random_counts(rng, (500, 12)))
    assert np.all((d >= 0) & (d <= 1))


def test_js_distance_vectorized_equals_loop() -> None:
    rng = np.random.default_rng(5)
    p = _random_counts(rng, (3, 4, 11), zero_share=0.4)
    q = _random_counts(rng, (3, 4, 11), zero_share=0.4)
    out = js_distance(p, q)
    assert out.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert out[i, j] == float(js_distance(p[i, j], q[i, j]))
            assert out[i, j] == pytest.approx(jensenshannon(p[i, j], q[i, j], base=2), abs=1e-10)


# -- KS ----------------------------------------------------------------------------------------------


def _grid_samples(rng: np.random.Generator, n: int, m: int, k: int, shifted: bool) -> tuple[np.ndarray, ...]:
    pa = rng.dirichlet(np.full(k, 5.0))
    pb = rng.dirichlet(np.full(k, 5.0)) if shifted else pa
    a = rng.choice(k, size=n, p=pa)
    b = rng.choice(k, size=m, p=0.9 * pa + 0.1 * pb)
    return a, b, np.bincount(a, minlength=k), np.bincount(b, minlength=k)


def test_ks_binned_statistic_equals_ks_2samp_on_grid_data() -> None:
    rng = np.random.default_rng(6)
    for t in range(100):
        n, m = (int(v) for v in rng.integers(20, 2000, size=2))
        k = int(rng.integers(2, 12))
        a, b, ca, cb = _grid_samples(rng, n, m, k, shifted=bool(t % 2))
        d, pv = ks_binned(ca, cb)
        ref = stats.ks_2samp(a, b)
        assert float(d) == pytest.approx(ref.statistic, abs=1e-12)
        en = n * m / (n + m)
        assert float(pv) == pytest.approx(stats.kstwobign.sf(np.sqrt(en) * ref.statistic), rel=1e-9, abs=1e-300)


def test_ks_binned_pvalue_close_to_scipy_asymptotic_for_large_samples() -> None:
    rng = np.random.default_rng(7)
    worst = 0.0
    for t in range(100):
        n, m = (int(v) for v in rng.integers(500, 3000, size=2))
        a, b, ca, cb = _grid_samples(rng, n, m, 8, shifted=bool(t % 2))
        _, pv = ks_binned(ca, cb)
        worst = max(worst, abs(float(pv) - stats.ks_2samp(a, b, method="asymp").pvalue))
    assert worst < 0.02


def test_ks_binned_is_a_lower_bound_off_the_grid() -> None:
    """On continuous data the binned D can only miss the gaps between edges."""
    rng = np.random.default_rng(8)
    edges = np.linspace(-2, 2, 19)
    for _ in range(50):
        a, b = rng.normal(size=400), rng.normal(0.2, 1.0, size=700)
        ca = np.bincount(np.searchsorted(edges, a, side="right"), minlength=20)
        cb = np.bincount(np.searchsorted(edges, b, side="right"), minlength=20)
        d, _ = ks_binned(ca, cb)
        assert float(d) <= stats.ks_2samp(a, b).statistic + 1e-12


def test_ks_binned_vectorized_equals_loop() -> None:
    rng = np.random.default_rng(9)
    p = _random_counts(rng, (3, 4, 10))
    q = _random_counts(rng, (4, 10))
    d, pv = ks_binned(p, q)
    assert d.shape == pv.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            d1, p1 = ks_binned(p[i, j], q[j])
            assert (d[i, j], pv[i, j]) == (float(d1), float(p1))


# -- chi-square --------------------------------------------------------------------------------------


def _chi2_scipy(p: np.ndarray, q: np.ndarray) -> tuple[float, float, int]:
    table = np.vstack([p, q])
    table = table[:, table.sum(axis=0) > 0]
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)


def test_chi2_homogeneity_matches_chi2_contingency() -> None:
    rng = np.random.default_rng(10)
    for t in range(200):
        k = int(rng.integers(3, 10))
        p, q = _random_counts(rng, (k,), zero_share=0.2), _random_counts(rng, (k,), zero_share=0.2)
        p[-1] = int(rng.integers(1, 20)) if t % 2 else p[-1]  # an "unseen" category ...
        q[-1] = 0  # ... that the reference never showed
        if t % 3 == 0:
            p[1] = q[1] = 0  # a category neither side has
        s, dof, pv = chi2_homogeneity(p, q)
        s_ref, pv_ref, dof_ref = _chi2_scipy(p, q)
        assert float(s) == pytest.approx(s_ref, rel=1e-10, abs=1e-12)
        assert float(dof) == dof_ref
        assert float(pv) == pytest.approx(pv_ref, rel=1e-9, abs=1e-300)


def test_chi2_unseen_category_is_evidence() -> None:
    same = chi2_homogeneity([50, 50, 0], [500, 500, 0])
    unseen = chi2_homogeneity([45, 45, 10], [500, 500, 0])
    assert float(same[2]) == pytest.approx(1.0)
    assert float(same[1]) == 1.0
    assert float(unseen[1]) == 2.0
    assert float(unseen[2]) < 1e-10


def test_chi2_vectorized_equals_loop() -> None:
    rng = np.random.default_rng(11)
    p = _random_counts(rng, (3, 4, 6))
    q = _random_counts(rng, (4, 6))
    p[0, 0, 2] = 0
    q[0, 2] = 0  # an all-zero column in one row only
    s, dof, pv = chi2_homogeneity(p, q)
    assert s.shape == dof.shape == pv.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            s1, pv1, dof1 = _chi2_scipy(p[i, j], q[j])
            assert s[i, j] == pytest.approx(s1, rel=1e-10)
            assert dof[i, j] == dof1
            assert pv[i, j] == pytest.approx(pv1, rel=1e-9, abs=1e-300)


# -- empty windows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("empty_side", ["window", "reference", "both"])
def test_empty_side_conventions(empty_side: str) -> None:
    full = np.array([[5, 3, 2], [1, 1, 1]])
    empty = np.zeros((2, 3), dtype=np.int64)
    p = empty if empty_side in ("window", "both") else full
    q = empty if empty_side in ("reference", "both") else full
    assert np.isnan(psi(p, q)).all()
    assert np.isnan(js_distance(p, q)).all()
    d, pv = ks_binned(p, q)
    assert np.isnan(d).all() and np.isnan(pv).all()
    s, _, cpv = chi2_homogeneity(p, q)
    np.testing.assert_array_equal(s, 0.0)
    np.testing.assert_array_equal(cpv, 1.0)


def test_empty_row_does_not_contaminate_other_rows() -> None:
    p = np.array([[0, 0, 0], [10, 20, 30]])
    q = np.array([10, 20, 30])
    v = psi(p, q)
    assert np.isnan(v[0]) and v[1] == pytest.approx(0.0, abs=1e-15)
    d, pv = ks_binned(p, q)
    assert np.isnan(pv[0]) and d[1] == pytest.approx(0.0, abs=1e-15) and pv[1] == pytest.approx(1.0)
    _, dof, cpv = chi2_homogeneity(p, q)
    assert cpv[0] == 1.0 and cpv[1] == pytest.approx(1.0) and dof[1] == 2.0


def test_single_category_has_no_degrees_of_freedom() -> None:
    s, dof, pv = chi2_homogeneity([10, 0], [40, 0])
    assert (float(s), float(dof), float(pv)) == (0.0, 0.0, 1.0)
