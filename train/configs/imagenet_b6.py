"""EfficientNet-B6 on ImageNet with the TF reference recipe (see imagenet_common.py)."""
from train.configs.imagenet_common import imagenet_config


def get_config(runlocal: str = ""):
    return imagenet_config("efficientnet_b6", runlocal)
