"""The report's view of dictionary features: the probe-set images with the largest code of
each feature (checked against a direct argsort of the stored codes), and V-information per
layer over training for the more and the less important features."""

from __future__ import annotations

import numpy as np
import xarray as xr
from factories import small_cnn

from actstore.probes import ComplexityConfig, read_codes, run_complexity, write_report
from actstore.report._dictionary import TOP_K, plot_sedimentation, top_images
from actstore.store import create_store, open_store


def test_top_images_are_the_largest_codes_and_the_report_shows_them(tmp_path, image_probe_set):
    url = str(tmp_path / "d.zarr")
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    model = small_cnn()
    with st.writer("cnn0", "images", steps=[0, 10]) as w:
        for step in (0, 10):
            assert w.capture(model, step, layers=["conv1", "fc1", "out"])
    run_complexity(url, name="cx", config=ComplexityConfig(k=3, n_splits=3, max_epochs=30))
    st = open_store(url)
    images, codes, rows = top_images(st, "cx", "cnn0")
    Z = read_codes(st, "cx", "cnn0")["codes"].values
    x = image_probe_set.inputs.transpose(0, 2, 3, 1).astype(np.float64)
    for a in range(3):
        want = np.argsort(-Z[:, a], kind="stable")[:TOP_K]
        np.testing.assert_array_equal(rows[a], want)
        np.testing.assert_allclose(codes[a], Z[want, a], rtol=1e-6)
        img = x[want[0]]
        np.testing.assert_allclose(images[a, 0], (img - img.min()) / (img.max() - img.min()))
    rep = write_report(url, out=str(tmp_path / "rep"))
    assert rep.problems == []
    assert any(f.endswith("complexity-cx-top-images.png") for f in rep.figures)
    # no importance (the run records no output heads): no figure over training either
    assert not any("sedimentation" in f for f in rep.figures)
    assert "probe-set images with the largest code" in open(rep.path).read()


def test_a_probe_set_without_images_shows_no_thumbnails(tmp_path):
    from actstore.probes import write_synthetic_store

    url = str(tmp_path / "s.zarr")
    write_synthetic_store(url, n_runs=1, steps=(0, 10), widths=(6, 8), n=60,
                          features={"shape": 3})
    run_complexity(url, name="cx", config=ComplexityConfig(k=3, n_splits=3, max_epochs=30))
    assert top_images(open_store(url), "cx", "run0") is None


def test_sedimentation_figure(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 1, (2, 3, 4, 6))
    ds = xr.Dataset(
        {"vinfo_layer_checkpoint": (("run", "checkpoint", "layer", "atom"), v),
         "importance": (("run", "target", "atom"), rng.normal(size=(2, 1, 6)))},
        coords={"checkpoint": [0, 10, 100], "layer": ["conv1", "conv2", "fc6", "fc7"]})
    path = plot_sedimentation(ds, str(tmp_path / "s.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
