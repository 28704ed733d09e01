"""Compound scaling vs depth-only / width-only / resolution-only at matched measured MACs (paper Fig. 3/8 style).

    python -m experiments.compound_vs_single                          # EfficientNet proxy base, 2x (and --factors 2 4)
    python -m experiments.compound_vs_single --family mobilenet_v2    # per-dimension study of another family
    python -m experiments.compound_vs_single --family resnet18 --smoke

For each FLOPs factor s, ``single_dimension_baselines`` finds by bisection on measured MACs the depth,
width and resolution multipliers that reach s x the base, and the compound model is
``compound_scaling(phi=log2 s)`` with the paper's (1.2, 1.1, 1.15) (families: the same rule, each
dimension with its own multiplier). Every model is trained and evaluated through the training
program on the proxy task. Writes results.csv, accuracy_vs_macs.png and report.md.
"""
from __future__ import annotations

import argparse
import math
import sys

from experiments import common


def main(argv=None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, steps=100, name="compound_vs_single")
    parser.add_argument("--family", default="efficientnet", choices=["efficientnet", "mobilenet_v2", "resnet18"])
    parser.add_argument("--factors", type=float, nargs="+", default=[2.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv[1:])
    common.quiet()
    name = "compound_vs_single" if args.family == "efficientnet" else f"per_dimension_{args.family}"
    out = common.out_dir(args, name)
    from efficientnet_jax.scaling import compound_scaling
    from efficientnet_jax.search import single_dimension_baselines

    steps = 2 if args.smoke else args.steps
    factors = args.factors[:1] if args.smoke else args.factors
    build = common.builder(args.family)
    base_macs = common.measure(build(1.0, 1.0, common.BASE_RESOLUTION), common.BASE_RESOLUTION)[0]
    train = dict(family=args.family, dataset=args.dataset, data_dir=args.data_dir, steps=steps,
                 batch_size=args.batch_size, seed=args.seed)

    plan = [("base", 1.0, 1.0, 1.0, common.BASE_RESOLUTION)]
    for s in factors:
        # Depth alone needs more than s times the repeats: the stem and head do not grow with it.
        for c in single_dimension_baselines(build, s, base_resolution=common.BASE_RESOLUTION,
                                            max_multiplier=2.0 * s):
            plan.append((c.kind, s, c.depth, c.width, c.resolution))
        d, w, r = compound_scaling(math.log2(s), base_resolution=common.BASE_RESOLUTION)
        plan.append(("compound", s, d, w, r))
    if args.smoke:
        plan = plan[:2]
    rows = []
    for kind, s, d, w, r in plan:
        res = common.train_proxy(depth=d, width=w, resolution=r, **train)
        rows.append(dict(kind=kind, target=s, depth=round(d, 4), width=round(w, 4), resolution=r,
                         params=res["params"], macs=res["macs"], flops_ratio=res["macs"] / base_macs,
                         accuracy=res["accuracy"], seconds=res["seconds"]))
        print(f"{kind} {s}x: d={d:.3f} w={w:.3f} r={r}: {res['macs']:,} MACs ({res['macs'] / base_macs:.2f}x), "
              f"acc {res['accuracy']:.4f} ({res['seconds']} s)", flush=True)
    common.write_csv(out / "results.csv", rows)
    plot(rows, out / "accuracy_vs_macs.png", args.family)
    fields = ["kind", "target", "depth", "width", "resolution", "params", "macs", "flops_ratio", "accuracy",
              "seconds"]
    text = [
        f"## {'Compound vs single-dimension scaling' if args.family == 'efficientnet' else 'Per-dimension scaling'}"
        f" ({args.family})",
        "",
        common.provenance(argv),
        f"Base: the proxy {args.family} (width ×{common.BASE_WIDTH} of the family's own base, "
        f"{common.BASE_RESOLUTION} px); {steps} training steps per model through `train.train_and_evaluate`, "
        f"seed {args.seed}. Single-dimension multipliers found by bisection on measured MACs; compound = "
        "(1.2, 1.1, 1.15)^φ with φ = log2(target).",
        "",
        common.markdown_table(rows, fields),
        "",
        f"Caveats: one seed, {steps * args.batch_size / 1437:.1f} epochs of a tiny task (8x8 digits upsampled), "
        "so accuracy measures how fast a model learns, not its capacity; at low resolution a few pixels move "
        "the last feature maps by whole pixels, and repeats and channels round, so measured MACs (the "
        "flops_ratio column), not the rule, are the cost. Read differences below ~5 points as noise.",
        "",
        "![accuracy vs MACs](accuracy_vs_macs.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    print(f"wrote {out}")


def plot(rows, path, family) -> None:
    plt = common.pyplot()

    base = [r for r in rows if r["kind"] == "base"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, kind in enumerate(["depth", "width", "resolution", "compound"]):
        pts = base + sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["macs"])
        if len(pts) < 2:
            continue
        ax.plot([p["macs"] / 1e6 for p in pts], [p["accuracy"] for p in pts], "o-", color=f"C{i}",
                label=f"{kind}-only" if kind != "compound" else "compound")
    ax.set_xlabel("measured MACs (M) per image")
    ax.set_ylabel("test accuracy (proxy)")
    ax.set_title(f"Scaling {family} (proxy task)")
    ax.legend(fontsize=8)
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
