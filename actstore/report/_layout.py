"""Run groups, network order and readable axes for figures of tens of layers.

A store may hold runs of different networks (a 6-block BERT next to a ResNet-18 of 52
recorded modules), or of one network recorded at different layers. Figures draw one small
multiple per **run group** (runs of one model with the same layers in their results), never
one line through the layers of different networks. Layers are in **network order**: the order
of the run's layer table (forward order, as captured), not alphabetical (``blocks.10`` comes
after ``blocks.9``).

Figures use matplotlib's constrained layout (no "tight layout not applied" warnings), grow
with the number of layers up to :data:`MAX_WIDTH`, and hide tick labels that would overlap
(:func:`thin_tick_labels`, measured on the drawn figure), keeping a tick mark at every layer.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = [
    "MANY_LAYERS",
    "MAX_WIDTH",
    "RunGroup",
    "RunLayers",
    "checkpoint_axis",
    "drawn_features",
    "group_figure",
    "label_room",
    "layer_ticks",
    "model_label",
    "nanmean",
    "network_order",
    "panel_grid",
    "panels",
    "pyplot",
    "run_groups",
    "run_layers",
    "save_figure",
    "thin_tick_labels",
    "with_values",
]

#: With more layers than this a group's scores over training are drawn as a heatmap of
#: layer x checkpoint (one line per layer stops being readable, and so does its legend).
MANY_LAYERS = 12

#: Widest figure, in inches: 1200 px at the figures' 110 dpi, the width of the report's page,
#: so that no figure is scaled down there (wider groups of panels wrap to further rows).
MAX_WIDTH = 11.0

#: Gap (pixels) required between two tick labels.
_LABEL_GAP = 2.0

_DPI = 110


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def nanmean(a: np.ndarray, axis: Any) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; an all-NaN slice is NaN (without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def drawn_features(ds: Any) -> list[str]:
    """Features to draw: the ``heldout_*`` labels describe the training split, not the
    stimuli, and are left out when there are other features."""
    feats = [str(f) for f in ds["feature"].values]
    keep = [f for f in feats if not f.startswith("heldout_")]
    return keep or feats


def checkpoint_axis(ax: Any, steps: Sequence[int]) -> None:
    """Training steps on a symmetric-log axis (step 0, the untrained network, included)."""
    if len(steps) > 1 and max(steps) > 10 * max(1, sorted(steps)[1]):
        ax.set_xscale("symlog", linthresh=max(1, sorted(steps)[1]))
    ax.set_xlabel("training step")


def with_values(da: Any) -> np.ndarray:
    """``(run, layer)`` bool: where a result variable has any finite value."""
    other = [d for d in da.dims if d not in ("run", "layer")]
    finite = np.isfinite(da.transpose("run", "layer", *other).values)
    return finite.reshape(finite.shape[0], finite.shape[1], -1).any(axis=2)


@dataclass(frozen=True)
class RunGroup:
    """Runs of one model whose results cover the same layers; drawn as one small multiple.

    Attributes
    ----------
    name : str
        ``A``, ``B``, ... in the order the groups' first runs appear in the result.
    model : str
        The runs' model (``""`` when unknown).
    runs : tuple of str
    layers : tuple of str
        The layers with results, in network order.
    """

    name: str
    model: str
    runs: tuple[str, ...]
    layers: tuple[str, ...]

    @property
    def title(self) -> str:
        """``A: resnet18.py:make, 52 layers, runs r0, r1``."""
        runs = ", ".join(self.runs) if len(self.runs) <= 4 else (
            f"{self.runs[0]} ... {self.runs[-1]} ({len(self.runs)})")
        model = f"{self.model}, " if self.model else ""
        n = len(self.layers)
        return f"{self.name}: {model}{n} layer{'s' * (n != 1)}, run{'s' * (len(self.runs) != 1)}" \
               f" {runs}"


@dataclass(frozen=True)
class RunLayers:
    """What the store says of one run: its model and its layers in network order."""

    model: str
    layers: tuple[str, ...]


def model_label(model: Any) -> str:
    """The model of a run for a figure's title: a factory file without its folder."""
    if model is None:
        return ""
    source, _, function = str(model).rpartition(":")
    if not source.endswith(".py"):
        return str(model)
    return f"{PurePath(source).name}:{function}"


def run_layers(store: Any) -> dict[str, RunLayers]:
    """Model and layers (network order, from the layer table) of every run of a store.

    A run whose metadata cannot be read is left out (figures then fall back to the result's
    own layer order for it).
    """
    out: dict[str, RunLayers] = {}
    for rid in store.run_ids():
        try:
            rd = store.reader(rid)
            out[rid] = RunLayers(model_label(rd.attrs.get("model")), tuple(rd.layers))
        except Exception:  # a damaged run: the report lists it, its figures use result order
            continue
    return out


