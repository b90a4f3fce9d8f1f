"""Reference and property checks of numerical routines that other test files leave open.

Each test computes its expectation independently (scikit-learn, scipy, rsatoolbox, himalaya,
or plain numpy written out) and compares; the hypothesis tests draw small random shapes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.spatial
import scipy.spatial.distance as ssd
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax
from sklearn.cluster import SpectralClustering
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import Lasso, LinearRegression
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    balanced_accuracy_score,
    log_loss,
    mutual_info_score,
    r2_score,
)
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from actstore._errors import ActstoreError
from actstore.core._moments import PairMoments
from actstore.decode._logistic import whiten
from actstore.decode._metrics import (
    HeldOutScores,
    accuracy,
    balanced_accuracy,
    r2,
    vinfo_gaussian,
)
from actstore.probes import (
    ArraySource,
    bin_units,
    bootstrap_similarity,
    code_targets,
    complexity_score,
    correlations_from_moments,
    decodable_step,
    encode_targets,
    lasso_gram,
    logistic_cv,
    mutual_information,
    nmf_transform,
    predefined_folds,
    recover_linear_head,
    ridge_cv,
    select_penalty,
    similarity_matrix,
    sparse_prediction,
    spectral_clusters,
    stratified_folds,
    time_to_decode,
    variance_explained,
)

SMALL = settings(max_examples=15, deadline=None)
TINY = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**31 - 1)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


# -- held-out metrics --------------------------------------------------------------------------


@SMALL
@given(seed=seeds, n=st.integers(4, 40), c=st.integers(2, 5), q=st.integers(1, 3))
def test_metric_functions_equal_sklearn(seed, n, c, q):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    assume(len(np.unique(y)) > 1)
    pred = rng.integers(0, c + 1, n)  # may name a class absent from y
    assert accuracy(y, pred) == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a predicted class absent from y_true
        want = balanced_accuracy_score(y, pred)
    assert balanced_accuracy(y, pred) == pytest.approx(want, abs=1e-12)
    Y = rng.standard_normal((n, q)) * rng.uniform(0.1, 10, q)
    Yhat = Y + rng.standard_normal((n, q)) * rng.uniform(0.1, 3)
    want = r2_score(Y, Yhat, multioutput="variance_weighted")
    assert r2(Y, Yhat) == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert r2(Y[:, 0], Yhat[:, 0]) == pytest.approx(r2_score(Y[:, 0], Yhat[:, 0]), rel=1e-10,
                                                    abs=1e-12)
    assert vinfo_gaussian(Y, Yhat) == pytest.approx(max(0.0, want), rel=1e-10, abs=1e-12)
    assert vinfo_gaussian(Y, -Yhat) >= 0.0


def _random_folds(rng, n, K):
    """Unbalanced random folds of at least 2 rows each; some rows train every fold."""
    tf = rng.integers(-1, K, n)
    tf[: 2 * K + 2] = [*np.repeat(np.arange(K), 2), -1, -1]
    return predefined_folds(rng.permutation(tf))


def _blocks(rng, rows):
    """Rows in a random order, cut into blocks of random sizes."""
    rows = rng.permutation(rows)
    cuts = np.sort(rng.choice(np.arange(1, rows.size), size=min(2, rows.size - 1),
                              replace=False)) if rows.size > 1 else []
    return [b for b in np.split(rows, cuts) if b.size]


@SMALL
@given(seed=seeds, n=st.integers(12, 40), c=st.integers(2, 4), K=st.integers(2, 3),
       P=st.integers(1, 3))
def test_held_out_scores_equal_sklearn_fold_by_fold(seed, n, c, K, P):
    """Accumulated block by block, the scores equal scikit-learn on each fold's rows."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)  # every class at least 3 times
    z = rng.standard_normal(n)
    T = encode_targets({"y": y, "z": z})
    folds = _random_folds(rng, n, K)
    for k in range(K):  # the prior needs every class in every training set
        assume(len(np.unique(y[folds.train_mask(k)])) == c)
    q = T.Y.shape[1]
    Yhat = rng.standard_normal((n, P, q))
    LP = Yhat.copy()
    LP[:, :, :c] = log_softmax(Yhat[:, :, :c], axis=2)
    dec, prob = HeldOutScores(T, folds, P), HeldOutScores(T, folds, P)
    for k in range(K):
        for rows in _blocks(rng, np.flatnonzero(folds.test_mask(k))):
            dec.update(k, rows, Yhat[rows])
            prob.update(k, rows, LP[rows], log_proba=True)
    d, p = dec.finalize(), prob.finalize()
    for k, (tr, te) in enumerate(folds.split()):
        # chance: the majority-class rate of the decoded samples (1/k when balanced)
        dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((n, 1)), y)
        assert d["chance"][k, 0] == pytest.approx(dummy.score(np.zeros((n, 1)), y))
        assert np.isnan(d["chance"][k, 1])
        prior = np.bincount(y[tr], minlength=c) / tr.size
        h_prior = log_loss(y[te], np.tile(prior, (te.size, 1)), labels=np.arange(c))
        for i in range(P):
            pred = np.argmax(Yhat[te, i, :c], axis=1)
            assert d["accuracy"][k, i, 0] == pytest.approx(accuracy_score(y[te], pred))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                bal = balanced_accuracy_score(y[te], pred)
            assert d["balanced_accuracy"][k, i, 0] == pytest.approx(bal, abs=1e-12)
            r2_z = r2_score(T.Y[te, c], Yhat[te, i, c])
            present = np.unique(y[te]).size
            if present == c:
                r2_cat = r2_score(T.Y[te, :c], Yhat[te, i, :c], multioutput="variance_weighted")
            elif present > 1:
                # A class missing from the held-out rows leaves its column constant there.
                # scikit-learn then drops that column's errors (force_finite); the documented
                # pooled 1 - SSE / SST over all of the feature's columns keeps them.
                Yt, Yp = T.Y[te, :c], Yhat[te, i, :c]
                r2_cat = 1 - np.sum((Yt - Yp) ** 2) / np.sum((Yt - Yt.mean(axis=0)) ** 2)
            if present > 1:
                np.testing.assert_allclose(d["r2"][k, i, 0], r2_cat, rtol=1e-9, atol=1e-12)
                assert d["vinfo"][k, i, 0] == pytest.approx(max(r2_cat, 0), abs=1e-12)
            else:  # one held-out class: no variance, R^2 does not apply
                assert np.isnan(d["r2"][k, i, 0]) and np.isnan(d["vinfo"][k, i, 0])
            assert d["r2"][k, i, 1] == pytest.approx(r2_z, rel=1e-9, abs=1e-12)
            assert d["vinfo"][k, i, 1] == pytest.approx(max(r2_z, 0), rel=1e-9, abs=1e-12)
            assert np.isnan(d["accuracy"][k, i, 1]) and np.isnan(d["balanced_accuracy"][k, i, 1])
            ce = log_loss(y[te], np.exp(LP[te, i, :c]), labels=np.arange(c))
            assert p["cross_entropy"][k, i, 0] == pytest.approx(ce, rel=1e-9)
            # per fold unclipped: select_penalty clips the mean over folds
            assert p["vinfo_bits"][k, i, 0] == pytest.approx((h_prior - ce) / np.log(2),
                                                             rel=1e-9, abs=1e-12)
            assert p["accuracy"][k, i, 0] == pytest.approx(d["accuracy"][k, i, 0])
            assert np.isnan(p["cross_entropy"][k, i, 1])


