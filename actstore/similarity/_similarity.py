"""All-pairs similarity of representations: the SIMILARITIES registry and the blocked engine.

Every metric turns a representation into a signature once (:mod:`._signatures`); the M x M
similarity matrix is then a Gram matrix of signatures, computed block by block:

*Gram path* — stimuli are cut into blocks ``r0:r1``; each representation contributes the strip
``S[r0:r1, r0:]`` of its n x n signature; for all representations at once,
``G += SQ SQ^T + 2 RT RT^T`` where ``SQ`` stacks the square parts and ``RT`` the right parts of
the strips (the factor 2 counts the mirror image below the diagonal). Memory is bounded by
``max_memory``: stimulus blocks shrink as M grows, and representations are taken in blocks of
pairs when they do not fit at once. Cost: ``sum_i n^2 d_i / 2`` to form strips plus
``M^2 n^2 / 4`` for the products.

*Feature path* — when a metric has a feature-space form ``F`` (linear CKA, Procrustes), the
cross products ``F_i^T F_j`` are formed for blocks of representations and reduced per pair
(``||.||_F^2`` for CKA, nuclear norm for Procrustes). Cost ``n (sum_i d_i)^2 / 2``: cheaper
when n is large and the widths small. ``method="auto"`` picks the cheaper path.

All sums are accumulated in float64, whatever the storage dtype. Numerical work follows the
array namespace of the data (numpy, torch CPU/CUDA, cupy); ``device=`` moves the data first.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstore._args import as_mapping
from actstore._errors import ActstoreError
from actstore.core._backend import get_namespace, move_to, to_numpy
from actstore.core._reprs import short_list
from actstore.similarity._rdm import RDM_COMPARES, RDM_KINDS, rsa_signature
from actstore.similarity._signatures import (
    Signature,
    cka_signature,
    procrustes_signature,
    rbf_cka_signature,
)

__all__ = [
    "METRIC_PARAMS",
    "SIMILARITIES",
    "LazyRep",
    "SimilarityResult",
    "check_params",
    "plan_similarity",
    "similarity",
    "similarity_matrix",
]

#: name -> signature factory. Adding a metric: one factory function + one line here.
SIMILARITIES: dict[str, Callable[..., Signature]] = {
    "cka": cka_signature,
    "rbf_cka": rbf_cka_signature,
    "rsa": rsa_signature,
    "procrustes": procrustes_signature,
}



@dataclass(frozen=True)
class Param:
    """What a metric parameter accepts (see :data:`METRIC_PARAMS` and :func:`check_params`).

    ``kind`` is ``"bool"`` (true/false, also yes/no, on/off, 1/0 as text), ``"positive"``
    (a finite number > 0, as a float) or ``"choice"`` (one of ``choices``, any case).
    """

    kind: str
    choices: tuple[str, ...] = ()
    example: str = ""

    def describe(self) -> str:
        """What the parameter accepts, in words."""
        if self.kind == "bool":
            return "true or false (also yes/no, on/off, 1/0)"
        if self.kind == "positive":
            return "a positive number"
        return f"one of {', '.join(self.choices)}"


_BOOL = Param("bool", example="true")

#: name -> {parameter -> what it accepts}: one entry per metric of :data:`SIMILARITIES`, with
#: the keyword arguments of its factory (a test checks that the two agree).
METRIC_PARAMS: dict[str, dict[str, Param]] = {
    "cka": {"debiased": _BOOL},
    "rbf_cka": {"t": Param("positive", example="0.5"), "debiased": _BOOL},
    "rsa": {"rdm": Param("choice", RDM_KINDS, "euclidean"),
            "compare": Param("choice", RDM_COMPARES, "spearman")},
    "procrustes": {},
}

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _convert(spec: Param, value: Any) -> Any:
    """``value`` as the canonical type of ``spec`` (bool, float, str), or None if it is none."""
    if spec.kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
            return value.strip().lower() in _TRUE
        return None
    if spec.kind == "positive":
        if isinstance(value, (bool, np.bool_)):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None
        if not isinstance(value, (int, float, np.integer, np.floating)):
            return None
        v = float(value)
        return v if math.isfinite(v) and v > 0 else None
    if isinstance(value, str):
        low = value.strip().lower()
        return next((c for c in spec.choices if c.lower() == low), None)
    return None


def check_params(metric: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters of ``metric`` checked and converted to their canonical types.

    Booleans accept ``True``/``False`` and, case-insensitively, the text ``true``/``false``,
    ``yes``/``no``, ``on``/``off``, ``1``/``0`` (as given on the command line); numbers accept
    numbers and numeric text; choices accept their names in any case.

    Returns
    -------
    dict
        The given parameters (not the defaults) as bool, float or str.

    Raises
    ------
    ActstoreError
        Unknown metric or parameter name (the message lists the valid ones), or a value of
        the wrong type or range (the message names the parameter, the value and what it
        accepts).
    """
    params = as_mapping(params or {}, "params", "e.g. {'debiased': True}")
    _factory(metric, params)
    specs = METRIC_PARAMS.get(metric, {})
    out: dict[str, Any] = {}
    for key, value in params.items():
        spec = specs.get(key)
        if spec is None:
            out[key] = value
            continue
        conv = _convert(spec, value)
        if conv is None:
            todo = (f"choose one of {', '.join(spec.choices)}" if spec.kind == "choice"
                    else f"give e.g. {key}={spec.example}")
            raise ActstoreError(
                f"{key} must be {spec.describe()}, got {value!r} (parameter of metric "
                f"{metric!r}); {todo}"
            )
        out[key] = conv
    return out


