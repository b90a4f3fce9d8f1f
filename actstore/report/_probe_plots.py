"""Figures of probe results: decodability by layer and over training, per run group.

Each run group (:func:`~._layout.run_groups`: runs of one model with results at the same
layers) is one small multiple, a row of panels (one per feature) under the group's title, its
layers in network order. Over training, a group of more than :data:`~._layout.MANY_LAYERS`
layers is a heatmap of layer x checkpoint per feature; fewer layers are one line each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.report._layout import (
    MANY_LAYERS,
    RunGroup,
    RunLayers,
    checkpoint_axis,
    drawn_features,
    group_figure,
    label_room,
    layer_ticks,
    nanmean,
    panel_grid,
    panels,
    pyplot,
    run_groups,
    save_figure,
    with_values,
)

__all__ = [
    "plot_probe_checkpoints",
    "plot_probe_layers",
    "probe_checkpoints_figure",
    "probe_groups",
    "probe_layer_lines",
    "probe_layers_figure",
    "probe_score",
]


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
    feats = drawn_features(ds)
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
            first = nanmean(vals[ri, i_first][kept][:, :, j], axis=0)
            lines.append(("first", step_label(i_first, "first"), first))
        last = np.where(kept[:, None], vals[ri, i_last][:, :, j], np.nan)
        if targets:
            role = np.array([f in targets.get(r, ()) for r in runs])
            for mask, name in ((role, "target"), (~role, "non-target")):
                if mask.any():
                    lines.append((name, f"trained, {name}", nanmean(last[mask], axis=0)))
        else:
            lines.append(("last", step_label(i_last, "last"), nanmean(last, axis=0)))
        out[f] = lines
    return out


def probe_groups(
    ds: Any, decoder: str | None = None, runs: Mapping[str, RunLayers] | None = None,
) -> tuple[Any, str, list[RunGroup]]:
    """The score of a probe result (:func:`probe_score`) and its run groups.

    Raises
    ------
    ActstoreError
        If ``decoder`` is not in the result, or no job of it has a score.
    """
    score, decoder = probe_score(ds, decoder)
    groups = run_groups(ds, with_values(score.sel(feature=drawn_features(ds))), runs)
    if not groups:
        raise ActstoreError("this probe result has no scores yet: every job is still to do")
    return score, decoder, groups


def probe_layers_figure(
    ds: Any, targets: Mapping[str, Sequence[str]] | None = None, decoder: str | None = None,
    runs: Mapping[str, RunLayers] | None = None,
) -> Any:
    """The figure of :func:`plot_probe_layers` (a matplotlib Figure, not yet saved)."""
    score, decoder, groups = probe_groups(ds, decoder, runs)
    feats = drawn_features(ds)
    grids = [panel_grid(len(feats), len(g.layers)) for g in groups]
    heights = [rows * 2.5 + label_room(g.layers, len(g.layers) > 6) + 0.4
               for g, (rows, _, _) in zip(groups, grids, strict=True)]
    width = max(cols * w for _, cols, w in grids) + 0.8
    fig, subfigs = group_figure(heights, width, groups, "Decodability by layer")
    chance = ds["chance"].sel(feature=feats) if "chance" in ds else None
    styles = {"first": ("o--", "0.5"), "target": ("o-", "C3"), "non-target": ("o-", "C0"),
              "last": ("o-", "C3")}
    every: list[Any] = []
    for g, sf, (rows, cols, _) in zip(groups, subfigs, grids, strict=True):
        lines = probe_layer_lines(ds.sel(run=list(g.runs), layer=list(g.layers)),
                                  score.sel(run=list(g.runs), layer=list(g.layers)), targets)
        axes = panels(sf, len(feats), rows, cols, sharey=True)
        x = np.arange(len(g.layers))
        ms = 4 if len(g.layers) <= MANY_LAYERS else 2.5
        for j, (f, ax) in enumerate(zip(feats, axes, strict=True)):
            for role, label, values in lines[f]:
                fmt, color = styles[role]
                ax.plot(x, values, fmt, color=color, ms=ms, label=label)
            level = (nanmean(chance.sel(run=list(g.runs)).values[:, j], axis=0)
                     if chance is not None else np.nan)
            if np.isfinite(level):
                ax.axhline(float(level), color="k", lw=0.8, ls=":", label="chance")
            ax.set_title(f, fontsize=9)
            layer_ticks(ax, g.layers)
            ax.grid(alpha=0.3)
            if j % cols == 0:
                ax.set_ylabel(f"held-out score ({decoder})", fontsize=8)
        # one legend of every line drawn in any panel (a panel may lack the target runs)
        entries: dict[str, Any] = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                entries.setdefault(lab, h)
        axes[-1].legend(list(entries.values()), list(entries), fontsize=7, loc="best")
        every += axes
    _share_limits(every)
    return fig


def _share_limits(axes: Sequence[Any]) -> None:
    """One y range for the panels of every group (they show the same score)."""
    lows, highs = zip(*(ax.get_ylim() for ax in axes), strict=True)
    for ax in axes:
        ax.set_ylim(min(lows), max(highs))


def plot_probe_layers(
    ds: Any, path: str, targets: Mapping[str, Sequence[str]] | None = None,
    decoder: str | None = None, runs: Mapping[str, RunLayers] | None = None,
) -> str:
    """Decodability vs layer: per run group, one panel per feature.

    Lines: each run's first checkpoint with results (labelled untrained when it is step 0)
    and each run's last one (runs that stop at other steps are each taken at their own), the
    latter split into runs trained on the feature (target) and runs trained on another
    feature (non-target) when ``targets`` (run -> its task's features) is known. The first
    line is left out when every run has one checkpoint in the result. Runs with different
    layers are different groups, each drawn over its own layers in network order.

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
    runs : mapping run -> RunLayers, optional
        Each run's model and layer order in the store (:func:`~._layout.run_layers`); without
        it runs are grouped by their layers, in the result's order.

    Raises
    ------
    ActstoreError
        If ``decoder`` is not in the result.
    """
    return save_figure(probe_layers_figure(ds, targets, decoder, runs), path)


def _steps_with_scores(vals: np.ndarray, steps: Sequence[int]) -> list[int]:
    """Indices of the checkpoints where a group has any score (vals: checkpoint first)."""
    return [i for i in range(len(steps)) if np.isfinite(vals[i]).any()]


def probe_checkpoints_figure(
    ds: Any, decoder: str | None = None, runs: Mapping[str, RunLayers] | None = None,
) -> Any:
    """The figure of :func:`plot_probe_checkpoints` (a matplotlib Figure, not yet saved)."""
    plt = pyplot()
    score, decoder, groups = probe_groups(ds, decoder, runs)
    feats = drawn_features(ds)
    steps = [int(s) for s in ds["checkpoint"].values]
    data = []
    for g in groups:
        vals = nanmean(score.sel(run=list(g.runs), layer=list(g.layers), feature=feats)
                       .transpose("run", "checkpoint", "layer", "feature").values, axis=0)
        keep = _steps_with_scores(vals, steps)
        data.append((vals[keep], [steps[i] for i in keep]))
    finite = np.concatenate([v[np.isfinite(v)] for v, _ in data])
    lo, hi = float(finite.min()), float(finite.max())
    grids, heights = [], []
    for g, (_, s) in zip(groups, data, strict=True):
        heat = len(g.layers) > MANY_LAYERS
        rows, cols, w = panel_grid(len(feats), len(s) if heat else 0, base=2.8, extra=1.4)
        grids.append((rows, cols, w, heat))
        panel = (float(np.clip(0.11 * len(g.layers) + 0.8, 2.5, 7.0)) if heat else 2.5)
        heights.append(rows * (panel + 0.6) + 0.4)
    width = max(cols * w for _, cols, w, _ in grids) + 2.2
    fig, subfigs = group_figure(heights, width, groups,
                                 "Decodability over training (mean over the group's runs)")
    cmap = plt.get_cmap("viridis")
    for g, sf, (vals, s), (rows, cols, _, heat) in zip(groups, subfigs, data, grids,
                                                       strict=True):
        axes = panels(sf, len(feats), rows, cols, sharey=True)
        for j, (f, ax) in enumerate(zip(feats, axes, strict=True)):
            ax.set_title(f, fontsize=9)
            if heat:  # (layer, checkpoint), the first layer on top
                im = ax.imshow(vals[:, :, j].T, aspect="auto", cmap="viridis", vmin=lo,
                               vmax=hi, interpolation="nearest")
                ax.set_xticks(np.arange(len(s)), [str(v) for v in s], fontsize=7,
                              rotation=90 if len(s) > 6 else 0)
                ax.set_xlabel("training step", fontsize=8)
                if j % cols == 0:
                    layer_ticks(ax, g.layers, axis="y")
                continue
            for i, lay in enumerate(g.layers):
                ax.plot(s, vals[:, i, j], "o-", ms=3, label=lay,
                        color=cmap(i / max(1, len(g.layers) - 1)))
            checkpoint_axis(ax, s)
            ax.grid(alpha=0.3)
            if j % cols == 0:
                ax.set_ylabel(f"held-out score ({decoder})", fontsize=8)
        if heat:
            sf.colorbar(im, ax=axes, shrink=0.6, aspect=30, label=f"held-out score ({decoder})")
        else:
            axes[cols - 1].legend(
                fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="layer",
                title_fontsize=7)
    return fig


def plot_probe_checkpoints(
    ds: Any, path: str, decoder: str | None = None,
    runs: Mapping[str, RunLayers] | None = None,
) -> str:
    """Decodability vs training step: per run group, one panel per feature.

    A group of at most :data:`~._layout.MANY_LAYERS` layers has one line per layer
    (coloured by depth); a deeper one is a heatmap of layer (rows, network order) x
    checkpoint, on one colour scale for the whole figure. Scores are averaged over the
    group's runs.

    Parameters
    ----------
    ds : xarray.Dataset
        A ``/results/probes/<name>`` result (dims decoder, run, checkpoint, layer, feature).
    path, decoder, runs :
        As in :func:`plot_probe_layers` (an unknown ``decoder`` is an ActstoreError).
    """
    return save_figure(probe_checkpoints_figure(ds, decoder, runs), path)
