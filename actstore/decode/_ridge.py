"""Ridge decoders for every penalty and every target from one factorisation per fold.

Primal form (n_units <= n_train): the centred training Gram ``C = Xc^T Xc`` (d, d) is
factorised once (:func:`~actstore.core._shifted.shifted_system`: a tridiagonal reduction
``C = Q T Q^T`` on the host, an eigendecomposition on other backends); with
``B = Xc^T Yc`` the coefficients of penalty ``a`` are ``W(a) = (C + a I)^{-1} B`` and the
intercept is ``mean_y - mean_x W(a)`` (scikit-learn's ``Ridge(alpha=a, fit_intercept=True)``).
All penalties and all target columns cost one factorisation plus a tridiagonal solve per
penalty and matrix products.

Standardised units (the default of the probe engine): every fold works on units z-scored with
its training rows' mean and standard deviation, as ``make_pipeline(StandardScaler(), Ridge)``
does. In the primal form that is ``D C D`` and ``D B`` with ``D = diag(1 / sd)`` from the
diagonal of the same centred Gram; in the dual form the fold's kernel is built from the
z-scored units. Constant units (zero training variance) keep a scale of 1 and, being zero
after centring, contribute nothing.

Dual (kernel) form (n_units > n_train): the centred training kernel ``K = Xc Xc^T`` is
factorised instead, ``W(a) = Xc^T (K + a I)^{-1} Yc``, and held-out predictions only need the
centred cross-kernel, so they come from the n x n Gram without another pass over the
activations.

Leave-group-out form (raw units only): one eigendecomposition of the full-data Gram, and each
fold's held-out predictions from an n_test x n_test update per penalty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore.core._backend import get_namespace, spd_solve, unit_minus_gram
from actstore.core._blocks import BlockSource, coalesce
from actstore.core._folds import Folds
from actstore.core._gram import GramStats, accumulate_gram, fold_gram, unit_sums
from actstore.core._shifted import ShiftedSystem, alphas_on, apply_each, shifted_system
from actstore.core._stats import GroupStats, Moments, accumulate_groups, unit_scale
from actstore.core._targets import Targets
from actstore.decode._metrics import HeldOutScores

__all__ = [
    "DEFAULT_ALPHAS",
    "DualFold",
    "PrimalFold",
    "choose_form",
    "ridge_cv",
    "solve_dual",
    "solve_primal",
]

#: 13 penalties from 1e-2 to 1e4 (half-decade steps), as in scikit-learn's usual grids.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))


@dataclass
class PrimalFold:
    """A ridge problem factorised once for all penalties in the primal (unit-space) form.

    Attributes
    ----------
    mean_x : array (d,), mean_y : array (q,)
        Training means (original coordinates).
    system : ShiftedSystem
        The factorised centred training Gram (of the z-scored units with ``inv_scale``).
    B : array (d, q)
        ``Xc^T Yc`` (scaled by ``inv_scale`` when standardised).
    inv_scale : array (d,) or None
        ``1 / sd`` of each unit when the problem was solved on z-scored units; coefficients
        and predictions are in the original units either way.
    """

    mean_x: Any
    mean_y: Any
    system: ShiftedSystem
    B: Any
    inv_scale: Any = None

    def coef(self, alphas: Sequence[float]) -> Any:
        """Coefficients of shape (n_alphas, d, q), in the original units."""
        W = self.system.solve(self.B, alphas)  # (P, d, q)
        return W if self.inv_scale is None else W * self.inv_scale[None, :, None]

    def intercept(self, coef: Any) -> Any:
        """Intercepts of shape (n_alphas, q) for coefficients (n_alphas, d, q)."""
        xp = get_namespace(coef)
        return self.mean_y[None, :] - xp.sum(self.mean_x[None, :, None] * coef, axis=1)

    def predict(self, X: Any, alphas: Sequence[float], coef: Any | None = None) -> Any:
        """Decision values of shape (m, n_alphas, q) for rows ``X`` (m, d); ``coef`` from
        :meth:`coef` saves solving again."""
        xp = get_namespace(X)
        Xc = xp.astype(X, xp.float64, copy=False) - self.mean_x
        return apply_each(Xc, self.coef(alphas) if coef is None else coef) + self.mean_y


def solve_primal(mom: Moments, standardize: bool = False,
                 cache: dict[Any, Any] | None = None, key: Any = None,
                 dtype: str = "float64") -> PrimalFold:
    """Factorise one fold's centred Gram: every penalty is then a cheap solve away.

    With ``standardize`` the Gram of the z-scored units is factorised instead (each unit
    divided by its training standard deviation, :func:`unit_scale`). With ``cache`` the
    factorisation is stored there under ``key`` and reused when it is already there (it
    depends on the activations alone, not on the targets). ``dtype`` is the precision of
    the factorisation (:func:`~actstore.core._shifted.shifted_system`).
    """
    xp = get_namespace(mom.B)
    found = cache.get(key) if cache is not None else None
    if found is None:
        inv = None
        if standardize:
            inv = 1.0 / unit_scale(xp.linalg.diagonal(mom.C) / mom.n, mom.mean_x, mom.n,
                                   offset=mom.offset_x)
        M = mom.C
        if inv is not None:
            M = mom.C * inv[:, None]
            M *= inv[None, :]
        found = (shifted_system(M, dtype), inv)
        if cache is not None:
            cache[key] = found
    system, inv = found
    B = mom.B if inv is None else mom.B * inv[:, None]
    return PrimalFold(mom.mean_x, mom.mean_y, system, B, inv)


@dataclass
class DualFold:
    """A ridge problem factorised once for all penalties in the dual (kernel) form.

    Attributes
    ----------
    train, test : ndarray of int
        Row indices (host).
    system : ShiftedSystem
        The factorised centred training kernel (n_train, n_train).
    Yc : array (n_train, q)
        Centred training targets.
    mean_y : array (q,)
    Kx : array (n_test, n_train)
        Centred cross-kernel between held-out and training rows.
    """

    train: np.ndarray
    test: np.ndarray
    system: ShiftedSystem
    Yc: Any
    mean_y: Any
    Kx: Any

    def predict_test(self, alphas: Sequence[float]) -> Any:
        """Held-out decision values of shape (n_test, n_alphas, q)."""
        return apply_each(self.Kx, self.dual_coef(alphas)) + self.mean_y

    def dual_coef(self, alphas: Sequence[float]) -> Any:
        """Dual coefficients of shape (n_alphas, n_train, q): ``W = Xc_train^T @ dual``."""
        return self.system.solve(self.Yc, alphas)


def solve_dual(gram: GramStats, Y: Any, train: np.ndarray, test: np.ndarray,
               dtype: str = "float64") -> DualFold:
    """Factorise the centred training kernel of one fold.

    Parameters
    ----------
    gram : GramStats
        ``G`` of shape (n, n) over all samples.
    Y : array of shape (n, q), float64, on the Gram's device
    train, test : ndarray of int
    dtype : {"float64", "float32"}
        Precision of the factorisation (:func:`~actstore.core._shifted.shifted_system`).
    """
    xp = get_namespace(gram.G)
    K, Kx = centred_kernels(gram, train, test)
    tr = xp.asarray(train, dtype=xp.int64, device=_device(gram.G))
    Ytr = xp.take(Y, tr, axis=0)
    mean_y = xp.mean(Ytr, axis=0)
    return DualFold(train, test, shifted_system(K, dtype), Ytr - mean_y, mean_y, Kx)


def centred_kernels(gram: GramStats, train: np.ndarray, test: np.ndarray) -> tuple[Any, Any]:
    """The training kernel (n_train, n_train) and the held-out cross-kernel (n_test, n_train)
    of one fold, both centred with the training rows' mean."""
    xp = get_namespace(gram.G)
    dev = _device(gram.G)
    tr = xp.asarray(train, dtype=xp.int64, device=dev)
    te = xp.asarray(test, dtype=xp.int64, device=dev)
    Gtr = xp.take(xp.take(gram.G, tr, axis=0), tr, axis=1)  # (n_tr, n_tr)
    Gte = xp.take(xp.take(gram.G, te, axis=0), tr, axis=1)  # (n_te, n_tr)
    # Centre with the training mean mu: (x_i - mu).(x_j - mu) = G_ij - m_i - m_j + mbar,
    # where m_i = x_i . mu.
    m_tr = xp.mean(Gtr, axis=1)
    m_te = xp.mean(Gte, axis=1)
    mbar = xp.mean(m_tr)
    K = Gtr - m_tr[:, None] - m_tr[None, :] + mbar
    return (K + xp.matrix_transpose(K)) / 2, Gte - m_te[:, None] - m_tr[None, :] + mbar


