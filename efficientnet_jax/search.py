"""The method behind the family: search compound coefficients on measured MACs, and baselines.

``search_coefficients`` is the paper's grid search for alpha, beta, gamma at phi=1 under
alpha*beta**2*gamma**2 ~= 2, checked against MACs measured on the built model (rounding of
channels and repeats moves them); ``single_dimension_baselines`` scales depth, width or
resolution alone to matched measured MACs. Ready builders turn EfficientNet, MobileNetV2
and ResNet-18 into search bases. The rule itself (``compound_scaling``) is ``scaling.py``.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, Sequence

import jax

from efficientnet_jax import scaling
from efficientnet_jax.families import MobileNetV2, ResNet18
from efficientnet_jax.flops import count_flops, count_params
from efficientnet_jax.model import create_model
from efficientnet_jax.specs import model_info


@dataclasses.dataclass(frozen=True)
class Builder:
    """A base architecture to scale: ``make(depth, width, resolution) -> flax module``.

    ``depth`` and ``width`` multiply the base; ``resolution`` is the input size in pixels
    (the base's is ``base_resolution``). Any callable with that signature works in the
    search; this class only carries the base resolution along with it.
    """

    make: Callable[[float, float, int], Any]
    base_resolution: int
    name: str = "model"
    channels: int = 3

    def __call__(self, depth: float, width: float, resolution: int) -> Any:
        return self.make(depth, width, resolution)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One scaled model: its coefficients, what they build, its measured cost and its metric."""

    alpha: float  # depth coefficient (per unit phi)
    beta: float  # width coefficient
    gamma: float  # resolution coefficient
    depth: float  # multipliers actually built: alpha**phi ...
    width: float
    resolution: int  # pixels
    macs: int  # measured on the built model, batch 1
    params: int  # of the built model (depends on num_classes)
    flops_ratio: float  # measured MACs / base MACs
    formula_ratio: float  # (alpha * beta**2 * gamma**2) ** phi
    metric: float | None = None  # evaluate(candidate), higher is better
    kind: str = "compound"  # or "depth" / "width" / "resolution" for single-dimension baselines

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_GRID = tuple(round(1.0 + 0.05 * k, 2) for k in range(9))  # 1.00 ... 1.40


def measure_model(build: Callable[[float, float, int], Any], depth: float, width: float, resolution: int,
                  channels: int = 3) -> tuple[int, int]:
    """(multiply-adds of one image, parameters) of ``build(depth, width, resolution)``, on abstract variables."""
    model = build(depth, width, resolution)
    shape = (1, resolution, resolution, channels)
    init = functools.partial(model.init, train=False)
    variables = jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jax.numpy.float32))
    return count_flops(model, variables, shape), count_params(variables.get("params", variables))


def measure_macs(build: Callable[[float, float, int], Any], depth: float, width: float, resolution: int,
                 channels: int = 3) -> int:
    """Multiply-adds of one image through ``build(depth, width, resolution)`` (``count_flops``)."""
    return measure_model(build, depth, width, resolution, channels)[0]


def _base_resolution(build, base_resolution: int | None) -> int:
    resolution = base_resolution if base_resolution is not None else getattr(build, "base_resolution", None)
    if resolution is None:
        raise ValueError("pass base_resolution= (or a Builder, which carries it)")
    return int(resolution)


def _grid_axes(grid) -> tuple[Sequence[float], Sequence[float], Sequence[float]]:
    if len(grid) == 3 and all(isinstance(g, (list, tuple)) for g in grid):
        return tuple(grid)  # (alphas, betas, gammas)
    return grid, grid, grid


def _rank(rows: list[Candidate], target: float) -> list[Candidate]:
    """Best metric first (missing or NaN last), then closest measured ratio to the target."""
    def key(c: Candidate):
        unscored = c.metric is None or math.isnan(c.metric)
        return unscored, 0.0 if unscored else -c.metric, abs(c.flops_ratio - target)

    return sorted(rows, key=key)


