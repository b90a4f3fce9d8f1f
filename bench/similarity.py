"""Benchmark: all-pairs CKA and RSA matrices vs per-pair loops and rsatoolbox.

Run:  .venv/bin/python bench/similarity.py [--M 100] [--n 2000] [--wmin 64] [--wmax 1024]
                                          [--pairs 150] [--repeat 3] [--device numpy]

M representations of n stimuli, widths log-spaced from wmin to wmax (float32, as stored),
sharing a low-dimensional latent so that similarities are spread over (0, 1). In one process:

  (a) linear CKA, all pairs i < j
      loop      a per-pair loop of the feature-space formula of Kornblith et al., as a user
                writes it: centre X and Y, ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), float64.
                With --pairs P > 0 a random sample of P pairs is timed and the time scaled to
                all M (M - 1) / 2 pairs (pairs drawn uniformly); --pairs 0 times every pair.
      actstore  similarity_matrix(reps, "cka"): one blocked Gram of signatures.
  (b) RSA, correlation-distance RDMs compared by Pearson correlation
      rsatoolbox  calc_rdm(datasets, method="correlation") + compare(rdms, rdms, "corr")
      actstore    similarity_matrix(reps, "rsa")

The machine is shared, so the methods are timed in turns (``--repeat`` rounds, the best time
of each kept). It prints times, speed-ups, the largest difference of the values, and the
fraction of the machine's float64 matrix-multiply rate (measured in the same rounds) that the
engine reaches, in its best round and in its first call of the process (fresh memory).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from actstore.probes import plan_similarity, similarity_matrix


def make_reps(M: int, n: int, wmin: int, wmax: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 16))
    widths = np.unique(np.geomspace(wmin, wmax, M).round().astype(int))
    widths = np.resize(widths, M)
    reps = []
    for d in widths:
        mix = rng.uniform(0.2, 2.0)
        X = latent @ rng.standard_normal((16, d)) + mix * rng.standard_normal((n, d))
        reps.append(np.maximum(X, 0).astype(np.float32))  # post-ReLU, float32 as stored
    return reps


def user_linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    num = np.linalg.norm(Y.T @ X) ** 2
    return float(num / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


def matmul_rate(n: int = 2000) -> float:
    """Best-of-3 float64 GEMM rate of this machine, in GFLOP/s."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def engine_flops(n: int, widths: list[int]) -> float:
    """Useful floating-point operations of the Gram path: strips + products."""
    M = len(widths)
    return float(n * n * sum(widths) + M * M * n * n / 2)


