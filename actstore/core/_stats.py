"""Streaming float64 sufficient statistics of activations, per cross-validation group.

The activation matrix ``X`` (n_samples, n_units) of one (run, checkpoint, layer) is read in
blocks of rows. Samples fall in disjoint groups (one per held-out fold, plus the rows that
always train), and for each group we accumulate, in float64 on the array's device:

* the count, the column sums of ``X`` and of the targets ``Y``,
* ``X^T X`` (n_units, n_units) and ``X^T Y`` (n_units, n_columns) for all features at once.

The training statistics of fold ``k`` are the sums over every group but ``k``. Rows are shifted
by the first block's mean before accumulating, so that centring by subtraction later does not
lose precision when activations have a large offset (the shift cancels in centred moments).

When there are more units than samples, the n x n Gram matrix ``X X^T`` is the smaller
statistic (:func:`accumulate_gram`); it also gives held-out predictions without a second pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from actstore._args import as_array
from actstore._errors import ActstoreError
from actstore.core._backend import get_namespace, move_to, to_numpy
from actstore.core._folds import Folds
from actstore.core._reprs import array_summary, short_text

__all__ = [
    "ArraySource",
    "BlockSource",
    "CachedSource",
    "GramStats",
    "GroupStats",
    "Moments",
    "UnitSums",
    "accumulate_gram",
    "accumulate_groups",
    "coalesce",
    "fold_gram",
    "unit_scale",
    "unit_sums",
]


class BlockSource(Protocol):
    """Anything that can stream an (n, d) activation matrix in blocks of rows, repeatedly."""

    n: int
    d: int
    name: str

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(start, stop, block)`` with ``block`` of shape (stop - start, d)."""
        ...


@dataclass
class ArraySource:
    """A :class:`BlockSource` over an in-memory array (numpy, torch or cupy).

    Parameters
    ----------
    X : array of shape (n_samples, n_units)
    block_rows : int
        Rows per block.
    name : str
        Used in error messages.
    """

    X: Any
    block_rows: int = 4096
    name: str = "activations"

    def __repr__(self) -> str:
        return (f"ArraySource({short_text(self.name)}, {array_summary(self.X)}, "
                f"block_rows={self.block_rows})")

    def __post_init__(self) -> None:
        self.X = as_array(self.X, self.name)
        if len(self.X.shape) != 2:
            raise ActstoreError(f"{self.name}: activations must be 2-D, got {tuple(self.X.shape)}")
        self.n, self.d = int(self.X.shape[0]), int(self.X.shape[1])
        if self.d == 0:
            raise ActstoreError(f"{self.name} of shape {tuple(self.X.shape)} have no units; "
                                "give at least one")
        if "complex" in str(self.X.dtype):
            raise ActstoreError(f"{self.name}: activations of dtype {self.X.dtype}; give real "
                                "numbers")

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        for a in range(0, self.n, self.block_rows):
            b = min(a + self.block_rows, self.n)
            yield a, b, self.X[a:b, ...]


class CachedSource:
    """Wrap a source: blocks are moved to ``backend`` and kept while they fit ``cache_bytes``.

    The first pass reads the underlying source; later passes reuse the cached blocks when the
    whole matrix fit, and re-read the source otherwise (memory stays bounded either way).

    Parameters
    ----------
    source : BlockSource
    backend : str, optional
        ``"numpy"``, ``"torch"``, ``"cuda"`` or ``"cupy"`` (:func:`move_to`); ``None`` keeps the
        blocks as the source yields them.
    cache_bytes : int
        Budget for cached blocks.
    check_finite : bool
        Refuse NaN/inf values (checked on the first pass).
    """

    def __init__(
        self,
        source: BlockSource,
        backend: str | None = None,
        cache_bytes: int = 256 * 2**20,
        check_finite: bool = True,
    ) -> None:
        self.source = source
        self.n, self.d, self.name = source.n, source.d, source.name
        self.backend = backend
        self.cache_bytes = cache_bytes
        self.check_finite = check_finite
        self._cache: list[tuple[int, int, Any]] | None = None
        self._passes = 0
        self._checked = not check_finite

    @property
    def passes(self) -> int:
        """How many times the underlying source was read."""
        return self._passes

    def _convert(self, a: int, b: int, block: Any, check: bool) -> Any:
        if check:
            # checked where the block lives (numpy, torch or cupy): a device block is not
            # copied to the host for it, and one flag comes back
            arr = block if _is_array(block) else np.asarray(block)
            xp = get_namespace(arr)
            if not bool(xp.all(xp.isfinite(arr))):
                bad = a + int(np.flatnonzero(~np.isfinite(to_numpy(arr)).all(axis=1))[0])
                raise ActstoreError(
                    f"{self.name}: activations hold NaN or infinite values (first in sample row "
                    f"{bad}); re-capture the checkpoint or leave the layer out (--layers)"
                )
        return block if self.backend is None else move_to(block, self.backend)

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        if self._cache is not None:
            yield from self._cache
            return
        self._passes += 1
        check = not self._checked
        cache: list[tuple[int, int, Any]] | None = [] if self.cache_bytes > 0 else None
        used = 0
        rows = 0
        for a, b, block in self.source.blocks():
            blk = self._convert(a, b, block, check)
            rows += b - a
            if cache is not None:
                used += (b - a) * self.d * int(_itemsize(blk))
                if used <= self.cache_bytes:
                    cache.append((a, b, blk))
                else:
                    cache = None
            yield a, b, blk
        if rows == self.n:
            self._checked = True
            if cache is not None:
                self._cache = cache


