"""Convergent-learning alignment: correlations, matching, MI, LASSO path, spectral clustering."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore import ActstoreError
from actstore.alignment import (
    align_pair,
    bin_units,
    bipartite_matching,
    correlations_from_moments,
    joint_clusters,
    lasso_gram,
    mutual_information,
    semi_matching,
    sparse_prediction,
    spectral_clusters,
)
from actstore.core._moments import PairMoments, moments_of


def _nets(seed=0, n=300, d=12, noise=0.3):
    """Net B = a permutation of net A's units, plus noise; post-ReLU with dead units."""
    rng = np.random.default_rng(seed)
    A = np.maximum(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + 0.2, 0)
    perm = rng.permutation(d)
    B = A[:, perm] * 1.5 + noise * rng.normal(size=(n, d))
    return A, B, perm


# -- correlations from streamed moments -------------------------------------------------------


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_streamed_correlations_match_corrcoef(block):
    A, B, _ = _nets()
    A = A + 1e6  # a large offset: sums are taken around a shift, not about zero
    c = correlations_from_moments(moments_of(A, B, block=block))
    full = np.corrcoef(np.hstack([A, B]).T)
    d = A.shape[1]
    np.testing.assert_allclose(c.between, full[:d, d:], atol=1e-9)
    np.testing.assert_allclose(c.within_a, full[:d, :d], atol=1e-9)
    np.testing.assert_allclose(c.within_b, full[d:, d:], atol=1e-9)
    np.testing.assert_allclose(c.mean_a, A.mean(0))
    np.testing.assert_allclose(c.std_b, B.std(0))


def test_moments_add_up_across_blocks():
    A, B, _ = _nets(seed=1)
    m1 = PairMoments.empty(A[:5].mean(0), B[:5].mean(0))
    m2 = PairMoments.empty(A[:5].mean(0), B[:5].mean(0))
    m1.update(A[:100], B[:100])
    m2.update(A[100:], B[100:])
    whole = moments_of(A, B)
    np.testing.assert_allclose(correlations_from_moments(m1 + m2).between,
                               correlations_from_moments(whole).between, atol=1e-12)
    with pytest.raises(ValueError, match="different shifts"):
        _ = m1 + whole


def test_constant_units_have_zero_correlation_and_are_reported():
    A, B, _ = _nets(seed=2)
    A[:, 3] = 0.0  # a dead ReLU
    B[:, 5] = 4.2
    c = correlations_from_moments(moments_of(A, B))
    assert np.isfinite(c.between).all() and np.isfinite(c.within_a).all()
    assert np.flatnonzero(c.constant_a).tolist() == [3]
    assert np.flatnonzero(c.constant_b).tolist() == [5]
    assert (c.between[3] == 0).all() and (c.between[:, 5] == 0).all()
    assert c.within_a[3, 3] == 0.0 and c.within_a[0, 0] == pytest.approx(1.0)
    res = align_pair(A, B, names=("a", "b"))
    s = res.summary()
    assert s["constant_a"] == 1 and s["constant_b"] == 1
    assert np.isfinite([v for v in s.values() if isinstance(v, float)]).all()


# -- matching ---------------------------------------------------------------------------------


def test_bipartite_recovers_a_permutation():
    A, B, perm = _nets(seed=3, noise=0.05)
    c = correlations_from_moments(moments_of(A, B))
    idx, val = bipartite_matching(c.between)
    assert (perm[idx] == np.arange(len(perm))).all()
    assert (val > 0.9).all()


def test_bipartite_equals_brute_force_on_small_matrices():
    rng = np.random.default_rng(4)
    for _ in range(5):
        C = rng.uniform(-1, 1, size=(5, 5))
        best = max(C[np.arange(5), list(p)].sum() for p in itertools.permutations(range(5)))
        assert bipartite_matching(C)[1].sum() == pytest.approx(best, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), da=st.integers(1, 12), db=st.integers(1, 12))
