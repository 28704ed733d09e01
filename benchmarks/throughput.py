"""Images per second of our model: the jitted forward (infer) or the full jitted train step (train).

Warm-up (compile) is timed separately; then several repetitions of ``--steps`` steps each,
reporting the median. The last line printed with ``--json`` is one JSON object with ``img_s``.

    python benchmarks/throughput.py --model efficientnet_b0 --batch 32 --resolution 224 --mode train --impl ours --json
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import platform
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root: `train` is not installed

import efficientnet_jax as ej  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def ours(args):
    """A callable running one step, plus its compile time."""
    from train.optim import build_optimizer
    from train.step import create_train_state, train_step

    model = ej.create_model(args.model, dtype=DTYPES[args.dtype], remat=args.remat)
    images = jax.random.normal(jax.random.key(1), (args.batch, args.resolution, args.resolution, 3), DTYPES[args.dtype])
    labels = jnp.arange(args.batch) % 1000
    if args.mode == "infer":
        variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), images[:1], train=False)
        fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
        start = time.perf_counter()
        compiled = fn.lower(variables, images).compile()
        compile_s = time.perf_counter() - start
        return (lambda: compiled(variables, images)), compile_s

    config = ml_collections.ConfigDict(dict(
        learning_rate=0.016, batch_size=args.batch, lr_schedule="exponential", warmup_epochs=5.0,
        optimizer="rmsprop_tf", weight_decay=1e-5,
    ))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1], train=False))["params"]
    tx, schedule = build_optimizer(config, steps_per_epoch=1000, total_steps=10**6, params=params)
    state = jax.jit(functools.partial(create_train_state, model, tx, image_size=args.resolution))(jax.random.key(0))
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule, base_key=jax.random.key(2),
                                     label_smoothing=0.1, ema_decay=0.9999), donate_argnums=0)
    batch = {"image": images, "label": labels}
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    holder = [state]

    def run():
        holder[0], metrics = compiled(holder[0], batch)
        return metrics["loss"]

    return run, compile_s


def measure(run, steps: int, repeats: int, batch: int) -> list[float]:
    jax.block_until_ready(run())  # warm-up: first execution after compile
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = run()
        jax.block_until_ready(out)
        rates.append(steps * batch / (time.perf_counter() - start))
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_b0", choices=ej.list_models())
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's native resolution")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--mode", default="train", choices=["train", "infer"])
    parser.add_argument("--impl", default="ours", choices=["ours"], help="peers: see the performance issue")
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.resolution, args.steps, args.repeats = 4, 64, 2, 2
    args.resolution = args.resolution or ej.model_info(args.model).resolution

    run, compile_s = ours(args)
    rates = measure(run, args.steps, args.repeats, args.batch)
    result = {
        "date": datetime.date.today().isoformat(), "impl": args.impl, "model": args.model, "mode": args.mode,
        "batch": args.batch, "resolution": args.resolution, "dtype": args.dtype, "remat": args.remat,
        "img_s": statistics.median(rates), "img_s_all": [round(r, 2) for r in rates],
        "compile_s": round(compile_s, 2),
        "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
        "host": platform.machine(), "cpus": len(__import__("os").sched_getaffinity(0)),
        "jax": jax.__version__, "numpy": np.__version__,
    }
    if not args.json:
        print(f"| impl | model | mode | batch | res | dtype | img/s | compile s |\n|---|---|---|---|---|---|---|---|\n"
              f"| {args.impl} | {args.model} | {args.mode} | {args.batch} | {args.resolution} | {args.dtype} | "
              f"{result['img_s']:.2f} | {compile_s:.1f} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
