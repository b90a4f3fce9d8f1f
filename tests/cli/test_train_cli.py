"""``actstore train``: ranges and sweep files, JSON report, one-line errors with exit code 2
and nothing written."""

from __future__ import annotations

import json

import pytest
from stores import error_line
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import open_store

runner = CliRunner()

TINY = [
    "--steps", "4", "--checkpoints", "3",
    "--set", "dataset.image_size=16", "--set", "dataset.renders=1",
    "--set", "dataset.n_val=16", "--set", "dataset.probe_combos=20",
    "--set", "model.width=4", "--set", "model.fc_width=8", "--set", "train.eval_size=16",
]


def test_train_ranges_serial_json_and_resume(tmp_path):
    store = str(tmp_path / "s.zarr")
    args = ["train", store, "-d", "trifeature", "-t", "shape,color", "-m", "alexnet",
            "-s", "0:2", "--serial", "--json", *TINY]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [r["status"] for r in report["runs"]] == ["trained"] * 4
    st = open_store(store)
    assert st.run_ids() == sorted(r["run_id"] for r in report["runs"])
    for rid in st.run_ids():
        r = st.reader(rid)
        assert r.complete.all() and 0 in r.steps.tolist() and sorted(r.steps.tolist()) == [0, 1, 4]
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert [r["status"] for r in json.loads(again.stdout)["runs"]] == ["complete"] * 4


def test_train_sweep_file_with_variant(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'datasets = ["binary"]\ntasks = ["label"]\nmodels = ["mlp"]\nseeds = [0]\n'
        "[train]\nsteps = 3\ncheckpoints = 2\neval_size = 16\n"
        "[dataset.binary]\nn_train = 64\nn_val = 16\nn_probe = 32\n"
        '[variants."easy0.6".dataset.binary]\neasy_predictivity = 0.6\n'
        "[variants.easy1.dataset.binary]\neasy_predictivity = 1.0\n"
    )
    store = str(tmp_path / "s.zarr")
    res = runner.invoke(app, ["train", store, str(sweep), "--serial"])
    assert res.exit_code == 0, res.output
    st = open_store(store)
    assert st.run_ids() == ["binary-label-mlp-easy0.6-s0", "binary-label-mlp-easy1-s0"]
    cfg = st.reader("binary-label-mlp-easy1-s0").attrs["config"]
    assert cfg["dataset"]["params"]["easy_predictivity"] == 1.0
    assert "easy0.6" in res.stdout.replace("\n", "")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["-d", "trifeature", "-t", "shape", "-m", "alexnett"], "unknown model 'alexnett'"),
        (["-d", "imagenet", "-t", "shape", "-m", "alexnet"], "valid datasets: trifeature"),
        (["-d", "trifeature", "-t", "size", "-m", "alexnet"], "valid tasks: shape"),
        (["-d", "binary", "-t", "label", "-m", "resnet"], "takes image inputs"),
        (["-d", "trifeature", "-t", "shape", "-m", "alexnet", "--set",
          "dataset.n_heldout=12"], "impossible split"),
        (["-d", "trifeature", "-t", "shape", "-m", "alexnet", "--set", "dataset.p=1.2"],
         r"\[0, 1\]"),
        (["-d", "binary", "-t", "label", "-m", "mlp", "--set", "dataset.easy_predictivity=-1"],
         r"\[0, 1\]"),
        (["-d", "trifeature", "-t", "shape", "-m", "alexnet", "--set", "train.epochs=2"],
         "unknown key epochs"),
        (["-d", "trifeature", "-t", "shape", "-m", "alexnet", "--set", "bogus"], "KEY=VALUE"),
        (["-d", "trifeature", "-t", "shape"],
         "give --model/-m, or a sweep file or built-in sweep name after the store"),
        (["-d", "nope"], r"unknown dataset 'nope' \(valid datasets: trifeature, binary, "
                         r"multifeature\); give --task/-t and --model/-m too, or a sweep file"),
        ([], "give --dataset/-d, --task/-t and --model/-m, or a sweep file"),
        (["-d", "binary", "-t", "label,shap", "-m", "mlp,nn"],
         r"unknown task 'shap' \(valid tasks: .*\); unknown model 'nn' \(valid models: "
         r".*mlp.*\); see `actstore train --list`$"),
        (["no_such_sweep"], "built-in: "),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, match):
    import re

    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["train", str(store), *args])
    line = error_line(res)
    assert re.search(match, line), line
    assert not store.exists()


