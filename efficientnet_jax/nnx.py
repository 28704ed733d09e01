"""EfficientNet for Flax NNX: the one Linen network (``model.py``) held in an ``nnx.Module`` by ``flax.nnx.bridge``.

>>> from flax import nnx
>>> from efficientnet_jax import nnx as ej_nnx
>>> model = ej_nnx.create_model('efficientnet_b0', rngs=nnx.Rngs(0))
>>> logits = model(images, train=False)

Why the bridge and not a second, native NNX architecture: there is one definition to keep right (every
converter, spec override and parity test serves both APIs), and the programs XLA compiles are the Linen
ones, so speed is Linen's (benchmarks/nnx_throughput.py measures it; docs/nnx.md has the numbers). NNX
owns the state: every Linen variable is an ``nnx.Param`` or ``nnx.BatchStat`` at its Linen path
(``model.stem_conv['kernel']``, ``model.stage2_block1['dw_bn']['mean']``), so ``nnx.Optimizer``,
``nnx.state`` filters and ``nnx.split``/``nnx.merge`` work as on any NNX model.

``from_linen(name, variables)`` wraps converted or checkpointed variables as they are and ``to_linen(model)``
gives them back, so every weights source of ``efficientnet_jax.weights`` serves NNX users. This module
needs flax only: training with ``nnx.Optimizer`` needs optax (``pip install 'efficientnet-jax[train]'``).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import bridge
from flax.nnx.bridge import variables as bridge_variables

from efficientnet_jax import model as linen_model
from efficientnet_jax.specs import MIN_RESOLUTION
from efficientnet_jax.weights.common import check_fits, head_classes

__all__ = ["EfficientNet", "create_model", "from_linen", "to_linen"]


class EfficientNet(bridge.ToNNX):
    """An EfficientNet (V1, Lite or V2) as an ``nnx.Module``: ``model(x, train=False)`` gives logits.

    ``train=True`` applies dropout and drop path with keys from the model's own 'dropout' stream and
    updates the ``nnx.BatchStat`` variables in place (under ``nnx.jit``, or ``nnx.split``/``nnx.merge``
    around ``jax.jit``, like any NNX state). ``features_only=True`` returns the stem, stage and head
    feature maps. Build it with ``create_model`` or ``from_linen``; ``to_linen`` goes back.
    """

    def __init__(self, module: linen_model.EfficientNet, variables: Mapping[str, Any], *, rngs: nnx.Rngs):
        # ToNNX keeps the Linen module (static) and the rngs; the variables become NNX attributes laid
        # out as ToNNX's lazy_init lays them out, without running Linen's init again.
        super().__init__(module, rngs=nnx.Rngs(dropout=rngs.dropout()))
        for name, value in bridge_variables.linen_vars_to_nnx_attrs(variables).items():
            setattr(self, name, nnx.data(value))

    @property
    def linen_module(self) -> linen_model.EfficientNet:
        """The Linen ``EfficientNet`` that computes this model."""
        return self.to_nnx__module

    def linen_variables(self) -> dict:
        """The current values as Linen ``{'params': ..., 'batch_stats': ...}`` (arrays, not copies)."""
        attrs = {name: value for name, value in vars(self).items()
                 if not name.startswith(("to_nnx__", "_pytree__"))}
        return bridge_variables.nnx_attrs_to_linen_vars(attrs)

    def __call__(self, x: jax.Array, train: bool = False, *, features_only: bool = False):
        module, variables = self.to_nnx__module, self.linen_variables()
        if not train:
            return module.apply(variables, x, train=False, features_only=features_only)
        out, updates = module.apply(variables, x, train=True, features_only=features_only,
                                    rngs={"dropout": self.to_nnx__rngs.dropout()}, mutable=["batch_stats"])
        # In place, so every reference to these BatchStat variables (an nnx.state view, a cached
        # partial's clone) sees the new statistics; ToNNX's own __call__ would replace the variables.
        nnx.update(self, updates["batch_stats"])
        return out


def from_linen(name: str | linen_model.EfficientNet, variables: Mapping[str, Any], *,
               rngs: nnx.Rngs | None = None, **options: Any) -> EfficientNet:
    """An NNX model holding ``variables`` (Linen ``{'params', 'batch_stats'}``, e.g. from ``load_pretrained``).

    ``name`` is a variant built with ``options`` (``efficientnet_jax.create_model``'s: spec overrides such
    as the padding a weights source needs, ``dtype``...; the class count defaults to the classifier's
    width in ``variables``), or a Linen ``EfficientNet`` itself, so ``from_linen(*load_pretrained(...))``
    keeps every setting the weights came with. Variables that do not fit raise ``WeightConversionError``
    naming what differs; values are kept as they are (cast only where the model's dtype differs).
    ``rngs`` seeds the dropout stream (default ``nnx.Rngs(0)``).
    """
    if isinstance(name, linen_model.EfficientNet):
        if options:
            raise TypeError(f"from_linen(linen_model, variables) takes no model options (got {sorted(options)}): "
                            "the Linen model has its settings; pass a model name to build another")
        module = name
    else:
        options.setdefault("num_classes", head_classes(variables))
        module = linen_model.create_model(name, **options)
    fitted = check_fits(module, variables, source="the variables passed to from_linen")
    return EfficientNet(module, fitted, rngs=rngs if rngs is not None else nnx.Rngs(0))


def to_linen(model: EfficientNet) -> tuple[nn.Module, dict]:
    """``(linen_model, variables)`` with the NNX model's current values, for Linen code, converters
    (``to_keras``), ``save_pretrained`` and checkpoints."""
    return model.linen_module, model.linen_variables()


def create_model(name: str, *, rngs: nnx.Rngs, **options: Any) -> EfficientNet:
    """A freshly initialized NNX ``name``; ``options`` are ``efficientnet_jax.create_model``'s
    (``num_classes``, ``dtype``, ``remat``, spec overrides such as ``width`` or ``dropout``).

    Parameters come from ``rngs.params()`` (``nnx.Rngs(0)`` serves both streams; ``nnx.Rngs(params=0,
    dropout=1)`` separates them) through the Linen model's initializers.
    """
    module = linen_model.create_model(name, **options)
    # Shapes do not depend on the resolution: initialize at the smallest one the network takes.
    x = jnp.zeros((1, MIN_RESOLUTION, MIN_RESOLUTION, 3), module.dtype)
    variables = jax.jit(module.init, static_argnames="train")({"params": rngs.params()}, x, train=False)
    return EfficientNet(module, variables, rngs=rngs)
