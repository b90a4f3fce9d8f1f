"""`actstore dump --probe-set` with a folder of images or a table of sentences: the probe set
is made, added and recorded on; bad files are one line and exit code 2, with no store left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from stores import error_line
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import open_store

runner = CliRunner()
FACTORIES = Path(__file__).parents[1] / "store" / "factories.py"


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,color,size"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(d / f"{i}.png")
        rows.append(f"{i}.png,{['red', 'blue'][i % 2]},{i * 0.5}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d


def _net():
    import importlib.util

    spec = importlib.util.spec_from_file_location("f", FACTORIES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.small_cnn().eval()


def _dump(store, probe_set, *extra, ckpts=None):
    where = [str(ckpts)] if ckpts else ["--step", "0"]
    return runner.invoke(app, ["dump", str(store), *where, "--model", f"{FACTORIES}:small_cnn",
                               "--probe-set", str(probe_set), "--run", "cnn", *extra])


def test_dump_on_a_folder_of_images(tmp_path, images):
    net = _net()
    (tmp_path / "ckpts").mkdir()
    torch.save(net.state_dict(), tmp_path / "ckpts" / "step_0.pt")
    store = tmp_path / "s.zarr"
    res = _dump(store, images, "--probe-option", "resize=8", "--probe-option", "crop=8",
                "--probe-option", "mean=imagenet", "--probe-option", "std=imagenet",
                "--layers", "fc1", ckpts=tmp_path / "ckpts")
    assert res.exit_code == 0, res.output
    st = open_store(str(store))
    ps = st.probe_set("photos")
    assert ps.inputs.shape == (6, 3, 8, 8)
    assert (ps.attrs["resize"], ps.attrs["crop"]) == ([8], [8])
    assert ps.attrs["classes"] == {"color": ["blue", "red"]}
    rd = st.reader("cnn")
    assert rd.labels["color"].tolist() == [1, 0, 1, 0, 1, 0]
    # the recorded layer is the model's output on exactly these inputs
    seen = {}
    net.fc1.register_forward_hook(lambda m, i, o: seen.setdefault("fc1", o))
    with torch.no_grad():
        net(torch.from_numpy(ps.inputs))
    np.testing.assert_allclose(rd.read("fc1", 0), seen["fc1"].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("setup", "extra", "message"), [
    ("nan", [], "label column 'size' has 1 empty or NaN value(s)"),
    ("modes", [], "images of different modes: 0.png is RGB, 1.png is L; give mode=RGB"),
    ("nocol", [], "has no file column 'file'"),
    ("ok", ["--probe-option", "crop=99"], "smaller than the crop 99x99"),
    ("ok", ["--probe-option", "tokens=3"], "probe-set option 'tokens' does not apply to an "
                                           "image folder"),
    ("ok", ["--tokenizer", "tok"], "--tokenizer applies to a table of sentences"),
])
def test_bad_image_folders_are_one_line_and_leave_no_store(tmp_path, images, setup, extra,
                                                          message):
    if setup == "nan":
        (images / "labels.csv").write_text(
            (images / "labels.csv").read_text().replace(",1.5\n", ",nan\n"))
    elif setup == "modes":
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(images / "1.png")
    elif setup == "nocol":
        (images / "labels.csv").write_text(
            (images / "labels.csv").read_text().replace("file,", "name,", 1))
    store = tmp_path / "s.zarr"
    res = _dump(store, images, *extra)
    assert message in error_line(res), res.output
    assert not store.exists()


def test_bad_sentence_tables_are_one_line(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("sentence,y\nthe cat,1\n")
    store = tmp_path / "s.zarr"
    res = _dump(store, f)
    assert "give the tokenizer folder that tokenises them with --tokenizer PATH" in \
        error_line(res)
    res = _dump(store, f, "--tokenizer", str(tmp_path / "nowhere"))
    assert "tokenizer folder" in error_line(res) and "does not exist" in error_line(res)
    res = _dump(store, f, "--tokenizer", str(tmp_path / "nowhere"), "--text-column",
                "sentence", "--probe-option", "resize=3")
    assert "probe-set option 'resize' does not apply to a table of sentences" in \
        error_line(res)
    assert not store.exists()
