"""Per-representation signatures: the form that turns every pairwise comparison into a dot product.

A signature of a representation ``X`` (n stimuli x d units) is an n x n symmetric matrix ``S``
(centred Gram, U-centred Gram, RBF kernel, RDM, ranked RDM) such that the similarity of two
representations is the normalised inner product of their signatures:

``sim(X, Y) = <S_X, S_Y> / sqrt(<S_X, S_X> <S_Y, S_Y>)``

(after removing the mean of the counted entries when ``centred_entries`` is set, which turns the
cosine into a Pearson correlation). The engine reads a signature in horizontal strips
(:meth:`Signature.strip`) so that no n x n matrix is ever held whole. Signatures that also have
a feature-space form (:meth:`Signature.features`) let the engine compare ``F_X^T F_Y`` instead,
which is cheaper when n is large and widths small.

Each metric of :data:`actstore.probes.SIMILARITIES` is one factory function that builds a
signature from an array; adding a metric is one factory plus one registry line.
"""

from __future__ import annotations

import math
import mmap
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._backend import array_device

__all__ = [
    "Signature",
    "cka_signature",
    "fresh_copy",
    "fresh_empty",
    "procrustes_signature",
    "rbf_cka_signature",
    "row_sqnorms",
]

#: A representation whose centred activations are smaller than this fraction of its raw
#: activations has no variation left beyond round-off: it is flagged degenerate.
_REL_CONSTANT = 1e-10


class Signature:
    """Base class of per-representation signatures (see the module docstring).

    Attributes
    ----------
    n : int
        Number of stimuli.
    centred_entries : bool
        Compare signatures by Pearson correlation of their counted entries (RSA) instead of
        by cosine.
    n_entries : int
        Number of counted entries of the n x n matrix (the mean removed when
        ``centred_entries``). Entries that are not counted are zero in every strip.
    degenerate : bool
        The representation has no variation (e.g. constant units only): its similarities are
        reported as 0 and it is listed in the result.
    pair_reduce : {"fro2", "nuclear"}
        How a feature-space cross-product block ``F_X^T F_Y`` becomes a value.
    scale : float
        An upper bound of the size of the self product before cancellation (0: none known).
        A self product below ``1e-10 * scale`` is round-off: the representation is flagged
        degenerate. Set for U-centred kernels, where cancellation can leave exactly nothing.
    """

    centred_entries: bool = False
    pair_reduce: str = "fro2"

    def __init__(self, X: Any, xp: Any, n_entries: int | None = None) -> None:
        n = X.shape[0]
        self.n = n
        self.xp = xp
        self.device = array_device(X)
        self.n_entries = n * n if n_entries is None else n_entries
        self.degenerate = False
        self.scale = 0.0

    @property
    def has_strips(self) -> bool:
        """True when the signature has a Gram form (:meth:`strip` or :meth:`fill`)."""
        cls = type(self)
        return cls.strip is not Signature.strip or cls.fill is not Signature.fill

    def strip(self, r0: int, r1: int) -> Any:
        """Rows ``r0:r1``, columns ``r0:`` of the signature matrix.

        Returns
        -------
        array of shape (r1 - r0, n - r0), float64
        """
        raise NotImplementedError(f"{type(self).__name__} has no Gram form")

    def fill(self, r0: int, r1: int, sq: Any, rt: Any) -> None:
        """Write the strip of rows ``r0:r1`` into preallocated buffers.

        Parameters
        ----------
        r0, r1 : int
            Stimulus block.
        sq : array of shape (r1 - r0, r1 - r0), float64
            Receives the square part ``S[r0:r1, r0:r1]``.
        rt : array of shape (r1 - r0, n - r1), float64
            Receives the right part ``S[r0:r1, r1:]``.
        """
        S = self.strip(r0, r1)
        h = r1 - r0
        sq[...] = S[:, :h]
        rt[...] = S[:, h:]

    def features(self) -> Any | None:
        """Feature-space form ``F`` (n x r, float64), or None when the metric has none."""
        return None

    def pair_terms(self) -> tuple[Any, Any, float] | None:
        """Extra per-stimulus terms of the feature-space form (debiased CKA), else None."""
        return None


