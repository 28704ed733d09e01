"""Architecture specs: one B0 stage table, one Lite table, and the scaling of every named variant.

A variant is data (a frozen ``ModelSpec``); ``decode_blocks`` turns it into the
per-block list the model builds from. Nothing else in the package knows the table.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from efficientnet_jax.scaling import round_filters, round_repeats

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LITE_MEAN = (127.0, 127.0, 127.0)  # Lite weights were trained on (x - 127) / 128
LITE_STD = (128.0, 128.0, 128.0)
MIN_RESOLUTION = 32  # five stride-2 stages
CROP_PADDING = 32  # the TF reference's eval crop: resolution / (resolution + 32), 0.875 at 224


def eval_crop_pct(resolution: int) -> float:
    """Fraction of the short side the reference's eval center crop keeps at ``resolution``."""
    return resolution / (resolution + CROP_PADDING)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One row of the base table (before scaling)."""

    kernel: int
    repeats: int
    in_filters: int  # as printed in the paper; decoding uses what the previous layer really outputs
    out_filters: int
    expand_ratio: int
    stride: int
    se_ratio: float = 0.25  # of the block's input channels; 0 disables SE


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block after scaling: what the model actually builds."""

    stage: int  # 1-based
    index: int  # 1-based within the stage
    kernel: int
    stride: int
    in_filters: int
    out_filters: int
    expand_ratio: int
    se_filters: int  # 0 means no squeeze-excitation
    drop_path: float

    @property
    def expanded_filters(self) -> int:
        return self.in_filters * self.expand_ratio

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_filters == self.out_filters

    @property
    def name(self) -> str:
        return f"stage{self.stage}_block{self.index}"


# (kernel, repeats, in, out, expand, stride): Tan & Le 2019, Table 1.
B0_STAGES = (
    StageSpec(3, 1, 32, 16, 1, 1),
    StageSpec(3, 2, 16, 24, 6, 2),
    StageSpec(5, 2, 24, 40, 6, 2),
    StageSpec(3, 3, 40, 80, 6, 2),
    StageSpec(5, 3, 80, 112, 6, 1),
    StageSpec(5, 4, 112, 192, 6, 2),
    StageSpec(3, 1, 192, 320, 6, 1),
)
# Lite: the same table without squeeze-excitation (it does not quantize well).
LITE_STAGES = tuple(dataclasses.replace(s, se_ratio=0.0) for s in B0_STAGES)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a variant: architecture, scaling, and its data settings."""

    name: str
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    drop_path: float = 0.2  # rate of the last block; grows linearly from 0
    stages: tuple[StageSpec, ...] = B0_STAGES
    stem_filters: int = 32
    head_filters: int = 1280
    activation: Literal["swish", "relu6"] = "swish"
    scale_stem_head: bool = True  # Lite keeps stem 32 and head 1280
    fix_first_last_repeats: bool = False  # Lite keeps 1 block in the first and last stage
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    padding: Literal["same", "symmetric"] = "same"  # TF "SAME" vs PyTorch-style symmetric
    # Data settings of the published weights (inputs in 0..255).
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    @property
    def crop_pct(self) -> float:
        """Eval center-crop fraction of the TF reference: resolution / (resolution + 32)."""
        return eval_crop_pct(self.resolution)

    @property
    def stem_channels(self) -> int:
        return round_filters(self.stem_filters, self.width) if self.scale_stem_head else self.stem_filters

    @property
    def head_channels(self) -> int:
        return round_filters(self.head_filters, self.width) if self.scale_stem_head else self.head_filters

    def stage_repeats(self) -> tuple[int, ...]:
        last = len(self.stages) - 1
        return tuple(
            s.repeats
            if self.fix_first_last_repeats and i in (0, last)
            else round_repeats(s.repeats, self.depth)
            for i, s in enumerate(self.stages)
        )

    def blocks(self) -> tuple[BlockSpec, ...]:
        return decode_blocks(self)


def decode_blocks(spec: ModelSpec) -> tuple[BlockSpec, ...]:
    """Scale the stage table into blocks; drop path grows with the global block index."""
    repeats = spec.stage_repeats()
    total = sum(repeats)
    blocks, position = [], 0
    in_filters = spec.stem_channels  # what really arrives: Lite's stem is not width-scaled
    for stage_index, (stage, count) in enumerate(zip(spec.stages, repeats), start=1):
        out_filters = round_filters(stage.out_filters, spec.width)
        for j in range(count):
            block_in = in_filters if j == 0 else out_filters
            se_filters = max(1, int(block_in * stage.se_ratio)) if stage.se_ratio > 0 else 0
            blocks.append(
                BlockSpec(
                    stage=stage_index,
                    index=j + 1,
                    kernel=stage.kernel,
                    stride=stage.stride if j == 0 else 1,
                    in_filters=block_in,
                    out_filters=out_filters,
                    expand_ratio=stage.expand_ratio,
                    se_filters=se_filters,
                    drop_path=spec.drop_path * position / total,
                )
            )
            position += 1
        in_filters = out_filters
    return tuple(blocks)


def _b(name, width, depth, resolution, dropout):
    return ModelSpec(name=name, width=width, depth=depth, resolution=resolution, dropout=dropout)


def _lite(name, width, depth, resolution, dropout):
    return ModelSpec(
        name=name, width=width, depth=depth, resolution=resolution, dropout=dropout,
        stages=LITE_STAGES, activation="relu6", scale_stem_head=False,
        fix_first_last_repeats=True, mean=LITE_MEAN, std=LITE_STD,
    )


# (width, depth, resolution, dropout) from the TF reference (efficientnet_builder.py).
MODEL_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _b("efficientnet_b0", 1.0, 1.0, 224, 0.2),
        _b("efficientnet_b1", 1.0, 1.1, 240, 0.2),
        _b("efficientnet_b2", 1.1, 1.2, 260, 0.3),
        _b("efficientnet_b3", 1.2, 1.4, 300, 0.3),
        _b("efficientnet_b4", 1.4, 1.8, 380, 0.4),
        _b("efficientnet_b5", 1.6, 2.2, 456, 0.4),
        _b("efficientnet_b6", 1.8, 2.6, 528, 0.5),
        _b("efficientnet_b7", 2.0, 3.1, 600, 0.5),
        _b("efficientnet_b8", 2.2, 3.6, 672, 0.5),
        _b("efficientnet_l2", 4.3, 5.3, 800, 0.5),
        _lite("efficientnet_lite0", 1.0, 1.0, 224, 0.2),
        _lite("efficientnet_lite1", 1.0, 1.1, 240, 0.2),
        _lite("efficientnet_lite2", 1.1, 1.2, 260, 0.3),
        _lite("efficientnet_lite3", 1.2, 1.4, 280, 0.3),
        _lite("efficientnet_lite4", 1.4, 1.8, 300, 0.3),
    )
}


def list_models() -> list[str]:
    """Names accepted by ``create_model`` and ``model_info``."""
    return list(MODEL_SPECS)


def model_info(name: str) -> ModelSpec:
    """The spec of a named variant: width, depth, resolution, dropout, crop_pct, mean/std..."""
    try:
        return MODEL_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model name {name!r}. Available models: {', '.join(MODEL_SPECS)}"
        ) from None
