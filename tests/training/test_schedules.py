"""Learning-rate schedules of the trainer and the batch-norm option of the AlexNet-style CNN."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from actstore import ActstoreError
from actstore.store import resolve_layers
from actstore.training import TrainConfig, Trainer, build_model, lr_factor, make_dataset
from actstore.training._data import Head, InputSpec
from actstore.training._registry import model_params


def test_cosine_matches_torch_cosine_annealing():
    """Without warmup, the cosine factor is torch's CosineAnnealingLR (eta_min = 0)."""
    total = 37
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=0.0)
    ref = []
    for _ in range(total):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [lr_factor(s, total, 0, "cosine") for s in range(total)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_warmup_is_linear_then_the_schedule_starts_at_one():
    assert [lr_factor(s, 100, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    f = [lr_factor(s, 14, 4, "cosine") for s in range(14)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0
    assert f[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert all(a >= b for a, b in itertools.pairwise(f[4:]))  # decays after the warmup
    with pytest.raises(ActstoreError, match="valid"):
        lr_factor(0, 10, 0, "step")


def test_train_config_checks_the_schedule():
    for kw, match in [({"lr_schedule": "linear"}, "valid schedules: constant, cosine"),
                      ({"warmup": 500, "steps": 100}, "warmup=500 exceeds steps=100"),
                      ({"warmup": -1}, "warmup")]:
        with pytest.raises(ActstoreError, match=match):
            TrainConfig(**kw)
    d = TrainConfig(lr_schedule="cosine", warmup=3).to_dict()
    assert d["lr_schedule"] == "cosine" and d["warmup"] == 3
    assert TrainConfig().lr_schedule == "constant" and TrainConfig().warmup == 0


def test_the_trainer_steps_with_the_scheduled_rate():
    ds = make_dataset("multifeature", {"n_train": 128, "n_val": 32})
    data = ds.make(("linear",), seed=0)
    torch.manual_seed(0)
    net = build_model("mlp", data.input_spec, data.heads, {"hidden": [8]})
    cfg = TrainConfig(steps=12, lr=0.01, lr_schedule="cosine", warmup=2, eval_size=32,
                      checkpoints=2)
    tr = Trainer(net, data, cfg)
    seen = []
    tr.add_callback("on_step", lambda t: seen.append(t.lr))
    tr.run()
    np.testing.assert_allclose(seen, [0.01 * lr_factor(s, 12, 2, "cosine") for s in range(12)])
    assert seen[0] == pytest.approx(0.005) and seen[-1] < 0.001


def test_alexnet_batch_norm_keeps_the_layer_names_and_trains_its_statistics():
    spec, heads = InputSpec("image", (3, 16, 16)), (Head("a", 3, 0),)
    torch.manual_seed(0)
    net = build_model("alexnet", spec, heads, {"width": 2, "fc_width": 8, "batch_norm": True})
    plain = build_model("alexnet", spec, heads, {"width": 2, "fc_width": 8})
    assert [c for c, _ in resolve_layers(net, "all")] == [
        c for c, _ in resolve_layers(plain, "all")]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 5 and not any(isinstance(m, torch.nn.BatchNorm2d)
                                     for m in plain.modules())
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    net.train()
    net(x)
    assert not torch.equal(bns[0].running_mean, torch.zeros_like(bns[0].running_mean))
    assert model_params("alexnet", {})["batch_norm"] is False
    with pytest.raises(ActstoreError, match="batch_norm='yes' must be true or false"):
        build_model("alexnet", spec, heads, {"batch_norm": "yes"})
