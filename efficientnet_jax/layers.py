"""Building blocks shared by every variant: k x k, 1x1 and depthwise convs, batch norm, squeeze-excitation,
drop path.

Four choices here are about speed, not semantics (DESIGN.md, CPU notes; benchmarks/RESULTS.md):
- 1x1 convolutions are matmuls with their own backward pass: XLA:CPU compiles the weight gradient
  of a 1x1 ``nn.Conv`` into a convolution with a feature-map-sized window, and plain autodiff of
  the einsum into a 4-D contraction that trains B0 ~20% slower than one 2-D matmul over pixels.
- Batch norm (with the activation after it) has its own backward pass: it keeps only its input and
  makes fewer passes over the feature map than autodiff of ``nn.BatchNorm`` and the activation.
- Depthwise convolution has two implementations with identical results: XLA's
  grouped convolution (fast on GPU/TPU) and a sum of k*k shifted multiply-adds
  with a hand-written backward pass (XLA:CPU runs grouped convs at dense cost).
- Squeeze-excitation's gate can be folded into the next 1x1 convolution's per-image kernels, where the
  feature map is large next to the kernel, instead of writing a gated copy of the feature map.
Most of what remains on XLA:CPU is memory traffic: its reductions read arrays that are already written out,
so the backward passes here are arranged to reduce over arrays already in memory.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any
DepthwiseImpl = Literal["auto", "xla", "taps"]
Padding = Literal["same", "symmetric"]

# TF reference initializers: conv normal(0, sqrt(2 / fan_out)); dense uniform(+-1/sqrt(fan_out)).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
depthwise_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # fan_in = k*k per channel
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")

ACTIVATIONS: dict[str, Callable] = {"swish": nn.swish, "relu6": nn.relu6, "relu": nn.relu}
DEPTHWISE_GRAD_CHUNK = 4  # images per step when accumulating the depthwise weight gradient


def conv_padding(size: int, kernel: int, stride: int, padding: Padding) -> tuple[int, int]:
    """(before, after) padding of one spatial dim.

    "same" is TF's SAME: output ceil(size / stride), the odd pixel of padding goes
    after (what the Keras/TF weights were trained with). "symmetric" is PyTorch's
    ``padding=kernel // 2``.
    """
    if padding == "symmetric":
        return kernel // 2, kernel // 2
    if padding != "same":
        raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_depthwise_impl(impl: DepthwiseImpl) -> str:
    if impl == "auto":
        return "taps" if jax.default_backend() == "cpu" else "xla"
    if impl not in ("xla", "taps"):
        raise ValueError(f"depthwise_impl must be 'auto', 'xla' or 'taps', got {impl!r}")
    return impl


def _tap_sum(xp: jax.Array, w: jax.Array, stride: int, out_h: int, out_w: int) -> jax.Array:
    """sum_{i,j} xp[:, i::stride, j::stride, :] * w[i, j] over the k*k taps."""
    n, _, _, c = xp.shape
    k_h, k_w = w.shape[:2]
    out = None
    for i in range(k_h):
        for j in range(k_w):
            tap = lax.slice(
                xp,
                (0, i, j, 0),
                (n, i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, c),
                (1, stride, stride, 1),
            )
            term = tap * w[i, j]
            out = term if out is None else out + term
    return out


def _batch_axis_sharded(x: jax.Array) -> bool:
    """True when x's type says its leading axis is sharded (explicit-sharding meshes only)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return bool(spec) and spec[0] is not None


