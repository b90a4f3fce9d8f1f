"""Bad input to the alignment functions is one ActstoreError that says what and where."""

from __future__ import annotations

import numpy as np
import pytest

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
from actstore.alignment._alignment import align_from_parts, split_mask
from actstore.core._moments import PairMoments, moments_of


def _pair(n=40, da=4, db=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, da)), rng.normal(size=(n, db))


def _affinity(N=8, seed=0):
    rng = np.random.default_rng(seed)
    return np.abs(np.corrcoef(rng.normal(size=(N, 30))))


# -- align_pair -------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "count"), [(np.nan, "1 NaN and 0 infinite"),
                                            (np.inf, "0 NaN and 1 infinite")])
def test_align_pair_refuses_non_finite_values_naming_the_argument(bad, count):
    A, B = _pair()
    A[5, 2] = bad
    with pytest.raises(ActstoreError, match=rf"A \('x'\) holds {count}.*\(5, 2\)"):
        align_pair(A, B, names=("x", "y"))
    with pytest.raises(ActstoreError, match=rf"B \('y'\) holds {count}"):
        align_pair(B, A, names=("x", "y"))


def test_align_pair_refuses_bad_shapes():
    A, B = _pair()
    with pytest.raises(ActstoreError, match="at least 2 samples"):
        align_pair(A[:1], B[:1])
    with pytest.raises(ActstoreError, match=r"no units \(shape \(40, 0\)\)"):
        align_pair(A[:, :0], B)
    with pytest.raises(ActstoreError, match=r"B \('b'\) must be a 2-D .*got shape \(40,\)"):
        align_pair(A, B[:, 0])
    with pytest.raises(ActstoreError, match="same samples"):
        align_pair(A, B[:30])
    # nested lists are arrays too (same numbers)
    a = align_pair(A.tolist(), B.tolist(), mutual_info=False, alphas=(1e-2,))
    b = align_pair(A, B, mutual_info=False, alphas=(1e-2,))
    np.testing.assert_array_equal(a.corr.between, b.corr.between)


def test_align_pair_refuses_groups_of_the_wrong_length():
    A, B = _pair()
    with pytest.raises(ActstoreError, match=r"groups has shape \(5,\).*40 samples"):
        align_pair(A, B, groups=np.arange(5))


def test_align_pair_refuses_a_split_without_training_stimuli():
    A, B = _pair()
    with pytest.raises(ActstoreError, match="no stimulus to fit"):
        align_pair(A, B, groups=np.zeros(40, dtype=int))
    # without the LASSO path one stimulus is fine
    res = align_pair(A, B, groups=np.zeros(40, dtype=int), lasso=False)
    assert res.lasso is None


@pytest.mark.parametrize("alphas", [(-1.0,), (np.nan,), (np.inf, 0.1), (), "0.1"])
def test_align_pair_refuses_bad_penalties(alphas):
    A, B = _pair()
    with pytest.raises(ActstoreError, match="alphas"):
        align_pair(A, B, alphas=alphas, mutual_info=False)


def test_align_pair_refuses_bad_bins_block_and_seed():
    A, B = _pair()
    with pytest.raises(ActstoreError, match="bins must be a whole number >= 3"):
        align_pair(A, B, bins=10.5, lasso=False)
    with pytest.raises(ActstoreError, match="block must be a whole number >= 1"):
        align_pair(A, B, block=0, mutual_info=False, lasso=False)
    with pytest.raises(ActstoreError, match="seed must be a whole number >= 0"):
        align_pair(A, B, seed=-1, mutual_info=False)


def test_align_from_parts_refuses_non_finite_moments():
    A, B = _pair()
    A[3, 0] = np.nan
    with pytest.raises(ActstoreError, match="'p' and 'q' hold NaN or infinite"):
        align_from_parts(("p", "q"), moments_of(A, B))


# -- mutual information -----------------------------------------------------------------------


def test_mutual_information_refuses_non_finite_and_mismatched_input():
    A, B = _pair()
    A[0, 0] = np.nan
    with pytest.raises(ActstoreError, match=r"A holds 1 NaN.*\(0, 0\)"):
        mutual_information(A, B)
    with pytest.raises(ActstoreError, match=r"A holds 1 NaN"):
        bin_units(A)
    A, B = _pair()
    with pytest.raises(ActstoreError, match="A has 40 samples and B has 30"):
        mutual_information(A, B[:30])


@pytest.mark.parametrize("bins", [10.5, "10", True])
def test_mutual_information_needs_a_whole_number_of_bins(bins):
    A, B = _pair()
    with pytest.raises(ActstoreError, match="bins must be a whole number >= 3"):
        mutual_information(A, B, bins=bins)


def test_mutual_information_refuses_a_zero_block():
    A, B = _pair()
    with pytest.raises(ActstoreError, match="block"):
        mutual_information(A, B, block=0)


# -- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("match", [bipartite_matching, semi_matching])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_matching_refuses_non_finite_similarities(match, bad):
    C = np.random.default_rng(0).uniform(-1, 1, (4, 5))
    C[1, 3] = bad
    with pytest.raises(ActstoreError, match=r"C \(the similarity matrix\) holds.*\(1, 3\)"):
        match(C)


@pytest.mark.parametrize("match", [bipartite_matching, semi_matching])
def test_matching_refuses_non_2d_and_empty_matrices(match):
    C = np.random.default_rng(0).uniform(-1, 1, (4, 5))
    with pytest.raises(ActstoreError, match=r"2-D .*got shape \(5,\)"):
        match(C[0])
    with pytest.raises(ActstoreError, match=r"empty \(shape \(4, 0\)\)"):
        match(C[:, :0])
    with pytest.raises(ActstoreError, match="must be an array"):
        match(None)


