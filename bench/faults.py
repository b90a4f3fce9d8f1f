"""Fault trials for docs/RELIABILITY.md: kills, stalled writers, flipped bits, concurrent writers.

Run:  .venv/bin/python bench/faults.py [--kills 20] [--stalls 4] [--flips 8] [--concurrent 3]
                                       [--ttl 12] [--only kill,stall,flip,concurrent]

Every loop prints how many faults it tried, how many were detected (the store or the command
said so), how many were repaired (the store ended equal, array for array, to one written without
faults) and how much data was lost: complete checkpoint slots that disappeared or changed, and
corrupt data read without an error. Data lost must be 0.

- kill: ``actstore dump`` killed with SIGKILL at a random time, then run again until complete.
- stall: a writer of a run on an S3 server (moto, on loopback) paused with SIGSTOP for longer
  than its lease, a second writer started on the run meanwhile (the same checkpoints in even
  trials, other weights of the same steps in odd ones), then the first resumed. The writers'
  lease lasts ``--ttl`` seconds here (60 s in actstore) so that a trial takes seconds.
- flip: one bit flipped at a random byte of a random object of one kind (layer shards, label
  and sample-id chunks of a run or its probe set, probe-set inputs, status and checkpoint
  chunks, a layer's or the run's ``zarr.json``), then ``verify`` and ``repair --model``.
- concurrent: 4 ``actstore dump`` processes writing different runs of one store at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "store"))
from factories import small_cnn

from actstore import ActstoreError
from actstore.store import open_store, repair, verify
from actstore.store._layout import ATTR_SLOTS

FACTORY = str(Path(__file__).parents[1] / "tests" / "store" / "factories.py") + ":small_cnn"
MODEL_ARGS = {"width": 16}
STEPS = (0, 10, 100, 1000, 5000, 10000)
#: worker processes are polite on a shared machine: one thread each
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Counts:
    tried: int = 0
    detected: int = 0
    repaired: int = 0
    lost: int = 0
    #: not repaired, and still refused in one line (no wrong data read)
    refused: int = 0

    def line(self, what: str, notes: str = "") -> str:
        left = f", not repaired but refused in one line {self.refused}" if self.refused else ""
        return (f"{what}: tried {self.tried}, detected {self.detected}, repaired "
                f"{self.repaired}{left}, data lost {self.lost}"
                + (f" ({notes})" if notes else ""))


def arrays(url: str) -> dict[str, np.ndarray]:
    """Every array of the store, read with zarr alone (no actstore checks)."""
    out: dict[str, np.ndarray] = {}

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, a in g.arrays():
            out[f"{prefix}/{name}"] = a[...]
        for name, sub in g.groups():
            walk(sub, f"{prefix}/{name}")

    walk(zarr.open_group(url, mode="r", use_consolidated=False), "")
    return out


def fresh(url: str, mode: str = "r") -> Any:
    """``open_store`` that sees what other processes wrote: s3fs keeps listings of a bucket
    in the file-system object that it reuses."""
    if url.startswith("s3://"):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    return open_store(url, mode=mode)


def complete(url: str, run: str = "r") -> dict[int, dict[str, np.ndarray]]:
    """The complete slots of ``run`` as actstore reads them ({} when it cannot)."""
    try:
        rd = fresh(url).reader(run)
        return {s: {ly: rd.read(ly, s) for ly in rd.layers} for s in rd.complete_steps}
    except Exception:
        return {}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def setup(d: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    np.savez(d / "probe.npz", inputs=rng.standard_normal((n, 3, 16, 16)).astype("float32"),
             color=rng.integers(0, 4, n))
    for ck, factor in (("ck", 1.01), ("ckB", 0.99)):  # ckB: other weights, the same steps
        (d / ck).mkdir()
        model = small_cnn(width=16)
        for step in STEPS:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(factor)
            torch.save(model.state_dict(), d / ck / f"step_{step}.pt")


def dump_cmd(url: str, d: Path, run: str = "r", ck: str = "ck",
             prefix: tuple[str, ...] = ("-m", "actstore.cli")) -> list[str]:
    return [sys.executable, *prefix, "dump", url, str(d / ck), "--model", FACTORY,
            "--model-arg", "width=16", "--probe-set", str(d / "probe.npz"), "--run", run,
            "--batch-size", "16", "--json"]


def run_quiet(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV)


# -- SIGKILL ---------------------------------------------------------------------------------
def kills(d: Path, n: int) -> tuple[Counts, str]:
    ref = str(d / "ref.zarr")
    t0 = time.perf_counter()
    run_quiet(dump_cmd(ref, d)).check_returncode()
    full = time.perf_counter() - t0
    expect = arrays(ref)
    rng = random.Random(7)
    c = Counts()
    rounds = in_round = 0
    url = str(d / "k0.zarr")

    def finish() -> None:
        """Run the dump once more (it completes the store or finds it complete) and compare
        with the uninterrupted dump: the kills of this store were repaired if it is equal."""
        nonlocal rounds, in_round, url
        run_quiet(dump_cmd(url, d)).check_returncode()
        got = arrays(url)
        mismatched = sum(1 for k in expect if not np.array_equal(got.get(k), expect[k]))
        c.lost += mismatched
        c.repaired += in_round if mismatched == 0 else 0
        rounds += 1
        in_round = 0
        url = str(d / f"k{rounds}.zarr")

    while c.tried < n:
        before = complete(url)
        p = subprocess.Popen(dump_cmd(url, d), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(rng.uniform(0.2, full))
        killed = p.poll() is None
        if killed:
            p.kill()
            c.tried += 1
            in_round += 1
        p.wait()
        after = complete(url)
        c.lost += sum(1 for s in before if s not in after or not same(before[s], after[s]))
        c.detected += killed and len(after) < len(STEPS)
        if len(after) == len(STEPS):
            finish()
    if in_round:
        finish()
    return c, (f"{rounds} stores, each dumped until complete; detected: kills after which "
               "the store listed the run as unfinished (or not yet there); repaired: kills "
               "after which re-running the dump made the store equal, array for array, to an "
               "uninterrupted dump")


# -- SIGSTOP past the lease ------------------------------------------------------------------
_SHORT_LEASE = (
    "import sys; import actstore.store._lease as L; "
    "L.TTL_SECONDS = float(sys.argv.pop(1)); L.MARGIN_SECONDS = L.TTL_SECONDS / 3; "
    "from actstore.cli import main; sys.argv[0] = 'actstore'; main()"
)


def _moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on loopback, its bucket, and the AWS variables that reach it."""
    import s3fs

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    ENV.update(os.environ)
    deadline = time.time() + 60
    while True:
        try:
            s3fs.S3FileSystem(skip_instance_cache=True).mkdir("faults")
            return proc, "s3://faults"
        except Exception:
            if time.time() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


