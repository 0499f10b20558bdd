"""CG resolutions: bead selections, φ/ψ, force mapping, ECG's canonical frame, Rg and RMSD."""

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cgbench.peptides import Peptide, build_peptide
from cgbench.resolutions import (
    RESOLUTIONS,
    aggregate_forces,
    cg_mapping,
    dihedrals,
    free_coordinates,
    from_free_coordinates,
    map_forces,
    map_positions,
    phi_psi,
    radius_of_gyration,
    rmsd_to_reference,
    slow_fast_split,
    to_canonical_frame,
)
from cgbench.systems import create_system, energy_and_forces

SEQUENCES = ("A", "AAA", "GPA")  # ala2 (Ac-Ala-NHMe), ala3, a Gly/Pro case


@pytest.fixture(scope="module")
def structures():
    """Sequence → (peptide, openmm topology, positions (n_atoms, 3) nm); built once per module."""
    built = {}
    for sequence in (*SEQUENCES, "AAAAAA"):
        peptide = Peptide(name=sequence, sequence=sequence)
        built[sequence] = (peptide, *build_peptide(peptide))
    return built


def jiggled(positions, n_frames, scale, seed):
    """``(n_frames, n_atoms, 3)``: the structure plus N(0, scale²) noise (nm), varied φ/ψ."""
    rng = np.random.default_rng(seed)
    return positions + scale * rng.standard_normal((n_frames, *positions.shape))


def random_rigid_motion(x, seed):
    """``x`` (..., n, 3) rotated by a random proper rotation and translated, and the rotation."""
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(random_state=rng).as_matrix()
    return x @ rotation.T + rng.normal(size=3), rotation


def atoms_named(topology, pairs):
    """All-atom indices of (residue name, atom name) pairs; each must match exactly one atom."""
    found = []
    for residue_name, atom_name in pairs:
        matches = [a.index for a in topology.atoms()
                   if a.residue.name == residue_name and a.name == atom_name]
        assert len(matches) == 1, (residue_name, atom_name, matches)
        found.append(matches[0])
    return found


# --- bead selections ------------------------------------------------------------------------

@pytest.mark.parametrize("sequence, resolution, n_beads", [
    ("A", "all_atom", 22),
    ("A", "heavy_atom", 10),
    ("A", "core_beta", 6),
    ("A", "backbone", 7),
    ("AAA", "heavy_atom", 20),  # ala3 = Ac-Ala3-NHMe,
    ("AAA", "core_beta", 14),
    ("AAA", "backbone", 13),
    ("AAAAAA", "core_beta", 26),
    ("GPA", "core_beta", 13),  # 2 caps + G(3) + P(4) + A(4)
])
def test_bead_counts(structures, sequence, resolution, n_beads):
    _, topology, _ = structures[sequence]
    mapping = cg_mapping(topology, resolution)
    assert mapping.n_beads == n_beads
    assert list(mapping.atom_indices) == sorted(set(mapping.atom_indices))
    assert mapping.topology.n_atoms == n_beads


def test_ala2_heavy_atom_beads_and_core_beta_names(structures):
    _, topology, _ = structures["A"]
    heavy = cg_mapping(topology, "heavy_atom")
    assert sorted(zip(heavy.residue_names, heavy.bead_names)) == sorted([
        ("ACE", "CH3"), ("ACE", "C"), ("ACE", "O"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "CB"),
        ("ALA", "C"), ("ALA", "O"), ("NME", "N"), ("NME", "C")])
    core = cg_mapping(topology, "core_beta")
    assert list(zip(core.residue_names, core.bead_names)) == [
        ("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C"), ("ALA", "CB"), ("NME", "N")]


