"""Settings of the variance and complexity analyses (recorded with their results)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from actstore._args import check_seed
from actstore._errors import ActstoreError
from actstore.core._options import OptionTable, fields_from_options
from actstore.decode._ridge import DEFAULT_ALPHAS

__all__ = ["ComplexityConfig", "VarianceConfig"]

#: Study-file options that select what is analysed (arguments of the drivers, not settings).
SELECTION = ("runs", "layers", "checkpoints", "features")

DENOMINATORS = ("final", "own")


def _check_folds(n_splits: Any) -> None:
    if isinstance(n_splits, bool) or n_splits < 2:
        raise ActstoreError(f"cross-validation needs at least 2 folds, got {n_splits}")


@dataclass(frozen=True)
class VarianceConfig:
    """Settings of a variance computation (:func:`~actstore.probes.run_variance`).

    Attributes
    ----------
    n_splits, seed, split
        Folds: stratified ``n_splits``-fold, seeded, or the explicit split in label ``split``.
    denominator : {"final", "own"}
        ``r2_final`` divides each checkpoint's explained sum of squares by the total sum of
        squares of the run's last complete checkpoint (``final``) or by its own (``own``).
    """

    n_splits: int = 5
    seed: int = 0
    split: str | None = None
    denominator: str = "final"
    #: study-file option -> (field, conversion)
    OPTIONS: ClassVar[OptionTable] = {
        "folds": ("n_splits", int), "seed": ("seed", int), "split": ("split", None),
        "denominator": ("denominator", None),
    }

    def __post_init__(self) -> None:
        if self.denominator not in DENOMINATORS:
            raise ActstoreError(f"denominator must be 'final' or 'own', got {self.denominator!r}")
        check_seed(self.seed)
        _check_folds(self.n_splits)

    def to_json(self) -> dict[str, Any]:
        """The settings as recorded in the result (with the selection, by the driver)."""
        return {"n_splits": self.n_splits, "seed": self.seed, "split": self.split,
                "denominator": self.denominator}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> VarianceConfig:
        """The config of a study file's ``variance`` analysis (``folds``, ``seed``,
        ``split``, ``denominator``; the selection keys ``runs``, ``layers``, ``checkpoints``,
        ``features`` are the driver's arguments and are skipped)."""
        return cls(**fields_from_options(options, cls.OPTIONS, "variance", SELECTION))


def _layer_patterns(layers: Any) -> tuple[str, ...] | None:
    """Probed layers as given (a str or a list, comma-separated names or patterns)."""
    if layers is None:
        return None
    items = [layers] if isinstance(layers, str) else list(layers)
    return tuple(p.strip() for x in items for p in str(x).split(",") if p.strip())


