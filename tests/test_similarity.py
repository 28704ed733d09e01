"""Similarity measures against independent computations, closed forms and their invariances."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efficientnet_jax import similarity as sim

SETTINGS = settings(max_examples=20, deadline=None)


def rng_of(seed):
    return np.random.default_rng(seed)


def correlated(seed, n=60, p1=8, p2=6, noise=1.0):
    """y is a noisy linear function of x: similarity strictly between 0 and 1."""
    rng = rng_of(seed)
    x = rng.normal(size=(n, p1))
    y = x @ rng.normal(size=(p1, p2)) + noise * rng.normal(size=(n, p2))
    return x, y


def orthogonal(seed, p):
    q, r = np.linalg.qr(rng_of(seed).normal(size=(p, p)))
    return q * np.sign(np.diag(r))


def centered_orthonormal(seed, n, k):
    """n×k matrix with centered, orthonormal columns."""
    a = rng_of(seed).normal(size=(n, k))
    return np.linalg.qr(a - a.mean(0))[0]


# Independent references, written out from the papers' formulas.

def feature_space_cka(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def song_unbiased_hsic(k, l):
    """Song et al. 2012, eq. 5: [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ l @ one)) / (n * (n - 3))


def song_debiased_cka(x, y):
    k, l = x @ x.T, y @ y.T
    return song_unbiased_hsic(k, l) / np.sqrt(song_unbiased_hsic(k, k) * song_unbiased_hsic(l, l))


def covariance_canonical_correlations(x, y):
    """sqrt of the eigenvalues of Σxx⁻¹ Σxy Σyy⁻¹ Σyx (Hotelling 1936)."""
    x, y = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    eig = np.sort(np.linalg.eigvals(m).real)[::-1][: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(eig, 0, 1))


# ---------------------------------------------------------------- CKA

@pytest.mark.parametrize("p", [5, 200])  # feature-space path (p < n) and Gram path (p > n)
def test_cka_of_x_with_itself_is_one(p):
    x = rng_of(0).normal(size=(40, p))
    assert sim.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert sim.linear_cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-12)
    assert sim.rbf_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert sim.cca(x[:, :5], x[:, :5]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("p1,p2", [(8, 6), (120, 90)])
def test_feature_space_and_gram_forms_agree(p1, p2):
    x, y = correlated(1, n=50, p1=p1, p2=p2)
    expected = feature_space_cka(x, y)
    assert sim.linear_cka(x, y) == pytest.approx(expected, rel=1e-12)
    # Gram form from the raw (uncentered) features: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).
    assert sim.cka_from_grams(x @ x.T, y @ y.T) == pytest.approx(expected, rel=1e-10)
    k, l = x @ x.T, y @ y.T
    assert sim.hsic(k, l) / np.sqrt(sim.hsic(k, k) * sim.hsic(l, l)) == pytest.approx(expected, rel=1e-10)


def test_gram_accumulated_over_feature_chunks(monkeypatch):
    x = rng_of(17).normal(size=(20, 3, 4, 5)).astype(np.float32) + 100.0
    flat = x.reshape(20, -1).astype(np.float64)
    centered = flat - flat.mean(0)
    direct = centered @ centered.T
    monkeypatch.setattr(sim, "GRAM_CHUNK", 7)
    np.testing.assert_allclose(sim.gram_linear(x), direct, rtol=1e-12, atol=1e-9)


def test_biased_hsic_is_trace_formula():
    x, y = correlated(2, n=30)
    n = 30
    h = np.eye(n) - 1 / n
    k, l = x @ x.T, y @ y.T
    assert sim.hsic(k, l) == pytest.approx(np.trace(k @ h @ l @ h) / (n - 1) ** 2, rel=1e-12)


def test_debiased_matches_song_estimator():
    x, y = correlated(3, n=25, p1=30, p2=7)
    assert sim.hsic(x @ x.T, y @ y.T, unbiased=True) == pytest.approx(song_unbiased_hsic(x @ x.T, y @ y.T), rel=1e-10)
    assert sim.linear_cka(x, y, debiased=True) == pytest.approx(song_debiased_cka(x, y), rel=1e-10)


@SETTINGS
@given(seed=st.integers(0, 2**31), p=st.integers(2, 12), scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100))
def test_cka_invariant_to_orthogonal_transform_scaling_and_shift(seed, p, scale, shift):
    x, y = correlated(seed, n=40, p1=p, p2=5)
    x2 = scale * x @ orthogonal(seed + 1, p) + shift
    for fn in (sim.linear_cka, sim.rbf_cka, lambda a, b: sim.linear_cka(a, b, debiased=True)):
        assert fn(x2, y) == pytest.approx(fn(x, y), rel=1e-8, abs=1e-10)


