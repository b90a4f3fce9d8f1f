"""Reductions of a layer's output, applied on the device at capture time (``--reduce``).

A token sequence ``(B, T, D)`` is reduced over its valid tokens when the probe set has an
attention mask ``(B, T)`` (1 = token, 0 = padding) of the same length: ``mean`` and ``max``
leave padding out, ``first`` and ``last`` take the first and last valid token (left or right
padding alike), and ``all`` keeps every token with the pads set to zero (the probe set's
mask says which are pads). Without a mask every token counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np

from actstore._errors import ActstoreError

__all__ = ["REDUCTIONS", "first_tensor", "parse_reduction", "reduce_output"]


def _spatial_dims(t: Any) -> tuple[int, ...]:
    return tuple(range(2, t.ndim))


def _sequence(t: Any, reduction: str, name: str) -> None:
    if t.ndim != 3:
        raise ActstoreError(
            f"reduction {reduction!r} needs a token sequence (batch, tokens, features); layer "
            f"{name!r} gives shape {tuple(t.shape)}; use 'mean', 'max' or 'flatten'"
        )


def _red_mean(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    if t.ndim == 3:  # (B, T, D) token sequence
        if mask is None:
            return t.mean(dim=1)
        w = mask.to(t.dtype).unsqueeze(-1)  # (B, T, 1)
        return (t * w).sum(dim=1) / w.sum(dim=1)  # (B, D): pads left out exactly
    return t.mean(dim=_spatial_dims(t))  # (B, C, ...) -> (B, C)


def _red_max(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    if t.ndim == 3:
        if mask is None:
            return t.amax(dim=1)
        return t.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, D)
    return t.amax(dim=_spatial_dims(t))


def _red_center(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    if t.ndim < 4:
        raise ActstoreError(
            f"reduction 'center' needs a conv map (batch, channels, height, width); layer "
            f"{name!r} gives shape {tuple(t.shape)}; use 'mean' or 'last'"
        )
    idx = tuple(s // 2 for s in t.shape[2:])
    return t[(slice(None), slice(None), *idx)]  # (B, C)


def _red_flatten(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    return t.reshape(t.shape[0], -1)


def _red_grid(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    """The activations at ``arg`` x ``arg`` evenly spaced positions of a conv map (every
    position of a smaller map), as they are (no pooling), channel-major:
    ``(B, C, H, W) -> (B, C * h * w)``. Analyses that use positions as samples (alignment)
    read them back as ``(B * h * w, C)``."""
    import torch

    if not arg or arg < 1:
        raise ActstoreError("reduction 'grid:S' needs a positive S, e.g. grid:8")
    if t.ndim != 4:
        raise ActstoreError(
            f"reduction 'grid' keeps positions of a conv map (batch, channels, height, width); "
            f"layer {name!r} gives shape {tuple(t.shape)}; use 'mean' or 'flatten'"
        )
    for axis, n in ((2, t.shape[2]), (3, t.shape[3])):
        idx = np.unique(np.round(np.linspace(0, n - 1, min(arg, n))).astype(np.int64))
        t = t.index_select(axis, torch.as_tensor(idx, device=t.device))
    return t.reshape(t.shape[0], -1)


def _token_at(t: Any, index: Any) -> Any:
    """``t[b, index[b]]`` for every sample b: (B, T, D), (B,) -> (B, D)."""
    return t[t.new_tensor(range(t.shape[0]), dtype=index.dtype), index]


def _red_first(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    _sequence(t, "first", name)
    if mask is None:
        return t[:, 0]
    return _token_at(t, mask.int().argmax(dim=1))  # the first 1 of each row


def _red_last(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    _sequence(t, "last", name)
    if mask is None:
        return t[:, -1]
    last = mask.shape[1] - 1 - mask.int().flip(dims=(1,)).argmax(dim=1)  # the last 1 of each row
    return _token_at(t, last)


def _red_all(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    if t.ndim != 3:
        raise ActstoreError(
            f"reduction 'all' keeps every token of a sequence (batch, tokens, features); layer "
            f"{name!r} gives shape {tuple(t.shape)}"
        )
    if mask is None:
        return t  # (B, T, D): stored with a token axis
    return t.masked_fill(~mask.unsqueeze(-1), 0.0)  # pads stored as zeros


_PROJ_CACHE: dict[tuple[str, int, int, str], Any] = {}


def _red_randproj(t: Any, arg: int | None, name: str, mask: Any) -> Any:
    import torch

    if not arg or arg < 1:
        raise ActstoreError("reduction 'randproj:K' needs a positive K, e.g. randproj:512")
    x = t.reshape(t.shape[0], -1)  # (B, D)
    d = x.shape[1]
    key = (name, d, arg, str(x.device))
    if key not in _PROJ_CACHE:
        # Very sparse random projection (entries +-sqrt(s/K) with prob 1/(2s), s = sqrt(D)),
        # seeded by layer name and sizes so every checkpoint and run uses the same matrix.
        seed = int.from_bytes(hashlib.sha256(f"{name}:{d}:{arg}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        s = max(1.0, float(np.sqrt(d)))
        nnz_per_col = rng.binomial(d, 1.0 / s, size=arg)
        rows = np.concatenate([rng.choice(d, size=k, replace=False) for k in nnz_per_col])
        cols = np.repeat(np.arange(arg), nnz_per_col)
        vals = rng.choice([-1.0, 1.0], size=len(rows)) * np.sqrt(s / arg)
        proj = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([cols, rows])), torch.from_numpy(vals).float(), (arg, d),
            check_invariants=True,
        ).coalesce()
        _PROJ_CACHE[key] = proj.to(x.device)
    proj = _PROJ_CACHE[key]
    return torch.sparse.mm(proj, x.float().T).T  # (B, K)


#: Reductions applied at capture time; ``randproj`` takes ``:K``, ``grid`` ``:S``. Each is
#: ``fn(output, K, layer name, mask)``; ``mask`` is a boolean (B, T) tensor for a token
#: sequence whose probe set has an attention mask, else None.
REDUCTIONS: dict[str, Callable[[Any, int | None, str, Any], Any]] = {
    "mean": _red_mean,
    "max": _red_max,
    "center": _red_center,
    "flatten": _red_flatten,
    "grid": _red_grid,
    "first": _red_first,
    "last": _red_last,
    "all": _red_all,
    "randproj": _red_randproj,
}

#: Reductions that read the attention mask of a token sequence.
MASKED = frozenset({"mean", "max", "first", "last", "all"})


def parse_reduction(spec: str) -> tuple[str, int | None]:
    """``"randproj:512"`` -> ``("randproj", 512)``; checks the name."""
    name, _, arg = spec.partition(":")
    if name not in REDUCTIONS:
        raise ActstoreError(
            f"unknown reduction {spec!r}; choose one of {', '.join(REDUCTIONS)} (randproj:K, "
            "grid:S)"
        )
    try:
        return name, int(arg) if arg else None
    except ValueError:
        raise ActstoreError(f"reduction {spec!r}: K must be an integer") from None


def sequence_mask(t: Any, mask: Any) -> Any:
    """``mask`` as a boolean tensor on ``t``'s device where it fits ``t`` (a token sequence
    of as many samples and tokens), else None.

    Raises
    ------
    ActstoreError
        If a sample of the batch has no valid token (a row of zeros).
    """
    if mask is None or t.ndim != 3 or tuple(mask.shape) != tuple(t.shape[:2]):
        return None
    m = mask.to(device=t.device) != 0  # (B, T)
    if not bool(m.any(dim=1).all()):
        raise ActstoreError(
            "the attention mask has a sample with no valid token (a row of zeros); give every "
            "sample at least one token"
        )
    return m


def reduce_output(t: Any, spec: str, name: str, mask: Any = None) -> tuple[Any, str]:
    """Reduce one layer output; 2-D outputs (batch, units) are kept as they are.

    Parameters
    ----------
    t : tensor of shape (B, ...)
    spec : str
        A name of :data:`REDUCTIONS` (``randproj:K``).
    name : str
        The layer's name (seeds ``randproj``; named in errors).
    mask : tensor of shape (B, T), optional
        Attention mask of the batch (1 = token, 0 = padding), applied to token sequences
        ``(B, T, D)`` of the same ``T``.

    Returns
    -------
    tensor, str
        The reduced tensor and the reduction actually applied (``"none"`` for 2-D outputs).
    """
    rname, arg = parse_reduction(spec)
    if t.ndim <= 2 and rname != "randproj":
        return t.reshape(t.shape[0], -1), "none"
    return REDUCTIONS[rname](t, arg, name, sequence_mask(t, mask)), spec


def first_tensor(out: Any) -> Any:
    """The tensor of a module's output: the output itself, or the first tensor in a tuple,
    dict (``last_hidden_state`` first) or dataclass output (``None`` if there is none)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = first_tensor(o)
            if t is not None:
                return t
        return None
    if hasattr(out, "keys") and hasattr(out, "__getitem__"):  # dict, HF ModelOutput
        if "last_hidden_state" in out.keys():
            return out["last_hidden_state"]
        for k in out.keys():
            t = first_tensor(out[k])
            if t is not None:
                return t
        return None
    if is_dataclass(out):
        for f in fields(out):
            t = first_tensor(getattr(out, f.name))
            if t is not None:
                return t
    return None

