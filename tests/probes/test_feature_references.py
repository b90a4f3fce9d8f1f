"""Feature measures (variance explained, NMF codes, importance, complexity) against references.

Each test computes its expectation independently (scikit-learn, scipy, or plain numpy written
out) and compares; the hypothesis tests draw small random shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from hypothesis import assume, given
from hypothesis import strategies as st
from references import SMALL, TINY, one_blas_thread, seeds  # noqa: F401 (autouse fixture)
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from actstore.probes import (
    ArraySource,
    complexity_score,
    decodable_step,
    nmf_transform,
    predefined_folds,
    recover_linear_head,
    time_to_decode,
    variance_explained,
)


@SMALL
@given(seed=seeds, n=st.integers(12, 40), d=st.integers(1, 8), c=st.integers(2, 4),
       K=st.integers(1, 3))
def test_variance_explained_equals_sklearn_on_random_folds(seed, n, d, c, K):
    """Unbalanced folds, always-train rows, classes missing from a training set."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, c, n)
    x = rng.standard_normal(n)
    X = rng.standard_normal((c, d))[lab] + np.outer(x, rng.standard_normal(d))
    X += rng.standard_normal((n, d)) + rng.uniform(-10, 10, d)
    tf = rng.integers(-1, K, n)  # unbalanced folds; some rows train every fold
    tf[: 2 * K + 2] = [*np.repeat(np.arange(K), 2), -1, -1]
    folds = predefined_folds(rng.permutation(tf))
    res = variance_explained(ArraySource(X, block_rows=5), {"lab": lab, "x": x}, folds)
    for k, (tr, te) in enumerate(folds.split()):
        for j, F in enumerate([np.eye(c)[lab], x[:, None]]):
            fit = LinearRegression().fit(F[tr], X[tr])
            want = r2_score(X[te], fit.predict(F[te]), multioutput="variance_weighted")
            assert res["r2_folds"][k, j] == pytest.approx(want, rel=1e-8, abs=1e-9)
    np.testing.assert_allclose(res["r2"], res["r2_folds"].mean(axis=0))


# -- dictionary features, importance, complexity -----------------------------------------------


@SMALL
@given(seed=seeds, m=st.integers(1, 12), k=st.integers(1, 5), extra=st.integers(0, 6))
def test_nmf_transform_equals_nnls(seed, m, k, extra):
    rng = np.random.default_rng(seed)
    d = k + extra + 1
    D = np.abs(rng.standard_normal((k, d))) + 2.0 * np.eye(k, d)  # well conditioned
    A = np.maximum(np.abs(rng.standard_normal((m, k))) @ D
                   + rng.standard_normal((m, d)), 0.0)
    Z = nmf_transform(A, D, sweeps=20_000, tol=1e-14)
    ref = np.stack([scipy.optimize.nnls(D.T, a)[0] for a in A])
    assert (Z >= 0).all()
    obj = np.linalg.norm(A - Z @ D) ** 2
    want = np.linalg.norm(A - ref @ D) ** 2
    assert obj <= want * (1 + 1e-9) + 1e-12
    np.testing.assert_allclose(Z, ref, atol=1e-6 * max(1.0, np.abs(ref).max()))


@SMALL
@given(seed=seeds, n=st.integers(8, 60), d=st.integers(1, 6), c=st.integers(1, 4),
       noise=st.sampled_from([0.0, 0.5]), dead=st.booleans())
def test_recover_linear_head_equals_sklearn_linear_regression(seed, n, d, c, noise, dead):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((n, d)) + rng.uniform(-3, 3, d)
    if dead:
        H[:, 0] = 1.5  # a constant unit: the minimum-norm solution gives it no weight
    assume(np.linalg.matrix_rank(H - H.mean(0)) == d - int(dead))
    L = H @ rng.standard_normal((c, d)).T + rng.standard_normal(c)
    L += noise * rng.standard_normal((n, c))
    head = recover_linear_head(H, L)
    ref = LinearRegression().fit(H, L)
    np.testing.assert_allclose(head.W, ref.coef_, atol=1e-8)
    np.testing.assert_allclose(head.b, ref.intercept_, atol=1e-8)
    assert head.rank == d - int(dead)
    spread = np.linalg.norm(L - L.mean(0))
    resid = np.linalg.norm(L - ref.predict(H)) / spread if spread > 0 else 0.0
    assert head.residual == pytest.approx(resid, rel=1e-6, abs=1e-12)
    assert head.is_exact() == (resid <= 1e-3)


vinfo_values = st.one_of(st.floats(-0.5, 1.5, allow_nan=False), st.just(float("nan")))


@SMALL
@given(rows=st.integers(1, 5), k=st.integers(1, 4), data=st.data(),
       threshold=st.floats(0.0, 1.0))
def test_complexity_time_to_decode_and_decodable_step_equal_plain_loops(rows, k, data, threshold):
    v = np.array(data.draw(st.lists(vinfo_values, min_size=rows * k, max_size=rows * k)))
    v = v.reshape(rows, k)
    steps = np.cumsum(data.draw(st.lists(st.integers(1, 100), min_size=rows, max_size=rows)))
    want_k, want_step = [], []
    for j in range(k):
        seen = [min(max(x, 0.0), 1.0) for x in v[:, j] if not np.isnan(x)]
        want_k.append(min(max(1.0 - sum(seen) / len(seen), 0.0), 1.0) if seen else np.nan)
        hits = [steps[i] for i in range(rows) if not np.isnan(v[i, j]) and v[i, j] >= threshold]
        want_step.append(hits[0] if hits else np.nan)
    np.testing.assert_allclose(complexity_score(v), want_k, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(time_to_decode(v), want_k, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(decodable_step(v, steps, threshold), want_step)
