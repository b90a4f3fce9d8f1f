"""``actstore dump``: record every checkpoint file of a run into a store, resumably."""

from __future__ import annotations

import contextlib
import glob as _glob
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actstore._args import whole_number
from actstore._errors import ActstoreError, ProvenanceError
from actstore._execution import Execution, map_jobs
from actstore.store._layout import DEFAULT_CODEC
from actstore.store._models import _message as _first_line
from actstore.store._models import absolute_factory, load_factory, make_model
from actstore.store._open import check_store_path
from actstore.store._probeset import ProbeSet, probe_set_from_npz

__all__ = [
    "DumpReport",
    "check_device",
    "check_store_path",
    "dump",
    "dump_many",
    "find_checkpoints",
    "load_factory",
    "make_model",
    "probe_set_from_npz",
    "run_ids_for",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass
class DumpReport:
    """What a dump did: steps written and steps found complete already."""

    run: str
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def check_device(device: Any) -> None:
    """Refuse a torch device that does not exist here (before any model is moved to it)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ActstoreError(
            f"--device {device!r} is not a torch device ({_first_line(e)}); use cpu, cuda, "
            "cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ActstoreError(
                f"--device {device} was asked for, but no GPU is visible; use --device cpu"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ActstoreError(
                f"--device {device} was asked for, but only {n} GPU(s) are visible "
                f"(cuda:0 to cuda:{n - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ActstoreError(f"--device {device} was asked for, but MPS is not available here; "
                            "use --device cpu")


def _step_from_name(path: Path) -> int | None:
    nums = re.findall(r"\d+", path.stem)
    return int(nums[-1]) if nums else None


def _load_error(path: Path, e: BaseException) -> str:
    """One line for a checkpoint file torch cannot load with ``weights_only=True``."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"checkpoint {path} holds Python objects besides tensors ({found[1]}), and "
                "actstore loads only tensors, numbers and containers from checkpoints; save "
                "the state dict alone: torch.save(model.state_dict(), path)")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    reason = detail[1].strip() if detail else _first_line(e)
    reason = reason.split(". ")[0].rstrip(".")
    if "weights_only" in reason or not reason.strip():
        reason = type(e).__name__
    size = path.stat().st_size if path.is_file() else None
    if size == 0:
        reason = "the file is empty"
    return (f"{path} is not a readable PyTorch checkpoint ({reason}); give files written by "
            "torch.save, or move other files out of the checkpoint directory")


def _load_state(path: Path) -> tuple[dict[str, Any], int | None]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ActstoreError(_load_error(path, e)) from None
    step = None
    if isinstance(obj, dict):
        if "step" in obj and not hasattr(obj["step"], "shape"):
            step = int(obj["step"])
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key], step
        return obj, step
    raise ActstoreError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")


def check_options(runs: Sequence[str], dtype: str = "float32",
                  reduce: str | dict[str, str] | None = None, batch_size: int = 256,
                  codec: str = DEFAULT_CODEC) -> None:
    """Refuse bad run ids and capture options before anything is written."""
    from actstore.store._attrs import check_name
    from actstore.store._layout import make_codecs
    from actstore.store._reduce import parse_reduction

    for run in runs:
        check_name(run)
    if dtype not in ("float32", "float16"):
        raise ActstoreError(f"storage dtype must be float32 or float16, not {dtype!r}")
    for spec in [reduce] if isinstance(reduce, str) else list((reduce or {}).values()):
        parse_reduction(spec)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ActstoreError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    make_codecs(codec)


def plan_checkpoints(net: Any, files: list[Path], model_name: str) -> list[tuple[int, Path, str]]:
    """``(step, file, weights hash)`` per checkpoint file, sorted by step.

    Every file is loaded into ``net`` (strictly), so a file that does not match the model is
    an error before anything is written.
    """
    from actstore.store._capture import weights_hash

    plan: list[tuple[int, Path, str]] = []
    for f in files:
        state, step = _load_state(f)
        step = step if step is not None else _step_from_name(f)
        if step is None:
            raise ActstoreError(f"cannot tell the training step of {f}: name it like "
                                "step_100.pt or store {'step': 100, 'state_dict': ...}")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = " ".join(s.strip() for s in first[1:3]) or first[0]
            raise ActstoreError(
                f"checkpoint {f} does not match model {model_name}: {detail}"
            ) from None
        plan.append((step, f, weights_hash(net)))
    steps = [s for s, _, _ in plan]
    if len(set(steps)) != len(steps):
        raise ActstoreError(f"two checkpoint files share a step: {sorted(steps)}")
    return sorted(plan)