def test_cka_is_not_invariant_to_general_linear_maps():
    """The invariance test above is not vacuous: an anisotropic map changes CKA (and not CCA)."""
    x, y = correlated(4, n=80, p1=6, p2=6)
    a = np.diag([30.0, 30, 1, 1, 0.03, 0.03])
    assert abs(sim.linear_cka(x @ a, y) - sim.linear_cka(x, y)) > 0.05
    assert sim.cca(x @ a, y) == pytest.approx(sim.cca(x, y), rel=1e-10)


def test_closed_form_orthonormal_columns():
    """X with centered orthonormal columns vs its first k columns: CKA = sqrt(k/p), CCA = 1."""
    p, k = 9, 4
    x = centered_orthonormal(5, 50, p)
    assert sim.linear_cka(x, x[:, :k]) == pytest.approx(np.sqrt(k / p), rel=1e-12)
    assert sim.cca(x, x[:, :k]) == pytest.approx(1.0, rel=1e-12)
    # Scaled columns: CKA = Σ s²t² / (sqrt(Σ s⁴) sqrt(Σ t⁴)).
    s, t = np.arange(1.0, p + 1), np.linspace(2.0, 0.5, p)
    expected = np.sum(s**2 * t**2) / np.sqrt(np.sum(s**4) * np.sum(t**4))
    assert sim.linear_cka(x * s, x * t) == pytest.approx(expected, rel=1e-12)


def test_closed_form_canonical_angles():
    """Y = A cos θ + B sin θ with [A B] orthonormal: the canonical correlations are cos θ."""
    k = 4
    ab = centered_orthonormal(6, 100, 2 * k)
    a, b = ab[:, :k], ab[:, k:]
    theta = np.array([0.1, 0.5, 0.9, 1.3])
    y = a * np.cos(theta) + b * np.sin(theta)
    y = y @ rng_of(7).normal(size=(k, k))  # any invertible mix of y's columns keeps the angles
    np.testing.assert_allclose(sim.canonical_correlations(a, y), np.cos(theta), atol=1e-12)
    assert sim.cca(a, y) == pytest.approx(np.mean(np.cos(theta) ** 2), rel=1e-12)
    assert sim.svcca(a, y, keep=1.0) == pytest.approx(np.mean(np.cos(theta)), rel=1e-12)


def test_independent_features_debiased_near_zero():
    """With many features per example, biased CKA of independent noise is large; debiased is ~0."""
    rng = rng_of(8)
    x, y = rng.normal(size=(256, 2000)), rng.normal(size=(256, 2000))
    assert sim.linear_cka(x, y) > 0.8
    assert abs(sim.linear_cka(x, y, debiased=True)) < 0.02


@pytest.mark.parametrize("metric", ["linear", "debiased", "rbf", "cca", "svcca"])
def test_large_means_in_float32(metric):
    """Features around 1e4 given as float32: centering in float64 keeps the answer."""
    fn = {
        "linear": sim.linear_cka, "debiased": lambda a, b: sim.linear_cka(a, b, debiased=True),
        "rbf": sim.rbf_cka, "cca": sim.cca, "svcca": sim.svcca,
    }[metric]
    x, y = correlated(9, n=100, p1=6, p2=5)
    x32 = (x + 1e4).astype(np.float32)  # float32 keeps ~1e-3 absolute here: ~3e-4 of x's spread
    expected = fn(x32.astype(np.float64) - 1e4, y)
    assert fn(x32, y) == pytest.approx(expected, rel=1e-6)
    assert fn(x32, y) == pytest.approx(fn(x, y), abs=2e-3)


def test_naive_float32_gram_would_fail():
    """Why the module centers in float64: the uncentered float32 Gram form is wrong at 1e4."""
    x, y = correlated(9, n=100, p1=6, p2=5)
    x32 = (x + 1e4).astype(np.float32)
    k = x32 @ x32.T  # float32, entries ~6e8
    h = np.eye(100, dtype=np.float32) - np.float32(1 / 100)
    kc, lc = h @ k @ h, (h @ (y @ y.T) @ h).astype(np.float32)
    naive = np.vdot(kc, lc) / (np.linalg.norm(kc) * np.linalg.norm(lc))
    assert abs(naive - sim.linear_cka(x32, y)) > 0.05


# ---------------------------------------------------------------- minibatch CKA

def test_minibatch_single_batch_equals_debiased():
    x, y = correlated(10, n=80)
    mb = sim.MinibatchCKA()
    mb.update(x, y)
    assert mb.result() == pytest.approx(sim.linear_cka(x, y, debiased=True), rel=1e-12)


def test_minibatch_converges_to_full_cka():
    x, y = correlated(11, n=4096, p1=8, p2=6, noise=2.0)
    full = sim.linear_cka(x, y)
    errors = {}
    for batch in (32, 256, 4096):
        mb = sim.MinibatchCKA()
        for start in range(0, 4096, batch):
            mb.update(x[start:start + batch], y[start:start + batch])
        errors[batch] = abs(mb.result() - full)
    assert mb.batches == 1
    assert errors[4096] < 1e-3  # debiased vs biased on 4096 examples
    assert errors[256] < 0.01
    assert errors[256] < errors[32]