@SMALL
@given(seed=seeds, K=st.integers(1, 4), P=st.integers(1, 5),
       kinds=st.lists(st.sampled_from(["categorical", "continuous"]), min_size=1, max_size=3),
       shuffle=st.booleans())
def test_select_penalty_equals_a_plain_loop(seed, K, P, kinds, shuffle):
    rng = np.random.default_rng(seed)
    F = len(kinds)
    grid = lambda: rng.integers(0, 4, (K, P, F)) / 4.0  # noqa: E731 - coarse: many ties
    acc, r2s, bal = grid(), grid() - 0.5, grid()
    for j, kind in enumerate(kinds):
        if kind == "continuous":
            acc[:, :, j] = bal[:, :, j] = np.nan
    scores = {"accuracy": acc, "r2": r2s, "balanced_accuracy": bal,
              "chance": rng.random((K, F))}
    order = rng.permutation(P) if shuffle else None
    chosen, summary = select_penalty(scores, list(kinds), order)
    visit = list(range(P)) if order is None else order.tolist()
    for j, kind in enumerate(kinds):
        crit = [float(np.mean((acc if kind == "categorical" else r2s)[:, p, j]))
                for p in range(P)]
        best = max(crit[p] for p in visit)
        want = next(p for p in visit if crit[p] == best)  # ties: earliest = strongest
        assert chosen[j] == want
        np.testing.assert_array_equal(summary["score_path"][:, j], crit)
        for name in ("accuracy", "r2", "balanced_accuracy"):
            np.testing.assert_allclose(summary[name][j], np.mean(scores[name][:, want, j]))
        np.testing.assert_allclose(summary["accuracy_std"][j], np.std(acc[:, want, j]))
        np.testing.assert_allclose(summary["r2_std"][j], np.std(r2s[:, want, j]))
    np.testing.assert_allclose(summary["chance"], scores["chance"].mean(axis=0))


