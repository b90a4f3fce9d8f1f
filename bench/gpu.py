"""GPU benchmark of the decoder engine: decoders/s and fraction of the device's matmul peak.

Run on a machine with a CUDA GPU (after `pip install 'actstore[gpu]'`):

    python bench/gpu.py                       # --device cuda when torch sees a GPU
    python bench/gpu.py --device torch        # the same on the CPU, for comparison

It measures, in one process: the device's float32 and float64 matmul rate (a 4096^2 GEMM),
then the ridge engine on synthetic activations (n samples x d units, F ten-class features,
5-fold CV, 13 penalties) for several widths d, and prints per width the time, decoders fitted
per second (feature x class-column x penalty x fold) and the achieved fraction of the float64
matmul rate for the engine's dominant work (X^T X over every fold plus one eigendecomposition
per fold, counted as 9 d^3).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def matmul_rate(device: str, dtype: str, size: int = 4096, repeat: int = 5) -> float:
    """Measured GEMM rate in GFLOP/s."""
    import torch

    dev = "cuda" if device == "cuda" else "cpu"
    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=dev)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=dev)
    (a @ b).sum().item()  # warm-up; .item() is a device-to-host sync point
    t0 = time.perf_counter()
    for _ in range(repeat):
        c = a @ b
    c.sum().item()
    return 2 * size**3 * repeat / (time.perf_counter() - t0) / 1e9


def main() -> None:
    import torch

    from actstore.probes import probe_arrays

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # the matmul rate is measured with torch, on the GPU or on the CPU: the engine's device
    # must be the same one
    ap.add_argument("--device", choices=("cuda", "torch"),
                    default="cuda" if torch.cuda.is_available() else "torch")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--widths", default="256,1024,4096")
    ap.add_argument("--features", type=int, default=3)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch: run with --device torch, or on a GPU")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    r32 = matmul_rate(args.device, "float32")
    r64 = matmul_rate(args.device, "float64", size=2048)
    print(f"device {args.device} ({name}): matmul {r32:.0f} GFLOP/s float32, {r64:.0f} float64")
    rng = np.random.default_rng(0)
    labels = {f"f{i}": rng.integers(0, 10, args.n) for i in range(args.features)}
    print(f"{'width':>6} {'seconds':>8} {'decoders/s':>11} {'GFLOP/s':>8} {'of f64 peak':>11}")
    for d in map(int, args.widths.split(",")):
        X = rng.standard_normal((args.n, d)).astype("float32")
        # let every feature leave a trace in the activations, so decoding is not at chance
        for i, y in enumerate(labels.values()):
            X[:, i * 10 : i * 10 + 10] += np.eye(10, dtype="float32")[y]
        probe_arrays(X[:2000], labels={k: v[:2000] for k, v in labels.items()},
                     decoders=("ridge",), device=args.device)  # warm-up
        t0 = time.perf_counter()
        ds = probe_arrays(X, labels, decoders=("ridge",), device=args.device)
        dt = time.perf_counter() - t0
        n_alpha = ds.sizes.get("alpha", 13)
        fits = args.features * 10 * n_alpha * 5
        flops = 5 * 2 * args.n * d * d + 5 * 9 * d**3
        print(f"{d:6d} {dt:8.2f} {fits / dt:11.0f} {flops / dt / 1e9:8.1f} "
              f"{flops / dt / 1e9 / r64:11.1%}")


if __name__ == "__main__":
    main()
