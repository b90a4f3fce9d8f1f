"""Ridge factorisations in single precision, checked in double precision."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from actstore import ActstoreError
from actstore.core._shifted import MIXED_MIN, MIXED_TOL, _Tridiagonal, shifted_system
from actstore.probes import ProbeConfig, make_folds, probe_arrays


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _gram(m, decades, seed=0):
    """A symmetric PSD matrix with eigenvalues log-spaced from 1e6 down over ``decades``,
    in a random basis, and a right-hand side."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    M = (Q * np.logspace(6, 6 - decades, m)) @ Q.T
    return (M + M.T) / 2, rng.standard_normal((m, 6))


@pytest.mark.parametrize("decades", [0, 4, 8, 12])
@pytest.mark.parametrize("alpha", [1e-4, 1e-1, 1e2])
def test_accepted_single_precision_solutions_are_within_the_tolerance(decades, alpha):
    """Whatever the conditioning and the penalty, the solutions returned are within
    MIXED_TOL (relative) of the float64 ones: the check rejects every single-precision
    solution that is off by more than 10x the tolerance (then the float64 reduction's
    numbers are returned exactly) and keeps every one that is within a tenth of it."""
    M, B = _gram(MIXED_MIN, decades)
    alphas = [alpha, 10 * alpha, 1e4]
    system = shifted_system(M, "float32")
    got = system.solve(B, alphas)
    ref = _Tridiagonal(M).solve(B, alphas)
    single = _rel(_Tridiagonal(M, np.float32).solve(B, [alpha])[0], ref[0])
    for i in range(len(alphas)):
        assert _rel(got[i], ref[i]) <= MIXED_TOL
    if single > 10 * MIXED_TOL:
        assert system.exact is not None
    if single < MIXED_TOL / 10:
        assert system.exact is None
    if system.exact is not None:
        np.testing.assert_array_equal(got, ref)


def test_well_conditioned_grams_stay_in_single_precision():
    M, B = _gram(MIXED_MIN, 2, seed=1)
    system = shifted_system(M, "float32")
    got = system.solve(B, [1e-2, 1.0, 1e2])
    assert system.exact is None and system.fast.dtype == np.float32
    ref = _Tridiagonal(M).solve(B, [1e-2, 1.0, 1e2])
    assert _rel(got, ref) < 1e-5


def test_near_singular_gram_with_a_tiny_penalty_falls_back_to_float64_for_good():
    """A rank-deficient Gram with a penalty far below single precision's resolution of it:
    the check fails, the fold is reduced again in float64, and later calls (e.g. an
    extended grid) use that factorisation without checking again."""
    rng = np.random.default_rng(2)
    F = rng.standard_normal((MIXED_MIN, 40)) * np.logspace(0, 3, 40)
    M = F @ F.T
    B = M @ rng.standard_normal((MIXED_MIN, 3))  # in the range of M, as X^T Y is
    system = shifted_system(M, "float32")
    got = system.solve(B, [1e-6, 1.0])
    assert system.fast is None and system.exact is not None
    np.testing.assert_array_equal(got, _Tridiagonal(M).solve(B, [1e-6, 1.0]))
    exact = system.exact
    again = system.solve(B, [1e3])
    assert system.exact is exact
    np.testing.assert_array_equal(again, exact.solve(B, [1e3]))


def test_small_matrices_and_other_inputs_keep_float64():
    M, _ = _gram(MIXED_MIN - 1, 0)
    assert type(shifted_system(M, "float32")) is _Tridiagonal
    assert shifted_system(M, "float32").dtype == np.float64
    with pytest.raises(ValueError, match="precision must be one of"):
        shifted_system(M, "float16")


