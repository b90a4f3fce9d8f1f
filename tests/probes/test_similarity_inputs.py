"""Similarity inputs: exact RDM ties under Spearman RSA, mixed array libraries, degenerate
correlation RDMs, and the checks of ``idx``, ``seed`` and ``n_boot``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance as ssd
import scipy.stats

from actstore import ActstoreError
from actstore.core import LazyRep
from actstore.similarity import (
    bootstrap_indices,
    bootstrap_similarity,
    plan_similarity,
    similarity,
    similarity_matrix,
)
from actstore.similarity._rdm import pattern_form, rdm_strip

torch = pytest.importorskip("torch")

RDMS = ("sqeuclidean", "euclidean", "correlation", "cosine")


def _binary(seed: int = 0, n: int = 40, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """0/1 activations: many pairs at exactly the same distance, and duplicated patterns."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, (n, d)).astype(float)
    Y = rng.integers(0, 2, (n, d)).astype(float)
    return X, Y


def _integer(seed: int = 1, n: int = 30, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Small-integer activations with no constant pattern (correlation defined) and copies."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        A = rng.integers(0, 3, (4 * n, d)).astype(float)
        A = A[A.std(axis=1) > 0][:n]
        A[5] = A[2]  # a duplicated pattern
        out.append(A)
    return out[0], out[1]


def _upper(X: np.ndarray, rdm: str) -> np.ndarray:
    """scipy ``pdist`` with exact ties: scipy's own round-off splits equal correlations
    (and rsatoolbox's does too), so values are snapped to 1e-10 (far above round-off,
    far below the gaps between distinct distances of small-integer patterns)."""
    return np.round(ssd.pdist(X, rdm), 10)


def _spearman_reference(X: np.ndarray, Y: np.ndarray, rdm: str) -> float:
    return float(scipy.stats.spearmanr(_upper(X, rdm), _upper(Y, rdm))[0])


# --- 1. Spearman RSA with exact ties ----------------------------------------------------


@pytest.mark.parametrize("rdm", RDMS)
def test_spearman_rsa_ties_match_scipy_and_torch(rdm):
    X, Y = _integer() if rdm in ("correlation", "cosine") else _binary()
    want = _spearman_reference(X, Y, rdm)
    got_np = similarity(X, Y, "rsa", rdm=rdm, compare="spearman")
    got_t = similarity(torch.tensor(X), torch.tensor(Y), "rsa", rdm=rdm, compare="spearman")
    assert got_np == pytest.approx(want, abs=1e-10)
    assert got_t == pytest.approx(want, abs=1e-10)
    assert got_t == pytest.approx(got_np, abs=1e-12)


def test_spearman_rsa_ties_issue_example():
    X, Y = _binary()
    want = scipy.stats.spearmanr(ssd.pdist(X, "sqeuclidean"), ssd.pdist(Y, "sqeuclidean"))[0]
    assert want == pytest.approx(-0.033564, abs=1e-6)
    for a, b in [(X, Y), (torch.tensor(X), torch.tensor(Y))]:
        got = similarity(a, b, "rsa", rdm="sqeuclidean", compare="spearman")
        assert got == pytest.approx(want, abs=1e-10)


def test_spearman_rsa_ties_match_rsatoolbox():
    rsatoolbox = pytest.importorskip("rsatoolbox")
    X, Y = _binary(3)
    # rsatoolbox's euclidean RDM is the squared distance over units: integer data keep its
    # ties exact, so its Spearman comparison is a reference here.
    rdms = rsatoolbox.rdm.calc_rdm([rsatoolbox.data.Dataset(a) for a in (X, Y)],
                                   method="euclidean")
    want = float(rsatoolbox.rdm.compare(rdms[0], rdms[1], method="spearman")[0, 0])
    for rdm in ("sqeuclidean", "euclidean"):
        assert similarity(X, Y, "rsa", rdm=rdm, compare="spearman") == pytest.approx(
            want, abs=1e-10)


@pytest.mark.parametrize("rdm", ["sqeuclidean", "correlation"])
def test_spearman_rsa_ties_in_stimulus_blocks(rdm):
    """Ranks over several stimulus blocks (small memory budget) are the same ranks."""
    X, Y = _integer(2) if rdm == "correlation" else _binary(2)
    Z = np.random.default_rng(9).permutation(X)  # a third representation
    reps = [X, Y, Z]
    budget = 20_000
    plan = plan_similarity([r.shape for r in reps], "rsa", rdm=rdm, compare="spearman",
                           max_memory=budget)
    assert len(plan.chunks) > 1
    got = similarity_matrix(reps, "rsa", rdm=rdm, compare="spearman", max_memory=budget)
    got_t = similarity_matrix([torch.tensor(r) for r in reps], "rsa", rdm=rdm,
                              compare="spearman", max_memory=budget)
    for i in range(3):
        for j in range(3):
            want = _spearman_reference(reps[i], reps[j], rdm)
            assert got.values[i, j] == pytest.approx(want, abs=1e-10)
    np.testing.assert_allclose(got_t.values, got.values, atol=1e-12)


def test_spearman_rsa_ties_in_a_bootstrap_replicate():
    """Copies of a stimulus are left out; the other tied pairs keep average ranks."""
    X, Y = _binary(4, n=30)
    idx = bootstrap_indices(30, 1, seed=2)[0]
    keep = ssd.pdist(idx[:, None].astype(float)) != 0  # pairs of two different stimuli
    want = scipy.stats.spearmanr(ssd.pdist(X[idx], "sqeuclidean")[keep],
                                 ssd.pdist(Y[idx], "sqeuclidean")[keep])[0]
    for a, b in [(X, Y), (torch.tensor(X), torch.tensor(Y))]:
        got = similarity_matrix([a, b], "rsa", rdm="euclidean", compare="spearman", idx=idx)
        assert got.values[0, 1] == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("rdm", RDMS)
@pytest.mark.parametrize("compare", ["pearson", "cosine"])
def test_pearson_and_cosine_compares_unaffected_by_ties(rdm, compare):
    X, Y = _integer(5) if rdm in ("correlation", "cosine") else _binary(5)
    a, b = ssd.pdist(X, rdm), ssd.pdist(Y, rdm)
    want = (scipy.stats.pearsonr(a, b)[0] if compare == "pearson"
            else 1.0 - ssd.cosine(a, b))
    for x, y in [(X, Y), (torch.tensor(X), torch.tensor(Y))]:
        got = similarity(x, y, "rsa", rdm=rdm, compare=compare)
        assert got == pytest.approx(want, abs=1e-10)


# --- 2. numpy and torch mixed -------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cka", "rbf_cka", "rsa", "procrustes"])
@pytest.mark.parametrize("torch_first", [False, True])
def test_mixed_numpy_and_torch_is_one_error(metric, torch_first):
    X, Y = _binary(6)
    Y = Y + np.random.default_rng(0).normal(size=Y.shape)
    reps = [torch.tensor(Y), X, X] if torch_first else [X, X, torch.tensor(Y)]
    with pytest.raises(ActstoreError) as err:
        similarity_matrix(reps, metric)
    msg = str(err.value)
    assert "numpy arrays" in msg and "torch tensors" in msg
    first_np, first_t = (1, 0) if torch_first else (0, 2)
    assert f"numpy arrays (first: #{first_np})" in msg
    assert f"torch tensors (first: #{first_t})" in msg
    assert "device=" in msg


def test_mixed_libraries_name_the_representations():
    X, Y = _binary(6)
    with pytest.raises(ActstoreError, match=r"numpy arrays \(first: #0 'a'\) and torch "
                                            r"tensors \(first: #1 'b'\)"):
        similarity_matrix([X, torch.tensor(Y)], "rsa", names=["a", "b"])


def test_mixed_libraries_in_bootstrap_is_one_error():
    X, Y = _binary(7)
    with pytest.raises(ActstoreError, match="mix numpy arrays"):
        bootstrap_similarity([X, torch.tensor(Y)], "rsa", n_boot=3)
    with pytest.raises(ActstoreError, match="mix torch tensors"):
        bootstrap_similarity([torch.tensor(X), Y], "cka", n_boot=3)


def test_mixed_lazy_representations_are_one_error():
    X, Y = _binary(8)
    reps = [LazyRep(X.shape, lambda: X, "a"), LazyRep(Y.shape, lambda: torch.tensor(Y), "b")]
    with pytest.raises(ActstoreError, match=r"numpy arrays \(first: #0 'a'\) and torch"):
        similarity_matrix(reps, "rsa")


def test_mixed_libraries_with_device_are_converted():
    X, Y = _binary(9)
    want = similarity_matrix([X, Y], "rsa", compare="spearman").values
    got = similarity_matrix([X, torch.tensor(Y)], "rsa", compare="spearman", device="numpy")
    np.testing.assert_allclose(got.values, want, atol=1e-12)


def test_dask_arrays_are_read_as_numpy():
    da = pytest.importorskip("dask.array")
    X, Y = _binary(10)
    for metric in ("rsa", "rbf_cka", "procrustes"):
        want = similarity_matrix([X, Y], metric).values
        got = similarity_matrix([X, da.from_array(Y, chunks=(10, 6))], metric).values
        np.testing.assert_allclose(got, want, atol=1e-12)


# --- 3. degenerate correlation RDMs, idx, seed --------------------------------------------


@pytest.mark.parametrize("compare", ["pearson", "spearman", "cosine"])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_correlation_rdm_of_one_unit_is_degenerate(compare, lib):
    rng = np.random.default_rng(11)
    reps = [rng.normal(size=(12, 1)), rng.normal(size=(12, 1)), rng.normal(size=(12, 4))]
    if lib == "torch":
        reps = [torch.tensor(r) for r in reps]
    res = similarity_matrix(reps, "rsa", rdm="correlation", compare=compare)
    assert res.degenerate.tolist() == [True, True, False]
    assert np.all(res.values[:2] == 0.0) and np.all(res.values[:, :2] == 0.0)
    assert res.values[2, 2] == 1.0


@pytest.mark.parametrize("rdm", ["correlation", "cosine"])
def test_rdm_with_one_defined_pattern_is_degenerate(rdm):
    """All distances set by the zero-pattern convention: nothing to compare, any compare."""
    rng = np.random.default_rng(12)
    X = np.zeros((10, 4)) if rdm == "cosine" else np.repeat(rng.normal(size=(10, 1)), 4, 1)
    X[3] = rng.normal(size=4)
    Y = rng.normal(size=(10, 4))
    res = similarity_matrix([X, Y], "rsa", rdm=rdm, compare="cosine")
    assert res.degenerate.tolist() == [True, False]
    assert res.values[0, 1] == 0.0


def test_correlation_pattern_constant_up_to_round_off_is_a_zero_pattern():
    X = np.array([[0.1, 0.1, 0.1], [0.3, 0.3, 0.3], [1.0, 2.0, 4.0], [3.0, 1.0, 0.0]])
    Z, sq = pattern_form(X, "correlation", np)
    assert np.all(Z[:2] == 0.0) and sq.tolist()[:2] == [0.0, 0.0]
    D = rdm_strip(Z, sq, "correlation", 0, 4, np)
    assert D[0, 1] == 1.0  # correlation 0 by convention, not +-1 from round-off


@pytest.mark.parametrize(
    "idx, what",
    [
        (np.arange(20) + 1, "outside"),          # 20 is out of range
        (np.arange(20) - 1, "outside"),          # -1 would wrap silently
        (np.arange(20)[None, :], "1-D"),
        (np.arange(21), "1-D"),
        (np.arange(20)[:10], "1-D"),
        (np.arange(20, dtype=float), "integers"),
        (np.ones(20, dtype=bool), "integers"),
    ],
)
def test_bad_idx_is_one_error(idx, what):
    rng = np.random.default_rng(13)
    reps = [rng.normal(size=(20, 3)), rng.normal(size=(20, 5))]
    for metric in ("rsa", "cka"):
        with pytest.raises(ActstoreError, match=f"idx .*{what}"):
            similarity_matrix(reps, metric, idx=idx)


def test_valid_idx_as_list_or_tensor():
    rng = np.random.default_rng(14)
    reps = [rng.normal(size=(20, 3)), rng.normal(size=(20, 5))]
    idx = bootstrap_indices(20, 1, seed=1)[0]
    want = similarity_matrix(reps, "rsa", idx=idx).values
    for other in (idx.tolist(), torch.tensor(idx), idx.astype(np.int32)):
        np.testing.assert_allclose(similarity_matrix(reps, "rsa", idx=other).values, want)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, None])
