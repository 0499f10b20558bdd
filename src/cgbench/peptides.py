"""Capped peptides built from nothing but their sequence.

``build_peptide("AAA")`` returns Ac-Ala3-NHMe with hydrogens, energy-minimised, as an OpenMM
topology and positions (nm). The route, and why:

1. PeptideBuilder builds heavy-atom residues with ideal geometry (extended chain) for
   ``G + sequence + G``.
2. The two flanking glycines become the caps: the first keeps CA, C, O and is renamed ACE (CA → CH3);
   the last keeps N and CA and is renamed NME (CA → C, OpenMM's name of the N-methyl carbon).
   A glycine has exactly the heavy-atom geometry of a cap, and this works for any length including a
   single residue (pdbfixer's cap route divides by zero there).
3. OpenMM's ``Modeller.addHydrogens`` adds hydrogens for the force field at the requested pH
   (it also picks histidine tautomers); it draws from Python's ``random``, which is seeded here.
4. Energy minimisation on the Reference platform in OBC2 implicit solvent (whatever the
   peptide's baselines), so the structure is deterministic: the same sequence and settings give the same file, byte for byte.

Units: nm, kJ/mol.
"""

from __future__ import annotations

import contextlib
import io
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: One-letter code → residue name, the 20 standard amino acids.
RESIDUE_NAMES = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
    "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
    "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}


@dataclass(frozen=True)
class Peptide:
    """A capped peptide target and the physics it is simulated with.

    Attributes:
        name: Target name (``ala2``); names its folder under ``results/``.
        sequence: One-letter codes between the ACE and NME caps (``A`` is alanine dipeptide).
        force_field: OpenMM force-field file of the solute, e.g. ``amber14-all.xml``.
        water_model: OpenMM file of the explicit water model, e.g. ``amber14/tip3p.xml``.
        implicit_solvents: Implicit-solvent baselines simulated for this peptide (``obc1``, ``obc2``).
        temperature: Kelvin.
        ph: pH for protonation states when hydrogens are added.
        box_padding: Solvent padding around the solute in explicit solvent, nm.
        constraints: ``none`` or ``h_bonds`` (bonds to hydrogen fixed) for MD systems.
        md_steps_scale: Factor on the steps of every MD run of this peptide (0: no MD).
    """

    name: str
    sequence: str
    force_field: str = "amber14-all.xml"
    water_model: str = "amber14/tip3p.xml"
    implicit_solvents: tuple[str, ...] = ("obc1", "obc2")
    temperature: float = 300.0
    ph: float = 7.0
    box_padding: float = 1.0
    constraints: str = "none"
    md_steps_scale: float = 1.0

    @property
    def residue_names(self) -> list[str]:
        """Residue names from N to C terminus, caps included."""
        return ["ACE", *(RESIDUE_NAMES[c] for c in self.sequence), "NME"]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["implicit_solvents"] = list(self.implicit_solvents)
        return out


def peptide_from_config(name: str, config: dict) -> Peptide:
    """The peptide ``name`` of a resolved config: ``peptide_defaults`` overlaid with its entry."""
    entry = {**config["peptide_defaults"], **config["peptides"][name]}
    entry["implicit_solvents"] = tuple(entry["implicit_solvents"])
    return Peptide(name=name, **entry)


@contextlib.contextmanager
def python_random_seed(seed: int = 0):
    """Seed Python's ``random`` inside the block and restore its state after.

    OpenMM's ``Modeller`` places new hydrogens and ions with the ``random`` module; seeding it (and
    computing on the Reference platform) is what makes building deterministic.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def unknown_residue_letters(sequence: str) -> list[str]:
    """Letters of ``sequence`` that are not one of the 20 standard one-letter codes."""
    return sorted({c for c in sequence if c not in RESIDUE_NAMES})


def _capped_heavy_atoms_pdb(sequence: str) -> str:
    """PDB text of the heavy atoms of ACE-sequence-NME (PeptideBuilder geometry)."""
    import PeptideBuilder
    from Bio.PDB import PDBIO

    bad = unknown_residue_letters(sequence)
    if bad or not sequence:
        raise ValueError(f"sequence {sequence!r}: unknown residue letter(s) {bad}; "
                         f"allowed: {''.join(sorted(RESIDUE_NAMES))}")
    structure = PeptideBuilder.make_extended_structure("G" + sequence + "G")
    residues = list(structure.get_residues())
    first, last = residues[0], residues[-1]
    first.detach_child("N")
    first["CA"].id = first["CA"].name = first["CA"].fullname = "CH3"
    first.resname = "ACE"
    for atom in ("C", "O"):
        last.detach_child(atom)
    last["CA"].id = last["CA"].name = last["CA"].fullname = "C"
    last.resname = "NME"
    # Bio's atom dictionaries are keyed by id; rebuild them after renaming.
    for residue in (first, last):
        residue.child_dict = {atom.id: atom for atom in residue.child_list}
    writer = PDBIO()
    writer.set_structure(structure)
    text = io.StringIO()
    writer.save(text)
    return text.getvalue()


def build_peptide(peptide: Peptide, *, minimisation_tolerance: float = 1.0):
    """Build, protonate and minimise ``peptide``.

    Args:
        peptide: What to build.
        minimisation_tolerance: Stop minimising when the root-mean-square force component is
            below this, kJ/mol/nm (OpenMM's ``LocalEnergyMinimizer`` criterion).

    Returns:
        ``(topology, positions)``: an ``openmm.app.Topology`` and an array of shape
        ``(n_atoms, 3)`` in nm.
    """
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from cgbench.systems import create_system

    pdb = app.PDBFile(io.StringIO(_capped_heavy_atoms_pdb(peptide.sequence)))
    forcefield = app.ForceField(peptide.force_field)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    reference = openmm.Platform.getPlatformByName("Reference")
    with python_random_seed(0):
        modeller.addHydrogens(forcefield, pH=peptide.ph, platform=reference)
    system = create_system(modeller.topology, "obc2", peptide, constraints="none")
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, reference)
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(
        context, minimisation_tolerance * unit.kilojoule_per_mole / unit.nanometer, 0)
    positions = context.getState(getPositions=True).getPositions(asNumpy=True)
    return modeller.topology, np.asarray(positions.value_in_unit(unit.nanometer))


def pdb_text(topology, positions: np.ndarray) -> str:
    """PDB text of a structure without the creation-date remark, so equal inputs give equal files."""
    import openmm.app as app
    import openmm.unit as unit

    text = io.StringIO()
    app.PDBFile.writeFile(topology, positions * unit.nanometer, text, keepIds=True)
    return "".join(line for line in text.getvalue().splitlines(keepends=True)
                   if not line.startswith("REMARK   1 CREATED"))


def write_structure(peptide: Peptide, path: str | Path) -> Path:
    """Build ``peptide`` and write it as PDB to ``path`` (folders created)."""
    topology, positions = build_peptide(peptide)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pdb_text(topology, positions))
    return path


def load_structure(path: str | Path):
    """``(topology, positions)`` of a PDB file written by :func:`write_structure`, positions in nm."""
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(str(path))
    return pdb.topology, np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
