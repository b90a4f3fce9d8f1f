"""Which layers of a model are captured, by name, module path or glob pattern, and with
which reduction.

``all`` selects the layers a model declares (``actstore_layers``); for a model that declares
none, the outputs that matter: each block of every stack (a ``ModuleList`` or
``Sequential``: ``encoder.layer.0``, ``layer1.0``), whole parts that hold no stack
(``embeddings``, ``pooler``) and the leaves outside stacks (``conv1``, ``ln_f``, ``fc``).
Dropout and identity modules are left out (in evaluation they repeat their input), and with a
dry forward pass (:func:`trace_modules`) so are modules that do not run or whose output is not
batch-first. ``leaves`` selects every leaf module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actstore._args import as_names
from actstore._errors import ActstoreError
from actstore.store import _layout as L

__all__ = ["ModuleTrace", "layer_names", "module_table", "reduction_for", "resolve_layers",
           "trace_modules"]

#: selections by keyword rather than by name
KEYWORDS = ("all", "leaves")


@dataclass(frozen=True)
class ModuleTrace:
    """What one module did in a dry forward pass: its output's shape (of its first tensor;
    None for no tensor) and how often it ran."""

    shape: tuple[int, ...] | None
    calls: int


def _check_module(model: Any) -> None:
    if not callable(getattr(model, "named_modules", None)):
        raise ActstoreError(
            f"model must be a torch.nn.Module, not {type(model).__name__}"
        )


def trace_modules(model: Any, forward: Callable[[], Any]) -> dict[str, ModuleTrace]:
    """Run ``forward()`` (one forward pass of ``model``) with a hook on every module.

    Returns
    -------
    dict of str to ModuleTrace
        For every module path that ran (``""`` is the model itself).
    """
    from actstore.store._reduce import first_tensor

    seen: dict[str, ModuleTrace] = {}

    def hook_for(path: str) -> Callable[..., None]:
        def hook(mod: Any, inp: Any, out: Any) -> None:
            old = seen.get(path)
            t = first_tensor(out)
            shape = tuple(int(k) for k in t.shape) if t is not None else None
            seen[path] = ModuleTrace(old.shape if old else shape, (old.calls if old else 0) + 1)

        return hook

    handles = [m.register_forward_hook(hook_for(p)) for p, m in model.named_modules()]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return seen


def _is_stack(m: Any) -> bool:
    import torch

    return isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential))


def _repeats_input(m: Any) -> bool:
    import torch

    return isinstance(m, (torch.nn.Identity, torch.nn.modules.dropout._DropoutNd))


def _has_stack(m: Any) -> bool:
    return any(_is_stack(c) for c in m.modules())


def _structural(model: Any) -> list[str]:
    """Module paths of ``all`` for a model that declares no layers (see the module doc)."""
    out: list[str] = []

    def visit(path: str, m: Any) -> None:
        for name, child in m.named_children():
            p = f"{path}.{name}" if path else name
            if _is_stack(m) or not any(True for _ in child.children()):
                out.append(p)  # a block of a stack, or a leaf outside stacks
            elif _has_stack(child):
                visit(p, child)
            else:
                out.append(p)  # a whole part without a stack (embeddings, pooler)

    if _is_stack(model) or _has_stack(model):
        visit("", model)
    else:
        out = [p for p, m in model.named_modules() if p and not any(True for _ in m.children())]
    return [p for p in out if not _repeats_input(model.get_submodule(p))]


def _batch_first(t: ModuleTrace | None, batch: int) -> bool:
    return t is not None and t.shape is not None and len(t.shape) >= 1 and t.shape[0] == batch


def _auto_paths(model: Any, trace: dict[str, ModuleTrace] | None) -> list[str]:
    declared = getattr(model, "actstore_layers", None)
    if declared is not None:
        return list(declared)
    paths = _structural(model)
    root = (trace or {}).get("")
    if trace is None or root is None or root.shape is None:
        return paths
    # a module that did not run, gave no tensor, or is not batch-first cannot be recorded
    return [p for p in paths if _batch_first(trace.get(p), root.shape[0])]


def _leaves(model: Any) -> list[str]:
    return [p for p, m in model.named_modules() if p and not any(True for _ in m.children())]


def layer_names(model: Any, trace: dict[str, ModuleTrace] | None = None
                ) -> list[tuple[str, str]]:
    """``(canonical name, module path)`` of the layers "all" selects.

    Parameters
    ----------
    model : torch.nn.Module
    trace : dict, optional
        A dry forward pass (:func:`trace_modules`): modules that did not run, or whose output
        is not batch-first, are left out.

    Returns
    -------
    list of (str, str)
        The model's ``actstore_layers`` where it declares them, else the outputs that matter
        (see the module doc), in the order of ``model.named_modules()``.

    Raises
    ------
    ActstoreError
        If ``model`` is not a ``torch.nn.Module``.
    """
    _check_module(model)
    return _unique_names([(L.canonical_name(p), p) for p in _auto_paths(model, trace)])


def _unique_names(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Refuse two module paths that make one layer name (``a.b`` and ``a_b``)."""
    seen: dict[str, str] = {}
    for c, p in pairs:
        if c in seen and seen[c] != p:
            raise ActstoreError(
                f"modules {seen[c]!r} and {p!r} both make the layer name {c!r}; select one of "
                "them (layers=[...] / --layers)"
            )
        seen[c] = p
    return pairs


