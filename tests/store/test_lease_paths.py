"""One writer per run however the store's path is spelt; removals respect a live writer and
keep plain xarray's consolidated metadata up to date."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from actstore import ActstoreError, WriterConflictError
from actstore.store import ProbeSet, create_store, open_store
from actstore.store._lease import holder_state, store_key, store_lock

N = 8
SLOT = {"fc1": np.arange(N * 3, dtype="float32").reshape(N, 3)}


def _probe_set(name: str = "p") -> ProbeSet:
    return ProbeSet(name, labels={"y": np.arange(N) % 2})


def _store(url: str) -> str:
    st = create_store(url)
    st.add_probe_set(_probe_set())
    return url


@pytest.fixture
def local(tmp_path) -> Path:
    """A store at ``tmp_path/s.zarr`` and a symlink ``tmp_path/link.zarr`` to it."""
    path = tmp_path / "s.zarr"
    _store(str(path))
    os.symlink(path, tmp_path / "link.zarr")
    return path


def _memory_url() -> str:
    """A store in the (process-global) memory file system, under a name of its own."""
    return _store(f"memory://lease-{uuid.uuid4().hex}/s.zarr")


# -- 1. the writer lock is keyed by the store, not by the spelling of its path -----------------
LOCAL_SPELLINGS = {
    "symlink": lambda p: str(p.parent / "link.zarr"),
    "symlink-trailing-slash": lambda p: str(p.parent / "link.zarr") + "/",
    "trailing-slash": lambda p: str(p) + "/",
    "relative": lambda p: "./s.zarr",
    "file-url": lambda p: f"file://{p}",
    "file-url-of-symlink": lambda p: f"file://{p.parent / 'link.zarr'}",
}


@pytest.mark.parametrize("spelling", list(LOCAL_SPELLINGS))
def test_second_writer_by_another_local_spelling_is_refused(local, spelling, monkeypatch):
    monkeypatch.chdir(local.parent)
    other = LOCAL_SPELLINGS[spelling](local)
    with open_store(str(local), mode="a").writer("r", "p", [1]) as w1:
        w1.write_slot(1, SLOT)
        with pytest.raises(WriterConflictError,
                           match=rf"run 'r' in .* is being written by pid {os.getpid()} on "):
            with open_store(other, mode="a").writer("r", "p", [2]):
                pass
        assert w1.is_complete(1)
    rd = open_store(str(local)).reader("r")
    assert rd.complete.tolist() == [True]  # the finished checkpoint is there
    np.testing.assert_array_equal(rd.read("fc1", 1), SLOT["fc1"])
    if other.startswith("file://"):
        return  # zarr's fsspec store does not create the folders of new chunks on file://
    # once the first writer is done, the other spelling writes the run
    with open_store(other, mode="a").writer("r", "p", [2]) as w2:
        w2.write_slot(2, SLOT)
    assert open_store(str(local)).reader("r").complete.tolist() == [True, True]


HOLD = """
import sys, time
from actstore.store import open_store
with open_store(sys.argv[1], mode="a").writer("r", "p", [1]) as w:
    print("holding", flush=True)
    time.sleep(60)
