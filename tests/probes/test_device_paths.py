"""GPU code paths without a GPU: device checks, one-line errors, and an emulated CUDA device.

The ``fake_cuda`` fixture makes torch report a CUDA device and keeps "CUDA" tensors as CPU
tensors marked as such. Like a real GPU it refuses operations that mix them with host tensors
or numpy arrays, and ``.numpy()`` of them; it counts device-to-host copies and syncs, and
flags non-blocking copies to the host (read before they land on a real GPU). The numbers are
the CPU's, so every result is compared with numpy.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest
import torch
from stores import error_line
from torch.overrides import TorchFunctionMode
from typer.testing import CliRunner

from actstore import Execution
from actstore._errors import ActstoreError
from actstore.cli import app
from actstore.core._backend import (
    DeviceUnavailableError,
    check_device,
    move_to,
    spd_solve,
    to_numpy,
)
from actstore.probes import (
    gradient_x_activation,
    linear_importance,
    nmf,
    probe_arrays,
    similarity_matrix,
    stratified_folds,
    variance_explained,
    write_synthetic_store,
)

runner = CliRunner()

_SYNCS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist"}
_FREE = {"__getitem__", "__setitem__", "copy_", "to", "cpu", "cuda", "clone", "detach",
         "pin_memory", "is_pinned", "__array__", "numpy", "__get__", "__repr__", "__format__"}


def _fake(t: object) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, "_on_fake_cuda", False)


def _mark(out: object) -> object:
    if isinstance(out, torch.Tensor):
        out._on_fake_cuda = True  # type: ignore[attr-defined]
    elif isinstance(out, (tuple, list)):
        for o in out:
            _mark(o)
    return out


def _cuda(d: object) -> bool:
    return (isinstance(d, str) and d.startswith("cuda")) or (
        isinstance(d, torch.device) and d.type == "cuda")


def _target(args: tuple, kwargs: dict) -> object:
    if "device" in kwargs:
        return kwargs["device"]
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            return a
    return None


class FakeCuda(TorchFunctionMode):
    """The emulated device (see the module docstring); ``counts`` holds what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        me = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name == "__get__" and me is not None:
            prop = getattr(func, "__self__", None)
            if prop is torch.Tensor.device:
                return torch.device("cuda", 0) if _fake(me) else torch.device("cpu")
            if prop is torch.Tensor.is_cuda:
                return _fake(me)
            out = func(*args, **kwargs)
            return _mark(out) if _fake(me) and isinstance(out, torch.Tensor) else out
        if _fake(me) and name in ("numpy", "__array__"):
            raise TypeError("can't convert cuda:0 device type tensor to numpy")
        if _fake(me) and name in _SYNCS:
            self.counts["sync"] += 1
            return func(*args, **kwargs)
        kwargs.pop("pin_memory", None)
        if name == "is_pinned":
            return False
        if name == "pin_memory":
            return me.clone()
        target = _target(args, kwargs) if name == "to" else None
        if name == "cpu" or (target is not None and not _cuda(target)):
            out = func(*args, **kwargs)
            if _fake(me):
                self.counts["to_host"] += 1
                if kwargs.get("non_blocking"):
                    self.counts["non_blocking_to_host"] += 1
                out = out.clone()
                out._on_fake_cuda = False
            return out
        if name == "to" and _cuda(target):
            args = tuple("cpu" if _cuda(a) else a for a in args)
            kwargs = {k: ("cpu" if k == "device" else v) for k, v in kwargs.items()}
            out = func(*args, **kwargs)
            return _mark(out.clone() if out is me else out)
        if _cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor) and any(
                    isinstance(a, (np.ndarray, torch.Tensor)) for a in args):
                out = out.clone()  # a device copy shares no memory with its source
            return _mark(out)
        flat = [x for a in (*args, *kwargs.values())
                for x in (a if isinstance(a, (list, tuple)) else (a,))]
        if any(_fake(x) for x in flat):
            if name not in _FREE:
                for x in flat:
                    if isinstance(x, np.ndarray) or (
                            isinstance(x, torch.Tensor) and not _fake(x) and x.dim() > 0):
                        raise RuntimeError(f"{name}: expected all tensors on cuda:0, found "
                                           f"a {type(x).__name__} on the host")
            return _mark(func(*args, **kwargs))
        return func(*args, **kwargs)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    mode = FakeCuda()
    with mode:
        yield mode
    assert mode.counts["non_blocking_to_host"] == 0


