"""How ``--model`` becomes a module: a factory ``package.module:function`` or
``file.py:function`` imported and called, or ``hf:PATH``, a Hugging Face model folder loaded
offline from safetensors:
``AutoModel.from_pretrained(PATH, local_files_only=True, use_safetensors=True)``: nothing is
downloaded and no pickle is loaded (a folder holding only ``pytorch_model.bin`` is refused).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actstore._errors import ActstoreError

__all__ = ["HF_PREFIX", "absolute_factory", "describe_model", "hf_factory", "load_factory",
           "load_hf_model", "make_model"]

HF_PREFIX = "hf:"


def load_factory(spec: str) -> Callable[..., Any]:
    """Import a model factory named ``package.module:function`` or ``path/file.py:function``;
    ``hf:PATH`` is a factory that loads the Hugging Face model folder ``PATH`` (offline, from
    safetensors).

    This is the only user code actstore imports, and only when the user names it.
    """
    if spec.startswith(HF_PREFIX):
        return hf_factory(spec)
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ActstoreError(
            f"--model {spec!r} must name a factory as package.module:function or "
            "file.py:function, or a Hugging Face model folder as hf:PATH"
        )
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise ActstoreError(f"model factory file {mod_name} does not exist")
            modspec = importlib.util.spec_from_file_location(f"_actstore_user_{path.stem}", path)
            assert modspec is not None and modspec.loader is not None
            module = importlib.util.module_from_spec(modspec)
            sys.modules[modspec.name] = module
            # like `python file.py`: modules next to the file are importable (appended, so
            # they do not shadow installed ones)
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.append(folder)
            modspec.loader.exec_module(module)
        else:
            # like `python -m`, a package in the current directory is importable (after
            # installed ones, which it does not shadow)
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.append(cwd)
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ActstoreError(f"cannot import {mod_name!r} for --model {spec!r}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ActstoreError(f"{mod_name!r} has no callable {fn_name!r} (from --model {spec!r})")
    return fn


def _param(p: inspect.Parameter) -> str:
    stars = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
    out = stars + p.name
    if p.annotation is not p.empty:  # a string under `from __future__ import annotations`
        ann = p.annotation
        out += f": {ann if isinstance(ann, str) else inspect.formatannotation(ann)}"
    if p.default is not p.empty:
        out += f" = {p.default!r}" if p.annotation is not p.empty else f"={p.default!r}"
    return out


def _accepted(fn: Callable[..., Any]) -> str:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return "(its signature cannot be read)"
    return "(" + ", ".join(_param(p) for p in params) + ")"


def make_model(factory: Callable[..., Any], kwargs: dict[str, Any] | None,
               model_name: str) -> Any:
    """Call a model factory with ``--model-arg`` keyword arguments; check it gives a module.

    Arguments the factory does not take, and any error the factory raises, become one
    :class:`ActstoreError` naming the factory, the arguments and the factory's parameters.
    """
    import torch

    kwargs = dict(kwargs or {})
    given = (", ".join(f"--model-arg {k}={v!r}" for k, v in kwargs.items())
             or "no --model-arg")
    accepts = f"it accepts {_accepted(factory)}"
    try:
        sig: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        params = sig.parameters
        open_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = {n for n, p in params.items()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = [] if open_kw else [k for k in kwargs if k not in named]
        if unknown:
            raise ActstoreError(
                f"model factory {model_name} has no parameter {unknown[0]!r} (from --model-arg "
                f"{unknown[0]}={kwargs[unknown[0]]!r}); {accepts}"
            )
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            raise ActstoreError(
                f"model factory {model_name} cannot be called with {given} ({e}); {accepts}; "
                "give the missing ones as --model-arg key=value"
            ) from None
    try:
        net = factory(**kwargs)
    except ActstoreError:
        raise
    except Exception as e:
        hint = (" (--model-arg values are read as JSON: 4 is a number, abc a string)"
                if any(isinstance(v, str) for v in kwargs.values()) else "")
        raise ActstoreError(
            f"model factory {model_name} failed with {given}: {type(e).__name__}: "
            f"{_message(e)}; {accepts}{hint}"
        ) from None
    if not isinstance(net, torch.nn.Module):
        raise ActstoreError(f"model factory {model_name!r} returned {type(net).__name__}, "
                            "not a torch.nn.Module")
    return net


def absolute_factory(spec: str) -> str:
    """``file.py:fn`` and ``hf:PATH`` with an absolute path (the same run from any
    directory)."""
    if spec.startswith(HF_PREFIX):
        return HF_PREFIX + str(Path(spec[len(HF_PREFIX):]).expanduser().resolve())
    mod, sep, fn = spec.rpartition(":")
    return f"{Path(mod).resolve()}{sep}{fn}" if mod.endswith(".py") else spec


def _message(e: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _check_folder(path: Path) -> None:
    where = f"--model hf:{path}"
    if not path.is_dir():
        raise ActstoreError(f"{where}: no such folder; give a folder written by "
                            "model.save_pretrained(folder)")
    if not (path / "config.json").is_file():
        raise ActstoreError(f"{where}: the folder has no config.json; give a folder written by "
                            "model.save_pretrained(folder)")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin"))
        why = (f"it holds only {', '.join(pickled)} (a pickle, which actstore never loads)"
               if pickled else "it holds no weights (*.safetensors)")
        raise ActstoreError(
            f"{where}: {why}; save the weights as safetensors: "
            "model.save_pretrained(folder, safe_serialization=True)"
        )


def load_hf_model(path: str | Path) -> Any:
    """Load the Hugging Face model saved in folder ``path`` (its ``AutoModel`` class).

    Parameters
    ----------
    path : str or Path
        A folder written by ``model.save_pretrained(path)``: ``config.json`` and
        ``*.safetensors`` weights.

    Returns
    -------
    torch.nn.Module
        The model, in evaluation mode.

    Raises
    ------
    ActstoreError
        If transformers is not installed, the folder is missing, has no ``config.json`` or no
        safetensors weights (only a pickled ``.bin``), or transformers cannot load it.
    """
    p = Path(path).expanduser()
    _check_folder(p)
    try:
        from transformers import AutoModel
    except ImportError:
        raise ActstoreError(
            f"--model hf:{p} needs the transformers package: pip install 'actstore[hf]'"
        ) from None
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its bars would interleave with actstore's output
    try:
        model = AutoModel.from_pretrained(str(p), local_files_only=True, use_safetensors=True)
    except Exception as e:
        raise ActstoreError(f"--model hf:{p}: transformers cannot load the folder "
                            f"({type(e).__name__}: {_message(e)})") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return model.eval()


def hf_factory(spec: str) -> Callable[[], Any]:
    """A model factory for ``hf:PATH`` (no arguments), named ``hf_model``."""
    path = spec[len(HF_PREFIX):]

    def hf_model() -> Any:
        return load_hf_model(path)

    return hf_model


def describe_model(model: str, model_args: dict[str, Any] | None = None,
                   probe_set: Any = None, layers: str | list[str] = "all",
                   device: str = "cpu") -> dict[str, Any]:
    """The module tree of a model, as ``actstore layers`` prints it.

    Parameters
    ----------
    model : str
        ``package.module:factory``, ``file.py:factory`` or ``hf:PATH``.
    model_args : dict, optional
        Keyword arguments of the factory.
    probe_set : ProbeSet, optional
        With one, the model runs once on its first two samples: the rows get output shapes,
        and ``all`` leaves out modules that did not run.
    layers : str or list of str
        A ``--layers`` selection, marked in the rows' ``selected``.

    Returns
    -------
    dict
        ``model`` (the spec), ``type`` (class name), ``probe_set`` (its name or None),
        ``rows`` (see :func:`actstore.store._layers.module_table`), ``all`` and ``selected``
        (the layer names ``all`` and ``layers`` select).
    """
    from actstore.store._capture import dry_run
    from actstore.store._dump import check_device
    from actstore.store._layers import layer_names, module_table, resolve_layers

    check_device(device)
    name = absolute_factory(model)
    net = make_model(load_factory(name), model_args, name).to(device)
    trace = None if probe_set is None else dry_run(net, probe_set, device=device,
                                                   model_name=model)
    return {
        "model": model, "type": type(net).__name__,
        "probe_set": None if probe_set is None else probe_set.name,
        "rows": module_table(net, layers, trace),
        "all": [c for c, _ in layer_names(net, trace)],
        "selected": [c for c, _ in resolve_layers(net, layers, trace)],
    }
