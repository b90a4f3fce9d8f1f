"""Name -> factory registries of datasets, tasks and models; unknown names list the valid ones."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from actstore._errors import ActstoreError
from actstore.training._binary import BinaryEasyHard
from actstore.training._conv1d import Conv1dNet
from actstore.training._data import Dataset, Head, InputSpec
from actstore.training._models import MLP, AlexNetCNN, HeadedModel, ResNetCNN
from actstore.training._multifeature import MultiFeature
from actstore.training._transformer import SmallTransformer
from actstore.training._trifeature import Trifeature

__all__ = [
    "DATASETS",
    "MODELS",
    "TASKS",
    "build_model",
    "lookup",
    "make_dataset",
    "model_params",
    "task_targets",
    "tasks_for",
]

T = TypeVar("T")

#: Datasets by name: classes taking their parameters as keyword arguments.
DATASETS: dict[str, type[Dataset]] = {
    "trifeature": Trifeature,
    "binary": BinaryEasyHard,
    "multifeature": MultiFeature,
}

#: Models by name: ``cls(input_spec, heads, **params)``.
MODELS: dict[str, type[HeadedModel]] = {
    "alexnet": AlexNetCNN,
    "resnet": ResNetCNN,
    "mlp": MLP,
    "transformer": SmallTransformer,
    "conv1d": Conv1dNet,
}


def _single(feature: str) -> Callable[[Dataset], tuple[str, ...]]:
    def task(ds: Dataset) -> tuple[str, ...]:
        if feature not in ds.targets:
            raise ActstoreError(
                f"task {feature!r} does not apply to dataset {ds.name!r}; its tasks: "
                f"{', '.join(tasks_for(ds))}"
            )
        return (feature,)

    task.__doc__ = f"Train one head reporting {feature!r}."
    task.feature = feature  # type: ignore[attr-defined]
    return task


def _all(ds: Dataset) -> tuple[str, ...]:
    """One head per target feature of the dataset, equal loss weights."""
    return tuple(ds.targets)


#: Tasks by name: ``task(dataset) -> target features`` (one output head each).
TASKS: dict[str, Callable[[Dataset], tuple[str, ...]]] = {
    "shape": _single("shape"),
    "texture": _single("texture"),
    "color": _single("color"),
    "label": _single("label"),
    "all": _all,
}


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """``registry[name]``, or :class:`ActstoreError` listing the valid names."""
    if name not in registry:
        raise ActstoreError(f"unknown {what} {name!r}; valid {what}s: {', '.join(registry)}")
    return registry[name]


def _keywords(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(factory)
    return {k: p for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_keys(factory: Callable[..., Any], params: Mapping[str, Any], what: str) -> None:
    """Refuse parameter names ``factory`` does not take (the message lists the valid ones)."""
    valid = _keywords(factory)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ActstoreError(
            f"unknown {what} parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid: {', '.join(valid)}"
        )


def make_dataset(name: str, params: Mapping[str, Any] | None = None) -> Dataset:
    """Instantiate dataset ``name`` with ``params`` (checked).

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS` (``trifeature``, ``binary``, ``multifeature``).
    params : mapping, optional
        Keyword parameters of the dataset class.

    Returns
    -------
    Dataset

    Raises
    ------
    ActstoreError
        If ``name`` is unknown or ``params`` has a key the dataset does not take (the
        message lists the valid ones), or a parameter value is invalid.
    """
    cls = lookup(DATASETS, name, "dataset")
    params = dict(params or {})
    check_keys(cls, params, f"dataset {name!r}")
    return cls(**params)


def tasks_for(ds: Dataset) -> list[str]:
    """Names of the tasks that apply to a dataset.

    Parameters
    ----------
    ds : Dataset

    Returns
    -------
    list of str
        Keys of :data:`TASKS`, in registry order: one per target feature of ``ds``, and
        ``all``.
    """
    return [name for name, task in TASKS.items()
            if getattr(task, "feature", None) in (None, *ds.targets)]


def task_targets(task: str, ds: Dataset) -> tuple[str, ...]:
    """Target features of ``task`` on ``ds`` (checked).

    Parameters
    ----------
    task : str
        A key of :data:`TASKS`.
    ds : Dataset

    Returns
    -------
    tuple of str
        The features the task's heads report, one per head.

    Raises
    ------
    ActstoreError
        If ``task`` is unknown or does not apply to ``ds`` (the message lists its tasks).
    """
    return lookup(TASKS, task, "task")(ds)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def model_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``params`` of model ``name`` checked and completed with the defaults (JSON)."""
    cls = lookup(MODELS, name, "model")
    params = dict(params or {})
    check_keys(cls, params, f"model {name!r}")
    full = {k: p.default for k, p in _keywords(cls).items()}
    full.update(params)
    out: dict[str, Any] = _jsonable(full)
    return out


def build_model(
    name: str,
    input_spec: InputSpec,
    heads: tuple[Head, ...],
    params: Mapping[str, Any] | None = None,
) -> HeadedModel:
    """Instantiate model ``name`` (seed torch first for a reproducible initialisation).

    Parameters
    ----------
    name : str
        A key of :data:`MODELS` (``alexnet``, ``resnet``, ``mlp``, ``transformer``,
        ``conv1d``).
    input_spec : InputSpec
        Kind and shape of one input (:attr:`Dataset.input_spec`).
    heads : tuple of Head
        One output head per target feature.
    params : mapping, optional
        Keyword parameters of the model class.

    Returns
    -------
    HeadedModel
        A freshly initialised ``torch.nn.Module`` with one output per head.

    Raises
    ------
    ActstoreError
        If ``name`` is unknown or ``params`` has a key the model does not take (the message
        lists the valid ones).
    """
    cls = lookup(MODELS, name, "model")
    params = dict(params or {})
    check_keys(cls, params, f"model {name!r}")
    return cls(input_spec, heads, **params)
