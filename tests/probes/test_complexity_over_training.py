"""V-information of dictionary features from every probed layer at every checkpoint
(``layers_over_checkpoints``): each cell is the ridge V-information of the codes from that
layer's activations at that checkpoint, consistent with the per-layer and per-checkpoint
results."""

from __future__ import annotations

import json

import numpy as np

from actstore.probes import (
    ComplexityConfig,
    read_codes,
    run_complexity,
    vinfo_of_codes,
    write_synthetic_store,
)


def test_every_layer_at_every_checkpoint(tmp_path):
    from actstore.core._source import ReaderSource
    from actstore.features._complexity_job import _folds
    from actstore.store import open_store

    url = str(tmp_path / "s.zarr")
    write_synthetic_store(url, n_runs=1, steps=(0, 10, 100), widths=(6, 12), n=150,
                          features={"shape": 3})
    config = ComplexityConfig(k=5, n_splits=3, max_epochs=40, layers_over_checkpoints=True)
    ds = run_complexity(url, name="t", config=config)
    v = ds["vinfo_layer_checkpoint"]
    assert v.dims == ("run", "checkpoint", "layer", "atom") and v.shape == (1, 3, 2, 5)
    assert np.isfinite(v.values).all()
    # the last checkpoint is vinfo_layer, the dictionary's layer is vinfo_checkpoint
    np.testing.assert_allclose(v.isel(checkpoint=-1).values, ds["vinfo_layer"].values)
    np.testing.assert_allclose(v.sel(layer="layer1").values, ds["vinfo_checkpoint"].values)
    # a cell neither of them holds, recomputed from the stored activations and codes
    st = open_store(url)
    rd = st.reader("run0")
    Z = read_codes(st, "t", "run0")["codes"].values.astype(np.float64)
    want = vinfo_of_codes(ReaderSource(rd, "layer0", 10), Z, _folds(rd, len(Z), config),
                          config.alphas, None, True)["vinfo"]
    np.testing.assert_allclose(v.sel(run="run0", checkpoint=10, layer="layer0").values, want,
                               atol=1e-6)
    assert json.loads(ds.attrs["actstore.config"])["layers_over_checkpoints"] is True
    # without the option the result and its settings are as before
    plain = run_complexity(url, name="p", config=ComplexityConfig(k=5, n_splits=3,
                                                                  max_epochs=40), write=False)
    assert "vinfo_layer_checkpoint" not in plain
    assert "layers_over_checkpoints" not in ComplexityConfig().to_json()
    assert ComplexityConfig.from_options({"layer_checkpoints": True}).layers_over_checkpoints


def test_flow_layers_are_decoded_but_not_counted_in_complexity(tmp_path):
    """A ResNet's residual branches recorded next to its blocks' outputs (Fel et al.: where
    simple and complex features flow)."""
    import torch

    from actstore.core._source import ReaderSource
    from actstore.features._complexity_job import _folds
    from actstore.store import ProbeSet, create_store, open_store
    from actstore.training import Head, InputSpec, build_model

    torch.manual_seed(0)
    net = build_model("resnet", InputSpec("image", (3, 16, 16)), (Head("color", 3, 0),),
                      {"width": 4, "stages": 2, "blocks_per_stage": 1})
    rng = np.random.default_rng(0)
    url = str(tmp_path / "r.zarr")
    st = create_store(url)
    st.add_probe_set(ProbeSet("img", labels={"color": rng.integers(0, 3, 60)},
                              inputs=rng.integers(0, 256, (60, 3, 16, 16), dtype=np.uint8)))
    with st.writer("res0", "img", steps=[0]) as w:
        assert w.capture(net, 0, layers=["all", "block*.bn_b"])
    assert open_store(url).reader("res0").layers == [
        "stem", "block1", "block1_bn_b", "block2", "block2_bn_b", "pre_pool", "post_pool",
        "out"]
    config = ComplexityConfig(k=4, n_splits=3, max_epochs=30, flow_layers="block*_bn_b")
    ds = run_complexity(url, name="f", config=config)
    assert ds["layer"].values.tolist() == ["stem", "block1", "block2", "pre_pool", "post_pool"]
    assert ds["flow_layer"].values.tolist() == ["block1_bn_b", "block2_bn_b"]
    want = 1 - np.clip(ds["vinfo_layer"].values, 0, 1).mean(axis=1)
    np.testing.assert_allclose(ds["complexity"].values, np.clip(want, 0, 1))
    rd = open_store(url).reader("res0")
    Z = read_codes(open_store(url), "f", "res0")["codes"].values.astype(np.float64)
    ref = vinfo_of_codes(ReaderSource(rd, "block2_bn_b", 0), Z, _folds(rd, len(Z), config),
                         config.alphas, None, True)["vinfo"]
    np.testing.assert_allclose(ds["vinfo_flow"].sel(flow_layer="block2_bn_b").values[0], ref,
                               atol=1e-6)
    # patterns that match nothing (a network without residual blocks) leave no flow result
    plain = run_complexity(url, name="g", write=False, config=ComplexityConfig(
        k=4, n_splits=3, max_epochs=30, flow_layers="branch*"))
    assert "vinfo_flow" not in plain and plain.sizes["layer"] == 7