def test_core_beta_glycine_has_no_cb_and_proline_has_one(structures):
    _, topology, _ = structures["GPA"]
    core = cg_mapping(topology, "core_beta")
    names_of = {}
    for residue, name in zip(core.residue_names, core.bead_names):
        names_of.setdefault(residue, set()).add(name)
    assert names_of == {"ACE": {"C"}, "GLY": {"N", "CA", "C"}, "PRO": {"N", "CA", "CB", "C"},
                        "ALA": {"N", "CA", "CB", "C"}, "NME": {"N"}}


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_backbone_is_the_heavy_atom_chain_from_ace_to_nme(structures, sequence):
    _, topology, _ = structures[sequence]
    backbone = cg_mapping(topology, "backbone")
    residues = list(topology.residues())
    expected = [(0, "CH3"), (0, "C")]
    for i in range(1, len(sequence) + 1):
        expected += [(i, "N"), (i, "CA"), (i, "C")]
    expected += [(len(sequence) + 1, "N"), (len(sequence) + 1, "C")]
    atom_of = {(a.residue.index, a.name): a.index for a in topology.atoms()}
    assert list(backbone.atom_indices) == [atom_of[key] for key in expected]
    assert (residues[0].name, residues[len(sequence) + 1].name) == ("ACE", "NME")
    # consecutive beads are bonded: a chain
    bonds = {frozenset((a.index, b.index)) for a, b in topology.bonds()}
    chain = backbone.atom_indices
    assert all(frozenset(pair) in bonds for pair in zip(chain[:-1], chain[1:]))


def test_ala2_slow_fast_split(structures):
    _, topology, _ = structures["A"]
    split = slow_fast_split(topology)
    assert split.z.n_beads == 7 and split.x.n_beads == 3
    assert sorted(zip(split.x.residue_names, split.x.bead_names)) == [
        ("ACE", "O"), ("ALA", "CB"), ("ALA", "O")]
    assert split.representation.n_free == 24
    assert (len(split.free_z), len(split.free_x)) == (15, 9)
    assert sorted(split.free_z + split.free_x) == list(range(24))
    assert set(split.representation.frame_beads) <= set(split.z_beads)
    # z and X partition the representation's beads
    full = np.asarray(split.representation.atom_indices)
    assert sorted(split.z_beads + split.x_beads) == list(range(10))
    np.testing.assert_array_equal(full[list(split.z_beads)], split.z.atom_indices)
    np.testing.assert_array_equal(full[list(split.x_beads)], split.x.atom_indices)


def test_all_atom_split_puts_hydrogens_in_x_and_core_beta_cannot_split(structures):
    _, topology, _ = structures["A"]
    split = slow_fast_split(topology, "all_atom")
    assert (split.z.n_beads, split.x.n_beads) == (7, 15)
    assert (len(split.free_z), len(split.free_x)) == (15, 45)
    with pytest.raises(ValueError, match="backbone"):
        slow_fast_split(topology, "core_beta")


def test_unknown_resolution_is_refused(structures):
    with pytest.raises(ValueError, match="resolution"):
        cg_mapping(structures["A"][1], "martini")


# --- φ / ψ ----------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("sequence", SEQUENCES)
def test_phi_psi_match_mdtraj_on_the_all_atom_structure(structures, sequence, resolution):
    _, topology, positions = structures[sequence]
    frames = jiggled(positions, 16, 0.03, seed=1)
    trajectory = md.Trajectory(frames, md.Topology.from_openmm(topology))
    _, phi_expected = md.compute_phi(trajectory)
    _, psi_expected = md.compute_psi(trajectory)
    assert phi_expected.shape == (16, len(sequence))

    mapping = cg_mapping(topology, resolution)
    beads = map_positions(frames, mapping)
    phi, psi = phi_psi(beads, mapping)
    # compare on the circle: ±π are the same angle
    np.testing.assert_allclose(np.angle(np.exp(1j * (phi - phi_expected))), 0, atol=1e-4)
    np.testing.assert_allclose(np.angle(np.exp(1j * (psi - psi_expected))), 0, atol=1e-4)
    assert np.all((phi >= -np.pi) & (phi < np.pi)) and np.all((psi >= -np.pi) & (psi < np.pi))
    assert np.ptp(phi_expected) > 0.3  # the jiggled frames really differ

    phi_jax, psi_jax = jax.jit(lambda x: phi_psi(x, mapping))(jnp.asarray(beads.reshape(4, 4, -1, 3)))
    np.testing.assert_allclose(np.angle(np.exp(1j * (np.asarray(phi_jax).reshape(16, -1) - phi))),
                               0, atol=1e-4)
    np.testing.assert_allclose(np.angle(np.exp(1j * (np.asarray(psi_jax).reshape(16, -1) - psi))),
                               0, atol=1e-4)


