"""A training run re-created from its workdir: the config it ran with (``config.json``), its model, and
its newest checkpoint that loads.

Exporting weights, the experiments and notebooks read a finished (or interrupted) run through
``restore_run`` instead of rebuilding the program's model, optimizer and state setup themselves.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import ml_collections

from efficientnet_jax.weights.common import head_classes
from train import models
from train.checkpoint import Checkpoints

WHICH = ("raw", "ema")


@dataclasses.dataclass(frozen=True)
class Run:
    workdir: pathlib.Path
    config: ml_collections.ConfigDict  # as the run resolved it (mean, std and image_size filled in)
    model: nn.Module  # config.model with the run's overrides, dtype and class count
    step: int  # of the restored checkpoint
    state: dict[str, Any]  # the train state as saved: params, batch_stats, ema_params, ema_batch_stats, opt_state...

    def variables(self, which: str = "raw") -> dict:
        """{'params', 'batch_stats'} of the trained (``raw``) or the averaged (``ema``) weights."""
        if which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}, got {which!r}")
        prefix = "ema_" if which == "ema" else ""
        return {"params": self.state[f"{prefix}params"], "batch_stats": self.state[f"{prefix}batch_stats"]}


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was started with, as ``train_and_evaluate`` recorded it."""
    config_file = pathlib.Path(workdir).absolute() / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file.parent} holds no training run (no config.json); pass the "
                                "--workdir of a run")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    # JSON has no tuples: model settings such as strides go back to the tuples the model expects.
    config.model_overrides = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in (config.model_overrides or {}).items()}
    return config


def restore_run(workdir: str | pathlib.Path) -> Run:
    """The run in ``workdir`` at its newest checkpoint that loads and passes its integrity check (a bad newer
    one is skipped and left in place: only the training run, which holds the workdir, moves bad steps aside,
    since a reader may run beside it while its newest step's integrity record is still being written). The
    model must be one ``train.models`` builds by name; the class count comes from the checkpoint's
    classifier, so the dataset is not needed."""
    workdir = pathlib.Path(workdir).absolute()
    config = load_config(workdir)
    checkpoints = Checkpoints(workdir / "checkpoints", async_save=False, quarantine=False)
    try:
        state, step = checkpoints.restore_latest(None)  # as saved: no optimizer or mesh to rebuild
    finally:
        checkpoints.close()
    if state is None:
        raise FileNotFoundError(f"{workdir}/checkpoints has no checkpoint yet")
    model = models.build_model(config, head_classes(state))
    return Run(workdir=workdir, config=config, model=model, step=step, state=state)
