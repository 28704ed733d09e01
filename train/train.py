"""The training program, read top to bottom: config, mesh, input, model, optimizer, state,
compiled steps, loop. ``train_and_evaluate(config, workdir)`` is importable from notebooks and
tests; ``train/main.py`` only parses flags. Each section calls one public piece: ``sharding``
(mesh, global batches), ``input_pipeline.open_dataset``, ``models``, ``optim``, ``progressive``,
``checkpoint``, ``evaluate.evaluate_batches``.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import pathlib
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import efficientnet_jax as ej
from efficientnet_jax.specs import IMAGENET_MEAN, IMAGENET_STD
from train import input_pipeline, models, progressive, sharding, workdir_lock
from train.checkpoint import Checkpoints, with_sharding
from train.evaluate import evaluate_batches
from train.metrics import MetricWriter, Progress, write_text
from train.models import DTYPES
from train.optim import build_optimizer
from train.pretrained import load_into_state, read_pretrained
from train.step import create_train_state, eval_step, train_step

# A model_factory gets (num_classes, dtype) and returns a Flax module with the EfficientNet conventions:
# fields num_classes and dtype, __call__(x, train=...), at least one BatchNorm (statistics in 'batch_stats'),
# dropout drawing from the 'dropout' rng.
ModelFactory = Callable[[int, Any], Any]


class TrainingError(RuntimeError):
    """A run stopped for a reason the user must act on (the message says what to do)."""


def resolve_config(config: ml_collections.ConfigDict, *, custom_model: bool = False) -> ml_collections.ConfigDict:
    """Fill what the model's weights define (mean/std, resolution) and check values early, with clear errors.

    ``custom_model``: the model comes from a ``model_factory``, so ``config.model`` is only a label;
    a name that is not one of ours then defaults to ImageNet mean/std and needs ``image_size``.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    if custom_model and config.model not in models.model_names():
        settings = models.DataSettings(config.image_size, IMAGENET_MEAN, IMAGENET_STD)
        if settings.resolution is None:
            raise ValueError(f"config.image_size must be set for a model_factory model ({config.model!r})")
    else:
        settings = models.data_settings(config.model)  # unknown model -> ValueError listing the names
    if config.mean is None:
        config.mean = tuple(settings.mean)
    if config.std is None:
        config.std = tuple(settings.std)
    if config.image_size is None:
        config.image_size = settings.resolution
    if config.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {config.dtype!r}")
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {jax.device_count()} devices; "
            f"use a multiple of {jax.device_count()} (e.g. --config.batch_size="
            f"{max(1, round(config.batch_size / jax.device_count())) * jax.device_count()})"
        )
    accum = config.grad_accum_steps
    if (config.batch_size // jax.process_count()) % accum:
        raise ValueError(f"the per-process batch {config.batch_size // jax.process_count()} must divide "
                         f"into grad_accum_steps={accum} micro-batches")
    if config.nan_policy not in ("stop", "skip"):
        raise ValueError(f"nan_policy must be 'stop' or 'skip', got {config.nan_policy!r}")
    return config


def run_length(config, info: input_pipeline.DatasetInfo) -> tuple[float, int]:
    """(steps per epoch, total steps): ``num_train_steps`` when > 0, else ``num_epochs`` of the train split."""
    steps_per_epoch = info.num_train_examples / config.batch_size
    if config.num_train_steps > 0:
        return steps_per_epoch, config.num_train_steps
    return steps_per_epoch, math.ceil(config.num_epochs * steps_per_epoch)


def abstract_params(model, image_size: int):
    """The shapes of ``model``'s parameters (nothing is computed): what the optimizer is built for."""
    x = jnp.zeros((1, image_size, image_size, 3))
    return jax.eval_shape(lambda k: model.init(k, x, train=False)["params"], jax.random.key(0))


def initial_state(config, model, tx, key, checkpoints: Checkpoints, abstract_state, state_sharding
                  ) -> tuple[Any, int]:
    """(state, step): the newest good checkpoint's, or a new state (from ``config.pretrained`` if set), laid out
    by ``state_sharding`` (a tree of shardings of ``abstract_state``, ``sharding.state_shardings``). A
    checkpoint saved in another layout (another ``fsdp``, another device count) is restored onto this one."""
    init_fn = functools.partial(create_train_state, model, tx, image_size=config.image_size)
    state, step = checkpoints.restore_latest(with_sharding(abstract_state, state_sharding))
    if state is not None:
        logging.info("Resumed from step %d in %s", step, checkpoints.directory)
        return state, step
    pretrained = (read_pretrained(config.pretrained, config.model, model=model, partial=config.pretrained_partial)
                  if config.pretrained else None)  # read and checked first: a bad file fails before compiling
    state = jax.jit(init_fn, out_shardings=state_sharding)(key)  # each device creates only its shards
    if pretrained is not None:
        weights = {"params": state_sharding.params, "batch_stats": state_sharding.batch_stats}
        state = load_into_state(_fully_addressable(state, weights), pretrained, weights)
        logging.info("Initialized from pretrained weights %s", config.pretrained)
    return state, 0


def _fully_addressable(state, weights):
    """``state`` with params and batch_stats whole on this process's devices, so their values can be read
    here (``load_into_state`` merges them with the file on the host): with several processes an fsdp axis
    may split them across hosts. A single process already holds every array whole."""
    if jax.process_count() == 1:
        return state
    whole = jax.jit(lambda p, b: (p, b), out_shardings=jax.tree.map(
        lambda s: sharding.replicated(s.mesh), (weights["params"], weights["batch_stats"])))
    params, batch_stats = whole(state.params, state.batch_stats)
    return state.replace(params=params, batch_stats=batch_stats)


def _compiled_together(jitted, name: str):
    """``jitted``, but with several processes, compiled at its first call and run only once every process
    has compiled it.

    The first run of a program with cross-process collectives sets them up (gloo on CPU), and that
    gives up when a peer arrives more than 30 s later; compile times differ between hosts (a cache
    hit on one, a loaded CPU on another), so all processes finish compiling first. The barrier is
    the coordination service's, not a collective (which would hit the same limit).
    """
    if jax.process_count() == 1:
        return jitted
    import orbax.checkpoint as ocp

    compiled = {}  # one executable per input shapes, as jit keeps

    def call(*args):
        shapes = tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(args))
        if shapes not in compiled:
            compiled[shapes] = jitted.lower(*args).compile()
            ocp.multihost.get_barrier_sync_fn()(key=f"efficientnet_jax_compiled_{name}_{len(compiled)}",
                                                timeout_ms=3600 * 1000)
        return compiled[shapes](*args)

    return call


