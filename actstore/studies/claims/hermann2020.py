"""The claims of Hermann & Lampinen (NeurIPS 2020), "What shapes feature representations?
Exploring datasets, architectures, and training", measured on a study's probe and RSA results.

Runs are grouped by their task (the trained target feature); a run counts as trained on its
target when it learned it (``Results.learned``), and the reason names the tasks that were not.
The study's experiments are told apart by what their runs record (:func:`kind`): single-task
networks on held-out combinations (``main``), multi-task networks, networks trained with two
correlated features, and the easy/hard binary networks; each claim reads its own kind.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from actstore.studies._findings import (
    Claim,
    Measure,
    Results,
    Untestable,
    Z,
    directional,
    mean_se,
)
from actstore.studies.claims._measures import (
    decoded_layers,
    probe_accuracy_for,
    similarity_pairs,
    task_summary,
)

CITE = "Hermann & Lampinen, NeurIPS 2020"
TRIFEATURE = ("shape", "texture", "color")


def kind(res: Results, run: str) -> str:
    """Which experiment ``run`` belongs to: ``binary`` (the easy/hard bit task),
    ``multitask`` (several output heads), ``correlated`` (a correlated feature pair) or
    ``main``."""
    a = res.runs().get(run, {})
    if a.get("dataset") == "binary":
        return "binary"
    if len(((a.get("config") or {}).get("task") or {}).get("heads", [])) > 1:
        return "multitask"
    return "correlated" if (a.get("data") or {}).get("variant") == "correlated" else "main"


def _probes(res: Results) -> tuple[Any, Any, int]:
    return probe_accuracy_for(res, TRIFEATURE, "probe result of the Trifeature networks")


def _learned_runs(res: Results, acc: Any) -> tuple[dict[str, str], list[str]]:
    """Runs of the probe result that learned their task -> task; and why the others do not
    count (``"shape not learned (0.19 held-out, chance 0.10)"``)."""
    by_task: dict[str, list[str]] = {}
    for r in acc["run"].values.tolist():
        task = str(res.runs().get(r, {}).get("task", ""))
        if task in acc["feature"].values.tolist() and kind(res, r) == "main":
            by_task.setdefault(task, []).append(r)
    if not by_task:
        raise Untestable("no run of the probe result is trained on one of its features")
    learned, skipped = {}, []
    for task, runs in by_task.items():
        ok = [r for r in runs if res.learned(r, task)]
        learned.update(dict.fromkeys(ok, task))
        if len(ok) < len(runs):
            skipped.append(f"{task} not learned ({task_summary(res, runs, task)})")
    if not learned:
        raise Untestable("no target feature learned: " + "; ".join(skipped))
    return learned, skipped


def _change(acc: Any, se: Any, run: str, model: str, feature: str) -> tuple[float, float,
                                                                            float, float]:
    """Mean over the decoded layers of a feature's accuracy untrained and trained, the change,
    and the change's standard error over folds."""
    steps = acc["checkpoint"].values
    if steps[0] != 0:
        raise Untestable(f"the probes have no untrained checkpoint (first: step {steps[0]})")
    layers = decoded_layers(model, [str(x) for x in acc["layer"].values])
    a = acc.sel(run=run, feature=feature, layer=layers)
    s = se.sel(run=run, feature=feature, layer=layers)
    before, after = float(a.isel(checkpoint=0).mean()), float(a.isel(checkpoint=-1).mean())
    fold_se = float(np.sqrt((s.isel(checkpoint=0) ** 2 + s.isel(checkpoint=-1) ** 2).mean()))
    return before, after, after - before, fold_se


