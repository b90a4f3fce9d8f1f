"""Small stores of random two-layer networks for the command-line tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def mlp_store(url: str, runs: Sequence[str], labels: Mapping[str, np.ndarray]) -> str:
    """Runs with layers fc1 (8 units, ReLU) and fc2 (3 units) at steps 0 and 5; seed = index."""
    from actstore.store import ProbeSet, create_store

    n = len(next(iter(labels.values())))
    rng = np.random.default_rng(0)
    st = create_store(url)
    st.add_probe_set(ProbeSet("ps", labels=dict(labels)))
    for seed, run in enumerate(runs):
        with st.writer(run, probe_set="ps", steps=[0, 5],
                       attrs={"model": "mlp", "task": "shape", "seed": seed}) as w:
            for step in (0, 5):
                base = rng.normal(size=(n, 4))
                w.write_slot(step, {
                    "fc1": np.maximum(base @ rng.normal(size=(4, 8)), 0).astype("float32"),
                    "fc2": (base @ rng.normal(size=(4, 3))).astype("float32"),
                })
    return url


def error_line(res, code: int = 2) -> str:
    """The one error line of a refused command (exit code 2; 1 for a failure of the
    environment), from a CliRunner result."""
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("actstore: error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]