def _by_hash(url: str) -> dict[str, dict[str, np.ndarray]]:
    """weights hash -> the arrays of the slot recorded from those weights."""
    rd = fresh(url).reader("r")
    slots = dict(rd.group.attrs)[ATTR_SLOTS]
    return {slots[str(s)]["weights_hash"]: {ly: rd.read(ly, s) for ly in rd.layers}
            for s in rd.complete_steps}


def stalls(d: Path, n: int, ttl: float) -> tuple[Counts, str]:
    refs: dict[str, dict[str, np.ndarray]] = {}
    for ck in ("ck", "ckB"):
        ref = str(d / f"stall-ref-{ck}.zarr")
        run_quiet(dump_cmd(ref, d, ck=ck)).check_returncode()
        refs.update(_by_hash(ref))
    server, bucket = _moto()
    # fresh() drops s3fs's file-system objects; asyncio would log each unclosed session
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    c = Counts()
    outcomes: list[str] = []
    prefix = ("-c", _SHORT_LEASE, str(ttl))
    try:
        for t in range(n):
            url = f"{bucket}/{uuid.uuid4().hex}.zarr"
            a = subprocess.Popen(dump_cmd(url, d, prefix=prefix), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, env=ENV)
            deadline = time.time() + 300
            while not complete(url) and a.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            if a.poll() is not None:
                raise RuntimeError(f"writer A ended before it could be paused: {a.stderr.read()}")
            a.send_signal(signal.SIGSTOP)
            paused_with = set(complete(url))
            time.sleep(ttl + 2)  # A's lease has expired
            b = run_quiet(dump_cmd(url, d, ck="ck" if t % 2 == 0 else "ckB", prefix=prefix))
            a.send_signal(signal.SIGCONT)
            _, a_err = a.communicate()
            c.tried += 1
            # A must stop when it resumes, in one line, exit code 1
            stopped = a.returncode == 1 and "stopped writing run" in a_err \
                and len(a_err.strip().splitlines()) == 1
            c.detected += stopped
            if not stopped:
                print(f"  the paused writer said (exit {a.returncode}): {a_err.strip()[-600:]}",
                      flush=True)
            outcomes.append(f"A {a.returncode}, B {b.returncode}")
            after = complete(url)
            rd = fresh(url).reader("r")
            slots = dict(rd.group.attrs).get(ATTR_SLOTS, {})
            for s, got in after.items():  # each complete slot: one writer's, whole, hashed
                ref = refs.get(slots.get(str(s), {}).get("weights_hash"))
                c.lost += ref is None or not same(ref, got)
            c.lost += sum(1 for s in paused_with if s not in after)
            if len(after) < len(STEPS):  # B refused (other weights): finish with A's command
                run_quiet(dump_cmd(url, d, prefix=prefix))
                after = complete(url)
            c.repaired += len(after) == len(STEPS) and verify(fresh(url)) == []
    finally:
        server.kill()
        server.wait()
    return c, (f"lease {ttl:g} s, pause {ttl + 2:g} s; detected: the paused writer stopped "
               "with one line `actstore: error: stopped writing run …` (exit 1) when it "
               "resumed; repaired: the run complete afterwards (re-running the first command "
               "where the second writer was refused) with every slot equal to a clean dump of "
               f"the weights it records; exit codes (A, B): {'; '.join(outcomes)}")


