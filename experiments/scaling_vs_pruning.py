"""Scale a small model up, or prune a large one down, to the same measured MACs: which is more accurate?

    python -m experiments.scaling_vs_pruning
    python -m experiments.scaling_vs_pruning --smoke

Arms (EfficientNet proxy base: common.BASE_WIDTH, BASE_DEPTH, BASE_RESOLUTION):
  * scaled:     the base compound-scaled to 2x measured MACs, trained from scratch for --steps
                (through ``train.train_and_evaluate``);
  * big:        the base at width x2 (about 3-4x MACs), trained for --steps the same way;
  * channel:    ``pruning.slice_variables`` cuts the trained big model down to the width whose measured
                MACs match the scaled arm, then fine-tunes it for --finetune_steps (structured: real MACs fall);
  * magnitude:  the trained big model with ``magnitude_masks`` at the sparsity whose *nominal* sparse MACs
                match the scaled arm, fine-tuned with ``masked_updates`` (unstructured: dense XLA MACs
                do not fall at all; only a sparse kernel could realise the saving).
Fine-tuning is a small jitted loop here (optax Adam on the training program's input pipeline), because
``train_and_evaluate`` cannot start from in-memory pruned weights with a fixed mask.
Writes results.csv, accuracy_vs_macs.png and report.md.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys

import numpy as np

from experiments import common


def finetune(model, variables, config_kw: dict, steps: int, masks=None, learning_rate: float = 1e-3) -> tuple:
    """Fine-tune ``variables`` for ``steps`` on the proxy train split; return (variables, test accuracy)."""
    import jax
    import optax

    from efficientnet_jax import pruning
    from train import input_pipeline
    from train.train import resolve_config

    config = resolve_config(common.proxy_config(**config_kw))
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(learning_rate)
    if masks is not None:
        tx = optax.chain(tx, pruning.masked_updates(masks))
    opt = tx.init(params)

    @jax.jit
    def step(params, batch_stats, opt, x, y, key):
        def loss_fn(p):
            logits, new = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                      mutable=["batch_stats"], rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), new_stats, opt, loss

    it = input_pipeline.train_iterator(config, local_batch_size=config.batch_size)
    key = jax.random.key(config.seed)
    for i in range(steps):
        batch = next(it)
        params, batch_stats, opt, _ = step(params, batch_stats, opt, batch["image"], batch["label"],
                                           jax.random.fold_in(key, i))
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    correct = total = 0
    for batch in input_pipeline.eval_iterator(config, local_batch_size=64):
        mask = np.asarray(batch["mask"], bool)
        pred = np.asarray(apply({"params": params, "batch_stats": batch_stats}, batch["image"])).argmax(-1)
        correct += int((pred == np.asarray(batch["label"]))[mask].sum())
        total += int(mask.sum())
    return {"params": params, "batch_stats": batch_stats}, correct / max(total, 1)


def main(argv=None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, steps=100, name="scaling_vs_pruning")
    parser.add_argument("--finetune_steps", type=int, default=40)
    parser.add_argument("--big_width", type=float, default=2.0)
    args = parser.parse_args(argv[1:])
    common.quiet()
    out = common.out_dir(args, "scaling_vs_pruning")
    import jax
    import jax.numpy as jnp

    import efficientnet_jax as ej
    from efficientnet_jax import pruning
    from efficientnet_jax.scaling import compound_scaling
    from efficientnet_jax.search import bisect_multiplier

    steps = 2 if args.smoke else args.steps
    ft_steps = 2 if args.smoke else args.finetune_steps
    res = common.BASE_RESOLUTION
    build = common.builder("efficientnet")
    base_macs = common.measure(build(1.0, 1.0, res), res)[0]
    train = dict(dataset=args.dataset, data_dir=args.data_dir, steps=steps, batch_size=args.batch_size)
    config_kw = dict(dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size, image_size=res)

    d, w, r = compound_scaling(1.0, base_resolution=res)
    scaled = common.train_proxy(depth=d, width=w, resolution=r, **train)
    target = scaled["macs"]
    big = common.train_proxy(width=args.big_width, return_variables=True, **train)

    # Channel pruning: the width (same depth) whose measured MACs are closest to the scaled arm's.
    def ratio(m):
        return common.measure(build(1.0, m, res), res)[0] / target
    width = bisect_multiplier(ratio, 1.0, args.big_width, 1.0, False, 10)
    small = build(1.0, width, res)
    x = jnp.zeros((1, res, res, 3))
    shapes = jax.eval_shape(functools.partial(small.init, train=False), jax.random.key(0), x)
    sliced = pruning.slice_variables(big["variables"], shapes)
    channel_macs = ej.count_flops(small, sliced, (1, res, res, 3))
    _, channel_acc = finetune(small, sliced, config_kw, ft_steps)

    # Magnitude pruning: the sparsity whose nominal sparse MACs equal the scaled arm's.
    sparsity = min(max(1.0 - target / big["macs"], 0.0), 0.95)
    masks = pruning.magnitude_masks(big["variables"]["params"], sparsity)
    pruned = dict(big["variables"], params=pruning.apply_masks(big["variables"]["params"], masks))
    _, magnitude_acc = finetune(big["model"], pruned, config_kw, ft_steps, masks=masks)

    rows = [
        dict(arm="base", width=1.0, depth=1.0, resolution=res, macs=base_macs, effective_macs=base_macs,
             sparsity=0.0, accuracy=math.nan, note="reference cost only"),
        dict(arm="scaled (compound phi=1)", width=w, depth=d, resolution=r, macs=target, effective_macs=target,
             sparsity=0.0, accuracy=scaled["accuracy"], note=f"{steps} steps from scratch"),
        dict(arm=f"big (width x{args.big_width})", width=args.big_width, depth=1.0, resolution=res,
             macs=big["macs"], effective_macs=big["macs"], sparsity=0.0, accuracy=big["accuracy"],
             note=f"{steps} steps from scratch"),
        dict(arm="big, channel-pruned", width=width, depth=1.0, resolution=res, macs=channel_macs,
             effective_macs=channel_macs, sparsity=0.0, accuracy=channel_acc,
             note=f"+{ft_steps} fine-tune steps"),
        dict(arm="big, magnitude-pruned", width=args.big_width, depth=1.0, resolution=res, macs=big["macs"],
             effective_macs=pruning.sparse_macs(big["macs"], pruned["params"], masks),
             sparsity=pruning.sparsity_of(pruned["params"]), accuracy=magnitude_acc,
             note=f"+{ft_steps} fine-tune steps; dense XLA still runs all MACs"),
    ]
    common.write_csv(out / "results.csv", rows)
    plot(rows, out / "accuracy_vs_macs.png")
    text = [
        "## Scaling a small model up vs pruning a large one down (matched measured MACs)",
        "",
        common.provenance(argv),
        common.markdown_table(rows, ["arm", "width", "depth", "resolution", "macs", "effective_macs", "sparsity",
                                     "accuracy", "note"]),
        "",
        "`macs` is what `count_flops` measures on the dense model XLA runs; `effective_macs` for the "
        "magnitude-pruned arm is dense MACs × kept fraction, a saving only a sparse kernel would realise. "
        "The pruned arms also received the big model's training plus fine-tuning, i.e. more total compute "
        "than the scaled arm. One seed, tiny proxy task: read differences below ~5 points as noise.",
        "",
        "![accuracy vs MACs](accuracy_vs_macs.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    print(f"wrote {out}")


def plot(rows, path) -> None:
    plt = common.pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, r in enumerate(rows):
        if not common.isfinite(r["accuracy"]):
            continue
        ax.scatter(r["effective_macs"] / 1e6, r["accuracy"], color=f"C{i}", label=r["arm"])
        if r["effective_macs"] != r["macs"]:
            ax.annotate("", (r["macs"] / 1e6, r["accuracy"]), (r["effective_macs"] / 1e6, r["accuracy"]),
                        arrowprops=dict(arrowstyle="->", color=f"C{i}", ls="--"))
    ax.set_xlabel("MACs (M) per image (arrow: dense MACs actually executed)")
    ax.set_ylabel("test accuracy (proxy)")
    ax.legend(fontsize=7)
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
