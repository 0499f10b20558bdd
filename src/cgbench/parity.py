"""Parity of the JAX energy (:mod:`cgbench.energy`) with OpenMM's Reference platform.

``cgbench parity --sequence KGP --solvent obc2 --samples 100`` builds the capped peptide, draws
configurations and compares energies and forces; run it after adding a peptide.

Configurations (deterministic for a given seed), ``samples`` in all:

1. the minimised structure (:func:`cgbench.peptides.build_peptide`);
2. Gaussian perturbations of it, half of the rest, alternating σ = 0.005 and 0.01 nm per coordinate
   (thermal scale: bonds to hydrogen fluctuate by ~0.01 nm at 300 K);
3. frames of Langevin MD at the peptide's temperature on the Reference platform (1 ps⁻¹ friction,
   2 fs steps, bonds to hydrogen constrained; 1 ps of equilibration, then one frame every 0.2 ps).

Errors: ``relative energy error = |E_jax - E_openmm| / max(|E_openmm|, 1 kJ/mol)`` (the floor keeps
an energy that happens to be near zero from inflating it), force error = largest absolute
difference of any force component, kJ/mol/nm. Default tolerances (:data:`TOLERANCES`): float64
1e-7 and 1e-3 (the issue's); float32 1e-3 and 0.5 kJ/mol/nm (measured float32 errors, 22-109
atoms in OBC2: ≤ 1.7e-4 relative, ≤ 0.08 kJ/mol/nm).

Units: nm, kJ/mol, kJ/mol/nm, K.
"""

from __future__ import annotations

import time

import numpy as np

#: (relative energy, force in kJ/mol/nm) tolerances per JAX precision.
TOLERANCES = {"float64": (1e-7, 1e-3), "float32": (1e-3, 0.5)}
ENERGY_TOLERANCE, FORCE_TOLERANCE = TOLERANCES["float64"]
#: Denominator floor of the relative energy error, kJ/mol.
ENERGY_FLOOR = 1.0
PERTURBATION_SCALES = (0.005, 0.01)
MD_STEP_PS = 0.002
MD_EQUILIBRATION_STEPS = 500
MD_FRAME_INTERVAL = 100


