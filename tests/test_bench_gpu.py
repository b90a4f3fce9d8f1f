"""bench/gpu.py's baselines on the CPU.

The loop that fits cuML's estimators on a GPU makes the same calls on numpy arrays with
scikit-learn's estimators, so given those it must reproduce `GridSearchCV` over a
`StandardScaler` pipeline; himalaya's path must agree with the engine's ridge decoders; and the
script must run end to end with `--quick`.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from actstore.probes import ProbeConfig, make_folds
from actstore.testing import synthetic_activations, synthetic_labels

_PATH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
_spec = importlib.util.spec_from_file_location("bench_gpu", _PATH)
assert _spec is not None and _spec.loader is not None
gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu)


@pytest.fixture(autouse=True)
def _himalaya_back_to_numpy():
    """bench/gpu.py sets himalaya's (global) backend; other tests expect its default."""
    yield
    from himalaya.backend import set_backend

    set_backend("numpy")


@pytest.fixture(scope="module")
def data():
    labels = synthetic_labels(250, {"f2": 2, "f3": 3, "f5": 5}, seed=1)
    X = synthetic_activations(labels, 12, progress=0.4, run_seed=0, layer_seed=3)
    folds, _ = make_folds(labels, ProbeConfig(n_splits=5, seed=0))
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in folds.split()]
    return X, labels, folds, splits


def test_standardize_is_standard_scaler_of_the_training_rows():
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5)) * [1, 2, 3, 4, 5] + 7
    X[:, 2] = 3.0  # a constant unit keeps scale 1, as in StandardScaler
    train = np.arange(0, 40, 2)
    ref = StandardScaler().fit(X[train]).transform(X)
    np.testing.assert_allclose(gpu.standardize(X, train), ref, atol=1e-12)


@pytest.mark.parametrize("kind", ["ridge", "logistic"])
def test_cuml_loop_reproduces_gridsearch(data, kind):
    from sklearn import linear_model
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, labels, _, splits = data
    grid = gpu.ALPHAS if kind == "ridge" else gpu.CS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence warnings at the weakest penalties
        got = gpu.cuml_decoders(kind, X, labels, splits, grid, np, linear_model)
        for f, y in labels.items():
            model, key = ((linear_model.RidgeClassifier(), "alpha") if kind == "ridge" else
                          (linear_model.LogisticRegression(max_iter=1000), "C"))
            ref = GridSearchCV(make_pipeline(StandardScaler(), model),
                               {f"{type(model).__name__.lower()}__{key}": list(grid)},
                               cv=splits).fit(X.astype("float32"), y)
            # the standardisations differ only in float32 rounding
            assert got[f] == pytest.approx(ref.best_score_, abs=1e-9), f


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_himalaya_path_agrees_with_the_engine(data, backend):
    X, labels, folds, splits = data
    eng = gpu.engine(X, labels, folds, "ridge", gpu.ALPHAS, "numpy")
    him = gpu.himalaya_ridge(X, labels, splits, gpu.ALPHAS, backend)
    assert set(him) == set(labels)
    # same standardised units, folds and alphas, so the same held-out predictions; himalaya
    # keeps the scores in the activations' float32
    for f in labels:
        assert him[f] == pytest.approx(eng[f], abs=1e-6), f


def test_quick_run_prints_every_method(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    rows = gpu.main(["--quick", "--device", "numpy", "--json", str(out)])
    text = capsys.readouterr().out
    assert "cuML baselines: skipped (they need --device cuda)" in text
    assert [r["width"] for r in rows] == [8, 16]
    for r in rows:
        assert set(r["methods"]) == {"engine ridge", "engine logistic", "himalaya ridge (numpy)"}
        him = r["methods"]["himalaya ridge (numpy)"]
        assert him["max_acc_diff_pt"] < 0.5 and him["speedup"] > 0
    assert json.loads(out.read_text())["widths"][1]["width"] == 16


def test_bad_widths_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        gpu.main(["--widths", "wide"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_himalaya_keeps_its_arrays_on_an_emulated_cuda_device(data, monkeypatch):
    """The `torch_cuda` path under the CUDA emulator of tests/probes/test_device_paths.py,
    which refuses host arrays mixed with device ones: the same accuracies as the engine."""
    import torch

    path = Path(__file__).resolve().parent / "probes" / "test_device_paths.py"
    spec = importlib.util.spec_from_file_location("device_paths_emulator", path)
    assert spec is not None and spec.loader is not None
    emulator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emulator)
    X, labels, folds, splits = data
    eng = gpu.engine(X, labels, folds, "ridge", gpu.ALPHAS, "numpy")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with emulator.FakeCuda() as mode:
        him = gpu.himalaya_ridge(X, labels, splits, gpu.ALPHAS, "torch_cuda")
    assert mode.counts["to_host"] > 0 and mode.counts["non_blocking_to_host"] == 0
    for f in labels:
        assert him[f] == pytest.approx(eng[f], abs=1e-6), f
