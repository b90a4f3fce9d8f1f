"""One training run: dataset x task x model x seed (x variant), trained and recorded into a store.

A run is described by a :class:`RunSpec`; :meth:`RunSpec.resolve` checks every name and
parameter without writing anything; :func:`train_run` trains it and, at every checkpoint,
records the activations of the model's layers on the dataset's probe set with the store's
capture code (the code behind ``actstore dump``). Runs are resumable: complete checkpoint
slots are skipped, and training is deterministic, so a partially written run is trained again
from scratch and only its missing slots are written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actstore._errors import ActstoreError, ProvenanceError
from actstore.store import resolve_layers
from actstore.training._data import Dataset, Head
from actstore.training._registry import (
    MODELS,
    build_model,
    lookup,
    make_dataset,
    model_params,
    task_targets,
)
from actstore.training._trainer import TrainConfig, Trainer

if TYPE_CHECKING:
    from actstore.training._models import HeadedModel

__all__ = [
    "CaptureConfig",
    "RunSpec",
    "load_saved_model",
    "model_from_config",
    "torch_settings",
    "train_run",
]


@dataclass
class CaptureConfig:
    """What is recorded at each checkpoint (arguments of the store's capture).

    Attributes
    ----------
    layers : str or list of str
        ``"all"`` (the model's named layers), names, or glob patterns.
    reduce : str, optional
        Reduction of conv maps and token sequences (``mean``, ``max``, ``center``, ``flatten``,
        ``last``, ``randproj:K``). By default each model's declared reductions (the
        ResNet-style CNN keeps ``pre_pool`` whole), else ``mean``.
    dtype : {"float32", "float16"}
        Storage dtype.
    batch_size : int
        Probe samples per forward pass.
    """

    layers: str | list[str] = "all"
    reduce: str | None = None
    dtype: str = "float32"
    batch_size: int = 256

    def __post_init__(self) -> None:
        from actstore.store import parse_reduction

        layers = [self.layers] if isinstance(self.layers, str) else self.layers
        if not isinstance(layers, (list, tuple)) or not layers or not all(
                isinstance(x, str) and x.strip() for x in layers):
            raise ActstoreError(
                f"capture layers={self.layers!r} must be \"all\", a layer name or pattern, or a "
                "list of them"
            )
        if self.reduce is not None:
            if not isinstance(self.reduce, str):
                raise ActstoreError(f"capture reduce={self.reduce!r} must be a string such as "
                                    "\"mean\" or \"randproj:512\"")
            parse_reduction(self.reduce)
        if self.dtype not in ("float32", "float16"):
            raise ActstoreError(f"capture dtype must be float32 or float16, not {self.dtype!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or (
            self.batch_size < 1
        ):
            raise ActstoreError(f"capture batch_size={self.batch_size!r} must be >= 1")


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "_." else "_" for c in part)


@dataclass
class RunSpec:
    """Everything that defines one run.

    Attributes
    ----------
    dataset, task, model : str
        Registry names (:data:`DATASETS`, :data:`TASKS`, :data:`MODELS`).
    seed : int
        Seeds the initialisation, the training data and the batch order.
    dataset_params, model_params : dict
        Keyword parameters of the dataset and model.
    train : TrainConfig
    capture : CaptureConfig
    variant : str
        Name of the sweep variant ('' for none); part of the run id.
    """

    dataset: str
    task: str
    model: str
    seed: int = 0
    dataset_params: dict[str, Any] = field(default_factory=dict)
    model_params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    variant: str = ""

    @property
    def run_id(self) -> str:
        """``<dataset>-<task>-<model>[-<variant>]-s<seed>``."""
        parts = [self.dataset, self.task, self.model]
        if self.variant:
            parts.append(_safe(self.variant))
        return "-".join(parts) + f"-s{self.seed}"

    def make_dataset(self) -> Dataset:
        """The dataset, with its parameters checked."""
        return make_dataset(self.dataset, self.dataset_params)

    def resolve(self) -> dict[str, Any]:
        """Check every name and parameter (building the model once) and return the run's
        identity attributes: ``model, task, seed, dataset, variant, config``.

        Raises
        ------
        ActstoreError
            For an unknown name, a bad parameter, or a task/model the dataset cannot serve.
        """
        import torch

        lookup(MODELS, self.model, "model")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ActstoreError(f"seed {self.seed!r} must be an integer >= 0")
        ds = self.make_dataset()
        targets = task_targets(self.task, ds)
        heads = ds.heads(targets)
        with torch.device("meta"):  # checks shapes and parameters without allocating
            net = build_model(self.model, ds.input_spec(), heads, self.model_params)
        try:
            resolve_layers(net, self.capture.layers)
        except ActstoreError as e:
            raise ActstoreError(f"[capture] layers of model {self.model!r}: {e}") from None
        if self.train.first_head and self.train.first_head not in targets:
            raise ActstoreError(
                f"train parameter first_head={self.train.first_head!r} is not a head of task "
                f"{self.task!r} on {self.dataset!r}; heads: {', '.join(targets)}"
            )
        config = {
            "dataset": {"name": self.dataset, "params": ds.params()},
            "task": {"name": self.task, "heads": [asdict(h) for h in heads]},
            "model": {"name": self.model, "params": model_params(self.model, self.model_params)},
            "input": {"kind": ds.input_spec().kind, "shape": list(ds.input_spec().shape)},
            "train": self.train.to_dict(),
            "capture": asdict(self.capture),
        }
        return {
            "model": self.model,
            "task": self.task,
            "seed": self.seed,
            "dataset": self.dataset,
            "variant": self.variant,
            "config": json.loads(json.dumps(config)),
        }


@contextmanager
def torch_settings(threads: int | None = 1, deterministic: bool = True) -> Iterator[None]:
    """Torch thread count and deterministic algorithms for the duration of a run (restored).

    With ``deterministic``, ``CUBLAS_WORKSPACE_CONFIG`` is set (unless the user set it): on
    CUDA, deterministic matrix products need it, and without it torch refuses to run them.
    CUDA operations that have no deterministic kernel (the backward pass of adaptive average
    pooling) warn instead of stopping the run; on the CPU every operation is deterministic.
    """
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    set_cublas = deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    try:
        if threads:
            torch.set_num_threads(int(threads))
        if set_cublas:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
        if set_cublas:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def model_from_config(config: dict[str, Any]) -> HeadedModel:
    """Rebuild the (untrained) model of a run from its ``config`` attribute or ``config.json``.

    Parameters
    ----------
    config : dict
        The run's configuration: ``input`` (``kind``, ``shape``), ``task`` (``heads``) and
        ``model`` (``name``, ``params``), as recorded in the run's ``config`` attribute.

    Returns
    -------
    HeadedModel
        Freshly initialised (seed torch first for a reproducible initialisation).

    Raises
    ------
    ActstoreError
        If the model name or its parameters are unknown.
    KeyError
        If ``config`` lacks one of the entries above.
    """
    from actstore.training._data import InputSpec

    spec = InputSpec(config["input"]["kind"], tuple(config["input"]["shape"]))
    heads = tuple(Head(**h) for h in config["task"]["heads"])
    return build_model(config["model"]["name"], spec, heads, config["model"]["params"])


def load_saved_model(config: str | os.PathLike[str], step: int | None = None) -> HeadedModel:
    """Model factory for ``actstore dump``: a saved run directory's model, optionally loaded.

    Parameters
    ----------
    config : path
        ``config.json`` of a weights directory written by ``actstore train --weights-dir``
        (or the directory itself).
    step : int, optional
        Load the weights of this step (``step_<step>.pt``, read with ``weights_only=True``).

    Returns
    -------
    HeadedModel
        On the CPU; untrained (fresh initialisation) when ``step`` is ``None``.

    Raises
    ------
    ActstoreError
        If there is no ``config.json`` at ``config``.
    FileNotFoundError
        If the weights of ``step`` were not saved.
    """
    import torch

    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ActstoreError(f"no run config at {path}; give the config.json of a weights dir")
    model = model_from_config(json.loads(path.read_text())["config"])
    if step is not None:
        f = path.parent / f"step_{int(step):08d}.pt"
        state = torch.load(f, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
    return model


def check_weights_dir(weights_dir: str | os.PathLike[str]) -> None:
    """Refuse a weights directory that cannot be one (a file, or a path below a file)."""
    p = Path(weights_dir)
    if p.exists() and not p.is_dir():
        raise ActstoreError(f"--weights-dir {weights_dir} is a file, not a directory; give a "
                            "directory for the weights (created if missing)")
    for parent in p.absolute().parents:
        if parent.is_dir():
            break
        if parent.exists():
            raise ActstoreError(f"--weights-dir {weights_dir}: {parent} is a file, so no "
                                "directory can be made below it; give another directory")


def _saved_config(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = f"{type(e).__name__}: {e}"
    raise ActstoreError(f"{path} is not a readable run config ({why}); the weights next to it "
                        "cannot be told apart from another run's: remove that directory or "
                        "give another weights directory")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _save_weights(directory: Path, step: int, model: Any) -> Path:
    """Save the weights of ``step`` as ``step_<step>.pt`` in ``directory``; returns the file."""
    import torch

    # always (re)written: a file left by an earlier run with another config must not stand
    # next to this run's config.json
    f = directory / f"step_{step:08d}.pt"
    tmp = f.with_suffix(".tmp")
    torch.save({"step": step, "state_dict": model.state_dict()}, tmp)
    tmp.replace(f)
    return f


def train_run(
    spec: RunSpec,
    store: str,
    weights_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train one run and record every checkpoint into ``store``.

    Parameters
    ----------
    spec : RunSpec
    store : str
        Path or URL of an existing store holding the dataset's probe set (added if missing).
    weights_dir : path, optional
        Save ``<weights_dir>/<run_id>/step_<step>.pt`` (state dicts) and ``config.json``.
    progress : callable, optional
        ``progress(run_id, step, total_steps)`` after each training step and checkpoint.
    threads : int, optional
        Torch threads during the run (1 inside Dask workers; ``None`` leaves it).

    Returns
    -------
    dict
        ``run_id``, ``status`` (``"trained"`` or ``"complete"``), ``written`` (steps),
        ``wall_s``, ``final`` (validation accuracy per head at the last step).
    """
    import torch

    from actstore.store import open_store, weights_hash

    t0 = time.perf_counter()
    attrs = spec.resolve()
    spec.train.check_device()
    run_id = spec.run_id
    steps = spec.train.checkpoint_steps()
    if weights_dir is not None:
        check_weights_dir(weights_dir)
        saved = Path(weights_dir) / run_id / "config.json"
        if saved.is_file() and _saved_config(saved) != json.loads(json.dumps(attrs)):
            raise ProvenanceError(
                f"weights directory {saved.parent} holds weights of run {run_id!r} trained with "
                "another configuration; give another weights directory"
            )
    ds = spec.make_dataset()
    st = open_store(store, mode="a")
    probe = ds.probe_set()
    st.add_probe_set(probe)
    run_attrs = dict(attrs)
    if weights_dir is not None:  # enough for `actstore repair` to redo a slot from its file
        c = spec.capture
        run_attrs["dump"] = {
            "factory": "actstore.training:load_saved_model",
            "factory_kwargs": {"config": str((Path(weights_dir) / run_id).resolve())},
            "layers": c.layers, "reduce": c.reduce, "dtype": c.dtype,
            "batch_size": c.batch_size}
    with torch_settings(threads), st.writer(run_id, probe.name, steps, attrs=run_attrs) as run:
        if all(run.is_complete(s) for s in steps):
            return {"run_id": run_id, "status": "complete", "written": [], "wall_s": 0.0,
                    "final": {}}
        data = ds.make(task_targets(spec.task, ds), spec.seed)
        torch.manual_seed(spec.seed)
        model = build_model(spec.model, data.input_spec, data.heads, spec.model_params)
        trainer = Trainer(model, data, spec.train, seed=spec.seed)
        out_dir = None
        if weights_dir is not None:
            out_dir = Path(weights_dir) / run_id
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(out_dir / "config.json", json.dumps(attrs, indent=1))
        written: list[int] = []

        def on_checkpoint(t: Trainer) -> None:
            wh = weights_hash(t.model)
            try:
                done = run.is_complete(t.step, wh)
            except ProvenanceError:
                raise ProvenanceError(
                    f"run {run_id!r}: checkpoint {t.step} was recorded from other weights than "
                    "this re-run produced (training is reproducible only with the same torch "
                    "version and thread count); remove the run (in Python: "
                    f"actstore.open_store(store, 'a').remove_run({run_id!r})) or record into a "
                    "new store"
                ) from None
            source = None
            if out_dir is not None:  # saved first: the slot records its file (for repair)
                source = str(_save_weights(out_dir, t.step, t.model).resolve())
            if not done:
                c = spec.capture
                run.capture(t.model, t.step, layers=c.layers, reduce=c.reduce, dtype=c.dtype,
                            batch_size=c.batch_size, device=spec.train.device,
                            weights_hash=wh, source=source,
                            model_name=f"{spec.model} of run {run_id!r}")
                written.append(t.step)
            if progress is not None:
                progress(run_id, t.step, spec.train.steps)

        trainer.add_callback("on_checkpoint", on_checkpoint)
        if progress is not None:
            total = spec.train.steps
            every = max(1, total // 50)
            trainer.add_callback(
                "on_step",
                lambda t: progress(run_id, t.step + 1, total) if (t.step + 1) % every == 0
                else None,
            )
        metrics = trainer.run()
        run.update_attrs({"metrics": metrics, "data": data.info,
                          "parameters": int(sum(p.numel() for p in model.parameters()))})
    final = {h: metrics["val"]["acc"][h][-1] for h in metrics["val"]["acc"]}
    return {"run_id": run_id, "status": "trained", "written": written,
            "wall_s": time.perf_counter() - t0, "final": final}