@pytest.mark.parametrize("match", [bipartite_matching, semi_matching])
def test_matching_accepts_nested_lists(match):
    C = np.random.default_rng(1).uniform(-1, 1, (4, 5))
    for got, want in zip(match(C.tolist()), match(C), strict=True):
        np.testing.assert_array_equal(got, want)


# -- spectral clustering ----------------------------------------------------------------------


def test_spectral_clusters_refuse_a_non_square_affinity():
    with pytest.raises(ActstoreError, match=r"square .*got shape \(5, 8\)"):
        spectral_clusters(_affinity()[:5], 2)


def test_spectral_clusters_check_the_number_of_clusters():
    S = _affinity()
    with pytest.raises(ActstoreError, match="n_clusters must be a whole number >= 1"):
        spectral_clusters(S, 0)
    with pytest.raises(ActstoreError, match="only N = 8 units"):
        spectral_clusters(S, 9)
    assert len(set(spectral_clusters(S, 8).tolist())) == 8


def test_spectral_clusters_refuse_non_finite_negative_and_asymmetric_affinities():
    S = _affinity()
    Sn = S.copy()
    np.fill_diagonal(Sn, np.nan)
    with pytest.raises(ActstoreError, match="affinity holds 8 NaN"):
        spectral_clusters(Sn, 2)
    signed = np.corrcoef(np.random.default_rng(2).normal(size=(8, 30)))
    with pytest.raises(ActstoreError, match=r"negative value.*np\.abs"):
        spectral_clusters(signed, 2)
    asym = S.copy()
    asym[0, 1] += 0.5
    with pytest.raises(ActstoreError, match="not symmetric"):
        spectral_clusters(asym, 2)


def _three_nets():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 12))
    c = correlations_from_moments(moments_of(X, X[:, :0]))
    W = [c.within_a[i : i + 4, i : i + 4] for i in (0, 4, 8)]
    between = {(r, s): c.within_a[4 * r : 4 * r + 4, 4 * s : 4 * s + 4]
               for r in range(3) for s in range(r + 1, 3)}
    return W, between, [np.zeros(4, dtype=bool)] * 3


def test_joint_clusters_refuse_a_missing_between_block():
    W, between, const = _three_nets()
    del between[(1, 2)]
    with pytest.raises(ActstoreError, match=r"lacks the pair\(s\) \[\(1, 2\)\]"):
        joint_clusters(W, between, const, n_clusters=2)


def test_joint_clusters_refuse_wrongly_sized_blocks_and_masks():
    W, between, const = _three_nets()
    bad = dict(between)
    bad[(0, 1)] = between[(0, 1)][:3]
    with pytest.raises(ActstoreError, match=r"between\[\(0, 1\)\] has shape \(3, 4\)"):
        joint_clusters(W, bad, const, n_clusters=2)
    with pytest.raises(ActstoreError, match=r"key \(2, 0\)"):
        joint_clusters(W, {**between, (2, 0): between[(0, 2)].T}, const, n_clusters=2)
    with pytest.raises(ActstoreError, match=r"constant\[1\] has shape \(3,\)"):
        joint_clusters(W, between, [const[0], const[1][:3], const[2]], n_clusters=2)
    with pytest.raises(ActstoreError, match="list of 3 bool masks"):
        joint_clusters(W, between, const[:2], n_clusters=2)


def test_joint_clusters_refuse_too_many_clusters_and_non_finite_correlations():
    W, between, const = _three_nets()
    with pytest.raises(ActstoreError, match="only N = 12 units"):
        joint_clusters(W, between, const, n_clusters=13)
    labels, _ = joint_clusters(W, between, const, n_clusters=12)
    assert len(labels) == 12
    bad = [w.copy() for w in W]
    bad[2][1, 1] = np.nan
    with pytest.raises(ActstoreError, match=r"within\[2\] holds 1 NaN"):
        joint_clusters(bad, between, const, n_clusters=2)


# -- split and LASSO path ---------------------------------------------------------------------


def test_split_mask_checks_its_arguments():
    with pytest.raises(ActstoreError, match="n_stimuli"):
        split_mask(0)
    with pytest.raises(ActstoreError, match="test_fraction"):
        split_mask(10, "0.2")  # type: ignore[arg-type]
    with pytest.raises(ActstoreError, match="seed"):
        split_mask(10, 0.2, seed=-3)


def test_sparse_prediction_refuses_empty_splits_and_bad_penalties():
    A, B = _pair()
    tr = moments_of(A, B)
    empty = PairMoments.empty(A.mean(0), B.mean(0))
    with pytest.raises(ActstoreError, match="train moments hold no samples"):
        sparse_prediction(empty, tr)
    with pytest.raises(ActstoreError, match="LASSO penalties must be finite numbers >= 0"):
        sparse_prediction(tr, tr, alphas=(0.1, -2.0))


def test_lasso_gram_checks_shapes_and_penalty():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 3))
    G, C = X.T @ X / 50, X.T @ rng.normal(size=(50, 2)) / 50
    with pytest.raises(ActstoreError, match="alpha must be a finite number > 0"):
        lasso_gram(G, C, np.nan)
    with pytest.raises(ActstoreError, match=r"G has shape \(3, 3\) and C \(2, 2\)"):
        lasso_gram(G, C[:2], 0.1)
    Gn = G.copy()
    Gn[0, 0] = np.inf
    with pytest.raises(ActstoreError, match="G holds 1 NaN or infinite"):
        lasso_gram(Gn, C, 0.1)
