"""TFLite (LiteRT) from the fused layers: a ``tf.function`` of plain TF ops, then ``tf.lite.TFLiteConverter``.

No converter takes JAX to TFLite today: jax2tf only emits XlaCallModule (StableHLO inside a TF op), which
the TFLite converter does not lower, and its non-native mode is gone from current JAX. The fused layer
list (``fused.py``) is small enough to write as TF ops directly: ``conv2d`` / ``depthwise_conv2d`` with
"SAME" where the pads are TF's own, else an explicit ``tf.pad`` then "VALID" (symmetric-padding weights).
Float, or full-integer int8 (every op int8, float input and output quantized at the edges) calibrated
with a representative dataset of real images.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from efficientnet_jax.export.fused import Conv, Dense, FusedNetwork, GlobalPool, Residual, SqueezeExcite
from efficientnet_jax.layers import conv_padding
from efficientnet_jax.optional import extra, require


def _tf():
    return require("tensorflow", "TFLite export", "tensorflow-cpu", hint=f" (and {extra('export')} to run it)")


def _tf_function(network: FusedNetwork, batch: int | None):
    tf = _tf()

    def activation(x, name):
        if name == "swish":
            return x * tf.math.sigmoid(x)
        if name == "sigmoid":
            return tf.math.sigmoid(x)
        if name == "relu6":
            return tf.nn.relu6(x)
        if name == "relu":
            return tf.nn.relu(x)
        return x

    def conv(x, layer: Conv):
        size = x.shape[1:3]
        same = all(p == conv_padding(s, layer.kernel, layer.stride, "same") for s, p in zip(size, layer.pads))
        if not same and any(sum(p) for p in layer.pads):
            x = tf.pad(x, [[0, 0], list(layer.pads[0]), list(layer.pads[1]), [0, 0]])
        padding = "SAME" if same else "VALID"
        strides = [1, layer.stride, layer.stride, 1]
        if layer.groups > 1:  # HWIO (k, k, 1, C) -> depthwise filter (k, k, C, 1)
            y = tf.nn.depthwise_conv2d(x, np.transpose(layer.weight, (0, 1, 3, 2)), strides, padding)
        elif layer.kernel == 1 and layer.stride == 1:
            y = tf.nn.conv2d(x, layer.weight, 1, "VALID")
        else:
            y = tf.nn.conv2d(x, layer.weight, strides, padding)
        return activation(tf.nn.bias_add(y, layer.bias), layer.activation)

    def run(x, layers):
        for layer in layers:
            if isinstance(layer, Conv):
                x = conv(x, layer)
            elif isinstance(layer, SqueezeExcite):
                gate = conv(conv(tf.reduce_mean(x, axis=(1, 2), keepdims=True), layer.reduce), layer.expand)
                x = x * gate
            elif isinstance(layer, Residual):
                x = x + run(x, layer.layers)
            elif isinstance(layer, GlobalPool):
                x = tf.reduce_mean(x, axis=(1, 2))
            elif isinstance(layer, Dense):
                x = tf.matmul(x, layer.weight) + layer.bias
            else:
                raise TypeError(f"no TFLite emitter for {type(layer).__name__}")
        return x

    size = network.image_size
    signature = [tf.TensorSpec([batch, size, size, 3], tf.float32, name="images")]
    output = "logits" if isinstance(network.layers[-1], Dense) else "features"  # as the sidecar says
    return tf.function(lambda images: {output: run(images, network.layers)}, input_signature=signature)


def tflite_bytes(network: FusedNetwork, batch: int | None, calibration: Sequence[np.ndarray] | None = None) -> bytes:
    """The .tflite flatbuffer of ``network``; with ``calibration`` (normalized (1, H, W, 3) inputs), full-integer
    int8 with float input and output."""
    tf = _tf()
    function = _tf_function(network, batch)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()
