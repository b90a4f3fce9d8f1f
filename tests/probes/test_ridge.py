"""Ridge decoders against scikit-learn: primal and dual, streamed, all backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.metrics import balanced_accuracy_score, r2_score
from threadpoolctl import threadpool_limits

from actstore.core._backend import move_to, to_numpy
from actstore.decode._ridge import solve_dual, solve_primal
from actstore.probes import (
    ArraySource,
    CachedSource,
    accumulate_gram,
    accumulate_groups,
    encode_targets,
    ridge_cv,
    stratified_folds,
)

ALPHAS = [1e-3, 0.1, 1.0, 10.0, 1e3]


def ridge_raw(*args, **kwargs):
    """The raw-unit decoders (compared with scikit-learn without a scaler)."""
    return ridge_cv(*args, standardize=False, **kwargs)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # small matrices on a shared machine: one BLAS thread is faster and deterministic
    with threadpool_limits(1):
        yield


def _data(n, d, seed=0, offset=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, n)
    b = rng.integers(0, 2, n)
    X = rng.standard_normal((n, d)) + offset
    X[:, 0] += a
    X[:, 1 % d] += 2 * b
    c = X[:, 2 % d] - X[:, 0] + 0.5 * rng.standard_normal(n)
    return X.astype(dtype), {"a": a, "b": b, "c": c}


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_primal_coefficients_equal_sklearn_ridge(offset):
    X, labels = _data(240, 12, offset=offset)
    T = encode_targets(labels)
    folds = stratified_folds(240, 4, seed=0, stratify={"a": labels["a"]})
    stats = accumulate_groups(ArraySource(X, block_rows=50), T.Y, folds)
    for k, (train, _test) in enumerate(folds.split()):
        fold = solve_primal(stats.moments(exclude=k))
        W = fold.coef(ALPHAS)
        b = fold.intercept(W)
        for i, alpha in enumerate(ALPHAS):
            ref = Ridge(alpha=alpha).fit(X[train], T.Y[train])
            assert _rel(W[i], ref.coef_.T) < 1e-6
            assert _rel(b[i], ref.intercept_) < 1e-6


def test_dual_coefficients_equal_sklearn_ridge():
    X, labels = _data(60, 150, seed=1)
    T = encode_targets(labels)
    folds = stratified_folds(60, 3, seed=0)
    gram = accumulate_gram(ArraySource(X, block_rows=16))
    for train, test in folds.split():
        fold = solve_dual(gram, T.Y, train, test)
        dual = fold.dual_coef(ALPHAS)
        Xc = X[train] - X[train].mean(axis=0)
        pred = fold.predict_test(ALPHAS)
        for i, alpha in enumerate(ALPHAS):
            ref = Ridge(alpha=alpha).fit(X[train], T.Y[train])
            assert _rel(Xc.T @ dual[i], ref.coef_.T) < 1e-6
            assert _rel(pred[:, i, :], ref.predict(X[test])) < 1e-6


@pytest.mark.parametrize("form, n, d", [("primal", 300, 20), ("dual", 50, 120),
                                        ("lgo", 120, 60)])
def test_cv_scores_equal_sklearn_classifier_and_regressor(form, n, d):
    X, labels = _data(n, d, seed=2)
    T = encode_targets(labels)
    folds = stratified_folds(n, 3, seed=5, stratify={"a": labels["a"], "b": labels["b"]})
    s = ridge_raw(ArraySource(X, block_rows=37), T, folds, ALPHAS, form=form)
    for k, (train, test) in enumerate(folds.split()):
        for i, alpha in enumerate(ALPHAS):
            for j, f in enumerate(["a", "b"]):
                clf = RidgeClassifier(alpha=alpha).fit(X[train], labels[f][train])
                pred = clf.predict(X[test])
                assert s["accuracy"][k, i, j] == np.mean(pred == labels[f][test])
                assert s["balanced_accuracy"][k, i, j] == pytest.approx(
                    balanced_accuracy_score(labels[f][test], pred), abs=1e-12
                )
            reg = Ridge(alpha=alpha).fit(X[train], labels["c"][train])
            r2 = r2_score(labels["c"][test], reg.predict(X[test]))
            assert s["r2"][k, i, 2] == pytest.approx(r2, rel=1e-6, abs=1e-9)
            assert s["vinfo"][k, i, 2] == pytest.approx(max(r2, 0.0), rel=1e-6, abs=1e-9)
            # one-hot R^2 of a categorical feature: variance-weighted over its columns
            cols = slice(T.features[0].start, T.features[0].stop)
            oh = Ridge(alpha=alpha).fit(X[train], T.Y[train, cols]).predict(X[test])
            ref = r2_score(T.Y[test, cols], oh, multioutput="variance_weighted")
            assert s["r2"][k, i, 0] == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_all_forms_agree():
    X, labels = _data(80, 60, seed=3)
    T = encode_targets(labels)
    folds = stratified_folds(80, 4, seed=0)
    p = ridge_raw(ArraySource(X), T, folds, ALPHAS, form="primal")
    for form in ("dual", "lgo"):
        d = ridge_raw(ArraySource(X), T, folds, ALPHAS, form=form)
        for key in ("accuracy", "balanced_accuracy", "r2"):
            np.testing.assert_allclose(p[key], d[key], rtol=1e-8, atol=1e-10)


def test_leave_group_out_with_an_explicit_split():
    from actstore.probes import explicit_split

    X, labels = _data(150, 30, seed=10)
    T = encode_targets(labels)
    folds = explicit_split(np.arange(150) % 5 == 0)
    p = ridge_raw(ArraySource(X), T, folds, ALPHAS, form="primal")
    g = ridge_raw(ArraySource(X), T, folds, ALPHAS, form="lgo")
    np.testing.assert_allclose(p["r2"], g["r2"], rtol=1e-8)
    np.testing.assert_array_equal(p["accuracy"], g["accuracy"])


def test_form_choice():
    from actstore.decode._ridge import choose_form

    folds = stratified_folds(5000, 5, seed=0)
    # on the host a fold's tridiagonal reduction is cheaper than the fold updates ...
    assert choose_form(2048, folds, 13, cache_bytes=2**30) == "primal"
    # ... unless the folds are many and small; other backends diagonalise every fold
    assert choose_form(2048, stratified_folds(5000, 10, seed=0), 13, cache_bytes=2**30) == "lgo"
    assert choose_form(2048, folds, 13, cache_bytes=2**30, host=False) == "lgo"
    assert choose_form(2048, folds, 13, cache_bytes=0) == "primal"  # Z would not fit
    assert choose_form(256, folds, 13, cache_bytes=2**30) == "primal"
    assert choose_form(6000, folds, 13, cache_bytes=2**30) == "dual"


def test_numpy_and_torch_cpu_give_the_same_numbers():
    X, labels = _data(200, 30, seed=4)
    T = encode_targets(labels)
    folds = stratified_folds(200, 5, seed=0)
    ref = ridge_raw(ArraySource(X, 64), T, folds, ALPHAS)
    for form in ("primal", "dual", "lgo"):
        got = ridge_raw(CachedSource(ArraySource(X, 64), backend="torch"), T, folds, ALPHAS,
                       form=form)
        for key in ("accuracy", "r2", "balanced_accuracy"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-8, atol=1e-10)


def test_array_api_strict_arrays():
    import array_api_strict as xps

    X, labels = _data(90, 10, seed=6)
    T = encode_targets(labels)
    folds = stratified_folds(90, 3, seed=0)
    ref = ridge_raw(ArraySource(X, 32), T, folds, ALPHAS)
    got = ridge_raw(ArraySource(xps.asarray(X), 32), T, folds, ALPHAS)
    np.testing.assert_allclose(got["r2"], ref["r2"], rtol=1e-10)
    np.testing.assert_array_equal(got["accuracy"], ref["accuracy"])  # NaN where n/a


def test_streaming_twice_when_the_cache_is_too_small():
    X, labels = _data(400, 16, seed=7)
    T = encode_targets(labels)
    folds = stratified_folds(400, 4, seed=0)
    big = CachedSource(ArraySource(X, 50), cache_bytes=10**9)
    small = CachedSource(ArraySource(X, 50), cache_bytes=1000)
    a = ridge_raw(big, T, folds, ALPHAS)
    b = ridge_raw(small, T, folds, ALPHAS)
    assert big.passes == 1 and small.passes == 2
    np.testing.assert_allclose(a["r2"], b["r2"], rtol=1e-10)


def test_nan_activations_are_refused_with_the_row():
    from actstore import ActstoreError

    X, labels = _data(100, 8, seed=8)
    X[57, 3] = np.nan
    T = encode_targets(labels)
    src = CachedSource(ArraySource(X, 32, name="run 'r0', layer 'fc1', checkpoint 10"))
    with pytest.raises(ActstoreError, match="layer 'fc1', checkpoint 10.*sample row 57"):
        ridge_raw(src, T, stratified_folds(100, 3), ALPHAS)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(12, 80),
    d=st.integers(1, 100),
    dtype=st.sampled_from([np.float32, np.float64]),
    block=st.integers(1, 64),
    seed=st.integers(0, 1000),
)
def test_random_shapes_match_sklearn(n, d, dtype, block, seed):
    """n < d and n > d, float32 and float64 inputs: held-out predictions equal sklearn's."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, 3, n)
    y[:6] = [0, 0, 1, 1, 2, 2]
    T = encode_targets({"y": y, "z": rng.standard_normal(n)})
    folds = stratified_folds(n, 2, seed=seed)
    X64 = X.astype(np.float64)
    alphas = [0.01, 1.0, 100.0]
    for form in ("primal", "dual", "lgo"):
        s = ridge_raw(ArraySource(X, block), T, folds, alphas, form=form)
        for k, (train, test) in enumerate(folds.split()):
            for i, alpha in enumerate(alphas):
                ref = Ridge(alpha=alpha).fit(X64[train], T.Y[train])
                pred = ref.predict(X64[test])
                sse = np.sum((pred[:, -1] - T.Y[test, -1]) ** 2)
                sst = np.sum((T.Y[test, -1] - T.Y[test, -1].mean()) ** 2)
                assert s["r2"][k, i, 1] == pytest.approx(1 - sse / sst, rel=1e-6, abs=1e-8)
                acc = np.mean(np.argmax(pred[:, :3], axis=1) == T.codes[test, 0])
                assert abs(s["accuracy"][k, i, 0] - acc) <= 1.0 / len(test) + 1e-12


