"""Which layers of a model are captured, by name, module path or glob pattern, and with
which reduction."""

from __future__ import annotations

import re
from typing import Any

from actstore._args import as_names
from actstore._errors import ActstoreError
from actstore.store import _layout as L

__all__ = ["layer_names", "reduction_for", "resolve_layers"]


def _check_module(model: Any) -> None:
    if not callable(getattr(model, "named_modules", None)):
        raise ActstoreError(
            f"model must be a torch.nn.Module, not {type(model).__name__}"
        )


def layer_names(model: Any) -> list[tuple[str, str]]:
    """``(canonical name, module path)`` of the layers "all" selects.

    A model may declare ``actstore_layers`` (module paths); otherwise every leaf module.

    Returns
    -------
    list of (str, str)
        In the order of ``model.named_modules()``.

    Raises
    ------
    ActstoreError
        If ``model`` is not a ``torch.nn.Module``.
    """
    _check_module(model)
    return _unique_names(_all_layers(model))


def _all_layers(model: Any) -> list[tuple[str, str]]:
    named = dict(model.named_modules())
    declared = getattr(model, "actstore_layers", None)
    if declared is not None:
        paths = list(declared)
    else:
        paths = [p for p, m in named.items() if p and not any(True for _ in m.children())]
    return [(L.canonical_name(p), p) for p in paths]


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


def resolve_layers(model: Any, layers: str | list[str] = "all") -> list[tuple[str, str]]:
    """Select layers by ``"all"``, names, module paths or glob patterns (``"conv*"``).

    Parameters
    ----------
    model : torch.nn.Module
    layers : "all", comma-separated str, or list of str
        Canonical names, module paths or glob patterns (``*`` stays inside one path
        component).

    Returns
    -------
    list of (str, str)
        ``(canonical name, module path)`` of the selected layers, in forward-definition order.

    Raises
    ------
    ActstoreError
        For a pattern that matches no module (the message lists the available names), or
        arguments of the wrong kind.
    """
    _check_module(model)
    if not isinstance(layers, str):
        layers = as_names(layers, "layers")
    named = dict(model.named_modules())
    if layers == "all" or layers == ["all"]:
        return layer_names(model)
    pats = [p.strip() for p in (layers.split(",") if isinstance(layers, str) else layers)]
    every = [(L.canonical_name(p), p) for p in named]
    out: list[tuple[str, str]] = []
    for pat in pats:
        rx = _glob_regex(pat)
        hits = [(c, p) for c, p in every if c == pat or (p and rx.fullmatch(p))]
        if not hits:
            shown = [c for c, _ in _all_layers(model)] or [c for c, _ in every]
            more = "" if len(shown) <= 40 else f" ... ({len(shown)} in all)"
            raise ActstoreError(
                f"no layer matches {pat!r}; available: {', '.join(shown[:40])}{more}"
            )
        out += [h for h in hits if h not in out]
    order = {p: i for i, p in enumerate(named)}
    return _unique_names(sorted(out, key=lambda cp: order[cp[1]]))


def _glob_regex(pat: str) -> re.Pattern[str]:
    """Glob over module paths where ``*`` and ``?`` stay inside one path component."""
    out = []
    for ch in pat:
        out.append({"*": r"[^.]*", "?": r"[^.]"}.get(ch, re.escape(ch)))
    return re.compile("".join(out))


def reduction_for(name: str, path: str, reduce: str | dict[str, str] | None,
                   model: Any = None) -> str:
    """The reduction of one layer: ``reduce`` if given, else the model's declared default
    (``actstore_reductions``: glob -> spec), else ``mean``."""
    if reduce is None:
        reduce = dict(getattr(model, "actstore_reductions", None) or {})
    if isinstance(reduce, str):
        return reduce
    for pat, spec in reduce.items():
        if name == pat or _glob_regex(pat).fullmatch(path):
            return spec
    return "mean"

