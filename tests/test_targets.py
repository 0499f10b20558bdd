"""Synthetic targets against independent numpy/scipy re-implementations (float64)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from cgbench.targets import DoubleWell, GaussianMixture, make_target

GMM_2D = dict(dim_z=2, dim_x=2, n_modes=3, variance=0.01, seed=0)
GMM_10D = dict(dim_z=10, dim_x=10, n_modes=3, variance=0.01, seed=0)


# ---------------------------------------------------------------- numpy references (float64)

def u_double_well(z, x):
    z1, x2 = z[..., 0], x[..., 0]
    return 0.25 * z1**4 - 3.0 * z1**2 + z1 + 0.5 * x2**2


def log_p_z_gmm(target, z):
    m = np.asarray(target.means, dtype=float)
    var = target.variance
    d = m.shape[1]
    sq = ((z[..., None, :] - m) ** 2).sum(-1)
    return logsumexp(-0.5 * sq / var - 0.5 * d * np.log(2 * np.pi * var), axis=-1) - np.log(len(m))


def log_p_x_given_z_gmm(target, x, z, beta=1.0):
    b = np.asarray(target.coupling, dtype=float)
    var = target.variance / beta
    r = x - z @ b.T
    return -0.5 * (r**2).sum(-1) / var - 0.5 * b.shape[0] * np.log(2 * np.pi * var)


def u_gmm(target, z, x):
    return -log_p_z_gmm(target, z) - log_p_x_given_z_gmm(target, x, z)


def make(name):
    if name == "double_well":
        return DoubleWell()
    return GaussianMixture.from_seed(**(GMM_2D if name == "gmm_2d" else GMM_10D))


def u_numpy(name, target, z, x):
    return u_double_well(z, x) if name == "double_well" else u_gmm(target, z, x)


def random_points(target, n, seed, spread):
    rng = np.random.default_rng(seed)
    z = rng.uniform(-spread, spread, size=(n, target.dim_z))
    if isinstance(target, GaussianMixture):
        # x near its conditional mean, so U is O(10), not O(1e4), and float32 is accurate.
        b = np.asarray(target.coupling, dtype=float)
        x = z @ b.T + 0.2 * rng.normal(size=(n, target.dim_x))
    else:
        x = rng.uniform(-spread, spread, size=(n, target.dim_x))
    return z, x


TARGETS = ["double_well", "gmm_2d", "gmm_10d"]


# ---------------------------------------------------------------- energy and its gradient

@pytest.mark.parametrize("name, spread", [("double_well", 3.5), ("gmm_2d", 1.0), ("gmm_10d", 1.0)])
def test_energy_matches_closed_form(name, spread):
    target = make(name)
    z, x = random_points(target, 64, seed=1, spread=spread)
    got = np.asarray(jax.vmap(target.energy)(jnp.asarray(z, jnp.float32), jnp.asarray(x, jnp.float32)))
    want = u_numpy(name, target, z, x)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize("name, spread", [("double_well", 3.5), ("gmm_2d", 1.0), ("gmm_10d", 1.0)])
def test_energy_gradient_matches_finite_differences(name, spread):
    target = make(name)
    z, x = random_points(target, 8, seed=2, spread=spread)
    gz, gx = jax.vmap(jax.grad(target.energy, argnums=(0, 1)))(jnp.asarray(z, jnp.float32),
                                                                jnp.asarray(x, jnp.float32))
    h = 1e-6
    for arr, got in ((z, gz), (x, gx)):
        fd = np.zeros_like(arr)
        for j in range(arr.shape[1]):
            e = np.zeros(arr.shape[1])
            e[j] = h
            if arr is z:
                fd[:, j] = (u_numpy(name, target, z + e, x) - u_numpy(name, target, z - e, x)) / (2 * h)
            else:
                fd[:, j] = (u_numpy(name, target, z, x + e) - u_numpy(name, target, z, x - e)) / (2 * h)
        scale = np.abs(fd).max()
        np.testing.assert_allclose(np.asarray(got), fd, rtol=1e-3, atol=1e-4 * scale)


def test_double_well_free_energy_closed_form():
    dw = DoubleWell()
    z1 = np.linspace(-4, 4, 9)
    np.testing.assert_allclose(np.asarray(dw.free_energy(jnp.asarray(z1))), 0.25 * z1**4 - 3 * z1**2 + z1,
                               rtol=1e-6, atol=1e-5)
    # the asymmetric tilt +z1 makes the negative well deeper
    assert float(dw.free_energy(-2.5)) < float(dw.free_energy(2.5))


# ---------------------------------------------------------------- conditional p_β(x | z)

@pytest.mark.parametrize("beta", [0.05, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("z1", [-2.0, 0.3])
def test_double_well_conditional_log_prob_normalised(beta, z1):
    dw = DoubleWell()
    z = jnp.array([z1], jnp.float32)
    f = jax.jit(lambda x: dw.conditional_log_prob(jnp.reshape(x, (1,)), z, beta))
    width = 12 / np.sqrt(beta)
    t = np.linspace(-width, width, 20001)
    mass = np.trapezoid(np.exp(np.asarray(jax.vmap(f)(jnp.asarray(t, jnp.float32)), dtype=float)), t)
    assert mass == pytest.approx(1.0, abs=1e-5)
    # and it is the Gaussian N(0, 1/β) implied by ½x2² at inverse temperature β
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(jnp.asarray([0.0, 0.7, -1.3]))),
                               stats.norm(0, 1 / np.sqrt(beta)).logpdf([0.0, 0.7, -1.3]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gmm_2d", "gmm_10d"])
@pytest.mark.parametrize("beta", [0.01, 0.3, 1.0])
def test_gmm_conditional_log_prob_is_gaussian(name, beta):
    target = make(name)
    z, _ = random_points(target, 5, seed=3, spread=1.0)
    b = np.asarray(target.coupling, dtype=float)
    rng = np.random.default_rng(4)
    for zi in z:
        ref = stats.multivariate_normal(mean=b @ zi, cov=target.variance / beta * np.eye(target.dim_x))
        x = ref.rvs(size=4, random_state=rng)
        got = jax.vmap(lambda xx: target.conditional_log_prob(xx, jnp.asarray(zi, jnp.float32), beta))(
            jnp.asarray(x, jnp.float32))
        np.testing.assert_allclose(np.asarray(got), ref.logpdf(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name, beta", [("double_well", 1.0), ("double_well", 0.25),
                                        ("gmm_2d", 1.0), ("gmm_2d", 0.1), ("gmm_10d", 0.5)])
def test_conditional_sample_moments(name, beta):
    target = make(name)
    n = 20000
    z0, _ = random_points(target, 1, seed=5, spread=1.0)
    z = jnp.asarray(z0[0], jnp.float32)
    xs = np.asarray(jax.jit(jax.vmap(lambda k: target.conditional_sample(z, beta, key=k)))(
        jr.split(jr.key(6), n)), dtype=float)
    if name == "double_well":
        mean, var = np.zeros(1), 1.0 / beta
    else:
        mean, var = np.asarray(target.coupling, dtype=float) @ z0[0], target.variance / beta
    assert xs.shape == (n, target.dim_x)
    se_mean = np.sqrt(var / n)
    np.testing.assert_array_less(np.abs(xs.mean(0) - mean), 5 * se_mean)
    np.testing.assert_allclose(xs.var(0), var, rtol=5 * np.sqrt(2 / n))
    # components independent
    if target.dim_x > 1:
        c = np.corrcoef(xs.T)[np.triu_indices(target.dim_x, 1)]
        np.testing.assert_array_less(np.abs(c), 5 / np.sqrt(n))


# ---------------------------------------------------------------- marginal log p_β(z)

@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0])
def test_double_well_log_marginal_is_log_integral_of_boltzmann(beta):
    dw = DoubleWell()
    zs = np.array([-3.0, -1.7, 0.0, 0.4, 2.2, 3.1])
    diffs = []
    for z1 in zs:
        integral, _ = integrate.quad(lambda x2: np.exp(-beta * u_double_well(np.array([z1]), np.array([x2]))),
                                     -np.inf, np.inf, epsabs=0, epsrel=1e-11)
        diffs.append(np.log(integral) - float(dw.log_marginal(jnp.asarray([z1], jnp.float32), beta)))
    diffs = np.array(diffs)
    np.testing.assert_allclose(diffs, diffs[0], atol=2e-5)
    # and the constant is the x-Gaussian normaliser log √(2π/β)
    assert diffs[0] == pytest.approx(0.5 * np.log(2 * np.pi / beta), abs=1e-4)


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0])
def test_gmm_2d_log_marginal_is_log_integral_of_boltzmann(beta):
    """x-integral done on a 2-D grid of exp(-βU) (no use of the Gaussian closed form)."""
    target = make("gmm_2d")
    rng = np.random.default_rng(7)
    m = np.asarray(target.means, dtype=float)
    z = np.concatenate([m + 0.05 * rng.normal(size=m.shape), rng.uniform(-0.8, 0.8, (3, 2))])
    b = np.asarray(target.coupling, dtype=float)
    sd = np.sqrt(target.variance / beta)
    t = np.linspace(-8 * sd, 8 * sd, 401)
    grid = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    diffs = []
    for zi in z:
        x = b @ zi + grid
        log_integrand = -beta * u_gmm(target, np.broadcast_to(zi, x.shape), x)
        shift = log_integrand.max()
        w = np.exp(log_integrand - shift).reshape(len(t), len(t))
        integral = np.trapezoid(np.trapezoid(w, t, axis=1), t)
        diffs.append(np.log(integral) + shift - float(target.log_marginal(jnp.asarray(zi, jnp.float32), beta)))
    diffs = np.array(diffs)
    np.testing.assert_allclose(diffs, diffs[0], atol=5e-4 * max(1.0, np.abs(diffs).max()) + 1e-3)


@pytest.mark.parametrize("beta", [0.01, 0.3, 1.0])
def test_gmm_10d_log_marginal_differs_from_gaussian_integral_by_constant(beta):
    """For d-dim x, log ∫exp(-βU)dx = β log p(z) + d/2 (1-β) log(2πσ²) − d/2 log β."""
    target = make("gmm_10d")
    d, var = target.dim_x, target.variance
    z, _ = random_points(target, 6, seed=8, spread=1.0)
    z = np.concatenate([z, np.asarray(target.means, dtype=float) + 0.02])
    log_integral = beta * log_p_z_gmm(target, z) + 0.5 * d * (1 - beta) * np.log(2 * np.pi * var) \
        - 0.5 * d * np.log(beta)
    got = np.asarray(jax.vmap(lambda zz: target.log_marginal(zz, beta))(jnp.asarray(z, jnp.float32)), dtype=float)
    diffs = log_integral - got
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-5 * np.abs(log_integral).max() + 1e-3)


@pytest.mark.parametrize("name", ["gmm_2d", "gmm_10d"])
def test_gmm_log_prob_z_is_normalised_mixture(name):
    target = make(name)
    z, _ = random_points(target, 16, seed=9, spread=1.0)
    got = jax.vmap(target.log_prob_z)(jnp.asarray(z, jnp.float32))
    m = np.asarray(target.means, dtype=float)
    ref = np.log(np.mean([stats.multivariate_normal(mk, target.variance * np.eye(target.dim_z)).pdf(z)
                          for mk in m], axis=0))
    ok = np.isfinite(ref)
    np.testing.assert_allclose(np.asarray(got)[ok], ref[ok], rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------- exact mode masses and bins

def quad_double_well_masses(beta, bound):
    f = lambda z1: np.exp(-beta * (0.25 * z1**4 - 3 * z1**2 + z1))  # noqa: E731
    neg = integrate.quad(f, -bound, 0, epsabs=0, epsrel=1e-12, limit=200)[0]
    pos = integrate.quad(f, 0, bound, epsabs=0, epsrel=1e-12, limit=200)[0]
    return np.array([neg, pos]) / (neg + pos)


def test_double_well_mode_mass_at_beta_1():
    masses = DoubleWell().exact_mode_masses(1.0, 5.0)
    assert masses[1] == pytest.approx(0.0083486, abs=1e-6)
    np.testing.assert_allclose(masses, quad_double_well_masses(1.0, 5.0), atol=1e-6)


@pytest.mark.parametrize("beta, bound", [(0.01, 5.0), (0.1, 5.0), (0.5, 5.0), (1.0, 3.0), (2.0, 5.0)])
def test_double_well_mode_masses_against_quadrature(beta, bound):
    masses = DoubleWell().exact_mode_masses(beta, bound)
    assert masses.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(masses >= 0)
    np.testing.assert_allclose(masses, quad_double_well_masses(beta, bound), atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_double_well_marginal_bins_against_quadrature(beta):
    edges = np.linspace(-5, 5, 21)
    bins = DoubleWell().exact_marginal_bins(beta, 5.0, edges)
    assert bins.shape == (1, 20)
    assert bins.sum() == pytest.approx(1.0, abs=1e-10)
    f = lambda z1: np.exp(-beta * (0.25 * z1**4 - 3 * z1**2 + z1))  # noqa: E731
    ref = np.array([integrate.quad(f, a, b, epsabs=0, epsrel=1e-12)[0] for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(bins[0], ref / ref.sum(), atol=1e-6)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_gmm_2d_grid_mode_masses_are_one_third(beta):
    # equal weights, modes 13σ apart: each nearest-centre cell holds 1/3 at β = 1 and, as
    # p^β ≈ Σ_k N(m_k, σ²/β)/3 for separated modes, also at β = 0.5
    masses = make("gmm_2d").exact_mode_masses(beta, 4.0)
    assert masses.shape == (3,)
    assert masses.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(masses, 1 / 3, atol=2e-4)


def test_gmm_10d_mode_masses():
    target = make("gmm_10d")
    np.testing.assert_allclose(target.exact_mode_masses(1.0, 4.0), 1 / 3)
    assert target.exact_mode_masses(0.5, 4.0) is None
    assert target.exact_marginal_bins(0.5, 4.0, np.linspace(-4, 4, 5)) is None


def exact_gmm_z_samples(target, n, seed, beta=1.0):
    """p(z)^β for well-separated equal-weight modes ≈ Σ_k N(m_k, σ²/β)/K; exact at β = 1."""
    rng = np.random.default_rng(seed)
    m = np.asarray(target.means, dtype=float)
    k = rng.integers(len(m), size=n)
    return m[k] + np.sqrt(target.variance / beta) * rng.normal(size=(n, m.shape[1])), k


@pytest.mark.parametrize("name, beta", [("gmm_2d", 1.0), ("gmm_2d", 0.5), ("gmm_10d", 1.0)])
def test_gmm_marginal_bins_against_exact_samples(name, beta):
    target = make(name)
    edges = np.linspace(-4, 4, 41)
    bins = target.exact_marginal_bins(beta, 4.0, edges)
    assert bins.shape == (target.dim_z, 40)
    np.testing.assert_allclose(bins.sum(1), 1.0, atol=1e-9)
    n = 40000
    z, _ = exact_gmm_z_samples(target, n, seed=10, beta=beta)
    for axis in range(target.dim_z):
        hist = np.histogram(z[:, axis], bins=edges)[0] / n
        se = np.sqrt(bins[axis] * (1 - bins[axis]) / n)
        np.testing.assert_array_less(np.abs(hist - bins[axis]), 5 * se + 2e-3)


def test_gmm_mode_index_and_mode_masses_of_exact_samples():
    target = make("gmm_2d")
    z, k = exact_gmm_z_samples(target, 3000, seed=11)
    idx = np.asarray(jax.vmap(target.mode_index)(jnp.asarray(z, jnp.float32)))
    assert np.array_equal(idx, k)  # modes 13σ apart: no sample is nearer another centre


def test_double_well_mode_index():
    dw = DoubleWell()
    got = jax.vmap(dw.mode_index)(jnp.array([[-2.5], [-0.1], [0.1], [2.5]]))
    assert np.array_equal(np.asarray(got), [0, 0, 1, 1])
    assert dw.mode_names[int(got[-1])] == "x1_positive"


# ---------------------------------------------------------------- construction

@pytest.mark.parametrize("spec", [GMM_2D, GMM_10D])
def test_gmm_from_seed_is_deterministic_and_separated(spec):
    a = GaussianMixture.from_seed(**spec)
    b = GaussianMixture.from_seed(**spec)
    assert np.array_equal(np.asarray(a.means), np.asarray(b.means))
    assert np.array_equal(np.asarray(a.coupling), np.asarray(b.coupling))
    assert a.means.shape == (spec["n_modes"], spec["dim_z"])
    assert a.coupling.shape == (spec["dim_x"], spec["dim_z"])
    assert a.dim_z == spec["dim_z"] and a.dim_x == spec["dim_x"]
    assert np.all(np.abs(np.asarray(a.means)) <= 1.0)
    assert a.min_mode_separation() > 8
    other = GaussianMixture.from_seed(**{**spec, "seed": 1})
    assert not np.array_equal(np.asarray(a.means), np.asarray(other.means))


def test_min_mode_separation_in_units_of_sigma():
    t = GaussianMixture(jnp.array([[0.0, 0.0], [0.3, 0.4], [2.0, 0.0]]), jnp.eye(2), 0.04)
    assert t.min_mode_separation() == pytest.approx(0.5 / 0.2, rel=1e-6)


@pytest.mark.parametrize("name, spec, cls, dims", [
    ("double_well", {}, DoubleWell, (1, 1)),
    ("gmm_2d", GMM_2D, GaussianMixture, (2, 2)),
    ("gmm_10d", GMM_10D, GaussianMixture, (10, 10)),
])
def test_make_target(name, spec, cls, dims):
    t = make_target(name, spec)
    assert isinstance(t, cls)
    assert (t.dim_z, t.dim_x) == dims
    assert len(t.mode_names) == (2 if name == "double_well" else 3)
    z0 = np.asarray(t.initial_z(500, key=jr.key(0)))
    assert z0.shape == (500, dims[0])
    # initial chains cover every mode
    modes = np.asarray(jax.vmap(t.mode_index)(jnp.asarray(z0)))
    assert set(modes.tolist()) == set(range(len(t.mode_names)))


def test_make_target_unknown():
    with pytest.raises(ValueError):
        make_target("nope", {})
