"""Similarity metrics (CKA, RSA, Procrustes) and bootstrap intervals against references.

Each test computes its expectation independently (scipy, rsatoolbox, or plain numpy written out)
and compares; the hypothesis tests draw small random shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial
import scipy.spatial.distance as ssd
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from references import SMALL, TINY, one_blas_thread, seeds  # noqa: F401 (autouse fixture)

from actstore.probes import bootstrap_similarity, similarity_matrix

# -- similarity --------------------------------------------------------------------------------


def _ucentre(K):
    """U-centred kernel (Szekely & Rizzo 2014, eq. 3), written out."""
    n = len(K)
    K = K.copy()
    np.fill_diagonal(K, 0.0)
    U = (K - K.sum(0, keepdims=True) / (n - 2) - K.sum(1, keepdims=True) / (n - 2)
         + K.sum() / ((n - 1) * (n - 2)))
    np.fill_diagonal(U, 0.0)
    return U


def _ref_similarity(X, Y, metric, params):
    """The similarity written out; representations without a defined value (a median
    distance of 0, a vanishing U-centred kernel) are left to other tests."""
    debiased = params.get("debiased", False)
    if metric in ("cka", "rbf_cka"):
        kern = []
        for A in (X, Y):
            H = np.eye(len(A)) - 1.0 / len(A)
            if metric == "cka":
                K = A @ A.T
            else:
                D2 = ssd.cdist(A, A, "sqeuclidean")
                assume(np.median(D2) > 1e-6 * D2.max())
                K = np.exp(-D2 / (2 * params["t"] ** 2 * np.median(D2)))
            C = _ucentre(K) if debiased else H @ K @ H
            assume(np.sum(C * C) > 1e-10 * np.sum((H @ K @ H) ** 2))
            kern.append(C)
        Kx, Ky = kern
        return np.sum(Kx * Ky) / np.sqrt(np.sum(Kx * Kx) * np.sum(Ky * Ky))
    if metric == "procrustes":
        d = max(X.shape[1], Y.shape[1])
        Xp = np.pad(X, ((0, 0), (0, d - X.shape[1])))
        Yp = np.pad(Y, ((0, 0), (0, d - Y.shape[1])))
        _, _, disparity = scipy.spatial.procrustes(Xp, Yp)
        return np.sqrt(max(1.0 - disparity, 0.0))
    a, b = (ssd.pdist(A, params["rdm"]) for A in (X, Y))
    same = ssd.pdist(X, lambda u, v: float(np.array_equal(u, v))) == 1
    a[same] = 0.0  # identical patterns are exactly 0 apart (pdist may leave round-off)
    b[ssd.pdist(Y, lambda u, v: float(np.array_equal(u, v))) == 1] = 0.0
    assume(np.ptp(a) > 1e-9 and np.ptp(b) > 1e-9)
    if params["compare"] == "pearson":
        return scipy.stats.pearsonr(a, b)[0]
    if params["compare"] == "spearman":
        return scipy.stats.spearmanr(a, b)[0]
    return a @ b / np.sqrt((a @ a) * (b @ b))


SIM_CASES = [
    ("cka", {}), ("cka", {"debiased": True}),
    ("rbf_cka", {"t": 0.7}), ("rbf_cka", {"t": 1.5, "debiased": True}),
    ("procrustes", {}),
    *[("rsa", {"rdm": r, "compare": c})
      for r in ("correlation", "cosine", "euclidean", "sqeuclidean")
      for c in ("pearson", "spearman", "cosine")],
]


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n=st.integers(4, 14), dx=st.integers(1, 20), dy=st.integers(1, 20),
       case=st.sampled_from(SIM_CASES), dtype=st.sampled_from([np.float32, np.float64]),
       method=st.sampled_from(["auto", "gram", "feature"]), copies=st.integers(0, 3))
def test_similarity_matrix_equals_reference_on_random_shapes(seed, n, dx, dy, case, dtype,
                                                             method, copies):
    """Tiny n, one unit, more units than stimuli, repeated stimuli, float32 storage: the
    engine equals the written-out metric of the stored values, in float64."""
    metric, params = case
    if params.get("rdm") == "correlation":
        dx, dy = max(dx, 3), max(dy, 3)  # a one- or two-unit pattern correlates at +-1
    if metric != "cka":
        method = {"procrustes": "feature"}.get(metric, "gram")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * rng.uniform(0.1, 10) + rng.uniform(-5, 5, dx)
    Y = X[:, :1] @ rng.standard_normal((1, dy)) + rng.standard_normal((n, dy))
    src, dst = rng.integers(0, n, copies), rng.integers(0, n, copies)
    X[dst], Y[dst] = X[src], Y[src]  # repeated stimuli: tied distances for Spearman
    X, Y = X.astype(dtype), Y.astype(dtype)
    want = _ref_similarity(X.astype(np.float64), Y.astype(np.float64), metric, params)
    res = similarity_matrix([X, Y, X], metric, method=method,
                            max_memory=int(rng.integers(2_000, 10**6)), **params)
    assert not res.degenerate.any()
    V = res.values
    np.testing.assert_array_equal(V, V.T)
    np.testing.assert_allclose(np.diag(V), 1.0, atol=1e-12)
    assert V[0, 2] == pytest.approx(1.0, abs=1e-9)  # a copy of X is X
    assert V[0, 1] == pytest.approx(want, abs=1e-8)
    if metric != "rsa" and not params.get("debiased"):
        assert -1e-12 <= V[0, 1] <= 1 + 1e-12
    else:
        assert -1 - 1e-12 <= V[0, 1] <= 1 + 1e-12


def _lone_stimulus(rng, n, d):
    """A layer that only one stimulus activates: every other row is the same (zero)."""
    X = np.zeros((n, d))
    X[rng.integers(n)] = np.abs(rng.standard_normal(d)) * rng.uniform(0.1, 10)
    return X


@pytest.mark.parametrize("method", ["gram", "feature"])
def test_debiased_cka_flags_a_vanishing_u_centred_gram(method):
    """With all stimuli but one identical, K~_ij = a_i + a_j off the diagonal, which
    U-centring removes: the unbiased HSIC of the representation with itself is exactly 0,
    so (documented) it is degenerate and its similarities are 0."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        X, Y = _lone_stimulus(rng, n, int(rng.integers(2, 10))), _lone_stimulus(rng, n, 3)
        Kx = X @ X.T
        assert np.abs(_ucentre(Kx)).max() <= 1e-12 * np.abs(Kx).max()  # exactly 0 up to round-off
        res = similarity_matrix([X, Y], "cka", debiased=True, method=method)
        assert res.degenerate.all(), (n, res.values[0, 1])
        assert res.values[0, 1] == 0.0


