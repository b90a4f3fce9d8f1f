"""Compiled row loops of the softmax objective for numpy arrays (numba).

On a CPU the elementwise work of :meth:`SoftmaxProblems.value_grad
<actstore.decode._softmax.SoftmaxProblems.value_grad>` between its two matrix products is a
few hundred small numpy operations per evaluation (one set per class count and row block),
and their dispatch, not their arithmetic, dominates at the shapes of real probes (hundreds of
rows and units). Here one pass over the rows does all of it: each problem's softmax, its
loss, the residuals ``R = M * P - M * Y`` (in place of the logits) and the sums of the
curvature preconditioner. Sums are kept in float64 whatever the data's precision.

Other array namespaces (torch, CuPy) take the array-API path of ``value_grad``; the two
give the same numbers (tests/probes/test_lbfgs.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["available", "softmax_rows", "two_loop_back", "two_loop_forward"]

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
        funcs = {"softmax": _softmax_rows, "sweep": _sweep}
        for name, fn in funcs.items():
            try:  # compiled once, then loaded from numba's cache next to this file
                _compiled[name] = njit(cache=True, nogil=True)(fn)
            except RuntimeError:  # no writable cache location: compile in every process
                _compiled[name] = njit(nogil=True)(fn)
        _compiled["ok"] = True
    return bool(_compiled["ok"])


def _softmax_rows(L: Any, b: Any, MY: Any, M: Any, col0: Any, first: int, stride: int,
                  data: Any, gb: Any, diag: Any, ptp: Any) -> None:
    m = L.shape[0]
    n_prob = M.shape[1]
    pr = np.empty(diag.shape[1])
    for i in range(m):
        sampled = stride > 0 and (i - first) % stride == 0
        for p in range(n_prob):
            a, e = col0[p], col0[p + 1]
            w = M[i, p]
            if w == 0.0:
                for c in range(a, e):  # no weight, no target: the residual is zero
                    L[i, c] = 0.0
                continue
            for c in range(a, e):
                L[i, c] += b[c]
            mx = L[i, a]
            for c in range(a + 1, e):
                mx = max(mx, L[i, c])
            tot = 0.0
            for c in range(a, e):
                v = np.exp(L[i, c] - mx)
                pr[c - a] = v
                tot += v
            lse = mx + np.log(tot)
            for c in range(a, e):
                y = MY[i, c]
                if y != 0.0:
                    data[c] -= y * (L[i, c] - lse)
                q = pr[c - a] / tot
                pr[c - a] = q
                res = w * q - y
                L[i, c] = res
                gb[c] += res
            if sampled:
                ws = w * stride
                for u in range(e - a):
                    wu = ws * pr[u]
                    diag[p, u] += wu
                    for v in range(u + 1):  # the lower triangle; mirrored at the end
                        ptp[p, u, v] += wu * pr[v]
    for p in range(n_prob):
        for u in range(col0[p + 1] - col0[p]):
            for v in range(u):
                ptp[p, v, u] = ptp[p, u, v]


def softmax_rows(L: np.ndarray, b: np.ndarray, MY: np.ndarray, M: np.ndarray,
                 col0: np.ndarray, cmax: int,
                 first: int, stride: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Softmax loss, residuals and curvature sums of rows ``L`` (m, columns) of logits.

    Parameters
    ----------
    L : ndarray (m, columns), C-contiguous
        Logits of consecutive problems, less the intercepts; overwritten with the residuals
        ``M_p (P - Y)``.
    b : ndarray (columns,)
        Intercepts, added to ``L``.
    MY : ndarray (m, columns)
        Row weight times the 0/1 target of every column.
    M : ndarray (m, problems)
        Row weight of every problem (0: the row does not count).
    col0 : ndarray (problems + 1,) int64
        First column of every problem, and the end.
    cmax : int
        Width of the padded curvature sums (at least every problem's class count).
    first, stride : int
        Curvature sums from the rows ``first, first + stride, ...`` (modulo ``stride``),
        each weighted ``stride`` times; none with ``stride = 0``.

    Returns
    -------
    data : ndarray (columns,)
        ``-sum_i MY * log P`` per column.
    gb : ndarray (columns,)
        Column sums of the residuals.
    diag : ndarray (problems, cmax)
        ``sum_i M p_i`` per problem over the sampled rows, zero-padded.
    ptp : ndarray (problems, cmax, cmax)
        ``sum_i M p_i p_i^T`` per problem over the sampled rows, zero-padded.
    """
    C, n_prob = L.shape[1], M.shape[1]
    data, gb = np.zeros(C), np.zeros(C)
    diag, ptp = np.zeros((n_prob, cmax)), np.zeros((n_prob, cmax, cmax))
    if not available():
        raise RuntimeError("the compiled softmax loop needs numba")
    _compiled["softmax"](L, b, MY, M, col0, first, stride, data, gb, diag, ptp)
    return data, gb, diag, ptp


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
