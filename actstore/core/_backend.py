"""Array backends: one namespace helper for numpy, torch (CPU/CUDA) and cupy.

Numerical code in :mod:`actstore.probes` never imports a GPU library itself. It asks this
module for the array namespace of its inputs (``xp = get_namespace(X, Y)``) and writes its
algorithm once against that namespace. ``cupy``, ``cuml`` and ``torch.cuda`` are only touched
here. There is no global "current backend": the namespace always follows the data.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_cupy_array, is_torch_array

from actstore._errors import ActstoreError

__all__ = [
    "BACKENDS",
    "DeviceUnavailableError",
    "array_device",
    "check_device",
    "cupy_available",
    "device_of",
    "float64_like",
    "get_namespace",
    "gpu_available",
    "index_on",
    "move_to",
    "spd_solve",
    "to_numpy",
    "unit_minus_gram",
    "zeros_maker",
]

#: Names accepted by ``--device`` and :func:`move_to`.
BACKENDS = ("numpy", "torch", "cuda", "cupy")


class DeviceUnavailableError(ActstoreError, RuntimeError):
    """A backend was asked for that this machine cannot run (no GPU, library missing).

    An :class:`~actstore._errors.ActstoreError`, so the CLI reports it as one line, also on
    a Dask worker without the device.
    """


def get_namespace(*arrays: Any) -> Any:
    """Return the array-API namespace shared by ``arrays``.

    Parameters
    ----------
    *arrays : array-like
        numpy, torch or cupy arrays (``None`` and Python scalars are ignored).

    Raises
    ------
    TypeError
        If the arrays come from different libraries (e.g. a numpy and a torch array): mixing
        them would copy data between devices behind the user's back.
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    if not arrs:
        raise TypeError("get_namespace() needs at least one array")
    kinds = {_kind(a) for a in arrs}
    if len(kinds) > 1:
        raise TypeError(
            f"arrays from different libraries were mixed ({', '.join(sorted(kinds))}); "
            "convert them to one library first (see actstore.probes.move_to)"
        )
    return array_namespace(*arrs)


def _kind(a: Any) -> str:
    if is_torch_array(a):
        return "torch"
    if is_cupy_array(a):
        return "cupy"
    return type(a).__module__.split(".")[0]


