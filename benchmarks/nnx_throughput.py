"""NNX overhead: images per second of ``efficientnet_jax.nnx`` against the same network in Linen, in one process.

``efficientnet_jax.nnx`` holds the Linen network through ``flax.nnx.bridge``, so the XLA programs are the
same; what NNX can add is Python work per call (``nnx.jit`` walks the module graph on every call, the
complaint this benchmark checks). Implementations, each a forward pass (``infer``) or a train step
(``train``: forward in train mode with dropout and drop path, cross-entropy, backward, ``optax.adam``,
BN statistics update):

  linen       ``jax.jit`` of ``model.apply`` / of a ``jax.value_and_grad`` step on (params, batch_stats,
              opt_state), state donated
  nnx_jit     ``nnx.jit`` of ``model(x)`` / of a step with ``nnx.value_and_grad`` and ``nnx.Optimizer``
              (the plain NNX pattern: graph traversal in Python on every call)
  nnx_cached  the same function through ``nnx.cached_partial(step, model, optimizer)`` (traversal cached)
  nnx_split   ``nnx.split`` once, then ``jax.jit`` of a function that ``nnx.merge``s, steps and returns
              ``nnx.state`` (the functional pattern), state donated
  nnx_tree    ``nnx.jit_partial(step, model, optimizer, graph=False)`` (Flax's tree mode)

Timing: every implementation is built and compiled first; then ``--repeats`` rounds, each timing
``--steps`` calls of every implementation in turn (the order rotates per round), so load from other
processes hits all alike. Each call is timed three ways: wall time to the result; process CPU time
(all threads: on a shared machine it moves far less than wall time with other load); and the time the
call takes to return before the result is ready (JAX dispatches asynchronously), which is the Python
work per call and so isolates what NNX adds. Reported per implementation: median img/s (wall) with the
range over calls, img per CPU-second, both as ratios to Linen, the dispatch time and its excess over
Linen's as a share of Linen's whole step. Acceptance (issue 16): NNX within 10% of Linen on CPU.

    python benchmarks/nnx_throughput.py --mode both --batch 8 --json nnx.json
    python benchmarks/nnx_throughput.py --quick      # a tiny model: seconds, a smoke test
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import efficientnet_jax as ej
from efficientnet_jax import nnx as ej_nnx

IMPLS = ("linen", "nnx_jit", "nnx_cached", "nnx_split", "nnx_tree")


def _loss(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _options(args):
    return dict(width=0.25, depth=0.25, resolution=args.resolution) if args.quick else {}


def _nnx_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: _loss(m(x, train=True), y))(model)
    optimizer.update(model, grads)
    return loss


def build(impl, mode, args, initial, x, y):
    """``run()`` doing one forward or train step of ``impl`` from the ``initial`` NNX model (its own copy of
    the values: steps donate their state) and returning an array to wait on."""
    linen_model, variables = ej_nnx.to_linen(initial)
    variables = jax.tree.map(jnp.copy, variables)
    model = ej_nnx.from_linen(args.model, variables, **_options(args))
    tx = optax.adam(1e-4)
    if impl == "linen" and mode == "infer":
        forward = jax.jit(lambda v, x: linen_model.apply(v, x, train=False))
        return lambda: forward(variables, x)
    if impl == "linen":
        def step(state, key):
            params, batch_stats, opt_state = state

            def loss_fn(params):
                logits, updates = linen_model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                                    rngs={"dropout": key}, mutable=["batch_stats"])
                return _loss(logits, y), updates["batch_stats"]

            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

        step = jax.jit(step, donate_argnums=0)
        holder = [(variables["params"], variables["batch_stats"], tx.init(variables["params"])), jax.random.key(1)]

        def run():
            holder[1], key = jax.random.split(holder[1])
            holder[0], loss = step(holder[0], key)
            return loss
        return run

    if mode == "infer":
        def fn(model):
            return model(x, train=False)
        nodes = (model,)
    else:
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

        def fn(model, optimizer):
            return _nnx_step(model, optimizer, x, y)
        nodes = (model, optimizer)
    if impl == "nnx_jit":
        jitted = nnx.jit(fn)
        return lambda: jitted(*nodes)
    if impl == "nnx_cached":
        with nnx.set_graph_mode(True), nnx.set_graph_updates(True):
            return nnx.cached_partial(nnx.jit(fn), *nodes)
    if impl == "nnx_tree":
        return nnx.jit_partial(fn, *nodes, graph=False)
    if impl == "nnx_split":
        graphdef, state = nnx.split(nodes)

        def functional(state):
            nodes = nnx.merge(graphdef, state)
            out = fn(*nodes)
            return out, nnx.state(nodes)

        functional = jax.jit(functional, donate_argnums=0)
        holder = [state]

        def run():
            out, holder[0] = functional(holder[0])
            return out
        return run
    raise ValueError(f"unknown implementation {impl!r}; choose from {IMPLS}")


def measure(mode, args):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, args.resolution, args.resolution, 3), dtype=np.float32))
    y = jnp.asarray(np.arange(args.batch) % 10)
    initial = ej_nnx.create_model(args.model, rngs=nnx.Rngs(0), **_options(args))
    runs, compile_s = {}, {}
    for impl in args.impls:
        start = time.perf_counter()
        runs[impl] = build(impl, mode, args, initial, x, y)
        jax.block_until_ready(runs[impl]())  # the first call compiles
        compile_s[impl] = time.perf_counter() - start
        jax.block_until_ready(runs[impl]())
    calls = {impl: {"wall": [], "cpu": [], "dispatch": []} for impl in args.impls}
    for r in range(args.repeats):
        order = args.impls[r % len(args.impls):] + args.impls[:r % len(args.impls)]
        for impl in order:
            for _ in range(args.steps):
                wall, cpu = time.perf_counter(), time.process_time()
                out = runs[impl]()
                dispatch = time.perf_counter()
                jax.block_until_ready(out)
                calls[impl]["wall"].append(time.perf_counter() - wall)
                calls[impl]["cpu"].append(time.process_time() - cpu)
                calls[impl]["dispatch"].append(dispatch - wall)
    result = {}
    for impl, times in calls.items():
        wall, cpu, dispatch = (statistics.median(times[k]) for k in ("wall", "cpu", "dispatch"))
        result[impl] = {
            "img_s": args.batch / wall, "min": args.batch / max(times["wall"]), "max": args.batch / min(times["wall"]),
            "img_per_cpu_s": args.batch / cpu, "dispatch_ms": 1e3 * dispatch, "step_ms": 1e3 * wall,
            "calls_wall_s": times["wall"], "build_and_compile_s": compile_s[impl],
        }
    if "linen" in result:
        base = result["linen"]
        for r in result.values():
            r["vs_linen"] = r["img_s"] / base["img_s"]
            r["cpu_vs_linen"] = r["img_per_cpu_s"] / base["img_per_cpu_s"]
            # What NNX adds in Python per call, as a share of Linen's whole step.
            r["overhead_ms"] = r["dispatch_ms"] - base["dispatch_ms"]
            r["overhead_of_step"] = r["overhead_ms"] / base["step_ms"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's")
    parser.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--steps", type=int, default=3, help="calls timed together in one round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="a tiny model at 64 pixels, 2 rounds of 2 calls")
    parser.add_argument("--json", help="write the results here as one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.resolution, args.steps, args.repeats = args.resolution or 64, 2, 2
    args.resolution = args.resolution or ej.model_info(args.model).resolution
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    summary = {
        "model": args.model, "batch": args.batch, "resolution": args.resolution, "steps": args.steps,
        "repeats": args.repeats, "quick": args.quick, "device": jax.devices()[0].device_kind,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "jax": jax.__version__, "flax": __import__("flax").__version__, "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "modes": {mode: measure(mode, args) for mode in modes},
    }
    print(f"{args.model} batch {args.batch} at {args.resolution}, {summary['device']}, medians of "
          f"{args.repeats} interleaved rounds x {args.steps} calls")
    print("| mode | impl | img/s (wall) | range | vs linen | img per CPU-s | vs linen | dispatch ms | "
          "overhead / step |\n|---|---|---|---|---|---|---|---|---|")
    for mode, results in summary["modes"].items():
        for impl, r in results.items():
            print(f"| {mode} | {impl} | {r['img_s']:.2f} | {r['min']:.2f}-{r['max']:.2f} | "
                  f"{r.get('vs_linen', 0):.3f} | {r['img_per_cpu_s']:.2f} | {r.get('cpu_vs_linen', 0):.3f} | "
                  f"{r['dispatch_ms']:.2f} | {100 * r.get('overhead_of_step', 0):+.2f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
