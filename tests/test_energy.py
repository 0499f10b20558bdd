"""The JAX energy of an OpenMM system (cgbench.energy) against OpenMM's Reference platform.

Every test runs with JAX's 64-bit mode switched on locally (``jax.enable_x64``), so the rest of the
suite keeps JAX's defaults. Tolerances are those of ``cgbench parity``: relative energy error
≤ 1e-7 and force error ≤ 1e-3 kJ/mol/nm in float64 (observed: ~1e-14 and ~1e-10).
"""

import functools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import openmm
import pytest
from openmm import app

from cgbench.cli import main
from cgbench.energy import PotentialEnergy, UnsupportedForceError, energy_and_forces
from cgbench.parity import (
    ENERGY_TOLERANCE,
    FORCE_TOLERANCE,
    TOLERANCES,
    compare,
    openmm_energies_and_forces,
    sample_configurations,
)
from cgbench.peptides import Peptide, build_peptide
from cgbench.systems import create_system

# Alanine dipeptide, tripeptide, and charged (K+, D-) residues with glycine and proline.
SEQUENCES = ["A", "AAA", "GPKD"]
SOLVENTS = ["vacuum", "obc1", "obc2"]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@functools.cache
def structure(sequence):
    return build_peptide(Peptide(sequence, sequence))


def system_of(sequence, solvent, constraints="none"):
    """OpenMM system; ``obc2-custom`` is amber's OBC2 CustomGBForce (not replaced by the native one)."""
    topology, _ = structure(sequence)
    if solvent == "obc2-custom":
        return app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
            topology, nonbondedMethod=app.NoCutoff)
    return create_system(topology, solvent, Peptide(sequence, sequence), constraints=constraints)


def perturbed(sequence, n, scale=0.01, seed=0):
    """``n`` Gaussian perturbations (σ = ``scale`` nm) of the minimised structure."""
    _, positions = structure(sequence)
    rng = np.random.default_rng(seed)
    return positions + scale * rng.standard_normal((n, *positions.shape))


@eqx.filter_jit
def per_term(energy, positions):
    """Energy and forces of each term separately, batched: lists of ``(batch,)``, ``(batch, n, 3)``."""
    def one(x):
        out = [jax.value_and_grad(term)(x) for term in energy.terms]
        return [e for e, _ in out], [-g for _, g in out]

    return jax.vmap(one)(positions)


@pytest.mark.parametrize("sequence, solvent", [
    ("A", "vacuum"), ("A", "obc1"), ("A", "obc2"), ("AAA", "obc2-custom"), ("GPKD", "vacuum"),
    ("GPKD", "obc1"), ("GPKD", "obc2")])
def test_each_force_term_matches_openmm(sequence, solvent):
    """Each OpenMM force in its own force group against the JAX term made from it."""
    system = system_of(sequence, solvent)
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(index)
    energy = PotentialEnergy.from_system(system)
    kinds = {type(system.getForce(i)).__name__ for i in energy.force_indices}
    assert kinds >= {"HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce"}
    if solvent != "vacuum":
        assert kinds & {"GBSAOBCForce", "CustomGBForce"}
    x = perturbed(sequence, 3)
    energies, forces = per_term(energy, jnp.asarray(x))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for k, config in enumerate(x):
        context.setPositions(config)
        for term, index, e, f in zip(energy.terms, energy.force_indices, energies, forces):
            state = context.getState(getEnergy=True, getForces=True, groups={index})
            e_ref = state.getPotentialEnergy()._value
            f_ref = state.getForces(asNumpy=True)._value
            name = type(term).__name__
            assert abs(float(e[k]) - e_ref) <= 1e-9 * max(abs(e_ref), 1.0), (name, float(e[k]), e_ref)
            assert np.abs(np.asarray(f[k]) - f_ref).max() <= 1e-6, name


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("solvent", SOLVENTS)
def test_whole_system_parity(sequence, solvent):
    """Minimised, perturbed and Langevin-MD configurations, at the parity command's tolerances.

    The system has bonds to hydrogen constrained (the peptide's MD setting): constraints do not
    enter the energy, and the JAX energy ignores them.
    """
    system = system_of(sequence, solvent, constraints="h_bonds")
    assert system.getNumConstraints() > 0
    configurations, counts = sample_configurations(system, structure(sequence)[1], 7, seed=1)
    assert counts == {"minimised": 1, "perturbed": 3, "md": 3}
    errors = compare(system, configurations)
    assert errors["max_rel_energy_error"] <= ENERGY_TOLERANCE, errors
    assert errors["max_abs_force_error"] <= FORCE_TOLERANCE, errors
    # The configurations are distinct and physical: a test of one structure would prove little.
    assert errors["energy_range"][1] - errors["energy_range"][0] > 10.0


