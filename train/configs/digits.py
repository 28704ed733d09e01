"""The embedded default: a small EfficientNet on scikit-learn's digits, a few minutes on 2 CPU cores.

    python -m train.main --config=train/configs/digits.py --workdir=runs/digits
    python -m train.main --config=train/configs/digits.py:runlocal --workdir=/tmp/smoke   # seconds
"""
import ml_collections
from ml_collections.config_dict import placeholder

from train.configs import progressive_block


def get_config(runlocal: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Model: the B0 table at half width and depth (digits are 8x8; a full B0 would only be slower).
    config.model = "efficientnet_b0"
    config.model_overrides = dict(width=0.5, depth=0.5, dropout=0.1, drop_path=0.1)
    config.dtype = "float32"
    config.remat = False

    # Data: train/datasets/digits.py, 1,437 train / 360 test images stored at 32x32.
    config.dataset = "sklearn_digits"
    config.data_dir = placeholder(str)
    config.train_split = "train"
    config.eval_split = "test"
    config.image_size = 32
    config.augment = "pad_crop"  # no flips: a flipped digit is another digit
    config.randaugment = placeholder(tuple)
    config.autoaugment = False
    config.mean = placeholder(tuple)  # None: the model's own (model_info(model).mean / .std)
    config.std = placeholder(tuple)
    config.skip_corrupt_images = True  # folder: datasets drop (and count) files that do not decode; False: error

    # Schedule: durations in epochs unless num_train_steps > 0.
    config.batch_size = 64
    config.num_epochs = 60
    config.num_train_steps = -1
    config.optimizer = "rmsprop_tf"
    config.learning_rate = 0.016  # per 256 images (the reference value), scaled by batch_size / 256
    config.scale_lr_by_batch = True
    config.lr_schedule = "cosine"
    config.warmup_epochs = 2.0
    config.weight_decay = 1e-5
    config.label_smoothing = 0.1
    config.mixup_alpha = 0.0  # > 0 enables mixup (e.g. 0.2)
    config.cutmix_alpha = 0.0  # > 0 enables CutMix (e.g. 1.0); with both, one is picked per step
    config.progressive = progressive_block()  # off (stages=0); README "Progressive learning"
    config.ema_decay = 0.99
    config.grad_accum_steps = 1
    config.nan_policy = "stop"
    config.seed = 0

    # Bookkeeping.
    config.log_every_steps = 25
    config.eval_every_steps = 450
    config.checkpoint_every_steps = 450
    config.keep_checkpoints = 3
    config.async_checkpoints = True
    config.distributed = False

    if runlocal:
        config.num_train_steps = 6
        config.batch_size = 16
        config.log_every_steps = 2
        config.eval_every_steps = 3
        config.checkpoint_every_steps = 3
        config.model_overrides = dict(width=0.25, depth=0.34, dropout=0.0, drop_path=0.0)
    return config
