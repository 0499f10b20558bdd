"""Müller-Brown system of CG-BG (`cgbench.muller_brown`): potential, exact PMF, force floor, data, PMF error.

The sampler tests start batches of short trajectories from *exact* draws of the 2-D Boltzmann
density (grid inverse CDF, :func:`exact_samples`), so stationarity is checked without waiting for
barrier crossings (a few per 1000 time units). Tolerances are a few times the values measured
with the seeds used here (noted at each constant).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy.special import logsumexp, rel_entr

from cgbench import muller_brown as mb

# --- helpers -------------------------------------------------------------------------------------

X_GRID = np.linspace(-25.0, 60.0, 8501)    # step 0.01; F − min F > 35 kT outside
HIST_EDGES = np.linspace(10.0, 50.0, 21)   # 2-unit bins over where the data live


def numpy_potential(x, y):
    """V(x, y) typed in again from the formula of CG-BG's code (not from the module's table)."""
    return (-17.3 * np.exp(-0.0039 * (x - 48) ** 2 - 0.0391 * (y - 8) ** 2)
            - 8.7 * np.exp(-0.0039 * (x - 32) ** 2 - 0.0391 * (y - 16) ** 2)
            - 14.7 * np.exp(-0.0254 * (x - 24) ** 2 + 0.043 * (x - 24) * (y - 32) - 0.0254 * (y - 32) ** 2)
            + 1.3 * np.exp(0.00273 * (x - 16) ** 2 + 0.0023 * (x - 16) * (y - 24) + 0.00273 * (y - 24) ** 2))


@functools.lru_cache
def exact_free_energy_on_grid():
    return mb.exact_pmf(X_GRID)


def exact_samples(n, *, biased, seed):
    """``n`` exact draws (x, y) of exp(−V − B·biased), y ∈ [0, 50]: x from the exact marginal on
    :data:`X_GRID`, then y given that x on a 0.01 grid (both jittered within their cell)."""
    rng = np.random.default_rng(seed)
    log_px = -exact_free_energy_on_grid() - (mb.bias(X_GRID) if biased else 0.0)
    x = X_GRID[rng.choice(len(X_GRID), size=n, p=np.exp(log_px - logsumexp(log_px)))]
    x = x + rng.uniform(-0.005, 0.005, n)
    y_grid = np.linspace(0.0, 50.0, 5001)
    log_py = -numpy_potential(x[:, None], y_grid[None, :])
    p_y = np.exp(log_py - logsumexp(log_py, axis=1, keepdims=True))
    cdf = np.cumsum(p_y, axis=1)
    j = np.minimum((cdf < rng.uniform(size=n)[:, None] * cdf[:, -1:]).sum(axis=1), len(y_grid) - 1)
    return np.stack([x, y_grid[j] + rng.uniform(-0.005, 0.005, n)], axis=1)


def exact_bin_masses(*, biased, edges=HIST_EDGES):
    """Exact x-marginal masses of the bins ``edges`` (fine-grid sums of exp(−F − B·biased))."""
    free_energy = exact_free_energy_on_grid() + (mb.bias(X_GRID) if biased else 0.0)
    density = np.exp(-free_energy)
    masses = np.array([density[(X_GRID >= a) & (X_GRID < b)].sum() for a, b in zip(edges[:-1], edges[1:])])
    return masses / masses.sum()


def histogram(x, weights=None, edges=HIST_EDGES):
    counts = np.histogram(x, edges, weights=weights)[0]
    return counts / counts.sum()


def js(p, q):
    m = 0.5 * (p + q)
    return 0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum())


def within_bin_force_variance(data, width=0.1):
    """Monte-Carlo force floor: pooled within-bin variance (ddof 1 per bin) of the forces over x bins."""
    x, force = data["positions"][:, 0].astype(float), data["forces"][:, 0].astype(float)
    edges = np.arange(np.floor(x.min()), x.max() + width, width)
    index = np.digitize(x, edges)
    counts = np.bincount(index, minlength=len(edges) + 1)
    sums = np.bincount(index, weights=force, minlength=len(edges) + 1)
    squares = np.bincount(index, weights=force**2, minlength=len(edges) + 1)
    used = counts > 1
    within = (squares[used] - sums[used] ** 2 / counts[used]) * counts[used] / (counts[used] - 1)
    return within.sum() / counts[used].sum()


# 1000 trajectories × 20 frames (every 100 steps, 200 time units) from exact draws.
N_TRAJ, N_FRAMES = 1000, 20


@pytest.fixture(scope="module")
def equilibrium_runs():
    """Short runs from exact starts: biased and unbiased dynamics from their own equilibria, and
    unbiased dynamics from the *biased* equilibrium (the negative control of stationarity)."""
    runs = {}
    for name, dynamics_biased, start_biased in [("biased", True, True), ("unbiased", False, False),
                                                ("unbiased_from_biased", False, True)]:
        start = exact_samples(N_TRAJ, biased=start_biased, seed=0)
        runs[name] = mb.generate_data(biased=dynamics_biased, trajectories=N_TRAJ, frames=N_FRAMES,
                                      equilibration_steps=0, start=start, key=jax.random.key(1))
    return runs


# --- potential -----------------------------------------------------------------------------------

POINTS = np.array([[48.0, 8.0], [32.0, 16.0], [24.0, 32.0], [16.0, 24.0], [23.1, 31.1], [31.2, 20.0],
                   [10.0, 45.0], [50.0, 50.0], [0.0, 0.0]])


@pytest.mark.parametrize("point", POINTS, ids=[f"{x:g},{y:g}" for x, y in POINTS])
def test_potential_gradient_matches_finite_differences(point):
    with jax.enable_x64(True):
        xy = jnp.asarray(point, jnp.float64)
        gradient = np.asarray(jax.grad(mb.potential)(xy))
        h = 1e-5
        fd = np.array([(mb.potential(xy + h * e) - mb.potential(xy - h * e)) / (2 * h) for e in np.eye(2)])
    np.testing.assert_allclose(gradient, fd, rtol=1e-7, atol=1e-7 * max(1.0, np.abs(fd).max()))
    # and the analytic numpy force used by the exact floor
    np.testing.assert_allclose(mb._force_x_np(*point), -gradient[0], rtol=1e-10, atol=1e-12)


def test_potential_values_against_formula():
    with jax.enable_x64(True):
        values = np.asarray(mb.potential(jnp.asarray(POINTS)))
    np.testing.assert_allclose(values, numpy_potential(POINTS[:, 0], POINTS[:, 1]), rtol=1e-12)
    assert values.shape == (len(POINTS),)
    # the documented global minimum and the confining wall
    assert numpy_potential(23.1, 31.1) == pytest.approx(-12.686, abs=1e-3)
    assert values[-2] > 1000  # (50, 50)


def test_potential_is_vmappable_and_batched_shapes():
    xy = jnp.asarray(POINTS.reshape(3, 3, 2), jnp.float32)
    batched = mb.potential(xy)
    assert batched.shape == (3, 3)
    np.testing.assert_allclose(jax.vmap(jax.vmap(mb.potential))(xy), batched, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(mb.potential)(xy), batched, rtol=1e-6)


@pytest.mark.parametrize("x, expected", [(32.0, -4.0), (37.0, -4.0 * np.exp(-0.5)), (22.0, -4.0 * np.exp(-2.0))])
def test_bias(x, expected):
    assert mb.bias(np.float64(x)) == pytest.approx(expected, rel=1e-12)
    assert float(mb.bias(jnp.asarray(x))) == pytest.approx(expected, rel=1e-6)
    assert mb.bias(np.float64(x), height=2.0, centre=x, width=1.0) == pytest.approx(-2.0)


# --- exact PMF and force floor -------------------------------------------------------------------

@pytest.mark.parametrize("x", [10.0, 23.0, 31.2, 41.6, 48.0])
def test_exact_pmf_against_quad(x):
    reference_x = 23.0  # the minimum: F is shifted so that it is 0 there
    def log_z(x0):
        value, _ = integrate.quad(lambda y: np.exp(-numpy_potential(x0, y)), 0.0, 50.0, epsabs=0, epsrel=1e-12,
                                  limit=200)
        return np.log(value)
    free_energy = mb.exact_pmf(np.array([reference_x, x]))
    assert free_energy[1] == pytest.approx(log_z(reference_x) - log_z(x), abs=1e-8)


def test_exact_pmf_landmarks():
    """Minima, barrier and populations as documented in the module docstring."""
    x = np.linspace(0.0, 60.0, 601)
    free_energy = mb.exact_pmf(x)
    assert free_energy.min() == 0.0 and x[free_energy.argmin()] == pytest.approx(23.0)
    inner = (x > 26) & (x < 38)
    assert x[inner][free_energy[inner].argmax()] == pytest.approx(31.2)
    assert free_energy[inner].max() == pytest.approx(5.30, abs=0.01)
    assert mb.populated_range(X_GRID, exact_free_energy_on_grid()) == pytest.approx((8.82, 48.71), abs=0.011)


@pytest.mark.parametrize("biased", [False, True])
def test_exact_force_floor_against_data(biased, equilibrium_runs):
    """Within-bin variance of the forces of equilibrium data (0.1-wide x bins) vs the exact floor.

    Measured (seeds 0/1): unbiased exact 0.4202, data 0.4165; biased exact 0.4081, data 0.4092
    (0.9 % and 0.3 %); tolerance 2.5 %. The two exact floors differ by only 3 %, so this data
    size cannot tell which marginal was averaged over; the total (not conditional) variance of
    the forces, the usual mistake, is ≈ 1.5 × larger (0.63 and 0.66, checked below).
    """
    estimate = within_bin_force_variance(equilibrium_runs["biased" if biased else "unbiased"])
    exact = mb.exact_force_floor(biased=biased)
    assert estimate == pytest.approx(exact, rel=0.025), (estimate, exact)
    data = equilibrium_runs["biased" if biased else "unbiased"]
    assert np.var(data["forces"]) > 1.3 * exact


def test_exact_force_floor_converged():
    coarse = mb.exact_force_floor(biased=False, n_x=2201, n_y=1001)
    assert coarse == pytest.approx(mb.exact_force_floor(biased=False), rel=1e-6)


# --- data ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_biased():
    return mb.generate_data(biased=True, trajectories=4, frames=25, report_interval=20, equilibration_steps=30,
                            key=jax.random.key(3))


def test_data_layout(small_biased):
    d, n = small_biased, 4 * 25
    assert d["positions"].shape == (n, 1) and d["positions"].dtype == np.float32
    assert d["forces"].shape == (n, 1) and d["forces"].dtype == np.float32
    assert d["xy"].shape == (n, 2)
    for name in ("potential_energy", "bias_energy", "weights", "replica", "time"):
        assert d[name].shape == (n,), name
    np.testing.assert_array_equal(d["positions"][:, 0], d["xy"][:, 0])
    np.testing.assert_array_equal(d["replica"], np.repeat(np.arange(4), 25))
    np.testing.assert_allclose(d["time"][:25], 0.1 * 20 * np.arange(1, 26))
    np.testing.assert_array_equal(d["time"][25:50], d["time"][:25])
    assert d["weights"].sum() == pytest.approx(1.0)
    assert d["kT"] == 1.0 and d["biased"] is True


def test_stored_forces_are_unbiased_also_for_biased_data(small_biased):
    xy = small_biased["xy"].astype(np.float64)
    unbiased = mb._force_x_np(xy[:, 0], xy[:, 1])
    bias_force = -(xy[:, 0] - 32.0) / 25.0 * mb.bias(xy[:, 0])   # −∂B/∂x
    np.testing.assert_allclose(small_biased["forces"][:, 0], unbiased, rtol=1e-4, atol=1e-4)
    assert np.abs(small_biased["forces"][:, 0] - (unbiased + bias_force)).max() > 0.1  # the bias force is not in
    np.testing.assert_allclose(small_biased["potential_energy"], numpy_potential(xy[:, 0], xy[:, 1]),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(small_biased["bias_energy"], mb.bias(xy[:, 0]), rtol=1e-6)


def test_unbiased_data_have_uniform_weights_and_no_bias(equilibrium_runs):
    d = equilibrium_runs["unbiased"]
    np.testing.assert_allclose(d["weights"], 1.0 / len(d["weights"]))
    np.testing.assert_array_equal(d["bias_energy"], 0.0)


# JS of 20 bins, measured: biased (unbiased) dynamics vs its exact marginal 7.5e-5 (9.1e-5); unbiased dynamics
# from the biased equilibrium drift to 6.6e-2 from it within the 200 time units; the two exact
# marginals are 7.1e-2 apart.
JS_TOLERANCE = 5e-4


def test_sampler_keeps_the_biased_equilibrium(equilibrium_runs):
    exact_biased, exact_unbiased = exact_bin_masses(biased=True), exact_bin_masses(biased=False)
    sampled = histogram(equilibrium_runs["biased"]["positions"][:, 0])
    assert js(sampled, exact_biased) < JS_TOLERANCE, js(sampled, exact_biased)
    assert js(sampled, exact_unbiased) > 20 * JS_TOLERANCE
    # negative control: without the bias the same start leaves the biased marginal quickly
    control = histogram(equilibrium_runs["unbiased_from_biased"]["positions"][:, 0])
    assert js(control, exact_biased) > 20 * JS_TOLERANCE, js(control, exact_biased)


def test_sampler_keeps_the_unbiased_equilibrium(equilibrium_runs):
    sampled = histogram(equilibrium_runs["unbiased"]["positions"][:, 0])
    assert js(sampled, exact_bin_masses(biased=False)) < JS_TOLERANCE
    assert js(sampled, exact_bin_masses(biased=True)) > 20 * JS_TOLERANCE


def test_weights_recover_the_unbiased_marginal(equilibrium_runs):
    d = equilibrium_runs["biased"]
    exact_unbiased = exact_bin_masses(biased=False)
    raw = js(histogram(d["positions"][:, 0]), exact_unbiased)
    reweighted = js(histogram(d["positions"][:, 0], d["weights"]), exact_unbiased)
    assert reweighted < raw / 10, (reweighted, raw)
    assert reweighted < JS_TOLERANCE


def test_same_key_same_data_other_key_other_data(small_biased):
    again = mb.generate_data(biased=True, trajectories=4, frames=25, report_interval=20, equilibration_steps=30,
                             key=jax.random.key(3))
    for name, value in small_biased.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(again[name]), err_msg=name)
    other = mb.generate_data(biased=True, trajectories=4, frames=25, report_interval=20, equilibration_steps=30,
                             key=jax.random.key(4))
    assert not np.array_equal(other["xy"], small_biased["xy"])


def test_write_and_load_roundtrip(small_biased, tmp_path):
    path = mb.write_data(tmp_path / "sub" / "mb.npz", small_biased)
    assert not list(path.parent.glob("*.tmp*"))
    loaded = mb.load_data(path)
    assert set(loaded) == set(small_biased)
    for name, value in small_biased.items():
        np.testing.assert_array_equal(np.asarray(loaded[name]), np.asarray(value), err_msg=name)
    assert isinstance(loaded["kT"], float) and loaded["biased"] is True


# --- PMF error -----------------------------------------------------------------------------------

EDGES = mb.evaluation_edges()


def test_evaluation_edges():
    assert len(EDGES) == 101
    assert (EDGES[0], EDGES[-1]) == pytest.approx((8.82, 48.71), abs=0.011)


@pytest.mark.parametrize("points_per_bin", [1, 5])
def test_pmf_error_zero_for_exact_and_shift_invariant(points_per_bin):
    assert mb.pmf_error(EDGES, mb.exact_pmf, mb.exact_pmf, points_per_bin=points_per_bin) == pytest.approx(0, abs=1e-20)
    shifted = mb.pmf_error(EDGES, mb.exact_pmf, lambda x: mb.exact_pmf(x) + 123.4, points_per_bin=points_per_bin)
    assert shifted == pytest.approx(0.0, abs=1e-20)


@pytest.mark.parametrize("shift", [0.0, 7.0, -50.0])
def test_pmf_error_grows_with_the_perturbation(shift):
    """U = F + ε sin(x/3) + shift: error > 0, increasing in ε, ≈ quadratic for small ε."""
    def perturbed(eps):
        return lambda x: mb.exact_pmf(x) + eps * np.sin(x / 3.0) + shift
    errors = [mb.pmf_error(EDGES, mb.exact_pmf, perturbed(eps)) for eps in (0.1, 0.2, 0.5, 1.0)]
    assert errors[0] > 0
    assert np.all(np.diff(errors) > 0), errors
    assert errors[1] / errors[0] == pytest.approx(4.0, rel=0.05)


def test_pmf_error_three_bins_by_hand():
    """p = (.5, .3, .2), q = (.2, .3, .5): m = (.35, .3, .35), error = 2 · 0.35 · log(2.5)²."""
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    free_energy = -np.log([0.5, 0.3, 0.2])
    model = -np.log([0.2, 0.3, 0.5]) + 3.0
    assert mb.pmf_error(edges, free_energy, model) == pytest.approx(2 * 0.35 * np.log(2.5) ** 2, rel=1e-12)
    # a model that leaves a bin empty: q_3 = 1e-10 (filled), the others renormalised p's
    empty = np.array([-np.log(0.6), -np.log(0.4), 1e6])
    q = np.array([0.6, 0.4, 1e-10])
    p = np.array([0.5, 0.3, 0.2])
    m = 0.5 * (p + q)
    expected = np.sum(m / m.sum() * (np.log(p) - np.log(q)) ** 2)
    assert mb.pmf_error(edges, free_energy, empty) == pytest.approx(expected, rel=1e-12)
    # kT: energies in units of 2 kT give the same error as halved energies at kT = 1
    assert mb.pmf_error(edges, 2 * free_energy, 2 * model, kT=2.0) == pytest.approx(
        2 * 0.35 * np.log(2.5) ** 2, rel=1e-12)


def test_pmf_error_rejects_wrong_lengths():
    with pytest.raises(ValueError):
        mb.pmf_error(np.arange(4.0), np.zeros(2), np.zeros(3))


def test_populated_range():
    x = np.linspace(-5, 5, 1001)
    assert mb.populated_range(x, x**2 + 3.0, cutoff=4.0) == pytest.approx((-2.0, 2.0))
    # two wells with a high barrier: one interval over both
    two_wells = np.minimum((x + 3) ** 2, (x - 3) ** 2 + 1)
    assert mb.populated_range(x, two_wells, cutoff=1.5) == pytest.approx((-3 - np.sqrt(1.5), 3 + np.sqrt(0.5)),
                                                                         abs=0.011)