def choose_form(
    n_units: int, folds: Folds, n_alphas: int = len(DEFAULT_ALPHAS), cache_bytes: int = 0,
    standardize: bool = False, host: bool = True,
) -> str:
    """The cheapest exact form for these sizes.

    With ``standardize`` each fold has its own unit scales, so the leave-group-out form
    (which shares one full-data eigenbasis between folds) is not exact and is never chosen.

    * ``"dual"`` when there are more units than training rows (diagonalise the kernel);
    * ``"lgo"`` (leave-group-out updates of one full-data eigendecomposition) when the held-out
      folds are small next to the units, so that ``n_splits`` factorisations (tridiagonal on
      the ``host``, eigendecompositions elsewhere) cost more than one eigendecomposition plus
      the per-fold ``n_test x n_test`` updates, and the rotated activations (``n x d``
      float64) fit ``cache_bytes``;
    * ``"primal"`` otherwise (one factorisation per fold).
    """
    n_train, n_test = folds.counts()
    d, K = n_units, folds.n_splits
    if d > int(n_train.max()):
        return "dual"
    # Flop-equivalents at matrix-product speed: a symmetric eigendecomposition with vectors
    # runs at a fraction of that speed (about 15 d^3), the tridiagonal reduction that the
    # host's primal form uses instead at about a third of that; an LU solve of size m costs
    # about 1.3 m^3.
    eigh = 15.0 * d**3
    per_fold = 5.0 * d**3 if host else eigh
    m = float(n_test.max())
    lgo = eigh + 2.0 * folds.n * d * d + K * n_alphas * (m * m * d + 1.3 * m**3)
    fits = folds.n * d * 8 <= cache_bytes
    return "lgo" if fits and lgo < K * per_fold and not standardize else "primal"


