"""Compound scaling: the rounding rules and coefficients that turn one base spec into a family.

Every variant (B0-B8, L2, Lite0-4, or a user's own phi) is decoded through these
functions and nowhere else, so the rounding is identical to the TF reference,
Keras applications and timm. Pure arithmetic that imports nothing from the package,
so ``specs`` can depend on it; the search that measures built models is ``search.py``.
"""
from __future__ import annotations

import math

ALPHA = 1.2  # depth
BETA = 1.1  # width
GAMMA = 1.15  # resolution
BASE_RESOLUTION = 224


def round_filters(filters: int, width: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` but never below ``round_limit``
    of the scaled count.

    The 90% floor is EfficientNet's (the TF reference's guard against rounding a thin layer away);
    EfficientNetV2 has none (``round_limit=0``; with the floor V2-B3 would come out wrong).
    """
    if width == 1.0:
        return int(filters)
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < round_limit * scaled:
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


def fast_scaling(
    s: float, alpha: float = 0.8, base_resolution: int = BASE_RESOLUTION
) -> tuple[float, float, int]:
    """Dollár et al. 2021 "fast compound scaling" (dWr) to s× the FLOPs.

    d = s**((1-alpha)/2), w = s**(alpha/2), r = s**((1-alpha)/4), so d·w²·r² = s; alpha=1
    is width-only, alpha=1/3 uniform compound scaling, the paper's choice 0.8 scales mostly
    width (fewer activations, faster on memory-bound hardware). Returns
    ``(depth_mult, width_mult, resolution)`` with the resolution in pixels, like
    ``compound_scaling``.
    """
    if s <= 0:
        raise ValueError(f"the FLOPs factor s must be > 0, got {s}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return s ** ((1 - alpha) / 2), s ** (alpha / 2), int(round(base_resolution * s ** ((1 - alpha) / 4)))
