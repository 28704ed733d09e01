"""Reading PyTorch state dicts from files, safely: the readers every PyTorch-layout source shares.

``.pth`` files are pickles, so they are read with ``torch.load(..., weights_only=True)``: a download
cannot run code. ``.safetensors`` files need no torch at all.
"""
from __future__ import annotations

import pathlib
import zipfile
from typing import Any, Mapping

from safetensors.numpy import load_file

from efficientnet_jax.optional import extra, require
from efficientnet_jax.weights.common import WeightFileError


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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - refused pickles, truncated zips, junk: every failure is the file's
        cause = " ".join(str(e).split())[:300] or type(e).__name__
        if "weights_only" in cause or "Weights only" in cause:
            refused = cause.split("WeightsUnpickler error:")[-1].split(". ")[0].strip()[:160]
            cause = f"it needs code to load, which is refused ({type(e).__name__}: {refused})"
            raise WeightFileError(path, cause, "load only weights files from sources you trust, or ask for a "
                                  ".safetensors file") from e
        raise WeightFileError(path, f"{type(e).__name__}: {cause}",
                              "it is truncated or not a PyTorch file: download or save it again") from e


def safetensors_load(path: str | pathlib.Path) -> dict:
    """A ``.safetensors`` file's tensors as numpy arrays (no torch)."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt header or body
        raise WeightFileError(path, f"{type(e).__name__}: {str(e)[:300]}",
                              "it is truncated or not a safetensors file: download or save it again") from e


def check_keras_file(path: str | pathlib.Path) -> None:
    """``WeightFileError`` at once for a Keras file whose container does not open (a ``.keras`` zip, an
    HDF5 ``.h5``): building the Keras model the weights are loaded into takes a minute on a CPU."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".keras":
            zipfile.ZipFile(path).close()
        else:
            h5py = require("h5py", f"Reading {path}", extra("keras"))
            h5py.File(path, "r").close()
    except (OSError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise WeightFileError(path, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                              "it is truncated or not a Keras weights file: save it again") from e


def read_state_dict(path: str | pathlib.Path) -> dict:
    """A state dict from ``.safetensors`` (as numpy, no torch) or a torch file, wrappers removed (``unwrap``)."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        return unwrap(safetensors_load(path))
    return unwrap(torch_load(path))


def unwrap(state_dict: Mapping[str, Any]) -> dict:
    """The weights inside a training checkpoint ({'state_dict': ...}) with DataParallel's 'module.' removed."""
    for key in ("state_dict", "model", "model_state_dict"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
    return {k.removeprefix("module."): v for k, v in state_dict.items()}
