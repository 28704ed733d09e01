"""Layer-by-layer linear CKA: B0 (proxy) vs a compound-scaled model, and B0 seed 0 vs seed 1 as the baseline.

    python -m experiments.cka_study            # 3 short training runs + feature extraction on the test images
    python -m experiments.cka_study --smoke

Both models see the same test images (each at its own resolution); per-stage features are
spatially averaged (``pool=True``) before CKA, so maps of different sizes compare. Writes
cka_<pair>.csv, cka_heatmaps.png and report.md.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from experiments import common


def test_images(config_kw: dict, resolution: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The eval split at ``resolution``, normalized exactly as the training program evaluates it."""
    from train import input_pipeline
    from train.train import resolve_config

    config = resolve_config(common.proxy_config(image_size=resolution, **config_kw))
    images, labels = [], []
    for batch in input_pipeline.eval_iterator(config, local_batch_size=64):
        keep = np.asarray(batch.get("mask", np.ones(len(batch["label"]), bool))).astype(bool)
        images.append(np.asarray(batch["image"])[keep])
        labels.append(np.asarray(batch["label"])[keep])
        if sum(map(len, images)) >= limit:
            break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def main(argv=None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, steps=100, name="cka_study")
    parser.add_argument("--examples", type=int, default=320)
    args = parser.parse_args(argv[1:])
    common.quiet()
    out = common.out_dir(args, "cka_study")
    from efficientnet_jax.scaling import compound_scaling
    from efficientnet_jax.similarity import compare_models

    steps = 2 if args.smoke else args.steps
    d, w, r = compound_scaling(1.0, base_resolution=common.BASE_RESOLUTION)
    train = dict(dataset=args.dataset, data_dir=args.data_dir, steps=steps, batch_size=args.batch_size,
                 return_variables=True)
    runs = {
        "b0_seed0": common.train_proxy(seed=0, **train),
        "b0_seed1": common.train_proxy(seed=1, **train),
        "scaled_phi1": common.train_proxy(seed=0, depth=d, width=w, resolution=r, **train),
    }
    data_kw = dict(dataset=args.dataset, data_dir=args.data_dir)
    n = 64 if args.smoke else args.examples
    x_base, _ = test_images(data_kw, common.BASE_RESOLUTION, n)
    x_scaled, _ = test_images(data_kw, r, n)
    pairs = {
        "b0_seed0_vs_b0_seed1": ("b0_seed0", "b0_seed1", x_base),
        "b0_seed0_vs_scaled_phi1": ("b0_seed0", "scaled_phi1", x_scaled),
    }
    results = {}
    for pair, (a, b, xb) in pairs.items():
        matrix, la, lb = compare_models(runs[a]["model"], runs[a]["variables"], runs[b]["model"],
                                        runs[b]["variables"], x_base, images_b=xb, pool=True)
        results[pair] = (matrix, la, lb)
        with open(out / f"cka_{pair}.csv", "w") as f:
            f.write("layer," + ",".join(lb) + "\n")
            for name, row in zip(la, matrix):
                f.write(name + "," + ",".join(f"{v:.4f}" for v in row) + "\n")
    plot(results, out / "cka_heatmaps.png")
    summary = [dict(model=k, depth=v["depth"], width=v["width"], resolution=v["resolution"], seed=v["seed"],
                    params=v["params"], macs=v["macs"], accuracy=v["accuracy"]) for k, v in runs.items()]
    common.write_csv(out / "models.csv", summary)
    diag = {pair: float(np.mean(np.diag(m))) for pair, (m, la, lb) in results.items() if len(la) == len(lb)}
    text = [
        "## CKA: B0 vs a compound-scaled model, and two seeds of B0",
        "",
        common.provenance(argv),
        f"Models trained {steps} steps on the proxy task; linear CKA of spatially averaged per-stage features "
        f"on {n} test images (same examples; each model at its own resolution).",
        "",
        common.markdown_table(summary, ["model", "depth", "width", "resolution", "seed", "params", "macs",
                                        "accuracy"]),
        "",
        "Mean CKA of corresponding layers (diagonal): "
        + ", ".join(f"{k}: {v:.3f}" for k, v in diag.items()),
        "",
        "Caveats: briefly trained models on a tiny task; pooled features (not full maps); one pair of seeds. "
        "The seed-vs-seed matrix is the yardstick: scaled-vs-base similarity is only meaningful relative to it.",
        "",
        "![CKA heatmaps](cka_heatmaps.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    print(f"wrote {out}: {diag}")


def plot(results, path) -> None:
    plt = common.pyplot()

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.4))
    for ax, (pair, (m, la, lb)) in zip(np.atleast_1d(axes), results.items()):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="magma", origin="lower")
        ax.set_xticks(range(len(lb)), lb, rotation=90, fontsize=7)
        ax.set_yticks(range(len(la)), la, fontsize=7)
        a, b = pair.split("_vs_")
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        ax.set_title(pair.replace("_", " "), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
