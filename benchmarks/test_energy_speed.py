"""Energy + forces of alanine dipeptide in OBC2: batched JAX against OpenMM Reference, side by side.

    .venv/bin/python -m pytest benchmarks/test_energy_speed.py --benchmark-enable

Each round evaluates the same BATCH configurations (Gaussian perturbations, σ = 0.01 nm, of the
minimised structure): JAX as one jitted, vmapped call (:func:`cgbench.energy.energy_and_forces`),
OpenMM Reference one configuration at a time through one Context (``setPositions`` +
``getState(energy, forces)``, what a Python sampler calling OpenMM would do). Round times are
therefore directly comparable; ``extra_info["configs_per_second"]`` is BATCH / mean round time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgbench.energy import PotentialEnergy, energy_and_forces
from cgbench.parity import openmm_energies_and_forces
from cgbench.peptides import Peptide, build_peptide
from cgbench.systems import create_system

BATCH = 1024


@pytest.fixture(scope="module")
def ala2_obc2():
    """(system, configurations of shape (BATCH, 22, 3) nm)."""
    peptide = Peptide("ala2", "A")
    topology, positions = build_peptide(peptide)
    system = create_system(topology, "obc2", peptide, constraints="none")
    rng = np.random.default_rng(0)
    return system, positions + 0.01 * rng.standard_normal((BATCH, *positions.shape))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_jax_energy_and_forces(benchmark, ala2_obc2, dtype):
    """One jitted call on a batch of BATCH configurations (compiled outside the timing)."""
    system, configurations = ala2_obc2
    with jax.enable_x64(dtype == "float64"):
        energy = PotentialEnergy.from_system(system, dtype=dtype)
        x = jnp.asarray(configurations, dtype)
        jax.block_until_ready(energy_and_forces(energy, x))
        benchmark(lambda: jax.block_until_ready(energy_and_forces(energy, x)))
    benchmark.extra_info["configs_per_second"] = BATCH / benchmark.stats.stats.mean


def test_openmm_reference_energy_and_forces(benchmark, ala2_obc2):
    """The same BATCH configurations, one at a time, on OpenMM's Reference platform."""
    system, configurations = ala2_obc2
    benchmark.pedantic(openmm_energies_and_forces, args=(system, configurations), rounds=5, iterations=1,
                       warmup_rounds=1)
    benchmark.extra_info["configs_per_second"] = BATCH / benchmark.stats.stats.mean
