"""Plots and the HTML report: every figure is a real PNG, every result has a section, and the
page renders in a headless browser (when Chromium is installed)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from actstore import ActstoreError
from actstore._execution import Execution
from actstore.cli import app
from actstore.probes import (
    PLOTS,
    AlignConfig,
    ComplexityConfig,
    ProbeConfig,
    VarianceConfig,
    alignment_job,
    default_report_dir,
    plot_complexity,
    plot_variance,
    run_complexity,
    run_probes,
    run_variance,
    similarity_job,
    write_report,
    write_synthetic_store,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a" and a.get("href", "").startswith("#"):
            self.links.append(a["href"][1:])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: str) -> _Page:
    page = _Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    return page


def _check_png(path: Path) -> tuple[int, int]:
    """A real, non-blank PNG: signature, header size, decodable pixels that vary."""
    import matplotlib.image as mpimg

    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE, path
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= 300 and height >= 200, (path, width, height)
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert float(np.std(pixels[..., :3])) > 0.02, f"{path} looks blank"
    return width, height


@pytest.fixture(scope="module")
def result_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    url = str(root / "r.zarr")
    write_synthetic_store(url, n_runs=2, steps=(0, 10, 100), widths=(8, 16), n=150,
                          features={"shape": 3, "color": 2})
    run_probes(url, name="p", config=ProbeConfig(decoders=("ridge",), n_splits=3),
               execution=Execution(workers=1))
    run_variance(url, name="v", config=VarianceConfig(n_splits=3))
    run_complexity(url, name="c", config=ComplexityConfig(k=8, n_splits=3, max_epochs=40))
    similarity_job(url, {"checkpoints": "all"}, "cka", execution=Execution(workers=1))
    alignment_job(url, ["run0", "run1"], name="al", config=AlignConfig(lasso=False),
                  execution=Execution(workers=1))
    return url


def test_report_has_a_section_and_real_figures_for_every_result(result_store, tmp_path):
    out = tmp_path / "rep"
    rep = write_report(result_store, out=str(out))
    assert rep.problems == []
    assert rep.sections == ["probes/p", "variance/v", "similarity/cka", "alignment/al",
                            "complexity/c"]
    page = _parse(rep.path)
    # every result is a section, reachable from the table of contents
    for key in rep.sections:
        anchor = key.replace("/", "_")
        assert anchor in page.ids and anchor in page.links
    text = " ".join(page.text)
    assert "run0" in text and "run1" in text
    # each analysis drew its figures (probes: across layers and across checkpoints; every
    # other analysis one), and each one is a real PNG next to the page
    assert sorted(Path(f).name for f in rep.figures) == sorted([
        "probes-p-layers.png", "probes-p-checkpoints.png", "variance-v-variance.png",
        "similarity-cka-heatmap.png", "alignment-al-alignment.png",
        "complexity-c-complexity.png"])
    assert sorted(page.images) == sorted(Path(f).name for f in rep.figures)
    for src in page.images:
        assert not src.startswith(("/", "http")), "figures are referenced relatively"
        _check_png(out / src)
    # nothing is loaded from the network
    assert "http://" not in Path(rep.path).read_text() and "https://" not in Path(
        rep.path).read_text()


def test_report_renders_in_headless_chromium(result_store, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the report's "
                    "HTML/PNG structure is still checked by the other tests of this module")
    rep = write_report(result_store, out=str(tmp_path / "rep"))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1280,3000", f"--screenshot={shot}", Path(rep.path).as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    w, h = _check_png(shot)
    assert (w, h) == (1280, 3000)
    import matplotlib.image as mpimg

    px = mpimg.imread(shot)[..., :3]
    # the page has a white background and dark text at the top, and the figures below it
    # (coloured pixels), i.e. the images loaded
    assert px[:60].mean() > 0.8 and px[:60].min() < 0.3
    colour = np.abs(px[..., 0] - px[..., 2]) > 0.2
    assert colour[200:].mean() > 0.002


def test_plots_registry_and_single_figures(result_store, tmp_path):
    from actstore.store import open_store

    assert set(PLOTS) == {"probes", "variance", "similarity", "complexity", "alignment"}
    st = open_store(result_store)
    p = plot_variance(st.read_result("variance", "v"), str(tmp_path / "v.png"))
    _check_png(Path(p))
    p = plot_complexity(st.read_result("complexity", "c"), str(tmp_path / "c.png"))
    _check_png(Path(p))
    with pytest.raises(ActstoreError, match="no layer"):
        plot_variance(st.read_result("variance", "v"), str(tmp_path / "x.png"), layer="fc9")


def test_report_of_a_store_without_results(tmp_path):
    url = str(tmp_path / "empty.zarr")
    write_synthetic_store(url, n_runs=1, steps=(0,), widths=(4,), n=30,
                          features={"shape": 3})
    rep = write_report(url)
    assert Path(rep.path).parent == tmp_path / "empty-report"
    assert rep.sections == [] and rep.figures == []
    assert "No results yet" in Path(rep.path).read_text()


def test_default_report_dir(tmp_path):
    assert default_report_dir(str(tmp_path / "demo.zarr")) == str(tmp_path / "demo-report")
    assert default_report_dir(str(tmp_path / "x")) == str(tmp_path / "x-report")
    with pytest.raises(ActstoreError, match="--out"):
        default_report_dir("s3://bucket/store.zarr")


def test_cli_report_variance_complexity(result_store, tmp_path):
    # a copy: the results written here must not show up in the other tests' reports
    result_store = str(shutil.copytree(result_store, tmp_path / "copy.zarr"))
    runner = CliRunner()
    res = runner.invoke(app, ["variance", result_store, "--name", "cli", "--folds", "3",
                              "--layers", "layer1", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["layers"] == ["layer1"] and set(doc["features"]) == {"shape", "color"}
    res = runner.invoke(app, ["complexity", result_store, "--name", "cli", "-k", "4",
                              "--folds", "3", "--runs", "run0", "--no-checkpoints", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [r["run"] for r in doc["runs"]] == ["run0"]
    out = tmp_path / "cli-report"
    res = runner.invoke(app, ["report", result_store, "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert "variance/cli" in doc["sections"] and "complexity/cli" in doc["sections"]
    assert (out / "index.html").is_file()


def test_cli_errors_are_one_line(result_store):
    runner = CliRunner()
    res = runner.invoke(app, ["variance", result_store, "--denominator", "mean"])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("actstore: error:") and "denominator" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["complexity", result_store, "--layer", "nope"])
    assert res.exit_code == 2 and "no layer" in res.stderr
    res = runner.invoke(app, ["report", str(Path(result_store).parent / "missing.zarr")])
    assert res.exit_code == 2 and "not an actstore store" in res.stderr


def _probe_ds(values, steps, runs=("a", "b"), layers=("l1", "l2"), feats=("shape",)):
    import xarray as xr

    return xr.Dataset(
        {"accuracy": (("run", "checkpoint", "layer", "feature"), np.asarray(values, float))},
        coords={"run": list(runs), "checkpoint": list(steps), "layer": list(layers),
                "feature": list(feats)},
    )


def test_layer_lines_take_each_run_at_its_own_last_checkpoint():
    from actstore.report._probe_plots import probe_layer_lines

    nan = np.nan
    # run a: steps 0 and 20; run b: steps 0 and 5 (it stops earlier)
    ds = _probe_ds([[[[0.1], [0.2]], [[nan], [nan]], [[0.9], [0.8]]],
                    [[[0.3], [0.4]], [[0.5], [0.6]], [[nan], [nan]]]], steps=[0, 5, 20])
    lines = probe_layer_lines(ds, ds["accuracy"])["shape"]
    assert [(role, label) for role, label, _ in lines] == [
        ("first", "untrained"), ("last", "last checkpoint")]
    np.testing.assert_allclose(lines[0][2], [0.2, 0.3])
    np.testing.assert_allclose(lines[1][2], [0.7, 0.7])  # a at 20, b at 5


def test_layer_lines_of_one_checkpoint_per_run_have_no_first_line():
    from actstore.report._probe_plots import probe_layer_lines

    ds = _probe_ds([[[[0.9], [0.8]]], [[[0.5], [0.6]]]], steps=[300])
    lines = probe_layer_lines(ds, ds["accuracy"], targets={"a": ["shape"], "b": ["color"]})
    assert [(role, label) for role, label, _ in lines["shape"]] == [
        ("target", "trained, target"), ("non-target", "trained, non-target")]
    np.testing.assert_allclose(lines["shape"][0][2], [0.9, 0.8])


def test_similarity_layer_table_never_averages_self_pairs():
    """The layer x layer table's diagonal averages pairs of different representations; a
    layer with one representation has none ('-'), not its self-similarity 1.0."""
    import xarray as xr

    from actstore.report._report import _similarity

    S = np.array([[1.0, 0.4, 0.2], [0.4, 1.0, 0.3], [0.2, 0.3, 1.0]])
    layers = ["fc6", "fc6", "conv1"]
    ds = xr.Dataset({"similarity": (("rep_a", "rep_b"), S)},
                    coords={"layer_a": ("rep_a", layers), "layer_b": ("rep_b", layers)},
                    attrs={"metric": "cka", "n_stimuli": 10})
    html = _similarity(ds, lambda *a, **k: "", {})
    rows = html.split("<tbody>")[1]
    assert "<tr><td>fc6</td><td>0.400</td><td>0.250</td></tr>" in rows
    assert "<tr><td>conv1</td><td>0.250</td><td>-</td></tr>" in rows
