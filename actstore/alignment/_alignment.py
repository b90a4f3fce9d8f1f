"""Convergent learning: align the units of two networks trained from different seeds.

After Li, Yosinski, Clune, Lipson & Hopcroft (ICLR 2016). For one layer of two networks, over
the same stimuli: unit correlations (:mod:`._correlations`), semi and bipartite matching
(:mod:`._matching`), binned mutual information (:mod:`._mutual_info`) and sparse prediction of
one net's units from the other's over a LASSO path (:mod:`._lasso`), gathered in one
:class:`PairAlignment`. Clusters of units shared by several networks: :mod:`._clusters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstore._args import as_array, check_text, whole_number
from actstore._errors import ActstoreError
from actstore.alignment._correlations import UnitCorrelations, correlations_from_moments
from actstore.alignment._inputs import check_bins, check_finite, sample_array, similarity_input
from actstore.alignment._lasso import (
    LASSO_ALPHAS,
    LassoPath,
    check_alphas,
    sparse_prediction,
)
from actstore.alignment._matching import unchecked_bipartite, unchecked_semi
from actstore.alignment._mutual_info import mutual_information
from actstore.core._backend import to_numpy
from actstore.core._moments import PairMoments

__all__ = ["PairAlignment", "align_from_parts", "align_pair", "split_mask"]


def split_mask(n_stimuli: int, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Held-out stimuli of the sparse-prediction path (bool per stimulus, seeded).

    At least one stimulus is held out (``round(test_fraction * n_stimuli)``, at least 1).
    """
    n_stimuli = whole_number(n_stimuli, "n_stimuli", 1)
    if isinstance(test_fraction, (bool, np.bool_)) or not isinstance(
            test_fraction, (int, float, np.integer, np.floating)) or not 0 < test_fraction < 1:
        raise ActstoreError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    seed = whole_number(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    k = max(1, round(test_fraction * n_stimuli))
    mask = np.zeros(n_stimuli, dtype=bool)
    mask[rng.permutation(n_stimuli)[:k]] = True
    return mask


@dataclass
class PairAlignment:
    """Alignment of the units of net A and net B at one layer.

    Attributes
    ----------
    names : (str, str)
    corr : UnitCorrelations
    semi_ab, semi_ba : (index, value)
        Semi-matching A -> B and B -> A on correlations.
    bipartite : (index, value)
        Hungarian matching A -> B on correlations.
    mi : ndarray of shape (da, db) or None
        Mutual information (nats).
    mi_bipartite : (index, value) or None
        Hungarian matching on mutual information.
    lasso : LassoPath or None
        Sparse prediction of B's units from A's.
    """

    names: tuple[str, str]
    corr: UnitCorrelations
    semi_ab: tuple[np.ndarray, np.ndarray]
    semi_ba: tuple[np.ndarray, np.ndarray]
    bipartite: tuple[np.ndarray, np.ndarray]
    mi: np.ndarray | None = None
    mi_bipartite: tuple[np.ndarray, np.ndarray] | None = None
    lasso: LassoPath | None = None

    def __repr__(self) -> str:
        da, db = self.corr.between.shape
        matched = np.asarray(self.bipartite[1], dtype=np.float64)
        mean = float(np.mean(matched)) if matched.size else float("nan")
        extra = [what for what, v in (("mi", self.mi), ("lasso", self.lasso)) if v is not None]
        return (f"PairAlignment(names={tuple(self.names)!r}, da={da}, db={db}, "
                f"bipartite_corr_mean={mean:.3g}, with={extra})")
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Layer-level numbers: mean matched correlations, MI, LASSO losses per penalty."""
        ok_a = ~self.corr.constant_a
        out: dict[str, Any] = {
            "run_a": self.names[0],
            "run_b": self.names[1],
            "units_a": len(ok_a),
            "units_b": len(self.corr.constant_b),
            "constant_a": int(self.corr.constant_a.sum()),
            "constant_b": int(self.corr.constant_b.sum()),
            "bipartite_corr": _nanmean(self.bipartite[1][ok_a]),
            "semi_corr": _nanmean(self.semi_ab[1][ok_a]),
        }
        if self.mi is not None and self.mi_bipartite is not None:
            out["bipartite_mi"] = _nanmean(self.mi_bipartite[1])
            out["semi_mi"] = float(self.mi.max(axis=1).mean()) if self.mi.size else float("nan")
        if self.lasso is not None:
            live = ~self.lasso.constant_y
            for a, tl, nz in zip(self.lasso.alphas, self.lasso.test_loss, self.lasso.nonzero,
                                 strict=True):
                out[f"lasso_test_loss@{a:g}"] = _nanmean(tl[live])
                out[f"lasso_nonzero@{a:g}"] = _nanmean(nz[live].astype(float))
        return out


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def align_from_parts(
    names: tuple[str, str],
    full: PairMoments,
    train: PairMoments | None = None,
    test: PairMoments | None = None,
    mi: np.ndarray | None = None,
    alphas: Sequence[float] = LASSO_ALPHAS,
) -> PairAlignment:
    """Assemble a :class:`PairAlignment` from streamed moments and an MI matrix.

    Raises
    ------
    ActstoreError
        If the moments hold NaN or infinite values (the activations did), if ``mi`` is not a
        finite (da, db) matrix, or for penalties that are not finite numbers >= 0.
    """
    for part, m in (("full", full), ("train", train), ("test", test)):
        if m is None:
            continue
        sums = (m.sx, m.sy, m.sxx, m.sxy, m.syy)
        if not all(np.isfinite(v).all() for v in sums):
            raise ActstoreError(
                f"the {part} moments of {names[0]!r} and {names[1]!r} hold NaN or infinite "
                "values: the activations of one of the runs do; check the run (diverged "
                "training?) or leave it out"
            )
    if train is not None and test is not None:
        check_alphas(alphas)
    corr = correlations_from_moments(full)
    C = corr.between
    if mi is not None:
        mi = similarity_input(mi, "mi (the mutual information matrix)")
        if mi.shape != C.shape:
            raise ActstoreError(
                f"mi has shape {mi.shape} but the nets have {C.shape[0]} and {C.shape[1]} "
                "units; give the (da, db) mutual information of the same two nets"
            )
    mi_bip = unchecked_bipartite(mi) if mi is not None else None
    lasso = (
        sparse_prediction(train, test, alphas)
        if train is not None and test is not None
        else None
    )
    return PairAlignment(
        names=names, corr=corr, semi_ab=unchecked_semi(C), semi_ba=unchecked_semi(C.T),
        bipartite=unchecked_bipartite(C), mi=mi, mi_bipartite=mi_bip, lasso=lasso,
    )


def align_pair(
    A: Any,
    B: Any,
    *,
    names: tuple[str, str] = ("a", "b"),
    groups: Any = None,
    mutual_info: bool = True,
    bins: int = 10,
    lasso: bool = True,
    alphas: Sequence[float] = LASSO_ALPHAS,
    test_fraction: float = 0.2,
    seed: int = 0,
    block: int = 4096,
) -> PairAlignment:
    """Align the units of two in-memory representations of the same samples.

    Parameters
    ----------
    A : array of shape (n, da)
    B : array of shape (n, db)
        Rows are the same samples (stimuli, or stimulus x position for conv maps).
    names : (str, str)
        Labels of the two nets.
    groups : array of shape (n,), int, optional
        Stimulus of each row; the held-out split keeps all rows of a stimulus together
        (default: every row its own stimulus).
    mutual_info, lasso : bool
        Compute the binned mutual information / the sparse-prediction path.
    bins : int
        Bins per unit for mutual information.
    alphas : sequence of float
        LASSO penalty path: finite numbers >= 0 (0 is the least-squares fit).
    test_fraction, seed
        Held-out share of stimuli for the LASSO path, and its seed.
    block : int
        Rows per streamed block of the moments.

    Returns
    -------
    PairAlignment

    Raises
    ------
    ActstoreError
        For arrays that are not 2-D (n_samples, units) with the same ``n >= 2`` samples and
        at least one unit, NaN or infinite values (counted, with the first position),
        ``groups`` not of length n, penalties that are not finite numbers >= 0, ``bins``
        below 3, or a split that leaves no training stimulus for the LASSO path.
    """
    if isinstance(names, str) or not isinstance(names, (tuple, list)) or len(names) != 2:
        raise ActstoreError(f"names must be two labels (name_a, name_b), got {names!r}")
    names = (check_text(names[0], "names[0]"), check_text(names[1], "names[1]"))
    A = sample_array(A, f"A ({names[0]!r})")
    B = sample_array(B, f"B ({names[1]!r})")
    n = len(A)
    if n != len(B):
        raise ActstoreError(
            f"{names[0]!r} {A.shape} and {names[1]!r} {B.shape} are not two (samples, units) "
            "arrays over the same samples; select runs recorded on one probe set"
        )
    if n < 2:
        raise ActstoreError(
            f"{names[0]!r} and {names[1]!r} have {n} sample; correlations need at least 2 "
            "samples (rows)"
        )
    block = whole_number(block, "block", 1)
    seed = whole_number(seed, "seed", 0)
    if mutual_info:
        bins = check_bins(bins, 1e-6)
    if lasso:
        check_alphas(alphas)
    if groups is None:
        g = np.arange(n)
    else:
        g = np.asarray(to_numpy(as_array(groups, "groups")))
        if g.shape != (n,):
            raise ActstoreError(
                f"groups has shape {g.shape}, but there are {n} samples; give one stimulus "
                f"label per row, shape ({n},)"
            )
        check_finite(g, "groups", "give an integer stimulus label for every row")
    stim = np.unique(g, return_inverse=True)[1].reshape(-1)
    test_rows = split_mask(int(stim.max()) + 1, test_fraction, seed)[stim]
    if lasso and test_rows.all():
        raise ActstoreError(
            f"the held-out split of {int(stim.max()) + 1} stimulus/stimuli at test_fraction "
            f"{test_fraction} leaves no stimulus to fit the LASSO path on; give more samples "
            "or stimuli (groups), a smaller test_fraction, or lasso=False"
        )
    shift_a, shift_b = A[:block].mean(axis=0), B[:block].mean(axis=0)
    train_m = PairMoments.empty(shift_a, shift_b)
    test_m = PairMoments.empty(shift_a, shift_b)
    for s in range(0, len(A), block):
        t = test_rows[s : s + block]
        a, b = A[s : s + block], B[s : s + block]
        train_m.update(a[~t], b[~t])
        test_m.update(a[t], b[t])
    mi = mutual_information(A, B, bins) if mutual_info else None
    return align_from_parts(
        names, train_m + test_m, train_m if lasso else None, test_m if lasso else None, mi,
        alphas,
    )
