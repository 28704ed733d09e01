"""``sklearn_digits``: scikit-learn's 8x8 digits as a TFDS dataset, the offline default.

The images ship inside scikit-learn, so the training program can run end to end with no
download. Storing them as 32x32 RGB lets the ImageNet code path (3 channels, strided stem)
run unchanged; 32 is the smallest size at which EfficientNet's five stride-2 stages still
leave a 1x1 feature map.
"""
from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """1-D bilinear interpolation weights with half-pixel centres (tf.image.resize's convention)."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), lo] += 1 - frac
    weights[np.arange(n_out), hi] += frac
    return weights


def upscale(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(N, 8, 8) values in 0..16 -> (N, size, size, 3) uint8, bilinear, grey replicated to RGB."""
    w = _bilinear_matrix(images.shape[1], size)
    big = np.einsum("ij,njk,lk->nil", w, images.astype(np.float64) * (255.0 / 16.0), w)
    grey = np.clip(np.round(big), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def split_indices() -> dict[str, np.ndarray]:
    """The fixed stratified train/test split (1,437 / 360), a pure function of the constants above."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels,
                                   random_state=SPLIT_SEED)
    return {"train": np.sort(train), "test": np.sort(test)}


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits (UCI optdigits test set), upscaled to 32x32 RGB."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 80/20 split with random_state=0; bilinear 8->32; grey as RGB."}
    # TFDS otherwise derives this through `importlib_resources`, which it does not depend on.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8,
                                             encoding_format="png"),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with scikit-learn
        return {name: self._generate_examples(indices) for name, indices in split_indices().items()}

    def _generate_examples(self, indices: np.ndarray):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = upscale(digits.images[indices])
        for i, image, label in zip(indices, images, digits.target[indices]):
            yield int(i), {"image": image, "label": int(label)}
