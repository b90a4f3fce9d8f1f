"""Unit correlations within and between networks, from streamed moments.

A unit with zero variance (a dead ReLU) has no correlation: its correlations are 0 and it is
listed in ``constant``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actstore.alignment._lasso import is_constant
from actstore.core._moments import PairMoments

__all__ = ["UnitCorrelations", "correlations_from_moments"]


@dataclass
class UnitCorrelations:
    """Correlations of the units of two networks over the same samples.

    Attributes
    ----------
    within_a, within_b : ndarray of shape (da, da), (db, db)
    between : ndarray of shape (da, db)
        ``c_ij = E[(x_i - mu_i)(y_j - mu_j)] / (sigma_i sigma_j)``.
    mean_a, std_a, mean_b, std_b : ndarrays of shape (da,), (db,)
    constant_a, constant_b : ndarrays of bool
        Zero-variance units (their correlations are set to 0, including the diagonal).
    n : int
        Samples (stimuli x positions).
    """

    within_a: np.ndarray
    within_b: np.ndarray
    between: np.ndarray
    mean_a: np.ndarray
    std_a: np.ndarray
    mean_b: np.ndarray
    std_b: np.ndarray
    constant_a: np.ndarray
    constant_b: np.ndarray
    n: int

    def __repr__(self) -> str:
        da, db = self.between.shape
        return (f"UnitCorrelations(da={da}, db={db}, n={self.n}, "
                f"constant_a={int(np.sum(self.constant_a))}, "
                f"constant_b={int(np.sum(self.constant_b))})")


def correlations_from_moments(m: PairMoments) -> UnitCorrelations:
    """Within- and between-network correlation matrices from :class:`PairMoments`.

    Parameters
    ----------
    m : PairMoments
        Moments of net A (dx units) and net B (dy units) over the same samples.

    Returns
    -------
    UnitCorrelations
        float64, clipped to [-1, 1]; zero-variance units have zero correlations.
    """
    cxx, cxy, cyy = m.cov()
    sa = np.sqrt(np.clip(np.diag(cxx), 0, None))
    sb = np.sqrt(np.clip(np.diag(cyy), 0, None))
    ca, cb = is_constant(sa, m.mean_x), is_constant(sb, m.mean_y)
    ia = np.where(ca, 0.0, 1.0 / np.where(ca, 1.0, sa))
    ib = np.where(cb, 0.0, 1.0 / np.where(cb, 1.0, sb))
    clip = lambda c: np.clip(c, -1.0, 1.0)  # noqa: E731
    return UnitCorrelations(
        within_a=clip(cxx * np.outer(ia, ia)), within_b=clip(cyy * np.outer(ib, ib)),
        between=clip(cxy * np.outer(ia, ib)), mean_a=m.mean_x, std_a=sa, mean_b=m.mean_y,
        std_b=sb, constant_a=ca, constant_b=cb, n=m.n,
    )
