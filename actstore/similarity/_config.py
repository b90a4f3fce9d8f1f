"""The settings of a similarity analysis: one frozen :class:`SimilarityConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actstore._args import check_seed
from actstore._errors import ActstoreError
from actstore.core._options import OptionTable, fields_from_options
from actstore.similarity._metrics import check_params, get_metric
from actstore.similarity._plan import DEFAULT_MEMORY

__all__ = ["SimilarityConfig", "check_bootstrap"]


def check_bootstrap(bootstrap: int, ci: float) -> None:
    """Refuse a bootstrap of one replicate or a confidence level outside (0, 1)."""
    if bootstrap < 0 or (bootstrap and (bootstrap < 2 or not 0 < ci < 1)):
        raise ActstoreError(
            f"a bootstrap needs >= 2 replicates and a level in (0, 1); got {bootstrap}, {ci}"
        )


@dataclass(frozen=True)
class SimilarityConfig:
    """How an all-pairs similarity is computed.

    Parameters
    ----------
    metric : str
        Key of :data:`~actstore.similarity.SIMILARITIES`.
    params : mapping, optional
        Metric parameters (``debiased``, ``t``, ``rdm``, ``compare``), checked and converted
        by :func:`~actstore.similarity._metrics.check_params` (``debiased="no"`` is False; a
        value of the wrong type is refused).
    bootstrap : int
        Replicates of the stimulus bootstrap (0: none).
    ci : float
        Confidence level of the bootstrap interval.
    seed : int
        Seed of the bootstrap.
    method : {"auto", "gram", "feature"}
        Computation path (see :func:`~actstore.similarity.similarity_matrix`).
    device : {"numpy", "torch", "cuda", "cupy"}, optional
        Array backend of the computation (default: that of the data read).
    max_memory : int
        Working-memory budget of one job, in bytes.

    Raises
    ------
    ActstoreError
        An unknown metric or parameter, a parameter value of the wrong type, a bootstrap of
        one replicate, a level outside (0, 1) or a negative seed.
    """

    metric: str = "cka"
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    bootstrap: int = 0
    ci: float = 0.95
    seed: int = 0
    method: str = "auto"
    device: str | None = None
    max_memory: int = DEFAULT_MEMORY
    #: study-file option -> (field, conversion)
    OPTIONS: ClassVar[OptionTable] = {
        "metric": ("metric", None), "params": ("params", lambda p: p or {}),
        "bootstrap": ("bootstrap", int), "ci": ("ci", float), "seed": ("seed", int),
    }
    #: study-file options that select the representations (arguments of the driver)
    SELECTION: ClassVar[tuple[str, ...]] = ("runs", "layers", "checkpoints", "where", "stimuli")

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", check_params(self.metric, self.params))
        check_bootstrap(self.bootstrap, self.ci)
        check_seed(self.seed, "bootstrap seed")

    def to_json(self) -> dict[str, Any]:
        """The settings recorded with a result: every metric parameter (defaults included),
        the bootstrap, and its level and seed when there is one."""
        full = get_metric(self.metric).defaults()
        out: dict[str, Any] = {"metric": self.metric, "params": {**full, **self.params},
                               "bootstrap": int(self.bootstrap)}
        if self.bootstrap:
            out.update(ci=float(self.ci), seed=int(self.seed))
        return out

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SimilarityConfig:
        """The config of a study file's ``similarity`` analysis (``metric``, ``params``,
        ``bootstrap``, ``ci``, ``seed``; the selection keys ``runs``, ``layers``,
        ``checkpoints``, ``where``, ``stimuli`` are the driver's argument and are skipped).

        Raises
        ------
        ActstoreError
            An option the analysis does not have (the message lists the valid ones).
        """
        return cls(**fields_from_options(options, cls.OPTIONS, "similarity", cls.SELECTION))
