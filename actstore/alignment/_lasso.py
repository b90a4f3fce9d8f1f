"""Sparse prediction of one network's units from another's: a multi-target LASSO path.

Every unit ``y_j`` of network B (standardised) is predicted from all units of network A
(standardised) by an independent LASSO with the same penalty ``alpha``:

``min_w (1 / (2 n)) ||y_j - X w||^2 + alpha ||w||_1``

(scikit-learn ``Lasso(alpha, fit_intercept=False)`` on standardised data, one target at a
time). All targets share the Gram ``G = X^T X / n``, so coordinate descent runs on ``G`` and
``C = X^T Y / n`` for all targets at once and never touches the samples: both come from
streamed moments (:mod:`._moments`). Penalties are visited from large to small with warm
starts; ``alpha = 0`` is the minimum-norm least-squares solution. Held-out losses come from
the moments of a held-out split, standardised with the training means and deviations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from actstore._errors import ActstoreError
from actstore.core._moments import PairMoments

__all__ = [
    "LASSO_ALPHAS",
    "LassoPath",
    "check_alphas",
    "duality_gap",
    "lasso_admm",
    "lasso_gram",
    "sparse_prediction",
]

#: Penalty path of Li et al. (2016).
LASSO_ALPHAS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class LassoPath:
    """Coefficients and losses of a multi-target LASSO path.

    Attributes
    ----------
    alphas : ndarray of shape (k,)
        Penalties, as given.
    coef : ndarray of shape (k, dx, dy)
        Weights from standardised units of A to standardised units of B.
    train_loss, test_loss : ndarray of shape (k, dy)
        Mean squared error per target unit (standardised scale; 1 = predicting the mean).
    nonzero : ndarray of shape (k, dy), int
        Non-zero weights per target unit.
    converged : ndarray of shape (k,), bool
        Coordinate descent met its tolerance.
    constant_x, constant_y : ndarray of shape (dx,), (dy,), bool
        Units with zero variance on the training split (weights and targets set to 0).
    """

    alphas: np.ndarray
    coef: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    nonzero: np.ndarray
    converged: np.ndarray
    constant_x: np.ndarray
    constant_y: np.ndarray

    def __repr__(self) -> str:
        k, dx, dy = self.coef.shape
        return (f"LassoPath(alphas={k}, dx={dx}, dy={dy}, "
                f"converged={int(np.sum(self.converged))}/{k})")


def check_alphas(alphas: Any) -> np.ndarray:
    """The LASSO penalty path as a float64 array: one or more finite numbers >= 0.

    Raises
    ------
    ActstoreError
        For anything else (one error naming ``alphas``, the bad values and an example).
    """
    example = "e.g. alphas=(0.0, 1e-4, 1e-2) (0 is the least-squares fit)"
    if isinstance(alphas, (str, bytes)):
        raise ActstoreError(f"alphas must be a sequence of numbers, not the str {alphas!r}; "
                            f"{example}")
    try:
        a = np.asarray(alphas, dtype=np.float64)
    except (TypeError, ValueError):
        raise ActstoreError(
            f"alphas must be a sequence of numbers, got {alphas!r}; {example}"
        ) from None
    if a.ndim != 1 or a.size == 0:
        raise ActstoreError(
            f"alphas must be a flat sequence of at least one penalty, got {alphas!r} "
            f"(shape {a.shape}); {example}"
        )
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        raise ActstoreError(
            f"LASSO penalties must be finite numbers >= 0; alphas holds {a[bad].tolist()} "
            f"(of {a.tolist()}); {example}"
        )
    return a


def is_constant(sd: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Units whose deviation is zero or below round-off of their mean (bool per unit)."""
    return sd <= 1e-10 * np.abs(mean)


def _real_matrix(value: Any, what: str, shape: str) -> np.ndarray:
    """A finite 2-D float array (float arrays are kept as they are)."""
    try:
        a = np.asarray(value)
        if a.dtype.kind != "f":
            a = a.astype(np.float64)
    except (TypeError, ValueError):
        raise ActstoreError(f"{what} must be a numeric array of shape {shape}") from None
    if a.ndim != 2:
        raise ActstoreError(f"{what} must be a 2-D array of shape {shape}, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ActstoreError(
            f"{what} holds {int((~np.isfinite(a)).sum())} NaN or infinite value(s); the "
            "moments it came from do: repair the activations first"
        )
    return a


