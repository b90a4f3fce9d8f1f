"""Sparse prediction between networks in the report: how many units of one network it takes to
predict a unit of another (Li et al., ICLR 2016: a local code is predicted from one unit, a
slightly distributed one from a few, a fully distributed one from many).

Shown in the section of an alignment result computed with sparse prediction: a figure of the
held-out R^2 against the mean number of non-zero weights per predicted unit along the penalty
path (one line per layer, the one-to-one match drawn at one weight), and a table per layer.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from actstore.report import _layout as L

__all__ = ["lasso_html", "plot_lasso"]


def _summaries(group: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """``layer -> sparse_summary`` for the layers aligned with sparse prediction, in the
    order of ``group`` (network order)."""
    from actstore.alignment import sparse_summary

    return {ly: sparse_summary(ds) for ly, ds in group.items() if "lasso_test_loss" in ds}


def plot_lasso(group: Mapping[str, Any], path: str) -> str:
    """Held-out R^2 against the mean non-zero weights per predicted unit, one line per layer
    (each point a penalty), with the one-to-one match (one weight) as an open marker.

    Parameters
    ----------
    group : mapping layer -> Dataset
        The alignment results of one computation, in network order.
    path : str
        PNG file to write.
    """
    plt = L.pyplot()
    sums = _summaries(group)
    if not sums:
        raise ValueError("no layer was aligned with sparse prediction")
    layers = list(sums)
    fig, ax = plt.subplots(figsize=(7.5, 4.0), layout="constrained")
    cmap = plt.get_cmap("viridis")
    for i, ly in enumerate(layers):
        s = sums[ly]
        color = cmap(i / max(1, len(layers) - 1))
        order = np.argsort(s["nonzero"])
        ax.plot(s["nonzero"][order], s["r2"][order], "o-", color=color, ms=3,
                label=ly if len(layers) <= L.MANY_LAYERS else None)
        ax.plot([1.0], [float(s["one_to_one"])], "o", mfc="none", color=color, ms=6)
    ax.set_xscale("log")
    ax.set_xlabel("non-zero weights per predicted unit (mean; log scale)")
    ax.set_ylabel("held-out R$^2$")
    ax.set_title("predicting one network's units from the other's: LASSO penalty path "
                 "(filled) and the one-to-one match (open, 1 weight)", fontsize=8)
    ax.grid(alpha=0.3)
    if len(layers) <= L.MANY_LAYERS:
        ax.legend(fontsize=7, title="layer", title_fontsize=7, loc="lower right")
    return L.save_figure(fig, path)


def lasso_html(group: Mapping[str, Any], fig: Callable[..., str]) -> str:
    """The sparse-prediction figure and table of one alignment result (``""`` without
    sparse prediction)."""
    import pandas as pd

    sums = _summaries(group)
    if not sums:
        return ""
    fig("lasso", plot_lasso, group)
    rows = {}
    for ly, s in sums.items():
        row: dict[str, Any] = {"one-to-one r^2": float(s["one_to_one"])}
        for a, r2, nz, loc in zip(s["alpha"], s["r2"], s["nonzero"], s["local"], strict=True):
            row[f"alpha {a:g}"] = f"{r2:.2f} ({nz:.1f}; {loc:.0%})" if np.isfinite(r2) else "-"
        best = int(np.nanargmax(s["r2"])) if np.isfinite(s["r2"]).any() else None
        row["best alpha"] = "-" if best is None else f"{s['alpha'][best]:g}"
        rows[ly] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "layer"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name, *df.columns])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v if isinstance(v, str) else f'{v:.2f}')}</td>"
                         for v in [str(idx), *row.tolist()]) + "</tr>"
        for idx, row in df.iterrows())
    return ("<h4>Sparse prediction: local or distributed codes</h4>"
            "<p>Each unit of one network predicted from all units of the other by a LASSO "
            "(standardised units, held-out stimuli), along the penalty path. Cells: held-out "
            "R<sup>2</sup> (mean non-zero weights per predicted unit; share of units "
            "predicted from a single unit), mean over units and pairs of runs. A local code "
            "is predicted as well from one unit (the one-to-one match) as from many; a "
            "slightly distributed one needs a few units; a fully distributed one many.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