@pytest.mark.parametrize("points, expected", [
    ([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, -1, 0]], -np.pi),   # trans: π is reported as −π
    ([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0]], 0.0),        # cis
    ([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 1]], np.pi / 2),  # IUPAC sign: clockwise is +
    ([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, -1]], -np.pi / 2),
])
def test_dihedral_conventions(points, expected):
    angle = dihedrals(np.asarray(points, dtype=float), [(0, 1, 2, 3)])
    np.testing.assert_allclose(angle, [expected], atol=1e-12)
    topology = md.Topology()
    residue = topology.add_residue("X", topology.add_chain())
    for i in range(4):
        topology.add_atom(f"C{i}", md.element.carbon, residue)
    trajectory = md.Trajectory(np.asarray(points, dtype=np.float32)[None], topology)
    reference = md.compute_dihedrals(trajectory, [[0, 1, 2, 3]])[0, 0]
    assert np.isclose(np.cos(angle[0] - reference), 1.0, atol=1e-6)


# --- forces ---------------------------------------------------------------------------------

# Atoms of ala2 whose force is in no bead (neither a bead nor a hydrogen bonded to a bead).
DROPPED_ALA2 = {
    "heavy_atom": [],
    "core_beta": [("ACE", "CH3"), ("ACE", "H1"), ("ACE", "H2"), ("ACE", "H3"), ("ACE", "O"),
                  ("ALA", "O"), ("NME", "C"), ("NME", "H1"), ("NME", "H2"), ("NME", "H3")],
    "backbone": [("ACE", "O"), ("ALA", "O"), ("ALA", "CB"), ("ALA", "HB1"), ("ALA", "HB2"),
                 ("ALA", "HB3")],
}


def test_all_atom_forces_under_constrained_hydrogens_are_refused(structures):
    """Both ends of every X–H constraint are beads: summing cannot remove the constraint force."""
    _, topology, positions = structures["A"]
    mapping = cg_mapping(topology, "all_atom")
    forces = np.ones((len(positions), 3))
    with pytest.raises(ValueError, match="all_atom resolution keeps hydrogens"):
        map_forces(forces, mapping, "h_bonds")
    np.testing.assert_array_equal(map_forces(forces, mapping, "none"), forces)


@pytest.mark.parametrize("resolution", [r for r in RESOLUTIONS if r != "all_atom"])
def test_summed_forces_conserve_the_total_force_of_kept_groups(structures, resolution):
    _, topology, positions = structures["A"]
    mapping = cg_mapping(topology, resolution)
    forces = np.random.default_rng(2).normal(size=(5, len(positions), 3))  # total force ≠ 0
    kept = np.setdiff1d(np.arange(len(positions)), atoms_named(topology, DROPPED_ALA2[resolution]))
    summed = map_forces(forces, mapping, "h_bonds")
    assert summed.shape == (5, mapping.n_beads, 3)
    np.testing.assert_allclose(summed.sum(axis=-2), forces[:, kept].sum(axis=-2), atol=1e-12)
    sliced = map_forces(forces, mapping, "none")
    np.testing.assert_array_equal(sliced, forces[:, list(mapping.atom_indices)])


# Hydrogens of each heavy atom of ala2, by name.
ALA2_HYDROGENS = {
    ("ACE", "CH3"): [("ACE", "H1"), ("ACE", "H2"), ("ACE", "H3")],
    ("ALA", "N"): [("ALA", "H")],
    ("ALA", "CA"): [("ALA", "HA")],
    ("ALA", "CB"): [("ALA", "HB1"), ("ALA", "HB2"), ("ALA", "HB3")],
    ("NME", "N"): [("NME", "H")],
    ("NME", "C"): [("NME", "H1"), ("NME", "H2"), ("NME", "H3")],
}


@pytest.mark.parametrize("resolution", ["heavy_atom", "core_beta", "backbone"])
def test_constrained_forces_sum_each_atom_with_its_hydrogens(structures, resolution):
    peptide, topology, positions = structures["A"]
    system = create_system(topology, "vacuum", peptide, constraints="h_bonds")
    _, forces = energy_and_forces(system, positions)
    mapping = cg_mapping(topology, resolution)
    mapped = map_forces(forces, mapping, "h_bonds")
    for bead, (residue, name) in enumerate(zip(mapping.residue_names, mapping.bead_names)):
        group = atoms_named(topology, [(residue, name), *ALA2_HYDROGENS.get((residue, name), [])])
        np.testing.assert_allclose(mapped[bead], forces[group].sum(axis=0), rtol=1e-12, atol=1e-9)
    assert np.abs(mapped - forces[list(mapping.atom_indices)]).max() > 10.0  # hydrogens count