def ridge_cv(
    source: BlockSource,
    targets: Targets,
    folds: Folds,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    form: str = "auto",
    stats: GroupStats | GramStats | None = None,
    standardize: bool = True,
    dtype: str = "float64",
) -> dict[str, np.ndarray]:
    """Held-out scores of ridge decoders for every fold, penalty and feature.

    Parameters
    ----------
    source : BlockSource
        The activations, streamed (wrap in :class:`~actstore.core._blocks.CachedSource` to
        read them once when they fit in memory).
    targets : Targets
    folds : Folds
    alphas : sequence of float
        Penalties (scikit-learn's ``alpha``).
    form : {"auto", "primal", "dual", "lgo"}
        See :func:`choose_form`; all give the same numbers.
    stats : GroupStats or GramStats, optional
        Precomputed statistics (skip the first pass); a Gram matrix means the dual form.
    standardize : bool
        Z-score the units with each fold's training mean and standard deviation (as
        ``make_pipeline(StandardScaler(), Ridge(alpha))``); ``False`` fits the raw units.
    dtype : {"float64", "float32"}
        Precision of the folds' factorisations. ``"float32"`` reduces Grams of 512 units or
        more in single precision (about twice as fast) and checks every solve in double
        precision, falling back to float64 where the estimated relative error of the
        coefficients exceeds 1e-3 (:func:`~actstore.core._shifted.shifted_system`).

    Returns
    -------
    dict
        See :meth:`HeldOutScores.finalize`; arrays of shape (n_splits, n_alphas, n_features).
    """
    Folds.check(folds)
    cache = int(getattr(source, "cache_bytes", 0))
    if isinstance(stats, GramStats):
        form = "dual"
    elif form == "auto":
        form = choose_form(source.d, folds, len(alphas), cache, standardize,
                           host=getattr(source, "backend", None) in (None, "numpy"))
        form = "primal" if form == "dual" and isinstance(stats, GroupStats) else form
    if form not in ("primal", "dual", "lgo"):
        raise ValueError(f"form must be 'auto', 'primal', 'dual' or 'lgo', got {form!r}")
    if form == "lgo" and standardize:
        raise ValueError("the leave-group-out form shares one eigenbasis between folds and "
                         "cannot z-score each fold's units; use 'primal' or 'dual'")
    acc = HeldOutScores(targets, folds, len(alphas))
    if form == "dual":
        _dual(source, targets, folds, alphas, stats, standardize, cache, acc, dtype)
        return acc.finalize()

    if not isinstance(stats, GroupStats) or (stats.pooled and form == "primal"):
        stats = accumulate_groups(source, targets.Y, folds, pooled=form == "lgo")
    if form == "lgo":
        _leave_group_out(source, targets, folds, alphas, stats, acc)
        return acc.finalize()
    # the folds' factorisations depend on the activations alone: kept with the statistics,
    # they serve every later call on them (e.g. the penalties of an extended grid)
    keys = [("ridge-primal", k, standardize, dtype) for k in range(folds.n_splits)]
    solved = [solve_primal(stats.moments(exclude=k, gram=keys[k] not in stats.factors),
                           standardize, stats.factors, keys[k], dtype)
              for k in range(folds.n_splits)]
    coefs = [pf.coef(alphas) for pf in solved]
    for a, b, block in coalesce(source.blocks(), source.d):
        tf = folds.test_fold[a:b]
        for k in np.unique(tf[tf >= 0]):
            local = np.flatnonzero(tf == k)
            xp = get_namespace(block)
            rows = block if local.size == b - a else xp.take(block, _idx(local, block), axis=0)
            acc.update(int(k), a + local, solved[k].predict(rows, alphas, coefs[k]))
    return acc.finalize()