# -- decoding targets --------------------------------------------------------------------------


@SMALL
@given(seed=seeds, n=st.integers(3, 30), c=st.integers(1, 5),
       form=st.sampled_from(["int", "str", "bool"]))
def test_encode_targets_equals_sklearn_encoders(seed, n, c, form):
    rng = np.random.default_rng(seed)
    raw = rng.integers(-2, c - 2, n) if form != "bool" else rng.integers(0, 2, n) == 1
    lab = np.array([f"k{v}" for v in raw]) if form == "str" else raw
    x = rng.standard_normal(n) * 3 + 1
    assume(x.std() > 0)
    T = encode_targets({"lab": lab, "x": x})
    f_lab, f_x = T.features
    assert (f_lab.kind, f_x.kind) == ("categorical", "continuous")
    onehot = OneHotEncoder(sparse_output=False).fit(lab[:, None])
    np.testing.assert_array_equal(f_lab.classes, onehot.categories_[0])
    np.testing.assert_array_equal(T.Y[:, f_lab.start:f_lab.stop],
                                  2 * onehot.transform(lab[:, None]) - 1)
    np.testing.assert_array_equal(T.codes[:, 0], LabelEncoder().fit_transform(lab))
    np.testing.assert_array_equal(T.codes[:, 1], -1)
    np.testing.assert_allclose(T.Y[:, f_x.start], StandardScaler().fit_transform(x[:, None])[:, 0],
                               rtol=1e-12, atol=1e-12)
    # the argmax of a one-hot block gives the class back
    np.testing.assert_array_equal(f_lab.classes[np.argmax(T.Y[:, :f_lab.stop], axis=1)], lab)
    E = T.indicator()
    assert E.shape == (T.Y.shape[1], 2) and (E.sum(axis=1) == 1).all()


@SMALL
@given(seed=seeds, n=st.integers(3, 30), k=st.integers(1, 6))
def test_code_targets_equal_standard_scaler(seed, n, k):
    rng = np.random.default_rng(seed)
    Z = np.abs(rng.standard_normal((n, k))) * rng.uniform(0.01, 100, k)
    dead = rng.random(k) < 0.3
    Z[:, dead] = rng.uniform(0, 2) * dead[dead]  # constant columns (zero or not)
    targets, usable = code_targets(Z)
    np.testing.assert_array_equal(usable, ~dead)
    want = StandardScaler().fit_transform(Z)[:, ~dead]
    np.testing.assert_allclose(targets.Y, want, rtol=1e-10, atol=1e-10)
    assert [f.name for f in targets.features] == [f"atom{i}" for i in np.flatnonzero(~dead)]


# -- ridge and logistic decoders ---------------------------------------------------------------


@SMALL
@given(seed=seeds, n=st.integers(15, 50), d=st.integers(1, 40),
       form=st.sampled_from(["primal", "dual", "lgo"]))
def test_ridge_cv_r2_equals_himalaya_ridge(seed, n, d, form):
    from himalaya import ridge as himalaya

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + rng.uniform(-5, 5, d)
    z = X[:, 0] + rng.standard_normal(n)
    w = X @ rng.standard_normal(d) * 0.3 + rng.standard_normal(n)
    T = encode_targets({"z": z, "w": w})
    folds = _random_folds(rng, n, 3)
    alphas = [1e-2, 1.0, 1e2]
    s = ridge_cv(ArraySource(X, block_rows=7), T, folds, alphas, form=form, standardize=False)
    for k, (tr, te) in enumerate(folds.split()):
        for i, a in enumerate(alphas):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # n < d: a speed hint
                model = himalaya.Ridge(alpha=a, fit_intercept=True).fit(X[tr], T.Y[tr])
            pred = np.asarray(model.predict(X[te]))
            want = [r2_score(T.Y[te, j], pred[:, j]) for j in range(2)]
            np.testing.assert_allclose(s["r2"][k, i], want, rtol=1e-6, atol=1e-8)


