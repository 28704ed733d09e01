"""Save and load converted variables in framework-neutral files, so users convert once.

Two formats, chosen by the file suffix: ``.safetensors`` (readable by any framework; keys are
'/'-joined variable paths like ``params/stem_conv/kernel``) and anything else as flax msgpack.
Neither runs code on load, unlike a pickle. Both carry a small JSON ``metadata`` dict, which
``save_pretrained`` uses to record the model a file belongs to and ``saved_model_settings`` reads back.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import flax.serialization
import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from efficientnet_jax.model import EfficientNet
from efficientnet_jax.scan import unstack_blocks
from efficientnet_jax.specs import model_info
from efficientnet_jax.weights.common import WeightFileError, flatten, unflatten

_METADATA_KEY = "__metadata__"  # a JSON string beside the variables (msgpack) or in the header (safetensors)


def _is_safetensors(path: pathlib.Path) -> bool:
    return path.suffix == ".safetensors"


def save_variables(path: str | pathlib.Path, variables: dict, metadata: dict[str, Any] | None = None) -> None:
    """Write ``variables`` (and optional JSON-able ``metadata``) atomically: a crash never leaves a
    half-written file under the real name."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    arrays = jax.tree.map(np.asarray, jax.device_get(variables))
    if _is_safetensors(path):
        flat = {"/".join(p): np.ascontiguousarray(v) for p, v in flatten(arrays).items()}
        save_file(flat, str(tmp), metadata={_METADATA_KEY: json.dumps(metadata or {})})
    else:
        tree = {**arrays, _METADATA_KEY: json.dumps(metadata or {})}
        tmp.write_bytes(flax.serialization.msgpack_serialize(tree))
    tmp.replace(path)


def _check_exists(path: pathlib.Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}: convert weights first (efficientnet_jax.weights) "
                                "and save them with save_variables or save_pretrained")


def load_variables_and_metadata(path: str | pathlib.Path) -> tuple[dict, dict[str, Any]]:
    path = pathlib.Path(path)
    _check_exists(path)
    try:
        if _is_safetensors(path):
            with safe_open(str(path), framework="numpy") as f:
                header = f.metadata() or {}
                flat = {tuple(k.split("/")): f.get_tensor(k) for k in f.keys()}
            return unflatten(flat), _metadata(header.get(_METADATA_KEY, "{}"))
        tree = flax.serialization.msgpack_restore(path.read_bytes())
        if not isinstance(tree, dict):
            raise ValueError(f"it holds a {type(tree).__name__}, not a dict of variables")
        metadata = _metadata(tree.pop(_METADATA_KEY, "{}"))
        # msgpack decodes many junk byte strings (b'\x80' is an empty map): only arrays under 'params' are weights
        if not (isinstance(tree.get("params"), dict) and jax.tree.leaves(tree)
                and all(isinstance(x, np.ndarray) for x in jax.tree.leaves(tree))):
            raise ValueError(f"it decodes to {str(tree)[:80]!r}, not {{'params': arrays, ...}}")
        return tree, metadata
    except Exception as e:  # noqa: BLE001 - any decoding failure means a bad file
        kind = "safetensors" if _is_safetensors(path) else "msgpack"
        raise WeightFileError(path, f"it is not a {kind} weights file written by save_variables ({e})",
                              "it is truncated or of another format: save it again") from e


def _metadata(text) -> dict[str, Any]:
    """The metadata JSON of a file: an object whose known fields have the types ``save_pretrained`` writes."""
    metadata = json.loads(text)
    if not isinstance(metadata, dict):
        raise ValueError(f"its metadata is a JSON {type(metadata).__name__}, not an object")
    expected = {"model": str, "num_classes": int, "overrides": dict, "source": str}
    for key, kind in expected.items():
        if metadata.get(key) is not None and not isinstance(metadata[key], kind):
            raise ValueError(f"its metadata field {key!r} is {metadata[key]!r}, not a {kind.__name__}")
    return metadata


def load_variables(path: str | pathlib.Path) -> dict:
    """The variables saved by ``save_variables`` (either format); metadata is dropped."""
    return load_variables_and_metadata(path)[0]


def save_pretrained(path: str | pathlib.Path, model: EfficientNet, variables: dict, source: str = "") -> None:
    """Save converted variables of an ``EfficientNet`` with the model settings they need (name, class
    count, spec overrides), so that ``load_pretrained(name, path)`` rebuilds the same model. The file holds
    the unrolled layout whatever the model's ``scan_blocks`` (``load_pretrained`` stacks on request)."""
    base = model_info(model.spec.name)
    overrides = {k: v for k, v in vars(model.spec).items() if getattr(base, k) != v and k != "stages"}
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    save_variables(path, unstack_blocks(variables), metadata={
        "model": model.spec.name, "num_classes": model.num_classes, "overrides": overrides, "source": source})


def saved_model_settings(metadata: dict[str, Any]) -> tuple[str | None, int | None, dict[str, Any]]:
    """``(model name, class count, spec overrides)`` that ``save_pretrained`` recorded; None where a file
    (e.g. from ``save_variables``) does not say."""
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in metadata.get("overrides", {}).items()}
    return metadata.get("model"), metadata.get("num_classes"), overrides
