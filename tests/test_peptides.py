"""Peptides from sequence and their OpenMM systems: determinism, chemistry, solvents, workflow."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
import yaml

from cgbench.config import DEFAULT_CONFIG
from cgbench.peptides import RESIDUE_NAMES, Peptide, build_peptide, pdb_text, write_structure
from cgbench.systems import create_system, energy_and_forces, load_system, save_system, solvate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built():
    """Structures of a few sequences, built once: alanines, charged, Gly, Pro, aromatic, His."""
    return {seq: build_peptide(Peptide(name=seq, sequence=seq)) for seq in ("A", "AAA", "KGPDE", "RWHS")}


def _atom(topology, residue_index, name):
    residue = list(topology.residues())[residue_index]
    return next(a.index for a in residue.atoms() if a.name == name)


def test_every_standard_residue_builds_with_caps_and_hydrogens():
    sequence = "".join(RESIDUE_NAMES)
    topology, positions = build_peptide(Peptide(name="all20", sequence=sequence))
    names = [r.name for r in topology.residues()]
    assert names[0] == "ACE" and names[-1] == "NME"
    # His is protonated by OpenMM as one of its tautomers.
    assert [n if not n.startswith("HI") else "HIS" for n in names[1:-1]] == [RESIDUE_NAMES[c] for c in sequence]
    assert np.isfinite(positions).all()
    # Force field templates matched every residue (createSystem raises otherwise).
    assert create_system(topology, "vacuum", Peptide(name="x", sequence=sequence)).getNumParticles() == len(positions)


@pytest.mark.parametrize(
    ("sequence", "atoms"),
    [("A", 22), ("AAA", 42), ("G", 19), ("P", 26)],
)
def test_atom_counts(sequence, atoms):
    topology, _ = build_peptide(Peptide(name="x", sequence=sequence))
    assert topology.getNumAtoms() == atoms


def test_build_is_deterministic(tmp_path):
    """Same bytes twice in one process and in another process with another hash seed (histidine:
    its tautomer and the hydrogens' placement are where randomness could enter)."""
    peptide = Peptide(name="x", sequence="KGPDEH")
    a, b = write_structure(peptide, tmp_path / "a.pdb"), write_structure(peptide, tmp_path / "b.pdb")
    assert a.read_bytes() == b.read_bytes()
    assert b"REMARK   1 CREATED" not in a.read_bytes()
    code = ("import sys; from cgbench.peptides import Peptide, write_structure; "
            "write_structure(Peptide(name='x', sequence='KGPDEH'), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.pdb")], check=True, timeout=300,
                   env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert (tmp_path / "c.pdb").read_bytes() == a.read_bytes()


@pytest.mark.parametrize("sequence", ["A", "AAA", "KGPDE", "RWHS"])
def test_geometry_is_chemical(built, sequence):
    """Peptide bonds ≈ 0.133 nm, N–CA ≈ 0.146 nm, C–H ≈ 0.109 nm, and every CA is L."""
    topology, x = built[sequence]
    lengths = {("C", "N"): (0.128, 0.138), ("N", "CA"): (0.142, 0.150), ("CA", "HA"): (0.105, 0.113)}
    for bond in topology.bonds():
        pair = (bond.atom1.name, bond.atom2.name)
        if set(pair) == {"C", "N"} and bond.atom1.residue == bond.atom2.residue:
            continue  # N-methyl of NME (its carbon is named C), not a peptide bond
        for key, (low, high) in lengths.items():
            if pair in (key, key[::-1]):
                d = np.linalg.norm(x[bond.atom1.index] - x[bond.atom2.index])
                assert low < d < high, (pair, d)
    for i, residue in enumerate(list(topology.residues())[1:-1], start=1):
        if residue.name == "GLY":
            continue
        n, ca, c, cb = (x[_atom(topology, i, name)] for name in ("N", "CA", "C", "CB"))
        # L-amino acids: the chiral volume of CA, (N - CA) x (C - CA) . (CB - CA), is about
        # +2.5 Å^3 (Engh & Huber's restraint target; a D residue has -2.5, a planar CA 0).
        volume = np.dot(np.cross(n - ca, c - ca), cb - ca)  # nm^3
        assert 2.0e-3 < volume < 3.0e-3, (residue.name, volume)


@pytest.mark.parametrize("sequence", ["A", "KGPDE"])
def test_minimised_structure_is_at_a_local_minimum(built, sequence):
    topology, x = built[sequence]
    system = create_system(topology, "obc2", Peptide(name="x", sequence=sequence), constraints="none")
    _, forces = energy_and_forces(system, x)
    # Minimised until the root-mean-square force component is below 1 kJ/mol/nm (OpenMM's
    # LocalEnergyMinimizer criterion); positions straight from OpenMM, no PDB rounding. The
    # unminimised structure is far from this (forces of thousands of kJ/mol/nm).
    assert np.sqrt(np.mean(forces**2)) < 1.0
    assert np.abs(forces).max() < 10.0


