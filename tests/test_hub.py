"""Weights from the Hugging Face Hub (``hf-hub:ORG/REPO[@REVISION]``), offline: a real ``huggingface_hub`` cache
built in a temp dir (the layout of huggingface_hub's file_download.py: ``models--ORG--REPO/blobs/<hash>``,
``snapshots/<commit>/<file>`` symlinks to the blobs, ``refs/<branch or tag>`` holding the commit) with the real
timm files of tests/fixtures, read by ``load_pretrained`` in a subprocess started with ``HF_HUB_CACHE`` (or
``HF_HOME``) and ``HF_HUB_OFFLINE=1`` (huggingface_hub reads them once, at import). What comes back must
equal loading the same file from disk."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from efficientnet_jax.weights import load_pretrained, load_variables
from efficientnet_jax.weights.common import flatten
from efficientnet_jax.weights.hub import parse_hub_source

pytest.importorskip("huggingface_hub")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TINY = dict(width=0.25, depth=0.34)  # the size of the timm fixtures
COMMIT_A, COMMIT_B = "a" * 40, "0123456789abcdef0123456789abcdef01234567"


def timm_file(timm_name: str, tmp: pathlib.Path, scale: float = 1.0) -> pathlib.Path:
    """A timm-format model.safetensors (the fixture without its test tensors; ``scale`` makes another version)."""
    tensors = load_file(FIXTURES / f"timm_tiny_{timm_name}.safetensors")
    state_dict = {k: (v * scale if k.endswith("weight") else v) for k, v in tensors.items()
                  if not k.startswith("__test__.")}
    path = tmp / f"{timm_name}-{scale}.safetensors"
    save_file(state_dict, path)
    return path


def add_to_cache(cache: pathlib.Path, repo_id: str, commit: str, files: dict[str, bytes], refs=("main",)) -> None:
    """One commit of a model repository, as ``hf_hub_download`` leaves it: content-addressed blobs,
    a snapshot folder of relative symlinks, and refs naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for filename, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it


def config(architecture: str) -> bytes:
    return json.dumps({"architecture": architecture, "num_classes": 10, "num_features": 320}).encode()


# Runs in a fresh interpreter, so that huggingface_hub reads HF_HUB_CACHE / HF_HOME / HF_HUB_OFFLINE
# from the environment at import. One line of JSON per case: the settings of the loaded model and
# where its variables were saved, or the error.
LOADER = """
import json, sys
from efficientnet_jax.weights import load_pretrained, save_variables
out = sys.argv[1]
for i, (name, source) in enumerate(json.loads(sys.argv[2])):
    try:
        model, variables = load_pretrained(name, source, width=0.25, depth=0.34)
        save_variables(f"{out}/{i}.safetensors", variables)
        print(json.dumps({"model": model.spec.name, "padding": model.spec.padding,
                          "bn_epsilon": model.spec.bn_epsilon, "file": f"{out}/{i}.safetensors"}))
    except Exception as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


def load_offline(cases, tmp: pathlib.Path, env: dict[str, str]) -> list[dict]:
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    environment.update(HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", **env)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(out), json.dumps(cases)], capture_output=True,
                          text=True, timeout=300, env=environment)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stdout + proc.stderr[-3000:]
    return results


def assert_same_variables(result: dict, expected: dict) -> None:
    assert "error" not in result, result
    got = flatten(load_variables(result["file"]))
    want = flatten(expected)
    assert set(got) == set(want)
    for path in want:
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(want[path]), err_msg="/".join(path))


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A cache with: tf_efficientnet_b0 at two commits (main; tag v2 = another version), the PyTorch-trained
    efficientnet_b0, V2-B0, and a repository without config.json."""
    tmp = tmp_path_factory.mktemp("hub")
    cache = tmp / "cache"
    files = {name: timm_file(name, tmp) for name in ("tf_efficientnet_b0", "efficientnet_b0", "tf_efficientnetv2_b0")}
    files["tf_efficientnet_b0@v2"] = timm_file("tf_efficientnet_b0", tmp, scale=2.0)

    def timm_repo(file, architecture):
        return {"model.safetensors": files[file].read_bytes(), "config.json": config(architecture)}

    add_to_cache(cache, "timm/tf_efficientnet_b0.in1k", COMMIT_A, timm_repo("tf_efficientnet_b0", "tf_efficientnet_b0"))
    add_to_cache(cache, "timm/tf_efficientnet_b0.in1k", COMMIT_B, refs=("v2",),
                 files=timm_repo("tf_efficientnet_b0@v2", "tf_efficientnet_b0"))
    add_to_cache(cache, "timm/efficientnet_b0.ra_in1k", COMMIT_A, timm_repo("efficientnet_b0", "efficientnet_b0"))
    add_to_cache(cache, "timm/tf_efficientnetv2_b0.in1k", COMMIT_A,
                 timm_repo("tf_efficientnetv2_b0", "tf_efficientnetv2_b0"))
    no_config = {"model.safetensors": files["tf_efficientnet_b0"].read_bytes()}
    add_to_cache(cache, "someone/b0-no-config", COMMIT_A, no_config)
    return tmp, cache, files


def direct(timm_name: str, path: pathlib.Path) -> dict:
    """The same file loaded from disk, the way the Hub source must load it."""
    return load_pretrained(timm_name, path, **TINY)[1]


