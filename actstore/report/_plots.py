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

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = [
    "PLOTS",
    "plot_alignment",
    "plot_complexity",
    "plot_probe_checkpoints",
    "plot_probe_layers",
    "plot_similarity",
    "plot_variance",
    "probe_score",
]

_DPI = 110


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    _plt().close(fig)
    return str(path)


def _nanmean(a: np.ndarray, axis: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are NaN
        return np.nanmean(a, axis=axis)


def _features(ds: Any) -> list[str]:
    """Features to draw: the ``heldout_*`` labels describe the training split, not the
    stimuli, and are left out when there are other features."""
    feats = [str(f) for f in ds["feature"].values]
    keep = [f for f in feats if not f.startswith("heldout_")]
    return keep or feats


def _last_hidden(layers: Sequence[str], output: str = "out") -> str:
    """The last layer that is not the read-out (the representation over training)."""
    hidden = [x for x in layers if x != output]
    return hidden[-1] if hidden else layers[-1]


def _checkpoint_axis(ax: Any, steps: Sequence[int]) -> None:
    """Training steps on a symmetric-log axis (step 0, the untrained network, included)."""
    if len(steps) > 1 and max(steps) > 10 * max(1, sorted(steps)[1]):
        ax.set_xscale("symlog", linthresh=max(1, sorted(steps)[1]))
    ax.set_xlabel("training step")


def probe_score(ds: Any, decoder: str | None = None) -> tuple[Any, str]:
    """The headline score of a probe result: accuracy (categorical) or R^2 (continuous).

    Returns
    -------
    score : xarray.DataArray
        Dims (run, checkpoint, layer, feature).
    decoder : str
        The registry's headline decoder when present (logistic, the papers' decoder), else
        the first.
    """
    from actstore.decode import default_decoder, scoring_decoder

    decs = [str(d) for d in ds["decoder"].values]
    decoder = decoder or default_decoder(decs)
    if decoder not in decs:
        raise ActstoreError(f"no decoder {decoder!r} in these results; decoders: {decs}")
    sub = ds.sel(decoder=decoder)
    kinds = ds["feature_kind"].values if "feature_kind" in ds.coords else None
    score = sub["accuracy"].copy()
    if kinds is not None:
        cont = np.asarray(kinds) == "continuous"
        if cont.any():
            r2 = ds.sel(decoder=scoring_decoder(decs, decoder, "continuous"))["r2"]
            score[..., cont] = r2.values[..., cont]
    return score, decoder


def probe_layer_lines(
    ds: Any, score: Any, targets: Mapping[str, Sequence[str]] | None = None
) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """The lines of :func:`plot_probe_layers`: feature -> ``(role, label, values by layer)``.

    ``role`` is ``first``, ``last``, ``target`` or ``non-target``; each run is taken at its
    own first and last checkpoint with results; no ``first`` line when every run has one.
    """
    feats = _features(ds)
    steps = [int(s) for s in ds["checkpoint"].values]
    runs = [str(r) for r in ds["run"].values]
    vals = score.sel(feature=feats).transpose("run", "checkpoint", "layer", "feature").values
    has = np.isfinite(vals).any(axis=(2, 3))  # (run, checkpoint)
    kept = has.any(axis=1)
    i_first = np.where(kept, np.argmax(has, axis=1), 0)
    i_last = np.where(kept, has.shape[1] - 1 - np.argmax(has[:, ::-1], axis=1), 0)
    ri = np.arange(len(runs))

    def step_label(idx: np.ndarray, which: str) -> str:
        used = {steps[i] for i in idx[kept]}
        if len(used) != 1:
            return f"{which} checkpoint"
        (s0,) = used
        return "untrained" if s0 == 0 and which == "first" else f"step {s0}"

    out: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for j, f in enumerate(feats):
        lines = []
        if (i_first[kept] != i_last[kept]).any():
            first = _nanmean(vals[ri, i_first][kept][:, :, j], axis=0)
            lines.append(("first", step_label(i_first, "first"), first))
        last = np.where(kept[:, None], vals[ri, i_last][:, :, j], np.nan)
        if targets:
            role = np.array([f in targets.get(r, ()) for r in runs])
            for mask, name in ((role, "target"), (~role, "non-target")):
                if mask.any():
                    lines.append((name, f"trained, {name}", _nanmean(last[mask], axis=0)))
        else:
            lines.append(("last", step_label(i_last, "last"), _nanmean(last, axis=0)))
        out[f] = lines
    return out


def plot_probe_layers(
    ds: Any, path: str, targets: Mapping[str, Sequence[str]] | None = None,
    decoder: str | None = None,
) -> str:
    """Decodability vs layer, one panel per feature.

    Lines: each run's first checkpoint with results (labelled untrained when it is step 0)
    and each run's last one (runs that stop at other steps are each taken at their own), the
    latter split into runs trained on the feature (target) and runs trained on another
    feature (non-target) when ``targets`` (run -> its task's features) is known. The first
    line is left out when every run has one checkpoint in the result.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/probes/<name>`` result, with ``accuracy`` (and ``r2`` for continuous
        features) of dims (decoder, run, checkpoint, layer, feature); ``chance`` (run, feature)
        is drawn when present.
    path : str
        PNG file to write (its folder must exist).
    targets : mapping run -> sequence of str, optional
        The features each run was trained on; splits the last checkpoint into target and
        non-target runs.
    decoder : str, optional
        Decoder to draw (default: ``logistic`` when present, else the first).

    Raises
    ------
    ActstoreError
        If ``decoder`` is not in the result.
    """
    plt = _plt()
    score, decoder = probe_score(ds, decoder)
    feats = _features(ds)
    layers = [str(x) for x in ds["layer"].values]
    lines = probe_layer_lines(ds, score, targets)
    x = np.arange(len(layers))
    fig, axes = plt.subplots(1, len(feats), figsize=(3.6 * len(feats) + 0.6, 3.4),
                             squeeze=False, sharey=True)
    chance = ds["chance"].sel(feature=feats).values if "chance" in ds else None
    styles = {"first": ("o--", "0.5"), "target": ("o-", "C3"), "non-target": ("o-", "C0"),
              "last": ("o-", "C3")}
    for j, (f, ax) in enumerate(zip(feats, axes[0], strict=True)):
        for role, label, values in lines[f]:
            fmt, color = styles[role]
            ax.plot(x, values, fmt, color=color, label=label)
        if chance is not None and np.isfinite(chance[:, j]).any():
            ax.axhline(float(_nanmean(chance[:, j], axis=0)), color="k", lw=0.8, ls=":",
                       label="chance")
        ax.set_title(f)
        ax.set_xticks(x, layers, rotation=45, ha="right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"held-out score ({decoder})")
    # one legend of every line drawn in any panel (a panel may lack the target runs)
    entries: dict[str, Any] = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(lab, h)
    axes[0, -1].legend(list(entries.values()), list(entries), fontsize=7, loc="best")
    fig.suptitle("Decodability by layer", fontsize=10)
    return _save(fig, path)


def plot_probe_checkpoints(ds: Any, path: str, decoder: str | None = None) -> str:
    """Decodability vs training step, one panel per feature, one line per layer.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/probes/<name>`` result (dims decoder, run, checkpoint, layer, feature);
        scores are averaged over runs.
    path, decoder :
        As in :func:`plot_probe_layers` (an unknown ``decoder`` is an ActstoreError).
    """
    plt = _plt()
    score, decoder = probe_score(ds, decoder)
    feats = _features(ds)
    layers = [str(x) for x in ds["layer"].values]
    steps = [int(s) for s in ds["checkpoint"].values]
    vals = _nanmean(score.sel(feature=feats).transpose(
        "run", "checkpoint", "layer", "feature").values, axis=0)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(feats), figsize=(3.6 * len(feats) + 1.4, 3.4),
                             squeeze=False, sharey=True)
    for j, (f, ax) in enumerate(zip(feats, axes[0], strict=True)):
        for i, lay in enumerate(layers):
            color = cmap(i / max(1, len(layers) - 1))
            ax.plot(steps, vals[:, i, j], "o-", ms=3, color=color, label=lay)
        _checkpoint_axis(ax, steps)
        ax.set_title(f)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"held-out score ({decoder})")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Decodability over training (mean over runs)", fontsize=10)
    return _save(fig, path)


