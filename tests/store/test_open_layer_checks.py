"""``open_layer`` refuses runs of different probe sets and hides slots that are not complete;
``ProbeSet`` refuses inputs that are no numeric array."""

from __future__ import annotations

import dask.array
import numpy as np
import pytest

import actstore
from actstore.store._layout import STATUS_COMPLETE, STATUS_WRITING


def _two_probe_sets(url: str) -> actstore.Store:
    st = actstore.create_store(url)
    st.add_probe_set(actstore.ProbeSet("cats", labels={"animal": np.array(["cat"] * 6)}))
    st.add_probe_set(actstore.ProbeSet("dogs", labels={"animal": np.array(["dog"] * 6)}))
    return st


def test_runs_of_different_probe_sets_are_refused(tmp_path):
    url = str(tmp_path / "s.zarr")
    st = _two_probe_sets(url)
    for run, ps in (("A", "cats"), ("B", "dogs")):
        with st.writer(run, ps, steps=[0]) as w:
            w.write_slot(0, {"fc": np.ones((6, 3), "f4")})
    for runs in (None, ["A", "B"]):
        with pytest.raises(actstore.ActstoreError) as e:
            actstore.open_layer(url, "fc", runs=runs)
        msg = str(e.value)
        assert "'cats'" in msg and "'dogs'" in msg and "runs=[" in msg, msg
        assert "'A'" in msg and "'B'" in msg, msg
    one = actstore.open_layer(url, "fc", runs=["B"])
    assert list(one["animal"].values) == ["dog"] * 6


def test_runs_of_one_probe_set_still_stack(tmp_path):
    url = str(tmp_path / "s.zarr")
    st = _two_probe_sets(url)
    for run in ("A", "B"):
        with st.writer(run, "dogs", steps=[0]) as w:
            w.write_slot(0, {"fc": np.ones((6, 3), "f4")})
    out = actstore.open_layer(url, "fc")
    assert out.sizes == {"run": 2, "checkpoint": 1, "sample": 6, "unit": 3}
    assert list(out["checkpoint"].values) == [0]
    assert list(out["animal"].values) == ["dog"] * 6


def _interrupted(st: actstore.Store, run: str, step: int, rows: int, value: float) -> None:
    """A writer killed after begin_slot(step) and part of one layer: no __exit__ runs."""
    w = st.writer(run, "p", steps=[step])
    w.__enter__()
    i = w.begin_slot(step)
    arr = w.layer_array("fc", (3,), "float32",
                        {"module": "fc", "reduction": "none", "kind": "array",
                         "output_shape": [3]})
    arr[i, :rows] = np.full((rows, 3), value, "f4")
    w._lease.release()  # the kernel frees the lock of a killed process


@pytest.fixture
def store_with_interrupted_slot(tmp_path):
    url = str(tmp_path / "s.zarr")
    st = actstore.create_store(url)
    st.add_probe_set(actstore.ProbeSet("p", labels={"c": np.arange(6) % 2}))
    for run in ("A", "B"):
        with st.writer(run, "p", steps=[0, 100]) as w:
            w.write_slot(0, {"fc": np.ones((6, 3), "f4")})
            if run == "A":
                w.write_slot(100, {"fc": np.full((6, 3), 3, "f4")})
    _interrupted(st, "B", 100, rows=2, value=5.0)
    return url


def test_incomplete_slot_is_nan_with_step_minus_one(store_with_interrupted_slot):
    url = store_with_interrupted_slot
    rd = actstore.open_store(url).reader("B")
    assert list(rd.status) == [STATUS_COMPLETE, STATUS_WRITING]
    out = actstore.open_layer(url, "fc")
    assert isinstance(out.data, dask.array.Array)                 # still lazy
    assert out["step"].dims == ("run", "checkpoint")
    assert out["step"].sel(run="A").values.tolist() == [0, 100]
    assert out["step"].sel(run="B").values.tolist() == [0, -1]
    vals = out.values
    assert np.isnan(vals[1, 1]).all()                             # B's partial slot hidden
    assert (vals[0, 1] == 3).all() and (vals[:, 0] == 1).all()
    assert float(out.isel(checkpoint=1).mean().compute()) == 3.0  # only A's complete rows
    # plain xarray shows the stored arrays as they are; `status` tells complete slots
    run = actstore.open(url)["runs/B"].to_dataset()
    assert run["status"].values.tolist() == [STATUS_COMPLETE, STATUS_WRITING]
    assert (run["fc"].values[1, :2] == 5).all()


