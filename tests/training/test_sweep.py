"""Sweep files: expansion, variants, CLI-style overrides, and bad input."""

from __future__ import annotations

import pytest

from actstore import ActstoreError
from actstore.training import builtin_sweeps, load_sweep, parse_sweep
from actstore.training._sweep import merge, parse_seeds, parse_value, set_option

DOC = {
    "name": "t",
    "datasets": ["trifeature", "binary"],
    "tasks": {"trifeature": ["shape", "color"], "binary": ["label"]},
    "models": ["mlp"],
    "seeds": "0:3",
    "train": {"steps": 10},
    "dataset": {"trifeature": {"image_size": 16}},
    "variants": {
        "base": {},
        "p05": {"dataset": {"trifeature": {"p": 0.5}}, "train": {"lr": 1e-3}},
    },
}


def test_expansion_ids_and_variant_overrides():
    sweep = parse_sweep(DOC)
    # (2 trifeature tasks + 1 binary task) x 1 model x 3 seeds x 2 variants
    assert len(sweep.runs) == 18
    ids = [r.run_id for r in sweep.runs]
    assert len(set(ids)) == 18
    assert "trifeature-shape-mlp-p05-s2" in ids and "binary-label-mlp-base-s0" in ids
    p05 = [r for r in sweep.runs if r.variant == "p05" and r.dataset == "trifeature"]
    assert all(r.dataset_params == {"image_size": 16, "p": 0.5} for r in p05)
    assert all(r.train.lr == 1e-3 and r.train.steps == 10 for r in p05)
    base = [r for r in sweep.runs if r.variant == "base"]
    assert all(r.train.lr == 3e-4 for r in base)
    for r in sweep.runs:
        r.resolve()  # every run is valid


def test_builtin_sweeps_parse_and_resolve():
    names = builtin_sweeps()
    assert "demo" in names and len(names) >= 4
    for name in names:
        sweep = load_sweep(name)
        assert sweep.runs, name
        for r in sweep.runs:
            r.resolve()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"epochs": 3}, "unknown key epochs in sweep.*valid keys: name"),
        ({"models": ["vgg"]}, "unknown model 'vgg'; valid models"),
        ({"tasks": ["size"]}, "unknown task 'size'; valid tasks"),
        ({"tasks": ["shape"]}, "task 'shape' does not apply to dataset 'binary'"),
        ({"seeds": "a:b"}, "seeds"),
        ({"seeds": [-1]}, "seeds"),
        ({"train": {"steps": 10, "lr_decay": 1}}, "unknown key lr_decay in \\[train\\]"),
        ({"capture": {"reduce": "median"}}, "unknown reduction"),
        ({"dataset": {"cifar": {}}}, "unknown key cifar in \\[dataset\\]"),
        ({"dataset": {"trifeature": {"size": 3}}}, "unknown dataset 'trifeature' parameter"),
        ({"variants": {"x": {"steps": 1}}}, "unknown key steps in \\[variants.x\\]"),
        ({"variants": {"x": {"seeds": "a:b"}}}, "\\[variants.x\\] seeds"),
        ({"variants": {"a b": {}}}, "variant name"),
        ({"variants": {"x": {"dataset": {"trifeature": {"n_heldout": 12}}}}},
         "impossible split"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_key_or_value(change, match):
    with pytest.raises(ActstoreError, match=match):
        for r in parse_sweep({**DOC, **change}).runs:
            r.resolve()


def test_seeds_values_and_sets():
    assert parse_seeds("0:4") == [0, 1, 2, 3]
    assert parse_seeds("5,1,5") == [5, 1]
    for empty in ("3:1", "2:2"):
        with pytest.raises(ActstoreError, match=f"seeds '{empty}' is an empty range"):
            parse_seeds(empty)
    assert parse_seeds(7) == [7]
    assert parse_value("64") == 64 and parse_value("0.5") == 0.5
    assert parse_value("[1, 2]") == [1, 2] and parse_value("relu") == "relu"
    doc = {"datasets": ["trifeature"], "models": ["alexnet", "resnet"]}
    set_option(doc, "dataset.image_size", 64)
    set_option(doc, "model.width", 8)
    set_option(doc, "model.resnet.stages", 2)
    set_option(doc, "train.lr", 0.1)
    assert doc["dataset"] == {"trifeature": {"image_size": 64}}
    assert doc["model"] == {"alexnet": {"width": 8}, "resnet": {"width": 8, "stages": 2}}
    assert doc["train"] == {"lr": 0.1}
    with pytest.raises(ActstoreError, match="--set"):
        set_option(doc, "seed", 1)
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_sweep_file_and_overrides(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('datasets = ["binary"]\ntasks = ["label"]\nmodels = ["mlp"]\nseeds = [0]\n')
    sweep = load_sweep(f, overrides={"seeds": "0:2"}, sets=[("train.steps", 7)])
    assert sweep.name == "s" and len(sweep.runs) == 2
    assert sweep.runs[0].train.steps == 7
    f.write_text("datasets = [")
    with pytest.raises(ActstoreError, match="not valid TOML"):
        load_sweep(f)
    with pytest.raises(ActstoreError, match="built-in: .*demo"):
        load_sweep(tmp_path / "missing.toml")
    with pytest.raises(ActstoreError, match="give a sweep file"):
        load_sweep(None, overrides={"datasets": ["binary"]})
