"""Feature complexity (Fel et al. 2024): V-information of dictionary features across layers.

A layer's activations are factorised into ``k`` dictionary features (:func:`~._nmf.nmf`);
each feature's per-input value (its code ``z``) becomes a continuous decoding target. With the
linear-Gaussian predictive family and ``z`` standardised, the V-information a layer ``l`` holds
about ``z`` is the held-out R^2 of a ridge probe, clipped at zero::

    I_V(f_l(x) -> z) = max(0, R^2)

where R^2 is the mean over folds of the held-out R^2 at the penalty it selects (the clip
applies to that mean, not to each fold)

computed by the probe engine for all ``k`` features at once (one factorisation per fold
serves every feature and penalty, :func:`~actstore.probes.ridge_cv`). Then

* complexity ``K(z) = 1 - mean over probed layers of I_V`` (in [0, 1]: features decodable
  from early layers are simple);
* time-to-decode ``1 - mean over checkpoints of I_V`` from the feature's own layer (in
  [0, 1]: features decodable from early in training have small values; inferred);
* ``decodable_step``: the first checkpoint whose I_V reaches ``threshold`` (inferred);
* importance: signed gradient x activation of the class logit (:mod:`._importance`).

Results (:func:`~actstore.probes.run_complexity`): ``/results/complexity/<name>`` (one Dataset
over runs), and the codes of each run as a feature set ``/results/nmf/<name>.<run>`` with dims
(sample, atom) (docs/analyses.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._blocks import ArraySource, BlockSource, CachedSource
from actstore.core._folds import Folds
from actstore.core._pages import plain_pages
from actstore.core._targets import FeatureSpec, Targets
from actstore.decode._metrics import select_penalty
from actstore.decode._ridge import DEFAULT_ALPHAS, ridge_cv

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "ANALYSIS",
    "CODES_ANALYSIS",
    "code_targets",
    "codes_as_labels",
    "complexity_score",
    "decodable_step",
    "read_codes",
    "time_to_decode",
    "vinfo_of_codes",
]

ANALYSIS = "complexity"
#: The codes of every run are a feature set under ``/results/nmf/<name>.<run>``.
CODES_ANALYSIS = "nmf"


def code_targets(codes: np.ndarray, prefix: str = "atom") -> tuple[Targets, np.ndarray]:
    """Standardised continuous targets from feature values, for the decoder engine.

    Parameters
    ----------
    codes : ndarray of shape (n_samples, k)

    Returns
    -------
    targets : Targets
        One z-scored column per feature that varies (named ``<prefix><i>``).
    usable : ndarray of shape (k,), bool
        False for constant (e.g. unused, all-zero) features, which have no target column.
    """
    Z = np.asarray(codes, dtype=np.float64)
    if Z.ndim != 2:
        raise ActstoreError(f"codes must be 2-D (samples, atoms), got shape {Z.shape}")
    if not np.all(np.isfinite(Z)):
        raise ActstoreError("codes hold NaN or infinite values")
    sd = Z.std(axis=0)
    usable = sd > 1e-12 * np.maximum(np.abs(Z).max(axis=0), 1e-300)
    idx = np.flatnonzero(usable)
    Y = (Z[:, idx] - Z[:, idx].mean(axis=0)) / sd[idx]
    specs = tuple(FeatureSpec(f"{prefix}{i}", "continuous", j, j + 1) for j, i in enumerate(idx))
    codes_int = np.full((Z.shape[0], idx.size), -1, dtype=np.int64)
    return Targets(Y, codes_int, specs), usable


@plain_pages
def vinfo_of_codes(
    source: BlockSource | Any,
    codes: np.ndarray,
    folds: Folds,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    backend: str | None = None,
    standardize: bool = True,
) -> dict[str, np.ndarray]:
    """V-information (linear-Gaussian family) of every feature from one representation.

    Parameters
    ----------
    source : BlockSource or array of shape (n_samples, n_units)
        The representation the features are decoded from (streamed).
    codes : ndarray of shape (n_samples, k)
        Feature values (any real values; standardised here).
    folds : Folds
    alphas : sequence of float
        Ridge penalties; one is chosen per feature by the mean held-out R^2 over folds.
    backend : str, optional
        ``"torch"``, ``"cuda"`` or ``"cupy"`` for the arithmetic.
    standardize : bool
        Decode from units z-scored with each training fold's statistics (default), so that
        the V-information does not depend on the layer's scale.

    Returns
    -------
    dict
        ``vinfo`` (k,): ``max(0, r2)``; ``r2`` (k,): mean over folds of the held-out R^2 at
        the chosen penalty (the selection criterion); ``alpha`` (k,); NaN for constant
        features.
    """
    Folds.check(folds)
    if not hasattr(source, "blocks"):
        source = ArraySource(source)
    targets, usable = code_targets(codes)
    k = usable.size
    out = {key: np.full(k, np.nan) for key in ("vinfo", "r2", "alpha")}
    if not usable.any():
        return out
    src = CachedSource(source, backend=backend)
    scores = ridge_cv(src, targets, folds, alphas, standardize=standardize)
    q = len(targets.features)
    strong_first = np.argsort(-np.asarray(alphas))
    chosen, summary = select_penalty(
        {k_: v for k_, v in scores.items() if k_ != "chance"}, ["continuous"] * q, strong_first
    )
    out["r2"][usable] = summary["r2"]
    out["vinfo"][usable] = np.maximum(summary["r2"], 0.0)
    out["alpha"][usable] = np.asarray(alphas)[chosen]
    return out


def complexity_score(vinfo: np.ndarray) -> np.ndarray:
    """``K = 1 - mean over layers of I_V``, clipped to [0, 1].

    Parameters
    ----------
    vinfo : ndarray of shape (n_layers, k)
        V-information of each feature from each probed layer (NaN layers are ignored).

    Returns
    -------
    ndarray of shape (k,)
    """
    v = np.asarray(vinfo, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            m = np.nanmean(np.clip(v, 0.0, 1.0), axis=0)
    return np.clip(1.0 - m, 0.0, 1.0)


def time_to_decode(vinfo: np.ndarray) -> np.ndarray:
    """``1 - mean over checkpoints of I_V`` (in [0, 1]; 0 = decodable from the start).

    Parameters
    ----------
    vinfo : ndarray of shape (n_checkpoints, k)
        V-information of each feature at each checkpoint, in training order (NaN
        checkpoints are ignored).

    Returns
    -------
    ndarray of shape (k,), float64
        In [0, 1]; NaN for a feature with no finite value.
    """
    return complexity_score(vinfo)


def decodable_step(vinfo: np.ndarray, steps: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """First training step at which each feature's V-information reaches ``threshold``.

    Parameters
    ----------
    vinfo : ndarray of shape (n_checkpoints, k)
    steps : sequence of int, length n_checkpoints (increasing)

    Returns
    -------
    ndarray of shape (k,), float64
        The step, or NaN if the feature never reaches the threshold.
    """
    v = np.nan_to_num(np.asarray(vinfo, dtype=np.float64), nan=-np.inf)
    hit = v >= threshold
    first = np.argmax(hit, axis=0)
    out = np.asarray(steps, dtype=np.float64)[first]
    return np.where(hit.any(axis=0), out, np.nan)


def codes_as_labels(ds: Any, prefix: str = "atom") -> dict[str, np.ndarray]:
    """The codes of a ``/results/nmf`` Dataset as continuous labels for the decoder engine.

    Constant (unused) atoms are left out. The result can be passed as ``labels`` to
    :func:`actstore.probes.decode` or :func:`actstore.probes.probe_arrays`.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/nmf/<name>.<run>`` result (see :func:`read_codes`): ``codes`` of dims
        (sample, atom) and the ``atom`` coordinate.
    prefix : str
        Label names are ``<prefix><atom>``.

    Returns
    -------
    dict str -> ndarray of shape (n_samples,), float64
        One entry per atom whose code varies over samples, in atom order.

    Raises
    ------
    ActstoreError
        If the codes hold NaN or infinite values.
    """
    Z = np.asarray(ds["codes"].values, dtype=np.float64)
    _, usable = code_targets(Z)
    atoms = ds["atom"].values.tolist()
    return {f"{prefix}{atoms[i]}": Z[:, i] for i in np.flatnonzero(usable)}


def read_codes(store: Any, name: str, run: str) -> xr.Dataset:
    """The dictionary features of one run (``/results/nmf/<name>.<run>``) as a Dataset.

    Parameters
    ----------
    store : Store
        An open store (:func:`actstore.open`).
    name : str
        Name of the complexity computation (``run_complexity(name=...)``).
    run : str
        Run id.

    Returns
    -------
    xarray.Dataset
        Loaded into memory: ``codes`` (sample, atom), float32, the codes ``Z``, and
        ``dictionary`` (atom, ``<layer>_unit``), float32, unit-norm atoms ``D``; the run's
        ``sample`` ids as coordinate; attributes ``run``, ``layer``, ``checkpoint``, ``k``
        and the fit's ``error``, ``relative_error``, ``clipped`` and ``n_epochs``.

    Raises
    ------
    ActstoreError
        If the store holds no such result (the message lists the results).
    """
    return store.read_result(CODES_ANALYSIS, f"{name}.{run}")