@pytest.mark.parametrize("solvent", ["obc1", "obc2"])  # every vacuum term is part of these
def test_forces_are_minus_the_finite_difference_gradient(solvent):
    """Central differences of the energy (h = 1e-5 nm) along every coordinate, one batched call."""
    energy = PotentialEnergy.from_system(system_of("GPKD", solvent))
    x = jnp.asarray(perturbed("GPKD", 1, seed=3)[0])
    h = 1e-5
    steps = h * jnp.eye(x.size).reshape(x.size, *x.shape)
    energies, forces = energy_and_forces(energy, jnp.concatenate([x[None], x + steps, x - steps]))
    numerical = -(energies[1:1 + x.size] - energies[1 + x.size:]).reshape(x.shape) / (2 * h)
    np.testing.assert_allclose(np.asarray(forces[0]), np.asarray(numerical), rtol=1e-5, atol=1e-3)


def test_float32_runs_and_is_close():
    """float32 needs no x64 mode and stays within single-precision error of OpenMM."""
    system = system_of("GPKD", "obc2")
    x = perturbed("GPKD", 4)
    e_ref, f_ref = openmm_energies_and_forces(system, x)
    with jax.enable_x64(False):
        energy = PotentialEnergy.from_system(system, dtype=jnp.float32)
        e, f = energy_and_forces(energy, jnp.asarray(x, jnp.float32))
        assert e.dtype == jnp.float32 and f.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(e), e_ref, rtol=1e-5)
    assert np.abs(np.asarray(f) - f_ref).max() <= 1e-5 * np.abs(f_ref).max()


def test_float64_without_x64_raises():
    with jax.enable_x64(False), pytest.raises(RuntimeError, match="jax_enable_x64"):
        PotentialEnergy.from_system(system_of("A", "vacuum"))


