"""Multinomial logistic decoders against scikit-learn's LogisticRegression."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from actstore.core._backend import move_to
from actstore.decode._logistic import whiten
from actstore.decode._metrics import select_penalty
from actstore.probes import encode_targets, fit_logistic_path, logistic_cv, stratified_folds

CS = [1e-3, 1e-2, 0.1, 1.0, 10.0]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _data(n, d, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    yb = rng.integers(0, 2, n)
    M = rng.standard_normal((4, d))
    X = rng.standard_normal((n, d)) * 2 + M[y] + 0.7 * yb[:, None] + 3
    X[:, 0] *= 50  # badly scaled units: the whitening must cope
    return X * scale, {"y": y, "b": yb}


def _sk(X, y, C, tol=1e-10):
    # Newton-Cholesky: scikit-learn's exact second-order solver. Its default L-BFGS can stop
    # on its relative-decrease test well before ``tol`` at weak penalties (e.g. an objective
    # 2e-6 above the optimum after 13,000 iterations), which would make a loose reference.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, tol=tol, max_iter=20_000,
                                  solver="newton-cholesky").fit(X, y)


def _sk_pipeline(X, y, C, tol=1e-10):
    """What researchers run: units z-scored with the training rows, then the same model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(StandardScaler(), LogisticRegression(
            C=C, tol=tol, max_iter=20_000, solver="newton-cholesky")).fit(X, y)


def test_path_matches_sklearn_coefficients_and_probabilities():
    X, labels = _data(300, 20)
    T = encode_targets(labels)
    folds = stratified_folds(300, 3, seed=0, stratify=labels)
    Z, Tm, omega, _ = whiten(X)
    fit = fit_logistic_path(Z, omega, T, folds, CS, tol=1e-9, max_iter=2000)
    assert fit.converged.all()
    for p, C in enumerate(CS):
        for k, (train, test) in enumerate(folds.split()):
            for name, a, e in [("y", 0, 4), ("b", 4, 6)]:
                ref = _sk(X[train], labels[name][train], C)
                W = Tm @ fit.W[p][:, k, a:e]  # (d, classes) in unit space
                coef = (W[:, 1] - W[:, 0])[None] if e - a == 2 else W.T
                assert np.abs(coef - ref.coef_).max() <= 1e-3 * np.abs(ref.coef_).max()
                proba = np.exp(fit.log_proba[p][test, a:e])
                assert np.abs(proba - ref.predict_proba(X[test])).max() < 1e-3


def test_cv_accuracy_within_one_point_of_sklearn():
    X, labels = _data(600, 40, seed=1)
    T = encode_targets(labels)
    folds = stratified_folds(600, 5, seed=2, stratify=labels)
    Cs = [1e-2, 1.0]
    s = logistic_cv(X, T, folds, Cs)  # default tolerance: the numbers the engine reports
    tight = logistic_cv(X, T, folds, Cs, tol=1e-8, max_iter=3000)
    for i, C in enumerate(Cs):
        for j, name in enumerate(["y", "b"]):
            acc, ce = [], []
            for tr, te in folds.split():
                proba = _sk_pipeline(X[tr], labels[name][tr], C, tol=1e-8).predict_proba(X[te])
                acc.append(np.mean(np.argmax(proba, axis=1) == labels[name][te]))
                ce.append(-np.mean(np.log(proba[np.arange(te.size), labels[name][te]])))
            assert abs(s["accuracy"][:, i, j].mean() - np.mean(acc)) <= 0.01
            assert abs(tight["accuracy"][:, i, j].mean() - np.mean(acc)) <= 0.005
            assert tight["cross_entropy"][:, i, j].mean() == pytest.approx(np.mean(ce), rel=1e-4)


def test_vinfo_bits_is_prior_entropy_minus_cross_entropy():
    X, labels = _data(400, 10, seed=3)
    T = encode_targets(labels)
    folds = stratified_folds(400, 4, seed=0, stratify=labels)
    s = logistic_cv(X, T, folds, [1.0])
    for k, (tr, te) in enumerate(folds.split()):
        prior = np.bincount(labels["y"][tr], minlength=4) / tr.size
        h = -np.mean(np.log(prior[labels["y"][te]]))
        expect = (h - s["cross_entropy"][k, 0, 0]) / np.log(2)
        assert s["vinfo_bits"][k, 0, 0] == pytest.approx(expect, rel=1e-12)
    # the reported value clips the mean over folds at 0 (not each fold)
    _, summary = select_penalty(s, ["categorical"])
    assert summary["vinfo_bits"][0] == pytest.approx(
        max(0.0, float(s["vinfo_bits"][:, 0, 0].mean())), rel=1e-12)
    _, neg = select_penalty({**s, "vinfo_bits": -np.abs(s["vinfo_bits"])}, ["categorical"])
    assert neg["vinfo_bits"][0] == 0.0


