"""Layer selection: ``all`` picks the outputs that matter (blocks of stacks, embeddings,
final norm, head) and never modules that do not run; ``leaves``; errors that list the valid
names; ``actstore layers`` prints the module tree with output shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import RESNET_ALL, tiny_resnet
from typer.testing import CliRunner

from actstore import ActstoreError
from actstore.cli import app
from actstore.store import ProbeSet, canonical_name, create_store, resolve_layers
from actstore.store._capture import dry_run

runner = CliRunner()
TINY = Path(__file__).parent / "tiny_models.py"


def _images(n: int = 6) -> ProbeSet:
    x = np.random.default_rng(0).normal(size=(n, 3, 32, 32)).astype("float32")
    return ProbeSet("img", labels={"y": np.arange(n) % 2}, inputs=x)


def test_all_on_a_resnet_picks_the_stem_the_residual_blocks_and_the_head():
    net = tiny_resnet()
    assert [p for _, p in resolve_layers(net, "all")] == RESNET_ALL
    traced = resolve_layers(net, "all", dry_run(net, _images()))
    assert [p for _, p in traced] == RESNET_ALL


def test_leaves_are_every_leaf_module_and_globs_work_as_before():
    net = tiny_resnet()
    leaves = [p for _, p in resolve_layers(net, "leaves")]
    assert leaves == [p for p, m in net.named_modules() if p and not list(m.children())]
    assert "layer2.0.downsample.0" in leaves and "layer1.0" not in leaves
    assert [p for _, p in resolve_layers(net, "layer3.*")] == ["layer3.0", "layer3.1"]
    assert [p for _, p in resolve_layers(net, "fc,all")] == RESNET_ALL


def test_capture_of_all_records_the_block_outputs(tmp_path):
    net, ps = tiny_resnet(), _images()
    url = str(tmp_path / "s.zarr")
    st = create_store(url)
    st.add_probe_set(ps)
    with st.writer("res", "img", steps=[0]) as w:
        w.capture(net, 0, batch_size=4)
    rd = st.reader("res")
    assert rd.layers == [canonical_name(p) for p in RESNET_ALL]
    with torch.inference_mode():  # the block outputs, by hand: stem then the stages
        x = torch.from_numpy(ps.inputs)
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        b0 = net.layer1[0](h)
        b1 = net.layer1[1](b0)
        out = net(x)
    np.testing.assert_allclose(rd.read("layer1_0", 0), b0.mean(dim=(2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(rd.read("layer1_1", 0), b1.mean(dim=(2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(rd.read("fc", 0), out.numpy(), atol=1e-6)


class _Unused(torch.nn.Module):
    """A stack, a dropout, a module that never runs and one whose output is not per sample."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, 8)
        self.pos = torch.nn.Embedding(3, 8)
        self.drop = torch.nn.Dropout(0.1)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)])
        self.spare = torch.nn.Linear(8, 8)  # never called
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        h = self.drop(self.embed(x) + self.pos(torch.arange(1)))  # pos: shape (1, 8)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


def test_all_leaves_out_dropout_and_with_a_dry_run_what_does_not_run():
    net = _Unused()
    assert [p for _, p in resolve_layers(net, "all")] == [
        "embed", "pos", "blocks.0", "blocks.1", "spare", "head"]
    ps = ProbeSet("v", labels={"y": [0, 1, 0]}, inputs=np.ones((3, 4), "float32"))
    trace = dry_run(net, ps)
    assert trace["pos"].shape == (1, 8) and "spare" not in trace
    assert [p for _, p in resolve_layers(net, "all", trace)] == [
        "embed", "blocks.0", "blocks.1", "head"]


def test_an_unknown_layer_lists_the_valid_names_and_points_to_the_layers_command():
    with pytest.raises(ActstoreError) as e:
        resolve_layers(tiny_resnet(), "layer9")
    msg = str(e.value)
    assert "no layer matches 'layer9'" in msg
    assert "valid names: all, leaves, conv1, bn1" in msg
    assert "layer2_0_downsample_0" in msg and "actstore layers" in msg


def test_layers_command_prints_the_tree_with_shapes_and_marks(tmp_path):
    np.savez(tmp_path / "img.npz", inputs=_images().inputs, y=np.arange(6) % 2)
    res = runner.invoke(app, ["layers", "--model", f"{TINY}:tiny_resnet",
                              "--probe-set", str(tmp_path / "img.npz"),
                              "--layers", "layer4.*"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert sum("BasicBlock" in ln for ln in lines) == 8
    l10 = next(ln for ln in lines if ln.split()[1:2] == ["layer1.0"])
    assert l10.startswith(" * ") and "BasicBlock" in l10 and "(2, 4, 8, 8)" in l10
    l41 = next(ln for ln in lines if "layer4.1 " in ln)
    assert l41[:8].split() == ["*", "+"] and "(2, 32, 1, 1)" in l41
    deep = next(ln for ln in lines if "layer2.0.downsample.0" in ln)  # never truncated
    assert "Conv2d" in deep and "*" not in deep[:8]
    # a block's ReLU runs twice per forward pass
    assert next(ln for ln in lines if "layer1.0.relu " in ln).rstrip().endswith(" x2")
    assert any(ln.startswith("* all: 14 layers: conv1, bn1, relu, maxpool, layer1_0")
               for ln in lines)
    assert any(ln.startswith("+ --layers: 2 layers: layer4_0, layer4_1") for ln in lines)
    res = runner.invoke(app, ["layers", "--model", f"{TINY}:tiny_resnet", "--json"])
    info = json.loads(res.output)
    assert [r["path"] for r in info["rows"] if r["all"]] == RESNET_ALL
    assert all(r["shape"] is None for r in info["rows"])


def test_layers_command_refuses_an_unknown_selection_in_one_line(tmp_path):
    res = runner.invoke(app, ["layers", "--model", f"{TINY}:tiny_resnet", "--layers", "nope"])
    assert res.exit_code == 2
    assert "no layer matches 'nope'" in res.output
