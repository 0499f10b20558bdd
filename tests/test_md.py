"""MD stage: unbiased forces under metadynamics, resume after a kill, provenance, CG datasets, and
final-bias reweighting of a toy metadynamics run against its exact answer."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from cgbench.datasets import build_dataset, load_dataset, write_dataset
from cgbench.diagnostics import final_bias_weights
from cgbench.md import MDSettings, MetadynamicsSettings, load_frames, run_md
from cgbench.peptides import Peptide, build_peptide, pdb_text
from cgbench.resolutions import cg_mapping
from cgbench.systems import create_system, energy_and_forces, save_system
from cgbench.units import GAS_CONSTANT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ala2():
    peptide = Peptide(name="ala2", sequence="A")
    topology, positions = build_peptide(peptide)
    return peptide, topology, positions, create_system(topology, "obc2", peptide)


def settings(steps=2000, chunk=500, report=50):
    return MDSettings(temperature=300.0, timestep=1.0, friction=1.0, steps=steps, report_interval=report,
                      chunk_steps=chunk, equilibration_steps=100, minimisation_tolerance=10.0)


def strong_bias(topology):
    """A fast-growing bias (large Gaussians every 10 steps) so that its forces are large."""
    from cgbench.resolutions import cg_mapping

    mapping = cg_mapping(topology, "all_atom")
    return MetadynamicsSettings(phi_atoms=tuple(mapping.phi_beads[0]), psi_atoms=tuple(mapping.psi_beads[0]),
                                height=5.0, width=0.35, frequency=10, bias_factor=6.0, grid=72)


def test_stored_forces_and_energies_are_those_of_the_unbiased_potential(ala2, tmp_path):
    import openmm

    peptide, topology, positions, system = ala2
    meta = strong_bias(topology)
    run_md(system, topology, positions, topology.getNumAtoms(), settings(), tmp_path, seed=3,
           metadynamics=meta, progress=False)
    frames = load_frames(tmp_path)
    assert frames["bias_energy"][-1] > 5.0  # the bias is really there
    # The biased system, as the run built it, for the negative control.
    from cgbench.md import _add_metadynamics, _clone, _restore_bias

    biased = _clone(system)
    metadynamics = _add_metadynamics(biased, meta, 300.0)
    context = openmm.Context(biased, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    _restore_bias(metadynamics, frames["bias_grid"], context)
    worst_unbiased, worst_biased = 0.0, 0.0
    for i in (5, 20, 39):
        x = frames["positions"][i].astype(np.float64)
        energy, forces = energy_and_forces(system, x)
        # float32 positions in the trajectory: forces agree to rounding of the positions.
        worst_unbiased = max(worst_unbiased, np.abs(frames["forces"][i] - forces).max())
        assert frames["potential_energy"][i] == pytest.approx(energy, abs=0.05)
        context.setPositions(x)
        total = context.getState(getForces=True).getForces(asNumpy=True)._value
        worst_biased = max(worst_biased, np.abs(frames["forces"][i] - total).max())
    assert worst_unbiased < 0.5  # kJ/mol/nm
    assert worst_biased > 10 * worst_unbiased  # with the bias's forces the match is much worse


def _same_frames(a: Path, b: Path):
    fa, fb = load_frames(a), load_frames(b)
    for name in ("positions", "forces", "potential_energy", "bias_energy", "cvs", "time_ps", "bias_grid"):
        np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


@pytest.mark.parametrize("biased", [False, True], ids=["unbiased", "metadynamics"])
def test_interrupted_run_resumes_to_the_same_numbers(ala2, tmp_path, biased):
    peptide, topology, positions, system = ala2
    meta = strong_bias(topology) if biased else None
    kwargs = dict(seed=11, metadynamics=meta, progress=False)
    n = topology.getNumAtoms()
    run_md(system, topology, positions, n, settings(), tmp_path / "whole", **kwargs)
    partial = run_md(system, topology, positions, n, settings(), tmp_path / "split", max_chunks=2, **kwargs)
    assert partial == {"complete": False, "chunks": 2}
    assert (tmp_path / "split" / "checkpoint.npz").exists()
    assert not (tmp_path / "split" / "frames.npz").exists()
    run_md(system, topology, positions, n, settings(), tmp_path / "split", **kwargs)
    assert not (tmp_path / "split" / "checkpoint.npz").exists()
    _same_frames(tmp_path / "whole", tmp_path / "split")


def test_checkpoint_of_other_settings_is_not_resumed(ala2, tmp_path):
    peptide, topology, positions, system = ala2
    n = topology.getNumAtoms()
    run_md(system, topology, positions, n, settings(), tmp_path, seed=5, max_chunks=1, progress=False)
    summary = run_md(system, topology, positions, n, settings(steps=1000), tmp_path, seed=5, progress=False)
    assert summary["frames"] == 20
    np.testing.assert_allclose(load_frames(tmp_path)["time_ps"], 0.05 * np.arange(1, 21))


def test_unreadable_checkpoint_is_set_aside(ala2, tmp_path):
    peptide, topology, positions, system = ala2
    n = topology.getNumAtoms()
    run_md(system, topology, positions, n, settings(), tmp_path, seed=5, max_chunks=1, progress=False)
    (tmp_path / "checkpoint.npz").write_bytes(b"not a checkpoint")
    summary = run_md(system, topology, positions, n, settings(), tmp_path, seed=5, progress=False)
    assert summary["complete"] and summary["frames"] == 40
    assert (tmp_path / "checkpoint.corrupt.npz").read_bytes() == b"not a checkpoint"
    run_md(system, topology, positions, n, settings(), tmp_path / "clean", seed=5, progress=False)
    _same_frames(tmp_path, tmp_path / "clean")


def test_killed_md_job_resumes_from_its_checkpoint(ala2, tmp_path):
    """The command line as the workflow runs it, killed with SIGKILL mid-run, then rerun: the
    result equals an uninterrupted run, and the provenance records the run."""
    peptide, topology, positions, system = ala2
    structure, system_file = tmp_path / "structure.pdb", tmp_path / "system.xml"
    structure.write_text(pdb_text(topology, positions))
    save_system(system, system_file)
    config = tmp_path / "config.yaml"
    text = (REPO / "config.yaml").read_text()
    override = ["--config", str(config), "--preset", "smoke"]

    def command(out):
        return [sys.executable, "-m", "cgbench", *override, "md", "--peptide", "ala2", "--run", "obc2_metad",
                "--replica", "0", "--structure", str(structure), "--system", str(system_file),
                "--out", str(out), "--no-progress"]

    # The smoke preset's 2000 steps are too few to kill in flight: scale this run up through the
    # peptide's md_steps_scale (a config number), written into a copy of the config: 200 chunks
    # of 500 steps, ~0.1 s each on the Reference platform.
    config.write_text(text.replace("md_steps_scale: 1.0 ", "md_steps_scale: 50.0"))
    assert "md_steps_scale: 50.0" in config.read_text()
    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True, timeout=600)
    process = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "killed" / "checkpoint.npz"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (tmp_path / "killed" / "frames.npz").exists()
    done = int(np.load(checkpoint)["chunks"])
    assert 0 < done < 200
    rerun = subprocess.run(command(tmp_path / "killed"), check=True, capture_output=True, text=True, timeout=600)
    assert f"resuming {tmp_path / 'killed'} after chunk" in rerun.stderr
    _same_frames(tmp_path / "whole", tmp_path / "killed")
    record = json.loads((tmp_path / "killed" / "frames.npz.provenance.json").read_text())
    assert record["platform_openmm"] == "Reference" and record["integrator"] == "LangevinMiddleIntegrator"
    assert record["md"]["timestep"] == 1.0 and record["md"]["steps"] == 100000
    assert record["metadynamics"]["height"] == 1.2 and record["seed"] > 0
    assert record["ns"] == pytest.approx(0.1) and record["ns_per_day"] > 0 and record["openmm"]


@pytest.fixture(scope="module")
def ala2_run(ala2, tmp_path_factory):
    peptide, topology, positions, system = ala2
    folders = []
    for replica in range(2):
        folder = tmp_path_factory.mktemp(f"replica{replica}")
        run_md(system, topology, positions, topology.getNumAtoms(), settings(), folder, seed=20 + replica,
               metadynamics=strong_bias(topology), progress=False)
        folders.append(folder)
    return folders


@pytest.mark.parametrize("resolution, beads, names", [
    ("all_atom", 22, None),
    ("heavy_atom", 10, ["CH3", "C", "O", "N", "CA", "C", "O", "CB", "N", "C"]),  # topology order
    ("core_beta", 6, ["C", "N", "CA", "C", "CB", "N"]),
])
def test_dataset_shapes_units_and_mapping(ala2_run, tmp_path, resolution, beads, names):
    data = build_dataset(ala2_run, resolution, temperature=300.0, constraints="none", discard=0.25,
                         run="obc2_metad", peptide="ala2")
    path = write_dataset(data, tmp_path / "d.npz")
    data = load_dataset(path)
    assert data["positions"].shape == data["forces"].shape == (80, beads, 3)
    assert data["positions"].dtype == np.float32
    if names:
        assert list(data["bead_names"]) == names
    assert data["kT"] == pytest.approx(GAS_CONSTANT * 300.0) and data["kT"] == pytest.approx(2.494, abs=1e-3)
    assert data["biased"] and data["resolution"] == resolution and data["run"] == "obc2_metad"
    assert data["forces_valid"]
    np.testing.assert_array_equal(data["replica"], np.repeat([0, 1], 40))
    # Weights: normalised, the first quarter of each replica left out, each replica half the total.
    assert data["weights"].sum() == pytest.approx(1.0)
    assert (data["weights"][:10] == 0).all() and (data["weights"][40:50] == 0).all()
    assert data["weights"][:40].sum() == pytest.approx(0.5)
    # Positions are slices of the all-atom frames; forces their sums over the aggregation groups.
    frames = load_frames(ala2_run[1])
    atoms = data["atom_indices"]
    np.testing.assert_array_equal(data["positions"][40:], frames["positions"][:, atoms])
    mapping = cg_mapping(frames["topology"], resolution)
    summed = np.stack([frames["forces"][:, list(g)].sum(1) for g in mapping.aggregation_groups], 1)
    np.testing.assert_allclose(data["forces"][40:], summed, rtol=1e-5, atol=1e-3)
    if resolution != "all_atom":
        assert not np.allclose(data["forces"][40:], frames["forces"][:, atoms])
    # φ, ψ against mdtraj on the all-atom trajectory.
    trajectory = md.load_hdf5(str(Path(ala2_run[1]) / "trajectory.h5"))
    np.testing.assert_allclose(data["phi"][40:, 0], md.compute_phi(trajectory)[1][:, 0], atol=1e-5)
    np.testing.assert_allclose(data["psi"][40:, 0], md.compute_psi(trajectory)[1][:, 0], atol=1e-5)
    # The CVs OpenMM biased are this residue's φ, ψ.
    np.testing.assert_allclose(np.angle(np.exp(1j * (frames["cvs"][:, 0] - md.compute_phi(trajectory)[1][:, 0]))),
                               0, atol=1e-4)


def test_metadynamics_of_a_toy_system_reweights_to_its_exact_populations():
    """One particle in an asymmetric double well along x (harmonic in y, z), well-tempered
    metadynamics on x with OpenMM, final-bias reweighting: the mass with x > 0 matches quadrature.
    Unbiased Langevin at this barrier (≈ 8 kT) barely crosses in the same time."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    temperature = 300.0
    kT = GAS_CONSTANT * temperature
    a, b = 8 * kT, 1.0 * kT  # barrier height and tilt, kJ/mol; x in nm

    def potential(x):
        return a * (x**2 - 1) ** 2 + b * x

    system = openmm.System()
    system.addParticle(12.0)
    well = openmm.CustomExternalForce(f"{a}*(x^2-1)^2 + {b}*x + 50*(y^2+z^2)")
    well.addParticle(0, [])
    system.addForce(well)
    cv = openmm.CustomExternalForce("x")
    cv.addParticle(0, [])
    variable = app.BiasVariable(cv, -2.0, 2.0, 0.1, periodic=False, gridWidth=161)
    meta = app.Metadynamics(system, [variable], temperature, 6.0, 1.0, 100)
    integrator = openmm.LangevinMiddleIntegrator(temperature, 5.0, 0.005)
    integrator.setRandomNumberSeed(7)
    topology = app.Topology()
    topology.addAtom("X", app.Element.getBySymbol("C"), topology.addResidue("X", topology.addChain()))
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions([openmm.Vec3(-1.0, 0, 0)] * unit.nanometer)
    simulation.context.setVelocitiesToTemperature(temperature, 7)
    xs = []
    for _ in range(40000):  # 10 ns; at half that, the bias had not converged (estimate 0.05)
        meta.step(simulation, 50)
        xs.append(meta.getCollectiveVariables(simulation)[0])
    xs = np.array(xs)
    weights = final_bias_weights(xs[:, None], meta._totalBias, [(-2.0, 2.0, False)], kT=kT, discard_fraction=0.2)
    grid = np.linspace(-2, 2, 40001)
    density = np.exp(-potential(grid) / kT)
    exact = density[grid > 0].sum() / density.sum()
    estimate = weights[xs > 0].sum()
    assert 0.05 < exact < 0.4
    assert (xs > 0).mean() > 0.3  # the bias flattened the barrier: both wells are visited often
    assert estimate == pytest.approx(exact, abs=0.04)


