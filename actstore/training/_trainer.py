"""The trainer: a config dataclass, an explicit loop, callbacks at named events.

One loop trains every model of the zoo on every task: the loss is the mean of the heads'
cross-entropies (equal weights), except during the first ``first_steps`` steps of a
learning-order run, when only ``first_head`` is trained. Checkpoints are taken *before* the
optimiser step of their step number, so step 0 is the untrained network and step ``steps``
the final one. At each checkpoint the trainer evaluates every head and fires
``on_checkpoint``, where the run writer records activations.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from actstore._errors import ActstoreError
from actstore.training._data import Split, TaskData

__all__ = ["EVENTS", "LR_SCHEDULES", "OPTIMIZERS", "TrainConfig", "Trainer", "lr_factor",
           "schedule"]

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], float, float], torch.optim.Optimizer]

#: Optimisers by name: ``make(parameters, lr, weight_decay)``.
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd),
    "adamw": lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd),
    "sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd),
}

#: Events a callback can be attached to.
EVENTS = ("on_step", "on_checkpoint", "on_end")

#: Learning-rate schedules after the warmup: constant, or cosine decay to 0 at the last step.
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, total_steps: int, warmup: int = 0, kind: str = "constant") -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    A linear warmup over the first ``warmup`` steps (``(step + 1) / warmup``), then
    ``kind``: ``constant`` (1) or ``cosine`` (``(1 + cos(pi * t / T)) / 2`` with ``t`` the
    steps since the warmup and ``T = total_steps - warmup``, the annealing of
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` with ``eta_min = 0``).
    """
    if kind not in LR_SCHEDULES:
        raise ActstoreError(f"unknown lr_schedule {kind!r}; valid: {', '.join(LR_SCHEDULES)}")
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def schedule(total_steps: int, n: int) -> list[int]:
    """``n`` checkpoint steps from 0 to ``total_steps``, log-spaced in between.

    Parameters
    ----------
    total_steps : int
        Number of optimiser steps of the run.
    n : int
        Number of checkpoints wanted (at least 2: the untrained and the final network).

    Returns
    -------
    list of int
        Sorted, unique, always containing 0 and ``total_steps``; ``min(n, total_steps + 1)``
        entries.
    """
    if total_steps < 0:
        raise ActstoreError(f"total steps must be >= 0, got {total_steps}")
    if n < 1 or (n < 2 and total_steps > 0):
        raise ActstoreError(f"need at least 2 checkpoints (step 0 and the last), got {n}")
    if n >= total_steps + 1:
        return list(range(total_steps + 1))
    k = n - 1  # log-spaced points in [1, total_steps]; rounding may merge some, so add more
    while True:
        pts = np.rint(np.geomspace(1, total_steps, k)).astype(np.int64).tolist()
        steps = sorted({0, total_steps, *pts})
        if len(steps) >= n:
            break
        k += 1
    while len(steps) > n:  # drop the inner point closest (in log steps) to its predecessor
        i = min(range(1, len(steps) - 1),
                key=lambda j: math.log1p(steps[j]) - math.log1p(steps[j - 1]))
        steps.pop(i)
    return steps


