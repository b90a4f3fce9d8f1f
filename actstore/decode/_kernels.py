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

__all__ = ["available", "softmax_rows"]

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
        try:  # compiled once, then loaded from numba's cache next to this file (or the user's)
            softmax = njit(cache=True, nogil=True)(_softmax_rows)
        except RuntimeError:  # no writable cache location: compile in every process
            softmax = njit(nogil=True)(_softmax_rows)
        _compiled.update(ok=True, softmax=softmax)
    return bool(_compiled["ok"])


def _softmax_rows(L: Any, MY: Any, M: Any, col0: Any, first: int, stride: int,
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


def softmax_rows(L: np.ndarray, MY: np.ndarray, M: np.ndarray, col0: np.ndarray, cmax: int,
                 first: int, stride: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Softmax loss, residuals and curvature sums of rows ``L`` (m, columns) of logits.

    Parameters
    ----------
    L : ndarray (m, columns), C-contiguous
        Logits of consecutive problems; overwritten with the residuals ``M_p (P - Y)``.
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
    _compiled["softmax"](L, MY, M, col0, first, stride, data, gb, diag, ptp)
    return data, gb, diag, ptp
