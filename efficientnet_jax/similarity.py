"""Representation similarity: CKA (linear, RBF, debiased, minibatch), mean squared CCA and SVCCA.

``x`` (n, ...) and ``y`` (n, ...) hold features of the same n examples; everything
after the first axis is flattened. All arithmetic is numpy float64 on centered
features: centering float32 features with large means loses every digit that
matters (DESIGN.md, Similarity). References: Kornblith et al. 2019 (CKA, the
Gram and feature-space forms), Song et al. 2012 (unbiased HSIC), Nguyen et al.
2021 (minibatch CKA), Raghu et al. 2017 (SVCCA).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.optional import extra, require


def _features(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"features must have shape (n, ...) with at least 2 axes, got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def _centered(x: Any) -> np.ndarray:
    x = _features(x)
    return x - x.mean(axis=0, keepdims=True)


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _centered(x), _centered(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same examples, got {x.shape[0]} and {y.shape[0]} rows")
    return x, y


# ---------------------------------------------------------------- Gram matrices and HSIC

GRAM_CHUNK = 1 << 16  # features converted to float64 at a time


def gram_linear(x: Any) -> np.ndarray:
    """K = Xc Xcᵀ of the centered features, accumulated over feature chunks.

    A stem feature map of 512 images is ~200M values; chunking keeps the float64
    copy to n × GRAM_CHUNK while the arithmetic stays float64 and exact.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"features must have shape (n, ...) with at least 2 axes, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    gram = np.zeros((x.shape[0], x.shape[0]))
    for start in range(0, x.shape[1], GRAM_CHUNK):
        chunk = x[:, start:start + GRAM_CHUNK].astype(np.float64)
        chunk -= chunk.mean(axis=0, keepdims=True)
        gram += chunk @ chunk.T
    return gram


def gram_rbf(x: Any, threshold: float = 0.5) -> np.ndarray:
    """exp(−d²/(2σ²)) with σ² = threshold² · median of all n² squared distances (diagonal included).

    The median rule of google-research/representation_similarity, so results compare.
    """
    x = _centered(x)
    sq_norms = np.einsum("ij,ij->i", x, x)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T), 0.0)
    median = np.median(sq_dist)
    if median == 0:
        raise ValueError("RBF bandwidth is zero: more than half of the pairwise distances are 0")
    return np.exp(-sq_dist / (2.0 * threshold**2 * median))


def center_gram(gram: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """H K H, or with ``unbiased`` the U-centering whose inner products give n(n−3)·HSIC_unbiased.

    ⟨Ũ(K), Ũ(L)⟩ / (n(n−3)) equals Song et al.'s unbiased HSIC estimator exactly.
    """
    gram = np.array(gram, dtype=np.float64, copy=True)
    n = gram.shape[0]
    if unbiased:
        if n < 4:
            raise ValueError(f"the unbiased HSIC estimator needs at least 4 examples, got {n}")
        np.fill_diagonal(gram, 0.0)
        means = gram.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None] + means[None, :]
        np.fill_diagonal(gram, 0.0)
    else:
        means = gram.mean(axis=0)
        means -= means.mean() / 2
        gram -= means[:, None] + means[None, :]
    return gram


def hsic(gram_x: np.ndarray, gram_y: np.ndarray, unbiased: bool = False) -> float:
    """HSIC: tr(K H L H)/(n−1)² (biased) or the U-statistic of Song et al. 2012 (unbiased)."""
    n = gram_x.shape[0]
    kx, ky = center_gram(gram_x, unbiased), center_gram(gram_y, unbiased)
    scale = n * (n - 3) if unbiased else (n - 1) ** 2
    return float(np.vdot(kx, ky) / scale)


