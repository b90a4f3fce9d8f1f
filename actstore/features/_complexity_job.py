"""The complexity job of one run: its dictionary, the V-information of each feature over
layers and checkpoints, and the importance of each feature for each output head.

A job opens the store by URL itself and returns small arrays (codes, dictionary, V-information
per layer and checkpoint); :func:`~actstore.probes.run_complexity` gathers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.core._folds import Folds, label_folds, stratified_folds
from actstore.core._source import ReaderSource
from actstore.features._complexity import CODES_ANALYSIS, vinfo_of_codes
from actstore.features._config import ComplexityConfig
from actstore.features._importance import linear_importance, recover_linear_head
from actstore.features._nmf import NMFResult, nmf
from actstore.features._variance import default_features

__all__ = ["codes_dataset", "complexity_job", "dictionary_layer", "flow_layers", "head_layer",
           "probed_layers"]


def head_layer(reader: Any, head: str | None) -> str:
    """The logits layer: ``head`` (which the run must record), or ``out`` by default."""
    if head is None:
        return "out"
    if head not in reader.layers:
        raise ActstoreError(
            f"run {reader.run_id!r} has no layer {head!r} to use as the logits layer; "
            f"layers: {', '.join(reader.layers)}"
        )
    return head


def dictionary_layer(reader: Any, layer: str | None, head: str) -> str:
    """The factorised layer: ``layer``, or the one before the head (else the last)."""
    layers = reader.layers
    if layer is not None:
        if layer not in layers:
            raise ActstoreError(
                f"run {reader.run_id!r} has no layer {layer!r}; layers: {', '.join(layers)}"
            )
        return layer
    if head in layers and layers.index(head) > 0:
        return str(layers[layers.index(head) - 1])
    return str(layers[-1])


def probed_layers(order: Sequence[str], layer: str, head: str,
                   patterns: Sequence[str] | None) -> list[str]:
    """Layers probed for complexity: up to ``layer`` (not the head), or those matching."""
    import fnmatch

    if patterns is None:
        return [x for x in order[: list(order).index(layer) + 1] if x != head]
    return list(dict.fromkeys(x for p in patterns for x in order if fnmatch.fnmatchcase(x, p)))


def flow_layers(order: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    """Layers of ``order`` that match ``patterns`` (the flow layers: decoded, not probed)."""
    import fnmatch

    return [x for x in order if any(fnmatch.fnmatchcase(x, p) for p in patterns or ())]


def _heads(reader: Any, n_logits: int) -> list[tuple[str, int, int]]:
    """``(feature, first logit column, n_classes)`` of each output head of a zoo run."""
    cfg = reader.attrs.get("config") or {}
    heads = (cfg.get("task") or {}).get("heads") if isinstance(cfg, dict) else None
    out, start = [], 0
    for h in heads or []:
        out.append((str(h["name"]), start, int(h["n_classes"])))
        start += int(h["n_classes"])
    return out if start == n_logits else []


def _source(rd: Any, config: ComplexityConfig) -> tuple[str, str, int, list[int]]:
    """The run's logits layer, factorised layer, dictionary checkpoint, complete checkpoints."""
    head = head_layer(rd, config.head_layer)
    layer = dictionary_layer(rd, config.layer, head)
    steps = rd.complete_steps
    if not steps:
        raise ActstoreError(f"run {rd.run_id!r} has no complete checkpoint")
    step = steps[-1] if config.step is None else int(config.step)
    if step not in steps:
        raise ActstoreError(
            f"run {rd.run_id!r} has no complete checkpoint {step}; complete: {steps}")
    return head, layer, step, steps


def _folds(rd: Any, n: int, config: ComplexityConfig) -> Folds:
    """The run's folds: on its stimulus labels (or its split), else plain seeded K-fold."""
    labels = rd.labels
    use = {f: labels[f] for f in default_features(labels, config.split)}
    if config.split is not None:
        use[config.split] = labels[config.split]
    if use:
        return label_folds(use, config.n_splits, config.seed, config.split)[0]
    # a probe set without labels: plain seeded K-fold
    return stratified_folds(n, config.n_splits, config.seed)


def _vinfo(rd: Any, layer: str, step: int, Z: np.ndarray, folds: Folds,
           config: ComplexityConfig) -> np.ndarray:
    """V-information of every feature from one (layer, checkpoint)."""
    return vinfo_of_codes(ReaderSource(rd, layer, step), Z, folds, config.alphas,
                          config.backend, config.standardize)["vinfo"]


