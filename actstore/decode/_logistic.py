"""Multinomial logistic decoders for all features, folds and penalties at once.

Each problem is scikit-learn's ``LogisticRegression(C=C, fit_intercept=True)`` with an L2
penalty: minimise ``C * sum_i CE(softmax(x_i W + b), y_i) + ||W||^2 / 2`` over the training
rows of one fold, for one categorical feature. Binary features follow scikit-learn's sigmoid
parametrisation, which equals the two-class softmax at ``C / 2``.

How the batch is solved:

* Whitening. The activations are centred and rotated into the eigenbasis of their Gram matrix
  and scaled to unit variance, ``Z = Xc V diag(sqrt(n / s))`` (a reparametrisation
  ``W = V diag(sqrt(n / s)) W~``: the minimiser is unchanged and the penalty becomes diagonal,
  ``sum_j (n / s_j) ||W~_j||^2``). The data term is then well conditioned, which is what makes a
  quasi-Newton method converge in tens of iterations instead of hundreds.
* Standardised units (the default): the decoders of fold k see units z-scored with fold k's
  training mean and standard deviation, as ``make_pipeline(StandardScaler(),
  LogisticRegression(C))`` does. The centring is absorbed by the unpenalised intercept; the
  scaling only changes the penalty, which in unit space is ``sum_j sd_kj^2 W_j^2``. The data
  are whitened once from the Gram of the units z-scored over all rows, where that penalty is
  ``diag(n / s)`` plus a small per-fold correction ``T^T diag(sd_k^2 - sd^2) T`` (an r x r
  matrix per fold, applied to that fold's columns), so every fold's problem is exactly its
  pipeline's while all problems keep sharing one whitened data matrix.
* Batching. The parameters of every (fold, feature) problem sit side by side in one array
  (units, folds x classes): logits and gradients of all problems are a few large matrix
  products per iteration. Rows are sorted by the fold that holds them out, so each fold's rows
  meet only the other folds' problems. Line searches and convergence tests are per problem.
* L-BFGS with a Kronecker initial Hessian (mean softmax curvature + penalty), Armijo
  backtracking, and warm starts along the penalty path from strong to weak regularisation:
  each penalty starts from the extrapolated solutions of the two before it and with the
  curvature pairs of the last one (moved to the new penalty).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore.core._backend import get_namespace
from actstore.core._blocks import ArraySource
from actstore.core._folds import Folds
from actstore.core._gram import GramStats, fold_gram, unit_sums
from actstore.core._stats import GroupStats, UnitSums, unit_scale
from actstore.core._targets import Targets
from actstore.decode._lbfgs import Pairs, SoftmaxProblems, shift_pairs, solve_problems
from actstore.decode._metrics import HeldOutScores

__all__ = [
    "DEFAULT_CS",
    "LogisticFit",
    "fit_logistic_path",
    "logistic_cv",
    "whiten",
]

#: 13 inverse penalties from 1e-4 to 1e2 (half-decade steps).
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))


def _dev(x: Any) -> Any:
    from array_api_compat import device

    return device(x)


def _asarray(a: np.ndarray, like: Any, dtype: Any = None) -> Any:
    xp = get_namespace(like)
    return xp.asarray(a, dtype=dtype if dtype is not None else like.dtype, device=_dev(like))


def whiten(
    X: Any,
    stats: GroupStats | GramStats | None = None,
    rtol: float = 1e-10,
    dtype: str = "float64",
    standardize: bool = False,
) -> tuple[Any, Any, Any, Any]:
    """Whitened coordinates of the activations for the logistic solver.

    Parameters
    ----------
    X : array of shape (n, d)
    stats : GroupStats or GramStats, optional
        Reuse accumulated statistics; otherwise the Gram matrix is computed from ``X``.
    rtol : float
        Directions with variance below ``rtol`` times the largest carry no data and are dropped
        (their coefficients are exactly zero at the optimum).
    dtype : {"float64", "float32"}
        Precision of the returned coordinates (float32 is meant for GPUs).
    standardize : bool
        Whiten the units z-scored over all rows, in the primal form (with more units than
        rows the folds of standardised decoders are whitened one by one: :func:`logistic_cv`).

    Returns
    -------
    Z : array of shape (n, r)
        Unit-variance coordinates in ``dtype`` (the Gram matrix and its eigendecomposition are
        always float64).
    T : array of shape (d, r) or None
        ``W = T @ W~`` maps whitened coefficients back to the original units (``None`` in the
        dual form).
    omega : array of shape (r,)
        Penalty weight of each whitened coordinate (``n / s_j``).
    mean : array of shape (d,)
        Column means removed from ``X``.
    """
    xp = get_namespace(X)
    n, d = X.shape
    if isinstance(stats, GroupStats):
        if standardize:
            s, V, mom, sc = stats.eigh_standardized()
        else:
            s, V, mom = stats.eigh_full()
        keep = s > rtol * xp.max(s)
        scale = xp.sqrt(n / s[keep])
        T = V[:, keep] * scale[None, :]
        if standardize:
            T = T / sc[:, None]
        if stats.rotated is not None and not standardize:
            Z = _cast(stats.rotated[:, keep] * scale[None, :], dtype)
        else:
            # centred in float64 (a unit's spread can be tiny next to its mean), rotated in
            # the working precision (the basis itself is float64)
            Z = _cast(xp.astype(X, xp.float64) - mom.mean_x, dtype) @ _cast(T, dtype)
        return Z, T, _cast(n / s[keep], dtype), mom.mean_x
    X64 = xp.astype(X, xp.float64)
    mean = xp.mean(X64, axis=0)
    Xc = X64 - mean
    sc = None
    if standardize:
        sc = unit_scale(xp.mean(Xc * Xc, axis=0), mean, float(n))
    if isinstance(stats, GramStats) or (stats is None and d > n):
        if standardize:
            raise ValueError("whiten(standardize=True) has no dual form: fold-wise z-scored "
                             "units are whitened fold by fold (logistic_cv)")
        G = stats.G if isinstance(stats, GramStats) else X64 @ xp.matrix_transpose(X64)
        m = xp.mean(G, axis=1)
        K = G - m[:, None] - m[None, :] + xp.mean(m)
        s, U = xp.linalg.eigh((K + xp.matrix_transpose(K)) / 2)
        keep = s > rtol * xp.max(s)
        s, U = s[keep], U[:, keep]
        return _cast(U * (n**0.5), dtype), None, _cast(n / s, dtype), mean
    Xs = Xc if sc is None else Xc / sc
    C = xp.matrix_transpose(Xs) @ Xs
    s, V = xp.linalg.eigh((C + xp.matrix_transpose(C)) / 2)
    keep = s > rtol * xp.max(s)
    s, V = s[keep], V[:, keep]
    T = V * xp.sqrt(n / s)[None, :]
    if sc is not None:
        T = T / sc[:, None]
    return _cast(Xc @ T, dtype), T, _cast(n / s, dtype), mean


def fold_penalties(T: Any, units: UnitSums, n_splits: int, dtype: str = "float64"
                   ) -> list[Any]:
    """Per-fold corrections of the whitened penalty for fold-wise z-scored units.

    Fold k's pipeline penalises ``sum_j sd_kj^2 W_j^2`` in the original units; with
    ``W = T W~`` (:func:`whiten` with ``standardize``, whose ``diag(n / s)`` is this penalty
    at the all-rows scales ``sd``) the difference is ``T^T diag(sd_k^2 - sd^2) T``. The ratio
    ``sd_k / sd`` stays near 1 (a fold's training rows are most of the rows), so the
    corrections are small next to ``diag(n / s)``.

    Returns
    -------
    list of arrays (r, r), one per fold, in ``dtype``.
    """
    sd = units.scale()
    # the products in the solver's precision: the corrections enter its float32 objective
    # (d r^2 flops per fold, half the time in float32)
    Tw = _cast(T, dtype)
    out = []
    for k in range(n_splits):
        # a unit constant in fold k's training rows gets a zero coefficient whatever its
        # penalty weight: keeping the all-rows weight (no correction) keeps the problem as
        # well conditioned as the others, where scikit-learn's scale of 1 would put a weight
        # of 1 / sd^2 on it
        diff = _cast(units.scale(exclude=k, fallback=sd) ** 2 - sd * sd, dtype)
        out.append(_signed_gram(Tw, diff))
    return out


def _signed_gram(T: Any, w: Any) -> Any:
    """``T^T diag(w) T`` as two symmetric rank-k products (half the multiply-adds of a
    general product): the rows of positive and of negative weight."""
    xp = get_namespace(T)
    pos = w > 0
    if isinstance(T, np.ndarray):
        out = np.zeros((T.shape[1], T.shape[1]), dtype=T.dtype)
        for rows, sign in ((pos, 1.0), (w < 0, -1.0)):
            if rows.any():
                A = T[rows] * np.sqrt(sign * w[rows])[:, None]
                out += sign * (A.T @ A)  # numpy computes A.T @ A by a symmetric rank-k update
        return out
    D = xp.matrix_transpose(T * w[:, None]) @ T
    return (D + xp.matrix_transpose(D)) / 2


def _cast(a: Any, dtype: str) -> Any:
    xp = get_namespace(a)
    return xp.astype(a, xp.float32) if dtype == "float32" else a


@dataclass
class LogisticFit:
    """Solutions along a penalty path for every (fold, feature).

    Attributes
    ----------
    Cs : ndarray (P,)
    W : array (P, r, K, Q)
        Whitened coefficients (``T @ W[p, :, k, :]`` in unit space for the primal form); the
        Q columns are the categorical features' classes, in target order.
    b : array (P, K, Q)
    log_proba : array (P, n, Q)
        Per-feature log-probabilities of every sample under the model of the fold that holds
        it out (zeros for rows that are never held out).
    n_iter : ndarray (P, K, F)
        Iterations used per problem.
    converged : ndarray (P, K, F), bool
    """

    Cs: np.ndarray
    W: Any
    b: Any
    log_proba: Any
    n_iter: np.ndarray
    converged: np.ndarray


def fit_logistic_path(
    Z: Any,
    omega: Any,
    targets: Targets,
    folds: Folds,
    Cs: Sequence[float] = DEFAULT_CS,
    tol: float = 1e-4,
    max_iter: int = 500,
    fold_penalty: list[Any] | None = None,
) -> LogisticFit:
    """Fit every (fold, categorical feature) problem along a path of penalties.

    Parameters
    ----------
    Z : array of shape (n, r)
        Whitened activations (:func:`whiten`), float64 or float32 (the solver keeps the dtype).
    omega : array of shape (r,)
        Penalty weight per whitened coordinate.
    targets : Targets
    folds : Folds
    Cs : sequence of float
        Inverse penalties (scikit-learn's ``C``); solved from the smallest up, each warm-started
        from the previous solution.
    tol : float
        Stop a problem when its largest gradient entry (whitened, mean-loss scaling) is below.
    max_iter : int
        Iteration cap per penalty.
    fold_penalty : list of arrays (r, r), optional
        Per-fold penalty corrections (:func:`fold_penalties`) of standardised decoders.

    Returns
    -------
    LogisticFit
        Solutions in the order of ``Cs`` as given.
    """
    xp = get_namespace(Z)
    cat = [f for f in targets.features if f.kind == "categorical"]
    if not cat:
        raise ValueError("logistic decoders need at least one categorical feature")
    K = folds.n_splits
    ext_start = np.cumsum([0] + [f.n_classes for f in cat])
    n_train = folds.counts()[0].astype(np.float64)
    # Problems: fold after fold where the softmax is compiled (each fold's held-out rows
    # skip its problems in the products); elsewhere by class count, then fold, so that all
    # problems with the same number of classes form one block of columns (one softmax per
    # class count). Rows are sorted by the fold that holds them out (never-held-out first).
    order = sorted(range(len(cat)), key=lambda j: cat[j].n_classes)
    probs = ([(k, j) for k in range(K) for j in order] if SoftmaxProblems.fold_major(Z)
             else [(k, j) for j in order for k in range(K)])
    rows = np.argsort(folds.test_fold, kind="stable")
    Y01 = np.concatenate(
        [(targets.Y[rows, cat[j].start : cat[j].stop] + 1) / 2 for _, j in probs], axis=1)
    M = np.stack([folds.train_mask(k)[rows] / n_train[k] for k, _ in probs], axis=1)
    Z = xp.take(Z, _asarray(rows, Z, xp.int64), axis=0)
    # scikit-learn's binary model is a sigmoid: the two-class softmax at C / 2.
    scale = np.array([n_train[k] * (0.5 if cat[j].n_classes == 2 else 1.0) for k, j in probs])
    fp = None if fold_penalty is None else (np.array([k for k, _ in probs]), fold_penalty)
    prob = SoftmaxProblems(Z, omega, Y01, M, [cat[j].n_classes for _, j in probs], scale, fp)
    # Internal column of every (fold, external categorical column).
    starts = np.cumsum([0] + [cat[j].n_classes for _, j in probs])
    colidx = np.zeros((K, int(ext_start[-1])), dtype=np.int64)
    for p, (k, j) in enumerate(probs):
        colidx[k, ext_start[j] : ext_start[j + 1]] = np.arange(starts[p], starts[p + 1])
    colidx_d = [_asarray(colidx[k], Z, xp.int64) for k in range(K)]
    # Held-out rows of every fold: one block of the sorted rows each.
    sorted_fold = folds.test_fold[rows]
    never = int(np.sum(sorted_fold < 0))
    edges = np.searchsorted(sorted_fold, np.arange(K + 1))
    Z_test = [Z[int(edges[k]) : int(edges[k + 1]), :] for k in range(K)]
    back = _asarray(np.argsort(rows), Z, xp.int64)

    W = xp.zeros((prob.r, prob.Qt), dtype=Z.dtype, device=_dev(Z))
    # Start the intercepts at the training log-frequencies (the optimum at C -> 0).
    b = _asarray(np.log(np.maximum((M[:, prob.col_prob] * Y01).sum(axis=0), 1e-12)), Z)
    Cs_arr = np.asarray(Cs, dtype=np.float64)
    P = len(Cs_arr)
    Ws, bs = [None] * P, [None] * P
    n_iter = np.zeros((P, K, len(cat)), dtype=np.int64)
    conv = np.zeros((P, K, len(cat)), dtype=bool)
    prev: tuple[Any, Any, float] | None = None  # the solution before the last, and its log C
    OW_prev: Any = None  # Omega times the last solution (the penalty's gradient without lam)
    last = 0.0  # log C of the last solution
    f_last, lam_last = np.zeros(prob.P), prob.lam(1.0)  # its objective and penalty
    g_last: tuple[Any, Any] | None = None  # its gradients
    hist: Pairs | None = None  # curvature pairs of the last solve
    for i, p in enumerate(np.argsort(Cs_arr)):
        C = float(Cs_arr[p])
        W0, b0, start, OW = W, b, None, None
        if prev is not None and prev[2] != last and g_last is not None:
            # Warm start by linear extrapolation along log C from the two previous solutions,
            # kept per problem where it lowers the objective. Only the penalty term of the
            # objective and gradient at (W, b) changes with the penalty: they come from the
            # last solve, so the one evaluation here is the extrapolated point's.
            Wp, bp, logCp = prev
            step = float((np.log(C) - last) / (last - logCp))  # a Python float keeps the dtype
            We, be = W + step * (W - Wp), b + step * (b - bp)
            lam = prob.lam(C)
            dlam = lam - lam_last
            pen, OW = prob.penalty_terms(W)
            here = _asarray(f_last, lam) + 0.5 * dlam * pen
            # the penalty is linear in W: Omega We from Omega W and Omega Wp
            OWe = None if OW_prev is None else OW + step * (OW - OW_prev)
            fe, gWe, gbe, sums = prob.value_grad(We, be, lam, OW=OWe)
            better = fe < here
            bc = prob.to_cols(xp.astype(better, lam.dtype)) > 0.5
            W0, b0 = xp.where(bc[None, :], We, W), xp.where(bc, be, b)
            gW0 = xp.where(bc[None, :], gWe, g_last[0] + prob.to_cols(dlam)[None, :] * OW)
            # the curvature sums (only a preconditioner) from the extrapolated point for all
            start = (xp.where(better, fe, here), gW0, xp.where(bc, gbe, g_last[1]), sums)
        if hist is not None:
            # the curvature of the data term carries over from the last penalty
            hist = shift_pairs(prob, hist, lam_last, prob.lam(C))
        Wn, bn, it, ok, f_last, hist, g_last = solve_problems(prob, W0, b0, C, tol, max_iter,
                                                              hist, start)
        lam_last = prob.lam(C)
        OW_prev = OW  # of W, the solution before the last at the next penalty
        prev = (W, b, last) if i > 0 else None
        last = float(np.log(C))
        W, b = Wn, bn
        Ws[p] = xp.stack([xp.take(W, colidx_d[k], axis=1) for k in range(K)], axis=1)
        bs[p] = xp.stack([xp.take(b, colidx_d[k], axis=0) for k in range(K)], axis=0)
        for q, (k, j) in enumerate(probs):
            n_iter[p, k, j], conv[p, k, j] = it[q], ok[q]
    W_all, b_all = xp.stack(Ws, axis=0), xp.stack(bs, axis=0)  # (P, r, K, Q), (P, K, Q)
    # held-out log-probabilities, all penalties at once: each fold's models on its own
    # held-out rows only
    Q = colidx.shape[1]
    held = [xp.zeros((never, P, Q), dtype=W.dtype, device=_dev(W))]
    for k in range(K):
        Wk = xp.reshape(xp.permute_dims(W_all[:, :, k, :], (1, 0, 2)), (prob.r, P * Q))
        L = xp.reshape(Z_test[k] @ Wk, (Z_test[k].shape[0], P, Q)) + b_all[None, :, k, :]
        held.append(_log_softmax(L, ext_start))
    lps = xp.permute_dims(xp.take(xp.concat(held, axis=0), back, axis=0), (1, 0, 2))
    return LogisticFit(Cs_arr, W_all, b_all, lps, n_iter, conv)


def _log_softmax(L: Any, starts: np.ndarray) -> Any:
    """Log-softmax of each feature's block of last-axis entries ``starts[j]:starts[j + 1]``
    of ``L``."""
    xp = get_namespace(L)
    out = []
    for a, e in itertools.pairwise(starts):
        blk = L[..., int(a) : int(e)]
        sh = blk - xp.max(blk, axis=-1, keepdims=True)
        out.append(sh - xp.log(xp.sum(xp.exp(sh), axis=-1, keepdims=True)))
    return out[0] if len(out) == 1 else xp.concat(out, axis=-1)


def _np(x: Any) -> np.ndarray:
    from actstore.core._backend import to_numpy

    return np.asarray(to_numpy(x))  # sync point: small per-problem arrays


def logistic_cv(
    X: Any,
    targets: Targets,
    folds: Folds,
    Cs: Sequence[float] = DEFAULT_CS,
    stats: GroupStats | GramStats | None = None,
    tol: float = 1e-4,
    max_iter: int = 500,
    dtype: str = "float64",
    standardize: bool = True,
) -> dict[str, np.ndarray]:
    """Held-out scores of multinomial logistic decoders for every fold, penalty and feature.

    Parameters
    ----------
    X : array of shape (n, d)
        Activations (held in memory: the logistic loss has no finite sufficient statistics).
    targets : Targets
    folds : Folds
    Cs : sequence of float
    stats : GroupStats or GramStats, optional
        Statistics already accumulated for the ridge decoders (saves a Gram product; with
        ``standardize`` and more units than rows, the per-fold kernels are shared).
    standardize : bool
        Z-score the units with each fold's training mean and standard deviation (as
        ``make_pipeline(StandardScaler(), LogisticRegression(C))``); ``False`` fits the raw
        units.

    Returns
    -------
    dict
        :meth:`HeldOutScores.finalize` arrays of shape (n_splits, n_Cs, n_features) (NaN for
        continuous features), plus ``n_iter`` and ``converged`` of shape
        (n_Cs, n_splits, n_categorical).
    """
    Folds.check(folds)
    n, d = X.shape
    if standardize and (isinstance(stats, GramStats) or (stats is None and d > n)):
        fit = _dual_by_fold(X, stats, targets, folds, Cs, tol, max_iter, dtype)
    else:
        # the whitened activations and penalty corrections depend on the activations alone:
        # kept with the job's statistics, they serve later calls (an extended grid of Cs)
        cache = stats.factors if isinstance(stats, GroupStats) else None
        key = ("logistic-whiten", standardize, dtype, folds.n_splits)
        found = cache.get(key) if cache is not None else None
        if found is None:
            Z, T, omega, _mean = whiten(X, stats, dtype=dtype, standardize=standardize)
            fold_pen = None
            if standardize and T is not None and T.shape[1]:
                units = getattr(stats, "units", None)
                if units is None:
                    units = unit_sums(ArraySource(X, name="activations"), folds)
                fold_pen = fold_penalties(T, units, folds.n_splits, dtype)
            found = (Z, omega, fold_pen)
            if cache is not None:
                cache[key] = found
        Z, omega, fold_pen = found
        fit = fit_logistic_path(Z, omega, targets, folds, Cs, tol=tol, max_iter=max_iter,
                                fold_penalty=fold_pen)
    xp = get_namespace(fit.log_proba)
    cat = [j for j, f in enumerate(targets.features) if f.kind == "categorical"]
    q = targets.Y.shape[1]
    acc = HeldOutScores(targets, folds, len(Cs))
    prob_cols = []
    for j in cat:
        f = targets.features[j]
        prob_cols.append((f.start, f.stop))
    for k in range(folds.n_splits):
        test = np.flatnonzero(folds.test_mask(k))
        idx = xp.asarray(test, dtype=xp.int64, device=_dev(fit.log_proba))
        lp = xp.take(fit.log_proba, idx, axis=1)  # (P, m, Qcat)
        lp = xp.permute_dims(lp, (1, 0, 2))  # (m, P, Qcat)
        # Scatter the categorical columns back into the full target layout.
        full = xp.zeros((test.size, len(Cs), q), dtype=lp.dtype, device=_dev(lp))
        parts, pos, last = [], 0, 0
        for a, e in prob_cols:
            if a > last:
                parts.append(full[:, :, last:a])
            parts.append(lp[:, :, pos : pos + e - a])
            pos += e - a
            last = e
        if last < q:
            parts.append(full[:, :, last:q])
        acc.update(k, test, xp.concat(parts, axis=2), log_proba=True)
    out = acc.finalize()
    out["n_iter"] = fit.n_iter
    out["converged"] = fit.converged
    return out


def _dual_by_fold(
    X: Any,
    stats: GroupStats | GramStats | None,
    targets: Targets,
    folds: Folds,
    Cs: Sequence[float],
    tol: float,
    max_iter: int,
    dtype: str,
    rtol: float = 1e-10,
) -> LogisticFit:
    """Standardised decoders with more units than rows, one fold at a time.

    With fold-wise unit scales the optimum of fold k lies in the span of its own z-scored
    training rows, a different subspace per fold, so the folds cannot share one whitened
    basis. Each fold is whitened from the kernel of its z-scored units (the training kernel's
    eigenvectors for the training rows, the centred cross-kernel for the held-out rows) and
    solved as a one-split problem; the held-out log-probabilities are put back in place.
    """
    from actstore.core._folds import predefined_folds
    from actstore.decode._ridge import centred_kernels

    xp = get_namespace(X)
    src = ArraySource(X, name="activations")
    units = getattr(stats, "units", None) or unit_sums(src, folds)
    P, K = len(Cs), folds.n_splits
    ncat = sum(f.kind == "categorical" for f in targets.features)
    n_iter = np.zeros((P, K, ncat), dtype=np.int64)
    conv = np.zeros((P, K, ncat), dtype=bool)
    lp_all = None
    for k, (train, test) in enumerate(folds.split()):
        # the kernel of this fold's z-scored units (shared with the ridge decoders)
        Ktr, Kx = centred_kernels(fold_gram(src, units, k), train, test)
        s, U = xp.linalg.eigh(Ktr)
        keep = s > rtol * xp.max(s)
        s, U = s[keep], U[:, keep]
        nt = float(train.size)
        Z = xp.concat([U * nt**0.5, (Kx @ U) * (nt**0.5 / s)[None, :]], axis=0)
        rows = np.concatenate([train, test])
        one = predefined_folds(np.r_[np.full(train.size, -1), np.zeros(test.size, int)],
                               f"fold {k}")
        sub = Targets(targets.Y[rows], targets.codes[rows], targets.features)
        fit = fit_logistic_path(_cast(Z, dtype), _cast(nt / s, dtype), sub, one, Cs, tol=tol,
                                max_iter=max_iter)
        if lp_all is None:
            lp_all = xp.zeros((P, X.shape[0], fit.log_proba.shape[2]), dtype=fit.log_proba.dtype,
                              device=_dev(fit.log_proba))
        back = xp.asarray(test, dtype=xp.int64, device=_dev(lp_all))
        lp_all[:, back, :] = fit.log_proba[:, train.size:, :]
        n_iter[:, k, :], conv[:, k, :] = fit.n_iter[:, 0, :], fit.converged[:, 0, :]
    assert lp_all is not None
    return LogisticFit(np.asarray(Cs, dtype=np.float64), None, None, lp_all, n_iter, conv)