def cka_from_grams(gram_x: np.ndarray, gram_y: np.ndarray, debiased: bool = False) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)) from (uncentered) Gram matrices."""
    kx, ky = center_gram(gram_x, debiased), center_gram(gram_y, debiased)
    return _cka_centered(kx, ky)


def _cka_centered(kx: np.ndarray, ky: np.ndarray) -> float:
    denom = np.linalg.norm(kx) * np.linalg.norm(ky)
    return float(np.vdot(kx, ky) / denom) if denom > 0 else 0.0


# ---------------------------------------------------------------- CKA

def linear_cka(x: Any, y: Any, debiased: bool = False) -> float:
    """Linear CKA = ‖Ycᵀ Xc‖²_F / (‖Xcᵀ Xc‖_F ‖Ycᵀ Yc‖_F); ``debiased`` uses unbiased HSIC.

    The feature-space form is used when both have fewer features than examples
    (cheaper), the Gram form otherwise; the two are equal.
    """
    x, y = _pair(x, y)
    if debiased:
        return cka_from_grams(x @ x.T, y @ y.T, debiased=True)
    n = x.shape[0]
    if x.shape[1] < n and y.shape[1] < n:
        cross = np.linalg.norm(y.T @ x) ** 2
        denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
        return float(cross / denom) if denom > 0 else 0.0
    return _cka_centered(x @ x.T, y @ y.T)  # centered features give centered Grams


def rbf_cka(x: Any, y: Any, threshold: float = 0.5, debiased: bool = False) -> float:
    """CKA with RBF kernels, bandwidth σ = threshold · median pairwise distance."""
    x, y = _pair(x, y)
    return cka_from_grams(gram_rbf(x, threshold), gram_rbf(y, threshold), debiased=debiased)


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen et al. 2021).

    CKA = Σ_b HSIC_u(K_b, L_b) / sqrt(Σ_b HSIC_u(K_b, K_b) · Σ_b HSIC_u(L_b, L_b)) with the
    unbiased HSIC of each batch, so memory is one batch and the estimate does not
    depend on the batch size. ``update`` takes one array per side, or a list of
    arrays per side (layers); ``result`` then is a float, or the layer-by-layer matrix.
    """

    def __init__(self) -> None:
        self._cross: np.ndarray | None = None
        self._self_x: np.ndarray | None = None
        self._self_y: np.ndarray | None = None
        self._scalar = True
        self.batches = 0

    def update(self, x: Any, y: Any) -> None:
        self._scalar = not isinstance(x, (list, tuple)) and not isinstance(y, (list, tuple))
        xs = x if isinstance(x, (list, tuple)) else [x]
        ys = y if isinstance(y, (list, tuple)) else [y]
        ux = [center_gram(gram_linear(a), unbiased=True) for a in xs]
        uy = [center_gram(gram_linear(b), unbiased=True) for b in ys]
        if len({u.shape[0] for u in ux + uy}) != 1:
            raise ValueError("every feature array of a batch must hold the same examples")
        cross = np.array([[np.vdot(a, b) for b in uy] for a in ux])
        self_x = np.array([np.vdot(a, a) for a in ux])
        self_y = np.array([np.vdot(b, b) for b in uy])
        n = ux[0].shape[0]
        cross, self_x, self_y = (v / (n * (n - 3)) for v in (cross, self_x, self_y))
        if self._cross is None:
            self._cross, self._self_x, self._self_y = cross, self_x, self_y
        elif self._cross.shape != cross.shape:
            raise ValueError(f"expected {self._cross.shape} layers per batch as before, got {cross.shape}")
        else:
            self._cross, self._self_x, self._self_y = self._cross + cross, self._self_x + self_x, self._self_y + self_y
        self.batches += 1

    def result(self) -> float | np.ndarray:
        if self._cross is None:
            raise ValueError("MinibatchCKA.result() before any update()")
        denom = np.sqrt(np.outer(self._self_x, self._self_y))
        matrix = np.divide(self._cross, denom, out=np.zeros_like(self._cross), where=denom > 0)
        return float(matrix[0, 0]) if self._scalar else matrix


# ---------------------------------------------------------------- CCA

