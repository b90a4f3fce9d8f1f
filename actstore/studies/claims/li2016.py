"""The claims of Li, Yosinski, Clune, Lipson & Hopcroft (ICLR 2016), "Convergent learning: do
different neural networks learn the same representations?", measured on a study's alignment
results (one Dataset per layer, each holding every pair of runs that differ in their seed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore.alignment import matched_r2
from actstore.studies._findings import Claim, Measure, Results, Untestable, directional, mean_se

CITE = "Li, Yosinski, Clune, Lipson & Hopcroft, ICLR 2016"
#: a unit is matched "at high correlation" from HIGH up, and not matched below LOW
HIGH, LOW = 0.8, 0.5


def _layers(res: Results) -> list[tuple[str, Any]]:
    """``(layer, dataset)`` of the alignment results, in the networks' layer order, without
    the output layer (the logits of nets trained on one task agree by construction)."""
    names = [n for n in res.names("alignment") if "." in n]
    if not names:
        raise Untestable("no alignment result (unit matching between seeds) in the store")
    order: list[str] = []
    for rid in res.runs():  # network order, as the runs recorded their layers
        order += [x for x in res.store.reader(rid).layers if x not in order]
    out = [(n.rsplit(".", 1)[1], res.get("alignment", n)) for n in names]
    out = [t for t in out if t[0] != "out"]
    out.sort(key=lambda t: order.index(t[0]) if t[0] in order else len(order))
    return out


def _live(ds: Any, side: int) -> np.ndarray:
    """Units of run ``side`` (0: a, 1: b) with non-zero variance."""
    return ~np.asarray(ds["constant"].values[side], bool)


def _reliable_and_not(res: Results) -> Measure:
    per_layer, parts = [], []
    for layer, ds in _layers(res):
        for p in range(ds.sizes["pair"]):
            c = np.asarray(ds["bipartite_corr"].values[p], float)[_live(ds, 0)]
            c = c[np.isfinite(c)]
            if c.size == 0:
                continue
            hi, lo = float(np.mean(c >= HIGH)), float(np.mean(c < LOW))
            per_layer.append(min(hi, lo))
            parts.append(f"{layer} {hi:.0%}/{lo:.0%}")
    if not per_layer:
        raise Untestable("the alignment results hold no matched units")
    value, unc = mean_se(per_layer)
    return directional(value, unc, +1,
                       f"units matched one-to-one at r >= {HIGH} / at r < {LOW}: "
                       + ", ".join(parts) + _positions(res))


def _positions(res: Results) -> str:
    """``"; correlated over stimuli x spatial positions in conv1, conv2 (19200 samples
    each in conv1, ...)"``: the layers whose units were correlated over positions as well."""
    over = [(layer, int(ds.attrs.get("n_samples", 0))) for layer, ds in _layers(res)
            if bool(ds.attrs.get("positions", False))]
    if not over:
        for rid in res.runs():
            table = getattr(res.store.reader(rid), "layer_table", {})
            conv = [info for info in table.values() if info.get("kind") == "conv"]
            if conv:
                return (f"; conv units are whole-map summaries (reduction "
                        f"{conv[0].get('reduction')}), correlated over stimuli only")
        return ""
    return ("; correlated over stimuli x spatial positions in "
            + ", ".join(f"{layer} ({n} samples)" for layer, n in over))


def _subspaces(res: Results) -> Measure:
    gains, parts, mixed = [], [], []
    for layer, ds in _layers(res):
        if "lasso_test_loss" not in ds:
            raise Untestable("the alignment ran without sparse prediction (lasso = false)")
        for p in range(ds.sizes["pair"]):
            best = int(np.nanargmin(ds["lasso_test_loss_mean"].values[p]))
            group_r2 = 1.0 - np.asarray(ds["lasso_test_loss"].values[p, best], float)
            one = matched_r2(ds, p)[: group_r2.size]  # r^2 with the one-to-one match
            live = np.isfinite(one)
            g = group_r2[live] - one[live]
            g = g[np.isfinite(g)]
            if g.size:
                gains.append(float(g.mean()))
                parts.append(f"{layer} {float(np.nanmean(group_r2[live])):.2f} vs "
                             f"{float(np.nanmean(one[live])):.2f}")
        if "units_in_mixed" in ds.attrs:
            mixed.append(float(ds.attrs["units_in_mixed"]))
    if not gains:
        raise Untestable("the alignment results hold no sparse prediction of live units")
    value, unc = mean_se(gains)
    extra = (f"; spectral clustering puts {np.mean(mixed):.0%} of units in clusters mixing "
             "both networks" if mixed else "")
    return directional(value, unc, +1, "held-out R^2 from a sparse group of units vs from the "
                                       "one-to-one match: " + ", ".join(parts) + extra)


CLAIMS = (
    Claim("reliable_features",
          "Some features are learned reliably in multiple networks, yet other features are "
          "not consistently learned.", f"{CITE}, abstract",
          f"per layer, the smaller of the fractions of units matched one-to-one (bipartite) "
          f"at r >= {HIGH} and at r < {LOW}, mean over layers; +- s.e. over layers",
          _reliable_and_not),
    Claim("shared_subspaces",
          "Units learn to span low-dimensional subspaces and, while these subspaces are common "
          "to multiple networks, the specific basis vectors learned are not.",
          f"{CITE}, abstract",
          "variance of a unit of one net predicted from a sparse group of the other's units "
          "(LASSO, held-out R^2) - from its one-to-one match (r^2), mean over units and "
          "layers; +- s.e. over layers", _subspaces),
)
