"""Probe sets with several named input arrays: the API, the store (write, read, checksums,
verify), .npz files, and old one-array probe sets unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import zarr

from actstore import ActstoreError
from actstore.store import ProbeSet, create_store, open_store, repair, verify
from actstore.store._probeset import probe_set_from_npz

N = 6


def _named() -> ProbeSet:
    ids = np.arange(N * 5, dtype=np.int64).reshape(N, 5) + 100
    mask = (np.arange(5)[None, :] < np.array([5, 4, 3, 5, 2, 1])[:, None]).astype(np.int64)
    return ProbeSet("sent", labels={"length": mask.sum(1), "kind": np.arange(N) % 2},
                    inputs={"input_ids": ids * mask, "attention_mask": mask,
                            "token_type_ids": np.zeros((N, 5), np.int64)},
                    attrs={"generator": "test"})


def test_named_inputs_api():
    ps = _named()
    assert ps.is_mapping and ps.n == N
    assert ps.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert ps.mask is ps.inputs["attention_mask"]
    b = ps.batch(2, 4)
    assert set(b) == set(ps.input_names)
    np.testing.assert_array_equal(b["input_ids"], ps.inputs["input_ids"][2:4])
    sub = ps.subset(np.array([5, 0]))
    assert sub.is_mapping and sub.mask.tolist() == [[1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert "input_ids: int64[6, 5]" in repr(ps)


def test_one_array_probe_sets_are_as_before(image_probe_set):
    ps = image_probe_set
    assert not ps.is_mapping and ps.input_names == ("inputs",) and ps.mask is None
    assert isinstance(ps.batch(0, 3), np.ndarray)
    np.testing.assert_array_equal(ps.batch(0, 3), ps.inputs[:3])
    # the hash of a one-array probe set is the one earlier versions wrote
    h = hashlib.sha256()
    for name, arr in [("sample", ps.sample), *sorted(ps.labels.items())]:
        h.update(name.encode() + str(arr.dtype).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(b"inputs" + str(ps.inputs.dtype).encode() + str(ps.inputs.shape).encode())
    h.update(ps.inputs.tobytes())
    assert ps.hash == h.hexdigest()
    assert ProbeSet("none", labels={"a": [1, 2]}).input_names == ()
    with pytest.raises(ActstoreError, match="has no inputs stored"):
        ProbeSet("none", labels={"a": [1, 2]}).batch(0, 1)


def test_the_hash_covers_every_named_input():
    ps = _named()
    changed = {k: v.copy() for k, v in ps.inputs.items()}
    changed["token_type_ids"][0, 0] = 1
    other = ProbeSet("sent", labels=ps.labels, inputs=changed)
    assert other.hash != ps.hash
    # the same arrays in another order are the same probe set
    again = ProbeSet("sent", labels=ps.labels, inputs=dict(reversed(list(ps.inputs.items()))))
    assert again.hash == ps.hash
    # one array named 'inputs' is not the same as a one-array probe set
    one = ProbeSet("x", labels={"a": [0, 1]}, inputs=np.zeros((2, 3)))
    assert ProbeSet("x", labels={"a": [0, 1]}, inputs={"inputs": np.zeros((2, 3))}).hash != one.hash


@pytest.mark.parametrize(("inputs", "match"), [
    ({}, "empty dict"),
    ({"input ids": np.zeros((N, 3))}, "no Python identifier"),
    ({"class": np.zeros((N, 3))}, "no Python identifier"),
    ({"a": np.zeros((N, 3)), "b": np.zeros((N + 1, 3))},
     r"different numbers of rows \(a: 6, b: 7\)"),
    ({"input_ids": np.array(["x"] * N)}, "input 'input_ids' hold strings"),
    ({"attention_mask": np.zeros(N, int)}, r"'attention_mask' has shape \(6,\)"),
    ({"attention_mask": np.full((N, 3), 2)}, "values other than 0 and 1"),
    ({"attention_mask": np.full((N, 3), 0.5)}, "values other than 0 and 1"),
    ({"input_ids": np.zeros((N + 1, 3))}, "7 inputs but 6 sample ids"),
])
def test_bad_named_inputs_are_one_clear_error(inputs, match):
    with pytest.raises(ActstoreError, match=match):
        ProbeSet("p", labels={"y": np.arange(N)}, inputs=inputs, sample=np.arange(N))


def test_named_inputs_round_trip_through_the_store(tmp_path):
    ps = _named()
    st = create_store(str(tmp_path / "s.zarr"))
    assert st.add_probe_set(ps) is True
    assert st.add_probe_set(ps) is False  # identical: nothing written
    back = open_store(str(tmp_path / "s.zarr")).probe_set("sent")
    assert back.input_names == ps.input_names and back.hash == ps.hash
    for k in ps.input_names:
        np.testing.assert_array_equal(back.inputs[k], ps.inputs[k])
        assert back.inputs[k].dtype == ps.inputs[k].dtype
    assert back.attrs == {"generator": "test"}
    assert open_store(str(tmp_path / "s.zarr")).probe_set("sent", inputs=False).inputs is None
    # the layout docs/FORMAT.md gives, every array with a crc32c
    g = zarr.open_group(str(tmp_path / "s.zarr" / "probe_sets" / "sent"), mode="r")
    assert g.attrs["actstore.inputs"] == list(ps.input_names)
    arr = g["inputs.attention_mask"]
    assert arr.metadata.dimension_names == ("sample", "attention_mask_dim1")
    assert '"crc32c"' in json.dumps(
        json.loads((tmp_path / "s.zarr/probe_sets/sent/inputs.input_ids/zarr.json").read_text())
        ["codecs"])
    assert verify(open_store(str(tmp_path / "s.zarr"))) == []


def test_a_changed_named_input_is_found_by_verify(tmp_path):
    url = tmp_path / "s.zarr"
    create_store(str(url)).add_probe_set(_named())
    g = zarr.open_group(str(url / "probe_sets" / "sent"), mode="r+")
    g["inputs.token_type_ids"][1, 1] = 1  # valid chunk and checksum: only the hash finds it
    problems = verify(open_store(str(url)))
    assert [(p.key, p.detail) for p in problems] == [
        ("probe_sets/sent", "contents do not match the recorded hash")]
    # a flipped bit: unreadable, and no copy to restore it from
    chunk = url / "probe_sets" / "sent" / "inputs.input_ids" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x04
    chunk.write_bytes(bytes(data))
    problems = verify(open_store(str(url)))
    assert [(p.key, p.fix) for p in problems] == [("probe_sets/sent/inputs.input_ids", "")]
    assert "the stimuli have no copy" in problems[0].detail


def test_npz_with_named_inputs(tmp_path):
    ps = _named()
    f = tmp_path / "sent.npz"
    np.savez(f, **{f"inputs.{k}": v for k, v in ps.inputs.items()}, **ps.labels)
    back = probe_set_from_npz(f)
    assert back.input_names == ps.input_names and back.hash == ps.hash
    np.savez(f, inputs=np.zeros((N, 2)), **{"inputs.input_ids": ps.inputs["input_ids"]},
             **ps.labels)
    with pytest.raises(ActstoreError, match="both an 'inputs' array and named inputs"):
        probe_set_from_npz(f)
    np.savez(f, **ps.labels)
    with pytest.raises(ActstoreError, match=r"no 'inputs' array and no named 'inputs.<name>'"):
        probe_set_from_npz(f)


def test_plain_xarray_reads_named_inputs(tmp_path):
    import xarray as xr

    url = str(tmp_path / "s.zarr")
    create_store(url).add_probe_set(_named())
    ds = xr.open_zarr(url, group="probe_sets/sent", consolidated=False)
    assert ds["inputs.attention_mask"].dims == ("sample", "attention_mask_dim1")
    assert ds["inputs.attention_mask"].sum("attention_mask_dim1").values.tolist() == \
        ds["length"].values.tolist()


def test_a_damaged_label_of_a_probe_set_with_named_inputs_is_restored(tmp_path):
    url = tmp_path / "s.zarr"
    st = create_store(str(url))
    ps = _named()
    st.add_probe_set(ps)
    with st.writer("r", "sent", [0], attrs={"model": "m"}) as w:
        w.write_slot(0, {"fc": np.ones((N, 3), np.float32)})
    chunk = url / "probe_sets" / "sent" / "kind" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x04
    chunk.write_bytes(bytes(data))
    problems = verify(open_store(str(url)))
    assert [(p.key, p.fix) for p in problems] == [("probe_sets/sent/kind", "probe_set")]
    repair(open_store(str(url), mode="a"))
    assert verify(open_store(str(url))) == []
    back = open_store(str(url)).probe_set("sent")
    assert back.hash == ps.hash and back.input_names == ps.input_names