@dataclass(frozen=True)
class ComplexityConfig:
    """Settings of a complexity computation (:func:`~actstore.probes.run_complexity`).

    Attributes
    ----------
    k : int
        Dictionary features per run (may exceed the layer's width).
    layer : str, optional
        The factorised layer (default: the layer before ``head_layer``, i.e. the input of the
        read-out; else the last layer).
    step : int, optional
        Checkpoint of the dictionary (default: the last complete one).
    layers : tuple of str, optional
        Layers (names or glob patterns) probed for complexity (default: every layer up to
        ``layer``, forward order); a str or list is read as comma-separated patterns.
    head_layer : str, optional
        The recorded logits layer; every run must record it. Default: ``out`` where a run
        records it (the model zoo's name).
    n_splits, seed, split
        Folds, as in :func:`actstore.probes.run_probes`; ``seed`` seeds the NMF too.
    alphas : tuple of float
        Ridge penalties.
    over_checkpoints : bool
        Also decode the features from ``layer`` at every complete checkpoint.
    flow_layers : tuple of str, optional
        Layers (names or glob patterns) whose V-information of the features is computed at
        the dictionary's checkpoint (``vinfo_flow``) but that are not probed for complexity,
        such as the residual branches of a ResNet's blocks next to the blocks' outputs
        (``block*_bn_b``); patterns that match no layer of a run are skipped.
    layers_over_checkpoints : bool
        Decode the features from every probed layer at every complete checkpoint
        (``vinfo_layer_checkpoint``: where in the network each feature is accessible, over
        training); layers x checkpoints decoders per run instead of layers + checkpoints.
    threshold : float
        V-information that counts as decodable (``decodable_step``).
    importance : bool
        Gradient x activation of the class logit of every head whose logits are an exact
        linear function of ``layer`` (to ``head_tol``; recovered from the recorded logits).
        The class is each input's label when the probe set labels the head's feature, else
        the network's predicted class (``importance_class``).
    negative : {"clip", "error"}
        Negative activations (leaky ReLU, logits) are clipped to zero (the clipped fraction
        is reported), or refused.
    mode, batch_rows, max_epochs, tol
        NMF solver settings (:func:`actstore.probes.nmf`).
    standardize : bool
        The V-information decoders see units z-scored with each training fold's statistics
        (default), so that untrained layers of tiny scale are not read as empty.
    backend : str, optional
        ``"torch"``, ``"cuda"`` or ``"cupy"`` for the arithmetic (not recorded: it does not
        change the numbers).
    """

    k: int = 32
    layer: str | None = None
    step: int | None = None
    layers: tuple[str, ...] | None = None
    head_layer: str | None = None
    n_splits: int = 5
    seed: int = 0
    split: str | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    over_checkpoints: bool = True
    layers_over_checkpoints: bool = False
    flow_layers: tuple[str, ...] | None = None
    threshold: float = 0.5
    importance: bool = True
    head_tol: float = 1e-3
    negative: str = "clip"
    mode: str = "minibatch"
    batch_rows: int = 2048
    max_epochs: int = 200
    tol: float = 1e-5
    standardize: bool = True
    backend: str | None = None
    #: study-file option -> (field, conversion)
    OPTIONS: ClassVar[OptionTable] = {
        "k": ("k", None), "layer": ("layer", None), "step": ("step", None),
        "layers": ("layers", None), "folds": ("n_splits", int), "seed": ("seed", None),
        "split": ("split", None), "threshold": ("threshold", None),
        "checkpoints": ("over_checkpoints", bool), "importance": ("importance", None),
        "layer_checkpoints": ("layers_over_checkpoints", bool),
        "flow_layers": ("flow_layers", None),
        "negative": ("negative", None), "max_epochs": ("max_epochs", None),
    }

    def __post_init__(self) -> None:
        k = self.k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ActstoreError(f"the number of features k must be a positive integer, got {k!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ActstoreError(f"threshold must lie in [0, 1], got {self.threshold}")
        check_seed(self.seed)
        _check_folds(self.n_splits)
        for what, v in (("max_epochs", self.max_epochs), ("batch_rows", self.batch_rows)):
            if isinstance(v, bool) or v < 1:
                raise ActstoreError(f"{what} must be 1 or more, got {v}")
        object.__setattr__(self, "k", int(k))
        object.__setattr__(self, "layers", _layer_patterns(self.layers))
        object.__setattr__(self, "flow_layers", _layer_patterns(self.flow_layers))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        object.__setattr__(self, "standardize", bool(self.standardize))

    def to_json(self) -> dict[str, Any]:
        """The settings as recorded in the results (with the run selection, by the driver);
        ``layers_over_checkpoints`` and ``flow_layers`` only when set (results written
        without them keep their settings)."""
        extra: dict[str, Any] = {"layers_over_checkpoints": True} \
            if self.layers_over_checkpoints else {}
        if self.flow_layers:
            extra["flow_layers"] = list(self.flow_layers)
        return {**extra,
            "k": self.k, "layer": self.layer, "step": self.step,
            "layers": None if self.layers is None else list(self.layers),
            "head_layer": self.head_layer, "n_splits": self.n_splits, "seed": self.seed,
            "split": self.split, "alphas": self.alphas,
            "over_checkpoints": self.over_checkpoints, "importance": self.importance,
            "head_tol": self.head_tol, "negative": self.negative, "mode": self.mode,
            "batch_rows": self.batch_rows, "max_epochs": self.max_epochs, "tol": self.tol,
            "standardize": self.standardize, "threshold": float(self.threshold),
        }

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ComplexityConfig:
        """The config of a study file's ``complexity`` analysis (``k``, ``layer``, ``step``,
        ``layers``, ``folds``, ``seed``, ``split``, ``threshold``, ``checkpoints``,
        ``layer_checkpoints``, ``flow_layers``, ``importance``, ``negative``, ``max_epochs``;
        ``runs`` is the driver's argument)."""
        return cls(**fields_from_options(options, cls.OPTIONS, "complexity", ("runs",)))