def test_offline_cache_loads_like_the_file_with_revisions_and_configs(hub_cache):
    tmp, cache, files = hub_cache
    cases = [
        ("efficientnet_b0", "hf-hub:timm/tf_efficientnet_b0.in1k"),  # config: TF port -> TF padding, eps 1e-3
        ("tf_efficientnet_b0", f"hf-hub:timm/tf_efficientnet_b0.in1k@{COMMIT_B}"),  # a commit hash
        ("efficientnet_b0", "hf-hub:timm/tf_efficientnet_b0.in1k@v2"),  # a tag: the same other commit
        ("efficientnet_b0", "hf-hub:timm/efficientnet_b0.ra_in1k"),  # config: PyTorch-trained settings
        ("efficientnetv2_b0", "hf-hub:timm/tf_efficientnetv2_b0.in1k"),
        (None, "hf-hub:timm/tf_efficientnetv2_b0.in1k"),  # the config names the model
        ("tf_efficientnet_b0", "hf-hub:someone/b0-no-config"),  # no config: the name decides
        ("tf_efficientnet_b0", "hf-hub:timm/efficientnet_b0.ra_in1k"),  # asks for the TF port: refused
        ("efficientnet_b1", "hf-hub:timm/tf_efficientnet_b0.in1k"),  # another model: refused
        ("efficientnet_b0", "hf-hub:timm/does_not_exist"),  # not on disk, offline
        ("efficientnet_b0", "hf-hub:timm/tf_efficientnet_b0.in1k@no-such-branch"),
    ]
    main, commit_b, tag, pytorch_trained, v2, v2_unnamed, no_config, wrong_tf, wrong_model, missing, no_branch = (
        load_offline(cases, tmp, {"HF_HUB_CACHE": str(cache)}))
    tf_b0 = direct("tf_efficientnet_b0", files["tf_efficientnet_b0"])
    assert_same_variables(main, tf_b0)
    assert (main["padding"], main["bn_epsilon"]) == ("same", 1e-3)
    other = direct("tf_efficientnet_b0", files["tf_efficientnet_b0@v2"])
    assert_same_variables(commit_b, other)
    assert_same_variables(tag, other)
    assert_same_variables(pytorch_trained, direct("efficientnet_b0", files["efficientnet_b0"]))
    assert (pytorch_trained["padding"], pytorch_trained["bn_epsilon"]) == ("symmetric", 1e-5)
    v2_direct = direct("tf_efficientnetv2_b0", files["tf_efficientnetv2_b0"])
    assert_same_variables(v2, v2_direct)
    assert_same_variables(v2_unnamed, v2_direct)
    assert v2_unnamed["model"] == "efficientnetv2_b0"
    assert_same_variables(no_config, tf_b0)
    assert wrong_tf["error"] == "WeightConversionError" and "holds efficientnet_b0 weights" in wrong_tf["message"]
    assert wrong_model["error"] == "WeightConversionError" and "not efficientnet_b1" in wrong_model["message"]
    for result in (missing, no_branch):
        assert result["error"] == "FileNotFoundError", result
        assert "not in the Hugging Face cache" in result["message"] and "HF_HUB_OFFLINE" in result["message"]
        assert str(cache) in result["message"] and "hf download" in result["message"]
    assert "timm/does_not_exist" in missing["message"] and "no-such-branch" in no_branch["message"]


def test_hf_home_locates_the_cache(hub_cache):
    """Without HF_HUB_CACHE, huggingface_hub's cache is $HF_HOME/hub."""
    tmp, cache, files = hub_cache
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    if not (home / "hub").exists():
        (home / "hub").symlink_to(cache)
    (result,) = load_offline([("efficientnet_b0", "hf-hub:timm/tf_efficientnet_b0.in1k")], tmp, {"HF_HOME": str(home)})
    assert_same_variables(result, direct("tf_efficientnet_b0", files["tf_efficientnet_b0"]))


@pytest.mark.parametrize("source", ["hf-hub:", "hf-hub:tf_efficientnet_b0", "hf-hub:a/b/c", "hf-hub:timm/x@",
                                    "hf-hub:/x"])
def test_malformed_ids_are_refused_before_any_lookup(source):
    with pytest.raises(ValueError, match="'hf-hub:ORG/REPO'"):
        load_pretrained("efficientnet_b0", source)


def test_ids_and_revisions_are_parsed():
    assert parse_hub_source("hf-hub:timm/tf_efficientnet_b0.in1k") == ("timm/tf_efficientnet_b0.in1k", None)
    assert parse_hub_source("hf-hub:timm/tf_efficientnetv2_b0.in1k@v1.0") == ("timm/tf_efficientnetv2_b0.in1k", "v1.0")


def test_without_huggingface_hub_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # what an environment without the package gives
    with pytest.raises(ImportError, match=r"needs huggingface_hub: pip install 'efficientnet-jax\[hub\]'"):
        load_pretrained("efficientnet_b0", "hf-hub:timm/tf_efficientnet_b0.in1k")


def test_an_unknown_model_name_is_refused_before_downloading():
    with pytest.raises(ValueError, match="Unknown model name 'efficientnet_b9'"):
        load_pretrained("efficientnet_b9", "hf-hub:timm/tf_efficientnet_b0.in1k")

