"""What the dictionary features of a complexity result look like, and where they are
accessible over training (Fel et al., NeurIPS 2024).

- **Top images**: for each feature of a run's dictionary, the probe-set images with the
  largest codes (the inputs that activate the feature most), one row per feature ordered by
  importance, labelled with its complexity K and importance.
- **Over training**: with ``vinfo_layer_checkpoint`` (``layer_checkpoints = true``), the
  V-information of the more and the less important half of the features from each layer
  (network order), one line per checkpoint: important features reaching earlier layers over
  training is Fel et al.'s "sedimentation".
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np

from actstore.report import _layout as L

__all__ = ["dictionary_html", "plot_sedimentation", "plot_top_images", "top_images"]

#: probe-set images shown per feature, and features shown per run
TOP_K = 6
MAX_FEATURES = 16


def _as_pictures(x: np.ndarray) -> np.ndarray | None:
    """``(n, C, H, W)`` or ``(n, H, W, C)`` inputs (C = 1, 3) as RGB floats in [0, 1], each
    image scaled by its own range unless stored as 8-bit; None if they are not images."""
    if x.ndim != 4:
        return None
    if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.shape[-1] not in (1, 3):
        return None
    if x.dtype == np.uint8:
        out = x.astype(np.float64) / 255.0
    else:
        out = x.astype(np.float64)
        lo = out.min(axis=(1, 2, 3), keepdims=True)
        hi = out.max(axis=(1, 2, 3), keepdims=True)
        out = (out - lo) / np.where(hi > lo, hi - lo, 1.0)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def top_images(store: Any, name: str, run: str, k: int = TOP_K
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The ``k`` probe-set images with the largest code of every feature of ``run``'s
    dictionary (``/results/nmf/<name>.<run>``).

    Returns
    -------
    (images, codes, rows) or None
        ``images`` (atom, k, H, W, 3) in [0, 1], ``codes`` (atom, k) their codes, largest
        first, ``rows`` (atom, k) their rows in the probe set; None when the run's probe set
        holds no images.
    """
    codes_ds = store.read_result("nmf", f"{name}.{run}")
    ps_name = store.reader(run).attrs.get("probe_set")
    if not ps_name or ps_name not in store.probe_set_names():
        return None
    try:
        inputs = store.probe_set_array(ps_name, "inputs")
    except Exception:  # a probe set of named inputs (text): nothing to show
        return None
    pictures = _as_pictures(np.asarray(inputs))
    if pictures is None:
        return None
    ids = store.probe_set_array(ps_name, "sample")
    row_of = {v.item() if hasattr(v, "item") else v: i for i, v in enumerate(ids)}
    rows = np.asarray([row_of[v.item() if hasattr(v, "item") else v]
                       for v in codes_ds["sample"].values])
    Z = np.asarray(codes_ds["codes"].values, dtype=np.float64)  # (sample, atom)
    k = min(k, Z.shape[0])
    order = np.argsort(-Z, axis=0, kind="stable")[:k].T  # (atom, k): largest code first
    return (pictures[rows[order]], np.take_along_axis(Z.T, order, axis=1), rows[order])


def _feature_order(ds: Any, i: int) -> list[int]:
    """Features of run ``i``, most important first (atom order without importance)."""
    atoms = list(range(ds.sizes["atom"]))
    if "importance" in ds and ds.sizes.get("target", 0):
        imp = L.nanmean(np.asarray(ds["importance"].values[i], float), axis=0)
        if np.isfinite(imp).any():
            atoms.sort(key=lambda a: -imp[a] if np.isfinite(imp[a]) else np.inf)
    return atoms[:MAX_FEATURES]