def test_all_atom_dataset_of_constrained_md_has_no_forces(ala2_run):
    """With bonds to hydrogen constrained no all-atom force map exists: NaN, flagged; heavy atoms map."""
    all_atom = build_dataset(ala2_run, "all_atom", temperature=300.0, constraints="h_bonds", discard=0.0)
    assert not all_atom["forces_valid"] and np.isnan(all_atom["forces"]).all()
    heavy = build_dataset(ala2_run, "heavy_atom", temperature=300.0, constraints="h_bonds", discard=0.0)
    assert heavy["forces_valid"] and np.isfinite(heavy["forces"]).all()


@pytest.mark.parametrize("scale, steps, chunk, chunks", [
    (1.0, 2000, 500, 4),     # smoke obc2_metad: 2000 steps in chunks of 500
    (0.3, 600, 500, 2),      # scaled down: whole frames (of 50 steps), last chunk shorter
    (0.001, None, None, None),  # below one frame: refused
])
def test_md_settings_scale_to_whole_frames(scale, steps, chunk, chunks):
    from cgbench.config import load_config
    from cgbench.md import md_settings_from_config

    config = load_config(preset="smoke")
    peptide = Peptide(name="ala2", sequence="A", md_steps_scale=scale)
    if steps is None:
        with pytest.raises(ValueError, match="below one frame"):
            md_settings_from_config(config, "obc2_metad", peptide)
        return
    settings = md_settings_from_config(config, "obc2_metad", peptide)
    assert (settings.steps, settings.chunk_steps, settings.n_chunks) == (steps, chunk, chunks)
    assert settings.temperature == 300.0 and settings.timestep == 1.0


def test_gas_constant_is_openmms():
    import openmm.unit as unit

    r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    assert GAS_CONSTANT == pytest.approx(r, rel=1e-12)
