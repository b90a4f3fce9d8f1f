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
statistic (:mod:`actstore.core._gram`); it also gives held-out predictions without a second
pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._backend import float64_like, get_namespace, index_on, zeros_maker
from actstore.core._blocks import BlockSource, coalesce
from actstore.core._folds import Folds

if TYPE_CHECKING:
    from actstore.core._gram import GramStats

__all__ = [
    "GroupStats",
    "Moments",
    "UnitSums",
    "accumulate_groups",
    "new_unit_sums",
    "sum_arrays",
    "unit_scale",
]


@dataclass
class Moments:
    """Centred training moments of one fold.

    Attributes
    ----------
    n : float
    mean_x : array (d,), mean_y : array (q,)
        Means in the original coordinates.
    C : array (d, d) or None
        Centred ``X^T X`` (None where it was not asked for).
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
        Hd = float64_like(H, Xb)
        self.count += H.sum(axis=1)
        self.s1 += Hd @ Xb
        self.s2 += Hd @ (Xb * Xb)


def new_unit_sums(folds: Folds, shift: Any) -> UnitSums:
    """Zero unit sums of every fold group, shifted by ``shift`` (d,)."""
    zeros = zeros_maker(shift)
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
    _eig: tuple[Any, Any, Moments] | None = field(default=None, repr=False, compare=False)
    #: ``(X - mean) @ V`` (n, d) over all rows, when a solver computed it (shared by decoders).
    rotated: Any = field(default=None, repr=False, compare=False)
    pooled: bool = False
    #: Per-fold-group unit sums (always by the real folds, also when ``pooled``).
    units: UnitSums | None = field(default=None, repr=False, compare=False)
    _eig_std: tuple[Any, Any, Moments, Any] | None = field(default=None, repr=False,
                                                          compare=False)
    #: What depends on ``X`` alone, shared with :meth:`columns` subsets: factorisations of
    #: per-fold Grams (keyed by their user, e.g. the ridge decoders) and the sums over groups.
    factors: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    _y_totals: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def xp(self) -> Any:
        return get_namespace(self.shift_x)

    def _total(self, name: str) -> Any:
        """The sum over groups of ``sx``, ``sy``, ``xtx`` or ``xty`` (cached; those of ``X``
        in :attr:`factors`, shared with :meth:`columns` subsets)."""
        key = ("group-total", name)
        cache = self.factors if name in ("sx", "xtx") else self._y_totals
        if key not in cache:
            cache[key] = sum_arrays(getattr(self, name))
        return cache[key]

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
        ``X`` sums, unit sums and :attr:`factors`; cached moments, which hold the targets,
        are not kept)."""
        xp = self.xp
        idx = index_on(np.asarray(cols, dtype=np.int64), self.shift_x)
        return GroupStats(
            self.count, self.shift_x, xp.take(self.shift_y, idx, axis=0), self.sx,
            [xp.take(v, idx, axis=0) for v in self.sy], self.xtx,
            [xp.take(v, idx, axis=1) for v in self.xty],
            rotated=self.rotated, pooled=self.pooled, units=self.units, factors=self.factors,
        )

    def moments(self, exclude: int | None = None, gram: bool = True) -> Moments:
        """Centred moments over every group except ``exclude`` (``None``: all rows).

        The Gram is exactly symmetric: every term is a sum of symmetric products. With
        ``gram=False`` it is left out (``C`` is None): the d x d work is skipped where a
        factorisation of it is already at hand.
        """
        sx, sy, B = self._total("sx"), self._total("sy"), self._total("xty")
        C = self._total("xtx") if gram else None
        n = float(self.count.sum())
        if exclude is not None and self.pooled:
            raise ValueError("pooled statistics hold no per-fold moments; accumulate by group")
        if exclude is not None:
            g = exclude
            n -= float(self.count[g])
            sx, sy = sx - self.sx[g], sy - self.sy[g]
            C = None if C is None else C - self.xtx[g]
            B = B - self.xty[g]
        else:  # copies: the totals are reused
            C = None if C is None else C + 0.0
            B = B + 0.0
        xp = self.xp
        mx, my = sx / n, sy / n
        if C is not None:
            C -= n * xp.linalg.outer(mx, mx)
        B -= n * xp.linalg.outer(mx, my)
        return Moments(n, mx + self.shift_x, my + self.shift_y, C, B, mx)


