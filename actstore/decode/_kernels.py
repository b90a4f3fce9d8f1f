"""Compiled loops of the softmax objective and of batched L-BFGS for numpy arrays (numba).

On a CPU the elementwise work of :meth:`SoftmaxProblems.value_grad
<actstore.decode._softmax.SoftmaxProblems.value_grad>` between its two matrix products is a
few hundred small numpy operations per evaluation (one set per class count and row block),
and their dispatch, not their arithmetic, dominates at the shapes of real probes (hundreds of
rows and units). Here the logits are shifted by each sample's largest of the problem in one
compiled pass, their exponentials and the logarithms of their sums are one vectorised numpy
pass each, and one compiled pass over the samples does the rest: each problem's softmax, its
loss, the residuals ``R = M * P - M * Y`` (in place of the logits) and the sums of the
curvature preconditioner. Sums are kept in float64 whatever the data's precision. The
two-loop recursion and the Kronecker preconditioner of the search direction are compiled
too, straight on the problems' columns.

Other array namespaces (torch, CuPy) take the array-API paths; the two give the same numbers
(tests/probes/test_lbfgs.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "available", "precondition", "shift_cols", "softmax_cols", "two_loop_back",
    "two_loop_forward",
]

_compiled: dict[str, Any] = {}


def available() -> bool:
    """Whether the compiled loops can be used (numba imports; compiled on first use and
    cached on disk)."""
    if not _compiled:
        try:
            from numba import njit
        except ImportError:  # pragma: no cover - numba is a dependency
            _compiled["ok"] = False
            return False
        funcs = {"softmax": _softmax_cols, "shift": _shift_cols, "sweep": _sweep,
                 "precond": _precond}
        for name, fn in funcs.items():
            # sums over the samples may be reassociated (vectorised)
            opts: dict[str, Any] = (
                {"fastmath": {"reassoc", "contract", "arcp", "nsz"}} if name == "softmax"
                else {})
            try:  # compiled once, then loaded from numba's cache next to this file
                _compiled[name] = njit(cache=True, nogil=True, **opts)(fn)
            except RuntimeError:  # no writable cache location: compile in every process
                _compiled[name] = njit(nogil=True, **opts)(fn)
        _compiled["ok"] = True
    return bool(_compiled["ok"])


def _shift_cols(LT: Any, E: Any, shift: Any, col0: Any) -> None:
    m = LT.shape[1]
    for p in range(col0.shape[0] - 1):
        a, e = col0[p], col0[p + 1]
        for i in range(m):
            shift[p, i] = LT[a, i]
        for c in range(a + 1, e):
            for i in range(m):
                shift[p, i] = max(shift[p, i], LT[c, i])
        for c in range(a, e):
            for i in range(m):
                E[c, i] = LT[c, i] - shift[p, i]


def shift_cols(LT: np.ndarray, E: np.ndarray, shift: np.ndarray, col0: np.ndarray) -> None:
    """Each sample's logits less its largest logit of the problem, ``E = LT - shift``
    (exponentiated by the caller: one vectorised pass over all blocks), and the shifts
    ``shift`` (problems, m). Layout as :func:`softmax_cols`."""
    if not available():
        raise RuntimeError("the compiled softmax pass needs numba")
    _compiled["shift"](LT, E, shift, col0)


def _softmax_cols(LT: Any, ET: Any, shift: Any, MYT: Any, MT: Any, col0: Any, stride: int,
                  tot: Any, data: Any, gb: Any, diag: Any, ptp: Any, t: Any, inv: Any
                  ) -> None:
    m = LT.shape[1]
    for p in range(MT.shape[0]):
        a, e = col0[p], col0[p + 1]
        for c in range(a, e):  # the loss less the log-sum-exp: - sum_i MY (L - shift)
            s = 0.0
            for i in range(m):
                s += MYT[c, i] * (LT[c, i] - shift[p, i])
            data[c] -= s
        for i in range(m):
            t[i] = 0.0
        for c in range(a, e):  # >= 1: the largest logit's term is exp(0)
            for i in range(m):
                t[i] += ET[c, i]
        for i in range(m):  # rows of no weight: no residual, a sum of 1
            w = MT[p, i] != 0.0
            inv[i] = 1.0 / t[i] if w else 0.0
            tot[p, i] = t[i] if w else 1.0
        for c in range(a, e):  # the residuals M P - MY, in place of the logits
            s = 0.0
            for i in range(m):
                res = MT[p, i] * (ET[c, i] * inv[i]) - MYT[c, i]
                LT[c, i] = res
                s += res
            gb[c] += s
        if stride > 0:
            for u in range(e - a):
                s = 0.0
                for i in range(0, m, stride):
                    s += MT[p, i] * (ET[a + u, i] * inv[i])
                diag[p, u] += s * stride
                for v in range(u + 1):
                    s = 0.0
                    for i in range(0, m, stride):
                        s += MT[p, i] * (ET[a + u, i] * inv[i]) * (ET[a + v, i] * inv[i])
                    ptp[p, u, v] += s * stride
                    if v < u:
                        ptp[p, v, u] += s * stride


def softmax_cols(LT: np.ndarray, ET: np.ndarray, shift: np.ndarray, MYT: np.ndarray,
                 MT: np.ndarray, col0: np.ndarray, stride: int, tot: np.ndarray,
                 data: np.ndarray, gb: np.ndarray, diag: np.ndarray, ptp: np.ndarray) -> None:
    """Softmax loss, residuals and curvature sums of a block of logits, one row per column
    of the problems (so that every inner loop runs over the samples, vectorised).

    The shifted exponentials come from the caller (:func:`shift_cols`, then one vectorised
    pass over every block): each sample's logits less its largest of the problem, so that
    their sum is at least 1 and the loss keeps float32's precision near the optimum. The
    logarithms are left to the caller too: the loss is ``data`` plus ``sum_i MYp_i
    log(tot_i)`` over each problem's samples.

    Parameters
    ----------
    LT : ndarray (columns, m), C-contiguous
        Logits of consecutive problems (intercepts included), column by column; overwritten
        with the residuals ``M_p (P - Y)``.
    ET : ndarray (columns, m)
        ``exp(LT - shift)``.
    shift : ndarray (problems, m)
        Each sample's largest logit of the problem.
    MYT : ndarray (columns, m)
        Sample weight times the 0/1 target of every column.
    MT : ndarray (problems, m)
        Sample weight of every problem (0: the sample does not count).
    col0 : ndarray (problems + 1,) int64
        First column of every problem, and the end.
    stride : int
        Curvature sums from the samples ``0, stride, 2 stride, ...``, each weighted
        ``stride`` times; none with ``stride = 0``.
    tot : ndarray (problems, m), float64
        Filled with each sample's sum of the problem's shifted exponentials (1 where it has
        no weight).
    data, gb : ndarray (columns,)
        ``- sum_i MY (L - shift)`` and the residuals' sums are added to them.
    diag, ptp : ndarray (problems, cmax) and (problems, cmax, cmax)
        ``sum_i M p_i`` and ``sum_i M p_i p_i^T`` over the sampled rows are added to them.
    """
    if not available():
        raise RuntimeError("the compiled softmax pass needs numba")
    m = LT.shape[1]
    _compiled["softmax"](LT, ET, shift, MYT, MT, col0, stride, tot, data, gb, diag, ptp,
                         np.empty(m), np.empty(m))


def _sweep(D: Any, Db: Any, U: Any, Ub: Any, rho: Any, base: Any, slots: Any, col_prob: Any,
           x: Any, xb: Any, coef: Any) -> None:
    r, Q = x.shape
    m = slots.shape[0]
    colacc = np.zeros(Q)
    ccol = np.zeros(Q)  # the previous pair's coefficient per column (none before the first)
    dots = np.zeros(rho.shape[1])
    for k in range(m):
        i, ip = slots[k], slots[max(k - 1, 0)]
        colacc[:] = 0.0
        for j in range(r):  # x += coef_prev u_prev, fused with this pair's d . x
            for c in range(Q):
                v = x[j, c] + ccol[c] * U[ip, j, c]
                x[j, c] = v
                colacc[c] += D[i, j, c] * v
        for c in range(Q):
            xb[c] += ccol[c] * Ub[ip, c]
        dots[:] = 0.0  # per problem: its columns' sums, and the intercepts' products
        for c in range(Q):
            dots[col_prob[c]] += colacc[c] + Db[i, c] * xb[c]
        for p in range(dots.shape[0]):
            coef[i, p] = base[i, p] - rho[i, p] * dots[p]
        for c in range(Q):
            ccol[c] = coef[i, col_prob[c]]
    if m:  # the last pair's update
        ip = slots[m - 1]
        for j in range(r):
            for c in range(Q):
                x[j, c] += ccol[c] * U[ip, j, c]
        for c in range(Q):
            xb[c] += ccol[c] * Ub[ip, c]


def two_loop_back(S: np.ndarray, Sb: np.ndarray, Y: np.ndarray, Yb: np.ndarray,
                  rho: np.ndarray, order: np.ndarray, col_prob: np.ndarray, qW: np.ndarray,
                  qb: np.ndarray, alpha: np.ndarray) -> None:
    """First loop of the L-BFGS recursion, newest pair first, in place.

    For each pair ``i`` of ``order`` (slots, oldest first; newest handled first):
    ``alpha[i] = rho[i] * (s_i . q)`` per problem, then ``q -= alpha[i] y_i``, where ``.``
    sums over the rows and each problem's columns (``col_prob`` gives the problem of every
    column). ``S``, ``Y`` (memory, r, Q), ``Sb``, ``Yb`` (memory, Q), ``rho`` and ``alpha``
    (memory, P); ``qW`` (r, Q) and ``qb`` (Q,) are updated.
    """
    if not available():
        raise RuntimeError("the compiled two-loop recursion needs numba")
    if order.size:
        _compiled["sweep"](S, Sb, Y, Yb, rho, np.zeros_like(alpha), order[::-1].copy(),
                           col_prob, qW, qb, alpha)
        np.negative(alpha, out=alpha)


def two_loop_forward(S: np.ndarray, Sb: np.ndarray, Y: np.ndarray, Yb: np.ndarray,
                     rho: np.ndarray, order: np.ndarray, col_prob: np.ndarray,
                     alpha: np.ndarray, rW: np.ndarray, rb: np.ndarray) -> None:
    """Second loop of the L-BFGS recursion, oldest pair first, in place:
    ``r += (alpha[i] - rho[i] * (y_i . r)) s_i`` per pair (:func:`two_loop_back`)."""
    if not available():
        raise RuntimeError("the compiled two-loop recursion needs numba")
    if order.size:
        _compiled["sweep"](Y, Yb, S, Sb, rho, alpha, order, col_prob, rW, rb,
                           np.zeros_like(alpha))


def _precond(gW: Any, gb: Any, U: Any, invT: Any, inv_b: Any, col0: Any, out: Any,
             outb: Any, quad: Any, apply: bool, gblk: Any, oblk: Any, t: Any, qrow: Any
             ) -> None:
    r, Q = gW.shape
    cm = U.shape[1]
    JB = gblk.shape[1]
    n_prob = col0.shape[0] - 1
    # Weight rows in blocks of JB, transposed into (columns, JB) buffers that stay in cache,
    # so that every inner loop runs over the rows of a block (vectorised).
    for j0 in range(0, r, JB):
        nb = min(JB, r - j0)
        for jj in range(nb):
            for c in range(Q):
                gblk[c, jj] = gW[j0 + jj, c]
        for p in range(n_prob):
            a, e = col0[p], col0[p + 1]
            v0 = cm - (e - a)  # the padded slots' eigenvectors come first (eigenvalue -1)
            for v in range(v0, cm):  # t = U^T g
                for jj in range(nb):
                    t[v, jj] = 0.0
                for u in range(e - a):
                    w = U[p, u, v]
                    for jj in range(nb):
                        t[v, jj] += w * gblk[a + u, jj]
            for jj in range(nb):
                qrow[jj] = 0.0
            for v in range(v0, cm):  # t *= the inverse curvature; g . H0 g
                for jj in range(nb):
                    x = t[v, jj]
                    h = invT[p, v, j0 + jj]
                    qrow[jj] += x * x * h
                    t[v, jj] = x * h
            for jj in range(nb):
                quad[p] += qrow[jj]
            if apply:
                for u in range(e - a):  # H0 g = U t
                    for jj in range(nb):
                        oblk[a + u, jj] = 0.0
                    for v in range(v0, cm):
                        w = U[p, u, v]
                        for jj in range(nb):
                            oblk[a + u, jj] += w * t[v, jj]
        if apply:
            for jj in range(nb):
                for c in range(Q):
                    out[j0 + jj, c] = oblk[c, jj]
    for p in range(n_prob):  # the intercepts
        a, e = col0[p], col0[p + 1]
        v0 = cm - (e - a)
        for v in range(v0, cm):
            x = 0.0
            for u in range(e - a):
                x += gb[a + u] * U[p, u, v]
            h = inv_b[p, 0, v]
            quad[p] += x * x * h
            t[v, 0] = x * h
        if apply:
            for u in range(e - a):
                x = 0.0
                for v in range(v0, cm):
                    x += U[p, u, v] * t[v, 0]
                outb[a + u] = x


def precondition(gW: np.ndarray, gb: np.ndarray, curv: tuple[Any, Any, Any, Any],
                 col0: np.ndarray, apply: bool = True
                 ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """The Kronecker preconditioner of every problem applied to (r, columns) and (columns,)
    arrays, straight on the problems' columns (no padding to the largest class count).

    ``curv`` is :meth:`SoftmaxProblems.curvature
    <actstore.decode._softmax.SoftmaxProblems.curvature>`'s ``(U, Ut, inv, inv_b)`` (``inv``
    a transposed view of a C-contiguous (problems, cmax, r) array); ``col0`` (problems + 1,)
    the first column of every problem, and the end. Returns ``H0 g`` (``None, None`` unless
    ``apply``) and ``g . H0 g`` per problem, in the dtype of ``gW``.
    """
    if not available():
        raise RuntimeError("the compiled preconditioner needs numba")
    U, _, inv, inv_b = curv
    invT = np.ascontiguousarray(inv.transpose(0, 2, 1))  # a view, as curvature() builds it
    Q, dt, cm, JB = gW.shape[1], gW.dtype, U.shape[1], 32
    out = np.empty_like(gW) if apply else np.empty((0, 0), dtype=dt)
    outb = np.empty_like(gb) if apply else np.empty(0, dtype=dt)
    quad = np.zeros(col0.size - 1)
    _compiled["precond"](gW, gb, U, invT, inv_b, col0, out, outb, quad, apply,
                         np.empty((Q, JB), dtype=dt), np.empty((Q, JB), dtype=dt),
                         np.empty((cm, JB), dtype=dt), np.empty(JB))
    return (out if apply else None), (outb if apply else None), quad.astype(dt)
