"""Every decoder of the registry on every CPU array backend: held-out scores equal the
scikit-learn pipeline (``StandardScaler`` then the model) and do not depend on the scale of the
units; the registry entries agree with ProbeConfig; ProbeConfig's study options and stored
settings."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from references import one_blas_thread  # noqa: F401 (autouse fixture)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from actstore import ActstoreError
from actstore.core import stratified_folds
from actstore.core._backend import BACKENDS
from actstore.decode import DECODERS, ProbeConfig, probe_arrays
from actstore.decode._decoders import default_decoder, scoring_decoder

#: The array backends that run without a GPU.
CPU_BACKENDS = [b for b in BACKENDS if b in ("numpy", "torch")]

#: Each decoder's scikit-learn model (a penalty -> estimator), and how close its held-out
#: accuracy must be: ridge solves in closed form; logistic iterates to a tolerance, so a test
#: sample on the decision boundary may flip (one sample of 40 in one fold of three: 0.0084).
REFERENCE = {
    "ridge": {"categorical": lambda p: RidgeClassifier(alpha=p),
              "continuous": lambda p: Ridge(alpha=p), "atol": 1e-12},
    "logistic": {"categorical": lambda p: LogisticRegression(C=p, tol=1e-10, max_iter=10_000),
                 "atol": 0.0085},
}
SETTINGS = {"tol": 1e-8, "max_iter": 3000, "logistic_dtype": "float64", "extend_grid": 0,
            "n_splits": 3}


def _data(n=120, d=10, classes=3, seed=0):
    """Units of different scales and offsets; a few carry a class and a continuous value."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    X = rng.standard_normal((n, d))
    X[:, :classes] += 0.9 * np.eye(classes)[y]
    c = X[:, 0] - X[:, 1] + 0.5 * rng.standard_normal(n)
    X = X * np.exp(rng.uniform(-4, 3, d)) + rng.uniform(-20, 20, d)
    return X, y, c


def _grid(decoder):
    return (0.1, 10.0) if DECODERS[decoder].penalty == "C" else (1.0, 100.0)


def _config(decoder, backend):
    return ProbeConfig(decoders=(decoder,), device=backend,
                       **{DECODERS[decoder].grid: _grid(decoder)}, **SETTINGS)


def test_every_decoder_has_a_reference():
    assert set(REFERENCE) == set(DECODERS)
    for name, dec in DECODERS.items():
        assert set(dec.kinds) <= {"categorical", "continuous"} and dec.kinds
        assert set(dec.kinds) <= set(REFERENCE[name]), name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_every_decoder_equals_the_scikit_learn_pipeline(decoder, backend):
    X, y, c = _data()
    labels = {"y": y, "c": c} if "continuous" in DECODERS[decoder].kinds else {"y": y}
    ds = probe_arrays(X, labels, _config(decoder, backend))
    folds = stratified_folds(len(y), 3, seed=0, stratify={"y": y})
    ref = REFERENCE[decoder]
    path = ds[f"{decoder}_score"]  # (penalty, feature)
    for i, p in enumerate(_grid(decoder)):
        acc, r2 = [], []
        for tr, te in folds.split():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = make_pipeline(StandardScaler(), ref["categorical"](p)).fit(X[tr], y[tr])
            acc.append(np.mean(m.predict(X[te]) == y[te]))
            if "c" in labels:
                reg = make_pipeline(StandardScaler(), ref["continuous"](p)).fit(X[tr], c[tr])
                r2.append(r2_score(c[te], reg.predict(X[te])))
        assert float(path.sel(feature="y")[i]) == pytest.approx(np.mean(acc), abs=ref["atol"])
        if r2:
            assert float(path.sel(feature="c")[i]) == pytest.approx(np.mean(r2), rel=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_every_decoder_does_not_depend_on_the_scale_of_the_units(decoder, backend):
    X, y, _ = _data(seed=1)
    config = _config(decoder, backend)
    ref = probe_arrays(X, {"y": y}, config)[f"{decoder}_score"].values
    rng = np.random.default_rng(2)
    perm = rng.permutation(X.shape[1])
    scaled = (X * np.exp(rng.uniform(-8, 8, X.shape[1])))[:, perm]  # each unit its own scale
    got = probe_arrays(scaled, {"y": y}, config)[f"{decoder}_score"].values
    np.testing.assert_allclose(got, ref, atol=0.0085)


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_every_entry_names_its_grid_and_settings_in_probe_config(decoder):
    dec = DECODERS[decoder]
    config = ProbeConfig()
    assert config.penalties(decoder) == dec.default_grid == getattr(config, dec.grid)
    assert dec.option == f"--{dec.grid.lower()}"
    assert set(dec.settings) <= set(ProbeConfig.RESULT_KEYS)
    # the penalty grid is refused as every grid is
    with pytest.raises(ActstoreError, match=f"{dec.grid} must be positive numbers"):
        ProbeConfig(**{dec.grid: (0.0,)})


def test_summaries_show_the_headline_decoder_and_fall_back_by_kind():
    assert default_decoder(["ridge", "logistic"]) == "logistic"
    assert default_decoder(["ridge"]) == "ridge"
    assert scoring_decoder(["ridge", "logistic"], "logistic", "continuous") == "ridge"
    assert scoring_decoder(["logistic", "ridge"], "logistic", "continuous") == "ridge"
    assert scoring_decoder(["ridge", "logistic"], "logistic", "categorical") == "logistic"


def test_from_options_takes_the_keys_of_a_study_file():
    config = ProbeConfig.from_options({"decoders": ["ridge"], "folds": 3, "seed": 2,
                                       "alphas": [1.0, 10.0], "standardize": False})
    assert config == ProbeConfig(decoders=("ridge",), n_splits=3, seed=2, alphas=(1.0, 10.0),
                                 standardize=False)
    assert ProbeConfig.from_options({"decoders": "ridge, logistic"}).decoders == (
        "ridge", "logistic")
    assert ProbeConfig.from_options({}) == ProbeConfig()
    # the selection is the driver's, not a setting
    assert ProbeConfig.from_options({"layers": "all", "runs": ["r0"]}) == ProbeConfig()
    with pytest.raises(ActstoreError, match=r"unknown option 'folds_' of the probe analysis; "
                                            r"options: decoders, folds, alphas"):
        ProbeConfig.from_options({"folds_": 3})
    with pytest.raises(ActstoreError, match="unknown decoder 'svm'"):
        ProbeConfig.from_options({"decoders": ["svm"]})


def test_to_json_is_the_stored_settings():
    config = ProbeConfig(decoders=("ridge",), n_splits=3, device="torch", cache_mb=1.0)
    stored = config.to_json()
    assert json.loads(json.dumps(stored)) == stored
    assert set(stored) == set(ProbeConfig.RESULT_KEYS)  # not device nor cache_mb
    assert stored["decoders"] == ["ridge"] and stored["n_splits"] == 3
    rebuilt = ProbeConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in stored.items()})
    assert rebuilt.key() == config.key()
