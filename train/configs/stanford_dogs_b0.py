"""EfficientNet-B0 fine-tuned from Keras' ImageNet weights on Stanford Dogs (see stanford_dogs_common.py).

    python -m train.main --config=train/configs/stanford_dogs_b0.py --workdir=runs/dogs_b0 --config.data_dir=DIR
"""
from train.configs.stanford_dogs_common import dogs_config


def get_config(runlocal: str = ""):
    config = dogs_config("efficientnet_b0", runlocal)
    if not runlocal:
        config.pretrained = "keras"  # keras.applications.EfficientNetB0 ImageNet weights (downloaded by Keras)
    return config