def _decoding_change(targets: bool) -> Callable[[Results], Measure]:
    def measure(res: Results) -> Measure:
        acc, se, _ = _probes(res)
        learned, skipped = _learned_runs(res, acc)
        feats = [str(f) for f in acc["feature"].values]
        changes: list[float] = []
        fold_ses: list[float] = []
        parts: dict[str, list[tuple[float, float]]] = {}
        flat: list[tuple[str, float, float]] = []
        for run, task in learned.items():
            model = str(res.runs()[run].get("model", ""))
            for f in ([task] if targets else [x for x in feats if x != task]):
                before, after, d, fse = _change(acc, se, run, model, f)
                if not targets:
                    chance = _probe_chance(res, run, f)
                    if before - chance <= 2 * fse:  # nothing to suppress
                        flat.append((f, before, chance))
                        continue
                changes.append(d)
                fold_ses.append(fse)
                parts.setdefault(f"{task}->{f}" if not targets else task, []).append(
                    (before, after))
        at_chance = ", ".join(
            f"{f} {np.mean([b for g, b, _ in flat if g == f]):.2f} vs chance "
            f"{np.mean([c for g, _, c in flat if g == f]):.2f}"
            for f in sorted({f for f, _, _ in flat}))
        if not changes:
            raise Untestable(
                f"no non-target feature is decodable above chance before training ({at_chance})"
                + ("; " + "; ".join(skipped) if skipped else ""))
        value, unc = mean_se(changes, fallback=fold_ses[0])
        evidence = "; ".join(
            f"{k}: {np.mean([b for b, _ in v]):.2f} untrained -> {np.mean([a for _, a in v]):.2f}"
            f" trained ({len(v)} run{'s' if len(v) > 1 else ''})" for k, v in parts.items())
        if at_chance:
            evidence += (f"; left out, within 2 s.e. of chance before training: "
                         f"{at_chance}")
        if skipped:
            evidence += "; excluded: " + "; ".join(skipped)
        return directional(value, unc, +1 if targets else -1, evidence)

    return measure


def _probe_chance(res: Results, run: str, feature: str) -> float:
    ds = res.need("probes", "probe result", lambda d: run in d["run"].values.tolist())
    return float(ds["chance"].sel(run=run, feature=feature))


def _rsa(res: Results) -> Any:
    return res.need("similarity", "RSA result (similarity with metric rsa)",
                    lambda ds: ds.attrs.get("metric") == "rsa")


#: the last complete step of each run, per Results (a run's reader is opened once)
_LAST_STEP: weakref.WeakKeyDictionary[Results, dict[str, int | None]] = (
    weakref.WeakKeyDictionary())


def _last(res: Results, rep: dict[str, Any]) -> bool:
    last = _LAST_STEP.setdefault(res, {})
    run = str(rep["run"])
    if run not in last:
        steps = [int(s) for s in res.store.reader(run).complete_steps]
        last[run] = steps[-1] if steps else None
    return last[run] is not None and int(rep["checkpoint"]) == last[run]


def _main_pair(res: Results, a: dict[str, Any], b: dict[str, Any]) -> bool:
    return kind(res, a["run"]) == "main" and kind(res, b["run"]) == "main"


def _same_vs_cross(res: Results) -> Measure:
    ds = _rsa(res)
    pairs = similarity_pairs(ds, lambda a, b: _last(res, a) and _last(res, b)
                             and _main_pair(res, a, b))
    per_run: dict[str, tuple[list[float], list[float]]] = {}
    for a, b, s in pairs:
        same, cross = per_run.setdefault(a["run"], ([], []))
        (same if a["task"] == b["task"] else cross).append(s)
    diffs = [float(np.mean(s) - np.mean(c)) for s, c in per_run.values() if s and c]
    if not diffs:
        raise Untestable("the RSA result needs two runs of one task and a run of another task")
    value, unc = mean_se(diffs)
    same_mean = np.mean([x for s, _ in per_run.values() for x in s])
    cross_mean = np.mean([x for _, c in per_run.values() for x in c])
    return directional(value, unc, +1, f"same task {same_mean:.3f}, different task "
                                       f"{cross_mean:.3f} "
                                       f"({len(diffs)} runs, last checkpoint)")