@pytest.mark.parametrize("resolution", ["heavy_atom", "core_beta", "backbone"])
def test_constraint_forces_along_bonds_to_hydrogen_cancel_in_summed_forces(structures, resolution):
    """Any equal-and-opposite forces along X–H bonds (what constraints add) leave bead forces as
    they are; the plain slice does not remove them."""
    _, topology, positions = structures["GPA"]
    mapping = cg_mapping(topology, resolution)
    rng = np.random.default_rng(3)
    forces = rng.normal(size=positions.shape)
    constraint_forces = np.zeros_like(forces)
    for a, b in topology.bonds():
        if (a.element.symbol == "H") != (b.element.symbol == "H"):
            heavy, hydrogen = (a, b) if b.element.symbol == "H" else (b, a)
            bond = positions[hydrogen.index] - positions[heavy.index]
            strength = rng.normal(scale=100.0)
            constraint_forces[hydrogen.index] += strength * bond
            constraint_forces[heavy.index] -= strength * bond
    np.testing.assert_allclose(map_forces(forces + constraint_forces, mapping, "h_bonds"),
                               map_forces(forces, mapping, "h_bonds"), atol=1e-10)
    assert not np.allclose(map_forces(forces + constraint_forces, mapping, "none"),
                           map_forces(forces, mapping, "none"))


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("sequence", SEQUENCES)
def test_aggregation_groups_partition_the_solute_along_bonds(structures, sequence, resolution):
    _, topology, positions = structures[sequence]
    mapping = cg_mapping(topology, resolution)
    groups = mapping.aggregation_groups
    atoms = sorted(a for g in groups for a in g)
    assert atoms == list(range(topology.getNumAtoms()))                       # a partition of the solute
    assert [g[0] for g in groups] == list(mapping.atom_indices)
    owner = {a: bead for bead, g in enumerate(groups) for a in g}
    for a, b in topology.bonds():                                              # hydrogens ride with their atom
        if (a.element.symbol == "H") != (b.element.symbol == "H"):
            heavy, hydrogen = (a, b) if b.element.symbol == "H" else (b, a)
            if hydrogen.index not in mapping.atom_indices:
                assert owner[hydrogen.index] == owner[heavy.index]
    forces = np.random.default_rng(6).normal(size=(3, *positions.shape))
    summed = aggregate_forces(forces, mapping)
    np.testing.assert_allclose(summed.sum(-2), forces.sum(-2), atol=1e-10)   # nothing dropped
    if resolution == "all_atom":
        np.testing.assert_array_equal(summed, forces)


def test_aggregated_force_has_the_mean_force_of_the_slice_and_less_noise():
    """A bead R with one atom x bonded to it, U = V(R) + ½k(x − R − b)² + W(x) (1-D, kT = 1): the
    aggregated force −V'(R) − W'(x) and the slice force −V'(R) + k(x − R − b) both average, over
    p(x | R), to the exact mean force −A'(R) (quadrature), and the aggregated one varies far less."""
    k, b = 400.0, 0.1
    V = lambda r: 2.0 * (r**2 - 1.0) ** 2                                     # noqa: E731
    dV = lambda r: 8.0 * r * (r**2 - 1.0)                                     # noqa: E731
    W = lambda x: 3.0 * np.cos(2.0 * x)                                        # noqa: E731
    dW = lambda x: -6.0 * np.sin(2.0 * x)                                      # noqa: E731
    x = np.linspace(-4.0, 4.0, 40001)

    def conditional(r):
        logp = -(0.5 * k * (x - r - b) ** 2 + W(x))
        p = np.exp(logp - logp.max())
        return p / p.sum(), logp.max() + np.log(p.sum())

    def free_energy(r):
        return V(r) - conditional(r)[1]

    for r in (-1.0, -0.3, 0.4, 1.2):
        p, _ = conditional(r)
        exact = -(free_energy(r + 1e-4) - free_energy(r - 1e-4)) / 2e-4
        aggregated, sliced = -dV(r) - dW(x), -dV(r) + k * (x - r - b)
        assert np.sum(p * aggregated) == pytest.approx(exact, abs=1e-4)
        assert np.sum(p * sliced) == pytest.approx(exact, abs=1e-4)
        var = lambda f: np.sum(p * f**2) - np.sum(p * f) ** 2                  # noqa: E731
        assert var(aggregated) < 0.1 * var(sliced)


