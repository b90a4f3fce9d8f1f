"""Dictionary features: streamed non-negative matrix factorisation ``A ~ Z D``.

``A`` (n_samples, n_units) are non-negative activations, ``Z >= 0`` (n_samples, k) the codes,
``D >= 0`` (k, n_units) the dictionary; ``k`` may exceed the number of units (an overcomplete
dictionary, as in Fel et al. 2024). The objective is scikit-learn's ``NMF`` objective
``0.5 * ||A - Z D||_F^2``.

Solver: hierarchical alternating least squares (HALS, exact coordinate descent on one column
of ``Z`` or one row of ``D`` at a time, which is what scikit-learn's ``solver="cd"`` does),
organised so that ``A`` is only ever read in minibatches of rows:

* the codes of minibatch ``b`` are updated given ``D`` (``inner`` HALS sweeps on
  ``A_b D^T`` and ``D D^T``);
* the dictionary needs only ``H = Z^T Z`` (k, k) and ``Q = Z^T A`` (k, d). These are kept
  for the *current* codes of every minibatch: when a minibatch's codes change, its old
  contribution is subtracted and the new one added, so every dictionary update (after each
  minibatch with ``mode="minibatch"``, after each pass with ``mode="batch"``) is an exact
  coordinate-descent step on the full objective, and the objective never increases.

Memory: the codes (n x k), the statistics (k x k + k x d) and one minibatch; ``A`` itself is
streamed (kept in memory only when it fits ``cache_mb``). The objective after each pass is
computed exactly from ``H``, ``Q`` and ``||A||^2``. Atoms are finally rescaled to unit norm
(codes in activation units along each atom) and ordered by decreasing code norm.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._backend import array_device, float64_like, get_namespace, to_numpy
from actstore.core._blocks import ArraySource, BlockSource, CachedSource

__all__ = ["NEGATIVE", "NMFResult", "hals_codes", "hals_dictionary", "nmf", "nmf_transform"]

#: How negative activations are handled: refuse them, or clip them to zero (reported).
NEGATIVE = ("error", "clip")

#: Passes between exact rebuilds of the running statistics (minibatch mode).
_REBUILD_EVERY = 10


@dataclass
class NMFResult:
    """A dictionary and the codes of every sample.

    Attributes
    ----------
    codes : ndarray of shape (n_samples, k), float64
        ``Z >= 0``.
    dictionary : ndarray of shape (k, n_units), float64
        ``D >= 0``, rows of unit Euclidean norm (zero for unused atoms).
    error : float
        ``||A - Z D||_F`` (scikit-learn's ``reconstruction_err_``).
    relative_error : float
        ``error / ||A||_F``.
    objective : float
        ``0.5 * error^2``.
    history : list of float
        Objective after each pass over the data.
    n_epochs : int
    clipped : float
        Fraction of ``||A||_F^2`` removed by clipping negative activations (0 if none).
    """

    codes: np.ndarray
    dictionary: np.ndarray
    error: float
    relative_error: float
    objective: float
    history: list[float] = field(default_factory=list)
    n_epochs: int = 0
    clipped: float = 0.0

    def __repr__(self) -> str:
        n, k = self.codes.shape
        return (f"NMFResult(n_samples={n}, k={k}, n_units={self.dictionary.shape[1]}, "
                f"relative_error={self.relative_error:.4g}, n_epochs={self.n_epochs}, "
                f"clipped={self.clipped:.3g})")


def hals_codes(Z: Any, R: Any, G: Any, sweeps: int = 1) -> Any:
    """HALS sweeps over the columns of ``Z`` for ``min ||A - Z D||^2, Z >= 0``.

    Parameters
    ----------
    Z : array of shape (m, k), float64
        Current codes (updated in place and returned).
    R : array of shape (m, k)
        ``A D^T``.
    G : array of shape (k, k)
        ``D D^T``.
    sweeps : int
    """
    xp = get_namespace(Z)
    diag = xp.linalg.diagonal(G)
    # An atom that is all zero has G_jj = 0 and a zero numerator: it is left unchanged.
    safe = xp.where(diag > 0, diag, xp.ones_like(diag))
    for _ in range(sweeps):
        for j in range(Z.shape[1]):
            step = (R[:, j] - Z @ G[:, j]) / safe[j]
            Z[:, j] = xp.clip(Z[:, j] + step, 0.0, None)
    return Z


def hals_dictionary(D: Any, H: Any, Q: Any, sweeps: int = 1) -> Any:
    """HALS sweeps over the rows of ``D`` given ``H = Z^T Z`` (k, k) and ``Q = Z^T A`` (k, d).

    ``D`` (k, d) is updated in place and returned.
    """
    xp = get_namespace(D)
    diag = xp.linalg.diagonal(H)
    safe = xp.where(diag > 0, diag, xp.ones_like(diag))
    for _ in range(sweeps):
        for i in range(D.shape[0]):
            step = (Q[i, :] - H[i, :] @ D) / safe[i]
            D[i, :] = xp.clip(D[i, :] + step, 0.0, None)
    return D


def _batches(blocks: Iterator[tuple[int, int, Any]], rows: int) -> Iterator[tuple[int, int, Any]]:
    """Re-cut row blocks into minibatches of exactly ``rows`` rows (the last may be shorter)."""
    buf: list[Any] = []
    have = 0
    start = 0
    for _a, _b, blk in blocks:
        while blk.shape[0]:
            take = min(rows - have, blk.shape[0])
            buf.append(blk[:take])
            blk = blk[take:]
            have += take
            if have == rows:
                xp = get_namespace(buf[0])
                yield start, start + have, buf[0] if len(buf) == 1 else xp.concat(buf, axis=0)
                start += have
                buf, have = [], 0
    if buf:
        xp = get_namespace(buf[0])
        yield start, start + have, buf[0] if len(buf) == 1 else xp.concat(buf, axis=0)


class _Data:
    """Minibatches of ``A`` as float64, negatives checked or clipped."""

    def __init__(self, source: CachedSource, rows: int, negative: str) -> None:
        self.source, self.rows, self.negative = source, rows, negative

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        for a, b, blk in _batches(self.source.blocks(), self.rows):
            xp = get_namespace(blk)
            A = xp.astype(blk, xp.float64)
            if self.negative == "clip":
                A = xp.clip(A, 0.0, None)
            yield a, b, A


def _scan(source: CachedSource, negative: str) -> tuple[float, float, float, int]:
    """``(sum, sum of squares after clipping, sum of squares removed, n)`` in one pass."""
    total = sq = removed = 0.0
    n = 0
    for a, b, blk in source.blocks():
        xp = get_namespace(blk)
        A = xp.astype(blk, xp.float64)
        neg = xp.clip(A, None, 0.0)
        A = xp.clip(A, 0.0, None)
        # sync point: the block's minimum and sums come back together, once per block
        low, s1, s2, s3 = to_numpy(xp.stack([xp.min(neg), xp.sum(A), xp.sum(A * A),
                                             xp.sum(neg * neg)])).tolist()
        if low < 0 and negative == "error":
            row = a + int(np.flatnonzero((to_numpy(neg) < 0).any(axis=1))[0])
            raise ActstoreError(
                f"{source.name}: activations are negative (first in sample row {row}); "
                "NMF needs non-negative data (post-ReLU layers), or pass negative='clip' "
                "(--negative clip)"
            )
        total += s1
        sq += s2
        removed += s3
        n += b - a
    return total, sq, removed, n


def _random(rng: np.random.Generator, shape: tuple[int, ...], scale: float, like: Any) -> Any:
    """scikit-learn's ``init="random"`` family: ``scale * |N(0, 1)|``."""
    host = scale * np.abs(rng.standard_normal(shape))
    return float64_like(host, like)


def nmf(
    A: BlockSource | Any,
    k: int,
    *,
    mode: str = "minibatch",
    batch_rows: int = 2048,
    max_epochs: int = 200,
    tol: float = 1e-5,
    inner: int = 1,
    final_sweeps: int = 10,
    seed: int = 0,
    negative: str = "error",
    backend: str | None = None,
    cache_mb: float = 256.0,
) -> NMFResult:
    """Factorise non-negative activations ``A ~ Z D`` with ``k`` atoms.

    Parameters
    ----------
    A : BlockSource or array of shape (n_samples, n_units)
        numpy, torch or cupy; streamed in minibatches of ``batch_rows`` rows.
    k : int
        Number of atoms (may exceed ``n_units``).
    mode : {"minibatch", "batch"}
        Update the dictionary after every minibatch (fewer passes on large data) or once per
        pass. Both decrease the objective monotonically; with one minibatch they coincide.
    batch_rows : int
    max_epochs : int
        Passes over the data.
    tol : float
        Stop when a pass lowers the objective by less than ``tol`` (relative).
    inner : int
        HALS sweeps per code update and per dictionary update.
    final_sweeps : int
        HALS sweeps of the codes on the final dictionary.
    seed : int
        Seeds the random initialisation (scikit-learn's ``init="random"`` family).
    negative : {"error", "clip"}
        Negative activations (e.g. leaky ReLU) are refused, or clipped to zero (the fraction
        of the squared norm removed is reported in :attr:`NMFResult.clipped`).
    backend : str, optional
        Move minibatches to ``"torch"``, ``"cuda"`` or ``"cupy"``.
    cache_mb : float
        Keep ``A`` in memory (float as given) when it fits; otherwise it is re-read each pass.

    Returns
    -------
    NMFResult
    """
    if mode not in ("minibatch", "batch"):
        raise ActstoreError(f"NMF mode must be 'minibatch' or 'batch', got {mode!r}")
    if negative not in NEGATIVE:
        raise ActstoreError(f"negative must be one of {', '.join(NEGATIVE)}, got {negative!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ActstoreError(f"the number of atoms k must be a positive integer, got {k!r}")
    if batch_rows < 1 or max_epochs < 1 or inner < 1:
        raise ActstoreError("batch_rows, max_epochs and inner must be >= 1")
    k = int(k)
    if not hasattr(A, "blocks"):
        A = ArraySource(A)
    src = CachedSource(A, backend=backend, cache_bytes=int(cache_mb * 2**20))
    total, normA2, removed, n = _scan(src, negative)
    if n == 0:
        raise ActstoreError(f"{src.name}: no activation rows to factorise")
    if normA2 == 0:
        raise ActstoreError(f"{src.name}: activations are all zero; nothing to factorise")
    data = _Data(src, batch_rows, negative)
    rng = np.random.default_rng(seed)
    scale = float(np.sqrt(total / (n * src.d) / k))
    Z: list[Any] = []
    D: Any = None
    H: Any = None
    Q: Any = None
    history: list[float] = []
    epochs = 0
    for epoch in range(max_epochs):
        epochs = epoch + 1
        # The running statistics are rebuilt exactly from one pass's codes now and then, so
        # that rounding in the incremental updates cannot accumulate.
        rebuild = mode == "batch" or epoch % _REBUILD_EVERY == 0
        fresh_H = fresh_Q = None
        for i, (_a, _b, Ab) in enumerate(data):
            xp = get_namespace(Ab)
            if D is None:
                D = _random(rng, (k, src.d), scale, Ab)
                H = xp.zeros((k, k), dtype=xp.float64, device=array_device(Ab))
                Q = xp.zeros((k, src.d), dtype=xp.float64, device=array_device(Ab))
            Dt = xp.matrix_transpose(D)
            first = i == len(Z)
            if first:  # first visit: random codes, no old contribution
                Z.append(_random(rng, (Ab.shape[0], k), scale, Ab))
            old = None if (first or mode == "batch") else xp.asarray(Z[i], copy=True)
            if old is not None:
                H = H - xp.matrix_transpose(old) @ old
            hals_codes(Z[i], Ab @ Dt, D @ Dt, inner)
            Zt = xp.matrix_transpose(Z[i])
            new_H = Zt @ Z[i]
            if rebuild:
                new_Q = Zt @ Ab
                fresh_H = new_H if fresh_H is None else fresh_H + new_H
                fresh_Q = new_Q if fresh_Q is None else fresh_Q + new_Q
            if mode == "minibatch":
                H = H + new_H
                # one product with the change of the codes instead of two
                Q = Q + (new_Q if first and rebuild else
                         Zt @ Ab if first else xp.matrix_transpose(Z[i] - old) @ Ab)
                hals_dictionary(D, H, Q, inner)
        if rebuild:
            H, Q = fresh_H, fresh_Q
        if mode == "batch":
            hals_dictionary(D, H, Q, inner)
        xp = get_namespace(D)
        obj = 0.5 * (normA2 - 2.0 * float(xp.sum(Q * D))
                     + float(xp.sum(H * (D @ xp.matrix_transpose(D)))))
        history.append(obj)
        if len(history) > 1 and history[-2] - obj <= tol * max(abs(history[-2]), 1e-300):
            break
    # Final codes on the final dictionary, and the exact reconstruction error.
    xp = get_namespace(D)
    Dt = xp.matrix_transpose(D)
    G = D @ Dt
    sq_err = 0.0
    for i, (_a, _b, Ab) in enumerate(data):
        hals_codes(Z[i], Ab @ Dt, G, final_sweeps)
        resid = Ab - Z[i] @ D  # direct, so that small errors are not lost to cancellation
        sq_err += float(xp.sum(resid * resid))
    codes = np.concatenate([to_numpy(z) for z in Z], axis=0)  # sync point: (n, k)
    dic = to_numpy(D).copy()
    norms = np.linalg.norm(dic, axis=1)
    used = norms > 0
    dic[used] /= norms[used, None]
    codes[:, used] *= norms[used]
    order = np.argsort(-np.linalg.norm(codes, axis=0), kind="stable")
    sq_err = max(sq_err, 0.0)
    err = float(np.sqrt(sq_err))
    return NMFResult(
        codes=codes[:, order],
        dictionary=dic[order],
        error=err,
        relative_error=err / float(np.sqrt(normA2)),
        objective=0.5 * sq_err,
        history=history,
        n_epochs=epochs,
        clipped=removed / (normA2 + removed),
    )


def nmf_transform(
    A: Any, dictionary: Any, sweeps: int = 200, tol: float = 1e-8, seed: int = 0
) -> np.ndarray:
    """Codes of new rows for a fixed dictionary: ``argmin_{Z >= 0} ||A - Z D||_F``.

    Parameters
    ----------
    A : array of shape (m, n_units), non-negative
    dictionary : array of shape (k, n_units), non-negative
    sweeps : int
        Maximum HALS sweeps (stops earlier when the codes change by less than ``tol``,
        relative).

    Returns
    -------
    ndarray of shape (m, k), float64
    """
    xp = get_namespace(A, dictionary)
    A = xp.astype(A, xp.float64)
    D = xp.astype(dictionary, xp.float64)
    if A.shape[1] != D.shape[1]:
        raise ActstoreError(
            f"the dictionary has {D.shape[1]} units but the activations {A.shape[1]}"
        )
    Dt = xp.matrix_transpose(D)
    R, G = A @ Dt, D @ Dt
    scale = float(np.sqrt(max(float(xp.mean(A)), 1e-300) / D.shape[0]))
    Z = _random(np.random.default_rng(seed), (A.shape[0], D.shape[0]), scale, A)
    for _ in range(sweeps):
        before = xp.asarray(Z, copy=True)
        hals_codes(Z, R, G, 1)
        change = float(xp.linalg.vector_norm(Z - before))
        if change <= tol * max(float(xp.linalg.vector_norm(Z)), 1e-300):
            break
    return to_numpy(Z)
