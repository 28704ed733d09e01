"""Images per second of our model and of its peers, side by side in one process.

Implementations (``--impl``, or ``all`` for every one importable here):
  ours   the jitted forward (infer), or the full jitted, donated train step of ``train/step.py``
         (forward, backward, TF-RMSProp, L2, BN update, EMA of params and BN statistics)
  scan   the same with ``scan_blocks=True`` (each stage's repeated blocks as one ``nn.scan``)
  keras  ``keras.applications.EfficientNetB0..B7`` / ``EfficientNetV2*`` on the JAX backend, weights=None; infer is
         ``predict_on_batch``, train is ``train_on_batch`` after ``compile(jit_compile=True)``
         (Keras' own jitted train step: RMSprop, label-smoothed cross-entropy, BN update; no EMA)
  torch  efficientnet-pytorch ``EfficientNet.from_name``: eager ``inference_mode`` forward, or
         zero_grad / forward / backward / RMSprop step (no EMA)
  timm   ``timm.create_model('tf_' + model)`` (``tf_efficientnet_b0``, ``tf_efficientnetv2_b0``: TF "same"
         padding, as ours), the same steps
Every peer gets the same batch, resolution and random data; ``bfloat16`` means bf16 compute with
float32 parameters everywhere (ours: ``dtype=bfloat16``; Keras: ``mixed_bfloat16``; torch:
``autocast``). torch uses as many threads as there are cores; XLA uses them all by default.

Timing: each implementation is built and warmed up (its first call, which includes jit
compilation, is reported as warm-up; ours also reports the XLA compile alone, in wall and in CPU
seconds, the latter less sensitive to other load since XLA compiles on one thread); then ``--repeats``
rounds, each timing ``--steps`` steps of every implementation in turn (the order rotates per
round), so that load from other processes hits all of them alike. Reported: the median img/s,
every round, and ours ÷ each peer.

Memory: a sampler thread records the process RSS while each implementation runs (shared with
the others, so only an upper bound of what it needs). Unless ``--no-isolate-memory`` (the default
with ``--quick``), each implementation is also run once alone in a child process (build, warm-up,
one step) whose peak RSS (VmHWM) is its honest peak, and on a GPU its peak device memory
(JAX ``memory_stats()['peak_bytes_in_use']`` or ``torch.cuda.max_memory_allocated``).

    python benchmarks/throughput.py --model efficientnet_b0 --batch 32 --mode train --impl all
    python benchmarks/throughput.py --quick --impl all --json   # seconds: a smoke test
With ``--json`` the last line printed is one JSON object: ``img_s`` (ours), ``impls`` and ``ratios``.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "jax")  # the Keras peer is Keras-on-JAX; set before keras is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root: `train` is not installed

import efficientnet_jax as ej  # noqa: E402
from efficientnet_jax.weights.keras import KERAS_APPLICATIONS  # noqa: E402
from reference_step import reference_step  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
IMPLS = ("ours", "scan", "keras", "torch", "timm")
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Unavailable(Exception):
    """This peer cannot run here (not installed, or no such variant); the reason goes in the table."""


def _data(args):
    """The same images (NHWC float32, N(0,1)) and labels for every implementation."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, args.resolution, args.resolution, 3), dtype=np.float32)
    return images, np.arange(args.batch) % 1000


# ---------------------------------------------------------------- builders: each returns (run, info)
# run() performs one step and returns something to wait on; info holds extra facts (compile_s, notes).

def build_ours(args, images, labels, scan_blocks=False):
    model = ej.create_model(args.model, dtype=DTYPES[args.dtype], remat=args.remat, scan_blocks=scan_blocks)
    x = jnp.asarray(images, DTYPES[args.dtype])
    if args.mode == "infer":
        variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), x[:1], train=False)
        start, cpu = time.perf_counter(), time.process_time()
        compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
        info = {"compile_s": time.perf_counter() - start, "compile_cpu_s": time.process_time() - cpu}
        return (lambda: compiled(variables, x)), info

    step, init = reference_step(model, args.batch)
    state = jax.jit(init)(jax.random.key(0))
    batch = {"image": x, "label": jnp.asarray(labels)}
    start, cpu = time.perf_counter(), time.process_time()
    compiled = step.lower(state, batch).compile()
    info = {"compile_s": time.perf_counter() - start, "compile_cpu_s": time.process_time() - cpu}
    holder = [state]

    def run():
        holder[0], metrics = compiled(holder[0], batch)
        return metrics["loss"]

    return run, info