def _soft(v: np.ndarray, a: float) -> np.ndarray:
    return np.sign(v) * np.maximum(np.abs(v) - a, 0.0)


def duality_gap(G: np.ndarray, C: np.ndarray, vyy: np.ndarray, W: np.ndarray, R: np.ndarray,
                alpha: float) -> np.ndarray:
    """Duality gap of every target's LASSO problem (as scikit-learn measures it, per 1/n).

    Parameters
    ----------
    G, C : Gram ``X^T X / n`` (dx, dx) and ``X^T Y / n`` (dx, dy)
    vyy : ndarray of shape (dy,)
        ``||y_j||^2 / n``.
    W, R : current weights (dx, dy) and ``G @ W``.
    """
    xta = C - R  # X^T r / n, (dx, dy)
    dual_norm = np.abs(xta).max(axis=0) if xta.size else np.zeros(C.shape[1])
    r_norm2 = np.maximum(vyy - 2.0 * np.sum(C * W, axis=0) + np.sum(W * R, axis=0), 0.0)
    scale = np.where(dual_norm > alpha, alpha / np.where(dual_norm > 0, dual_norm, 1.0), 1.0)
    gap = 0.5 * r_norm2 * (1.0 + scale**2)
    ry = vyy - np.sum(C * W, axis=0)  # r^T y / n
    return gap + alpha * np.abs(W).sum(axis=0) - scale * ry


def lasso_gram(
    G: np.ndarray,
    C: np.ndarray,
    alpha: float,
    W0: np.ndarray | None = None,
    tol: float = 1e-9,
    max_iter: int = 10_000,
    vyy: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """Coordinate descent for ``min_W 1/2 tr(W^T G W) - tr(C^T W) + alpha ||W||_1``.

    Columns of ``W`` are independent problems that share ``G``; each sweep updates one row
    of ``W`` (one input unit, all targets) at a time and keeps ``R = G W`` current with a
    rank-one update. Sweeps alternate between all inputs and the active ones (glmnet's
    strategy).

    Parameters
    ----------
    G : ndarray of shape (dx, dx)
        Shared Gram ``X^T X / n`` (float64).
    C : ndarray of shape (dx, dy)
        ``X^T Y / n``.
    alpha : float
        Penalty (a finite ``alpha > 0``).
    W0 : ndarray of shape (dx, dy), optional
        Warm start.
    tol : float
        Without ``vyy``: stop when no weight moves by more than ``tol``. With ``vyy``: stop
        when every target's duality gap is below ``tol * vyy`` (scikit-learn's criterion),
        which bounds the distance to the optimum's objective whatever the conditioning.
    max_iter : int
        Most sweeps over all inputs (each followed by sweeps over the active ones).
    vyy : ndarray of shape (dy,), optional
        ``||y_j||^2 / n`` of every target, for the duality-gap criterion.

    Returns
    -------
    W : ndarray of shape (dx, dy)
    converged : bool

    Raises
    ------
    ActstoreError
        For ``G`` not square, ``C`` / ``W0`` / ``vyy`` of other sizes, non-finite values,
        ``alpha`` not a finite number > 0, or ``tol`` / ``max_iter`` out of range.
    """
    G = _real_matrix(G, "G", "(dx, dx)")
    C = _real_matrix(C, "C", "(dx, dy)")
    if G.shape[0] != G.shape[1] or C.shape[0] != G.shape[0]:
        raise ActstoreError(
            f"G has shape {G.shape} and C {C.shape}; G must be the square (dx, dx) Gram "
            "X^T X / n and C the (dx, dy) X^T Y / n of the same dx inputs"
        )
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(
            alpha, (int, float, np.integer, np.floating)) or not (np.isfinite(alpha)
                                                                  and alpha > 0):
        raise ActstoreError(
            f"alpha must be a finite number > 0, got {alpha!r}; for alpha = 0 (least "
            "squares) use sparse_prediction"
        )
    if W0 is not None:
        W0 = _real_matrix(W0, "W0", str(C.shape))
        if W0.shape != C.shape:
            raise ActstoreError(f"W0 has shape {W0.shape}; the warm start must be {C.shape}")
    if vyy is not None:
        vyy = np.asarray(vyy, dtype=np.float64)
        if vyy.shape != (C.shape[1],) or not np.isfinite(vyy).all():
            raise ActstoreError(
                f"vyy must hold ||y_j||^2 / n of each of the {C.shape[1]} targets (finite, "
                f"shape ({C.shape[1]},)), got shape {vyy.shape}"
            )
    if isinstance(tol, (bool, np.bool_)) or not isinstance(
            tol, (int, float, np.integer, np.floating)) or not (np.isfinite(tol) and tol >= 0):
        raise ActstoreError(f"tol must be a finite number >= 0, got {tol!r}; e.g. 1e-9")
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) \
            or max_iter < 0:
        raise ActstoreError(f"max_iter must be a whole number >= 0, got {max_iter!r}")
    W = np.zeros_like(C) if W0 is None else W0.copy()
    R = G @ W  # (dx, dy)
    diag = np.diag(G).copy()
    usable = np.flatnonzero(diag > 0)
    limit = None if vyy is None else tol * np.maximum(vyy, np.finfo(float).tiny)

    def sweep(rows: np.ndarray) -> float:
        moved = 0.0
        for j in rows:
            rho = C[j] - R[j] + diag[j] * W[j]  # (dy,)
            new = _soft(rho, alpha) / diag[j]
            delta = new - W[j]
            changed = delta != 0
            if changed.any():
                if changed.all():
                    R[...] += np.outer(G[:, j], delta)
                else:
                    R[:, changed] += np.outer(G[:, j], delta[changed])
                W[j] = new
                moved = max(moved, float(np.abs(delta).max()))
        return moved

    def done(moved: float) -> bool:
        if limit is None:
            return moved <= tol
        assert vyy is not None
        return bool((duality_gap(G, C, vyy, W, R, alpha) <= limit).all())

    for _ in range(max_iter):
        if done(sweep(usable)):
            return W, True
        active = usable[np.any(W[usable] != 0, axis=1)]
        for _ in range(100):  # settle the active set before the next full sweep
            if sweep(active) <= (tol if limit is None else 0.0) or done(0.0):
                break
    return W, False