def test_batches_equal_single_configurations():
    """(batch, n, 3), nested (2, 2, n, 3) and an outer vmap all equal one-by-one evaluation."""
    energy = PotentialEnergy.from_system(system_of("A", "obc1"))
    x = jnp.asarray(perturbed("A", 4))
    e_batch, f_batch = energy_and_forces(energy, x)
    e_nested, f_nested = energy_and_forces(energy, x.reshape(2, 2, *x.shape[1:]))
    e_vmap, f_vmap = jax.vmap(energy_and_forces, in_axes=(None, 0))(energy, x)
    for k in range(len(x)):
        e, f = energy_and_forces(energy, x[k])
        np.testing.assert_allclose(e_batch[k], e, rtol=1e-13)
        np.testing.assert_allclose(f_batch[k], f, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(e_nested.reshape(-1), e_batch, rtol=1e-13)
    np.testing.assert_allclose(f_nested.reshape(f_batch.shape), f_batch, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(e_vmap, e_batch, rtol=1e-13)
    np.testing.assert_allclose(f_vmap, f_batch, rtol=1e-12, atol=1e-9)


def test_chunked_batch_equals_single_configurations(monkeypatch):
    """A batch larger than one chunk (and not a multiple of it) is evaluated chunk by chunk, padded."""
    import cgbench.energy

    energy = PotentialEnergy.from_system(system_of("A", "obc2"))
    x = jnp.asarray(perturbed("A", 11, seed=3))
    monkeypatch.setattr(cgbench.energy, "CHUNK_BYTES", 4 * energy.n_atoms**2 * 8)  # chunks of 4
    assert cgbench.energy._chunk_size(energy.n_atoms, energy.dtype) == 4
    e_batch, f_batch = eqx.filter_jit(cgbench.energy.energy_and_forces.__wrapped__)(energy, x)
    e_ref, f_ref = openmm_energies_and_forces(system_of("A", "obc2"), np.asarray(x))
    assert e_batch.shape == (11,) and f_batch.shape == x.shape
    np.testing.assert_allclose(np.asarray(e_batch), e_ref, rtol=1e-7)
    assert np.abs(np.asarray(f_batch) - f_ref).max() <= FORCE_TOLERANCE
    for k in (0, 5, 10):
        e, f = energy_and_forces(energy, x[k])
        np.testing.assert_allclose(e_batch[k], e, rtol=1e-13)
        np.testing.assert_allclose(f_batch[k], f, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("solvent", ["obc1", "obc2"])
def test_generalized_born_forces_finite_at_zero_distance(solvent):
    """Self pairs (always r = 0) and two atoms on top of each other give finite GB forces."""
    system = system_of("A", solvent)
    energy = PotentialEnergy.from_system(system)
    gb = next(t for t in energy.terms if type(t).__name__ == "OBCGeneralizedBorn")
    x = np.array(structure("A")[1])
    x[1] = x[0]
    e, g = jax.value_and_grad(gb)(jnp.asarray(x))
    assert np.isfinite(float(e)) and np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(gb.born_radii(jnp.asarray(x))) > 0)
    assert np.isfinite(float(gb.autodiff_energy(jnp.asarray(x))))


@pytest.mark.parametrize("solvent", ["obc1", "obc2"])
def test_analytic_gb_gradient_equals_autodiff(solvent):
    """The hand-written GB gradient against autodiff of the plain expression (batch-last layout)."""
    gb = next(t for t in PotentialEnergy.from_system(system_of("GPKD", solvent)).terms
              if type(t).__name__ == "OBCGeneralizedBorn")
    x = jnp.transpose(jnp.asarray(perturbed("GPKD", 3, scale=0.03, seed=4)), (1, 2, 0))  # (n, 3, batch)
    energy, gradient = eqx.filter_jit(lambda m, y: m.energy_and_gradient(y))(gb, x)
    (_, reference), reference_gradient = eqx.filter_jit(jax.value_and_grad(
        lambda y, m: (jnp.sum(m.autodiff_energy(y)), m.autodiff_energy(y)), has_aux=True))(x, gb)
    np.testing.assert_allclose(np.asarray(energy), np.asarray(reference), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(gradient), np.asarray(reference_gradient), rtol=1e-10, atol=1e-9)


def test_gb_with_an_engulfed_atom():
    """A small atom inside a big one's descreening sphere (or_i < sr_j - r): OpenMM's correction term.

    Energy and forces match OpenMM's native GBSAOBCForce, and the analytic gradient matches autodiff
    and central differences (the correction's derivative cancels that of the lower limit L).
    """
    system = openmm.System()
    gb_force = openmm.GBSAOBCForce()
    for charge, radius, scale in ((0.5, 0.10, 0.8), (-0.5, 0.30, 1.0), (0.2, 0.15, 0.8)):
        system.addParticle(12.0)
        gb_force.addParticle(charge, radius, scale)
    system.addForce(gb_force)
    x = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.4, 0.1]])
    gb = PotentialEnergy.from_system(system).terms[0]
    assert 0.09 - 0.009 < 0.291 - 0.1  # atom 0 is engulfed by atom 1
    e_ref, f_ref = openmm_energies_and_forces(system, x[None])
    energy, gradient = jax.value_and_grad(gb)(jnp.asarray(x))
    assert float(energy) == pytest.approx(e_ref[0], rel=1e-12)
    np.testing.assert_allclose(-np.asarray(gradient), f_ref[0], rtol=1e-10, atol=1e-9)
    autodiff = jax.grad(gb.autodiff_energy)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(gradient), np.asarray(autodiff), rtol=1e-10, atol=1e-9)
    h = 1e-6
    steps = h * np.eye(x.size).reshape(x.size, *x.shape)
    batched = jax.jit(jax.vmap(gb))
    numerical = (batched(jnp.asarray(x + steps)) - batched(jnp.asarray(x - steps))) / (2 * h)
    np.testing.assert_allclose(np.asarray(gradient).ravel(), np.asarray(numerical), rtol=1e-6, atol=1e-5)