def _untrained_vs_cross(res: Results) -> Measure:
    ds = _rsa(res)
    steps = sorted({int(c) for c in ds["checkpoint_a"].values})
    if 0 not in steps:
        raise Untestable(f"the RSA result holds step {', '.join(map(str, steps))} only; this "
                         "claim needs the untrained networks (step 0) in it too")
    untrained: dict[str, list[float]] = {}
    cross: dict[str, list[float]] = {}
    for a, b, s in similarity_pairs(ds, lambda a, b: _last(res, a) and _main_pair(res, a, b)):
        if int(b["checkpoint"]) == 0 and b["run"] != a["run"]:
            untrained.setdefault(a["run"], []).append(s)
        elif _last(res, b) and a["task"] != b["task"]:
            cross.setdefault(a["run"], []).append(s)
    diffs = [float(np.mean(untrained[r]) - np.mean(cross[r])) for r in untrained if r in cross]
    if not diffs:
        raise Untestable("the RSA result needs runs of two tasks and their untrained networks")
    value, unc = mean_se(diffs)
    to_untrained = np.mean([x for v in untrained.values() for x in v])
    to_cross = np.mean([x for v in cross.values() for x in v])
    return directional(value, unc, +1, f"to untrained {to_untrained:.3f}, to other task "
                                       f"{to_cross:.3f} ({len(diffs)} runs)")


def _decoded(res: Results, acc: Any, run: str, step: int) -> Any:
    """Accuracy per feature of ``run`` at checkpoint index ``step``, mean over its decoded
    layers."""
    layers = decoded_layers(str(res.runs()[run].get("model", "")),
                            [str(x) for x in acc["layer"].values])
    return acc.sel(run=run, layer=layers).isel(checkpoint=step).mean("layer")


def _untrained(res: Results, acc: Any, runs: list[str]) -> dict[str, float]:
    """Each feature's accuracy in the untrained networks ``runs`` (decoded layers, first
    checkpoint), easiest first."""
    if not runs:
        raise Untestable("no runs to read the untrained networks from")
    if int(acc["checkpoint"].values[0]) != 0:
        raise Untestable(f"the probes have no untrained checkpoint (first: step "
                         f"{int(acc['checkpoint'].values[0])})")
    mean = np.mean([_decoded(res, acc, r, 0).values for r in runs], axis=0)
    order = np.argsort(-mean, kind="stable")
    return {str(acc["feature"].values[j]): float(mean[j]) for j in order}


def _fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in d.items())


def _redundant(res: Results) -> Measure:
    """Trained on one feature of a correlated pair: which of the two the network's output
    layer carries (decoded on the independent probe set) when the pair is redundant, against
    networks trained with the two independent; signed by which the untrained networks decode
    better."""
    acc, se, _ = _probes(res)
    runs = [str(r) for r in acc["run"].values]
    corr = [r for r in runs if kind(res, r) == "correlated"]
    if not corr:
        raise Untestable("no runs trained with a correlated feature pair (variants corr_p*)")
    data = {r: res.runs()[r].get("data") or {} for r in corr}
    target = str(res.runs()[corr[0]].get("task", ""))
    pair = data[corr[0]].get("correlate", [])
    other = next((str(f) for f in pair if f != target), "")
    corr = [r for r in corr if res.runs()[r].get("task") == target  # one design
            and data[r].get("correlate") == pair]
    if other not in acc["feature"].values.tolist():
        raise Untestable(f"the probes do not decode the correlated feature {other!r}")
    ps = sorted({float(d.get("p", np.nan)) for d in data.values()})
    top = [r for r in corr if float(data[r].get("p", np.nan)) == ps[-1]]
    if len(ps) > 1:
        base = [r for r in corr if float(data[r].get("p", np.nan)) == ps[0]]
        base_label = f"p={ps[0]:g}"
    else:
        base = [r for r in runs if kind(res, r) == "main"
                and str(res.runs()[r].get("task")) == target]
        base_label = f"independent ({target} runs of held-out combinations)"
    if not base:
        raise Untestable(f"no networks trained on {target} with {other} independent to "
                         f"compare with p={ps[-1]:g}")
    layer = "out" if "out" in acc["layer"].values.tolist() else str(acc["layer"].values[-1])

    def pref(group: list[str]) -> tuple[float, float, str]:
        """Mean (other - target) accuracy at ``layer``, its s.e., and the numbers."""
        a = acc.sel(run=group, layer=layer).isel(checkpoint=-1)
        s = se.sel(run=group, layer=layer).isel(checkpoint=-1)
        d = (a.sel(feature=other) - a.sel(feature=target)).values
        fold = float(np.sqrt(np.mean(s.sel(feature=other) ** 2 + s.sel(feature=target) ** 2)))
        m, u = mean_se(list(d), fallback=fold)
        return m, u, (f"{other} {float(a.sel(feature=other).mean()):.2f}, {target} "
                      f"{float(a.sel(feature=target).mean()):.2f} ({len(group)} run"
                      f"{'s' if len(group) > 1 else ''})")

    if not all(res.learned(r, target) for r in top):
        raise Untestable(f"the networks with p={ps[-1]:g} did not learn their task "
                         f"({task_summary(res, top, target)})")
    first = _untrained(res, acc, top + base)
    gap = first[other] - first[target]
    gap_se = float(np.sqrt(2 * (se.sel(run=top + base, feature=[other, target])
                                .isel(checkpoint=0) ** 2).mean()))
    if abs(gap) <= Z * gap_se:
        raise Untestable(f"the untrained networks decode {other} and {target} alike "
                         f"({_fmt(first)}, within {Z:g} s.e.): no preference to reflect")
    (p_top, u_top, e_top), (p_base, u_base, e_base) = pref(top), pref(base)
    sign = 1.0 if gap > 0 else -1.0
    value = sign * (p_top - p_base)
    trend = "; ".join(f"p={p:g}: " + pref([r for r in corr
                                             if float(data[r].get("p", np.nan)) == p])[2]
                      for p in ps[1:-1])
    return directional(value, float(np.hypot(u_top, u_base)), +1,
                       f"untrained networks decode {_fmt({k: first[k] for k in (other, target)})}"
                       f"; layer {layer}, last checkpoint: p={ps[-1]:g}: {e_top}; {base_label}: "
                       f"{e_base}" + (f"; {trend}" if trend else ""))


