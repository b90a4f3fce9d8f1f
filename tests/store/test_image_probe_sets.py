"""Probe sets from a folder of images and a labels CSV: resize, center crop and normalisation
checked against hand computations, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from actstore import ActstoreError
from actstore.store import (
    create_store,
    image_probe_set,
    open_store,
    probe_set_from_path,
)


def _png(folder, name, arr, mode=None):
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode=mode).save(folder / name)


@pytest.fixture
def folder(tmp_path):
    """Three 6x8 RGB images (pixel value = 10*row + col + 40*channel) and a labels CSV."""
    d = tmp_path / "imgs"
    d.mkdir()
    rows, cols = np.mgrid[0:6, 0:8]
    for i in range(3):
        img = np.stack([10 * rows + cols + 40 * c + i for c in range(3)], axis=-1)
        _png(d, f"im{i}.png", img)
    (d / "labels.csv").write_text("file,kind,size\nim0.png,round,0.5\nim1.png,square,1.5\n"
                                  "im2.png,round,2.5\n")
    return d


def test_crop_and_normalise_match_a_hand_computation(folder):
    ps = image_probe_set(folder, crop=(2, 4), mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])
    assert ps.name == "imgs" and not ps.is_mapping
    x = ps.inputs
    assert x.shape == (3, 3, 2, 4) and x.dtype == np.float32
    # center crop of 6x8 to 2x4: rows 2:4, columns 2:6
    rows, cols = np.mgrid[2:4, 2:6]
    for i in range(3):
        for c, (m, s) in enumerate(zip([0.5, 0.25, 0.0], [0.5, 0.25, 2.0], strict=True)):
            want = ((10 * rows + cols + 40 * c + i) / 255.0 - m) / s
            np.testing.assert_allclose(x[i, c], want, rtol=1e-6, atol=1e-6)
    assert ps.sample.tolist() == ["im0.png", "im1.png", "im2.png"]
    assert ps.labels["kind"].tolist() == [0, 1, 0]
    assert ps.labels["size"].tolist() == [0.5, 1.5, 2.5]
    a = ps.attrs
    assert (a["generator"], a["mode"], a["crop"], a["resize"], a["mean"], a["std"],
            a["classes"], a["layout"]) == (
        "images", "RGB", [2, 4], None, [0.5, 0.25, 0.0], [0.5, 0.25, 2.0],
        {"kind": ["round", "square"]}, "NCHW")


def test_resize_sets_the_shorter_side_as_torchvision_does(folder):
    ps = image_probe_set(folder, resize=3, crop=3, mean="imagenet", std="imagenet")
    # 6x8 -> shorter side 3: 3x4 (4 = int(3 * 8 / 6)), then a 3x3 center crop
    ref = Image.open(folder / "im1.png").resize((4, 3), Image.Resampling.BILINEAR)
    want = np.asarray(ref, dtype=np.float32)[:, 0:3] / 255.0
    want = (want - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(ps.inputs[1], want.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    assert ps.attrs["resize"] == [3] and ps.attrs["mean"] == [0.485, 0.456, 0.406]


def test_named_input_and_options_as_text_and_the_store(folder, tmp_path):
    ps = probe_set_from_path(folder, name="vit", options={
        "resize": "4,4", "mean": "0.5", "std": "0.5", "input_name": "pixel_values"})
    assert ps.name == "vit" and ps.input_names == ("pixel_values",)
    assert ps.inputs["pixel_values"].shape == (3, 3, 4, 4)
    assert ps.attrs["mean"] == [0.5, 0.5, 0.5]
    url = str(tmp_path / "s.zarr")
    create_store(url).add_probe_set(ps)
    assert open_store(url).probe_set("vit").hash == ps.hash
    with pytest.raises(ActstoreError, match="option 'max_len' does not apply to an image folder"):
        probe_set_from_path(folder, options={"max_len": "3"})
    with pytest.raises(ActstoreError, match="option resize='big' is not a whole number"):
        probe_set_from_path(folder, options={"resize": "big"})


def test_grayscale_and_mode_conversion(tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    _png(d, "a.png", np.full((4, 4), 51))
    _png(d, "b.png", np.full((4, 4, 3), 102))
    (d / "labels.csv").write_text("file,y\na.png,0\nb.png,1\n")
    with pytest.raises(ActstoreError, match="images of different modes: a.png is L, b.png is RGB; "
                                            "give mode=RGB"):
        image_probe_set(d)
    ps = image_probe_set(d, mode="L")
    assert ps.inputs.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(ps.inputs[0], 0.2, rtol=1e-6)
    assert ps.attrs["mode"] == "L"


@pytest.mark.parametrize(("csv", "files", "kwargs", "match"), [
    ("file,y\na.png,1\nmissing.png,2\n", ["a.png"], {}, "image .*missing.png listed in"),
    ("name,y\na.png,1\n", ["a.png"], {}, "has no file column 'file'"),
    ("file,y\na.png,1\nb.png,nan\n", ["a.png", "b.png"], {}, "label column 'y' has 1 empty"),
    ("file,y\na.png,1\nc.png,2\n", ["a.png", "c.png"], {}, "images of different sizes"),
    ("file,y\na.png,1\n", ["a.png"], {"crop": 9}, "smaller than the crop 9x9"),
    ("file,y\na.png,1\n", ["a.png"], {"mean": [0.1, 0.2]}, "does not fit images of 3 channel"),
    ("file,y\na.png,1\n", ["a.png"], {"std": [0.0]}, "give one value or 3 positive ones"),
    ("file,y\na.png,1\n", ["a.png"], {"resize": (1, 2, 3)}, "resize must be one positive"),
    ("file,y\nbad.png,1\n", ["bad.png"], {}, "cannot read image .*bad.png"),
])
def test_bad_folders_are_one_clear_error(tmp_path, csv, files, kwargs, match):
    d = tmp_path / "f"
    d.mkdir()
    for f in files:
        if f == "bad.png":
            (d / f).write_text("not an image")
        else:
            _png(d, f, np.zeros((5, 5, 3) if f != "c.png" else (6, 5, 3)))
    (d / "labels.csv").write_text(csv)
    with pytest.raises(ActstoreError, match=match):
        image_probe_set(d, **kwargs)


def test_missing_folder_or_labels_file(tmp_path):
    with pytest.raises(ActstoreError, match="image folder .* does not exist"):
        image_probe_set(tmp_path / "none")
    with pytest.raises(ActstoreError, match=r"labels file .*labels.csv does not exist; .*labels="):
        image_probe_set(tmp_path)
