"""Streamed first and second moments of two representations, in float64.

Unit correlations (within and between networks) and the shared Gram of the sparse-prediction
path all derive from ``n``, ``sum x``, ``sum y``, ``sum x x^T``, ``sum x y^T`` and
``sum y y^T``. They are accumulated block by block over stimuli (and spatial positions), so a
layer is never held whole. Sums are taken around a fixed shift (the first block's mean) to
avoid the cancellation of ``E[x^2] - E[x]^2`` for units with a large offset; accumulators with
the same shift add up, so blocks can be summed in separate processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PairMoments", "moments_of"]


@dataclass
class PairMoments:
    """Sufficient statistics of two representations observed on the same samples.

    Attributes
    ----------
    n : int
        Samples seen.
    shift_x, shift_y : ndarray of shape (dx,), (dy,)
        The fixed offsets the sums are taken around.
    sx, sy : ndarray of shape (dx,), (dy,)
        Sums of ``x - shift_x`` and ``y - shift_y``.
    sxx, sxy, syy : ndarray of shape (dx, dx), (dx, dy), (dy, dy)
        Sums of outer products of the shifted values.
    """

    n: int
    shift_x: np.ndarray
    shift_y: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    sxx: np.ndarray
    sxy: np.ndarray
    syy: np.ndarray

    def __repr__(self) -> str:
        return f"PairMoments(n={self.n}, dx={len(self.sx)}, dy={len(self.sy)})"

    @classmethod
    def empty(cls, shift_x: np.ndarray, shift_y: np.ndarray) -> PairMoments:
        """Zero statistics around the given shifts."""
        sx = np.asarray(shift_x, dtype=np.float64)
        sy = np.asarray(shift_y, dtype=np.float64)
        dx, dy = len(sx), len(sy)
        return cls(0, sx, sy, np.zeros(dx), np.zeros(dy), np.zeros((dx, dx)),
                   np.zeros((dx, dy)), np.zeros((dy, dy)))

    def update(self, x: Any, y: Any) -> None:
        """Add a block of samples.

        Parameters
        ----------
        x : array of shape (b, dx)
        y : array of shape (b, dy)
        """
        xs = np.asarray(x, dtype=np.float64) - self.shift_x  # (b, dx)
        ys = np.asarray(y, dtype=np.float64) - self.shift_y  # (b, dy)
        self.n += xs.shape[0]
        self.sx += xs.sum(axis=0)
        self.sy += ys.sum(axis=0)
        self.sxx += xs.T @ xs
        self.sxy += xs.T @ ys
        self.syy += ys.T @ ys

    def __add__(self, other: PairMoments) -> PairMoments:
        if not (np.array_equal(self.shift_x, other.shift_x)
                and np.array_equal(self.shift_y, other.shift_y)):
            raise ValueError("moments taken around different shifts cannot be added")
        return PairMoments(
            self.n + other.n, self.shift_x, self.shift_y, self.sx + other.sx,
            self.sy + other.sy, self.sxx + other.sxx, self.sxy + other.sxy,
            self.syy + other.syy,
        )

    @property
    def mean_x(self) -> np.ndarray:
        """Unit means of x, shape (dx,)."""
        return self.shift_x + self.sx / self.n

    @property
    def mean_y(self) -> np.ndarray:
        """Unit means of y, shape (dy,)."""
        return self.shift_y + self.sy / self.n

    def cov(self, around_x: np.ndarray | None = None,
            around_y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Second moments about given centres (default: the means), divided by n.

        Returns
        -------
        cxx, cxy, cyy : ndarrays of shape (dx, dx), (dx, dy), (dy, dy)
            ``E[(x - a)(x - a)^T]``, ``E[(x - a)(y - b)^T]``, ``E[(y - b)(y - b)^T]``.
        """
        a = (self.mean_x if around_x is None else around_x) - self.shift_x
        b = (self.mean_y if around_y is None else around_y) - self.shift_y
        n = self.n
        mx, my = self.sx / n, self.sy / n
        cxx = self.sxx / n - np.outer(mx, a) - np.outer(a, mx) + np.outer(a, a)
        cxy = self.sxy / n - np.outer(mx, b) - np.outer(a, my) + np.outer(a, b)
        cyy = self.syy / n - np.outer(my, b) - np.outer(b, my) + np.outer(b, b)
        return cxx, cxy, cyy


def moments_of(x: Any, y: Any, block: int = 4096) -> PairMoments:
    """:class:`PairMoments` of two in-memory arrays (n, dx) and (n, dy), in blocks of rows."""
    x, y = np.asarray(x), np.asarray(y)
    m = PairMoments.empty(x[:block].mean(axis=0), y[:block].mean(axis=0))
    for s in range(0, len(x), block):
        m.update(x[s : s + block], y[s : s + block])
    return m
