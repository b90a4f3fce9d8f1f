"""``actstore study``: the four recipes parse at both scales, bad recipes are refused before
anything is trained, and a small study runs end to end and renders its report."""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from stores import error_line
from typer.testing import CliRunner

from actstore import ActstoreError
from actstore._execution import Execution
from actstore.analyses import ANALYSES
from actstore.cli import app
from actstore.studies import builtin_studies, load_study, run_study

STUDIES = ("fel2024", "hermann2020", "lampinen2024", "li2016")


def _images(index: Path) -> list[str]:
    class P(HTMLParser):
        srcs: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    p = P()
    p.srcs = []
    p.feed(index.read_text())
    return p.srcs


def _check_report(folder: Path, n_min: int) -> None:
    index = folder / "index.html"
    assert index.is_file()
    srcs = _images(index)
    assert len(srcs) >= n_min
    for s in srcs:
        raw = (folder / s).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", raw[16:24])
        assert w > 300 and h > 200
    assert "Problems" not in index.read_text()


def test_builtin_studies():
    assert tuple(builtin_studies()) == STUDIES


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("scale", ["small", "paper"])
def test_every_study_parses_at_every_scale(name, scale):
    s = load_study(name, scale)
    assert s.name == name and s.scale == scale
    assert s.sweep.runs and s.analyses
    assert all(a["kind"] in ANALYSES for a in s.analyses)
    for spec in s.sweep.runs:
        spec.resolve()  # every model builds (on the meta device)
    seeds = {r.seed for r in s.sweep.runs}
    if scale == "small":  # two seeds (four for lampinen2024's prevalence: a smaller effect)
        assert len({r.seed for r in s.sweep.runs if r.variant != "prevalence"}) == 2
    else:
        assert len(seeds) >= 3


def test_paper_scale_uses_the_published_sizes():
    h = load_study("hermann2020", "paper")
    images = [r for r in h.sweep.runs if r.dataset == "trifeature"]
    assert {r.dataset_params["image_size"] for r in images} == {224}
    assert {r.model for r in images} == {"alexnet", "resnet"}
    assert "logistic" in h.analyses[0]["decoders"]
    small = load_study("hermann2020", "small")
    assert {r.dataset_params["image_size"] for r in small.sweep.runs
            if r.dataset == "trifeature"} == {40}
    lam = load_study("lampinen2024", "paper")
    assert {r.variant for r in lam.sweep.runs} == {"complexity", "prevalence", "order",
                                                   "position"}
    assert {r.model for r in lam.sweep.runs} == {"mlp", "conv1d", "transformer"}
    assert {r.model for r in lam.sweep.runs if r.variant == "position"} == {"transformer"}
    assert {(r.variant, r.model) for r in load_study("lampinen2024", "small").sweep.runs} == {
        ("complexity", "mlp"), ("complexity", "conv1d"), ("complexity", "transformer"),
        ("prevalence", "mlp"), ("order", "mlp"), ("position", "transformer")}


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "mine.toml"
    p.write_text(text)
    return str(p)


BASE = """
name = "mine"
[sweep]
datasets = ["binary"]
tasks = ["label"]
models = ["mlp"]
seeds = [0]
"""


@pytest.mark.parametrize("extra,match", [
    ("colour = 1\n", "unknown key colour"),
    ("[[analysis]]\nkind = \"nope\"\n", "kind must be one of"),
    ("[[analysis]]\nkind = \"probe\"\nfoldz = 3\n", "unknown key foldz"),
    ("[[analysis]]\nkind = \"probe\"\ndecoders = [\"svm\"]\n", "unknown decoder"),
    ("[[analysis]]\nkind = \"probe\"\n[[analysis]]\nkind = \"probe\"\n", "named 'main'"),
    ("[scale.small]\nvariants = [\"x\"]\n", "not variants of the sweep"),
    ("[scale.huge]\n", "unknown key huge"),
    ("[scale.small.analysis.probe]\nfolds = 3\nbad = 1\n", "unknown key bad"),
])
def test_bad_recipes_are_refused(tmp_path, extra, match):
    with pytest.raises(ActstoreError, match=match):
        load_study(_write(tmp_path, BASE + extra), "small")


