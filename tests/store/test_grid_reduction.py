"""The ``grid:S`` reduction keeps the activations at S x S evenly spaced positions of a conv
map (Li et al. 2016 correlate units over images x positions); the alignment uses them as
samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import SmallCNN, small_cnn

from actstore import ActstoreError
from actstore._execution import Execution
from actstore.store import create_store, reduce_output


def _conv1(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.conv1(torch.from_numpy(x)).numpy()


def test_grid_positions_are_the_map_corners_and_evenly_spaced_between():
    t = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out, used = reduce_output(t, "grid:4", "conv")
    assert used == "grid:4" and out.shape == (2, 3 * 16)
    # linspace(0, 7, 4) = 0, 2.33, 4.67, 7 -> rows and columns 0, 2, 5, 7; channel-major
    want = t[:, :, [0, 2, 5, 7]][:, :, :, [0, 2, 5, 7]].reshape(2, -1)
    np.testing.assert_array_equal(out.numpy(), want.numpy())
    # a map no larger than the grid is kept whole, like flatten
    small, _ = reduce_output(t[:, :, :3, :3], "grid:4", "conv")
    np.testing.assert_array_equal(small.numpy(), t[:, :, :3, :3].reshape(2, -1).numpy())
    # a (batch, units) output is kept as it is
    assert reduce_output(torch.ones(2, 5), "grid:4", "fc")[1] == "none"
    with pytest.raises(ActstoreError, match="grid:S.* positive"):
        reduce_output(t, "grid", "conv")
    with pytest.raises(ActstoreError, match="keeps positions of a conv map"):
        reduce_output(torch.ones(2, 4, 6), "grid:4", "block")


def test_alignment_uses_the_grid_positions_as_samples(tmp_path, image_probe_set):
    from actstore.alignment import align_pair, alignment_job

    st = create_store(str(tmp_path / "g.zarr"))
    st.add_probe_set(image_probe_set)
    models = [small_cnn(), SmallCNN()]  # two seeds: the second from the global RNG state
    for i, model in enumerate(models):
        with st.writer(f"cnn{i}", "images", steps=[0]) as w:
            assert w.capture(model, 0, layers=["conv1", "fc1"], reduce="grid:4")
    rd = st.reader("cnn0")
    assert rd.layer_table["conv1"]["reduction"] == "grid:4"
    assert rd.layer_table["conv1"]["output_shape"] == [8, 8, 8]
    x = image_probe_set.inputs
    maps = [_conv1(m, x)[:, :, [0, 2, 5, 7]][:, :, :, [0, 2, 5, 7]] for m in models]
    np.testing.assert_allclose(rd.read("conv1", 0), maps[0].reshape(len(x), -1), atol=1e-5)
    out = alignment_job(st, ["cnn0", "cnn1"], layers="conv1", name="g",
                        execution=Execution(workers=1))
    conv = out["conv1"]
    assert conv.attrs["positions"] is True and conv.attrs["n_samples"] == len(x) * 16
    a, b = (m.transpose(0, 2, 3, 1).reshape(-1, 8) for m in maps)
    ref = align_pair(a, b, groups=np.repeat(np.arange(len(x)), 16))
    np.testing.assert_allclose(conv["corr"].values[0], ref.corr.between, atol=1e-5)
    np.testing.assert_array_equal(conv["bipartite_index"].values[0], ref.bipartite[0])