#: Arrays at least this large (bytes) get memory of their own from :func:`fresh_empty`: the
#: size from which numpy advises huge pages.
_OWN_MAPPING = 2**22


def fresh_empty(shape: tuple[int, ...], xp: Any, device: Any) -> Any:
    """An uninitialised float64 array of namespace ``xp`` on ``device``.

    A large numpy array gets an anonymous memory mapping of its own, paged in as the kernel
    does for any process. numpy asks for huge pages on its large arrays
    (``madvise(MADV_HUGEPAGE)``); on a kernel that then compacts memory at each page fault to
    find them (``defrag`` set to ``madvise``, the usual default), the first touch of fresh
    memory stalls: a 557 MB array took 1.55 s to fill for the first time with numpy's advice,
    0.39 s without it, on the machine of docs/BENCHMARKS.md. The engine's working arrays
    (centred activations, stacked strips) are written once and read a few times, so their
    first touch is a large share of the cost. The mapping is released with the last array
    that views it.
    """
    size = math.prod(shape) * 8
    if xp.__name__.endswith("numpy") and size >= _OWN_MAPPING:
        try:
            if hasattr(mmap, "MAP_PRIVATE"):  # POSIX; Linux maps all pages in one call
                flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
                buf = mmap.mmap(-1, size, flags=flags | getattr(mmap, "MAP_ANONYMOUS", 0))
            else:
                buf = mmap.mmap(-1, size)
        except OSError:  # e.g. the process's limit of mappings: numpy's memory will do
            return np.empty(shape)
        return np.frombuffer(buf, dtype=np.float64).reshape(shape)
    return xp.empty(shape, dtype=xp.float64, device=device)


def fresh_copy(X: Any, xp: Any) -> Any:
    """A copy of ``X`` to work on in place (a large float64 numpy array: in a mapping of its
    own, see :func:`fresh_empty`)."""
    if isinstance(X, np.ndarray) and X.dtype == np.float64:
        out = fresh_empty(X.shape, xp, None)
        out[...] = X
        return out
    return xp.asarray(X, copy=True)


def row_sqnorms(Z: Any, xp: Any) -> Any:
    """Squared norms of the rows of ``Z``, without an n x d temporary for numpy."""
    if isinstance(Z, np.ndarray):
        return np.einsum("ij,ij->i", Z, Z)
    return xp.sum(Z * Z, axis=1)


