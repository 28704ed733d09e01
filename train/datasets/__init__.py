"""TFDS builders shipped with the training program; importing this package registers them."""
from train.datasets.digits import SklearnDigits

__all__ = ["SklearnDigits"]
