"""Capture: forward hooks -> reductions on the device -> a background writer into the store.

The forward pass runs in batches over the probe set: one input array is passed as
``model(x)``, several named ones as ``model(**batch)`` (``input_ids``, ``attention_mask``, ...).
Each requested module's output is reduced on the device (e.g. global average pool of a conv
map, or the mean over the valid tokens of a sequence), copied to the host, checked
(NaN/Inf, float16 range) and handed to a writer thread through a bounded queue, so that the
next batch is computed while the previous one is compressed and written. The forward pass
stops right after the last requested layer has produced its output.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from actstore._args import whole_number
from actstore._errors import ActstoreError, ActstoreWarning, ProvenanceError
from actstore.store import _layout as L
from actstore.store._layers import (
    ModuleTrace,
    _patterns,
    reduction_for,
    resolve_layers,
    trace_modules,
)
from actstore.store._probeset import MASK
from actstore.store._reduce import first_tensor, parse_reduction, reduce_output, sequence_mask

__all__ = ["capture_slot", "check_values", "dry_run", "weights_hash"]

FLOAT16_MAX = 65504.0


# -- checks ----------------------------------------------------------------------------------
def check_values(a: np.ndarray, layer: str, step: int, dtype: str) -> np.ndarray:
    """Refuse NaN/Inf and values beyond float16; return ``a`` cast to ``dtype``."""
    if dtype not in ("float32", "float16"):
        raise ActstoreError(f"storage dtype must be float32 or float16, not {dtype!r}")
    if not np.isfinite(a).all():
        bad = int(a.size - np.isfinite(a).sum())
        raise ActstoreError(
            f"layer {layer!r} at checkpoint {step} has {bad} NaN/Inf activations; fix the model "
            "or its inputs (nothing of this checkpoint was kept)"
        )
    if a.size and (dtype == "float16" or (a.dtype.kind == "f" and a.dtype.itemsize > 4)):
        m = float(np.abs(a).max())
        if dtype == "float16" and m > FLOAT16_MAX:
            raise ActstoreError(
                f"layer {layer!r} at checkpoint {step} has values up to {m:.4g}, beyond "
                "float16's range (65504); store it with --dtype float32"
            )
        if m > float(np.finfo(np.float32).max):
            raise ActstoreError(
                f"layer {layer!r} at checkpoint {step} has values up to {m:.4g}, beyond "
                "float32's range (3.4e+38); rescale the activations"
            )
    return a.astype(dtype, copy=False)


def weights_hash(model: Any) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes and bytes), as 64 hex digits.

    Raises
    ------
    ActstoreError
        If ``model`` has no ``state_dict`` (is not a ``torch.nn.Module``).
    """
    import torch

    if not callable(getattr(model, "state_dict", None)):
        raise ActstoreError(f"model must be a torch.nn.Module, not {type(model).__name__}")

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        # raw bytes, so that dtypes numpy lacks (bfloat16, float8) hash too
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_hash_of = weights_hash  # capture_slot's parameter of the same name hides the function