def _data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    a, b = np.arange(n) % 3, rng.integers(0, 4, n)
    X[:, 0] += a
    X[:, 1] += 0.5 * b
    return X, {"a": a, "b": b, "z": X[:, 2] + 0.3 * rng.standard_normal(n)}


# -- device checks and one-line errors ---------------------------------------------------------


def test_check_device_names_and_availability(monkeypatch):
    check_device(None)
    check_device("numpy")
    check_device("torch")
    with pytest.raises(ActstoreError, match="unknown device 'tpu'; choose one of numpy"):
        check_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="torch sees no CUDA device") as e:
        check_device("cuda")
    # one line in the CLI (an ActstoreError), and still a RuntimeError for callers
    assert isinstance(e.value, ActstoreError) and isinstance(e.value, RuntimeError)
    with pytest.raises(DeviceUnavailableError, match="torch sees no CUDA device"):
        move_to(np.zeros(3), "cuda")
    with pytest.raises(ActstoreError, match="unknown backend 'gpu'"):
        move_to(np.zeros(3), "gpu")


def test_cupy_without_cupy_is_refused():
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed")
    with pytest.raises(DeviceUnavailableError, match="--device cupy needs cupy"):
        check_device("cupy")
    with pytest.raises(DeviceUnavailableError, match="--device cupy needs cupy"):
        move_to(np.zeros(3), "cupy")


@pytest.fixture
def store(tmp_path):
    url = str(tmp_path / "d.zarr")
    write_synthetic_store(url, n_runs=1, steps=[0, 10], widths=[5, 8], n=60,
                          features={"shape": 3, "color": 2})
    return url



@pytest.mark.parametrize("cmd", ["probe", "similarity"])
@pytest.mark.parametrize("torch_cuda", [False, True])
def test_unusable_devices_are_one_line_errors(store, cmd, torch_cuda, monkeypatch):
    import importlib.util

    # with torch seeing a GPU, --device cupy must still be refused when cupy is missing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_cuda)
    extra = ["--png", "none"] if cmd == "similarity" else ["--decoders", "ridge"]
    devices = ["tpu"] + ([] if torch_cuda else ["cuda"])
    if importlib.util.find_spec("cupy") is None:
        devices.append("cupy")
    for dev in devices:
        line = error_line(runner.invoke(app, [cmd, store, "--device", dev, *extra]))
        assert f"'{dev}'" in line or f"--device {dev}" in line


def test_run_probes_refuses_a_missing_gpu_before_writing(store, monkeypatch):
    from actstore.probes import ProbeConfig, run_probes
    from actstore.store import open_store

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = open_store(store).result_names()
    with pytest.raises(DeviceUnavailableError, match="torch sees no CUDA device"):
        run_probes(store, config=ProbeConfig(decoders=("ridge",), device="cuda"),
                   execution=Execution(workers=1))
    assert open_store(store).result_names() == before


def test_run_probes_drives_one_gpu_from_this_process(store, fake_cuda, monkeypatch):
    """A GPU device without a scheduler or a worker count runs every job here (local worker
    processes would all share one GPU); with a worker count the jobs go to a cluster."""
    import actstore.decode._engine as eng
    from actstore.probes import ProbeConfig, run_probes

    class Connected(Exception):
        pass

    def connect(execution):
        raise Connected(execution)

    monkeypatch.setattr(eng, "connect", connect)
    cfg = ProbeConfig(decoders=("ridge",), n_splits=3, alphas=(1.0, 100.0), device="cuda")
    ds = run_probes(store, name="gpu", config=cfg)
    ref = run_probes(store, name="cpu", config=ProbeConfig(decoders=("ridge",), n_splits=3,
                                                           alphas=(1.0, 100.0)),
                     execution=Execution(workers=1))
    np.testing.assert_allclose(ds.accuracy.values, ref.accuracy.values, atol=1e-12)
    with pytest.raises(Connected):
        run_probes(store, name="gpu2", config=cfg, execution=Execution(workers=2))