def test_rbf_cka_flags_a_zero_median_distance():
    """More than half of the n^2 stimulus pairs identical: the median squared distance is 0,
    so sigma^2 = t^2 * median is 0 and (documented) the representation is degenerate."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(8, 40))
        k = max(1, n // 5)  # active stimuli; the other n - k are silent (all zero)
        X = np.zeros((n, int(rng.integers(2, 20))))
        X[:k] = np.abs(rng.standard_normal((k, X.shape[1])))
        assert np.median(ssd.cdist(X, X, "sqeuclidean")) == 0.0
        res = similarity_matrix([X, rng.standard_normal((n, 3))], "rbf_cka")
        assert res.degenerate[0], (n, k, res.values[0, 1])
        assert res.values[0, 1] == 0.0


@TINY
@given(seed=seeds, n=st.integers(5, 14), dx=st.integers(3, 12), dy=st.integers(3, 12))
def test_rsa_and_procrustes_equal_rsatoolbox(seed, n, dx, dy):
    import rsatoolbox

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx))
    Y = X[:, :2] @ rng.standard_normal((2, dy)) + rng.standard_normal((n, dy))
    data = [rsatoolbox.data.Dataset(A) for A in (X, Y)]
    for ours, theirs in [("correlation", "correlation"), ("sqeuclidean", "euclidean")]:
        rdms = rsatoolbox.rdm.calc_rdm(data, method=theirs)
        for cmp, tcmp in [("pearson", "corr"), ("spearman", "spearman"), ("cosine", "cosine")]:
            want = rsatoolbox.rdm.compare(rdms[0], rdms[1], method=tcmp)[0, 0]
            got = similarity_matrix([X, Y], "rsa", rdm=ours, compare=cmp).values[0, 1]
            assert got == pytest.approx(want, abs=1e-10), (ours, cmp)
    # Bures similarity of the centred kernels = the nuclear norm of Xn^T Yn (Procrustes)
    rdms = rsatoolbox.rdm.calc_rdm(data, method="euclidean")
    want = rsatoolbox.rdm.compare(rdms[0], rdms[1], method="bures")[0, 0]
    got = similarity_matrix([X, Y], "procrustes").values[0, 1]
    assert got == pytest.approx(want, abs=1e-7)


@pytest.mark.parametrize("ci", [0.9, 0.5])
def test_bootstrap_interval_is_the_percentile_interval_of_its_replicates(ci):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((25, 3))
    reps = [base @ rng.standard_normal((3, d)) + rng.standard_normal((25, d)) for d in (2, 5, 4)]
    point, boot = bootstrap_similarity(reps, "cka", n_boot=30, ci=ci, seed=3,
                                       keep_samples=True)
    S = boot.samples
    assert S.shape == (30, 3, 3)
    tail = 100 * (1 - ci) / 2
    np.testing.assert_allclose(boot.low, np.percentile(S, tail, axis=0), rtol=1e-12)
    np.testing.assert_allclose(boot.high, np.percentile(S, 100 - tail, axis=0), rtol=1e-12)
    np.testing.assert_allclose(boot.std, np.std(S, axis=0, ddof=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(point.values, similarity_matrix(reps, "cka").values)