def sum_arrays(arrs: list[Any]) -> Any:
    """The sum of arrays of one shape (a new array)."""
    out = arrs[0] + 0.0
    for a in arrs[1:]:
        out += a
    return out


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
    # many thin updates of a d x d Gram are bound by memory traffic, not arithmetic. Each
    # group gathers into one buffer, allocated once and reused (fresh memory per part costs
    # page faults and a second copy to join the parts).
    flush_rows = int(np.clip(group_buffer_bytes // (8 * G * max(source.d, 1)), 64, 1024))
    buf_x: list[Any] = [None] * G
    buf_y: list[Any] = [None] * G
    fill = np.zeros(G, dtype=np.int64)

    def update(g: int, Xg: Any, Yg: Any) -> None:
        assert st is not None
        xp = get_namespace(Xg)
        Xt = xp.matrix_transpose(Xg)
        st.count[g] += Xg.shape[0]
        st.sx[g] += xp.sum(Xg, axis=0)
        st.sy[g] += xp.sum(Yg, axis=0)
        if not _syrk_update(st.xtx[g], Xt):
            st.xtx[g] += Xt @ Xg
        st.xty[g] += Xt @ Yg

    def flush(g: int) -> None:
        if fill[g]:
            n = int(fill[g])
            update(g, buf_x[g][:n, :], buf_y[g][:n, :])
            fill[g] = 0

    def add(g: int, Xb: Any, Yb: Any, rows: np.ndarray, whole: bool) -> None:
        k = rows.size
        if fill[g] + k > flush_rows:
            flush(g)
        xp = get_namespace(Xb)
        if k >= flush_rows:  # enough for one update by themselves
            idx = index_on(rows, Xb)
            update(g, Xb if whole else xp.take(Xb, idx, axis=0),
                   Yb if whole else xp.take(Yb, idx, axis=0))
            return
        if buf_x[g] is None:
            make = zeros_maker(Xb)
            buf_x[g], buf_y[g] = make(flush_rows, Xb.shape[1]), make(flush_rows, Yb.shape[1])
        at = slice(int(fill[g]), int(fill[g]) + k)
        if isinstance(Xb, np.ndarray):  # gathered straight into the buffer
            np.take(Xb, rows, axis=0, out=buf_x[g][at, :])
            np.take(Yb, rows, axis=0, out=buf_y[g][at, :])
        else:
            idx = index_on(rows, Xb)
            buf_x[g][at, :] = xp.take(Xb, idx, axis=0)
            buf_y[g][at, :] = xp.take(Yb, idx, axis=0)
        fill[g] += k
        if fill[g] >= flush_rows:
            flush(g)

    # the coalesced block is consumed before the next one: its memory is reused
    for a, b, Xb in coalesce(source.blocks(), source.d, reuse=True):
        xp = get_namespace(Xb)  # Xb: a float64 block of this pass, modified in place below
        if st is None:
            Yd = float64_like(Y, Xb)
            d, q = Xb.shape[1], Yd.shape[1]
            zeros = zeros_maker(Xb)
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
            st.units = new_unit_sums(folds, st.shift_x)
        assert Yd is not None
        Xb -= st.shift_x
        st.units.add(true_group[a:b], Xb)  # type: ignore[union-attr]
        Yb = Yd[a:b, ...] - st.shift_y
        g_blk = group[a:b]
        for g in np.unique(g_blk):
            rows = np.flatnonzero(g_blk == g)
            add(int(g), Xb, Yb, rows, rows.size == b - a)
    for g in range(G):
        flush(g)
    if st is None:
        raise ActstoreError(f"{source.name}: no activation rows to read")
    for C in st.xtx:
        _mirror_upper(C)
    return st


def _syrk_update(C: Any, At: Any) -> bool:
    """``C += At @ At^T`` in the upper triangle of a host float64 ``C`` (d, d) by BLAS
    ``dsyrk`` (half the multiply-adds of a full product); False where that does not apply
    (other backends, dtypes or layouts: the caller multiplies instead). The lower triangle
    is left stale until :func:`_mirror_upper`."""
    if not (isinstance(C, np.ndarray) and isinstance(At, np.ndarray)
            and C.dtype == np.float64 and At.dtype == np.float64
            and C.flags.c_contiguous and At.flags.f_contiguous and C.shape[0] > 1):
        return False
    from scipy.linalg import blas

    # C^T is the same matrix in Fortran order; its lower triangle is C's upper one
    blas.dsyrk(1.0, At, beta=1.0, c=C.T, trans=0, lower=1, overwrite_c=1)
    return True


def _mirror_upper(C: Any) -> None:
    """Copy the upper triangle of a host float64 Gram into its lower one, in place (the
    Grams of :func:`_syrk_update`); other arrays are left as they are."""
    if not (isinstance(C, np.ndarray) and C.dtype == np.float64 and C.flags.c_contiguous):
        return
    d = C.shape[0]
    for a in range(0, d, 256):  # by row blocks: slices, no index arrays of d^2 entries
        e = min(a + 256, d)
        C[a:e, :a] = C[:a, a:e].T
        blk = C[a:e, a:e]
        low = np.tril_indices(e - a, -1)
        blk[low] = blk.T[low]
