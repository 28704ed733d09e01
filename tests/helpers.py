"""Test helpers: random-but-meaningful weights and structured test images.

Random BN statistics make a deep network's eval output collapse or explode, so a
logit comparison would prove nothing. ``calibrated_variables`` follows DESIGN.md:
random weights, moving statistics set to a calibration batch's statistics, then
perturbed relative to each channel's spread.
"""
from __future__ import annotations

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.weights.common import flatten, unflatten


def structured_images(kind: str, n: int, size: int, seed: int = 0) -> np.ndarray:
    """Normalized-scale NHWC float32 images: 'noise', 'smooth' waves, or 'mixed'."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.uniform(-2, 2, (n, size, size, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    waves = []
    for _ in range(n):
        fx, fy, phase = rng.uniform(0.5, 6, 3)
        img = np.stack([np.sin(2 * np.pi * (fx * xx + c * fy * yy) + phase * (c + 1)) for c in range(3)], -1)
        waves.append(1.5 * img)
    smooth = np.asarray(waves, np.float32)
    if kind == "smooth":
        return smooth
    return (0.6 * smooth + 0.4 * rng.uniform(-2, 2, smooth.shape)).astype(np.float32)


def random_variables(model: nn.Module, x, seed: int = 0) -> dict:
    """He-normal kernels, unit BN scales, zero biases and BN statistics (0, 1) for ``model`` at input ``x``.

    Drawn with numpy on the shapes of ``jax.eval_shape(model.init)``: compiling a jitted ``init`` (threefry
    for every parameter) costs 30-50 s on 2 cores even for a tiny variant, which unit tests of the forward
    pass do not need. Parity tests use ``calibrated_variables`` instead.
    """
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype), train=False))
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in flatten(shapes).items():
        if path[-1] == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
        elif path[-1] in ("scale", "var"):
            value = np.ones(leaf.shape)
        else:  # bias, mean
            value = np.zeros(leaf.shape)
        flat[path] = jnp.asarray(value, leaf.dtype)
    return unflatten(flat)


def calibrated_variables(name: str, seed: int = 0, resolution: int | None = None, images=None,
                         **model_kwargs) -> dict:
    """Random variables of ``name`` whose BN statistics are realistic (see module docstring).

    ``images``: the calibration batch (NHWC, normalized scale); by default four 'mixed' images. Calibrating on
    the very inputs a test compares keeps deep networks whose random weights amplify any input change
    (EfficientNetV2-B0) in a regime where float32 rounding stays small."""
    spec = ej.model_info(name)
    size = resolution or spec.resolution
    calib_model = ej.create_model(name, bn_momentum=0.0, dropout=0.0, drop_path=0.0, **model_kwargs)
    x = jnp.asarray(structured_images("mixed", 4, size, seed=seed + 1) if images is None else images)
    variables = jax.jit(calib_model.init, static_argnames="train")(jax.random.key(seed), x[:1], train=False)
    rng = np.random.default_rng(seed)
    flat = flatten(variables)
    for path, value in flat.items():
        if path[0] == "params" and path[-1] == "scale":
            flat[path] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif path[0] == "params" and path[-1] == "bias":
            flat[path] = rng.normal(0, 0.2, value.shape).astype(np.float32)
    variables = unflatten(flat)
    calibrate = jax.jit(lambda v, x: calib_model.apply(v, x, train=True, mutable=["batch_stats"])[1])
    updated = calibrate(variables, x)
    flat = flatten({"params": variables["params"], "batch_stats": updated["batch_stats"]})
    for path, value in list(flat.items()):
        if path[-1] == "mean":
            std = np.sqrt(np.asarray(flat[path[:-1] + ("var",)]))
            flat[path] = np.asarray(value) + 0.05 * std * rng.standard_normal(value.shape)
        elif path[-1] == "var":
            flat[path] = np.asarray(value) * rng.uniform(0.8, 1.25, value.shape)
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), unflatten(flat))


def read_metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def final_state(workdir):
    """(step, state) of a run's newest checkpoint, as numpy arrays."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(pathlib.Path(workdir).absolute() / "checkpoints")
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
    return step, restored


def assert_same_end(reference, run) -> None:
    """Two runs of one config ended alike (an interrupted run resumed to the end against an uninterrupted one):
    the numbers of final_metrics.json and every leaf of the final train state, to float32 rounding."""
    def numbers(workdir):
        metrics = json.loads((pathlib.Path(workdir) / "final_metrics.json").read_text())
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    assert numbers(run) == pytest.approx(numbers(reference), rel=1e-6)
    for x, y in zip(jax.tree.leaves(final_state(reference)[1]), jax.tree.leaves(final_state(run)[1])):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7)


class TinyNet(nn.Module):
    """A test-only model (not one of ours) for runs of the training program that must compile in seconds,
    passed as ``model_factory`` the way a notebook would pass its own module."""

    num_classes: int
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), strides=2, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(jnp.mean(x, axis=(1, 2)))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)