# -- moving arrays -------------------------------------------------------------------------------


def test_move_to_torch_of_read_only_memory_copies_without_a_warning():
    X = np.arange(6.0).reshape(2, 3)
    X.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = move_to(X, "torch")
    assert np.array_equal(t.numpy(), X)
    t += 1  # its own memory
    assert X[0, 0] == 0.0


def test_moves_to_and_from_the_device(fake_cuda):
    X = np.arange(12.0).reshape(3, 4)
    t = move_to(X, "cuda", dtype="float32")
    assert str(t.device) == "cuda:0" and t.dtype == torch.float32
    X[0, 0] = 99.0  # the device copy is its own memory
    assert float(t[0, 0]) == 0.0
    back = move_to(t, "torch")  # a blocking copy (the fixture refuses non-blocking ones)
    assert back.device.type == "cpu" and back.numpy()[1, 1] == 5.0
    assert np.array_equal(to_numpy(t), move_to(t, "numpy"))
    assert str(move_to(t, "cuda").device) == "cuda:0"
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor"):
        np.asarray(t)  # the emulation refuses what a GPU refuses


@pytest.mark.parametrize("batch", [(), (3,)])
def test_spd_solve_takes_batches_with_the_fallback(batch):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((*batch, 6, 9)) * 0.1
    M = np.eye(6) - 0.01 - A @ np.swapaxes(A, -1, -2)
    B = rng.standard_normal((*batch, 6, 2))
    if batch:
        M[1] = np.diag([1.0, -2.0, 3.0, 1.0, 1.0, 1.0])  # one member is not positive definite
    got = to_numpy(spd_solve(torch.from_numpy(M), torch.from_numpy(B)))
    np.testing.assert_allclose(got, np.linalg.solve(M, B), rtol=1e-10, atol=1e-12)


# -- numerical code on the emulated device -------------------------------------------------------


@pytest.mark.parametrize("n, d, K, form, decoders", [
    (240, 12, 4, "primal", ("ridge", "logistic")), (90, 150, 3, "dual", ("ridge", "logistic")),
    (600, 260, 20, "lgo", ("ridge",))])
def test_probe_arrays_on_cuda_match_numpy(fake_cuda, n, d, K, form, decoders):
    X, labels = _data(n, d)
    std = form != "lgo"  # the leave-group-out form exists for raw units only
    ref = probe_arrays(X, labels, n_splits=K, decoders=decoders, standardize=std)
    assert ref.attrs["form"] == form
    X32 = move_to(X.astype(np.float32), "cuda")
    for got in (probe_arrays(X, labels, n_splits=K, decoders=decoders, device="cuda",
                             standardize=std),
                probe_arrays(X32, labels, n_splits=K, decoders=decoders, standardize=std)):
        assert got.attrs["form"] == form
        r2 = got.r2.sel(decoder="ridge").values
        np.testing.assert_allclose(r2, ref.r2.sel(decoder="ridge").values, atol=1e-5)
        assert np.nanmax(np.abs(got.accuracy.values - ref.accuracy.values)) <= 0.03


def test_leave_group_out_checks_each_fold_once_not_each_penalty(fake_cuda):
    from actstore.probes import ArraySource, CachedSource, encode_targets, ridge_cv

    X, labels = _data(400, 30)
    T = encode_targets({"a": labels["a"]})
    folds = stratified_folds(400, 10, 0)
    alphas = np.logspace(-2, 4, 13)
    ref = ridge_cv(ArraySource(X, 64), T, folds, alphas, form="lgo", standardize=False)
    src = CachedSource(ArraySource(X, 64), backend="cuda")
    before = fake_cuda.counts["sync"]
    got = ridge_cv(src, T, folds, alphas, form="lgo", standardize=False)
    # one factorisation check per fold; a check per fold and penalty would be 130
    assert fake_cuda.counts["sync"] - before <= 3 * folds.n_splits
    np.testing.assert_allclose(got["r2"], ref["r2"], rtol=1e-8, atol=1e-10)