#: Default working-memory budget of one similarity computation (bytes).
DEFAULT_MEMORY = 2 * 2**30

#: Keyword arguments of factories that the engine sets itself.
_ENGINE_ARGS = ("idx", "chunks")


@dataclass(frozen=True)
class LazyRep:
    """A representation that is read only when the engine needs it.

    Parameters
    ----------
    shape : tuple of int
        ``(n_stimuli, n_units)`` of the array that ``load`` returns.
    load : callable
        Returns the activations, an array of shape ``shape`` (any dtype, any backend).
    name : str
        Used in error messages and results.
    """

    shape: tuple[int, int]
    load: Callable[[], Any]
    name: str = ""


@dataclass
class SimilarityResult:
    """An M x M similarity matrix and how it was computed.

    Attributes
    ----------
    values : ndarray of shape (M, M), float64
        Symmetric; 1 on the diagonal except for degenerate representations, whose row and
        column are 0.
    degenerate : ndarray of shape (M,), bool
        Representations without variation (constant units, a zero-variance RDM, a
        non-positive unbiased HSIC with themselves).
    metric : str
        Registry name.
    params : dict
        Metric parameters.
    method : {"gram", "feature"}
        Path the engine took.
    names : list of str
        One per representation.
    """

    values: np.ndarray
    degenerate: np.ndarray
    metric: str
    params: dict[str, Any]
    method: str
    names: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params.items())
        text = (f"SimilarityResult(metric={self.metric!r}, M={len(self.values)}, "
                f"method={self.method!r}, degenerate={int(self.degenerate.sum())}{params}")
        if len(text) > 140:
            text = text[:137] + "..."
        names = f", names={short_list(self.names, 2)}" if self.names else ""
        return f"{text}{names})"


@dataclass
class Plan:
    """How an all-pairs computation is cut into blocks (see :func:`plan_similarity`)."""

    method: str
    n: int
    chunks: list[tuple[int, int]]
    blocks: list[list[int]]
    cost: dict[str, float]

    def block_pairs(self) -> list[tuple[int, int]]:
        """Index pairs ``(a, b)``, ``a <= b``, of :attr:`blocks` that cover the upper triangle."""
        nb = len(self.blocks)
        return [(a, b) for a in range(nb) for b in range(a, nb)]


