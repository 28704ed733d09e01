"""ONNX from the fused layers, written node by node with ``onnx.helper``.

Why not a tracing converter: a traced graph carries how JAX computes the network on the exporting backend
(1x1 convs as einsum, depthwise as a sum of strided slices on CPU), which onnxruntime and the quantizer
see as MatMuls and Slices, not Convs; jax2onnx also pins an older orbax than ours, and tf2onnx needs jax2tf's
non-native serialization, which current JAX no longer has (docs/export.md has the measurements).
Emitting the graph from the spec gives plain Conv (explicit asymmetric pads for TF "SAME"; BN folded in),
Sigmoid * x for swish, Clip for ReLU6, squeeze-excitation as GlobalAveragePool -> Conv -> act -> Conv ->
Sigmoid -> Mul, residual Add, GlobalAveragePool and Gemm: what onnxruntime fuses and quantizes per channel.
The input stays NHWC like ``model.apply``; one Transpose to NCHW opens the graph.
"""
from __future__ import annotations

import numpy as np

from efficientnet_jax.export.fused import Conv, Dense, FusedNetwork, GlobalPool, Residual, SqueezeExcite
from efficientnet_jax.export.sidecar import INPUT_NAME, OUTPUT_NAME
from efficientnet_jax.optional import extra, require

OPSET = 17


class _Graph:
    """Nodes and initializers collected in order, with fresh names."""

    def __init__(self, onnx):
        self.onnx, self.helper, self.numpy_helper = onnx, onnx.helper, onnx.numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def constant(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], prefix: str | None = None, **attributes) -> str:
        output = self.name(prefix or op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def activation(self, x: str, activation: str | None) -> str:
        if activation == "swish":
            return self.node("Mul", [x, self.node("Sigmoid", [x])], "swish")
        if activation == "sigmoid":
            return self.node("Sigmoid", [x])
        if activation == "relu6":
            low = self.constant("zero", np.array(0.0, np.float32))
            high = self.constant("six", np.array(6.0, np.float32))
            return self.node("Clip", [x, low, high], "relu6")
        if activation == "relu":
            return self.node("Relu", [x])
        return x

    def conv(self, x: str, layer: Conv) -> str:
        weight = self.constant("w", layer.weight.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        bias = self.constant("b", layer.bias)
        (top, bottom), (left, right) = layer.pads
        y = self.node("Conv", [x, weight, bias], "conv", kernel_shape=[layer.kernel, layer.kernel],
                      strides=[layer.stride, layer.stride], pads=[top, left, bottom, right], group=layer.groups)
        return self.activation(y, layer.activation)

    def layers(self, x: str, layers) -> str:
        for layer in layers:
            if isinstance(layer, Conv):
                x = self.conv(x, layer)
            elif isinstance(layer, SqueezeExcite):
                gate = self.conv(self.conv(self.node("GlobalAveragePool", [x], "se_pool"), layer.reduce), layer.expand)
                x = self.node("Mul", [x, gate], "se_mul")
            elif isinstance(layer, Residual):
                x = self.node("Add", [x, self.layers(x, layer.layers)], "residual")
            elif isinstance(layer, GlobalPool):
                x = self.node("Flatten", [self.node("GlobalAveragePool", [x], "pool")], axis=1)
            elif isinstance(layer, Dense):
                x = self.node("Gemm", [x, self.constant("dense_w", layer.weight), self.constant("dense_b", layer.bias)])
            else:
                raise TypeError(f"no ONNX emitter for {type(layer).__name__}")
        return x


def onnx_model(network: FusedNetwork, batch: int | None, graph_name: str = "efficientnet"):
    """The ``onnx.ModelProto`` of ``network``: input ``images`` (batch, H, W, 3) float32, normalized as the
    sidecar says; output ``logits`` (batch, classes), or ``features`` for a model without a head. ``batch=None`` leaves the batch symbolic."""
    onnx = require("onnx", "ONNX export", extra("export"))
    graph = _Graph(onnx)
    x = graph.node("Transpose", [INPUT_NAME], "to_nchw", perm=[0, 3, 1, 2])
    graph.layers(x, network.layers)
    output_name = OUTPUT_NAME if isinstance(network.layers[-1], Dense) else "features"  # as the sidecar says
    graph.nodes[-1].output[0] = graph.nodes[-1].name = output_name  # the last node writes the graph output
    batch_dim = "batch" if batch is None else batch
    size = network.image_size
    inputs = [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, [batch_dim, size, size, 3])]
    outputs = [onnx.helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT,
                                                  [batch_dim, network.num_outputs])]
    model = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, graph_name, inputs, outputs, graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="efficientnet_jax",
    )
    model.ir_version = min(model.ir_version, 10)  # readable by onnxruntime releases of the last two years
    onnx.checker.check_model(model)
    return model
