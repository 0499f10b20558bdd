"""Batched BAOAB Langevin MD of alanine dipeptide in JAX (:func:`cgbench.langevin.run_langevin`).

    .venv/bin/python -m pytest benchmarks/test_langevin_speed.py --benchmark-enable

Each round runs STEPS steps (1 fs, 300 K, friction 1/ps, one report at the end) of BATCH replicas
of ala2 (22 atoms, constraints none) in OBC2 or OBC1, float32 energy, as one jitted call
(compiled outside the timing). ``extra_info`` converts the round's mean time into ns/day per
replica and aggregate (BATCH × per replica); compare with OpenMM's single replica on this machine
(``benchmarks/test_md_speed.py``, and the table in :mod:`cgbench.langevin`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgbench.energy import PotentialEnergy, energy_and_forces
from cgbench.langevin import masses_from_system, run_langevin
from cgbench.peptides import Peptide, build_peptide
from cgbench.systems import create_system

STEPS = 100
TIMESTEP_PS = 0.001


@pytest.fixture(scope="module")
def ala2():
    """(topology, minimised positions (22, 3) nm)."""
    return build_peptide(Peptide("ala2", "A"))


@pytest.mark.parametrize("batch", [16, 64, 256])
@pytest.mark.parametrize("solvent", ["obc2", "obc1"])
def test_jax_langevin(benchmark, ala2, solvent, batch):
    """STEPS BAOAB steps of `batch` replicas in one jitted call; ns/day in extra_info."""
    topology, positions = ala2
    system = create_system(topology, solvent, Peptide("ala2", "A"), constraints="none")
    forces = eqx.Partial(energy_and_forces, PotentialEnergy.from_system(system, dtype=jnp.float32))
    start = jnp.asarray(np.broadcast_to(positions, (batch, *positions.shape)), jnp.float32)
    masses = masses_from_system(system)

    def run():
        out = run_langevin(forces, start, steps=STEPS, report_interval=STEPS, dt=TIMESTEP_PS, friction=1.0,
                           temperature=300.0, masses=masses, key=jax.random.key(0))
        return jax.block_until_ready(out["state"])

    run()  # compile
    benchmark(run)
    per_replica = STEPS * TIMESTEP_PS * 1e-3 / benchmark.stats.stats.mean * 86400
    benchmark.extra_info["ns_per_day_per_replica"] = per_replica
    benchmark.extra_info["ns_per_day_aggregate"] = batch * per_replica
