"""The TF reference's ImageNet recipe, shared by imagenet_b0.py ... imagenet_b7.py.

RMSProp (decay 0.9, momentum 0.9, eps 1e-3), 0.016 per 256 images, 5 warm-up epochs,
x0.97 every 2.4 epochs, L2 1e-5 off BN, label smoothing 0.1, EMA 0.9999, 350 epochs at
batch 4096, Inception crop + flip + AutoAugment, bfloat16 compute.
"""
import ml_collections
from ml_collections.config_dict import placeholder

import efficientnet_jax as ej
from train.configs import progressive_block


def imagenet_config(model: str, runlocal: str = "") -> ml_collections.ConfigDict:
    spec = ej.model_info(model)
    config = ml_collections.ConfigDict()
    config.model = model
    config.model_overrides = {}  # dropout and drop path come from the spec
    config.dtype = "bfloat16"
    config.remat = spec.width >= 1.6  # B5 and up: trade compute for memory

    config.dataset = "imagenet2012"
    config.data_dir = placeholder(str)  # tfds default; see README "Training on Cloud TPU / GPU"
    config.train_split = "train"
    config.eval_split = "validation"
    config.image_size = spec.resolution
    config.augment = "inception"
    config.autoaugment = True
    config.randaugment = placeholder(tuple)  # e.g. (2, 15) for RandAugment instead of AutoAugment
    config.mean = placeholder(tuple)
    config.std = placeholder(tuple)
    config.shuffle_buffer = 16_384

    config.batch_size = 4096
    config.num_epochs = 350
    config.num_train_steps = -1
    config.optimizer = "rmsprop_tf"
    config.learning_rate = 0.016
    config.scale_lr_by_batch = True
    config.lr_schedule = "exponential"
    config.lr_decay_factor = 0.97
    config.lr_decay_epochs = 2.4
    config.warmup_epochs = 5.0
    config.weight_decay = 1e-5
    config.label_smoothing = 0.1
    config.mixup_alpha = 0.0  # > 0 enables mixup (e.g. 0.2)
    config.cutmix_alpha = 0.0  # > 0 enables CutMix (e.g. 1.0); with both, one is picked per step
    # EfficientNetV2's progressive learning, e.g. --config.progressive.stages=4
    # --config.progressive.initial_image_size=128 --config.progressive.initial_randaugment_magnitude=5
    config.progressive = progressive_block()
    config.ema_decay = 0.9999
    config.grad_accum_steps = 1
    config.nan_policy = "stop"
    config.seed = 0

    config.log_every_steps = 100
    config.eval_every_steps = 3130  # ~10 epochs at batch 4096
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.async_checkpoints = True
    config.distributed = False  # True on multi-host TPU slices / multi-node GPU: jax.distributed.initialize()

    if runlocal:  # a laptop / CI smoke test of the same recipe (mock or tiny data)
        config.dtype = "float32"
        config.remat = False
        config.batch_size = 8
        config.num_train_steps = 3
        config.image_size = 64
        config.model_overrides = dict(width=0.25, depth=0.34)
        config.shuffle_buffer = 64
        config.log_every_steps = 1
        config.eval_every_steps = 3
        config.checkpoint_every_steps = 3
    return config