def test_unknown_key_in_sweep_file(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text('datasets = ["binary"]\ntasks = ["label"]\nmodels = ["mlp"]\nlr = 0.1\n')
    res = runner.invoke(app, ["train", str(tmp_path / "s.zarr"), str(sweep)])
    assert res.exit_code == 2
    assert "unknown key lr in sweep" in res.stderr and "valid keys:" in res.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_changed_config_for_existing_run_is_refused(tmp_path):
    store = tmp_path / "s.zarr"
    base = ["train", str(store), "-d", "trifeature", "-t", "shape", "-m", "alexnet", "--serial",
            *TINY]
    assert runner.invoke(app, base).exit_code == 0
    stamp = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    res = runner.invoke(app, [*base, "--set", "train.lr=0.01"])
    assert res.exit_code == 2
    assert "trifeature-shape-alexnet-s0" in res.stderr and "another config" in res.stderr
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == stamp


def test_dry_run_and_list(tmp_path):
    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["train", str(store), "demo", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)["runs"]
    assert len(runs) == 6 and {r["status"] for r in runs} == {"planned"}
    assert not store.exists()
    res = runner.invoke(app, ["train", "--list"])
    assert res.exit_code == 0
    for word in ("trifeature", "binary", "multifeature", "alexnet", "transformer", "demo"):
        assert word in res.stdout


def test_dry_run_table_keeps_long_run_ids_whole_and_says_nothing_was_written(tmp_path,
                                                                             monkeypatch):
    from actstore.cli import _store_cmds, _train

    for con in (_train.console, _store_cmds.console):
        monkeypatch.setattr(con, "width", 80)
    store = tmp_path / "runs.zarr"
    res = runner.invoke(app, ["train", str(store), "multifeature", "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    rows = [ln.split() for ln in lines if ln.startswith("multifeature-")]
    assert len(rows) == 50 and all(r[1] == "planned" and len(r) == 2 for r in rows)
    assert max(len(r[0]) for r in rows) > 40
    assert lines[-1] == (f"sweep multifeature (dry run): 50 of 50 run(s) to train, 0 already "
                         f"complete in {store}; nothing was trained or written")
    assert " in 0.0 s" not in res.stdout and not store.exists()


def test_report_table_keeps_run_ids_whole_and_lists_failures(monkeypatch, capsys):
    from actstore import ActstoreError
    from actstore.cli import _store_cmds, _train
    from actstore.training import SweepReport

    for con in (_train.console, _store_cmds.console):
        monkeypatch.setattr(con, "width", 60)
    long = "multifeature-all-transformer-position_swapped-s0"
    report = SweepReport(store="s.zarr", name="sw", wall_s=3.0, runs=[
        {"run_id": long, "status": "trained", "written": [0, 5], "wall_s": 2.0,
         "final": {"position": 0.5}},
        {"run_id": "b-s1", "status": "failed", "written": [], "wall_s": 0.0, "final": {},
         "error": "out of [memory]"},
    ])
    with pytest.raises(ActstoreError, match=r"1 of 2 runs failed; b-s1: out of \[memory\]"):
        _train.print_report(report, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines[2:4]] == [[long, "trained"], ["b-s1", "failed"]]
    assert lines[2].split()[2:] == ["2", "2.0", "position", "0.50"]
    assert lines[4:] == ["b-s1 failed: out of [memory]", "sweep sw -> s.zarr in 3.0 s"]


def test_train_on_a_dask_cluster_by_address(tmp_path, dask_cluster):
    store = str(tmp_path / "s.zarr")
    res = runner.invoke(app, [
        "train", store, "-d", "binary", "-t", "label", "-m", "mlp", "-s", "0:3",
        "--steps", "5", "--checkpoints", "3", "--set", "dataset.n_train=128",
        "--set", "dataset.n_probe=64", "--set", "model.hidden=[16]",
        "--scheduler", dask_cluster.address, "--json",
    ])
    assert res.exit_code == 0, res.output
    assert {r["status"] for r in json.loads(res.stdout)["runs"]} == {"trained"}
    st = open_store(store)
    assert len(st.run_ids()) == 3
    assert all(st.reader(r).complete.all() for r in st.run_ids())



@pytest.mark.parametrize("dry", [["--dry-run"], ["--serial"]])
def test_store_path_that_is_a_file_or_a_foreign_directory(tmp_path, dry):
    plain = tmp_path / "plain.txt"
    plain.write_text("notes")
    base = ["-d", "binary", "-t", "label", "-m", "mlp", *dry]
    line = error_line(runner.invoke(app, ["train", str(plain), *base]))
    assert "plain.txt is a file, not an actstore store" in line
    assert plain.read_text() == "notes"
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    line = error_line(runner.invoke(app, ["train", str(other), *base]))
    assert "holds other files, not an actstore store" in line
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("n", ["0", "-1"])
def test_workers_must_be_positive(tmp_path, n):
    from actstore import ActstoreError, Execution
    from actstore.training import load_sweep, run_sweep

    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["train", str(store), "demo", "--dry-run", "--workers", n])
    assert f"--workers must be at least 1, got {n}" in error_line(res)
    with pytest.raises(ActstoreError, match="--workers must be at least 1"):
        run_sweep(load_sweep("demo"), str(store), execution=Execution(workers=int(n)),
                  dry_run=True)
    assert not store.exists()


def test_help_shows_the_defaults_of_steps_and_checkpoints():
    from actstore.training import TrainConfig

    res = runner.invoke(app, ["train", "--help"])
    text = " ".join(res.output.replace("│", " ").split())
    assert f"train.steps, else {TrainConfig.steps})" in text
    assert f"train.checkpoints, else {TrainConfig.checkpoints})" in text


def test_consoles_on_stderr_do_not_wrap():
    from actstore.cli import _demo, _study, _train

    for console in (_train.err_console, _demo.err_console, _study.console):
        assert console.stderr and console.soft_wrap


BINARY = ["-d", "binary", "-t", "label", "-m", "mlp", "--steps", "2", "--checkpoints", "2",
          "--set", "dataset.n_train=64", "--set", "dataset.n_val=16",
          "--set", "dataset.n_probe=32", "--set", "train.eval_size=16"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--serial", "--set", 'capture.layers="fc9"'],
         r"\[capture\] layers of model 'mlp': no layer matches 'fc9'; valid names: all, "
         r"leaves, fc1"),
        (["--serial", "--set", "capture.layers=5"], "capture layers=5 must be"),
        (["--serial", "--set", "train.lr=inf"], "lr=inf must be a finite number"),
        (["--serial", "--set", 'train.device="meta"'], "the meta device holds no data"),
        (["--serial", "--set", 'train.device="gpu0"'], "is not a torch device"),
        (["--serial", "--seeds", "3:1"], "seeds '3:1' is an empty range"),
        (["--scheduler", "nohost"], "is not a Dask scheduler address"),
    ],
)
def test_bad_input_found_before_the_store_is_made(tmp_path, args, match):
    import re

    store = tmp_path / "s.zarr"
    line = error_line(runner.invoke(app, ["train", str(store), *BINARY, *args]))
    assert re.search(match, line), line
    assert not store.exists()