def build_keras(args, images, labels):
    import keras

    if keras.backend.backend() != "jax":
        raise Unavailable(f"KERAS_BACKEND is {keras.backend.backend()!r}, this peer is Keras on JAX")
    if args.model not in KERAS_APPLICATIONS:
        raise Unavailable(f"keras.applications has no {args.model}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if args.dtype == "bfloat16" else "float32")
    try:
        model = getattr(keras.applications, KERAS_APPLICATIONS[args.model])(
            weights=None, input_shape=(args.resolution, args.resolution, 3), classifier_activation=None)
    finally:
        keras.config.set_dtype_policy(previous)
    if args.mode == "infer":
        return (lambda: model.predict_on_batch(images)), {}
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=0.016 * args.batch / 256, rho=0.9, momentum=0.9, epsilon=1e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), jit_compile=True)
    targets = np.eye(1000, dtype=np.float32)[labels]
    return (lambda: model.train_on_batch(images, targets)), {}


def build_torch(args, images, labels, timm=False):
    try:
        import torch
    except ImportError as e:
        raise Unavailable(f"torch not installed ({e})") from None
    torch.set_num_threads(args.torch_threads or CPUS)
    if timm:
        try:
            import timm as timm_lib
        except ImportError:
            raise Unavailable("timm not installed (pip install timm; keep the CPU torch build)") from None
        name = "tf_" + args.model
        if name not in timm_lib.list_models(name):
            raise Unavailable(f"timm has no {name}")
        model = timm_lib.create_model(name, pretrained=False)
    else:
        from efficientnet_pytorch import EfficientNet

        name = args.model.replace("_", "-")
        if name.startswith(("efficientnet-lite", "efficientnetv2")):
            raise Unavailable("efficientnet-pytorch has no Lite or V2 variants")
        model = EfficientNet.from_name(name, image_size=args.resolution)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    channels_last = {"yes": True, "no": False}.get(args.channels_last, device.type == "cuda")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=memory_format).to(device)
    y = torch.from_numpy(labels).to(device)
    autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    info = {"device": str(device), "channels_last": channels_last}
    if args.mode == "infer":
        model.eval()

        def run():
            with torch.inference_mode(), autocast():
                out = model(x)
            sync()
            return out
        return run, info

    model.train()
    opt = torch.optim.RMSprop(model.parameters(), lr=0.016 * args.batch / 256, alpha=0.9, eps=1e-3, momentum=0.9,
                              weight_decay=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def run():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()
        sync()
        return loss
    return run, info


BUILDERS = {"ours": build_ours, "scan": functools.partial(build_ours, scan_blocks=True), "keras": build_keras, "torch": build_torch,
            "timm": functools.partial(build_torch, timm=True)}


# ---------------------------------------------------------------- memory

def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would include the parent's peak, which Linux keeps across exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


class RssSampler(threading.Thread):
    """Polls the process RSS every few ms and keeps the peak seen while each label was active."""

    def __init__(self, interval=0.005):
        super().__init__(daemon=True)
        self.interval, self.label, self.peak = interval, None, {}

    def run(self):
        while True:
            rss, label = _rss_bytes(), self.label
            if rss is None:
                return
            if label is not None:
                self.peak[label] = max(self.peak.get(label, 0), rss)
            time.sleep(self.interval)


def device_peak_mb(impl: str) -> float | None:
    """Peak accelerator memory of this process (None on CPU)."""
    if impl in ("torch", "timm"):
        import torch
        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def isolated_memory(args, impl: str) -> dict:
    """Runs this script for one implementation alone (build, warm-up, one step) in a child process."""
    cmd = [sys.executable, __file__, "--model", args.model, "--batch", str(args.batch), "--resolution",
           str(args.resolution), "--dtype", args.dtype, "--mode", args.mode, "--impl", impl, "--steps", "1",
           "--repeats", "1", "--no-isolate-memory", "--channels-last", args.channels_last, "--json"]
    cmd += ["--torch-threads", str(args.torch_threads)] if args.torch_threads else []
    cmd += ["--remat"] if args.remat else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"isolated_error": proc.stderr.strip().splitlines()[-1:]}
    child = json.loads(proc.stdout.strip().splitlines()[-1])["impls"][impl]
    return {"isolated_peak_rss_mb": child["self_peak_rss_mb"], "isolated_base_rss_mb": child["base_rss_mb"],
            "isolated_device_peak_mb": child["device_peak_mb"]}


# ---------------------------------------------------------------- the run

def wait(out):
    if isinstance(out, jax.Array) or isinstance(out, (tuple, list, dict)):
        jax.block_until_ready(out)


