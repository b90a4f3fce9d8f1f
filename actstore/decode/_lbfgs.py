"""Batched L-BFGS over many softmax problems (:class:`~actstore.decode._softmax.SoftmaxProblems`).

Line searches, convergence tests and curvature pairs are per problem; finished problems are
dropped from the products (keeping the others' curvature history), and the curvature pairs
carry over from one penalty to the next along a path (with a restart for problems that do
not converge from them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore.core._backend import get_namespace
from actstore.decode._pairs import Pairs, direction, merge_pairs, shift_pairs
from actstore.decode._softmax import SoftmaxProblems, _blend, _np, _on

__all__ = ["Pairs", "SoftmaxProblems", "shift_pairs", "solve_problems"]


def _lbfgs(
    prob: SoftmaxProblems,
    W: Any,
    b: Any,
    lam: Any,
    tol: float,
    max_iter: int,
    memory: int = 10,
    compact: float = 0.6,
    hist0: Pairs | None = None,
    start: Start | None = None,
) -> tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, Pairs, Any, Any]:
    """Batched L-BFGS over the problems of ``prob`` at one penalty.

    The initial inverse Hessian of the two-loop recursion is the Kronecker approximation of
    :meth:`SoftmaxProblems.curvature` at the starting point, kept for the whole solve (it
    only shapes the steps; refreshing it at every iteration saves no evaluations), and
    scaled by the latest curvature pair (Shanno). Whenever at most ``compact`` of the current
    problems are unfinished, the finished ones are dropped from the products; the others keep
    their iterates, gradients and curvature history. ``hist0`` are curvature pairs to start
    from (:func:`~actstore.decode._pairs.shift_pairs`; updated in place); a problem still
    unfinished after ``2 * memory`` iterations forgets them and the pairs since. ``start``
    is the objective, gradients and curvature sums at ``(W, b)`` where the caller has them
    (otherwise they are evaluated).
    Returns ``(W, b, n_iter, done, converged, objective, history, gW, gb)`` for all problems
    of ``prob`` (each problem's history as it finished, the gradients at the solutions).
    """
    xp = prob.xp
    idx, cols = np.arange(prob.P), np.arange(prob.Qt)  # the current problems and columns
    n_all = np.zeros(prob.P, dtype=np.int64)
    done_all = np.zeros(prob.P, dtype=bool)
    gm_all, f_all = np.zeros(prob.P), np.zeros(prob.P)
    f, gW, gb, sums = prob.value_grad(W, b, lam) if start is None else start
    curv = prob.curvature(sums, lam)
    W_out, b_out, gW_out, gb_out = W, b, gW, gb
    carried = hist0 is not None and len(hist0) > 0 and hist0.memory == memory
    hist = hist0 if hist0 is not None and carried else Pairs.empty(W, prob.P, memory)
    levels: list[tuple[Pairs, np.ndarray, np.ndarray]] = []  # histories dropped
    n_iter = np.zeros(prob.P, dtype=np.int64)
    step = np.ones(prob.P)  # the first step length to try, per problem
    gm = _np(prob.gmax(gW, gb))
    done = np.asarray(gm <= tol)
    for _ in range(max_iter):
        if done.all():
            break
        if compact > 0 and done.any() and (~done).sum() <= compact * done.size:
            W_out, b_out = _embed(W_out, W, cols), _embed(b_out, b, cols)
            gW_out, gb_out = _embed(gW_out, gW, cols), _embed(gb_out, gb, cols)
            n_all[idx], done_all[idx], gm_all[idx], f_all[idx] = n_iter, done, gm, _np(f)
            levels.append((hist, cols, idx))
            keep = np.flatnonzero(~done)
            sub, sc = prob.subset(keep)
            cd, kd = _on(sc, W, xp.int64), _on(keep, W, xp.int64)
            W, b, gW, gb = (xp.take(W, cd, axis=1), xp.take(b, cd, axis=0),
                            xp.take(gW, cd, axis=1), xp.take(gb, cd, axis=0))
            f, lam = xp.take(f, kd, axis=0), xp.take(lam, kd, axis=0)
            sums = prob.subset_sums(sums, keep, sub)
            curv = sub.curvature(sums, lam)
            hist = hist.take(cd, kd)
            n_iter, done, gm, step = n_iter[keep], done[keep], gm[keep], step[keep]
            idx, cols, prob = idx[keep], cols[sc], sub
        act_c = prob.to_cols(_on((~done).astype(np.float64), f))  # (Qt,)
        rW, rb = direction(prob, hist, gW, gb, curv)
        pW, pb = -rW * act_c[None, :], -rb * act_c  # search direction; zero when finished
        slope = prob.dot(pW, pb, gW, gb)
        bad = (_np(slope) >= 0) & ~done
        if bad.any():  # not a descent direction: the preconditioned gradient there
            badc = prob.to_cols(_on(bad.astype(np.float64), f))
            rW, rb = prob.precondition(gW, gb, curv)
            pW, pb = _blend(-rW, pW, badc[None, :]), _blend(-rb, pb, badc)
            slope = prob.dot(pW, pb, gW, gb)
        t = step
        pending = ~done
        f_np, slope_np = _np(f), _np(slope)
        # Noise-tolerant Armijo test: the objective is only known to a few units of its
        # precision, so a step is not refused for an "increase" below that. Without this
        # slack, float32 iterations stall wherever the decrease left to make is below
        # float32's resolution of the objective (strongly penalised problems on activations
        # of tiny spread), and those problems run to max_iter.
        slack = max(1e-12, 8.0 * float(np.finfo(f_np.dtype).eps)) * np.abs(f_np)
        tc = prob.to_cols(_on(np.where(pending, t, 0.0), f))
        cand = (W + tc[None, :] * pW, b + tc * pb)
        cf, cgW, cgb, _ = prob.value_grad(*cand, lam, sums=False)
        ok = _np(cf) <= f_np + 1e-4 * t * slope_np + slack
        acc = pending & ok
        if (acc == pending).all():  # the usual case: every step accepted
            new = (*cand, cf, cgW, cgb)
        else:
            new = (W, b, f, gW, gb)
            if acc.any():
                tk = _on(acc.astype(np.float64), f)
                tkc = prob.to_cols(tk)
                new = (_blend(cand[0], W, tkc[None, :]), _blend(cand[1], b, tkc),
                       _blend(cf, f, tk), _blend(cgW, gW, tkc[None, :]),
                       _blend(cgb, gb, tkc))
        # A refused step is backtracked in the next iteration, at half its length, where its
        # evaluation shares the products of the other problems' steps (a problem stays where
        # it is meanwhile, and its curvature pair is empty).
        failed = pending & ~ok
        step = np.where(failed, t * 0.5, 1.0)
        stalled = failed & (t < 2.0**-29)  # no decrease found: as good as this precision allows
        nW, nb, nf, ngW, ngb = new
        sW, sb, yW, yb = nW - W, nb - b, ngW - gW, ngb - gb
        sy = prob.dot(sW, sb, yW, yb)
        pos = sy > 1e-300
        hist.append(sW, sb, yW, yb, xp.where(pos, 1.0 / xp.where(pos, sy, 1.0), 0.0))
        W, b, f, gW, gb = nW, nb, nf, ngW, ngb
        n_iter += ~done
        if carried:
            # pairs carried over from another penalty can mislead a problem (float32 pairs
            # taken at noise-level steps): one that has not converged after 2 x memory
            # iterations forgets them all and goes on with fresh pairs
            restart = (n_iter == 2 * memory) & ~done
            if restart.any():
                keep_c = _on((~restart).astype(np.float64), f)
                hist.forget(keep_c)
        gm = _np(prob.gmax(gW, gb))
        done = done | (gm <= tol) | stalled
    W_out, b_out = _embed(W_out, W, cols), _embed(b_out, b, cols)
    gW_out, gb_out = _embed(gW_out, gW, cols), _embed(gb_out, gb, cols)
    n_all[idx], done_all[idx], gm_all[idx], f_all[idx] = n_iter, done, gm, _np(f)
    if levels:
        hist = merge_pairs([*levels, (hist, cols, idx)], W_out, n_all.size)
    return W_out, b_out, n_all, done_all, gm_all <= tol, f_all, hist, gW_out, gb_out


#: The objective (P,), gradients (r, Qt) and (Qt,) and curvature sums at a point
#: (:meth:`SoftmaxProblems.value_grad`).
Start = tuple[Any, Any, Any, tuple[Any, Any]]


def solve_problems(
    prob: SoftmaxProblems, W: Any, b: Any, C: float, tol: float, max_iter: int,
    hist: Pairs | None = None, start: Start | None = None,
) -> tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray, Pairs, tuple[Any, Any]]:
    """Solve every problem at inverse penalty ``C`` from the start ``(W, b)``
    (where its objective, gradients and curvature sums are ``start``, if given).

    Runs batched L-BFGS (from the curvature pairs ``hist``, if given); whenever at most 60%
    of the problems are unfinished, it continues on those alone (fewer columns in every
    product; the others keep their solution).

    Returns
    -------
    W : array (r, Qt), b : array (Qt,), n_iter : ndarray (P,), converged : ndarray (P,) bool,
    objective : ndarray (P,) at the solution, the curvature pairs at the end (for the next
    penalty: :func:`~actstore.decode._pairs.shift_pairs`) and the gradients (r, Qt), (Qt,)
    at the solution
    """
    W, b, n_iter, _done, conv, fval, hist, gW, gb = _lbfgs(
        prob, W, b, prob.lam(C), tol, max_iter, hist0=hist, start=start)
    return W, b, n_iter, conv, fval, hist, (gW, gb)


def _embed(full: Any, part: Any, cols: np.ndarray) -> Any:
    """Write ``part`` (..., len(cols)) into ``full`` (..., Qt) at ``cols``."""
    if isinstance(full, np.ndarray):
        out = full.copy()
        out[..., cols] = part
        return out
    xp = get_namespace(full)
    Qt = full.shape[-1]
    where = np.zeros(Qt, dtype=np.int64)
    where[cols] = np.arange(cols.size)
    mask = np.zeros(Qt)
    mask[cols] = 1.0
    wide = xp.take(part, _on(where, full, xp.int64), axis=part.ndim - 1)
    return _blend(wide, full, _on(mask, full))
