"""Reading PyTorch state dicts from files, safely: the readers every PyTorch-layout source shares.

``.pth`` files are pickles, so they are read with ``torch.load(..., weights_only=True)``: a download
cannot run code. ``.safetensors`` files need no torch at all.
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

from safetensors.numpy import load_file

from efficientnet_jax.optional import extra, require


SAFE_TORCH = (2, 6)  # below, weights_only=True loading can be made to run code (CVE-2025-32434)


def torch_is_safe(version: str) -> bool:
    """Whether a torch of this version ('2.5.1+cpu', '2.13.0') loads pickles with ``weights_only`` safely."""
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2])
    return (major, minor) >= SAFE_TORCH


def torch_load(path: str | pathlib.Path) -> dict:
    """A torch file's contents with ``weights_only=True`` (tensors and plain containers, never code)."""
    hint = " (or save the state dict as .safetensors, which loads without torch)"
    torch = require("torch", f"Reading {path}", extra("torch"), hint=hint)
    if not torch_is_safe(torch.__version__):
        raise ImportError(f"Reading {path} safely needs torch>=2.6 (older weights_only loading can run code, "
                          f"CVE-2025-32434); this is torch {torch.__version__}: pip install --upgrade "
                          f"{extra('torch')}{hint}")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | pathlib.Path) -> dict:
    """A state dict from ``.safetensors`` (as numpy, no torch) or a torch file, wrappers removed (``unwrap``)."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        return unwrap(load_file(str(path)))
    return unwrap(torch_load(path))


def unwrap(state_dict: Mapping[str, Any]) -> dict:
    """The weights inside a training checkpoint ({'state_dict': ...}) with DataParallel's 'module.' removed."""
    for key in ("state_dict", "model", "model_state_dict"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
    return {k.removeprefix("module."): v for k, v in state_dict.items()}
