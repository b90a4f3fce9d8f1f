"""Held-out metrics, decoding targets, the ridge and logistic decoders and folds against
references.

Each test computes its expectation independently (scikit-learn, scipy, himalaya, or plain numpy
written out) and compares; the hypothesis tests draw small random shapes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
from hypothesis import assume, given
from hypothesis import strategies as st
from references import SMALL, TINY, one_blas_thread, seeds  # noqa: F401 (autouse fixture)
from scipy.special import log_softmax
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, r2_score
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

from actstore._errors import ActstoreError
from actstore.decode._logistic import whiten
from actstore.decode._metrics import HeldOutScores, accuracy, balanced_accuracy, r2, vinfo_gaussian
from actstore.probes import (
    ArraySource,
    code_targets,
    encode_targets,
    logistic_cv,
    predefined_folds,
    ridge_cv,
    select_penalty,
    stratified_folds,
)

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
