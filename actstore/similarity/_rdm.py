"""Representational dissimilarity matrices (RDMs), computed block by block.

An RDM of a representation ``X`` (n stimuli x d units) is the n x n matrix of distances between
its activation patterns (rows). The all-pairs engine of :mod:`actstore.similarity._similarity` never
holds a whole RDM of every representation: it asks for horizontal strips ``D[r0:r1, r0:]`` (the
rows of one stimulus block, from the block's first column to the end). The strip holds a square
part ``D[r0:r1, r0:r1]`` and a right part ``D[r0:r1, r1:]``; by symmetry every off-diagonal
entry of the full matrix is seen once in a square part or twice (as ``D[i, j]`` and ``D[j, i]``)
through a right part, which the engine weights by 2.

Distances (``rdm=``):

``correlation``
    ``1 - pearson(x_i, x_j)`` across units (rsatoolbox ``calc_rdm(method="correlation")``).
``cosine``
    ``1 - cos(x_i, x_j)``.
``euclidean``
    ``||x_i - x_j||`` (scipy ``pdist``).
``sqeuclidean``
    ``||x_i - x_j||^2``; rsatoolbox's ``euclidean`` RDM is this divided by the number of units,
    a scale that no comparison below sees.

A pattern whose norm is zero after centring (a constant activation pattern for ``correlation``,
an all-zero one for ``cosine``) has no defined correlation or cosine: it is given distance 1 to
every other pattern (correlation 0) and 0 to itself, instead of NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._backend import array_device, to_numpy
from actstore.similarity._signatures import (
    _REL_CONSTANT,
    Signature,
    _centre,
    _diag_mask,
    _zero_diagonal_,
    fresh_copy,
    row_sqnorms,
    strict_upper_mask,
)

__all__ = [
    "RDM_COMPARES",
    "RDM_KINDS",
    "pattern_form",
    "rdm_strip",
    "rsa_signature",
    "strict_upper_mask",
]

#: Distances between activation patterns understood by :func:`rdm_strip`.
RDM_KINDS = ("correlation", "cosine", "euclidean", "sqeuclidean")


def pattern_form(X: Any, kind: str, xp: Any) -> tuple[Any, Any]:
    """Transform the patterns once so that every RDM strip is one matrix product.

    Parameters
    ----------
    X : array of shape (n_stimuli, n_units), float64
        Activation patterns, one row per stimulus.
    kind : {"correlation", "cosine", "euclidean", "sqeuclidean"}
        Distance.
    xp : namespace
        Array namespace of ``X``.

    Returns
    -------
    Z : array of shape (n_stimuli, n_units), float64
        Unit-norm patterns (``correlation``: centred across units first; ``cosine``), or
        column-centred patterns (euclidean kinds: distances are translation invariant and
        centring reduces cancellation in ``a_i + a_j - 2 z_i.z_j``).
    sqnorm : array of shape (n_stimuli,), float64
        Squared row norms of ``Z`` (used by the euclidean kinds).
    """
    if kind not in RDM_KINDS:
        raise ValueError(f"unknown RDM distance {kind!r}; choose one of {', '.join(RDM_KINDS)}")
    # one n x d array, worked on in place (fresh memory is slow to fault in, see fresh_empty)
    Z = fresh_copy(X, xp)
    if kind == "correlation":
        Z -= xp.mean(X, axis=1, keepdims=True)
    elif kind in ("euclidean", "sqeuclidean"):
        Z -= xp.mean(X, axis=0, keepdims=True)
        return Z, row_sqnorms(Z, xp)
    norm = xp.sqrt(row_sqnorms(Z, xp))[:, None]
    # A pattern with nothing but round-off left after centring (constant across units) is a
    # zero pattern: normalising the round-off would make a random direction of it.
    raw = xp.sqrt(row_sqnorms(X, xp))[:, None]
    defined = norm > _REL_CONSTANT * raw
    # A zero pattern keeps zero entries: its dot products, hence correlations, are 0.
    Z /= xp.where(defined, norm, xp.ones_like(norm))
    Z[~defined[:, 0]] = 0.0
    return Z, row_sqnorms(Z, xp)


def rdm_strip(Z: Any, sqnorm: Any, kind: str, r0: int, r1: int, xp: Any) -> Any:
    """Rows ``r0:r1`` of the RDM, columns ``r0:``, with a zero diagonal.

    Parameters
    ----------
    Z, sqnorm : arrays
        Output of :func:`pattern_form`.
    kind : str
        Distance (see :data:`RDM_KINDS`).
    r0, r1 : int
        Stimulus block.
    xp : namespace
        Array namespace of ``Z``.

    Returns
    -------
    array of shape (r1 - r0, n_stimuli - r0), float64
    """
    G = Z[r0:r1, :] @ Z[r0:, :].T  # (h, n - r0)
    if kind in ("correlation", "cosine"):
        D = 1.0 - G
    else:
        D = sqnorm[r0:r1, None] + sqnorm[None, r0:] - 2.0 * G
        D = xp.maximum(D, xp.zeros_like(D))
        if kind == "euclidean":
            D = xp.sqrt(D)
    return xp.where(_diag_mask(r1 - r0, D.shape[1], xp, D), xp.zeros_like(D), D)


#: Distances of one RDM closer than this fraction of its scale are ties for Spearman ranks
#: (several thousand ulps in float64: far above the round-off of the distance products, far
#: below any difference that means something).
_TIE_REL = {"float64": 1e-12, "float32": 1e-5}


def _tie_ranks(v: Any, tol: float, xp: Any) -> Any:
    """Average ranks (1-based) of ``v``; values within ``tol`` of their sorted neighbour tie.

    Vectorised: sort, cut the sorted values where a gap exceeds ``tol``, and give every value
    of a group the mean of the group's first and last positions.
    """
    N = v.shape[0]
    if N == 0:
        return xp.zeros_like(v)
    dev = array_device(v)
    order = xp.argsort(v)
    s = xp.take(v, order)
    gap = (s[1:] - s[:-1]) > tol
    new = xp.concat([xp.ones((1,), dtype=xp.bool, device=dev), gap])
    group = xp.cumulative_sum(xp.astype(new, xp.int64)) - 1
    starts = xp.nonzero(new)[0]
    ends = xp.concat([starts[1:], xp.asarray([N], dtype=starts.dtype, device=dev)])
    lo = xp.astype(xp.take(starts, group), v.dtype)
    hi = xp.astype(xp.take(ends, group), v.dtype)
    r = xp.zeros_like(v)
    r[order] = (lo + hi + 1.0) / 2.0
    return r


#: How two RDMs are compared (``compare=``).
RDM_COMPARES = ("pearson", "spearman", "cosine")


class _RSA(Signature):
    """An RDM (or its ranks) in strips; duplicate-stimulus pairs of a bootstrap are left out."""

    def __init__(
        self, X: Any, xp: Any, rdm: str, compare: str, idx: Any, chunks: list
    ) -> None:
        n = X.shape[0]
        dup_ordered = 0
        if idx is not None:
            _, counts = np.unique(to_numpy(idx), return_counts=True)
            dup_ordered = int(np.sum(counts * (counts - 1)))
        super().__init__(X, xp, n_entries=n * (n - 1) - dup_ordered)
        self.rdm, self.compare, self.idx = rdm, compare, idx
        self.centred_entries = compare in ("pearson", "spearman")
        self.Z, self.sq = pattern_form(X, rdm, xp)
        # Distinct patterns, and which one each stimulus has: identical patterns (dead-ReLU
        # stimuli, copies in a bootstrap draw) must get distance exactly 0 and ties exactly
        # tied, which a blocked product of the patterns does not promise. Only ranks and the
        # euclidean kinds (sqrt of round-off) need it: 1 - z.z of identical unit patterns is
        # round-off itself.
        self.first: Any = None
        self.pattern: Any = None
        if compare == "spearman" or rdm in ("euclidean", "sqeuclidean"):
            _, first, inv = np.unique(to_numpy(self.Z), axis=0, return_index=True,
                                      return_inverse=True)
            self.first = xp.asarray(first, device=array_device(self.Z))
            self.pattern = xp.asarray(np.asarray(inv).reshape(-1), device=array_device(self.Z))
        # Identical activation patterns for every stimulus: no structure to compare.
        self.degenerate = _centre(X, xp, keep=False)[1]
        if rdm in ("correlation", "cosine"):
            # Fewer than two patterns with a defined correlation (cosine), e.g. 1-unit
            # patterns for ``correlation``: every distance is set by the zero-pattern
            # convention, the RDM is undefined whatever the comparison.
            defined = int(xp.sum(xp.astype(self.sq > 0.5, xp.int64)))
            self.degenerate = self.degenerate or defined < 2
        self.ranks: dict[tuple[int, int], Any] | None = None
        if compare == "spearman":
            self._rank(chunks)

    def _distances(self, r0: int, r1: int) -> Any:
        xp = self.xp
        D = rdm_strip(self.Z, self.sq, self.rdm, r0, r1, xp)
        # Identical patterns are at distance 0, not at the square root of round-off
        # (euclidean). A stimulus drawn twice in a bootstrap is such a pair: those pairs
        # carry no information and are dropped (``_valid``), as rsatoolbox does (NaN there).
        if self.pattern is not None:
            same = self.pattern[r0:r1, None] == self.pattern[None, r0:]
            D = xp.where(same, xp.zeros_like(D), D)
        elif self.idx is not None:
            same = self.idx[r0:r1, None] == self.idx[None, r0:]
            D = xp.where(same, xp.zeros_like(D), D)
        return D

    def _valid(self, r0: int, r1: int, D: Any) -> Any:
        xp = self.xp
        mask = strict_upper_mask(r1 - r0, self.n - r0, xp, D)
        if self.idx is not None:
            mask = mask & (self.idx[r0:r1, None] != self.idx[None, r0:])
        return mask

    def _rank(self, chunks: list) -> None:
        """Average ranks (1-based, ties averaged) of the counted upper-triangle entries.

        Ranks need exact ties, which a blocked matrix product does not give:
        ``a_i + a_j - 2 z_i.z_j`` (or ``1 - z_i.z_j``) splits equal distances by round-off.
        Two measures keep ties tied. Identical activation patterns (copies of a stimulus in
        a bootstrap draw, dead-ReLU patterns) get bit-identical distances: distances are
        computed once between the distinct patterns, made exactly symmetric, and gathered.
        Distinct pairs at the same distance (e.g. binary or integer activations) agree only
        to round-off: sorted distances closer than :data:`_TIE_REL` times the scale of the
        RDM (its largest entry, or the norms it was cancelled from) are one tie group.
        ``euclidean`` is ranked through ``sqeuclidean`` (same order, no square root that
        would magnify the round-off of small distances).
        """
        xp = self.xp
        kind = "sqeuclidean" if self.rdm == "euclidean" else self.rdm
        Zu = xp.take(self.Z, self.first, axis=0)
        squ = xp.take(self.sq, self.first, axis=0)
        Du = rdm_strip(Zu, squ, kind, 0, self.first.shape[0], xp)
        Du = (Du + Du.T) / 2.0  # exactly symmetric
        inv_x = self.pattern
        values, masks = [], []
        for r0, r1 in chunks:
            D = xp.take(xp.take(Du, inv_x[r0:r1], axis=0), inv_x[r0:], axis=1)
            m = self._valid(r0, r1, D)
            values.append(D[m])
            masks.append(m)
        v = xp.concat(values)
        # Scale of the round-off: the largest distance, or the terms it was cancelled from
        # (a_i + a_j for the euclidean kinds, 1 for unit patterns).
        scale = max(float(xp.max(xp.abs(Du))), 2.0 * float(xp.max(squ)))
        r = _tie_ranks(v, _TIE_REL.get(str(self.Z.dtype).split(".")[-1], 1e-5) * scale, xp)
        self.ranks = {}
        at = 0
        for (r0, r1), m in zip(chunks, masks, strict=True):
            k = int(xp.sum(xp.astype(m, xp.int64)))
            R = xp.zeros(m.shape, dtype=v.dtype, device=array_device(v))
            R[m] = r[at : at + k]
            at += k
            h = r1 - r0
            # The square part is symmetric: mirror its upper triangle below the diagonal.
            sq = R[:, :h] + R[:, :h].T
            self.ranks[(r0, r1)] = xp.concat([sq, R[:, h:]], axis=1)

    def fill(self, r0: int, r1: int, sq: Any, rt: Any) -> None:
        if self.ranks is not None or self.rdm not in ("correlation", "cosine"):
            return super().fill(r0, r1, sq, rt)
        xp = self.xp
        A = self.Z[r0:r1, :]
        xp.matmul(A, A.T, out=sq)
        xp.matmul(A, self.Z[r1:, :].T, out=rt)
        if self.compare != "pearson":
            for part in (sq, rt):
                part *= -1.0
                part += 1.0
        # else: a Pearson correlation is unchanged when both RDMs go through the same map
        # d -> 1 - d, so the strips keep the similarities themselves (two passes fewer).
        _zero_diagonal_(sq, xp)
        if self.idx is not None:
            sq[self.idx[r0:r1, None] == self.idx[None, r0:r1]] = 0.0
            if r1 < self.n:
                rt[self.idx[r0:r1, None] == self.idx[None, r1:]] = 0.0

    def strip(self, r0: int, r1: int) -> Any:
        if self.ranks is not None:
            try:
                return self.ranks[(r0, r1)]
            except KeyError:
                raise ValueError(
                    f"Spearman RSA strips were ranked for other stimulus blocks than {r0}:{r1}"
                ) from None
        return self._distances(r0, r1)


def rsa_signature(
    X: Any,
    *,
    rdm: str = "correlation",
    compare: str = "pearson",
    idx: Any = None,
    chunks: list | None = None,
) -> Signature:
    """Representational similarity analysis: compare the representations' RDMs.

    ``sim(X, Y) = compare(upper(RDM_X), upper(RDM_Y))`` over the n (n - 1) / 2 stimulus pairs,
    as rsatoolbox ``compare(calc_rdm(...), calc_rdm(...), method=...)``.

    Parameters
    ----------
    X : array of shape (n_stimuli, n_units), float64
        Activations (after any bootstrap resampling).
    rdm : {"correlation", "cosine", "euclidean", "sqeuclidean"}
        Distance between activation patterns (see the module docstring).
    compare : {"pearson", "spearman", "cosine"}
        How the upper triangles are compared (rsatoolbox ``corr``, ``spearman``, ``cosine``);
        Spearman ranks are averaged over ties.
    idx : array of shape (n_stimuli,), int, optional
        Original index of each stimulus of a bootstrap sample; pairs of copies of one
        stimulus are left out of the comparison.
    chunks : list of (int, int), optional
        Stimulus blocks the engine will read (Spearman ranks are cached per block).

    Returns
    -------
    Signature
        Gram form only: the RDM (``spearman``: its ranks), n_stimuli x n_stimuli, in the
        namespace, device and dtype of ``X``. Counted entries: the off-diagonal ones, less the
        pairs of copies of a stimulus; compared by Pearson correlation for ``pearson`` and
        ``spearman``, by cosine for ``cosine``.
    """
    from actstore.core._backend import get_namespace

    xp = get_namespace(X)
    if rdm not in RDM_KINDS:
        raise ActstoreError(f"unknown RDM distance {rdm!r}; choose one of {', '.join(RDM_KINDS)}")
    if compare not in RDM_COMPARES:
        raise ActstoreError(
            f"unknown RDM comparison {compare!r}; choose one of {', '.join(RDM_COMPARES)}"
        )
    n = X.shape[0]
    if n < 3:
        raise ActstoreError(f"RSA needs at least 3 stimuli, got {n}; select more stimuli")
    return _RSA(X, xp, rdm, compare, idx, chunks or [(0, n)])
