"""Partial sums of an all-pairs similarity: the blocked products of signatures.

*Gram path* — for all representations of a block at once,
``G += SQ SQ^T + 2 RT RT^T`` where ``SQ`` stacks the square parts and ``RT`` the right parts of
the strips ``S[r0:r1, r0:]`` (the factor 2 counts the mirror image below the diagonal).

*Feature path* — the cross products ``F_i^T F_j`` of feature-space forms, reduced per pair
(``||.||_F^2`` for CKA, nuclear norm for Procrustes).

All sums are accumulated in float64, whatever the storage dtype. Numerical work follows the
array namespace of the data (numpy, torch CPU/CUDA, cupy); ``device=`` moves the data first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actstore.core._backend import to_numpy
from actstore.similarity._inputs import array_library, load_rep, mixed_error
from actstore.similarity._metrics import build_signature, check_params, get_metric
from actstore.similarity._plan import Plan
from actstore.similarity._signatures import Signature, fresh_empty

__all__ = ["accumulate"]


def accumulate(
    reps: Sequence[Any],
    metric: str,
    params: dict[str, Any],
    plan: Plan,
    *,
    names: Sequence[str],
    device: str | None = None,
    idx: np.ndarray | None = None,
    chunk_range: tuple[int, int] | None = None,
    block_pairs: Sequence[tuple[int, int]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Partial sums of one part of an all-pairs computation.

    Parts (``chunk_range`` over ``plan.chunks``, ``block_pairs`` over ``plan.blocks``) can run
    in separate processes; :func:`merge_partials` adds them and :func:`finalize` turns the sum
    into a :class:`SimilarityResult`.

    Returns
    -------
    dict
        ``V`` (M x M, upper blocks filled), ``s`` (M,), ``deg`` (M,), ``scale`` (M,) and the
        scalars ``n_entries``, ``centred``.
    """
    params = check_params(metric, params)
    entry = get_metric(metric, params)
    M = len(reps)
    pairs = list(block_pairs) if block_pairs is not None else plan.block_pairs()
    chunks = plan.chunks if chunk_range is None else plan.chunks[chunk_range[0] : chunk_range[1]]
    out: dict[str, Any] = {
        "V": np.zeros((M, M)),
        "s": np.zeros(M),
        "deg": np.zeros(M, dtype=bool),
        "scale": np.zeros(M),
        "n_entries": 0,
        "centred": False,
    }
    steps = len(pairs) * (len(chunks) if plan.method == "gram" else 1)
    done = 0
    built: dict[int, list[Signature]] = {}
    buffers: dict[str, Any] = {}
    first: dict[str, int] = {}  # array library -> first representation loaded from it

    def load(i: int) -> Any:
        X = load_rep(reps[i], device, idx, names[i])
        first.setdefault(str(array_library(X)), i)
        if len(first) > 1:  # lazy representations of different libraries
            raise mixed_error(first, names)
        return X

    def sigs(b: int, keep: int) -> list[Signature]:
        # Hold at most two blocks of signatures: the row block ``keep`` and the current one.
        for k in [k for k in built if k not in (b, keep)]:
            del built[k]
        if b not in built:
            built[b] = [
                build_signature(entry, load(i), params, idx, plan.chunks)
                for i in plan.blocks[b]
            ]
        return built[b]

    for a, b in sorted(pairs):
        SA = sigs(a, a)
        SB = sigs(b, a)
        IA, IB = plan.blocks[a], plan.blocks[b]
        for i, s in zip(IA, SA, strict=True):
            out["deg"][i] = s.degenerate
            out["scale"][i] = s.scale
        for i, s in zip(IB, SB, strict=True):
            out["deg"][i] = s.degenerate
            out["scale"][i] = s.scale
        out["n_entries"] = SA[0].n_entries
        out["centred"] = SA[0].centred_entries
        if plan.method == "gram":
            for r0, r1 in chunks:
                G, sa = _gram_block(SA, SB, r0, r1, a == b, buffers)
                out["V"][np.ix_(IA, IB)] += G
                if a == b:
                    out["s"][IA] += sa
                done += 1
                if progress:
                    progress(done, steps)
        else:
            out["V"][np.ix_(IA, IB)] = _feature_block(SA, SB, a == b)
            done += 1
            if progress:
                progress(done, steps)
    return out


