"""Many L2-penalised softmax regressions on shared (whitened) data: their objective.

A *problem* is one (fold, feature) pair: a softmax over the feature's classes, trained on the
fold's training rows (row weights ``M[:, p]``), with a diagonal L2 penalty
``lam_p / 2 * sum_j omega_j ||W_j||^2`` on the coefficients (not the intercept). All problems
share the data ``Z`` (n, r); their coefficients sit side by side in ``W`` (r, columns), so one
evaluation is a few large matrix products over all problems, with the elementwise softmax work
done in blocks of rows small enough to stay in cache.

Rows that weigh in the same problems form *segments* when the caller sorts them that way (by
held-out fold: the rows of fold k count for every problem but fold k's). Each segment is
multiplied only with the columns of its own problems, so a row's held-out problems cost
nothing; with unsorted rows, or problems of one fold scattered over the columns, there is one
segment of all rows and all problems.

On numpy arrays the softmax work of a segment is one compiled pass over its rows, between one
vectorised pass of exponentials and one of logarithms over all segments
(:mod:`actstore.decode._kernels`). Elsewhere, consecutive problems with the same class count
``c`` form one group of columns, handled by one reshape (rows, problems, c): callers order the
problems so that the groups are few (by class count, then fold; :meth:`SoftmaxProblems.
fold_major` says which order suits the data). The preconditioner works on all problems at
once, padded to the largest class count. The solver is :mod:`actstore.decode._lbfgs`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore.core._backend import device_of, get_namespace, to_numpy
from actstore.decode import _kernels

__all__ = ["SoftmaxProblems"]


def _dev(x: Any) -> Any:
    from array_api_compat import device

    return device(x)


def _on(a: np.ndarray, like: Any, dtype: Any = None) -> Any:
    xp = get_namespace(like)
    return xp.asarray(a, dtype=dtype if dtype is not None else like.dtype, device=_dev(like))


def _on_host(x: Any) -> bool:
    return device_of(x) == "cpu"


def _np(x: Any) -> np.ndarray:
    return np.asarray(to_numpy(x))  # sync point: small per-problem arrays


def _blend(new: Any, old: Any, take: Any) -> Any:
    """``new`` where ``take`` (broadcast 0/1 floats) else ``old``."""
    return old + take * (new - old)


class SoftmaxProblems:
    """The objective of a set of softmax problems on shared data.

    Parameters
    ----------
    Z : array (n, r)
        Whitened data (float64, or float32 on GPUs).
    omega : array (r,)
        Penalty weight per coordinate.
    Y01 : ndarray (n, Qt)
        0/1 one-hot targets, problem after problem.
    M : ndarray (n, P)
        Row weights of each problem's loss (1 / n_train on its training rows, else 0).
    n_classes : sequence of int (P,)
        Classes per problem; runs of equal counts are handled together.
    scale : ndarray (P,)
        ``n_train * C_eff / C`` per problem: the penalty is ``1 / (C * scale)``.
    fold_penalty : (ndarray (P,), list of arrays (r, r)), optional
        The group of each problem and, per group, a symmetric matrix added to the diagonal
        penalty of its problems (``W^T (diag(omega) + D_g) W``): the per-fold correction of
        standardised decoders.
    full_penalty : dict, optional
        ``diag(omega) + D_g`` by group, where already formed (shared with :meth:`subset`).
    """

    def __init__(self, Z: Any, omega: Any, Y01: np.ndarray, M: np.ndarray,
                 n_classes: Sequence[int], scale: np.ndarray,
                 fold_penalty: tuple[np.ndarray, list[Any]] | None = None,
                 full_penalty: dict[int, Any] | None = None) -> None:
        xp = get_namespace(Z)
        self.xp, self.Z, self.omega = xp, Z, omega
        self.fold_penalty = fold_penalty
        self.n, self.r = Z.shape
        # rows per term of the curvature sums (:meth:`value_grad`): a sample of about 1,000
        # rows estimates the mean softmax curvature well enough for a preconditioner
        self.curv_stride = max(1, self.n // 1024)
        self.n_classes = [int(c) for c in n_classes]
        self.P, self.Qt = len(self.n_classes), int(sum(self.n_classes))
        self.host = (Y01, M, np.asarray(scale, dtype=np.float64))
        self.groups: list[tuple[int, int, int, int]] = []  # (col0, problems, classes, p0)
        col = 0
        for p, c in enumerate(self.n_classes):
            if self.groups and self.groups[-1][2] == c:
                a, npg, cc, p0 = self.groups[-1]
                self.groups[-1] = (a, npg + 1, cc, p0)
            else:
                self.groups.append((col, 1, c, p))
            col += c
        self.col_prob = np.concatenate([np.full(c, p) for p, c in enumerate(self.n_classes)])
        self.col0 = np.concatenate([[0], np.cumsum(self.n_classes)]).astype(np.int64)
        # Per-problem quantities of the preconditioner are padded to the largest class count,
        # (P, cmax) and (P, cmax, cmax), so that all problems go through one batched
        # operation: padded slots take column Qt (a zero), and their curvature is -1 (an
        # eigenvalue apart from the softmax curvature's, which are >= 0; clipped to 0).
        self.cmax = max(self.n_classes, default=1)
        slot = np.full(self.P * self.cmax, self.Qt, dtype=np.int64)
        for p, c in enumerate(self.n_classes):
            slot[p * self.cmax : p * self.cmax + c] = self.col0[p] + np.arange(c)
        self.pad_cols = _on(slot, Z, xp.int64)
        self.unpad = _on(np.flatnonzero(slot < self.Qt), Z, xp.int64)
        self.pad_diag = _on(np.where(slot < self.Qt, 0.0, -1.0).reshape(self.P, self.cmax), Z)
        E = np.zeros((self.Qt, self.P))
        E[np.arange(self.Qt), self.col_prob] = 1.0
        self.E = _on(E, Z)
        self.Et = xp.matrix_transpose(self.E)
        Mc = M[:, self.col_prob]
        MY = Mc * Y01
        self.pieces = [self._piece(a, e, p0, p1, Mc, MY, M)
                       for a, e, p0, p1 in _segments(M > 0)]
        # columns and correction matrix of every group with a penalty correction: one slice
        # of columns per group where each group's columns are contiguous (problems ordered
        # fold after fold); otherwise gathered group after group and put back by one
        # permutation
        self.pen_slices: list[tuple[int, int, Any]] = []
        self.pen_blocks: list[tuple[Any, Any]] = []
        self.pen_back: Any = None
        self.full_penalty = {} if full_penalty is None else full_penalty
        if fold_penalty is not None and self.r:
            group, mats = fold_penalty
            col_group = np.asarray(group)[self.col_prob]
            order = [np.flatnonzero(col_group == g) for g in np.unique(col_group)]
            gmats = [mats[int(col_group[cols[0]])] for cols in order]
            if all(cols[-1] - cols[0] + 1 == cols.size for cols in order):
                # every column in one slice: Omega W is one product per slice with the
                # whole penalty matrix, formed once per group
                for cols in order:
                    g = int(col_group[cols[0]])
                    if g not in self.full_penalty:
                        self.full_penalty[g] = _with_diagonal(mats[g], omega)
                self.pen_slices = sorted((int(cols[0]), int(cols[-1]) + 1,
                                          self.full_penalty[int(col_group[cols[0]])])
                                         for cols in order)  # by column
            else:
                self.pen_blocks = [(_on(cols, Z, xp.int64), D)
                                   for cols, D in zip(order, gmats, strict=True)]
                back = np.empty(self.Qt, dtype=np.int64)
                back[np.concatenate(order)] = np.arange(self.Qt)
                self.pen_back = _on(back, Z, xp.int64)

    @staticmethod
    def fold_major(Z: Any) -> bool:
        """Whether problems on ``Z`` are best ordered fold after fold (each fold's held-out
        rows then skip its problems in the products, and its penalty correction is one slice
        of columns) rather than by class count (one softmax per class count): where the
        softmax work is compiled (:mod:`actstore.decode._kernels`), and so does not depend on
        the number of class-count groups."""
        return isinstance(Z, np.ndarray) and _kernels.available()

    def _piece(self, a: int, e: int, p0: int, p1: int, Mc: np.ndarray, MY: np.ndarray,
               M: np.ndarray) -> _Piece:
        """Rows ``a:e`` against problems ``p0:p1``: views and row weights of one product."""
        c0, c1 = int(self.col0[p0]), int(self.col0[p1])
        # per group of classes: (local column, problems, classes, group, first problem in
        # the group, first local problem); the compiled row pass needs none of it
        groups = []
        compiled = self.fold_major(self.Z)
        for g, (_, npg, c, q) in enumerate([] if compiled else self.groups):
            lo, hi = max(q, p0), min(q + npg, p1)
            if lo < hi:
                groups.append((int(self.col0[lo]) - c0, hi - lo, c, g, lo - q, lo - p0))
        # Rows per block: on a CPU keep the (rows, columns) intermediates near 512 KiB, in
        # cache; on a GPU, where every block costs kernel launches and caches do not hold the
        # rows anyway, take up to 16 Mi entries (64 MiB in float32) at once.
        entries = (1 << 16) if _on_host(self.Z) else (1 << 24)
        rows = max(64, min(e - a, entries // max(c1 - c0, 1)))
        col0 = self.col0[p0 : p1 + 1] - c0
        if compiled:  # one row per column or problem, samples contiguous (float64)
            MYt = np.ascontiguousarray(MY[a:e, c0:c1].T)
            return _Piece(a, e, c0, c1, p0, p1, [], [], rows, None, MYt,
                          np.ascontiguousarray(M[a:e, p0:p1].T), col0,
                          np.add.reduceat(MYt, col0[:-1], axis=0))
        return _Piece(a, e, c0, c1, p0, p1, groups, [g[:3] for g in groups], rows,
                      _on(np.ascontiguousarray(Mc[a:e, c0:c1]), self.Z),
                      _on(np.ascontiguousarray(MY[a:e, c0:c1]), self.Z),
                      _on(np.ascontiguousarray(M[a:e, p0:p1]), self.Z), col0, None)

    def subset(self, keep: np.ndarray) -> tuple[SoftmaxProblems, np.ndarray]:
        """The problems ``keep`` (indices), and their columns in this set."""
        Y01, M, scale = self.host
        cols = np.concatenate([np.flatnonzero(self.col_prob == p) for p in keep])
        fp = self.fold_penalty
        sub = SoftmaxProblems(self.Z, self.omega, Y01[:, cols], M[:, keep],
                              [self.n_classes[p] for p in keep], scale[keep],
                              None if fp is None else (np.asarray(fp[0])[keep], fp[1]),
                              self.full_penalty)
        return sub, cols

    def subset_sums(self, sums: tuple[Any, Any], keep: np.ndarray, sub: SoftmaxProblems
                    ) -> tuple[Any, Any]:
        """The curvature sums (:meth:`value_grad`) of the problems ``keep``, padded as in
        ``sub`` (:meth:`subset` of ``keep``)."""
        xp, c = self.xp, sub.cmax
        k = _on(keep, self.Z, xp.int64)
        return xp.take(sums[0], k, axis=0)[:, :c], xp.take(sums[1], k, axis=0)[:, :c, :c]

    def _pad(self, cols: Any) -> Any:
        """(..., Qt) column values as (..., P, cmax), zero in the padded slots."""
        xp = self.xp
        zero = xp.zeros((*cols.shape[:-1], 1), dtype=cols.dtype, device=_dev(cols))
        wide = xp.take(xp.concat([cols, zero], axis=-1), self.pad_cols, axis=cols.ndim - 1)
        return xp.reshape(wide, (*cols.shape[:-1], self.P, self.cmax))

    def _unpad(self, padded: Any) -> Any:
        """(..., P, cmax) back to (..., Qt)."""
        xp = self.xp
        flat = xp.reshape(padded, (*padded.shape[:-2], self.P * self.cmax))
        return xp.take(flat, self.unpad, axis=flat.ndim - 1)

    def lam(self, C: float) -> Any:
        """Penalty per problem (P,) in the mean-loss scaling."""
        return _on(1.0 / (C * self.host[2]), self.Z)

    def per_problem(self, colvals: Any) -> Any:
        """Sum (..., Qt) column values into (..., P) problem values."""
        return colvals @ self.E

    def to_cols(self, probvals: Any) -> Any:
        """Broadcast (..., P) problem values to (..., Qt) columns."""
        return probvals @ self.Et

    def _split(self, A: Any, groups: Sequence[tuple[int, int, int]] | None = None
               ) -> list[Any]:
        """Views of (m, columns) as (m, problems, classes), one per ``(column, problems,
        classes)`` group (default: the groups of all columns)."""
        xp = self.xp
        m = A.shape[0]
        groups = [g[:3] for g in self.groups] if groups is None else groups
        return [xp.reshape(A[:, a : a + npg * c], (m, npg, c)) for a, npg, c in groups]

    def _join(self, parts: list[Any]) -> Any:
        xp = self.xp
        flat = [xp.reshape(p, (p.shape[0], p.shape[1] * p.shape[2])) for p in parts]
        return flat[0] if len(flat) == 1 else xp.concat(flat, axis=1)

    def _softmax(self, L: Any, groups: Sequence[tuple[int, int, int]]
                 ) -> tuple[list[Any], list[Any]]:
        """Log-probabilities and probabilities of logit rows ``L`` (m, columns), per group
        (m, problems, c)."""
        xp = self.xp
        logps, ps = [], []
        for blk in self._split(L, groups):
            m, npg, c = blk.shape
            if isinstance(blk, np.ndarray):
                # numpy reduces a short last axis slowly: c maxima of strided views instead
                mx = np.array(blk[:, :, :1])
                for j in range(1, c):
                    np.maximum(mx, blk[:, :, j : j + 1], out=mx)
            else:
                mx = xp.max(blk, axis=-1, keepdims=True)
            sh = blk - mx
            ex = xp.exp(sh)
            # the class sums as a matrix-vector product (fast on every backend)
            ones = xp.ones((c, 1), dtype=ex.dtype, device=_dev(ex))
            tot = xp.reshape(xp.reshape(ex, (m * npg, c)) @ ones, (m, npg, 1))
            logps.append(sh - xp.log(tot))
            ps.append(ex / tot)
        return logps, ps

    def _pen(self, W: Any) -> tuple[Any, Any]:
        """Per-column ``W^T Omega W`` (Qt,) and ``Omega W`` (r, Qt) of the penalty matrix
        ``Omega`` (diagonal ``omega`` plus the groups' corrections)."""
        xp = self.xp
        if self.pen_slices:  # (a, e, diag(omega) + D) covering all columns
            if isinstance(W, np.ndarray):
                OW = np.empty_like(W)
                for a, e, F in self.pen_slices:
                    np.matmul(F, W[:, a:e], out=OW[:, a:e])
                return np.einsum("rq,rq->q", W, OW), OW
            OW = xp.concat([F @ W[:, a:e] for a, e, F in self.pen_slices], axis=1)
            return xp.sum(W * OW, axis=0), OW
        OW = self.omega[:, None] * W
        if self.pen_blocks:
            DW = [D @ xp.take(W, cols, axis=1) for cols, D in self.pen_blocks]
            OW = OW + xp.take(xp.concat(DW, axis=1), self.pen_back, axis=1)
        return xp.sum(W * OW, axis=0), OW

    def penalty_terms(self, W: Any) -> tuple[Any, Any]:
        """``W^T Omega W`` per problem (P,) and ``Omega W`` (r, Qt): the penalty and its
        gradient without the factor ``lam``."""
        quad, OW = self._pen(W)
        return self.per_problem(quad), OW

    def value_grad(self, W: Any, b: Any, lam: Any, sums: bool = True, OW: Any = None
                   ) -> tuple[Any, Any, Any, Any]:
        """Objective (P,), gradients (r, Qt) and (Qt,), and the curvature sums
        ``sum_i w_i p_i`` (P, cmax) and ``sum_i w_i p_i p_i^T`` (P, cmax, cmax), zero-padded
        (:meth:`curvature`; from every ``curv_stride``-th row, scaled up; ``None`` with
        ``sums=False``). ``OW`` is ``Omega W`` (:meth:`penalty_terms`) where the caller has
        it.

        Per segment of rows, two products with ``Z`` cover all of its problems at once. On
        numpy arrays the softmax work between them is one compiled pass over the rows
        (:meth:`_rows_compiled`); on other namespaces it goes block by block, so
        that its intermediates stay in cache.
        """
        xp = self.xp
        dt, dev = W.dtype, _dev(W)
        data = xp.zeros((self.Qt,), dtype=dt, device=dev)
        gW = xp.zeros((self.r, self.Qt), dtype=dt, device=dev)
        gb = xp.zeros((self.Qt,), dtype=dt, device=dev)
        cm = self.cmax
        diag: Any = None
        PtP: Any = None
        if sums:
            diag = xp.zeros((self.P, cm), dtype=dt, device=dev)
            PtP = xp.zeros((self.P, cm, cm), dtype=dt, device=dev)
        st = self.curv_stride if sums else 0
        compiled = isinstance(self.Z, np.ndarray) and _kernels.available()
        dataP = None
        if compiled:  # all pieces at once
            dataP = self._rows_compiled(W, b, st, data, gW, gb, diag, PtP)
        for pc in [] if compiled else self.pieces:
            Zs = self.Z[pc.a : pc.e, :]
            L = Zs @ W[:, pc.c0 : pc.c1]
            L = L + b[None, pc.c0 : pc.c1]
            Rs = []
            for a, e in pc.blocks():
                logps, ps = self._softmax(L[a:e, :], pc.split)
                logp, P = self._join(logps), self._join(ps)
                data[pc.c0 : pc.c1] -= xp.sum(pc.MY[a:e, :] * logp, axis=0)
                Rs.append(pc.Mc[a:e, :] * P - pc.MY[a:e, :])  # (m, columns)
                if not sums:
                    continue
                j0 = (-a) % st  # every st-th row of the piece: the sums only precondition
                for (_, npg, c, _, _, lp), Pg in zip(pc.groups, ps, strict=True):
                    Pg = Pg[j0::st] if st > 1 else Pg
                    w = pc.M[a + j0 : e : st, lp : lp + npg][:, :, None] * float(st)
                    Pw = Pg * w  # (m, problems, c)
                    q = pc.p0 + lp
                    diag[q : q + npg, :c] += xp.sum(Pw, axis=0)
                    PtP[q : q + npg, :c, :c] += (xp.permute_dims(Pw, (1, 2, 0))
                                                 @ xp.permute_dims(Pg, (1, 0, 2)))
            R = Rs[0] if len(Rs) == 1 else xp.concat(Rs, axis=0)
            gW[:, pc.c0 : pc.c1] += xp.matrix_transpose(Zs) @ R
            gb[pc.c0 : pc.c1] += xp.sum(R, axis=0)
        if OW is None:
            quad, OW = self._pen(W)
        else:
            quad = xp.sum(W * OW, axis=0)
        f = self.per_problem(data) + 0.5 * lam * self.per_problem(quad)
        if dataP is not None:
            f = f + dataP
        gW = gW + self.to_cols(lam)[None, :] * OW
        return f, gW, gb, ((diag, PtP) if sums else None)

    def _rows_compiled(self, W: np.ndarray, b: np.ndarray, st: int, data: np.ndarray,
                       gW: np.ndarray, gb: np.ndarray, diag: np.ndarray | None,
                       PtP: np.ndarray | None) -> np.ndarray:
        """The softmax work of :meth:`value_grad` on numpy arrays.

        The logits of every piece, column by column (``W^T Z^T``, samples contiguous), go into
        one buffer, shifted by each sample's largest logit of the problem into another
        (:func:`~actstore.decode._kernels.shift_cols`); their exponentials are one vectorised
        pass over it, the rest one compiled pass per piece
        (:func:`~actstore.decode._kernels.softmax_cols`), the logarithms one more pass.
        Accumulates into ``data``, ``gW``, ``gb`` and the curvature sums (``None``: none);
        returns the log-sum-exp part of each problem's loss (P,).
        """
        shapes = [(pc.e - pc.a, pc.c1 - pc.c0, pc.p1 - pc.p0) for pc in self.pieces]
        off = np.cumsum([0] + [m * c for m, c, _ in shapes])
        toff = np.cumsum([0] + [m * q for m, _, q in shapes])
        buf, E = np.empty(int(off[-1]), dtype=W.dtype), np.empty(int(off[-1]), dtype=W.dtype)
        tot, shift = np.empty(int(toff[-1])), np.empty(int(toff[-1]), dtype=W.dtype)
        blocks = []
        for pc, (m, c, q), o, to in zip(self.pieces, shapes, off[:-1], toff[:-1], strict=True):
            LT, Eb = buf[o : o + m * c].reshape(c, m), E[o : o + m * c].reshape(c, m)
            sh = shift[to : to + m * q].reshape(q, m)
            np.matmul(W[:, pc.c0 : pc.c1].T, self.Z[pc.a : pc.e, :].T, out=LT)
            LT += b[pc.c0 : pc.c1, None]
            _kernels.shift_cols(LT, Eb, sh, pc.col0)
            blocks.append((LT, Eb, sh))
        np.exp(E, out=E)
        if diag is None or PtP is None:
            st, diag, PtP = 0, np.zeros((self.P, 0)), np.zeros((self.P, 0, 0))
        for pc, (LT, Eb, sh), (m, _, q), to in zip(self.pieces, blocks, shapes, toff[:-1],
                                                 strict=True):
            _kernels.softmax_cols(LT, Eb, sh, pc.MY, pc.M, pc.col0, st,
                                  tot[to : to + m * q].reshape(q, m), data[pc.c0 : pc.c1],
                                  gb[pc.c0 : pc.c1], diag[pc.p0 : pc.p1], PtP[pc.p0 : pc.p1])
            gW[:, pc.c0 : pc.c1] += self.Z[pc.a : pc.e, :].T @ LT.T  # LT: the residuals
        np.log(tot, out=tot)
        lse = np.zeros(self.P)
        for pc, (m, _, q), to in zip(self.pieces, shapes, toff[:-1], strict=True):
            lse[pc.p0 : pc.p1] += np.einsum("ji,ji->j", pc.MYp,
                                            tot[to : to + m * q].reshape(q, m))
        return lse.astype(W.dtype)

    def curvature(self, sums: tuple[Any, Any], lam: Any) -> tuple[Any, Any, Any, Any]:
        """The preconditioner from each problem's mean softmax curvature.

        ``A_p = mean_i (diag(p_i) - p_i p_i^T)`` over the problem's training rows. In whitened
        coordinates the data Hessian of problem p is close to ``I (x) A_p``; with the diagonal
        penalty ``lam_p omega`` this is a cheap, well-scaled inverse-Hessian approximation,
        ``U diag(1 / (a + lam_p omega_j)) U^T`` per coordinate j (eigenvalues ``a`` clipped at
        0; for the intercepts floored at 1e-3 of the largest). Returns the eigenvectors
        (P, cmax, cmax), their transposes and the inverse curvatures (P, r, cmax) and
        (P, 1, cmax) (:meth:`precondition`), padded.
        """
        xp = self.xp
        diag, PtP = sums
        eye = xp.eye(self.cmax, dtype=diag.dtype, device=_dev(diag))
        A = (diag + self.pad_diag)[:, :, None] * eye[None, :, :] - PtP
        lamb, U = xp.linalg.eigh((A + xp.matrix_transpose(A)) / 2)
        lamb = xp.clip(lamb, 0.0, None)
        # (P, cmax, r) in memory, so that the compiled preconditioner reads it row by row
        inv = 1.0 / (lamb[:, :, None] + lam[:, None, None] * self.omega[None, None, :])
        floor = 1e-3 * xp.max(lamb, axis=1, keepdims=True) + 1e-12
        return (U, xp.matrix_transpose(U), xp.permute_dims(inv, (0, 2, 1)),
                1.0 / xp.maximum(lamb, floor)[:, None, :])

    def precondition(self, gW: Any, gb: Any, curv: tuple[Any, Any, Any, Any]
                     ) -> tuple[Any, Any]:
        """Apply the approximate inverse Hessian (:meth:`curvature`) to (r, Qt) and (Qt,)
        arrays."""
        xp = self.xp
        if isinstance(gW, np.ndarray) and _kernels.available():
            hW, hb, _ = _kernels.precondition(gW, gb, curv, self.col0)
            return hW, hb
        U, Ut, inv, inv_b = curv
        H = ((xp.permute_dims(self._pad(gW), (1, 0, 2)) @ U) * inv) @ Ut  # (P, r, cmax)
        Hb = ((self._pad(gb)[:, None, :] @ U) * inv_b) @ Ut
        return self._unpad(xp.permute_dims(H, (1, 0, 2))), self._unpad(Hb[:, 0, :])

    def inverse_quad(self, gW: Any, gb: Any, curv: tuple[Any, Any, Any, Any]) -> Any:
        """Per-problem ``g . H0 g`` (P,) of the approximate inverse Hessian
        (:meth:`precondition`), without forming ``H0 g``."""
        xp = self.xp
        if isinstance(gW, np.ndarray) and _kernels.available():
            return _kernels.precondition(gW, gb, curv, self.col0, apply=False)[2]
        U, _, inv, inv_b = curv
        T = xp.permute_dims(self._pad(gW), (1, 0, 2)) @ U  # (P, r, cmax), contiguous
        Tb = self._pad(gb)[:, None, :] @ U
        # sums over one long axis (numpy reduces short last axes slowly)
        per_row = xp.reshape(T * T * inv, (self.P, T.shape[1] * self.cmax))
        return xp.sum(per_row, axis=1) + xp.sum(Tb[:, 0, :] ** 2 * inv_b[:, 0, :], axis=1)

    def dot(self, aW: Any, ab: Any, bW: Any, bb: Any) -> Any:
        """Per-problem inner products (P,)."""
        xp = self.xp
        return self.per_problem(xp.sum(aW * bW, axis=0) + ab * bb)

    def gmax(self, gW: Any, gb: Any) -> Any:
        """Per-problem max-abs gradient (P,)."""
        xp = self.xp
        # no weight rows when every unit is constant (a dead layer): the intercepts remain
        colmax = (xp.maximum(xp.max(xp.abs(gW), axis=0), xp.abs(gb)) if gW.shape[0]
                  else xp.abs(gb))[None, :]  # (1, Qt)
        return xp.max(self._pad(colmax[0, :]), axis=1)


@dataclass
class _Piece:
    """Rows ``a:e`` of the data against the problems ``p0:p1`` (columns ``c0:c1``)."""

    a: int
    e: int
    c0: int
    c1: int
    p0: int
    p1: int
    groups: list[tuple[int, int, int, int, int, int]]
    split: list[tuple[int, int, int]]  # (local column, problems, classes) of each group
    rows: int
    # (e - a, columns or problems); transposed, float64 and without Mc for the compiled pass
    Mc: Any  # row weight of every column
    MY: Any  # weighted 0/1 targets
    M: Any  # row weight of every problem
    col0: np.ndarray  # (p1 - p0 + 1,) first local column of every problem, and the end
    MYp: Any  # (p1 - p0, e - a) MY summed per problem (the compiled pass only; else None)

    def blocks(self) -> list[tuple[int, int]]:
        m = self.e - self.a
        return [(a, min(m, a + self.rows)) for a in range(0, m, self.rows)]


def _with_diagonal(D: Any, d: Any) -> Any:
    """``D + diag(d)``, a new array."""
    xp = get_namespace(D)
    return D + xp.eye(D.shape[0], dtype=D.dtype, device=_dev(D)) * d[None, :]


def _segments(active: np.ndarray, most: int = 64) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive rows with equal activity, cut into ranges of active problems.

    ``active`` (n, P) tells which problems each row weighs in. Returns ``(a, e, p0, p1)``:
    rows ``a:e`` weigh in problems ``p0:p1``. Rows that weigh in nothing are left out. When
    the rows are not grouped by pattern, or it would take more than ``most`` pieces, it is
    one piece of everything.
    """
    n, P = active.shape
    if n == 0 or P == 0:
        return []
    change = np.flatnonzero(np.any(active[1:] != active[:-1], axis=1)) + 1
    if change.size >= most:
        return [(0, n, 0, P)]
    bounds = [0, *change.tolist(), n]
    runs = active[bounds[:-1]]  # the pattern of each run of rows
    if np.any(np.all(runs[:, None, :] == runs[None, :, :], axis=2).sum(axis=1) > 1):
        return [(0, n, 0, P)]  # a pattern recurs in a later run: rows are not grouped
    out: list[tuple[int, int, int, int]] = []
    for a, e in itertools.pairwise(bounds):
        on = np.concatenate([[False], active[a], [False]])
        edges = np.flatnonzero(on[1:] != on[:-1])  # starts and stops of the active runs
        out.extend((a, e, int(p0), int(p1)) for p0, p1 in zip(edges[::2], edges[1::2],
                                                              strict=True))
        if len(out) > min(most, 2 * (len(bounds) - 1)):
            # the problems of a run are scattered: the rows' skipped products save less
            # than the pieces cost (one softmax per piece and class count)
            return [(0, n, 0, P)]
    return out