def test_warm_started_path_equals_cold_fits():
    X, labels = _data(200, 15, seed=4)
    T = encode_targets(labels)
    folds = stratified_folds(200, 2, seed=0)
    Z, _, omega, _ = whiten(X)
    path = fit_logistic_path(Z, omega, T, folds, CS, tol=1e-10, max_iter=3000)
    for p, C in enumerate(CS):
        cold = fit_logistic_path(Z, omega, T, folds, [C], tol=1e-10, max_iter=3000)
        np.testing.assert_allclose(np.exp(cold.log_proba[0]), np.exp(path.log_proba[p]),
                                   atol=1e-6)
        np.testing.assert_allclose(cold.W[0], path.W[p], atol=1e-5)


def test_numpy_and_torch_cpu_give_the_same_numbers():
    X, labels = _data(150, 12, seed=5)
    T = encode_targets(labels)
    folds = stratified_folds(150, 3, seed=0)
    a = logistic_cv(X, T, folds, CS, tol=1e-10, max_iter=3000)
    b = logistic_cv(move_to(X, "torch"), T, folds, CS, tol=1e-10, max_iter=3000)
    np.testing.assert_array_equal(a["accuracy"], b["accuracy"])
    np.testing.assert_allclose(a["cross_entropy"], b["cross_entropy"], rtol=1e-8)


