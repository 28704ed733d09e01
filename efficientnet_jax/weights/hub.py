"""Weights on the Hugging Face Hub: ``"hf-hub:ORG/REPO[@REVISION]"`` sources, located through ``huggingface_hub``.

This module only finds the files: ``model.safetensors`` (read without torch) and, where the repository
has one, ``config.json``, whose ``"architecture"`` (timm writes e.g. ``tf_efficientnet_b0``) says how
the weights were trained and so which padding and BN epsilon they need. ``sources.resolve_source``
then loads the file exactly as a local timm / efficientnet-pytorch ``.safetensors`` file: one loader.

``huggingface_hub`` does the downloading and owns the cache, so its settings apply: ``HF_HOME`` /
``HF_HUB_CACHE`` (where files are kept), ``HF_HUB_OFFLINE=1`` (cache only, no network), ``HF_TOKEN``
(private and gated repositories). A revision is a branch, a tag or a commit hash (default ``main``).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re

from efficientnet_jax.optional import extra, require
from efficientnet_jax.weights.common import WeightConversionError, WeightFileError, parse_model_name

PREFIX = "hf-hub:"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclasses.dataclass(frozen=True)
class HubWeights:
    """A Hub source, located: the local ``model.safetensors`` and the architecture its config names."""

    source: str  # as the caller wrote it: 'hf-hub:timm/tf_efficientnet_b0.in1k@main'
    path: pathlib.Path  # the file in the Hugging Face cache
    architecture: str | None  # config.json's "architecture" ('tf_efficientnet_b0'); None without one


def is_hub_source(source: object) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``(repo_id, revision or None)`` of ``'hf-hub:ORG/REPO[@REVISION]'``; ValueError for anything else."""
    repo_id, at, revision = source.removeprefix(PREFIX).partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (at and not revision):
        raise ValueError(f"A Hub source is 'hf-hub:ORG/REPO' or 'hf-hub:ORG/REPO@REVISION' "
                         f"(e.g. 'hf-hub:timm/tf_efficientnet_b0.in1k'), got {source!r}")
    return repo_id, revision or None


def download(source: str) -> HubWeights:
    """``model.safetensors`` of a Hub source from the Hugging Face cache, downloaded first if it is missing
    and the Hub can be reached, with the architecture named by the same commit's ``config.json``."""
    repo_id, revision = parse_hub_source(source)
    hub = require("huggingface_hub", f"Loading weights from {source}", extra("hub"))
    errors = require("huggingface_hub.errors", f"Loading weights from {source}", extra("hub"))
    where = f"{repo_id} at revision {revision or 'main'}"
    try:
        path = pathlib.Path(hub.hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision))
    except errors.LocalEntryNotFoundError as e:
        offline = " (HF_HUB_OFFLINE is set)" if hub.constants.HF_HUB_OFFLINE else ""
        raise FileNotFoundError(
            f"{source}: {WEIGHTS_FILE} of {where} is not in the Hugging Face cache ({hub.constants.HF_HUB_CACHE}) "
            f"and the Hub could not be reached{offline}: download it once with network access "
            f"(`hf download {repo_id} {WEIGHTS_FILE} config.json`), or point HF_HUB_CACHE / HF_HOME at a cache "
            "that holds it; check the repository name") from e
    except errors.RepositoryNotFoundError as e:  # GatedRepoError included
        raise FileNotFoundError(
            f"{source}: no repository {repo_id} on the Hub that this login can read: check the name "
            "(timm's are 'timm/<model>.<tag>', e.g. timm/tf_efficientnet_b0.in1k); for a private or gated one "
            "log in (`hf auth login`) or set HF_TOKEN") from e
    except errors.RevisionNotFoundError as e:
        raise FileNotFoundError(f"{source}: {repo_id} has no revision {revision!r}: pass a branch, tag or "
                                "commit hash that exists, or leave '@...' off for main") from e
    except errors.EntryNotFoundError as e:
        raise FileNotFoundError(f"{source}: {where} has no {WEIGHTS_FILE}: these loaders read safetensors "
                                "weights only (timm's EfficientNet repositories have them)") from e
    # The config of the same commit as the weights (the snapshot folder is named by the commit hash).
    commit = path.parent.name if _COMMIT.fullmatch(path.parent.name) else revision
    try:
        config_path = hub.hf_hub_download(repo_id, CONFIG_FILE, revision=commit)
    except errors.EntryNotFoundError:  # no config in the repository, or (offline) none cached
        return HubWeights(source, path, None)
    return HubWeights(source, path, _architecture(config_path))


def _architecture(config_path: str) -> str | None:
    try:
        config = json.loads(pathlib.Path(config_path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightFileError(config_path, f"it is not JSON ({e})", "download it again") from e
    architecture = config.get("architecture") if isinstance(config, dict) else None
    return architecture if isinstance(architecture, str) else None


def model_name(weights: HubWeights, name: str | None) -> str:
    """The name to load ``weights`` as: the config's architecture (timm's spelling, so 'tf_' decides TF
    padding and BN epsilon) when there is one, which must be the model ``name`` asks for; else ``name``.

    ``name`` may be ours ('efficientnet_b0': either training) or timm's ('tf_efficientnet_b0': the TF
    port only, so a repository of PyTorch-trained weights is refused rather than loaded with TF settings).
    """
    if weights.architecture is None:
        if name is None:
            raise ValueError(f"{weights.source} has no {CONFIG_FILE} naming its architecture: pass the model name")
        return name
    if name is None:
        return weights.architecture
    (theirs, theirs_tf), (ours, asks_for_tf) = parse_model_name(weights.architecture), parse_model_name(name)
    if theirs != ours or (asks_for_tf and not theirs_tf):
        raise WeightConversionError(
            f"{weights.source} holds {weights.architecture} weights (its {CONFIG_FILE}), not {name}: load it as "
            f"{theirs} (or {weights.architecture}), or pick a repository for {name}")
    return weights.architecture