def test_single_run_incomplete_slot(store_with_interrupted_slot):
    out = actstore.open_layer(store_with_interrupted_slot, "fc", runs="B")
    steps = out["step"] if "step" in out.coords else out["checkpoint"]
    assert steps.values.ravel().tolist() == [0, -1]
    assert np.isnan(out.values[0, 1]).all() and (out.values[0, 0] == 1).all()


@pytest.mark.parametrize("inputs", [
    [np.zeros(3), np.zeros(4)],                                   # ragged list
    np.array([np.zeros(3), np.zeros(4)], dtype=object),           # ragged object array
    np.array([{"a": 1}, {"b": 2}], dtype=object),                 # objects
    np.array(["a", "b"]),                                         # strings
    np.array([b"a", b"b"]),                                       # bytes
])
def test_probe_set_refuses_non_numeric_inputs(inputs):
    with pytest.raises(actstore.ActstoreError, match="numeric.*shape \\(n_samples"):
        actstore.ProbeSet("p", labels={"a": np.arange(2)}, inputs=inputs)


def test_probe_set_inputs_rows_must_match_labels():
    with pytest.raises(actstore.ActstoreError, match=r"shape \(2,\), but there are 3 samples"):
        actstore.ProbeSet("p", labels={"a": np.arange(2)}, inputs=np.zeros((3, 4), "f4"))


@pytest.mark.parametrize("inputs", [
    np.zeros((2, 3, 4, 4), "float32"), np.zeros((2, 5), "int64"),
    np.zeros((2, 3, 4, 4), "uint8"), np.zeros((2, 4), bool), [[1.0, 2.0], [3.0, 4.0]],
])
def test_probe_set_keeps_numeric_inputs(inputs):
    ps = actstore.ProbeSet("p", labels={"a": np.arange(2)}, inputs=inputs)
    assert ps.n == 2 and ps.inputs is not None and ps.inputs.shape[0] == 2


def test_probe_set_takes_torch_tensors():
    torch = pytest.importorskip("torch")
    ps = actstore.ProbeSet("p", labels={"a": np.arange(2)}, inputs=torch.ones(2, 3))
    assert isinstance(ps.inputs, np.ndarray) and ps.inputs.dtype == np.float32


def test_open_layer_shows_checkpoints_in_step_order(tmp_path):
    """Slots are stored in the order they were added (a later dump adds earlier steps);
    open_layer orders them by step, so label slices and isel(-1) mean what they say."""
    st = actstore.create_store(str(tmp_path / "o.zarr"))
    st.add_probe_set(actstore.ProbeSet("p", labels={"y": np.arange(6) % 2}))
    for steps in ([0, 10, 100], [50, 1000], [20]):
        with st.writer("r", "p", steps=steps) as w:
            for s in steps:
                w.write_slot(s, {"fc": np.full((6, 2), s, dtype="float32")})
    assert st.reader("r").planned_steps == [0, 10, 100, 50, 1000, 20]
    da = actstore.open_layer(st.url, "fc")
    assert da.checkpoint.values.tolist() == [0, 10, 20, 50, 100, 1000]
    assert da.sel(checkpoint=slice(0, 100)).checkpoint.values.tolist() == [0, 10, 20, 50, 100]
    np.testing.assert_array_equal(da.isel(run=0).values[:, 0, 0], [0, 10, 20, 50, 100, 1000])
