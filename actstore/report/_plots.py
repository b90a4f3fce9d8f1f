"""Figures of the results in a store (matplotlib, Agg backend, PNG files).

Each function takes one result Dataset (as written under ``/results``) and a PNG path (its
folder must exist), draws one figure, and returns the path; without matplotlib it raises
ImportError. They are registered in :data:`PLOTS` by the analysis they
draw, so that the report (:mod:`._report`) and users can look them up by name:

* ``probes``: decodability vs layer (untrained vs trained, target vs non-target feature) and
  decodability vs checkpoint;
* ``variance``: variance explained by each feature, per layer and over training;
* ``similarity``: the all-pairs similarity heatmap;
* ``complexity``: complexity vs importance, complexity vs time-to-decode;
* ``alignment``: matched-unit correlations per layer (Li et al. 2016).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.report import _layout as L
from actstore.report._probe_plots import (
    plot_probe_checkpoints,
    plot_probe_layers,
)

__all__ = [
    "PLOTS",
    "plot_alignment",
    "plot_complexity",
    "plot_probe_checkpoints",
    "plot_probe_layers",
    "plot_similarity",
    "plot_variance",
]

def _last_hidden(layers: Sequence[str], output: str = "out") -> str:
    """The last layer that is not the read-out (the representation over training)."""
    hidden = [x for x in layers if x != output]
    return hidden[-1] if hidden else layers[-1]


def plot_variance(ds: Any, path: str, layer: str | None = None,
                  runs: Mapping[str, L.RunLayers] | None = None) -> str:
    """Variance explained by each feature, per run group: by layer at the group's last
    checkpoint, and over training (common final-checkpoint denominator) at ``layer``
    (default, and for a group without it: the group's last layer before the read-out
    ``out``).

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/variance/<name>`` result with ``r2`` and ``r2_final`` of dims
        (run, checkpoint, layer, feature); averaged over the runs of a group.
    path : str
        PNG file to write (its folder must exist).
    layer : str, optional
        Layer of the over-training panel.
    runs : mapping run -> RunLayers, optional
        Each run's model and layer order in the store (as in
        :func:`~._probe_plots.plot_probe_layers`).

    Raises
    ------
    ActstoreError
        If ``layer`` is not in the result.
    """
    feats = L.drawn_features(ds)
    layers = [str(x) for x in ds["layer"].values]
    steps = [int(s) for s in ds["checkpoint"].values]
    if layer is not None and layer not in layers:
        raise ActstoreError(f"no layer {layer!r} in these results; layers: {layers}")
    sub = ds.sel(feature=feats)
    groups = L.run_groups(ds, L.with_values(sub["r2"]), runs)
    if not groups:
        raise ActstoreError("this variance result has no values to draw")
    grids = [L.panel_grid(1, len(g.layers)) for g in groups]
    heights = [2.9 + L.label_room(g.layers, len(g.layers) > 6) for g in groups]
    side = min(L.MAX_WIDTH - 5.6, max(w for _, _, w in grids))  # the by-layer panel's width
    fig, subfigs = L.group_figure(heights, side + 5.6, groups,
                                "Variance explained by each feature (mean over runs)")
    for g, sf in zip(groups, subfigs, strict=True):
        r2, r2f = (L.nanmean(sub[v].sel(run=list(g.runs), layer=list(g.layers)).transpose(
            "run", "checkpoint", "layer", "feature").values, axis=0) for v in ("r2", "r2_final"))
        done = [i for i in range(len(steps)) if np.isfinite(r2[i]).any()]
        at = layer if layer in g.layers else _last_hidden(g.layers)
        a, b = L.panels(sf, 2, 1, 2, width_ratios=[side, 4.2])
        x = np.arange(len(g.layers))
        for j, f in enumerate(feats):
            a.plot(x, r2[done[-1], :, j], "o-", ms=3, color=f"C{j}", label=f)
            b.plot([steps[i] for i in done], r2f[done, g.layers.index(at), j], "o-",
                   color=f"C{j}", label=f)
        L.layer_ticks(a, g.layers)
        a.set_ylabel("variance explained\n(held-out R$^2$)", fontsize=8)
        a.set_title(f"by layer, step {steps[done[-1]]}", fontsize=9)
        L.checkpoint_axis(b, [steps[i] for i in done])
        b.set_ylabel("explained / final\ntotal variance", fontsize=8)
        b.set_title(f"over training, layer {at}", fontsize=9)
        for ax in (a, b):
            ax.axhline(0, color="k", lw=0.6)
            ax.grid(alpha=0.3)
        b.legend(fontsize=7)
    return L.save_figure(fig, path)


def plot_similarity(ds: Any, path: str) -> str:
    """The all-pairs similarity matrix as a heatmap.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/similarity/<name>`` result: ``similarity`` of dims (rep_a, rep_b) with
        coordinate ``label_a``; attributes ``metric``, ``params`` and ``n_stimuli`` go in the
        title.
    path : str
        Image file to write (PNG, or any format matplotlib infers from the suffix).
    """
    from actstore.report._heatmap import write_heatmap

    return str(write_heatmap(ds, path))


def plot_complexity(ds: Any, path: str) -> str:
    """Complexity vs importance and vs time-to-decode of every dictionary feature.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/complexity/<name>`` result: ``complexity`` and ``time_to_decode`` of dims
        (run, atom), and ``importance`` (run, target, atom) when the heads' importance was
        computed (averaged over targets).
    path : str
        PNG file to write (its folder must exist).
    """
    comp = ds["complexity"].values  # (run, atom)
    fig, (a, b, c) = L.pyplot().subplots(1, 3, figsize=(L.MAX_WIDTH, 3.6), layout="constrained")
    runs = [str(r) for r in ds["run"].values]
    has_imp = "importance" in ds and ds.sizes.get("target", 0) > 0
    for i, r in enumerate(runs):
        color = f"C{i % 10}"
        if has_imp:
            imp = L.nanmean(ds["importance"].values[i], axis=0)  # mean over heads
            a.scatter(comp[i], imp, s=12, color=color, alpha=0.7, label=r)
        b.scatter(comp[i], ds["time_to_decode"].values[i], s=12, color=color, alpha=0.7)
    a.axhline(0, color="k", lw=0.6)
    a.set_xlabel("complexity K")
    a.set_ylabel("importance (gradient x activation)")
    a.set_title("complexity vs importance" if has_imp else "importance not available",
                fontsize=9)
    b.set_xlabel("complexity K")
    b.set_ylabel("time to decode")
    b.set_title("complexity vs time of emergence", fontsize=9)
    finite = comp[np.isfinite(comp)]
    c.hist(finite, bins=np.linspace(0, 1, 21), color="C0")
    c.set_xlabel("complexity K")
    c.set_ylabel("features")
    c.set_title(f"{finite.size} features, {len(runs)} runs", fontsize=9)
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
    if has_imp and len(runs) <= 12:
        a.legend(fontsize=6)
    fig.suptitle("Dictionary features: complexity, importance, emergence", fontsize=10)
    return L.save_figure(fig, path)


def plot_alignment(datasets: Mapping[str, Any], path: str) -> str:
    """Mean matched-unit correlation per layer (bipartite and semi-matching), and the
    distribution of bipartite-matched correlations over units.

    Parameters
    ----------
    datasets : mapping layer -> Dataset
        The ``/results/alignment/<name>.<layer>`` results of one alignment computation
        (``bipartite_corr_mean``, ``semi_corr_mean`` per pair and ``bipartite_corr`` per
        pair and unit; missing variables are left out of the figure), in network order.
    path : str
        PNG file to write (its folder must exist).
    """
    plt = L.pyplot()
    layers = list(datasets)
    w = min(L.MAX_WIDTH - 5.0, L.panel_grid(1, len(layers))[2])
    fig, (a, b) = plt.subplots(1, 2, figsize=(w + 5.0, 3.2 + L.label_room(layers, len(layers) > 6)),
                               width_ratios=[w, 4.2], layout="constrained")
    x = np.arange(len(layers))
    for key, style, label in (("bipartite_corr_mean", "o-", "bipartite (one-to-one)"),
                              ("semi_corr_mean", "s--", "semi-matching")):
        vals = [float(np.nanmean(datasets[ly][key].values)) if key in datasets[ly] else np.nan
                for ly in layers]
        a.plot(x, vals, style, label=label)
    L.layer_ticks(a, layers)
    a.set_ylabel("mean matched correlation")
    a.set_ylim(min(0.0, a.get_ylim()[0]), 1.0)
    a.legend(fontsize=8)
    a.set_title("matched units, mean over pairs of runs", fontsize=9)
    cmap = plt.get_cmap("viridis")
    for i, ly in enumerate(layers):
        if "bipartite_corr" not in datasets[ly]:
            continue
        v = np.asarray(datasets[ly]["bipartite_corr"].values, dtype=float).ravel()
        v = np.sort(v[np.isfinite(v)])[::-1]
        if v.size:
            b.plot(np.linspace(0, 1, v.size), v, color=cmap(i / max(1, len(layers) - 1)),
                   label=ly)
    b.set_xlabel("unit rank (fraction)")
    b.set_ylabel("bipartite-matched correlation")
    b.set_title("distribution over units", fontsize=9)
    if len(layers) <= L.MANY_LAYERS:
        b.legend(fontsize=7)
    else:  # a colour scale of depth instead of a legend of tens of layers
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.colorbar(ScalarMappable(Normalize(0, len(layers) - 1), cmap), ax=b,
                           label="layer (network order)")
        bar.set_ticks([0, len(layers) - 1], labels=[layers[0], layers[-1]])
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle("Convergent learning: unit alignment between runs", fontsize=10)
    return L.save_figure(fig, path)


#: analysis -> list of (figure name, function(ds, path, **context) -> path).
PLOTS: dict[str, list[tuple[str, Callable[..., str]]]] = {
    "probes": [("layers", plot_probe_layers), ("checkpoints", plot_probe_checkpoints)],
    "variance": [("variance", plot_variance)],
    "similarity": [("heatmap", plot_similarity)],
    "complexity": [("complexity", plot_complexity)],
    "alignment": [("alignment", plot_alignment)],
}
