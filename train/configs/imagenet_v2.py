"""EfficientNetV2's ImageNet recipe (Tan & Le 2021, section 6.1 and Table 6) for one variant.

    python -m train.main --config=train/configs/imagenet_v2.py:s --workdir=gs://bucket/v2s
    python -m train.main --config=train/configs/imagenet_v2.py:s,runlocal --workdir=/tmp/v2s  # mock/tiny data

What differs from the V1 recipe in ``base.py`` (which already has the shared part: RMSProp decay 0.9 and
momentum 0.9, 0.016 per 256 images = 0.256 at batch 4096 after 5 warm-up epochs, x0.97 every 2.4 epochs,
weight decay 1e-5, label smoothing 0.1, EMA 0.9999, 350 epochs, stochastic depth 0.2 (the spec's
``drop_path``), batch-norm momentum 0.99 (the paper; automl's code default is 0.9)):

- Progressive learning in 4 stages (``train/progressive.py``, the paper's Algorithm 1): image size from 128
  and RandAugment magnitude from 5, mixup alpha from 0 and dropout from 0.1, each growing linearly to the
  paper's Table 6 maxima: S 300 px / 15 / 0 / 0.3, M 380 / 20 / 0.2 / 0.4, L 380 / 25 / 0.4 / 0.5.
  google/automl's published code differs a little (effnetv2_configs.py: train 300/384/384, RandAugment
  10/15/20, mixup and CutMix 0/0.2/0.5, a fixed dropout 0.2/0.3/0.4, the first stage above 128 px);
  we follow the paper. XL uses L's schedule with automl's 384 px.
- Evaluation at the variant's own resolution (S 384, M/L 480, XL 512), larger than the last training size,
  on the whole image from 320 px up (automl's preprocessing.py), with (x - 128) / 128 inputs.
- B0-B3 were trained as V1 was (automl: the V1 AutoAugment, no progressive regularization, train sizes
  192/192/208/240), so their recipe is V1's with that train size and the 4-stage size schedule from 128.
"""
import ml_collections

import efficientnet_jax as ej
from train.configs import base

# final train size, RandAugment magnitude, mixup alpha, dropout (Table 6 maxima); None: V1-style training
PROGRESSIVE_FINAL = {
    "s": (300, 15, 0.0, 0.3), "m": (380, 20, 0.2, 0.4), "l": (380, 25, 0.4, 0.5), "xl": (384, 25, 0.4, 0.5),
    "b0": (192, None, 0.0, None), "b1": (192, None, 0.0, None), "b2": (208, None, 0.0, None),
    "b3": (240, None, 0.0, None),
}
INITIAL_IMAGE_SIZE, INITIAL_RANDAUGMENT, INITIAL_MIXUP, INITIAL_DROPOUT = 128, 5.0, 0.0, 0.1
STAGES = 4


def get_config(arg: str = "s") -> ml_collections.ConfigDict:
    """``arg``: the variant ('b0' ... 'b3', 's', 'm', 'l', 'xl'), then optionally ',runlocal' (a shrunk model
    for mock or tiny data: 8 steps in 4 stages, 32 to 64 px)."""
    variant, *flags = [part.strip() for part in arg.split(",")]
    if variant not in PROGRESSIVE_FINAL or set(flags) - {"runlocal"}:
        raise ValueError(f"imagenet_v2.py takes VARIANT[,runlocal], e.g. 's' or 's,runlocal', got {arg!r}; "
                         f"variants: {', '.join(PROGRESSIVE_FINAL)}")
    model = f"efficientnetv2_{variant}"
    spec = ej.model_info(model)
    train_size, magnitude, mixup, dropout = PROGRESSIVE_FINAL[variant]

    config = base.get_config()
    config.model = model
    config.dtype = "bfloat16"
    config.remat = spec.depth * sum(s.repeats for s in spec.stages) >= 70  # L and XL: trade compute for memory
    config.eval_split = "validation"
    config.shuffle_buffer = 16_384
    config.image_size, config.eval_image_size, config.crop_pct = train_size, spec.resolution, spec.crop_pct
    config.mixup_alpha = mixup
    if magnitude is None:
        config.autoaugment = True
    else:
        config.randaugment = (2, float(magnitude))
        config.model_overrides = dict(dropout=dropout)
    config.progressive.stages = STAGES
    config.progressive.initial_image_size = INITIAL_IMAGE_SIZE
    if magnitude is not None:
        config.progressive.initial_randaugment_magnitude = INITIAL_RANDAUGMENT
        config.progressive.initial_mixup_alpha = INITIAL_MIXUP
        config.progressive.initial_dropout = INITIAL_DROPOUT

    if "runlocal" in flags:
        base.runlocal(config, steps=STAGES * 2, batch_size=8, log_every_steps=1, eval_every_steps=STAGES * 2,
                      **config.model_overrides)
        config.image_size = config.eval_image_size = 64
        config.progressive.initial_image_size = 32
        config.shuffle_buffer = 64
    return config