def test_minibatch_layer_matrix():
    x, y = correlated(12, n=64)
    z = y + rng_of(13).normal(size=y.shape)
    mb = sim.MinibatchCKA()
    for start in (0, 32):
        part = slice(start, start + 32)
        mb.update([x[part], y[part]], [y[part], z[part], x[part]])
    matrix = mb.result()
    assert matrix.shape == (2, 3)
    single = sim.MinibatchCKA()
    for start in (0, 32):
        single.update(y[start:start + 32], z[start:start + 32])
    assert matrix[1, 1] == pytest.approx(single.result(), rel=1e-12)
    assert matrix[0, 2] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(1.0)


# ---------------------------------------------------------------- CCA / SVCCA

@SETTINGS
@given(seed=st.integers(0, 2**31), p1=st.integers(1, 6), p2=st.integers(1, 6))
def test_cca_invariant_to_invertible_linear_maps(seed, p1, p2):
    x, y = correlated(seed, n=50, p1=p1, p2=p2)
    rng = rng_of(seed + 1)
    a = rng.normal(size=(p1, p1)) + 3 * np.eye(p1)
    b = rng.normal(size=(p2, p2)) + 3 * np.eye(p2)
    assert sim.cca(x @ a + 5.0, y @ b - 2.0) == pytest.approx(sim.cca(x, y), rel=1e-8)


def test_cca_matches_covariance_eigenproblem_and_sklearn():
    from sklearn.cross_decomposition import CCA

    x, y = correlated(14, n=500, p1=4, p2=3, noise=3.0)
    rho = sim.canonical_correlations(x, y)
    np.testing.assert_allclose(rho, covariance_canonical_correlations(x, y), atol=1e-10)
    xs, ys = CCA(n_components=3, max_iter=10_000, tol=1e-12).fit(x, y).transform(x, y)
    sk = sorted((abs(np.corrcoef(xs[:, i], ys[:, i])[0, 1]) for i in range(3)), reverse=True)
    np.testing.assert_allclose(rho, sk, atol=1e-4)
    assert sim.cca(x, y) == pytest.approx(np.mean(rho**2))


def test_svcca_drops_noise_directions():
    """Rank-3 signal in 10 dims plus tiny noise: SVCCA keeps the signal (≈1), full CCA averages in noise."""
    rng = rng_of(15)
    z = rng.normal(size=(300, 3))
    x = z @ rng.normal(size=(3, 10)) + 1e-3 * rng.normal(size=(300, 10))
    y = z @ rng.normal(size=(3, 10)) + 1e-3 * rng.normal(size=(300, 10))
    assert sim.svcca(x, y) > 0.999
    assert sim.cca(x, y) < 0.5


# ---------------------------------------------------------------- layer by layer

def test_layerwise_similarity():
    x, y = correlated(16, n=40)
    feats_a = {"a1": x, "a2": y.reshape(40, 3, 2)}  # (n, ...) flattened
    feats_b = [y, x, x[:, :3]]
    matrix = sim.layerwise_similarity(feats_a, feats_b)
    assert matrix.shape == (2, 3)
    assert matrix[0, 1] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(1.0)
    assert matrix[0, 2] == pytest.approx(sim.linear_cka(x, x[:, :3]))
    for metric, fn in (("debiased_cka", lambda a, b: sim.linear_cka(a, b, debiased=True)),
                       ("rbf_cka", sim.rbf_cka), ("cca", sim.cca)):
        m = sim.layerwise_similarity(feats_a, feats_b, metric=metric)
        assert m[1, 2] == pytest.approx(fn(y, x[:, :3]), rel=1e-10)
    custom = sim.layerwise_similarity([x], [y], metric=lambda a, b: a.shape[1] + b.shape[1])
    assert custom.tolist() == [[14.0]]


def test_plot_similarity(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "cka.png"
    sim.plot_similarity(np.eye(3)[:2], ["a", "b"], ["x", "y", "z"], str(path), title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels"):
        sim.plot_similarity(np.eye(3), ["a"], ["x", "y", "z"], str(path))


def test_errors():
    with pytest.raises(ValueError, match="same examples"):
        sim.linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="at least 4"):
        sim.linear_cka(np.eye(3), np.eye(3), debiased=True)
    with pytest.raises(ValueError, match="keep"):
        sim.svcca(np.eye(5), np.eye(5), keep=0.0)


def test_package_import_stays_light():
    code = (
        "import sys, efficientnet_jax, efficientnet_jax.similarity, efficientnet_jax.scaling, "
        "efficientnet_jax.families\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'tensorflow', 'torch', 'train')]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