def sample_configurations(system, positions: np.ndarray, samples: int, *, temperature: float = 300.0,
                          seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """Minimised structure, Gaussian perturbations and Langevin MD frames (see module docstring).

    Args:
        system: ``openmm.System`` used for the MD (its constraints are applied there).
        positions: Minimised structure, nm, shape ``(n_atoms, 3)``.
        samples: Number of configurations (≥ 1).
        temperature: MD temperature, K.
        seed: Seed of the perturbations and of the MD (velocities and Langevin noise).

    Returns:
        ``(configurations, counts)``: shape ``(samples, n_atoms, 3)`` in nm, and how many of each
        kind (``minimised``, ``perturbed``, ``md``).
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    rng = np.random.default_rng(seed)
    n_perturbed = (samples - 1) // 2
    n_md = samples - 1 - n_perturbed
    scales = np.resize(np.asarray(PERTURBATION_SCALES), n_perturbed)[:, None, None]
    perturbed = positions + scales * rng.standard_normal((n_perturbed, *positions.shape))
    frames = langevin_frames(system, positions, n_md, temperature=temperature, seed=seed)
    configurations = np.concatenate([positions[None], perturbed, frames], axis=0)
    return configurations, {"minimised": 1, "perturbed": n_perturbed, "md": n_md}


def langevin_frames(system, positions: np.ndarray, frames: int, *, temperature: float = 300.0,
                    seed: int = 0) -> np.ndarray:
    """``frames`` MD frames, shape ``(frames, n_atoms, 3)`` nm, on the Reference platform (seeded)."""
    import openmm
    from openmm import unit

    out = np.empty((frames, *positions.shape))
    if frames == 0:
        return out
    integrator = openmm.LangevinMiddleIntegrator(temperature, 1.0, MD_STEP_PS)
    integrator.setRandomNumberSeed(seed + 1)  # 0 would mean "pick one at random"
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions * unit.nanometer)
    context.applyConstraints(1e-8)
    context.setVelocitiesToTemperature(temperature, seed + 1)
    integrator.step(MD_EQUILIBRATION_STEPS)
    for k in range(frames):
        integrator.step(MD_FRAME_INTERVAL)
        out[k] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return out


def openmm_energies_and_forces(system, configurations: np.ndarray, *, platform: str = "Reference"
                               ) -> tuple[np.ndarray, np.ndarray]:
    """OpenMM energies ``(batch,)`` kJ/mol and forces ``(batch, n_atoms, 3)`` kJ/mol/nm, one Context."""
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    energies = np.empty(len(configurations))
    forces = np.empty(configurations.shape)
    for k, x in enumerate(configurations):
        context.setPositions(x * unit.nanometer)
        state = context.getState(getEnergy=True, getForces=True)
        energies[k] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces[k] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energies, forces


def compare(system, configurations: np.ndarray, *, dtype=None) -> dict:
    """Largest energy and force errors of the JAX energy of ``system`` against OpenMM Reference.

    float64 (the default) runs inside ``jax.enable_x64(True)``, so the rest of the process keeps
    JAX's default precision.
    """
    import jax
    import jax.numpy as jnp

    from cgbench.energy import PotentialEnergy, energy_and_forces

    dtype = np.dtype(dtype or np.float64)
    reference_energy, reference_forces = openmm_energies_and_forces(system, configurations)
    with jax.enable_x64(dtype == np.float64):
        energy = PotentialEnergy.from_system(system, dtype=dtype)
        e, f = energy_and_forces(energy, jnp.asarray(configurations, dtype))
        e, f = np.asarray(e, np.float64), np.asarray(f, np.float64)
    energy_error = np.abs(e - reference_energy)
    relative = energy_error / np.maximum(np.abs(reference_energy), ENERGY_FLOOR)
    return {
        "max_rel_energy_error": float(relative.max()),
        "max_abs_energy_error": float(energy_error.max()),
        "max_abs_force_error": float(np.abs(f - reference_forces).max()),
        "max_abs_force": float(np.abs(reference_forces).max()),
        "energy_range": [float(reference_energy.min()), float(reference_energy.max())],
        "forces": [type(system.getForce(i)).__name__ for i in energy.force_indices],
    }


def parity_report(peptide, solvent: str, samples: int, *, seed: int = 0,
                  energy_tolerance: float | None = None, force_tolerance: float | None = None,
                  dtype=None) -> dict:
    """Build ``peptide``, sample ``samples`` configurations in ``solvent`` and compare with OpenMM.

    Args:
        peptide: A :class:`cgbench.peptides.Peptide`.
        solvent: ``vacuum``, ``obc1`` or ``obc2``.
        samples: Number of configurations.
        seed: Seed of the sampling.
        energy_tolerance: Largest allowed relative energy error (default: :data:`TOLERANCES`
            of ``dtype``).
        force_tolerance: Largest allowed force error, kJ/mol/nm (default likewise).
        dtype: ``float64`` (default) or ``float32``.

    Returns:
        A JSON-ready dict with the errors, ``passed`` and context (atoms, samples, seconds).
    """
    from cgbench.peptides import build_peptide
    from cgbench.systems import create_system

    if solvent not in ("vacuum", "obc1", "obc2"):
        raise ValueError(f"solvent {solvent!r}: parity covers vacuum, obc1 and obc2")
    default_energy, default_force = TOLERANCES[str(np.dtype(dtype or np.float64))]
    energy_tolerance = default_energy if energy_tolerance is None else energy_tolerance
    force_tolerance = default_force if force_tolerance is None else force_tolerance
    start = time.perf_counter()
    topology, positions = build_peptide(peptide)
    system = create_system(topology, solvent, peptide)  # the peptide's MD constraints: energy unchanged
    configurations, counts = sample_configurations(system, positions, samples,
                                                   temperature=peptide.temperature, seed=seed)
    errors = compare(system, configurations, dtype=dtype)
    passed = (errors["max_rel_energy_error"] <= energy_tolerance
              and errors["max_abs_force_error"] <= force_tolerance)
    return {
        "sequence": peptide.sequence,
        "solvent": solvent,
        "n_atoms": int(positions.shape[0]),
        "samples": samples,
        "sample_kinds": counts,
        "seed": seed,
        "dtype": str(np.dtype(dtype or np.float64)),
        **errors,
        "energy_tolerance": energy_tolerance,
        "force_tolerance": force_tolerance,
        "passed": bool(passed),
        "seconds": round(time.perf_counter() - start, 3),
    }
