"""Real images for int8 calibration, preprocessed exactly as ``predict`` does it.

Static quantization picks each activation's int8 range from the values it takes on calibration inputs,
so they must look like what the model will see: real photos with the eval crop and the variant's mean/std.
Sources: a folder of images (``--calibration DIR``), ``"photos"`` (the seven photos bundled with
scikit-image and scikit-learn; the default) or ``"digits"`` (scikit-learn's 8x8 digits, upsampled).
"""
from __future__ import annotations

import pathlib
from typing import Iterator

import numpy as np

from efficientnet_jax.optional import require
from efficientnet_jax.predict import image_paths, load_image
from efficientnet_jax.preprocess import preprocess, resize_and_center_crop
from efficientnet_jax.specs import ModelSpec

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
DIGITS_COUNT = 32


def bundled_photos() -> dict[str, np.ndarray]:
    """The seven RGB uint8 photos that ship with scikit-image (5) and scikit-learn (2): offline test images."""
    skimage_data = require("skimage.data", "Calibrating on the bundled photos", "scikit-image",
                           hint=" (or pass a folder of images: --calibration DIR)")
    datasets = require("sklearn.datasets", "Calibrating on the bundled photos", "scikit-learn",
                       hint=" (or pass a folder of images: --calibration DIR)")
    photos = {name: getattr(skimage_data, name)() for name in SKIMAGE_PHOTOS}
    sample = datasets.load_sample_images()
    photos.update({pathlib.Path(f).stem: image for f, image in zip(sample.filenames, sample.images)})
    return {name: np.repeat(p[..., None], 3, -1) if p.ndim == 2 else p[..., :3] for name, p in photos.items()}


def _digits() -> list[np.ndarray]:
    datasets = require("sklearn.datasets", "Calibrating on the digits", "scikit-learn")
    digits = datasets.load_digits().images[:DIGITS_COUNT]  # 0..16 grey levels
    return [np.repeat((d * (255.0 / 16.0)).astype(np.uint8)[..., None], 3, -1) for d in digits]


def _folder(directory: pathlib.Path) -> list[np.ndarray]:
    if not directory.is_dir():
        raise FileNotFoundError(f"No calibration folder at {directory}: pass a folder of images, "
                                "'photos' or 'digits' to --calibration")
    return [load_image(p) for p in image_paths([directory])]


def raw_images(source: str | pathlib.Path | None) -> list[np.ndarray]:
    """RGB uint8 images of a calibration source (see the module docstring); None means 'photos'."""
    if source is None or source == "photos":
        return list(bundled_photos().values())
    if source == "digits":
        return _digits()
    return _folder(pathlib.Path(source))


def views(image: np.ndarray) -> Iterator[np.ndarray]:
    """The image, its mirror, and its four corner thirds: more calibration samples from few photos."""
    yield image
    yield image[:, ::-1]
    h, w = image.shape[:2]
    for top in (0, h // 3):
        for left in (0, w // 3):
            yield image[top:top + 2 * h // 3, left:left + 2 * w // 3]


def calibration_batches(spec: ModelSpec, image_size: int, source: str | pathlib.Path | None = None,
                        augment: bool = True) -> list[np.ndarray]:
    """Normalized float32 (1, size, size, 3) inputs for quantization, one per image (or view)."""
    images = raw_images(source)
    if not images:
        raise ValueError(f"The calibration source {source} holds no images")
    samples = [v for im in images for v in (views(im) if augment else [im])]
    crops = [resize_and_center_crop(s, image_size, spec.crop_pct, spec.interpolation) for s in samples]
    return [np.asarray(preprocess(c, spec)) for c in crops]