def lasso_admm(
    G: np.ndarray,
    C: np.ndarray,
    vyy: np.ndarray,
    alpha: float,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    tol: float = 1e-8,
    max_iter: int = 50_000,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """ADMM for the same problem as :func:`lasso_gram`, all targets as matrix products.

    One eigendecomposition of ``G`` serves every iteration and every penalty step size:
    ``W = (G + rho I)^-1 (C + rho (Z - U))``, ``Z = soft(W + U, alpha / rho)``,
    ``U += W - Z``, with ``rho`` balanced between primal and dual residuals. The sparse
    iterate ``Z`` (exact zeros) is returned once every target's duality gap is below
    ``tol * vyy``. Far faster than coordinate descent when ``G`` is ill-conditioned (units
    of one network are strongly correlated) and the penalty is small.

    Returns
    -------
    Z : ndarray of shape (dx, dy)
        Weights.
    U : ndarray of shape (dx, dy)
        Scaled dual variable (a warm start for the next penalty, with ``Z``).
    converged : bool
    """
    s, V = np.linalg.eigh(G)
    s = np.clip(s, 0.0, None)
    rho = float(max(alpha, 1e-3 * max(float(s.max(initial=0.0)), 1e-12)))
    Z, U = (np.zeros_like(C), np.zeros_like(C)) if start is None else (
        start[0].copy(), start[1].copy())
    limit = tol * np.maximum(vyy, np.finfo(float).tiny)
    VtC = V.T @ C
    for it in range(1, max_iter + 1):
        W = V @ ((VtC + rho * (V.T @ (Z - U))) / (s + rho)[:, None])
        Z_old = Z
        Z = _soft(W + U, alpha / rho)
        U = U + W - Z
        if it % 10 == 0:
            if (duality_gap(G, C, vyy, Z, G @ Z, alpha) <= limit).all():
                return Z, U, True
            r = np.linalg.norm(W - Z)
            d = rho * np.linalg.norm(Z - Z_old)
            if r > 10 * d:  # residual balancing (Boyd et al. 2011, 3.4.1)
                rho *= 2.0
                U /= 2.0
            elif d > 10 * r:
                rho /= 2.0
                U *= 2.0
    return Z, U, False


def _standardise(m: PairMoments) -> tuple[np.ndarray, ...]:
    cxx, _, cyy = m.cov()
    sdx, sdy = np.sqrt(np.clip(np.diag(cxx), 0, None)), np.sqrt(np.clip(np.diag(cyy), 0, None))
    const_x, const_y = is_constant(sdx, m.mean_x), is_constant(sdy, m.mean_y)
    ix = np.where(const_x, 0.0, 1.0 / np.where(const_x, 1.0, sdx))
    iy = np.where(const_y, 0.0, 1.0 / np.where(const_y, 1.0, sdy))
    return ix, iy, const_x, const_y


def _losses(W: np.ndarray, cxx: np.ndarray, cxy: np.ndarray, vyy: np.ndarray) -> np.ndarray:
    """Mean squared error per target from (standardised) second moments."""
    return vyy - 2.0 * np.sum(W * cxy, axis=0) + np.sum(W * (cxx @ W), axis=0)


def sparse_prediction(
    train: PairMoments,
    test: PairMoments,
    alphas: Sequence[float] = LASSO_ALPHAS,
    tol: float = 1e-8,
    max_iter: int = 50_000,
) -> LassoPath:
    """LASSO path predicting standardised units of B (y) from standardised units of A (x).

    Parameters
    ----------
    train, test : PairMoments
        Moments of (A, B) on the training and held-out samples (same shifts).
    alphas : sequence of float
        Penalties, finite and >= 0 (any order; the result keeps the given order).
    tol, max_iter
        Relative duality gap at which coordinate descent stops (per target, relative to
        ``||y||^2 / n``), and sweep limit.

    Returns
    -------
    LassoPath

    Raises
    ------
    ActstoreError
        For penalties that are not finite numbers >= 0 (or none), empty, mismatched or
        non-finite moments, or ``tol`` / ``max_iter`` out of range.
    """
    a = check_alphas(alphas)
    for what, m in (("train", train), ("test", test)):
        if not isinstance(m, PairMoments):
            raise ActstoreError(f"{what} must be PairMoments, not {type(m).__name__}")
        if m.n < 1:
            raise ActstoreError(
                f"the {what} moments hold no samples; the LASSO path needs samples on both "
                "the training and the held-out split"
            )
    if (train.sx.shape, train.sy.shape) != (test.sx.shape, test.sy.shape):
        raise ActstoreError(
            f"train has {train.sx.shape[0]} x and {train.sy.shape[0]} y units, test "
            f"{test.sx.shape[0]} and {test.sy.shape[0]}; give moments of the same two nets"
        )
    if not all(np.isfinite(v).all() for m in (train, test)
               for v in (m.sx, m.sy, m.sxx, m.sxy, m.syy)):
        raise ActstoreError(
            "the moments hold NaN or infinite values: the activations do; drop or repair "
            "those samples or units first"
        )
    if not (isinstance(tol, (int, float, np.integer, np.floating)) and np.isfinite(tol)
            and tol > 0):
        raise ActstoreError(f"tol must be a finite number > 0, got {tol!r}; e.g. 1e-8")
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) \
            or max_iter < 1:
        raise ActstoreError(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    ix, iy, const_x, const_y = _standardise(train)
    cxx, cxy, cyy = train.cov()
    G = cxx * np.outer(ix, ix)  # (dx, dx) Gram of standardised x
    Cm = cxy * np.outer(ix, iy)  # (dx, dy)
    vyy = np.diag(cyy) * iy * iy
    # held-out moments about the *training* means, on the training scale
    tx, txy, tyy = test.cov(train.mean_x, train.mean_y)
    Gt, Ct, vt = tx * np.outer(ix, ix), txy * np.outer(ix, iy), np.diag(tyy) * iy * iy
    k, dx, dy = len(a), G.shape[0], Cm.shape[1]
    coef = np.zeros((k, dx, dy))
    conv = np.ones(k, dtype=bool)
    state: tuple[np.ndarray, np.ndarray] | None = None
    for i in np.argsort(-a, kind="stable"):
        if a[i] == 0:
            W0 = scipy.linalg.pinvh(G) @ Cm if dx else np.zeros((0, dy))
        elif dx == 0:
            W0 = np.zeros((0, dy))
        else:
            W0, U, conv[i] = lasso_admm(G, Cm, vyy, float(a[i]), state, tol=tol,
                                        max_iter=max_iter)
            state = (W0, U)
        coef[i] = W0
    train_loss = np.stack([_losses(c, G, Cm, vyy) for c in coef])
    test_loss = np.stack([_losses(c, Gt, Ct, vt) for c in coef])
    return LassoPath(
        alphas=a, coef=coef, train_loss=train_loss, test_loss=test_loss,
        nonzero=(coef != 0).sum(axis=1), converged=conv, constant_x=const_x,
        constant_y=const_y,
    )
