"""Streamed NMF: reconstruction, agreement with scikit-learn's NMF objective, invariants."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import NMF

from actstore import ActstoreError
from actstore.probes import ArraySource, nmf, nmf_transform


def _lowrank(seed: int, n: int = 200, d: int = 30, rank: int = 8, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    W = np.abs(rng.standard_normal((n, rank)))
    H = np.abs(rng.standard_normal((rank, d)))
    return np.maximum(W @ H + noise * rng.standard_normal((n, d)), 0.0)


def _sklearn_error(A: np.ndarray, k: int, seed: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the default max_iter
        model = NMF(k, init="random", solver="cd", random_state=seed).fit(A)
    return float(model.reconstruction_err_)


@pytest.mark.parametrize("mode,batch_rows", [("batch", 4096), ("minibatch", 32)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_within_5_percent_of_sklearn(mode, batch_rows, seed):
    A = _lowrank(seed)
    k = 10
    res = nmf(ArraySource(A, block_rows=45), k, mode=mode, batch_rows=batch_rows, seed=seed)
    ref = _sklearn_error(A, k, seed)
    ratio = res.objective / (0.5 * ref**2)
    assert abs(ratio - 1.0) <= 0.05, (res.error, ref)


def test_reported_error_is_the_reconstruction_error():
    A = _lowrank(3)
    res = nmf(A, 6, seed=0)
    assert res.codes.shape == (200, 6) and res.dictionary.shape == (6, 30)
    assert np.all(res.codes >= 0) and np.all(res.dictionary >= 0)
    direct = np.linalg.norm(A - res.codes @ res.dictionary)
    assert res.error == pytest.approx(direct, rel=1e-10)
    assert res.relative_error == pytest.approx(direct / np.linalg.norm(A), rel=1e-10)
    assert res.objective == pytest.approx(0.5 * direct**2, rel=1e-10)
    # atoms have unit norm and are ordered by decreasing code norm
    np.testing.assert_allclose(np.linalg.norm(res.dictionary, axis=1), 1.0, atol=1e-12)
    norms = np.linalg.norm(res.codes, axis=0)
    assert np.all(np.diff(norms) <= 1e-12)


def test_overcomplete_dictionary_reconstructs_better():
    # k may exceed the number of units; more atoms never fit worse here
    A = _lowrank(4, n=150, d=12, rank=6, noise=0.3)
    small = nmf(A, 4, seed=0)
    big = nmf(A, 24, seed=0)
    assert big.codes.shape == (150, 24) and big.dictionary.shape == (24, 12)
    assert big.relative_error < small.relative_error
    assert big.relative_error < 0.05


def test_exact_nonnegative_factorisation_is_recovered():
    rng = np.random.default_rng(5)
    A = np.abs(rng.standard_normal((120, 4))) @ np.abs(rng.standard_normal((4, 15)))
    res = nmf(A, 4, seed=1, max_epochs=2000, tol=1e-10)
    assert res.relative_error < 1e-3


def test_torch_backend_matches_numpy():
    import torch

    A = _lowrank(6, n=100, d=12)
    a = nmf(A, 5, seed=3, max_epochs=40)
    b = nmf(ArraySource(torch.from_numpy(A), block_rows=33), 5, seed=3, max_epochs=40)
    np.testing.assert_allclose(a.codes, b.codes, atol=1e-8)
    assert a.error == pytest.approx(b.error, rel=1e-10)


def test_transform_recovers_codes_of_a_fixed_dictionary():
    A = _lowrank(7, n=80, d=16)
    res = nmf(A, 5, seed=0, max_epochs=300)
    Z = nmf_transform(A, res.dictionary)
    err = np.linalg.norm(A - Z @ res.dictionary)
    assert err <= res.error * (1 + 1e-3)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 8), rows=st.integers(7, 60),
       mode=st.sampled_from(["batch", "minibatch"]))
def test_objective_never_increases(seed, k, rows, mode):
    A = _lowrank(seed, n=70, d=9, rank=3)
    res = nmf(A, k, mode=mode, batch_rows=rows, seed=seed, max_epochs=30, tol=0.0)
    h = np.asarray(res.history)
    assert np.all(np.diff(h) <= 1e-9 * h[:-1] + 1e-12)
    assert res.objective <= h[-1] * (1 + 1e-9) + 1e-12
    assert np.all(res.codes >= 0) and np.all(res.dictionary >= 0)


def test_negative_activations_are_refused_or_clipped():
    A = _lowrank(8, n=50, d=6)
    A[::3, 1] = -0.5 * A[::3, 1]
    with pytest.raises(ActstoreError, match="negative"):
        nmf(A, 3)
    res = nmf(A, 3, negative="clip")
    assert 0 < res.clipped < 1
    with pytest.raises(ActstoreError, match="atoms k"):
        nmf(np.abs(A), 0)
    with pytest.raises(ActstoreError, match="all zero"):
        nmf(np.zeros((10, 3)), 2)