def test_more_units_than_samples_uses_the_kernel_basis():
    X, labels = _data(60, 200, seed=6)
    Z, T, _, _ = whiten(X)
    assert T is None and Z.shape[1] <= 60
    s = logistic_cv(X, encode_targets(labels), stratified_folds(60, 3), [0.1])
    for j, name in enumerate(["y", "b"]):
        ref = np.mean([
            np.mean(_sk_pipeline(X[tr], labels[name][tr], 0.1).predict(X[te])
                    == labels[name][te])
            for tr, te in stratified_folds(60, 3).split()
        ])
        assert abs(s["accuracy"][:, 0, j].mean() - ref) <= 0.02  # one sample of a 3-fold test


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(30, 90),
    d=st.integers(2, 120),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 1000),
)
def test_random_shapes_match_sklearn_probabilities(n, d, dtype, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = np.arange(n) % 3
    X[:, 0] += y
    T = encode_targets({"y": y})
    folds = stratified_folds(n, 2, seed=seed, stratify=y)
    Z, _, omega, _ = whiten(X)
    fit = fit_logistic_path(Z, omega, T, folds, [0.05, 1.0], tol=1e-9, max_iter=3000)
    X64 = X.astype(np.float64)
    for p, C in enumerate([0.05, 1.0]):
        for tr, te in folds.split():
            ref = _sk(X64[tr], y[tr], C).predict_proba(X64[te])
            assert np.abs(np.exp(fit.log_proba[p][te, :]) - ref).max() < 2e-3


@pytest.mark.gpu
def test_cuda_float32_within_one_point_of_float64():
    X, labels = _data(600, 40, seed=7)
    T = encode_targets(labels)
    folds = stratified_folds(600, 5, seed=0, stratify=labels)
    ref = logistic_cv(X, T, folds, CS)
    got = logistic_cv(move_to(X, "cuda"), T, folds, CS, dtype="float32")
    assert np.nanmax(np.abs(got["accuracy"].mean(axis=0) - ref["accuracy"].mean(axis=0))) <= 0.01


def test_whitening_shared_with_the_ridge_solver_gives_the_same_fit():
    from actstore.probes import ArraySource, accumulate_groups, ridge_cv

    X, labels = _data(200, 25, seed=8)
    T = encode_targets(labels)
    folds = stratified_folds(200, 4, seed=0)
    stats = accumulate_groups(ArraySource(X, 64), T.Y, folds)
    ridge_cv(ArraySource(X, 64), T, folds, [1.0], form="lgo", stats=stats, standardize=False)
    assert stats.rotated is not None  # the leave-group-out form left X in its eigenbasis
    # the leave-group-out form (and so a shared eigenbasis) exists for raw units only
    # both solved far past scikit-learn's tolerance: at C = 10 the problems are nearly flat
    # (a gradient of 1e-9 leaves the held-out loss uncertain at about 1e-6)
    shared = logistic_cv(X, T, folds, CS, stats=stats, tol=1e-11, max_iter=3000,
                         standardize=False)
    alone = logistic_cv(X, T, folds, CS, tol=1e-11, max_iter=3000, standardize=False)
    np.testing.assert_allclose(shared["cross_entropy"], alone["cross_entropy"], rtol=1e-6)
    np.testing.assert_array_equal(shared["accuracy"], alone["accuracy"])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float32_iterations_stay_float32_and_match_float64(backend):
    X, labels = _data(600, 40, seed=7)
    T = encode_targets(labels)
    folds = stratified_folds(600, 5, seed=0, stratify=labels)
    ref = logistic_cv(X, T, folds, CS)
    got = logistic_cv(move_to(X, backend), T, folds, CS, dtype="float32")
    assert np.nanmax(np.abs(got["accuracy"].mean(axis=0) - ref["accuracy"].mean(axis=0))) <= 0.01
    Z, _, omega, _ = whiten(move_to(X, backend), dtype="float32")
    fit = fit_logistic_path(Z, omega, T, folds, CS)
    # no float64 value may creep into the iterations (it would promote every product)
    assert {str(a.dtype).replace("torch.", "") for a in (fit.W, fit.b, fit.log_proba)} == {
        "float32"}


def test_float32_converges_on_activations_of_tiny_spread():
    # Like an untrained network's output layer: units of spread 5e-4 around means of 0.01-0.1.
    # The raw-unit penalty then dominates and the decrease left near the optimum is below
    # float32's resolution of the objective; the solver must still stop at its tolerance.
    rng = np.random.default_rng(11)
    n, d = 1000, 10
    y = rng.integers(0, 10, n)
    X = (rng.uniform(0.01, 0.1, d) + 5e-4 * rng.standard_normal((n, d))
         + 1e-4 * np.eye(d)[y]).astype(np.float32)
    T = encode_targets({"y": y})
    folds = stratified_folds(n, 5, seed=0, stratify=y)
    got = logistic_cv(X, T, folds, np.logspace(-4, 2, 13), dtype="float32")
    ref = logistic_cv(X, T, folds, np.logspace(-4, 2, 13), dtype="float64")
    assert got["converged"].all()
    assert got["n_iter"].max() <= 5 * max(ref["n_iter"].max(), 1)
    assert np.nanmax(np.abs(got["accuracy"].mean(axis=0) - ref["accuracy"].mean(axis=0))) <= 0.01


def test_whitening_is_reused_for_more_penalties(monkeypatch):
    """The whitened activations and per-fold penalty corrections depend on the activations
    only: a second call on the same statistics (as the grid extension makes) reuses them and
    gives what a fresh computation gives."""
    from actstore.core._blocks import ArraySource
    from actstore.core._stats import accumulate_groups
    from actstore.decode import _logistic

    rng = np.random.default_rng(7)
    X = rng.standard_normal((240, 12))
    y = rng.integers(0, 3, 240)
    X[:, 0] += y
    T = encode_targets({"y": y})
    folds = stratified_folds(240, 4, seed=0, stratify={"y": y})
    stats = accumulate_groups(ArraySource(X), T.Y, folds)
    calls = []
    real = _logistic.whiten
    monkeypatch.setattr(_logistic, "whiten", lambda *a, **k: calls.append(1) or real(*a, **k))
    _logistic.logistic_cv(X, T, folds, (0.1, 1.0), stats=stats)
    again = _logistic.logistic_cv(X, T, folds, (10.0, 100.0), stats=stats.columns(
        np.arange(T.Y.shape[1])))
    assert len(calls) == 1
    fresh = _logistic.logistic_cv(X, T, folds, (10.0, 100.0))
    assert len(calls) == 2
    np.testing.assert_allclose(again["accuracy"], fresh["accuracy"])
    np.testing.assert_allclose(again["cross_entropy"], fresh["cross_entropy"], rtol=1e-6)


@pytest.mark.parametrize("signs", ["mixed", "positive", "negative", "zero"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_penalty_correction_gram_equals_the_weighted_product(signs, backend):
    from actstore.decode._logistic import _signed_gram

    rng = np.random.default_rng(3)
    T = rng.standard_normal((40, 12))
    w = {"mixed": rng.standard_normal(40), "positive": rng.random(40) + 0.1,
         "negative": -rng.random(40), "zero": np.zeros(40)}[signs]
    w[::7] = 0.0
    got = _signed_gram(move_to(T, backend), move_to(w, backend))
    got = np.asarray(got.cpu() if hasattr(got, "cpu") else got)
    np.testing.assert_allclose(got, T.T @ np.diag(w) @ T, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got, got.T)