def test_matching_optimality(seed, da, db):
    rng = np.random.default_rng(seed)
    C = rng.uniform(-1, 1, size=(da, db))
    idx, val = bipartite_matching(C)
    matched = idx >= 0
    assert matched.sum() == min(da, db)
    assert len(set(idx[matched].tolist())) == matched.sum()  # one-to-one
    total = np.nansum(val)
    for _ in range(20):  # any random one-to-one assignment does no better
        if da <= db:
            cols = rng.permutation(db)[:da]
            assert total >= C[np.arange(da), cols].sum() - 1e-12
        else:
            rows = rng.permutation(da)[:db]
            assert total >= C[rows, np.arange(db)].sum() - 1e-12
    _, s_val = semi_matching(C)
    assert (s_val[matched] >= val[matched] - 1e-15).all()  # semi-matching >= matching per unit
    np.testing.assert_array_equal(s_val, C.max(axis=1))


# -- mutual information -----------------------------------------------------------------------


def test_bins_put_relu_zeros_first_and_split_the_rest_equally():
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(size=(9000, 1)), 0)
    codes = bin_units(x, bins=10)[:, 0]
    assert ((codes == 0) == (x[:, 0] == 0)).all()
    counts = np.bincount(codes[codes > 0], minlength=10)[1:]
    assert counts.min() >= 0.95 * counts.mean() and counts.max() <= 1.05 * counts.mean()
    with pytest.raises(ActstoreError, match="at least 3 bins"):
        bin_units(x, bins=2)


def test_mutual_information_matches_sklearn():
    from sklearn import metrics

    A, B, _ = _nets(seed=6, n=400, d=5)
    A[:, 0] = 0.0
    mi = mutual_information(A, B, block=2)
    ca, cb = bin_units(A), bin_units(B)
    for i in range(5):
        for j in range(5):
            assert mi[i, j] == pytest.approx(metrics.mutual_info_score(ca[:, i], cb[:, j]),
                                             abs=1e-12)
    assert (mi[0] == 0).all()


# -- sparse prediction (LASSO path) -----------------------------------------------------------


def _standardised(train, test):
    mu, sd = train.mean(0), train.std(0)
    return (train - mu) / sd, (test - mu) / sd


def test_lasso_path_matches_sklearn_per_target():
    from sklearn import linear_model as lm

    rng = np.random.default_rng(7)
    A, B, _ = _nets(seed=7, n=240, d=8)
    A = A + 0.05 * rng.normal(size=A.shape)
    test = np.zeros(240, dtype=bool)
    test[rng.permutation(240)[:60]] = True
    sh_a, sh_b = A.mean(0), B.mean(0)
    tr, te = PairMoments.empty(sh_a, sh_b), PairMoments.empty(sh_a, sh_b)
    tr.update(A[~test], B[~test])
    te.update(A[test], B[test])
    alphas = (0.0, 1e-3, 1e-2, 1e-1)
    path = sparse_prediction(tr, te, alphas, tol=1e-12)
    assert path.converged.all()
    Xtr, Xte = _standardised(A[~test], A[test])
    Ytr, Yte = _standardised(B[~test], B[test])
    for k, a in enumerate(alphas):
        if a == 0:
            ref = np.linalg.lstsq(Xtr, Ytr, rcond=None)[0]
        else:
            ref = np.stack([
                lm.Lasso(alpha=a, fit_intercept=False, tol=1e-14, max_iter=100_000)
                .fit(Xtr, Ytr[:, j]).coef_ for j in range(8)
            ], axis=1)
        np.testing.assert_allclose(path.coef[k], ref, atol=1e-6)
        np.testing.assert_allclose(path.test_loss[k], ((Yte - Xte @ path.coef[k]) ** 2).mean(0),
                                   atol=1e-10)
        np.testing.assert_allclose(path.train_loss[k],
                                   ((Ytr - Xtr @ path.coef[k]) ** 2).mean(0), atol=1e-10)
        np.testing.assert_array_equal(path.nonzero[k], (path.coef[k] != 0).sum(0))
    assert (np.diff(path.nonzero.sum(1)) <= 0).all()  # sparser as the penalty grows


def test_lasso_gram_solves_all_targets_at_once():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(100, 6))
    Y = X @ rng.normal(size=(6, 4)) + 0.1 * rng.normal(size=(100, 4))
    G, C = X.T @ X / 100, X.T @ Y / 100
    W, ok = lasso_gram(G, C, 0.05, tol=1e-13)
    assert ok
    for j in range(4):
        w1, _ = lasso_gram(G, C[:, j : j + 1], 0.05, tol=1e-13)
        np.testing.assert_allclose(W[:, j], w1[:, 0], atol=1e-11)
    # KKT conditions of the LASSO at the solution
    grad = C - G @ W
    on = W != 0
    np.testing.assert_allclose(grad[on], 0.05 * np.sign(W[on]), atol=1e-9)
    assert (np.abs(grad[~on]) <= 0.05 + 1e-9).all()