def test_torsion_sign_convention_with_an_asymmetric_phase():
    """Phases other than 0 and π tell the dihedral's sign: compare with OpenMM on random geometry."""
    system = openmm.System()
    for _ in range(4):
        system.addParticle(12.0)
    torsion = openmm.PeriodicTorsionForce()
    for n, phase, k in ((1, 1.0, 3.0), (2, -0.4, 2.0), (3, 2.5, 1.5)):
        torsion.addTorsion(0, 1, 2, 3, n, phase, k)
    system.addForce(torsion)
    x = np.random.default_rng(5).normal(scale=0.15, size=(8, 4, 3))
    e_ref, f_ref = openmm_energies_and_forces(system, x)
    e, f = energy_and_forces(PotentialEnergy.from_system(system), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(e), e_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(f), f_ref, rtol=1e-9, atol=1e-9)


def _custom_bond():
    system = system_of("A", "vacuum")
    force = openmm.CustomBondForce("k*r")
    force.addPerBondParameter("k")
    force.addBond(0, 1, [1.0])
    system.addForce(force)
    return system


def _cutoff_nonbonded():
    system = system_of("A", "vacuum")
    next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)).setNonbondedMethod(
        openmm.NonbondedForce.CutoffNonPeriodic)
    return system


def _periodic():
    system = system_of("A", "vacuum")
    system.setDefaultPeriodicBoxVectors(*np.eye(3) * 3.0)
    next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)).setNonbondedMethod(
        openmm.NonbondedForce.PME)
    return system


def _gbn2():
    return app.ForceField("amber14-all.xml", "implicit/gbn2.xml").createSystem(
        structure("A")[0], nonbondedMethod=app.NoCutoff)


@pytest.mark.parametrize("make, message", [(_custom_bond, "CustomBondForce is not supported"),
                                           (_cutoff_nonbonded, "NonbondedForce with a cutoff"),
                                           (_periodic, "periodic systems"),
                                           (_gbn2, "CustomGBForce is supported only in amber's OBC form")])
def test_unsupported_force_raises_with_its_name(make, message):
    with pytest.raises(UnsupportedForceError, match=message):
        PotentialEnergy.from_system(make())


def test_parity_cli_prints_json_and_exits_zero(capsys):
    assert main(["parity", "--sequence", "GP", "--solvent", "obc1", "--samples", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["samples"] == 5 and report["n_atoms"] == len(structure("GP")[1])
    assert report["max_rel_energy_error"] <= 1e-7 and report["max_abs_force_error"] <= 1e-3
    assert "CustomGBForce" in report["forces"]


def test_parity_cli_float32_defaults_to_float32_tolerances(capsys):
    assert main(["parity", "--sequence", "A", "--solvent", "obc2", "--samples", "3", "--dtype", "float32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtype"] == "float32" and report["passed"]
    assert (report["energy_tolerance"], report["force_tolerance"]) == TOLERANCES["float32"]
    assert report["max_abs_force_error"] > TOLERANCES["float64"][1]  # float64's would fail it


@pytest.mark.parametrize(("sequence", "message"), [("AXA", "unknown: X"), ("kgp", "unknown: g, k, p"),
                                                   ("", "empty sequence")])
def test_parity_cli_rejects_a_bad_sequence_by_name(sequence, message):
    with pytest.raises(SystemExit, match=message):
        main(["parity", "--sequence", sequence, "--solvent", "obc2", "--samples", "3"])


def test_parity_cli_exits_non_zero_above_tolerance(capsys):
    # float32 cannot meet a zero tolerance: the command must report it and fail.
    code = main(["parity", "--sequence", "A", "--solvent", "obc2", "--samples", "3", "--dtype", "float32",
                 "--energy-tolerance", "0", "--force-tolerance", "0"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["passed"] and report["max_abs_force_error"] > 0