def _centre(X: Any, xp: Any, keep: bool = True) -> tuple[Any, bool]:
    """Column-centre ``X``; also say whether nothing but round-off is left.

    With ``keep=False`` only the second answer is wanted: ``X`` is centred a block of rows at
    a time and the centred array returned is None.
    """
    from actstore.core._backend import to_numpy

    mean = xp.mean(X, axis=0, keepdims=True)
    Xc = None
    if not keep:
        step = max(1, 2**16 // max(1, X.shape[1]))  # blocks of about 512 KB
        left = sum(xp.linalg.vector_norm(X[i : i + step, :] - mean) ** 2
                   for i in range(0, X.shape[0], step))
    else:
        if isinstance(X, np.ndarray) and X.dtype == np.float64:
            Xc = fresh_empty(X.shape, xp, None)
            np.subtract(X, mean, out=Xc)
        else:
            Xc = X - mean
        left = xp.linalg.vector_norm(Xc) ** 2
    # ||X||^2 = ||Xc||^2 + n ||mean||^2: no n x d temporaries (a norm is a dot product)
    left, spread = (float(v) for v in to_numpy(xp.stack([
        xp.asarray(left, dtype=mean.dtype, device=array_device(mean)),
        X.shape[0] * xp.sum(mean * mean)])))
    return Xc, left <= (_REL_CONSTANT**2) * (left + spread)


def _need(n: int, at_least: int, what: str) -> None:
    if n < at_least:
        raise ActstoreError(
            f"{what} needs at least {at_least} stimuli, got {n}; select more stimuli"
        )


def _zero_diagonal(M: Any, xp: Any) -> Any:
    h, w = M.shape
    return xp.where(_diag_mask(h, w, xp, M), xp.zeros_like(M), M)


def _zero_diagonal_(sq: Any, xp: Any) -> None:
    """Set the diagonal of a square array to 0, in place."""
    i = xp.arange(sq.shape[0], device=array_device(sq))
    sq[i, i] = 0.0


def _u_centre_strip(K: Any, u: Any, t: float, n: int, r0: int, r1: int, xp: Any) -> Any:
    """U-centre a strip of a kernel matrix (Székely & Rizzo; Song et al. 2012).

    ``U_kl = K_kl - u_k/(n-2) - u_l/(n-2) + t/((n-1)(n-2))`` off the diagonal, 0 on it, where
    ``u = K~ 1`` are the row sums and ``t = 1^T K~ 1`` the total of the kernel with its
    diagonal set to zero. ``<U_K, U_L> = n (n - 3) HSIC_1(K, L)``, the unbiased HSIC.
    """
    U = K - u[r0:r1, None] / (n - 2) - u[None, r0:] / (n - 2) + t / ((n - 1) * (n - 2))
    return _zero_diagonal(U, xp)


class _LinearCKA(Signature):
    """Centred (or U-centred) linear Gram ``Xc Xc^T``; feature form ``Xc``."""

    def __init__(self, X: Any, xp: Any, debiased: bool) -> None:
        super().__init__(X, xp)
        self.debiased = debiased
        self.Xc, self.degenerate = _centre(X, xp)
        if debiased:
            Xc = self.Xc
            self.a = xp.sum(Xc * Xc, axis=1)  # (n,) diagonal of K
            g = xp.sum(Xc, axis=0)  # (d,) ~ 0 after centring, kept for exactness
            self.u = Xc @ g - self.a  # (n,) row sums of K with a zero diagonal
            self.t = float(xp.sum(g * g) - xp.sum(self.a))
            self.scale = float(xp.sum(self.a)) ** 2  # trace(K)^2 >= ||K||_F^2

    def fill(self, r0: int, r1: int, sq: Any, rt: Any) -> None:
        xp = self.xp
        A = self.Xc[r0:r1, :]
        xp.matmul(A, A.T, out=sq)  # symmetric product: BLAS syrk where available
        xp.matmul(A, self.Xc[r1:, :].T, out=rt)
        if self.debiased:
            n = self.n
            u = self.u / (n - 2)
            c = self.t / ((n - 1) * (n - 2))
            sq -= u[r0:r1, None]
            sq -= u[None, r0:r1]
            sq += c
            _zero_diagonal_(sq, xp)
            rt -= u[r0:r1, None]
            rt -= u[None, r1:]
            rt += c

    def features(self) -> Any:
        return self.Xc

    def pair_terms(self) -> tuple[Any, Any, float] | None:
        if not self.debiased:
            return None
        return self.a, self.u, self.t


def cka_signature(X: Any, *, debiased: bool = False) -> Signature:
    """Linear CKA (Kornblith et al. 2019).

    ``CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on column-centred
    activations, i.e. the cosine between centred Gram matrices.

    Parameters
    ----------
    X : array of shape (n_stimuli, n_units), float64
        Activations.
    debiased : bool
        Use the unbiased HSIC estimator (Song et al. 2012) through U-centred Gram matrices.
        Needs at least 4 stimuli. Debiased CKA can be negative (the estimator is unbiased, so
        values scatter around 0 for unrelated representations); negative values are
        returned as they are. A representation whose unbiased HSIC with itself is not
        positive is flagged degenerate and its similarities are 0.

    Returns
    -------
    Signature
        Gram form: the centred (``debiased``: U-centred) Gram matrix ``Xc Xc^T``, n_stimuli x
        n_stimuli; feature form: ``Xc`` of shape (n_stimuli, n_units). Arrays keep the
        namespace, device and dtype of ``X``.
    """
    from actstore.core._backend import get_namespace

    xp = get_namespace(X)
    _need(X.shape[0], 4 if debiased else 2, "debiased CKA" if debiased else "CKA")
    return _LinearCKA(X, xp, debiased)


class _RBFCKA(Signature):
    """Centred (or U-centred) RBF kernel with the median-distance bandwidth."""

    def __init__(self, X: Any, xp: Any, t: float, debiased: bool, chunks: list) -> None:
        n = X.shape[0]
        super().__init__(X, xp)
        self.debiased = debiased
        self.Xc, self.degenerate = _centre(X, xp)
        self.a = xp.sum(self.Xc * self.Xc, axis=1)
        # Pass 1: the median of all n^2 squared distances (zero diagonal included).
        upper = []
        for r0, r1 in chunks:
            D2 = self._sqdist(r0, r1)
            upper.append(D2[strict_upper_mask(r1 - r0, n - r0, xp, D2)])
        v = xp.sort(xp.concat(upper)) if upper else xp.zeros((0,), dtype=X.dtype,
                                                              device=array_device(X))
        self.sigma2 = t * t * _full_median(v, n)
        if not self.sigma2 > 0:
            self.degenerate = True
        # Pass 2: row sums of the kernel, for centring.
        rows = xp.zeros((n,), dtype=X.dtype, device=array_device(X))
        for r0, r1 in chunks:
            K = self._kernel(r0, r1)
            h = r1 - r0
            rs = xp.sum(K, axis=1)
            cs = xp.sum(K[:, h:], axis=0)  # the right part's mirror image below the diagonal
            rows = rows + xp.concat([xp.zeros((r0,), dtype=X.dtype, device=array_device(X)), rs,
                                     xp.zeros((n - r1,), dtype=X.dtype, device=array_device(X))])
            rows = rows + xp.concat([xp.zeros((r1,), dtype=X.dtype, device=array_device(X)), cs])
        self.rowsum = rows
        if debiased:
            self.scale = float(n * n)  # kernel entries lie in [0, 1]
            self.u = rows - 1.0  # the diagonal exp(0) = 1 removed
            self.tot = float(xp.sum(self.u))
        else:
            self.m = rows / n
            self.mbar = float(xp.sum(rows)) / (n * n)

    def _sqdist(self, r0: int, r1: int) -> Any:
        xp = self.xp
        G = self.Xc[r0:r1, :] @ self.Xc[r0:, :].T
        S = self.a[r0:r1, None] + self.a[None, r0:]
        D2 = S - 2.0 * G
        # distances at the round-off of |x_i|^2 + |x_j|^2 are those of identical stimuli: 0
        # (otherwise a zero median distance would become a round-off bandwidth)
        tiny = D2 <= (64 * xp.finfo(D2.dtype).eps) * S
        return _zero_diagonal(xp.where(tiny, xp.zeros_like(D2), D2), xp)

    def _kernel(self, r0: int, r1: int) -> Any:
        xp = self.xp
        D2 = self._sqdist(r0, r1)
        if not self.sigma2 > 0:
            return xp.ones_like(D2)
        return xp.exp(D2 / (-2.0 * self.sigma2))

    def strip(self, r0: int, r1: int) -> Any:
        K = self._kernel(r0, r1)
        if self.debiased:
            return _u_centre_strip(K, self.u, self.tot, self.n, r0, r1, self.xp)
        return K - self.m[r0:r1, None] - self.m[None, r0:] + self.mbar


def _full_median(v: Any, n: int) -> float:
    """Median of the n x n squared-distance matrix from its sorted strict upper triangle ``v``.

    The full matrix holds n zeros (the diagonal) and every entry of ``v`` twice, so its k-th
    smallest element is 0 for k < n and ``v[(k - n) // 2]`` after.
    """
    N = n * n

    def kth(k: int) -> float:
        return 0.0 if k < n else float(v[(k - n) // 2])

    if N % 2:
        return kth(N // 2)
    return 0.5 * (kth(N // 2 - 1) + kth(N // 2))


def rbf_cka_signature(
    X: Any, *, t: float = 1.0, debiased: bool = False, chunks: list | None = None
) -> Signature:
    """RBF-kernel CKA (Kornblith et al. 2019).

    ``k(x_i, x_j) = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with ``sigma^2 = t^2 * median`` of the
    squared distances between the representation's stimuli. The median is taken over the
    whole n x n matrix, its zero diagonal included, as in the reference implementation of
    Kornblith et al. (this reproduces their published 0.65483 for ``t = 0.5``).

    Parameters
    ----------
    X : array of shape (n_stimuli, n_units), float64
        Activations.
    t : float
        Bandwidth as a fraction of the median distance.
    debiased : bool
        Unbiased HSIC through U-centred kernels (at least 4 stimuli).
    chunks : list of (int, int), optional
        Stimulus blocks used for the median pass (set by the engine).

    Returns
    -------
    Signature
        Gram form only: the centred (``debiased``: U-centred) kernel matrix, n_stimuli x
        n_stimuli, in the namespace, device and dtype of ``X``. Also flagged degenerate when
        the median distance is 0.
    """
    from actstore.core._backend import get_namespace

    xp = get_namespace(X)
    n = X.shape[0]
    _need(n, 4 if debiased else 2, "debiased RBF CKA" if debiased else "RBF CKA")
    if not t > 0:
        raise ActstoreError(f"the RBF bandwidth factor t must be positive, got {t}")
    return _RBFCKA(X, xp, float(t), debiased, chunks or [(0, n)])


class _Procrustes(Signature):
    """Feature form ``Xc / ||Xc||_F`` reduced to at most n columns; pairs reduce by nuclear norm."""

    pair_reduce = "nuclear"

    def __init__(self, X: Any, xp: Any) -> None:
        n, d = X.shape
        super().__init__(X, xp)
        Xc, self.degenerate = _centre(X, xp)
        if d > n:
            # Xc = U S V^T: Xc V = U S has the same cross-product singular values with any Y.
            U, S, _ = xp.linalg.svd(Xc, full_matrices=False)
            Xc = U * S[None, :]
        norm = math.sqrt(float(xp.sum(Xc * Xc)))
        self.F = Xc / norm if norm > 0 else Xc

    def features(self) -> Any:
        return self.F


def procrustes_signature(X: Any) -> Signature:
    """Orthogonal Procrustes similarity (shape metrics, Williams et al. 2021).

    ``s(X, Y) = ||Xn^T Yn||_*`` (nuclear norm) with ``Xn = Xc / ||Xc||_F``: the largest
    correlation reachable by rotating one centred, scale-normalised representation onto the
    other. ``s`` is in [0, 1]; the Procrustes distance is ``sqrt(2 - 2 s)`` and the angular
    shape distance ``arccos(s)``. Units need not match in number (the narrower
    representation is padded with zero units, which changes nothing).

    Parameters
    ----------
    X : array of shape (n_stimuli, n_units), float64
        Activations.

    Returns
    -------
    Signature
        Feature form only: ``Xc / ||Xc||_F`` of shape (n_stimuli, min(n_stimuli, n_units))
        (reduced to its singular directions when units outnumber stimuli), in the namespace,
        device and dtype of ``X``; pairs reduce by the nuclear norm.
    """
    from actstore.core._backend import get_namespace

    xp = get_namespace(X)
    _need(X.shape[0], 2, "Procrustes similarity")
    return _Procrustes(X, xp)


def _diag_mask(h: int, width: int, xp: Any, like: Any) -> Any:
    """Boolean (h, width) mask of the positions (i, i): the diagonal of the full matrix."""
    rows = xp.arange(h, device=array_device(like))
    cols = xp.arange(width, device=array_device(like))
    return rows[:, None] == cols[None, :]


def strict_upper_mask(h: int, width: int, xp: Any, like: Any) -> Any:
    """Boolean (h, width) mask of the positions (i, j) with j > i (strictly above the diagonal)."""
    rows = xp.arange(h, device=array_device(like))
    cols = xp.arange(width, device=array_device(like))
    return cols[None, :] > rows[:, None]
