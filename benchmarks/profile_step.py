"""Where the training step's time goes: XLA's own per-operation profile of the train step.

Runs a few steps of the training program's step (``train/step.py``) under ``jax.profiler``, reads the trace
back with ``jax.profiler.ProfileData`` (no TensorFlow or TensorBoard needed) and sums the time of every
XLA operation the runtime executed, by operation and by kind (matmuls, convolutions, reductions, the
depthwise taps, transposes, ...). The kinds are read from the HLO of the compiled step, so the numbers
name what XLA ran, not what the Python code asked for.

    python benchmarks/profile_step.py                       # B0, batch 32, 224 px; JSON last line
    python benchmarks/profile_step.py --model efficientnet_b0 --batch 8 --resolution 128 --top 30

Shares are of the summed operation time; with several threads running operations at once that sum is
more than the wall time of the step.
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `train` is not installed

import efficientnet_jax as ej  # noqa: E402
from reference_step import reference_step  # noqa: E402

# What an HLO instruction does, from the opcodes inside it (a fusion is classed by its costliest part).
KINDS = (("dot", "matmul (1x1 convolutions, dense)"), ("convolution", "convolution (stem, XLA grouped)"),
         ("reduce-window", "reduce-window"), ("reduce", "reduction (BN statistics, sums)"),
         ("transpose", "transpose / layout copy"), ("copy", "transpose / layout copy"),
         ("slice", "slices (depthwise taps)"), ("pad", "pad"), ("dynamic-update-slice", "dynamic slices (loops)"),
         ("dynamic-slice", "dynamic slices (loops)"))


def instruction_kinds(hlo_text: str) -> dict[str, str]:
    """{instruction name: kind} for every instruction of the compiled module's computations."""
    bodies: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", hlo_text):
        match = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
        if match:
            bodies[match.group(1)] = block
    kinds = {}
    for block in bodies.values():
        for line in block.splitlines()[1:]:
            match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(", line)
            if not match:
                continue
            name, opcode = match.groups()
            text = line
            if opcode == "fusion":
                called = re.search(r"calls=%?([\w.\-]+)", line)
                text = bodies.get(called.group(1), "") if called else ""
            found = [label for op, label in KINDS if re.search(rf"= \S+ {re.escape(op)}\(", text)]
            kinds[name] = found[0] if found else ("elementwise" if opcode == "fusion" else opcode)
    return kinds


def build_step(model_name: str, batch: int, resolution: int, scan_blocks: bool):
    model = ej.create_model(model_name, scan_blocks=scan_blocks)
    step, init = reference_step(model, batch)
    state = jax.jit(init)(jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {"image": jnp.asarray(rng.normal(size=(batch, resolution, resolution, 3)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, model.num_classes, batch), jnp.int32)}
    return step, state, data


def profile(args) -> dict:
    step, state, data = build_step(args.model, args.batch, args.resolution, args.scan_blocks)
    step = step.lower(state, data).compile()  # compiled once: its HLO names the operations the trace times
    kinds = instruction_kinds(step.as_text())
    for _ in range(2):  # warm up
        state, metrics = step(state, data)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        with jax.profiler.trace(logdir):
            for _ in range(args.steps):
                state, metrics = step(state, data)
            jax.block_until_ready(state)
        wall = (time.perf_counter() - start) / args.steps
        trace = next(pathlib.Path(logdir).rglob("*.xplane.pb")).read_bytes()
    by_op: collections.Counter = collections.Counter()
    for plane in jax.profiler.ProfileData.from_serialized_xspace(trace).planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in kinds:
                    by_op[event.name] += event.duration_ns / 1e9 / args.steps
    total = sum(by_op.values())
    by_kind: collections.Counter = collections.Counter()
    for name, seconds in by_op.items():
        by_kind[kinds[name]] += seconds
    return {
        "model": args.model, "batch": args.batch, "resolution": args.resolution, "scan_blocks": args.scan_blocks,
        "steps": args.steps, "step_wall_s": wall, "op_s_per_step": total,
        "by_kind": {kind: {"s": s, "share": s / total} for kind, s in by_kind.most_common()},
        "top_ops": [{"op": name, "kind": kinds[name], "s": s, "share": s / total}
                    for name, s in by_op.most_common(args.top)],
        "jax": jax.__version__, "backend": jax.default_backend(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_b0", choices=ej.list_models())
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="how many of the costliest operations to list")
    parser.add_argument("--scan-blocks", action="store_true")
    args = parser.parse_args()
    result = profile(args)
    for kind, entry in result["by_kind"].items():
        print(f"{entry['share']:6.1%} {entry['s']:7.3f} s  {kind}", file=sys.stderr)
    for entry in result["top_ops"]:
        print(f"{entry['share']:6.1%} {entry['s']:7.3f} s  {entry['op']} ({entry['kind']})", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