@pytest.mark.parametrize("sequence", ["A", "KGPDE", "RWHS"])
def test_native_obc2_equals_amber_custom_gb(built, sequence):
    """The fast native GBSAOBCForce reproduces amber14's implicit/obc2.xml CustomGBForce."""
    topology, x = built[sequence]
    peptide = Peptide(name="x", sequence=sequence)
    native = create_system(topology, "obc2", peptide, constraints="none")
    custom = app.ForceField(peptide.force_field, "implicit/obc2.xml").createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None)
    assert sum(isinstance(f, openmm.GBSAOBCForce) for f in native.getForces()) == 1
    assert not any(isinstance(f, openmm.CustomGBForce) for f in native.getForces())
    rng = np.random.default_rng(0)
    for positions in (x, x + rng.normal(scale=0.01, size=x.shape)):
        e_native, f_native = energy_and_forces(native, positions)
        e_custom, f_custom = energy_and_forces(custom, positions)
        # Equal to rounding (measured ≤ 2e-14 relative): without the charge scaling of
        # native_obc2 for amber's Coulomb constant they differ by 2e-7 relative.
        assert abs(e_native - e_custom) <= 1e-10 * abs(e_custom)
        assert np.abs(f_native - f_custom).max() < 1e-8


@pytest.mark.parametrize(
    ("solvent", "gb_force"),
    [("vacuum", None), ("obc1", openmm.CustomGBForce), ("obc2", openmm.GBSAOBCForce)],
)
def test_implicit_and_vacuum_systems(built, solvent, gb_force):
    topology, x = built["AAA"]
    peptide = Peptide(name="x", sequence="AAA")
    system = create_system(topology, solvent, peptide, constraints="h_bonds")
    gb = [f for f in system.getForces() if isinstance(f, (openmm.CustomGBForce, openmm.GBSAOBCForce))]
    assert [type(f) for f in gb] == ([gb_force] if gb_force else [])
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    hydrogens = sum(a.element.symbol == "H" for a in topology.atoms())
    assert system.getNumConstraints() == hydrogens  # h_bonds: one constraint per hydrogen
    assert create_system(topology, solvent, peptide, constraints="none").getNumConstraints() == 0
    assert create_system(topology, solvent, peptide).getNumConstraints() == 0  # the default: none


def test_obc1_and_obc2_differ_and_are_solvation_like(built):
    """Both GB models lower the energy of a polar peptide relative to vacuum, by different amounts."""
    topology, x = built["KGPDE"]
    peptide = Peptide(name="x", sequence="KGPDE")
    energies = {s: energy_and_forces(create_system(topology, s, peptide), x)[0] for s in ("vacuum", "obc1", "obc2")}
    assert energies["obc1"] < energies["vacuum"] - 100 and energies["obc2"] < energies["vacuum"] - 100
    assert abs(energies["obc1"] - energies["obc2"]) > 1.0


def test_explicit_system_is_solvated_neutral_pme(built, tmp_path):
    topology, x = built["KGPDE"]  # net charge -1 (K+, D-, E-): neutralised by one Na+
    peptide = Peptide(name="x", sequence="KGPDE", box_padding=0.8)
    solvated, positions = solvate(topology, x, peptide)
    waters = sum(r.name == "HOH" for r in solvated.residues())
    assert waters > 300
    assert [r.name for r in solvated.residues() if r.name in ("NA", "CL")] == ["NA"]
    assert solvated.getPeriodicBoxVectors() is not None
    system = create_system(solvated, "explicit", peptide)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert nonbonded.getCutoffDistance().value_in_unit(openmm.unit.nanometer) == pytest.approx(1.0)
    charge = sum(nonbonded.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                 for i in range(system.getNumParticles()))
    assert abs(charge) < 1e-6
    # Solute first, unchanged.
    np.testing.assert_allclose(positions[: len(x)], x, atol=1e-12)
    text = pdb_text(solvated, positions)
    assert "CRYST1" in text


def test_serialised_system_round_trips(built, tmp_path):
    topology, x = built["A"]
    system = create_system(topology, "obc2", Peptide(name="x", sequence="A"))
    loaded = load_system(save_system(system, tmp_path / "s.xml"))
    assert energy_and_forces(loaded, x)[0] == energy_and_forces(system, x)[0]


def test_added_peptide_appears_in_the_dag_and_builds(tmp_path):
    """One config entry adds a target: Snakemake plans its structure and systems and builds them."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["peptides"] = {"kgp": {"sequence": "KGP", "implicit_solvents": ["obc2"]}}
    raw["ecg_peptides"]["targets"] = []   # ala2 is gone, and a target must be a configured peptide
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    files = [f"results/peptides/kgp/{name}" for name in
             ("structure.pdb", "system_vacuum.xml", "system_obc2.xml", "system_explicit.xml")]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(tmp_path), "--cores", "2"]
    plan = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    for rule in ("build_peptide", "peptide_system", "explicit_system"):
        assert rule in plan.stdout
    built = subprocess.run(command + files, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    for name in files:
        assert (tmp_path / name).stat().st_size > 0
        assert (tmp_path / (name + ".provenance.json")).exists()
    assert not (tmp_path / "results/peptides/kgp/system_obc1.xml").exists()

    # Its built files are up to date; a change elsewhere leaves them so; a change of its own
    # settings (pH) plans them again.
    def planned(change):
        change(raw)
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
        plan = subprocess.run(command + ["--dry-run", *files], capture_output=True, text=True, timeout=300)
        assert plan.returncode == 0, plan.stderr
        return {rule for rule in ("build_peptide", "peptide_system", "explicit_system") if rule in plan.stdout}

    assert planned(lambda c: None) == set()
    assert planned(lambda c: c["ecg"]["double_well"].update(learning_rate=5e-4)) == set()
    assert planned(lambda c: c["peptides"]["kgp"].update(ph=4.0)) == {"build_peptide", "peptide_system",
                                                                       "explicit_system"}
