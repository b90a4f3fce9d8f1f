"""Bootstrap confidence intervals of all-pairs similarity matrices over stimuli.

Every replicate draws n stimuli with replacement and recomputes the whole M x M matrix with
the same draw for every representation, so replicates are consistent matrices. For RDM-based
metrics, the pairs formed by two copies of one stimulus are left out (distance 0 by
construction; rsatoolbox marks them NaN and skips them); kernel metrics keep the copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore._args import check_seed
from actstore._errors import ActstoreError
from actstore.core._reprs import array_summary
from actstore.similarity._inputs import check_reps, load_rep, shapes_of
from actstore.similarity._plan import DEFAULT_MEMORY
from actstore.similarity._result import SimilarityResult
from actstore.similarity._similarity import similarity_matrix

__all__ = [
    "BootstrapResult",
    "bootstrap_indices",
    "bootstrap_replicates",
    "bootstrap_similarity",
    "summarize_bootstrap",
]


@dataclass
class BootstrapResult:
    """Bootstrap distribution of an all-pairs similarity matrix over stimuli.

    Attributes
    ----------
    low, high : ndarray of shape (M, M), float64
        Percentile confidence bounds.
    std : ndarray of shape (M, M), float64
        Standard deviation over replicates.
    ci : float
        Coverage of ``[low, high]`` (e.g. 0.95).
    n_boot, seed : int
        Number of replicates and the seed of the resampling.
    samples : ndarray of shape (n_boot, M, M), optional
        Every replicate, when asked for.
    """

    low: np.ndarray
    high: np.ndarray
    std: np.ndarray
    ci: float
    n_boot: int
    seed: int
    samples: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"BootstrapResult(M={len(self.low)}, n_boot={self.n_boot}, ci={self.ci}, "
                f"seed={self.seed}, samples={array_summary(self.samples)})")


def _check_n_boot(n_boot: Any) -> int:
    if isinstance(n_boot, (bool, np.bool_)) or not isinstance(n_boot, (int, np.integer)) \
            or n_boot < 2:
        raise ActstoreError(
            f"a bootstrap needs an integer number of replicates >= 2, got n_boot={n_boot!r}; "
            "give e.g. n_boot=100"
        )
    return int(n_boot)


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Stimulus resamples shared by every pair: row ``b`` draws n stimuli with replacement.

    Parameters
    ----------
    n : int
        Number of stimuli.
    n_boot : int
        Number of replicates.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    ndarray of shape (n_boot, n), int64
        Each row sorted (similarities do not depend on the order of stimuli).

    Raises
    ------
    ActstoreError
        A seed that is not an integer >= 0.
    """
    rng = np.random.default_rng(check_seed(seed, "bootstrap seed"))
    return np.sort(rng.integers(0, n, size=(n_boot, n)), axis=1)


def bootstrap_replicates(
    reps: Sequence[Any],
    metric: str,
    indices: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    method: str = "auto",
    device: str | None = None,
    max_memory: int = DEFAULT_MEMORY,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> np.ndarray:
    """Similarity matrices of the given stimulus resamples (one row of ``indices`` each).

    For RDM-based metrics, pairs of two copies of one stimulus are left out (their distance is
    0 by construction), as rsatoolbox does; kernel metrics keep the copies (the bootstrap of
    CKA over stimuli as in Kornblith et al.).

    Returns
    -------
    ndarray of shape (len(indices), M, M), float64
    """
    shapes, labels = shapes_of(reps, names)
    total = sum(n * d * 8 for n, d in shapes)
    if total <= max_memory / 2:
        # Read every representation once, not once per replicate.
        reps = [load_rep(r, device, None, lab) for r, lab in zip(reps, labels, strict=True)]
    out = np.empty((len(indices), len(reps), len(reps)))
    for b, idx in enumerate(indices):
        res = similarity_matrix(
            reps, metric, names=labels, method=method, device=device, max_memory=max_memory,
            idx=idx, **params,
        )
        out[b] = res.values
        if progress:
            progress(b + 1, len(indices))
    return out


def summarize_bootstrap(
    samples: np.ndarray, ci: float, seed: int, keep_samples: bool = False
) -> BootstrapResult:
    """Percentile interval and standard deviation of bootstrap replicates (B, M, M)."""
    if not 0 < ci < 1:
        raise ActstoreError(f"the confidence level must be between 0 and 1, got {ci}")
    tail = 100 * (1 - ci) / 2
    return BootstrapResult(
        low=np.percentile(samples, tail, axis=0),
        high=np.percentile(samples, 100 - tail, axis=0),
        std=samples.std(axis=0, ddof=1) if len(samples) > 1 else np.zeros(samples.shape[1:]),
        ci=ci,
        n_boot=len(samples),
        seed=seed,
        samples=samples if keep_samples else None,
    )


def bootstrap_similarity(
    reps: Sequence[Any],
    metric: str = "cka",
    *,
    n_boot: int = 100,
    ci: float = 0.95,
    seed: int = 0,
    names: Sequence[str] | None = None,
    method: str = "auto",
    device: str | None = None,
    max_memory: int = DEFAULT_MEMORY,
    keep_samples: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> tuple[SimilarityResult, BootstrapResult]:
    """All-pairs similarity with bootstrap confidence intervals over stimuli.

    One set of resampled stimulus indices is shared by every pair, so each replicate is a
    consistent M x M matrix.

    Parameters
    ----------
    reps, metric, names, method, device, max_memory, **params
        As in :func:`similarity_matrix`.
    n_boot : int
        Number of replicates.
    ci : float
        Coverage of the percentile interval.
    seed : int
        Seed of the resampling, an integer >= 0.
    keep_samples : bool
        Keep every replicate in the result.

    Returns
    -------
    (SimilarityResult, BootstrapResult)
        The estimate on all stimuli, and its bootstrap interval.
    """
    n_boot = _check_n_boot(n_boot)
    seed = check_seed(seed, "bootstrap seed")
    if not 0 < ci < 1:
        raise ActstoreError(f"the confidence level must be between 0 and 1, got {ci}")
    reps = check_reps(reps, names)
    shapes, labels = shapes_of(reps, names)
    point = similarity_matrix(
        reps, metric, names=labels, method=method, device=device, max_memory=max_memory,
        **params,
    )
    idx = bootstrap_indices(shapes[0][0], n_boot, seed)
    samples = bootstrap_replicates(
        reps, metric, idx, names=labels, method=method, device=device, max_memory=max_memory,
        progress=progress, **params,
    )
    return point, summarize_bootstrap(samples, ci, seed, keep_samples)