def test_force_and_position_mapping_work_on_jax_under_jit(structures):
    _, topology, positions = structures["AAA"]
    mapping = cg_mapping(topology, "core_beta")
    forces = np.random.default_rng(4).normal(size=(2, 3, len(positions), 3)).astype(np.float32)
    mapped = jax.jit(lambda f: map_forces(f, mapping, "h_bonds"))(jnp.asarray(forces))
    assert isinstance(mapped, jax.Array) and mapped.shape == (2, 3, 14, 3)
    np.testing.assert_allclose(mapped, map_forces(forces, mapping, "h_bonds"), rtol=1e-5, atol=1e-5)
    beads = jax.jit(lambda x: map_positions(x, mapping))(jnp.asarray(forces))
    np.testing.assert_array_equal(beads, forces[..., list(mapping.atom_indices), :])
    with pytest.raises(ValueError, match="constraints"):
        map_forces(forces, mapping, "all_bonds")


# --- canonical frame ------------------------------------------------------------------------

FRAME_CASES = [("A", "heavy_atom"), ("A", "all_atom"), ("AAA", "core_beta"), ("GPA", "backbone")]


def canonical_case(structures, sequence, resolution, seed=5):
    _, topology, positions = structures[sequence]
    mapping = cg_mapping(topology, resolution)
    beads = map_positions(jiggled(positions, 8, 0.02, seed), mapping)
    moved, _ = random_rigid_motion(beads, seed)
    return mapping, moved


def pairwise_distances(x):
    x = np.asarray(x, dtype=float)
    return np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)


@pytest.mark.parametrize("sequence, resolution", FRAME_CASES)
def test_canonical_frame_fixes_six_coordinates_at_exactly_zero(structures, sequence, resolution):
    mapping, x = canonical_case(structures, sequence, resolution)
    canonical = np.asarray(to_canonical_frame(x, mapping))
    n, ca, c = mapping.frame_beads
    assert mapping.bead_names[n] == "N" and mapping.bead_names[ca] == "CA"
    assert mapping.bead_names[c] == "C" and len({mapping.residue_indices[i] for i in (n, ca, c)}) == 1
    assert np.all(canonical[:, n] == 0.0)
    assert np.all(canonical[:, ca, :2] == 0.0) and np.all(canonical[:, ca, 2] > 0)
    assert np.all(canonical[:, c, 1] == 0.0) and np.all(canonical[:, c, 0] > 0)
    assert np.count_nonzero(canonical == 0.0) == 6 * len(canonical)


@pytest.mark.parametrize("sequence, resolution", FRAME_CASES)
def test_canonical_frame_is_a_proper_rigid_motion(structures, sequence, resolution):
    mapping, x = canonical_case(structures, sequence, resolution)
    canonical = np.asarray(to_canonical_frame(x, mapping))
    np.testing.assert_allclose(pairwise_distances(canonical), pairwise_distances(x), atol=2e-5)
    # a reflection would flip the sign of every dihedral angle
    quadruples = [(i, i + 1, i + 2, i + 3) for i in range(mapping.n_beads - 3)]
    np.testing.assert_allclose(np.cos(dihedrals(canonical, quadruples) - dihedrals(x, quadruples)),
                               1.0, atol=1e-5)
    # the same configuration, moved rigidly, lands on the same canonical coordinates
    moved_again, _ = random_rigid_motion(x, seed=11)
    np.testing.assert_allclose(to_canonical_frame(moved_again, mapping), canonical, atol=2e-5)