class _Preemption:
    """SIGTERM (Cloud TPU preemption, ``kill``) asks the loop to checkpoint and stop.

    One process alone stops after the step during which the signal came. With several processes each
    one's own flag is not enough: hosts that see SIGTERM at different steps would disagree, one entering
    the checkpoint save (a collective) while another runs the next step, and the job would hang without
    its checkpoint. So every step carries each process's flag in its batch (entry ``stop``) and the step
    returns their maximum, reduced over all processes with the gradients at no extra cost; all processes
    read the previous step's value (already computed, so the loop does not wait on the current step) and
    stop after the same step, one step after the first flag.
    """

    def __init__(self):
        self.requested = False  # this process received SIGTERM
        self._several = jax.process_count() > 1
        self._previous = None  # several processes: the previous step's agreed flag, on the device
        self._previous_handler = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # the handler only sets a flag: a save in progress goes on
            logging.warning("SIGTERM received again: the checkpoint is being saved; the run stops once it is "
                            "written.")
            return
        logging.warning("SIGTERM received: saving a checkpoint and stopping.")
        self.requested = True

    def mark(self, local: dict) -> dict:
        """``local`` (this process's batch), with several processes plus this process's flag."""
        if not self._several:
            return local
        return {**local, "stop": np.full(len(local["label"]), self.requested, np.int32)}

    def agreed(self, metrics: dict) -> bool:
        """Whether to checkpoint and stop after the step that returned ``metrics``: the same on every process."""
        if not self._several:
            return self.requested
        previous, self._previous = self._previous, metrics["stop"]
        return previous is not None and bool(jax.device_get(previous))

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous_handler)


def _final_dropout(model) -> float | None:
    try:
        return models.setting(model, "dropout")
    except ValueError:  # a model_factory module without a dropout field
        return None


def _train_step_compiler(config, model, tx, schedule, base_key, final_dropout, state_sharding, replicated,
                         batch_sharding):
    """``for_stage(stage)``: the compiled train step of a progressive stage. Its dropout and mixup are
    constants of the program, and its image size a shape (jit compiles each size once)."""
    compiled = {}

    def for_stage(stage: progressive.Stage):
        key = (stage.dropout, stage.mixup_alpha)
        if key not in compiled:
            stage_model = (model if stage.dropout in (None, final_dropout)
                           else models.with_settings(model, dropout=stage.dropout))
            jitted = jax.jit(
                functools.partial(train_step, model=stage_model, tx=tx, schedule=schedule, base_key=base_key,
                                  label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
                                  accum_steps=config.grad_accum_steps, mixup_alpha=stage.mixup_alpha,
                                  cutmix_alpha=config.cutmix_alpha),
                in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, replicated),
                donate_argnums=0,
            )
            compiled[key] = _compiled_together(jitted, f"train_step_{stage.index}")
        return compiled[key]

    return for_stage


