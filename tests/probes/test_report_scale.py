"""Reports and logs of stores with tens of layers and runs of different networks.

The store holds a 50-layer network (``blocks.0`` .. ``blocks.49``: alphabetically
``blocks.10`` comes before ``blocks.2``) and two runs of a 6-layer one, probed in two calls so
that the result's layer order is not the networks' (the first call probed ``blocks.4*``).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from actstore.cli import app
from actstore.report import write_report
from actstore.report._layout import MANY_LAYERS, pyplot, run_layers, thin_tick_labels
from actstore.report._probe_plots import (
    probe_checkpoints_figure,
    probe_layers_figure,
    probe_score,
)
from actstore.store import ProbeSet, create_store, open_store
from actstore.testing import synthetic_activations, synthetic_labels

DEEP = [f"blocks.{i}" for i in range(50)]
SHALLOW = ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "fc"]
FEATURES = {"shape": 3, "color": 2}
runner = CliRunner()


def _write_run(store, run, model, layers, steps, labels, seed):
    with store.writer(run, probe_set="syn", steps=list(steps), attrs={"model": model}) as w:
        for s in steps:
            progress = float(np.log1p(s) / np.log1p(max(steps)))
            w.write_slot(s, {name: synthetic_activations(labels, 4, progress, seed, i)
                             for i, name in enumerate(layers)})


@pytest.fixture(scope="module")
def deep_store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("deep") / "deep.zarr")
    st = create_store(url)
    labels = synthetic_labels(48, FEATURES, 0)
    st.add_probe_set(ProbeSet("syn", labels=labels))
    _write_run(st, "cnn0", "cnn.py:make", SHALLOW, (0, 10, 100), labels, 1)
    _write_run(st, "cnn1", "cnn.py:make", SHALLOW, (0, 10, 100), labels, 2)
    _write_run(st, "deep0", "/home/me/models/deep.py:make", DEEP, (0, 100), labels, 3)
    probe = ["probe", url, "--name", "p", "--decoders", "ridge", "--folds", "2",
             "--workers", "1"]
    first = runner.invoke(app, [*probe, "--layers", "blocks.4*"])
    assert first.exit_code == 0, first.output
    res = runner.invoke(app, probe)  # the rest of the layers; off a terminal
    assert res.exit_code == 0, res.output
    return url, res.stdout


def _drawn_texts(fig):
    """(text, window extent) of every text matplotlib draws: tick labels within the axis
    limits (those beyond are not drawn), titles, axis labels, legends."""
    from matplotlib.text import Text

    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    ticks, shown = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                for label in (tick.label1, tick.label2):
                    ticks.add(id(label))
                    if label.get_visible() and label.get_text() and lo <= tick.get_loc() <= hi:
                        shown.append(label)
    shown += [t for t in fig.findobj(Text)
              if id(t) not in ticks and t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in shown]


def _assert_readable(fig):
    """No two drawn texts overlap, and every one lies inside the figure."""
    boxes = _drawn_texts(fig)
    clashes = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2)
               if ba.overlaps(bb)]
    assert clashes == []
    page = fig.bbox
    outside = [t for t, b in boxes if b.x0 < page.x0 - 1 or b.x1 > page.x1 + 1
               or b.y0 < page.y0 - 1 or b.y1 > page.y1 + 1]
    assert outside == []


def _tick_texts(axis):
    return [t.get_text() for t in axis.get_ticklabels()]


def test_the_result_is_not_in_network_order(deep_store):
    """The premise of the other tests: the result lists the layers the first call probed
    first, and the alphabetical order differs from depth."""
    ds = open_store(deep_store[0]).read_result("probes", "p")
    layers = [str(x) for x in ds.layer.values]
    assert layers[:11] == ["blocks.4", *[f"blocks.{i}" for i in range(40, 50)]]
    assert sorted(DEEP) != DEEP and sorted(SHALLOW) != SHALLOW


@pytest.fixture
def drawn(deep_store):
    """``draw(make) -> (figure, score)``: a probe figure of the store as the report draws it
    (tick labels thinned), checked readable, with warnings as errors."""
    st = open_store(deep_store[0])
    ds = st.read_result("probes", "p")
    figures = []

    def draw(make):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig = make(ds, runs=run_layers(st))
            figures.append(fig)
            thin_tick_labels(fig)
            _assert_readable(fig)
        return fig, probe_score(ds)[0]

    yield draw
    for fig in figures:
        pyplot().close(fig)


def test_layer_figure_has_one_small_multiple_per_group_in_network_order(drawn):
    fig, score = drawn(probe_layers_figure)
    titles = [sf._suptitle.get_text() for sf in fig.subfigs]
    assert titles == ["A: cnn.py:make, 6 layers, runs cnn0, cnn1",
                      "B: deep.py:make, 50 layers, run deep0"]
    for sf, layers, runs in zip(fig.subfigs, (SHALLOW, DEEP), (["cnn0", "cnn1"], ["deep0"]),
                                strict=True):
        assert [ax.get_title() for ax in sf.axes] == list(FEATURES)
        for ax, feature in zip(sf.axes, FEATURES, strict=True):
            assert _tick_texts(ax.xaxis) == layers  # every layer has its tick, in depth order
            last = next(ln for ln in ax.get_lines() if ln.get_label() == "step 100")
            want = score.sel(run=runs, checkpoint=100, layer=layers, feature=feature)
            np.testing.assert_allclose(last.get_ydata(), want.mean("run").values)


def test_checkpoint_figure_draws_many_layers_as_a_heatmap(drawn):
    fig, score = drawn(probe_checkpoints_figure)
    assert len(SHALLOW) <= MANY_LAYERS < len(DEEP)
    shallow, deep = fig.subfigs
    for ax, feature in zip(shallow.axes, FEATURES, strict=True):  # one line per layer
        assert [ln.get_label() for ln in ax.get_lines()] == SHALLOW
        for line, layer in zip(ax.get_lines(), SHALLOW, strict=True):
            want = score.sel(run=["cnn0", "cnn1"], layer=layer, feature=feature)
            np.testing.assert_allclose(line.get_xdata(), [0, 10, 100])
            np.testing.assert_allclose(line.get_ydata(), want.mean("run").values)
    panels = [ax for ax in deep.axes if ax.images]  # (colour bar axes excluded)
    assert len(panels) == len(FEATURES)
    for ax, feature in zip(panels, FEATURES, strict=True):
        image = np.asarray(ax.images[0].get_array())
        assert image.shape == (50, 2)  # layer x checkpoint (steps 0 and 100)
        want = score.sel(run="deep0", layer=DEEP, feature=feature).transpose(
            "layer", "checkpoint").sel(checkpoint=[0, 100]).values
        np.testing.assert_allclose(image, want)
    assert _tick_texts(panels[0].yaxis) == DEEP


def test_thinned_tick_labels_never_overlap():
    """120 layers on one 7-inch axis cannot all be labelled: every k-th label is kept, the
    first one included, and no two kept labels touch (every layer keeps its tick mark)."""
    from actstore.report._layout import layer_ticks

    names = [f"encoder.layer.{i}.output" for i in range(120)]
    fig, ax = pyplot().subplots(figsize=(7, 3), layout="constrained")
    try:
        ax.plot(np.arange(120), np.linspace(0, 1, 120))
        layer_ticks(ax, names)
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        before = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
        assert any(a.overlaps(b) for a, b in itertools.pairwise(before))
        thin_tick_labels(fig)
        shown = [t for t in ax.get_xticklabels() if t.get_visible()]
        assert 5 < len(shown) < 120 and shown[0].get_text() == names[0]
        assert len(ax.get_xticks()) == 120
        _assert_readable(fig)
    finally:
        pyplot().close(fig)


class _Page(HTMLParser):
    """The layer lists of the run groups and the first cell of every table row."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[list[str]] = []
        self.first_cells: list[str] = []
        self._layers = False  # inside a group's <ol class="layers">
        self._text: list[str] | None = None
        self._cell = 0

    def handle_starttag(self, tag, attrs):
        if tag == "ol" and ("class", "layers") in attrs:
            self._layers = True
            self.groups.append([])
        elif tag == "li" and self._layers:
            self._text = self.groups[-1]
        elif tag == "tr":
            self._cell = 0
        elif tag == "td":
            self._cell += 1
            self._text = self.first_cells if self._cell == 1 else None

    def handle_endtag(self, tag):
        if tag == "ol":
            self._layers = False
        if tag in ("li", "td", "ol"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def test_report_of_fifty_layers_renders_in_chromium_in_network_order(deep_store, tmp_path):
    url, _ = deep_store
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warning leaks
        rep = write_report(url, out=str(tmp_path / "rep"))
    assert rep.problems == []
    html = Path(rep.path).read_text()
    page = _Page()
    page.feed(html)
    assert page.groups == [SHALLOW, DEEP]
    # the probe table has one row per layer (more layers than features), in network order
    rows = page.first_cells
    start = rows.index("stem")
    assert rows[start:start + len(SHALLOW) + len(DEEP)] == SHALLOW + DEEP
    # the run table says what is known of runs recorded without a task or seed
    assert re.search(r"<td>deep0</td><td>deep\.py:make</td><td>-</td><td>-</td><td>syn</td>",
                     html)
    assert "None" not in html

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the figures "
                    "and the HTML are checked above")
    # the page as served, plus a script that reports what the browser laid out
    probe = ('<script>addEventListener("load", () => { const p = document.createElement("pre");'
             ' p.id = "layout"; p.textContent = JSON.stringify({images: [...document.images]'
             '.map(i => [i.getAttribute("src"), i.complete, i.naturalWidth,'
             ' i.getBoundingClientRect().right]), page: document.documentElement.scrollWidth,'
             ' window: innerWidth}); document.body.appendChild(p); });</script>')
    checked = Path(rep.path).with_name("checked.html")
    checked.write_text(html.replace("</body>", probe + "</body>"), encoding="utf-8")
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
         "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    found = re.search(r'<pre id="layout">(.*?)</pre>', out)
    assert found, out[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert sorted(src for src, *_ in layout["images"]) == sorted(
        Path(f).name for f in rep.figures)
    for src, complete, natural, right in layout["images"]:
        assert complete and natural > 0, src  # the PNG loaded
        assert right <= layout["window"], src  # and fits the window (scaled down if wide)
    assert layout["page"] <= layout["window"]  # no table or figure overflows sideways


def test_logs_print_whole_names_and_known_attributes(deep_store, monkeypatch):
    """Off a terminal (a log, CliRunner) tables are plain text: no name is cut, even on a
    narrow console, and the probe table lists the layers in network order; runs recorded
    without a task or seed show '-', not None."""
    url, probe_out = deep_store
    lines = probe_out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("layer "))
    assert re.fullmatch(r"layer\s+shape \(acc\)\s+color \(acc\)", lines[head])
    assert set(lines[head + 1]) == {"-", " "}
    rows = [ln.split() for ln in lines[head + 2:head + 2 + len(DEEP + SHALLOW)]]
    assert [r[0] for r in rows] == SHALLOW + DEEP  # every name whole, in network order
    assert all(len(r) == 7 and r[2] == r[5] == "->" for r in rows)  # and every score
    assert "…" not in probe_out

    from rich.console import Console

    from actstore.cli import _store_cmds

    monkeypatch.setattr(_store_cmds, "console", Console(width=30, soft_wrap=True))
    res = runner.invoke(app, ["ls", url])
    assert res.exit_code == 0 and "None" not in res.stdout and "…" not in res.stdout
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith("deep0"))
    assert row.split()[:7] == ["deep0", "deep.py:make", "-", "-", "syn", "50", "2/2"]
    res = runner.invoke(app, ["info", url, "deep0"])
    assert res.exit_code == 0 and "None" not in res.stdout
    assert res.stdout.startswith("deep0: model /home/me/models/deep.py:make, probe set syn")
    assert [ln.split()[0] for ln in res.stdout.splitlines()[4:]] == DEEP
