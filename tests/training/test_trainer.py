"""Trainer: checkpoint schedule, config checks, callbacks, learning order, determinism."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore import ActstoreError
from actstore.training import TrainConfig, Trainer, build_model, make_dataset, schedule
from actstore.training._run import torch_settings


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 100_000), n=st.integers(2, 40))
def test_checkpoint_schedule_runs_from_0_to_the_last_step_log_spaced(total, n):
    s = schedule(total, n)
    assert s[0] == 0 and s[-1] == total
    assert s == sorted(set(s))
    assert len(s) == min(n, total + 1)
    if len(s) > 3 and total > 10 * n:
        # log-spaced: ratios between consecutive inner steps are roughly constant
        inner = np.array(s[1:], dtype=float)
        ratios = inner[1:] / inner[:-1]
        assert ratios.max() / ratios.min() < 10


def test_schedule_examples_and_errors():
    # step 0, then 3 log-spaced steps from 1 to 1000: 10^0, 10^1.5 = 31.6 (rounded), 10^3
    assert schedule(1000, 4) == [0, 1, 32, 1000]
    assert schedule(3, 10) == [0, 1, 2, 3]  # more checkpoints than steps: every step
    assert schedule(0, 1) == [0]
    with pytest.raises(ActstoreError, match="need at least 2 checkpoints .* got 1"):
        schedule(10, 1)
    with pytest.raises(ActstoreError, match="total steps must be >= 0, got -1"):
        schedule(-1, 3)


def test_train_config_refuses_bad_values():
    assert TrainConfig(steps=50, checkpoints=[10, 20]).checkpoint_steps() == [0, 10, 20, 50]
    for kw, match in [
        ({"steps": -1}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "rmsprop"}, "valid optimizers"),
        ({"checkpoints": [5, 500], "steps": 100}, "checkpoint steps"),
        ({"first_steps": 10}, "first_head"),
        ({"first_head": "a", "first_steps": 200, "steps": 100}, "exceeds"),
        ({"lr": float("inf")}, "finite"),
        ({"weight_decay": float("nan")}, "finite"),
        ({"device": "gpu0"}, "is not a torch device"),
        ({"device": 0}, "must be a string"),
    ]:
        with pytest.raises(ActstoreError, match=match):
            TrainConfig(**kw)


def test_train_config_checks_the_device_is_there(monkeypatch):
    with pytest.raises(ActstoreError, match="the meta device holds no data"):
        TrainConfig(device="meta").check_device()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    with pytest.raises(ActstoreError, match="no GPU is visible here"):
        TrainConfig(device="cuda:0").check_device()
    TrainConfig(device="cpu").check_device()


def _setup(seed=0, steps=20, **cfg):
    ds = make_dataset("multifeature", {"n_train": 256, "n_val": 64})
    data = ds.make(("linear", "parity3"), seed=seed)
    torch.manual_seed(seed)
    net = build_model("mlp", data.input_spec, data.heads, {"hidden": [16]})
    return Trainer(net, data, TrainConfig(steps=steps, eval_size=64, **cfg), seed=seed)


def test_callbacks_fire_at_named_events_in_order():
    tr = _setup(steps=30, checkpoints=4)
    log = []
    tr.add_callback("on_step", lambda t: log.append(("step", t.step)))
    tr.add_callback("on_checkpoint", lambda t: log.append(("ckpt", t.step)))
    tr.add_callback("on_end", lambda t: log.append(("end", t.step)))
    metrics = tr.run()
    ckpts = [s for e, s in log if e == "ckpt"]
    assert ckpts == schedule(30, 4) == metrics["step"]
    assert [s for e, s in log if e == "step"] == list(range(30))
    assert log[-1] == ("end", 30)
    # checkpoint k is taken before the optimiser step k: step 0 is the untrained network
    assert log.index(("ckpt", 0)) < log.index(("step", 0))
    for part in ("train", "val"):
        assert len(metrics[part]["loss"]) == 4
        assert set(metrics[part]["acc"]) == {"linear", "parity3"}
    with pytest.raises(ActstoreError, match="valid events"):
        tr.add_callback("on_epoch", print)


def test_learning_order_trains_only_the_first_head():
    tr = _setup(steps=15, checkpoints=2, first_head="parity3", first_steps=15,
                weight_decay=0.0)
    w0 = tr.model.out.weight.detach().clone()
    tr.run()
    w1 = tr.model.out.weight.detach()
    # rows 0-1: head "linear" (untouched); rows 2-3: head "parity3" (trained)
    assert torch.equal(w0[:2], w1[:2])
    assert not torch.equal(w0[2:], w1[2:])
    with pytest.raises(ActstoreError, match="not a head"):
        _setup(first_head="nope", first_steps=1)


def test_same_seed_same_weights_other_seed_other_weights():
    def final(seed):
        with torch_settings(threads=1):
            tr = _setup(seed=seed, steps=25, checkpoints=2)
            tr.run()
        return [v.clone() for v in tr.model.state_dict().values()]

    a, b, c = final(0), final(0), final(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_torch_settings_restores_state(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch_settings(threads=1, deterministic=True):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        # deterministic cuBLAS products (CUDA) need a fixed workspace, else torch refuses them
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's choice is kept
    with torch_settings(threads=1, deterministic=True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