@pytest.mark.parametrize("sequence, resolution", FRAME_CASES)
def test_canonical_frame_is_idempotent_and_free_coordinates_round_trip(structures, sequence,
                                                                       resolution):
    mapping, x = canonical_case(structures, sequence, resolution)
    canonical = to_canonical_frame(x, mapping)
    np.testing.assert_allclose(to_canonical_frame(canonical, mapping), canonical, atol=2e-6)
    free = free_coordinates(canonical, mapping)
    assert free.shape == (len(x), 3 * mapping.n_beads - 6) == (len(x), mapping.n_free)
    np.testing.assert_array_equal(from_free_coordinates(free, mapping), canonical)
    np.testing.assert_array_equal(free_coordinates(from_free_coordinates(free, mapping), mapping),
                                  free)


def test_canonical_frame_jits_vmaps_and_keeps_batch_dims(structures):
    mapping, x = canonical_case(structures, "A", "heavy_atom")
    batched = jnp.asarray(x.reshape(2, 4, mapping.n_beads, 3), dtype=jnp.float32)
    eager = to_canonical_frame(batched, mapping)
    assert eager.shape == batched.shape
    jitted = jax.jit(lambda y: to_canonical_frame(y, mapping))(batched)
    mapped = jax.vmap(jax.vmap(lambda y: to_canonical_frame(y, mapping)))(batched)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    np.testing.assert_allclose(mapped, eager, atol=1e-6)
    free = jax.jit(lambda y: free_coordinates(to_canonical_frame(y, mapping), mapping))(batched)
    assert free.shape == (2, 4, 24)
    back = jax.jit(lambda f: from_free_coordinates(f, mapping))(free)
    np.testing.assert_allclose(back, eager, atol=1e-6)
    grad = jax.grad(lambda y: free_coordinates(to_canonical_frame(y, mapping), mapping).sum())(
        batched[0, 0])
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_ala2_free_coordinates_split_into_z_and_x(structures):
    """The frame is set by backbone beads only: z's own canonical frame equals the z part of the
    heavy-atom one, and X's free coordinates are its canonical Cartesians."""
    _, topology, positions = structures["A"]
    split = slow_fast_split(topology)
    full = map_positions(jiggled(positions, 6, 0.02, seed=7), split.representation)
    canonical = to_canonical_frame(full, split.representation)
    free = free_coordinates(canonical, split.representation)
    z_alone = to_canonical_frame(full[:, list(split.z_beads)], split.z)
    np.testing.assert_allclose(canonical[:, list(split.z_beads)], z_alone, atol=2e-6)
    np.testing.assert_allclose(free[:, list(split.free_z)], free_coordinates(z_alone, split.z),
                               atol=2e-6)
    np.testing.assert_array_equal(free[:, list(split.free_x)],
                                  canonical[:, list(split.x_beads)].reshape(6, 9))


# --- Rg and RMSD ----------------------------------------------------------------------------

def kabsch_rmsd(x, reference):
    """RMSD after optimal superposition (numpy, for checking mdtraj)."""
    x = x - x.mean(axis=0)
    reference = reference - reference.mean(axis=0)
    u, _, vt = np.linalg.svd(x.T @ reference)
    sign = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, sign]) @ vt
    return np.sqrt(np.mean(np.sum((x @ rotation - reference) ** 2, axis=-1)))


@pytest.mark.parametrize("sequence, resolution", [("A", "heavy_atom"), ("AAA", "core_beta"),
                                                  ("GPA", "backbone"), ("A", "all_atom")])
def test_rg_and_rmsd_match_numpy(structures, sequence, resolution):
    _, topology, positions = structures[sequence]
    mapping = cg_mapping(topology, resolution)
    beads = map_positions(jiggled(positions, 10, 0.05, seed=8), mapping)
    reference = map_positions(positions, mapping)

    rg = radius_of_gyration(beads, mapping)
    centred = beads - beads.mean(axis=-2, keepdims=True)
    np.testing.assert_allclose(rg, np.sqrt(np.mean(np.sum(centred**2, axis=-1), axis=-1)), rtol=1e-5)
    assert radius_of_gyration(reference, mapping).shape == (1,)

    rmsd = rmsd_to_reference(beads, reference, mapping)
    np.testing.assert_allclose(rmsd, [kabsch_rmsd(b, reference) for b in beads], rtol=1e-4,
                               atol=1e-5)
    assert np.all(rmsd > 0.02)
    moved, _ = random_rigid_motion(reference, seed=9)
    np.testing.assert_allclose(rmsd_to_reference(moved, reference, mapping), 0.0, atol=1e-3)
