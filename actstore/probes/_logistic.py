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
* Batching. The parameters of every (fold, feature) problem sit side by side in one array
  (units, folds x classes): logits and gradients of all problems are two large matrix products
  per iteration. Line searches and convergence tests are per problem.
* L-BFGS with a diagonal initial Hessian (data curvature + penalty), Armijo backtracking, and
  warm starts along the penalty path from strong to weak regularisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore.probes._backend import get_namespace
from actstore.probes._folds import Folds
from actstore.probes._metrics import HeldOutScores
from actstore.probes._stats import GramStats, GroupStats
from actstore.probes._targets import Targets

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
    X: Any, stats: GroupStats | GramStats | None = None, rtol: float = 1e-10
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

    Returns
    -------
    Z : array of shape (n, r), float64
        Unit-variance coordinates.
    T : array of shape (d, r) or None
        ``W = T @ W~`` maps whitened coefficients back (``None`` in the dual form).
    omega : array of shape (r,)
        Penalty weight of each whitened coordinate (``n / s_j``).
    mean : array of shape (d,)
        Column means removed from ``X``.
    """
    xp = get_namespace(X)
    X64 = xp.astype(X, xp.float64)
    n, d = X64.shape
    mean = xp.mean(X64, axis=0)
    Xc = X64 - mean
    if isinstance(stats, GramStats) or (stats is None and d > n):
        G = stats.G if isinstance(stats, GramStats) else X64 @ xp.matrix_transpose(X64)
        m = xp.mean(G, axis=1)
        K = G - m[:, None] - m[None, :] + xp.mean(m)
        s, U = xp.linalg.eigh((K + xp.matrix_transpose(K)) / 2)
        keep = s > rtol * xp.max(s)
        s, U = s[keep], U[:, keep]
        return U * (n**0.5), None, n / s, mean
    if isinstance(stats, GroupStats):
        C = stats.moments().C
    else:
        C = xp.matrix_transpose(Xc) @ Xc
    s, V = xp.linalg.eigh((C + xp.matrix_transpose(C)) / 2)
    keep = s > rtol * xp.max(s)
    s, V = s[keep], V[:, keep]
    T = V * xp.sqrt(n / s)[None, :]
    return Xc @ T, T, n / s, mean


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


class _Problem:
    """Batched objective: all folds x categorical features of one penalty.

    Internally the categorical features are ordered by class count, so that features with
    the same number of classes form one contiguous group of columns that is handled with one
    reshape (n, K, features, classes) instead of a loop over features.
    """

    def __init__(self, Z: Any, omega: Any, targets: Targets, folds: Folds) -> None:
        xp = get_namespace(Z)
        self.xp, self.Z = xp, Z
        self.Zt = xp.matrix_transpose(Z)
        self.n, self.r = Z.shape
        cat = [f for f in targets.features if f.kind == "categorical"]
        order = sorted(range(len(cat)), key=lambda j: cat[j].n_classes)
        self.order = np.asarray(order)
        self.feats = [cat[j] for j in order]
        self.K, self.F = folds.n_splits, len(self.feats)
        # Internal column layout, and where each internal column sits in the caller's layout
        # (the categorical features' class columns concatenated in target order).
        ext_start = np.cumsum([0] + [f.n_classes for f in cat])
        perm: list[int] = []
        for j in order:
            perm.extend(range(ext_start[j], ext_start[j + 1]))
        self.perm = np.asarray(perm)
        self.inv_perm = np.argsort(self.perm)
        self.Q = len(perm)
        self.groups: list[tuple[int, int, int, int]] = []  # (col start, n features, classes, f0)
        col = 0
        for j, f in enumerate(self.feats):
            if self.groups and self.groups[-1][2] == f.n_classes:
                a, nf, c, f0 = self.groups[-1]
                self.groups[-1] = (a, nf + 1, c, f0)
            else:
                self.groups.append((col, 1, f.n_classes, j))
            col += f.n_classes
        Y01 = np.concatenate([(targets.Y[:, f.start : f.stop] + 1) / 2 for f in self.feats], 1)
        col_feat = np.concatenate([np.full(f.n_classes, j) for j, f in enumerate(self.feats)])
        self.col_feat = col_feat
        E = np.zeros((self.Q, self.F))
        E[np.arange(self.Q), col_feat] = 1.0
        n_train = folds.counts()[0].astype(np.float64)
        M = np.stack([folds.train_mask(k) / n_train[k] for k in range(self.K)], axis=1)  # (n, K)
        self.Y01 = _asarray(Y01, Z)  # (n, Q)
        self.M = _asarray(M, Z)  # (n, K)
        self.E = _asarray(E, Z)  # (Q, F)
        self.Et = xp.matrix_transpose(self.E)
        self.omega = omega  # (r,)
        self.n_train = n_train
        self.binary = np.array([f.n_classes == 2 for f in self.feats])

    def lam(self, C: float) -> Any:
        """L2 strength per (fold, feature) in the mean-loss scaling: 1 / (C_eff * n_train)."""
        C_eff = np.where(self.binary, C / 2.0, C)  # (F,)
        return _asarray(1.0 / (C_eff[None, :] * self.n_train[:, None]), self.Z)  # (K, F)

    def per_problem(self, colvals: Any) -> Any:
        """Sum (K, Q) column values into (K, F) problem values."""
        return colvals @ self.E

    def to_cols(self, probvals: Any) -> Any:
        """Broadcast (K, F) problem values to (K, Q) columns."""
        return probvals @ self.Et

    def _split(self, A: Any, lead: tuple[int, ...]) -> list[Any]:
        """Views of (*lead, Q) as (*lead, features, classes), one per group."""
        xp = self.xp
        return [xp.reshape(A[..., a : a + nf * c], (*lead, nf, c)) for a, nf, c, _ in self.groups]

    def _join(self, parts: list[Any], lead: tuple[int, ...]) -> Any:
        xp = self.xp
        flat = [xp.reshape(p, (*lead, p.shape[-2] * p.shape[-1])) for p in parts]
        return flat[0] if len(flat) == 1 else xp.concat(flat, axis=len(lead))

    def forward(self, W: Any, b: Any) -> tuple[Any, Any]:
        """Log-probabilities and probabilities (n, K, Q) of every row under every fold."""
        xp = self.xp
        L = xp.reshape(self.Z @ xp.reshape(W, (self.r, self.K * self.Q)),
                       (self.n, self.K, self.Q)) + b[None, :, :]
        lead = (self.n, self.K)
        logps, ps = [], []
        for blk in self._split(L, lead):
            sh = blk - xp.max(blk, axis=-1, keepdims=True)
            e = xp.exp(sh)
            tot = xp.sum(e, axis=-1, keepdims=True)
            logps.append(sh - xp.log(tot))
            ps.append(e / tot)
        return self._join(logps, lead), self._join(ps, lead)

    def value_grad(self, W: Any, b: Any, lam: Any) -> tuple[Any, Any, Any, Any, Any]:
        """Objective (K, F), gradients (r, K, Q) and (K, Q), log-probabilities and
        probabilities (n, K, Q)."""
        xp = self.xp
        logp, P = self.forward(W, b)
        Mw = self.M[:, :, None]
        data = -xp.sum(Mw * (self.Y01[:, None, :] * logp), axis=0)  # (K, Q)
        lam_c = self.to_cols(lam)
        pen = 0.5 * lam_c * xp.sum(self.omega[:, None, None] * W * W, axis=0)  # (K, Q)
        f = self.per_problem(data + pen)
        R = Mw * (P - self.Y01[:, None, :])  # (n, K, Q)
        gW = xp.reshape(self.Zt @ xp.reshape(R, (self.n, self.K * self.Q)), W.shape)
        gW = gW + lam_c[None, :, :] * self.omega[:, None, None] * W
        gb = xp.sum(R, axis=0)
        return f, gW, gb, logp, P

    def curvature(self, P: Any) -> list[tuple[Any, Any]]:
        """Per group, eigen-decomposition of the mean softmax curvature over training rows.

        ``A[k, f] = mean_i (diag(p_i) - p_i p_i^T)`` (classes x classes). In whitened
        coordinates the data Hessian of problem (k, f) is close to ``I (x) A[k, f]``; with the
        diagonal penalty this gives a cheap, well-scaled inverse-Hessian approximation.
        """
        xp = self.xp
        out = []
        for Pg in self._split(P, (self.n, self.K)):
            nf, c = Pg.shape[2], Pg.shape[3]
            Pw = Pg * self.M[:, :, None, None]
            flat = xp.reshape(Pg, (self.n, self.K * nf, c))
            flat_w = xp.reshape(Pw, (self.n, self.K * nf, c))
            PtP = xp.permute_dims(flat_w, (1, 2, 0)) @ xp.permute_dims(flat, (1, 0, 2))
            diag = xp.sum(flat_w, axis=0)  # (K*nf, c)
            eye = xp.eye(c, dtype=P.dtype, device=_dev(P))
            A = diag[:, :, None] * eye[None, :, :] - PtP  # (K*nf, c, c)
            lamb, U = xp.linalg.eigh((A + xp.matrix_transpose(A)) / 2)
            out.append((xp.clip(lamb, 0.0, None), U))
        return out

    def precondition(self, gW: Any, gb: Any, curv: list[tuple[Any, Any]], lam: Any
                     ) -> tuple[Any, Any]:
        """Apply the approximate inverse Hessian to (r, K, Q) and (K, Q) arrays."""
        xp = self.xp
        outW, outb = [], []
        gWs = self._split(gW, (self.r, self.K))
        gbs = self._split(gb, (self.K,))
        for (a, nf, c, f0), Gw, Gb, (lamb, U) in zip(self.groups, gWs, gbs, curv, strict=True):
            kf = self.K * nf
            G = xp.reshape(xp.permute_dims(Gw, (1, 2, 0, 3)), (kf, self.r, c))
            Ut = xp.matrix_transpose(U)
            lam_g = xp.reshape(lam[:, f0 : f0 + nf], (kf, 1, 1))
            den = lamb[:, None, :] + lam_g * self.omega[None, :, None]  # (kf, r, c)
            H = ((G @ U) / den) @ Ut
            outW.append(xp.permute_dims(xp.reshape(H, (self.K, nf, self.r, c)), (2, 0, 1, 3)))
            floor = 1e-3 * xp.max(lamb, axis=1, keepdims=True) + 1e-12
            Hb = ((xp.reshape(Gb, (kf, 1, c)) @ U) / xp.maximum(lamb, floor)[:, None, :]) @ Ut
            outb.append(xp.reshape(Hb, (self.K, nf, c)))
        return self._join(outW, (self.r, self.K)), self._join(outb, (self.K,))

    def dot(self, aW: Any, ab: Any, bW: Any, bb: Any) -> Any:
        """Per-problem inner products (K, F)."""
        xp = self.xp
        return self.per_problem(xp.sum(aW * bW, axis=0) + ab * bb)

    def gmax(self, gW: Any, gb: Any) -> Any:
        """Per-problem max-abs gradient (K, F)."""
        xp = self.xp
        colmax = xp.maximum(xp.max(xp.abs(gW), axis=0), xp.abs(gb))  # (K, Q)
        parts = [xp.max(g, axis=-1) for g in self._split(colmax, (self.K,))]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def _blend(new: Any, old: Any, take: Any) -> Any:
    """``new`` where ``take`` (broadcast 0/1 floats) else ``old``."""
    return old + take * (new - old)


def _lbfgs(
    prob: _Problem,
    W: Any,
    b: Any,
    lam: Any,
    tol: float,
    max_iter: int,
    memory: int = 10,
) -> tuple[Any, Any, Any, np.ndarray, np.ndarray]:
    """Batched L-BFGS over all (fold, feature) problems of one penalty.

    The initial inverse Hessian of the two-loop recursion is the Kronecker approximation of
    :meth:`_Problem.curvature`, refreshed at every iteration.
    """
    xp = prob.xp
    f, gW, gb, logp, P = prob.value_grad(W, b, lam)
    hist: list[tuple[Any, Any, Any, Any, Any]] = []
    n_iter = np.zeros((prob.K, prob.F), dtype=np.int64)
    done = np.asarray(_np(prob.gmax(gW, gb)) <= tol)
    for _ in range(max_iter):
        if done.all():
            break
        act_c = prob.to_cols(_asarray((~done).astype(np.float64), f))  # (K, Q)
        # Two-loop recursion, per problem.
        qW, qb = gW, gb
        alphas = []
        for sW, sb, yW, yb, rho in reversed(hist):
            a = rho * prob.dot(sW, sb, qW, qb)
            ac = prob.to_cols(a)
            qW, qb = qW - ac[None] * yW, qb - ac * yb
            alphas.append(a)
        curv = prob.curvature(P)
        rW, rb = prob.precondition(qW, qb, curv, lam)
        if hist:
            # Shanno scaling of the initial inverse Hessian by the latest curvature pair.
            sW, sb, yW, yb, rho = hist[-1]
            HyW, Hyb = prob.precondition(yW, yb, curv, lam)
            yHy = prob.dot(yW, yb, HyW, Hyb)
            sy = prob.dot(sW, sb, yW, yb)
            good = (rho > 0) & (yHy > 0)
            gamma = prob.to_cols(xp.where(good, sy / xp.where(good, yHy, 1.0), 1.0))
            rW, rb = rW * gamma[None], rb * gamma
        for (sW, sb, yW, yb, rho), a in zip(hist, reversed(alphas), strict=True):
            beta = rho * prob.dot(yW, yb, rW, rb)
            c = prob.to_cols(a - beta)
            rW, rb = rW + c[None] * sW, rb + c * sb
        pW, pb = -rW * act_c[None], -rb * act_c  # search direction, zero for finished problems
        slope = prob.dot(pW, pb, gW, gb)  # (K, F), negative
        bad = (_np(slope) >= 0) & ~done
        if bad.any():  # not a descent direction: use the preconditioned gradient there
            badc = prob.to_cols(_asarray(bad.astype(np.float64), f))
            rW, rb = prob.precondition(gW, gb, curv, lam)
            pW, pb = _blend(-rW, pW, badc[None]), _blend(-rb, pb, badc)
            slope = prob.dot(pW, pb, gW, gb)
        t = np.ones((prob.K, prob.F))
        pending = ~done
        f_np, slope_np = _np(f), _np(slope)
        newW, newb, nf, ngW, ngb, nlogp, nP = W, b, f, gW, gb, logp, P
        for _ls in range(30):
            tc = prob.to_cols(_asarray(np.where(pending, t, 0.0), f))
            cW, cb = W + tc[None] * pW, b + tc * pb
            cf, cgW, cgb, clogp, cP = prob.value_grad(cW, cb, lam)
            ok = _np(cf) <= f_np + 1e-4 * t * slope_np + 1e-12 * np.abs(f_np)
            acc = pending & ok
            if _ls == 0 and (acc == pending).all():  # the usual case: every step accepted
                newW, newb, nf, ngW, ngb, nlogp, nP = cW, cb, cf, cgW, cgb, clogp, cP
                pending = pending & ~ok
                break
            if acc.any():
                take = _asarray(acc.astype(np.float64), f)
                tk = prob.to_cols(take)
                newW, newb = _blend(cW, newW, tk[None]), _blend(cb, newb, tk)
                nf = _blend(cf, nf, take)
                ngW, ngb = _blend(cgW, ngW, tk[None]), _blend(cgb, ngb, tk)
                nlogp, nP = _blend(clogp, nlogp, tk[None]), _blend(cP, nP, tk[None])
            pending = pending & ~ok
            if not pending.any():
                break
            t = np.where(pending, t * 0.5, t)
        stalled = pending  # no decrease found: the point is as good as this precision allows
        sW, sb = newW - W, newb - b
        yW, yb = ngW - gW, ngb - gb
        sy = prob.dot(sW, sb, yW, yb)
        pos = sy > 1e-300
        rho = xp.where(pos, 1.0 / xp.where(pos, sy, 1.0), 0.0)
        hist.append((sW, sb, yW, yb, rho))
        if len(hist) > memory:
            hist.pop(0)
        W, b, f, gW, gb, logp, P = newW, newb, nf, ngW, ngb, nlogp, nP
        n_iter += ~done
        done = done | (_np(prob.gmax(gW, gb)) <= tol) | stalled
    converged = np.asarray(_np(prob.gmax(gW, gb)) <= tol)
    return W, b, logp, n_iter, converged


def _np(x: Any) -> np.ndarray:
    from actstore.probes._backend import to_numpy

    return np.asarray(to_numpy(x))  # sync point: small per-problem arrays


def fit_logistic_path(
    Z: Any,
    omega: Any,
    targets: Targets,
    folds: Folds,
    Cs: Sequence[float] = DEFAULT_CS,
    tol: float = 1e-4,
    max_iter: int = 500,
) -> LogisticFit:
    """Fit every (fold, categorical feature) problem along a path of penalties.

    Parameters
    ----------
    Z : array of shape (n, r)
        Whitened activations (:func:`whiten`), float64 (float32 allowed on GPUs).
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

    Returns
    -------
    LogisticFit
        Solutions in the order of ``Cs`` as given.
    """
    xp = get_namespace(Z)
    prob = _Problem(Z, omega, targets, folds)
    if prob.F == 0:
        raise ValueError("logistic decoders need at least one categorical feature")
    order = np.argsort(np.asarray(Cs, dtype=np.float64))
    W = xp.zeros((prob.r, prob.K, prob.Q), dtype=Z.dtype, device=_dev(Z))
    # Start the intercepts at the training log-frequencies (the optimum at C -> 0).
    freq = _np(xp.matrix_transpose(prob.M) @ prob.Y01)  # (K, Q)
    b = _asarray(np.log(np.maximum(freq, 1e-12)), Z)
    # Held-out rows of every fold, then the rows that are never held out (explicit splits).
    tests = [np.flatnonzero(folds.test_mask(k)) for k in range(prob.K)]
    never = np.flatnonzero(folds.test_fold < 0)
    back = _asarray(np.argsort(np.concatenate([*tests, never])), Z, xp.int64)
    tests_d = [_asarray(t, Z, xp.int64) for t in tests]
    ext = _asarray(prob.inv_perm, Z, xp.int64)
    P = len(Cs)
    Ws, bs, lps = [None] * P, [None] * P, [None] * P
    n_iter = np.zeros((P, prob.K, prob.F), dtype=np.int64)
    conv = np.zeros((P, prob.K, prob.F), dtype=bool)
    feat_back = np.argsort(prob.order)
    for p in order:
        W, b, logp, it, ok = _lbfgs(prob, W, b, prob.lam(float(Cs[p])), tol, max_iter)
        held = [xp.take(logp[:, k, :], tests_d[k], axis=0) for k in range(prob.K)]
        held.append(xp.zeros((never.size, prob.Q), dtype=logp.dtype, device=_dev(logp)))
        lp = xp.take(xp.concat(held, axis=0), back, axis=0)  # (n, Q), row order restored
        Ws[p] = xp.take(W, ext, axis=2)
        bs[p] = xp.take(b, ext, axis=1)
        lps[p] = xp.take(lp, ext, axis=1)
        n_iter[p], conv[p] = it[:, feat_back], ok[:, feat_back]
    return LogisticFit(
        np.asarray(Cs, dtype=np.float64),
        xp.stack(Ws, axis=0),
        xp.stack(bs, axis=0),
        xp.stack(lps, axis=0),
        n_iter,
        conv,
    )


def logistic_cv(
    X: Any,
    targets: Targets,
    folds: Folds,
    Cs: Sequence[float] = DEFAULT_CS,
    stats: GroupStats | GramStats | None = None,
    tol: float = 1e-4,
    max_iter: int = 500,
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
        Statistics already accumulated for the ridge decoders (saves a Gram product).

    Returns
    -------
    dict
        :meth:`HeldOutScores.finalize` arrays of shape (n_splits, n_Cs, n_features) (NaN for
        continuous features), plus ``n_iter`` and ``converged`` of shape
        (n_Cs, n_splits, n_categorical).
    """
    Z, _T, omega, _mean = whiten(X, stats)
    fit = fit_logistic_path(Z, omega, targets, folds, Cs, tol=tol, max_iter=max_iter)
    xp = get_namespace(Z)
    cat = [j for j, f in enumerate(targets.features) if f.kind == "categorical"]
    q = targets.Y.shape[1]
    acc = HeldOutScores(targets, folds, len(Cs))
    prob_cols = []
    for j in cat:
        f = targets.features[j]
        prob_cols.append((f.start, f.stop))
    for k in range(folds.n_splits):
        test = np.flatnonzero(folds.test_mask(k))
        idx = xp.asarray(test, dtype=xp.int64, device=_dev(Z))
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
