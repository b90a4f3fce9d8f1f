"""The settings of an alignment analysis: one frozen :class:`AlignConfig`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from actstore._args import check_seed
from actstore._errors import ActstoreError
from actstore.alignment._lasso import LASSO_ALPHAS, check_alphas
from actstore.core._options import OptionTable, fields_from_options

__all__ = ["AlignConfig"]

#: How spatial positions of unpooled conv maps are used (see :class:`AlignConfig`).
POSITIONS = ("auto", "yes", "no")


@dataclass(frozen=True)
class AlignConfig:
    """How the units of several runs are aligned, layer by layer.

    Parameters
    ----------
    mutual_info : bool
        Compute binned mutual information (and matching on it).
    lasso : bool
        Compute the sparse-prediction path.
    alphas : sequence of float
        LASSO penalties (default :data:`~actstore.alignment._lasso.LASSO_ALPHAS`).
    n_clusters : int, optional
        Spectral clusters of the joint correlation matrix (default total units / 8).
    positions : {"auto", "yes", "no"}
        Treat the spatial positions of unpooled conv maps as samples (``auto``: when the store
        holds the whole map of a layer).
    test_fraction : float
        Held-out share of stimuli of the LASSO path.
    seed : int
        Seed of the held-out split and of k-means.

    Raises
    ------
    ActstoreError
        A value outside the ranges above.
    """

    mutual_info: bool = True
    lasso: bool = True
    alphas: Sequence[float] = LASSO_ALPHAS
    n_clusters: int | None = None
    positions: str = "auto"
    test_fraction: float = 0.2
    seed: int = 0
    #: study-file option -> (field, conversion)
    OPTIONS: ClassVar[OptionTable] = {
        "mutual_info": ("mutual_info", bool), "lasso": ("lasso", bool),
        "alphas": ("alphas", tuple), "n_clusters": ("n_clusters", None),
        "positions": ("positions", None), "test_fraction": ("test_fraction", float),
        "seed": ("seed", int),
    }
    #: study-file options that select the runs, layers and stimuli (arguments of the driver)
    SELECTION: ClassVar[tuple[str, ...]] = ("runs", "layers", "checkpoint", "stimuli")

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ActstoreError(f"positions must be auto, yes or no, not {self.positions!r}")
        check_seed(self.seed)
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ActstoreError(
                f"the number of clusters must be 1 or more, got {self.n_clusters}"
            )
        if self.lasso:
            check_alphas(self.alphas)
        object.__setattr__(self, "alphas", tuple(self.alphas))
        if not 0 < self.test_fraction < 1:
            raise ActstoreError(
                "the held-out share of stimuli must lie between 0 and 1, got "
                f"{self.test_fraction}"
            )

    def to_json(self) -> dict[str, Any]:
        """The settings recorded with each layer's result."""
        return {
            "mutual_info": bool(self.mutual_info), "lasso": bool(self.lasso),
            "alphas": [float(a) for a in self.alphas] if self.lasso else None,
            "n_clusters": self.n_clusters, "positions": self.positions,
            "test_fraction": float(self.test_fraction), "seed": int(self.seed),
        }

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AlignConfig:
        """The config of a study file's ``align`` analysis (``mutual_info``, ``lasso``,
        ``alphas``, ``n_clusters``, ``positions``, ``test_fraction``, ``seed``; the selection
        keys ``runs``, ``layers``, ``checkpoint``, ``stimuli`` are the driver's arguments and
        are skipped).

        Raises
        ------
        ActstoreError
            An option the analysis does not have (the message lists the valid ones).
        """
        return cls(**fields_from_options(options, cls.OPTIONS, "align", cls.SELECTION))