def _binary_runs(res: Results, acc: Any) -> dict[float, list[str]]:
    out: dict[float, list[str]] = {}
    for r in (str(x) for x in acc["run"].values):
        params = ((res.runs()[r].get("config") or {}).get("dataset") or {}).get("params") or {}
        if kind(res, r) == "binary" and "easy_predictivity" in params:
            out.setdefault(float(params["easy_predictivity"]), []).append(r)
    return dict(sorted(out.items()))


def _easy_suppresses_hard(res: Results) -> Measure:
    """The hard feature's decodability in the trained networks when the easy feature is useless
    (lowest easy predictivity) minus when it is weakly predictive (the highest easy
    predictivity below the hard feature's)."""
    acc, se, _ = probe_accuracy_for(res, ("hard",), "probe result of the binary networks")
    by_p = _binary_runs(res, acc)
    if not by_p:
        raise Untestable("no easy/hard binary networks (variants easy*) in the probe result")
    some = next(iter(by_p.values()))[0]
    hard_p = float(res.runs()[some]["config"]["dataset"]["params"]["hard_predictivity"])
    weak = [p for p in by_p if p < hard_p]
    if len(weak) < 2:
        raise Untestable(f"needs two easy predictivities below the hard feature's {hard_p:g} "
                         f"(the lowest as reference); the runs have {', '.join(map(str, by_p))}")
    low, high = weak[0], weak[-1]
    not_learned = [r for p in (low, high) for r in by_p[p] if not res.learned(r, "label")]
    if not_learned:
        raise Untestable(f"label not learned by {', '.join(not_learned)} "
                         f"({task_summary(res, not_learned, 'label')})")

    layers = decoded_layers(str(res.runs()[some].get("model", "")),
                            [str(x) for x in acc["layer"].values])
    hard = {r: float(_decoded(res, acc, r, -1).sel(feature="hard"))
            for rs in by_p.values() for r in rs}
    fold = se.sel(run=by_p[low] + by_p[high], layer=layers, feature="hard").isel(checkpoint=-1)
    seed = {r: res.runs()[r].get("seed") for r in by_p[low] + by_p[high]}
    value, unc = mean_se([hard[x] - hard[y] for x in by_p[low] for y in by_p[high]
                          if seed[x] == seed[y]], fallback=float(np.sqrt(2 * (fold ** 2).mean())))
    per_p = ", ".join(f"{p:g}: {np.mean([hard[r] for r in rs]):.2f}" for p, rs in by_p.items())
    return directional(value, unc, +1,
                       f"hard feature (predictivity {hard_p:g}) decoded from "
                       f"{'/'.join(layers)} at the last checkpoint, by easy predictivity: "
                       f"{per_p}; label {task_summary(res, by_p[high], 'label')} at easy "
                       f"{high:g}")


