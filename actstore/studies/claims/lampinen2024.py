"""The claims of Lampinen, Chan & Hermann (TMLR 2024), "Learned feature representations are
biased by complexity, learning order, position, and more", measured on a study's variance
result: for each sweep variant, two features of matched computational role, and the share of
each hidden layer's variance that each explains at the last checkpoint; the same bias in the
top principal components of a layer and in its single units, read from the stored
activations."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore.studies._findings import LEARNED, Claim, Untestable, directional, mean_se

if TYPE_CHECKING:
    from actstore.studies._findings import Measure, Results

CITE = "Lampinen, Chan & Hermann, TMLR 2024"

#: picks the two features a variant contrasts from a run's attributes: (a, b), a the one
#: claimed to be represented more strongly
Pick = Callable[[dict[str, Any]], tuple[str, str]]


def _features(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((attrs.get("config") or {}).get("dataset") or {}).get("params", {})
                .get("features") or [])


def _by_bits(attrs: dict[str, Any]) -> tuple[str, str]:
    f = sorted(_features(attrs), key=lambda x: int(x.get("bits", 1)))
    if len(f) < 2 or f[0].get("bits") == f[-1].get("bits"):
        raise Untestable("the complexity variant's features do not differ in bits")
    return str(f[0]["name"]), str(f[-1]["name"])


def _by_prevalence(attrs: dict[str, Any]) -> tuple[str, str]:
    f = sorted(_features(attrs), key=lambda x: -float(x.get("prevalence", 0.5)))
    return str(f[0]["name"]), str(f[-1]["name"])


def _by_order(attrs: dict[str, Any]) -> tuple[str, str]:
    first = ((attrs.get("config") or {}).get("train") or {}).get("first_head")
    names = [str(f["name"]) for f in _features(attrs)]
    if first not in names:
        raise Untestable("the order variant trains no head first")
    return str(first), next(n for n in names if n != first)


def _by_position(attrs: dict[str, Any]) -> tuple[str, str]:
    f = sorted(_features(attrs), key=lambda x: int(x.get("position", 0)))
    return str(f[0]["name"]), str(f[-1]["name"])


#: the principal components a layer's bias is read in: as many as the features contrasted, the
#: fewest a layer needs to carry both
TOP_PCS = 2


def eta_squared(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of the variance of each column of ``X`` (n, d) that a categorical label explains:
    between-group over total sum of squares, the in-sample R^2 of regressing the column on the
    label's one-hot columns with an intercept; NaN for a constant column."""
    Xc = np.asarray(X, dtype=float)
    Xc = Xc - Xc.mean(axis=0)
    labels = np.asarray(labels)
    sst = (Xc ** 2).sum(axis=0)
    ssb = np.zeros(Xc.shape[1])
    for v in np.unique(labels):
        rows = labels == v
        ssb += rows.sum() * Xc[rows].mean(axis=0) ** 2
    live = sst > 1e-12 * max(float(sst.max(initial=0.0)), np.finfo(float).tiny)
    return np.where(live, ssb / np.where(live, sst, 1.0), np.nan)


