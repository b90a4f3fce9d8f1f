"""The all-pairs similarity matrix: partial sums added up and normalised into a result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstore.core._reprs import short_list

__all__ = ["SimilarityResult", "finalize", "merge_partials"]


@dataclass
class SimilarityResult:
    """An M x M similarity matrix and how it was computed.

    Attributes
    ----------
    values : ndarray of shape (M, M), float64
        Symmetric; 1 on the diagonal except for degenerate representations, whose row and
        column are 0.
    degenerate : ndarray of shape (M,), bool
        Representations without variation (constant units, a zero-variance RDM, a
        non-positive unbiased HSIC with themselves).
    metric : str
        Registry name.
    params : dict
        Metric parameters.
    method : {"gram", "feature"}
        Path the engine took.
    names : list of str
        One per representation.
    """

    values: np.ndarray
    degenerate: np.ndarray
    metric: str
    params: dict[str, Any]
    method: str
    names: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params.items())
        text = (f"SimilarityResult(metric={self.metric!r}, M={len(self.values)}, "
                f"method={self.method!r}, degenerate={int(self.degenerate.sum())}{params}")
        if len(text) > 140:
            text = text[:137] + "..."
        names = f", names={short_list(self.names, 2)}" if self.names else ""
        return f"{text}{names})"


def merge_partials(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add partial sums from :func:`accumulate` (``V`` and ``s`` add up, flags combine)."""
    out = dict(parts[0])
    out["V"] = sum(p["V"] for p in parts)
    out["s"] = sum(p["s"] for p in parts)
    out["deg"] = np.logical_or.reduce([p["deg"] for p in parts])
    out["scale"] = np.maximum.reduce([p["scale"] for p in parts])
    return out


#: Self products below this fraction of a signature's ``scale`` are round-off.
_REL_SELF = 1e-10


def finalize(
    acc: dict[str, Any], metric: str, params: dict[str, Any], method: str, names: Sequence[str]
) -> SimilarityResult:
    """Normalise summed inner products into similarities (cosine, or Pearson when centred)."""
    V = np.triu(acc["V"])
    V = V + np.triu(V, 1).T
    if acc["centred"]:
        raw = np.diag(V).copy()
        V = V - np.outer(acc["s"], acc["s"]) / acc["n_entries"]
        tol = 1e-12 * raw
    else:
        tol = np.zeros(len(V))
    # a signature whose self product is round-off of its raw scale (e.g. a U-centred Gram
    # that vanishes) has nothing to compare
    tol = np.maximum(tol, _REL_SELF * acc["scale"])
    d = np.diag(V).copy()
    deg = acc["deg"] | (d <= tol)
    scale = np.sqrt(np.where(deg, 1.0, d))
    S = V / np.outer(scale, scale)
    S[deg, :] = 0.0
    S[:, deg] = 0.0
    S = np.clip(S, -1.0, 1.0)
    np.fill_diagonal(S, np.where(deg, 0.0, 1.0))
    return SimilarityResult(
        values=S, degenerate=deg, metric=metric, params=dict(params), method=method,
        names=list(names),
    )
