"""Stores on a real S3-compatible server (moto in server mode on loopback)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from factories import image_checkpoints

import actstore
from actstore import WriterConflictError
from actstore.store import dump, open_store, verify

HERE = Path(__file__).parent


@pytest.fixture
def ckpts(tmp_path):
    image_checkpoints(tmp_path, 40, (0, 5), shift=0.5)
    return tmp_path


def test_dump_to_s3_equals_local(s3_server, ckpts):
    url = f"{s3_server}/{uuid.uuid4().hex}.zarr"
    local = str(ckpts / "local.zarr")
    factory = f"{HERE / 'factories.py'}:small_cnn"
    for target in (url, local):
        rep = dump(target, "r", factory, ckpts / "ck", str(ckpts / "probe.npz"))
        assert rep.written == [0, 5]
    assert dump(url, "r", factory, ckpts / "ck", str(ckpts / "probe.npz")).skipped == [0, 5]
    a, b = open_store(url).reader("r"), open_store(local).reader("r")
    for layer in b.layers:
        for step in (0, 5):
            np.testing.assert_array_equal(a.read(layer, step), b.read(layer, step))
    assert verify(open_store(url)) == []
    tree = actstore.open(url)
    assert tree["runs/r"]["fc1"].shape == (2, 40, 32)


def test_second_writer_on_s3_is_refused(s3_server, ckpts):
    url = f"{s3_server}/{uuid.uuid4().hex}.zarr"
    dump(url, "r", f"{HERE / 'factories.py'}:small_cnn", ckpts / "ck", str(ckpts / "probe.npz"))
    st = open_store(url, mode="a")
    with st.writer("r", "probe", steps=[0]):
        with pytest.raises(WriterConflictError, match="is being written by pid"):
            with open_store(url, mode="a").writer("r", "probe", steps=[0]):
                pass
