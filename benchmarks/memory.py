"""Peak memory of one training step, B0-B7 at native resolution, with and without ``remat``.

Uses XLA's own buffer assignment (``jit(...).lower(...).compile().memory_analysis()``) of the full
train step of ``train/step.py`` (forward, backward, TF-RMSProp, BN update, EMA; the state donated),
compiled for abstract inputs: nothing is executed or allocated, so B7 at 600x600 is feasible on a
laptop. Peak = arguments + outputs - aliased (donated) + temporaries. Two batch sizes give the
memory per image (the slope) and the batch-independent part (state, gradients, optimizer
temporaries); the largest batch that fits a memory budget follows from the two.

``--measure`` also runs the step in this process and samples the RSS, to check the analysis
against the real thing (the increase of RSS during the step should be close to temp + outputs).

    python benchmarks/memory.py                                   # B0-B7, remat off/on, batch 1 and 2
    python benchmarks/memory.py --models efficientnet_b0 --batches 2 4 --measure
Figures are for the backend it runs on (XLA:CPU here): GPU/TPU fuse differently.
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root: `train` is not installed

import efficientnet_jax as ej  # noqa: E402
from train.optim import build_optimizer  # noqa: E402
from train.step import create_train_state, train_step  # noqa: E402

GiB = 2**30


def compiled_step(name: str, batch: int, remat: bool, dtype=jnp.float32):
    """The train step compiled for abstract inputs, plus those inputs' shapes."""
    model = ej.create_model(name, remat=remat, dtype=dtype)
    res = ej.model_info(name).resolution
    config = ml_collections.ConfigDict(dict(
        learning_rate=0.016, batch_size=batch, lr_schedule="exponential", warmup_epochs=5.0,
        optimizer="rmsprop_tf", weight_decay=1e-5,
    ))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, res, res, 3), dtype)))["params"]
    tx, schedule = build_optimizer(config, steps_per_epoch=1000, total_steps=10**6, params=params)
    init = functools.partial(create_train_state, model, tx, image_size=res)
    state = jax.eval_shape(init, jax.random.key(0))
    batch_shapes = {"image": jax.ShapeDtypeStruct((batch, res, res, 3), dtype),
                    "label": jax.ShapeDtypeStruct((batch,), jnp.int32)}
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule, base_key=jax.random.key(2),
                                     label_smoothing=0.1, ema_decay=0.9999), donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, batch_shapes).compile()
    return compiled, init, batch_shapes, time.perf_counter() - start


def analyse(compiled) -> dict:
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    return {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes, "alias": m.alias_size_in_bytes,
            "temp": m.temp_size_in_bytes, "peak": peak, "xla_peak": getattr(m, "peak_memory_in_bytes", None)}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure_rss(compiled, init, batch_shapes) -> dict:
    """Runs the step once (after a warm-up run) and returns the RSS increase during it."""
    state = jax.jit(init)(jax.random.key(0))
    batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in batch_shapes.items()}
    state, _ = compiled(state, batch)  # first run: allocator warm-up
    jax.block_until_ready(state)
    before, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    done.set()
    thread.join()
    return {"rss_before": before, "rss_increase": max(peak[0], _rss()) - before}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[f"efficientnet_b{i}" for i in range(8)])
    parser.add_argument("--batches", nargs=2, type=int, default=[1, 2], help="two batch sizes: slope and offset")
    parser.add_argument("--remat", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--measure", action="store_true", help="also run the step and sample the RSS")
    parser.add_argument("--jsonl", help="append one JSON object per compiled configuration to this file")
    args = parser.parse_args()

    print("| model | res | remat | per image (GB) | fixed (GB) | peak at batch "
          f"{args.batches[0]} / {args.batches[1]} (GB) | images per GB | largest batch in 16 / 80 GB | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for remat in args.remat:
            rows = []
            for batch in args.batches:
                compiled, init, shapes, compile_s = compiled_step(name, batch, remat == "on")
                row = {"model": name, "resolution": ej.model_info(name).resolution, "remat": remat == "on",
                       "batch": batch, "compile_s": round(compile_s, 1), **analyse(compiled),
                       "backend": jax.default_backend()}
                if args.measure:
                    row.update(measure_rss(compiled, init, shapes))
                rows.append(row)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")
                print(json.dumps(row), file=sys.stderr, flush=True)
            (b1, r1), (b2, r2) = [(r["batch"], r) for r in rows]
            per_image = (r2["peak"] - r1["peak"]) / (b2 - b1)
            fixed = r1["peak"] - b1 * per_image
            fits = [max(0, int((cap * 1e9 - fixed) // per_image)) for cap in (16, 80)]
            print(f"| {name} | {r1['resolution']} | {remat} | {per_image / 1e9:.3f} | {fixed / 1e9:.3f} | "
                  f"{r1['peak'] / 1e9:.2f} / {r2['peak'] / 1e9:.2f} | {1e9 / per_image:.1f} | {fits[0]} / {fits[1]} | "
                  f"{r1['compile_s'] + r2['compile_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
