"""The accelerator check: one prepared run, a few minutes, every figure written to one folder.

Measured in the same run, each in its own child process with its own time limit (so one failure or
hang costs only its own entry), in order of importance:

1. B0 training step and inference, bfloat16 compute (float32 parameters), batch 256: ours (XLA's
   grouped convolution for the depthwise layers: ``depthwise_impl='auto'`` picks it off CPU) against timm
   ``tf_efficientnet_b0`` under ``torch.autocast(bfloat16)`` with channels-last (``throughput.py``);
2. the same for B4 at batch 64;
3. B0 training in float32 (timm with cuDNN's default TF32 convolutions);
4. compile time of the B0 and B4 train and eval steps, unrolled vs scanned blocks (``compile_time.py``);
5. peak memory of B7's training step with and without ``remat`` from XLA's buffer assignment
   (``memory.py``): on GPU this tells whether rematerialization pays off where on CPU it saved 1-2%.

    python benchmarks/accelerator_check.py --out gpu_results           # on the GPU machine, ~8 minutes
    python benchmarks/accelerator_check.py --out /tmp/check --dry-run  # anywhere: tiny shapes, end to end

Needs jax with its CUDA plugin, flax, optax, ml_collections, torch and timm (no TensorFlow, no Keras).
Writes ``<name>.json`` per measurement, ``log.txt`` (every child's output) and ``summary.md`` (tables
to paste into RESULTS.md), and prints the summary. Exit status 0 even when some entries failed: the
summary says which and why.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def measurements(dry_run: bool) -> list[tuple[str, list[str], float]]:
    """(name, command, time limit in seconds) of every child, most important first."""
    py = sys.executable
    steps = ["--steps", "1", "--repeats", "1"] if dry_run else ["--steps", "20", "--repeats", "3"]

    def throughput(model, batch, dtype, mode):
        shape = ["--batch", "2", "--resolution", "64"] if dry_run else ["--batch", str(batch)]
        return [py, str(HERE / "throughput.py"), "--model", model, "--dtype", dtype, "--mode", mode,
                "--impl", "ours,timm", "--no-isolate-memory", "--json", *shape, *steps]

    small = ["--batch", "2", "--resolution", "64"] if dry_run else []
    return [
        ("b0_train_bf16", throughput("efficientnet_b0", 256, "bfloat16", "train"), 150),
        ("b0_infer_bf16", throughput("efficientnet_b0", 256, "bfloat16", "infer"), 90),
        ("b4_train_bf16", throughput("efficientnet_b4", 64, "bfloat16", "train"), 150),
        ("b4_infer_bf16", throughput("efficientnet_b4", 64, "bfloat16", "infer"), 90),
        ("b0_train_fp32", throughput("efficientnet_b0", 256, "float32", "train"), 120),
        ("compile_time", [py, str(HERE / "compile_time.py"), "--models", "efficientnet_b0", "efficientnet_b4",
                          *small], 240),
        # the dry run checks the plumbing on B0: B7's two CPU compiles alone would take minutes
        ("b7_memory_remat", [py, str(HERE / "memory.py"), "--models", "efficientnet_b0" if dry_run else "efficientnet_b7",
                             "--batches", "2" if dry_run else "16", "--remat", "off", "on"], 240),
    ]


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def json_lines(text: str) -> list:
    rows = []
    for line in text.strip().splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def run_all(out: pathlib.Path, dry_run: bool, budget_s: float) -> dict:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONUNBUFFERED="1")
    started, results = time.monotonic(), {}
    with open(out / "log.txt", "a") as log:
        for name, cmd, limit in measurements(dry_run):
            left = budget_s - (time.monotonic() - started)
            if left < 20:
                results[name] = {"status": "skipped", "why": f"the {budget_s:.0f} s budget was spent"}
                continue
            limit = min(limit * (3 if dry_run else 1), left)  # CPU compiles of a dry run are slower
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
                log.write(proc.stdout + proc.stderr)
                # throughput.py and compile_time.py end stdout with one JSON object; memory.py writes one
                # JSON line per compiled configuration to stderr and a table to stdout
                payload = last_json(proc.stdout) or json_lines(proc.stderr) or None
                status = "ok" if proc.returncode == 0 and payload is not None else "failed"
                why = None if status == "ok" else (proc.stderr.strip().splitlines() or ["no output"])[-1]
            except subprocess.TimeoutExpired as e:
                log.write(str(e.stdout or "") + str(e.stderr or ""))
                payload, status, why = None, "timed out", f"after {limit:.0f} s"
            results[name] = {"status": status, "seconds": time.monotonic() - start, "why": why, "result": payload}
            (out / f"{name}.json").write_text(json.dumps(results[name], indent=1, default=str))
            print(f"{name}: {status} ({results[name]['seconds']:.0f} s){' - ' + why if why else ''}", flush=True)
    return results


def summary(results: dict, facts: dict) -> str:
    lines = [f"# accelerator check {facts['date']}", "", "```", json.dumps(facts, indent=1), "```", "",
             "| measurement | ours img/s | timm img/s | ours ÷ timm | ours compile s | ours device peak MB | "
             "timm device peak MB |", "|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        r = entry.get("result") or {}
        if not isinstance(r, dict) or "impls" not in r:
            continue
        ours, timm = r["impls"].get("ours", {}), r["impls"].get("timm", {})
        ratio = r.get("ratios", {}).get("timm")
        cells = [ours.get("img_s"), timm.get("img_s") or timm.get("skipped"), ratio, ours.get("compile_s"),
                 ours.get("device_peak_mb"), timm.get("device_peak_mb")]
        lines.append(f"| {name} (batch {r['batch']}, {r['resolution']} px) | "
                     + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    compile_result = (results.get("compile_time", {}).get("result") or {}).get("results", {})
    if compile_result:
        lines += ["", "| compile | train unrolled s | train scanned s | eval unrolled s | eval scanned s |",
                  "|---|---|---|---|---|"]
        for model, by_layout in compile_result.items():
            cells = [by_layout.get(layout, {}).get(f"{step}_total_s") for step in ("train", "eval")
                     for layout in ("unrolled", "scanned")]
            lines.append(f"| {model} | " + " | ".join(f"{c:.1f}" if c else "–" for c in cells) + " |")
    memory = (results.get("b7_memory_remat") or {}).get("result") or []
    if isinstance(memory, list) and memory:
        lines += ["", "| memory | resolution | batch | remat | peak GB (XLA buffer assignment) |", "|---|---|---|---|---|"]
        lines += [f"| {m.get('model')} | {m.get('resolution')} | {m.get('batch')} | {m.get('remat')} | "
                  f"{m.get('peak', 0) / 1e9:.2f} |" for m in memory]
    lines += ["", "| entry | status | seconds | why |", "|---|---|---|---|"]
    lines += [f"| {n} | {e['status']} | {e.get('seconds', 0):.0f} | {e.get('why') or ''} |" for n, e in results.items()]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the results (created)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes and one step: checks the script anywhere")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all measurements together (default 480; a dry run on CPU: 1800)")
    args = parser.parse_args()
    args.budget = args.budget or (1800 if args.dry_run else 480)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process only reads the device's name
    import jax

    facts = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
             "host": platform.node(), "python": platform.python_version(), "jax": jax.__version__,
             "dry_run": args.dry_run}
    for module in ("flax", "optax", "torch", "timm"):
        try:
            facts[module] = __import__(module).__version__
        except ImportError as e:
            facts[module] = f"missing ({e})"
    if jax.default_backend() == "cpu" and not args.dry_run:
        print("warning: JAX sees no accelerator; the figures will be CPU ones (use --dry-run to check the script)",
              file=sys.stderr)
    results = run_all(out, args.dry_run, args.budget)
    text = summary(results, facts)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