def _importance(rd: Any, layer: str, head: str, step: int, res: NMFResult,
                config: ComplexityConfig) -> tuple[dict[str, np.ndarray], dict[str, str], float]:
    """Importance of each feature for each head whose logits are linear in ``layer``.

    Returns
    -------
    importance : dict head feature -> ndarray of shape (k,)
    basis : dict head feature -> ``"label"`` or ``"predicted"`` (the class explained)
    residual : float
        Relative residual of the recovered linear head (NaN if not tried).
    """
    imp: dict[str, np.ndarray] = {}
    basis: dict[str, str] = {}
    if not config.importance or head not in rd.layers:
        return imp, basis, np.nan
    Z = res.codes
    labels = rd.labels
    logits = rd.read(head, step)
    lin = recover_linear_head(rd.read(layer, step), logits)
    if lin.is_exact(config.head_tol):
        for fname, start, n_cls in _heads(rd, logits.shape[1]):
            y = np.asarray(labels.get(fname, []))
            basis[fname] = "label"
            if y.shape != (Z.shape[0],) or y.dtype.kind not in "iu" or (
                y.size and (y.min() < 0 or y.max() >= n_cls)
            ):
                # the probe set does not label this head's feature: use the network's
                # own decision (the predicted class)
                y = np.argmax(logits[:, start : start + n_cls], axis=1)
                basis[fname] = "predicted"
            W = lin.W[start : start + n_cls]
            imp[fname] = linear_importance(Z, res.dictionary, W, y)["importance"]
    return imp, basis, lin.residual


def complexity_job(url: str, run: str, config: ComplexityConfig,
                   storage_options: dict | None = None) -> dict[str, Any]:
    """One run: NMF, V-information per layer and checkpoint (and per layer x checkpoint with
    ``layers_over_checkpoints``), importance (small arrays back)."""
    from actstore.store import open_store

    rd = open_store(url, storage_options=storage_options).reader(run)
    head, layer, step, steps = _source(rd, config)
    flow = flow_layers(rd.layers, config.flow_layers)
    probed = [x for x in probed_layers(rd.layers, layer, head, config.layers) if x not in flow]
    res = nmf(ReaderSource(rd, layer, step), config.k, mode=config.mode,
              batch_rows=config.batch_rows, max_epochs=config.max_epochs, tol=config.tol,
              seed=config.seed, negative=config.negative, backend=config.backend)
    Z = res.codes
    folds = _folds(rd, Z.shape[0], config)
    by_layer = {lay: _vinfo(rd, lay, step, Z, folds, config) for lay in probed}
    ckpts = steps if config.over_checkpoints else [step]
    # the dictionary's own (layer, checkpoint) is decoded once
    by_step = {s: by_layer[layer] if s == step and layer in by_layer
               else _vinfo(rd, layer, s, Z, folds, config) for s in ckpts}
    # every probed layer at every checkpoint, each (layer, checkpoint) decoded once
    by_both = {s: {lay: by_layer[lay] if s == step else by_step[s] if lay == layer
                   else _vinfo(rd, lay, s, Z, folds, config) for lay in probed}
               for s in ckpts} if config.layers_over_checkpoints else {}
    by_flow = {lay: _vinfo(rd, lay, step, Z, folds, config) for lay in flow}
    imp, basis, residual = _importance(rd, layer, head, step, res, config)
    return {
        "run": run, "layer": layer, "step": step, "probed": probed, "steps": ckpts,
        "codes": Z.astype(np.float32), "dictionary": res.dictionary.astype(np.float32),
        "sample": rd.sample, "error": res.error, "relative_error": res.relative_error,
        "clipped": res.clipped, "n_epochs": res.n_epochs,
        "vinfo_layer": by_layer, "vinfo_step": by_step, "vinfo_layer_step": by_both,
        "vinfo_flow": by_flow,
        "importance": imp, "basis": basis, "head_residual": residual, "folds": folds.description,
    }


def codes_dataset(p: dict[str, Any], name: str) -> Any:
    """The ``/results/nmf/<name>.<run>`` Dataset of one run's job output ``p``."""
    import xarray as xr

    k = p["codes"].shape[1]
    unit = f"{p['layer']}_unit"
    return xr.Dataset(
        {"codes": (("sample", "atom"), p["codes"]),
         "dictionary": (("atom", unit), p["dictionary"])},
        coords={"sample": p["sample"], "atom": np.arange(k)},
        attrs={"analysis": CODES_ANALYSIS, "result": name, "run": p["run"],
               "layer": p["layer"], "checkpoint": int(p["step"]), "k": int(k),
               "error": float(p["error"]), "relative_error": float(p["relative_error"]),
               "clipped": float(p["clipped"]), "n_epochs": int(p["n_epochs"]),
               "description": (
                   "Dictionary features of one layer: activations ~ codes @ dictionary with "
                   "codes, dictionary >= 0 (NMF); dictionary rows have unit norm, so codes are "
                   "in activation units. Use the codes as continuous decoding targets "
                   "(actstore.probes.codes_as_labels).")},
    )