def test_lasso_finds_one_to_one_mappings():
    A, B, _ = _nets(seed=9, n=600, noise=0.05)
    res = align_pair(A, B, mutual_info=False, alphas=(1e-2,))
    nz = res.lasso.nonzero[0]
    assert np.median(nz) <= 3
    assert res.lasso.test_loss[0].mean() < 0.1


# -- spectral clustering ----------------------------------------------------------------------


def _planted(rng, sizes, within=0.8, noise=0.05):
    N = sum(sizes)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    A = np.where(truth[:, None] == truth[None, :], within, 0.0) + noise * rng.uniform(size=(N, N))
    A = (A + A.T) / 2
    np.fill_diagonal(A, 1.0)
    return A, truth


def test_spectral_clusters_match_sklearn_on_planted_blocks():
    from sklearn import cluster, metrics

    rng = np.random.default_rng(10)
    A, truth = _planted(rng, [6, 9, 5, 8])
    ours = spectral_clusters(A, 4, seed=0)
    ref = cluster.SpectralClustering(4, affinity="precomputed", random_state=0).fit(A).labels_
    assert metrics.adjusted_rand_score(truth, ours) == 1.0
    assert metrics.adjusted_rand_score(ref, ours) == 1.0


def test_joint_clusters_find_shared_subspaces():
    A, B, _ = _nets(seed=11, n=500, d=10, noise=0.1)
    A[:, 0] = 0.0
    ca = correlations_from_moments(moments_of(A, B))
    labels, summary = joint_clusters([ca.within_a, ca.within_b], {(0, 1): ca.between},
                                     [ca.constant_a, ca.constant_b], n_clusters=5)
    assert labels[0] == -1  # the dead unit is left out
    assert summary["mixed"] >= 1
    assert 0 < summary["units_in_mixed"] <= 1
    # unrelated nets: clusters rarely mix
    rng = np.random.default_rng(12)
    X = rng.normal(size=(500, 10)) @ np.kron(np.eye(2), np.ones((5, 5)))
    Y = rng.normal(size=(500, 10)) @ np.kron(np.eye(2), np.ones((5, 5)))
    cu = correlations_from_moments(moments_of(X + 0.1 * rng.normal(size=X.shape),
                                              Y + 0.1 * rng.normal(size=Y.shape)))
    _, s2 = joint_clusters([cu.within_a, cu.within_b], {(0, 1): cu.between},
                           [cu.constant_a, cu.constant_b], n_clusters=4)
    assert s2["mixed"] == 0


def test_align_pair_rejects_mismatched_samples():
    with pytest.raises(ActstoreError, match="'a'.*'b'"):
        align_pair(np.ones((5, 2)), np.ones((6, 2)), names=("a", "b"))


def test_admm_matches_coordinate_descent_on_correlated_units():
    from actstore.alignment._lasso import duality_gap, lasso_admm

    rng = np.random.default_rng(5)
    n, d = 400, 12
    X = rng.standard_normal((n, 3)) @ rng.standard_normal((3, d)) + 0.05 * rng.standard_normal(
        (n, d))
    X = (X - X.mean(0)) / X.std(0)
    Y = X[:, :4] @ rng.standard_normal((4, 6)) + 0.2 * rng.standard_normal((n, 6))
    Y = (Y - Y.mean(0)) / Y.std(0)
    G, C, vyy = X.T @ X / n, X.T @ Y / n, (Y**2).mean(0)
    for alpha in (0.05, 0.005):
        Z, _, ok = lasso_admm(G, C, vyy, alpha, tol=1e-10)
        W, ok_cd = lasso_gram(G, C, alpha, tol=1e-10, vyy=vyy)
        assert ok and ok_cd
        assert (duality_gap(G, C, vyy, Z, G @ Z, alpha) <= 1e-10 * vyy).all()

        def objective(w, a=alpha):
            return 0.5 * ((Y - X @ w) ** 2).mean(0) + a * np.abs(w).sum(0)

        np.testing.assert_allclose(objective(Z), objective(W), rtol=1e-8)
        np.testing.assert_allclose(Z, W, atol=1e-4)
