"""Synthetic stores with known decodability, for benchmarks, tests and documentation.

Each categorical feature gets random class embeddings in a small latent space; a sample's
latent code is the sum of its classes' embeddings, scaled by a per-feature strength that grows
over checkpoints, plus noise. Each layer is a random ReLU projection of the latent code (plus
unit noise) to its width. Decodability therefore rises with the checkpoint index and differs
between features, as in a network learning them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from actstore.store import Store

__all__ = ["synthetic_activations", "synthetic_labels", "write_synthetic_store"]


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def synthetic_labels(
    n: int, features: dict[str, int], seed: int = 0
) -> dict[str, np.ndarray]:
    """Balanced random labels: ``features`` maps name -> number of classes."""
    rng = np.random.default_rng(_seed("labels", seed))
    return {f: rng.permutation(np.arange(n) % c) for f, c in features.items()}


def synthetic_activations(
    labels: dict[str, np.ndarray],
    width: int,
    progress: float,
    run_seed: int,
    layer_seed: int,
    latent: int = 16,
    dtype: str = "float32",
    block: int = 8192,
) -> np.ndarray:
    """Activations of shape (n, width) in which each feature is decodable to a degree.

    Parameters
    ----------
    labels : dict name -> int labels (n,)
    width : int
        Units.
    progress : float
        0 (untrained) .. 1 (trained): scales each feature's signal.
    run_seed, layer_seed : int
        The same seeds give the same activations.
    """
    names = list(labels)
    n = len(labels[names[0]])
    rng_run = np.random.default_rng(_seed("run", run_seed))
    emb = {f: rng_run.standard_normal((int(labels[f].max()) + 1, latent)) for f in names}
    strength = {f: 0.15 + (0.6 + 0.4 * j / max(1, len(names) - 1)) * progress
                for j, f in enumerate(names)}
    rng_layer = np.random.default_rng(_seed("layer", run_seed, layer_seed))
    A = rng_layer.standard_normal((latent, width)) / np.sqrt(latent)
    bias = 0.1 * rng_layer.standard_normal(width)
    rng_noise = np.random.default_rng(_seed("noise", run_seed, layer_seed, progress))
    out = np.empty((n, width), dtype=dtype)
    for a in range(0, n, block):
        b = min(n, a + block)
        u = rng_noise.standard_normal((b - a, latent))
        for f in names:
            u += strength[f] * emb[f][labels[f][a:b]]
        h = u @ A + bias + 0.5 * rng_noise.standard_normal((b - a, width))
        out[a:b] = np.maximum(h, 0.0)
    return out


def write_synthetic_store(
    url: str,
    n_runs: int = 2,
    steps: Sequence[int] = (0, 100, 1000),
    widths: Sequence[int] = (16, 32),
    n: int = 500,
    features: dict[str, int] | None = None,
    seed: int = 0,
    probe_set: str = "synthetic",
    codec: str | None = None,
) -> Store:
    """Write a store of ``n_runs`` runs x ``steps`` x layers ``layer{i}`` of the given widths.

    Existing complete slots are kept (the write is resumable).

    Parameters
    ----------
    url : str
        Store path or URL (created if missing).
    n_runs : int
        Runs ``run0`` .. ``run<n_runs-1>`` (seeds ``seed + r``).
    steps : sequence of int
        Checkpoints of every run.
    widths : sequence of int
        Units of layer ``layer{i}``.
    n : int
        Stimuli of the probe set.
    features : dict name -> number of classes, optional
        Categorical labels (default shape, color and texture with 10 classes each).
    seed : int
    probe_set : str
        Name of the probe set.
    codec : str, optional
        Compression codec of the activation arrays (the store's default if not given).

    Returns
    -------
    Store
        The open store.
    """
    from actstore.store import ProbeSet, create_store

    features = features or {"shape": 10, "color": 10, "texture": 10}
    store = create_store(url)
    labels = synthetic_labels(n, features, seed)
    store.add_probe_set(ProbeSet(
        probe_set, labels=labels, attrs={"generator": "actstore.probes.synthetic",
                                         "params": {"n": n, "features": features, "seed": seed}},
    ))
    steps = list(steps)
    last = max(steps) if steps else 1
    for r in range(n_runs):
        attrs = {"model": "synthetic", "task": "synthetic", "seed": seed + r,
                 "dataset": probe_set, "config": {"widths": list(widths)}}
        kw = {} if codec is None else {"codec": codec}
        with store.writer(f"run{r}", probe_set=probe_set, steps=steps, attrs=attrs, **kw) as w:
            for s in steps:
                if w.is_complete(s):
                    continue
                prog = float(np.log1p(s) / np.log1p(last)) if last > 0 else 0.0
                arrays = {
                    f"layer{i}": synthetic_activations(labels, width, prog, seed + r, i)
                    for i, width in enumerate(widths)
                }
                w.write_slot(s, arrays)
    return store