def best(times: list[float]) -> float:
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--M", type=int, default=100)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--wmin", type=int, default=64)
    ap.add_argument("--wmax", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=150, help="pairs timed in the CKA loop; 0 = all")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats (best is kept)")
    ap.add_argument("--device", default=None, help="engine backend: numpy, torch, cuda, cupy")
    ap.add_argument("--skip-rsatoolbox", action="store_true")
    args = ap.parse_args()

    reps = make_reps(args.M, args.n, args.wmin, args.wmax)
    widths = [r.shape[1] for r in reps]
    M, n = len(reps), args.n
    print(f"M = {M} representations, n = {n} stimuli, widths {min(widths)}..{max(widths)} "
          f"(mean {np.mean(widths):.0f}), float32; device {args.device or 'numpy'}; "
          f"best of {args.repeat} interleaved repeats")
    plan = plan_similarity([r.shape for r in reps], "cka")
    print(f"engine plan: {plan.method} path, {len(plan.chunks)} stimulus blocks, "
          f"{len(plan.blocks)} representation block(s)")
    all_pairs = [(i, j) for i in range(M) for j in range(i + 1, M)]
    rng = np.random.default_rng(2)
    if args.pairs and args.pairs < len(all_pairs):
        sample = [all_pairs[k] for k in rng.choice(len(all_pairs), args.pairs, replace=False)]
    else:
        sample = all_pairs

    # (a) linear CKA: engine and loop interleaved ---------------------------------------------
    peaks, t_eng, t_loop = [], [], []
    for _ in range(args.repeat):
        peaks.append(matmul_rate())
        t = time.perf_counter()
        ours = similarity_matrix(reps, "cka", device=args.device).values
        t_eng.append(time.perf_counter() - t)
        t = time.perf_counter()
        vals = [user_linear_cka(reps[i], reps[j]) for i, j in sample]
        t_loop.append((time.perf_counter() - t) * len(all_pairs) / len(sample))
    peak = max(peaks)
    print(f"machine float64 matmul rate: {peak:.1f} GFLOP/s (2000^3 GEMM, best of "
          f"{3 * args.repeat})\n")
    diff = max(abs(v - ours[i, j]) for v, (i, j) in zip(vals, sample, strict=True))
    te, tl = best(t_eng), best(t_loop)
    rate = engine_flops(n, widths) / te / 1e9
    scaled = "" if len(sample) == len(all_pairs) else " (scaled)"
    print("(a) linear CKA, all pairs")
    print("| method | pairs timed | time s (all pairs) | speed-up | max abs diff |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| per-pair loop (feature-space formula) | {len(sample)} of {len(all_pairs)} | "
          f"{tl:.1f}{scaled} | 1.0 | - |")
    print(f"| actstore similarity_matrix | all | {te:.2f} | **{tl / te:.1f}x** | {diff:.1e} |")
    print(f"all runs (s): engine {[round(x, 1) for x in t_eng]}, "
          f"loop {[round(x, 1) for x in t_loop]}")
    first = engine_flops(n, widths) / t_eng[0] / 1e9
    print(f"engine: {rate:.1f} GFLOP/s = {rate / peak:.0%} of the measured matmul rate; "
          f"first call of the process {first:.1f} GFLOP/s = {first / peak:.0%}\n")

    # (b) RSA ---------------------------------------------------------------------------------
    t_eng, t_rsa = [], []
    theirs = None
    for _ in range(args.repeat if not args.skip_rsatoolbox else 1):
        t = time.perf_counter()
        ours_rsa = similarity_matrix(reps, "rsa", device=args.device).values
        t_eng.append(time.perf_counter() - t)
        if not args.skip_rsatoolbox:
            import rsatoolbox

            t = time.perf_counter()
            rdms = rsatoolbox.rdm.calc_rdm([rsatoolbox.data.Dataset(x) for x in reps],
                                           method="correlation")
            theirs = rsatoolbox.rdm.compare(rdms, rdms, method="corr")
            t_rsa.append(time.perf_counter() - t)
            del rdms
    te = best(t_eng)
    rate_rsa = engine_flops(n, widths) / te / 1e9
    print("(b) RSA: correlation RDMs, Pearson comparison, all pairs")
    print("| method | time s | speed-up | max abs diff |")
    print("| --- | --- | --- | --- |")
    if theirs is not None:
        diff = float(np.abs(theirs - ours_rsa).max())
        tr = best(t_rsa)
        print(f"| rsatoolbox calc_rdm + compare | {tr:.1f} | 1.0 | - |")
        print(f"| actstore similarity_matrix | {te:.2f} | **{tr / te:.1f}x** | {diff:.1e} |")
        print(f"all runs (s): engine {[round(x, 1) for x in t_eng]}, "
              f"rsatoolbox {[round(x, 1) for x in t_rsa]}")
    else:
        print(f"| actstore similarity_matrix | {te:.2f} | - | - |")
    first = engine_flops(n, widths) / t_eng[0] / 1e9
    print(f"engine: {rate_rsa:.1f} GFLOP/s = {rate_rsa / peak:.0%} of the measured matmul rate; "
          f"first call {first:.1f} GFLOP/s = {first / peak:.0%}")


if __name__ == "__main__":
    main()
