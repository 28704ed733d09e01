"""The two layouts of a model's variables: unrolled (one entry per block, ``stage2_block3``) and scanned
(``create_model(..., scan_blocks=True)``: a stage's blocks 2..N stacked on a leading axis under
``stage2_scan``), and the exact conversion between them.

Block 1 of every stage changes the shape (stride, channels) and stays unrolled; blocks 2..N all map
C -> C at one resolution, so their variables have equal shapes and XLA compiles one body per stage
instead of one per block. Every converter, weight file and ``load_pretrained`` speaks the unrolled
layout; ``stack_blocks`` turns it into the scanned one and ``unstack_blocks`` back, on any tree that
holds the block entries (variables, ``params``, optimizer states with dict leaves).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")
_SCAN = re.compile(r"stage(\d+)_scan$")


def scan_name(stage: int) -> str:
    """Where the scanned blocks 2..N of ``stage`` live."""
    return f"stage{stage}_scan"


def _stack(name: str, trees: list[Any]) -> Any:
    try:
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
    except ValueError as e:
        raise ValueError(f"The blocks of {name} differ in shape, so they cannot be scanned ({e}); pruned or "
                         "otherwise uneven stages need scan_blocks=False") from None


def stack_blocks(tree: Any) -> Any:
    """The scanned layout of an unrolled tree: every ``stageS_blockJ`` with J >= 2 goes, stacked in block
    order, into ``stageS_scan``; everything else is kept as it is. A tree that is already scanned (or holds
    no blocks) comes back unchanged."""
    if not isinstance(tree, Mapping):
        return tree
    repeated: dict[int, dict[int, Any]] = {}
    out = {}
    for key, value in tree.items():
        match = _BLOCK.match(key) if isinstance(key, str) else None
        if match and int(match.group(2)) >= 2:
            repeated.setdefault(int(match.group(1)), {})[int(match.group(2))] = value
        else:
            out[key] = stack_blocks(value)
    for stage, blocks in sorted(repeated.items()):
        indices = sorted(blocks)
        if indices != list(range(2, 2 + len(indices))):
            raise ValueError(f"stage {stage} has blocks {indices} after block 1: they must be numbered 2..N "
                             "without gaps to be scanned")
        out[scan_name(stage)] = _stack(f"stage {stage}", [blocks[i] for i in indices])
    return out


def unstack_blocks(tree: Any) -> Any:
    """The unrolled layout of a scanned tree (the inverse of ``stack_blocks``, exactly)."""
    if not isinstance(tree, Mapping):
        return tree
    out = {}
    for key, value in tree.items():
        match = _SCAN.match(key) if isinstance(key, str) else None
        if not match:
            out[key] = unstack_blocks(value)
            continue
        length = jax.tree.leaves(value)[0].shape[0]
        for i in range(length):
            out[f"stage{match.group(1)}_block{i + 2}"] = jax.tree.map(lambda leaf, i=i: leaf[i], value)
    return out


def is_scanned(tree: Any) -> bool:
    """True if any level of ``tree`` holds a ``stageS_scan`` entry."""
    if not isinstance(tree, Mapping):
        return False
    return any((isinstance(k, str) and _SCAN.match(k)) or is_scanned(v) for k, v in tree.items())