def test_training_device_without_a_gpu_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    store = tmp_path / "s.zarr"
    line = error_line(runner.invoke(app, ["train", str(store), *BINARY, "--serial",
                                           "--set", 'train.device="cuda"']))
    assert "train parameter device='cuda' was asked for, but no GPU is visible" in line
    assert not store.exists()


def test_weights_dir_that_is_a_file(tmp_path):
    plain = tmp_path / "w.txt"
    plain.write_text("x")
    store = tmp_path / "s.zarr"
    for wdir, match in ((plain, "is a file, not a directory"),
                        (plain / "sub", "is a file, so no directory can be made")):
        line = error_line(runner.invoke(app, ["train", str(store), *BINARY, "--serial",
                                               "--weights-dir", str(wdir)]))
        assert match in line
        assert not store.exists()


def test_unreadable_saved_run_config_is_one_line_and_leaves_no_store(tmp_path):
    wdir = tmp_path / "w"
    (wdir / "binary-label-mlp-s0").mkdir(parents=True)
    (wdir / "binary-label-mlp-s0" / "config.json").write_text('{"model": "ml')
    store = tmp_path / "s.zarr"
    res = runner.invoke(app, ["train", str(store), *BINARY, "--serial", "--json",
                              "--weights-dir", str(wdir)])
    line = error_line(res)
    assert "config.json is not a readable run config" in line
    assert not store.exists()


@pytest.mark.parametrize(("text", "match"), [
    (b'datasets = ["binary"]\ntasks = ["label"]\nmodels = ["mlp"]\ntrain = 5\n',
     r"\[train\] of sweep must be a table, got 5"),
    (b'datasets = ["binary"]\ntasks = ["label"]\nmodels = ["mlp"]\ncapture = "x"\n',
     r"\[capture\] of sweep must be a table"),
    (b"\xff\xfe name", "is not UTF-8 text"),
])
def test_malformed_sweep_files_are_one_line(tmp_path, text, match):
    import re

    sweep = tmp_path / "s.toml"
    sweep.write_bytes(text)
    store = tmp_path / "s.zarr"
    line = error_line(runner.invoke(app, ["train", str(store), str(sweep), "--serial"]))
    assert re.search(match, line), line
    assert not store.exists()


def test_ctrl_c_says_what_was_kept(tmp_path, monkeypatch):
    import actstore.training

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(actstore.training, "run_sweep", interrupted)
    res = runner.invoke(app, ["train", str(tmp_path / "s.zarr"), *BINARY, "--serial"])
    assert res.exit_code == 130
    assert res.stderr.strip() == ("actstore: interrupted; every checkpoint completed so far is "
                                  "kept; re-run the same command to continue")
