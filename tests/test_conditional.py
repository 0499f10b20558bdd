"""Mean force from conditional chains against closed forms."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from cgbench.conditional import ConditionalSampler, mean_force, sample_conditional

DIM_X = 3


def gaussian_energy(z, x):
    """U(z, x) = ½|z|² + ½(1 + |z|²)|x|²: p_β(x | z) = N(0, I / (β(1 + |z|²)))."""
    s = jnp.sum(z**2)
    return 0.5 * s + 0.5 * (1.0 + s) * jnp.sum(x**2)


def gaussian_mean_force(z, beta):
    """F̄(z) = −E[∂U/∂z] = −z − dim_x z / (β(1 + z²))."""
    return -z - DIM_X * z / (beta * (1.0 + z**2))


def sampler(kind, **overrides):
    base = dict(kind=kind, step_size=0.2 if kind == "mala" else 0.5, leapfrog_steps=5,
                minimisation_steps=0, minimisation_step_size=0.1, burn_in=20, samples=32, thin=1)
    return ConditionalSampler(**{**base, **overrides})


@functools.cache
def jitted_mean_force(energy, dim_x, chain):
    return jax.jit(lambda z, beta, key: mean_force(energy, z, beta, dim_x, chain, key=key))


Z_VALUES = np.array([-1.0, 0.5, 1.5])
REPLICAS = 64


@functools.cache
def gaussian_run(kind, beta):
    """Per-z mean (over independent chains) of the estimate, its standard error, and diagnostics."""
    z = jnp.asarray(np.repeat(Z_VALUES, REPLICAS)[:, None], jnp.float32)
    out = jitted_mean_force(gaussian_energy, DIM_X, sampler(kind))(z, jnp.float32(beta), jr.key(0))
    per_chain = np.asarray(out.mean_force, dtype=float).reshape(len(Z_VALUES), REPLICAS)
    energies = np.asarray(out.energies, dtype=float).reshape(len(Z_VALUES), REPLICAS, -1).mean(-1)
    return dict(force=per_chain.mean(1), force_se=per_chain.std(1, ddof=1) / np.sqrt(REPLICAS),
                energy=energies.mean(1), energy_se=energies.std(1, ddof=1) / np.sqrt(REPLICAS),
                acceptance=float(out.acceptance), half_difference=float(out.half_difference),
                shape=(out.mean_force.shape, out.energies.shape))


CASES = [("mala", 0.1), ("mala", 1.0), ("hmc", 0.1), ("hmc", 1.0)]


@pytest.mark.parametrize("kind, beta", CASES)
def test_gaussian_mean_force(kind, beta):
    run = gaussian_run(kind, beta)
    assert run["shape"] == ((len(Z_VALUES) * REPLICAS, 1), (len(Z_VALUES) * REPLICAS, 32))
    exact = gaussian_mean_force(Z_VALUES, beta)
    tol = 4 * run["force_se"]
    np.testing.assert_array_less(np.abs(run["force"] - exact), tol)
    # the test can tell β from 2β: the estimate is far from the 2β mean force
    wrong = gaussian_mean_force(Z_VALUES, 2 * beta)
    assert np.all(np.abs(run["force"] - wrong) > tol)


@pytest.mark.parametrize("kind, beta", CASES)
def test_gaussian_chain_energies(kind, beta):
    """E_β[U | z] = ½z² + dim_x / (2β) (equipartition of the dim_x fast coordinates)."""
    run = gaussian_run(kind, beta)
    exact = 0.5 * Z_VALUES**2 + DIM_X / (2 * beta)
    np.testing.assert_array_less(np.abs(run["energy"] - exact), 4 * run["energy_se"] + 1e-6 * exact)


@pytest.mark.parametrize("kind", ["mala", "hmc"])
def test_step_size_scales_with_temperature(kind):
    """Steps are given in thermal lengths: the acceptance is the same at β = 0.1 and β = 1.

    Without the rescaling, the β = 0.1 chain (10× wider conditional) would take steps far
    too small relative to its width and accept almost everything.
    """
    hot, cold = gaussian_run(kind, 0.1)["acceptance"], gaussian_run(kind, 1.0)["acceptance"]
    assert 0.5 < cold < 0.995
    assert hot == pytest.approx(cold, abs=0.03)


def test_half_difference_small_for_long_chains():
    short = gaussian_run("mala", 1.0)["half_difference"]
    z = jnp.asarray(np.repeat(Z_VALUES, 4)[:, None], jnp.float32)
    long = float(jitted_mean_force(gaussian_energy, DIM_X, sampler("mala", samples=1024))(
        z, jnp.float32(1.0), jr.key(1)).half_difference)
    assert long < 0.05
    # ~1/√S: 32× more samples, ~5.7× smaller
    assert long < short / 2.5


def test_gmm_mean_force_is_grad_log_p(gmm_2d):
    """F̄(z) = −E[∇_z U] = ∇ log p(z) + Bᵀ E[x − Bz]/σ², and E[x − Bz] = 0 at every β."""
    target = gmm_2d
    rng = np.random.default_rng(0)
    m = np.asarray(target.means, dtype=float)
    zs = np.concatenate([m + 0.05 * rng.normal(size=m.shape), rng.uniform(-1, 1, size=(2, 2))])
    replicas = 32
    chain = ConditionalSampler(kind="hmc", step_size=0.05, leapfrog_steps=5, minimisation_steps=10,
                               minimisation_step_size=0.005, burn_in=10, samples=16, thin=1)
    run = jax.jit(lambda z, beta, key: mean_force(target.energy, z, beta, target.dim_x, chain, key=key))
    exact = np.asarray(jax.vmap(jax.grad(target.log_prob_z))(jnp.asarray(zs, jnp.float32)), dtype=float)
    z = jnp.asarray(np.repeat(zs, replicas, axis=0), jnp.float32)
    for beta, seed in [(1.0, 2), (0.3, 3)]:
        out = run(z, jnp.float32(beta), jr.key(seed))
        per_chain = np.asarray(out.mean_force, dtype=float).reshape(len(zs), replicas, 2)
        est = per_chain.mean(1)
        se = per_chain.std(1, ddof=1) / np.sqrt(replicas)
        np.testing.assert_array_less(np.abs(est - exact), 4 * se + 1e-4 * np.abs(exact))
        assert float(out.acceptance) > 0.5


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("name", ["gmm_2d", "gmm_10d"])
def test_shipped_chain_settings_give_an_unbiased_mean_force(preset, name):
    """The configured chains must reach p(x|z) before averaging: with 2 minimisation steps they
    did not, and the mean force of gmm_10d was biased by 37-58 % (10-50 standard errors) at
    beta >= 0.1 -- enough to tilt the learned marginal."""
    from cgbench.config import load_config
    from cgbench.targets import make_target

    config = load_config(preset=preset)
    target = make_target(name, config["targets"][name])
    chain = ConditionalSampler(**config["ecg"][name]["conditional_sampler"])
    z0 = target.means[1] + 0.05 * jr.normal(jr.key(1), (target.dim_z,))
    replicas = 2000
    exact = np.asarray(jax.grad(target.log_prob_z)(z0), dtype=float)
    run = jax.jit(lambda z, beta, key: mean_force(target.energy, z, beta, target.dim_x, chain, key=key))
    for beta in (0.1, 1.0):
        out = np.asarray(run(jnp.tile(z0, (replicas, 1)), jnp.float32(beta), jr.key(0)).mean_force, dtype=float)
        se = out.std(0, ddof=1) / np.sqrt(replicas)
        np.testing.assert_array_less(np.abs(out.mean(0) - exact), 5 * se + 1e-3 * np.abs(exact))


def test_sample_conditional_thinning_and_distribution(double_well):
    """Thinned chain states of the double well's x2 follow N(0, 1/β) (z-independent)."""
    beta = 0.25
    chain = ConditionalSampler(kind="mala", step_size=0.5, leapfrog_steps=1, minimisation_steps=0,
                               minimisation_step_size=0.1, burn_in=20, samples=500, thin=3)
    xs, acc = jax.jit(lambda key: sample_conditional(double_well.energy, jnp.array([1.3]), beta, 1, chain,
                                                     key=key))(jr.key(4))
    xs = np.asarray(xs, dtype=float)[:, 0]
    assert xs.shape == (500,)
    assert 0.5 < float(acc) <= 1.0
    assert abs(xs.mean()) < 0.35  # sd of the mean ≤ 2/√500·(autocorrelation) ≈ 0.09–0.15
    assert xs.var() == pytest.approx(1 / beta, rel=0.25)  # and far from the β = 1 variance of 1


