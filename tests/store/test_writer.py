"""Resumable, idempotent writes; provenance; one writer per run; concurrent runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import small_cnn

from actstore import ActstoreError, ProvenanceError, WriterConflictError
from actstore.store import create_store, open_store, weights_hash

HERE = Path(__file__).parent


def _run_at_step0(url: str, probe_set) -> torch.nn.Module:
    """A store at ``url`` with ``probe_set`` and run ``r`` recorded at step 0; the model."""
    st = create_store(url)
    st.add_probe_set(probe_set)
    model = small_cnn()
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(model, 0)
    return model


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_rerun_skips_complete_slots(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    with st.writer("r", "images", steps=[0, 1]) as w:
        assert w.capture(model, 0)
        assert not w.capture(model, 0)  # complete: skipped
        assert w.is_complete(0) and not w.is_complete(1)
    assert open_store(store_url).reader("r").complete.tolist() == [True, False]


def test_new_steps_append_slots(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(small_cnn(), 0)
    with st.writer("r", "images", steps=[0, 100]) as w:
        w.capture(small_cnn(), 100)
    rd = open_store(store_url).reader("r")
    assert rd.steps.tolist() == [0, 100]
    assert rd.array("conv1").shape[0] == 2
    np.testing.assert_array_equal(rd.read("fc1", 0), rd.read("fc1", 100))


def test_config_mismatch_is_refused(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0], attrs={"model": "cnn", "seed": 0}) as w:
        w.capture(small_cnn(), 0, layers="fc1")
    with pytest.raises(ProvenanceError, match=r"exists with another seed \(0 there, 1 now\)"):
        with st.writer("r", "images", steps=[0], attrs={"model": "cnn", "seed": 1}):
            pass


def test_other_weights_for_a_complete_slot_is_refused(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    a, b = small_cnn(), small_cnn(width=8)
    with torch.no_grad():
        b.out.bias.add_(1.0)
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(a, 0, weights_hash=weights_hash(a))
        assert not w.capture(a, 0, weights_hash=weights_hash(a))
        with pytest.raises(ProvenanceError, match="recorded from other weights"):
            w.capture(b, 0, weights_hash=weights_hash(b))


def test_other_layers_for_a_run_is_refused(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0, 1]) as w:
        w.capture(small_cnn(), 0, layers="fc1")
        with pytest.raises(ActstoreError, match="records layers"):
            w.capture(small_cnn(), 1, layers="conv1")


def test_second_writer_in_process_is_refused(tmp_path, image_probe_set):
    url = f"memory://{tmp_path.name}-writer/s.zarr"  # one per test: the memory fs is global
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0]):
        with pytest.raises(WriterConflictError, match="is being written by pid"):
            with open_store(url, mode="a").writer("r", "images", steps=[0]):
                pass
        # another run of the same store is fine
        with open_store(url, mode="a").writer("other", "images", steps=[0]) as w2:
            w2.capture(small_cnn(), 0, layers="fc1")
    with st.writer("r", "images", steps=[0]):  # released
        pass


HOLD = """
import sys, time
sys.path.insert(0, {here!r})
from actstore.store import open_store
st = open_store({url!r}, mode="a")
with st.writer("r", "images", steps=[0]):
    print("holding", flush=True)
    time.sleep(30)
"""


def test_second_writer_across_processes_is_refused(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(small_cnn(), 0, layers="fc1")
    before = _snapshot(Path(store_url))
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(here=str(HERE), url=store_url)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(WriterConflictError, match=r"run 'r' in .* is being written by pid "
                                                      rf"{proc.pid}"):
            with open_store(store_url, mode="a").writer("r", "images", steps=[0]):
                pass
    finally:
        proc.kill()
        proc.wait()
    # the holder was SIGKILLed: its lock is gone with it, the run can be written again
    with open_store(store_url, mode="a").writer("r", "images", steps=[0]) as w:
        assert w.is_complete(0)
    after = _snapshot(Path(store_url))
    assert {k: v for k, v in after.items() if k != "runs/r/zarr.json"} == \
        {k: v for k, v in before.items() if k != "runs/r/zarr.json"}


CONCURRENT = """
import sys
sys.path.insert(0, {here!r})
from factories import small_cnn
from actstore.store import open_store
st = open_store({url!r}, mode="a")
with st.writer({run!r}, "images", steps=[0, 1, 2], attrs={{"seed": {seed}}}) as w:
    for step in (0, 1, 2):
        w.capture(small_cnn(width={width}), step, batch_size=7)