def to_numpy(x: Any) -> np.ndarray:
    """Copy any backend array to a host numpy array (a device-to-host sync point)."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def device_of(x: Any) -> str:
    """Return ``"cpu"`` or the device name (``"cuda:0"``) an array lives on."""
    if is_torch_array(x):
        return str(x.device)
    if is_cupy_array(x):
        return f"cuda:{x.device.id}"
    return "cpu"


def cupy_available() -> bool:
    """True when cupy is importable and sees at least one GPU."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def gpu_available() -> bool:
    """True when torch sees a CUDA device or cupy sees a GPU."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True
    return cupy_available()


def check_device(device: str | None) -> None:
    """Refuse an unknown backend name, or one this machine cannot run, before any work.

    Parameters
    ----------
    device : {"numpy", "torch", "cuda", "cupy"} or None
        ``None`` (the data's own backend) and ``"numpy"`` always pass.

    Raises
    ------
    ActstoreError
        Unknown name (listing the valid ones).
    DeviceUnavailableError
        torch is not installed (``torch``, ``cuda``), torch sees no CUDA device (``cuda``), or
        cupy is missing or sees no GPU (``cupy``).
    """
    if device is None or device == "numpy":
        return
    if device not in BACKENDS:
        raise ActstoreError(f"unknown device {device!r}; choose one of {', '.join(BACKENDS)}")
    if device in ("torch", "cuda"):
        if importlib.util.find_spec("torch") is None:
            raise DeviceUnavailableError(
                f"--device {device} needs torch; pip install torch (the CUDA build for a GPU)"
            )
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "--device cuda was asked for, but torch sees no CUDA device (a CPU-only torch "
                "build, or no GPU visible); use --device numpy or torch"
            )
        return
    if importlib.util.find_spec("cupy") is None:
        raise DeviceUnavailableError(
            "--device cupy needs cupy; pip install 'actstore[gpu]', or use --device cuda "
            "(torch)"
        )
    if not cupy_available():
        raise DeviceUnavailableError("--device cupy was asked for, but cupy sees no GPU")


def move_to(x: Any, backend: str, dtype: Any = None) -> Any:
    """Convert a host or device array to ``backend``.

    Parameters
    ----------
    x : array
        Any numpy/torch/cupy array.
    backend : {"numpy", "torch", "cuda", "cupy"}
        ``"torch"`` is torch on the CPU; ``"cuda"`` is torch on the current CUDA device.
    dtype : str, optional
        ``"float32"`` or ``"float64"``; keeps the input's dtype when omitted.

    Raises
    ------
    ActstoreError
        Unknown backend.
    DeviceUnavailableError
        The backend cannot run here (see :func:`check_device`).
    """
    if backend not in BACKENDS:
        raise ActstoreError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "numpy":
        out = to_numpy(x)
        return out if dtype is None else out.astype(dtype, copy=False)
    if backend in ("torch", "cuda"):
        import torch

        if backend == "cuda" and not torch.cuda.is_available():
            check_device("cuda")
        tdtype = None if dtype is None else getattr(torch, str(np.dtype(dtype)))
        if backend == "torch":
            t = x if is_torch_array(x) else _host_tensor(torch, to_numpy(x))
            # a blocking copy: a non-blocking device-to-host copy may be read before it lands
            return t.to(device="cpu", dtype=tdtype)
        if is_torch_array(x):
            t = x
            if t.device.type == "cpu" and not t.is_pinned():
                t = t.pin_memory()
        else:
            host = to_numpy(x)
            # Pinned host memory lets the host-to-device copy overlap with compute; the copy
            # into it is the one host copy this move makes.
            t = torch.empty(host.shape, dtype=_torch_dtype(torch, host.dtype), pin_memory=True)
            t.numpy()[...] = host
        return t.to(device="cuda", dtype=tdtype, non_blocking=True)
    if not cupy_available():
        check_device("cupy")
    import cupy

    out = cupy.asarray(to_numpy(x) if not is_cupy_array(x) else x)
    return out if dtype is None else out.astype(dtype, copy=False)


def _host_tensor(torch: Any, a: np.ndarray) -> Any:
    """A CPU tensor sharing ``a``'s memory where torch can (a copy for read-only arrays)."""
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only memory
        a = a.copy()
    return torch.from_numpy(a)


def _torch_dtype(torch: Any, dt: np.dtype) -> Any:
    return torch.from_numpy(np.empty(0, dtype=dt)).dtype


def unit_minus_gram(A: Any, offset: float) -> Any:
    """``I - offset - A A^T`` for ``A`` of shape (m, k): the upper triangle is exact.

    With numpy the product is one symmetric rank-k update (BLAS ``syrk``, half the work of a
    general product) that fills only the upper triangle, which is all :func:`spd_solve` reads
    there; other backends form the whole matrix.
    """
    xp = get_namespace(A)
    m = A.shape[0]
    if isinstance(A, np.ndarray) and A.dtype == np.float64:
        from scipy.linalg.blas import dsyrk

        c = np.full((m, m), -offset, order="F")
        c[np.diag_indices(m)] += 1.0
        # A.T is Fortran-ordered (k, m): trans=1 gives (A.T)^T A.T = A A^T without a copy
        return dsyrk(-1.0, A.T, beta=1.0, c=c, trans=1, lower=0, overwrite_c=1)
    eye = xp.eye(m, dtype=A.dtype, device=array_device(A))
    return eye - offset - A @ xp.matrix_transpose(A)


def spd_solve(M: Any, B: Any) -> Any:
    """Solve ``M X = B`` for symmetric positive definite ``M`` by Cholesky.

    numpy reads the upper triangle of ``M`` only (see :func:`unit_minus_gram`) and may
    overwrite ``M``. Falls back to a general solve (on the symmetrised matrix) where the
    Cholesky factorisation fails, e.g. when ``M`` is singular to working precision.
    Other backends also take batches (``M`` of shape (..., m, m), ``B`` (..., m, q)) and
    check the factorisations with one device-to-host sync.
    """
    if isinstance(M, np.ndarray):
        from scipy.linalg import LinAlgError, cho_factor, cho_solve

        try:
            return cho_solve(cho_factor(M, lower=False, overwrite_a=False, check_finite=False),
                             B, check_finite=False)
        except LinAlgError:
            U = np.triu(M)
            return np.linalg.solve(U + np.triu(M, 1).T, B)
    if is_torch_array(M):
        import torch

        L, info = torch.linalg.cholesky_ex(M)
        if not bool(torch.any(info != 0)):  # one sync for a whole batch
            return torch.cholesky_solve(B, L)
        return torch.linalg.solve(M, B)
    xp = get_namespace(M)
    return xp.linalg.solve(M, B)


def array_device(x: Any) -> Any:
    """The device object of an array (the array API's ``device(x)``): new arrays made with
    ``device=array_device(x)`` live next to ``x``."""
    from array_api_compat import device

    return device(x)


def float64_like(a: Any, like: Any) -> Any:
    """A host array as float64 on the namespace and device of ``like``."""
    xp = get_namespace(like)
    if xp.__name__.endswith("numpy"):
        return np.asarray(a, dtype=np.float64)
    return xp.asarray(a, dtype=xp.float64, device=array_device(like))


def zeros_maker(like: Any) -> Any:
    """A ``zeros(*shape)`` maker for float64 arrays on the namespace and device of ``like``."""
    xp, dev = get_namespace(like), array_device(like)
    return lambda *shape: xp.zeros(shape, dtype=xp.float64, device=dev)


def index_on(rows: np.ndarray, like: Any) -> Any:
    """Host row indices as an index array for ``like``'s namespace and device."""
    xp = get_namespace(like)
    if xp.__name__.endswith("numpy"):
        return rows
    return xp.asarray(rows, dtype=xp.int64, device=array_device(like))
