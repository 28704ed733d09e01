"""How long a checkpoint save blocks the training loop, B0 and B7 train state, before and after
per-process fingerprints hashed off the training thread.

The state is the training program's own (params, batch_stats, TF-RMSProp slots, EMA of both, counters),
built from ``jax.eval_shape`` and filled with zeros, so B7 needs no init compile. "before" is the save as
it was up to issue 14: a synchronous ``device_get`` and SHA-256 of the whole state (``fingerprint``, kept
to check records of that format), its record written, then orbax's asynchronous save. "after" is
``Checkpoints.save``: a host copy of this process's pieces, orbax's save, the hashing on a background
thread. Each save is timed from the call to its return (what the training loop waits for); the
asynchronous write is then waited for, untimed, before the next one. One warm-up save each, then
``--repeats``.

    python benchmarks/checkpoint_save.py                      # B0 and B7, 3 repeats, prints JSON
    python benchmarks/checkpoint_save.py --models efficientnet_b0 --repeats 1   # the smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root: `train` is not installed

import efficientnet_jax as ej  # noqa: E402
from train.checkpoint import LEGACY_VERSION, Checkpoints, fingerprint, host_pieces  # noqa: E402
from reference_step import reference_step  # noqa: E402


def save_before(checkpoints: Checkpoints, step: int, state) -> None:
    """The save up to issue 14: the whole state fetched and hashed on the training thread, then orbax."""
    checkpoints.manager.wait_until_finished()
    checkpoints.fingerprints.mkdir(exist_ok=True)
    (checkpoints.fingerprints / str(step)).write_text(f"{LEGACY_VERSION} {fingerprint(state)}")
    checkpoints.manager.save(step, args=ocp.args.StandardSave(state), force=True)


def save_after(checkpoints: Checkpoints, step: int, state) -> None:
    checkpoints.save(step, state)


def train_state(name: str):
    """The training program's state for ``name`` at 1000 classes, zeros (no init compile)."""
    _, init = reference_step(ej.create_model(name))
    shapes = jax.eval_shape(init, jax.random.key(0))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def time_saves(save, state, directory: pathlib.Path, repeats: int) -> list[float]:
    checkpoints = Checkpoints(directory, keep=1)
    seconds = []
    try:
        for step in range(repeats + 1):  # step 0: warm-up
            start = time.perf_counter()
            save(checkpoints, step, state)
            if step:
                seconds.append(time.perf_counter() - start)
            checkpoints.wait()
    finally:
        checkpoints.close()
    return seconds


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["efficientnet_b0", "efficientnet_b7"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the checkpoints (default: a temporary dir)")
    args = parser.parse_args()
    root = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="checkpoint_save_"))
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "backend": jax.devices()[0].platform, "jax": jax.__version__,
              "orbax": __import__("importlib.metadata").metadata.version("orbax-checkpoint"),
              "repeats": args.repeats, "models": {}}
    try:
        for name in args.models:
            state = train_state(name)
            size = sum(x.nbytes for x in jax.tree.leaves(state))
            result = {"state_mb": round(size / 2**20, 1)}
            for label, save in (("before", save_before), ("after", save_after)):
                seconds = time_saves(save, state, root / f"{name}_{label}" / "checkpoints", args.repeats)
                result[f"{label}_s"] = [round(s, 4) for s in seconds]
                result[f"{label}_median_s"] = round(statistics.median(seconds), 4)
                shutil.rmtree(root / f"{name}_{label}", ignore_errors=True)
            result["speedup"] = round(result["before_median_s"] / result["after_median_s"], 2)
            # The parts that changed, without orbax's own blocking part (the same in both):
            result["hash_before_s"] = round(min(timed(fingerprint, state) for _ in range(args.repeats)), 4)
            result["host_copy_after_s"] = round(min(timed(host_pieces, state) for _ in range(args.repeats)), 4)
            report["models"][name] = result
            print(f"{name}: state {result['state_mb']} MB, save blocks {result['before_median_s']} s before, "
                  f"{result['after_median_s']} s after ({result['speedup']}x); of which SHA-256 before "
                  f"{result['hash_before_s']} s, host copy after {result['host_copy_after_s']} s", file=sys.stderr,
                  flush=True)
            del state
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