def _plan(net: Any, checkpoints: Any, step: int | None, model_name: str
          ) -> list[tuple[int, Path | None, str]]:
    """The checkpoints of a dump: its files (see :func:`plan_checkpoints`), or with ``step``
    and no files the model's own weights (file None)."""
    from actstore.store._capture import weights_hash

    if step is not None and checkpoints is not None:
        raise ActstoreError("give checkpoint files or --step N (the model's own weights "
                            "recorded as step N), not both")
    if step is None:
        if checkpoints is None:
            raise ActstoreError("give checkpoint files to record, or --step N to record the "
                                f"weights model {model_name} comes with as step N")
        return [(s, f, h) for s, f, h in
                plan_checkpoints(net, find_checkpoints(checkpoints), model_name)]
    return [(whole_number(step, "--step", minimum=0), None, weights_hash(net))]


def find_checkpoints(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Checkpoint files from a directory, a glob pattern, or a list of paths."""
    if isinstance(spec, (str, Path)):
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in CHECKPOINT_SUFFIXES)
        elif p.is_file():
            files = [p]
        else:
            files = sorted(Path(f) for f in _glob.glob(str(spec)))
    else:
        files = [Path(f) for f in spec]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ActstoreError(f"checkpoint files not found: {', '.join(missing)}")
    if not files:
        raise ActstoreError(
            f"no checkpoint files ({'/'.join(CHECKPOINT_SUFFIXES)}) found at {spec}"
        )
    return files


def dump(
    store: str,
    run: str,
    model: str | Callable[..., Any],
    checkpoints: str | Path | Sequence[str | Path] | None,
    probe_set: str | ProbeSet,
    layers: str | list[str] = "all",
    reduce: str | dict[str, str] | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    device: str = "cpu",
    attrs: dict[str, Any] | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    codec: str = DEFAULT_CODEC,
    execution: Execution | None = None,
    step: int | None = None,
) -> DumpReport:
    """Record the activations of every checkpoint of one run into ``store``.

    Resumable and idempotent per checkpoint: complete slots are skipped (after checking their
    weights hash), interrupted ones are redone. Every input is checked before anything is
    written; on an error the store is left as it was (a store or probe set made by this call
    is removed again).

    Parameters
    ----------
    store : str
        Path or fsspec URL; created if missing.
    run : str
        Run id.
    model : str or callable
        ``package.module:factory`` / ``file.py:factory``, ``hf:PATH`` (a Hugging Face model
        folder, loaded offline from safetensors), or the factory itself.
    checkpoints : str, Path, list or None
        A directory of ``.pt`` files, a glob, or a list of files. The step of a file is its
        ``"step"`` entry or the last number in its name. None with ``step``: the weights the
        factory gives (a pretrained model) are recorded as checkpoint ``step``.
    probe_set : str or ProbeSet
        A probe set in the store, an ``.npz`` file, or a :class:`ProbeSet`.
    execution : Execution, optional
        Only its progress callback is used: ``("dump <run> checkpoints", done, total)`` after
        each checkpoint (the run is recorded in this process, on ``device``).
    step : int, optional
        With no ``checkpoints``: the training step the factory's own weights are recorded as.
    """
    from actstore.store._layers import resolve_layers
    from actstore.store._open import create_store, open_store, store_exists, undo_additions

    check_options([run], dtype=dtype, reduce=reduce, batch_size=batch_size, codec=codec)
    check_device(device)
    check_store_path(store)
    if isinstance(model, str):
        model = absolute_factory(model)
    factory = load_factory(model) if isinstance(model, str) else model
    model_name = model if isinstance(model, str) else getattr(model, "__name__", "model")
    net = make_model(factory, factory_kwargs, model_name)
    resolve_layers(net, layers)  # unknown names fail before anything is written
    plan = _plan(net, checkpoints, step, model_name)

    ps_obj: ProbeSet | None = None
    if isinstance(probe_set, ProbeSet):
        ps_obj = probe_set
    elif str(probe_set).endswith(".npz"):
        ps_obj = probe_set_from_npz(probe_set)
    created = not store_exists(store)
    if created and ps_obj is None:
        raise ActstoreError(
            f"no probe set {probe_set!r}: {store} does not exist yet; give the probe set as an "
            ".npz file (inputs and one label array per feature)"
        )
    st = create_store(store) if created else open_store(store, mode="a")
    if ps_obj is None and probe_set not in st.probe_set_names():
        raise ActstoreError(
            f"no probe set {probe_set!r} in {store}; give an .npz file or one of: "
            f"{', '.join(st.probe_set_names()) or 'none'}"
        )
    added = st.add_probe_set(ps_obj) if ps_obj is not None else False
    ps_name = ps_obj.name if ps_obj is not None else str(probe_set)
    meta = {"model": model_name, "dataset": ps_name, **(attrs or {})}
    if isinstance(model, str):  # enough to redo a slot later (actstore repair)
        meta["dump"] = {"factory": model, "factory_kwargs": factory_kwargs or {},
                        "layers": layers, "reduce": reduce, "dtype": dtype,
                        "batch_size": batch_size}
    report = DumpReport(run=run)
    ex = Execution.of(execution)
    stage = f"dump {run} checkpoints"
    try:
        if "dump" in meta and run in st.run_ids():
            _check_same_dump(st, run, meta["dump"])
        net.to(device)
        with st.writer(run, ps_name, [s for s, _, _ in plan], attrs=meta, codec=codec) as w:
            ex.report(stage, 0, len(plan))
            for i, (at, f, wh) in enumerate(plan, start=1):
                if w.is_complete(at, wh):
                    report.skipped.append(at)
                else:
                    if f is not None:
                        state, _ = _load_state(f)
                        net.load_state_dict(state, strict=True)
                    w.capture(net, at, layers=layers, reduce=reduce, dtype=dtype,
                              batch_size=batch_size, device=device, weights_hash=wh,
                              source=None if f is None else str(Path(f).resolve()),
                              model_name=model_name)
                    report.written.append(at)
                ex.report(stage, i, len(plan))
    except BaseException:
        undo_additions(store, st, created, ps_name if added else None)
        raise
    return report


def _check_same_dump(st: Any, run: str, new: dict[str, Any]) -> None:
    """A run is dumped with one model factory and one way of recording (also when every
    checkpoint is already complete and nothing would be written)."""
    from actstore.store._attrs import jsonable

    old = st.reader(run).attrs.get("dump")
    if not isinstance(old, dict):
        return
    option = {"factory": "--model", "factory_kwargs": "--model-arg", "layers": "--layers",
              "reduce": "--reduce", "dtype": "--dtype"}
    for key, flag in option.items():
        was, now = jsonable(old.get(key)), jsonable(new.get(key))
        if key in old and was != now:
            raise ProvenanceError(
                f"run {run!r} in {st.url} was dumped with {flag} {was!r}, not {now!r}; dump "
                "it with the same options, or into a new --run"
            )


def run_ids_for(dirs: Sequence[str | Path], template: str) -> list[str]:
    """Run ids for several checkpoint directories from a template.

    ``{dir}`` is the directory's name, ``{parent}`` its parent's name, ``{i}`` its position.
    """
    ids = []
    for i, d in enumerate(dirs):
        p = Path(d)
        try:
            ids.append(template.format(dir=p.name, parent=p.parent.name, i=i))
        except (KeyError, IndexError):
            raise ActstoreError(
                f"--run {template!r}: only {{dir}}, {{parent}} and {{i}} can be filled in"
            ) from None
    if len(set(ids)) != len(ids):
        raise ActstoreError(
            f"--run {template!r} gives the same run id to several directories ({ids}); "
            "use {parent} or {i}"
        )
    return ids


def _dump_task(store: str, run: str, checkpoints: str, probe_set: str,
               kwargs: dict[str, Any], on_worker: bool) -> dict[str, Any]:
    """One run of :func:`dump_many` (a Dask worker records it with one torch thread)."""
    if on_worker:
        import torch

        torch.set_num_threads(1)  # one core per Dask worker
    rep = dump(store, run, checkpoints=checkpoints, probe_set=probe_set, **kwargs)
    return {"run": rep.run, "written": rep.written, "skipped": rep.skipped}


def dump_many(
    store: str,
    runs: Sequence[str],
    checkpoint_dirs: Sequence[str | Path],
    model: str,
    probe_set: str | ProbeSet,
    execution: Execution | None = None,
    **kwargs: Any,
) -> list[DumpReport]:
    """Dump several runs, one job per run (see :func:`actstore._execution.map_jobs`).

    Each job holds the writer lease of its own run; the probe set is added once before the
    jobs start. Re-running skips complete checkpoints, so a job that Dask runs again after a
    worker died redoes only what was not finished.

    Parameters
    ----------
    store, runs, checkpoint_dirs, model, probe_set
        As in :func:`dump`: one run id per checkpoint directory; ``model`` as
        ``package.module:factory`` or ``file.py:factory``.
    execution : Execution, optional
        Where the runs are recorded (default: a local cluster of worker processes); progress
        is reported as ``("dump runs", done, total)``.
    **kwargs
        The other arguments of :func:`dump`.
    """
    from actstore.store._layers import resolve_layers
    from actstore.store._open import create_store, open_store, store_exists, undo_additions

    ex = Execution.of(execution)
    if len(runs) != len(checkpoint_dirs):
        raise ActstoreError(f"{len(runs)} run ids for {len(checkpoint_dirs)} directories")
    if not isinstance(model, str):
        raise ActstoreError("dumping on a cluster needs the model as package.module:factory")
    check_options(runs, **{k: kwargs[k] for k in ("dtype", "reduce", "batch_size", "codec")
                           if k in kwargs})
    if ex.scheduler is None:  # on a cluster, the workers' devices count (checked there)
        check_device(kwargs.get("device", "cpu"))
    check_store_path(store)
    # every checkpoint of every run is checked here, before any run is written
    net = make_model(load_factory(absolute_factory(model)), kwargs.get("factory_kwargs"),
                     absolute_factory(model))
    resolve_layers(net, kwargs.get("layers", "all"))
    for d in checkpoint_dirs:
        plan_checkpoints(net, find_checkpoints(d), model)
    ps_obj = probe_set if isinstance(probe_set, ProbeSet) else (
        probe_set_from_npz(probe_set) if str(probe_set).endswith(".npz") else None)
    if ps_obj is None and not store_exists(store):
        raise ActstoreError(
            f"no probe set {probe_set!r}: {store} does not exist yet; give the probe set as an "
            ".npz file (inputs and one label array per feature)"
        )
    url = store
    created = not store_exists(store)
    st = create_store(store) if created else open_store(store, mode="a")
    added = False
    if ps_obj is not None:
        added = st.add_probe_set(ps_obj)
        st.consolidate()
    ps_name = ps_obj.name if ps_obj is not None else str(probe_set)
    st.probe_set(ps_name, inputs=False)  # exists, or a clear error
    on_worker = not ex.in_process(url)
    kwargs = {**kwargs, "model": absolute_factory(model)}
    # workers resolve paths against their own working directory: send absolute ones
    tasks = [(ex.job_url(url), r, str(Path(d).resolve()), ps_name, kwargs, on_worker)
             for r, d in zip(runs, checkpoint_dirs, strict=True)]
    out = {}
    try:
        # a dump run again continues from its complete checkpoints: safe to retry on a cluster
        jobs = map_jobs(_dump_task, tasks, ex, url=url, stage="dump runs", retries=2)
        with contextlib.closing(jobs):
            for _, res in jobs:
                out[res["run"]] = DumpReport(res["run"], res["written"], res["skipped"])
    except Exception:
        # what the failing call added goes again: the store it made (if no run is in it), or
        # the probe set no run uses; complete checkpoints of any run stay
        with contextlib.suppress(Exception):
            undo_additions(url, open_store(url, mode="a"), created,
                           ps_name if added else None)
        raise
    return [out[r] for r in runs]