def _patterns(layers: str | list[str]) -> list[str]:
    if not isinstance(layers, str):
        layers = as_names(layers, "layers")
    pats = layers.split(",") if isinstance(layers, str) else layers
    return [p.strip() for p in pats if p.strip()]


def resolve_layers(model: Any, layers: str | list[str] = "all",
                   trace: dict[str, ModuleTrace] | None = None) -> list[tuple[str, str]]:
    """Select layers by ``"all"``, ``"leaves"``, names, module paths or glob patterns.

    Parameters
    ----------
    model : torch.nn.Module
    layers : str or list of str
        ``all`` (see :func:`layer_names`), ``leaves`` (every leaf module), canonical names,
        module paths or glob patterns (``*`` stays inside one path component); a
        comma-separated str or a list.
    trace : dict, optional
        A dry forward pass (:func:`trace_modules`) that ``all`` is filtered by.

    Returns
    -------
    list of (str, str)
        ``(canonical name, module path)`` of the selected layers, in forward-definition order.

    Raises
    ------
    ActstoreError
        For a pattern that matches no module (the message lists the valid names and points to
        ``actstore layers``), or arguments of the wrong kind.
    """
    _check_module(model)
    pats = _patterns(layers)
    if pats == ["all"]:
        return layer_names(model, trace)
    named = dict(model.named_modules())
    every = [(L.canonical_name(p), p) for p in named]
    out: list[tuple[str, str]] = []
    for pat in pats:
        if pat in KEYWORDS:
            hits = (layer_names(model, trace) if pat == "all"
                    else [(L.canonical_name(p), p) for p in _leaves(model)])
        else:
            rx = _glob_regex(pat)
            hits = [(c, p) for c, p in every if c == pat or (p and rx.fullmatch(p))]
        if not hits:
            shown = [c for c, p in every if p]
            more = "" if len(shown) <= 60 else f" ... ({len(shown)} in all)"
            raise ActstoreError(
                f"no layer matches {pat!r}; valid names: all, leaves, "
                f"{', '.join(shown[:60])}{more}; `actstore layers --model ...` lists the "
                "module tree with output shapes"
            )
        out += [h for h in hits if h not in out]
    order = {p: i for i, p in enumerate(named)}
    return _unique_names(sorted(out, key=lambda cp: order.get(cp[1], len(order))))


def module_table(model: Any, layers: str | list[str] = "all",
                 trace: dict[str, ModuleTrace] | None = None) -> list[dict[str, Any]]:
    """One row per module of ``model``, in the order of ``named_modules()``.

    Returns
    -------
    list of dict
        ``path`` (``""`` for the model), ``name`` (the layer name), ``type`` (class name),
        ``depth``, ``shape`` (output shape in the dry forward pass, None without one or for a
        module that gave no tensor), ``ran`` (None without a trace), ``calls``, ``all``
        (whether ``all`` picks it) and ``selected`` (whether ``layers`` selects it).
    """
    picked = {p for _, p in layer_names(model, trace)}
    selected = {p for _, p in resolve_layers(model, layers, trace)}
    rows = []
    for p, m in model.named_modules():
        t = None if trace is None else trace.get(p)
        rows.append({
            "path": p, "name": L.canonical_name(p) if p else "output",
            "type": type(m).__name__, "depth": p.count(".") + 1 if p else 0,
            "shape": None if t is None or t.shape is None else list(t.shape),
            "ran": None if trace is None else t is not None,
            "calls": 0 if t is None else t.calls,
            "all": p in picked, "selected": p in selected,
        })
    return rows


def _glob_regex(pat: str) -> re.Pattern[str]:
    """Glob over module paths where ``*`` and ``?`` stay inside one path component."""
    out = []
    for ch in pat:
        out.append({"*": r"[^.]*", "?": r"[^.]"}.get(ch, re.escape(ch)))
    return re.compile("".join(out))


def reduction_for(name: str, path: str, reduce: str | dict[str, str] | None,
                  model: Any = None) -> str:
    """The reduction of one layer: ``reduce`` if given, else the model's declared default
    (``actstore_reductions``: glob -> spec), else ``mean`` (over valid tokens when the probe
    set has an attention mask)."""
    if reduce is None:
        reduce = dict(getattr(model, "actstore_reductions", None) or {})
    if isinstance(reduce, str):
        return reduce
    for pat, spec in reduce.items():
        if name == pat or _glob_regex(pat).fullmatch(path):
            return spec
    return "mean"