def pc_and_unit_bias(X: np.ndarray, a: np.ndarray, b: np.ndarray, k: int = TOP_PCS
                     ) -> tuple[float, float, float]:
    """How much more of a representation's top principal components and single units label
    ``a`` explains than label ``b``.

    Returns
    -------
    share_a, share_b : float
        The variance of the top ``k`` principal components of ``X`` (n, d) each label explains:
        ``sum_j var_j eta2(pc_j) / sum_j var_j`` over the components j (the variance-weighted
        R^2 of regressing the component scores on the label).
    units_a : float
        The fraction of the non-constant units in which ``a`` explains more variance than
        ``b`` (:func:`eta_squared`; in-sample, whose bias is the same for two labels of as
        many values).
    """
    Xc = np.asarray(X, dtype=float)
    Xc = Xc - Xc.mean(axis=0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    k = max(1, min(k, int((s > s[0] * 1e-10).sum()) if s.size and s[0] > 0 else 1))
    scores, w = U[:, :k] * s[:k], s[:k] ** 2
    share = [float(np.nansum(w * eta_squared(scores, y)) / w.sum()) if w.sum() > 0
             else float("nan") for y in (a, b)]
    ea, eb = eta_squared(Xc, a), eta_squared(Xc, b)
    ok = np.isfinite(ea) & np.isfinite(eb)
    units = float(np.mean(ea[ok] > eb[ok])) if ok.any() else float("nan")
    return share[0], share[1], units


def _contrast(res: Results, variant: str, pick: Pick, models: tuple[str, ...]
              ) -> tuple[dict[str, dict[str, Any]], str, str]:
    """The runs of ``variant`` (of ``models``) in the variance result, and the two features
    they contrast; :class:`Untestable` when there are none or a feature is not learned."""
    runs = {r: a for r, a in res.runs().items() if a.get("variant") == variant
            and (not models or a.get("model") in models)}
    if not runs:
        raise Untestable(f"no runs of the {variant!r} variant"
                         + (f" with a {' or '.join(models)} model" if models else "")
                         + " in the store (this scale does not train it)")
    ds = res.need("variance", "variance result (variance explained by each feature)")
    runs = {r: a for r, a in runs.items() if r in ds["run"].values.tolist()}
    if not runs:
        raise Untestable(f"the variance result has no run of the {variant!r} variant")
    a_name, b_name = pick(next(iter(runs.values())))
    unlearned = [h for h in (a_name, b_name) if not all(_is_learned(res, r, h) for r in runs)]
    if unlearned:
        raise Untestable("; ".join(f"{h} not learned ({_summary(res, runs, h)})"
                                   for h in unlearned))
    return runs, a_name, b_name


def _accuracy(res: Results, run: str, head: str) -> tuple[float, float]:
    """A head's held-out accuracy and its chance level: the majority rate of a feature with
    a prevalence (0.95 for a feature on 5% of the time: always answering 0), else 1 / the
    number of classes. NaN accuracy counts as not learned."""
    acc = res.val_accuracy(run, head)
    prevalence = {str(f.get("name")): float(f.get("prevalence", 0.5))
                  for f in _features(res.runs()[run])}
    p = prevalence.get(head)
    chance = max(p, 1 - p) if p is not None else res.chance(run, head)
    return (acc if np.isfinite(acc) else -np.inf), chance


def _is_learned(res: Results, run: str, head: str) -> bool:
    """Held-out accuracy at least :data:`LEARNED` of the way from chance to 1."""
    acc, chance = _accuracy(res, run, head)
    return bool(acc >= chance + LEARNED * (1 - chance))


def _summary(res: Results, runs: dict[str, Any], head: str) -> str:
    """``"0.97 held-out, chance 0.95"``: a head's mean held-out accuracy over ``runs``."""
    acc = np.mean([res.val_accuracy(r, head) for r in runs])
    chance = np.mean([_accuracy(res, r, head)[1] for r in runs])
    return f"{acc:.2f} held-out, chance {chance:.2f}"


def _hidden(layers: list[str]) -> list[str]:
    return [x for x in layers if x != "out"] or layers


def _count(runs: dict[str, dict[str, Any]]) -> str:
    """``"4 runs: 2 mlp, 2 conv1d"``."""
    models = [str(a.get("model")) for a in runs.values()]
    return f"{len(runs)} runs: " + ", ".join(f"{models.count(m)} {m}"
                                            for m in dict.fromkeys(models))


def _learned(res: Results, runs: dict[str, Any], a: str, b: str) -> str:
    return f"both learned ({_summary(res, runs, a)}; {_summary(res, runs, b)})"


def _bias(variant: str, pick: Pick, sign: int, models: tuple[str, ...] = ()
          ) -> Callable[[Results], Measure]:
    def measure(res: Results) -> Measure:
        runs, a_name, b_name = _contrast(res, variant, pick, models)
        ds = res.need("variance", "variance result (variance explained by each feature)")
        last = ds.sel(run=list(runs)).isel(checkpoint=-1)
        have = np.isfinite(last["r2"]).any(dim=["run", "feature"]).values  # these runs' layers
        layers = _hidden([str(x) for x, h in zip(ds["layer"].values, have, strict=True) if h])
        last = last.sel(layer=layers)
        a = last["r2"].sel(feature=a_name).mean("layer").values
        b = last["r2"].sel(feature=b_name).mean("layer").values
        folds = np.sqrt((last["r2_std"].sel(feature=[a_name, b_name]) ** 2).sum("feature")
                        .mean("layer").values)
        value, unc = mean_se(list(a - b), fallback=float(folds[0]))
        return directional(value, unc, sign,
                           f"R^2 {a_name} {a.mean():.3f} vs {b_name} {b.mean():.3f} (layers "
                           f"{', '.join(layers)}, last checkpoint, {_count(runs)}); "
                           + _learned(res, runs, a_name, b_name))

    return measure


def _pcs_units(units: bool, models: tuple[str, ...]) -> Callable[[Results], Measure]:
    """The complexity bias in the top principal components (``units`` false) or the single
    units of the hidden layers, read from the stored activations at the last checkpoint."""
    def measure(res: Results) -> Measure:
        runs, a_name, b_name = _contrast(res, "complexity", _by_bits, models)
        per_run: list[float] = []
        layer_values: list[float] = []
        shares: list[tuple[float, float]] = []
        for r in runs:
            rd = res.store.reader(r)
            labels = getattr(rd, "labels", None)  # a store of results only has none
            if labels is None or a_name not in labels or b_name not in labels:
                raise Untestable(f"the probe set of run {r} has no labels {a_name}, {b_name}")
            step = max(rd.complete_steps)
            values = []
            for layer in _hidden(list(rd.layers)):
                sa, sb, frac = pc_and_unit_bias(rd.read(layer, step), labels[a_name],
                                                labels[b_name])
                values.append(frac - 0.5 if units else sa - sb)
                shares.append((frac, 1 - frac) if units else (sa, sb))
            layer_values += values
            per_run.append(float(np.mean(values)))
        fallback = float(np.std(layer_values, ddof=1) / np.sqrt(len(layer_values))) \
            if len(layer_values) > 1 else float("nan")
        value, unc = mean_se(per_run, fallback=fallback)
        mean_a, mean_b = np.mean(shares, axis=0)
        what = (f"units in which {a_name} explains more variance {mean_a:.2f}, {b_name} "
                f"{mean_b:.2f}" if units else
                f"top {TOP_PCS} PCs' variance explained by {a_name} {mean_a:.3f} vs {b_name} "
                f"{mean_b:.3f}")
        return directional(value, unc, +1,
                           f"{what} (hidden layers, last checkpoint, {_count(runs)}); "
                           + _learned(res, runs, a_name, b_name))

    return measure


QUANTITY = ("variance of the hidden layers explained (held-out R^2, last checkpoint): {a} - "
            "{b}; +- s.e. over seeds")
SIMPLER = "Features that are simpler to compute tend to be represented more strongly"
ARCHITECTURES = ("The learned feature representations of various deep learning architectures "
                 "are systematically biased towards representing some features more strongly "
                 "than others, depending upon extraneous properties such as feature complexity")

CLAIMS = (
    Claim("complexity",
          f"{SIMPLER} than features that are more complex, even if all features are learned "
          "equally well.", f"{CITE}, abstract",
          QUANTITY.format(a="simpler (fewer bits)", b="more complex feature") + " (MLPs)",
          _bias("complexity", _by_bits, +1, models=("mlp",))),
    Claim("complexity_cnn", f"{ARCHITECTURES} (here: a CNN).", f"{CITE}, abstract",
          QUANTITY.format(a="simpler", b="more complex feature")
          + " (CNNs: 1-D convolutions over the input bits)",
          _bias("complexity", _by_bits, +1, models=("conv1d",))),
    Claim("complexity_transformer", f"{ARCHITECTURES} (here: a Transformer).",
          f"{CITE}, abstract",
          QUANTITY.format(a="simpler", b="more complex feature")
          + " (Transformers, token representations averaged)",
          _bias("complexity", _by_bits, +1, models=("transformer",))),
    Claim("top_pcs",
          f"{SIMPLER} and densely than features that are more complex: the bias shows in the "
          "top principal components of a layer.", f"{CITE}, abstract",
          f"variance of the top {TOP_PCS} principal components of each hidden layer explained "
          "(eta^2, variance-weighted) by the simpler - the more complex feature, last "
          "checkpoint, MLPs; +- s.e. over seeds",
          _pcs_units(False, ("mlp",))),
    Claim("single_units",
          f"{SIMPLER} and densely than features that are more complex: the bias shows in "
          "single units.", f"{CITE}, abstract",
          "fraction of the (non-constant) units of the hidden layers in which the simpler "
          "feature explains more variance than the more complex one, - 1/2; last checkpoint, "
          "MLPs; +- s.e. over seeds",
          _pcs_units(True, ("mlp",))),
    Claim("prevalence",
          "Learned representations are biased by the distribution of features over the "
          "inputs.", f"{CITE}, abstract",
          QUANTITY.format(a="common", b="rare feature") + " (either sign)",
          _bias("prevalence", _by_prevalence, 0)),
    Claim("order",
          "Features learned first tend to be represented more strongly than features "
          "learned later.", f"{CITE}, abstract",
          QUANTITY.format(a="feature trained first", b="the other"),
          _bias("order", _by_order, +1)),
    Claim("position",
          "In transformers, features decoded earlier in the output sequence also tend to be "
          "represented more strongly.", f"{CITE}, abstract",
          QUANTITY.format(a="first output token's feature", b="second's"),
          _bias("position", _by_position, +1, models=("transformer",))),
)
