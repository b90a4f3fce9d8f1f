"""verify / repair / ingest."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from factories import image_checkpoints
from typer.testing import CliRunner

from actstore import ActstoreError, StoreError
from actstore.cli import app
from actstore.store import create_store, dump, ingest, open_store, repair, verify

HERE = Path(__file__).parent
runner = CliRunner()


@pytest.fixture
def dumped(tmp_path):
    ck = image_checkpoints(tmp_path, 50, (0, 7))
    url = str(tmp_path / "s.zarr")
    dump(url, "r", f"{HERE / 'factories.py'}:small_cnn", ck, str(tmp_path / "probe.npz"))
    return url


def _flip_byte(url: str, layer: str, slot: int) -> Path:
    shard = Path(url, "runs", "r", layer, "c", str(slot), "0", "0")
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    return shard


def test_clean_store_verifies(dumped):
    assert verify(open_store(dumped)) == []
    res = runner.invoke(app, ["verify", dumped])
    assert res.exit_code == 0 and "matched its checksum" in res.output


def test_flipped_byte_is_named_and_refused(dumped):
    before = open_store(dumped).reader("r").read("fc1", 7)
    _flip_byte(dumped, "fc1", 1)
    problems = verify(open_store(dumped))
    assert len(problems) == 1
    p = problems[0]
    assert (p.kind, p.run, p.step, p.layer, p.key) == ("corrupt", "r", 7, "fc1",
                                                       "runs/r/fc1/c/1/0/0")
    with pytest.raises(StoreError, match="corrupt data in run 'r', layer 'fc1', checkpoint 7"):
        open_store(dumped).reader("r").read("fc1", 7)
    res = runner.invoke(app, ["verify", dumped])
    assert res.exit_code == 1 and "runs/r/fc1/c/1/0/0" in res.output

    # without --model the slot is left as it is, and the line says what to run
    res = runner.invoke(app, ["repair", dumped])
    assert res.exit_code == 1, res.output
    assert "run 'r' checkpoint(s) 7: left as they are" in res.output
    assert f"actstore repair {dumped} --run r --model {HERE / 'factories.py'}:small_cnn" \
        in res.output
    assert len(verify(open_store(dumped))) == 1
    rep = repair(open_store(dumped, mode="a"), model=f"{HERE / 'factories.py'}:small_cnn")
    assert rep.reset == [("r", 7)] and rep.redone == [("r", 7)]
    assert verify(open_store(dumped)) == []
    np.testing.assert_array_equal(open_store(dumped).reader("r").read("fc1", 7), before)


def test_interrupted_slot_is_reported_and_reset(dumped):
    st = open_store(dumped, mode="a")
    st.reader("r").group["status"][0] = 1
    problems = verify(open_store(dumped))
    assert [(p.kind, p.step) for p in problems] == [("incomplete", 0)]
    rep = repair(open_store(dumped, mode="a"), redo=False)
    assert rep.reset == [("r", 0)] and rep.needs_rerun == [("r", 0)]
    rd = open_store(dumped).reader("r")
    assert rd.status.tolist() == [0, 2]


def test_ingest_npy_npz_h5(tmp_path):
    rng = np.random.default_rng(3)
    n = 30
    (tmp_path / "labels.csv").write_text(
        "sample,category,size\n" + "".join(f"img{i},{['cat', 'dog'][i % 2]},{i * 0.5}\n"
                                            for i in range(n)))
    a = rng.standard_normal((n, 12)).astype("float32")
    np.save(tmp_path / "visual.encoder.npy", a)
    np.savez(tmp_path / "more.npz", blocks=rng.standard_normal((n, 2, 4)))
    with h5py.File(tmp_path / "tl.h5", "w") as f:
        f.create_dataset("resid/post", data=rng.standard_normal((n, 5)))
    url = str(tmp_path / "s.zarr")
    out = ingest(url, "ext", [tmp_path / "visual.encoder.npy", tmp_path / "more.npz",
                              tmp_path / "tl.h5"], tmp_path / "labels.csv", step=3,
                 attrs={"model": "clip", "seed": 0})
    assert out["layers"] == ["blocks", "resid_post", "visual_encoder"]
    rd = open_store(url).reader("ext")
    np.testing.assert_array_equal(rd.read("visual_encoder", 3), a)
    assert rd.read("blocks", 3).shape == (n, 8)
    assert list(rd.sample[:2]) == ["img0", "img1"]
    assert list(rd.labels["category"][:2]) == ["cat", "dog"]
    assert rd.labels["size"].dtype == np.float64
    assert rd.attrs["model"] == "clip"


def test_ingest_count_mismatch_leaves_nothing(tmp_path):
    (tmp_path / "labels.csv").write_text("color\n1\n2\n3\n")
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    url = tmp_path / "s.zarr"
    res = runner.invoke(app, ["ingest", str(url), str(tmp_path / "x.npy"), "--run", "r",
                              "--labels", str(tmp_path / "labels.csv")])
    assert res.exit_code == 2
    assert "layer 'x' has shape (4, 2), but" in res.output
    assert not url.exists()
    with pytest.raises(ActstoreError, match="does not exist"):
        ingest(str(url), "r", [tmp_path / "missing.npy"], tmp_path / "labels.csv")


def test_ingest_cli_json(tmp_path):
    (tmp_path / "labels.csv").write_text("color\n1\n2\n")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    url = str(tmp_path / "s.zarr")
    create_store(url)
    res = runner.invoke(app, ["ingest", url, str(tmp_path / "x.npy"), "--run", "r", "--labels",
                              str(tmp_path / "labels.csv"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["layers"] == ["x"]
