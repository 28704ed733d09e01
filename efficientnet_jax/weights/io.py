"""Save and load converted variables in a framework-neutral file (flax msgpack), so users convert once.

msgpack holds only arrays and dicts: loading it runs no code, unlike a pickle.
"""
from __future__ import annotations

import pathlib

import flax.serialization
import jax
import numpy as np


def save_variables(path: str | pathlib.Path, variables: dict) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, variables)))
    tmp.replace(path)  # never leave a half-written file under the real name


def load_variables(path: str | pathlib.Path) -> dict:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}: convert weights first (efficientnet_jax.weights) "
                                "and save them with save_variables")
    try:
        return flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoding failure means a bad file
        raise ValueError(f"{path} is not a msgpack weights file written by save_variables ({e})") from e
