"""The TF reference's ImageNet recipe for one EfficientNet variant (``base.py`` holds the recipe itself).

    python -m train.main --config=train/configs/imagenet.py:b3 --workdir=gs://bucket/b3
    python -m train.main --config=train/configs/imagenet.py:b3,runlocal --workdir=/tmp/b3   # shrunk, mock/tiny data

RMSProp (decay 0.9, momentum 0.9, eps 1e-3), 0.016 per 256 images, 5 warm-up epochs,
x0.97 every 2.4 epochs, L2 1e-5 off BN, label smoothing 0.1, EMA 0.9999, 350 epochs at
batch 4096, Inception crop + flip + AutoAugment, bfloat16 compute, the variant's resolution.
Progressive learning (EfficientNetV2): e.g. ``--config.progressive.stages=4
--config.progressive.initial_image_size=128``.
"""
import ml_collections

import efficientnet_jax as ej
from train.configs import base


def get_config(arg: str = "b0") -> ml_collections.ConfigDict:
    """``arg``: the variant ('b0' ... 'b7', or any ``efficientnet_jax.list_models()`` name), then optionally
    ',runlocal'."""
    variant, *flags = [part.strip() for part in arg.split(",")]
    model = variant if variant.startswith("efficientnet") else f"efficientnet_{variant}"
    if model not in ej.list_models() or set(flags) - {"runlocal"}:
        raise ValueError(f"imagenet.py takes VARIANT[,runlocal], e.g. 'b3' or 'b3,runlocal', got {arg!r}; "
                         f"variants: {', '.join(ej.list_models())}")
    config = base.get_config()
    config.model = model
    config.dtype = "bfloat16"
    config.remat = ej.model_info(model).width >= 1.6  # B5 and up: trade compute for memory
    config.eval_split = "validation"
    config.autoaugment = True  # or --config.autoaugment=False --config.randaugment="(2, 15)"
    config.shuffle_buffer = 16_384
    if "runlocal" in flags:  # a laptop / CI smoke test of the same recipe (mock or tiny data)
        base.runlocal(config, steps=3, batch_size=8, log_every_steps=1)
        config.image_size = 64
        config.shuffle_buffer = 64
    return config
