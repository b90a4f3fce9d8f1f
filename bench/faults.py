"""Fault trials for docs/RELIABILITY.md: kills, concurrent writers, flipped bytes, bad inputs.

Run:  .venv/bin/python bench/faults.py [--kills 20] [--flips 50] [--concurrent 3]

Each trial compares the store with a reference written without faults and counts complete
slots lost (must be 0) and corrupt reads that went unnoticed (must be 0).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "store"))
from factories import small_cnn

from actstore import ActstoreError
from actstore.store import open_store
from actstore.store._integrity import verify

FACTORY = str(Path(__file__).parents[1] / "tests" / "store" / "factories.py") + ":small_cnn"
STEPS = (0, 10, 100, 1000, 5000, 10000)


def arrays(url: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, a in g.arrays():
            out[f"{prefix}/{name}"] = a[...]
        for name, sub in g.groups():
            walk(sub, f"{prefix}/{name}")

    walk(zarr.open_group(url, mode="r", use_consolidated=False), "")
    return out


def complete(url: str) -> dict[int, dict[str, np.ndarray]]:
    try:
        rd = open_store(url).reader("r")
    except Exception:
        return {}
    return {s: {ly: rd.read(ly, s) for ly in rd.layers} for s in rd.complete_steps}


def setup(d: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    np.savez(d / "probe.npz", inputs=rng.standard_normal((n, 3, 16, 16)).astype("float32"),
             color=rng.integers(0, 4, n))
    (d / "ck").mkdir()
    model = small_cnn(width=16)
    for step in STEPS:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
        torch.save(model.state_dict(), d / "ck" / f"step_{step}.pt")


def dump_cmd(url: str, d: Path, run: str = "r") -> list[str]:
    return [sys.executable, "-m", "actstore.cli", "dump", url, str(d / "ck"), "--model", FACTORY,
            "--model-arg", "width=16", "--probe-set", str(d / "probe.npz"), "--run", run,
            "--batch-size", "16", "--json"]


def kills(d: Path, n: int) -> tuple[int, int, int, int]:
    ref = str(d / "ref.zarr")
    t0 = time.perf_counter()
    subprocess.run(dump_cmd(ref, d), check=True, capture_output=True)
    full = time.perf_counter() - t0
    expect = arrays(ref)
    rng = random.Random(7)
    done = lost = mismatched = rounds = 0
    url = str(d / "k0.zarr")
    while done < n:
        before = complete(url)
        p = subprocess.Popen(dump_cmd(url, d), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full))
        if p.poll() is None:
            p.kill()
            done += 1
        p.wait()
        after = complete(url)
        lost += sum(1 for s in before if s not in after)
        if len(after) == len(STEPS):
            rounds += 1
            subprocess.run(dump_cmd(url, d), check=True, capture_output=True)
            got = arrays(url)
            mismatched += sum(1 for k in expect if not np.array_equal(got.get(k), expect[k]))
            url = str(d / f"k{rounds}.zarr")
    return done, rounds, lost, mismatched


def concurrent(d: Path, trials: int) -> tuple[int, int]:
    bad = 0
    for t in range(trials):
        url = str(d / f"c{t}.zarr")
        subprocess.run(dump_cmd(url, d, "warmup"), check=True, capture_output=True)
        procs = [subprocess.Popen(dump_cmd(url, d, f"run{i}"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(4)]
        codes = [p.wait() for p in procs]
        st = open_store(url)
        ref = st.reader("warmup")
        for i in range(4):
            rd = st.reader(f"run{i}")
            ok = codes[i] == 0 and rd.complete.all() and all(
                np.array_equal(rd.read(ly, s), ref.read(ly, s)) for ly in rd.layers for s in STEPS)
            bad += not ok
    return trials * 4, bad


def flips(d: Path, n: int) -> tuple[int, int, int]:
    url = str(d / "ref.zarr")
    shards = sorted(p for p in Path(url, "runs", "r").rglob("c/*/*/*") if p.is_file())
    rng = random.Random(11)
    detected = refused = 0
    for _ in range(n):
        shard = rng.choice(shards)
        data = bytearray(shard.read_bytes())
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        original = shard.read_bytes()
        shard.write_bytes(bytes(data))
        try:
            problems = verify(open_store(url))
            detected += any(p.kind == "corrupt" for p in problems)
            layer, slot = shard.parts[-5], int(shard.parts[-3])
            rd = open_store(url).reader("r")
            try:
                rd.read(layer, int(rd.steps[slot]))
            except ActstoreError:
                refused += 1
        finally:
            shard.write_bytes(original)
    return n, detected, refused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--flips", type=int, default=50)
    ap.add_argument("--concurrent", type=int, default=3)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="actstore-faults-"))
    setup(d)
    k, rounds, lost, mism = kills(d, args.kills)
    print(f"SIGKILL of `actstore dump` at a random time: {k} kills over {rounds} complete "
          f"dumps; complete slots lost: {lost}; arrays differing from the clean dump after "
          f"re-run: {mism}")
    n, bad = concurrent(d, args.concurrent)
    print(f"4 concurrent dump processes, different runs of one store: {n} runs written; "
          f"runs incomplete or differing: {bad}")
    n, det, ref = flips(d, args.flips)
    print(f"one flipped bit at a random byte of a shard: {n} trials; verify detected: {det}; "
          f"reads refused: {ref}")


if __name__ == "__main__":
    main()
