"""Measurements that several papers' claims share: decoding before vs after training, the
similarity of pairs of representations, rank correlations with their uncertainty."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actstore.studies._findings import Results

__all__ = ["DECODED_LAYERS", "decoded_layers", "probe_accuracy", "probe_accuracy_for",
           "rank_correlation", "similarity_pairs", "task_summary"]

#: the layers Hermann & Lampinen decode (AlexNet: conv5 after max-pool, fc6, fc7; ResNet: the
#: last block before and after global pooling); other models: the last layer before ``out``
DECODED_LAYERS = {"alexnet": ("pool3", "fc6", "fc7"), "resnet": ("pre_pool", "post_pool")}


def decoded_layers(model: str, layers: Sequence[str]) -> list[str]:
    """The layers of ``layers`` a claim about ``model``'s representations reads."""
    pick = [layer for layer in layers if layer in DECODED_LAYERS.get(model, ())]
    return pick or [layer for layer in layers if layer != "out"][-1:]


def probe_accuracy(res: Results) -> tuple[Any, Any, int]:
    """Held-out accuracy (run, checkpoint, layer, feature) of the probe result's headline
    decoder, its standard error over folds, and the number of folds.

    Raises
    ------
    Untestable
        No probe result in the store.
    """
    from actstore.decode import default_decoder

    ds = res.need("probes", "probe result (linear decoders)")
    dec = default_decoder([str(d) for d in ds["decoder"].values])
    folds = int(json.loads(ds.attrs.get("actstore.config", "{}")).get("n_splits") or 1)
    acc = ds["accuracy"].sel(decoder=dec)
    se = ds["accuracy_std"].sel(decoder=dec) / np.sqrt(folds)
    return acc, se, folds


def task_summary(res: Results, runs: Sequence[str], head: str) -> str:
    """``"0.19 held-out, chance 0.10"``: a head's mean held-out accuracy over ``runs``."""
    acc = np.mean([res.val_accuracy(r, head) for r in runs])
    ch = np.mean([res.chance(r, head) for r in runs])
    return f"{acc:.2f} held-out, chance {ch:.2f}"


def similarity_pairs(ds: Any, keep: Callable[[dict[str, Any], dict[str, Any]], bool]
                     ) -> list[tuple[dict[str, Any], dict[str, Any], float]]:
    """``(rep a, rep b, similarity)`` for every pair of different runs' representations of
    the same model and layer that ``keep(a, b)`` accepts (``a``, ``b``: run, task, seed,
    model, layer, checkpoint)."""
    keys = ("run", "task", "seed", "model", "layer", "checkpoint")
    reps = [{k: (ds[f"{k}_a"].values[i].item() if hasattr(ds[f"{k}_a"].values[i], "item")
                 else ds[f"{k}_a"].values[i]) for k in keys if f"{k}_a" in ds.coords}
            for i in range(ds.sizes["rep_a"])]
    S = np.asarray(ds["similarity"].values, dtype=float)
    out = []
    for i, a in enumerate(reps):
        for j, b in enumerate(reps):
            if i == j or (a.get("run") == b.get("run") and a.get("checkpoint") == b.get(
                    "checkpoint")):
                continue
            if a.get("model") == b.get("model") and a.get("layer") == b.get("layer") \
                    and np.isfinite(S[i, j]) and keep(a, b):
                out.append((a, b, float(S[i, j])))
    return out


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation of the finite pairs (NaN with fewer than 3, or no spread): the
    Pearson correlation of their ranks, ties given their mean rank."""
    from scipy.stats import rankdata

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(x[ok]), rankdata(y[ok]))[0, 1])


def probe_accuracy_for(res: Results, features: Sequence[str], what: str) -> tuple[Any, Any, int]:
    """As :func:`probe_accuracy`, from the first probe result that decodes one of
    ``features`` (a store can hold probe results of networks with different labels).

    Raises
    ------
    Untestable
        No such probe result (``what`` names it).
    """
    from actstore.decode import default_decoder

    ds = res.need("probes", what,
                  lambda d: bool(set(features) & {str(f) for f in d["feature"].values}))
    dec = default_decoder([str(d) for d in ds["decoder"].values])
    n = int(json.loads(ds.attrs.get("actstore.config", "{}")).get("n_splits") or 1)
    return (ds["accuracy"].sel(decoder=dec),
            ds["accuracy_std"].sel(decoder=dec) / np.sqrt(n), n)
