"""Compile time of the training and evaluation steps, blocks unrolled vs scanned (``scan_blocks=True``).

Every (model, layout) is lowered and compiled in its own child process from abstract shapes
(``jax.eval_shape`` of the train state, ``jax.ShapeDtypeStruct`` batches): nothing is allocated, so L2 at
800 px costs only its compile. The step is the training program's (``train/step.py``: forward, backward,
TF-RMSProp, L2, BN update, EMA; the state donated); the eval step is ``train.step.eval_step``. Children run
in interleaved order (unrolled, scanned, unrolled, ...) so that load from other processes hits both
layouts alike, and with the persistent compilation cache off (a hit would time a file read).

``--cache`` shows the persistent cache instead: the B0 train step compiled in two fresh processes that
share a cache directory; the second is a hit and costs the tracing and lowering only.

    python benchmarks/compile_time.py                                   # B0, B4, B7, L2; JSON last line
    python benchmarks/compile_time.py --models efficientnet_b0 --batch 32 --cache
Wall seconds depend on the machine and its load; the ratio scanned/unrolled of one run is what to compare.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("efficientnet_b0", "efficientnet_b4", "efficientnet_b7", "efficientnet_l2")
LAYOUTS = ("unrolled", "scanned")


def compile_steps(model_name: str, layout: str, batch: int, resolution: int | None) -> dict:
    """Lower and compile the train and eval steps of one model from abstract shapes; seconds of each phase."""
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT))  # `train` is not installed
    import efficientnet_jax as ej
    from reference_step import reference_step
    from train.step import eval_step

    model = ej.create_model(model_name, scan_blocks=layout == "scanned")
    resolution = resolution or model.spec.resolution
    image = jax.ShapeDtypeStruct((batch, resolution, resolution, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    train, init = reference_step(model, batch)
    state = jax.eval_shape(init, jax.random.key(0))
    params = state.params
    evaluate = jax.jit(functools.partial(eval_step, model=model))
    mask = jax.ShapeDtypeStruct((batch,), jnp.bool_)
    out = {"model": model_name, "layout": layout, "batch": batch, "resolution": resolution,
           "blocks": len(model.spec.blocks()), "params": ej.count_params(params)}
    for name, fn, args in (("train", train, (state, {"image": image, "label": labels})),
                           ("eval", evaluate, (state.params, state.batch_stats,
                                               {"image": image, "label": labels, "mask": mask}))):
        start = time.perf_counter()
        lowered = fn.lower(*args)
        out[f"{name}_lower_s"] = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        lowered.compile()
        out[f"{name}_compile_s"] = time.perf_counter() - start
        out[f"{name}_compile_cpu_s"] = time.process_time() - cpu
        out[f"{name}_total_s"] = out[f"{name}_lower_s"] + out[f"{name}_compile_s"]
    return out


def run_child(args, model: str, layout: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", model, layout, "--batch", str(args.batch)]
    cmd += ["--resolution", str(args.resolution)] if args.resolution else []
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": model, "layout": layout, "error": f"timed out after {args.timeout} s"}
    if proc.returncode:
        return {"model": model, "layout": layout, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def child_env(cache_dir: str | None) -> dict:
    env = dict(os.environ)
    if cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    else:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def layouts_compared(args) -> dict:
    results, env = {}, child_env(None)
    for i, model in enumerate(args.models):
        order = LAYOUTS if i % 2 == 0 else LAYOUTS[::-1]
        for layout in order:
            result = run_child(args, model, layout, env)
            results.setdefault(model, {})[layout] = result
            print(json.dumps(result), file=sys.stderr, flush=True)
    return results


def cache_demo(args) -> dict:
    """The B0 train step compiled in two fresh processes sharing one persistent cache directory."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = child_env(cache_dir)
        runs = [run_child(args, "efficientnet_b0", "unrolled", env) for _ in range(2)]
    return {"first": runs[0], "second": runs[1]}


def table(results: dict) -> str:
    rows = ["| model | blocks | train step unrolled s | scanned s | speed-up | eval step unrolled s | scanned s |",
            "|---|---|---|---|---|---|---|"]
    for model, by_layout in results.items():
        u, s = by_layout.get("unrolled", {}), by_layout.get("scanned", {})
        if "error" in u or "error" in s:
            rows.append(f"| {model} | | {u.get('error', '')} | {s.get('error', '')} | | | |")
            continue
        rows.append(f"| {model} | {u['blocks']} | {u['train_total_s']:.1f} | {s['train_total_s']:.1f} | "
                    f"{u['train_total_s'] / s['train_total_s']:.2f}× | {u['eval_total_s']:.1f} | "
                    f"{s['eval_total_s']:.1f} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=None, help="default: each model's native resolution")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    parser.add_argument("--cache", action="store_true", help="time a persistent-cache hit instead")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(compile_steps(*args.child, args.batch, args.resolution)))
        return
    import jax

    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
               "host": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__, "batch": args.batch}
    if args.cache:
        summary["cache"] = cache_demo(args)
        first, second = summary["cache"]["first"], summary["cache"]["second"]
        print(f"B0 train step: first process {first.get('train_total_s', float('nan')):.1f} s, "
              f"second (cache hit) {second.get('train_total_s', float('nan')):.1f} s")
    else:
        summary["results"] = layouts_compared(args)
        print(table(summary["results"]))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