def _similarity_to_tasks(res: Results, ds: Any) -> dict[tuple[str, str], dict[str, list[float]]]:
    """RSA at the last checkpoint of each multi-task (run, layer) to the single-task (main)
    networks, by their task."""
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for a, b, s in similarity_pairs(ds, lambda a, b: _last(res, a) and _last(res, b)):
        if kind(res, a["run"]) == "multitask" and kind(res, b["run"]) == "main":
            out.setdefault((a["run"], a["layer"]), {}).setdefault(b["task"], []).append(s)
    return out


def _heads(res: Results, runs: list[str]) -> str:
    """``"shape 0.07, texture 0.07, color 0.81 held-out"``: mean accuracy of each Trifeature
    output of ``runs``."""
    return ", ".join(f"{f} {np.mean([res.val_accuracy(r, f) for r in runs]):.2f}"
                     for f in TRIFEATURE) + " held-out"


def _multitask_easy(res: Results) -> Measure:
    """RSA of each multi-task network that learned the easiest feature and another one to the
    single-task networks of the easiest feature minus the most similar other task."""
    ds = _rsa(res)
    sims = _similarity_to_tasks(res, ds)
    if not sims:
        raise Untestable("the RSA result has no multi-task network (variant multitask) at its "
                         "last checkpoint with single-task networks to compare")
    acc, _, _ = _probes(res)
    tasks = sorted({t for v in sims.values() for t in v})
    main = [str(r) for r in acc["run"].values if kind(res, str(r)) == "main"]
    first = {f: v for f, v in _untrained(res, acc, main).items() if f in tasks}
    if len(first) < 2:
        raise Untestable(f"needs single-task networks of two tasks; RSA has {', '.join(tasks)}")
    easy = next(iter(first))
    multi = sorted({r for r, _ in sims})
    both = [r for r in multi if res.learned(r, easy)
            and any(res.learned(r, f) for f in first if f != easy)]
    if not both:
        raise Untestable(f"no multi-task network learned both the easiest feature ({easy}) "
                         f"and a harder one ({_heads(res, multi)}, chance "
                         f"{res.chance(multi[0], easy):.2f})")
    diffs = [float(np.mean(v[easy]) - max(np.mean(x) for t, x in v.items() if t != easy))
             for (r, _), v in sims.items() if r in both and easy in v and len(v) > 1]
    value, unc = mean_se(diffs)
    kept = [v for (r, _), v in sims.items() if r in both]
    per = ", ".join(f"{t} {np.mean([x for v in kept for x in v.get(t, [])]):.3f}"
                    for t in first)
    return directional(value, unc, +1,
                       f"easiest feature untrained: {easy} ({_fmt(first)}); multi-task RSA to "
                       f"single-task networks of {per} ({len(diffs)} run x layer); multi-task "
                       f"{_heads(res, both)}")