def _orthonormal_basis(x: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of the column space of centered x (rank-revealing SVD, not plain QR)."""
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return u[:, :0]
    return u[:, s > rtol * s[0]]


def canonical_correlations(x: Any, y: Any) -> np.ndarray:
    """All canonical correlations of x and y, largest first (singular values of Qxᵀ Qy).

    Needs more examples than features for a meaningful answer; rank-deficient
    features are reduced to their column space first.
    """
    x, y = _pair(x, y)
    qx, qy = _orthonormal_basis(x), _orthonormal_basis(y)
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return np.clip(rho, 0.0, 1.0)


def cca(x: Any, y: Any) -> float:
    """Mean squared canonical correlation R²_CCA = ‖Qxᵀ Qy‖²_F / min(rank x, rank y)."""
    rho = canonical_correlations(x, y)
    return float(np.mean(rho**2)) if rho.size else 0.0


def _svd_reduce(x: np.ndarray, keep: float) -> np.ndarray:
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    explained = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(explained, keep - 1e-12) + 1)
    return u[:, :k] * s[:k]


def svcca(x: Any, y: Any, keep: float = 0.99, squared: bool = False) -> float:
    """SVCCA: keep the top singular directions explaining ``keep`` of the variance, then CCA.

    Returns the mean canonical correlation ρ̄ of Raghu et al. 2017 (``squared=True``: R²_CCA).
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    x, y = _pair(x, y)
    rho = canonical_correlations(_svd_reduce(x, keep), _svd_reduce(y, keep))
    return float(np.mean(rho**2 if squared else rho))


# ---------------------------------------------------------------- layer by layer

METRICS: dict[str, Callable[[Any, Any], float]] = {
    "linear_cka": linear_cka,
    "debiased_cka": lambda x, y: linear_cka(x, y, debiased=True),
    "rbf_cka": rbf_cka,
    "cca": cca,
    "svcca": svcca,
}


def _layers(features: Sequence[Any] | Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    if isinstance(features, Mapping):
        return [str(k) for k in features], list(features.values())
    features = list(features)
    return [str(i) for i in range(len(features))], features


def layerwise_similarity(
    features_a: Sequence[Any] | Mapping[str, Any],
    features_b: Sequence[Any] | Mapping[str, Any],
    metric: str | Callable[[Any, Any], float] = "linear_cka",
) -> np.ndarray:
    """Matrix M[i, j] = metric(layer i of a, layer j of b) for lists or dicts of (n, ...) features.

    CKA metrics build each layer's centered Gram matrix once (n×n, so large feature maps
    cost n² memory, not n·features per pair).
    """
    _, xs = _layers(features_a)
    _, ys = _layers(features_b)
    if metric in ("linear_cka", "debiased_cka"):
        debiased = metric == "debiased_cka"
        kx = [center_gram(gram_linear(a), debiased) for a in xs]
        ky = [center_gram(gram_linear(b), debiased) for b in ys]
        return np.array([[_cka_centered(a, b) for b in ky] for a in kx])
    if metric == "rbf_cka":
        kx = [center_gram(gram_rbf(a)) for a in xs]
        ky = [center_gram(gram_rbf(b)) for b in ys]
        return np.array([[_cka_centered(a, b) for b in ky] for a in kx])
    fn = METRICS[metric] if isinstance(metric, str) else metric
    return np.array([[fn(a, b) for b in ys] for a in xs])


def extract_features(
    model: Any,
    variables: Any,
    images: Any,
    *,
    batch_size: int = 64,
    pool: bool = False,
) -> dict[str, np.ndarray]:
    """Per-stage activations {'stem', 'stage1', ..., 'head'} of ``images`` as numpy arrays.

    Uses ``model.apply(..., train=False, features_only=True)``, which EfficientNet and
    the families in ``efficientnet_jax.families`` support. ``pool=True`` averages
    each map over space (n, channels) instead of keeping (n, h, w, channels).
    """
    names: list[str] = []  # the model's layer order; jax returns dicts sorted by key

    def fn(v, x):
        feats = model.apply(v, x, train=False, features_only=True)
        names[:] = list(feats)
        return tuple(jnp.mean(f, axis=(1, 2)) if pool and f.ndim == 4 else f for f in feats.values())

    apply = jax.jit(fn)
    n = len(images)
    chunks: list[list[np.ndarray]] = []
    for start in range(0, n, batch_size):
        batch = np.asarray(images[start:start + batch_size])
        if n > batch_size and len(batch) < batch_size:  # pad the last batch: one compilation
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(batch), axis=0)])
        out = apply(variables, jnp.asarray(batch))
        chunks.append([np.asarray(f)[: min(batch_size, n - start)] for f in out])
    return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)}


def compare_models(
    model_a: Any,
    variables_a: Any,
    model_b: Any,
    variables_b: Any,
    images: Any,
    *,
    images_b: Any | None = None,
    metric: str | Callable[[Any, Any], float] = "linear_cka",
    batch_size: int = 64,
    pool: bool = False,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Layer-by-layer similarity of two models on the same examples: (matrix, labels_a, labels_b).

    ``images_b`` gives model b the same examples at its own resolution (default: ``images``).
    """
    fa = extract_features(model_a, variables_a, images, batch_size=batch_size, pool=pool)
    fb = extract_features(
        model_b, variables_b, images if images_b is None else images_b, batch_size=batch_size, pool=pool
    )
    return layerwise_similarity(fa, fb, metric), list(fa), list(fb)


def plot_similarity(
    matrix: Any,
    labels_a: Sequence[str],
    labels_b: Sequence[str],
    path: str,
    *,
    title: str | None = None,
    xlabel: str = "model b",
    ylabel: str = "model a",
    vmin: float = 0.0,
    vmax: float = 1.0,
    annotate: bool | None = None,
) -> None:
    """Save a heatmap of ``matrix`` (rows: labels_a, columns: labels_b) to ``path``.

    matplotlib is imported here, not at package import, and only its object API is
    used (no pyplot global state), so this is safe in scripts and threads. Cells are
    labelled with their values when ``annotate`` (default: matrices up to 12×12).
    """
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "plot_similarity", extra("lab")).FigureCanvasAgg
    Figure = require("matplotlib.figure", "plot_similarity", extra("lab")).Figure

    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(labels_a), len(labels_b)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(labels_a)}×{len(labels_b)} labels")
    fig = Figure(figsize=(1.0 + 0.5 * len(labels_b), 1.0 + 0.45 * len(labels_a)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap="magma", origin="lower", aspect="auto")
    ax.set_xticks(range(len(labels_b)), labels_b, rotation=60, ha="right")
    ax.set_yticks(range(len(labels_a)), labels_a)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if annotate if annotate is not None else max(matrix.shape) <= 12:
        middle = (vmin + vmax) / 2
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > middle else "white")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120)
