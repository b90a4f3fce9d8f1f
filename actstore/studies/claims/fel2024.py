"""The claims of Fel, Bethune, Lampinen, Serre & Hermann (NeurIPS 2024), "Understanding
Visual Feature Reliance through the Lens of Complexity", measured on a study's complexity
result: per run, the dictionary features' complexity K, importance and time to decode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from actstore.studies._findings import Claim, Measure, Results, Untestable, directional
from actstore.studies.claims._measures import rank_correlation, task_summary

CITE = "Fel, Bethune, Lampinen, Serre & Hermann, NeurIPS 2024"
#: bootstrap replicates (over dictionary features) of a rank correlation's uncertainty
N_BOOT = 500


def _complexity(res: Results) -> Any:
    """The study's complexity result (``main`` where there are several)."""
    if "main" in res.names("complexity"):
        return res.get("complexity", "main")
    return res.need("complexity", "complexity result (dictionary features)")


def _flow(res: Results) -> Any:
    """The complexity result that decoded flow layers (a ResNet's residual branches), else
    the study's."""
    for name in res.names("complexity"):
        if "vinfo_flow" in res.get("complexity", name):
            return res.get("complexity", name)
    return _complexity(res)


def _spearman_over_runs(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[float, float]:
    """Mean over runs of Spearman(x, y), and its bootstrap standard error over features."""
    per_run = [rank_correlation(x, y) for x, y in zip(xs, ys, strict=True)]
    if not np.isfinite(per_run).any():
        return float("nan"), float("nan")
    value = float(np.nanmean(per_run))
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(N_BOOT):
        rhos = []
        for x, y in zip(xs, ys, strict=True):
            i = rng.integers(0, len(x), len(x))
            rhos.append(rank_correlation(x[i], y[i]))
        if np.isfinite(rhos).any():
            boots.append(np.nanmean(rhos))
    return value, float(np.std(boots, ddof=1)) if len(boots) > 1 else float("nan")


def _against_complexity(var: str, sign: int, what: str,
                        check: Callable[[Any], None] | None = None
                        ) -> Callable[[Results], Measure]:
    def measure(res: Results) -> Measure:
        ds = _complexity(res)
        if check is not None:
            check(ds)
        K = [np.asarray(ds["complexity"].values[i], float) for i in range(ds.sizes["run"])]
        other = np.asarray(ds[var].values, float)
        if other.ndim == 3:  # importance: (run, target, atom) -> mean over the output heads
            other = np.nanmean(other, axis=1)
        ys = [other[i] for i in range(ds.sizes["run"])]
        value, unc = _spearman_over_runs(K, ys)
        if not np.isfinite(value):
            raise Untestable(f"K or {what} has no spread over the dictionary features")
        return directional(value, unc, sign,
                           f"Spearman(K, {what}) {value:+.2f} ({ds.sizes['run']} runs x "
                           f"{ds.sizes['atom']} features; per run "
                           + ", ".join(f"{rank_correlation(k, y):+.2f}"
                                       for k, y in zip(K, ys, strict=True)) + ")"
                           + _heads(res, [str(r) for r in ds["run"].values]))

    return measure


def _heads(res: Results, runs: list[str]) -> str:
    """``"; outputs learned: color (0.98); not learned: shape (0.20, chance 0.10)"``: what the
    dictionary features can be about."""
    heads = [str(h.get("name")) for r in runs if r in res.runs()
             for h in ((res.runs()[r].get("config") or {}).get("task") or {}).get("heads", [])]
    heads = list(dict.fromkeys(heads))
    if not heads:
        return ""
    ok = [h for h in heads if all(res.learned(r, h) for r in runs)]
    text = "; outputs learned: " + (", ".join(
        f"{h} ({np.mean([res.val_accuracy(r, h) for r in runs]):.2f})" for h in ok) or "none")
    rest = [h for h in heads if h not in ok]
    if rest:
        text += "; not learned: " + ", ".join(f"{h} ({task_summary(res, runs, h)})"
                                              for h in rest)
    return text


def _needs_importance(ds: Any) -> None:
    if "importance" not in ds or ds.sizes.get("target", 0) == 0:
        raise Untestable("the complexity result has no importance (importance = false, or no "
                         "linear head)")


def _needs_emergence(ds: Any) -> None:
    if "time_to_decode" not in ds or ds.sizes.get("checkpoint", 0) < 3:
        raise Untestable(f"time to decode needs 3 checkpoints or more, the complexity result "
                         f"has {ds.sizes.get('checkpoint', 0)}")
    steps = np.asarray(ds["decodable_step"].values, float)
    if all(np.ptp(s[np.isfinite(s)]) == 0 for s in steps if np.isfinite(s).any()):
        first = steps[np.isfinite(steps)]
        raise Untestable("every feature becomes decodable at the same checkpoint (step "
                         f"{int(first[0]) if first.size else '-'}): no order of emergence")


def _sedimentation(res: Results) -> Measure:
    ds = _complexity(res)
    if "vinfo_layer_checkpoint" not in ds:
        raise Untestable("V-information per layer is in the complexity result at the final "
                         "checkpoint only (vinfo_layer); the claim needs it at every checkpoint "
                         "(complexity analysis with layer_checkpoints = true)")
    _needs_importance(ds)
    if ds.sizes["checkpoint"] < 2:
        raise Untestable("the complexity result has one checkpoint: no change over training")
    v = ds["vinfo_layer_checkpoint"].transpose("run", "checkpoint", "layer", "atom").values
    early = _early_layers(ds)
    # per feature: gain in V-information from the earlier layers, first -> last checkpoint
    gain = np.nanmean(v[:, -1, early] - v[:, 0, early], axis=1)  # (R, A)
    imp = np.nanmean(ds["importance"].values, axis=1)  # (R, A): mean over output heads
    runs = range(ds.sizes["run"])
    value, unc = _spearman_over_runs([imp[r] for r in runs], [gain[r] for r in runs])
    if not np.isfinite(value):
        raise Untestable("importance or the gain in V-information has no spread over the "
                         "dictionary features")
    halves = []
    for r in runs:
        top = imp[r] >= np.nanmedian(imp[r])
        halves.append(f"{np.nanmean(gain[r, top]):+.2f} vs {np.nanmean(gain[r, ~top]):+.2f}")
    layers = [str(x) for x in ds["layer"].values[early]]
    steps = ds["checkpoint"].values
    return directional(value, unc, +1,
                       f"Spearman(importance, gain) {value:+.2f} ({len(runs)} runs x "
                       f"{ds.sizes['atom']} features); gain of V-information from "
                       f"{', '.join(layers)}, step {int(steps[0])} -> {int(steps[-1])}, of "
                       "the more vs the less important half of the features, per run: "
                       + "; ".join(halves) + _heads(res, [str(r) for r in ds["run"].values]))


def _residual_bypass(res: Results) -> Measure:
    ds = _flow(res)
    stream = [str(x) for x in ds["layer"].values]
    flows = [str(x) for x in ds["flow_layer"].values] if "vinfo_flow" in ds else []
    # each branch next to its block's output: "block3_bn_b" -> "block3"
    pairs = [(f, max(parents, key=len)) for f in flows
             if (parents := [x for x in stream if f.startswith(x + "_")])]
    if not pairs:
        models = sorted({str(a.get("model", "-")) for a in res.runs().values()}) or ["-"]
        raise Untestable(
            "no residual branch next to a block's output in the complexity result (runs: "
            f"{', '.join(models)}); the claim needs a ResNet whose blocks' branches are "
            "recorded and decoded (flow_layers)")
    v_flow = ds["vinfo_flow"].transpose("run", "flow_layer", "atom").values
    v = ds["vinfo_layer"].transpose("run", "layer", "atom").values
    # per feature: V-information from the branch - from the block's output, mean over blocks
    gap = np.nanmean(np.stack([v_flow[:, flows.index(f)] - v[:, stream.index(b)]
                               for f, b in pairs]), axis=0)  # (R, A)
    K = np.asarray(ds["complexity"].values, float)
    runs = range(ds.sizes["run"])
    value, unc = _spearman_over_runs([K[r] for r in runs], [gap[r] for r in runs])
    if not np.isfinite(value):
        raise Untestable("K or the branch - block V-information has no spread over the "
                         "dictionary features")
    return directional(value, unc, +1,
                       f"Spearman(K, V-information from the residual branch - from the "
                       f"block's output) {value:+.2f} ({len(pairs)} blocks: "
                       f"{pairs[0][0]} vs {pairs[0][1]} ...; {ds.sizes['run']} runs x "
                       f"{ds.sizes['atom']} features)"
                       + _heads(res, [str(r) for r in ds["run"].values]))


def _early_layers(ds: Any) -> list[int]:
    """Indices of the earlier half of the probed layers, without the dictionary's own layer
    (its V-information is the features themselves at the dictionary's checkpoint)."""
    names = [str(x) for x in ds["layer"].values]
    own = {str(x) for x in ds["source_layer"].values} if "source_layer" in ds else set()
    idx = [i for i, x in enumerate(names) if x not in own] or list(range(len(names)))
    return idx[: max(1, (len(idx) + 1) // 2)]


CLAIMS = (
    Claim("importance",
          "Complex features tend to be less important.", f"{CITE}, abstract",
          "Spearman correlation over dictionary features of complexity K with importance "
          "(gradient x activation, mean over output heads), mean over runs; +- bootstrap s.e. "
          "over features",
          _against_complexity("importance", -1, "importance", _needs_importance)),
    Claim("emergence",
          "Simpler features dominate early in training, and more complex features emerge "
          "gradually.", f"{CITE}, abstract",
          "Spearman correlation over dictionary features of complexity K with time to decode "
          "(1 - mean V-information over checkpoints), mean over runs; +- bootstrap s.e. over "
          "features",
          _against_complexity("time_to_decode", +1, "time to decode", _needs_emergence)),
    Claim("sedimentation",
          "Important features become accessible at earlier layers during training, like a "
          "sedimentation process.", f"{CITE}, abstract",
          "Spearman correlation over dictionary features of importance with the gain in "
          "V-information from the earlier half of the probed layers (first to last "
          "checkpoint), mean over runs; +- bootstrap s.e. over features", _sedimentation),
    Claim("residual_bypass",
          "Simpler features tend to bypass the visual hierarchy via residual connections.",
          f"{CITE}, abstract",
          "Spearman correlation over dictionary features of complexity K with the "
          "V-information from each residual block's branch (before the shortcut is added) - "
          "from the block's output, mean over blocks, mean over runs; +- bootstrap s.e. over "
          "features", _residual_bypass),
)
