"""Coarse-grained resolutions of a capped peptide: atom selections on its all-atom topology.

A resolution keeps some atoms of the solute as beads (a slice mapping, as in CG-BG); beads are in
the order of the topology. Four resolutions are defined for any sequence of the 20 standard
residues between an ACE and an NME cap (:func:`cg_mapping`):

- ``all_atom``: every solute atom (no water, no ions).
- ``heavy_atom``: every non-hydrogen solute atom (ala2 = Ac-Ala-NHMe: 10 beads; ala3 = Ac-Ala3-NHMe: 20).
- ``core_beta``: N, CA, CB, C of every residue (no CB for glycine; proline has one) plus C of ACE
  and N of NME, so that every φ and ψ stays defined. ala2: 6 beads, as in CG-BG. Longer peptides
  keep these 2 cap atoms too, so ala3 has 14 beads and ala6 26 — 2 more than CG-BG's 12 and 24.
- ``backbone``: the slow coordinates z of ECG, the heavy-atom backbone chain from CH3 of ACE to
  the methyl carbon of NME (CH3, C, N, CA, C, N, CA, C, …, N, C); ala2: 7 beads.
  :func:`slow_fast_split` pairs it with the fast coordinates X, the remaining beads of a chosen
  representation (``heavy_atom`` by default; ala2: O of ACE, O and CB of ALA).

Forces: the CG datasets use :func:`aggregate_forces` (each bead's force plus those of the non-bead
atoms nearest to it along bonds: a valid force map with far less noise than the slice; its
docstring has the argument and the numbers). :func:`map_forces`: with unconstrained bonds the mapped force of a bead is the force on
its atom (a slice). When bonds to hydrogen are constrained, the atom and its bonded hydrogens move
as a rigid group, the constraint forces inside the group cancel in its summed force, and the mapped
force is that sum. Hydrogens bonded to an atom that is not kept (e.g. the methyl hydrogens of ACE
in ``core_beta``) are dropped; so are the atoms themselves.

Geometry: φ/ψ (:func:`phi_psi`, radians in [−π, π)), ECG's canonical frame
(:func:`to_canonical_frame`, :func:`free_coordinates`, :func:`from_free_coordinates`), and radius of
gyration and RMSD of bead trajectories through mdtraj (:func:`radius_of_gyration`,
:func:`rmsd_to_reference`).

Units: nm, kJ/mol/nm. Array functions take leading batch dimensions ``...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import mdtraj as md
import numpy as np

RESOLUTIONS = ("all_atom", "heavy_atom", "core_beta", "backbone")
#: Representations whose beads can be split into backbone z and the rest X.
SPLITTABLE = ("all_atom", "heavy_atom")
#: Coordinates fixed to zero in the canonical frame: (frame atom, axis) with axis 0, 1, 2 = x, y, z.
FIXED_COORDINATES = (("N", 0), ("N", 1), ("N", 2), ("CA", 0), ("CA", 1), ("C", 1))


@dataclass(frozen=True)
class CGMapping:
    """A slice mapping from the all-atom solute to beads.

    Attributes:
        resolution: Name of the resolution (``heavy_atom``, …; ``backbone_x`` for ECG's X).
        atom_indices: Index of each bead's atom in the all-atom topology, increasing; ``(n_beads,)``.
        bead_names: Atom name of each bead (``CA``; ``CH3`` of ACE; ``C`` is also NME's methyl).
        residue_names: Residue name of each bead (``ACE``, ``ALA``, …, ``NME``).
        residue_indices: Residue index of each bead in the topology (ACE is 0).
        aggregation_groups: For each bead, its atom followed by every solute atom that is not a
            bead and is nearest to it along bonds (ties: the lower bead); the groups partition the
            solute. Their summed forces are the force map of the CG datasets (:func:`aggregate_forces`).
        force_groups: For each bead, its atom followed by the hydrogens bonded to it that are not
            beads themselves (all-atom indices); summed for forces under constrained H bonds.
        phi_beads: ``(n_residues, 4)`` bead indices of φ = C(i−1), N(i), CA(i), C(i) of every
            residue of the sequence (caps excluded); empty if the beads lack the backbone.
        psi_beads: ``(n_residues, 4)`` bead indices of ψ = N(i), CA(i), C(i), N(i+1).
        frame_beads: Bead indices of N, CA, C of the first residue, which define the canonical
            frame; ``None`` if a frame atom is not a bead.
        topology: mdtraj topology of the beads (bonds between kept atoms kept).
    """

    resolution: str
    atom_indices: tuple[int, ...]
    bead_names: tuple[str, ...]
    residue_names: tuple[str, ...]
    residue_indices: tuple[int, ...]
    aggregation_groups: tuple[tuple[int, ...], ...]
    force_groups: tuple[tuple[int, ...], ...]
    phi_beads: tuple[tuple[int, int, int, int], ...]
    psi_beads: tuple[tuple[int, int, int, int], ...]
    frame_beads: tuple[int, int, int] | None
    topology: md.Topology = field(compare=False, repr=False)

    @property
    def n_beads(self) -> int:
        return len(self.atom_indices)

    @property
    def n_free(self) -> int:
        """Free Cartesian coordinates in the canonical frame, ``3 n_beads − 6``."""
        return 3 * self.n_beads - 6


@dataclass(frozen=True)
class SlowFastSplit:
    """ECG's split of a representation into slow backbone beads z and fast beads X.

    Attributes:
        representation: Mapping of all beads (z and X together), e.g. ``heavy_atom``.
        z: Mapping of the backbone beads (the ``backbone`` resolution).
        x: Mapping of the other beads of ``representation``.
        z_beads: Indices of z's beads in ``representation``'s bead array.
        x_beads: Indices of X's beads in ``representation``'s bead array.
        free_z: Indices into ``representation``'s free coordinates (:func:`free_coordinates`) that
            belong to z; all 6 fixed coordinates are z's (ala2 heavy_atom: 15 of 24).
        free_x: Indices into the free coordinates that belong to X (ala2 heavy_atom: 9).
    """

    representation: CGMapping
    z: CGMapping
    x: CGMapping
    z_beads: tuple[int, ...]
    x_beads: tuple[int, ...]
    free_z: tuple[int, ...]
    free_x: tuple[int, ...]


def _mdtraj_topology(topology) -> md.Topology:
    return topology if isinstance(topology, md.Topology) else md.Topology.from_openmm(topology)


def _solute_residues(topology: md.Topology) -> list:
    residues = [r for r in topology.residues if r.is_protein]
    if not residues or residues[0].name != "ACE" or residues[-1].name != "NME":
        raise ValueError("expected a peptide capped by ACE and NME; residues: "
                         f"{[r.name for r in residues]}")
    return residues


def _is_hydrogen(atom) -> bool:
    return atom.element is not None and atom.element.symbol == "H"


def _atom(residue, name: str):
    atoms = [a for a in residue.atoms if a.name == name]
    if len(atoms) != 1:
        raise ValueError(f"residue {residue} has {len(atoms)} atoms named {name!r}")
    return atoms[0]


def _backbone_chain(residues: list) -> list[int]:
    """All-atom indices of CH3(ACE), C(ACE), then N, CA, C of each residue, then N, C of NME."""
    ace, *middle, nme = residues
    chain = [_atom(ace, "CH3").index, _atom(ace, "C").index]
    for residue in middle:
        chain += [_atom(residue, name).index for name in ("N", "CA", "C")]
    return chain + [_atom(nme, "N").index, _atom(nme, "C").index]


def _selected_atoms(topology: md.Topology, resolution: str) -> list[int]:
    residues = _solute_residues(topology)
    if resolution == "all_atom":
        return [a.index for r in residues for a in r.atoms]
    if resolution == "heavy_atom":
        return [a.index for r in residues for a in r.atoms if not _is_hydrogen(a)]
    if resolution == "core_beta":
        ace, *middle, nme = residues
        kept = [_atom(ace, "C").index, _atom(nme, "N").index]
        for residue in middle:
            names = ("N", "CA", "C") if residue.name == "GLY" else ("N", "CA", "CB", "C")
            kept += [_atom(residue, name).index for name in names]
        return kept
    if resolution == "backbone":
        return _backbone_chain(residues)
    raise ValueError(f"resolution {resolution!r}: expected one of {RESOLUTIONS}")


def _mapping_from_atoms(topology: md.Topology, resolution: str, atom_indices) -> CGMapping:
    atom_indices = sorted(int(i) for i in atom_indices)
    bead_of_atom = {atom: bead for bead, atom in enumerate(atom_indices)}
    atoms = [topology.atom(i) for i in atom_indices]

    bonded_hydrogens: dict[int, list[int]] = {i: [] for i in atom_indices}
    for a, b in topology.bonds:
        for heavy, hydrogen in ((a, b), (b, a)):
            if (heavy.index in bonded_hydrogens and _is_hydrogen(hydrogen)
                    and not _is_hydrogen(heavy) and hydrogen.index not in bead_of_atom):
                bonded_hydrogens[heavy.index].append(hydrogen.index)
    force_groups = tuple((i, *sorted(bonded_hydrogens[i])) for i in atom_indices)
    aggregation_groups = _aggregation_groups(topology, atom_indices)

    residues = _solute_residues(topology)
    phi, psi = [], []
    for previous, residue, following in zip(residues[:-2], residues[1:-1], residues[2:]):
        needed = [_atom(previous, "C"), *(_atom(residue, n) for n in ("N", "CA", "C")),
                  _atom(following, "N")]
        beads = [bead_of_atom.get(a.index) for a in needed]
        if None in beads:
            phi, psi = [], []
            break
        phi.append(tuple(beads[:4]))
        psi.append(tuple(beads[1:]))
    frame = [bead_of_atom.get(_atom(residues[1], name).index) for name in ("N", "CA", "C")]

    return CGMapping(
        resolution=resolution,
        atom_indices=tuple(atom_indices),
        bead_names=tuple(a.name for a in atoms),
        residue_names=tuple(a.residue.name for a in atoms),
        residue_indices=tuple(a.residue.index for a in atoms),
        aggregation_groups=aggregation_groups,
        force_groups=force_groups,
        phi_beads=tuple(phi),
        psi_beads=tuple(psi),
        frame_beads=None if None in frame else tuple(frame),
        topology=topology.subset(atom_indices),
    )


def _aggregation_groups(topology: md.Topology, atom_indices: list[int]) -> tuple[tuple[int, ...], ...]:
    """Each solute atom assigned to the bead nearest along bonds (breadth first from all beads)."""
    solute = {a.index for r in _solute_residues(topology) for a in r.atoms}
    neighbours: dict[int, list[int]] = {i: [] for i in solute}
    for a, b in topology.bonds:
        if a.index in solute and b.index in solute:
            neighbours[a.index].append(b.index)
            neighbours[b.index].append(a.index)
    owner = {atom: bead for bead, atom in enumerate(atom_indices)}
    frontier = list(atom_indices)
    while frontier:
        following = []
        for atom in frontier:
            for other in sorted(neighbours[atom]):
                if other not in owner:
                    owner[other] = owner[atom]
                    following.append(other)
        frontier = following
    groups = [[atom] for atom in atom_indices]
    for atom, bead in sorted(owner.items()):
        if atom != atom_indices[bead]:
            groups[bead].append(atom)
    return tuple(tuple(g) for g in groups)


def aggregate_forces(forces, mapping: CGMapping):
    """Mapped forces of the CG datasets: each bead's summed :attr:`CGMapping.aggregation_groups`.

    ``(..., n_atoms, 3)`` → ``(..., n_beads, 3)``, kJ/mol/nm (numpy or jax). With the other
    atoms written as x_a = R_b(a) + u_a (a change of variables of unit Jacobian), the mean force
    on bead b is E[F_b + Σ_{a: b(a) = b} F_a | R]: the sum is an unbiased sample of the mean force,
    like the slice F_b, but forces inside a group (bond stretches to hydrogen, and the constraint
    forces of constrained bonds) cancel in it. Measured on ala2 in OBC2 (2 × 5 ns metadynamics,
    16 000 training frames, 30 epochs): validation RMSE of force matching at ``core_beta`` 290
    kJ/mol/nm per component against 889 for the slice (≈ 9× less variance, so about as many times
    fewer frames for the same accuracy of the mean force); at ``heavy_atom`` 197 with aggregation,
    where the slice's raw nearest-neighbour noise estimate
    (:func:`cgbench.force_matching.force_noise_floor` without a model, an overestimate) is 975.
    """
    xp = _namespace(forces)
    matrix = np.zeros((mapping.n_beads, forces.shape[-2]))
    for bead, group in enumerate(mapping.aggregation_groups):
        matrix[bead, list(group)] = 1.0
    return xp.einsum("ba,...ad->...bd", xp.asarray(matrix, dtype=forces.dtype), forces)


def cg_mapping(topology, resolution: str) -> CGMapping:
    """The mapping of ``resolution`` (one of :data:`RESOLUTIONS`) on a capped peptide.

    Args:
        topology: ``openmm.app.Topology`` or ``mdtraj.Topology`` of ACE-sequence-NME, possibly
            solvated (water and ions are never beads).
        resolution: ``all_atom``, ``heavy_atom``, ``core_beta`` or ``backbone``.
    """
    topology = _mdtraj_topology(topology)
    return _mapping_from_atoms(topology, resolution, _selected_atoms(topology, resolution))


def slow_fast_split(topology, representation: str = "heavy_atom") -> SlowFastSplit:
    """ECG's z (``backbone``) and X (every other bead of ``representation``).

    ``representation`` must contain the backbone chain: ``heavy_atom`` or ``all_atom``.
    """
    if representation not in SPLITTABLE:
        raise ValueError(f"representation {representation!r} does not contain the backbone chain; "
                         f"expected one of {SPLITTABLE}")
    topology = _mdtraj_topology(topology)
    full = cg_mapping(topology, representation)
    z = cg_mapping(topology, "backbone")
    z_atoms = set(z.atom_indices)
    x = _mapping_from_atoms(topology, "backbone_x",
                            [i for i in full.atom_indices if i not in z_atoms])
    bead_of_atom = {atom: bead for bead, atom in enumerate(full.atom_indices)}
    z_beads = tuple(bead_of_atom[i] for i in z.atom_indices)
    x_beads = tuple(bead_of_atom[i] for i in x.atom_indices)
    bead_of_free = _free_flat_indices(full) // 3
    free_z = tuple(int(k) for k in np.flatnonzero(np.isin(bead_of_free, z_beads)))
    free_x = tuple(int(k) for k in np.flatnonzero(np.isin(bead_of_free, x_beads)))
    return SlowFastSplit(full, z, x, z_beads, x_beads, free_z, free_x)


def _namespace(array):
    return jnp if isinstance(array, jax.Array) else np


def map_positions(positions, mapping: CGMapping):
    """Bead positions: ``(..., n_atoms, 3)`` → ``(..., n_beads, 3)``, nm (numpy or jax)."""
    return positions[..., np.asarray(mapping.atom_indices), :]


def force_group_matrix(mapping: CGMapping, n_atoms: int) -> np.ndarray:
    """``(n_beads, n_atoms)`` matrix with 1 where an atom belongs to a bead's force group."""
    matrix = np.zeros((mapping.n_beads, n_atoms))
    for bead, group in enumerate(mapping.force_groups):
        matrix[bead, list(group)] = 1.0
    return matrix


def map_forces(forces, mapping: CGMapping, constraints: str = "none"):
    """Bead forces: ``(..., n_atoms, 3)`` → ``(..., n_beads, 3)``, kJ/mol/nm (numpy or jax).

    Args:
        forces: All-atom forces (the unbiased potential's).
        mapping: The resolution.
        constraints: ``none``: the force on each bead's atom; ``h_bonds`` (bonds to hydrogen
            constrained): the summed force of each bead's atom and its bonded hydrogens (its
            ``force_group``). Hydrogens of atoms that are not beads are dropped.

    Raises:
        ValueError: ``h_bonds`` with a hydrogen bead bonded to another bead (``all_atom``): both
            ends of a constraint are then beads, its force does not cancel in any bead's sum, and
            no slice or sum gives the mapped force.
    """
    if constraints == "none":
        return map_positions(forces, mapping)
    if constraints != "h_bonds":
        raise ValueError(f"constraints {constraints!r}: expected 'none' or 'h_bonds'")
    if any(_is_hydrogen(a) or _is_hydrogen(b) for a, b in mapping.topology.bonds):
        raise ValueError(f"the {mapping.resolution} resolution keeps hydrogens bonded to other beads: with "
                         "constrained bonds to hydrogen its forces cannot be mapped by summing; use "
                         "unconstrained forces (constraints='none') or a resolution without hydrogens")
    xp = _namespace(forces)
    matrix = xp.asarray(force_group_matrix(mapping, forces.shape[-2]), dtype=forces.dtype)
    return xp.einsum("ba,...ad->...bd", matrix, forces)


def dihedrals(positions, quadruples):
    """Dihedral angles, radians in [−π, π), IUPAC sign convention (as mdtraj).

    Args:
        positions: ``(..., n, 3)`` (numpy or jax).
        quadruples: ``(m, 4)`` indices into the ``n`` positions.

    Returns:
        ``(..., m)``.
    """
    xp = _namespace(positions)
    quadruples = np.asarray(quadruples, dtype=int).reshape(-1, 4)
    p0, p1, p2, p3 = (positions[..., quadruples[:, k], :] for k in range(4))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = xp.cross(b1, b2), xp.cross(b2, b3)
    y = xp.sum(b1 * n2, axis=-1) * xp.linalg.norm(b2, axis=-1)
    x = xp.sum(n1 * n2, axis=-1)
    angle = xp.arctan2(y, x)
    return xp.where(angle >= np.pi, angle - 2 * np.pi, angle)


def phi_psi(bead_positions, mapping: CGMapping):
    """``(φ, ψ)`` of every residue of the sequence, each ``(..., n_residues)``, radians in [−π, π).

    Args:
        bead_positions: ``(..., n_beads, 3)``, nm (numpy or jax).
        mapping: Resolution of the beads; must contain the backbone atoms of φ and ψ.
    """
    if not mapping.phi_beads:
        raise ValueError(f"resolution {mapping.resolution!r} does not contain the φ/ψ atoms")
    return dihedrals(bead_positions, mapping.phi_beads), dihedrals(bead_positions, mapping.psi_beads)


def _frame_beads(mapping: CGMapping) -> tuple[int, int, int]:
    if mapping.frame_beads is None:
        raise ValueError(f"resolution {mapping.resolution!r} lacks N, CA, C of the first residue")
    return mapping.frame_beads


def _fixed_flat_indices(mapping: CGMapping) -> np.ndarray:
    bead = dict(zip(("N", "CA", "C"), _frame_beads(mapping)))
    return np.array([3 * bead[name] + axis for name, axis in FIXED_COORDINATES])


def _free_flat_indices(mapping: CGMapping) -> np.ndarray:
    return np.setdiff1d(np.arange(3 * mapping.n_beads), _fixed_flat_indices(mapping))


def to_canonical_frame(x, mapping: CGMapping) -> jax.Array:
    """Remove rigid-body motion: ECG's canonical frame.

    Translates and rotates (a proper rotation, det +1) each configuration so that the first
    residue's N is at the origin, its CA on the +z axis and its C in the xz-plane with x > 0.
    The 6 fixed coordinates (x, y, z of N; x, y of CA; y of C) are set to exactly zero.

    Args:
        x: ``(..., n_beads, 3)`` bead positions, nm.
        mapping: Resolution of the beads (gives the frame beads).

    Returns:
        ``(..., n_beads, 3)`` jax array. jit- and vmap-able; differentiable away from collinear
        N, CA, C.
    """
    n, ca, c = _frame_beads(mapping)
    x = jnp.asarray(x)
    centred = x - x[..., n:n + 1, :]
    e_z = centred[..., ca, :]
    e_z = e_z / jnp.linalg.norm(e_z, axis=-1, keepdims=True)
    to_c = centred[..., c, :]
    e_x = to_c - jnp.sum(to_c * e_z, axis=-1, keepdims=True) * e_z
    e_x = e_x / jnp.linalg.norm(e_x, axis=-1, keepdims=True)
    e_y = jnp.cross(e_z, e_x)
    rotation = jnp.stack([e_x, e_y, e_z], axis=-2)  # rows: new axes in old coordinates
    rotated = jnp.einsum("...ij,...nj->...ni", rotation, centred)
    flat = rotated.reshape(*rotated.shape[:-2], -1)
    flat = flat.at[..., _fixed_flat_indices(mapping)].set(0.0)
    return flat.reshape(rotated.shape)


def free_coordinates(x_canonical, mapping: CGMapping) -> jax.Array:
    """The ``3 n_beads − 6`` coordinates not fixed by the frame: ``(..., n_beads, 3)`` → ``(..., 3n−6)``.

    Order: bead-major, x, y, z within a bead, skipping the fixed ones.
    """
    x_canonical = jnp.asarray(x_canonical)
    flat = x_canonical.reshape(*x_canonical.shape[:-2], -1)
    return flat[..., _free_flat_indices(mapping)]


def from_free_coordinates(free, mapping: CGMapping) -> jax.Array:
    """Inverse of :func:`free_coordinates`: ``(..., 3n−6)`` → ``(..., n_beads, 3)`` in the frame."""
    free = jnp.asarray(free)
    flat = jnp.zeros((*free.shape[:-1], 3 * mapping.n_beads), free.dtype)
    flat = flat.at[..., _free_flat_indices(mapping)].set(free)
    return flat.reshape(*free.shape[:-1], mapping.n_beads, 3)


def bead_trajectory(bead_positions, mapping: CGMapping) -> md.Trajectory:
    """mdtraj trajectory of ``(n_frames, n_beads, 3)`` or ``(n_beads, 3)`` positions, nm."""
    xyz = np.asarray(bead_positions, dtype=np.float32).reshape(-1, mapping.n_beads, 3)
    return md.Trajectory(xyz, mapping.topology)


def radius_of_gyration(bead_positions, mapping: CGMapping) -> np.ndarray:
    """Radius of gyration of each frame, nm, unweighted (every bead counts once; ``md.compute_rg``).

    Args:
        bead_positions: ``(n_frames, n_beads, 3)`` or ``(n_beads, 3)``, nm.

    Returns:
        ``(n_frames,)``.
    """
    return md.compute_rg(bead_trajectory(bead_positions, mapping))


def rmsd_to_reference(bead_positions, reference, mapping: CGMapping) -> np.ndarray:
    """RMSD of each frame to ``reference`` after optimal superposition (``md.rmsd``), nm.

    Args:
        bead_positions: ``(n_frames, n_beads, 3)`` or ``(n_beads, 3)``, nm.
        reference: ``(n_beads, 3)``, nm.

    Returns:
        ``(n_frames,)``.
    """
    return md.rmsd(bead_trajectory(bead_positions, mapping), bead_trajectory(reference, mapping), 0)
