"""Training recipes (``get_config(runlocal='')`` in each module) and the config blocks they share."""
import ml_collections
from ml_collections.config_dict import placeholder


def progressive_block() -> ml_collections.ConfigDict:
    """``config.progressive``: EfficientNetV2's progressive learning (train/progressive.py), off at stages=0.

    The final values are the config's own image_size, randaugment magnitude, mixup_alpha and the
    model's dropout; an initial value left None keeps that setting fixed.
    """
    return ml_collections.ConfigDict({
        "stages": 0,
        "initial_image_size": placeholder(int),
        "initial_randaugment_magnitude": placeholder(float),
        "initial_mixup_alpha": placeholder(float),
        "initial_dropout": placeholder(float),
    })
