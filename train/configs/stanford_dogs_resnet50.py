"""A ResNet-50 baseline on Stanford Dogs with B0's recipe (see stanford_dogs_common.py).

    python -m train.main --config=train/configs/stanford_dogs_resnet50.py --workdir=runs/dogs_r50 \\
        --config.data_dir=DIR --config.pretrained=resnet50-11ad3fa6.pth --config.backbone_lr_multiplier=0.1

Our ResNet-50 is torchvision's (v1.5) network, so its ImageNet weights are torchvision's state dicts
(``resnet50-0676ba61.pth`` = IMAGENET1K_V1, ``resnet50-11ad3fa6.pth`` = V2, from download.pytorch.org),
passed as a file; Keras' ResNet50 is the original v1 network and does not convert. Without
``--config.pretrained`` the baseline trains from scratch with one learning rate for all layers
(``backbone_lr_multiplier=1``): not a like-for-like comparison with the pretrained B0, so pass the
weights (and ``--config.backbone_lr_multiplier=0.1``, as B0) for that.
"""
from train.configs.stanford_dogs_common import dogs_config


def get_config(runlocal: str = ""):
    config = dogs_config("resnet50", runlocal)
    config.backbone_lr_multiplier = 1.0  # from scratch; 0.1 with torchvision weights (see above)
    return config