def _dual(
    source: BlockSource,
    targets: Targets,
    folds: Folds,
    alphas: Sequence[float],
    stats: GroupStats | GramStats | None,
    standardize: bool,
    cache_bytes: int,
    acc: HeldOutScores,
    dtype: str = "float64",
) -> None:
    """Held-out predictions of every fold in the dual (kernel) form.

    Standardised, each fold needs the kernel of its own z-scored units: one Gram product per
    fold from the cached activations, with the scales from the per-fold unit sums.
    """
    gram = stats if isinstance(stats, GramStats) else None
    units = None
    if standardize:
        units = gram.units if gram is not None and gram.units is not None else (
            unit_sums(source, folds))
    elif gram is None:
        gram = accumulate_gram(source, cache_bytes=cache_bytes)
    Yd = None
    for k, (train, test) in enumerate(folds.split()):
        g = gram if units is None else fold_gram(source, units, k)
        assert g is not None
        if Yd is None:
            xp = get_namespace(g.G)
            Yd = xp.asarray(targets.Y, dtype=xp.float64, device=_device(g.G))
        fold = solve_dual(g, Yd, train, test, dtype)
        acc.update(k, test, fold.predict_test(alphas))


def _leave_group_out(
    source: BlockSource,
    targets: Targets,
    folds: Folds,
    alphas: Sequence[float],
    stats: GroupStats,
    acc: HeldOutScores,
) -> None:
    """Held-out predictions of every fold from one full-data eigendecomposition.

    With ``Xc`` centred by the full-data mean, ``C = Xc^T Xc = V diag(s) V^T`` and
    ``Z = Xc V``, the full-data ridge fit (unpenalised intercept) is the linear smoother
    ``S(a) = 11^T / n + Z diag(1 / (s + a)) Z^T``. Removing the rows T of a fold from such a
    generalised ridge fit changes their residuals exactly to
    ``e_T^(-T) = (I - S_TT)^{-1} e_T``, and a fit on the remaining rows with the intercept
    unpenalised is scikit-learn's ``Ridge`` on the training rows (the centring is absorbed by
    the intercept). Cost per fold and penalty: one n_test x n_test product and solve.
    """
    s, V, mom = stats.eigh_full()
    xp = get_namespace(mom.C)
    Bt = xp.matrix_transpose(V) @ mom.B  # (d, q)
    a = alphas_on(alphas, V)
    g = 1.0 / (s[None, :] + a[:, None])  # (P, d)
    Z = xp.concat(
        [(blk - mom.mean_x) @ V for _, _, blk in coalesce(source.blocks(), source.d)], axis=0
    )  # (n, d): the activations in the eigenbasis (coalesced blocks are float64 copies)
    stats.rotated = Z  # the logistic decoders of this job whiten with the same basis
    Yd = xp.asarray(targets.Y, dtype=xp.float64, device=_device(Z))
    n = float(folds.n)
    for k in range(folds.n_splits):
        test = np.flatnonzero(folds.test_mask(k))
        idx = _idx(test, Z)
        ZT = xp.take(Z, idx, axis=0)  # (m, d)
        YT = xp.take(Yd, idx, axis=0)  # (m, q)
        fitted = apply_each(ZT, g[:, :, None] * Bt[None, :, :]) + mom.mean_y  # (m, P, q)
        if isinstance(ZT, np.ndarray):
            preds = []
            for p in range(len(alphas)):
                M = unit_minus_gram(ZT * np.sqrt(g[p, :])[None, :], 1.0 / n)  # I - S_TT
                resid = spd_solve(M, YT - fitted[:, p, :])  # leave-fold-out residuals
                preds.append(YT - resid)
            acc.update(k, test, np.stack(preds, axis=1))
            continue
        # other backends: the penalties' systems as one batch (P, m, m), solved together,
        # so that a GPU checks the factorisations once per fold, not once per penalty
        M = xp.stack([unit_minus_gram(ZT * xp.sqrt(g[p, :])[None, :], 1.0 / n)
                      for p in range(len(alphas))], axis=0)
        R = xp.permute_dims(YT[:, None, :] - fitted, (1, 0, 2))  # (P, m, q)
        resid = xp.permute_dims(spd_solve(M, R), (1, 0, 2))  # (m, P, q)
        acc.update(k, test, YT[:, None, :] - resid)


def _device(x: Any) -> Any:
    from array_api_compat import device

    return device(x)


def _idx(rows: np.ndarray, like: Any) -> Any:
    xp = get_namespace(like)
    if xp.__name__.endswith("numpy"):
        return rows
    from array_api_compat import device

    return xp.asarray(rows, dtype=xp.int64, device=device(like))
