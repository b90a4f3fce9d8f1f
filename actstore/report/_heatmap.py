"""Heatmaps of all-pairs similarity results (``actstore similarity --png``, the report)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from actstore._errors import ActstoreError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["HEATMAP_FORMATS", "check_heatmap_path", "write_heatmap"]

#: Heatmap formats (file extensions) that :func:`write_heatmap` writes.
HEATMAP_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def check_heatmap_path(path: str) -> None:
    """Refuse a heatmap path whose folder is missing or whose extension is not written."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in HEATMAP_FORMATS:
        raise ActstoreError(
            f"cannot write the heatmap {path!r}: "
            + (f"format '.{ext}' is not supported" if ext else "the file name has no extension")
            + f"; end it in {', '.join('.' + e for e in HEATMAP_FORMATS)} (or give 'none')"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ActstoreError(f"cannot write the heatmap {path!r}: it is a folder")
    if not os.path.isdir(folder):
        raise ActstoreError(
            f"cannot write the heatmap {path!r}: folder {folder} does not exist; create it "
            "or give another path"
        )
    if not os.access(folder, os.W_OK):
        raise ActstoreError(f"cannot write the heatmap {path!r}: folder {folder} is read-only")


def write_heatmap(ds: xr.Dataset, path: str) -> str:
    """Save the ``similarity`` matrix of a result as a heatmap image.

    Parameters
    ----------
    ds : xarray.Dataset
        A similarity result (see :func:`~actstore.similarity.similarity_job`): ``similarity``
        (rep_a, rep_b) and coordinate ``label_a`` (rep_a); the attrs ``metric``, ``params`` and
        ``n_stimuli`` make the title. Tick labels are drawn for at most 60 representations.
    path : str
        Output file; matplotlib takes the format from its extension (PNG, with ``.png``
        appended, when it has none). An existing file is replaced.

    Returns
    -------
    str
        ``path`` as given.

    Raises
    ------
    KeyError
        ``ds`` lacks ``similarity`` or ``label_a``.
    ValueError
        An extension matplotlib cannot write.
    OSError
        The folder does not exist or is not writable (:func:`check_heatmap_path` checks a
        path beforehand).
    """
    from actstore.report._layout import MAX_WIDTH, pyplot, save_figure

    S = np.asarray(ds["similarity"].values)
    labels = [str(v) for v in ds["label_a"].values]
    M = len(S)
    size = min(MAX_WIDTH - 1.5, 3.0 + 0.25 * M)
    fig, ax = pyplot().subplots(figsize=(size + 1.5, size), layout="constrained")
    try:
        lo = min(0.0, float(np.nanmin(S)))
        im = ax.imshow(S, vmin=lo, vmax=1.0, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=ds.attrs.get("metric", "similarity"))
        if M <= 60:
            ax.set_xticks(range(M), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(M), labels, fontsize=7)
        params = ds.attrs.get("params", "{}")
        title = " ".join([str(ds.attrs.get("metric", "")), "" if params == "{}" else params])
        ax.set_title(f"{title.strip()} ({ds.attrs.get('n_stimuli', '?')} stimuli)")
    except BaseException:
        pyplot().close(fig)
        raise
    save_figure(fig, path)
    return path

