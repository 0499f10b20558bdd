"""Flows: truncated base against scipy, support, normalisation and change of variables."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

from cgbench.flows import TruncatedStandardNormal, flow_from_settings, make_flow
from conftest import perturb

# A small interval makes the truncation of the base visible: N(0,1) puts 4.6 % of its mass
# outside [-2, 2], so an untruncated (or wrongly normalised) base fails the mass-1 tests.
INTERVAL = 2.0


# ---------------------------------------------------------------- truncated base

@pytest.mark.parametrize("shape, bound", [((1,), 1.0), ((3,), 2.0), ((2,), 5.0)])
def test_truncated_normal_log_prob_matches_scipy(shape, bound):
    dist = TruncatedStandardNormal(shape, bound)
    rng = np.random.default_rng(0)
    x = rng.uniform(-bound, bound, size=(50, *shape))
    got = np.asarray(dist.log_prob(jnp.asarray(x, jnp.float32)))
    want = stats.truncnorm(-bound, bound).logpdf(x).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # zero density outside the box
    outside = np.array(x[:3])
    outside[:, 0] = bound * 1.01
    assert np.all(np.asarray(dist.log_prob(jnp.asarray(outside, jnp.float32))) == -np.inf)


@pytest.mark.parametrize("shape, bound", [((1,), 1.0), ((3,), 2.0)])
def test_truncated_normal_samples(shape, bound):
    n = 40000
    dist = TruncatedStandardNormal(shape, bound)
    x = np.asarray(dist.sample(jr.key(1), (n,)), dtype=float)
    assert x.shape == (n, *shape)
    assert np.all(np.abs(x) <= bound)
    ref = stats.truncnorm(-bound, bound)
    np.testing.assert_array_less(np.abs(x.mean(0)), 5 * ref.std() / np.sqrt(n))
    # the truncated variance (0.291 at bound 1) differs from 1: checks the truncation
    np.testing.assert_allclose(x.var(0), ref.var(), rtol=0.03)
    for j in range(shape[0]):
        assert stats.kstest(x[:, j], ref.cdf).pvalue > 1e-3


# ---------------------------------------------------------------- flows

FLOW_SETTINGS = dict(layers=2, mlp_depth=1, mlp_width=8, knots=4, interval=INTERVAL)
N_SAMPLES = 2000
N_JACOBIAN = 6
GRID = {1: 8001, 2: 401}  # integration grids over the box for the normalisation test


def perturbed_flow(dim, seed=0):
    flow = make_flow(dim=dim, key=jr.key(seed), **FLOW_SETTINGS)
    return perturb(flow, 0.2, seed + 100)


def box_grid(dim):
    t = np.linspace(-INTERVAL, INTERVAL, GRID[dim])
    if dim == 1:
        return t, t[:, None]
    return t, np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)


@pytest.fixture(scope="module", params=[1, 2, 10])
def flow_outputs(request):
    """Everything the tests need from one perturbed flow, computed in a single jit."""
    dim = request.param
    flow = perturbed_flow(dim)
    bij = flow.bijection
    grid = jnp.asarray(box_grid(dim)[1], jnp.float32) if dim in GRID else jnp.zeros((1, dim))

    @eqx.filter_jit
    def compute(key, grid):
        z, log_q = flow.sample_and_log_prob(key, (N_SAMPLES,))

        def change_of_variables(zi):
            u = bij.inverse(zi)
            jac = jax.jacfwd(bij.transform)(u)
            return flow.base_dist.log_prob(u) - jnp.linalg.slogdet(jac)[1], u, bij.transform(u)

        ref, u, z_again = jax.vmap(change_of_variables)(z[:N_JACOBIAN])
        return dict(z=z, log_q=log_q, log_prob=flow.log_prob(z), log_base=flow.base_dist.log_prob(z),
                    cov_ref=ref, cov_u=u, cov_z_again=z_again, grid_log_q=flow.log_prob(grid))

    out = {k: np.asarray(v, dtype=float) for k, v in compute(jr.key(3), grid).items()}
    return dim, out


def test_flow_is_not_identity(flow_outputs):
    """Guard for the other tests: the perturbed flow's log q differs from the base's."""
    _, out = flow_outputs
    assert np.abs(out["log_q"] - out["log_base"]).mean() > 0.05


def test_flow_samples_inside_interval(flow_outputs):
    dim, out = flow_outputs
    z = out["z"]
    assert z.shape == (N_SAMPLES, dim)
    assert np.all(np.isfinite(z))
    assert np.all(np.abs(z) <= INTERVAL * (1 + 1e-6))
    # samples fill the box rather than collapsing
    assert np.all(z.std(0) > 0.2)


def test_sample_and_log_prob_agree_with_log_prob(flow_outputs):
    dim, out = flow_outputs
    np.testing.assert_allclose(out["log_prob"], out["log_q"], atol=2e-4 * dim, rtol=1e-4)


def test_log_prob_is_change_of_variables(flow_outputs):
    """log q(z) = log base(f⁻¹(z)) − log|det J_f(f⁻¹(z))| with J_f from jax.jacfwd."""
    dim, out = flow_outputs
    assert np.all(np.abs(out["cov_u"]) <= INTERVAL * (1 + 1e-6))
    np.testing.assert_allclose(out["cov_z_again"], out["z"][:N_JACOBIAN], atol=1e-5)
    np.testing.assert_allclose(out["log_q"][:N_JACOBIAN], out["cov_ref"], atol=1e-4 * dim)


@pytest.mark.parametrize("flow_outputs", sorted(GRID), indirect=True)
def test_flow_density_integrates_to_one(flow_outputs):
    dim, out = flow_outputs
    t, _ = box_grid(dim)
    q = np.exp(out["grid_log_q"])
    if dim == 1:
        mass = np.trapezoid(q, t)
    else:
        mass = np.trapezoid(np.trapezoid(q.reshape(len(t), len(t)), t, axis=1), t)
    assert mass == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("flow_outputs", [1], indirect=True)
def test_flow_density_matches_sample_histogram_1d(flow_outputs):
    """In 1-D, bin masses of exp(log q) on the grid match a histogram of the samples."""
    _, out = flow_outputs
    t, _ = box_grid(1)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (np.exp(out["grid_log_q"][1:]) + np.exp(out["grid_log_q"][:-1]))
                                            * np.diff(t))])
    edges = np.linspace(-INTERVAL, INTERVAL, 11)
    p = np.diff(np.interp(edges, t, cdf))
    hist = np.histogram(out["z"][:, 0], bins=edges)[0] / N_SAMPLES
    np.testing.assert_array_less(np.abs(hist - p), 5 * np.sqrt(p * (1 - p) / N_SAMPLES) + 1e-3)


def test_flow_from_settings_is_deterministic_in_key():
    a = flow_from_settings(FLOW_SETTINGS, 2, key=jr.key(0))
    b = flow_from_settings(FLOW_SETTINGS, 2, key=jr.key(0))
    c = flow_from_settings(FLOW_SETTINGS, 2, key=jr.key(1))
    la = jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array))
    lb = jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    lc = jax.tree.leaves(eqx.filter(c, eqx.is_inexact_array))
    assert all(np.array_equal(x, y) for x, y in zip(la, lb))
    assert not all(np.array_equal(x, y) for x, y in zip(la, lc))
    assert a.shape == (2,)


def test_key_also_draws_the_untrained_permutations():
    """From dim 3 on, the key draws integer permutations between coupling layers: not parameters,
    so not in a params-only save (why :func:`cgbench.ecg.initial_flow` exists)."""
    def integer_leaves(flow):
        return [np.asarray(x) for x in jax.tree.leaves(flow) if hasattr(x, "dtype") and not jnp.issubdtype(x.dtype, jnp.inexact)]

    a, b = (integer_leaves(flow_from_settings(FLOW_SETTINGS, 3, key=jr.key(k))) for k in (0, 1))
    assert a and not all(np.array_equal(x, y) for x, y in zip(a, b))
