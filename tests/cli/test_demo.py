"""``actstore demo --tiny`` end to end (Dask workers): every run has complete checkpoints,
including the untrained step 0, and a second call resumes (skips everything)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from actstore.cli import app
from actstore.store import open_store

runner = CliRunner()


def test_demo_tiny_end_to_end(tmp_path):
    store = str(tmp_path / "demo.zarr")
    res = runner.invoke(app, ["demo", store, "--tiny", "--workers", "2", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert len(report["runs"]) == 6 and report["store_bytes"] > 0
    st = open_store(store)
    assert sorted(st.run_ids()) == sorted(
        f"trifeature-{t}-alexnet-s{s}" for t in ("shape", "texture", "color") for s in (0, 1)
    )
    (ps,) = st.probe_set_names()
    for rid in st.run_ids():
        r = st.reader(rid)
        assert r.attrs["probe_set"] == ps
        assert r.complete.all()
        assert sorted(r.steps.tolist()) == [0, 1, 12]
        assert "pool3" in r.layers and "fc7" in r.layers
        assert r.read("fc7", 0).shape[0] == st.probe_set(ps, inputs=False).n
    # the analyses: decoders of every (run, checkpoint, layer), linear CKA, the report page
    probes = st.read_result("probes", "demo")
    assert probes.sizes["run"] == 6 and probes.sizes["checkpoint"] == 3
    assert set(probes.feature.values) == {"shape", "texture", "color"}
    assert set(probes.layer.values) == set(st.reader(st.run_ids()[0]).layers)
    acc = probes["accuracy"].sel(decoder="ridge")
    assert ((acc >= 0) & (acc <= 1)).all()
    # every class is trained on in every fold, so each feature is decodable above chance
    # somewhere (colour is linearly readable from the first layer even untrained)
    assert (probes["chance"] > 0).all()
    assert float(acc.sel(feature="color").max()) > 2 * float(probes["chance"].max())
    assert report["probes"]["jobs"] == 6 * 3 * len(probes.layer)
    assert "similarity/demo-cka" in st.result_names()
    assert report["report"] and (tmp_path / "demo-report" / "index.html").exists()
    again = runner.invoke(app, ["demo", store, "--tiny", "--json", "--serial"])
    assert again.exit_code == 0
    assert {r["status"] for r in json.loads(again.stdout)["runs"]} == {"complete"}
