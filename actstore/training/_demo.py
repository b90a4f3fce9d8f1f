"""``actstore demo``: a small Trifeature sweep that leaves a store ready for analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actstore._execution import Execution
from actstore.training._execute import SweepReport, run_sweep
from actstore.training._sweep import load_sweep

__all__ = ["TINY", "run_demo", "store_size"]

#: Overrides of the demo sweep for ``--tiny`` (tests, smoke checks): same runs, tiny sizes.
TINY: dict[str, Any] = {
    "train": {"steps": 12, "checkpoints": 3, "eval_size": 64},
    "dataset": {"trifeature": {"image_size": 16, "renders": 1, "n_val": 64,
                               "probe_combos": 100}},
    "model": {"alexnet": {"width": 4, "fc_width": 16}},
}


def store_size(url: str) -> int | None:
    """Bytes under a local store directory (``None`` for remote stores)."""
    p = Path(url)
    if not p.is_dir():
        return None
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def run_demo(
    store: str = "demo.zarr",
    *,
    tiny: bool = False,
    execution: Execution | None = None,
) -> SweepReport:
    """Train the demo sweep (``sweeps/demo.toml``) into ``store``; resumable.

    Parameters
    ----------
    store : str
        Path or URL of the store (created if missing).
    tiny : bool
        Same runs at tiny sizes (:data:`TINY`): seconds instead of minutes.
    execution : Execution, optional
        Where the runs are trained, as in :func:`actstore.training.run_sweep`.

    Returns
    -------
    SweepReport
        What was trained, skipped (already complete) or failed.
    """
    sweep = load_sweep("demo", overrides=TINY if tiny else None)
    if tiny:
        sweep.name = "demo-tiny"
    return run_sweep(sweep, store, execution=execution)
