"""Model zoo: layer names, shapes, seeded initialisation, training above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actstore import ActstoreError
from actstore.store import resolve_layers
from actstore.training import (
    MODELS,
    Head,
    InputSpec,
    TrainConfig,
    Trainer,
    build_model,
    make_dataset,
    task_targets,
)
from actstore.training._run import torch_settings

IMG = InputSpec("image", (3, 16, 16))
BITS = InputSpec("bits", (24,))
HEADS = (Head("a", 3, 0), Head("b", 2, 1))


@pytest.mark.parametrize(
    ("name", "spec", "params", "layers"),
    [
        ("alexnet", IMG, {"width": 4, "fc_width": 16},
         ["conv1", "conv2", "conv3", "conv4", "conv5", "pool3", "fc6", "fc7", "out"]),
        ("resnet", IMG, {"width": 4, "stages": 2, "blocks_per_stage": 2},
         ["stem", "block1", "block2", "block3", "block4", "pre_pool", "post_pool", "out"]),
        ("mlp", BITS, {"hidden": [16, 8, 8]}, ["fc1", "fc2", "fc3", "out"]),
        ("mlp", IMG, {"hidden": [16]}, ["fc1", "out"]),
        ("transformer", BITS, {"d_model": 16, "n_layers": 3, "n_heads": 2},
         ["embed", "block0", "block1", "block2", "out"]),
        ("transformer", IMG, {"d_model": 16, "n_layers": 1, "n_heads": 2, "patch_size": 4},
         ["embed", "block0", "out"]),
        ("conv1d", BITS, {"channels": [4, 6], "kernel_size": 5, "fc_width": 8},
         ["conv1", "conv2", "fc", "out"]),
    ],
)
def test_layer_names_shapes_and_seeded_init(name, spec, params, layers):
    torch.manual_seed(0)
    net = build_model(name, spec, HEADS, params)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    # the capture code names layers exactly as the attributes
    assert [c for c, _ in resolve_layers(net, "all")] == layers
    assert [p for _, p in resolve_layers(net, "all")] == layers
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 2 if spec.kind == "bits" else 256,
                                                           (5, *spec.shape), dtype=np.uint8))
    out = net(x)
    assert out.shape == (5, 5)
    parts = net.split_logits(out)
    assert parts["a"].shape == (5, 3) and parts["b"].shape == (5, 2)
    torch.manual_seed(0)
    again = build_model(name, spec, HEADS, params)
    for (k, v), (k2, v2) in zip(init.items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    torch.manual_seed(1)
    other = build_model(name, spec, HEADS, params)
    assert any(not torch.equal(v, v2) for v, v2 in
               zip(init.values(), other.state_dict().values(), strict=True))


def test_transformer_heads_read_their_output_tokens():
    torch.manual_seed(0)
    heads = (Head("a", 2, 1), Head("b", 2, 0))
    net = build_model("transformer", BITS, heads, {"d_model": 16, "n_heads": 2})
    net.eval()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (4, 24), dtype=np.uint8))
    seen = {}
    net.out.register_forward_hook(lambda m, i, o: seen.setdefault("o", o))
    logits = net(x)
    o = seen["o"]  # (B, 24 + 2 queries, 4)
    assert torch.equal(logits[:, :2], o[:, 24 + 1, :2])  # head a at query token 1
    assert torch.equal(logits[:, 2:], o[:, 24 + 0, 2:])  # head b at query token 0


def test_bad_models_and_parameters():
    with pytest.raises(ActstoreError, match="valid models: alexnet"):
        build_model("vgg", IMG, HEADS)
    with pytest.raises(ActstoreError, match="takes image inputs"):
        build_model("alexnet", BITS, HEADS)
    with pytest.raises(ActstoreError, match="valid: width, fc_width"):
        build_model("alexnet", IMG, HEADS, {"depth": 3})
    with pytest.raises(ActstoreError, match="must divide"):
        build_model("transformer", BITS, HEADS, {"d_model": 10, "n_heads": 3})
    with pytest.raises(ActstoreError, match="activation"):
        build_model("mlp", BITS, HEADS, {"activation": "swish"})
    with pytest.raises(ActstoreError, match="takes bits inputs"):
        build_model("conv1d", IMG, HEADS)
    with pytest.raises(ActstoreError, match="must be odd"):
        build_model("conv1d", BITS, HEADS, {"kernel_size": 4})
    with pytest.raises(ActstoreError, match="list of channel counts"):
        build_model("conv1d", BITS, HEADS, {"channels": 8})
    assert set(MODELS) == {"alexnet", "resnet", "mlp", "transformer", "conv1d"}


TRIFEATURE = {"image_size": 16, "renders": 1, "n_val": 200, "n_heldout": 0}


@pytest.mark.parametrize(
    ("dataset", "dparams", "task", "model", "mparams", "steps", "floor"),
    [
        # chance: 0.1 (10 colours), 0.5 (binary label), 0.5 (each multi-feature head)
        ("trifeature", TRIFEATURE, "color", "alexnet", {"width": 8, "fc_width": 32}, 80,
         {"color": 0.4}),
        ("trifeature", TRIFEATURE, "color", "resnet", {"width": 8}, 80, {"color": 0.4}),
        ("binary", {"n_train": 2048, "n_val": 500}, "label", "mlp", {"hidden": [64, 64]}, 100,
         {"label": 0.75}),
        ("multifeature", {"n_train": 2048, "n_val": 500}, "all", "transformer",
         {"d_model": 32, "n_layers": 2}, 150, {"linear": 0.9}),
        ("multifeature", {"n_train": 2048, "n_val": 500}, "all", "conv1d",
         {"channels": [8, 8]}, 150, {"linear": 0.9}),
    ],
)
def test_each_model_trains_above_chance(dataset, dparams, task, model, mparams, steps, floor):
    ds = make_dataset(dataset, dparams)
    data = ds.make(task_targets(task, ds), seed=0)
    with torch_settings(threads=1):
        torch.manual_seed(0)
        net = build_model(model, data.input_spec, data.heads, mparams)
        cfg = TrainConfig(steps=steps, lr=3e-3, checkpoints=2, eval_size=500)
        metrics = Trainer(net, data, cfg, seed=0).run()
    for head, lo in floor.items():
        untrained, trained = metrics["val"]["acc"][head]
        assert trained > lo, (head, metrics["val"]["acc"])
        assert trained > untrained


def test_conv1d_layers_are_recorded_whole(tmp_path):
    """A conv layer of bits is recorded as channels x positions (a channel mean would average
    away which input domain a unit reads), the fully connected layer as its units."""
    from actstore.store import ProbeSet, create_store

    torch.manual_seed(0)
    net = build_model("conv1d", BITS, HEADS, {"channels": [3, 5], "fc_width": 7})
    x = np.random.default_rng(0).integers(0, 2, (6, 24), dtype=np.uint8)
    probe = ProbeSet(name="bits6", labels={"a": np.arange(6) % 3}, inputs=x)
    st = create_store(str(tmp_path / "s.zarr"))
    st.add_probe_set(probe)
    with st.writer("r", "bits6", steps=[0]) as w:
        assert w.capture(net, 0)
    rd = st.reader("r")
    assert {layer: rd.units(layer) for layer in ("conv1", "conv2", "fc")} == {
        "conv1": 3 * 24, "conv2": 5 * 24, "fc": 7}
    with torch.no_grad():
        conv1 = net.conv1(torch.from_numpy(x).float().mul(2).sub(1).unsqueeze(1))
    np.testing.assert_allclose(rd.read("conv1", 0), conv1.flatten(1).numpy(), rtol=1e-5,
                               atol=1e-6)