def test_device_blocks_are_checked_for_nan_on_the_device(fake_cuda):
    from actstore.probes import ArraySource, CachedSource

    X = move_to(np.ones((50, 4)), "cuda")
    src = CachedSource(ArraySource(X, 16))
    list(src.blocks())
    assert fake_cuda.counts["to_host"] == 0  # no host copy of the data to look for NaN
    X[7, 2] = float("nan")
    with pytest.raises(ActstoreError, match="first in sample row 7"):
        list(CachedSource(ArraySource(X, 16)).blocks())


CASES = [("cka", {}), ("cka", {"debiased": True}), ("rbf_cka", {"t": 0.8}),
         ("rsa", {"rdm": "correlation", "compare": "spearman"}),
         ("rsa", {"rdm": "euclidean", "compare": "pearson"}), ("procrustes", {})]


@pytest.mark.parametrize("metric, params", CASES)
def test_similarity_on_cuda_matches_numpy(fake_cuda, metric, params):
    rng = np.random.default_rng(2)
    reps = [rng.standard_normal((30, d)) for d in (4, 7, 9)]
    ref = similarity_matrix(reps, metric, **params).values
    got = similarity_matrix(reps, metric, device="cuda", max_memory=20_000, **params).values
    np.testing.assert_allclose(got, ref, atol=1e-10)
    f32 = [move_to(r.astype(np.float32), "cuda") for r in reps]
    np.testing.assert_allclose(similarity_matrix(f32, metric, **params).values, ref, atol=1e-5)


def test_feature_path_syncs_once_per_block_not_per_pair(fake_cuda):
    rng = np.random.default_rng(3)
    M = 10
    reps = [rng.standard_normal((40, 5)) for _ in range(M)]
    ref = similarity_matrix(reps, "procrustes", method="feature").values
    before = fake_cuda.counts["sync"] + fake_cuda.counts["to_host"]
    got = similarity_matrix(reps, "procrustes", method="feature", device="cuda").values
    # a few per representation (finite check, degeneracy, norm); 55 pairs are one copy
    assert fake_cuda.counts["sync"] + fake_cuda.counts["to_host"] - before <= 3 * M + 3
    np.testing.assert_allclose(got, ref, atol=1e-10)


def test_nmf_and_variance_on_cuda_match_numpy(fake_cuda):
    rng = np.random.default_rng(4)
    A = np.abs(rng.standard_normal((120, 10)))
    ref = nmf(A, 3, seed=1, max_epochs=20)
    got = nmf(A, 3, seed=1, max_epochs=20, backend="cuda")
    np.testing.assert_allclose(got.codes, ref.codes, rtol=1e-8, atol=1e-10)
    X, labels = _data(150, 9)
    folds = stratified_folds(150, 3, 0, {"a": labels["a"]})
    want = variance_explained(X, labels, folds)["r2"]
    np.testing.assert_allclose(variance_explained(X, labels, folds, backend="cuda")["r2"],
                               want, rtol=1e-9)


def test_gradient_x_activation_runs_where_the_head_is(fake_cuda):
    rng = np.random.default_rng(5)
    Z, D = np.abs(rng.standard_normal((40, 3))), np.abs(rng.standard_normal((3, 6)))
    W, y = rng.standard_normal((4, 6)), rng.integers(0, 4, 40)
    Wd = move_to(W, "cuda")

    class Head:
        def parameters(self):
            return [Wd]

        def __call__(self, h):
            return h @ Wd.T

    got = gradient_x_activation(Head(), Z, D, y)
    np.testing.assert_allclose(got, linear_importance(Z, D, W, y)["importance"], atol=1e-12)