def _checked(fetched: list[dict], done: int, nan_policy: str, checkpoints: Checkpoints) -> list[int]:
    """The steps among the last ``len(fetched)`` whose update was skipped as non-finite; with
    ``nan_policy='stop'`` any such step ends the run."""
    bad = [done - len(fetched) + i + 1 for i, m in enumerate(fetched) if not m["finite"]]
    if bad and nan_policy == "stop":
        raise TrainingError(
            f"Loss or gradients became NaN/Inf at step {bad[0]}. The update was not applied and no "
            f"checkpoint was written after it; the last good checkpoint in {checkpoints.directory} "
            f"(steps {checkpoints.steps()}) is intact. Lower --config.learning_rate, or set "
            "--config.nan_policy=skip to skip such steps."
        )
    return bad


def _train_record(fetched: list[dict], bad: list[int], done: int, steps_per_epoch: float, batch_size: int,
                  seconds: float) -> dict:
    """The metrics.jsonl line of the steps since the last one (means over the applied updates)."""
    if bad:
        logging.warning("Skipped %d non-finite updates (steps %s)", len(bad), bad[:10])
    finite = [m for m in fetched if m["finite"]] or fetched
    return {
        "step": done, "epoch": done / steps_per_epoch, "split": "train",
        "loss": float(np.mean([m["loss"] for m in finite])),
        "accuracy": float(np.mean([m["accuracy"] for m in finite])),
        "learning_rate": float(fetched[-1]["learning_rate"]),
        "images_per_sec": len(fetched) * batch_size / max(seconds, 1e-9),
        "skipped_steps": len(bad),
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       model_factory: ModelFactory | None = None) -> dict:
    """Train ``config.model`` on ``config.dataset``; resume from ``workdir`` if it holds checkpoints.

    ``model_factory(num_classes, dtype)``, if given, builds the model instead of ``config.model``
    (a module built in memory, e.g. in a notebook or an experiment); ``config.model`` then only
    names it in logs and, when it is one of ours, supplies the default mean/std and image size.
    Returns the last evaluation (raw and EMA weights) as a dict.
    """
    # ---- Config and workdir ----------------------------------------------------------------
    if config.distributed:
        jax.distributed.initialize()
    config = resolve_config(config, custom_model=model_factory is not None)
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        lock = workdir_lock.acquire(workdir)  # before anything is written: a second run touches nothing
    except workdir_lock.WorkdirInUseError as e:
        raise TrainingError(str(e)) from None
    try:
        return _train_in(config, workdir, model_factory)
    finally:
        lock.release()


