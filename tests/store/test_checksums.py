"""Format 2: a crc32c on every chunk (labels, sample ids, probe-set arrays included), small
metadata restored from the run's own tables, a checksum on the run's attributes, and format 1
stores still read, verified and repaired."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from actstore import StoreError
from actstore.cli import app
from actstore.store import DamagedRunError, ProbeSet, create_store, open_store, repair, verify
from actstore.store import _layout as L

runner = CliRunner()
N = 12


@pytest.fixture
def store(tmp_path) -> Path:
    """Run r on probe set p (string sample ids, labels color and size): layers fc1 (4 units)
    and blk (2 x 3 units) at steps 0, 5 and 10."""
    url = tmp_path / "s.zarr"
    st = create_store(str(url))
    st.add_probe_set(ProbeSet("p", sample=np.array([f"img{i}" for i in range(N)]),
                              labels={"color": np.arange(N) % 3,
                                      "size": np.linspace(0, 1, N)}))
    rng = np.random.default_rng(0)
    with st.writer("r", "p", [0, 5, 10], attrs={"model": "m", "seed": 0}) as w:
        for step in (0, 5, 10):
            w.write_slot(step, {"fc1": rng.normal(size=(N, 4)).astype("float32"),
                                "blk": rng.normal(size=(N, 2, 3)).astype("float32")})
    return url


def _state(url: Path) -> dict:
    """Everything a reader sees of run r and probe set p."""
    st = open_store(str(url))
    rd = st.reader("r")
    ps = st.probe_set("p")
    return {"steps": rd.steps.tolist(), "status": rd.status.tolist(),
            "sample": rd.sample.tolist(), "labels": {k: v.tolist() for k, v in rd.labels.items()},
            "ps": (ps.sample.tolist(), {k: v.tolist() for k, v in ps.labels.items()}, ps.hash),
            "acts": {(ly, s): rd.read(ly, s).tolist() for ly in rd.layers
                     for s in rd.complete_steps}}


def _flip(path: Path, at: float = 0.5, bit: int = 0x04) -> None:
    data = bytearray(path.read_bytes())
    data[min(len(data) - 1, int(len(data) * at))] ^= bit
    path.write_bytes(bytes(data))


def _chunk(url: Path, *parts: str) -> Path:
    return url.joinpath(*parts, "c", "0")


@pytest.mark.parametrize(("obj", "key", "fix"), [
    (("runs", "r", "color"), "runs/r/color", "copy"),
    (("runs", "r", "sample"), "runs/r/sample", "copy"),
    (("probe_sets", "p", "color"), "probe_sets/p/color", "probe_set"),
    (("probe_sets", "p", "sample"), "probe_sets/p/sample", "probe_set"),
])
def test_a_flipped_bit_in_labels_or_sample_ids_is_found_and_restored(store, obj, key, fix):
    before = _state(store)
    _flip(_chunk(store, *obj))
    problems = verify(open_store(str(store)))
    assert [(p.key, p.fix) for p in problems] == [(key, fix)], problems
    assert "unreadable (" in problems[0].detail
    # reading it elsewhere is one clear error, never a codec error
    st = open_store(str(store))
    with pytest.raises(StoreError, match=f"corrupt data in .*{obj[-1]!r} \\({key}\\)"):
        if obj[0] == "probe_sets":
            st.probe_set("p")
        else:
            print(st.reader("r").labels, st.reader("r").sample)
    res = runner.invoke(app, ["verify", str(store)])
    assert res.exit_code == 1 and key in res.output and "Traceback" not in res.output

    res = runner.invoke(app, ["repair", str(store)])
    assert res.exit_code == 0, res.output
    assert f"restored {key}" in res.output
    assert verify(open_store(str(store))) == []
    assert _state(store) == before


def test_a_changed_copy_of_the_labels_is_found_by_comparing_with_the_probe_set(store):
    before = _state(store)
    g = zarr.open_group(str(store / "runs" / "r"), mode="r+")
    g["color"][3] = 2  # a valid value, checksum and all: only the comparison finds it
    problems = verify(open_store(str(store)))
    assert [(p.key, p.fix) for p in problems] == [("runs/r/color", "copy")]
    assert "differs from probe set 'p' (1 value(s))" in problems[0].detail
    repair(open_store(str(store), mode="a"))
    assert verify(open_store(str(store))) == [] and _state(store) == before


@pytest.mark.parametrize("name", ["status", "checkpoint"])
def test_a_flipped_bit_in_a_slot_table_chunk_is_restored_from_the_run_attributes(store, name):
    before = _state(store)
    _flip(store / "runs" / "r" / name / "c" / "1", at=0.0, bit=0x01)
    with pytest.raises(DamagedRunError, match=f"runs/{name}|runs/r/{name}"):
        open_store(str(store)).reader("r").status  # noqa: B018
        open_store(str(store)).reader("r").steps  # noqa: B018
    problems = verify(open_store(str(store)))
    assert [(p.key, p.step, p.fix) for p in problems] == [(f"runs/r/{name}/c/1", 5,
                                                           "slot_table")]
    res = runner.invoke(app, ["verify", str(store)])
    assert "restores 1 damaged object(s)" in res.output
    rep = repair(open_store(str(store), mode="a"))
    assert rep.restored == [f"runs/r/{name}/c/1 (from the slot table)"] and not rep.reset
    assert verify(open_store(str(store))) == [] and _state(store) == before


@pytest.mark.parametrize("damage", ["flip", "valid_edit", "delete"])
def test_a_damaged_layer_metadata_file_is_restored_from_the_layer_table(store, damage):
    before = _state(store)
    meta = store / "runs" / "r" / "blk" / "zarr.json"
    if damage == "flip":
        _flip(meta, at=0.02, bit=0x20)  # a bit near the start: the JSON no longer parses
        with pytest.raises(ValueError):
            json.loads(meta.read_bytes())
    elif damage == "valid_edit":
        doc = json.loads(meta.read_text())
        doc["codecs"][0]["configuration"]["chunk_shape"][1] += 1
        meta.write_text(json.dumps(doc))
    else:
        meta.unlink()
    problems = verify(open_store(str(store)))
    assert [(p.key, p.layer, p.fix) for p in problems] == [
        ("runs/r/blk/zarr.json", "blk", "layer_metadata")]
    res = runner.invoke(app, ["repair", str(store)])
    assert res.exit_code == 0, res.output
    assert "restored runs/r/blk/zarr.json (from the layer table)" in res.output
    assert verify(open_store(str(store))) == [] and _state(store) == before


@pytest.mark.parametrize("edit", ["planned_step", "weights_hash"])
def test_a_valid_json_edit_of_the_slot_table_is_detected(store, edit):
    meta = store / "runs" / "r" / "zarr.json"
    doc = json.loads(meta.read_text())
    attrs = doc["attributes"]
    if edit == "planned_step":
        attrs[L.ATTR_STEPS][2] = 11  # planned step 10 -> 11
    else:
        attrs[L.ATTR_SLOTS]["5"]["weights_hash"] = "0" * 64
    meta.write_text(json.dumps(doc))
    before = meta.read_bytes()
    problems = verify(open_store(str(store)))
    assert [(p.key, p.fix) for p in problems] == [("runs/r/zarr.json", "")]
    assert "do not match their checksum" in problems[0].detail
    with pytest.raises(DamagedRunError, match="changed outside actstore"):
        open_store(str(store)).reader("r")
    res = runner.invoke(app, ["repair", str(store)])
    assert res.exit_code == 1 and "1 problem(s) that repair cannot fix" in res.output
    assert meta.read_bytes() == before
    # a writer does not take it over either (which would record a new checksum)
    with pytest.raises(DamagedRunError, match="do not match their checksum"):
        with open_store(str(store), mode="a").writer("r", "p", [10]):
            pass
    assert meta.read_bytes() == before


# -- format 1 --------------------------------------------------------------------------------
def _as_format_1(url: Path) -> None:
    """Turn a store into what format 1 wrote: no crc32c on labels, sample ids and probe-set
    arrays, no checksum of run attributes, no storage keys in the layer table."""
    root = zarr.open_group(str(url), mode="r+", use_consolidated=False)
    root.attrs.update({L.ATTR_FORMAT: 1})
    groups = [root["probe_sets"]["p"], root["runs"]["r"]]
    for g in groups:
        for name in ["sample", "color", "size"]:
            data = g[name][...]
            g.create_array(name, overwrite=True, data=data, dimension_names=("sample",))
    run = root["runs"]["r"]
    attrs = dict(run.attrs)
    attrs.pop(L.ATTR_CHECKSUM)
    for entry in attrs[L.ATTR_LAYERS].values():
        for k in L.LAYER_STORAGE_KEYS:
            entry.pop(k)
    run.attrs.put(attrs)


def test_a_format_1_store_is_read_verified_repaired_and_upgraded_by_a_write(store):
    before = _state(store)
    _as_format_1(store)
    assert "crc32c" not in (store / "runs" / "r" / "color" / "zarr.json").read_text()
    assert open_store(str(store)).root.attrs[L.ATTR_FORMAT] == 1
    assert verify(open_store(str(store))) == [] and _state(store) == before
    # a layer's metadata is restored without recorded codec and chunking: the layout whose
    # chunks read back is kept
    meta = store / "runs" / "r" / "fc1" / "zarr.json"
    meta.write_text("{}")
    problems = verify(open_store(str(store)))
    assert [(p.key, p.fix) for p in problems] == [("runs/r/fc1/zarr.json", "layer_metadata")]
    repair(open_store(str(store), mode="a"))
    assert verify(open_store(str(store))) == [] and _state(store) == before
    # restoring metadata keeps the format; a writer makes the store format 2, and the run
    # gets its checksum
    assert open_store(str(store)).root.attrs[L.ATTR_FORMAT] == 1
    with open_store(str(store), mode="a").writer("r", "p", [15]) as w:
        w.write_slot(15, {"fc1": np.ones((N, 4), "float32"),
                          "blk": np.ones((N, 2, 3), "float32")})
    assert open_store(str(store)).root.attrs[L.ATTR_FORMAT] == L.FORMAT_VERSION
    attrs = dict(zarr.open_group(str(store / "runs" / "r"), mode="r").attrs)
    assert attrs[L.ATTR_CHECKSUM] == L.attrs_checksum(attrs)
    assert verify(open_store(str(store))) == []


def test_a_changed_label_of_a_format_1_run_is_found_without_checksums(store):
    _as_format_1(store)
    g = zarr.open_group(str(store / "runs" / "r"), mode="r+")
    g["sample"][2] = "img9"
    problems = verify(open_store(str(store)))
    assert [(p.key, p.fix) for p in problems] == [("runs/r/sample", "copy")]


def test_a_newer_format_is_refused(store):
    root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    root.attrs.update({L.ATTR_FORMAT: L.FORMAT_VERSION + 1})
    with pytest.raises(StoreError, match=f"has store format {L.FORMAT_VERSION + 1}, newer"):
        open_store(str(store))


def test_every_array_of_a_new_store_has_a_crc32c(store):
    for meta in store.rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        if doc.get("node_type") == "array":
            assert '"crc32c"' in json.dumps(doc["codecs"]), meta


def test_what_has_no_second_copy_is_refused_with_the_reason(tmp_path):
    url = tmp_path / "s.zarr"
    st = create_store(str(url))
    st.add_probe_set(ProbeSet("q", labels={"color": np.arange(N) % 3},
                              inputs=np.arange(N * 4, dtype="float32").reshape(N, 4)))
    _flip(url / "probe_sets" / "q" / "inputs" / "c" / "0" / "0")
    problems = verify(open_store(str(url)))
    assert [(p.key, p.fix) for p in problems] == [("probe_sets/q/inputs", "")]
    assert "the stimuli have no copy" in problems[0].detail
    before = {p: p.read_bytes() for p in url.rglob("*") if p.is_file()}
    res = runner.invoke(app, ["repair", str(url)])
    assert res.exit_code == 1 and "1 problem(s) that repair cannot fix" in res.output
    assert "probe_sets/q/inputs" in res.output and "the stimuli have no copy" in res.output
    assert {p: p.read_bytes() for p in url.rglob("*") if p.is_file()} == before


def test_damaged_metadata_of_the_slot_table_and_of_copies_is_restored(store):
    before = _state(store)
    (store / "runs" / "r" / "status" / "zarr.json").unlink()
    (store / "runs" / "r" / "checkpoint" / "zarr.json").write_text("{")
    (store / "runs" / "r" / "sample" / "zarr.json").write_text("garbage")
    (store / "probe_sets" / "p" / "color" / "zarr.json").write_text("{}")
    problems = verify(open_store(str(store)))
    assert sorted((p.key, p.fix) for p in problems) == [
        ("probe_sets/p/color", "probe_set"), ("runs/r/checkpoint/zarr.json", "slot_table"),
        ("runs/r/sample", ""), ("runs/r/status/zarr.json", "slot_table")]
    rep = repair(open_store(str(store), mode="a"))
    assert len(rep.restored) == 4 and not rep.unrepaired and not rep.reset
    assert verify(open_store(str(store))) == [] and _state(store) == before