"""


def test_writer_of_another_process_is_seen_through_a_symlink(local):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(local)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(WriterConflictError, match=rf"is being written by pid {proc.pid} "):
            with open_store(str(local.parent / "link.zarr"), mode="a").writer("r", "p", [2]):
                pass
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("other", ["memory://{h}/s.zarr/", "memory:///{h}/s.zarr",
                                   "memory:///{h}/s.zarr/"])
def test_second_writer_by_another_memory_spelling_is_refused(other):
    url = _memory_url()  # memory://<h>/s.zarr
    other = other.format(h=url[len("memory://"):].split("/")[0])
    with open_store(url, mode="a").writer("r", "p", [1]) as w1:
        w1.write_slot(1, SLOT)
        with pytest.raises(WriterConflictError, match="run 'r' in .* is being written by pid"):
            with open_store(other, mode="a").writer("r", "p", [2]):
                pass
        # the lease's own test sees the writer by every spelling
        holder = dict(open_store(other).root["runs"]["r"].attrs)["actstore.writer"]
        assert holder_state(other, "r", holder) == "live"
    assert open_store(other).reader("r").complete.tolist() == [True]
    assert holder_state(other, "r", holder) == "stale"


def test_store_key_is_one_per_store(tmp_path, monkeypatch):
    real = tmp_path / "s.zarr"
    real.mkdir()
    os.symlink(real, tmp_path / "link.zarr")
    monkeypatch.chdir(tmp_path)
    spellings = [str(real), f"{real}/", "s.zarr", "./s.zarr/", str(tmp_path / "link.zarr"),
                 f"file://{real}", f"file://{tmp_path / 'link.zarr'}/"]
    assert {store_key(s) for s in spellings} == {os.path.realpath(real)}
    assert {store_key(u) for u in ["memory://h/s.zarr", "memory://h/s.zarr/",
                                   "memory:///h/s.zarr", "memory:///h/s.zarr//"]} == \
        {"memory:///h/s.zarr"}
    assert store_key("s3://bucket/s.zarr/") == store_key("s3://bucket/s.zarr") == \
        "s3://bucket/s.zarr"
    assert store_key("memory://h/a.zarr") != store_key("memory://h/s.zarr")
    assert store_key(str(tmp_path / "other.zarr")) != store_key(str(real))


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_short_store_locks_are_shared_by_all_spellings(tmp_path, kind):
    if kind == "local":
        real = tmp_path / "s.zarr"
        real.mkdir()
        os.symlink(real, tmp_path / "link.zarr")
        first, second = str(real), str(tmp_path / "link.zarr") + "/"
    else:
        h = uuid.uuid4().hex
        first, second = f"memory://{h}/s.zarr", f"memory:///{h}/s.zarr/"
    entered = threading.Event()

    def other() -> None:
        with store_lock(second, "probe_sets/p"):
            entered.set()

    with store_lock(first, "probe_sets/p"):
        t = threading.Thread(target=other)
        t.start()
        assert not entered.wait(0.5)  # waits for the first holder
    t.join(timeout=10)
    assert entered.is_set()


# -- 2. removing a run that a writer holds -----------------------------------------------------
@pytest.mark.parametrize("kind", ["local", "symlink", "memory"])
def test_remove_run_refuses_a_run_with_a_live_writer(tmp_path, kind):
    if kind == "memory":
        url = other = _memory_url()
    else:
        url = _store(str(tmp_path / "s.zarr"))
        os.symlink(url, tmp_path / "link.zarr")
        other = url if kind == "local" else str(tmp_path / "link.zarr")
    with open_store(url, mode="a").writer("r", "p", [1, 2]) as w:
        w.write_slot(1, SLOT)
        with pytest.raises(WriterConflictError) as e:
            open_store(other, mode="a").remove_run("r")
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith(f"cannot remove run 'r' from {other}: a writer holds it (pid "
                              f"{os.getpid()} on ")
        assert isinstance(e.value, ActstoreError)
        w.write_slot(2, SLOT)  # the writer goes on undisturbed
    rd = open_store(url).reader("r")
    assert rd.complete.tolist() == [True, True]
    np.testing.assert_array_equal(rd.read("fc1", 2), SLOT["fc1"])
    # without a writer the run is removed
    open_store(other, mode="a").remove_run("r")
    assert open_store(url).run_ids() == []


def test_remove_run_refuses_a_writer_of_another_process_and_not_a_killed_one(local):
    with open_store(str(local), mode="a").writer("r", "p", [1]) as w:
        w.write_slot(1, SLOT)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(local)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(WriterConflictError,
                           match=rf"cannot remove run 'r' from .*: a writer holds it "
                                 rf"\(pid {proc.pid} on "):
            open_store(str(local), mode="a").remove_run("r")
        assert open_store(str(local)).reader("r").complete.tolist() == [True]
    finally:
        proc.kill()  # SIGKILL: the lease stays recorded on the run, its lock is gone
        proc.wait()
    assert "actstore.writer" in dict(open_store(str(local)).root["runs"]["r"].attrs)
    open_store(str(local), mode="a").remove_run("r")
    assert open_store(str(local)).run_ids() == []


def test_remove_run_after_a_writer_killed_mid_slot(local):
    code = textwrap.dedent(f"""
        import os, signal
        from actstore.store import open_store
        w = open_store({str(local)!r}, mode="a").writer("r", "p", [1, 2])
        w.__enter__()
        w.begin_slot(2)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    holder = dict(open_store(str(local)).root["runs"]["r"].attrs)["actstore.writer"]
    assert holder_state(str(local), "r", holder) == "stale"
    open_store(str(local), mode="a").remove_run("r")
    assert open_store(str(local)).run_ids() == []


# -- 2. removals and additions rewrite the consolidated metadata -------------------------------
def _plain_xarray_groups(path: Path) -> set[str]:
    tree = xr.open_datatree(str(path), engine="zarr")  # reads the consolidated metadata
    try:
        return {node.path for node in tree.subtree}
    finally:
        tree.close()


def test_remove_run_updates_plain_xarrays_view(local):
    st = open_store(str(local), mode="a")
    for run in ("a", "b"):
        with st.writer(run, "p", [1]) as w:
            w.write_slot(1, SLOT)
    assert {"/runs/a", "/runs/b"} <= _plain_xarray_groups(local)
    open_store(str(local), mode="a").remove_run("a")
    groups = _plain_xarray_groups(local)
    assert "/runs/a" not in groups and "/runs/b" in groups
    tree = xr.open_datatree(str(local), engine="zarr")
    np.testing.assert_array_equal(tree["runs/b"]["fc1"].sel(checkpoint=1).values, SLOT["fc1"])
    tree.close()


def test_probe_sets_added_and_removed_are_seen_by_plain_xarray(local):
    st = open_store(str(local), mode="a")
    assert st.add_probe_set(_probe_set("q"))
    groups = _plain_xarray_groups(local)
    assert {"/probe_sets/p", "/probe_sets/q"} <= groups
    tree = xr.open_datatree(str(local), engine="zarr")
    np.testing.assert_array_equal(tree["probe_sets/q"]["y"].values, np.arange(N) % 2)
    tree.close()
    assert not st.add_probe_set(_probe_set("q"))  # identical: nothing written
    open_store(str(local), mode="a").remove_probe_set("q")
    groups = _plain_xarray_groups(local)
    assert "/probe_sets/q" not in groups and "/probe_sets/p" in groups


def test_memory_store_removals_rewrite_the_consolidated_metadata():
    import zarr

    url = _memory_url()
    st = open_store(url, mode="a")
    st.add_probe_set(_probe_set("q"))
    with st.writer("r", "p", [1]) as w:
        w.write_slot(1, SLOT)

    def consolidated() -> set[str]:
        meta = zarr.open_group(url, mode="r").metadata.consolidated_metadata
        assert meta is not None
        return set(meta.flattened_metadata)

    assert {"probe_sets/q", "runs/r"} <= consolidated()
    st.remove_run("r")
    st.remove_probe_set("q")
    assert not {"probe_sets/q", "runs/r"} & consolidated()
