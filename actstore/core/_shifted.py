"""Solve ``(M + a I) X = B`` for one symmetric PSD matrix ``M`` and many shifts ``a``.

Every ridge penalty of a fold is such a shifted system of the same Gram matrix. Two exact
factorisations serve all shifts at once:

* tridiagonal (host numpy, float64): ``M = Q T Q^T`` by Householder reduction (LAPACK
  ``dsytrd``), ``Q^T B`` once, one positive definite tridiagonal solve ``(T + a I) Z = Q^T B``
  per shift (``dptsv``, O(m) per column) and ``Q Z`` for all shifts in one blocked
  application of the reflectors (``dormqr``). The reduction is the first half of an
  eigendecomposition; skipping the eigenvalue iteration and the eigenvector back-transform
  makes it 2.5-3x cheaper than ``eigh`` at m = 1,000-2,000 on one core.
* eigen (any array namespace): ``M = V diag(s) V^T``, ``X(a) = V diag(1 / (s + a)) V^T B``.

Both agree to rounding (relative 1e-14 on the benchmark's Grams).

Precision ``"float32"`` (the probe engine's default for ridge) reduces large matrices in
single precision, about twice as fast (LAPACK ``ssytrd``/``sormqr``: half the memory traffic),
and checks every call in double precision: at the smallest shift of the call (where the
error is largest: it is bounded by ``||E|| / (lambda_min + a)`` for the reduction's backward
error ``E``), the residual ``r = B - (M + a I) X`` is formed from the float64 matrix and one
refinement step ``(M + a I)^{-1} r`` is solved with the same factorisation; its size
relative to ``X`` estimates ``X``'s relative error (it matches the true error to two digits
where the refinement converges). Above :data:`MIXED_TOL` the matrix is reduced again in
float64 and that factorisation serves this and every later call: near-singular Grams with
tiny penalties, where single precision is not enough, get exactly the float64 solutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actstore.core._backend import get_namespace

__all__ = ["MIXED_MIN", "MIXED_TOL", "PRECISIONS", "ShiftedSystem", "alphas_on", "apply_each",
           "shifted_system"]

#: Working precisions of :func:`shifted_system`.
PRECISIONS = ("float32", "float64")
#: The smallest matrix reduced in single precision (below it the float64 reduction costs
#: milliseconds).
MIXED_MIN = 512
#: The largest estimated relative error of a single-precision solution that is accepted.
MIXED_TOL = 1e-3


def alphas_on(alphas: Sequence[float], like: Any) -> Any:
    """Penalties as a float64 array of ``like``'s namespace and device."""
    from array_api_compat import device

    xp = get_namespace(like)
    return xp.asarray(np.asarray(alphas, dtype=np.float64), dtype=xp.float64, device=device(like))


def apply_each(A: Any, W: Any) -> Any:
    """``A @ W[p]`` for every p as one product: (m, k) x (P, k, q) -> (m, P, q)."""
    xp = get_namespace(A)
    P, k, q = W.shape
    flat = xp.reshape(xp.permute_dims(W, (1, 0, 2)), (k, P * q))
    return xp.reshape(A @ flat, (A.shape[0], P, q))


class ShiftedSystem:
    """A factorised symmetric PSD matrix ``M`` (m, m); :meth:`solve` gives every shift."""

    m: int

    def solve(self, B: Any, alphas: Sequence[float]) -> Any:
        """``(M + a I)^{-1} B`` for every ``a`` in ``alphas``: shape (len(alphas), m, q)."""
        raise NotImplementedError


class _Eigen(ShiftedSystem):
    def __init__(self, M: Any) -> None:
        xp = get_namespace(M)
        s, V = xp.linalg.eigh(M)
        self.s, self.V, self.m = xp.clip(s, 0.0, None), V, int(M.shape[0])

    def solve(self, B: Any, alphas: Sequence[float]) -> Any:
        xp = get_namespace(self.V)
        a = xp.astype(alphas_on(alphas, self.V), self.V.dtype)
        VB = xp.matrix_transpose(self.V) @ B  # (m, q)
        scaled = VB[None, :, :] / (self.s[None, :, None] + a[:, None, None])  # (P, m, q)
        return xp.permute_dims(apply_each(self.V, scaled), (1, 0, 2))


