"""The store format: plain xarray access, laziness, version and path checks."""

from __future__ import annotations

import json
import subprocess
import sys

import dask
import numpy as np
import pytest
import zarr
from factories import small_cnn

import actstore
from actstore import ActstoreError, StoreError
from actstore.store import FORMAT_VERSION, ProbeSet, create_store, open_store


@pytest.fixture
def filled(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    for seed in (0, 1):
        with st.writer(f"cnn_s{seed}", "images", steps=[0, 10],
                       attrs={"model": "small_cnn", "task": "color", "seed": seed}) as w:
            w.capture(small_cnn(), 0)
            w.capture(small_cnn(), 10)
    return st


def test_plain_xarray_opens_without_actstore(filled):
    code = (
        "import sys, xarray as xr, warnings; warnings.simplefilter('error');"
        f"dt = xr.open_datatree({filled.url!r}, engine='zarr');"
        "r = dt['runs/cnn_s0'];"
        "x = r['conv1'].sel(checkpoint=10).where(r['color'] == 1, drop=True);"
        "print(x.shape, dt.attrs['actstore.format'], 'actstore' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n1 = int((filled.probe_set("images").labels["color"] == 1).sum())
    assert out.stdout.strip() == f"({n1}, 8) {FORMAT_VERSION} False"


def test_every_array_has_dimension_names_and_json_attrs(filled):
    root = zarr.open_group(filled.url, mode="r", use_consolidated=False)
    count = 0
    for path, arr in _walk(root):
        assert arr.metadata.dimension_names is not None, path
        assert len(arr.metadata.dimension_names) == arr.ndim
        json.dumps(dict(arr.attrs))
        count += 1
    assert count > 10


def _walk(group, prefix=""):
    for name, arr in group.arrays():
        yield f"{prefix}/{name}", arr
    for name, sub in group.groups():
        yield from _walk(sub, f"{prefix}/{name}")


def test_layer_arrays_are_chunked_by_checkpoint_and_sharded(filled):
    arr = filled.reader("cnn_s0").array("conv1")
    assert arr.chunks[0] == 1 and arr.chunks[2] == arr.shape[2]
    assert arr.shards == (1, arr.chunks[1] * (-(-arr.shape[1] // arr.chunks[1])), arr.shape[2])
    codecs = [type(c).__name__ for c in arr.metadata.codecs[0].codecs]
    assert "Crc32cCodec" in codecs


def test_selection_is_lazy_until_values(filled):
    tree = actstore.open(filled.url)

    def fail(dsk, keys, **kw):
        raise AssertionError("computed before .values")

    with dask.config.set(scheduler=fail):
        sel = tree["runs/cnn_s1"]["fc1"].sel(checkpoint=10).isel(sample=slice(0, 5))
        da = actstore.open_layer(filled.url, "conv2").sel(checkpoint=0)
        assert sel.shape == (5, 32)
        with pytest.raises(AssertionError, match="computed before"):
            sel.values  # noqa: B018
    np.testing.assert_array_equal(sel.values, filled.reader("cnn_s1").read("fc1", 10)[:5])
    assert da.dims == ("run", "sample", "unit")


def test_open_layer_stacks_runs_with_coordinates(filled):
    da = actstore.open_layer(filled.url, "fc1")
    assert da.dims == ("run", "checkpoint", "sample", "unit")
    assert da.sizes == {"run": 2, "checkpoint": 2, "sample": 40, "unit": 32}
    assert list(da.seed.values) == [0, 1]
    assert list(da.task.values) == ["color", "color"]
    assert list(da.checkpoint.values) == [0, 10]
    np.testing.assert_array_equal(da.sel(run="cnn_s1", checkpoint=10).values,
                                  filled.reader("cnn_s1").read("fc1", 10))
    with pytest.raises(ActstoreError, match="no run .* has layer 'nope'"):
        actstore.open_layer(filled.url, "nope")


def test_open_layer_of_runs_with_different_checkpoints(tmp_path):
    """Runs with other steps and other checkpoint counts share one array: a 2-D step grid,
    -1 and NaN where a run has fewer checkpoints; conv maps stored flat are stacked into unit."""
    st = create_store(str(tmp_path / "c.zarr"))
    st.add_probe_set(ProbeSet("ps", labels={"a": np.arange(10) % 2}))
    rng = np.random.default_rng(0)
    written = {}
    for run, steps in (("r0", [0, 5]), ("r1", [0, 3, 7])):
        with st.writer(run, probe_set="ps", steps=steps) as w:
            for s in steps:
                written[run, s] = rng.normal(size=(10, 2, 3, 3)).astype("float32")
                w.write_slot(s, {"conv": written[run, s]})
    da = actstore.open_layer(st.url, "conv")
    assert da.sizes == {"run": 2, "checkpoint": 3, "sample": 10, "unit": 18}
    assert da.step.values.tolist() == [[0, 5, -1], [0, 3, 7]]
    assert da.dtype == np.float32
    assert np.isnan(da.sel(run="r0").isel(checkpoint=2).values).all()
    np.testing.assert_array_equal(da.sel(run="r1").isel(checkpoint=2).values,
                                  written["r1", 7].reshape(10, 18))
    np.testing.assert_array_equal(da.sel(run="r0").isel(checkpoint=1).values,
                                  written["r0", 5].reshape(10, 18))


def test_memory_url_opens_with_xarray(tmp_path, image_probe_set):
    url = f"memory://{tmp_path.name}-fmt/s.zarr"  # one per test: the memory fs is global
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[3]) as w:
        w.capture(small_cnn(), 3, layers="fc1")
    tree = actstore.open(url)
    assert tree["runs/r"]["fc1"].sizes["checkpoint"] == 1
    assert int(tree["runs/r"]["checkpoint"].values[0]) == 3


def test_not_a_store_and_newer_format(tmp_path):
    with pytest.raises(StoreError, match="is not an actstore store"):
        open_store(str(tmp_path / "missing.zarr"))
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an actstore store"):
        open_store(str(tmp_path / "plain.zarr"))
    st = create_store(str(tmp_path / "new.zarr"))
    st.root.attrs["actstore.format"] = FORMAT_VERSION + 1
    with pytest.raises(StoreError, match=f"newer than the {FORMAT_VERSION} this actstore"):
        open_store(str(tmp_path / "new.zarr"))
    st.root.attrs["actstore.format"] = "1"
    with pytest.raises(StoreError, match="invalid store format '1'"):
        open_store(str(tmp_path / "new.zarr"))


def test_probe_set_label_count_mismatch():
    with pytest.raises(ActstoreError, match=r"labels of feature 'color' have shape \(3,\), but "
                                             r"there are 4 samples"):
        ProbeSet("p", labels={"color": np.arange(3)}, inputs=np.zeros((4, 2)))


def test_probe_set_roundtrip_and_conflict(store_url, image_probe_set):
    st = create_store(store_url)
    assert st.add_probe_set(image_probe_set)
    assert not st.add_probe_set(image_probe_set)  # identical: nothing to do
    back = st.probe_set("images")
    assert back.hash == image_probe_set.hash
    np.testing.assert_array_equal(back.inputs, image_probe_set.inputs)
    other = image_probe_set.subset(np.arange(10))
    with pytest.raises(actstore.ProvenanceError, match="already exists .* other contents"):
        st.add_probe_set(other)


def test_a_result_dataset_reads_back_as_written(store_url):
    import xarray as xr

    st = create_store(store_url)
    ds = xr.Dataset({"acc": (("layer", "feature"), np.arange(6.0).reshape(2, 3))},
                    coords={"layer": ["a", "b"], "feature": ["x", "y", "z"]})
    st.write_result("probes", "first", ds)
    assert st.result_names() == ["probes/first"]
    back = open_store(store_url).read_result("probes", "first")
    xr.testing.assert_identical(back, ds)
    tree = actstore.open(store_url)
    assert tree["results/probes/first"]["acc"].shape == (2, 3)


def test_probe_set_hash_survives_the_store_round_trip(store_url):
    from actstore.store import verify

    words = np.empty(6, dtype="<U12")  # wider than its longest item
    words[:] = ["red", "blue"] * 3
    ps = ProbeSet("p", labels={"word": words, "size": np.arange(6, dtype=">i8")},
                  inputs=np.arange(12, dtype=">f4").reshape(6, 2))
    st = create_store(store_url)
    st.add_probe_set(ps)
    assert verify(open_store(store_url)) == []  # a correct probe set is not reported corrupt
    back = open_store(store_url).probe_set("p")
    assert back.hash == ps.hash
    assert not open_store(store_url, mode="a").add_probe_set(back)  # the same probe set


@pytest.mark.parametrize("url_kind", ["local", "memory"])
def test_writers_adding_the_same_probe_set_at_once(tmp_path, url_kind):
    import threading

    url = (str(tmp_path / "s.zarr") if url_kind == "local"
           else f"memory://{tmp_path.name}-race/s.zarr")
    rng = np.random.default_rng(0)
    ps = ProbeSet("p", labels={"c": rng.integers(0, 3, 1500)},
                  inputs=rng.standard_normal((1500, 3, 16, 16)).astype("float32"))
    start = threading.Barrier(4)
    out: list = []

    def add():
        start.wait()
        try:
            out.append(create_store(url).add_probe_set(ps))
        except Exception as e:  # any failure (a race) is what this test looks for
            out.append(repr(e))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out, key=str) == [False, False, False, True]  # written once, by one writer
    back = open_store(url).probe_set("p")
    assert back.hash == ps.hash


def test_storage_errors_become_one_line(monkeypatch, tmp_path):
    import actstore.store._open as st

    class NoCredentialsError(Exception):
        pass

    def refuse(*a, **k):
        raise NoCredentialsError("Unable to locate credentials")

    monkeypatch.setattr(st.zarr, "open_group", refuse)
    with pytest.raises(StoreError, match="cannot open s3://b/a.zarr: NoCredentialsError: Unable "
                                         "to locate credentials; check the path or URL"):
        st.open_store("s3://b/a.zarr")


def test_a_file_or_a_folder_of_other_files_is_not_a_store(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("hi")
    with pytest.raises(StoreError, match="plain.txt is a file, not an actstore store"):
        open_store(str(f))
    with pytest.raises(StoreError, match="lies below the file"):
        create_store(str(f / "sub.zarr"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match="a folder of other files"):
        create_store(str(other))
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_file_url_stores_are_local_stores(tmp_path):
    url = f"file://{tmp_path}/f.zarr"
    st = create_store(url)
    st.add_probe_set(ProbeSet("p", labels={"y": np.arange(4) % 2}))
    with st.writer("r", "p", [0]) as w:
        w.write_slot(0, {"a": np.ones((4, 2), "float32")})
    assert (tmp_path / "f.zarr" / "runs" / "r").is_dir()
    assert open_store(url).run_ids() == ["r"]
    assert actstore.open_layer(url, "a").shape == (1, 1, 4, 2)