# -- background writer -----------------------------------------------------------------------
class _SlotWriter:
    """Writer thread: buffers whole shards per layer and writes each shard in one call."""

    def __init__(self, arrays: dict[str, Any], slot: int, n: int, maxsize: int = 4):
        self.arrays = arrays
        self.slot = slot
        self.n = n
        self.q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self.bufs: dict[str, tuple[int, np.ndarray, int]] = {}
        self.thread = threading.Thread(target=self._run, name="actstore-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain after a failure
            try:
                start, batch = item
                for name, a in batch.items():
                    self._add(name, start, a)
            except BaseException as e:
                self.error = e

    def _add(self, name: str, start: int, a: np.ndarray) -> None:
        arr = self.arrays[name]
        shard = arr.shards[1] if arr.shards else arr.chunks[1]
        pos = 0
        while pos < len(a):
            if name not in self.bufs:
                s0 = start + pos
                rows = min(shard, self.n - s0)
                if rows <= 0:
                    raise RuntimeError(f"layer {name!r} gives more rows than the probe set")
                self.bufs[name] = (s0, np.empty((rows, *a.shape[1:]), dtype=a.dtype), 0)
            s0, buf, fill = self.bufs[name]
            take = min(len(buf) - fill, len(a) - pos)
            buf[fill : fill + take] = a[pos : pos + take]
            fill += take
            pos += take
            if fill == len(buf):
                arr[self.slot, s0 : s0 + len(buf)] = buf
                del self.bufs[name]
            else:
                self.bufs[name] = (s0, buf, fill)

    def put(self, start: int, batch: dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((start, batch))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.bufs:  # pragma: no cover - would mean fewer samples than the probe set
            raise RuntimeError(f"unwritten activations left for layers {sorted(self.bufs)}")


# -- feeding the probe set to the model -------------------------------------------------------
def _host_batch(ps: Any, start: int, stop: int) -> dict[str, np.ndarray]:
    """The probe set's input arrays of samples ``start:stop``, by input name (``inputs``
    for a probe set of one array)."""
    b = ps.batch(start, stop)
    return dict(b) if isinstance(b, Mapping) else {"inputs": b}


def _batch_mask(ps: Any, start: int, stop: int) -> np.ndarray | None:
    """The attention mask (samples, tokens) of a batch, or None if the probe set has none."""
    mask = ps.mask
    return None if mask is None else np.asarray(mask[start:stop])


def _to_device(batch: dict[str, np.ndarray], device: Any, in_dtype: Any) -> dict[str, Any]:
    """Host arrays as tensors on ``device``; floating inputs in the model's dtype."""
    import torch

    out = {}
    for k, a in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(a))
        out[k] = (t.to(in_dtype) if t.is_floating_point() else t).to(device)
    return out


def _call(model: Any, tensors: dict[str, Any]) -> Any:
    """One input is passed as it is (``model(x)``), several by name (``model(**batch)``)."""
    if list(tensors) == ["inputs"]:
        return model(tensors["inputs"])
    return model(**tensors)


def _model_device_dtype(model: Any, device: Any) -> tuple[Any, Any]:
    import torch

    if device is None:
        p0 = next(iter(model.parameters()), None)
        device = p0.device if p0 is not None else torch.device("cpu")
    floats = [p for p in model.parameters() if p.is_floating_point()]
    return device, floats[0].dtype if floats else torch.float32


def dry_run(model: Any, ps: Any, n: int = 2, device: Any = None,
            model_name: str | None = None) -> dict[str, ModuleTrace]:
    """Run ``model`` once on the first ``n`` samples of probe set ``ps`` (in evaluation mode,
    without gradients) and trace which modules ran, with their output shapes.

    Returns
    -------
    dict of str to ModuleTrace
        See :func:`actstore.store._layers.trace_modules`.

    Raises
    ------
    ActstoreError
        If the probe set has no inputs or the forward pass fails (one line saying why).
    """
    import torch

    if ps.inputs is None:
        raise ActstoreError(f"probe set {ps.name!r} has no inputs stored; a forward pass "
                            "needs the stimuli")
    device, in_dtype = _model_device_dtype(model, device)
    host = _host_batch(ps, 0, min(n, ps.n))
    tensors = _to_device(host, device, in_dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return trace_modules(model, lambda: _call(model, tensors))
    except ActstoreError:
        raise
    except Exception as e:
        raise ActstoreError(_forward_error(model_name or type(model).__name__, ps, tensors,
                                           device, e)) from None
    finally:
        model.train(was_training)


def _forward_error(model_name: str, ps: Any, tensors: dict[str, Any], device: Any,
                   e: BaseException) -> str:
    """One line for a forward pass that raised on a batch of the probe set."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    if not isinstance(e, RuntimeError) or not msg:
        msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    if not isinstance(ps.inputs, Mapping):
        xb = tensors["inputs"]
        shape = tuple(int(k) for k in ps.inputs.shape)
        what = (f"inputs of shape {shape}, dtype {ps.inputs.dtype}; fed as "
                f"{str(xb.dtype).removeprefix('torch.')} batches of shape {tuple(xb.shape)}")
    else:
        what = "inputs " + ", ".join(
            f"{k}={str(t.dtype).removeprefix('torch.')}{list(t.shape)}"
            for k, t in tensors.items()) + " passed by name"
    return (
        f"the forward pass of model {model_name} failed on probe set {ps.name!r} ({what} on "
        f"{device}): {msg}; make the model accept these inputs, or give a probe set in the "
        "form it expects (nothing of this checkpoint was kept)"
    )


def _needs_trace(model: Any, layers: str | list[str]) -> bool:
    """Whether ``all`` is asked of a model that declares no layers (a dry run filters it)."""
    return getattr(model, "actstore_layers", None) is None and "all" in _patterns(layers)


def _recorded_otherwise(table: dict[str, Any], sel: list[tuple[str, str]],
                        specs: dict[str, str]) -> str | None:
    """How a complete slot's layer table differs from what a capture asks for, or None."""
    chosen = {c for c, _ in sel}
    if table and set(table) != chosen:
        return f"layers {sorted(table)}; this capture selects {sorted(chosen)}"
    for c, p in sel:
        row = table.get(c, {})
        if row.get("module") not in (None, p):
            return f"layer {c!r} from module {row['module']!r}; this capture records {p!r}"
        red = row.get("reduction")
        # "none": a (batch, units) output, which every reduction but randproj keeps as it is
        same = red is None or red == specs[c] or (
            red == "none" and parse_reduction(specs[c])[0] != "randproj")
        if not same:
            return f"layer {c!r} reduced by {red!r}; this capture asks for {specs[c]!r}"
    return None


class _StopForward(BaseException):
    """Raised in a hook once every requested layer has produced its output."""


# -- capture ---------------------------------------------------------------------------------
def capture_slot(
    writer: Any,
    model: Any,
    step: int,
    layers: str | list[str] = "all",
    reduce: str | dict[str, str] | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    device: Any = None,
    weights_hash: str | None = None,
    progress: Callable[[int], None] | None = None,
    source: str | None = None,
    model_name: str | None = None,
) -> bool:
    """Record one checkpoint of ``model`` into an open :class:`RunWriter`.

    The probe set runs through the model in batches; forward hooks reduce each selected
    layer's output and write it to the checkpoint's slot, which is marked complete last.

    Parameters
    ----------
    writer : RunWriter
        The run, opened with ``store.writer(...)``.
    model : torch.nn.Module
        Any module; tuple, dict and dataclass outputs (Hugging Face) are handled.
    step : int
        Training step of this checkpoint.
    layers : str or list of str
        ``all``, ``leaves``, names, module paths or glob patterns (see
        :func:`actstore.store.resolve_layers`). For ``all`` of a model that declares no
        layers, the model first runs on two samples: modules that do not run are left out.
    reduce : str or dict of glob to str, optional
        Reduction of conv maps / token sequences (see :data:`REDUCTIONS`). By default the
        model's ``actstore_reductions`` (glob -> spec) where it declares one, else ``mean``.
        Token sequences are reduced over the valid tokens of the probe set's
        ``attention_mask`` where it has one.
    dtype : {"float32", "float16"}
        Storage dtype; float16 refuses values beyond its range.
    batch_size : int
        Probe-set samples per forward pass.
    device : str or torch.device, optional
        Where to run the model (default: where its parameters are).
    weights_hash : str, optional
        Provenance of the weights; a complete slot recorded from other weights is an error.
    progress : callable, optional
        Called with the number of samples done after each batch.
    source : str, optional
        The checkpoint file the weights came from (recorded for ``actstore repair``).
    model_name : str, optional
        How error messages name the model (e.g. its factory); default its class name.

    Returns
    -------
    bool
        ``False`` if the slot was already complete (nothing was done).
    """
    import torch

    if dtype not in ("float32", "float16"):
        raise ActstoreError(f"storage dtype must be float32 or float16, not {dtype!r}")
    batch_size = whole_number(batch_size, "batch size", minimum=1)
    ps = None
    trace = None
    if _needs_trace(model, layers):
        ps = writer.store.probe_set(writer.probe_set_name)
        trace = dry_run(model, ps, device=device, model_name=model_name)
    sel = resolve_layers(model, layers, trace)
    specs = {c: reduction_for(c, p, reduce, model) for c, p in sel}
    for s in specs.values():
        parse_reduction(s)
    if weights_hash is None:
        weights_hash = _hash_of(model)
    if writer.is_complete(step, weights_hash):
        other = _recorded_otherwise(writer._attrs.get(L.ATTR_LAYERS, {}), sel, specs)
        if other:
            raise ProvenanceError(
                f"checkpoint {step} of run {writer.run_id!r} is complete with {other}; "
                "a run records the same layers the same way at every checkpoint (use a new run "
                "id)"
            )
        return False
    ps = ps or writer.store.probe_set(writer.probe_set_name)
    if ps.inputs is None:
        raise ActstoreError(
            f"probe set {ps.name!r} has no inputs stored; capture needs the stimuli"
        )
    writer.check_layer_names([c for c, _ in sel])
    writer.check_layer_set({c for c, _ in sel}, "this capture selects")
    modules = dict(model.named_modules())
    device, in_dtype = _model_device_dtype(model, device)
    wants_root = any(p == "" for _, p in sel)

    captured: dict[str, Any] = {}
    raw_shape: dict[str, tuple[int, ...]] = {}
    applied: dict[str, tuple[str, list[int]]] = {}
    masked: set[str] = set()
    mask_now: list[Any] = [None]  # the attention mask of the batch being run, on the device

    calls: dict[str, int] = {}
    whole_pass = [True]  # the first batch runs the whole forward pass: it counts the calls

    def hook_for(cname: str) -> Callable[..., None]:
        def hook(mod: Any, inp: Any, out: Any) -> None:
            calls[cname] = calls.get(cname, 0) + 1
            if cname in captured:
                return  # a module used at several places: its first call is recorded
            t = first_tensor(out)
            if t is None:
                raise ActstoreError(f"layer {cname!r} returned no tensor; choose another layer")
            raw_shape[cname] = tuple(int(k) for k in t.shape)
            m = sequence_mask(t, mask_now[0])
            if m is not None:
                masked.add(cname)
            red, used = reduce_output(t.detach(), specs[cname], cname, m)
            applied.setdefault(cname, (used, list(t.shape[1:])))
            # float64 stays float64 until check_values, which refuses values beyond float32
            red = red if red.dtype == torch.float64 else red.float()
            # device-to-host sync point: the reduced batch is copied to host memory
            captured[cname] = red.cpu().numpy()
            if not wants_root and not whole_pass[0] and len(captured) == len(sel):
                raise _StopForward

        return hook

    n = ps.n
    was_training = model.training
    model.eval()
    handles = [modules[p].register_forward_hook(hook_for(c)) for c, p in sel]
    sw: _SlotWriter | None = None
    slot_started = False
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                host = _host_batch(ps, start, stop)
                tensors = _to_device(host, device, in_dtype)
                hmask = _batch_mask(ps, start, stop)
                mask_now[0] = None if hmask is None else torch.from_numpy(
                    np.ascontiguousarray(hmask)).to(device)
                captured.clear()
                calls.clear()
                whole_pass[0] = start == 0
                try:
                    _call(model, tensors)
                except _StopForward:
                    pass
                except ActstoreError:
                    raise
                except Exception as e:
                    raise ActstoreError(_forward_error(
                        model_name or type(model).__name__, ps, tensors, device, e
                    )) from None
                missing = [c for c, _ in sel if c not in captured]
                if missing:
                    raise ActstoreError(
                        f"layers {missing} produced no output in the forward pass; they are not "
                        "used by this model's forward(); choose other layers"
                    )
                for c, _ in sel:
                    if captured[c].shape[0] != stop - start:
                        raise ActstoreError(
                            f"layer {c!r} gives outputs of shape {raw_shape[c]} for a batch "
                            f"of {stop - start} samples: its first axis is not the batch (a "
                            "sequence-first layer, or one that mixes samples); record other "
                            "layers, or make this one batch-first (nothing of this checkpoint "
                            "was kept)"
                        )
                batch = {c: check_values(captured[c], c, step, dtype) for c, _ in sel}
                if sw is None:
                    writer.begin_slot(step, weights_hash, source)
                    slot_started = True
                    arrays = {}
                    for c, p in sel:
                        used, out_shape = applied[c]
                        kind = {1: "vector", 2: "sequence"}.get(len(out_shape), "conv")
                        info: dict[str, Any] = {"module": p, "reduction": used,
                                                "output_shape": out_shape, "kind": kind}
                        if used == "all":
                            info["unit_dims"] = ["token", "unit"]
                        if c in masked:
                            info["token_mask"] = MASK
                        if calls.get(c, 1) > 1:
                            info["calls_per_forward"] = calls[c]
                            if c not in writer._attrs.get(L.ATTR_LAYERS, {}):
                                warnings.warn(ActstoreWarning(
                                    f"module {p!r} runs {calls[c]} times in one forward pass "
                                    f"(one module used at several places); layer {c!r} "
                                    "records its first call"), stacklevel=3)
                        arrays[c] = writer.layer_array(c, batch[c].shape[1:], dtype, info)
                    sw = _SlotWriter(arrays, writer._slot_index(step), n)
                sw.put(start, batch)
                if progress is not None:
                    progress(min(n, start + batch_size))
        if sw is not None:
            sw.close()
            sw = None
        writer.end_slot(step)
    except BaseException:
        if sw is not None:
            try:
                sw.close()
            except BaseException:
                pass
        if slot_started:
            writer.rollback_slot(step)
        raise
    finally:
        for h in handles:
            h.remove()
        captured.clear()
        model.train(was_training)
    return True
