"""Architecture specs: the B0 and Lite stage tables, the EfficientNetV2 tables, and every named variant.

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
V2_MEAN = (128.0, 128.0, 128.0)  # EfficientNetV2 S/M/L/XL: automl's (x - 128) / 128, Keras's Rescaling(1/128, -1)
V2_STD = (128.0, 128.0, 128.0)
BlockType = Literal["mbconv", "fused_mbconv"]
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
    block: BlockType = "mbconv"  # "fused_mbconv": one k x k conv replaces expand 1x1 + depthwise (V2)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block after scaling: what the model actually builds."""

    stage: int  # 1-based
    index: int  # 1-based within the stage
    kernel: int
    stride: int
    in_filters: int
    out_filters: int
    expand_ratio: int
    se_filters: int  # 0 means no squeeze-excitation
    drop_path: float
    block: BlockType = "mbconv"

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


def _v2_stages(stem: int, rows) -> tuple[StageSpec, ...]:
    """EfficientNetV2 rows (block, expand, out, repeats, stride): kernel 3 everywhere, squeeze-excitation
    (0.25) in the MBConv stages only; each stage's input is the previous stage's output."""
    stages, in_filters = [], stem
    for block, expand, out, repeats, stride in rows:
        fused = block == "fused_mbconv"
        stages.append(StageSpec(3, repeats, in_filters, out, expand, stride, 0.0 if fused else 0.25, block))
        in_filters = out
    return tuple(stages)


_F, _M = "fused_mbconv", "mbconv"
# Tan & Le 2021, Table 4 (S) and google/automl effnetv2_configs.py (base, M, L, XL).
V2_BASE_STAGES = _v2_stages(32, ((_F, 1, 16, 1, 1), (_F, 4, 32, 2, 2), (_F, 4, 48, 2, 2), (_M, 4, 96, 3, 2),
                                 (_M, 6, 112, 5, 1), (_M, 6, 192, 8, 2)))
V2_S_STAGES = _v2_stages(24, ((_F, 1, 24, 2, 1), (_F, 4, 48, 4, 2), (_F, 4, 64, 4, 2), (_M, 4, 128, 6, 2),
                              (_M, 6, 160, 9, 1), (_M, 6, 256, 15, 2)))
V2_M_STAGES = _v2_stages(24, ((_F, 1, 24, 3, 1), (_F, 4, 48, 5, 2), (_F, 4, 80, 5, 2), (_M, 4, 160, 7, 2),
                              (_M, 6, 176, 14, 1), (_M, 6, 304, 18, 2), (_M, 6, 512, 5, 1)))
V2_L_STAGES = _v2_stages(32, ((_F, 1, 32, 4, 1), (_F, 4, 64, 7, 2), (_F, 4, 96, 7, 2), (_M, 4, 192, 10, 2),
                              (_M, 6, 224, 19, 1), (_M, 6, 384, 25, 2), (_M, 6, 640, 7, 1)))
V2_XL_STAGES = _v2_stages(32, ((_F, 1, 32, 4, 1), (_F, 4, 64, 8, 2), (_F, 4, 96, 8, 2), (_M, 4, 192, 16, 2),
                               (_M, 6, 256, 24, 1), (_M, 6, 512, 32, 2), (_M, 6, 640, 8, 1)))


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
    round_limit: float = 0.9  # width rounding never goes below this fraction (V1: 0.9; V2: 0, no floor)
    fix_first_last_repeats: bool = False  # Lite keeps 1 block in the first and last stage
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    padding: Literal["same", "symmetric"] = "same"  # TF "SAME" vs PyTorch-style symmetric
    # Data settings of the published weights (inputs in 0..255).
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    uncropped_from: int | None = None  # automl V2 evaluates the whole image at this resolution and above

    @property
    def crop_pct(self) -> float:
        """Eval center-crop fraction of the TF reference: resolution / (resolution + 32), or 1.0 (no crop)
        from ``uncropped_from`` up."""
        if self.uncropped_from is not None and self.resolution >= self.uncropped_from:
            return 1.0
        return eval_crop_pct(self.resolution)

    def round_filters(self, filters: int) -> int:
        """``filters`` scaled by this variant's width with its own rounding rule."""
        return round_filters(filters, self.width, round_limit=self.round_limit)

    @property
    def stem_channels(self) -> int:
        return self.round_filters(self.stem_filters) if self.scale_stem_head else self.stem_filters

    @property
    def head_channels(self) -> int:
        return self.round_filters(self.head_filters) if self.scale_stem_head else self.head_filters

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
        out_filters = spec.round_filters(stage.out_filters)
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
                    block=stage.block,
                )
            )
            position += 1
        in_filters = out_filters
    return tuple(blocks)


def _b(name, width, depth, resolution, dropout):
    return ModelSpec(name=name, width=width, depth=depth, resolution=resolution, dropout=dropout)


def _v2(name, stages, width, depth, resolution, dropout):
    """EfficientNetV2: no 90% rounding floor; S/M/L/XL trained on (x - 128) / 128 with bilinear resizing
    and evaluated uncropped at 320 px and above (automl preprocessing.py); B0-B3 keep V1's preprocessing."""
    is_b = name.rsplit("_", 1)[1].startswith("b")
    inputs = {} if is_b else dict(mean=V2_MEAN, std=V2_STD, interpolation="bilinear",
                                             uncropped_from=320)
    return ModelSpec(name=name, width=width, depth=depth, resolution=resolution, dropout=dropout,
                     stages=stages, stem_filters=stages[0].in_filters, round_limit=0.0, **inputs)


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
        # (width, depth, eval resolution, dropout): google/automl effnetv2_configs.py.
        _v2("efficientnetv2_b0", V2_BASE_STAGES, 1.0, 1.0, 224, 0.2),
        _v2("efficientnetv2_b1", V2_BASE_STAGES, 1.0, 1.1, 240, 0.2),
        _v2("efficientnetv2_b2", V2_BASE_STAGES, 1.1, 1.2, 260, 0.3),
        _v2("efficientnetv2_b3", V2_BASE_STAGES, 1.2, 1.4, 300, 0.3),
        _v2("efficientnetv2_s", V2_S_STAGES, 1.0, 1.0, 384, 0.2),
        _v2("efficientnetv2_m", V2_M_STAGES, 1.0, 1.0, 480, 0.3),
        _v2("efficientnetv2_l", V2_L_STAGES, 1.0, 1.0, 480, 0.4),
        _v2("efficientnetv2_xl", V2_XL_STAGES, 1.0, 1.0, 512, 0.4),
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