def plot_variance(ds: Any, path: str, layer: str | None = None) -> str:
    """Variance explained by each feature: by layer at the last checkpoint, and over training
    (common final-checkpoint denominator) at ``layer`` (default: the last layer before the
    read-out ``out``).

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/variance/<name>`` result with ``r2`` and ``r2_final`` of dims
        (run, checkpoint, layer, feature); averaged over runs.
    path : str
        PNG file to write (its folder must exist).
    layer : str, optional
        Layer of the over-training panel.

    Raises
    ------
    ActstoreError
        If ``layer`` is not in the result.
    """
    plt = _plt()
    feats = _features(ds)
    layers = [str(x) for x in ds["layer"].values]
    steps = [int(s) for s in ds["checkpoint"].values]
    layer = layer or _last_hidden(layers)
    if layer not in layers:
        raise ActstoreError(f"no layer {layer!r} in these results; layers: {layers}")
    sub = ds.sel(feature=feats)
    r2 = _nanmean(sub["r2"].transpose("run", "checkpoint", "layer", "feature").values, axis=0)
    r2f = _nanmean(sub["r2_final"].transpose("run", "checkpoint", "layer", "feature").values,
                   axis=0)
    li = layers.index(layer)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(layers))
    for j, f in enumerate(feats):
        a.plot(x, r2[-1, :, j], "o-", color=f"C{j}", label=f)
        b.plot(steps, r2f[:, li, j], "o-", color=f"C{j}", label=f)
    a.set_xticks(x, layers, rotation=45, ha="right", fontsize=8)
    a.set_ylabel("variance explained (held-out R$^2$)")
    a.set_title(f"by layer, step {steps[-1]}", fontsize=9)
    _checkpoint_axis(b, steps)
    b.set_ylabel("explained / final total variance")
    b.set_title(f"over training, layer {layer}", fontsize=9)
    for ax in (a, b):
        ax.axhline(0, color="k", lw=0.6)
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.suptitle("Variance explained by each feature (mean over runs)", fontsize=10)
    return _save(fig, path)


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
    plt = _plt()
    comp = ds["complexity"].values  # (run, atom)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    runs = [str(r) for r in ds["run"].values]
    has_imp = "importance" in ds and ds.sizes.get("target", 0) > 0
    for i, r in enumerate(runs):
        color = f"C{i % 10}"
        if has_imp:
            imp = _nanmean(ds["importance"].values[i], axis=0)  # mean over heads
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
    return _save(fig, path)


