"""Compound scaling: the rounding rules and coefficients that turn one base spec into a family.

Every variant (B0-B8, L2, Lite0-4, or a user's own phi) is decoded through these
functions and nowhere else, so the rounding is identical to the TF reference,
Keras applications and timm.
"""
from __future__ import annotations

import math

ALPHA = 1.2  # depth
BETA = 1.1  # width
GAMMA = 1.15  # resolution
BASE_RESOLUTION = 224


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` but never below 90%.

    The 90% floor is the TF reference's guard against rounding a thin layer away.
    """
    if width == 1.0:
        return int(filters)
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks in a stage scaled by ``depth``; rounded up so no stage disappears."""
    return int(math.ceil(depth * repeats))


def compound_scaling(
    phi: float,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    base_resolution: int = BASE_RESOLUTION,
) -> tuple[float, float, int]:
    """Depth, width and resolution multipliers for compound coefficient ``phi``.

    d = alpha**phi, w = beta**phi, r = gamma**phi (Tan & Le 2019, eq. 3). With the
    paper's coefficients alpha * beta**2 * gamma**2 ~= 2, so FLOPs grow ~2**phi.
    Returns ``(depth_mult, width_mult, resolution)`` with the resolution in pixels.
    """
    for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value < 1.0:
            raise ValueError(f"{label} must be >= 1 (a scaling coefficient), got {value}")
    return alpha**phi, beta**phi, int(round(base_resolution * gamma**phi))


def flops_factor(alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> float:
    """How much FLOPs grow per unit of phi under the rule: alpha * beta**2 * gamma**2."""
    return alpha * beta**2 * gamma**2
