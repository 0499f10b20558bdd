"""MD throughput per OpenMM platform (pytest-benchmark; run with `cgbench bench`, see README).

Two systems: an argon box and alanine dipeptide in each solvent (below).

The system is built from OpenMM alone, so the number tracks OpenMM and the machine, not our
code: 216 Lennard-Jones argon atoms in a periodic box at liquid density (120 K; cutoff 0.9 nm
or just under half the box), Langevin middle integrator, 5 fs steps. Each round runs STEPS steps;
``extra_info["ns_per_day"]`` converts the round's median time into simulated ns per day.
Platforms that this OpenMM cannot use (CUDA without a GPU, say) are skipped, not failed.
"""

import openmm
import pytest
from openmm import unit

N_SIDE = 6                       # 6³ = 216 atoms on a cubic lattice
DENSITY = 21.1                   # atoms per nm³ (liquid argon near 120 K)
SIGMA, EPSILON = 0.3405, 0.996   # nm, kJ/mol
MASS = 39.948                    # Da
TIMESTEP_PS = 0.005
STEPS = {"Reference": 50, "CPU": 500, "OpenCL": 2000, "CUDA": 2000}


def argon_box():
    """(system, positions in nm) of a Lennard-Jones argon fluid, lattice start."""
    n = N_SIDE**3
    box = (n / DENSITY) ** (1 / 3)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
    lj = openmm.NonbondedForce()
    lj.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    lj.setCutoffDistance(min(0.9, 0.49 * box))
    lj.setUseDispersionCorrection(True)
    for _ in range(n):
        system.addParticle(MASS)
        lj.addParticle(0.0, SIGMA, EPSILON)
    system.addForce(lj)
    spacing = box / N_SIDE
    positions = [openmm.Vec3((i + 0.5) * spacing, (j + 0.5) * spacing, (k + 0.5) * spacing)
                 for i in range(N_SIDE) for j in range(N_SIDE) for k in range(N_SIDE)]
    return system, positions


def _platform(name):
    try:
        return openmm.Platform.getPlatformByName(name)
    except openmm.OpenMMException:
        pytest.skip(f"OpenMM platform {name} is not available")


@pytest.mark.parametrize("platform", list(STEPS))
def test_md_ns_per_day(benchmark, platform):
    """STEPS[platform] Langevin steps of the argon box; ns/day in extra_info."""
    system, positions = argon_box()
    integrator = openmm.LangevinMiddleIntegrator(120 * unit.kelvin, 1 / unit.picosecond, TIMESTEP_PS * unit.picoseconds)
    integrator.setRandomNumberSeed(1)
    try:
        context = openmm.Context(system, integrator, _platform(platform))
    except openmm.OpenMMException as error:  # e.g. CUDA platform present but no device
        pytest.skip(f"OpenMM platform {platform} cannot start here: {error}")
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(120 * unit.kelvin, 1)
    steps = STEPS[platform]
    integrator.step(steps)  # warm-up: kernels compiled, neighbour lists built

    benchmark.pedantic(integrator.step, args=(steps,), rounds=5, iterations=1)
    ns = steps * TIMESTEP_PS / 1000
    benchmark.extra_info.update(platform=platform, atoms=system.getNumParticles(), steps_per_round=steps,
                                ns_per_day=ns / benchmark.stats.stats.median * 86400)


# Alanine dipeptide (Ac-Ala-NHMe) in each solvent, Langevin 2 fs with bonds to H constrained, on
# both CPU-side platforms: the numbers behind cgbench.systems.CPU_PLATFORM_OF_SOLVENT.
PEPTIDE_STEPS = {  # (solvent, platform) -> steps per round (~0.1-0.5 s each here)
    ("vacuum", "Reference"): 5000, ("vacuum", "CPU"): 500,
    ("obc2", "Reference"): 2000, ("obc2", "CPU"): 500,
    ("obc1", "Reference"): 200, ("obc1", "CPU"): 300,
    ("explicit", "CPU"): 100,
}


@pytest.fixture(scope="module")
def ala2():
    from cgbench.peptides import Peptide, build_peptide

    peptide = Peptide("ala2", "A")
    return peptide, build_peptide(peptide)


@pytest.mark.parametrize(("solvent", "platform"), list(PEPTIDE_STEPS))
def test_peptide_md_ns_per_day(benchmark, ala2, solvent, platform):
    """ala2 MD in vacuum / OBC1 / OBC2 / TIP3P per platform; ns/day in extra_info."""
    from cgbench.systems import create_system, solvate

    peptide, (topology, positions) = ala2
    if solvent == "explicit":
        topology, positions = solvate(topology, positions, peptide)
    system = create_system(topology, solvent, peptide)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, _platform(platform))
    context.setPositions(positions * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    steps = PEPTIDE_STEPS[(solvent, platform)]
    integrator.step(steps // 5)

    benchmark.pedantic(integrator.step, args=(steps,), rounds=5, iterations=1)
    benchmark.extra_info.update(platform=platform, solvent=solvent, atoms=system.getNumParticles(),
                                steps_per_round=steps,
                                ns_per_day=steps * 0.002 / 1000 / benchmark.stats.stats.median * 86400)
