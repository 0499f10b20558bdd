"""OpenMM systems of a peptide: vacuum, implicit solvent (OBC1, OBC2) and explicit water.

Implicit solvent follows amber14's ``implicit/obc1.xml`` / ``implicit/obc2.xml`` parameters
(mbondi2 radii, solvent dielectric 78.5, solute dielectric 1, ACE surface-area term). For OBC2 the
``CustomGBForce`` those files create is replaced by OpenMM's native ``GBSAOBCForce`` with the same
per-atom parameters (:func:`native_obc2`): it runs ~30× faster on the Reference platform and
gives the same energies and forces to rounding (tested in ``tests/test_peptides.py``). OpenMM
has no native OBC1, so OBC1 keeps the ``CustomGBForce``.

Explicit solvent: the solute in a box of water with ``box_padding`` nm of padding, neutralised,
PME with a 1.0 nm cutoff, rigid water.

Units: nm, kJ/mol, K.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

SOLVENTS = ("vacuum", "obc1", "obc2", "explicit")
#: Implicit-solvent force-field files (OpenMM's data folder).
IMPLICIT_FILES = {"obc1": "implicit/obc1.xml", "obc2": "implicit/obc2.xml"}
#: Offset subtracted from the Born radii in OBC (nm); fixed inside OpenMM's GBSAOBCForce.
OBC_DIELECTRIC_OFFSET = 0.009
#: 1/(4πε₀) in kJ nm/(mol e²), the value OpenMM ≥ 8 uses in NonbondedForce and GBSAOBCForce.
ONE_4PI_EPS0 = 138.93545764438198
#: Surface-area energy of the ACE term, kJ/mol/nm² (``28.3919551 = 4π × 2.25936``).
ACE_SURFACE_AREA_ENERGY = 28.3919551 / (4 * np.pi)
EXPLICIT_CUTOFF_NM = 1.0
#: OpenMM platform per solvent on CPU machines, by measurement (ala2, 2-core machine, Langevin
#: 2 fs, h_bonds; ns/day Reference / CPU): vacuum 17 300 / 450, OBC2 (native) 5 100 / 330,
#: OBC1 (CustomGBForce) 136 / 236, explicit TIP3P (~700 atoms, PME) – / 88. The CPU platform pays
#: ~350 µs of thread wake-up per step, which only pays off for the custom GB force and for PME.
CPU_PLATFORM_OF_SOLVENT = {"vacuum": "Reference", "obc2": "Reference", "obc1": "CPU", "explicit": "CPU"}


def platform_name(solvent: str, device: str) -> str:
    """OpenMM platform for MD of a system in ``solvent``: CUDA on a GPU device, else measured best."""
    return "CUDA" if device == "gpu" else CPU_PLATFORM_OF_SOLVENT[solvent]


def _constraints(name: str):
    import openmm.app as app

    return {"none": None, "h_bonds": app.HBonds}[name]


def native_obc2(system, custom_force) -> None:
    """Replace amber's OBC2 ``CustomGBForce`` in ``system`` by an equal native ``GBSAOBCForce``.

    The custom force's per-particle parameters are ``(charge, offset radius, scaled offset radius)``;
    the native force takes ``(charge, radius, scale factor)`` with ``radius = or + 0.009 nm``.
    amber's expressions write the Coulomb constant as 138.935485, OpenMM's native force uses
    :data:`ONE_4PI_EPS0` (2e-7 smaller); the charges of the native force (used by nothing but
    the GB energy) are scaled by the square root of the ratio so that the energies are equal,
    not 2e-7 apart. A salt term (``kappa`` ≠ 0) or another offset is refused.
    """
    import openmm

    energy_terms = [custom_force.getEnergyTermParameters(i)[0] for i in range(custom_force.getNumEnergyTerms())]
    if _global(custom_force, energy_terms, "kappa") != 0:
        raise ValueError("OBC2 with salt (kappa != 0) has no native GBSAOBCForce equivalent")
    if abs(_global(custom_force, energy_terms, "offset") - OBC_DIELECTRIC_OFFSET) > 1e-12:
        raise ValueError(f"OBC2 offset differs from the native force's {OBC_DIELECTRIC_OFFSET} nm")
    coulomb = re.search(r"-0\.5\*([0-9.]+)\*\(1/soluteDielectric", "".join(energy_terms[0].split()))
    if coulomb is None:
        raise ValueError(f"Coulomb constant not found in {energy_terms[0]!r}")
    charge_scale = np.sqrt(float(coulomb.group(1)) / ONE_4PI_EPS0)
    native = openmm.GBSAOBCForce()
    native.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    native.setSolventDielectric(_global(custom_force, energy_terms, "solventDielectric"))
    native.setSoluteDielectric(_global(custom_force, energy_terms, "soluteDielectric"))
    has_surface_term = any("(radius+0.14)^2" in term for term in energy_terms)
    native.setSurfaceAreaEnergy(ACE_SURFACE_AREA_ENERGY if has_surface_term else 0.0)
    for i in range(custom_force.getNumParticles()):
        charge, offset_radius, scaled_offset_radius = custom_force.getParticleParameters(i)
        native.addParticle(charge * charge_scale, offset_radius + OBC_DIELECTRIC_OFFSET,
                           scaled_offset_radius / offset_radius)
    native.setForceGroup(custom_force.getForceGroup())
    # getForce returns new Python proxies, so find the custom force by type.
    index = [i for i in range(system.getNumForces())
             if isinstance(system.getForce(i), openmm.CustomGBForce)]
    if len(index) != 1:
        raise ValueError(f"expected one CustomGBForce, found {len(index)}")
    system.removeForce(index[0])
    system.addForce(native)


def _global(force, energy_terms: list[str], name: str) -> float:
    """A constant such as ``solventDielectric=78.5`` written into the custom force's expressions."""
    for term in energy_terms:
        for part in term.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return float(value)
    raise ValueError(f"{name} not found in the CustomGBForce expressions")


