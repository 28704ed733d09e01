"""Per-example image ops for tf.data: crops, flips, RandAugment and AutoAugment.

Every random choice is stateless and drawn from an explicit ``seed`` (an int tensor of shape
[2]), so an example's augmentation is a pure function of the seed the input pipeline derives
from (run seed, epoch, position). That is what makes a resumed run see exactly the batches the
uninterrupted run would have seen. Images are uint8 (H, W, 3) in and out, so the ops compose in
any order and batches stay 4x smaller than float32 until normalization.

RandAugment and AutoAugment follow the EfficientNet TF reference (``autoaugment.py``), with
three deliberate departures, each a known defect of the reference:
  * Posterize keeps 8 - 4*level/10 bits (the AutoAugment paper's 4..8); the reference's
    ``int(level/10*4)`` bits turns level 0-2 into an all-black image.
  * Contrast blends towards the image's mean grey level; the reference blends towards
    ``num_pixels / 256``, which is not a grey level at all.
  * Translations are relative to the image (up to 45% of the side at level 10, timm's choice);
    the reference's absolute 250 px for AutoAugment pushes a 224 px image entirely out.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import tensorflow as tf

from efficientnet_jax.preprocess import composite_over_white
from efficientnet_jax.specs import eval_crop_pct

MAX_LEVEL = 10.0
FILL_VALUE = 128  # grey, what the reference fills uncovered pixels with after a warp
TRANSLATE_FRACTION = 0.45
INCEPTION_AREA_RANGE = (0.08, 1.0)
INCEPTION_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)


# ---- Seeds ---------------------------------------------------------------------------------

def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """``num`` independent [2] seeds from one, so that adding an op never shifts another's draws."""
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, num)))


def _uniform(seed: tf.Tensor, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed, minval=minval, maxval=maxval)


def _random_sign(value: float, seed: tf.Tensor) -> tf.Tensor:
    return tf.where(_uniform(seed) < 0.5, -value, value)


# ---- Decoding, resizing and crops ------------------------------------------------------------

def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG, BMP or GIF bytes -> uint8 (H, W, 3); grey images become RGB; a PNG's transparency is
    composited over white (``composite_over_white``, the rule ``predict`` applies too)."""
    def png():
        rgba = tf.cast(tf.io.decode_png(image_bytes, channels=4), tf.float32)
        return tf.cast(tf.round(composite_over_white(rgba[..., :3], rgba[..., 3:])), tf.uint8)

    is_png = tf.equal(tf.strings.substr(image_bytes, 0, 8), b"\x89PNG\r\n\x1a\n")
    image = tf.cond(is_png, png, lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def resize(image: tf.Tensor, size: int, method: str = "bicubic") -> tf.Tensor:
    """Resize to (size, size) and return uint8; bicubic overshoots, hence the clip."""
    image = tf.image.resize(image, [size, size], method=method)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _center_window(shape: tf.Tensor, crop_pct: float) -> tf.Tensor:
    """[offset_y, offset_x, h, w] of the reference's square central crop."""
    height, width = shape[0], shape[1]
    crop = tf.cast(crop_pct * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    crop = tf.maximum(crop, 1)
    return tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])


def _inception_window(shape: tf.Tensor, seed: tf.Tensor, size: int,
                      area_range: Sequence[float], aspect_ratio_range: Sequence[float]) -> tf.Tensor:
    """A random-resized-crop window; the reference's central crop when sampling gives up."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=aspect_ratio_range, area_range=area_range,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    # After max_attempts failures the sampler returns the whole image; the reference then
    # falls back to the eval crop rather than train on an uncropped, unscaled view.
    gave_up = tf.logical_and(tf.equal(crop_size[0], shape[0]), tf.equal(crop_size[1], shape[1]))
    return tf.cond(gave_up, lambda: _center_window(shape, eval_crop_pct(size)), lambda: window)


def _crop(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])


def inception_crop(image: tf.Tensor, size: int, seed: tf.Tensor, *,
                   area_range: Sequence[float] = INCEPTION_AREA_RANGE,
                   aspect_ratio_range: Sequence[float] = INCEPTION_ASPECT_RATIO_RANGE) -> tf.Tensor:
    """Random-resized crop (area 8%-100%, aspect 3/4-4/3) of a decoded image, resized bicubic."""
    window = _inception_window(tf.shape(image), seed, size, area_range, aspect_ratio_range)
    return resize(_crop(image, window), size)


def decode_and_inception_crop(image_bytes: tf.Tensor, size: int, seed: tf.Tensor, *,
                              area_range: Sequence[float] = INCEPTION_AREA_RANGE,
                              aspect_ratio_range: Sequence[float] = INCEPTION_ASPECT_RATIO_RANGE) -> tf.Tensor:
    """``inception_crop`` that decodes only the crop of a JPEG (most of ImageNet's decode time)."""
    def jpeg():
        window = _inception_window(tf.image.extract_jpeg_shape(image_bytes), seed, size, area_range,
                                   aspect_ratio_range)
        return resize(tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3), size)

    def other():
        return inception_crop(decode_image(image_bytes), size, seed, area_range=area_range,
                              aspect_ratio_range=aspect_ratio_range)

    return tf.ensure_shape(tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other), [size, size, 3])


