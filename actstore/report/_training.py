"""The training curves of a report: loss and accuracy at every checkpoint of every trained
run, as the trainer recorded them in the run's ``metrics`` attribute (training-set and
validation-set evaluations; the validation set holds the held-out combinations where the
dataset has them). Runs without recorded metrics (dumped or ingested runs) are left out."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actstore.report import _layout as L

__all__ = ["Curves", "plot_training", "training_curves", "training_section"]


@dataclass(frozen=True)
class Curves:
    """The recorded training curves of one run.

    Attributes
    ----------
    run, model, variant, task : str
        The run and what it trained (``variant`` ``""`` outside a study's variants).
    steps : list of int
        Checkpoint steps.
    loss : dict
        ``{"train": [...], "val": [...]}``: mean cross-entropy over the heads per checkpoint.
    acc : dict
        ``{"train": {head: [...]}, "val": {head: [...]}}``.
    chance : dict
        ``{head: 1 / n_classes}``.
    """

    run: str
    model: str
    variant: str
    task: str

    @property
    def label(self) -> str:
        """The task, and the variant where there is one: ``shape [main]``."""
        return f"{self.task} [{self.variant}]" if self.variant else self.task
    steps: list[int]
    loss: dict[str, list[float]]
    acc: dict[str, dict[str, list[float]]]
    chance: dict[str, float]


def _floats(v: Any, n: int) -> list[float] | None:
    """``n`` numbers (a non-finite value is stored as a string such as ``"NaN"``), or None."""
    if not isinstance(v, list) or len(v) != n:
        return None
    try:
        return [float(x) for x in v]
    except (TypeError, ValueError):
        return None


def _curves(run: str, attrs: dict[str, Any]) -> Curves | None:
    m = attrs.get("metrics")
    if not isinstance(m, dict) or not isinstance(m.get("step"), list) or not m["step"]:
        return None
    try:
        steps = [int(s) for s in m["step"]]
    except (TypeError, ValueError):
        return None
    n = len(steps)
    loss: dict[str, list[float]] = {}
    acc: dict[str, dict[str, list[float]]] = {}
    for part in ("train", "val"):
        rec: dict[str, Any] = m[part] if isinstance(m.get(part), dict) else {}
        lv = _floats(rec.get("loss"), n)
        if lv is not None:
            loss[part] = lv
        heads: dict[str, Any] = rec["acc"] if isinstance(rec.get("acc"), dict) else {}
        acc[part] = {str(h): a for h, v in heads.items() if (a := _floats(v, n)) is not None}
    cfg: dict[str, Any] = attrs["config"] if isinstance(attrs.get("config"), dict) else {}
    task_cfg = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
    chance = {}
    for h in (task_cfg or {}).get("heads") or []:
        k = h.get("n_classes") if isinstance(h, dict) else None
        if isinstance(k, int) and k > 0:
            chance[str(h.get("name"))] = 1.0 / k
    task, variant = attrs.get("task"), attrs.get("variant")
    return Curves(run=run, model=L.model_label(attrs.get("model")) or "-",
                  variant=str(variant or ""), task="-" if task is None else str(task),
                  steps=steps, loss=loss, acc=acc, chance=chance)


def training_curves(store: Any) -> list[Curves]:
    """The training curves of every run of ``store`` (an open store) that recorded them."""
    out = []
    for rid in store.run_ids():
        c = _curves(rid, dict(store.reader(rid).attrs))
        if c is not None:
            out.append(c)
    return out


def plot_training(curves: list[Curves], path: str) -> str:
    """Loss (training set solid, validation set dashed) and validation accuracy per head
    (chance dotted) against the training step, one line per run, one row of panels per
    model; runs of one variant, task and head share a colour.

    Parameters
    ----------
    curves : list of Curves
        From :func:`training_curves` (not empty).
    path : str
        PNG file to write (its folder must exist).

    Returns
    -------
    str
        ``path``.
    """
    plt = L.pyplot()
    models = list(dict.fromkeys(c.model for c in curves))
    fig, axes = plt.subplots(len(models), 2, figsize=(min(L.MAX_WIDTH, 11.0),
                                                      3.6 * len(models)), squeeze=False)
    for (ax_l, ax_a), model in zip(axes, models, strict=True):
        mine = [c for c in curves if c.model == model]
        keys = list(dict.fromkeys((c.label, h) for c in mine for h in c.acc.get("val", {})))
        colour = {k: f"C{i % 10}" for i, k in enumerate(keys)}
        tcolour = {t: f"C{i % 10}" for i, t in enumerate(dict.fromkeys(c.label for c in mine))}
        labelled: set[Any] = set()
        for c in mine:
            for part, style in (("train", "-"), ("val", "--")):
                if part in c.loss:
                    lab = f"{c.label} ({part})" if (c.label, part) not in labelled else None
                    labelled.add((c.label, part))
                    ax_l.plot(c.steps, c.loss[part], style, color=tcolour[c.label],
                              marker=".", label=lab)
            for h, v in c.acc.get("val", {}).items():
                k = (c.label, h)
                lab = (c.label if c.task == h else f"{c.label}: {h}") if k not in labelled \
                    else None
                labelled.add(k)
                ax_a.plot(c.steps, v, color=colour[k], marker=".", label=lab)
        for p in sorted({p for c in mine for p in c.chance.values()}):
            ax_a.axhline(p, color="grey", linestyle=":", linewidth=1)
        steps = sorted({s for c in mine for s in c.steps})
        for ax in (ax_l, ax_a):
            L.checkpoint_axis(ax, steps)
            ax.set_xlim(-0.3, max(steps) * 1.3 + 0.3)  # no room for negative steps
            ax.legend(fontsize=7)
        ax_l.set_ylabel("cross-entropy (mean over heads)")
        ax_l.set_title(f"{model}: loss, training set (solid), validation set (dashed)",
                       fontsize=9)
        ax_a.set_ylabel("validation accuracy")
        ax_a.set_ylim(0, 1.02)
        ax_a.set_title(f"{model}: validation accuracy per head (dotted: chance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "-"


def _table(curves: list[Curves]) -> str:
    e = html.escape
    head = ("<tr><th>run</th><th>head</th><th>chance</th><th>validation accuracy at the "
            "checkpoints</th><th>final training acc.</th><th>final validation acc.</th></tr>")
    rows = []
    for c in curves:
        for h, v in c.acc.get("val", {}).items():
            tr = c.acc.get("train", {}).get(h)
            over = " &rarr; ".join(f"{_fmt(a)} <small>({s})</small>"
                                   for s, a in zip(c.steps, v, strict=True))
            rows.append(
                f"<tr><td>{e(c.run)}</td><td>{e(h)}</td>"
                f"<td>{_fmt(c.chance.get(h, np.nan))}</td>"
                f'<td style="text-align:left">{over}</td>'
                f"<td>{_fmt(tr[-1]) if tr else '-'}</td><td>{_fmt(v[-1])}</td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def training_section(store: Any, folder: Path) -> tuple[str, list[str], list[str]]:
    """HTML of the training curves of ``store`` and the figure it draws into ``folder``.

    Returns
    -------
    (html, figures, problems)
        ``html`` is ``""`` when no run recorded training metrics; a figure that cannot be
        drawn is a problem (with its reason), not an error.
    """
    curves = training_curves(store)
    if not curves:
        return "", [], []
    figures, problems, img = [], [], ""
    path = folder / "training-curves.png"
    try:
        plot_training(curves, str(path))
        figures.append(str(path))
        img = f'<img src="{path.name}" alt="training curves">'
    except Exception as exc:  # a figure that cannot be drawn is reported, not fatal
        problems.append(f"training curves: {type(exc).__name__}: {exc}")
    text = (f"<p>Loss and accuracy of {len(curves)} trained runs at each checkpoint (step "
            "0 is the untrained network), evaluated by the trainer on samples of the training "
            "and validation sets; the step of each checkpoint in brackets.</p>")
    return ('<h2 id="training">Training curves</h2>' + text + img + _table(curves),
            figures, problems)
