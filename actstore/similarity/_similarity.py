"""All-pairs similarity of representations: :func:`similarity_matrix` and :func:`similarity`.

Every metric (:data:`~actstore.similarity.SIMILARITY_METRICS`) turns a representation into
a signature once (:mod:`._signatures`); the M x M similarity matrix is then a Gram matrix of
signatures, computed block by block (:mod:`._plan` chooses the blocks and the path,
:mod:`._accumulate` adds up the products, :mod:`._result` normalises them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actstore.similarity._accumulate import accumulate
from actstore.similarity._inputs import check_idx, check_libraries, check_reps, shapes_of
from actstore.similarity._metrics import check_params
from actstore.similarity._plan import DEFAULT_MEMORY, plan_similarity
from actstore.similarity._result import SimilarityResult, finalize

__all__ = ["similarity", "similarity_matrix"]


def similarity_matrix(
    reps: Sequence[Any],
    metric: str = "cka",
    *,
    names: Sequence[str] | None = None,
    method: str = "auto",
    device: str | None = None,
    max_memory: int = DEFAULT_MEMORY,
    idx: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> SimilarityResult:
    """All-pairs similarity of M representations of the same stimuli.

    Parameters
    ----------
    reps : sequence of arrays or :class:`LazyRep`
        Each of shape (n_stimuli, n_units...) (trailing dimensions are flattened), any dtype,
        numpy / torch / cupy. Rows must be the same stimuli in the same order.
    metric : str
        A key of :data:`SIMILARITIES`: ``cka``, ``rbf_cka``, ``rsa``, ``procrustes``.
    names : sequence of str, optional
        Labels used in error messages and in the result.
    method : {"auto", "gram", "feature"}
        Computation path (see the module docstring).
    device : {"numpy", "torch", "cuda", "cupy"}, optional
        Move the data to this backend first; by default the data's own backend is used, and
        all representations must then come from one library (Dask arrays count as numpy).
    max_memory : int
        Working-memory budget in bytes; bounds stimulus and representation blocks.
    idx : ndarray of shape (n_stimuli,), int, optional
        Resample the stimuli (one bootstrap replicate): row ``k`` becomes stimulus ``idx[k]``,
        each in ``[0, n_stimuli)``.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block.
    **params
        Metric parameters, e.g. ``debiased=True`` (``cka``, ``rbf_cka``), ``t=0.5``
        (``rbf_cka``), ``rdm="euclidean", compare="spearman"`` (``rsa``).

    Returns
    -------
    SimilarityResult
        ``values`` is an (M, M) float64 ndarray.

    Raises
    ------
    ActstoreError
        Unknown metric or parameter, a parameter value of the wrong type (see
        :func:`check_params`; ``debiased="no"`` is read as False), representations with
        different numbers of stimuli, too few stimuli for the metric, non-finite activations;
        ``reps`` that is no list of arrays, or ``names`` of another length; representations
        that mix array libraries (numpy and torch, say) without ``device=``; ``idx`` that is
        not 1-D, not of length n_stimuli, not integers or outside ``[0, n_stimuli)``.
    """
    reps = check_reps(reps, names)
    shapes, labels = shapes_of(reps, names)
    check_libraries(reps, labels, device)
    idx = check_idx(idx, shapes[0][0])
    params = check_params(metric, params)
    plan = plan_similarity(shapes, metric, method=method, max_memory=max_memory, **params)
    acc = accumulate(
        reps, metric, params, plan, names=labels, device=device, idx=idx, progress=progress
    )
    return finalize(acc, metric, params, plan.method, labels)


def similarity(X: Any, Y: Any, metric: str = "cka", **params: Any) -> float:
    """Similarity of two representations of the same stimuli (see :func:`similarity_matrix`).

    Parameters
    ----------
    X, Y : arrays of shape (n_stimuli, n_units_x) and (n_stimuli, n_units_y)
        Activations, rows the same stimuli.
    metric : str
        A key of :data:`SIMILARITIES`.
    **params
        Metric parameters and engine options of :func:`similarity_matrix`.

    Returns
    -------
    float
    """
    res = similarity_matrix([X, Y], metric, names=params.pop("names", ["X", "Y"]), **params)
    return float(res.values[0, 1])
