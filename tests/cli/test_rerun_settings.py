"""Results of the same name: a re-run with the same settings replaces them, other settings are
refused (one line, exit 2, the store unchanged) unless ``--overwrite`` is given."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from stores import mlp_store
from typer.testing import CliRunner

from actstore._errors import ActstoreError
from actstore.cli import app
from actstore.store import open_store

runner = CliRunner()
N = 30
RUNS = ["r0", "r1"]

# command, its arguments after the store, other settings, the message's setting, results
CASES = {
    "similarity": (["--scheduler", "sync", "--png", "none", "-s", "layer=fc1", "--name", "s"],
                   ["--metric", "rsa"], "metric 'cka' there, 'rsa' now", ["similarity/s"]),
    "align": ([*RUNS, "--scheduler", "sync", "--no-mi", "--no-lasso", "--layer", "fc2"],
              ["--seed", "1"], "seed 0 there, 1 now", ["alignment/align.fc2"]),
    "variance": (["--folds", "3", "--layers", "fc2", "--checkpoints", "last"],
                 ["--folds", "4"], "folds 3 there, 4 now", ["variance/default"]),
    "complexity": (["--runs", RUNS[0], "-k", "3", "--folds", "3", "--max-epochs", "20",
                    "--no-checkpoints"], ["-k", "2"], "k 3 there, 2 now",
                   ["complexity/default", f"nmf/default.{RUNS[0]}"]),
}


@pytest.fixture
def store(tmp_path):
    return mlp_store(str(tmp_path / "s.zarr"), RUNS, {"shape": np.arange(N) % 3})


def _files(url: str) -> dict[str, str]:
    return {str(p.relative_to(url)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(url).rglob("*")) if p.is_file()}


def _config(url: str, result: str) -> dict:
    analysis, name = result.split("/")
    return json.loads(open_store(url).result_attrs(analysis, name)["actstore.config"])


@pytest.mark.parametrize("cmd", list(CASES))
def test_other_settings_are_refused_unless_overwritten(store, cmd):
    args, other, message, results = CASES[cmd]
    res = runner.invoke(app, [cmd, store, *args])
    assert res.exit_code == 0, res.output
    first = {r: _config(store, r) for r in results}
    res = runner.invoke(app, [cmd, store, *args])  # the same settings: replaced, same config
    assert res.exit_code == 0, res.output
    assert {r: _config(store, r) for r in results} == first
    before = _files(store)
    res = runner.invoke(app, [cmd, store, *args, *other])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("actstore: error: ") and res.stderr.count("\n") == 1
    assert f"were computed with other settings ({message}" in res.stderr, res.stderr
    assert res.stderr.rstrip().endswith("choose another --name or pass --overwrite")
    assert _files(store) == before
    res = runner.invoke(app, [cmd, store, *args, *other, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert all(_config(store, r) != first[r] for r in results)


def test_results_without_recorded_settings_are_not_replaced(store):
    from actstore._execution import Execution
    from actstore.probes import similarity_job

    here = Execution(workers=1)
    ds = similarity_job(store, {"layers": "fc1"}, name="s", execution=here, write=False)
    del ds.attrs["actstore.config"]
    open_store(store, mode="a").write_result("similarity", "s", ds)
    with pytest.raises(ActstoreError, match=r"\(no settings recorded there\); choose another"):
        similarity_job(store, {"layers": "fc1"}, name="s", execution=here)
    similarity_job(store, {"layers": "fc1"}, name="s", execution=here, overwrite=True)
    assert "actstore.config" in open_store(store).result_attrs("similarity", "s")


@pytest.mark.parametrize("cmd", ["similarity", "variance"])
def test_the_same_command_on_a_grown_store_refreshes_the_result(store, cmd):
    from actstore.store import open_store as _open

    args, _, _, results = CASES[cmd]
    assert runner.invoke(app, [cmd, store, *args]).exit_code == 0
    st = _open(store, mode="a")
    rng = np.random.default_rng(1)
    with st.writer("r2", probe_set="ps", steps=[0, 5],
                   attrs={"model": "mlp", "task": "shape", "seed": 2}) as w:
        for step in (0, 5):
            w.write_slot(step, {"fc1": rng.normal(size=(N, 8)).astype("float32"),
                                "fc2": rng.normal(size=(N, 3)).astype("float32")})
    res = runner.invoke(app, [cmd, store, *args])  # a new run is selected by the same query
    assert res.exit_code == 0, res.output
    analysis, name = results[0].split("/")
    ds = _open(store).read_result(analysis, name)
    runs = ds["run_a"].values.tolist() if cmd == "similarity" else ds["run"].values.tolist()
    assert "r2" in runs and set(RUNS) <= set(runs)


def test_the_demo_similarity_and_the_default_command_record_the_same_settings(store):
    import zarr

    from actstore.similarity._jobs import demo_similarity

    demo_similarity(store)
    res = runner.invoke(app, ["similarity", store, "--name", "demo-cka", "--scheduler", "sync",
                              "--png", "none", "-s", "checkpoint=last"])
    assert res.exit_code == 0, res.output
    # a demo result written before settings were recorded is still the demo's to replace
    del zarr.open_group(store, mode="r+")["results/similarity/demo-cka"].attrs["actstore.config"]
    demo_similarity(store)
    assert "actstore.config" in open_store(store).result_attrs("similarity", "demo-cka")
