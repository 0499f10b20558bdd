"""Molecular dynamics of a peptide with OpenMM: unbiased runs and well-tempered metadynamics.

:func:`run_md` integrates one replica — minimisation, equilibration (not saved), production —
with OpenMM's ``LangevinMiddleIntegrator`` and saves, every ``report_interval`` steps, the solute's
positions, the **forces and potential energy of the unbiased potential**, and (metadynamics) the
bias energy and the collective variables. Production runs in chunks of ``chunk_steps``; after
each chunk its frames and an OpenMM checkpoint (integrator random state included) are written
atomically, so a killed job rerun with the same arguments resumes after its last finished chunk
and, on the same platform, ends with the same numbers as an uninterrupted run.

Metadynamics (OpenMM's :class:`openmm.app.Metadynamics`, well-tempered) biases (φ, ψ) of one
residue. OpenMM puts the bias force in a force group of its own; frames are read with that group
left out, so the stored forces and energies are exactly those of the unbiased potential
(``tests/test_md.py`` compares them with an unbiased context at the same positions). The bias
grid is saved with each checkpoint and restored on resume (:func:`_restore_bias`: OpenMM offers no
public call for it), and the final grid is saved with the frames so that unbiased averages can
be recovered by reweighting (:func:`cgbench.diagnostics.final_bias_weights`).

Outputs in the replica's folder:

- ``trajectory.h5``: mdtraj HDF5 of the solute (topology, coordinates in nm, time in ps,
  unbiased potential energy in kJ/mol). Water and ions are not stored.
- ``frames.npz``: ``forces`` (n_frames, n_solute, 3) kJ/mol/nm (unbiased), ``potential_energy``
  (n_frames,) kJ/mol (unbiased), ``bias_energy`` (n_frames,) kJ/mol (0 without bias),
  ``cvs`` (n_frames, 2) rad (φ, ψ of the biased residue; NaN without bias), ``time_ps``,
  ``bias_grid`` (OpenMM's ``(n_ψ, n_φ)`` layout, kJ/mol; empty without bias), ``bias_limits``.
- ``frames.npz.provenance.json``: OpenMM version, platform, integrator, time step, seed, steps,
  wall time and ns/day.

Units: nm, ps (time step given in fs), kJ/mol, K.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cgbench.atomic import atomic_savez

log = logging.getLogger(__name__)

#: Seconds between progress lines in the log within a chunk.
HEARTBEAT_S = 60.0
#: Names of the MD runs of a peptide: ``<environment>_<kind>``.
RUNS = ("explicit_unbiased", "explicit_metad", "obc1_unbiased", "obc2_unbiased", "obc2_metad")


def run_environment(run: str) -> str:
    """Solvent of a run (``explicit``, ``obc1``, ``obc2``): the part of its name before ``_``."""
    return run.split("_")[0]


def run_is_biased(run: str) -> bool:
    return run.endswith("_metad")


@dataclass(frozen=True)
class MDSettings:
    """How one replica is integrated.

    Attributes:
        temperature: K.
        timestep: fs.
        friction: Langevin collision rate, 1/ps.
        steps: Production steps.
        report_interval: Steps between saved frames.
        chunk_steps: Production steps between checkpoints (a multiple of ``report_interval``).
        equilibration_steps: Steps after minimisation that are not saved (no bias deposited).
        minimisation_tolerance: kJ/mol/nm (OpenMM's ``LocalEnergyMinimizer`` criterion).
    """

    temperature: float
    timestep: float
    friction: float
    steps: int
    report_interval: int
    chunk_steps: int
    equilibration_steps: int
    minimisation_tolerance: float

    def __post_init__(self):
        if self.steps <= 0 or self.steps % self.report_interval:
            raise ValueError(f"steps {self.steps}: expected a positive multiple of report_interval "
                             f"{self.report_interval}")
        if self.chunk_steps % self.report_interval:
            raise ValueError(f"chunk_steps {self.chunk_steps} is not a multiple of report_interval "
                             f"{self.report_interval}")

    @property
    def n_chunks(self) -> int:
        return -(-self.steps // self.chunk_steps)


@dataclass(frozen=True)
class MetadynamicsSettings:
    """Well-tempered metadynamics on (φ, ψ) of one residue.

    Attributes:
        phi_atoms, psi_atoms: Atom indices of the two dihedrals (4 each).
        height: Initial Gaussian height, kJ/mol.
        width: Gaussian standard deviation, rad.
        frequency: Steps between Gaussians.
        bias_factor: γ = (T + ΔT)/T.
        grid: Grid points per variable (OpenMM tabulates the bias).
    """

    phi_atoms: tuple[int, int, int, int]
    psi_atoms: tuple[int, int, int, int]
    height: float
    width: float
    frequency: int
    bias_factor: float
    grid: int


def md_settings_from_config(config: dict, run: str, peptide) -> MDSettings:
    """The :class:`MDSettings` of ``run`` for ``peptide`` in a resolved config."""
    md = config["md"]
    # Scaled steps are rounded down to whole frames.
    steps = int(md["runs"][run]["steps"] * peptide.md_steps_scale) // md["report_interval"] * md["report_interval"]
    if steps <= 0:
        raise ValueError(f"md run {run} of {peptide.name}: no steps (md.runs.{run}.steps × md_steps_scale "
                         f"is below one frame of md.report_interval {md['report_interval']})")
    chunk = min(md["chunk_steps"], max(steps, md["report_interval"]))
    chunk -= chunk % md["report_interval"]
    return MDSettings(temperature=peptide.temperature, timestep=md["timestep"], friction=md["friction"],
                      steps=steps, report_interval=md["report_interval"], chunk_steps=chunk,
                      equilibration_steps=md["equilibration_steps"],
                      minimisation_tolerance=md["minimisation_tolerance"])


def metadynamics_from_config(config: dict, topology) -> MetadynamicsSettings:
    """Metadynamics settings of a resolved config, the CVs on ``topology`` (all atom indices)."""
    from cgbench.resolutions import cg_mapping

    meta = config["md"]["metadynamics"]
    mapping = cg_mapping(topology, "all_atom")
    residue = meta["residue"]
    if residue >= len(mapping.phi_beads):
        raise ValueError(f"md.metadynamics.residue {residue}: the peptide has {len(mapping.phi_beads)} residues")
    atoms = np.asarray(mapping.atom_indices)
    return MetadynamicsSettings(phi_atoms=tuple(int(i) for i in atoms[list(mapping.phi_beads[residue])]),
                                psi_atoms=tuple(int(i) for i in atoms[list(mapping.psi_beads[residue])]),
                                height=meta["height"], width=meta["width"], frequency=meta["frequency"],
                                bias_factor=meta["bias_factor"], grid=meta["grid"])


def _clone(system):
    import openmm

    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))


def _add_metadynamics(system, settings: MetadynamicsSettings, temperature: float):
    """Add the bias (a ``CustomCVForce`` in a force group of its own) to ``system``."""
    import openmm
    import openmm.app as app

    variables = []
    for atoms in (settings.phi_atoms, settings.psi_atoms):
        torsion = openmm.CustomTorsionForce("theta")
        torsion.addTorsion(*atoms)
        variables.append(app.BiasVariable(torsion, -np.pi, np.pi, settings.width, periodic=True,
                                          gridWidth=settings.grid))
    return app.Metadynamics(system, variables, temperature, settings.bias_factor, settings.height,
                            settings.frequency)


def _bias_limits(meta) -> np.ndarray:
    return np.array([[v.minValue, v.maxValue, float(v.periodic)] for v in meta.variables])


def _restore_bias(meta, bias: np.ndarray, context) -> None:
    """Put a saved bias grid back into ``meta`` and its context.

    OpenMM's ``Metadynamics`` has no public call for this; it mirrors the end of its
    ``_addGaussian`` (tested: the bias energy after a resume equals the one before the kill).
    """
    meta._selfBias = np.array(bias)
    meta._totalBias = np.array(bias)
    meta._table.setFunctionParameters(*meta._widths, meta._totalBias.flatten(), *meta._limits)
    meta._force.updateParametersInContext(context)


def _chunk_path(out: Path, k: int) -> Path:
    return out / "chunks" / f"chunk_{k:05d}.npz"


def _record(context, n_solute: int, unbiased_groups, bias_group, meta, simulation):
    import openmm.unit as unit

    state = context.getState(getPositions=True, getForces=True, getEnergy=True, groups=unbiased_groups)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[:n_solute]
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)[:n_solute]
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if meta is None:
        return positions, forces, energy, 0.0, (np.nan, np.nan)
    bias = context.getState(getEnergy=True, groups={bias_group}).getPotentialEnergy()
    return (positions, forces, energy, bias.value_in_unit(unit.kilojoule_per_mole),
            tuple(meta.getCollectiveVariables(simulation)))


def run_md(system, topology, positions: np.ndarray, n_solute: int, settings: MDSettings,
           out_dir: str | Path, *, seed: int, platform: str = "Reference", threads: int = 1,
           metadynamics: MetadynamicsSettings | None = None, max_chunks: int | None = None,
           progress: bool = True) -> dict:
    """Simulate one replica (or resume it) and write its outputs to ``out_dir``.

    Args:
        system: ``openmm.System`` (not modified: the bias is added to a copy).
        topology: ``openmm.app.Topology`` of ``system``; its first ``n_solute`` atoms are the solute.
        positions: Start positions, nm, ``(n_atoms, 3)``.
        n_solute: Atoms saved (the solute comes first in every system cgbench builds).
        settings: :class:`MDSettings`.
        out_dir: The replica's folder (created).
        seed: Seeds the start velocities and the Langevin noise.
        platform: OpenMM platform name (``Reference``, ``CPU``, ``CUDA``; see
            :func:`cgbench.systems.platform_name`).
        threads: Threads of the CPU platform.
        metadynamics: Bias settings, or ``None`` for an unbiased run.
        max_chunks: Stop after this many chunks in this call (a time-limited job); rerun to go on.
        progress: Show a tqdm bar (frames; ns done and ns/day after each chunk).

    Returns:
        Summary: ``frames``, ``steps``, ``ns``, ``wall_s``, ``ns_per_day``, ``complete``.
    """
    import openmm
    import openmm.app as app
    import openmm.unit as unit
    from tqdm import tqdm

    out = Path(out_dir)
    frames_path, trajectory_path, checkpoint_path = out / "frames.npz", out / "trajectory.h5", out / "checkpoint.npz"
    if frames_path.exists() and trajectory_path.exists():
        log.info("%s is complete; nothing to do", out)
        return _summary(np.load(frames_path), settings, complete=True)
    (out / "chunks").mkdir(parents=True, exist_ok=True)

    system = _clone(system)
    meta = _add_metadynamics(system, metadynamics, settings.temperature) if metadynamics else None
    bias_group = meta._force.getForceGroup() if meta else None
    unbiased_groups = ({f.getForceGroup() for f in system.getForces()} - {bias_group}) if meta else -1
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature * unit.kelvin,
                                                 settings.friction / unit.picosecond,
                                                 settings.timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    properties = {"CPU": {"Threads": str(threads)}, "CUDA": {"Precision": "mixed"}}.get(platform, {})
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform),
                                properties)
    context = simulation.context

    fingerprint = json.dumps({"settings": settings_record(settings, metadynamics), "seed": seed,
                              "platform": platform, "atoms": system.getNumParticles()}, sort_keys=True)
    if checkpoint_path.exists():
        try:
            with np.load(checkpoint_path) as saved:
                same = str(saved["fingerprint"]) == fingerprint
        except Exception as error:  # unreadable: keep it for inspection, start afresh
            checkpoint_path.replace(checkpoint_path.with_name("checkpoint.corrupt.npz"))
            log.warning("%s: the checkpoint cannot be read (%s); moved to checkpoint.corrupt.npz, starting afresh",
                        out, error)
        else:
            if not same:
                log.warning("%s: the checkpoint was made with other settings; starting afresh", out)
                checkpoint_path.unlink()
    if checkpoint_path.exists():
        saved = np.load(checkpoint_path)
        done, wall = int(saved["chunks"]), float(saved["wall_s"])
        context.loadCheckpoint(saved["openmm"].tobytes())
        if meta:
            _restore_bias(meta, saved["bias_grid"], context)
        log.info("resuming %s after chunk %d of %d (step %d)", out, done, settings.n_chunks, simulation.currentStep)
    else:
        done, wall = 0, 0.0
        context.setPositions(positions * unit.nanometer)
        openmm.LocalEnergyMinimizer.minimize(context, settings.minimisation_tolerance, 0)
        context.setVelocitiesToTemperature(settings.temperature * unit.kelvin, seed)
        started = time.perf_counter()
        simulation.step(settings.equilibration_steps)
        log.info("minimised and equilibrated %d steps in %.1f s", settings.equilibration_steps,
                 time.perf_counter() - started)
        context.setStepCount(0)
        context.setTime(0.0)

    advance = (lambda n: meta.step(simulation, n)) if meta else simulation.step
    frames_per_chunk = settings.chunk_steps // settings.report_interval
    ps_per_frame = settings.report_interval * settings.timestep * 1e-3
    total_frames = settings.steps // settings.report_interval
    bar = tqdm(total=total_frames, initial=done * frames_per_chunk, desc=out.name, unit="frame",
               disable=not progress)
    stop = settings.n_chunks if max_chunks is None else min(settings.n_chunks, done + max_chunks)
    for k in range(done, stop):
        steps = min(settings.chunk_steps, settings.steps - k * settings.chunk_steps)
        n_frames = steps // settings.report_interval
        rows = []
        started = heartbeat = time.perf_counter()
        for _ in range(n_frames):
            advance(settings.report_interval)
            rows.append(_record(context, n_solute, unbiased_groups, bias_group, meta, simulation))
            bar.update(1)
            if time.perf_counter() - heartbeat > HEARTBEAT_S:  # a log line now and then in long chunks
                heartbeat = time.perf_counter()
                rate = len(rows) * ps_per_frame * 1e-3 / (heartbeat - started) * 86400
                log.info("chunk %d/%d: %d/%d frames, %.0f ns/day", k + 1, settings.n_chunks, len(rows), n_frames,
                         rate)
        wall += time.perf_counter() - started
        pos, forces, energy, bias, cvs = (np.asarray(column) for column in zip(*rows))
        first = k * frames_per_chunk
        atomic_savez(_chunk_path(out, k), positions=pos.astype(np.float32), forces=forces.astype(np.float32),
                      potential_energy=energy, bias_energy=bias, cvs=cvs,
                      time_ps=(first + 1 + np.arange(n_frames)) * ps_per_frame)
        atomic_savez(checkpoint_path, chunks=k + 1, wall_s=wall, fingerprint=np.str_(fingerprint),
                      openmm=np.frombuffer(context.createCheckpoint(), dtype=np.uint8),
                      bias_grid=meta._totalBias if meta else np.zeros(0))
        ns_done = (k * settings.chunk_steps + steps) * settings.timestep * 1e-6
        bar.set_postfix(ns=f"{ns_done:.3g}", ns_per_day=f"{ns_done / max(wall, 1e-9) * 86400:.0f}")
        log.info("chunk %d/%d: %d frames, %.3g ns done, %.0f ns/day", k + 1, settings.n_chunks, n_frames,
                 ns_done, ns_done / max(wall, 1e-9) * 86400)
    bar.close()
    if stop < settings.n_chunks:
        return {"complete": False, "chunks": stop}

    chunks = [np.load(_chunk_path(out, k)) for k in range(settings.n_chunks)]
    joined = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0].files}
    _write_trajectory(trajectory_path, topology, n_solute, joined)
    atomic_savez(frames_path, forces=joined["forces"], potential_energy=joined["potential_energy"],
                  bias_energy=joined["bias_energy"], cvs=joined["cvs"], time_ps=joined["time_ps"],
                  bias_grid=meta._totalBias if meta else np.zeros(0),
                  bias_limits=_bias_limits(meta) if meta else np.zeros((0, 3)), wall_s=wall)
    for k in range(settings.n_chunks):
        _chunk_path(out, k).unlink()
    (out / "chunks").rmdir()
    checkpoint_path.unlink()
    summary = _summary(np.load(frames_path), settings, complete=True)
    log.info("wrote %s and %s: %d frames, %.3g ns, %.0f ns/day", trajectory_path, frames_path,
             summary["frames"], summary["ns"], summary["ns_per_day"])
    return summary


def _summary(frames, settings: MDSettings, *, complete: bool) -> dict:
    ns = settings.steps * settings.timestep * 1e-6
    wall = float(frames["wall_s"])
    return {"complete": complete, "frames": len(frames["time_ps"]), "steps": settings.steps, "ns": ns,
            "wall_s": wall, "ns_per_day": ns / wall * 86400 if wall else float("nan")}


def _write_trajectory(path: Path, topology, n_solute: int, joined: dict) -> None:
    import mdtraj as md

    solute = md.Topology.from_openmm(topology).subset(range(n_solute))
    tmp = path.with_name(path.stem + ".tmp.h5")
    with md.formats.HDF5TrajectoryFile(str(tmp), mode="w") as f:
        f.write(coordinates=joined["positions"], time=joined["time_ps"],
                potentialEnergy=joined["potential_energy"].astype(np.float32))
        f.topology = solute
    os.replace(tmp, path)


def load_frames(folder: str | Path) -> dict:
    """A finished replica: ``positions`` (n_frames, n_solute, 3) nm, mdtraj ``topology``, and every
    array of ``frames.npz``."""
    import mdtraj as md

    folder = Path(folder)
    trajectory = md.load_hdf5(str(folder / "trajectory.h5"))
    with np.load(folder / "frames.npz") as frames:
        out = {name: frames[name] for name in frames.files}
    out["positions"] = trajectory.xyz
    out["topology"] = trajectory.topology
    return out


def settings_record(settings: MDSettings, metadynamics: MetadynamicsSettings | None) -> dict:
    """Settings as plain data, for provenance."""
    return {"md": asdict(settings), "metadynamics": asdict(metadynamics) if metadynamics else None}
