"""The config is the one place for settings: every key the training program reads is declared in
train/configs/base.py (with its default and a comment), every recipe only overrides base keys, and a
hyperparameter set on the command line reaches the program (a typo is an error)."""
import ast
import importlib
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags

from train.configs import base
from train.main import define_flags
from train.optim import build_optimizer, rmsprop_tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_NAMES = {"config", "cfg"}
FREE_FORM = {"model_overrides"}  # passed on to the model: its keys are the model's fields, not the program's
METHODS = set(dir(ml_collections.ConfigDict))
MODULES = {"tf", "tfds", "jax"}  # tf.config.set_visible_devices is not ours  # config.get(...), config.to_dict() ... are not keys
RECIPES = ([("digits", a) for a in ("", "runlocal")] + [("finetune", a) for a in ("", "runlocal")]
           + [("imagenet", f"b{i}{a}") for i in range(8) for a in ("", ",runlocal")]
           + [(f"stanford_dogs_{m}", a) for m in ("b0", "resnet50") for a in ("", "runlocal")])


def declared(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys.add(prefix + key)
        if isinstance(value, ml_collections.ConfigDict) and key not in FREE_FORM:
            keys |= declared(value, f"{prefix}{key}.")
    return keys


def key_of(node: ast.AST) -> str | None:
    """'x' for config.x / cfg.x / self.config.x / config['x'], 'progressive.x' for config.progressive.x."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            parts.append(node.slice.value)
            node = node.value
        else:
            break
    parts.reverse()
    if isinstance(node, ast.Name) and node.id in CONFIG_NAMES:
        path = parts
    elif "config" in parts[:-1] and isinstance(node, ast.Name) and node.id not in MODULES:  # self.config.x
        path = parts[parts.index("config") + 1:]
    else:
        return None
    keys = []
    for part in path:
        if not isinstance(part, str) or part in METHODS:
            break
        keys.append(part)
        if part in FREE_FORM or part != "progressive":
            break
    return ".".join(keys) or None


def keys_read_in_train() -> dict[str, list[str]]:
    """Every config key the program reads or sets, with where (train/, not the recipes themselves)."""
    found = {}
    for path in sorted((ROOT / "train").rglob("*.py")):
        if "configs" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            key = None
            if isinstance(node, (ast.Attribute, ast.Subscript)):
                key = key_of(node)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and key_of(node.func.value) is None and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in CONFIG_NAMES and node.args and isinstance(node.args[0], ast.Constant)):
                key = node.args[0].value  # config.get("x"): read with a default in code
            if key:
                found.setdefault(key, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_key_the_program_reads_is_declared_in_the_base():
    read = keys_read_in_train()
    assert {"model", "learning_rate", "momentum", "rmsprop_eps", "progressive.stages", "crop_pct"} <= set(read)
    undeclared = {key: where for key, where in read.items() if key not in declared(base.get_config())}
    assert not undeclared, f"read in train/ but not declared in train/configs/base.py: {undeclared}"
    unused = declared(base.get_config()) - set(read)
    assert not unused, f"declared in train/configs/base.py but read nowhere in train/: {sorted(unused)}"


def test_no_defaults_in_code():
    """config.get(key, default) would hide a default from the base config and from --config.KEY."""
    for path in sorted((ROOT / "train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in CONFIG_NAMES):
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: config.get(...); read config.KEY")


def test_every_base_key_has_a_comment():
    source = (ROOT / "train/configs/base.py").read_text()
    (get_config,) = [f for f in ast.parse(source).body if isinstance(f, ast.FunctionDef) and f.name == "get_config"]
    lines = source.splitlines()[get_config.lineno:get_config.end_lineno]
    setting = [line for line in lines if line.strip().startswith("config.") and " = " in line]
    assert len(setting) >= len(declared(base.get_config())) - 1  # 'progressive' itself is a block
    bare = [line.strip() for line in setting if "#" not in line and "ConfigDict()" not in line]
    assert not bare, f"declare each key with a one-line comment: {bare}"


@pytest.mark.parametrize("recipe,arg", RECIPES)
def test_recipes_only_override_base_keys(recipe, arg):
    config = importlib.import_module(f"train.configs.{recipe}").get_config(arg)
    extra = declared(config) - declared(base.get_config())
    assert not extra, f"{recipe}.py:{arg} declares keys the base does not: {sorted(extra)}"
    config.lock()  # as train.main locks it


def test_imagenet_variants_and_runlocal():
    imagenet = importlib.import_module("train.configs.imagenet")
    b3, local = imagenet.get_config("b3"), imagenet.get_config("b3,runlocal")
    assert (b3.model, b3.dtype, b3.remat, local.model) == ("efficientnet_b3", "bfloat16", False, "efficientnet_b3")
    assert imagenet.get_config("b5").remat and imagenet.get_config().model == "efficientnet_b0"
    assert (local.num_train_steps, local.batch_size, local.image_size, local.dtype) == (3, 8, 64, "float32")
    for bad in ("b9", "b3,fast"):
        with pytest.raises(ValueError, match="VARIANT"):
            imagenet.get_config(bad)


def parse(*overrides: str, recipe: str = "train/configs/digits.py") -> ml_collections.ConfigDict:
    """The config as ``python -m train.main`` parses its flags."""
    argv = ["train.main", f"--config={ROOT / recipe}", "--workdir=/tmp/unused", *overrides]
    values = flags.FlagValues()
    config, _ = define_flags(values, sys_argv=argv)
    values(argv)
    return config.value


def second_update(config) -> np.ndarray:
    """The optimizer's second update (momentum enters from the second) of a small parameter tree."""
    params = {"conv": {"kernel": jnp.linspace(-1.0, 1.0, 24).reshape(2, 3, 4)}, "bn": {"scale": jnp.ones(4)}}
    if not isinstance(config, ml_collections.ConfigDict):  # an optax optimizer given directly
        tx = config
    else:
        tx, _ = build_optimizer(config, steps_per_epoch=10.0, total_steps=100, params=params)
    grads = [jax.tree.map(lambda p, i=i: jnp.cos(p * (i + 2)) * 0.1, params) for i in range(2)]
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
    return np.concatenate([np.ravel(u) for u in jax.tree.leaves(updates)])


def test_command_line_sets_optimizer_hyperparameters():
    plain = ("--config.lr_schedule=constant", "--config.warmup_epochs=0", "--config.weight_decay=0",
             "--config.scale_lr_by_batch=False")
    config = parse(*plain, "--config.rmsprop_eps=0.01", "--config.momentum=0.8")
    assert (config.rmsprop_eps, config.momentum, config.optimizer) == (0.01, 0.8, "rmsprop_tf")
    direct = rmsprop_tf(config.learning_rate, decay=0.9, momentum=0.8, eps=0.01)
    np.testing.assert_allclose(second_update(config), second_update(direct), rtol=1e-6)
    assert not np.allclose(second_update(parse(*plain)), second_update(config), rtol=1e-3)

    with pytest.raises((flags.Error, AttributeError, KeyError)):  # a typo is an error, never a new key
        parse("--config.rmsprop_epz=0.01")
    assert parse("--config.grad_clip_norm=1.0", recipe="train/configs/imagenet.py:b0,runlocal").grad_clip_norm == 1.0