def _is_array(x: Any) -> bool:
    from array_api_compat import is_cupy_array, is_torch_array

    return isinstance(x, np.ndarray) or is_torch_array(x) or is_cupy_array(x)


def _itemsize(x: Any) -> int:
    dt = x.dtype
    return int(getattr(dt, "itemsize", None) or np.dtype(str(dt).replace("torch.", "")).itemsize)


@dataclass
class Moments:
    """Centred training moments of one fold.

    Attributes
    ----------
    n : float
    mean_x : array (d,), mean_y : array (q,)
        Means in the original coordinates.
    C : array (d, d)
        Centred ``X^T X``.
    B : array (d, q)
        Centred ``X^T Y``.
    offset_x : array (d,), optional
        Mean of the shifted values the moments were summed from (sets their round-off).
    """

    n: float
    mean_x: Any
    mean_y: Any
    C: Any
    B: Any
    offset_x: Any = None


def unit_scale(var: Any, mean: Any, n: float, fallback: Any = None, offset: Any = None
               ) -> Any:
    """Standard deviations for z-scoring, with 1 for constant units (scikit-learn's rule).

    A unit counts as constant when its variance is within round-off of zero
    (``var <= n * eps * var + (n * mean * eps)^2``, as ``StandardScaler`` decides); its
    centred values are then zero, so it contributes nothing to a fit whatever its scale, and
    nothing is divided by zero.

    Parameters
    ----------
    var : array (d,)
        Population variances (``ddof=0``) of the training rows.
    mean : array (d,)
        Their means.
    n : float
        Number of training rows.
    fallback : array (d,), optional
        The value for constant units instead of 1 (any positive value gives the same fit:
        a unit that is constant in the training rows gets a zero coefficient).
    offset : array (d,), optional
        Mean of the values the variance was accumulated from (``mean - shift`` for sums of
        shifted values): its square sets the round-off of ``E[x^2] - E[x]^2``, which a
        constant unit must not pass for spread (it would be blown up to unit variance).
    """
    xp = get_namespace(var)
    eps = float(np.finfo(np.float64).eps)
    var = xp.clip(var, 0.0, None)
    bound = n * eps * var + (n * mean * eps) ** 2
    if offset is not None:
        bound = bound + 4.0 * n * eps * offset * offset
    return xp.where(var <= bound, xp.ones_like(var) if fallback is None else fallback,
                    xp.sqrt(var))


