"""The registry of decoders: the one place that says which decoders exist.

Each :class:`Decoder` is a solver function and the penalty it is swept over. A solver takes the
streamed source (cached), the targets, the folds, its penalties, the statistics shared by every
decoder of a job and the :class:`~actstore.decode.ProbeConfig`, and returns held-out scores by
name, each of shape (n_splits, n_penalties, n_targets).

Adding a decoder is one solver function and one entry in :data:`DECODERS`; the configuration,
the driver, the result arrays, the summaries and ``--decoders`` read the entry. A decoder with a
penalty grid of its own also adds that grid as a field of
:class:`~actstore.decode.ProbeConfig` (its settings are stored with every result).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore.core._backend import get_namespace
from actstore.core._blocks import CachedSource
from actstore.core._folds import Folds
from actstore.core._gram import GramStats
from actstore.core._stats import GroupStats
from actstore.core._targets import Targets
from actstore.decode._logistic import DEFAULT_CS, logistic_cv
from actstore.decode._ridge import DEFAULT_ALPHAS, ridge_cv

if TYPE_CHECKING:
    from actstore.decode._config import ProbeConfig

__all__ = ["DECODERS", "Decoder", "default_decoder", "scoring_decoder"]

#: ``solve(source, targets, folds, penalties, stats, config) -> {score name: array}``.
Solver = Callable[..., dict[str, np.ndarray]]


@dataclass(frozen=True)
class Decoder:
    """One decoder of :data:`DECODERS`.

    Attributes
    ----------
    name : str
        Its name in ``--decoders`` and in the ``decoder`` coordinate of results.
    solve : callable
        The solver (see the module docstring).
    penalty : str
        Name of its penalty: the coordinate of the ``<name>_score`` paths (``"alpha"``).
    grid : str
        The :class:`~actstore.decode.ProbeConfig` field holding its penalties (``"alphas"``).
    default_grid : tuple of float
        That field's default.
    option : str
        The command-line option of the grid (``"--alphas"``).
    larger_is_stronger : bool
        Whether a larger penalty regularises more (ridge's ``alpha``) or less (``C``).
    kinds : tuple of str
        The feature kinds it decodes (``"categorical"``, ``"continuous"``).
    settings : tuple of str
        The :class:`~actstore.decode.ProbeConfig` fields its solver reads besides the grid.
    diagnostics : tuple of str
        Per-feature solver diagnostics of categorical features (mean over folds and
        penalties) stored in results as ``<name>_<diagnostic>``.
    fold_moments : bool
        Its solver reads per-fold moments of units and targets (the primal ridge form):
        the job's statistics keep them per fold instead of pooled.
    headline : bool
        Summaries show this decoder when a result has it (the papers' decoder).
    """

    name: str
    solve: Solver
    penalty: str
    grid: str
    default_grid: tuple[float, ...]
    option: str
    larger_is_stronger: bool
    kinds: tuple[str, ...]
    settings: tuple[str, ...] = ()
    diagnostics: tuple[str, ...] = ()
    fold_moments: bool = False
    headline: bool = False

    def strong_first(self, penalties: Sequence[float] | np.ndarray) -> np.ndarray:
        """Indices of ``penalties`` from the strongest regularisation to the weakest."""
        pen = np.asarray(penalties)
        return np.argsort(-pen) if self.larger_is_stronger else np.argsort(pen)


def materialize(source: CachedSource) -> Any:
    """The whole activation matrix (from the cache when it fits, else read once more)."""
    blocks = [blk for _, _, blk in source.blocks()]
    xp = get_namespace(blocks[0])
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=0)


def _ridge(source: CachedSource, targets: Targets, folds: Folds, penalties: Sequence[float],
           stats: GroupStats | GramStats, config: ProbeConfig) -> dict[str, np.ndarray]:
    """Ridge decoders (scikit-learn ``Ridge``/``RidgeClassifier``) for every ``alpha``."""
    return ridge_cv(source, targets, folds, penalties, stats=stats,
                    standardize=config.standardize, dtype=config.ridge_dtype)


def _logistic(source: CachedSource, targets: Targets, folds: Folds, penalties: Sequence[float],
              stats: GroupStats | GramStats, config: ProbeConfig) -> dict[str, np.ndarray]:
    """Multinomial logistic decoders (scikit-learn ``LogisticRegression``) for every ``C``."""
    X = materialize(source)
    return logistic_cv(
        X, targets, folds, penalties, stats=stats, tol=config.tol, max_iter=config.max_iter,
        dtype=config.logistic_dtype, standardize=config.standardize,
    )


#: name -> decoder; the configuration, the driver and ``--decoders`` look names up here.
DECODERS: dict[str, Decoder] = {d.name: d for d in (
    Decoder("ridge", _ridge, penalty="alpha", grid="alphas", default_grid=DEFAULT_ALPHAS,
            option="--alphas", larger_is_stronger=True, kinds=("categorical", "continuous"),
            settings=("standardize", "ridge_dtype"), fold_moments=True),
    Decoder("logistic", _logistic, penalty="C", grid="Cs", default_grid=DEFAULT_CS,
            option="--cs", larger_is_stronger=False, kinds=("categorical",),
            settings=("tol", "max_iter", "logistic_dtype", "standardize"),
            diagnostics=("converged",), headline=True),
)}


def default_decoder(names: Sequence[str]) -> str:
    """The decoder a summary shows among ``names``: the first headline decoder, else the
    first."""
    return next((n for n in names if n in DECODERS and DECODERS[n].headline), names[0])


def scoring_decoder(names: Sequence[str], decoder: str, kind: str) -> str:
    """The decoder whose scores a summary shows for a feature of ``kind``: ``decoder`` if it
    decodes that kind, else the first of ``names`` that does (ridge R^2 for a continuous
    feature in a table of logistic decoders)."""
    def decodes(name: str) -> bool:
        return name in DECODERS and kind in DECODERS[name].kinds

    return decoder if decodes(decoder) else next(filter(decodes, names), decoder)