class _Tridiagonal(ShiftedSystem):
    def __init__(self, M: np.ndarray, dtype: Any = np.float64) -> None:
        from scipy.linalg import lapack

        m = int(M.shape[0])
        self.dtype = np.dtype(dtype)
        p = "s" if self.dtype == np.float32 else "d"
        A = np.array(M, dtype=self.dtype, order="F")
        lwork, info = getattr(lapack, p + "sytrd_lwork")(m, lower=1)
        _check(info, p + "sytrd_lwork")
        c, diag, off, self.tau, info = getattr(lapack, p + "sytrd")(
            A, lower=1, lwork=max(int(lwork), 1), overwrite_a=1)
        _check(info, p + "sytrd")
        # the tridiagonal solves are O(m) per column: float64 whatever the reduction's precision
        self.diag, self.off = diag.astype(np.float64), off.astype(np.float64)
        # Q = H(1) ... H(m-1) acts on rows 1: ; its reflectors are a QR-style (m-1) x (m-1)
        # lower trapezoid of c, as LAPACK's dormtr uses them.
        self.reflectors = np.asfortranarray(c[1:, :-1])
        self.m = m

    def _apply_q(self, C: np.ndarray, trans: bytes) -> np.ndarray:
        """``Q C`` (trans ``N``) or ``Q^T C`` (``T``) for C of shape (m, k)."""
        from scipy.linalg import lapack

        ormqr = lapack.sormqr if self.dtype == np.float32 else lapack.dormqr
        out = np.array(C, dtype=self.dtype, order="F")
        rest = out[1:]
        _, work, info = ormqr(b"L", trans, self.reflectors, self.tau, rest, lwork=-1)
        _check(info, "ormqr workspace query")
        rest, _, info = ormqr(b"L", trans, self.reflectors, self.tau, rest,
                              lwork=max(int(work[0]), 1), overwrite_c=1)
        _check(info, "ormqr")
        out[1:] = rest
        return out.astype(np.float64, copy=False)

    def solve(self, B: Any, alphas: Sequence[float]) -> Any:
        from scipy.linalg import lapack

        B = np.asarray(B, dtype=np.float64)
        m, q = B.shape
        P = len(alphas)
        if q == 0 or P == 0:
            return np.zeros((P, m, q))
        QB = self._apply_q(B, b"T")
        Z = np.empty((m, P * q), dtype=np.float64, order="F")
        for i, a in enumerate(alphas):
            _, _, x, info = lapack.dptsv(self.diag + float(a), self.off, QB)
            if info != 0:  # not positive definite to working precision (a = 0, rounding)
                _, _, _, x, info = lapack.dgtsv(self.off, self.diag + float(a), self.off, QB)
            if info != 0:  # singular: as the eigen path, with eigenvalues clipped at 0
                x = self._eigen_solve(QB, float(a))
            Z[:, i * q:(i + 1) * q] = x
        return np.ascontiguousarray(self._apply_q(Z, b"N").reshape(m, P, q).transpose(1, 0, 2))

    def _eigen_solve(self, QB: np.ndarray, a: float) -> np.ndarray:
        """``(T + a I)^+ QB`` from the eigendecomposition of the tridiagonal ``T``."""
        from scipy.linalg import eigh_tridiagonal

        w, U = eigh_tridiagonal(self.diag, self.off)
        den = np.clip(w, 0.0, None) + a
        inv = np.divide(1.0, den, out=np.zeros_like(den), where=den > 0)
        return U @ (inv[:, None] * (U.T @ QB))


class _Checked(ShiftedSystem):
    """A single-precision reduction whose solutions are checked in double precision; the
    float64 reduction replaces it at the first check that fails (module docstring)."""

    def __init__(self, M: np.ndarray) -> None:
        # the check multiplies by the whole matrix: both triangles must hold it
        self.M = np.asarray(M, dtype=np.float64)
        self.m = int(M.shape[0])
        # symmetric: its transpose is the same matrix, and already in LAPACK's order
        self.fast: _Tridiagonal | None = _Tridiagonal(
            self.M.T if self.M.flags.c_contiguous else self.M, np.float32)
        self.exact: _Tridiagonal | None = None
        #: The smallest shift checked so far: the error bound only falls as the shift grows,
        #: so calls with larger shifts only (e.g. a grid extended upward) are not checked again.
        self.checked = float("inf")

    def solve(self, B: Any, alphas: Sequence[float]) -> Any:
        B = np.asarray(B, dtype=np.float64)
        if self.fast is not None:
            X = self.fast.solve(B, alphas)
            low = min((float(a) for a in alphas), default=float("inf"))
            if low >= self.checked or self.accurate(B, X, alphas):
                self.checked = min(self.checked, low)
                return X
            self.exact, self.fast = _Tridiagonal(self.M), None
        assert self.exact is not None
        return self.exact.solve(B, alphas)

    def accurate(self, B: np.ndarray, X: np.ndarray, alphas: Sequence[float]) -> bool:
        """Whether the solutions ``X`` (P, m, q) are within :data:`MIXED_TOL` (relative),
        estimated at the smallest shift by one refinement step.

        The step is taken for a few fixed random combinations of the q columns (their
        squared norms estimate the Frobenius norms of the error and of ``X``): the check
        then costs one pass over ``M`` and over the reflectors whatever q is."""
        assert self.fast is not None
        if X.size == 0:
            return True
        i = int(np.argmin(np.asarray(alphas, dtype=np.float64)))
        a, x = float(alphas[i]), X[i]
        mix = np.random.default_rng(0).standard_normal((x.shape[1], min(x.shape[1], 4)))
        x, b = x @ mix, B @ mix
        r = b - self.M @ x - a * x
        step = self.fast.solve(r, [a])[0]
        size, err = float(np.linalg.norm(x)), float(np.linalg.norm(step))
        return bool(np.isfinite(size) and np.isfinite(err) and err <= MIXED_TOL * size)


def _check(info: int, what: str) -> None:
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK {what} failed (info = {info})")


def shifted_system(M: Any, precision: str = "float64") -> ShiftedSystem:
    """Factorise a symmetric PSD matrix for :meth:`ShiftedSystem.solve` (the reductions
    read its lower triangle; the float32 check multiplies by all of it).

    Host float64 arrays of size 2 or more get the tridiagonal reduction: in float64, or with
    ``precision="float32"`` and size :data:`MIXED_MIN` or more, in float32 with every
    call's solutions checked in float64 (module docstring). Other arrays (other backends,
    float32 input) get an eigendecomposition in their own precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if isinstance(M, np.ndarray) and M.dtype == np.float64 and M.shape[0] >= 2:
        if precision == "float32" and M.shape[0] >= MIXED_MIN:
            return _Checked(M)
        return _Tridiagonal(M)
    return _Eigen(M)