def benchmark(args) -> dict:
    impls = list(IMPLS) if args.impl == "all" else args.impl.split(",")
    images, labels = _data(args)
    sampler = RssSampler()
    sampler.start()
    runs, results = {}, {}
    for impl in impls:
        base = _rss_bytes()
        sampler.label = impl
        start = time.perf_counter()
        try:
            run, info = BUILDERS[impl](args, images, labels)
            wait(run())  # first call: jit compilation (if any) and first execution
        except Unavailable as e:
            results[impl] = {"skipped": str(e)}
            continue
        finally:
            sampler.label = None
        results[impl] = {"warmup_s": time.perf_counter() - start, **info,
                         "base_rss_mb": base / 2**20 if base else None}
        runs[impl] = run
    names = list(runs)
    rates = {impl: [] for impl in names}
    for r in range(args.repeats):
        for impl in names[r % len(names):] + names[:r % len(names)] if names else []:
            sampler.label = impl
            start = time.perf_counter()
            for _ in range(args.steps):
                out = runs[impl]()
            wait(out)
            rates[impl].append(args.steps * args.batch / (time.perf_counter() - start))
            sampler.label = None
    for impl in names:
        peak = sampler.peak.get(impl)
        results[impl].update(
            img_s=statistics.median(rates[impl]), img_s_all=rates[impl],
            inproc_peak_rss_mb=peak / 2**20 if peak else None,
            self_peak_rss_mb=peak_rss_mb(),  # of the whole process: this impl's own peak when it runs alone
            device_peak_mb=device_peak_mb(impl))
        if args.isolate_memory and len(impls) > 1:
            results[impl].update(isolated_memory(args, impl))
    return results


def versions() -> dict:
    out = {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__}
    for name in ("flax", "keras", "torch", "efficientnet_pytorch", "timm"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


def _fmt(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def table(args, results) -> str:
    ours = results.get("ours", {}).get("img_s")
    rows = [f"{args.model}, {args.mode}, batch {args.batch}, {args.resolution}×{args.resolution}, {args.dtype}, "
            f"{args.repeats}×{args.steps} steps, {jax.default_backend()} ({CPUS} cores)", "",
            "| impl | img/s (median) | all rounds | ours ÷ impl | warm-up s | compile s (CPU s) | "
            "peak RSS MB (alone) | RSS MB in run (shared) | device peak MB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for impl, r in results.items():
        if "skipped" in r:
            rows.append(f"| {impl} | skipped: {r['skipped']} | | | | | | | |")
            continue
        ratio = f"{ours / r['img_s']:.2f}×" if ours and impl != "ours" else ""
        alone = r.get("isolated_peak_rss_mb", r["self_peak_rss_mb"] if len(results) == 1 else None)
        rows.append(f"| {impl} | {r['img_s']:.2f} | {', '.join(f'{x:.2f}' for x in r['img_s_all'])} | {ratio} | "
                    f"{_fmt(r['warmup_s'])} | {_fmt(r.get('compile_s'))} ({_fmt(r.get('compile_cpu_s'))}) | "
                    f"{_fmt(alone, 0)} | "
                    f"{_fmt(r['inproc_peak_rss_mb'], 0)} | {_fmt(r.get('device_peak_mb'), 0)} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_b0", choices=ej.list_models())
    parser.add_argument("--batch", type=int, default=None, help="default 32 (--quick: 4)")
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's native one (--quick: 64)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--mode", default="train", choices=["train", "infer"])
    parser.add_argument("--impl", default="ours", help=f"one of {', '.join(IMPLS)}, a comma-separated list, or all")
    parser.add_argument("--remat", action="store_true", help="ours only: recompute blocks in the backward pass")
    parser.add_argument("--steps", type=int, default=None, help="steps per round, default 5 (--quick: 2)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds, default 3 (--quick: 2)")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "yes", "no"],
                        help="torch/timm memory format; auto: channels-last on CUDA only")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: the number of cores")
    parser.add_argument("--isolate-memory", action=argparse.BooleanOptionalAction, default=None,
                        help="also run each impl alone in a child process for its peak memory (default: on, "
                             "off with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    parser.add_argument("--json", action="store_true", help="the last line printed is one JSON object")
    args = parser.parse_args()
    unknown = set(args.impl.split(",")) - {*IMPLS, "all"}
    if unknown:
        parser.error(f"--impl: unknown {sorted(unknown)}; choose from {', '.join(IMPLS)} or all")
    quick = dict(batch=4, resolution=64, steps=2, repeats=2, isolate_memory=False)
    full = dict(batch=32, resolution=ej.model_info(args.model).resolution, steps=5, repeats=3, isolate_memory=True)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    results = benchmark(args)
    ours = results.get("ours", {}).get("img_s")
    ratios = {impl: ours / r["img_s"] for impl, r in results.items() if impl != "ours" and ours and "img_s" in r}
    print(table(args, results))
    if ratios:
        print("\nours ÷ " + ", ".join(f"{impl} {x:.2f}×" for impl, x in ratios.items()))
    if args.json:
        summary = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": args.model, "mode": args.mode, "batch": args.batch, "resolution": args.resolution,
            "dtype": args.dtype, "remat": args.remat, "steps": args.steps, "repeats": args.repeats,
            "img_s": ours, "compile_s": results.get("ours", {}).get("compile_s"),
            "compile_cpu_s": results.get("ours", {}).get("compile_cpu_s"), "impls": results, "ratios": ratios,
            "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
            "host": platform.machine(), "cpus": CPUS, "versions": versions(),
        }
        print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
