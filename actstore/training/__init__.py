"""Training: synthetic feature datasets, a model zoo, and multi-seed multi-task runs that record
every layer's activations at every checkpoint into a store (see docs/training.md)."""

from __future__ import annotations

from actstore.training._binary import BinaryEasyHard
from actstore.training._data import Dataset, Head, InputSpec, Split, TaskData
from actstore.training._demo import run_demo, store_size
from actstore.training._execute import ConfigConflictError, SweepReport, plan_sweep, run_sweep
from actstore.training._models import ACTIVATIONS, MLP, AlexNetCNN, HeadedModel, ResNetCNN
from actstore.training._multifeature import MultiFeature
from actstore.training._registry import (
    DATASETS,
    MODELS,
    TASKS,
    build_model,
    make_dataset,
    task_targets,
    tasks_for,
)
from actstore.training._render import (
    COLORS,
    SHAPES,
    TEXTURES,
    RenderParams,
    render,
    render_reference,
    sample_render_params,
)
from actstore.training._run import (
    CaptureConfig,
    RunSpec,
    load_saved_model,
    model_from_config,
    train_run,
)
from actstore.training._sweep import (
    Sweep,
    builtin_sweeps,
    check_table_keys,
    load_sweep,
    merge_tables,
    parse_sweep,
    parse_value,
    read_toml,
)
from actstore.training._trainer import OPTIMIZERS, TrainConfig, Trainer, lr_factor, schedule
from actstore.training._transformer import SmallTransformer
from actstore.training._trifeature import Trifeature, heldout_mask, pairing

__all__ = [
    "ACTIVATIONS",
    "COLORS",
    "DATASETS",
    "MLP",
    "MODELS",
    "OPTIMIZERS",
    "SHAPES",
    "TASKS",
    "TEXTURES",
    "AlexNetCNN",
    "BinaryEasyHard",
    "CaptureConfig",
    "ConfigConflictError",
    "Dataset",
    "Head",
    "HeadedModel",
    "InputSpec",
    "MultiFeature",
    "RenderParams",
    "ResNetCNN",
    "RunSpec",
    "SmallTransformer",
    "Split",
    "Sweep",
    "SweepReport",
    "TaskData",
    "TrainConfig",
    "Trainer",
    "Trifeature",
    "build_model",
    "builtin_sweeps",
    "check_table_keys",
    "heldout_mask",
    "load_saved_model",
    "load_sweep",
    "lr_factor",
    "make_dataset",
    "merge_tables",
    "model_from_config",
    "pairing",
    "parse_sweep",
    "parse_value",
    "plan_sweep",
    "read_toml",
    "render",
    "render_reference",
    "run_demo",
    "run_sweep",
    "sample_render_params",
    "schedule",
    "store_size",
    "task_targets",
    "tasks_for",
    "train_run",
]
