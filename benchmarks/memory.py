"""Peak memory of one training step, B0-B7 at native resolution, with and without ``remat``.

Uses XLA's own buffer assignment (``jit(...).lower(...).compile().memory_analysis()``) of the full
train step of ``train/step.py`` (forward, backward, TF-RMSProp, BN update, EMA; the state donated),
compiled for abstract inputs: nothing is executed or allocated, so B7 at 600x600 is feasible on a
laptop. Peak = arguments + outputs - aliased (donated) + temporaries. Per image = temporaries /
batch (temporaries double from batch 8 to 16 on B0; below 8 they are not linear, presumably because the CPU
depthwise gradient works in chunks of 4 images); the batch-independent part is the state.
Two ``--batches`` give a slope and offset instead. The largest batch that fits a budget follows.

``--measure`` also runs the step in this process and samples the RSS, to check the analysis
against the real thing (the RSS increase during the first run should come close to temp + outputs).

    python benchmarks/memory.py                                   # B0-B7, remat off/on, batch 8
    python benchmarks/memory.py --models efficientnet_b0 --batches 16 --measure
Figures are for the backend it runs on (XLA:CPU here): GPU/TPU fuse differently.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import threading
import time

# Buffer assignment is decided on the optimized HLO, before LLVM: LLVM at -O0 compiles faster and gives
# the same figures (checked on B0: identical temp/argument/output bytes).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root: `train` is not installed

import efficientnet_jax as ej  # noqa: E402
from reference_step import reference_step  # noqa: E402

GiB = 2**30


def compiled_step(name: str, batch: int, remat: bool, dtype=jnp.float32, depthwise: str = "auto"):
    """The train step compiled for abstract inputs, plus those inputs' shapes."""
    model = ej.create_model(name, remat=remat, dtype=dtype, depthwise_impl=depthwise)
    res = ej.model_info(name).resolution
    step, init = reference_step(model, batch)
    state = jax.eval_shape(init, jax.random.key(0))
    batch_shapes = {"image": jax.ShapeDtypeStruct((batch, res, res, 3), dtype),
                    "label": jax.ShapeDtypeStruct((batch,), jnp.int32)}
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
    """Runs the step twice, sampling the RSS: its increase over the RSS just before each run.

    The first run allocates the temporaries afresh (an upper view: the allocator may also keep
    what it frees); in the second the allocator mostly reuses the memory of the first."""
    state = jax.jit(init)(jax.random.key(0))
    batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in batch_shapes.items()}
    jax.block_until_ready((state, batch))
    out = {}
    for run in ("first", "second"):
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
        out[f"rss_before_{run}"], out[f"rss_increase_{run}"] = before, max(peak[0], _rss()) - before
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[f"efficientnet_b{i}" for i in range(8)])
    parser.add_argument("--batches", nargs="+", type=int, default=[8],
                        help="one batch size (temporaries / batch = per image), or two (slope and offset)")
    parser.add_argument("--remat", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--measure", action="store_true", help="also run the step and sample the RSS")
    parser.add_argument("--depthwise", default="auto", choices=["auto", "taps", "xla"],
                        help="depthwise implementation (auto: taps on CPU, XLA's grouped convolution elsewhere)")
    parser.add_argument("--jsonl", help="append one JSON object per compiled configuration to this file")
    args = parser.parse_args()

    print("| model | res | remat | per image (GB) | fixed (GB) | peak at batch "
          f"{' / '.join(map(str, args.batches))} (GB) | images per GB | largest batch in 16 / 80 GB | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for remat in args.remat:
            rows = []
            for batch in args.batches:
                compiled, init, shapes, compile_s = compiled_step(name, batch, remat == "on", depthwise=args.depthwise)
                row = {"model": name, "resolution": ej.model_info(name).resolution, "remat": remat == "on",
                       "batch": batch, "depthwise": args.depthwise, "compile_s": round(compile_s, 1), **analyse(compiled),
                       "backend": jax.default_backend()}
                if args.measure:
                    row.update(measure_rss(compiled, init, shapes))
                rows.append(row)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")
                print(json.dumps(row), file=sys.stderr, flush=True)
            r1, r2 = rows[0], rows[-1]
            if len(rows) == 2:
                per_image = (r2["peak"] - r1["peak"]) / (r2["batch"] - r1["batch"])
                fixed = r1["peak"] - r1["batch"] * per_image
            else:  # one batch: all temporaries count as per-image (measured linear from batch 8 up, see RESULTS.md)
                per_image, fixed = r1["temp"] / r1["batch"], r1["peak"] - r1["temp"]
            peaks = " / ".join(f"{r['peak'] / 1e9:.2f}" for r in rows)
            fits = [max(0, int((cap * 1e9 - fixed) // per_image)) for cap in (16, 80)]
            print(f"| {name} | {r1['resolution']} | {remat} | {per_image / 1e9:.3f} | {fixed / 1e9:.3f} | "
                  f"{peaks} | {1e9 / per_image:.1f} | "
                  f"{fits[0]} / {fits[1]} | {sum(r['compile_s'] for r in rows):.0f} |", flush=True)


if __name__ == "__main__":
    main()