def center_crop(image: tf.Tensor, size: int, crop_pct: float | None = None) -> tf.Tensor:
    """The reference eval crop: central square of ``crop_pct`` of the short side, resized bicubic.

    ``crop_pct`` None is the reference's size / (size + 32); 1.0 keeps the whole square.
    """
    crop_pct = eval_crop_pct(size) if crop_pct is None else crop_pct
    return resize(_crop(image, _center_window(tf.shape(image), crop_pct)), size)


def decode_and_center_crop(image_bytes: tf.Tensor, size: int, crop_pct: float | None = None) -> tf.Tensor:
    """``center_crop`` that decodes only the crop of a JPEG."""
    pct = eval_crop_pct(size) if crop_pct is None else crop_pct

    def jpeg():
        window = _center_window(tf.image.extract_jpeg_shape(image_bytes), pct)
        return resize(tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3), size)

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, lambda: center_crop(decode_image(image_bytes), size, pct))
    return tf.ensure_shape(image, [size, size, 3])


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_random_crop(image: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """The CIFAR crop: reflect-pad ``pad`` pixels per side, cut a random window of the original size.

    Reflection rather than zeros keeps the border statistics of the image (no black frames).
    """
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed)


# ---- Pixel ops (uint8 in, uint8 out) -----------------------------------------------------------

def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def blend(image1: tf.Tensor, image2: tf.Tensor, factor) -> tf.Tensor:
    """image1 + factor * (image2 - image1); factors above 1 extrapolate (PIL's ImageEnhance)."""
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    return _to_uint8(image1 + factor * (image2 - image1))


def _grey(image: tf.Tensor) -> tf.Tensor:
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def identity(image: tf.Tensor) -> tf.Tensor:
    return image


def invert(image: tf.Tensor) -> tf.Tensor:
    return 255 - image


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
    """Invert the pixels at or above ``threshold``."""
    threshold = tf.cast(threshold, tf.int32)
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image: tf.Tensor, addition, threshold: int = 128) -> tf.Tensor:
    added = _to_uint8(tf.cast(image, tf.float32) + tf.cast(addition, tf.float32))
    return tf.where(image < threshold, added, image)


