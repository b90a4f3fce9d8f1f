"""The curvature pairs of batched L-BFGS (:mod:`actstore.decode._lbfgs`) and the two-loop
recursion that turns them into search directions.

Every problem keeps its last ``memory`` pairs ``(s, y)`` (steps and gradient changes) in one
ring of stacked arrays, so that the recursion is a few passes over contiguous memory. On numpy
arrays the two loops are compiled (:mod:`actstore.decode._kernels`): each pass over a pair
also applies the previous pair's update, and per-problem inner products are summed column by
column, without temporaries. Other array namespaces loop over the pairs with array operations;
both give the same directions (tests/probes/test_lbfgs.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore.core._backend import get_namespace
from actstore.decode import _kernels
from actstore.decode._softmax import _dev, _on

if TYPE_CHECKING:
    from actstore.decode._softmax import SoftmaxProblems

__all__ = ["Pairs", "direction", "merge_pairs", "shift_pairs"]


class Pairs:
    """The last ``memory`` curvature pairs of every problem, in a ring of stacked arrays.

    ``sW``, ``yW`` (memory, r, Qt), ``sb``, ``yb`` (memory, Qt) and ``rho`` (memory, P), with
    ``rho = 1 / (s . y)`` per problem (0 for an empty pair: a refused step, a forgotten pair,
    or a problem with a shorter history). ``order`` lists the slots in use, oldest first.
    """

    def __init__(self, sW: Any, sb: Any, yW: Any, yb: Any, rho: Any,
                 order: Iterable[int] = ()) -> None:
        self.sW, self.sb, self.yW, self.yb, self.rho = sW, sb, yW, yb, rho
        self.order = list(order)

    @classmethod
    def empty(cls, like: Any, P: int, memory: int) -> Pairs:
        """No pairs yet, room for ``memory`` of every problem; ``like`` is an (r, Qt) array."""
        xp = get_namespace(like)
        r, Qt = like.shape

        def z(*shape: int) -> Any:
            return xp.zeros(shape, dtype=like.dtype, device=_dev(like))

        return cls(z(memory, r, Qt), z(memory, Qt), z(memory, r, Qt), z(memory, Qt),
                   z(memory, P))

    def __len__(self) -> int:
        return len(self.order)

    @property
    def memory(self) -> int:
        return int(self.sW.shape[0])

    def pair(self, k: int) -> tuple[Any, Any, Any, Any, Any]:
        """The ``k``-th pair in use, oldest first (``-1``: the latest)."""
        i = self.order[k]
        return self.sW[i, ...], self.sb[i, ...], self.yW[i, ...], self.yb[i, ...], self.rho[i, ...]

    def append(self, sW: Any, sb: Any, yW: Any, yb: Any, rho: Any) -> None:
        """Add a pair, in place of the oldest when the ring is full."""
        if len(self.order) < self.memory:
            slot = min(set(range(self.memory)) - set(self.order))
        else:
            slot = self.order.pop(0)
        self.sW[slot, ...], self.sb[slot, ...] = sW, sb
        self.yW[slot, ...], self.yb[slot, ...] = yW, yb
        self.rho[slot, ...] = rho
        self.order.append(slot)

    def take(self, cols: Any, probs: Any) -> Pairs:
        """The pairs of the problems ``probs`` (device indices) and their columns ``cols``."""
        xp = get_namespace(self.sW)
        return Pairs(xp.take(self.sW, cols, axis=2), xp.take(self.sb, cols, axis=1),
                     xp.take(self.yW, cols, axis=2), xp.take(self.yb, cols, axis=1),
                     xp.take(self.rho, probs, axis=1), self.order)

    def forget(self, keep: Any) -> None:
        """Empty every pair of the problems where ``keep`` (P,) is 0."""
        self.rho = self.rho * keep[None, :]


def merge_pairs(levels: list[tuple[Pairs, np.ndarray, np.ndarray]], like: Any,
                P: int) -> Pairs:
    """The curvature pairs of all ``P`` problems from the pairs of successive subsets.

    ``levels`` are ``(pairs, columns, problems)`` from all problems down to the last subset;
    each problem's pairs are those of the last level that holds it, aligned on the latest
    pair (empty pairs where its history is shorter). ``like`` is an (r, Qt) array.
    """
    if isinstance(like, np.ndarray):
        return _merge_in_place(levels)
    xp = get_namespace(like)
    r, Qt = like.shape
    src_c, src_p = np.zeros(Qt, dtype=np.int64), np.zeros(P, dtype=np.int64)
    off_c = off_p = 0
    for _, cols, idx in levels:
        src_c[cols], src_p[idx] = off_c + np.arange(cols.size), off_p + np.arange(idx.size)
        off_c, off_p = off_c + cols.size, off_p + idx.size
    where = (_on(src_c, like, xp.int64), _on(src_p, like, xp.int64))
    out = Pairs.empty(like, P, levels[0][0].memory)
    n = max(len(h) for h, _, _ in levels)
    for j in range(n):  # the j-th pair before the latest, of every level
        parts = []
        for h, cols, idx in levels:
            if j < len(h):
                parts.append(h.pair(len(h) - 1 - j))
            else:
                z = [xp.zeros(shape, dtype=like.dtype, device=_dev(like))
                     for shape in ((r, cols.size), (cols.size,), (idx.size,))]
                parts.append((z[0], z[1], z[0], z[1], z[2]))
        slot = n - 1 - j
        for i, a in enumerate((out.sW, out.sb, out.yW, out.yb, out.rho)):
            a[slot, ...] = xp.take(xp.concat([q[i] for q in parts], axis=-1), where[i == 4],
                                   axis=-1)
    out.order = list(range(n))
    return out


def _merge_in_place(levels: list[tuple[Pairs, np.ndarray, np.ndarray]]) -> Pairs:
    """:func:`merge_pairs` on numpy arrays, written into the first level's ring: only the
    columns of later levels move (problems that finished first keep their slots), each pair
    into the slot of the same rank from the latest."""
    top = levels[0][0]
    n = max(len(h) for h, _, _ in levels)
    order = list(top.order)
    if n > len(order):  # older ranks than the first level holds: free slots, emptied
        used = set(order)
        free = [i for i in range(top.memory) if i not in used][: n - len(order)]
        for a in (top.sW, top.sb, top.yW, top.yb, top.rho):
            a[free, ...] = 0
        order = free + order
    owner_c = np.zeros(top.sW.shape[-1], dtype=np.int64)
    owner_p = np.zeros(top.rho.shape[-1], dtype=np.int64)
    for lv, (_, cols, idx) in enumerate(levels):
        owner_c[cols], owner_p[idx] = lv, lv
    for lv, (h, cols, idx) in enumerate(levels[1:], start=1):
        mine_c, mine_p = owner_c[cols] == lv, owner_p[idx] == lv
        if not mine_p.any():
            continue
        dst_c, dst_p = cols[mine_c], idx[mine_p]
        for j in range(n):  # rank j before the latest
            dst = order[n - 1 - j]
            if j < len(h):
                src = h.order[len(h) - 1 - j]
                for a, b in ((top.sW, h.sW), (top.yW, h.yW), (top.sb, h.sb), (top.yb, h.yb)):
                    a[dst, ..., dst_c] = b[src, ..., mine_c]
                top.rho[dst, dst_p] = h.rho[src, mine_p]
            else:  # its history is shorter: an empty pair
                for a in (top.sW, top.yW, top.sb, top.yb):
                    a[dst, ..., dst_c] = 0
                top.rho[dst, dst_p] = 0
    top.order = order
    return top


def shift_pairs(prob: SoftmaxProblems, pairs: Pairs, lam_old: Any, lam_new: Any) -> Pairs:
    """Curvature pairs of one penalty moved to another (in place; returned).

    The data term's curvature does not depend on the penalty: ``y = y_data + lam Omega s``
    becomes ``y + (lam_new - lam_old) Omega s``, here with the diagonal of ``Omega`` only
    (the pairs only shape the search directions, and the per-fold corrections are usually
    small next to it; a problem the moved pairs mislead restarts, see
    :func:`~actstore.decode._lbfgs._lbfgs`). Pairs whose curvature ``s . y`` is no longer
    positive are emptied.
    """
    xp = prob.xp
    dl = prob.to_cols(lam_new - lam_old)
    if isinstance(pairs.yW, np.ndarray):  # in place, the slots in use only
        step = prob.omega[:, None] * dl[None, :]
        for i in pairs.order:
            pairs.yW[i] += step * pairs.sW[i]
            sy = prob.per_problem(np.einsum("rq,rq->q", pairs.sW[i], pairs.yW[i])
                                  + pairs.sb[i] * pairs.yb[i])
            pairs.rho[i] = np.where(sy > 1e-30, 1.0 / np.where(sy > 1e-30, sy, 1.0), 0.0)
        return pairs
    pairs.yW = pairs.yW + (prob.omega[:, None] * dl[None, :])[None, :, :] * pairs.sW
    sy = prob.per_problem(xp.sum(pairs.sW * pairs.yW, axis=1) + pairs.sb * pairs.yb)
    pos = sy > 1e-30
    pairs.rho = xp.where(pos, 1.0 / xp.where(pos, sy, 1.0), 0.0)
    return pairs


def direction(prob: SoftmaxProblems, pairs: Pairs, gW: Any, gb: Any,
              curv: tuple[Any, Any, Any, Any]) -> tuple[Any, Any]:
    """``H g``: the L-BFGS inverse Hessian of every problem applied to its gradient.

    The two-loop recursion over ``pairs``, with :meth:`SoftmaxProblems.precondition` (from
    ``curv``) as the initial inverse Hessian, scaled per problem by the latest pair
    (Shanno: ``s . y / y . H0 y``).
    """
    xp = prob.xp
    n = len(pairs)
    compiled = n > 0 and isinstance(gW, np.ndarray) and _kernels.available()
    alphas: Any = []
    if compiled:
        order = np.asarray(pairs.order, dtype=np.int64)
        qW, qb = np.array(gW), np.array(gb)
        alphas = np.zeros((pairs.memory, prob.P))
        _kernels.two_loop_back(pairs.sW, pairs.sb, pairs.yW, pairs.yb, pairs.rho, order,
                               prob.col_prob, qW, qb, alphas)
    else:
        qW, qb = gW, gb
        for k in range(n - 1, -1, -1):
            sW, sb, yW, yb, rho = pairs.pair(k)
            a = prob.to_cols(rho * prob.dot(sW, sb, qW, qb))
            qW, qb = qW - a[None, :] * yW, qb - a * yb
            alphas.append(a)
    rW, rb = prob.precondition(qW, qb, curv)
    if not n:
        return rW, rb
    sW, sb, yW, yb, rho = pairs.pair(-1)
    yHy, sy = prob.inverse_quad(yW, yb, curv), prob.dot(sW, sb, yW, yb)
    good = (rho > 0) & (yHy > 0)
    gamma = prob.to_cols(xp.where(good, sy / xp.where(good, yHy, 1.0), 1.0))
    rW, rb = rW * gamma[None, :], rb * gamma
    if compiled:
        _kernels.two_loop_forward(pairs.sW, pairs.sb, pairs.yW, pairs.yb, pairs.rho, order,
                                  prob.col_prob, alphas, rW, rb)
        return rW, rb
    for k, a in zip(range(n), reversed(alphas), strict=True):
        sW, sb, yW, yb, rho = pairs.pair(k)
        c = a - prob.to_cols(rho * prob.dot(yW, yb, rW, rb))
        rW, rb = rW + c[None, :] * sW, rb + c * sb
    return rW, rb
