"""Error lines that must name the options of the command that printed them."""

from __future__ import annotations

import numpy as np
import pytest
from stores import error_line
from typer.testing import CliRunner

from actstore.cli import app
from actstore.store._ingest import ingest

runner = CliRunner()


@pytest.fixture
def other_runs(tmp_path):
    """A store whose run ``trifeature-shape-alexnet-s0`` is not the demo's run of that id."""
    (tmp_path / "labels.csv").write_text("color\n" + "".join(f"{i % 2}\n" for i in range(4)))
    np.save(tmp_path / "fc.npy", np.ones((4, 2), "float32"))
    store = str(tmp_path / "s.zarr")
    ingest(store, "trifeature-shape-alexnet-s0", [tmp_path / "fc.npy"], tmp_path / "labels.csv")
    return store



@pytest.mark.parametrize(("tiny", "advice"), [
    ([], "use another store path for the demo, or add --tiny if this store was made with it"),
    (["--tiny"], "use another store path for the tiny demo, or leave out --tiny if this store "
                 "was made without it"),
])
def test_demo_on_a_store_with_other_runs_names_no_variant(other_runs, tiny, advice):
    line = error_line(runner.invoke(app, ["demo", other_runs, *tiny, "--serial"]))
    assert line.endswith(f"run 'trifeature-shape-alexnet-s0' in {other_runs} was made with "
                         f"another model; nothing was written; {advice}")
    assert "variant" not in line


def test_train_on_a_store_with_other_runs_suggests_a_variant(other_runs):
    line = error_line(runner.invoke(app, ["train", other_runs, "demo", "--dry-run"]))
    assert line.endswith("nothing was written; give this configuration a variant name (a "
                         "[variants.NAME] table of a sweep file) or use a new store")
