"""Benchmark: Trifeature rendering, batched renderer vs per-image loop implementations.

Run:  .venv/bin/python bench/render.py [--n 10000] [--size 64] [--n-loop 1000] [--n-pixel 50]

Timed in this one process, on the same random shape/texture/colour/pose parameters:
  batched     actstore.training.render: all images at once, vectorised over (image, y, x)
              in chunks of 256 images
  per-image   the same numpy formulas called one image at a time (a loop over images)
  per-pixel   actstore.training.render_reference: a plain Python loop over images and
              pixels (the straightforward implementation; also the test reference)
The loops run on a subset (--n-loop, --n-pixel images) and are reported as images/s; the
script checks that all three produce identical bytes on that subset.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from actstore.training import render, render_reference, sample_render_params


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="images for the batched renderer")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--n-loop", type=int, default=1000, help="images for the per-image loop")
    ap.add_argument("--n-pixel", type=int, default=50, help="images for the per-pixel loop")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    n, size = args.n, args.size
    params = sample_render_params(
        rng, rng.integers(0, 10, n), rng.integers(0, 10, n), rng.integers(0, 10, n), size
    )

    t_batch, images = timed(lambda: render(params, size), repeat=2)
    assert isinstance(images, np.ndarray)

    n_loop = min(args.n_loop, n)
    t_loop, looped = timed(lambda: np.concatenate(
        [render(params.take(slice(i, i + 1)), size) for i in range(n_loop)]
    ))
    n_pix = min(args.n_pixel, n)
    t_pix, pixel = timed(lambda: render_reference(params.take(slice(0, n_pix)), size))
    assert np.array_equal(looped, images[:n_loop]), "per-image loop differs"
    assert np.array_equal(pixel, images[:n_pix]), "per-pixel loop differs"

    rows = [
        ("batched (actstore)", n, t_batch),
        ("per-image loop (numpy)", n_loop, t_loop),
        ("per-pixel loop (Python)", n_pix, t_pix),
    ]
    rate_batch = n / t_batch
    print(f"Trifeature rendering, {size}x{size} px, identical output checked")
    print(f"{'method':<26}{'images':>8}{'seconds':>10}{'images/s':>12}{'batched speed-up':>18}")
    for name, k, t in rows:
        rate = k / t
        print(f"{name:<26}{k:>8}{t:>10.2f}{rate:>12.0f}{rate_batch / rate:>17.1f}x")
    print(f"{n} images in {t_batch:.2f} s "
          f"(the per-pixel loop would take {n / (n_pix / t_pix):.0f} s)")


if __name__ == "__main__":
    main()