def _factory(metric: str, params: dict[str, Any]) -> Callable[..., Signature]:
    try:
        fn = SIMILARITIES[metric]
    except KeyError:
        raise ActstoreError(
            f"unknown similarity metric {metric!r}; choose one of {', '.join(sorted(SIMILARITIES))}"
        ) from None
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("X", *_ENGINE_ARGS)]
    bad = [p for p in params if p not in allowed]
    if bad:
        raise ActstoreError(
            f"metric {metric!r} has no parameter {bad[0]!r}; its parameters are: "
            f"{', '.join(allowed) or '(none)'}"
        )
    return fn


def _build(fn: Callable[..., Signature], X: Any, params: dict, idx: Any, chunks: list) -> Signature:
    kw = dict(params)
    accepted = inspect.signature(fn).parameters
    if "idx" in accepted:
        kw["idx"] = None if idx is None else _index(idx, X, get_namespace(X))
    if "chunks" in accepted:
        kw["chunks"] = chunks
    return fn(X, **kw)


def _forms(fn: Callable[..., Signature], params: dict) -> tuple[bool, bool]:
    """(has Gram form, has feature form) of a metric, from a signature of a tiny array."""
    probe = np.random.default_rng(0).normal(size=(6, 3))
    sig = _build(fn, probe, params, None, [(0, 6)])
    return sig.has_strips, sig.features() is not None


def check_reps(reps: Any, names: Sequence[str] | None) -> list[Any]:
    """``reps`` as a list of arrays (nested lists become numpy arrays), with as many
    ``names``; anything else is one :class:`ActstoreError`."""
    if hasattr(reps, "shape") and len(reps.shape) == 2:
        raise ActstoreError(
            f"reps is one array of shape {tuple(reps.shape)}; give a list of representations "
            "[X1, X2, ...], each of shape (n_stimuli, n_units)"
        )
    if isinstance(reps, (str, bytes, dict)) or not hasattr(reps, "__iter__"):
        raise ActstoreError(
            f"reps must be a list of arrays of shape (n_stimuli, n_units), not "
            f"{type(reps).__name__}"
        )
    out = [np.asarray(r) if isinstance(r, (list, tuple)) else r for r in reps]
    for i, r in enumerate(out):
        if not hasattr(r, "shape"):
            raise ActstoreError(
                f"representation #{i} is a {type(r).__name__}; give arrays of shape "
                "(n_stimuli, n_units) (numpy, torch, cupy or Dask)"
            )
    if names is not None:
        if isinstance(names, str) or len(names) != len(out):
            raise ActstoreError(
                f"names must be a list of {len(out)} str, one per representation; got "
                f"{names!r}"
            )
    return out


def _shapes(reps: Sequence[Any], names: Sequence[str] | None) -> tuple[list, list[str]]:
    shapes, labels = [], []
    for i, r in enumerate(reps):
        shape = tuple(r.shape)
        if len(shape) < 2:
            raise ActstoreError(
                f"representation {_name(r, names, i)!r} has shape {shape}; "
                "expected (n_stimuli, n_units)"
            )
        shapes.append((int(shape[0]), int(np.prod(shape[1:]))))
        labels.append(_name(r, names, i))
    if not shapes:
        raise ActstoreError("no representations were given; select at least one")
    n0 = shapes[0][0]
    for (n, _), lab in zip(shapes, labels, strict=True):
        if n != n0:
            raise ActstoreError(
                f"representations {labels[0]!r} ({n0} stimuli) and {lab!r} ({n} stimuli) "
                "were recorded on different stimulus sets; select representations of one probe set"
            )
    return shapes, labels


#: What each array library's arrays are called in messages.
_KIND_WORDS = {"numpy": "numpy arrays", "torch": "torch tensors", "cupy": "cupy arrays"}


def _library(x: Any) -> str | None:
    """``numpy``, ``torch`` or ``cupy`` for an array (Dask, lists: numpy), None if lazy."""
    from array_api_compat import is_cupy_array, is_torch_array

    if isinstance(x, LazyRep) or (callable(x) and not hasattr(x, "shape")):
        return None
    if is_torch_array(x):
        return "torch"
    if is_cupy_array(x):
        return "cupy"
    return "numpy"