@pytest.mark.parametrize("settings, batch, expected", [
    # minimisation + (burn-in + samples·thin)·(gradients per step) + one ∇zU per kept state
    (dict(kind="mala", step_size=0.2, leapfrog_steps=1, minimisation_steps=0, minimisation_step_size=0.1,
          burn_in=10, samples=10, thin=1), 500, 500 * (0 + 20 + 10)),
    (dict(kind="mala", step_size=0.2, leapfrog_steps=7, minimisation_steps=3, minimisation_step_size=0.1,
          burn_in=2, samples=4, thin=3), 3, 3 * (3 + 14 + 4)),
    (dict(kind="hmc", step_size=0.05, leapfrog_steps=5, minimisation_steps=2, minimisation_step_size=0.005,
          burn_in=5, samples=10, thin=1), 4, 4 * (2 + 15 * 5 + 10)),
    (dict(kind="hmc", step_size=0.05, leapfrog_steps=3, minimisation_steps=0, minimisation_step_size=0.005,
          burn_in=0, samples=2, thin=2), 1, 1 * (0 + 4 * 3 + 2)),
])
def test_energy_evaluations(settings, batch, expected):
    assert ConditionalSampler(**settings).energy_evaluations(batch) == expected


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown"):
        mean_force(gaussian_energy, jnp.ones((2, 1)), 1.0, DIM_X, sampler("nuts"), key=jr.key(0))


