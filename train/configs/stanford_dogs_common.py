"""Fine-tuning on Stanford Dogs (120 breeds; tfds ``stanford_dogs``: 12,000 train / 8,580 test images),
shared by ``stanford_dogs_b0.py`` and ``stanford_dogs_resnet50.py`` so that the two runs differ only in
the model and its starting weights.

The seed review reported EfficientNet at 82% and ResNet at 68% validation accuracy on dog breeds, with
EfficientNet ~10% slower to train; ``python -m experiments.dogs_comparison`` runs both recipes and puts
accuracy and training images/s side by side. Prepare the data once (the training program never
downloads): ``tfds build stanford_dogs --data_dir=DIR`` (~800 MB from Stanford's site), then pass
``--config.data_dir=DIR``.

The recipe is ``finetune.py``'s: TF-style RMSProp at 0.016 per 256 images, cosine decay after one
warm-up epoch, the pretrained backbone at 0.1x the new head's learning rate, label smoothing 0.1,
EMA 0.999, Inception crop + flip at 224 px, the reference eval crop (224/256), bfloat16 compute.
"""
import ml_collections

from train.configs import base, finetune


def dogs_config(model: str, runlocal: str = "") -> ml_collections.ConfigDict:
    config = finetune.get_config()
    config.model = model
    config.dataset = "stanford_dogs"
    config.eval_split = "test"  # stanford_dogs has no validation split; its test split is the usual benchmark
    config.image_size = 224
    config.dtype = "bfloat16"
    config.batch_size = 64
    config.num_epochs = 20.0  # 188 steps per epoch at batch 64
    config.log_every_steps = 50
    config.eval_every_steps = 940  # every 5 epochs
    config.checkpoint_every_steps = 940
    if runlocal:  # the same recipe on the embedded digits, for a laptop (no pretrained weights offline)
        config.pretrained = None
        config.backbone_lr_multiplier = 1.0
        config.ema_decay = 0.0
        # BN momentum 0.9: a few steps must be enough for the running statistics to follow.
        base.runlocal(config, eval_every_steps=6, digits=True, bn_momentum=0.9)
    return config