@dataclass
class UnitSums:
    """Per-group counts, sums and sums of squares of every unit (shifted by ``shift``).

    The diagonal of each group's Gram: cheap to accumulate in the same pass as the rest, and
    enough for the per-unit mean and standard deviation of the training rows of any fold
    (the sums over every group but the held-out one), which standardised decoders use.

    Attributes
    ----------
    count : ndarray (G,)
    shift : array (d,)
    s1, s2 : array (G, d)
        Sums of ``x - shift`` and of its square.
    """

    count: np.ndarray
    shift: Any
    s1: Any
    s2: Any
    #: Kernels of the z-scored units per held-out group (:func:`fold_gram`), kept while the
    #: whole set fits :data:`FOLD_GRAM_CACHE_BYTES`.
    grams: dict[int, GramStats] = field(default_factory=dict, repr=False, compare=False)

    def scale(self, exclude: int | None = None, fallback: Any = None) -> Any:
        """Standard deviation per unit of every row but group ``exclude`` (1, or
        ``fallback``, where constant; see :func:`unit_scale`)."""
        xp = get_namespace(self.s1)
        n = float(self.count.sum())
        s1, s2 = xp.sum(self.s1, axis=0), xp.sum(self.s2, axis=0)
        if exclude is not None:
            n -= float(self.count[exclude])
            s1, s2 = s1 - self.s1[exclude], s2 - self.s2[exclude]
        m = s1 / n
        return unit_scale(s2 / n - m * m, m + self.shift, n, fallback, offset=m)

    def add(self, groups: np.ndarray, Xb: Any) -> None:
        """Add rows ``Xb`` (already shifted) whose groups are ``groups`` (host ints)."""
        get_namespace(Xb)
        G = self.count.shape[0]
        H = (groups[None, :] == np.arange(G)[:, None]).astype(np.float64)  # (G, m)
        Hd = _targets_on(H, Xb)
        self.count += H.sum(axis=1)
        self.s1 += Hd @ Xb
        self.s2 += Hd @ (Xb * Xb)


def _unit_sums(folds: Folds, shift: Any) -> UnitSums:
    zeros = _zeros_like(shift)
    G, d = folds.n_groups, int(shift.shape[0])
    return UnitSums(np.zeros(G), shift, zeros(G, d), zeros(G, d))


@dataclass
class GroupStats:
    """Per-group float64 sums (all arrays on the data's device).

    Attributes
    ----------
    count : ndarray (G,)
    shift_x : array (d,), shift_y : array (q,)
    sx : list of G arrays (d,)   -- sums of ``x - shift_x``
    sy : list of G arrays (q,)
    xtx : list of G arrays (d, d)
    xty : list of G arrays (d, q)
    pooled : bool
        All rows were summed as one group (``G == 1``): only the full-data moments exist,
        which is all the leave-group-out ridge form and the logistic decoders use.
    """

    count: np.ndarray
    shift_x: Any
    shift_y: Any
    sx: list[Any]
    sy: list[Any]
    xtx: list[Any]
    xty: list[Any]
    _tot: tuple[Any, Any, Any, Any] | None = field(default=None, repr=False, compare=False)
    _eig: tuple[Any, Any, Moments] | None = field(default=None, repr=False, compare=False)
    #: ``(X - mean) @ V`` (n, d) over all rows, when a solver computed it (shared by decoders).
    rotated: Any = field(default=None, repr=False, compare=False)
    pooled: bool = False
    #: Per-fold-group unit sums (always by the real folds, also when ``pooled``).
    units: UnitSums | None = field(default=None, repr=False, compare=False)
    _eig_std: tuple[Any, Any, Moments, Any] | None = field(default=None, repr=False,
                                                          compare=False)

    @property
    def xp(self) -> Any:
        return get_namespace(self.shift_x)

    def _totals(self) -> tuple[Any, Any, Any, Any]:
        if self._tot is None:
            self._tot = (_sum(self.sx), _sum(self.sy), _sum(self.xtx), _sum(self.xty))
        return self._tot

    def eigh_full(self) -> tuple[Any, Any, Moments]:
        """``(s, V, moments)``: eigendecomposition of the centred Gram of all rows (cached).

        Eigenvalues ascending, clipped at 0; shared by the ridge (leave-group-out form) and
        logistic (whitening) decoders of one job.
        """
        if self._eig is None:
            mom = self.moments()
            xp = self.xp
            s, V = xp.linalg.eigh(mom.C)
            self._eig = (xp.clip(s, 0.0, None), V, mom)
        return self._eig

    def eigh_standardized(self) -> tuple[Any, Any, Moments, Any]:
        """``(s, V, moments, scale)``: eigendecomposition of the all-rows correlation-scaled
        Gram ``D C D`` with ``D = diag(1 / scale)`` (cached); ``scale`` is each unit's
        standard deviation over all rows (1 where constant)."""
        if self._eig_std is None:
            mom = self.moments()
            xp = self.xp
            sc = unit_scale(xp.linalg.diagonal(mom.C) / mom.n, mom.mean_x, mom.n,
                            offset=mom.offset_x)
            inv = 1.0 / sc
            s, V = xp.linalg.eigh(mom.C * inv[:, None] * inv[None, :])
            self._eig_std = (xp.clip(s, 0.0, None), V, mom, sc)
        return self._eig_std

    def columns(self, cols: np.ndarray) -> GroupStats:
        """The same statistics of ``X`` with the target columns ``cols`` only (shares the
        ``X`` sums and unit sums; cached moments, which hold the targets, are not kept)."""
        xp = self.xp
        idx = _index_on(np.asarray(cols, dtype=np.int64), self.shift_x)
        return GroupStats(
            self.count, self.shift_x, xp.take(self.shift_y, idx, axis=0), self.sx,
            [xp.take(v, idx, axis=0) for v in self.sy], self.xtx,
            [xp.take(v, idx, axis=1) for v in self.xty],
            rotated=self.rotated, pooled=self.pooled, units=self.units,
        )

    def moments(self, exclude: int | None = None) -> Moments:
        """Centred moments over every group except ``exclude`` (``None``: all rows).

        The result is exactly symmetric: every term is a sum of symmetric products.
        """
        sx, sy, C, B = self._totals()
        n = float(self.count.sum())
        if exclude is not None and self.pooled:
            raise ValueError("pooled statistics hold no per-fold moments; accumulate by group")
        if exclude is not None:
            g = exclude
            n -= float(self.count[g])
            sx, sy = sx - self.sx[g], sy - self.sy[g]
            C, B = C - self.xtx[g], B - self.xty[g]
        else:
            C, B = C + 0.0, B + 0.0  # copies: the totals are reused
        xp = self.xp
        mx, my = sx / n, sy / n
        C -= n * xp.linalg.outer(mx, mx)
        B -= n * xp.linalg.outer(mx, my)
        return Moments(n, mx + self.shift_x, my + self.shift_y, C, B, mx)