def _consistency(res: Results) -> Measure:
    """RSA between seeds of the task whose feature is easiest (most decodable untrained) minus
    between seeds of the hardest, among tasks learned by two seeds or more."""
    ds = _rsa(res)
    acc, _, _ = _probes(res)
    main = [str(r) for r in acc["run"].values if kind(res, str(r)) == "main"]
    of: dict[str, list[str]] = {}
    for r in main:
        of.setdefault(str(res.runs()[r].get("task")), []).append(r)
    ok = {r for t, rs in of.items() for r in rs if res.learned(r, t)}
    per: dict[tuple[str, str], list[float]] = {}
    for a, b, s in similarity_pairs(ds, lambda a, b: _last(res, a) and _last(res, b)
                                    and a["run"] in ok and b["run"] in ok):
        if a["task"] == b["task"] and a["run"] < b["run"]:
            per.setdefault((a["task"], a["layer"]), []).append(s)
    tasks = sorted({t for t, _ in per})
    summary = "; ".join(f"{t}: {task_summary(res, rs, t)}" for t, rs in of.items()) or (
        "no single-task networks")
    if len(tasks) < 2:
        raise Untestable("needs two tasks each learned by two seeds, in the RSA result at the "
                         f"last checkpoint; learned by two: {', '.join(tasks) or 'none'} "
                         f"({summary})")
    first = {f: v for f, v in _untrained(res, acc, main).items() if f in tasks}
    easy, hard = next(iter(first)), list(first)[-1]
    layers = sorted({lay for t, lay in per if t == easy} & {lay for t, lay in per if t == hard})
    diffs = [float(np.mean(per[(easy, lay)]) - np.mean(per[(hard, lay)])) for lay in layers]
    value, unc = mean_se(diffs)
    cons = ", ".join(f"{t} {np.mean([x for (u, _), v in per.items() if u == t for x in v]):.3f}"
                     for t in first)
    return directional(value, unc, +1,
                       f"untrained decodability {_fmt(first)}; RSA between seeds of a task at "
                       f"the last checkpoint: {cons} ({len(layers)} layers); {summary}")


CLAIMS = (
    Claim("target_enhanced",
          "Over training, task-relevant features are enhanced.", f"{CITE}, abstract",
          "held-out accuracy of the target feature in the decoded layers, trained - untrained;"
          " +- s.e. over runs that learned their target",
          _decoding_change(targets=True)),
    Claim("nontarget_suppressed",
          "Over training, task-irrelevant features are partially suppressed.",
          f"{CITE}, abstract",
          "held-out accuracy of the non-target features in the decoded layers, trained - "
          "untrained (features decodable before training); +- s.e. over runs and features",
          _decoding_change(targets=False)),
    Claim("rsa_same_task",
          "Models trained on the same task are more similar to each other than to models "
          "trained on a different task.", f"{CITE}, summary (main findings)",
          "RSA at the last checkpoint, per run: mean similarity to the other runs of its task "
          "- to runs of other tasks (same model and layer); +- s.e. over runs",
          _same_vs_cross),
    Claim("rsa_untrained",
          "Models have greater representational similarity to an untrained model than to "
          "models trained on a different task.", f"{CITE}, abstract",
          "RSA per trained run: mean similarity to untrained networks - to networks trained "
          "on another task; +- s.e. over runs", _untrained_vs_cross),
    Claim("redundant_preference",
          "When two features redundantly predict the labels, the model preferentially "
          "represents one, and its preference reflects what was most linearly decodable from "
          "the untrained model.", f"{CITE}, abstract",
          "trained on shape with colour paired to it (highest p): output-layer accuracy of the "
          "feature the untrained networks decode better minus the other's, on independent probe"
          " images, minus the same with the two independent; +- s.e.",
          _redundant),
    Claim("easy_suppresses_hard",
          "In some cases, an easier, weakly predictive feature can suppress a more strongly "
          "predictive, but more difficult one.", f"{CITE}, abstract",
          "binary task: accuracy of the hard feature in the last hidden layer with the easy "
          "feature useless - with it weakly predictive (the highest easy predictivity below "
          "the hard feature's); +- s.e.", _easy_suppresses_hard),
    Claim("multitask_easy",
          "Models trained to recognize both easy and hard features learn representations most "
          "similar to models that use only the easy feature.", f"{CITE}, abstract",
          "RSA of a multi-task network (shape, texture, colour heads) to single-task networks of"
          " the easiest feature (most decodable untrained) - to the most similar other task; "
          "+- s.e. over runs x layers", _multitask_easy),
    Claim("consistency_easy",
          "Easy features lead to more consistent representations across model runs than do "
          "hard features.", f"{CITE}, abstract",
          "RSA between seeds of one task at the last checkpoint: the easiest task (feature most "
          "decodable untrained) - the hardest; +- s.e. over layers", _consistency),
)