def test_unknown_study_and_scale_via_cli(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["study", "nope2099"])
    assert res.exit_code == 2 and "built-in" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(app, ["study", "li2016", "--scale", "huge"])
    assert res.exit_code == 2 and "unknown scale" in res.stderr
    res = runner.invoke(app, ["study", "li2016", "--dry-run", "--json"])
    assert res.exit_code == 0
    plan = json.loads(res.stdout)
    assert plan["run_ids"] == ["trifeature-shape-alexnet-s0", "trifeature-shape-alexnet-s1"]
    res = runner.invoke(app, ["study", "--list"])
    assert res.exit_code == 0 and all(s in res.stdout for s in STUDIES)


@pytest.mark.slow
def test_lampinen2024_small_end_to_end(tmp_path):
    """The study as a user runs it (minutes; tests/studies/test_lampinen_experiments.py runs
    its experiments at a tiny size in the normal suite)."""
    from actstore.store import open_store

    store = tmp_path / "lamp.zarr"
    out = tmp_path / "lamp-report"
    res = CliRunner().invoke(app, ["study", "lampinen2024", str(store), "--workers", "1",
                                   "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert [s["stage"] for s in rep["stages"]] == [
        "train", "variance:main", "probe:main", "similarity:rsa", "findings", "report"]
    assert rep["problems"] == [] and rep["failed_runs"] == []
    assert rep["store_bytes"] > 0
    st = open_store(str(store))
    assert set(st.result_names()) == {"variance/main", "probes/main", "similarity/rsa",
                                      "findings/lampinen2024"}
    assert len(st.run_ids()) == 14
    _check_report(out, n_min=4)
    # Lampinen et al.'s finding at this small scale: both features of the complexity variant
    # are learned, yet the linear one explains more of the last hidden layer's variance
    v = st.read_result("variance", "main")
    runs = [r for r in v.run.values.tolist() if "-mlp-complexity" in r]
    for r in runs:
        acc = st.reader(r).attrs["metrics"]["val"]["acc"]
        assert acc["linear"][-1] > 0.95 and acc["parity3"][-1] > 0.95
        last = v.sel(run=r, layer="fc2").isel(checkpoint=-1)["r2"]
        assert float(last.sel(feature="linear")) > float(last.sel(feature="parity3")) + 0.05
    p = st.read_result("probes", "main")
    assert np.nanmax(p["accuracy"].values) > 0.95
    # the same finding in the study's findings table: --json, the store, the report
    rows = {r["claim"]: r for r in rep["findings"]}
    assert rows["complexity"]["verdict"] == "holds" and rows["complexity"]["value"] > 0.05
    for key in ("order", "position", "complexity_cnn", "top_pcs", "single_units"):
        assert "no runs" not in rows[key]["reason"]
        assert rows[key]["verdict"] == "not testable" or rows[key]["value"] is not None
    table = st.read_result("findings", "lampinen2024")
    assert list(table["claim"].values) == list(rows)
    page = (out / "index.html").read_text()
    assert page.index('id="findings"') < page.index('id="runs"')
    assert "Features that are simpler to compute tend to be represented more strongly" in page


@pytest.mark.slow
@pytest.mark.timeout(1800)  # hermann2020 trains 16 networks: about 8 minutes on 2 idle cores
@pytest.mark.parametrize("name,results,n_figs", [
    ("hermann2020", {"probes/main", "similarity/rsa", "similarity/cka"}, 4),
    ("fel2024", {"complexity/main", "probes/main"}, 3),
    ("li2016", {"similarity/cka"}, 2),
])
def test_small_study_end_to_end(tmp_path, name, results, n_figs):
    """The other small studies (minutes each; also timed by bench/studies.py)."""
    from actstore.store import open_store

    store = tmp_path / f"{name}.zarr"
    rep = run_study(load_study(name, "small"), str(store))
    assert rep.problems == [] and Path(rep.report).is_file()
    names = set(open_store(str(store)).result_names())
    assert results <= names
    if name == "li2016":
        assert any(n.startswith("alignment/main-") for n in names)
    if name == "fel2024":
        ds = open_store(str(store)).read_result("complexity", "main")
        c = ds["complexity"].values
        assert np.all((c[np.isfinite(c)] >= 0) & (c[np.isfinite(c)] <= 1))
        assert np.isfinite(ds["importance"].values).any()
    _check_report(Path(rep.report).parent, n_figs)
    # every claim has a verdict from the numbers, and a reason
    table = open_store(str(store)).read_result("findings", name)
    assert [r["claim"] for r in rep.findings] == [str(c) for c in table["claim"].values]
    for row in rep.findings:
        assert row["verdict"] in ("holds", "does not hold", "not testable") and row["reason"]
        assert row["verdict"] == "not testable" or row["value"] is not None
    headline = {"hermann2020": "target_enhanced", "fel2024": "importance",
                "li2016": "reliable_features"}[name]
    assert {r["claim"]: r for r in rep.findings}[headline]["verdict"] == "holds"


def test_dry_run_checks_the_store_path_and_workers(tmp_path):
    runner = CliRunner()
    plain = tmp_path / "plain.txt"
    plain.write_text("notes")
    res = runner.invoke(app, ["study", "hermann2020", str(plain), "--dry-run"])
    assert res.exit_code == 2 and "plain.txt is a file, not an actstore store" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and plain.read_text() == "notes"
    res = runner.invoke(app, ["study", "hermann2020", str(tmp_path / "s.zarr"), "--dry-run",
                              "--workers", "-1"])
    assert res.exit_code == 2 and "--workers must be at least 1, got -1" in res.stderr
    assert not (tmp_path / "s.zarr").exists()
    with pytest.raises(ActstoreError, match="--workers must be at least 1"):
        run_study(load_study("li2016"), str(tmp_path / "s.zarr"),
                  execution=Execution(workers=0))
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("text,match", [
    ('analysis = 5\n' + BASE, "must be a list of \\[\\[analysis\\]\\] tables, got 5"),
    (BASE + "[scale.small]\nsweep = 5\n", "\\[scale.small.sweep\\] must be a table, got 5"),
    (BASE + "[scale.small]\nvariants = \"ab\"\n", "variants must be a list of variant names"),
    (BASE + "[[analysis]]\nkind = \"probe\"\nfolds = \"5\"\n",
     "folds = '5' must be an integer >= 2"),
    (BASE + "[[analysis]]\nkind = \"probe\"\nfolds = 1\n", "folds = 1 must be an integer >= 2"),
    (BASE + "[[analysis]]\nkind = \"similarity\"\nbootstrap = -1\n",
     "bootstrap = -1 must be an integer >= 0"),
    (BASE + "[[analysis]]\nkind = \"similarity\"\nci = 95\n",
     "ci = 95 must be a number between 0 and 1"),
    (BASE + "[scale.small.analysis.probe]\nfolds = 1.5\n[[analysis]]\nkind = \"probe\"\n",
     "folds = 1.5 must be an integer >= 2"),
])
def test_malformed_recipes_are_refused_before_training(tmp_path, text, match):
    with pytest.raises(ActstoreError, match=match):
        load_study(_write(tmp_path, text), "small")
    store = tmp_path / "s.zarr"
    res = CliRunner().invoke(app, ["study", str(tmp_path / "mine.toml"), str(store),
                                   "--serial"])
    error_line(res)
    assert not store.exists()


def test_a_study_file_that_is_not_utf8(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_bytes(b"name = \"\xff\"\n")
    with pytest.raises(ActstoreError, match="study file .*mine.toml is not UTF-8 text"):
        load_study(str(p), "small")


def test_ctrl_c_during_a_study_says_what_was_kept(tmp_path, monkeypatch):
    import actstore.cli._study as study_mod

    def interrupted(*a, **kw):
        raise KeyboardInterrupt("interrupted: 2 of 5 jobs finished and saved in results/probes/"
                                "main; re-run the same command to continue")

    monkeypatch.setattr(study_mod, "run_study", interrupted)
    res = CliRunner().invoke(app, ["study", _write(tmp_path, BASE), str(tmp_path / "s.zarr")])
    assert res.exit_code == 130
    assert res.stderr.strip() == ("actstore: interrupted: 2 of 5 jobs finished and saved in "
                                  "results/probes/main; re-run the same command to continue")


@pytest.mark.parametrize("name", STUDIES)
def test_study_help_describes_that_study(name):
    from actstore.studies.claims import CLAIMS

    res = CliRunner().invoke(app, ["study", name, "--help"])
    assert res.exit_code == 0, res.output
    st = load_study(name, "paper")
    assert res.stdout.startswith(f"{name}: {st.description}\nPaper: {st.paper}")
    text = " ".join(res.stdout.split())
    assert all(c.statement in text for c in CLAIMS[name])
    assert f"--scale paper: {len(st.sweep.runs)} runs" in text
    assert "PAPERS.md" not in res.stdout  # studies cite the papers
    generic = CliRunner().invoke(app, ["study", "--help"])
    assert generic.exit_code == 0 and "--dry-run" in generic.stdout


def test_dry_run_prints_the_resolved_settings_and_a_measured_cost(tmp_path):
    res = CliRunner().invoke(app, ["study", "lampinen2024", str(tmp_path / "s.zarr"),
                                   "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    g = plan["groups"]["multifeature-all-mlp-complexity"]
    assert g["steps"] == 1500 and g["seeds"] == [0, 1] and g["model_params"]["hidden"] == [64, 64]
    assert [a["kind"] for a in plan["analyses"]] == ["variance", "probe", "similarity"]
    assert plan["analyses"][0]["folds"] == 3
    step = plan["cost"]["step_s"]["multifeature-all-mlp-complexity"]
    steps = {k: plan["groups"][k]["steps"] * len(plan["groups"][k]["seeds"])
             for k in plan["groups"]}
    # step_s is rounded to 4 decimals: up to 5e-5 s off per step
    assert step > 0 and plan["cost"]["train_s"] == pytest.approx(
        sum(plan["cost"]["step_s"][k] * n for k, n in steps.items()),
        abs=0.1 + 5e-5 * sum(steps.values()))
    assert not (tmp_path / "s.zarr").exists()
    text = CliRunner().invoke(app, ["study", "lampinen2024", str(tmp_path / "s.zarr"),
                                    "--dry-run"]).stdout
    assert "measured step time on this machine" in text and "variance:main" in text


def test_a_long_estimate_says_to_use_a_scheduler_or_a_gpu(monkeypatch):
    import actstore.studies._plan as plan_mod

    monkeypatch.setattr(plan_mod, "_step_seconds", lambda spec, n: 10.0)
    cost = plan_mod.estimate_cost(load_study("li2016", "paper"))
    assert cost["train_s"] == 4 * 10000 * 10.0
    assert "--scheduler" in cost["advice"] and "GPU" in cost["advice"]
    monkeypatch.setattr(plan_mod, "_step_seconds", lambda spec, n: 0.001)
    assert plan_mod.estimate_cost(load_study("li2016", "small"))["advice"] == ""


def test_the_summary_prints_the_findings(tmp_path, monkeypatch):
    import actstore.cli._study as study_mod
    from actstore.studies import StudyReport

    row = {"claim": "complexity", "statement": "Simpler features are represented more strongly.",
           "citation": "Lampinen et al., abstract", "quantity": "R^2 difference", "value": 0.129,
           "uncertainty": 0.005, "verdict": "holds", "reason": "R^2 0.176 vs 0.047"}
    monkeypatch.setattr(study_mod, "run_study", lambda *a, **kw: StudyReport(
        "lampinen2024", "small", "s.zarr", report="r/index.html", findings=[row]))
    res = CliRunner().invoke(app, ["study", "lampinen2024", str(tmp_path / "s.zarr")])
    assert res.exit_code == 0, res.output
    assert ("[holds] Simpler features are represented more strongly. (Lampinen et al., "
            "abstract): +0.129 +- 0.005; R^2 0.176 vs 0.047") in res.stdout