def _group_name(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"G{i + 1}"


def run_groups(
    ds: Any, present: np.ndarray | None = None, runs: Mapping[str, RunLayers] | None = None,
) -> list[RunGroup]:
    """Group the runs of a result by model and by the layers they have results at.

    Parameters
    ----------
    ds : xarray.Dataset
        A result with coordinates ``run`` and ``layer``.
    present : array of bool, shape (run, layer), optional
        Where each run has results (default: where the result's ``done`` variable, if any,
        marks a finished job, else every layer). Runs with none are left out.
    runs : mapping run -> RunLayers, optional
        The store's model and layer order of each run (:func:`run_layers`); without it the
        result's layer order is used and runs are grouped by their layers alone.

    Returns
    -------
    list of RunGroup
        In the order of the groups' first runs in ``ds``.
    """
    names = [str(x) for x in ds["layer"].values]
    run_ids = [str(r) for r in ds["run"].values]
    if present is None and "done" in ds.data_vars and {"run", "layer"} <= set(ds["done"].dims):
        present = with_values(ds["done"].where(ds["done"]))  # NaN where not done
    mask = np.ones((len(run_ids), len(names)), bool) if present is None else np.asarray(
        present, bool)
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for i, run in enumerate(run_ids):
        have = [x for x, p in zip(names, mask[i], strict=True) if p]
        if not have:
            continue
        info = (runs or {}).get(run)
        if info is not None:
            rank = {x: k for k, x in enumerate(info.layers)}
            # layers the store does not list (results of a run since rewritten) go last
            have.sort(key=lambda x: rank.get(x, len(rank)))
        key = (info.model if info is not None else "", tuple(have))
        groups.setdefault(key, []).append(run)
    return [RunGroup(_group_name(i), model, tuple(members), layers)
            for i, ((model, layers), members) in enumerate(groups.items())]


def network_order(groups: Sequence[RunGroup], layers: Sequence[str] = ()) -> list[str]:
    """Every group's layers in network order (the first group's first), then any of
    ``layers`` no group has."""
    order = list(dict.fromkeys(x for g in groups for x in g.layers))
    return order + [x for x in layers if x not in set(order)]


def panel_grid(n_panels: int, n_layers: int, *, base: float = 3.0, extra: float = 0.0
               ) -> tuple[int, int, float]:
    """``(rows, columns, panel width in inches)`` of one group's panels: a panel widens with
    its layers (up to 7 in) and panels wrap to further rows beyond :data:`MAX_WIDTH`."""
    width = float(np.clip(1.2 + 0.11 * n_layers, base, 7.0))
    cols = max(1, min(n_panels, int((MAX_WIDTH - 0.8 - extra) // width)))
    return -(-n_panels // cols), cols, width


def layer_ticks(ax: Any, layers: Sequence[str], axis: str = "x", fontsize: float = 7) -> None:
    """One tick per layer, labelled with its name (vertical along x beyond a few layers)."""
    pos = np.arange(len(layers))
    if axis == "y":
        ax.set_yticks(pos, list(layers), fontsize=fontsize)
    elif len(layers) > 6:
        ax.set_xticks(pos, list(layers), rotation=90, fontsize=fontsize)
    else:
        ax.set_xticks(pos, list(layers), rotation=45, ha="right", rotation_mode="anchor",
                      fontsize=fontsize + 1)


def label_room(layers: Sequence[str], vertical: bool) -> float:
    """Inches the tick labels of a layer axis take below it."""
    longest = max((len(x) for x in layers), default=1)
    return 0.07 * longest + 0.2 if vertical else 0.05 * longest + 0.2


def group_figure(heights: list[float], width: float, groups: Sequence[RunGroup],
                  title: str) -> tuple[Any, list[Any]]:
    """A figure of one subfigure per group (titled by the group), stacked."""
    fig = pyplot().figure(layout="constrained", figsize=(width, sum(heights) + 0.3))
    subfigs = fig.subfigures(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    for sf, g in zip(subfigs, groups, strict=True):
        sf.suptitle(g.title, fontsize=9, x=0.01, ha="left")
    fig.suptitle(title, fontsize=10)
    return fig, list(subfigs)


def panels(sf: Any, n: int, rows: int, cols: int, **kw: Any) -> list[Any]:
    """``n`` panels of a subfigure on a ``rows x cols`` grid (the spare cells removed)."""
    axes = sf.subplots(rows, cols, squeeze=False, **kw).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def _overlaps(boxes: Sequence[Any]) -> bool:
    """Whether two consecutive boxes (in tick order) come closer than the required gap."""
    for a, b in itertools.pairwise(boxes):
        if a.padded(_LABEL_GAP / 2).overlaps(b.padded(_LABEL_GAP / 2)):
            return True
    return False


def thin_tick_labels(fig: Any) -> None:
    """Hide tick labels so that no two on one axis overlap: every k-th is kept, with k the
    smallest step that leaves them apart on the drawn figure (the tick marks stay)."""
    for _ in range(3):  # hiding labels can let the layout widen an axis; measure again
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        changed = False
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
                if len(labels) < 2:
                    continue
                boxes = [t.get_window_extent(renderer) for t in labels]
                if not _overlaps(boxes):
                    continue
                step = next((k for k in range(2, len(labels))
                             if not _overlaps(boxes[::k])), len(labels))
                for i, t in enumerate(labels):
                    t.set_visible(i % step == 0)
                changed = True
        if not changed:
            return


def save_figure(fig: Any, path: str) -> str:
    """Thin the tick labels, write the PNG and close the figure."""
    plt = pyplot()
    try:
        thin_tick_labels(fig)
        fig.savefig(path, dpi=_DPI)
    finally:
        plt.close(fig)
    return str(path)
