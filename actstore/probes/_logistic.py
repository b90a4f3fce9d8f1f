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
    X: Any,
    stats: GroupStats | GramStats | None = None,
    rtol: float = 1e-10,
    dtype: str = "float64",
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

    Returns
    -------
    Z : array of shape (n, r)
        Unit-variance coordinates in ``dtype`` (the Gram matrix and its eigendecomposition are
        always float64).
    T : array of shape (d, r) or None
        ``W = T @ W~`` maps whitened coefficients back (``None`` in the dual form).
    omega : array of shape (r,)
        Penalty weight of each whitened coordinate (``n / s_j``).
    mean : array of shape (d,)
        Column means removed from ``X``.
    """
    xp = get_namespace(X)
    n, d = X.shape
    if isinstance(stats, GroupStats):
        s, V, mom = stats.eigh_full()
        keep = s > rtol * xp.max(s)
        scale = xp.sqrt(n / s[keep])
        if stats.rotated is not None:
            Z = stats.rotated[:, keep] * scale[None, :]
        else:
            Z = (xp.astype(X, xp.float64) - mom.mean_x) @ (V[:, keep] * scale[None, :])
        return _cast(Z, dtype), V[:, keep] * scale[None, :], _cast(n / s[keep], dtype), mom.mean_x
    X64 = xp.astype(X, xp.float64)
    mean = xp.mean(X64, axis=0)
    Xc = X64 - mean
    if isinstance(stats, GramStats) or (stats is None and d > n):
        G = stats.G if isinstance(stats, GramStats) else X64 @ xp.matrix_transpose(X64)
        m = xp.mean(G, axis=1)
        K = G - m[:, None] - m[None, :] + xp.mean(m)
        s, U = xp.linalg.eigh((K + xp.matrix_transpose(K)) / 2)
        keep = s > rtol * xp.max(s)
        s, U = s[keep], U[:, keep]
        return _cast(U * (n**0.5), dtype), None, _cast(n / s, dtype), mean
    C = xp.matrix_transpose(Xc) @ Xc
    s, V = xp.linalg.eigh((C + xp.matrix_transpose(C)) / 2)
    keep = s > rtol * xp.max(s)
    s, V = s[keep], V[:, keep]
    T = V * xp.sqrt(n / s)[None, :]
    return _cast(Xc @ T, dtype), T, _cast(n / s, dtype), mean


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


class _Problem:
    """Batched objective: all folds x categorical features of one penalty.

    Internally the categorical features are ordered by class count, so that features with
    the same number of classes form one contiguous group of columns that is handled with one
    reshape (n, K, features, classes) instead of a loop over features.
    """

    def __init__(
        self,
        Z: Any,
        omega: Any,
        Y01: np.ndarray,
        M: np.ndarray,
        n_classes: Sequence[int],
        n_train: np.ndarray,
    ) -> None:
        """
        Parameters
        ----------
        Z : array (n, r)
            Whitened activations.
        omega : array (r,)
            Penalty weight per coordinate.
        Y01 : ndarray (n, Q)
            0/1 one-hot targets, features ordered by class count.
        M : ndarray (n, K)
            Row weights of each fold's training loss (1 / n_train on training rows, else 0).
        n_classes : sequence of int (F,), non-decreasing
        n_train : ndarray (K,)
        """
        xp = get_namespace(Z)
        self.xp, self.Z = xp, Z
        self.Zt = xp.matrix_transpose(Z)
        self.n, self.r = Z.shape
        self.omega = omega
        self.n_classes = [int(c) for c in n_classes]
        self.K, self.F, self.Q = M.shape[1], len(self.n_classes), int(sum(self.n_classes))
        self.host_Y01, self.host_M = Y01, M
        self.n_train = np.asarray(n_train, dtype=np.float64)
        self.binary = np.array([c == 2 for c in self.n_classes])
        self.groups: list[tuple[int, int, int, int]] = []  # (col start, n features, classes, f0)
        col = 0
        for j, c in enumerate(self.n_classes):
            if self.groups and self.groups[-1][2] == c:
                a, nf, cc, f0 = self.groups[-1]
                self.groups[-1] = (a, nf + 1, cc, f0)
            else:
                self.groups.append((col, 1, c, j))
            col += c
        self.col_feat = np.concatenate([np.full(c, j) for j, c in enumerate(self.n_classes)])
        E = np.zeros((self.Q, self.F))
        E[np.arange(self.Q), self.col_feat] = 1.0
        self.Y01 = _asarray(Y01, Z)  # (n, Q)
        self.M = _asarray(M, Z)  # (n, K)
        self.MY = self.M[:, :, None] * self.Y01[:, None, :]  # (n, K, Q): weighted targets
        self.E = _asarray(E, Z)  # (Q, F)
        self.Et = xp.matrix_transpose(self.E)

    @classmethod
    def build(cls, Z: Any, omega: Any, targets: Targets, folds: Folds) -> tuple[_Problem, Any]:
        """The problem of all folds x categorical features, and its column bookkeeping.

        Returns the problem and ``(order, perm)``: internal feature j is categorical feature
        ``order[j]``; internal column i is column ``perm[i]`` of the categorical columns in
        target order.
        """
        cat = [f for f in targets.features if f.kind == "categorical"]
        order = sorted(range(len(cat)), key=lambda j: cat[j].n_classes)
        ext_start = np.cumsum([0] + [f.n_classes for f in cat])
        perm: list[int] = []
        for j in order:
            perm.extend(range(ext_start[j], ext_start[j + 1]))
        feats = [cat[j] for j in order]
        Y01 = np.concatenate([(targets.Y[:, f.start : f.stop] + 1) / 2 for f in feats], 1)
        n_train = folds.counts()[0].astype(np.float64)
        M = np.stack([folds.train_mask(k) / n_train[k] for k in range(folds.n_splits)], axis=1)
        prob = cls(Z, omega, Y01, M, [f.n_classes for f in feats], n_train)
        return prob, (np.asarray(order), np.asarray(perm))

    def subset(self, ks: np.ndarray, fs: np.ndarray) -> tuple[_Problem, np.ndarray]:
        """The sub-problem of folds ``ks`` x features ``fs``, and its columns in this one."""
        cols = np.concatenate([np.flatnonzero(self.col_feat == j) for j in fs])
        sub = _Problem(self.Z, self.omega, self.host_Y01[:, cols], self.host_M[:, ks],
                       [self.n_classes[j] for j in fs], self.n_train[ks])
        return sub, cols

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
        data = -xp.sum(self.MY * logp, axis=0)  # (K, Q)
        lam_c = self.to_cols(lam)
        pen = 0.5 * lam_c * xp.sum(self.omega[:, None, None] * W * W, axis=0)  # (K, Q)
        f = self.per_problem(data + pen)
        R = self.M[:, :, None] * P - self.MY  # (n, K, Q)
        gW = xp.reshape(self.Zt @ xp.reshape(R, (self.n, self.K * self.Q)), W.shape)
        gW = gW + lam_c[None, :, :] * self.omega[:, None, None] * W
        gb = xp.sum(R, axis=0)
        return f, gW, gb, logp, P

    def value(self, W: Any, b: Any, lam: Any) -> Any:
        """Objective (K, F) only (one matrix product)."""
        xp = self.xp
        logp, _ = self.forward(W, b)
        data = -xp.sum(self.MY * logp, axis=0)
        pen = 0.5 * self.to_cols(lam) * xp.sum(self.omega[:, None, None] * W * W, axis=0)
        return self.per_problem(data + pen)

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
        for (_, nf, c, f0), Gw, Gb, (lamb, U) in zip(self.groups, gWs, gbs, curv, strict=True):
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
    compact: float = 0.0,
) -> tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray]:
    """Batched L-BFGS over all (fold, feature) problems of one penalty.

    The initial inverse Hessian of the two-loop recursion is the Kronecker approximation of
    :meth:`_Problem.curvature`, refreshed at every iteration.

    Returns ``(W, b, n_iter, done, converged)``; with ``compact > 0`` it returns early, with
    problems left, once the folds x features still active fill at most that fraction of the
    grid (the caller then continues on the smaller grid).
    """
    xp = prob.xp
    f, gW, gb, logp, P = prob.value_grad(W, b, lam)
    hist: list[tuple[Any, Any, Any, Any, Any]] = []
    n_iter = np.zeros((prob.K, prob.F), dtype=np.int64)
    done = np.asarray(_np(prob.gmax(gW, gb)) <= tol)
    for _ in range(max_iter):
        if done.all():
            break
        if compact > 0:
            act = ~done
            if act.any(axis=1).sum() * act.any(axis=0).sum() <= compact * act.size:
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
        converged = _np(prob.gmax(gW, gb)) <= tol
        done = done | converged | stalled
    converged = np.asarray(_np(prob.gmax(gW, gb)) <= tol)
    return W, b, n_iter, done, converged


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
    prob, (feat_order, perm) = _Problem.build(Z, omega, targets, folds)
    if prob.F == 0:
        raise ValueError("logistic decoders need at least one categorical feature")
    Cs_arr = np.asarray(Cs, dtype=np.float64)
    order = np.argsort(Cs_arr)
    W = xp.zeros((prob.r, prob.K, prob.Q), dtype=Z.dtype, device=_dev(Z))
    # Start the intercepts at the training log-frequencies (the optimum at C -> 0).
    freq = _np(xp.matrix_transpose(prob.M) @ prob.Y01)  # (K, Q)
    b = _asarray(np.log(np.maximum(freq, 1e-12)), Z)
    # Held-out rows of every fold, then the rows that are never held out (explicit splits).
    tests = [np.flatnonzero(folds.test_mask(k)) for k in range(prob.K)]
    never = np.flatnonzero(folds.test_fold < 0)
    back = _asarray(np.argsort(np.concatenate([*tests, never])), Z, xp.int64)
    tests_d = [_asarray(t, Z, xp.int64) for t in tests]
    ext = _asarray(np.argsort(perm), Z, xp.int64)
    P = len(Cs)
    Ws, bs, lps = [None] * P, [None] * P, [None] * P
    n_iter = np.zeros((P, prob.K, prob.F), dtype=np.int64)
    conv = np.zeros((P, prob.K, prob.F), dtype=bool)
    feat_back = np.argsort(feat_order)
    prev: tuple[Any, Any, float] | None = None
    last_logC: float | None = None
    for p in order:
        logC = float(np.log(Cs_arr[p]))
        lam = prob.lam(float(Cs_arr[p]))
        W0, b0 = W, b
        if prev is not None and last_logC is not None and prev[2] != last_logC:
            # Linear extrapolation along log C, kept per problem where it lowers the objective.
            step = (logC - last_logC) / (last_logC - prev[2])
            We, be = W + step * (W - prev[0]), b + step * (b - prev[1])
            better = _asarray((_np(prob.value(We, be, lam)) < _np(prob.value(W, b, lam)))
                              .astype(np.float64), Z)
            bc = prob.to_cols(better)
            W0, b0 = _blend(We, W, bc[None]), _blend(be, b, bc)
        Wn, bn, it, ok = _solve_compacting(prob, W0, b0, lam, tol, max_iter)
        prev, last_logC = (W, b, last_logC if last_logC is not None else logC), logC
        W, b = Wn, bn
        logp, _ = prob.forward(W, b)
        held = [xp.take(logp[:, k, :], tests_d[k], axis=0) for k in range(prob.K)]
        held.append(xp.zeros((never.size, prob.Q), dtype=logp.dtype, device=_dev(logp)))
        lp = xp.take(xp.concat(held, axis=0), back, axis=0)  # (n, Q), row order restored
        Ws[p] = xp.take(W, ext, axis=2)
        bs[p] = xp.take(b, ext, axis=1)
        lps[p] = xp.take(lp, ext, axis=1)
        n_iter[p], conv[p] = it[:, feat_back], ok[:, feat_back]
    return LogisticFit(
        Cs_arr,
        xp.stack(Ws, axis=0),
        xp.stack(bs, axis=0),
        xp.stack(lps, axis=0),
        n_iter,
        conv,
    )


def _solve_compacting(
    prob: _Problem, W: Any, b: Any, lam: Any, tol: float, max_iter: int
) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Run :func:`_lbfgs`, moving to the smaller grid of unfinished folds x features as
    problems finish (fewer columns in every matrix product)."""
    xp = prob.xp
    n_iter = np.zeros((prob.K, prob.F), dtype=np.int64)
    done = np.zeros((prob.K, prob.F), dtype=bool)
    conv = np.zeros((prob.K, prob.F), dtype=bool)
    ks, fs = np.arange(prob.K), np.arange(prob.F)
    sub, cols = prob, np.arange(prob.Q)
    used = 0
    while True:
        full = sub is prob
        if full:
            Ws, bs, lam_s = W, b, lam
        else:
            kd, cd = _asarray(ks, W, xp.int64), _asarray(cols, W, xp.int64)
            Ws = xp.take(xp.take(W, kd, axis=1), cd, axis=2)
            bs = xp.take(xp.take(b, kd, axis=0), cd, axis=1)
            lam_s = xp.take(xp.take(lam, kd, axis=0), _asarray(fs, W, xp.int64), axis=1)
        Ws, bs, it, d, c = _lbfgs(sub, Ws, bs, lam_s, tol, max_iter - used, compact=0.6)
        if full:
            W, b = Ws, bs
        else:
            W, b = _embed(W, Ws, ks, cols, prob.K, prob.Q), _embed(b, bs, ks, cols, prob.K,
                                                                 prob.Q, axis=0)
        grid = np.ix_(ks, fs)
        n_iter[grid] += it
        done[grid], conv[grid] = d, c
        used += int(it.max()) if it.size else 0
        if done.all() or used >= max_iter:
            return W, b, n_iter, conv
        act = ~done
        ks, fs = np.flatnonzero(act.any(axis=1)), np.flatnonzero(act.any(axis=0))
        sub, cols = prob.subset(ks, fs)


def _embed(full: Any, part: Any, ks: np.ndarray, cols: np.ndarray, K: int, Q: int,
           axis: int = 1) -> Any:
    """Write ``part`` (.., len(ks), len(cols)) into ``full`` (.., K, Q) at (ks, cols)."""
    xp = get_namespace(full)
    kmap, qmap = np.zeros(K, dtype=np.int64), np.zeros(Q, dtype=np.int64)
    kmap[ks], qmap[cols] = np.arange(ks.size), np.arange(cols.size)
    mask = np.zeros((K, Q))
    mask[np.ix_(ks, cols)] = 1.0
    wide = xp.take(xp.take(part, _asarray(kmap, full, xp.int64), axis=axis),
                   _asarray(qmap, full, xp.int64), axis=axis + 1)
    m = _asarray(mask, full)
    return _blend(wide, full, m[None] if axis == 1 else m)


def logistic_cv(
    X: Any,
    targets: Targets,
    folds: Folds,
    Cs: Sequence[float] = DEFAULT_CS,
    stats: GroupStats | GramStats | None = None,
    tol: float = 1e-4,
    max_iter: int = 500,
    dtype: str = "float64",
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
    Z, _T, omega, _mean = whiten(X, stats, dtype=dtype)
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
