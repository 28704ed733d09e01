"""Parameter and multiply-add counts read from the program itself, not from a formula.

``count_flops`` traces any function to a jaxpr and adds up the multiply-adds of its
convolutions and matrix products (the convention of the paper's Table 2). Tracing
needs only shapes, so abstract variables from ``jax.eval_shape`` work and L2 is
counted without allocating it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays (or ``jax.ShapeDtypeStruct``)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _conv_macs(eqn) -> int:
    rhs_shape = eqn.invars[1].aval.shape
    out_feature_dim, in_feature_dim, *spatial = eqn.params["dimension_numbers"].rhs_spec
    window = math.prod(rhs_shape[d] for d in spatial)
    # rhs in-feature size is already C_in / feature_group_count.
    return math.prod(eqn.outvars[0].aval.shape) * rhs_shape[in_feature_dim] * window


def _dot_macs(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[d] for d in lhs_contract)


def _sub_jaxprs(value) -> list:
    if isinstance(value, jex_core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jex_core.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def jaxpr_macs(jaxpr) -> int:
    """Multiply-adds of conv_general_dilated and dot_general in a jaxpr, nested calls included.

    ``scan`` bodies count ``length`` times, ``cond`` counts its costliest branch and a
    ``while`` body counts once (its trip count is not known from the program).
    """
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "dot_general":
            total += _dot_macs(eqn)
        subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
        if not subs:
            continue
        if name == "cond":
            total += max(jaxpr_macs(j) for j in subs)
        elif name == "scan":
            total += eqn.params["length"] * sum(jaxpr_macs(j) for j in subs)
        else:
            total += sum(jaxpr_macs(j) for j in subs)
    return total


def count_flops(
    model_or_fn: nn.Module | Callable,
    variables: Any,
    input_shape: tuple[int, ...],
    dtype: Any = jnp.float32,
) -> int:
    """Multiply-adds of one forward pass on an input of ``input_shape`` (batch included).

    ``model_or_fn`` is a Flax module (applied with ``train=False``) or any function
    ``fn(variables, x)``. ``variables`` may be abstract (``jax.eval_shape``). Models
    with a ``depthwise_impl`` field are traced with XLA's grouped convolution so that
    the CPU tap-sum depthwise path is counted as the convolution it is.
    """
    if isinstance(model_or_fn, nn.Module):
        model = model_or_fn
        if "depthwise_impl" in {f.name for f in dataclasses.fields(model)}:
            model = model.clone(depthwise_impl="xla")
        fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    else:
        fn = model_or_fn
    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    return jaxpr_macs(jax.make_jaxpr(fn)(variables, x).jaxpr)
