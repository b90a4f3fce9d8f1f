"""The claims of Lampinen, Chan & Hermann (TMLR 2024), "Learned feature representations are
biased by complexity, learning order, position, and more", measured on a study's variance
result: for each sweep variant, two features of matched computational role, and the share of
each hidden layer's variance that each explains at the last checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from actstore.studies._findings import Claim, Measure, Results, Untestable, directional, mean_se
from actstore.studies.claims._measures import task_summary

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


def _bias(variant: str, pick: Pick, sign: int, models: tuple[str, ...] = ()
          ) -> Callable[[Results], Measure]:
    def measure(res: Results) -> Measure:
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
        unlearned = [h for h in (a_name, b_name) if not all(res.learned(r, h) for r in runs)]
        if unlearned:
            raise Untestable("; ".join(f"{h} not learned ({task_summary(res, list(runs), h)})"
                                       for h in unlearned))
        layers = [str(x) for x in ds["layer"].values if str(x) != "out"] or \
            [str(x) for x in ds["layer"].values]
        last = ds.sel(run=list(runs), layer=layers).isel(checkpoint=-1)
        a = last["r2"].sel(feature=a_name).mean("layer").values
        b = last["r2"].sel(feature=b_name).mean("layer").values
        folds = np.sqrt((last["r2_std"].sel(feature=[a_name, b_name]) ** 2).sum("feature")
                        .mean("layer").values)
        value, unc = mean_se(list(a - b), fallback=float(folds[0]))
        return directional(value, unc, sign,
                           f"R^2 {a_name} {a.mean():.3f} vs {b_name} {b.mean():.3f} (layers "
                           f"{', '.join(layers)}, last checkpoint, {len(runs)} runs); both "
                           f"learned ({task_summary(res, list(runs), a_name)}; "
                           f"{task_summary(res, list(runs), b_name)})")

    return measure


QUANTITY = ("variance of the hidden layers explained (held-out R^2, last checkpoint): {a} - "
            "{b}; +- s.e. over seeds")

CLAIMS = (
    Claim("complexity",
          "Features that are simpler to compute tend to be represented more strongly than "
          "features that are more complex, even if all features are learned equally well.",
          f"{CITE}, abstract",
          QUANTITY.format(a="simpler (fewer bits)", b="more complex feature"),
          _bias("complexity", _by_bits, +1)),
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