def test_bad_bootstrap_seed_is_one_error(seed):
    rng = np.random.default_rng(15)
    reps = [rng.normal(size=(10, 3)), rng.normal(size=(10, 2))]
    with pytest.raises(ActstoreError, match="seed must be an integer >= 0"):
        bootstrap_similarity(reps, "cka", n_boot=3, seed=seed)
    with pytest.raises(ActstoreError, match="seed must be an integer >= 0"):
        bootstrap_indices(10, 3, seed=seed)


@pytest.mark.parametrize("n_boot", [1, 2.5, "10"])
def test_bad_n_boot_is_one_error(n_boot):
    rng = np.random.default_rng(16)
    reps = [rng.normal(size=(10, 3)), rng.normal(size=(10, 2))]
    with pytest.raises(ActstoreError, match="n_boot"):
        bootstrap_similarity(reps, "cka", n_boot=n_boot)


def test_numpy_integer_seed_is_accepted():
    rng = np.random.default_rng(17)
    reps = [rng.normal(size=(10, 3)), rng.normal(size=(10, 2))]
    a = bootstrap_similarity(reps, "cka", n_boot=3, seed=np.int64(4))[1]
    b = bootstrap_similarity(reps, "cka", n_boot=3, seed=4)[1]
    assert a.seed == 4
    np.testing.assert_array_equal(a.low, b.low)