def plot_top_images(ds: Any, path: str, top: tuple[np.ndarray, ...], run_index: int = 0
                    ) -> str:
    """One row per feature of one run (most important first): its top probe-set images.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/complexity/<name>`` result.
    path : str
        PNG file to write.
    top : tuple
        :func:`top_images` of the run.
    run_index : int
        Which run of the result.
    """
    run = str(ds["run"].values[run_index])
    images, codes, _ = top
    atoms = _feature_order(ds, run_index)
    has_imp = "importance" in ds and ds.sizes.get("target", 0) > 0
    plt = L.pyplot()
    k = images.shape[1]
    fig, axes = plt.subplots(len(atoms), k, figsize=(1.0 + 0.9 * k, 0.9 * len(atoms) + 0.6),
                             squeeze=False, layout="constrained")
    for r, a in enumerate(atoms):
        K = float(ds["complexity"].values[run_index, a])
        label = f"#{a} K={K:.2f}"
        if has_imp:
            imp = float(L.nanmean(np.asarray(ds["importance"].values[run_index, :, a]), axis=0))
            label += f"\nimp {imp:+.2f}"
        for j in range(k):
            ax = axes[r, j]
            ax.imshow(images[a, j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{codes[a, j]:.2g}", fontsize=6, pad=1)
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{run}\nimages with the largest code of each feature (code above "
                 f"each)\n{len(atoms)} of {ds.sizes['atom']} features, most important first",
                 fontsize=8)
    return L.save_figure(fig, path)


def plot_sedimentation(ds: Any, path: str) -> str:
    """V-information from each layer of the more (solid) and the less (dashed) important
    half of the features, one colour per checkpoint, mean over runs."""
    v = ds["vinfo_layer_checkpoint"].transpose("run", "checkpoint", "layer", "atom").values
    imp = L.nanmean(np.asarray(ds["importance"].values, float), axis=1)  # (run, atom)
    top = imp >= np.nanmedian(imp, axis=1, keepdims=True)
    halves = {}
    for label, mask in (("more important half", top), ("less important half", ~top)):
        per_run = [L.nanmean(v[r][:, :, mask[r]], axis=2) for r in range(v.shape[0])]
        halves[label] = L.nanmean(np.stack(per_run), axis=0)  # (checkpoint, layer)
    layers = [str(x) for x in ds["layer"].values]
    steps = [int(s) for s in ds["checkpoint"].values]
    plt = L.pyplot()
    w = min(L.MAX_WIDTH, L.panel_grid(1, len(layers))[2] + 3.0)
    fig, ax = plt.subplots(figsize=(w, 3.6 + L.label_room(layers, len(layers) > 6)),
                           layout="constrained")
    cmap = plt.get_cmap("viridis")
    x = np.arange(len(layers))
    for c, step in enumerate(steps):
        color = cmap(c / max(1, len(steps) - 1))
        for label, style in (("more important half", "o-"), ("less important half", "s--")):
            ax.plot(x, halves[label][c], style, color=color, ms=3,
                    label=f"step {step}" if style == "o-" else None)
    L.layer_ticks(ax, layers)
    ax.set_ylabel("V-information (held-out R$^2$)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="solid: more important half\ndashed: less important half",
              title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("where the dictionary features are accessible, over training", fontsize=9)
    return L.save_figure(fig, path)


def dictionary_html(ds: Any, fig: Callable[..., str], store: Any) -> str:
    """Figures of the features' top images (first run; when the probe set holds images) and
    of V-information per layer over training (when recorded), with a line saying what they
    show."""
    # the codes of the result's runs: "results/nmf/<name>.<run>"
    name = str(ds.attrs.get("codes", "")).removeprefix("results/nmf/").removesuffix(".<run>")
    text = []
    if "vinfo_layer_checkpoint" in ds and "importance" in ds and ds.sizes.get("target", 0):
        fig("sedimentation", plot_sedimentation, ds)
        text.append("V-information of the features from every probed layer at every "
                    "checkpoint (vinfo_layer_checkpoint), the more and the less important "
                    "half of each run's features apart.")
    run = str(ds["run"].values[0])
    top = top_images(store, name, run) if store is not None else None
    if top is not None and fig("top-images", plot_top_images, ds, top=top):
        text.append(f"The {TOP_K} probe-set images with the largest code of each feature of "
                    f"run {html.escape(run)} (up to {MAX_FEATURES} features, most important "
                    f"first; the codes of every run: results/nmf/{html.escape(name)}."
                    "&lt;run&gt;).")
    return "".join(f"<p>{t}</p>" for t in text)
