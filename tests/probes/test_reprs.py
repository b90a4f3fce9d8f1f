"""Reprs of the result classes are one short line that names the key facts, not the arrays."""

from __future__ import annotations

import numpy as np

from actstore.probes import (
    ArraySource,
    BootstrapResult,
    DecodeResult,
    LassoPath,
    LinearHead,
    NMFResult,
    PairAlignment,
    PairMoments,
    SimilarityResult,
    UnitCorrelations,
    encode_targets,
    stratified_folds,
)

M, N, D = 300, 5000, 400


def _short(obj: object, *facts: str) -> str:
    text = repr(obj)
    assert len(text) < 200, text
    assert "\n" not in text and "array(" not in text
    for fact in facts:
        assert fact in text, (fact, text)
    return text


def test_folds() -> None:
    folds = stratified_folds(N, 5, 0)
    _short(folds, "Folds(", f"n={N}", "n_splits=5", "always_train=0")
    long = type(folds)(folds.test_fold, 5, "x" * 500)
    _short(long, "...")


def test_similarity_result() -> None:
    names = [f"run{i}@100/layer{i}" for i in range(M)]
    degenerate = np.zeros(M, dtype=bool)
    degenerate[:3] = True
    res = SimilarityResult(np.eye(M), degenerate, "cka", {"kernel": "rbf"}, "gram", names)
    _short(res, "metric='cka'", f"M={M}", "method='gram'", "degenerate=3", "kernel='rbf'",
           f"({M} in all)")
    huge = SimilarityResult(np.eye(M), degenerate, "rsa", {"p": "y" * 400}, "feature")
    _short(huge, "metric='rsa'", f"M={M}")


def test_bootstrap_result() -> None:
    z = np.zeros((M, M))
    res = BootstrapResult(z, z, z, 0.95, 50, 7, np.zeros((50, M, M)))
    _short(res, f"M={M}", "n_boot=50", "ci=0.95", "seed=7", f"float64[50, {M}, {M}]")
    _short(BootstrapResult(z, z, z, 0.9, 10, 0), "samples=None")


def test_nmf_result() -> None:
    res = NMFResult(np.zeros((N, 32)), np.zeros((32, D)), 1.0, 0.25, 0.5, [1.0] * 100, 100, 0.0)
    _short(res, f"n_samples={N}", "k=32", f"n_units={D}", "relative_error=0.25", "n_epochs=100")


def test_decode_result() -> None:
    feats = [f"f{i}" for i in range(50)]
    res = DecodeResult(feats, ["categorical"] * 50, {"ridge": {}, "logistic": {}},
                       np.zeros(50), 4000.0, 1000.0, "primal", {"read": 1.0})
    _short(res, "DecodeResult(", "'f0'", "(50 in all)", "'ridge'", "'logistic'", "form='primal'")


def test_lasso_path_and_alignment() -> None:
    k, dx, dy = 6, D, D
    path = LassoPath(np.ones(k), np.zeros((k, dx, dy)), np.zeros((k, dy)), np.zeros((k, dy)),
                     np.zeros((k, dy), int), np.array([True] * 5 + [False]),
                     np.zeros(dx, bool), np.zeros(dy, bool))
    _short(path, f"alphas={k}", f"dx={dx}", f"dy={dy}", "converged=5/6")
    corr = UnitCorrelations(np.eye(dx), np.eye(dy), np.zeros((dx, dy)), np.zeros(dx),
                            np.ones(dx), np.zeros(dy), np.ones(dy), np.zeros(dx, bool),
                            np.ones(dy, bool), N)
    _short(corr, f"da={dx}", f"db={dy}", f"n={N}", "constant_a=0", f"constant_b={dy}")
    match = (np.arange(dx), np.full(dx, 0.5))
    al = PairAlignment(("a", "b"), corr, match, match, match, lasso=path)
    _short(al, "('a', 'b')", f"da={dx}", "bipartite_corr_mean=0.5", "lasso")


def test_moments_head_targets_source() -> None:
    _short(PairMoments.empty(np.zeros(D), np.zeros(D // 2)), "n=0", f"dx={D}", f"dy={D // 2}")
    head = LinearHead(np.zeros((10, D)), np.zeros(10), 1e-7, D)
    _short(head, "n_classes=10", f"n_units={D}", "residual=1e-07", f"rank={D}")
    rng = np.random.default_rng(0)
    T = encode_targets({f"f{i}": rng.integers(0, 3, N) for i in range(20)})
    _short(T, f"n={N}", "columns=60", "(20 in all)")
    _short(ArraySource(np.zeros((N, D), np.float32), 256, name="run 'r0', layer 'fc1'"),
           "float32[5000, 400]", "block_rows=256", "fc1")
