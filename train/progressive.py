"""Progressive learning (Tan & Le 2021, EfficientNetV2, Algorithm 1): small images and weak
regularization early, the config's own image size and regularization at the end.

Small images make early steps cheap, and a network that sees small images learns best with weak
regularization, so image size, RandAugment magnitude, mixup alpha and dropout grow together. The
run's steps are split into M equal stages; stage i uses ``initial + (final - initial) * i / (M - 1)``
of each, so the last stage trains with exactly the config's values (the ones evaluation and
export assume). ``config.progressive``:

    stages                          M; 0 or 1: off (every step uses the final values)
    initial_image_size              final: config.image_size
    initial_randaugment_magnitude   final: config.randaugment[1]
    initial_mixup_alpha             final: config.mixup_alpha
    initial_dropout                 final: the model's dropout
An initial value left None keeps that setting fixed at its final value.

Resumption stays exact: each stage reads its batches from its own train iterator of the run's
dataset (opened once) started at the stage's (or the restored) step, and batch k of that iterator
depends only on (seed, k), never on the image size, so a run resumed mid-stage sees the batches of
the uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterator

from train import input_pipeline

SETTINGS = ("image_size", "randaugment_magnitude", "mixup_alpha", "dropout")


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    num_stages: int
    start_step: int
    end_step: int  # exclusive
    image_size: int
    randaugment_magnitude: float | None  # None: the config has no RandAugment
    mixup_alpha: float
    dropout: float | None  # None: the model's own

    def describe(self) -> str:
        parts = [f"{self.image_size} px"]
        if self.randaugment_magnitude is not None:
            parts.append(f"RandAugment magnitude {self.randaugment_magnitude:g}")
        parts.append(f"mixup alpha {self.mixup_alpha:g}")
        if self.dropout is not None:
            parts.append(f"dropout {self.dropout:g}")
        return (f"stage {self.index + 1}/{self.num_stages}, steps {self.start_step}-{self.end_step - 1}: "
                + ", ".join(parts))


def schedule(total_steps: int, num_stages: int, initial: dict, final: dict) -> tuple[Stage, ...]:
    """The stages of a run of ``total_steps``: M step ranges of equal length (to a step when M does not
    divide the steps), values interpolated linearly from ``initial`` to ``final``
    (dicts over ``SETTINGS``; an initial value that is None or missing stays at its final value).

    ``num_stages`` 0 or 1 gives one stage with the final values.
    """
    if not isinstance(num_stages, int) or num_stages < 0:
        raise ValueError(f"progressive.stages must be an integer >= 0 (0: off), got {num_stages!r}")
    if num_stages > max(total_steps, 1):
        raise ValueError(f"progressive.stages={num_stages} is more than the {total_steps} training steps")
    unknown = sorted((set(initial) | set(final)) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown progressive settings {unknown}; they are {SETTINGS}")
    m = max(num_stages, 1)
    stages = []
    for i in range(m):
        ratio = i / (m - 1) if m > 1 else 1.0
        values = {}
        for key in SETTINGS:
            end, start = final.get(key), initial.get(key)
            # This form gives exactly ``initial`` at ratio 0 and exactly ``final`` at ratio 1.
            values[key] = end if start is None or end is None else start * (1 - ratio) + end * ratio
        stages.append(Stage(
            index=i, num_stages=m, start_step=total_steps * i // m, end_step=total_steps * (i + 1) // m,
            image_size=int(round(values["image_size"])),
            randaugment_magnitude=values["randaugment_magnitude"],
            mixup_alpha=float(values["mixup_alpha"] or 0.0),
            dropout=values["dropout"],
        ))
    return tuple(stages)


def stages_of(config, total_steps: int, final_dropout: float | None) -> tuple[Stage, ...]:
    """``schedule`` read off a resolved config (``config.progressive``; stages=0: off)."""
    randaugment = config.randaugment
    final = {"image_size": config.image_size, "mixup_alpha": config.mixup_alpha or 0.0,
             "randaugment_magnitude": float(randaugment[1]) if randaugment else None, "dropout": final_dropout}
    num_stages = config.progressive.stages or 0
    initial = {"image_size": config.progressive.initial_image_size,
               "randaugment_magnitude": config.progressive.initial_randaugment_magnitude,
               "mixup_alpha": config.progressive.initial_mixup_alpha,
               "dropout": config.progressive.initial_dropout}
    if num_stages > 1:
        if initial.get("randaugment_magnitude") is not None and not randaugment:
            raise ValueError("progressive.initial_randaugment_magnitude needs config.randaugment (the final "
                             "(layers, magnitude)) to be set")
        if initial.get("dropout") is not None and final_dropout is None:
            raise ValueError("progressive.initial_dropout needs a model with a dropout setting")
        if initial.get("image_size") is not None and initial["image_size"] < 1:
            raise ValueError(f"progressive.initial_image_size must be positive, got {initial['image_size']}")
    return schedule(total_steps, num_stages, initial if num_stages > 1 else {}, final)


def stage_config(config, stage: Stage):
    """``config`` as the input pipeline must see it during ``stage`` (its image size and magnitude)."""
    randaugment = config.randaugment
    same_magnitude = not randaugment or float(randaugment[1]) == stage.randaugment_magnitude
    if stage.image_size == config.image_size and same_magnitude:
        return config
    config = config.copy_and_resolve_references()
    config.image_size = stage.image_size
    if not same_magnitude:
        config.randaugment = (int(randaugment[0]), float(stage.randaugment_magnitude))
    return config


def train_batches(dataset: input_pipeline.Dataset, stages: tuple[Stage, ...], *, local_batch_size: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[tuple[Stage, dict]]:
    """(stage, batch) for steps ``start_step`` ... the end of the last stage.

    Batch k is batch k of ``dataset``'s train iterator under the stage's config, whatever ``start_step``
    was. Stage changes are logged.
    """
    for stage in stages:
        if stage.end_step <= start_step:
            continue
        first = max(start_step, stage.start_step)
        if len(stages) > 1:
            logging.info("Progressive learning: %s%s", stage.describe(),
                         f" (resumed at step {first})" if first > stage.start_step else "")
        batches = dataset.with_config(stage_config(dataset.config, stage)).train_iterator(
            local_batch_size=local_batch_size, start_step=first, process_index=process_index,
            process_count=process_count)
        try:
            for _ in range(first, stage.end_step):
                yield stage, next(batches)
        finally:
            batches.close()  # frees the stage's tf.data pipeline before the next one starts
