"""``actstore similarity | align``: options, results, one-line errors (exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stores import mlp_store
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import open_store

runner = CliRunner()
N = 30


@pytest.fixture
def store(tmp_path):
    return mlp_store(str(tmp_path / "cli.zarr"), ["net-s0", "net-s1"],
                     {"shape": np.arange(N) % 3})


def test_similarity_json(store, tmp_path):
    png = tmp_path / "h.png"
    res = runner.invoke(app, ["similarity", store, "--metric", "cka", "-P", "debiased=true",
                              "--select", "layer=fc*;checkpoint=last", "--scheduler", "sync",
                              "--png", str(png), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["labels"] == ["net-s0@5/fc1", "net-s0@5/fc2", "net-s1@5/fc1", "net-s1@5/fc2"]
    S = np.array(out["similarity"])
    assert S.shape == (4, 4) and np.allclose(np.diag(S), 1) and np.allclose(S, S.T)
    assert out["params"] == {"debiased": True}
    assert png.exists()
    ds = open_store(store).read_result("similarity", "cka")
    np.testing.assert_allclose(ds["similarity"].values, S)


def test_similarity_table_with_bootstrap_and_subset(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["similarity", store, "-m", "rsa", "-P", "compare=spearman",
                              "-s", "seed=1;checkpoint=all", "--stimuli",
                              "per:shape:4", "--bootstrap", "4", "--name", "rsa-s1",
                              "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    assert "/results/similarity/rsa-s1" in res.stdout
    assert (tmp_path / "rsa-s1.png").exists()
    ds = open_store(store).read_result("similarity", "rsa-s1")
    assert ds.attrs["n_stimuli"] == 12 and ds.attrs["n_boot"] == 4
    assert list(ds["checkpoint_a"].values) == [0, 0, 5, 5]


def test_similarity_summary_line(store, tmp_path, monkeypatch):
    from actstore.cli import _similarity

    monkeypatch.setattr(_similarity.console, "width", 60)
    base = ["similarity", store, "--scheduler", "sync", "--png", "none"]
    res = runner.invoke(app, [*base, "--name", "plain"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == ("cka: 4 representations x 30 stimuli (feature path) -> "
                                          "/results/similarity/plain")
    res = runner.invoke(app, [*base, "--name", "deb", "-P", "debiased=true", "-m", "cka"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("cka (debiased=true): 4 representations")
    res = runner.invoke(app, [*base, "--name", "r", "-m", "rsa", "-P", "compare=spearman"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("rsa (compare=spearman): 4 representations")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "svcca"], "unknown similarity metric 'svcca'; choose one of cka, procrustes"),
        (["-P", "t=2"], "metric 'cka' has no parameter 't'"),
        (["-s", "layer=conv9"], "matched no representation"),
        (["-s", "lr=1"], "unknown selection key 'lr'"),
        (["--max-memory", "lots"], "cannot read the memory size"),
        (["-m", "cka", "-P", "debiased=true", "--stimuli", "first:3"], "at least 4 stimuli"),
    ],
)
def test_similarity_errors_are_one_line(store, args, message, tmp_path):
    res = runner.invoke(app, ["similarity", store, "--scheduler", "sync",
                              "--png", str(tmp_path / "x.png"), *args])
    assert res.exit_code == 2
    assert message in res.stderr
    assert res.stderr.count("\n") == 1
    assert open_store(store).result_names() == []
    assert not (tmp_path / "x.png").exists()


def test_align_command(store):
    res = runner.invoke(app, ["align", store, "net-s0", "net-s1", "--layer", "fc1",
                              "--alphas", "0.001,0.1", "--scheduler", "sync", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["results"] == ["alignment/align.fc1"]
    row = out["summary"][0]
    assert (row["run_a"], row["run_b"]) == ("net-s0", "net-s1")
    assert -1 <= row["bipartite_corr_mean"] <= 1
    assert row["semi_corr_mean"] >= row["bipartite_corr_mean"] - 1e-12
    assert set(row) >= {"loss@0.001", "nnz@0.1", "mixed_clusters", "constant_units"}
    res = runner.invoke(app, ["align", store, "net-s0", "net-s1", "--scheduler", "sync"])
    assert res.exit_code == 2 and "(alphas [0.001, 0.1] there, [0.0, 1e-05" in res.stderr
    res = runner.invoke(app, ["align", store, "net-s0", "net-s1", "--scheduler", "sync",
                              "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "fc2" in res.stdout and "/results/alignment/align.fc2" in res.stdout


def test_align_errors(store):
    res = runner.invoke(app, ["align", store, "net-s0", "--scheduler", "sync"])
    assert res.exit_code == 2 and "at least two runs" in res.stderr
    res = runner.invoke(app, ["align", store, "net-s0", "nope", "--scheduler", "sync"])
    assert res.exit_code == 2 and "runs: net-s0, net-s1" in res.stderr
    res = runner.invoke(app, ["align", store, "net-s0", "net-s1", "--alphas", "a,b"])
    assert res.exit_code == 2 and "penalties" in res.stderr


def test_demo_similarity_step(store, tmp_path):
    """The step `actstore demo` ends with: linear CKA of every layer of every run."""
    from actstore.similarity._jobs import demo_similarity

    out = demo_similarity(store)
    assert out == {"result": "similarity/demo-cka", "representations": 4, "stimuli": N,
                   "png": str(tmp_path / "cli.cka.png")}
    ds = open_store(store).read_result("similarity", "demo-cka")
    assert list(ds["checkpoint_a"].values) == [5, 5, 5, 5]