def create_system(topology, solvent: str, peptide, *, constraints: str | None = None):
    """The OpenMM ``System`` of ``topology`` in ``solvent``.

    Args:
        topology: Solute topology (``vacuum``/``obc1``/``obc2``) or solvated topology
            (``explicit``, from :func:`solvate`).
        solvent: One of :data:`SOLVENTS`.
        peptide: A :class:`cgbench.peptides.Peptide` (force field, water model).
        constraints: ``none`` or ``h_bonds``; the peptide's setting if not given.
    """
    import openmm
    import openmm.app as app

    if solvent not in SOLVENTS:
        raise ValueError(f"solvent {solvent!r}: expected one of {SOLVENTS}")
    constraints = _constraints(constraints or peptide.constraints)
    if solvent == "explicit":
        forcefield = app.ForceField(peptide.force_field, peptide.water_model)
        return forcefield.createSystem(topology, nonbondedMethod=app.PME,
                                       nonbondedCutoff=EXPLICIT_CUTOFF_NM, constraints=constraints,
                                       rigidWater=True)
    files = [peptide.force_field] + ([IMPLICIT_FILES[solvent]] if solvent in IMPLICIT_FILES else [])
    system = app.ForceField(*files).createSystem(topology, nonbondedMethod=app.NoCutoff,
                                                 constraints=constraints)
    if solvent == "obc2":
        custom = [f for f in system.getForces() if isinstance(f, openmm.CustomGBForce)]
        native_obc2(system, custom[0])
    return system


def solvate(topology, positions: np.ndarray, peptide):
    """Solute in a padded box of the peptide's water model, neutralised.

    Returns ``(topology, positions)`` with positions of shape ``(n_atoms, 3)`` in nm.
    """
    import openmm.app as app
    import openmm.unit as unit

    from cgbench.peptides import python_random_seed

    forcefield = app.ForceField(peptide.force_field, peptide.water_model)
    modeller = app.Modeller(topology, positions * unit.nanometer)
    model = Path(peptide.water_model).stem
    with python_random_seed(0):  # ions replace randomly chosen waters
        modeller.addSolvent(forcefield, model=model, padding=peptide.box_padding * unit.nanometer,
                            neutralize=True)
    return modeller.topology, np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))


def save_system(system, path: str | Path) -> Path:
    """Serialise ``system`` to XML at ``path``."""
    import openmm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(openmm.XmlSerializer.serialize(system))
    return path


def load_system(path: str | Path):
    """The ``System`` serialised at ``path``."""
    import openmm

    return openmm.XmlSerializer.deserialize(Path(path).read_text())


def energy_and_forces(system, positions: np.ndarray, *, platform: str = "Reference",
                      groups: int | set[int] = -1) -> tuple[float, np.ndarray]:
    """Potential energy (kJ/mol) and forces (kJ/mol/nm, shape ``(n_atoms, 3)``) from OpenMM.

    A convenience for tests and parity checks; it builds a new ``Context`` per call.
    """
    import openmm
    import openmm.unit as unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return float(energy), np.asarray(forces)