@dataclass
class TrainConfig:
    """How a network is trained (defaults from Hermann & Lampinen 2020, scaled for CPU).

    Attributes
    ----------
    steps : int
        Optimiser steps.
    batch_size : int
        Samples per step (batches are drawn without replacement within an epoch).
    lr, weight_decay : float
        Optimiser settings.
    optimizer : str
        One of :data:`OPTIMIZERS`.
    checkpoints : int or list of int
        Number of log-spaced checkpoints (see :func:`schedule`) or explicit steps; step 0
        and ``steps`` are always included.
    first_head : str, optional
        Learning order: train only this head for the first ``first_steps`` steps.
    first_steps : int
        Length of that phase.
    eval_size : int
        Samples of the training and validation sets evaluated at each checkpoint.
    device : str
        Torch device of training (``"cpu"``).
    lr_schedule : str
        One of :data:`LR_SCHEDULES` (see :func:`lr_factor`); ``constant`` by default.
    warmup : int
        Steps of linear learning-rate warmup (0: none).
    """

    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    checkpoints: int | list[int] = 6
    first_head: str | None = None
    first_steps: int = 0
    eval_size: int = 512
    device: str = "cpu"
    lr_schedule: str = "constant"
    warmup: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "first_steps", "eval_size", "warmup"):
            v = getattr(self, name)
            lo = 1 if name in ("batch_size", "eval_size") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ActstoreError(f"train parameter {name}={v!r} must be an integer >= {lo}")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    v >= 0 and math.isfinite(v)):
                raise ActstoreError(
                    f"train parameter {name}={v!r} must be a finite number >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ActstoreError(
                f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ActstoreError(f"unknown lr_schedule {self.lr_schedule!r}; valid schedules: "
                                f"{', '.join(LR_SCHEDULES)}")
        if self.warmup > self.steps:
            raise ActstoreError(f"train parameter warmup={self.warmup} exceeds steps={self.steps}")
        if self.first_steps > self.steps:
            raise ActstoreError(
                f"train parameter first_steps={self.first_steps} exceeds steps={self.steps}"
            )
        if self.first_steps and not self.first_head:
            raise ActstoreError("train parameter first_steps needs first_head (the head "
                                "trained first)")
        self.checkpoint_steps()  # validates
        if not isinstance(self.device, str):
            raise ActstoreError(f"train parameter device={self.device!r} must be a string "
                                "(cpu, cuda, cuda:N, mps)")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            raise ActstoreError(
                f"train parameter device={self.device!r} is not a torch device; use cpu, "
                "cuda, cuda:N or mps"
            ) from None

    def check_device(self) -> None:
        """Refuse a device this machine does not have (before a model is moved to it)."""
        dev = torch.device(self.device)
        where = f"train parameter device={self.device!r} was asked for"
        if dev.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0:
                raise ActstoreError(f"{where}, but no GPU is visible here; use device = \"cpu\"")
            if dev.index is not None and dev.index >= n:
                raise ActstoreError(f"{where}, but only {n} GPU(s) are visible (cuda:0 to "
                                    f"cuda:{n - 1})")
        elif dev.type == "mps" and not torch.backends.mps.is_available():
            raise ActstoreError(f"{where}, but MPS is not available here; use device = \"cpu\"")
        elif dev.type == "meta":
            raise ActstoreError(f"{where}; the meta device holds no data: use cpu, cuda or mps")

    def checkpoint_steps(self) -> list[int]:
        """Sorted checkpoint steps, always including 0 and :attr:`steps`."""
        c = self.checkpoints
        if isinstance(c, bool):
            raise ActstoreError(f"train parameter checkpoints={c!r} must be a count or a list")
        if isinstance(c, int):
            return schedule(self.steps, c)
        if isinstance(c, (list, tuple)):
            bad = [s for s in c if isinstance(s, bool) or not isinstance(s, int)
                   or not 0 <= s <= self.steps]
            if bad:
                raise ActstoreError(
                    f"checkpoint steps {bad} are not integers in [0, steps={self.steps}]"
                )
            return sorted({0, self.steps, *c})
        raise ActstoreError(f"train parameter checkpoints={c!r} must be a count or a list")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what run attributes record)."""
        d = asdict(self)
        if isinstance(d["checkpoints"], tuple):
            d["checkpoints"] = list(d["checkpoints"])
        return d


def _empty_metrics(heads: Iterable[str]) -> dict[str, Any]:
    names = list(heads)
    part = lambda: {"loss": [], "acc": {h: [] for h in names}, "head_loss": {h: [] for h in names}}  # noqa: E731
    return {"step": [], "train": part(), "val": part()}


@dataclass
class Trainer:
    """Train ``model`` on ``data``; callbacks see the trainer (``.step``, ``.loss``, ``.lr``,
    ``.model``).

    Parameters
    ----------
    model : torch.nn.Module
        A zoo model (or any module with ``heads`` and ``split_logits``), initialised already.
    data : TaskData
        Training and validation sets and the heads.
    config : TrainConfig
    seed : int
        Seeds the order of the training batches.

    Examples
    --------
    >>> trainer = Trainer(model, data, TrainConfig(steps=100))            # doctest: +SKIP
    >>> trainer.add_callback("on_checkpoint", lambda t: print(t.step))    # doctest: +SKIP
    >>> metrics = trainer.run()                                           # doctest: +SKIP
    """

    model: Any
    data: TaskData
    config: TrainConfig
    seed: int = 0
    step: int = 0
    loss: float = math.nan
    lr: float = math.nan
    metrics: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, list[Callable[[Trainer], None]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def __post_init__(self) -> None:
        names = [h.name for h in self.data.heads]
        fh = self.config.first_head
        if fh and fh not in names:
            raise ActstoreError(
                f"first_head={fh!r} is not a head of this task; heads: {', '.join(names)}"
            )
        self.metrics = _empty_metrics(names)

    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        """Call ``fn(trainer)`` at ``event`` (one of :data:`EVENTS`)."""
        if event not in EVENTS:
            raise ActstoreError(f"unknown trainer event {event!r}; valid events: {EVENTS}")
        self.callbacks[event].append(fn)

    def fire(self, event: str) -> None:
        """Call the callbacks of ``event`` in the order they were added."""
        for fn in self.callbacks.get(event, []):
            fn(self)

    # -- evaluation ----------------------------------------------------------------------------
    def _tensors(self, split: Split, idx: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
        x = split.inputs if idx is None else split.inputs[idx]
        y = {h.name: split.labels[h.name] if idx is None else split.labels[h.name][idx]
             for h in self.data.heads}
        dev = self.config.device
        return (torch.from_numpy(np.ascontiguousarray(x)).to(dev),
                {k: torch.from_numpy(np.asarray(v, dtype=np.int64)).to(dev) for k, v in y.items()})

    def evaluate(self, split: Split, idx: np.ndarray | None = None) -> dict[str, Any]:
        """Mean loss, and per head loss and accuracy, on ``split`` (rows ``idx``)."""
        x, y = self._tensors(split, idx)
        was = self.model.training
        self.model.eval()
        sums = {h.name: [0.0, 0] for h in self.data.heads}
        with torch.no_grad():
            for s in range(0, len(x), 512):
                parts = self.model.split_logits(self.model(x[s : s + 512]))
                for h in self.data.heads:
                    yy = y[h.name][s : s + 512]
                    sums[h.name][0] += float(F.cross_entropy(parts[h.name], yy, reduction="sum"))
                    sums[h.name][1] += int((parts[h.name].argmax(1) == yy).sum())  # host sync
        self.model.train(was)
        n = max(1, len(x))
        head_loss = {k: v[0] / n for k, v in sums.items()}
        return {"loss": float(np.mean(list(head_loss.values()))),
                "acc": {k: v[1] / n for k, v in sums.items()}, "head_loss": head_loss}

    def _record(self, part: str, m: dict[str, Any]) -> None:
        rec = self.metrics[part]
        rec["loss"].append(m["loss"])
        for h in m["acc"]:
            rec["acc"][h].append(m["acc"][h])
            rec["head_loss"][h].append(m["head_loss"][h])

    def checkpoint(self) -> None:
        """Evaluate, record the metrics, fire ``on_checkpoint``."""
        self.metrics["step"].append(self.step)
        self._record("train", self.evaluate(self.data.train, self._train_eval))
        self._record("val", self.evaluate(self.data.val, self._val_eval))
        self.fire("on_checkpoint")

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train for ``config.steps`` steps; returns the metrics (JSON-serialisable)."""
        cfg = self.config
        model = self.model.to(cfg.device)
        n = len(self.data.train)
        if n == 0:
            raise ActstoreError("the training set is empty")
        rng = np.random.default_rng([int(self.seed), 77])
        self._train_eval = np.sort(rng.permutation(n)[: cfg.eval_size])
        self._val_eval = np.arange(min(cfg.eval_size, len(self.data.val)))
        x_all, y_all = self._tensors(self.data.train)
        gen = torch.Generator().manual_seed(int(self.seed))
        opt = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg.lr, cfg.weight_decay)
        base_lr = [g["lr"] for g in opt.param_groups]
        ckpts = set(cfg.checkpoint_steps())
        heads = [h.name for h in self.data.heads]
        bs = min(cfg.batch_size, n)
        order, pos = torch.randperm(n, generator=gen), 0
        model.train()
        for step in range(cfg.steps + 1):
            self.step = step
            if step in ckpts:
                self.checkpoint()
            if step == cfg.steps:
                break
            if pos + bs > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + bs]
            pos += bs
            parts = model.split_logits(model(x_all[idx]))
            if step < cfg.first_steps and cfg.first_head:
                loss = F.cross_entropy(parts[cfg.first_head], y_all[cfg.first_head][idx])
            else:
                loss = torch.stack(
                    [F.cross_entropy(parts[h], y_all[h][idx]) for h in heads]
                ).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            f = lr_factor(step, cfg.steps, cfg.warmup, cfg.lr_schedule)
            for g, lr in zip(opt.param_groups, base_lr, strict=True):
                g["lr"] = lr * f
            self.lr = base_lr[0] * f
            opt.step()
            self.loss = loss.item()  # host sync, once per step
            self.fire("on_step")
        self.fire("on_end")
        return self.metrics
