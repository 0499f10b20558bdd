"""BAOAB Langevin (`cgbench.langevin`): exact harmonic moments, continuation, fixed atoms, ala2 vs OpenMM.

Harmonic references are BAOAB's exact stationary moments for U = ½ k |x|² (Leimkuhler &
Matthews 2013; checked against the discrete Lyapunov equation of the linear map): ⟨|x|²⟩ = 3kT/k
at every stable ω dt, on-step ⟨|v|²⟩ = 3kT/m · (1 − (ω dt)²/4), and the middle (post-O, OpenMM)
velocities exact. Errors are standard errors over independent particles (each particle's time
average is one independent sample); tolerances are 4 of them.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgbench.langevin import (LangevinState, baoab_step, init_state, kinetic_energy,
                              masses_from_system, run_langevin)
from cgbench.units import GAS_CONSTANT

SIGMAS = 4.0

# --- independent 3-D harmonic oscillators ------------------------------------------------------

OMEGA = 20.0                            # 1/ps, the same for every particle: k_i = m_i ω²
TEMPERATURES = np.array([250.0, 400.0])  # K, one per replica (kT per replica is part of the API)
N_PARTICLES = 1000                      # per replica
MASSES = np.where(np.arange(N_PARTICLES) % 2 == 0, 1.0, 16.0)  # amu
SPRINGS = MASSES * OMEGA**2             # kJ/mol/nm²


def harmonic_forces(x):
    k = jnp.asarray(SPRINGS, x.dtype)[:, None]
    return 0.5 * jnp.sum(k * x * x, axis=(-2, -1)), -k * x


def _normalised_mean(samples):
    """Mean and standard error over particles of per-particle time averages, samples (T, B, n)."""
    per_particle = samples.mean(axis=0).reshape(-1)
    return per_particle.mean(), per_particle.std(ddof=1) / np.sqrt(per_particle.size)


@pytest.mark.parametrize("omega_dt, steps", [(0.05, 6000), (0.5, 1500), (1.0, 1500)])
def test_harmonic_moments(omega_dt, steps):
    """⟨|x|²⟩ k/3kT = 1 at every ω dt; on-step ⟨|v|²⟩ m/3kT = 1 − (ω dt)²/4; middle velocities = 1."""
    dt = omega_dt / OMEGA
    burn_in = int(1.0 / dt)  # 1 ps = 20/ω = 20/γ
    report = 10
    kT = GAS_CONSTANT * TEMPERATURES[:, None, None]
    x0 = jnp.zeros((len(TEMPERATURES), N_PARTICLES, 3), jnp.float32)
    out = run_langevin(harmonic_forces, x0, steps=burn_in // report * report + steps, report_interval=report,
                       dt=dt, friction=OMEGA, temperature=TEMPERATURES, masses=MASSES, key=jax.random.key(1))
    keep = slice(burn_in // report, None)
    x2 = np.sum(np.asarray(out["positions"][keep], np.float64) ** 2, -1) * SPRINGS / (3 * kT[..., 0])
    v2 = np.sum(np.asarray(out["velocities"][keep], np.float64) ** 2, -1) * MASSES / (3 * kT[..., 0])
    middle = np.asarray(out["velocities"][keep], np.float64) + 0.5 * dt * OMEGA**2 * np.asarray(
        out["positions"][keep], np.float64)  # v − (dt/2) F/m with F = −m ω² x
    middle2 = np.sum(middle**2, -1) * MASSES / (3 * kT[..., 0])

    x2_mean, x2_error = _normalised_mean(x2)
    assert abs(x2_mean - 1) < SIGMAS * x2_error, (x2_mean, x2_error)
    v2_mean, v2_error = _normalised_mean(v2)
    expected = 1 - omega_dt**2 / 4
    assert abs(v2_mean - expected) < SIGMAS * v2_error, (v2_mean, expected, v2_error)
    if omega_dt >= 0.5:  # the on-step bias is resolved, not hidden in the noise
        assert 1 - v2_mean > SIGMAS * v2_error, (v2_mean, v2_error)
    middle_mean, middle_error = _normalised_mean(middle2)
    assert abs(middle_mean - 1) < SIGMAS * middle_error, (middle_mean, middle_error)
    np.testing.assert_allclose(out["kinetic_energy"][keep], 1.5 * (middle2 * kT[..., 0]).sum(-1), rtol=1e-4)


def test_without_friction_energy_is_conserved():
    """γ = 0 is velocity Verlet: the total energy stays within (ω dt)²/4 of its start, no drift."""
    rng = np.random.default_rng(0)
    x0, v0 = rng.normal(size=(2, 50, 3)) * 0.05, rng.normal(size=(2, 50, 3))
    masses, springs = MASSES[:50], SPRINGS[:50, None]
    start = 0.5 * np.sum(springs * x0**2 + masses[:, None] * v0**2, axis=(1, 2))
    with jax.enable_x64(True):
        def forces(x):
            return 0.5 * jnp.sum(springs * x * x, axis=(-2, -1)), -springs * x

        out = run_langevin(forces, jnp.asarray(x0), velocities=jnp.asarray(v0), steps=2000, report_interval=10,
                           dt=0.05 / OMEGA, friction=0.0, temperature=300.0, masses=masses, key=jax.random.key(2))
        total = np.asarray(out["potential_energy"]) + np.asarray(kinetic_energy(out["velocities"], masses))
    assert np.abs(total / start - 1).max() < 0.05**2 / 4, np.abs(total / start - 1).max()
    assert np.abs(total[-20:].mean(0) / total[:20].mean(0) - 1).max() < 1e-4


# --- continuation and fixed atoms: a chain of springs, some atoms fixed ---------------------------

CHAIN = 12
FIXED = np.zeros(CHAIN, bool)
FIXED[[0, 5, 11]] = True


def chain_forces(x):
    """Quartic-plus-harmonic springs between neighbours (nonlinear, couples fixed and free atoms)."""
    def energy(y):
        r = jnp.linalg.norm(y[1:] - y[:-1], axis=-1)
        return jnp.sum(50.0 * (r - 0.15) ** 2 + 500.0 * (r - 0.15) ** 4)

    e, g = jax.vmap(jax.value_and_grad(energy))(x)
    return e, -g


@pytest.fixture(scope="module")
def chain_start():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(scale=0.1, size=(4, CHAIN, 3)), axis=1)
    v = rng.normal(size=(4, CHAIN, 3))  # nonzero, also for the fixed atoms
    return jnp.asarray(x, jnp.float32), jnp.asarray(v, jnp.float32)


def _run_chain(start, steps, key, **kwargs):
    return run_langevin(chain_forces, start, steps=steps, report_interval=25, dt=0.002, friction=2.0,
                        temperature=300.0, masses=np.linspace(1.0, 14.0, CHAIN), key=key, fixed=FIXED, **kwargs)


def test_continuation_is_bit_for_bit(chain_start):
    """2N steps at once == N steps, then N more from the returned state and key."""
    x, v = chain_start
    whole = _run_chain(x, 400, jax.random.key(4), velocities=v)
    first = _run_chain(x, 200, jax.random.key(4), velocities=v)
    second = _run_chain(first["state"], 200, first["key"])
    for name in ("positions", "velocities", "forces", "potential_energy", "kinetic_energy"):
        np.testing.assert_array_equal(np.concatenate([first[name], second[name]]), whole[name], err_msg=name)
    for a, b in zip(second["state"], whole["state"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(second["key"]), jax.random.key_data(whole["key"]))
    assert not np.array_equal(first["positions"][-1], whole["positions"][-1])  # it did move on


def test_fixed_atoms_never_change(chain_start):
    x, v = chain_start
    out = _run_chain(x, 200, jax.random.key(5), velocities=v)
    positions, velocities = np.asarray(out["positions"]), np.asarray(out["velocities"])
    np.testing.assert_array_equal(positions[:, :, FIXED], np.broadcast_to(x[:, FIXED], positions[:, :, FIXED].shape))
    np.testing.assert_array_equal(velocities[:, :, FIXED], np.broadcast_to(v[:, FIXED], velocities[:, :, FIXED].shape))
    moved = np.abs(positions[-1] - np.asarray(x)).max(axis=-1)  # (B, n)
    assert np.all(moved[:, ~FIXED] > 1e-3)
    assert np.any(np.abs(np.asarray(out["forces"])[:, :, FIXED]) > 1.0)  # fixed atoms do feel forces
    drawn = _run_chain(x, 25, jax.random.key(6))  # Maxwell–Boltzmann draw: fixed atoms start at rest
    assert np.all(np.asarray(drawn["velocities"])[:, :, FIXED] == 0)
    assert np.all(np.asarray(drawn["velocities"])[:, :, ~FIXED] != 0)
    masses = np.linspace(1.0, 14.0, CHAIN)  # kinetic energy: free atoms' middle velocities only
    middle = drawn["state"].velocities - 0.5 * 0.002 * drawn["state"].forces / masses[:, None]
    np.testing.assert_allclose(drawn["kinetic_energy"][-1], kinetic_energy(middle[:, ~FIXED], masses[~FIXED]),
                               rtol=1e-5)


def test_baoab_step_matches_openmm_order_of_operations():
    """One step by hand: B, A, O (c = exp(−γ dt)), A, B, with the noise that the key draws."""
    rng = np.random.default_rng(7)
    x, v = rng.normal(size=(2, 3, 3)), rng.normal(size=(2, 3, 3))
    masses, k, dt, gamma, kT = np.array([1.0, 12.0, 16.0]), 300.0, 0.002, 3.0, 2.5
    with jax.enable_x64(True):
        forces = lambda y: (0.5 * k * jnp.sum(y * y, axis=(-2, -1)), -k * y)  # noqa: E731
        state = init_state(forces, jnp.asarray(x), jnp.asarray(v))
        key = jax.random.key(8)
        new = baoab_step(forces, state, dt=dt, friction=gamma, kT=kT, masses=masses, key=key)
        xi = np.asarray(jax.random.normal(key, x.shape, jnp.float64))
    m = masses[:, None]
    c = np.exp(-gamma * dt)
    vh = v - 0.5 * dt * k * x / m
    xh = x + 0.5 * dt * vh
    vo = c * vh + np.sqrt((1 - c * c) * kT / m) * xi
    x1 = xh + 0.5 * dt * vo
    v1 = vo - 0.5 * dt * k * x1 / m
    assert isinstance(new, LangevinState)
    np.testing.assert_allclose(new.positions, x1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(new.velocities, v1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(new.forces, -k * x1, rtol=1e-12)
    np.testing.assert_allclose(new.potential_energy, 0.5 * k * np.sum(x1 * x1, axis=(1, 2)), rtol=1e-12)


# --- alanine dipeptide in OBC2 against OpenMM's LangevinMiddleIntegrator ----------------------------

TEMPERATURE, FRICTION, DT = 300.0, 1.0, 0.001          # K, 1/ps, ps
EQUILIBRATION, BLOCK, BLOCKS, REPORT = 5000, 5000, 4, 50  # steps: 5 ps, then 4 blocks of 5 ps
JAX_REPLICAS, OPENMM_REPLICAS = 16, 8


@pytest.fixture(scope="module")
def ala2_obc2():
    from cgbench.peptides import Peptide, build_peptide
    from cgbench.systems import create_system

    peptide = Peptide("ala2", "A")
    topology, positions = build_peptide(peptide)
    return create_system(topology, "obc2", peptide, constraints="none"), positions


def _openmm_energies(system, positions, seed):
    """Potential energies (BLOCKS·BLOCK/REPORT,) kJ/mol of one OpenMM Reference replica after equilibration."""
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, DT)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions * unit.nanometer)
    context.setVelocitiesToTemperature(TEMPERATURE, seed)
    integrator.step(EQUILIBRATION)
    energies = []
    for _ in range(BLOCKS * BLOCK // REPORT):
        integrator.step(REPORT)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(energies)


def _replica_means(samples):
    """Mean and standard error from per-replica means, samples (T, R): replicas are independent."""
    means = samples.mean(axis=0)
    return means.mean(), means.std(ddof=1) / np.sqrt(means.size)


def test_ala2_obc2_matches_openmm_langevin_middle(ala2_obc2):
    """⟨U⟩ over 16 × 20 ps (after 5 ps) equals OpenMM's over 8 × 20 ps within 4 combined standard
    errors; the middle-velocity kinetic temperature averages to 300 K within 4 standard errors.

    Scale of the test: U of one configuration fluctuates by sqrt(n_dof/2)·kT ≈ 14 kJ/mol
    (n_dof = 66); a replica's 20 ps mean by ≈ 2-3 kJ/mol (energy correlation time ≲ 1 ps), so
    the combined error is ≈ 1 kJ/mol and the tolerance ≈ 4-5 kJ/mol, while a 10 % error in kT
    moves ⟨U⟩ by ≈ n_dof/2 · 0.1 kT ≈ 8 kJ/mol. Errors come from the replica means (each replica
    is independent), not from frames, which are correlated.
    """
    from cgbench.energy import PotentialEnergy, energy_and_forces

    system, positions = ala2_obc2
    masses = masses_from_system(system)
    forces = eqx.Partial(energy_and_forces, PotentialEnergy.from_system(system, dtype=jnp.float32))
    start = jnp.asarray(np.broadcast_to(positions, (JAX_REPLICAS, *positions.shape)), jnp.float32)
    settings = dict(steps=BLOCK, report_interval=REPORT, dt=DT, friction=FRICTION, temperature=TEMPERATURE,
                    masses=masses)
    out = run_langevin(forces, start, key=jax.random.key(9), **settings)  # equilibration, same program
    energies, kinetic = [], []
    for _ in range(BLOCKS):
        out = run_langevin(forces, out["state"], key=out["key"], **settings)
        energies.append(np.asarray(out["potential_energy"], np.float64))
        kinetic.append(np.asarray(out["kinetic_energy"], np.float64))
    energies, kinetic = np.concatenate(energies), np.concatenate(kinetic)
    assert np.all(np.isfinite(energies))

    reference = np.stack([_openmm_energies(system, positions, seed) for seed in range(1, OPENMM_REPLICAS + 1)],
                         axis=1)
    jax_mean, jax_error = _replica_means(energies)
    openmm_mean, openmm_error = _replica_means(reference)
    combined = np.hypot(jax_error, openmm_error)
    print(f"<U> JAX {jax_mean:.2f} ± {jax_error:.2f}, OpenMM {openmm_mean:.2f} ± {openmm_error:.2f} kJ/mol")
    assert abs(jax_mean - openmm_mean) < SIGMAS * combined, (jax_mean, openmm_mean, combined)

    temperature = 2 * kinetic / (3 * len(masses) * GAS_CONSTANT)  # no constraints, no COM removal: 66 dof
    t_mean, t_error = _replica_means(temperature)
    print(f"kinetic temperature {t_mean:.2f} ± {t_error:.2f} K")
    assert abs(t_mean - TEMPERATURE) < SIGMAS * t_error, (t_mean, t_error)
