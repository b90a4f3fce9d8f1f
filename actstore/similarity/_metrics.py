"""The similarity metrics: one :class:`SimilarityMetric` each in :data:`SIMILARITY_METRICS`.

A metric is a signature function (:mod:`._signatures`, :mod:`._rdm`: it turns one
representation into the form the engine compares), the parameters it takes (with their
defaults and what each accepts) and whether it compares dissimilarity matrices. The engine, the
checks of parameters, the settings stored with a result and the command line all read the
entry, so adding a metric is one signature function and one entry in
:data:`SIMILARITY_METRICS`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstore._args import as_mapping
from actstore._errors import ActstoreError
from actstore.core._backend import get_namespace
from actstore.similarity._inputs import device_index
from actstore.similarity._rdm import RDM_COMPARES, RDM_KINDS, rsa_signature
from actstore.similarity._signatures import (
    Signature,
    cka_signature,
    procrustes_signature,
    rbf_cka_signature,
)

__all__ = [
    "METRIC_PARAMS",
    "SIMILARITIES",
    "SIMILARITY_METRICS",
    "MetricParam",
    "SimilarityMetric",
    "build_signature",
    "check_params",
    "get_metric",
    "metric_forms",
]


@dataclass(frozen=True)
class MetricParam:
    """What a metric parameter accepts, and its default.

    ``kind`` is ``"bool"`` (true/false, also yes/no, on/off, 1/0 as text), ``"positive"``
    (a finite number > 0, as a float) or ``"choice"`` (one of ``choices``, any case).
    ``example`` is a valid value shown in error messages.
    """

    kind: str
    default: Any
    choices: tuple[str, ...] = ()
    example: str = ""

    def describe(self) -> str:
        """What the parameter accepts, in words."""
        if self.kind == "bool":
            return "true or false (also yes/no, on/off, 1/0)"
        if self.kind == "positive":
            return "a positive number"
        return f"one of {', '.join(self.choices)}"


#: Keyword arguments of signature functions that the engine sets itself.
ENGINE_ARGS = ("idx", "chunks")


@dataclass(frozen=True)
class SimilarityMetric:
    """One similarity metric.

    Attributes
    ----------
    name : str
        Registry name (``--metric``).
    signature : callable
        ``signature(X, **params) -> Signature`` for ``X`` of shape (n_stimuli, n_units),
        float64; it may also take the engine's ``idx`` (a stimulus resample) and ``chunks``.
    params : mapping of str to MetricParam
        The keyword parameters of ``signature``, in its order, with their defaults.
    rdm_based : bool
        The metric compares dissimilarity matrices (RSA): a bootstrap replicate leaves out
        the pairs of two copies of one stimulus, whose distance is 0 by construction.
    """

    name: str
    signature: Callable[..., Signature]
    params: Mapping[str, MetricParam] = field(default_factory=dict)
    rdm_based: bool = False

    def defaults(self) -> dict[str, Any]:
        """Every parameter at its default."""
        return {k: p.default for k, p in self.params.items()}

    def takes(self, arg: str) -> bool:
        """Whether the signature function takes the engine argument ``arg`` (``idx``, ...)."""
        return arg in inspect.signature(self.signature).parameters


def _bool_param() -> MetricParam:
    return MetricParam("bool", False, example="true")


#: name -> metric: the one place to add a metric.
SIMILARITY_METRICS: dict[str, SimilarityMetric] = {m.name: m for m in (
    SimilarityMetric("cka", cka_signature, {"debiased": _bool_param()}),
    SimilarityMetric("rbf_cka", rbf_cka_signature,
                     {"t": MetricParam("positive", 1.0, example="0.5"),
                      "debiased": _bool_param()}),
    SimilarityMetric("rsa", rsa_signature,
                     {"rdm": MetricParam("choice", "correlation", RDM_KINDS, "euclidean"),
                      "compare": MetricParam("choice", "pearson", RDM_COMPARES, "spearman")},
                     rdm_based=True),
    SimilarityMetric("procrustes", procrustes_signature),
)}

#: name -> signature function, read from :data:`SIMILARITY_METRICS`.
SIMILARITIES: dict[str, Callable[..., Signature]] = {
    k: m.signature for k, m in SIMILARITY_METRICS.items()
}

#: name -> {parameter -> what it accepts}, read from :data:`SIMILARITY_METRICS`.
METRIC_PARAMS: dict[str, dict[str, MetricParam]] = {
    k: dict(m.params) for k, m in SIMILARITY_METRICS.items()
}


def get_metric(metric: str, params: Mapping[str, Any] | None = None) -> SimilarityMetric:
    """The entry of ``metric``, after checking that it takes the names in ``params``.

    Raises
    ------
    ActstoreError
        Unknown metric or parameter name (the message lists the valid ones).
    """
    try:
        entry = SIMILARITY_METRICS[metric]
    except KeyError:
        raise ActstoreError(
            f"unknown similarity metric {metric!r}; choose one of "
            f"{', '.join(sorted(SIMILARITY_METRICS))}"
        ) from None
    allowed = list(entry.params)
    bad = [p for p in params or {} if p not in allowed]
    if bad:
        raise ActstoreError(
            f"metric {metric!r} has no parameter {bad[0]!r}; its parameters are: "
            f"{', '.join(allowed) or '(none)'}"
        )
    return entry


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _convert(spec: MetricParam, value: Any) -> Any:
    """``value`` as the canonical type of ``spec`` (bool, float, str), or None if it is none."""
    if spec.kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
            return value.strip().lower() in _TRUE
        return None
    if spec.kind == "positive":
        if isinstance(value, (bool, np.bool_)):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None
        if not isinstance(value, (int, float, np.integer, np.floating)):
            return None
        v = float(value)
        return v if math.isfinite(v) and v > 0 else None
    if isinstance(value, str):
        low = value.strip().lower()
        return next((c for c in spec.choices if c.lower() == low), None)
    return None


def check_params(metric: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters of ``metric`` checked and converted to their canonical types.

    Booleans accept ``True``/``False`` and, case-insensitively, the text ``true``/``false``,
    ``yes``/``no``, ``on``/``off``, ``1``/``0`` (as given on the command line); numbers accept
    numbers and numeric text; choices accept their names in any case.

    Returns
    -------
    dict
        The given parameters (not the defaults) as bool, float or str.

    Raises
    ------
    ActstoreError
        Unknown metric or parameter name (the message lists the valid ones), or a value of
        the wrong type or range (the message names the parameter, the value and what it
        accepts).
    """
    params = as_mapping(params or {}, "params", "e.g. {'debiased': True}")
    specs = get_metric(metric, params).params
    out: dict[str, Any] = {}
    for key, value in params.items():
        spec = specs[key]
        conv = _convert(spec, value)
        if conv is None:
            todo = (f"choose one of {', '.join(spec.choices)}" if spec.kind == "choice"
                    else f"give e.g. {key}={spec.example}")
            raise ActstoreError(
                f"{key} must be {spec.describe()}, got {value!r} (parameter of metric "
                f"{metric!r}); {todo}"
            )
        out[key] = conv
    return out



def build_signature(
    entry: SimilarityMetric, X: Any, params: dict, idx: Any, chunks: list
) -> Signature:
    """The signature of ``X`` (n_stimuli, n_units) with the engine arguments the metric takes."""
    kw = dict(params)
    if entry.takes("idx"):
        kw["idx"] = None if idx is None else device_index(idx, X, get_namespace(X))
    if entry.takes("chunks"):
        kw["chunks"] = chunks
    return entry.signature(X, **kw)


def metric_forms(entry: SimilarityMetric, params: dict) -> tuple[bool, bool]:
    """(has Gram form, has feature form) of a metric, from a signature of a tiny array."""
    probe = np.random.default_rng(0).normal(size=(6, 3))
    sig = build_signature(entry, probe, params, None, [(0, 6)])
    return sig.has_strips, sig.features() is not None
