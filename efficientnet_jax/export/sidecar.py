"""The JSON file written beside every export (``FILE.json``): what the file expects and how it was made.

The exported graphs take float32 NHWC images already normalized, like ``model.apply``, so the sidecar
carries everything needed to prepare them as ``predict`` does: resolution, eval crop, interpolation,
mean/std (ImageNet for B and V2-B, 127/128 for Lite, 128/128 for V2-S/M/L/XL) and the class names.
"""
from __future__ import annotations

import importlib.metadata
import json
import pathlib
from typing import Any, Iterable

from efficientnet_jax.imagenet import NUM_CLASSES, class_names

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``packages`` (distribution names), for the record."""
    found = {}
    for package in ("efficientnet-jax", "jax", "jaxlib", *packages):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def sidecar(*, model, fmt: str, image_size: int, batch: int | None, num_outputs: int, converter: dict[str, Any],
            packages: Iterable[str], weights: str | None) -> dict[str, Any]:
    spec = getattr(model, "spec", None)
    num_classes = getattr(model, "num_classes", num_outputs)
    data = {
        "model": spec.name if spec is not None else type(model).__name__.lower(),
        "format": fmt,
        "weights": weights,
        "input": {
            "name": INPUT_NAME, "layout": "NHWC", "dtype": "float32", "shape": [batch, image_size, image_size, 3],
            "color": "RGB", "normalized": "(pixel - mean) / std, pixels in 0..255; a null batch is dynamic",
        },
        "output": {"name": OUTPUT_NAME if num_classes else "features", "shape": [batch, num_outputs],
                   "meaning": "logits (apply softmax for probabilities)" if num_classes else "pooled features"},
        "resolution": image_size,
    }
    if spec is not None:
        data.update(
            mean=list(spec.mean), std=list(spec.std), crop_pct=spec.crop_pct, interpolation=spec.interpolation,
            preprocessing=("center crop crop_pct of the short side, resize to resolution x resolution with "
                           "interpolation (antialiased), then (x - mean) / std: efficientnet_jax.predict.eval_inputs"),
        )
    data["num_classes"] = num_classes
    if num_classes == NUM_CLASSES:
        data["class_names"] = list(class_names())
    data["converter"] = converter
    data["versions"] = versions(packages)
    return data


def write_sidecar(path: pathlib.Path, data: dict[str, Any]) -> pathlib.Path:
    """``path`` + '.json', written atomically."""
    target = path.with_name(path.name + ".json")
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(target)
    return target
