"""Grid search for the compound coefficients (alpha, beta, gamma) at phi=1 on the proxy task.

    python -m experiments.grid_search                 # ~5 short training runs on sklearn_digits (CPU)
    python -m experiments.grid_search --smoke         # 2 steps, 2 candidates: checks the script
    python -m experiments.grid_search --dataset imagenet2012 --data_dir ~/tfds --steps 20000 --batch_size 256

``efficientnet_jax.search.search_coefficients`` enumerates (alpha, beta, gamma) of the grid with
alpha*beta^2*gamma^2 within 10% of 2, builds each, keeps those whose *measured* MACs are within
``--tolerance`` of 2x the base, and trains + evaluates the ``--max_candidates`` closest to 2x through
the training program (the others are listed unscored). Writes candidates.csv, accuracy_vs_macs.png
and report.md.
"""
from __future__ import annotations

import argparse
import math
import sys

from experiments import common


def main(argv=None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, steps=100, name="grid_search")
    parser.add_argument("--max_candidates", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=0.2, help="relative, on measured MACs vs 2x")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv[1:])
    common.quiet()
    out = common.out_dir(args, "grid_search")
    from efficientnet_jax.search import search_coefficients

    steps = 2 if args.smoke else args.steps
    k = 2 if args.smoke else args.max_candidates
    grid = ((1.0, 1.2, 1.4, 1.6, 1.8, 2.0), (1.0, 1.1, 1.2, 1.3, 1.4), (1.0, 1.1, 1.15, 1.2, 1.3, 1.4))
    if args.smoke:
        grid = ((1.4,), (1.0,), (1.15, 1.2))
    build = common.builder("efficientnet")
    train = dict(dataset=args.dataset, data_dir=args.data_dir, steps=steps, batch_size=args.batch_size,
                 seed=args.seed)
    found = search_coefficients(build, grid=grid, tolerance=args.tolerance, formula_tolerance=0.1)
    chosen = {(c.alpha, c.beta, c.gamma) for c in sorted(found, key=lambda c: abs(c.flops_ratio - 2.0))[:k]}
    runs = {}

    def evaluate(c):
        if (c.alpha, c.beta, c.gamma) not in chosen:
            return math.nan
        r = common.train_proxy(depth=c.depth, width=c.width, resolution=c.resolution, **train)
        runs[(c.alpha, c.beta, c.gamma)] = r
        print(f"alpha={c.alpha} beta={c.beta} gamma={c.gamma}: {r['macs']:,} MACs, acc {r['accuracy']:.4f} "
              f"({r['seconds']} s)", flush=True)
        return r["accuracy"]

    base = common.train_proxy(**train)
    print(f"base: {base['macs']:,} MACs, acc {base['accuracy']:.4f} ({base['seconds']} s)", flush=True)
    ranked = search_coefficients(build, grid=grid, tolerance=args.tolerance, formula_tolerance=0.1,
                                 evaluate=evaluate)
    rows = [dict(kind="base", alpha=1.0, beta=1.0, gamma=1.0, depth=1.0, width=1.0, resolution=base["resolution"],
                 params=base["params"], macs=base["macs"], flops_ratio=1.0, formula_ratio=1.0,
                 accuracy=base["accuracy"], seconds=base["seconds"])]
    for c in ranked:
        r = runs.get((c.alpha, c.beta, c.gamma), {})
        rows.append(dict(kind=c.kind, alpha=c.alpha, beta=c.beta, gamma=c.gamma, depth=c.depth, width=c.width,
                         resolution=c.resolution, params=c.params, macs=c.macs, flops_ratio=c.flops_ratio,
                         formula_ratio=c.formula_ratio, accuracy=c.metric, seconds=r.get("seconds", "")))
    common.write_csv(out / "candidates.csv", rows)
    plot(rows, out / "accuracy_vs_macs.png")
    write_report(rows, out, argv, steps)
    print(f"wrote {out}")


def plot(rows, path) -> None:
    plt = common.pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in rows:
        if not common.isfinite(r["accuracy"]):
            continue
        ax.scatter(r["macs"] / 1e6, r["accuracy"], color="k" if r["kind"] == "base" else "C0")
        label = "base" if r["kind"] == "base" else f"α={r['alpha']} β={r['beta']} γ={r['gamma']}"
        ax.annotate(label, (r["macs"] / 1e6, r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("measured MACs (M) per image")
    ax.set_ylabel("test accuracy (proxy)")
    ax.set_title("Compound-coefficient grid at φ=1 (proxy task)")
    common.save_figure(fig, path)


def write_report(rows, out, argv, steps) -> None:
    fields = ["kind", "alpha", "beta", "gamma", "depth", "width", "resolution", "params", "macs", "flops_ratio",
              "formula_ratio", "accuracy", "seconds"]
    scored = [r for r in rows[1:] if common.isfinite(r["accuracy"])]
    best = max(scored, key=lambda r: r["accuracy"]) if scored else None
    text = [
        "## Grid search for (α, β, γ) at φ = 1",
        "",
        common.provenance(argv),
        f"Base: B0's block table at width {common.BASE_WIDTH}, depth {common.BASE_DEPTH}, "
        f"{common.BASE_RESOLUTION} px; each model trained {steps} steps through `train.train_and_evaluate` "
        "(digits recipe, pad-crop + RandAugment(2, 9), batch 32, no EMA) and evaluated on the 360 test images. "
        "Candidates: α·β²·γ² within 10% of 2, measured MACs within the tolerance of 2× the base; the "
        "ones closest to 2× are trained, the rest listed without accuracy.",
        "",
        common.markdown_table(rows, fields),
        "",
        (f"Best on the proxy: α={best['alpha']}, β={best['beta']}, γ={best['gamma']} "
         f"(accuracy {best['accuracy']:.3f}, {best['flops_ratio']:.2f}× measured MACs)." if best else ""),
        "",
        "What this can and cannot say about ImageNet: the proxy is 1,437 8×8 digits upsampled to "
        f"{common.BASE_RESOLUTION} px and trained for {steps} steps of batch 32 "
        f"(≈{steps * 32 / 1437:.1f} epochs), so accuracy measures how fast a model learns an easy task, not "
        "its capacity; one seed each and 360 test images (±2.5% standard error at 80%) make differences of a "
        "few points noise. Measured MACs and the rule α·β²·γ² disagree at this size: after five stride-2 "
        "convolutions a few more pixels enlarge the last feature maps by a whole pixel each (64 px gives "
        "32/16/8/4/2, 74 px 37/19/10/5/3), repeats round up (depth ×1.2 and ×1.4 can build the same "
        "network) and channels round to multiples of 8; the paper's (1.2, 1.1, 1.15) costs ≈2.6× here, "
        "not 2×, which is why candidates are filtered on measured MACs. At 224 px the pixel rounding "
        "fades, but the repeats still round up: B0 → (1.2, 1.1, 1.15) measures 2.57× there too, so the "
        "rule understates the cost of depth at any resolution. The ranking found here is therefore not evidence for or against the paper's "
        "α=1.2, β=1.1, γ=1.15; run the same script with `--dataset imagenet2012` and a real budget on an "
        "accelerator for that.",
        "",
        "![accuracy vs MACs](accuracy_vs_macs.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
