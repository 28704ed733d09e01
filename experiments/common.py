"""Shared pieces of the scaling-lab experiments: a CPU-feasible proxy task run through the real training program.

The proxy task is the embedded ``sklearn_digits`` data set (1,437 train / 360 test images, stored at
32x32) trained for a fixed, small number of steps with pad-crop + RandAugment, so that accuracy
does not saturate and differences between models show up within minutes on 2 CPU cores. Every
study passes ``--dataset`` on, so the same code runs on an ImageNet-scale data set on an
accelerator (with ``--steps``, ``--batch_size`` and the base resolution raised accordingly).

Models go through ``train.train.train_and_evaluate`` (same input pipeline, optimizer, EMA, label
smoothing, evaluation). Every family is a model name the training program knows (``config.model`` =
``efficientnet_b0`` / ``mobilenet_v2`` / ``resnet18``, resolved by ``train.models``) with its depth
and width multipliers in ``config.model_overrides``, so a proxy run is a plain config and its
``config.json`` says which model was trained.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import pathlib
import platform
import tempfile
import time
from typing import Any, Iterable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import efficientnet_jax as ej  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

# Base of every study here: B0's table at half width and depth (the digits recipe's model), 64 px.
# The first base (width 0.25, depth 0.34, 32 px) was too coarse to scale: at 32 px one more pixel
# doubles the MACs (feature maps 16/8/4/2/1 become 17/9/5/3/2), depth x1.2 rounded to the same
# repeats and width x1.1 to the same 8 channels, so most (alpha, beta, gamma) built identical models.
BASE_WIDTH = 0.5
BASE_DEPTH = 0.5
BASE_RESOLUTION = 64


def proxy_config(*, dataset: str = "sklearn_digits", image_size: int = BASE_RESOLUTION, steps: int = 120,
                 batch_size: int = 32, seed: int = 0, model: str = "efficientnet_b0",
                 model_overrides: dict | None = None, randaugment: tuple | None = (2, 9),
                 learning_rate: float = 0.032, data_dir: str | None = None, progressive: dict | None = None,
                 augment: str | None = None):
    """The digits recipe (train/configs/digits.py) shrunk to a fixed, short, augmented run."""
    from train.configs import digits

    config = digits.get_config()
    config.dataset = dataset
    if data_dir:
        config.data_dir = data_dir
    config.model = model
    config.model_overrides = dict(model_overrides or {})
    config.image_size = int(image_size)
    config.num_train_steps = int(steps)
    config.batch_size = int(batch_size)
    config.learning_rate = learning_rate
    config.warmup_epochs = 0.3
    config.ema_decay = 0.0  # too few steps for an EMA to help; report the raw weights
    if randaugment:
        config.randaugment = tuple(randaugment)
    config.seed = int(seed)
    if progressive:
        config.progressive.update(progressive)
    if augment:
        config.augment = augment
    config.log_every_steps = max(1, int(steps))
    config.eval_every_steps = int(steps)
    config.checkpoint_every_steps = int(steps)
    config.keep_checkpoints = 1
    config.async_checkpoints = False
    return config


def restore_variables(workdir: pathlib.Path) -> dict:
    """{'params', 'batch_stats'} of the last checkpoint that ``train_and_evaluate`` wrote in ``workdir``."""
    from train.restore import restore_run

    return restore_run(workdir).variables()


def proxy_model(family: str, depth: float = 1.0, width: float = 1.0) -> tuple[str, dict]:
    """(config.model, config.model_overrides) of the proxy base of ``family`` scaled by (depth, width).

    For ``efficientnet`` the multipliers apply on top of the proxy base (B0 x BASE_WIDTH x BASE_DEPTH);
    for ``mobilenet_v2``/``resnet18`` on top of the family's own base scaled by the same BASE_WIDTH.
    """
    if family == "efficientnet":
        # BN momentum 0.9: at 0.99 the running statistics are still near their initial values after
        # ~100 steps and evaluation sits at chance (measured).
        return "efficientnet_b0", dict(width=BASE_WIDTH * width, depth=BASE_DEPTH * depth, dropout=0.1,
                                       drop_path=0.0, bn_momentum=0.9)
    if family in ("mobilenet_v2", "resnet18"):
        return family, dict(depth=depth, width=BASE_WIDTH * width)
    raise ValueError(f"family must be efficientnet, mobilenet_v2 or resnet18, got {family!r}")


def train_proxy(*, depth: float = 1.0, width: float = 1.0, resolution: int = BASE_RESOLUTION,
                family: str = "efficientnet", dataset: str = "sklearn_digits", steps: int = 120,
                batch_size: int = 32, seed: int = 0, workdir: str | pathlib.Path | None = None,
                return_variables: bool = False, data_dir: str | None = None, **config_kw) -> dict:
    """Train one model of ``family`` at (depth, width, resolution) multipliers of the proxy base; evaluate.

    ``config_kw`` goes to ``proxy_config`` (``progressive=``, ``randaugment=``, ``augment=`` ...).
    Returns {'accuracy', 'loss', 'seconds', 'params', 'macs', ...} (and 'model', 'variables' if asked).
    """
    from train import models
    from train.train import resolve_config, train_and_evaluate

    name, overrides = proxy_model(family, depth, width)
    config = proxy_config(dataset=dataset, image_size=resolution, steps=steps, batch_size=batch_size, seed=seed,
                          model=name, model_overrides=overrides, data_dir=data_dir, **config_kw)
    cleanup = None
    if workdir is None:
        cleanup = tempfile.TemporaryDirectory(prefix="proxy_")
        workdir = cleanup.name
    workdir = pathlib.Path(workdir)
    start = time.time()
    try:
        result = train_and_evaluate(config, workdir)
        model = models.build_model(resolve_config(config), _num_classes(config))
        macs, params = measure(model, resolution)
        out = {"accuracy": float(result["accuracy"]), "loss": float(result["loss"]),
               "seconds": round(time.time() - start, 1), "params": params, "macs": macs,
               "family": family, "depth": depth, "width": width, "resolution": int(resolution), "seed": seed,
               "steps": steps}
        if return_variables:
            out["model"] = model
            out["variables"] = restore_variables(workdir)
        return out
    finally:
        if cleanup is not None:
            cleanup.cleanup()


@functools.lru_cache(maxsize=None)
def _num_classes_of(dataset: str, data_dir: str | None) -> int:
    from train import input_pipeline
    from train.train import resolve_config

    config = proxy_config(dataset=dataset, data_dir=data_dir)
    return input_pipeline.dataset_info(resolve_config(config)).num_classes


def _num_classes(config) -> int:
    return _num_classes_of(config.dataset, config.data_dir)


def builder(family: str, num_classes: int = 10) -> ej.search.Builder:
    """A ``search.Builder`` for the proxy base of ``family`` (multipliers relative to the proxy base)."""
    from efficientnet_jax.search import Builder
    from train import models
    from train.configs import base

    def make(d, w, r):
        config = base.get_config()
        config.model, config.model_overrides = proxy_model(family, d, w)
        if family == "efficientnet":
            config.model_overrides.resolution = int(r)
        return models.build_model(config, num_classes)

    return Builder(make, BASE_RESOLUTION, family)


def measure(model, resolution: int) -> tuple[int, int]:
    """(MACs of one image, parameters) of ``model`` at ``resolution``, from abstract variables."""
    shape = (1, resolution, resolution, 3)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                               jax.ShapeDtypeStruct(shape, jnp.float32))
    return ej.count_flops(model, variables, shape), ej.count_params(variables["params"])


def training_macs(model, resolution: int) -> int:
    """Multiply-adds of one training step on one image: forward and backward, read off the gradient's jaxpr.

    Resolution changes the cost of a step (progressive learning), so equal-compute comparisons count
    this rather than steps. Depthwise convolutions are traced as XLA's grouped convolution (as in
    ``count_flops``), whatever implementation training uses.
    """
    if "depthwise_impl" in {f.name for f in dataclasses.fields(model)}:
        model = model.clone(depthwise_impl="xla")
    shape = (1, resolution, resolution, 3)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                               jax.ShapeDtypeStruct(shape, jnp.float32))

    def gradient(v, x):
        def loss(params):
            logits, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                                    mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
            return jnp.sum(logits)

        return jax.grad(loss)(v["params"])

    return ej.count_flops(gradient, variables, shape)


# ---------------------------------------------------------------- output helpers


def out_dir(args, name: str) -> pathlib.Path:
    path = pathlib.Path(args.out) if args.out else RESULTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: the studies write PNG files and run headless."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Every study's figure: tight layout, 90 dpi, and closed so long runs do not keep figures alive."""
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    pyplot().close(fig)


def write_csv(path: pathlib.Path, rows: Sequence[dict], fields: Iterable[str] | None = None) -> None:
    fields = list(fields or rows[0].keys())
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def markdown_table(rows: Sequence[dict], fields: Sequence[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int) and abs(v) >= 10000:
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in fields) + " |" for r in rows]
    return "\n".join(lines)


def provenance(argv: Sequence[str]) -> str:
    """Date, machine and command of a run, for the report."""
    return (f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
            f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores "
            f"(shared with other jobs), jax {jax.__version__} on {jax.devices()[0].platform}\n"
            f"- command: `python -m experiments.{pathlib.Path(argv[0]).stem} {' '.join(argv[1:])}`\n")


def add_common_args(parser, *, steps: int, name: str) -> None:
    parser.add_argument("--dataset", default="sklearn_digits", help="tfds name or folder:/path")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default=None, help=f"output folder (default experiments/results/{name}/)")
    parser.add_argument("--steps", type=int, default=steps, help="training steps per model")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="tiny grid, 2 steps: checks the script runs")


def quiet() -> None:
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    for name in ("absl", "orbax", "jax", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
    except ImportError:
        pass


def save_json(path: pathlib.Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float))


def isfinite(x) -> bool:
    return x is not None and math.isfinite(x)