"""


def test_four_processes_write_different_runs(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT.format(
            here=str(HERE), url=store_url, run=f"run{i}", seed=i, width=4 + i)])
        for i in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    st = open_store(store_url)
    assert st.run_ids() == ["run0", "run1", "run2", "run3"]
    x = torch.from_numpy(image_probe_set.inputs)
    for i in range(4):
        rd = st.reader(f"run{i}")
        assert rd.complete.all()
        model = small_cnn(width=4 + i).eval()
        with torch.no_grad():  # in the writers' batches of 7: products may round per batch
            expect = torch.cat([model.conv1(x[s:s + 7]) for s in range(0, len(x), 7)])
            expect = expect.mean(dim=(2, 3)).numpy()
        for step in (0, 1, 2):
            np.testing.assert_array_equal(rd.read("conv1", step), expect)


def test_failed_first_capture_leaves_store_as_it_was(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    before = _snapshot(Path(store_url))
    model = small_cnn()
    with torch.no_grad():
        model.conv2.weight.fill_(float("inf"))
    with pytest.raises(ActstoreError, match="NaN/Inf"):
        with st.writer("r", "images", steps=[0]) as w:
            w.capture(model, 0)
    assert _snapshot(Path(store_url)) == before


def test_failed_new_slot_of_an_existing_run_leaves_it_as_it_was(store_url, image_probe_set):
    model = _run_at_step0(store_url, image_probe_set)
    before = _snapshot(Path(store_url))
    with torch.no_grad():
        model.fc1[0].weight[0, 0] = float("nan")
    with pytest.raises(ActstoreError, match="at checkpoint 5 has .* NaN/Inf"):
        with open_store(store_url, mode="a").writer("r", "images", steps=[0, 5]) as w:
            w.capture(model, 5)
    rd = open_store(store_url).reader("r")
    assert rd.planned_steps == [0] and rd.steps.tolist() == [0]
    assert rd.array("conv1").shape[0] == 1
    # every object but the run's attributes and the consolidated metadata is as before
    after = _snapshot(Path(store_url))
    skip = {"zarr.json", "runs/r/zarr.json"}
    assert {k: v for k, v in after.items() if k not in skip} == \
        {k: v for k, v in before.items() if k not in skip}


def test_complete_slots_of_a_failed_write_are_visible_to_plain_xarray(store_url,
                                                                      image_probe_set):
    import xarray as xr

    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    with pytest.raises(ActstoreError, match="NaN/Inf"):
        with st.writer("r", "images", steps=[0, 1]) as w:
            w.capture(model, 0)
            with torch.no_grad():
                model.conv2.weight.fill_(float("inf"))
            w.capture(model, 1)
    tree = xr.open_datatree(store_url, engine="zarr")  # consolidated metadata, as users open it
    run = tree["runs/r"]
    assert run["checkpoint"].values.tolist() == [0, -1]
    assert run["status"].values.tolist() == [2, 0]
    np.testing.assert_array_equal(run["conv1"].sel(checkpoint=0).values,
                                  open_store(store_url).reader("r").read("conv1", 0))


def test_a_writer_reads_the_run_only_once_it_holds_the_lock(store_url, image_probe_set,
                                                            monkeypatch):
    from actstore.store._lease import Lease

    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0]) as w:
        w.capture(small_cnn(), 0, layers="fc1")
    acquire = Lease.acquire_local
    calls = []

    def late(self, current):
        # another writer takes the run, records metrics and lets go just before this one locks
        if not calls:
            calls.append(1)
            with open_store(store_url, mode="a").writer("r", "images", steps=[0]) as other:
                other.update_attrs({"metrics": {"loss": [0.5]}})
        return acquire(self, current)

    monkeypatch.setattr(Lease, "acquire_local", late)
    with open_store(store_url, mode="a").writer("r", "images", steps=[0]) as w:
        assert w.is_complete(0)
    assert calls == [1]
    assert open_store(store_url).reader("r").attrs["metrics"] == {"loss": [0.5]}


def test_lock_files_are_shared_by_every_user(store_url, image_probe_set, tmp_path, monkeypatch):
    import os
    import stat
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    old = os.umask(0o022)
    try:
        st = create_store(store_url)
        st.add_probe_set(image_probe_set)
        with st.writer("r", "images", steps=[0]):
            pass
    finally:
        os.umask(old)
    lockdir = tmp_path / "tmp" / "actstore-locks"
    assert stat.S_IMODE(lockdir.stat().st_mode) == 0o1777  # like /tmp: anyone, sticky
    locks = list(lockdir.iterdir())  # store creation, probe set, run, metadata rewrite
    assert len(locks) == 4
    assert all(stat.S_IMODE(lock.stat().st_mode) == 0o666 for lock in locks)


def test_attributes_actstore_records_cannot_be_overridden(store_url, image_probe_set):
    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    with pytest.raises(ActstoreError, match="'probe_set' is recorded by actstore"):
        with st.writer("r", "images", steps=[0], attrs={"probe_set": "imagenet-val"}):
            pass
    assert st.run_ids() == []
    with st.writer("r", "images", steps=[0], attrs={"seed": 0}) as w:
        w.capture(small_cnn(), 0, layers="fc1")
        with pytest.raises(ActstoreError, match="fixed when the run is created"):
            w.update_attrs({"probe_set_hash": "0" * 64})
    rd = open_store(store_url).reader("r")
    # the run's own attributes may be passed back unchanged (e.g. to resume it)
    with open_store(store_url, mode="a").writer("r", "images", steps=[0], attrs=rd.attrs):
        pass
    with pytest.raises(ActstoreError, match="'created' is recorded by actstore"):
        with open_store(store_url, mode="a").writer("r", "images", steps=[0],
                                                    attrs={"created": "yesterday"}):
            pass
    after = open_store(store_url).reader("r").attrs
    assert after["probe_set"] == "images" and after["created"] == rd.attrs["created"]
    assert after["probe_set_hash"] == image_probe_set.hash


def test_run_whose_creation_was_interrupted_reads_as_empty_and_resumes(store_url,
                                                                       image_probe_set):
    from typer.testing import CliRunner

    from actstore.cli import app

    st = create_store(store_url)
    st.add_probe_set(image_probe_set)
    # what a writer killed between creating the run group and its arrays leaves behind
    st.root["runs"].create_group("r", attributes={"actstore.layout_complete": False,
                                                  "actstore.planned_steps": [0, 5]})
    rd = open_store(store_url).reader("r")
    assert rd.status.tolist() == [0, 0] and rd.steps.tolist() == [-1, -1]
    assert rd.complete_steps == []
    res = CliRunner().invoke(app, ["ls", store_url])
    assert res.exit_code == 0 and "0/2" in res.output
    with open_store(store_url, mode="a").writer("r", "images", steps=[0, 5]) as w:
        w.capture(small_cnn(), 0, layers="fc1")
    assert open_store(store_url).reader("r").complete.tolist() == [True, False]


def test_first_slot_killed_while_creating_layer_arrays_resumes(tmp_path, image_probe_set):
    ref_url, url = str(tmp_path / "ref.zarr"), str(tmp_path / "s.zarr")
    model = small_cnn()
    for u in (ref_url, url):
        create_store(u).add_probe_set(image_probe_set)
    with open_store(ref_url, mode="a").writer("r", "images", steps=[0, 5]) as w:
        w.capture(model, 0)
    ref = open_store(ref_url).reader("r")
    first, second, *rest = ref.layers
    assert rest
    # what a writer killed during its first slot leaves: one layer recorded, the next one's
    # array created but not yet in the layer table, the slot marked as being written
    with open_store(url, mode="a").writer("r", "images", steps=[0, 5]) as w:
        a = ref.array(first)
        w.layer_array(first, tuple(a.shape[2:]), str(a.dtype), ref.layer_table[first])
        w.group.create_array(second, shape=(2, 1), dtype="float32")
        w.begin_slot(0)
    assert open_store(url).reader("r").layers == [first]
    with open_store(url, mode="a").writer("r", "images", steps=[0, 5]) as w:
        assert w.capture(model, 0)
    rd = open_store(url).reader("r")
    assert rd.layers == ref.layers and rd.complete_steps == [0]
    for ly in ref.layers:
        np.testing.assert_array_equal(rd.read(ly, 0), ref.read(ly, 0))
    # once a slot is complete the layer set is fixed
    with pytest.raises(ActstoreError, match="same layers at every checkpoint"):
        with open_store(url, mode="a").writer("r", "images", steps=[0, 5]) as w:
            w.capture(model, 5, layers=[first])


def test_writer_killed_while_adding_slots_leaves_a_readable_run(store_url, image_probe_set):
    import xarray as xr

    model = _run_at_step0(store_url, image_probe_set)
    # what a writer killed inside _add_slots leaves: the checkpoint array already resized
    # for two new slots, the status and layer arrays and the slot table not yet
    open_store(store_url, mode="a").root["runs"]["r"]["checkpoint"].resize((3,))
    rd = open_store(store_url).reader("r")
    assert rd.planned_steps == [0]
    assert rd.steps.tolist() == [0] and rd.status.tolist() == [2]
    assert rd.complete_steps == [0]
    # the next writer fits the slot arrays to the slot table again, then adds its slots
    with open_store(store_url, mode="a").writer("r", "images", steps=[0, 5]) as w:
        assert w.capture(model, 5)
    rd = open_store(store_url).reader("r")
    assert rd.complete_steps == [0, 5]
    assert {rd.group[n].shape[0] for n in ["checkpoint", "status", *rd.layers]} == {2}
    if not store_url.startswith("memory://"):
        tree = xr.open_datatree(store_url, engine="zarr")
        assert tree["runs/r"].sizes["checkpoint"] == 2


def test_partial_files_of_a_killed_writer_are_removed_by_the_next(tmp_path, image_probe_set):
    import warnings

    import zarr

    url = str(tmp_path / "s.zarr")
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    with st.writer("r", "images", steps=[0, 5]) as w:
        w.capture(small_cnn(), 0)
    run_dir = tmp_path / "s.zarr" / "runs" / "r"
    # what a writer killed inside zarr's atomic write of the run's metadata leaves behind
    (run_dir / "zarr.0123456789abcdef.partial").write_bytes(b"{")
    with open_store(url, mode="a").writer("r", "images", steps=[0, 5]) as w:
        w.capture(small_cnn(), 5)
    assert not list(run_dir.rglob("*.partial"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown member would warn while listing
        names = [n for n, _ in zarr.open_group(url, mode="r")["runs/r"].members()]
    assert "status" in names


def test_a_root_partial_file_is_removed_at_the_next_consolidation(tmp_path, image_probe_set):
    url = str(tmp_path / "s.zarr")
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    # what a writer killed while rewriting the root metadata leaves behind
    stale = tmp_path / "s.zarr" / "zarr.fedcba9876543210.partial"
    stale.write_bytes(b"{")
    with open_store(url, mode="a").writer("r", "images", steps=[0]) as w:
        w.capture(small_cnn(), 0)
    assert not stale.exists()
    assert open_store(url).reader("r").complete_steps == [0]


def test_partial_files_of_live_writers_are_left_alone(tmp_path, monkeypatch):
    import time

    url = tmp_path / "s.zarr"
    st = create_store(str(url))
    # a writer creating a group writes each parent's metadata "if not present" through a
    # partial file that it renames a moment later
    live = url / "zarr.0000000000000live.partial"
    live.write_bytes(b"{}")
    real_sleep, waits = time.sleep, []

    def writer_finishes_meanwhile(seconds):
        # the live writer renames its file while consolidation waits to see what stays
        if sys._getframe(1).f_code.co_name == "_remove_stale_partial_files":
            waits.append(seconds)
            if live.exists():
                live.rename(url / "moved.json")
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", writer_finishes_meanwhile)
    st.consolidate()
    monkeypatch.setattr(time, "sleep", real_sleep)
    assert waits, "consolidation did not wait before removing the partial file it saw"
    assert (url / "moved.json").read_bytes() == b"{}"
    # one left in a top-level group by a killed writer goes at the next consolidation
    stale = url / "probe_sets" / "zarr.fedcba9876543210.partial"
    stale.write_bytes(b"{")
    st.consolidate()
    assert not stale.exists()
    assert open_store(str(url)).probe_set_names() == []
