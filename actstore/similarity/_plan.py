"""How an all-pairs similarity computation is cut into blocks: the Gram or the feature path.

*Gram path* — stimuli are cut into blocks ``r0:r1``; each representation contributes the strip
``S[r0:r1, r0:]`` of its n x n signature. Memory is bounded by ``max_memory``: stimulus blocks
shrink as M grows, and representations are taken in blocks of pairs when they do not fit at
once. Cost: ``sum_i n^2 d_i / 2`` to form strips plus ``M^2 n^2 / 4`` for the products.

*Feature path* — when a metric has a feature-space form ``F`` (linear CKA, Procrustes), the
cross products ``F_i^T F_j`` are formed for blocks of representations. Cost
``n (sum_i d_i)^2 / 2``: cheaper when n is large and the widths small. ``method="auto"`` picks
the cheaper path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actstore._errors import ActstoreError
from actstore.similarity._metrics import check_params, get_metric, metric_forms

__all__ = ["DEFAULT_MEMORY", "Plan", "plan_similarity"]

#: Default working-memory budget of one similarity computation (bytes).
DEFAULT_MEMORY = 2 * 2**30

#: Rows of a stimulus block at its widest (the first block): the strip products of one block
#: are (rows x units) by (units x n) matrix products, which reach the machine's matrix-product
#: rate at about 100 rows. Taller blocks only make the stacked strip buffer larger (more fresh
#: memory to fault in, less of it in cache) without making a product faster; the M x M
#: products over the stacked strips have an inner dimension of ``rows * n`` either way.
STRIP_ROWS = 128


@dataclass
class Plan:
    """How an all-pairs computation is cut into blocks (see :func:`plan_similarity`)."""

    method: str
    n: int
    chunks: list[tuple[int, int]]
    blocks: list[list[int]]
    cost: dict[str, float]

    def block_pairs(self) -> list[tuple[int, int]]:
        """Index pairs ``(a, b)``, ``a <= b``, of :attr:`blocks` that cover the upper triangle."""
        nb = len(self.blocks)
        return [(a, b) for a in range(nb) for b in range(a, nb)]

def _stimulus_chunks(n: int, entries: float) -> list[tuple[int, int]]:
    """Stimulus blocks whose strips ``h x (n - r0)`` hold about ``entries`` values each."""
    chunks, r0 = [], 0
    while r0 < n:
        h = max(1, min(n - r0, int(entries // max(1, n - r0))))
        chunks.append((r0, r0 + h))
        r0 += h
    return chunks


def plan_similarity(
    shapes: Sequence[tuple[int, int]],
    metric: str = "cka",
    *,
    method: str = "auto",
    max_memory: int = DEFAULT_MEMORY,
    **params: Any,
) -> Plan:
    """Choose the path (Gram or feature space), stimulus blocks and representation blocks.

    Parameters
    ----------
    shapes : sequence of (int, int)
        ``(n_stimuli, n_units)`` of each representation (one n for all).
    metric : str
        Registry name.
    method : {"auto", "gram", "feature"}
        Force a path, or take the cheaper one the metric has.
    max_memory : int
        Working-memory budget in bytes.

    Returns
    -------
    Plan
    """
    params = check_params(metric, params)
    has_gram, has_feat = metric_forms(get_metric(metric, params), params)
    n = shapes[0][0]
    widths = [d for _, d in shapes]
    M = len(widths)
    D = float(sum(widths))
    cost = {
        "gram": sum(n * n * d / 2 for d in widths) + M * M * n * n / 4 if has_gram else math.inf,
        "feature": n * D * D / 2 if has_feat else math.inf,
    }
    if method == "auto":
        method = "gram" if cost["gram"] <= cost["feature"] else "feature"
    elif method not in ("gram", "feature"):
        raise ActstoreError(f"unknown method {method!r}; choose auto, gram or feature")
    if cost[method] == math.inf:
        raise ActstoreError(f"metric {metric!r} has no {method}-space form; use method='auto'")
    # A built signature keeps the centred float64 activations (Spearman RSA: its rank strips).
    per_rep = [n * d * 8 + (n * n * 8 if params.get("compare") == "spearman" else 0)
               for d in widths]
    if method == "feature":
        # Concatenated features of two blocks plus their cross products must fit.
        per_rep = [n * d * 8 * 2 for d in widths]
    blocks = _group(per_rep, widths, max_memory, method)
    bmax = max(len(b) for b in blocks)
    # The stacked strip buffers hold STRIP_ROWS rows of every strip of a block of
    # representations, or less when the representations leave less of the budget. Blocks
    # further down are shorter strips, so they get more rows for the same buffer.
    held = sorted((sum(per_rep[i] for i in b) for b in blocks), reverse=True)[:2]
    spare = max(max_memory - sum(held), max_memory // 4)
    entries = min(spare / (8 * bmax * (1 if len(blocks) == 1 else 2)), STRIP_ROWS * n)
    chunks = _stimulus_chunks(n, max(n, entries)) if method == "gram" else [(0, n)]
    return Plan(method=method, n=n, chunks=chunks, blocks=blocks, cost=cost)


def _group(per_rep: list[int], widths: list[int], budget: int, method: str) -> list[list[int]]:
    if sum(per_rep) <= budget / 2:
        if method == "gram" or float(sum(widths)) ** 2 * 8 <= budget / 2:
            return [list(range(len(per_rep)))]
    blocks: list[list[int]] = [[]]
    size = width = 0
    for i, (b, d) in enumerate(zip(per_rep, widths, strict=True)):
        over = size + b > budget / 4
        if method == "feature":
            over = over or (width + d) ** 2 * 8 > budget / 4
        if blocks[-1] and over:
            blocks.append([])
            size = width = 0
        blocks[-1].append(i)
        size += b
        width += d
    return blocks