def plot_alignment(datasets: Mapping[str, Any], path: str) -> str:
    """Mean matched-unit correlation per layer (bipartite and semi-matching), and the
    distribution of bipartite-matched correlations over units.

    Parameters
    ----------
    datasets : mapping layer -> Dataset
        The ``/results/alignment/<name>.<layer>`` results of one alignment computation
        (``bipartite_corr_mean``, ``semi_corr_mean`` per pair and ``bipartite_corr`` per
        pair and unit; missing variables are left out of the figure).
    path : str
        PNG file to write (its folder must exist).
    """
    plt = _plt()
    layers = list(datasets)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(layers))
    for key, style, label in (("bipartite_corr_mean", "o-", "bipartite (one-to-one)"),
                              ("semi_corr_mean", "s--", "semi-matching")):
        vals = [float(np.nanmean(datasets[ly][key].values)) if key in datasets[ly] else np.nan
                for ly in layers]
        a.plot(x, vals, style, label=label)
    a.set_xticks(x, layers, rotation=45, ha="right", fontsize=8)
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
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle("Convergent learning: unit alignment between runs", fontsize=10)
    return _save(fig, path)


#: analysis -> list of (figure name, function(ds, path, **context) -> path).
PLOTS: dict[str, list[tuple[str, Callable[..., str]]]] = {
    "probes": [("layers", plot_probe_layers), ("checkpoints", plot_probe_checkpoints)],
    "variance": [("variance", plot_variance)],
    "similarity": [("heatmap", plot_similarity)],
    "complexity": [("complexity", plot_complexity)],
    "alignment": [("alignment", plot_alignment)],
}
