"""FLOPs and params of the family against the compound-scaling promise (MACs ratio vs 2**phi), and of
EfficientNetV2 against its paper (Tables 7-8).

Prints a Markdown table and, last, one JSON object. Counts come from the jaxpr
(``count_flops``) on abstract variables, so this runs in seconds on a laptop.

    python benchmarks/flops_table.py [--json]
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

import efficientnet_jax as ej

PAPER_MACS = {0: 0.39, 1: 0.70, 2: 1.0, 3: 1.8, 4: 4.2, 5: 9.9, 6: 19, 7: 37}
V2_PAPER_MACS = {"b0": 0.72, "b1": 1.2, "b2": 1.7, "b3": 3.0, "s": 8.4, "m": 24.7, "l": 56.3, "xl": None}


def measure(model, resolution):
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)), train=False)
    )
    return ej.count_params(variables["params"]), ej.count_flops(model, variables, (1, resolution, resolution, 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    rows = []
    base_macs = None
    for phi in range(8):
        name = f"efficientnet_b{phi}"
        params, macs = measure(ej.create_model(name), ej.model_info(name).resolution)
        d, w, r = ej.compound_scaling(phi)
        _, rule_macs = measure(ej.create_model("efficientnet_b0", depth=d, width=w, resolution=r), r)
        base_macs = base_macs or macs
        rows.append(dict(
            phi=phi, model=name, params=params, macs=macs, paper_macs=PAPER_MACS[phi] * 1e9,
            ratio_to_b0=macs / base_macs, two_pow_phi=2.0**phi,
            rule=dict(depth=round(d, 3), width=round(w, 3), resolution=r, macs=rule_macs,
                      ratio_to_b0=rule_macs / base_macs),
        ))
    v2_rows = []
    for variant, paper in V2_PAPER_MACS.items():
        name = f"efficientnetv2_{variant}"
        resolution = ej.model_info(name).resolution
        params, macs = measure(ej.create_model(name), resolution)
        v2_rows.append(dict(model=name, resolution=resolution, params=params, macs=macs,
                            paper_macs=paper and paper * 1e9))
    if not args.json:
        print("| phi | model | params | MACs (ours) | MACs (paper) | B(phi)/B0 | 2^phi | exact rule: d, w, r | rule MACs/B0 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            rule = row["rule"]
            print(f"| {row['phi']} | {row['model']} | {row['params']:,} | {row['macs'] / 1e9:.3f}B | "
                  f"{row['paper_macs'] / 1e9:.2f}B | {row['ratio_to_b0']:.2f} | {row['two_pow_phi']:.0f} | "
                  f"{rule['depth']:.2f}, {rule['width']:.2f}, {rule['resolution']} | {rule['ratio_to_b0']:.2f} |")
        print("\n| model | resolution | params | MACs (ours) | MACs (paper) |\n|---|---|---|---|---|")
        for row in v2_rows:
            paper = f"{row['paper_macs'] / 1e9:.1f}B" if row["paper_macs"] else ""
            print(f"| {row['model']} | {row['resolution']} | {row['params']:,} | {row['macs'] / 1e9:.3f}B | {paper} |")
    print(json.dumps({"rows": rows, "v2_rows": v2_rows, "jax": jax.__version__}))


if __name__ == "__main__":
    main()