def _train_in(config: ml_collections.ConfigDict, workdir: pathlib.Path,
              model_factory: ModelFactory | None) -> dict:
    """``train_and_evaluate`` once the config is resolved and this run holds ``workdir``."""
    is_main = jax.process_index() == 0
    if is_main:
        write_text(workdir / "config.json", config.to_json_best_effort(indent=2))

    # ---- Mesh: `data` x `fsdp` over every device of every process ----------------------------
    mesh = sharding.make_mesh(config.fsdp)
    replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    logging.info("Mesh %s over %d devices (%d processes): %s", dict(mesh.shape), jax.device_count(),
                 jax.process_count(), jax.devices()[0].platform)

    # ---- Input: the dataset, opened once for the whole run -------------------------------------
    dataset = input_pipeline.open_dataset(config)
    info, local_batch = dataset.info, config.batch_size // jax.process_count()
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    steps_per_epoch, total_steps = run_length(config, info)

    # ---- Model, optimizer, progressive-learning stages -------------------------------------------
    model = (model_factory(info.num_classes, DTYPES[config.dtype]) if model_factory is not None
             else models.build_model(config, info.num_classes))
    tx, schedule = build_optimizer(config, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                                   params=abstract_params(model, config.image_size))
    final_dropout = _final_dropout(model)
    stages = progressive.stages_of(config, total_steps, final_dropout)  # one stage unless config.progressive

    # ---- State: split over `fsdp` (replicated with fsdp=1); restored from the newest good checkpoint
    # in this layout, whatever layout saved it, or created --------------------------------------------
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    abstract_state = jax.eval_shape(functools.partial(create_train_state, model, tx, image_size=config.image_size),
                                    init_key)
    state_sharding = sharding.state_shardings(abstract_state, mesh)
    if config.fsdp > 1:
        logging.info("Train state: %.1f MB per device split over fsdp=%d (%.1f MB replicated)",
                     sharding.device_bytes(abstract_state, state_sharding) / 1e6, config.fsdp,
                     sharding.device_bytes(abstract_state, jax.tree.map(lambda _: replicated, abstract_state)) / 1e6)
    checkpoints = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints,
                              async_save=config.async_checkpoints)
    state, start_step = initial_state(config, model, tx, init_key, checkpoints, abstract_state, state_sharding)
    if is_main and start_step == 0:
        logging.info("%s: %s parameters, %d classes, %d steps of batch %d (%.1f epochs)", config.model,
                     f"{ej.count_params(state.params):,}", info.num_classes, total_steps, config.batch_size,
                     total_steps / steps_per_epoch)

    # ---- Compiled steps: state in its layout, batch split over every device, state donated ------
    train_fn_for = _train_step_compiler(config, model, tx, schedule, step_key, final_dropout, state_sharding,
                                        replicated, batch_sharding)
    eval_fn = _compiled_together(jax.jit(functools.partial(eval_step, model=model),  # raw and EMA: one layout
                                         in_shardings=(state_sharding.params, state_sharding.batch_stats,
                                                       batch_sharding),
                                         out_shardings=replicated), "eval_step")

    def run_eval(state, step: int) -> dict:
        record = {"step": step, "epoch": step / steps_per_epoch, "split": "eval"}
        batches = functools.partial(dataset.eval_iterator, local_batch_size=local_batch, **shard)
        record.update(evaluate_batches(eval_fn, state.params, state.batch_stats, batches(), batch_sharding))
        if config.ema_decay > 0:
            ema = evaluate_batches(eval_fn, state.ema_params, state.ema_batch_stats, batches(), batch_sharding)
            record.update({f"ema_{k}": v for k, v in ema.items() if k != "examples"})
        writer.write(record)
        logging.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in record.items()
                                                   if isinstance(v, float)})
        return record

    # ---- Loop ------------------------------------------------------------------------------------
    writer = MetricWriter(workdir, enabled=is_main)
    progress = Progress(total_steps, start_step, enabled=is_main)
    preemption = _Preemption()
    batches = progressive.train_batches(dataset, stages, local_batch_size=local_batch, start_step=start_step,
                                        **shard)
    pending, window_start, last_eval = [], time.time(), {}
    try:
        for step in range(start_step, total_steps):
            stage, local = next(batches)
            batch = sharding.global_batch(preemption.mark(local), batch_sharding)
            state, metrics = train_fn_for(stage)(state, batch)
            pending.append(metrics)
            done = step + 1
            is_last = done == total_steps
            stop = preemption.agreed(metrics)
            log_now = is_last or done % config.log_every_steps == 0
            save_now = is_last or stop or done % config.checkpoint_every_steps == 0
            if log_now or save_now:  # never save a state before its steps were checked for NaN
                fetched = jax.device_get(pending)
                bad = _checked(fetched, done, config.nan_policy, checkpoints)
            if log_now:
                record = _train_record(fetched, bad, done, steps_per_epoch, config.batch_size,
                                       time.time() - window_start)
                if len(stages) > 1:
                    record.update(stage=stage.index, image_size=stage.image_size)
                writer.write(record)
                progress.update(done, {k: record[k] for k in ("loss", "accuracy", "images_per_sec")})
                pending, window_start = [], time.time()
            else:
                progress.update(done)
            if save_now:  # before any eval of the step: a preemption's grace period goes to the save
                checkpoints.save(done, state)
            if stop and not is_last:
                checkpoints.wait()
                logging.warning("Stopped at step %d after SIGTERM%s; rerun the same command to resume.", done,
                                "" if preemption.requested else " (received by another process)")
                return {**last_eval, "preempted": True, "step": done}  # the step saved, not the last eval's
            if is_last or (config.eval_every_steps > 0 and done % config.eval_every_steps == 0):
                last_eval = run_eval(state, done)
            checkpoints.poll()
        if start_step >= total_steps:  # nothing left to train: report the restored state
            last_eval = run_eval(state, start_step)
    finally:
        batches.close()
        preemption.restore()
        progress.close()
        checkpoints.close()
        writer.close()
    if is_main:
        write_text(workdir / "final_metrics.json", json.dumps(last_eval, indent=2))
    return last_eval