def search_coefficients(
    build: Callable[[float, float, int], Any],
    *,
    phi: float = 1.0,
    flops_factor: float = 2.0,
    tolerance: float = 0.1,
    grid: Sequence[float] | tuple[Sequence[float], Sequence[float], Sequence[float]] = DEFAULT_GRID,
    base_resolution: int | None = None,
    evaluate: Callable[[Candidate], float] | None = None,
    formula_tolerance: float | None = None,
    dedupe: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """Grid search for compound coefficients (Tan & Le 2019, step 1), ranked best first.

    Every (alpha, beta, gamma) of ``grid`` (one value list for all three, or three lists)
    whose rule factor (alpha*beta**2*gamma**2)**phi is within ``formula_tolerance``
    (relative; default ``tolerance``) of ``flops_factor**phi`` is built as depth
    alpha**phi, width beta**phi, resolution round(base * gamma**phi) and its MACs are
    measured; those whose measured ratio to the base is within ``tolerance`` are
    kept (rounding of channels and repeats moves real FLOPs away from the rule) and,
    if given, ``evaluate(candidate)`` scores them (e.g. validation accuracy from a
    training run; higher is better). Rounding often makes different coefficients
    build the same model (ceil of repeats); with ``dedupe`` those with equal resolution,
    MACs and parameters are evaluated once and share the metric. Ranking: by metric,
    else by closeness to the target.
    """
    base_res = _base_resolution(build, base_resolution)
    channels = getattr(build, "channels", 3)
    target = flops_factor**phi
    formula_tolerance = tolerance if formula_tolerance is None else formula_tolerance
    base_macs = measure_macs(build, 1.0, 1.0, base_res, channels)
    rows = []
    for alpha, beta, gamma in itertools.product(*_grid_axes(grid)):
        formula = scaling.flops_factor(alpha, beta, gamma) ** phi
        if abs(formula / target - 1) > formula_tolerance:
            continue
        depth, width, resolution = scaling.compound_scaling(phi, alpha, beta, gamma, base_res)
        macs, params = measure_model(build, depth, width, resolution, channels)
        ratio = macs / base_macs
        if log:
            log(f"alpha={alpha} beta={beta} gamma={gamma}: rule {formula:.3f}x, measured {ratio:.3f}x")
        if abs(ratio / target - 1) > tolerance:
            continue
        rows.append(Candidate(
            alpha=alpha, beta=beta, gamma=gamma, depth=depth, width=width, resolution=resolution,
            macs=macs, params=params, flops_ratio=ratio, formula_ratio=formula,
        ))
    if evaluate is not None:
        seen: dict[tuple[int, int, int], float] = {}  # (resolution, macs, params) -> metric
        scored = []
        for c in rows:
            key = (c.resolution, c.macs, c.params)
            if key not in seen or not dedupe:
                seen[key] = float(evaluate(c))
            scored.append(dataclasses.replace(c, metric=seen[key]))
        rows = scored
    return _rank(rows, target)


def bisect_multiplier(ratio_of: Callable[[Any], float], lo, hi, target: float, integer: bool, iterations: int):
    """Closest point to ``target`` of a non-decreasing step function, bracketed by lo < target <= hi."""
    if ratio_of(hi) < target:
        raise ValueError(f"even the largest multiplier tried reaches only {ratio_of(hi):.3f}x < {target:.3f}x")
    for _ in range(iterations):
        if integer and hi - lo <= 1:
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        if ratio_of(mid) >= target:
            hi = mid
        else:
            lo = mid
    return min((lo, hi), key=lambda m: abs(ratio_of(m) - target))


def _tidy(m: float, macs_of: Callable[[float], int]) -> float:
    """The roundest multiplier that builds the same model as ``m`` (bisection ends at 1.50006, not 2.0)."""
    for digits in range(5):
        scale = 10**digits
        for candidate in (round(m, digits), math.ceil(m * scale) / scale, math.floor(m * scale) / scale):
            if candidate > 0 and macs_of(candidate) == macs_of(m):
                return float(candidate)
    return m


def single_dimension_baselines(
    build: Callable[[float, float, int], Any],
    flops_factor: float = 2.0,
    *,
    base_resolution: int | None = None,
    evaluate: Callable[[Candidate], float] | None = None,
    max_multiplier: float = 4.0,
    iterations: int = 12,
) -> list[Candidate]:
    """Depth-only, width-only and resolution-only models at ``flops_factor`` times the measured base MACs.

    Each multiplier is found by bisection on measured MACs (a step function of it,
    because channels and repeats are rounded), and the achievable value closest to
    the target is returned, as the roundest multiplier that builds that same model;
    its ``flops_ratio`` says how close to the target that is. Candidates
    carry the multiplier as alpha/beta/gamma (phi = 1) and ``kind`` names the dimension.
    """
    if flops_factor <= 1:
        raise ValueError(f"flops_factor must be > 1 (scaling up), got {flops_factor}")
    base_res = _base_resolution(build, base_resolution)
    channels = getattr(build, "channels", 3)

    @functools.lru_cache(maxsize=None)
    def measured(depth: float, width: float, resolution: int) -> tuple[int, int]:
        return measure_model(build, depth, width, resolution, channels)

    def macs(depth: float, width: float, resolution: int) -> int:
        return measured(depth, width, resolution)[0]

    base = macs(1.0, 1.0, base_res)
    depth = bisect_multiplier(lambda m: macs(m, 1.0, base_res) / base, 1.0, max_multiplier, flops_factor,
                              False, iterations)
    depth = _tidy(depth, lambda m: macs(m, 1.0, base_res))
    width = bisect_multiplier(lambda m: macs(1.0, m, base_res) / base, 1.0, max_multiplier, flops_factor,
                              False, iterations)
    width = _tidy(width, lambda m: macs(1.0, m, base_res))
    hi_res = int(math.ceil(base_res * max_multiplier))
    resolution = bisect_multiplier(lambda r: macs(1.0, 1.0, r) / base, base_res, hi_res, flops_factor, True, 64)
    rows = []
    for kind, (d, w, r) in (("depth", (depth, 1.0, base_res)), ("width", (1.0, width, base_res)),
                            ("resolution", (1.0, 1.0, resolution))):
        gamma = r / base_res
        m, params = measured(d, w, r)
        rows.append(Candidate(
            alpha=d, beta=w, gamma=gamma, depth=d, width=w, resolution=r, macs=m, params=params,
            flops_ratio=m / base, formula_ratio=scaling.flops_factor(d, w, gamma), kind=kind,
        ))
    if evaluate is not None:
        rows = [dataclasses.replace(c, metric=float(evaluate(c))) for c in rows]
    return rows


def candidates_table(rows: Sequence[Candidate]) -> str:
    """A Markdown table of candidates (for reports)."""
    lines = [
        "| kind | alpha | beta | gamma | depth | width | resolution | params | MACs | measured ratio | rule ratio | metric |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        metric = "" if c.metric is None else f"{c.metric:.4g}"
        lines.append(
            f"| {c.kind} | {c.alpha:.3f} | {c.beta:.3f} | {c.gamma:.3f} | {c.depth:.3f} | {c.width:.3f} | "
            f"{c.resolution} | {c.params:,} | {c.macs:,} | {c.flops_ratio:.3f} | {c.formula_ratio:.3f} | {metric} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- ready builders


def efficientnet_builder(base: str = "efficientnet_b0", *, num_classes: int = 1000, **overrides: Any) -> Builder:
    """Scale a named EfficientNet: ``build(d, w, r)`` is ``create_model(base)`` with depth·d, width·w at r pixels.

    ``overrides`` go to ``create_model`` (``dropout``, ``dtype``, ``depthwise_impl`` ...).
    """
    spec = model_info(base)

    def make(depth: float, width: float, resolution: int):
        return create_model(
            base, num_classes=num_classes, depth=spec.depth * depth, width=spec.width * width,
            resolution=int(resolution), **overrides,
        )

    return Builder(make, spec.resolution, base)


def mobilenet_v2_builder(*, num_classes: int = 1000, base_resolution: int = 224, **fields: Any) -> Builder:
    """MobileNetV2 (``efficientnet_jax.families``) as a search base; ``fields`` set module fields."""
    return Builder(
        lambda d, w, r: MobileNetV2(num_classes=num_classes, depth=d, width=w, **fields),
        base_resolution, "mobilenet_v2",
    )


def resnet18_builder(*, num_classes: int = 1000, base_resolution: int = 224, **fields: Any) -> Builder:
    """ResNet-18 (``efficientnet_jax.families``) as a search base; ``fields`` set module fields."""
    return Builder(
        lambda d, w, r: ResNet18(num_classes=num_classes, depth=d, width=w, **fields),
        base_resolution, "resnet18",
    )