def _gram_block(
    SA: list[Signature],
    SB: list[Signature],
    r0: int,
    r1: int,
    same: bool,
    buffers: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """``G[A, B]`` over one stimulus block, and the entry sums of A's strips (float64).

    ``buffers`` keeps the stacked strip buffers between stimulus blocks (allocated once).
    """
    xp = SA[0].xp
    h = r1 - r0
    n = SA[0].n

    def stack(S: list[Signature], side: str) -> tuple[Any, Any]:
        # Strips are written straight into the stacked buffers: no copies of n x n data.
        m = len(S)
        size = m * h * (n - r0)
        flat = buffers.get(side)
        if flat is None or flat.shape[0] < size:
            flat = buffers[side] = fresh_empty((size,), xp, S[0].device)
        sq = xp.reshape(flat[: m * h * h], (m, h, h))
        rt = xp.reshape(flat[m * h * h : size], (m, h, n - r1))
        for k, s in enumerate(S):
            s.fill(r0, r1, sq[k, ...], rt[k, ...])
        return xp.reshape(sq, (m, h * h)), xp.reshape(rt, (m, h * (n - r1)))

    sqa, rta = stack(SA, "a")
    # entry sums: only a Pearson comparison of signatures (RSA) needs them
    sums = (xp.sum(sqa, axis=1) + 2.0 * xp.sum(rta, axis=1) if SA[0].centred_entries
            else xp.zeros((len(SA),), dtype=xp.float64, device=SA[0].device))
    if same:
        G = _products(sqa, sqa, 1.0, True) + _products(rta, rta, 2.0, True)
    else:
        sqb, rtb = stack(SB, "b")
        G = _products(sqa, sqb, 1.0, False) + _products(rta, rtb, 2.0, False)
    # device-to-host sync: one (|A|, |B|) block per stimulus block
    return to_numpy(G), to_numpy(sums)


def _products(a: Any, b: Any, alpha: float, same: bool) -> Any:
    """``alpha * a @ b.T`` for stacked signatures ``a`` (m, K), ``b`` (m', K).

    For numpy, BLAS is called directly on the column-major views of the row-major stacks:
    numpy's ``matmul`` is several times slower on this shape (tiny output, huge inner
    dimension). With ``same``, only the upper triangle is filled (the caller symmetrises).
    """
    if isinstance(a, np.ndarray):
        if a.shape[1] == 0:
            return np.zeros((a.shape[0], b.shape[0]))
        from scipy.linalg import blas

        if same:
            return np.triu(blas.dsyrk(alpha, a.T, trans=1))
        return blas.dgemm(alpha, a.T, b.T, trans_a=1)
    return alpha * (a @ b.T)


def _feature_block(SA: list[Signature], SB: list[Signature], same: bool) -> np.ndarray:
    """Per-pair values from the cross products of feature-space forms."""
    xp = SA[0].xp
    FA: list[Any] = [s.features() for s in SA]
    FB: list[Any] = FA if same else [s.features() for s in SB]
    CA = xp.concat(FA, axis=1)  # (n, sum d_A)
    C = CA.T @ CA if same else CA.T @ xp.concat(FB, axis=1)
    oa = np.cumsum(np.array([0] + [f.shape[1] for f in FA]))
    ob = np.cumsum(np.array([0] + [f.shape[1] for f in FB]))
    V = np.zeros((len(SA), len(SB)))
    reduce = SA[0].pair_reduce
    at, vals = [], []
    for i in range(len(SA)):
        for j in range(i if same else 0, len(SB)):
            blk = C[oa[i] : oa[i + 1], ob[j] : ob[j + 1]]
            at.append((i, j))
            vals.append(xp.sum(xp.linalg.svdvals(blk)) if reduce == "nuclear"
                        else xp.sum(blk * blk))
    if at:
        # the values stay on the device until one copy of them all (one sync, not one a pair)
        rows, cols = zip(*at, strict=True)
        V[list(rows), list(cols)] = to_numpy(xp.stack(vals))
    terms: list[Any] = [s.pair_terms() for s in SA]
    if terms[0] is not None:
        # Unbiased HSIC (times n (n - 3)) from feature-space sums, see _signatures.
        n = SA[0].n
        tb: list[Any] = terms if same else [s.pair_terms() for s in SB]
        Aa = xp.stack([t[0] for t in terms])
        Ua = xp.stack([t[1] for t in terms])
        Ab = xp.stack([t[0] for t in tb])
        Ub = xp.stack([t[1] for t in tb])
        ta = np.array([t[2] for t in terms])
        tbv = np.array([t[2] for t in tb])
        V = (
            V
            - to_numpy(Aa @ Ab.T)
            + np.outer(ta, tbv) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * to_numpy(Ua @ Ub.T)
        )
        if same:
            V = np.triu(V)
    return V