def test_probe_accuracy_in_single_precision_equals_float64_and_sklearn():
    """At 600 units (single precision engaged) the decoder's accuracies and chosen penalties
    equal the float64 decoder's and the scikit-learn pipeline's on the same folds."""
    rng = np.random.default_rng(4)
    n, d = 1500, 600
    y = rng.integers(0, 5, n)
    X = rng.standard_normal((n, d)) + 0.25 * np.eye(5)[y] @ rng.standard_normal((5, d))
    X *= np.logspace(-2, 2, d)  # units of very different scales
    labels = {"y": y}
    common = dict(decoders=("ridge",), alphas=(1e-1, 1e1, 1e3), extend_grid=0)
    fast = probe_arrays(X, labels, config=ProbeConfig(**common))
    exact = probe_arrays(X, labels, config=ProbeConfig(**common, ridge_dtype="float64"))
    np.testing.assert_allclose(fast["ridge_score"], exact["ridge_score"], atol=2e-3)
    assert float(fast["penalty"].item()) == float(exact["penalty"].item())
    folds, _ = make_folds(labels, ProbeConfig(**common))
    alpha = float(exact["penalty"].item())
    correct = 0
    for train, test in folds.split():
        model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha))
        correct += int((model.fit(X[train], y[train]).predict(X[test]) == y[test]).sum())
    assert abs(float(fast["accuracy"].item()) - correct / n) <= 2 / n


def test_ridge_dtype_is_validated_and_is_a_setting():
    with pytest.raises(ActstoreError, match="ridge_dtype must be float32 or float64"):
        ProbeConfig(ridge_dtype="half")
    assert "ridge_dtype" in ProbeConfig.RESULT_KEYS
    assert ProbeConfig().key() != ProbeConfig(ridge_dtype="float64").key()


def test_larger_shifts_than_a_checked_one_are_not_checked_again(monkeypatch):
    """The error bound falls as the shift grows: a later call whose shifts are all at least
    the smallest one checked (a grid extended upward) is not checked again; a smaller one is."""
    M, B = _gram(MIXED_MIN, 2, seed=3)
    system = shifted_system(M, "float32")
    calls = []
    real = type(system).accurate
    monkeypatch.setattr(type(system), "accurate",
                        lambda self, *a: calls.append(1) or real(self, *a))
    system.solve(B, [1.0, 10.0])
    system.solve(B[:, :2], [1e3, 1e4])
    assert len(calls) == 1 and system.checked == 1.0
    system.solve(B, [1e-2])
    assert len(calls) == 2 and system.checked == 1e-2


def test_moments_without_the_gram_equal_the_rest_of_the_full_moments():
    from actstore.core._stats import accumulate_groups
    from actstore.probes import ArraySource, encode_targets, stratified_folds

    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 20)) + 2.0
    labels = {"y": rng.integers(0, 3, 300)}
    T = encode_targets(labels)
    stats = accumulate_groups(ArraySource(X, block_rows=64), T.Y,
                              stratified_folds(300, 5, seed=0))
    for k in (None, 0, 3):
        full, light = stats.moments(exclude=k), stats.moments(exclude=k, gram=False)
        assert light.C is None and full.C is not None
        for a, b in ((full.B, light.B), (full.mean_x, light.mean_x), (full.mean_y, light.mean_y)):
            np.testing.assert_array_equal(a, b)
        assert full.n == light.n


def test_coalesce_reusing_its_memory_yields_the_same_blocks():
    """With ``reuse`` each block is written into the memory of the one before (no fresh
    memory per block), and the rows and values are those of fresh blocks."""
    from actstore.core._blocks import coalesce
    from actstore.probes import ArraySource

    X = np.random.default_rng(6).standard_normal((1000, 16)).astype(np.float32)
    fresh = [(a, b, blk.copy()) for a, b, blk in
             coalesce(ArraySource(X, block_rows=70).blocks(), 16, target_bytes=8 * 16 * 200)]
    seen = []
    for (a, b, blk), (a0, b0, ref) in zip(
            coalesce(ArraySource(X, block_rows=70).blocks(), 16, target_bytes=8 * 16 * 200,
                     reuse=True), fresh, strict=True):
        assert (a, b) == (a0, b0) and blk.dtype == np.float64
        np.testing.assert_array_equal(blk, ref)
        seen.append(blk)
    assert len(fresh) > 2
    assert all(np.shares_memory(seen[0], s) for s in seen[1:])