def posterize(image: tf.Tensor, bits) -> tf.Tensor:
    """Keep the top ``bits`` bits of every channel."""
    shift = tf.cast(8 - bits, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def color(image: tf.Tensor, factor) -> tf.Tensor:
    return blend(_grey(image), image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
    mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
    return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
    """Blend with a 3x3 smoothed copy (PIL's SMOOTH kernel); the 1-pixel border stays sharp."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(_to_uint8(smooth), [[1, 1], [1, 1], [0, 0]])
    interior = tf.pad(tf.ones_like(smooth[1:-1, 1:-1], tf.bool), [[1, 1], [1, 1], [0, 0]])
    return blend(tf.where(interior, smooth, image), image, factor)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Stretch every channel to the full 0..255 range (channels that are flat stay as they are)."""
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    offset = tf.where(hi > lo, lo, 0.0)
    return _to_uint8((x - offset) * scale)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
    """PIL's ImageOps.equalize for one uint8 channel (the reference's algorithm)."""
    values = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

    def equalized():
        lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        return tf.cast(tf.gather(lut, values), tf.uint8)

    return tf.cond(tf.equal(step, 0), lambda: channel, equalized)


def equalize(image: tf.Tensor) -> tf.Tensor:
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def _transform(image: tf.Tensor, transform: Sequence) -> tf.Tensor:
    """Projective warp; ``transform`` maps output (x, y, 1) to input coordinates."""
    transform = tf.cast(tf.stack(transform), tf.float32)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=float(FILL_VALUE), interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0]


def rotate(image: tf.Tensor, degrees) -> tf.Tensor:
    """Rotate about the image centre."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(image: tf.Tensor, level) -> tf.Tensor:
    return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, level) -> tf.Tensor:
    return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels) -> tf.Tensor:
    return _transform(image, [1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels) -> tf.Tensor:
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0])


# ---- Levels: magnitude (0..10, may exceed 10) -> op argument -----------------------------------

def _enhance_factor(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _fraction(level: float) -> float:
    return level / MAX_LEVEL


def _translate_pixels(image: tf.Tensor, axis: int, level: float, seed: tf.Tensor) -> tf.Tensor:
    side = tf.cast(tf.shape(image)[axis], tf.float32)
    return _random_sign(1.0, seed) * (_fraction(level) * TRANSLATE_FRACTION) * side


OpFn = Callable[[tf.Tensor, float, tf.Tensor], tf.Tensor]

# name -> fn(image, level, seed); the seed only draws the sign of geometric ops.
OPS: dict[str, OpFn] = {
    "Identity": lambda im, level, seed: identity(im),
    "AutoContrast": lambda im, level, seed: autocontrast(im),
    "Equalize": lambda im, level, seed: equalize(im),
    "Invert": lambda im, level, seed: invert(im),
    "Rotate": lambda im, level, seed: rotate(im, _random_sign(_fraction(level) * 30.0, seed)),
    "Posterize": lambda im, level, seed: posterize(im, min(8, max(1, 8 - int(_fraction(level) * 4)))),
    "Solarize": lambda im, level, seed: solarize(im, min(256, int(_fraction(level) * 256))),
    "SolarizeAdd": lambda im, level, seed: solarize_add(im, min(255, int(_fraction(level) * 110))),
    "Color": lambda im, level, seed: color(im, _enhance_factor(level)),
    "Contrast": lambda im, level, seed: contrast(im, _enhance_factor(level)),
    "Brightness": lambda im, level, seed: brightness(im, _enhance_factor(level)),
    "Sharpness": lambda im, level, seed: sharpness(im, _enhance_factor(level)),
    "ShearX": lambda im, level, seed: shear_x(im, _random_sign(_fraction(level) * 0.3, seed)),
    "ShearY": lambda im, level, seed: shear_y(im, _random_sign(_fraction(level) * 0.3, seed)),
    "TranslateX": lambda im, level, seed: translate_x(im, _translate_pixels(im, 1, level, seed)),
    "TranslateY": lambda im, level, seed: translate_y(im, _translate_pixels(im, 0, level, seed)),
}

# The 14 operations of the RandAugment paper (Cubuk et al. 2019, section 3).
RANDAUGMENT_OPS = ("Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color", "Posterize",
                   "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY")

# ImageNet policy "v0" of the EfficientNet TF reference: (op, probability, level) pairs.
AUTOAUGMENT_POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)


def randaugment(image: tf.Tensor, seed: tf.Tensor, num_layers: int = 2, magnitude: float = 9.0,
                ops: Sequence[str] = RANDAUGMENT_OPS) -> tf.Tensor:
    """``num_layers`` ops drawn uniformly with replacement, each at level ``magnitude``."""
    for layer_seed in split_seed(seed, num_layers):
        choice_seed, op_seed = split_seed(layer_seed, 2)
        index = tf.random.stateless_uniform([], choice_seed, 0, len(ops), dtype=tf.int32)
        branches = [lambda name=name, im=image, s=op_seed: OPS[name](im, float(magnitude), s) for name in ops]
        image = tf.ensure_shape(tf.switch_case(index, branches), image.shape)
    return image


def autoaugment(image: tf.Tensor, seed: tf.Tensor,
                policy: Sequence[Sequence[tuple[str, float, float]]] = AUTOAUGMENT_POLICY_V0) -> tf.Tensor:
    """One sub-policy drawn uniformly; each of its ops applied with its own probability."""
    choice_seed, *op_seeds = split_seed(seed, 1 + max(len(sub) for sub in policy))

    def apply_sub_policy(sub_policy):
        out = image
        for (name, prob, level), op_seed in zip(sub_policy, op_seeds):
            coin_seed, arg_seed = split_seed(op_seed, 2)
            out = tf.cond(_uniform(coin_seed) < prob,
                          lambda out=out, name=name, level=level, s=arg_seed: OPS[name](out, float(level), s),
                          lambda out=out: out)
        return out

    index = tf.random.stateless_uniform([], choice_seed, 0, len(policy), dtype=tf.int32)
    branches = [lambda sub=sub: apply_sub_policy(sub) for sub in policy]
    return tf.ensure_shape(tf.switch_case(index, branches), image.shape)