def _mixed_error(first: dict[str, int], labels: Sequence[str]) -> ActstoreError:
    def which(i: int) -> str:
        return f"#{i}" if labels[i] == f"#{i}" else f"#{i} {labels[i]!r}"

    parts = [f"{_KIND_WORDS[k]} (first: {which(i)})"
             for k, i in sorted(first.items(), key=lambda kv: kv[1])]
    return ActstoreError(
        f"the representations mix {' and '.join(parts)}; give them all as one kind "
        "(e.g. torch.as_tensor(x) or t.cpu().numpy()), or pass device='numpy', 'torch', "
        "'cuda' or 'cupy' to move them all to one backend"
    )


def check_libraries(reps: Sequence[Any], labels: Sequence[str], device: str | None) -> None:
    """Refuse representations from different array libraries (unless ``device`` moves all).

    Raises
    ------
    ActstoreError
        Naming the first representation of each library.
    """
    if device is not None:
        return
    first: dict[str, int] = {}
    for i, r in enumerate(reps):
        kind = _library(r)
        if kind is not None:
            first.setdefault(kind, i)
    if len(first) > 1:
        raise _mixed_error(first, labels)


def check_idx(idx: Any, n: int) -> np.ndarray | None:
    """A stimulus resample as a 1-D int64 array of ``n`` indices in ``[0, n)``.

    Raises
    ------
    ActstoreError
        ``idx`` that is not 1-D, not of length ``n``, not integers, or out of range.
    """
    if idx is None:
        return None
    arr = to_numpy(idx) if hasattr(idx, "shape") else np.asarray(idx)
    todo = "give one row of actstore.probes.bootstrap_indices(n_stimuli, ...)"
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ActstoreError(
            f"idx must be a 1-D array of {n} stimulus indices (one per stimulus), got shape "
            f"{tuple(arr.shape)}; {todo}"
        )
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise ActstoreError(f"idx must hold integers, got dtype {arr.dtype}; {todo}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ActstoreError(
            f"idx holds {bad}, outside [0, {n}) for {n} stimuli (negative indices are not "
            f"counted from the end); {todo}"
        )
    return arr.astype(np.int64)


def _name(r: Any, names: Sequence[str] | None, i: int) -> str:
    if names is not None:
        return str(names[i])
    return getattr(r, "name", "") or f"#{i}"


