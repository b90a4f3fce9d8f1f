"""Activations written through capture equal a direct forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import SmallCNN, mlp, small_cnn, tiny_transformer

from actstore import ActstoreError, ActstoreWarning, ProvenanceError
from actstore.store import ProbeSet, create_store


def _forward_outputs(model, x, names, batch_size=None):
    """Outputs of modules ``names`` in a plain forward pass (in batches of ``batch_size``:
    matrix products may round differently for other batch sizes)."""
    outs = {n: [] for n in names}
    hooks = [
        dict(model.named_modules())[n].register_forward_hook(
            lambda m, i, o, n=n: outs[n].append(o if isinstance(o, torch.Tensor) else o[0])
        )
        for n in names
    ]
    step = batch_size or len(x)
    with torch.no_grad():
        model.eval()
        for start in range(0, len(x), step):
            model(x[start : start + step])
    for h in hooks:
        h.remove()
    return {n: torch.cat(v) for n, v in outs.items()}


@pytest.mark.parametrize("url_kind", ["local", "memory"])
def test_cnn_roundtrip_float32_exact(tmp_path, image_probe_set, url_kind):
    url = str(tmp_path / "s.zarr") if url_kind == "local" else f"memory://{tmp_path.name}/s.zarr"
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    with st.writer("cnn0", "images", steps=[0]) as w:
        assert w.capture(model, 0, batch_size=16)
    rd = st.reader("cnn0")
    assert rd.layers == ["conv1", "relu1", "conv2", "pool", "fc1", "out"]
    ref = _forward_outputs(model, torch.from_numpy(image_probe_set.inputs), rd.layers, 16)
    for name in rd.layers:
        expect = ref[name]
        if expect.ndim == 4:
            expect = expect.mean(dim=(2, 3))
        np.testing.assert_array_equal(rd.read(name, 0), expect.reshape(len(expect), -1).numpy())
    assert rd.layer_table["conv1"]["reduction"] == "mean"
    assert rd.layer_table["conv1"]["output_shape"] == [8, 8, 8]
    assert rd.layer_table["out"]["reduction"] == "none"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mlp_activations_read_back_equal_its_forward_pass(store_url, dtype):
    rng = np.random.default_rng(1)
    ps = ProbeSet("bits", labels={"easy": rng.integers(0, 2, 64)},
                  inputs=rng.integers(0, 2, (64, 32)).astype("float32"))
    st = create_store(store_url)
    st.add_probe_set(ps)
    model = mlp()
    with st.writer("mlp0", "bits", steps=[0]) as w:
        w.capture(model, 0, dtype=dtype, batch_size=10)
    rd = st.reader("mlp0")
    ref = _forward_outputs(model, torch.from_numpy(ps.inputs), ["fc1", "fc2", "out"], 10)
    for name in ["fc1", "fc2", "out"]:
        got = rd.read(name, 0)
        assert got.dtype == np.dtype(dtype)
        # float32 exact; float16 is the float32 value rounded to the nearest float16
        np.testing.assert_array_equal(got, ref[name].numpy().astype(dtype))
        if dtype == "float16":
            np.testing.assert_allclose(got, ref[name].numpy(), rtol=2**-11, atol=2**-24)


def test_cnn_and_transformer_roundtrip_float16(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    tokens = np.random.default_rng(2).integers(0, 16, (24, 6)).astype("int64")
    st.add_probe_set(ProbeSet("seq", labels={"first": tokens[:, 0]}, inputs=tokens))
    cnn, tf = small_cnn(), tiny_transformer()
    with st.writer("cnn", "images", steps=[0]) as w:
        w.capture(cnn, 0, dtype="float16", batch_size=16)
    with st.writer("tf", "seq", steps=[0]) as w:
        w.capture(tf, 0, layers=["embed", "block*"], reduce="all", dtype="float16")
    ref = _forward_outputs(cnn, torch.from_numpy(image_probe_set.inputs), ["conv2", "fc1"], 16)
    ref_tf = _forward_outputs(tf, torch.from_numpy(tokens), ["block1"])
    expected = [("cnn", "conv2", ref["conv2"].mean(dim=(2, 3))), ("cnn", "fc1", ref["fc1"]),
                ("tf", "block1", ref_tf["block1"])]
    for run, name, h in expected:
        got = st.reader(run).read(name, 0)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, h.reshape(len(h), -1).numpy().astype("float16"))


@pytest.mark.parametrize("reduce", ["mean", "last", "all", "max"])
def test_transformer_tuple_and_dataclass_outputs(store_url, reduce):
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 16, (24, 6)).astype("int64")
    ps = ProbeSet("seq", labels={"first": tokens[:, 0]}, inputs=tokens)
    st = create_store(store_url)
    st.add_probe_set(ps)
    model = tiny_transformer()
    with st.writer("tf0", "seq", steps=[0]) as w:
        w.capture(model, 0, layers=["embed", "block*", "output"], reduce=reduce, batch_size=8)
    rd = st.reader("tf0")
    assert rd.layers == ["output", "embed", "block0", "block1"]
    ref = _forward_outputs(model, torch.from_numpy(tokens), ["embed", "block0", "block1"])
    with torch.no_grad():
        ref["output"] = model(torch.from_numpy(tokens)).last_hidden_state
    for name, h in ref.items():  # h: (B, T, D)
        expect = {"mean": h.mean(1), "last": h[:, -1], "all": h, "max": h.amax(1)}[reduce]
        got = rd.read(name, 0)
        np.testing.assert_array_equal(got, expect.reshape(len(h), -1).numpy())  # float32 exact
    if reduce == "all":
        assert rd.array("block0").shape == (1, 24, 6, 16)


def test_conv_reductions_equal_their_definition_on_the_forward_pass(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    x = torch.from_numpy(image_probe_set.inputs)
    conv = _forward_outputs(model, x, ["conv1"])["conv1"]  # (B, C, H, W)
    expected = {
        "max": conv.amax(dim=(2, 3)),
        "center": conv[:, :, 4, 4],
        "flatten": conv.reshape(len(conv), -1),
    }
    for i, (spec, exp) in enumerate(expected.items()):
        with st.writer(f"r{i}", "images", steps=[0]) as w:
            w.capture(model, 0, layers="conv1", reduce=spec)
        np.testing.assert_allclose(st.reader(f"r{i}").read("conv1", 0), exp.numpy(), rtol=1e-6)


def test_randproj_is_seeded_and_preserves_geometry(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    for run in ("a", "b"):
        with st.writer(run, "images", steps=[0]) as w:
            w.capture(model, 0, layers="conv2", reduce="randproj:256")
    a, b = st.reader("a").read("conv2", 0), st.reader("b").read("conv2", 0)
    assert a.shape == (40, 256)
    np.testing.assert_array_equal(a, b)  # same projection for every run and checkpoint
    flat = _forward_outputs(model, torch.from_numpy(image_probe_set.inputs), ["conv2"])["conv2"]
    flat = flat.reshape(40, -1).numpy()
    d_full = np.linalg.norm(flat[:, None] - flat[None], axis=-1)[np.triu_indices(40, 1)]
    d_proj = np.linalg.norm(a[:, None] - a[None], axis=-1)[np.triu_indices(40, 1)]
    # Johnson-Lindenstrauss: distances kept within ~20% for K = 256
    assert np.median(np.abs(d_proj / d_full - 1)) < 0.2


def test_early_stop_skips_later_layers(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    calls = []
    model.out.register_forward_hook(lambda *a: calls.append(1))
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(model, 0, layers=["conv1", "conv2"], batch_size=10)
    n_batches = -(-image_probe_set.n // 10)
    assert n_batches >= 3
    # only the first batch runs the whole model (it counts how often each module runs)
    assert calls == [1]
    assert st.reader("r").layers == ["conv1", "conv2"]
    model(torch.from_numpy(image_probe_set.inputs[:2]))
    assert calls == [1, 1]  # hooks were removed, the model works as before


def test_a_module_used_twice_records_its_first_call(store_url, image_probe_set):
    """A shared module (one ReLU applied at two places) is recorded at its first call, whether
    the capture selects it alone (the forward pass stops early) or with every layer."""
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(3 * 8 * 8, 6)
            self.fc2 = torch.nn.Linear(6, 6)
            self.relu = torch.nn.ReLU()
            self.out = torch.nn.Linear(6, 2)

        def forward(self, x):
            return self.out(self.relu(self.fc2(self.relu(self.fc1(x.flatten(1))))))

    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    net = Twice()
    for run, layers in (("all", "all"), ("one", "relu")):
        with st.writer(run, "images", steps=[0]) as w, pytest.warns(
                ActstoreWarning, match="'relu' runs 2 times in one forward pass"):
            w.capture(net, 0, layers=layers, batch_size=16)
    x = torch.from_numpy(image_probe_set.inputs)
    with torch.no_grad():
        first = torch.relu(net.fc1(x.flatten(1))).numpy()
    for run in ("all", "one"):
        np.testing.assert_allclose(st.reader(run).read("relu", 0), first, rtol=1e-6)
        assert st.reader(run).layer_table["relu"]["calls_per_forward"] == 2


def test_two_modules_of_one_layer_name_are_refused(store_url, image_probe_set):
    class Clash(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.Sequential()
            self.attn.add_module("proj", torch.nn.Linear(3 * 8 * 8, 3))
            self.attn_proj = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.attn_proj(self.attn(x.flatten(1)))

    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0]) as w:
        with pytest.raises(ActstoreError, match="'attn.proj' and 'attn_proj' both make"):
            w.capture(Clash(), 0)
        assert w.capture(Clash(), 0, layers="attn.proj")


def test_a_complete_checkpoint_is_never_replaced_silently(store_url, image_probe_set):
    """Capturing a complete checkpoint again is a no-op with the same weights and layers, and
    an error with other weights, layers or reductions, or other arrays in write_slot."""
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    with st.writer("r", "images", steps=[0]) as w:
        assert w.capture(model, 0, layers="conv1,fc1")
        assert not w.capture(model, 0, layers="conv1,fc1")
        other = small_cnn()
        with torch.no_grad():
            other.out.bias.add_(1.0)  # a layer that is not recorded: the weights still differ
        with pytest.raises(ProvenanceError, match="other weights"):
            w.capture(other, 0, layers="conv1,fc1")
        with pytest.raises(ProvenanceError, match="this capture selects"):
            w.capture(model, 0, layers="conv1")
        with pytest.raises(ProvenanceError, match="reduced by 'mean'; this capture asks for 'max'"):
            w.capture(model, 0, layers="conv1,fc1", reduce="max")
        # the same arrays again: nothing to do; others: refused
        same = {name: st.reader("r").read(name, 0) for name in ("conv1", "fc1")}
        assert not w.write_slot(0, same)
        with pytest.raises(ProvenanceError, match="other values of layer 'fc1'"):
            w.write_slot(0, {**same, "fc1": same["fc1"] + 1})
        # another reduction of a layer at a new checkpoint is refused too
        with pytest.raises(ProvenanceError, match="recorded with reduction 'mean'"):
            w.capture(model, 1, layers="conv1,fc1", reduce="max")
    assert st.reader("r").complete_steps == [0]


def test_unknown_layer_lists_available(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with pytest.raises(ActstoreError, match=r"no layer matches 'fc9'; valid names: all, "
                                            r"leaves, conv1, relu1.*actstore layers"):
        with st.writer("r", "images", steps=[0]) as w:
            w.capture(small_cnn(), 0, layers="fc9")
    assert st.run_ids() == []  # nothing left behind


def test_nan_activations_reported_and_rolled_back(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    with st.writer("r", "images", steps=[0, 5]) as w:
        w.capture(model, 0)
    before = st.reader("r").read("conv1", 0).copy()
    with torch.no_grad():
        model.fc1[0].weight[0, 0] = float("nan")
    with pytest.raises(ActstoreError, match=r"layer 'fc1' at checkpoint 5 has .* NaN/Inf"):
        with st.writer("r", "images", steps=[0, 5]) as w:
            w.capture(model, 5, batch_size=8)
    rd = st.reader("r")
    assert rd.status.tolist() == [2, 0]
    assert rd.steps.tolist() == [0, -1]
    np.testing.assert_array_equal(rd.read("conv1", 0), before)


def test_float16_overflow_is_an_error(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    with torch.no_grad():
        model.out.bias.fill_(1e6)
    with pytest.raises(ActstoreError, match="beyond float16's range"):
        with st.writer("r", "images", steps=[0]) as w:
            w.capture(model, 0, dtype="float16")
    assert st.run_ids() == []


def test_without_declared_layers_every_leaf_module_is_recorded(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    model.actstore_layers = None  # as a model that declares nothing
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(model, 0, batch_size=16)
    rd = st.reader("r")
    # SmallCNN's leaf modules in definition order; the Sequential fc1's children are named
    # by their path with the dot replaced
    assert rd.layers == ["conv1", "relu1", "conv2", "pool", "flat", "fc1_0", "fc1_1", "out"]
    ref = _forward_outputs(model, torch.from_numpy(image_probe_set.inputs),
                           ["fc1.0", "fc1.1", "flat"], 16)
    np.testing.assert_array_equal(rd.read("fc1_0", 0), ref["fc1.0"].numpy())
    np.testing.assert_array_equal(rd.read("fc1_1", 0), ref["fc1.1"].numpy())
    np.testing.assert_array_equal(rd.read("flat", 0), ref["flat"].numpy())
    # a model that declares its layers records those, in the declared order
    with st.writer("d", "images", steps=[0]) as w:
        w.capture(small_cnn(), 0)
    assert st.reader("d").layers == SmallCNN.actstore_layers


def test_weights_hash_of_every_float_dtype():
    from actstore.store import weights_hash

    model = small_cnn()
    h32 = weights_hash(model)
    assert weights_hash(small_cnn()) == h32
    half = small_cnn().to(torch.bfloat16)
    h16 = weights_hash(half)
    assert h16 != h32 and weights_hash(small_cnn().to(torch.bfloat16)) == h16
    with torch.no_grad():
        half.out.bias[0] += 1
    assert weights_hash(half) != h16


def test_layer_named_like_a_label_is_refused_before_writing(store_url, image_probe_set):
    ps = ProbeSet("clash", labels={"fc1": image_probe_set.labels["color"]},
                  inputs=image_probe_set.inputs)
    st = create_store(store_url)
    st.add_probe_set(ps)
    with pytest.raises(ActstoreError, match="layer 'fc1' of run 'r' has the name of an array"):
        with st.writer("r", "clash", steps=[0]) as w:
            w.capture(small_cnn(), 0)
    with pytest.raises(ActstoreError, match="layer 'status' of run 'r'"):
        with st.writer("r", "clash", steps=[0]) as w:
            w.write_slot(0, {"status": np.ones((ps.n, 2))})
    assert st.run_ids() == []


def test_model_declared_reductions_are_the_default(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    model.actstore_reductions = {"conv2": "flatten"}
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(model, 0, layers=["conv1", "conv2"])
    rd = st.reader("r")
    assert rd.layer_table["conv1"]["reduction"] == "mean"
    assert rd.layer_table["conv2"]["reduction"] == "flatten"
    assert rd.units("conv2") == 16 * 8 * 8
    with st.writer("r2", "images", steps=[0]) as w:  # an explicit choice wins
        w.capture(model, 0, layers=["conv2"], reduce="max")
    assert st.reader("r2").layer_table["conv2"]["reduction"] == "max"


def test_forward_error_in_a_later_batch_is_one_line_and_rolled_back(store_url, image_probe_set):
    class FailsLater(SmallCNN):
        calls = 0

        def forward(self, x):
            FailsLater.calls += 1
            if FailsLater.calls > 2:
                raise RuntimeError("shape mismatch deep inside\nsecond line of torch's message")
            return super().forward(x)

    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0, 5]) as w:
        w.capture(small_cnn(), 0)
    before = st.reader("r").read("fc1", 0).copy()
    with pytest.raises(ActstoreError) as err:
        with st.writer("r", "images", steps=[0, 5]) as w:
            w.capture(FailsLater(), 5, batch_size=16, model_name="pkg.mod:fails_later")
    msg = str(err.value)
    assert "\n" not in msg
    assert ("the forward pass of model pkg.mod:fails_later failed on probe set 'images' "
            "(inputs of shape (40, 3, 8, 8), dtype float32; fed as float32 batches of shape "
            "(8, 3, 8, 8) on cpu): shape mismatch deep inside;") in msg
    rd = st.reader("r")
    assert rd.status.tolist() == [2, 0] and rd.steps.tolist() == [0, -1]
    np.testing.assert_array_equal(rd.read("fc1", 0), before)