# -- flipped bits ----------------------------------------------------------------------------
FLIP_KINDS: dict[str, str] = {
    "layer shard": "runs/r/{layer}/c/*/*/*",
    "run label chunk": "runs/r/color/c/*",
    "run sample-id chunk": "runs/r/sample/c/*",
    "probe-set label or sample-id chunk": "probe_sets/probe/[cs]*/c/*",
    "probe-set inputs chunk": "probe_sets/probe/inputs/c/*/*/*/*",
    "status or checkpoint chunk": "runs/r/[cs][ht]*/c/*",
    "a layer's zarr.json": "runs/r/{layer}/zarr.json",
    "the run's zarr.json": "runs/r/zarr.json",
}


def _failed(what: str, e: BaseException) -> None:
    """Show an error that is no one-line ActstoreError, with the actstore line that let it
    through."""
    import traceback

    ours = [f for f in traceback.extract_tb(e.__traceback__) if "/actstore/" in f.filename]
    where = f" at {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""
    print(f"  {what} failed with {type(e).__name__}{where}: {str(e)[:200]}", flush=True)


def _reads(url: str) -> dict[str, np.ndarray] | None:
    """What actstore reads from the store: every complete slot, the run's labels and sample
    ids, the probe set; None when it refuses (with an ActstoreError)."""
    try:
        st = open_store(url)
        rd = st.reader("r")
        out = {f"{ly}@{s}": rd.read(ly, s) for s in rd.complete_steps for ly in rd.layers}
        out.update({f"label {k}": v for k, v in rd.labels.items()})
        out["sample"] = rd.sample
        ps = st.probe_set("probe")
        out.update({f"probe {k}": v for k, v in ps.labels.items()})
        out["probe sample"] = ps.sample
        out["probe inputs"] = ps.inputs
        return out
    except ActstoreError:
        return None
    except Exception as e:  # a failure that is no one-line error: shown, counted as refused
        _failed("read", e)
        return None