def _stimulus_chunks(n: int, entries: float) -> list[tuple[int, int]]:
    """Stimulus blocks whose strips ``h x (n - r0)`` hold about ``entries`` values each."""
    chunks, r0 = [], 0
    while r0 < n:
        h = max(1, min(n - r0, int(entries // max(1, n - r0))))
        chunks.append((r0, r0 + h))
        r0 += h
    return chunks


def plan_similarity(
    shapes: Sequence[tuple[int, int]],
    metric: str = "cka",
    *,
    method: str = "auto",
    max_memory: int = DEFAULT_MEMORY,
    **params: Any,
) -> Plan:
    """Choose the path (Gram or feature space), stimulus blocks and representation blocks.

    Parameters
    ----------
    shapes : sequence of (int, int)
        ``(n_stimuli, n_units)`` of each representation (one n for all).
    metric : str
        Registry name.
    method : {"auto", "gram", "feature"}
        Force a path, or take the cheaper one the metric has.
    max_memory : int
        Working-memory budget in bytes.

    Returns
    -------
    Plan
    """
    params = check_params(metric, params)
    fn = _factory(metric, params)
    has_gram, has_feat = _forms(fn, params)
    n = shapes[0][0]
    widths = [d for _, d in shapes]
    M = len(widths)
    D = float(sum(widths))
    cost = {
        "gram": sum(n * n * d / 2 for d in widths) + M * M * n * n / 4 if has_gram else math.inf,
        "feature": n * D * D / 2 if has_feat else math.inf,
    }
    if method == "auto":
        method = "gram" if cost["gram"] <= cost["feature"] else "feature"
    elif method not in ("gram", "feature"):
        raise ActstoreError(f"unknown method {method!r}; choose auto, gram or feature")
    if cost[method] == math.inf:
        raise ActstoreError(f"metric {metric!r} has no {method}-space form; use method='auto'")
    # A built signature keeps the centred float64 activations (Spearman RSA: its rank strips).
    per_rep = [n * d * 8 + (n * n * 8 if params.get("compare") == "spearman" else 0)
               for d in widths]
    if method == "feature":
        # Concatenated features of two blocks plus their cross products must fit.
        per_rep = [n * d * 8 * 2 for d in widths]
    blocks = _group(per_rep, widths, max_memory, method)
    bmax = max(len(b) for b in blocks)
    # What the representations of the (at most two) blocks in memory leave of the budget goes
    # to the stacked strip buffers: taller stimulus blocks make larger, faster products.
    held = sorted((sum(per_rep[i] for i in b) for b in blocks), reverse=True)[:2]
    spare = max(max_memory - sum(held), max_memory // 4)
    entries = spare / (8 * bmax * (1 if len(blocks) == 1 else 2))
    chunks = _stimulus_chunks(n, max(n, entries)) if method == "gram" else [(0, n)]
    return Plan(method=method, n=n, chunks=chunks, blocks=blocks, cost=cost)


def _group(per_rep: list[int], widths: list[int], budget: int, method: str) -> list[list[int]]:
    if sum(per_rep) <= budget / 2:
        if method == "gram" or float(sum(widths)) ** 2 * 8 <= budget / 2:
            return [list(range(len(per_rep)))]
    blocks: list[list[int]] = [[]]
    size = width = 0
    for i, (b, d) in enumerate(zip(per_rep, widths, strict=True)):
        over = size + b > budget / 4
        if method == "feature":
            over = over or (width + d) ** 2 * 8 > budget / 4
        if blocks[-1] and over:
            blocks.append([])
            size = width = 0
        blocks[-1].append(i)
        size += b
        width += d
    return blocks


def load_rep(rep: Any, device: str | None, idx: np.ndarray | None, name: str) -> Any:
    """Read one representation as a float64 (n, units) array of the chosen backend."""
    arr = rep.load() if isinstance(rep, LazyRep) else rep() if callable(rep) else rep
    if type(arr).__module__.split(".")[0] == "dask":
        arr = arr.compute()  # the engine holds each representation in memory anyway
    if device is not None:
        X = move_to(arr, device, dtype="float64")
    else:
        if not hasattr(arr, "__array_namespace__") and not hasattr(arr, "dtype"):
            arr = np.asarray(arr)
        xp = get_namespace(arr)
        X = xp.astype(xp.asarray(arr), xp.float64) if arr.dtype != xp.float64 else arr
    xp = get_namespace(X)
    X = xp.reshape(X, (X.shape[0], -1))
    if not bool(xp.all(xp.isfinite(X))):
        raise ActstoreError(
            f"representation {name!r} holds NaN or infinite values; "
            "check the run (diverged training?) or leave it out of the selection"
        )
    if idx is not None:
        X = xp.take(X, _index(idx, X, xp), axis=0)
    return X


def _index(idx: np.ndarray, like: Any, xp: Any) -> Any:
    from array_api_compat import device

    return xp.asarray(np.asarray(idx, dtype=np.int64), device=device(like))


def accumulate(
    reps: Sequence[Any],
    metric: str,
    params: dict[str, Any],
    plan: Plan,
    *,
    names: Sequence[str],
    device: str | None = None,
    idx: np.ndarray | None = None,
    chunk_range: tuple[int, int] | None = None,
    block_pairs: Sequence[tuple[int, int]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Partial sums of one part of an all-pairs computation.

    Parts (``chunk_range`` over ``plan.chunks``, ``block_pairs`` over ``plan.blocks``) can run
    in separate processes; :func:`merge_partials` adds them and :func:`finalize` turns the sum
    into a :class:`SimilarityResult`.

    Returns
    -------
    dict
        ``V`` (M x M, upper blocks filled), ``s`` (M,), ``deg`` (M,), ``scale`` (M,) and the
        scalars ``n_entries``, ``centred``.
    """
    params = check_params(metric, params)
    fn = _factory(metric, params)
    M = len(reps)
    pairs = list(block_pairs) if block_pairs is not None else plan.block_pairs()
    chunks = plan.chunks if chunk_range is None else plan.chunks[chunk_range[0] : chunk_range[1]]
    out: dict[str, Any] = {
        "V": np.zeros((M, M)),
        "s": np.zeros(M),
        "deg": np.zeros(M, dtype=bool),
        "scale": np.zeros(M),
        "n_entries": 0,
        "centred": False,
    }
    steps = len(pairs) * (len(chunks) if plan.method == "gram" else 1)
    done = 0
    built: dict[int, list[Signature]] = {}
    buffers: dict[str, Any] = {}
    first: dict[str, int] = {}  # array library -> first representation loaded from it

    def load(i: int) -> Any:
        X = load_rep(reps[i], device, idx, names[i])
        first.setdefault(str(_library(X)), i)
        if len(first) > 1:  # lazy representations of different libraries
            raise _mixed_error(first, names)
        return X

    def sigs(b: int, keep: int) -> list[Signature]:
        # Hold at most two blocks of signatures: the row block ``keep`` and the current one.
        for k in [k for k in built if k not in (b, keep)]:
            del built[k]
        if b not in built:
            built[b] = [
                _build(fn, load(i), params, idx, plan.chunks)
                for i in plan.blocks[b]
            ]
        return built[b]

    for a, b in sorted(pairs):
        SA = sigs(a, a)
        SB = sigs(b, a)
        IA, IB = plan.blocks[a], plan.blocks[b]
        for i, s in zip(IA, SA, strict=True):
            out["deg"][i] = s.degenerate
            out["scale"][i] = s.scale
        for i, s in zip(IB, SB, strict=True):
            out["deg"][i] = s.degenerate
            out["scale"][i] = s.scale
        out["n_entries"] = SA[0].n_entries
        out["centred"] = SA[0].centred_entries
        if plan.method == "gram":
            for r0, r1 in chunks:
                G, sa = _gram_block(SA, SB, r0, r1, a == b, buffers)
                out["V"][np.ix_(IA, IB)] += G
                if a == b:
                    out["s"][IA] += sa
                done += 1
                if progress:
                    progress(done, steps)
        else:
            out["V"][np.ix_(IA, IB)] = _feature_block(SA, SB, a == b)
            done += 1
            if progress:
                progress(done, steps)
    return out


def _gram_block(
    SA: list[Signature],
    SB: list[Signature],
    r0: int,
    r1: int,
    same: bool,
    buffers: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """``G[A, B]`` over one stimulus block, and the entry sums of A's strips (float64).

    ``buffers`` keeps the stacked strip buffers between stimulus blocks (allocated once).
    """
    xp = SA[0].xp
    h = r1 - r0
    n = SA[0].n

    def stack(S: list[Signature], side: str) -> tuple[Any, Any]:
        # Strips are written straight into the stacked buffers: no copies of n x n data.
        m = len(S)
        size = m * h * (n - r0)
        flat = buffers.get(side)
        if flat is None or flat.shape[0] < size:
            flat = buffers[side] = xp.empty((size,), dtype=xp.float64, device=S[0].device)
        sq = xp.reshape(flat[: m * h * h], (m, h, h))
        rt = xp.reshape(flat[m * h * h : size], (m, h, n - r1))
        for k, s in enumerate(S):
            s.fill(r0, r1, sq[k, ...], rt[k, ...])
        return xp.reshape(sq, (m, h * h)), xp.reshape(rt, (m, h * (n - r1)))

    sqa, rta = stack(SA, "a")
    sums = xp.sum(sqa, axis=1) + 2.0 * xp.sum(rta, axis=1)
    if same:
        G = _products(sqa, sqa, 1.0, True) + _products(rta, rta, 2.0, True)
    else:
        sqb, rtb = stack(SB, "b")
        G = _products(sqa, sqb, 1.0, False) + _products(rta, rtb, 2.0, False)
    # device-to-host sync: one (|A|, |B|) block per stimulus block
    return to_numpy(G), to_numpy(sums)


def _products(a: Any, b: Any, alpha: float, same: bool) -> Any:
    """``alpha * a @ b.T`` for stacked signatures ``a`` (m, K), ``b`` (m', K).

    For numpy, BLAS is called directly on the column-major views of the row-major stacks:
    numpy's ``matmul`` is several times slower on this shape (tiny output, huge inner
    dimension). With ``same``, only the upper triangle is filled (the caller symmetrises).
    """
    if isinstance(a, np.ndarray):
        if a.shape[1] == 0:
            return np.zeros((a.shape[0], b.shape[0]))
        from scipy.linalg import blas

        if same:
            return np.triu(blas.dsyrk(alpha, a.T, trans=1))
        return blas.dgemm(alpha, a.T, b.T, trans_a=1)
    return alpha * (a @ b.T)


def _feature_block(SA: list[Signature], SB: list[Signature], same: bool) -> np.ndarray:
    """Per-pair values from the cross products of feature-space forms."""
    xp = SA[0].xp
    FA: list[Any] = [s.features() for s in SA]
    FB: list[Any] = FA if same else [s.features() for s in SB]
    CA = xp.concat(FA, axis=1)  # (n, sum d_A)
    C = CA.T @ CA if same else CA.T @ xp.concat(FB, axis=1)
    oa = np.cumsum(np.array([0] + [f.shape[1] for f in FA]))
    ob = np.cumsum(np.array([0] + [f.shape[1] for f in FB]))
    V = np.zeros((len(SA), len(SB)))
    reduce = SA[0].pair_reduce
    at, vals = [], []
    for i in range(len(SA)):
        for j in range(i if same else 0, len(SB)):
            blk = C[oa[i] : oa[i + 1], ob[j] : ob[j + 1]]
            at.append((i, j))
            vals.append(xp.sum(xp.linalg.svdvals(blk)) if reduce == "nuclear"
                        else xp.sum(blk * blk))
    if at:
        # the values stay on the device until one copy of them all (one sync, not one a pair)
        rows, cols = zip(*at, strict=True)
        V[list(rows), list(cols)] = to_numpy(xp.stack(vals))
    terms: list[Any] = [s.pair_terms() for s in SA]
    if terms[0] is not None:
        # Unbiased HSIC (times n (n - 3)) from feature-space sums, see _signatures.
        n = SA[0].n
        tb: list[Any] = terms if same else [s.pair_terms() for s in SB]
        Aa = xp.stack([t[0] for t in terms])
        Ua = xp.stack([t[1] for t in terms])
        Ab = xp.stack([t[0] for t in tb])
        Ub = xp.stack([t[1] for t in tb])
        ta = np.array([t[2] for t in terms])
        tbv = np.array([t[2] for t in tb])
        V = (
            V
            - to_numpy(Aa @ Ab.T)
            + np.outer(ta, tbv) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * to_numpy(Ua @ Ub.T)
        )
        if same:
            V = np.triu(V)
    return V


def merge_partials(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add partial sums from :func:`accumulate` (``V`` and ``s`` add up, flags combine)."""
    out = dict(parts[0])
    out["V"] = sum(p["V"] for p in parts)
    out["s"] = sum(p["s"] for p in parts)
    out["deg"] = np.logical_or.reduce([p["deg"] for p in parts])
    out["scale"] = np.maximum.reduce([p["scale"] for p in parts])
    return out


#: Self products below this fraction of a signature's ``scale`` are round-off.
_REL_SELF = 1e-10


def finalize(
    acc: dict[str, Any], metric: str, params: dict[str, Any], method: str, names: Sequence[str]
) -> SimilarityResult:
    """Normalise summed inner products into similarities (cosine, or Pearson when centred)."""
    V = np.triu(acc["V"])
    V = V + np.triu(V, 1).T
    if acc["centred"]:
        raw = np.diag(V).copy()
        V = V - np.outer(acc["s"], acc["s"]) / acc["n_entries"]
        tol = 1e-12 * raw
    else:
        tol = np.zeros(len(V))
    # a signature whose self product is round-off of its raw scale (e.g. a U-centred Gram
    # that vanishes) has nothing to compare
    tol = np.maximum(tol, _REL_SELF * acc["scale"])
    d = np.diag(V).copy()
    deg = acc["deg"] | (d <= tol)
    scale = np.sqrt(np.where(deg, 1.0, d))
    S = V / np.outer(scale, scale)
    S[deg, :] = 0.0
    S[:, deg] = 0.0
    S = np.clip(S, -1.0, 1.0)
    np.fill_diagonal(S, np.where(deg, 0.0, 1.0))
    return SimilarityResult(
        values=S, degenerate=deg, metric=metric, params=dict(params), method=method,
        names=list(names),
    )


def similarity_matrix(
    reps: Sequence[Any],
    metric: str = "cka",
    *,
    names: Sequence[str] | None = None,
    method: str = "auto",
    device: str | None = None,
    max_memory: int = DEFAULT_MEMORY,
    idx: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> SimilarityResult:
    """All-pairs similarity of M representations of the same stimuli.

    Parameters
    ----------
    reps : sequence of arrays or :class:`LazyRep`
        Each of shape (n_stimuli, n_units...) (trailing dimensions are flattened), any dtype,
        numpy / torch / cupy. Rows must be the same stimuli in the same order.
    metric : str
        A key of :data:`SIMILARITIES`: ``cka``, ``rbf_cka``, ``rsa``, ``procrustes``.
    names : sequence of str, optional
        Labels used in error messages and in the result.
    method : {"auto", "gram", "feature"}
        Computation path (see the module docstring).
    device : {"numpy", "torch", "cuda", "cupy"}, optional
        Move the data to this backend first; by default the data's own backend is used, and
        all representations must then come from one library (Dask arrays count as numpy).
    max_memory : int
        Working-memory budget in bytes; bounds stimulus and representation blocks.
    idx : ndarray of shape (n_stimuli,), int, optional
        Resample the stimuli (one bootstrap replicate): row ``k`` becomes stimulus ``idx[k]``,
        each in ``[0, n_stimuli)``.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block.
    **params
        Metric parameters, e.g. ``debiased=True`` (``cka``, ``rbf_cka``), ``t=0.5``
        (``rbf_cka``), ``rdm="euclidean", compare="spearman"`` (``rsa``).

    Returns
    -------
    SimilarityResult
        ``values`` is an (M, M) float64 ndarray.

    Raises
    ------
    ActstoreError
        Unknown metric or parameter, a parameter value of the wrong type (see
        :func:`check_params`; ``debiased="no"`` is read as False), representations with
        different numbers of stimuli, too few stimuli for the metric, non-finite activations;
        ``reps`` that is no list of arrays, or ``names`` of another length; representations
        that mix array libraries (numpy and torch, say) without ``device=``; ``idx`` that is
        not 1-D, not of length n_stimuli, not integers or outside ``[0, n_stimuli)``.
    """
    reps = check_reps(reps, names)
    shapes, labels = _shapes(reps, names)
    check_libraries(reps, labels, device)
    idx = check_idx(idx, shapes[0][0])
    params = check_params(metric, params)
    plan = plan_similarity(shapes, metric, method=method, max_memory=max_memory, **params)
    acc = accumulate(
        reps, metric, params, plan, names=labels, device=device, idx=idx, progress=progress
    )
    return finalize(acc, metric, params, plan.method, labels)


def similarity(X: Any, Y: Any, metric: str = "cka", **params: Any) -> float:
    """Similarity of two representations of the same stimuli (see :func:`similarity_matrix`).

    Parameters
    ----------
    X, Y : arrays of shape (n_stimuli, n_units_x) and (n_stimuli, n_units_y)
        Activations, rows the same stimuli.
    metric : str
        A key of :data:`SIMILARITIES`.
    **params
        Metric parameters and engine options of :func:`similarity_matrix`.

    Returns
    -------
    float
    """
    res = similarity_matrix([X, Y], metric, names=params.pop("names", ["X", "Y"]), **params)
    return float(res.values[0, 1])
