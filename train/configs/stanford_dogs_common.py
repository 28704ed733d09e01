"""Fine-tuning on Stanford Dogs (120 breeds; tfds ``stanford_dogs``: 12,000 train / 8,580 test images),
shared by ``stanford_dogs_b0.py`` and ``stanford_dogs_resnet50.py`` so that the two runs differ only in
the model and its starting weights.

The seed review reported EfficientNet at 82% and ResNet at 68% validation accuracy on dog breeds, with
EfficientNet ~10% slower to train; ``python -m experiments.dogs_comparison`` runs both recipes and puts
accuracy and training images/s side by side. Prepare the data once (the training program never
downloads): ``tfds build stanford_dogs --data_dir=DIR`` (~800 MB from Stanford's site), then pass
``--config.data_dir=DIR``.

The recipe is ``finetune.py``'s: TF-style RMSProp at 0.016 per 256 images, cosine decay after one
warm-up epoch, the pretrained backbone at 0.1× the new head's learning rate, label smoothing 0.1,
EMA 0.999, Inception crop + flip at 224 px, the reference eval crop (224/256), bfloat16 compute.
"""
import ml_collections

from train.configs import finetune


def dogs_config(model: str, runlocal: str = "") -> ml_collections.ConfigDict:
    config = finetune.get_config()
    config.model = model
    config.model_overrides = {}
    config.dataset = "stanford_dogs"
    config.train_split = "train"
    config.eval_split = "test"  # stanford_dogs has no validation split; its test split is the usual benchmark
    config.image_size = 224
    config.augment = "inception"
    config.dtype = "bfloat16"
    config.batch_size = 64
    config.num_epochs = 20  # 188 steps per epoch at batch 64
    config.learning_rate = 0.016
    config.warmup_epochs = 1.0
    config.backbone_lr_multiplier = 0.1
    config.ema_decay = 0.999
    config.log_every_steps = 50
    config.eval_every_steps = 940  # every 5 epochs
    config.checkpoint_every_steps = 940
    if runlocal:  # the same recipe on the embedded digits, for a laptop (no pretrained weights offline)
        config.pretrained = None
        config.backbone_lr_multiplier = 1.0
        config.dataset = "sklearn_digits"
        config.image_size = 32
        config.augment = "pad_crop"
        config.dtype = "float32"
        config.batch_size = 16
        config.num_train_steps = 6
        config.ema_decay = 0.0
        # BN momentum 0.9: a few steps must be enough for the running statistics to follow.
        config.model_overrides = dict(width=0.25, depth=0.34, bn_momentum=0.9)
        config.log_every_steps = 2
        config.eval_every_steps = 6
        config.checkpoint_every_steps = 6
    return config
