"""Representational dissimilarity matrices (RDMs), computed block by block.

An RDM of a representation ``X`` (n stimuli x d units) is the n x n matrix of distances between
its activation patterns (rows). The all-pairs engine of :mod:`actstore.probes._similarity` never
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

__all__ = ["RDM_KINDS", "pattern_form", "rdm_strip", "strict_upper_mask"]

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
    if kind == "correlation":
        Z = X - xp.mean(X, axis=1, keepdims=True)
    elif kind == "cosine":
        Z = X
    elif kind in ("euclidean", "sqeuclidean"):
        Z = X - xp.mean(X, axis=0, keepdims=True)
        return Z, xp.sum(Z * Z, axis=1)
    else:
        raise ValueError(f"unknown RDM distance {kind!r}; choose one of {', '.join(RDM_KINDS)}")
    norm = xp.sqrt(xp.sum(Z * Z, axis=1, keepdims=True))
    # A zero pattern keeps zero entries: its dot products, hence correlations, are 0.
    safe = xp.where(norm > 0, norm, xp.ones_like(norm))
    Z = Z / safe
    return Z, xp.sum(Z * Z, axis=1)


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


def _diag_mask(h: int, width: int, xp: Any, like: Any) -> Any:
    """Boolean (h, width) mask of the positions (i, i): the diagonal of the full matrix."""
    rows = xp.arange(h, device=_device(like))
    cols = xp.arange(width, device=_device(like))
    return rows[:, None] == cols[None, :]


def strict_upper_mask(h: int, width: int, xp: Any, like: Any) -> Any:
    """Boolean (h, width) mask of the positions (i, j) with j > i (strictly above the diagonal)."""
    rows = xp.arange(h, device=_device(like))
    cols = xp.arange(width, device=_device(like))
    return cols[None, :] > rows[:, None]


def _device(x: Any) -> Any:
    from array_api_compat import device

    return device(x)
