"""Benchmark: capture + store of every layer of a CNN vs the bare forward pass and np.save.

Run:  .venv/bin/python bench/dump.py [--n 2000] [--size 64] [--reduce mean,flatten]

For each reduction it times, in this one process:
  forward   the bare forward pass over the probe set, no hooks
  np.save   forward pass with hooks that keep the same reduced arrays, then numpy.save of
            exactly the bytes actstore stores (uncompressed, one .npy per layer)
  actstore  capture into a fresh store (hooks, reduction, checks, background writer,
            compression, crc32c, sharded Zarr)
and prints the ratio actstore / (forward + np.save), write throughput (MB/s of activation
bytes) and the compression ratio of every codec on the post-ReLU activations.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from actstore.store import CODECS, ProbeSet, create_store, reduce_output, resolve_layers


class BenchCNN(nn.Module):
    """AlexNet-style CNN for 64x64 inputs: five conv layers, two dense layers."""

    actstore_layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.conv1 = nn.Sequential(nn.Conv2d(3, w, 5, stride=2, padding=2), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.conv4 = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.conv5 = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(),
                                   nn.MaxPool2d(2))
        self.flat = nn.Flatten()
        self.fc6 = nn.Sequential(nn.Linear(4 * w * 8 * 8, 256), nn.ReLU())
        self.fc7 = nn.Sequential(nn.Linear(256, 256), nn.ReLU())
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))  # (B, 4w, 8, 8)
        return self.head(self.fc7(self.fc6(self.flat(h))))


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Blurred noise images, (n, 3, size, size) float32: local structure like natural images."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((n, 3, size, size)).astype("float32"))
    k = torch.ones(3, 1, 5, 5) / 25.0
    return nn.functional.conv2d(x, k, padding=2, groups=3).numpy()


def timed(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--reduce", default="mean,flatten")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = BenchCNN().eval()
    inputs = smooth_images(args.n, args.size)
    ps = ProbeSet("bench", labels={"label": np.arange(args.n) % 10}, inputs=inputs)
    tmp = Path(tempfile.mkdtemp(prefix="actstore-bench-"))
    print(f"BenchCNN, {args.n} images {args.size}x{args.size}, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'reduce':8} {'forward s':>10} {'fwd+np.save s':>14} {'actstore s':>11} "
          f"{'ratio':>6} {'MB':>8} {'MB/s':>7}")
    rows = []
    for spec in args.reduce.split(","):
        sel = resolve_layers(model, "all")
        x = torch.from_numpy(inputs)

        def forward(x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                for s in range(0, args.n, args.batch):
                    model(x[s : s + args.batch])

        def forward_and_save(x: torch.Tensor = x, spec: str = spec, sel=sel) -> dict:
            outs: dict[str, list[np.ndarray]] = {c: [] for c, _ in sel}
            mods = dict(model.named_modules())
            hooks = [mods[p].register_forward_hook(
                lambda m, i, o, c=c: outs[c].append(reduce_output(o, spec, c)[0].numpy()))
                for c, p in sel]
            forward(x)
            for h in hooks:
                h.remove()
            arrays = {c: np.concatenate(v) for c, v in outs.items()}
            d = tmp / "npy"
            d.mkdir(exist_ok=True)
            for c, a in arrays.items():
                np.save(d / f"{c}.npy", a)
            return arrays

        def dump(spec: str = spec) -> None:
            url = str(tmp / f"s-{spec}.zarr")
            shutil.rmtree(url, ignore_errors=True)
            st = create_store(url)
            st.add_probe_set(ps)
            with st.writer("r", "bench", steps=[0]) as w:
                w.capture(model, 0, reduce=spec, batch_size=args.batch)

        t_fwd = timed(forward, args.repeat)
        t_save = timed(forward_and_save, args.repeat)
        t_dump = timed(dump, args.repeat)
        arrays = forward_and_save()
        mb = sum(a.nbytes for a in arrays.values()) / 1e6
        ratio = t_dump / t_save
        rows.append((spec, arrays))
        print(f"{spec:8} {t_fwd:10.2f} {t_save:14.2f} {t_dump:11.2f} {ratio:6.2f} {mb:8.1f} "
              f"{mb / t_dump:7.1f}")
    print()
    print("compression ratio (raw bytes / stored bytes) and encode throughput per codec, "
          "post-ReLU activations:")
    print(f"{'reduce':8} {'codec':11} {'ratio':>6} {'MB/s':>7}")
    for spec, arrays in rows:
        for codec in CODECS:
            url = str(tmp / f"codec-{spec}-{codec}.zarr")
            st = create_store(url)
            st.add_probe_set(ps.subset(np.arange(args.n), name="bench"))
            t0 = time.perf_counter()
            with st.writer("r", "bench", steps=[0], codec=codec) as w:
                w.write_slot(0, arrays)
            dt = time.perf_counter() - t0
            raw = sum(a.nbytes for a in arrays.values())
            stored = sum(f.stat().st_size for c in arrays
                         for f in Path(url, "runs", "r", c, "c").rglob("*") if f.is_file())
            print(f"{spec:8} {codec:11} {raw / stored:6.2f} {raw / 1e6 / dt:7.1f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
