"""The alignment section of the report lists layers in network order (the runs' layer tables),
not in the store's alphabetical order of result names: ``pool`` before ``fc1`` before ``out``,
in the summary table, the sparse-prediction table and the figures' layer axes."""

from __future__ import annotations

import re

from factories import SmallCNN, small_cnn

from actstore._execution import Execution
from actstore.alignment import alignment_job
from actstore.report import write_report
from actstore.store import create_store

NETWORK = ["conv1", "relu1", "conv2", "pool", "fc1", "out"]


def test_alignment_tables_follow_the_network_order(tmp_path, image_probe_set):
    url = str(tmp_path / "o.zarr")
    st = create_store(url)
    st.add_probe_set(image_probe_set)
    for i, model in enumerate([small_cnn(), SmallCNN()]):
        with st.writer(f"cnn{i}", "images", steps=[0]) as w:
            assert w.capture(model, 0)
    assert st.reader("cnn0").layers == NETWORK != sorted(NETWORK)
    alignment_job(st, ["cnn0", "cnn1"], name="al", execution=Execution(workers=1))
    rep = write_report(url, out=str(tmp_path / "rep"))
    assert rep.problems == []
    page = open(rep.path).read()
    section = page[page.index('id="alignment_al"'):]
    summary, lasso = section.split("Sparse prediction", 1)
    for table in (summary, lasso):
        rows = re.findall(r"<tr><td>([a-z0-9]+)</td>", table)
        assert [r for r in rows if r in NETWORK] == NETWORK