def _tap_weight_grad(xp: jax.Array, g: jax.Array, k_h: int, k_w: int, stride: int) -> jax.Array:
    """d(loss)/d(w) accumulated over small batch chunks so each chunk stays in cache.

    Chunks are dynamic slices of ``xp`` itself, not of a reshaped copy: a reshaped residual made XLA
    compute the padded input a second time in that layout (B0 CPU train step: 1.06x faster this way)."""
    n, _, _, c = xp.shape
    out_h, out_w = g.shape[1:3]

    def chunk_grad(x_c, g_c):
        g_c = g_c.astype(jnp.float32)
        size = x_c.shape[0]
        taps = [
            jnp.sum(
                lax.slice(
                    x_c,
                    (0, i, j, 0),
                    (size, i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, c),
                    (1, stride, stride, 1),
                ).astype(jnp.float32)
                * g_c,
                axis=(0, 1, 2),
            )
            for i in range(k_h)
            for j in range(k_w)
        ]
        return jnp.stack(taps).reshape(k_h, k_w, c)

    # Chunking slices the batch axis, which explicit sharding forbids when that axis is sharded
    # (multi-device CPU only: accelerators use the XLA path); then reduce over the whole batch.
    chunk = n if _batch_axis_sharded(xp) else max(d for d in range(1, DEPTHWISE_GRAD_CHUNK + 1) if n % d == 0)
    if chunk == n:
        return chunk_grad(xp, g)

    def accumulate(acc, start):
        batch_slice = functools.partial(lax.dynamic_slice_in_dim, start_index=start, slice_size=chunk, axis=0)
        return acc + chunk_grad(batch_slice(xp), batch_slice(g)), None

    grad, _ = lax.scan(accumulate, jnp.zeros((k_h, k_w, c), jnp.float32), jnp.arange(0, n, chunk))
    return grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_taps(xp: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Depthwise correlation of an already padded NHWC input with a (k, k, C) kernel."""
    k_h, k_w = w.shape[:2]
    out_h = (xp.shape[1] - k_h) // stride + 1
    out_w = (xp.shape[2] - k_w) // stride + 1
    return _tap_sum(xp, w, stride, out_h, out_w)


def _depthwise_taps_fwd(xp, w, stride):
    # Save only the padded input; plain autodiff would keep all k*k shifted copies.
    return depthwise_taps(xp, w, stride), (xp, w)


def _depthwise_taps_bwd(stride, residuals, g):
    xp, w = residuals
    k_h, k_w = w.shape[:2]
    hp, wp = xp.shape[1:3]
    out_h, out_w = g.shape[1:3]
    # d/dxp is a stride-1 correlation of the dilated, padded cotangent with the flipped kernel.
    zero = jnp.zeros((), g.dtype)
    g_dilated = lax.pad(
        g,
        zero,
        (
            (0, 0, 0),
            (k_h - 1, hp - stride * (out_h - 1) - 1, stride - 1),
            (k_w - 1, wp - stride * (out_w - 1) - 1, stride - 1),
            (0, 0, 0),
        ),
    )
    dxp = _tap_sum(g_dilated, w[::-1, ::-1], 1, hp, wp).astype(xp.dtype)
    dw = _tap_weight_grad(xp, g, k_h, k_w, stride).astype(w.dtype)
    return dxp, dw


depthwise_taps.defvjp(_depthwise_taps_fwd, _depthwise_taps_bwd)


class DepthwiseConv(nn.Module):
    """k x k depthwise convolution, no bias. Kernel layout (k, k, 1, C) as flax's grouped ``nn.Conv``."""

    kernel_size: int
    stride: int = 1
    padding: Padding = "same"
    impl: DepthwiseImpl = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        channels = x.shape[-1]
        kernel = self.param("kernel", depthwise_init, (k, k, 1, channels), self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        pads = [conv_padding(x.shape[d], k, s, self.padding) for d in (1, 2)]
        if resolve_depthwise_impl(self.impl) == "xla":
            return lax.conv_general_dilated(
                x, kernel, (s, s), pads,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=channels,
            )
        xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        return depthwise_taps(xp, kernel[:, :, 0, :], s)


class Conv(nn.Module):
    """k x k convolution, no bias, with TF "SAME" or symmetric padding (the stem, Fused-MBConv).
    Kernel layout (k, k, C_in, C_out) and parameter name as ``nn.Conv``."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: Padding = "same"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", conv_init, (k, k, x.shape[-1], self.features), self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        pads = [conv_padding(x.shape[d], k, s, self.padding) for d in (1, 2)]
        return lax.conv_general_dilated(x, kernel, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def pointwise(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` over the last axis of ``x`` (a 1x1 convolution with a (C_in, C_out) kernel)."""
    return jnp.einsum("...c,cd->...d", x, w)


def _pointwise_fwd(x, w):
    return pointwise(x, w), (x, w)


def _pointwise_bwd(residuals, g):
    x, w = residuals
    c_in, c_out = w.shape
    dx = jnp.einsum("...d,cd->...c", g, w)
    contract_pixels = (tuple(range(x.ndim - 1)),) * 2, ((), ())
    if _batch_axis_sharded(x):  # explicit sharding forbids merging the sharded batch axis away
        return dx, lax.dot_general(x, g, contract_pixels).astype(w.dtype)
    # One 2-D matmul over all pixels, the operand with fewer channels transposed for it.
    x2, g2 = x.reshape(-1, c_in), g.reshape(-1, c_out)
    pixels = (((0,), (0,)), ((), ()))
    dw = lax.dot_general(x2, g2, pixels) if c_in <= c_out else lax.dot_general(g2, x2, pixels).T
    return dx, dw.astype(w.dtype)


pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


@jax.custom_vjp
def gated_pointwise(x: jax.Array, gate: jax.Array, w: jax.Array) -> jax.Array:
    """``pointwise(x * gate, w)`` for NHWC ``x`` and a per-image, per-channel ``gate`` of shape (N, 1, 1, C_in)
    (squeeze-excitation), with the gate folded into per-image kernels instead of scaling the feature map.

    That saves a write and a read of ``x * gate`` forward, and backward the gated cotangent and the gate's
    reduction, at the price of N kernels and batched matmuls: it pays where the feature map is large next
    to the kernel (``gate_folding_pays``)."""
    return jnp.einsum("nhwc,ncd->nhwd", x, gate[:, 0, 0, :, None] * w)


def _gated_pointwise_fwd(x, gate, w):
    return gated_pointwise(x, gate, w), (x, gate, w)


def _gated_pointwise_bwd(residuals, g):
    x, gate, w = residuals
    per_image_gate = gate[:, 0, 0, :]
    dx = jnp.einsum("nhwd,ncd->nhwc", g, per_image_gate[:, :, None] * w)
    per_image_dw = jnp.einsum("nhwc,nhwd->ncd", x, g)  # each image's kernel gradient, before its gate
    dw = jnp.einsum("nc,ncd->cd", per_image_gate, per_image_dw)
    d_gate = jnp.einsum("cd,ncd->nc", w, per_image_dw)[:, None, None, :]
    return dx, d_gate.astype(gate.dtype), dw.astype(w.dtype)


gated_pointwise.defvjp(_gated_pointwise_fwd, _gated_pointwise_bwd)


def gate_folding_pays(x: jax.Array, features: int) -> bool:
    """Whether ``gated_pointwise`` beats gating the feature map: when each image has many more pixels than the
    kernel has output channels (B0 on CPU: early stages 1.3-2.6x faster forward+backward, 7x7 stages 3x slower)."""
    return x.ndim == 4 and x.shape[1] * x.shape[2] >= 8 * features


class Conv1x1(nn.Module):
    """Pointwise convolution as a matmul (``pointwise``). Kernel layout (1, 1, C_in, C_out) as ``nn.Conv``.

    ``gate`` (N, 1, 1, C_in), if given, scales the input channels per image first (squeeze-excitation's output);
    where it pays, it is folded into the kernel (``gated_pointwise``)."""

    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, gate: jax.Array | None = None) -> jax.Array:
        kernel = self.param("kernel", conv_init, (1, 1, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype) if self.use_bias else None
        x, gate, kernel, bias = nn.dtypes.promote_dtype(x, gate, kernel, bias, dtype=self.dtype)
        if gate is None:
            y = pointwise(x, kernel[0, 0])
        elif gate_folding_pays(x, self.features):
            y = gated_pointwise(x, gate, kernel[0, 0])
        else:
            y = pointwise(x * gate, kernel[0, 0])
        return y if bias is None else y + bias


def _statistics_dtype(x: jax.Array):
    """Batch statistics are reduced in at least float32, as ``nn.BatchNorm`` does."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and (biased) variance over all but the channel axis, as ``nn.BatchNorm`` computes them
    (E[x^2] - E[x]^2 in one pass, clipped at 0)."""
    x = x.astype(_statistics_dtype(x))
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    return mean, jnp.maximum(0.0, jnp.mean(x * x, axes) - mean * mean)


def _normalized(x, mean, var, scale, bias, epsilon: float, dtype):
    """``nn.BatchNorm``'s output for given statistics, operation for operation."""
    return jnp.asarray((x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x, scale, bias, epsilon: float, activation: Callable | None, dtype):
    """``activation(batch_norm(x))`` with the batch's own statistics; returns (output, mean, variance).

    The backward pass keeps only ``x`` and the per-channel statistics, recomputes the normalized
    activation, and needs two reductions (sum of the cotangent, and of its product with the input)
    and one elementwise pass. Autodiff of the same code keeps the centred input, the normalized
    values and the activation's intermediates, and makes more passes over them.
    """
    mean, var = _batch_moments(x)
    y = _normalized(x, mean, var, scale, bias, epsilon, dtype)
    return (y if activation is None else activation(y)), mean, var


def _batch_norm_train_fwd(x, scale, bias, epsilon, activation, dtype):
    out = batch_norm_train(x, scale, bias, epsilon, activation, dtype)
    return out, (x, scale, bias, out[1], out[2])


def _batch_norm_train_bwd(epsilon, activation, dtype, residuals, cotangents):
    # The barrier stops XLA from merging the recomputation below with the forward pass's identical
    # expressions (CSE): merged, the activation's intermediate (the sigmoid) is kept as a feature-map-sized
    # array, which costs a write and two reads more than recomputing it (B0 CPU train step: 1.08x).
    x, scale, bias, mean, var = lax.optimization_barrier(residuals)
    d_out, d_mean, d_var = cotangents
    if activation is None:
        d_y = d_out
    else:
        _, activation_vjp = jax.vjp(activation, _normalized(x, mean, var, scale, bias, epsilon, dtype))
        (d_y,) = activation_vjp(d_out)
    stats_dtype = _statistics_dtype(x)
    d_y = d_y.astype(stats_dtype)
    x_stats = x.astype(stats_dtype)
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    sum_d_y = jnp.sum(d_y, axes)
    # sum(d_y * (x - mean)) as sum(d_y * x) - mean * sum(d_y): the reduction then reads two arrays already in
    # memory instead of a centred copy XLA would write first (B0 CPU train step: 1.13x). Its rounding error is
    # far below that of the forward pass's E[x^2] - E[x]^2 variance, which nn.BatchNorm uses too.
    sum_d_y_centred = jnp.sum(d_y * x_stats, axes) - mean * sum_d_y
    centred = x_stats - mean
    rstd = lax.rsqrt(var + epsilon)
    gain = scale.astype(stats_dtype) * rstd
    # d/dx of (x - mean) * gain + bias, through the batch mean and variance, plus the (normally zero)
    # cotangents of the returned statistics: one affine map of (d_y, centred) per channel.
    d_x = (gain * d_y
           + ((2.0 * d_var - gain * rstd * rstd * sum_d_y_centred) / count) * centred
           + (d_mean - gain * sum_d_y) / count)
    return (d_x.astype(x.dtype), (rstd * sum_d_y_centred).astype(scale.dtype), sum_d_y.astype(bias.dtype))


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
    """``nn.BatchNorm`` over the channel axis with an optional activation after it: the same variables
    (params scale/bias, batch_stats mean/var in float32), statistics, running averages and outputs, so
    every converter and checkpoint applies unchanged. In training it runs ``batch_norm_train``, whose
    own backward pass made B0's CPU train step faster than autodiff of ``nn.BatchNorm`` + swish in three
    interleaved A/Bs (1.065x, then 1.08x and 1.13x for the two choices in ``_batch_norm_train_bwd``)."""

    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    activation: Callable | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
        channels = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), channels)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), channels)
        scale = self.param("scale", nn.initializers.ones, channels, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, channels, self.param_dtype)
        dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        if use_running_average:
            y = _normalized(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, dtype)
            return y if self.activation is None else self.activation(y)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.activation, dtype)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


class SqueezeExcite(nn.Module):
    """Channel gate from globally pooled features (Hu et al. 2018): returns the gate, (N, 1, 1, C), not the
    gated feature map; the next 1x1 convolution applies it (``Conv1x1(...)(x, gate=...)``), folded into its
    kernel where that pays."""

    reduced_features: int
    activation: Callable = nn.swish
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(Conv1x1, use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = self.activation(conv(self.reduced_features, name="reduce")(s))
        return nn.sigmoid(conv(x.shape[-1], name="expand")(s))


def drop_path(x: jax.Array, keep: float | jax.Array, key: jax.Array) -> jax.Array:
    """Stochastic depth: keep each example's residual branch with probability ``keep`` (scaled by 1/keep).

    The model derives ``key`` from the block's global index, and ``keep`` may be a traced scalar, so an
    unrolled block and the same block inside a scanned stage draw the same mask."""
    mask = jax.random.bernoulli(key, jnp.asarray(keep, jnp.float32), (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))