def flips(d: Path, n: int) -> list[tuple[str, Counts]]:
    clean = d / "ref.zarr"
    if not clean.exists():
        run_quiet(dump_cmd(str(clean), d)).check_returncode()
    expect_arrays = arrays(str(clean))
    expect_reads = _reads(str(clean))
    assert expect_reads is not None
    layers = open_store(str(clean)).reader("r").layers
    rng = random.Random(11)
    out = []
    for kind, pattern in FLIP_KINDS.items():
        c = Counts()
        for _ in range(n):
            url = d / "flip.zarr"
            shutil.rmtree(url, ignore_errors=True)
            shutil.copytree(clean, url)
            targets = sorted({p for ly in layers for p in url.glob(pattern.format(layer=ly))
                              if p.is_file()})
            target = rng.choice(targets)
            data = bytearray(target.read_bytes())
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
            target.write_bytes(bytes(data))
            c.tried += 1
            try:
                c.detected += bool(verify(open_store(str(url))))
            except ActstoreError:  # refused to open or read: detected as well
                c.detected += 1
            except Exception as e:
                _failed("verify", e)
            read = _reads(str(url))
            # corrupt data read without an error
            silent = read is not None and not same(read, expect_reads)
            try:
                repair(open_store(str(url), mode="a"), model=FACTORY, model_args=MODEL_ARGS)
            except ActstoreError:
                pass
            except Exception as e:
                _failed("repair", e)
            try:
                fixed = verify(open_store(str(url))) == [] and same(arrays(str(url)),
                                                                     expect_arrays)
            except Exception:
                fixed = False
            c.repaired += fixed
            after = _reads(str(url))  # None: refused with a one-line error
            changed = after is not None and any(
                k not in after or not np.array_equal(after[k], v)
                for k, v in expect_reads.items())
            c.lost += silent or changed
            c.refused += not fixed and after is None
            if not fixed:
                print(f"  not repaired: {kind}: {target.relative_to(url)} byte {pos}",
                      flush=True)
        out.append((kind, c))
    return out


# -- concurrent writers ----------------------------------------------------------------------
def concurrent(d: Path, trials: int) -> tuple[Counts, str]:
    c = Counts()
    for t in range(trials):
        url = str(d / f"c{t}.zarr")
        run_quiet(dump_cmd(url, d, "warmup")).check_returncode()
        procs = [subprocess.Popen(dump_cmd(url, d, f"run{i}"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=ENV) for i in range(4)]
        codes = [p.wait() for p in procs]
        st = open_store(url)
        ref = st.reader("warmup")
        for i in range(4):
            rd = st.reader(f"run{i}")
            ok = codes[i] == 0 and rd.complete.all() and all(
                np.array_equal(rd.read(ly, s), ref.read(ly, s)) for ly in rd.layers for s in STEPS)
            c.tried += 1
            c.repaired += ok
            c.lost += not ok
    return c, "runs written by 4 processes at once; repaired: runs complete and equal to a " \
              "dump done alone"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--stalls", type=int, default=4)
    ap.add_argument("--flips", type=int, default=8, help="bit flips per kind of object")
    ap.add_argument("--concurrent", type=int, default=3)
    ap.add_argument("--ttl", type=float, default=12.0,
                    help="seconds the writers' lease lasts in the stall trials")
    ap.add_argument("--only", default="kill,stall,flip,concurrent")
    args = ap.parse_args()
    loops = set(args.only.split(","))
    d = Path(tempfile.mkdtemp(prefix="actstore-faults-"))
    setup(d)
    if "kill" in loops:
        c, notes = kills(d, args.kills)
        print(c.line("SIGKILL of `actstore dump` at a random time", notes), flush=True)
    if "stall" in loops:
        c, notes = stalls(d, args.stalls, args.ttl)
        print(c.line("S3 writer paused (SIGSTOP) past its lease, a second writer meanwhile",
                     notes), flush=True)
    if "flip" in loops:
        for kind, c in flips(d, args.flips):
            print(c.line(f"one flipped bit in a {kind}" if not kind.startswith(("a ", "the "))
                         else f"one flipped bit in {kind}"), flush=True)
    if "concurrent" in loops:
        c, notes = concurrent(d, args.concurrent)
        print(c.line("4 concurrent dump processes, different runs of one store", notes),
              flush=True)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
