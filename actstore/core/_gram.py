"""The n x n Gram matrix of a layer's activations, for decoders in the dual (kernel) form.

When there are more units than samples, ``X X^T`` (n, n) is the smaller statistic: it is
accumulated tile by tile from blocks of rows (:func:`accumulate_gram`), of the raw shifted
units or of units z-scored with one fold's training statistics (:func:`fold_gram`, from the
per-group unit sums of :func:`unit_sums`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from actstore._errors import ActstoreError
from actstore.core._backend import array_device, get_namespace
from actstore.core._blocks import BlockSource
from actstore.core._folds import Folds
from actstore.core._stats import UnitSums, new_unit_sums

__all__ = ["FOLD_GRAM_CACHE_BYTES", "GramStats", "accumulate_gram", "fold_gram", "unit_sums"]


@dataclass
class GramStats:
    """The full Gram matrix of the shifted activations, for the dual (kernel) solver.

    Attributes
    ----------
    G : array of shape (n_samples, n_samples), float64
        ``(X - shift)(X - shift)^T``.
    """

    G: Any
    #: Per-fold-group unit sums, when the Gram was accumulated with folds.
    units: UnitSums | None = field(default=None, repr=False, compare=False)


#: Memory for the per-fold kernels of one job that its decoders share.
FOLD_GRAM_CACHE_BYTES = 256 * 2**20


def fold_gram(source: BlockSource, units: UnitSums, k: int) -> GramStats:
    """The n x n Gram of all rows with every unit divided by its standard deviation over
    fold ``k``'s training rows (:meth:`UnitSums.scale`).

    Computed once per fold and kept on ``units`` when all folds' kernels fit
    :data:`FOLD_GRAM_CACHE_BYTES`, so that the ridge and logistic decoders of a job share them.
    """
    if k in units.grams:
        return units.grams[k]
    gram = accumulate_gram(source, scale=units.scale(exclude=k))
    if source.n * source.n * 8 * len(units.count) <= FOLD_GRAM_CACHE_BYTES:
        units.grams[k] = gram
    return gram


def unit_sums(source: BlockSource, folds: Folds) -> UnitSums:
    """One cheap pass (no products): per-fold-group unit counts, sums and sums of squares."""
    st: UnitSums | None = None
    group = folds.group_of()
    for a, b, block in source.blocks():
        xp = get_namespace(block)
        Xa = xp.astype(block, xp.float64)
        if st is None:
            st = new_unit_sums(folds, xp.mean(Xa, axis=0))
        st.add(group[a:b], Xa - st.shift)
    if st is None:
        raise ActstoreError(f"{source.name}: no activation rows to read")
    return st


def accumulate_gram(
    source: BlockSource, cache_bytes: int = 256 * 2**20, scale: Any = None
) -> GramStats:
    """Accumulate ``X X^T`` (n, n) in float64 from row blocks.

    Each pair of blocks contributes one tile. Earlier blocks are kept (in float64) while they
    fit in ``cache_bytes``; beyond that the inner loop re-reads them from ``source``, so memory
    stays bounded by the Gram matrix plus two blocks.

    Parameters
    ----------
    source : BlockSource
        Activations of shape (n_samples, n_units), read in row blocks (e.g.
        :class:`ArraySource`, :class:`CachedSource`).
    cache_bytes : int
        Memory for keeping earlier blocks instead of re-reading them.
    scale : array of shape (n_units,), optional
        Divide every unit by this (after the shift): the Gram of z-scored units.

    Returns
    -------
    GramStats
        ``G`` of shape (n_samples, n_samples), float64, on the device of the blocks, of the
        activations shifted by their column means.

    Raises
    ------
    ActstoreError
        If ``source`` yields no rows.
    """
    G = None
    shift = None
    kept: list[tuple[int, int, Any]] | None = []
    used = 0
    for a, b, block in source.blocks():
        xp = get_namespace(block)
        Xa = xp.astype(block, xp.float64)
        if G is None:
            shift = xp.mean(Xa, axis=0)
            G = xp.zeros((source.n, source.n), dtype=xp.float64, device=array_device(Xa))
        Xa = Xa - shift if scale is None else (Xa - shift) / scale
        G[a:b, a:b] = Xa @ xp.matrix_transpose(Xa)
        for c, e, Xc in kept if kept is not None else _earlier(source, a, shift, scale):
            tile = Xa @ xp.matrix_transpose(Xc)  # (b - a, e - c)
            G[a:b, c:e] = tile
            G[c:e, a:b] = xp.matrix_transpose(tile)
        if kept is not None:
            used += (b - a) * source.d * 8
            if used <= cache_bytes:
                kept.append((a, b, Xa))
            else:
                kept = None
    if G is None:
        raise ActstoreError(f"{source.name}: no activation rows to read")
    return GramStats(G)


def _earlier(source: BlockSource, stop: int, shift: Any, scale: Any = None
             ) -> Iterator[tuple[int, int, Any]]:
    """Re-read the blocks of ``source`` that end at or before row ``stop``."""
    for c, e, blk in source.blocks():
        if e > stop:
            return
        xp = get_namespace(blk)
        out = xp.astype(blk, xp.float64) - shift
        yield c, e, out if scale is None else out / scale