def _rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@TINY
@given(seed=seeds, n=st.integers(24, 50), d=st.integers(2, 60))
def test_decoders_are_invariant_to_rotation_and_offset_of_the_units(seed, n, d):
    """An L2 penalty and an unpenalised intercept: X -> X Q + c changes no prediction of the
    decoders on raw units (z-scored units are invariant to scale and offset, not rotation)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 3)
    X = rng.standard_normal((n, d)) + np.eye(3, d)[y] * 1.5
    X2 = X @ _rotation(rng, d) + rng.uniform(-20, 20, d)
    T = encode_targets({"y": y, "z": X[:, 0] + rng.standard_normal(n)})
    folds = stratified_folds(n, 3, seed=1, stratify=y)
    a = ridge_cv(ArraySource(X), T, folds, [0.1, 10.0], standardize=False)
    b = ridge_cv(ArraySource(X2), T, folds, [0.1, 10.0], standardize=False)
    np.testing.assert_allclose(a["r2"], b["r2"], rtol=1e-7, atol=1e-9)
    Cs = [0.05, 1.0]
    la = logistic_cv(X, T, folds, Cs, tol=1e-10, max_iter=3000, standardize=False)
    lb = logistic_cv(X2, T, folds, Cs, tol=1e-10, max_iter=3000, standardize=False)
    assert la["converged"].all() and lb["converged"].all()
    np.testing.assert_allclose(la["cross_entropy"], lb["cross_entropy"], rtol=1e-6, atol=1e-9)


@SMALL
@given(seed=seeds, n=st.integers(3, 30), d=st.integers(1, 40), rank=st.integers(1, 40))
def test_whiten_gives_unit_variance_coordinates_of_the_centred_span(seed, n, d, rank):
    rng = np.random.default_rng(seed)
    r = min(rank, n - 1, d)
    X = rng.standard_normal((n, r)) @ rng.standard_normal((r, d)) + rng.uniform(-3, 3, d)
    Xc = X - X.mean(axis=0)
    s = scipy.linalg.eigvalsh(Xc.T @ Xc)[::-1]
    # directions below rtol = 1e-10 of the largest variance are dropped (documented)
    assume(not np.any((s > 1e-12 * s[0]) & (s < 1e-8 * s[0])))
    r = int(np.sum(s > 1e-10 * s[0]))
    Z, T, omega, mean = whiten(X)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12, atol=1e-12)
    assert Z.shape == (n, r) and omega.shape == (r,)
    np.testing.assert_allclose(Z.T @ Z / n, np.eye(r), atol=1e-8)
    np.testing.assert_allclose(Z @ (Z.T @ Xc) / n, Xc, atol=1e-6 * np.abs(Xc).max())
    np.testing.assert_allclose(np.sort(n / omega)[::-1], s[:r], rtol=1e-7)
    if T is not None:
        np.testing.assert_allclose(Xc @ T, Z, atol=1e-8)


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
    folds = _random_folds(rng, n, K)
    res = variance_explained(ArraySource(X, block_rows=5), {"lab": lab, "x": x}, folds)
    for k, (tr, te) in enumerate(folds.split()):
        for j, F in enumerate([np.eye(c)[lab], x[:, None]]):
            fit = LinearRegression().fit(F[tr], X[tr])
            want = r2_score(X[te], fit.predict(F[te]), multioutput="variance_weighted")
            assert res["r2_folds"][k, j] == pytest.approx(want, rel=1e-8, abs=1e-9)
    np.testing.assert_allclose(res["r2"], res["r2_folds"].mean(axis=0))


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



def test_r2_of_a_held_out_fold_with_one_class_is_nan():
    """A fold whose held-out rows are all of one class: R^2 (and V-information) do not apply
    there; the other fold keeps its value."""
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 1])
    T = encode_targets({"y": y})
    folds = predefined_folds(np.array([0, 0, 0, 1, -1, -1, 1, -1, -1, -1]))
    Yhat = np.random.default_rng(0).standard_normal((y.size, 2, 2))
    sc = HeldOutScores(T, folds, 2)
    for k in range(2):
        rows = np.flatnonzero(folds.test_mask(k))
        sc.update(k, rows, Yhat[rows])
    d = sc.finalize()
    assert np.isnan(d["r2"][0]).all() and np.isnan(d["vinfo"][0]).all()
    assert np.isfinite(d["r2"][1]).all()  # fold 1 holds out both classes
    assert np.isfinite(d["accuracy"]).all()
    assert np.isnan(r2(np.ones(4), np.zeros(4)))


def test_predefined_folds_without_training_rows_are_refused():
    with pytest.raises(ActstoreError, match="no training rows"):
        predefined_folds(np.zeros(6, dtype=int))
    assert predefined_folds(np.array([0, 0, 1, 1])).n_splits == 2  # each trains on the other