def _sum(arrs: list[Any]) -> Any:
    out = arrs[0] + 0.0
    for a in arrs[1:]:
        out += a
    return out


def _targets_on(Y: np.ndarray, like: Any) -> Any:
    """The target matrix (float64) on the namespace/device of ``like``."""
    xp = get_namespace(like)
    if xp.__name__.endswith("numpy"):
        return np.asarray(Y, dtype=np.float64)
    return xp.asarray(Y, dtype=xp.float64, device=_device(like))


def _device(x: Any) -> Any:
    from array_api_compat import device

    return device(x)


def coalesce(
    blocks: Iterator[tuple[int, int, Any]], d: int, target_bytes: int = 8 * 2**20
) -> Iterator[tuple[int, int, Any]]:
    """Copy consecutive row blocks into fresh float64 blocks of about ``target_bytes``.

    Rank-k updates of a d x d Gram are memory-bound for small k; larger blocks keep them
    compute-bound. The yielded arrays are new (the caller may modify them in place); memory
    grows by one such block plus one source block.
    """
    target = max(1, target_bytes // (8 * max(d, 1)))
    pending: list[tuple[int, int, Any]] = []
    rows = 0
    for a, b, blk in blocks:
        pending.append((a, b, blk))
        rows += b - a
        if rows >= target:
            yield _merge(pending, rows, d)
            pending, rows = [], 0
    if pending:
        yield _merge(pending, rows, d)


def _merge(pending: list[tuple[int, int, Any]], rows: int, d: int) -> tuple[int, int, Any]:
    first = pending[0][2]
    xp = get_namespace(first)
    out = xp.empty((rows, d), dtype=xp.float64, device=_device(first))
    start = pending[0][0]
    for a, b, blk in pending:
        out[a - start : b - start, :] = xp.astype(blk, xp.float64)
    return start, start + rows, out


def accumulate_groups(
    source: BlockSource, Y: np.ndarray, folds: Folds, group_buffer_bytes: int = 32 * 2**20,
    pooled: bool = False,
) -> GroupStats:
    """One streaming pass: per-group counts, sums, ``X^T X`` and ``X^T Y`` in float64.

    Parameters
    ----------
    source : BlockSource
        Activations (n_samples, n_units), any float dtype, any backend.
    Y : ndarray of shape (n_samples, n_columns)
        Targets of all features (host numpy, float64).
    folds : Folds

    group_buffer_bytes : int
        Rows are buffered per group, all groups together up to about this size (64 to 1,024
        rows a group), and added to the group's sums in one product.
    pooled : bool
        Sum all rows as one group (see :attr:`GroupStats.pooled`): ``n_splits`` times less
        memory and fewer, larger products, for decoders that need only full-data moments.

    Returns
    -------
    GroupStats
        Peak memory is one block, the row buffers (``group_buffer_bytes``), plus
        ``n_groups * n_units * (n_units + n_columns)`` floats.
    """
    if Y.shape[0] != source.n or folds.n != source.n:
        raise ActstoreError(
            f"{source.name}: {source.n} activation rows but {Y.shape[0]} labels and "
            f"{folds.n} fold entries; the probe set and the run do not match"
        )
    true_group = folds.group_of()
    group = np.zeros(folds.n, dtype=np.int64) if pooled else true_group
    G = 1 if pooled else folds.n_groups
    st: GroupStats | None = None
    Yd = None
    # Rows are gathered per group and added as one rank-k update once a group holds
    # ``flush_rows`` of them: with random folds a block holds a few rows of every group, and
    # many thin updates of a d x d Gram are bound by memory traffic, not arithmetic.
    flush_rows = int(np.clip(group_buffer_bytes // (8 * G * max(source.d, 1)), 64, 1024))
    pending: list[list[tuple[Any, Any]]] = [[] for _ in range(G)]
    n_pending = np.zeros(G, dtype=np.int64)

    def flush(g: int) -> None:
        assert st is not None
        parts = pending[g]
        xp = get_namespace(parts[0][0])
        Xg = parts[0][0] if len(parts) == 1 else xp.concat([x for x, _ in parts], axis=0)
        Yg = parts[0][1] if len(parts) == 1 else xp.concat([y for _, y in parts], axis=0)
        Xt = xp.matrix_transpose(Xg)
        st.count[g] += Xg.shape[0]
        st.sx[g] += xp.sum(Xg, axis=0)
        st.sy[g] += xp.sum(Yg, axis=0)
        st.xtx[g] += Xt @ Xg
        st.xty[g] += Xt @ Yg
        pending[g], n_pending[g] = [], 0

    for a, b, Xb in coalesce(source.blocks(), source.d):
        xp = get_namespace(Xb)  # Xb: a fresh float64 block, modified in place below
        if st is None:
            Yd = _targets_on(Y, Xb)
            d, q = Xb.shape[1], Yd.shape[1]
            zeros = _zeros_like(Xb)
            st = GroupStats(
                count=np.zeros(G),
                shift_x=xp.mean(Xb, axis=0),
                shift_y=xp.mean(Yd, axis=0),
                sx=[zeros(d) for _ in range(G)],
                sy=[zeros(q) for _ in range(G)],
                xtx=[zeros(d, d) for _ in range(G)],
                xty=[zeros(d, q) for _ in range(G)],
                pooled=pooled,
            )
            st.units = _unit_sums(folds, st.shift_x)
        assert Yd is not None
        Xb -= st.shift_x
        st.units.add(true_group[a:b], Xb)  # type: ignore[union-attr]
        Yb = Yd[a:b, ...] - st.shift_y
        g_blk = group[a:b]
        for g in np.unique(g_blk):
            rows = np.flatnonzero(g_blk == g)
            if rows.size == b - a:
                pending[g].append((Xb, Yb))
            else:
                idx = _index_on(rows, Xb)
                pending[g].append((xp.take(Xb, idx, axis=0), xp.take(Yb, idx, axis=0)))
            n_pending[g] += rows.size
            if n_pending[g] >= flush_rows:
                flush(int(g))
    for g in range(G):
        if pending[g]:
            flush(g)
    if st is None:
        raise ActstoreError(f"{source.name}: no activation rows to read")
    return st


def _zeros_like(like: Any) -> Any:
    """A ``zeros(*shape)`` maker for float64 arrays on the namespace/device of ``like``."""
    xp, dev = get_namespace(like), _device(like)
    return lambda *shape: xp.zeros(shape, dtype=xp.float64, device=dev)


def _index_on(rows: np.ndarray, like: Any) -> Any:
    xp = get_namespace(like)
    if xp.__name__.endswith("numpy"):
        return rows
    return xp.asarray(rows, dtype=xp.int64, device=_device(like))


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
            st = _unit_sums(folds, xp.mean(Xa, axis=0))
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
            G = xp.zeros((source.n, source.n), dtype=xp.float64, device=_device(Xa))
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
