"""``actstore ingest`` refuses source arrays whose names map to one layer name, before any
write."""

from __future__ import annotations

import numpy as np
import pytest
from stores import error_line
from typer.testing import CliRunner

import actstore
from actstore.cli import app
from actstore.store import ingest, read_activation_file

runner = CliRunner()


@pytest.fixture
def labels(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("y\n" + "\n".join(str(i % 2) for i in range(8)) + "\n")
    return p


def _npz(tmp_path):
    p = tmp_path / "coll.npz"
    np.savez(p, **{"blocks.0.attn": np.ones((8, 3)), "blocks_0_attn": 2 * np.ones((8, 3))})
    return p


def _h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "coll.h5"
    with h5py.File(p, "w") as f:
        f["enc/layer1"] = np.ones((8, 3))
        f["enc_layer1"] = 2 * np.ones((8, 3))
    return p


@pytest.mark.parametrize("make, names", [
    (_npz, ("'blocks.0.attn'", "'blocks_0_attn'")),
    (_h5, ("'enc/layer1'", "'enc_layer1'")),
])
def test_colliding_names_are_refused(tmp_path, make, names):
    src = make(tmp_path)
    with pytest.raises(actstore.ActstoreError) as e:
        read_activation_file(src)
    msg = str(e.value)
    assert all(n in msg for n in names), msg
    assert f"layer {names[1]}" in msg, msg


@pytest.mark.parametrize("make", [_npz, _h5])
def test_cli_refuses_collision_and_creates_no_store(tmp_path, labels, make):
    src = make(tmp_path)
    store = tmp_path / "c.zarr"
    res = runner.invoke(app, ["ingest", str(store), str(src), "--run", "r",
                              "--labels", str(labels)])
    line = error_line(res)
    assert "both become layer" in line, line
    assert not store.exists()


def test_cli_collision_leaves_existing_store_as_it_was(tmp_path, labels):
    store = tmp_path / "c.zarr"
    good = tmp_path / "good.npz"
    np.savez(good, **{"blocks.0.attn": np.ones((8, 3))})
    ingest(str(store), "r", [good], labels)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    res = runner.invoke(app, ["ingest", str(store), str(_npz(tmp_path)), "--run", "r2",
                              "--labels", str(labels)])
    error_line(res)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert actstore.open_store(str(store)).run_ids() == ["r"]


def test_distinct_names_still_ingest(tmp_path, labels):
    src = tmp_path / "ok.npz"
    np.savez(src, **{"blocks.0.attn": np.ones((8, 3)), "blocks.1.attn": 2 * np.ones((8, 3))})
    out = ingest(str(tmp_path / "s.zarr"), "r", [src], labels)
    assert out["layers"] == ["blocks_0_attn", "blocks_1_attn"]
    rd = actstore.open_store(str(tmp_path / "s.zarr")).reader("r")
    assert (rd.read("blocks_1_attn", 0) == 2).all()
    assert list(read_activation_file(src, key="blocks.1.attn")) == ["blocks_1_attn"]
