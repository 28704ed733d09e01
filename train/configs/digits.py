"""The embedded default: a small EfficientNet on scikit-learn's digits, a few minutes on 2 CPU cores.

    python -m train.main --config=train/configs/digits.py --workdir=runs/digits
    python -m train.main --config=train/configs/digits.py:runlocal --workdir=/tmp/smoke   # seconds

The base recipe (``base.py``) with what differs for 1,437 small images on a CPU.
"""
import ml_collections

from train.configs import base


def get_config(runlocal: str = "") -> ml_collections.ConfigDict:
    config = base.get_config()
    # Model: the B0 table at half width and depth (digits are 8x8; a full B0 would only be slower).
    config.model_overrides = dict(width=0.5, depth=0.5, dropout=0.1, drop_path=0.1)

    # Data: train/datasets/digits.py, 1,437 train / 360 test images stored at 32x32.
    config.dataset = "sklearn_digits"
    config.eval_split = "test"
    config.image_size = 32
    config.augment = "pad_crop"  # no flips: a flipped digit is another digit

    config.batch_size = 64
    config.num_epochs = 60.0
    config.lr_schedule = "cosine"
    config.warmup_epochs = 2.0
    config.ema_decay = 0.99

    config.log_every_steps = 25
    config.eval_every_steps = 450
    config.checkpoint_every_steps = 450

    if runlocal:
        base.runlocal(config, dropout=0.0, drop_path=0.0)
    return config
