"""What a study will do before it runs: its resolved settings, a description for ``--help``,
and a cost estimate from training steps timed on this machine."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

from actstore.studies._spec import SCALES, Study, load_study

__all__ = ["describe_study", "estimate_cost", "study_settings"]

#: batch size at which a step is timed (larger batches are scaled from it)
TIMED_BATCH = 16
#: above this many estimated seconds of training, the plan says to use a scheduler or a GPU
HOURS = 3600.0


def study_settings(study: Study) -> dict[str, Any]:
    """The resolved settings of ``study``: its runs' datasets, models, seeds, training and
    capture settings, and each analysis with its options (JSON-ready)."""
    runs = study.sweep.runs
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        key = f"{r.dataset}-{r.task}-{r.model}" + (f"-{r.variant}" if r.variant else "")
        g = groups.setdefault(key, {"dataset": r.dataset, "dataset_params": r.dataset_params,
                                    "task": r.task, "model": r.model,
                                    "model_params": r.model_params, "variant": r.variant,
                                    "steps": r.train.steps, "checkpoints": r.train.checkpoints,
                                    "batch_size": r.train.batch_size, "lr": r.train.lr,
                                    "seeds": []})
        g["seeds"].append(r.seed)
    return {"study": study.name, "paper": study.paper, "scale": study.scale,
            "description": study.description, "runs": len(runs), "groups": groups,
            "analyses": study.analyses}


def _step_seconds(spec: Any, n_steps: int) -> float:
    """Seconds per training step of ``spec``'s model: forward, backward and an Adam update on
    a random batch of its input. The median of ``n_steps`` steps or more (up to half a second
    of steps; the first, which allocates, is not counted); large batches are timed at
    :data:`TIMED_BATCH` samples and scaled linearly (a CPU step is about linear in the batch)."""
    import torch

    from actstore.training import build_model, task_targets

    ds = spec.make_dataset()
    inp = ds.input_spec()
    net = build_model(spec.model, inp, ds.heads(task_targets(spec.task, ds)),
                      spec.model_params)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    batch = min(spec.train.batch_size, TIMED_BATCH)
    x = torch.randint(0, 256 if inp.kind == "image" else 2, (batch, *inp.shape),
                      dtype=torch.uint8)
    times: list[float] = []
    # fast models: at least n_steps + 1 steps and half a second of them; slow ones (a 224 px
    # ResNet on a CPU): n_steps steps, the first of which allocates
    while len(times) <= n_steps or (sum(times[1:]) < 0.5 and len(times) < 50):
        if len(times) >= n_steps and sum(times) > 2.0:
            break
        t = time.perf_counter()
        opt.zero_grad()
        net(x).float().square().mean().backward()
        opt.step()
        times.append(time.perf_counter() - t)
    later = times[1:] or times
    return sorted(later)[len(later) // 2] * spec.train.batch_size / batch


def estimate_cost(study: Study, n_steps: int = 2) -> dict[str, Any]:
    """Training time of ``study`` on this machine (one process), from timed steps of each
    distinct model and input (model compute only: rendering data, evaluation, capture and the
    analyses come on top).

    Returns
    -------
    dict
        ``step_s`` (seconds per step by run group), ``train_s`` (all runs, one after
        another), ``advice`` (a sentence, empty when the estimate is under an hour).
    """
    seen: dict[str, float] = {}
    timed: dict[str, float] = {}  # runs that differ in their task only share a timing
    total = 0.0
    for r in study.sweep.runs:
        key = f"{r.dataset}-{r.task}-{r.model}" + (f"-{r.variant}" if r.variant else "")
        same = json.dumps([r.dataset, r.dataset_params, r.model, r.model_params,
                           r.train.batch_size], sort_keys=True, default=str)
        if same not in timed:
            timed[same] = _step_seconds(r, n_steps)
        seen[key] = timed[same]
        total += seen[key] * r.train.steps
    advice = ""
    if total > HOURS:
        advice = (f"about {total / HOURS:.0f} hours of training on this machine: run it on a "
                  "GPU (device = \"cuda\" under [sweep.train] of a copy of the study file) or "
                  "spread it over a Dask cluster with --scheduler")
    return {"step_s": {k: round(v, 4) for k, v in seen.items()}, "train_s": round(total, 1),
            "advice": advice}


def describe_study(name: str) -> str:
    """A study's paper, what it reproduces, its claims and its scales (``study NAME --help``)."""
    from actstore.studies.claims import CLAIMS

    small = load_study(name, "small")
    lines = [f"{small.name}: {small.description}", f"Paper: {small.paper}", ""]
    head = []  # the study file's opening comment: what it reproduces, and how
    for line in Path(small.source).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("# ").rstrip())
    if head:
        lines += [textwrap.fill(" ".join(head), 88), ""]
    claims = CLAIMS.get(small.name, ())
    if claims:
        lines.append("Claims measured in its findings table:")
        lines += [textwrap.fill(f"- {c.statement} ({c.citation})", 88, initial_indent="  ",
                                subsequent_indent="    ") for c in claims]
        lines.append("")
    for scale in SCALES:
        st = small if scale == "small" else load_study(name, scale)
        s = study_settings(st)
        models = sorted({g["model"] for g in s["groups"].values()})
        steps = sorted({g["steps"] for g in s["groups"].values()})
        lines.append(f"--scale {scale}: {s['runs']} runs ({', '.join(models)}; "
                     f"{'/'.join(map(str, steps))} steps); analyses: "
                     + ", ".join(f"{a['kind']}:{a['name']}" for a in st.analyses))
    lines += ["", f"Plan and cost: actstore study {small.name} --scale paper --dry-run",
              "Options: actstore study --help"]
    return "\n".join(lines)
