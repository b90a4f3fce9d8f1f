"""Alignment routines (streamed moments, unit codes, mutual information, LASSO, spectral clusters)
against references.

Each test computes its expectation independently (scikit-learn, scipy, or plain numpy written
out) and compares; the hypothesis tests draw small random shapes.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from references import SMALL, TINY, one_blas_thread, seeds  # noqa: F401 (autouse fixture)
from sklearn.cluster import SpectralClustering
from sklearn.linear_model import Lasso, LinearRegression
from sklearn.metrics import adjusted_rand_score, mutual_info_score
from sklearn.preprocessing import StandardScaler

from actstore.core._moments import PairMoments
from actstore.probes import (
    bin_units,
    correlations_from_moments,
    lasso_gram,
    mutual_information,
    sparse_prediction,
    spectral_clusters,
)

# -- alignment ---------------------------------------------------------------------------------


@SMALL
@given(seed=seeds, n=st.integers(3, 60), da=st.integers(1, 5), db=st.integers(1, 5),
       block=st.integers(1, 20), offset=st.sampled_from([0.0, 1e3, 1e6]))
def test_streamed_moments_equal_numpy(seed, n, da, db, block, offset):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, da)) * rng.uniform(0.1, 10, da) + offset
    B = A[:, :1] @ rng.standard_normal((1, db)) + rng.standard_normal((n, db))
    m = PairMoments.empty(A[:block].mean(axis=0), B[:block].mean(axis=0))
    for s in range(0, n, block):
        m.update(A[s:s + block], B[s:s + block])
    c = correlations_from_moments(m)
    full = np.corrcoef(np.hstack([A, B]).T)
    np.testing.assert_allclose(c.between, full[:da, da:], atol=1e-8)
    np.testing.assert_allclose(c.within_a, full[:da, :da], atol=1e-8)
    np.testing.assert_allclose(c.std_a, A.std(axis=0), rtol=1e-8)
    # moments about an arbitrary centre
    a, b = rng.standard_normal(da) + offset, rng.standard_normal(db)
    _, cxy, cyy = m.cov(a, b)
    np.testing.assert_allclose(cxy, (A - a).T @ (B - b) / n, rtol=1e-7,
                               atol=1e-9 * max(1.0, offset))
    np.testing.assert_allclose(cyy, (B - b).T @ (B - b) / n, rtol=1e-9, atol=1e-10)


def _ref_codes(x, bins, zero_tol=1e-6):
    """Codes from ranks: value of rank r among the m non-zeros lies above the quantile edge at
    position (m - 1) j / (bins - 1) iff that position is <= r. Returns (lowest, highest)
    admissible code: positions that are integers up to round-off may go either way."""
    zero = np.abs(x) <= zero_tol * np.abs(x).max(initial=0.0)
    lo = np.zeros(x.size, dtype=int)
    hi = np.zeros(x.size, dtype=int)
    m = int((~zero).sum())
    if m == 0:
        return lo, hi
    r = scipy.stats.rankdata(x[~zero], method="ordinal") - 1
    pos = (m - 1) * np.arange(1, bins - 1) / (bins - 1)
    sure = pos[None, :] <= r[:, None] - 1e-9
    maybe = pos[None, :] <= r[:, None] + 1e-9
    lo[~zero] = 1 + sure.sum(axis=1)
    hi[~zero] = 1 + maybe.sum(axis=1)
    return lo, hi


@SMALL
@given(seed=seeds, n=st.integers(5, 80), d=st.integers(1, 4), bins=st.integers(3, 11),
       dead=st.floats(0.0, 0.6))
def test_bin_units_are_rank_quantile_codes(seed, n, d, bins, dead):
    rng = np.random.default_rng(seed)
    A = rng.uniform(0.1, 5.0, (n, d)) * np.where(rng.random((n, d)) < dead, 0.0, 1.0)
    A[:, 0] = -A[:, 0]  # negative values are binned by value, zeros by magnitude
    codes = bin_units(A, bins=bins)
    assert codes.min() >= 0 and codes.max() <= bins - 1
    for j in range(d):
        lo, hi = _ref_codes(A[:, j], bins)
        assert ((codes[:, j] >= lo) & (codes[:, j] <= hi)).all(), j
    # a strictly increasing map that keeps zeros and signs changes no code
    np.testing.assert_array_equal(bin_units(A + A**3, bins=bins), codes)


@SMALL
@given(seed=seeds, n=st.integers(10, 80), da=st.integers(1, 4), db=st.integers(1, 4),
       bins=st.integers(3, 8), block=st.integers(1, 5))
def test_mutual_information_equals_sklearn_and_its_identities(seed, n, da, db, bins, block):
    rng = np.random.default_rng(seed)
    A = np.maximum(rng.standard_normal((n, da)), 0)
    B = np.maximum(A[:, :1] @ rng.standard_normal((1, db)) + rng.standard_normal((n, db)), 0)
    mi = mutual_information(A, B, bins=bins, block=block)
    ca, cb = bin_units(A, bins), bin_units(B, bins)
    want = np.array([[mutual_info_score(ca[:, i], cb[:, j]) for j in range(db)]
                     for i in range(da)])
    np.testing.assert_allclose(mi, np.maximum(want, 0), atol=1e-12)
    np.testing.assert_allclose(mutual_information(B, A, bins=bins), mi.T, atol=1e-12)
    # I(x; x) = H(x)
    self_mi = np.diag(mutual_information(A, A, bins=bins))
    ent = [scipy.stats.entropy(np.bincount(ca[:, i])) for i in range(da)]
    np.testing.assert_allclose(self_mi, ent, atol=1e-12)


@SMALL
@given(seed=seeds, n=st.integers(20, 60), dx=st.integers(1, 6), dy=st.integers(1, 3),
       alpha=st.floats(1e-3, 0.5))
def test_lasso_gram_equals_sklearn_lasso(seed, n, dx, dy, alpha):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) + 0.5 * rng.standard_normal((n, 1))
    Y = X @ (rng.standard_normal((dx, dy)) * (rng.random((dx, dy)) < 0.5))
    Y += 0.3 * rng.standard_normal((n, dy))
    G, C, vyy = X.T @ X / n, X.T @ Y / n, (Y**2).mean(axis=0)
    W, ok = lasso_gram(G, C, alpha, tol=1e-13, vyy=vyy, max_iter=100_000)
    assert ok
    ref = np.stack([Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=200_000)
                    .fit(X, Y[:, j]).coef_ for j in range(dy)], axis=1)

    def objective(w):
        return 0.5 * ((Y - X @ w) ** 2).mean(axis=0) + alpha * np.abs(w).sum(axis=0)

    np.testing.assert_allclose(objective(W), objective(ref), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(W, ref, atol=1e-5)


@TINY
@given(seed=seeds, n=st.integers(40, 90), dx=st.integers(1, 6), dy=st.integers(1, 3))
def test_sparse_prediction_equals_sklearn_lasso_on_standardised_units(seed, n, dx, dy):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, dx)) * rng.uniform(0.5, 5, dx) + rng.uniform(-10, 10, dx)
    B = A @ rng.standard_normal((dx, dy)) + rng.standard_normal((n, dy))
    A = np.hstack([A, np.full((n, 1), 7.0)])  # a dead unit: no weight, left out
    test = rng.random(n) < 0.25
    test[:2] = [True, False]
    tr, te = PairMoments.empty(A[0], B[0]), PairMoments.empty(A[0], B[0])
    tr.update(A[~test], B[~test])
    te.update(A[test], B[test])
    alphas = (0.0, 0.3, 0.01)
    path = sparse_prediction(tr, te, alphas, tol=1e-12)
    assert path.converged.all()
    assert path.constant_x.tolist() == [False] * dx + [True] and not path.constant_y.any()
    np.testing.assert_array_equal(path.coef[:, dx, :], 0.0)
    A = A[:, :dx]
    sx, sy = StandardScaler().fit(A[~test]), StandardScaler().fit(B[~test])
    Xtr, Ytr = sx.transform(A[~test]), sy.transform(B[~test])
    Xte, Yte = sx.transform(A[test]), sy.transform(B[test])
    for k, a in enumerate(alphas):
        if a == 0:
            ref = LinearRegression(fit_intercept=False).fit(Xtr, Ytr).coef_.T
        else:
            ref = np.stack([Lasso(alpha=a, fit_intercept=False, tol=1e-14, max_iter=200_000)
                            .fit(Xtr, Ytr[:, j]).coef_ for j in range(dy)], axis=1)
        W = path.coef[k, :dx]
        np.testing.assert_allclose(W, ref, atol=1e-5)
        np.testing.assert_allclose(path.test_loss[k], ((Yte - Xte @ W) ** 2).mean(0),
                                   rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(path.train_loss[k], ((Ytr - Xtr @ W) ** 2).mean(0),
                                   rtol=1e-8, atol=1e-10)


def _planted(rng, sizes, within):
    N = sum(sizes)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    A = np.where(truth[:, None] == truth[None, :], within, 0.0)
    A = A + 0.05 * rng.uniform(size=(N, N))
    A = (A + A.T) / 2
    np.fill_diagonal(A, 1.0)
    return A, truth


@TINY
@given(seed=seeds, sizes=st.lists(st.integers(3, 8), min_size=2, max_size=4),
       within=st.floats(0.5, 0.9))
def test_spectral_clusters_equal_sklearn_and_follow_a_relabelling(seed, sizes, within):
    rng = np.random.default_rng(seed)
    A, truth = _planted(rng, sizes, within)
    k = len(sizes)
    ours = spectral_clusters(A, k, seed=0)
    ref = SpectralClustering(k, affinity="precomputed", random_state=0).fit(A).labels_
    assert adjusted_rand_score(truth, ours) == 1.0
    assert adjusted_rand_score(ref, ours) == 1.0
    perm = rng.permutation(len(A))
    again = spectral_clusters(A[np.ix_(perm, perm)], k, seed=1)
    assert adjusted_rand_score(ours[perm], again) == 1.0
    # a unit without any affinity is left out
    B = A.copy()
    B[0, :] = B[:, 0] = 0.0
    assert spectral_clusters(B, k)[0] == -1
