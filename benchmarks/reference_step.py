"""The training program's step with its reference recipe, built the one way every benchmark times,
profiles, compiles or measures it: ``train/configs/base.py`` (RMSProp, L2, label smoothing, EMA, learning
rate scaled by the batch size) and ``train/step.py`` (forward, backward, update, BN statistics, EMA, the
state donated). Benchmarks sit outside the package, so this is where they share it."""
from __future__ import annotations

import functools
import pathlib
import sys
from typing import Callable

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo root: `train` is not installed

from train.configs import base  # noqa: E402
from train.optim import build_optimizer  # noqa: E402
from train.step import create_train_state, train_step  # noqa: E402


def reference_step(model, batch_size: int | None = None) -> tuple[Callable, Callable]:
    """``(step, init)``: the jitted train step, ``step(state, {"image", "label"}) -> (state, metrics)``, and
    ``init(key)``, the state it starts from: run ``init`` under ``jax.jit`` for arrays or ``jax.eval_shape`` for
    shapes alone. ``batch_size`` (default: the recipe's) sets the learning rate, as in training."""
    config = base.get_config()
    if batch_size is not None:
        config.batch_size = batch_size
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
    tx, schedule = build_optimizer(config, steps_per_epoch=1000, total_steps=10**6, params=params)
    init = functools.partial(create_train_state, model, tx, image_size=32)  # the init input's size only
    step = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule, base_key=jax.random.key(2),
                                     label_smoothing=config.label_smoothing, ema_decay=config.ema_decay),
                   donate_argnums=0)
    return step, init