def test_backend_round_trip_helpers():
    X = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(to_numpy(move_to(X, "torch")), X)


@pytest.mark.gpu
def test_cuda_gives_the_numpy_numbers():
    X, labels = _data(300, 40, seed=9)
    T = encode_targets(labels)
    folds = stratified_folds(300, 5, seed=0)
    ref = ridge_raw(ArraySource(X, 64), T, folds, ALPHAS)
    for form in ("primal", "dual"):
        got = ridge_raw(CachedSource(ArraySource(X, 64), backend="cuda"), T, folds, ALPHAS,
                       form=form)
        np.testing.assert_allclose(got["r2"], ref["r2"], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_spd_helpers_equal_a_general_solve(backend):
    from actstore.core._backend import spd_solve, unit_minus_gram

    rng = np.random.default_rng(3)
    A = rng.standard_normal((40, 90)) * 0.05
    B = rng.standard_normal((40, 3))
    full = np.eye(40) - 0.01 - A @ A.T
    M = unit_minus_gram(move_to(A, backend), 0.01)
    np.testing.assert_allclose(np.triu(to_numpy(M)), np.triu(full), rtol=1e-12, atol=1e-15)
    got = to_numpy(spd_solve(M, move_to(B, backend)))
    np.testing.assert_allclose(got, np.linalg.solve(full, B), rtol=1e-10)
    # not positive definite: the general solve takes over
    ind = np.diag([1.0, -2.0, 3.0])
    rhs = np.arange(3.0)[:, None]
    got = to_numpy(spd_solve(move_to(ind, backend), move_to(rhs, backend)))
    np.testing.assert_allclose(got, np.linalg.solve(ind, rhs), rtol=1e-12)


def test_pooled_statistics_equal_the_sum_of_the_groups():
    from actstore.probes import accumulate_groups

    rng = np.random.default_rng(5)
    X = rng.standard_normal((230, 17))
    y = rng.integers(0, 3, 230)
    T = encode_targets({"y": y})
    folds = stratified_folds(230, 5, 0, y)
    by_group = accumulate_groups(ArraySource(X, block_rows=40), T.Y, folds).moments()
    pooled = accumulate_groups(ArraySource(X, block_rows=40), T.Y, folds, pooled=True)
    full = pooled.moments()
    assert full.n == by_group.n == 230
    for a, b in [(full.C, by_group.C), (full.B, by_group.B), (full.mean_x, by_group.mean_x)]:
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    Xc = X - X.mean(axis=0)
    np.testing.assert_allclose(full.C, Xc.T @ Xc, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="no per-fold moments"):
        pooled.moments(exclude=0)


@pytest.mark.parametrize("m, rank", [(2, 2), (7, 7), (40, 12), (300, 300)])
def test_shifted_system_tridiagonal_equals_eigen(m, rank):
    """Every shift's solution from the tridiagonal reduction equals the eigendecomposition's
    and a direct solve, also for a rank-deficient matrix with small shifts."""
    from actstore.core._shifted import _Eigen, shifted_system

    rng = np.random.default_rng(m)
    F = rng.standard_normal((m, rank)) * np.logspace(0, 3, rank)
    M = F @ F.T
    B = rng.standard_normal((m, 5))
    alphas = [1e-5, 1e-2, 1.0, 1e4]
    system = shifted_system(M)
    assert type(system).__name__ == "_Tridiagonal"
    got = system.solve(B, alphas)
    assert got.shape == (4, m, 5)
    ref = _Eigen(M).solve(B, alphas)
    norm = np.linalg.norm(M, 2)
    for i, a in enumerate(alphas):
        # backward error at rounding level, also where the system is ill-conditioned ...
        resid = (M + a * np.eye(m)) @ got[i] - B
        assert np.linalg.norm(resid) / ((norm + a) * np.linalg.norm(got[i])) < 1e-13
        if np.linalg.cond(M + a * np.eye(m)) < 1e6:  # ... and the same solution where not
            assert _rel(got[i], np.linalg.solve(M + a * np.eye(m), B)) < 1e-9
            assert _rel(got[i], ref[i]) < 1e-9


@pytest.mark.parametrize("d", [1, 7, 300, 513])
def test_group_grams_equal_products_and_are_exactly_symmetric(d):
    """Each fold group's Gram (accumulated in one triangle by BLAS syrk, then mirrored)
    equals the product of its centred rows and is exactly symmetric."""
    rng = np.random.default_rng(d)
    X = rng.standard_normal((650, d)).astype(np.float32) + 3.0
    labels = {"a": rng.integers(0, 3, 650)}
    T = encode_targets(labels)
    folds = stratified_folds(650, 5, seed=1, stratify=labels)
    stats = accumulate_groups(ArraySource(X, block_rows=97), T.Y, folds)
    Xc = X.astype(np.float64) - stats.shift_x
    group = folds.group_of()
    for g in range(folds.n_groups):
        rows = Xc[group == g]
        C = stats.xtx[g]
        assert np.array_equal(C, C.T)
        assert _rel(C, rows.T @ rows) < 1e-12


def test_tridiagonal_fallback_solves_through_the_eigenvectors_of_t():
    """Where a shifted tridiagonal system is not positive definite to working precision,
    the solve goes through T's eigendecomposition; it gives the same solution."""
    from actstore.core._shifted import shifted_system

    rng = np.random.default_rng(3)
    F = rng.standard_normal((30, 30))
    M = F @ F.T
    B = rng.standard_normal((30, 4))
    system = shifted_system(M)
    QB = system._apply_q(B, b"T")
    got = system._apply_q(system._eigen_solve(QB, 0.5), b"N")
    assert _rel(got, np.linalg.solve(M + 0.5 * np.eye(30), B)) < 1e-10


def test_fold_factorisations_are_reused_for_more_penalties(monkeypatch):
    """The per-fold factorisations depend on the activations only: a second call on the same
    statistics (as the grid extension makes) reuses them, also for a subset of the targets,
    and gives what a fresh computation gives."""
    from actstore.decode import _ridge

    X, labels = _data(300, 40, seed=6)
    T = encode_targets(labels)
    folds = stratified_folds(300, 5, seed=0)
    stats = accumulate_groups(ArraySource(X, block_rows=64), T.Y, folds)
    calls = []
    real = _ridge.shifted_system
    monkeypatch.setattr(_ridge, "shifted_system", lambda M, *a: calls.append(1) or real(M, *a))
    _ridge.ridge_cv(ArraySource(X), T, folds, ALPHAS, form="primal", stats=stats)
    assert len(calls) == 5
    more = (1e5, 1e6)
    sub = encode_targets({"a": labels["a"]})
    cols = np.arange(T.features[0].start, T.features[0].stop)
    again = _ridge.ridge_cv(ArraySource(X), sub, folds, more, form="primal",
                            stats=stats.columns(cols))
    assert len(calls) == 5  # nothing factorised again
    fresh = _ridge.ridge_cv(ArraySource(X), sub, folds, more, form="primal")
    assert len(calls) == 10
    for key in ("accuracy", "balanced_accuracy"):
        np.testing.assert_array_equal(again[key], fresh[key])
