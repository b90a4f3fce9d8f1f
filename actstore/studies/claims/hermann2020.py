"""The claims of Hermann & Lampinen (NeurIPS 2020), "What shapes feature representations?
Exploring datasets, architectures, and training", measured on a study's probe and RSA results.

Runs are grouped by their task (the trained target feature); a run counts as trained on its
target when it learned it (``Results.learned``), and the reason names the tasks that were not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from actstore.studies._findings import Claim, Measure, Results, Untestable, directional, mean_se
from actstore.studies.claims._measures import (
    decoded_layers,
    probe_accuracy,
    similarity_pairs,
    task_summary,
)

CITE = "Hermann & Lampinen, NeurIPS 2020"


def _learned_runs(res: Results, acc: Any) -> tuple[dict[str, str], list[str]]:
    """Runs of the probe result that learned their task -> task; and why the others do not
    count (``"shape not learned (0.19 held-out, chance 0.10)"``)."""
    by_task: dict[str, list[str]] = {}
    for r in acc["run"].values.tolist():
        task = str(res.runs().get(r, {}).get("task", ""))
        if task in acc["feature"].values.tolist():
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
        acc, se, _ = probe_accuracy(res)
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
    ds = res.need("probes", "probe result")
    return float(ds["chance"].sel(run=run, feature=feature))


def _rsa(res: Results) -> Any:
    return res.need("similarity", "RSA result (similarity with metric rsa)",
                    lambda ds: ds.attrs.get("metric") == "rsa")


def _last(res: Results, rep: dict[str, Any]) -> bool:
    steps = [int(s) for s in res.store.reader(rep["run"]).complete_steps]
    return bool(steps) and int(rep["checkpoint"]) == steps[-1]


def _same_vs_cross(res: Results) -> Measure:
    ds = _rsa(res)
    pairs = similarity_pairs(ds, lambda a, b: _last(res, a) and _last(res, b))
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
    for a, b, s in similarity_pairs(ds, lambda a, b: _last(res, a)):
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
)