def test_mass_matrix_leaves_the_mean_force_exact(beta=0.5):
    """HMC preconditioned with unequal masses (as for atoms) samples the same p_β(x | z)."""
    inverse_mass = jnp.asarray([1.0, 1.0 / 4, 1.0 / 9], jnp.float32)
    chain = sampler("hmc", step_size=0.3, burn_in=50, samples=64)  # the heaviest coordinate is 3 × slower
    z = jnp.asarray(np.repeat(Z_VALUES, REPLICAS)[:, None], jnp.float32)
    out = jax.jit(lambda z, key: mean_force(gaussian_energy, z, beta, DIM_X, chain, key=key,
                                            inverse_mass=inverse_mass))(z, jr.key(3))
    per_chain = np.asarray(out.mean_force, dtype=float).reshape(len(Z_VALUES), REPLICAS)
    se = per_chain.std(1, ddof=1) / np.sqrt(REPLICAS)
    np.testing.assert_array_less(np.abs(per_chain.mean(1) - gaussian_mean_force(Z_VALUES, beta)), 4 * se)
    assert float(out.acceptance) > 0.6


def test_minimisation_step_is_capped():
    """With minimisation_max_step, one step of a huge gradient moves each coordinate by at most the cap."""
    def steep(z, x):
        return 1e12 * jnp.sum((x - 1.0) ** 2) + 0.0 * jnp.sum(z)

    capped = sampler("mala", minimisation_steps=1, minimisation_step_size=1.0, minimisation_max_step=0.01,
                     burn_in=0, samples=2, step_size=1e-30)
    xs, _ = sample_conditional(steep, jnp.zeros(1), 1.0, DIM_X, capped, key=jr.key(0))
    np.testing.assert_allclose(np.asarray(xs[0]), 0.01, rtol=1e-5)   # towards x = 1, by the cap
    free = sampler("mala", minimisation_steps=1, minimisation_step_size=1.0, burn_in=0, samples=2, step_size=1e-30)
    xs, _ = sample_conditional(steep, jnp.zeros(1), 1.0, DIM_X, free, key=jr.key(0))
    assert np.all(np.abs(np.asarray(xs[0])) > 1e6)   # without the cap the step is ~10^12
