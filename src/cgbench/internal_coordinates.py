"""Z-matrix (internal-coordinate) representation of CG bead configurations, and its volume factors.

A :class:`ZMatrix` places the ``n`` beads of a :class:`cgbench.resolutions.CGMapping` one at a
time. Bead ``order[k]`` is placed from earlier beads: ``k ≥ 1`` at a bond length from its bond
partner ``p`` (its parent in a spanning tree of the bead graph), ``k ≥ 2`` at a bond angle
``a-p-k`` from the angle partner ``a`` (the parent's parent), ``k ≥ 3`` at a torsion
``t-a-p-k`` about the bond ``a-p``. :func:`zmatrix` builds it so that the first three placed beads
are the frame beads N, CA, C of the first residue: the frame NeRF places them in (N at the origin,
CA on +z, C in the xz-plane with x > 0) is exactly the canonical frame of
:func:`cgbench.resolutions.to_canonical_frame`.

Torsion partners: the first child placed on a parent gets the proper torsion about the bond to the
parent (t = the grandparent's own bond partner, so φ and ψ of every residue are torsions of the
Z-matrix on ala peptides); later children of the same parent get the torsion relative to that first
child (t bonded to p: an ≈ ±120° or 180° offset, nearly fixed, such as a methyl hydrogen's or a
carbonyl O's). Children are placed largest subtree first, so main-chain beads get the proper ones.

Flat layout (:func:`to_internal`, :func:`from_internal`): ``(..., 3n − 6)`` =
[n − 1 bond lengths (nm), n − 2 angles (rad, in (0, π)), n − 3 torsions (rad, in (−π, π], IUPAC
sign as mdtraj)]; the ``j``-th entry of each block belongs to bead ``order[j + 1]``,
``order[j + 2]``, ``order[j + 3]``. :attr:`ZMatrix.bond_slice` etc. and :func:`split_internal`
give the blocks; :func:`torsion_mask` marks the circular entries.

Volume factors. A flow gives a density ``q_ic`` over the internal coordinates ``ic``; the
Boltzmann density lives on Cartesian ``x ∈ R^{3n}``, and a rigid-motion-invariant density is
fixed by its values on the canonical frame, whose ``3n − 6`` free coordinates are ``F``
(:func:`cgbench.resolutions.free_coordinates`). Write ``x = R X + r₀`` with ``r₀ = x_N``, ``R`` a
rotation (Haar measure dR) and ``X`` the configuration in a reference frame.

- Internal coordinates: placing bead ``k`` in spherical coordinates about its partners gives
  ``d³x_k = b_k² sin θ_k db_k dθ_k dφ_k``; the two beads after the first only get their radial and
  polar parts (``b₁² db₁`` and ``b₂² sin θ₂ db₂ dθ₂``), their angular remainder being the rotation
  ``dR``. So ``d^{3n}x = d³r₀ dR d(ic) exp(log_volume_internal(ic))`` with
  :func:`log_volume_internal` = ``Σ_{n−1 bonds} 2 log b + Σ_{n−2 angles} log sin θ`` (constants,
  the volume of SO(3), dropped).
- Canonical-frame Cartesian: CA = (0, 0, z_CA) in spherical coordinates gives ``z_CA² dz_CA dΩ``,
  C = (x_C, 0, z_C) in cylindrical coordinates about that axis gives ``x_C dx_C dα dz_C``, and the
  other beads are plain ``d³x``; ``dΩ dα`` is dR. So ``d^{3n}x = d³r₀ dR dF
  exp(log_volume_canonical(F))`` with :func:`log_volume_canonical` = ``2 log z_CA + log x_C``.
- Hence, for ``F(ic) = free_coordinates(from_internal(ic))``,
  ``log |det ∂F/∂ic| = log_volume_internal(ic) − log_volume_canonical(F(ic))``
  (:func:`internal_to_free` returns it), and a flow's density over ``F`` is
  ``log p_F(F) = log q_ic(ic) − log_volume_internal(ic) + log_volume_canonical(F)``; over Cartesian
  coordinates modulo rigid motions (with respect to ``d^{3n}x / (d³r₀ dR)``) it is
  ``log q_ic(ic) − log_volume_internal(ic)``, the form to compare with ``−U(x)/kT``.

Units: nm, rad. Array functions take leading batch axes ``...``, are jit-/vmap-able and
differentiable away from collinear bead triples.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from cgbench.pmf import bead_graph
from cgbench.resolutions import CGMapping, _frame_beads, _free_flat_indices, free_coordinates


# ---------------------------------------------------------------------------------------------
# The Z-matrix.


@dataclass(frozen=True)
class ZMatrix:
    """Placement order of ``n`` beads and each placed bead's partners (bead indices, all earlier).

    Stored as tuples of ints, so a ZMatrix is hashable and compares by value (usable as a static
    argument of ``jax.jit`` or a static field of an equinox module); the array properties give
    ``int32`` numpy arrays.

    Attributes:
        order: ``(n,)`` bead indices in placement order; ``order[:3]`` defines the frame.
        bond_partners: ``(n − 1,)`` bond partner p of ``order[1:]``.
        angle_partners: ``(n − 2,)`` angle partner a of ``order[2:]`` (angle a-p-k at p).
        torsion_partners: ``(n − 3,)`` torsion partner t of ``order[3:]`` (torsion t-a-p-k).
    """

    order: tuple[int, ...]
    bond_partners: tuple[int, ...]
    angle_partners: tuple[int, ...]
    torsion_partners: tuple[int, ...]

    def __post_init__(self):
        for name in ("order", "bond_partners", "angle_partners", "torsion_partners"):
            object.__setattr__(self, name, tuple(int(i) for i in getattr(self, name)))
        _check_zmatrix(self)

    @property
    def n_beads(self) -> int:
        return len(self.order)

    @property
    def n_bonds(self) -> int:
        return self.n_beads - 1

    @property
    def n_angles(self) -> int:
        return self.n_beads - 2

    @property
    def n_torsions(self) -> int:
        return self.n_beads - 3

    @property
    def n_internal(self) -> int:
        """``3 n − 6``, the length of the flat internal-coordinate vector."""
        return 3 * self.n_beads - 6

    @property
    def bond_slice(self) -> slice:
        return slice(0, self.n_bonds)

    @property
    def angle_slice(self) -> slice:
        return slice(self.n_bonds, self.n_bonds + self.n_angles)

    @property
    def torsion_slice(self) -> slice:
        return slice(self.n_bonds + self.n_angles, self.n_internal)

    @property
    def bonds(self) -> np.ndarray:
        """``(n − 1, 2)`` pairs ``(p, k)``, one per bond length."""
        return _index_array(list(zip(self.bond_partners, self.order[1:])), 2)

    @property
    def angles(self) -> np.ndarray:
        """``(n − 2, 3)`` triples ``(a, p, k)``, angle at ``p``, one per bond angle."""
        return _index_array(list(zip(self.angle_partners, self.bond_partners[1:], self.order[2:])), 3)

    @property
    def torsions(self) -> np.ndarray:
        """``(n − 3, 4)`` quadruples ``(t, a, p, k)``, one per torsion (as for mdtraj)."""
        return _index_array(list(zip(self.torsion_partners, self.angle_partners[1:],
                                     self.bond_partners[2:], self.order[3:])), 4)

    def to_json(self) -> dict:
        return {"order": list(self.order), "bond_partners": list(self.bond_partners),
                "angle_partners": list(self.angle_partners),
                "torsion_partners": list(self.torsion_partners)}

    @classmethod
    def from_json(cls, data: dict) -> ZMatrix:
        return cls(*(tuple(data[name]) for name in
                     ("order", "bond_partners", "angle_partners", "torsion_partners")))


def _index_array(rows, width: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.int32).reshape(-1, width)


def _check_zmatrix(zm: ZMatrix) -> None:
    """Raise ValueError unless ``zm`` is a valid Z-matrix (partners distinct and placed earlier)."""
    n = len(zm.order)
    if n < 3 or sorted(zm.order) != list(range(n)):
        raise ValueError(f"order {zm.order} is not a permutation of 0..n−1 with n ≥ 3")
    lengths = (len(zm.bond_partners), len(zm.angle_partners), len(zm.torsion_partners))
    if lengths != (n - 1, n - 2, max(n - 3, 0)):
        raise ValueError(f"partner lists have lengths {lengths}; expected {(n - 1, n - 2, n - 3)}")
    rank = {bead: k for k, bead in enumerate(zm.order)}
    for k in range(1, n):
        partners = [zm.bond_partners[k - 1]]
        if k >= 2:
            partners.append(zm.angle_partners[k - 2])
        if k >= 3:
            partners.append(zm.torsion_partners[k - 3])
        if len(set(partners)) != len(partners) or any(rank.get(q, n) >= k for q in partners):
            raise ValueError(f"bead {zm.order[k]} (placed {k}th): partners {partners} are not "
                             "distinct beads placed before it")
    if zm.bond_partners[0] != zm.order[0] or zm.bond_partners[1] != zm.order[1] \
            or zm.angle_partners[0] != zm.order[0]:
        raise ValueError("the first three placed beads must form the chain order[0]-order[1]-order[2]")


def zmatrix(mapping: CGMapping) -> ZMatrix:
    """The Z-matrix of a mapping's bead graph, starting with its frame beads N, CA, C.

    The spanning tree is breadth first from N with CA and C forced in; each bead's children are
    placed largest subtree first (ties: lower bead index). Raises ValueError if the mapping lacks a
    frame bead, N-CA or CA-C is not a bond, or the bead graph is not connected.
    """
    frame = _frame_beads(mapping)
    graph = bead_graph(mapping)
    neighbours = [set() for _ in range(mapping.n_beads)]
    for i, j in graph.bonds:
        neighbours[int(i)].add(int(j))
        neighbours[int(j)].add(int(i))
    n, ca, c = frame
    if ca not in neighbours[n] or c not in neighbours[ca]:
        raise ValueError(f"frame beads {frame} are not bonded N-CA-C")
    parent = _spanning_tree(neighbours, frame)
    children = _ordered_children(parent, frame)
    order = _placement_order(children, frame)
    rank = {bead: k for k, bead in enumerate(order)}
    parent[n] = ca  # the root's angle partner (used for beads bonded to N)
    bonds, angles, torsions = [], [], []
    for k, bead in enumerate(order[1:], start=1):
        p = parent[bead]
        a = parent[p]
        bonds.append(p)
        if k >= 2:
            angles.append(a)
        if k >= 3:
            torsions.append(_torsion_partner(bead, p, a, parent, children, rank))
    return ZMatrix(tuple(order), tuple(bonds), tuple(angles), tuple(torsions))


def _spanning_tree(neighbours: list[set[int]], frame: tuple[int, int, int]) -> dict[int, int]:
    """Parent of every bead but the root N in a breadth-first tree with N-CA-C forced in."""
    n, ca, c = frame
    parent = {ca: n, c: ca}
    queue = deque([n, ca, c])
    while queue:
        bead = queue.popleft()
        for other in sorted(neighbours[bead]):
            if other != n and other not in parent:
                parent[other] = bead
                queue.append(other)
    if len(parent) + 1 != len(neighbours):
        missing = sorted(set(range(len(neighbours))) - set(parent) - {n})
        raise ValueError(f"bead graph is not connected: beads {missing} unreachable from N")
    return parent


def _ordered_children(parent: dict[int, int], frame: tuple[int, int, int]) -> dict[int, list[int]]:
    """Each bead's tree children, largest subtree first (ties: lower index); C first under CA."""
    children: dict[int, list[int]] = {bead: [] for bead in (*parent, frame[0])}
    for bead, p in parent.items():
        children[p].append(bead)
    size = {}

    def subtree(bead: int) -> int:
        if bead not in size:
            size[bead] = 1 + sum(subtree(child) for child in children[bead])
        return size[bead]

    for bead in children:
        children[bead].sort(key=lambda child: (-subtree(child), child))
    children[frame[0]].remove(frame[1])
    children[frame[0]].insert(0, frame[1])
    children[frame[1]].remove(frame[2])
    children[frame[1]].insert(0, frame[2])
    return children


def _placement_order(children: dict[int, list[int]], frame: tuple[int, int, int]) -> list[int]:
    """Breadth first over the tree from N (its children, in their order, after each bead)."""
    order = list(frame)
    queue = deque(frame)
    while queue:
        for child in children[queue.popleft()]:
            if child not in frame:
                order.append(child)
                queue.append(child)
    return order


def _torsion_partner(bead: int, p: int, a: int, parent: dict[int, int],
                     children: dict[int, list[int]], rank: dict[int, int]) -> int:
    """t of the torsion t-a-p-bead: an earlier sibling if any, else a's other placed neighbour."""
    earlier = lambda q: rank[q] < rank[bead] and q not in (p, a)  # noqa: E731
    siblings = [q for q in children[p] if earlier(q)]
    if siblings:
        return siblings[0]
    candidates = [parent[a], *children[a]] if a in parent else children[a]
    return next(q for q in sorted(candidates, key=rank.get) if earlier(q))


# ---------------------------------------------------------------------------------------------
# Flat vectors.


def torsion_mask(zm: ZMatrix) -> np.ndarray:
    """``(3n − 6,)`` bool, True at the torsion (circular) entries of the flat vector."""
    mask = np.zeros(zm.n_internal, dtype=bool)
    mask[zm.torsion_slice] = True
    return mask


def split_internal(ic, zm: ZMatrix):
    """The three blocks of a flat vector.

    ``(..., 3n − 6)`` → ``(bonds (..., n − 1) nm, angles (..., n − 2) rad, torsions (..., n − 3) rad)``.
    """
    return ic[..., zm.bond_slice], ic[..., zm.angle_slice], ic[..., zm.torsion_slice]


def join_internal(bonds, angles, torsions):
    """Inverse of :func:`split_internal`: the flat ``(..., 3n − 6)`` vector."""
    return jnp.concatenate([jnp.asarray(bonds), jnp.asarray(angles), jnp.asarray(torsions)], axis=-1)


def wrap_torsions(torsions):
    """Angles mapped into (−π, π], rad (any shape)."""
    return np.pi - jnp.mod(np.pi - jnp.asarray(torsions), 2 * np.pi)


def to_internal(positions, zm: ZMatrix):
    """Internal coordinates of bead configurations.

    Same conventions as :func:`cgbench.pmf.bond_lengths`, ``bond_angles`` and ``dihedral_angles``
    (and mdtraj), but without their 1e-12 nm² regulariser, which biases angles by up to ≈ 5e-9 rad:
    here :func:`from_internal` inverts this to float64 round-off.

    Args:
        positions: ``(..., n, 3)`` nm, beads in the mapping's order (any frame).
        zm: The Z-matrix.

    Returns:
        ``(..., 3n − 6)`` jax array: bonds (nm), angles (rad, [0, π]), torsions (rad, (−π, π]).
    """
    positions = jnp.asarray(positions)
    return join_internal(_distances(positions, zm.bonds), _angles(positions, zm.angles),
                         _torsions(positions, zm.torsions))


def _norm(v):
    """``|v|`` along the last axis; the tiny floor only keeps the gradient finite at ``v = 0``."""
    return jnp.sqrt(jnp.sum(v * v, axis=-1) + jnp.finfo(v.dtype).tiny)


def _atan2(y, x):
    """``atan2(y, x)`` with a finite gradient at ``x = y = 0`` (where it returns 0)."""
    ok = (x != 0) | (y != 0)
    return jnp.arctan2(jnp.where(ok, y, 0.0), jnp.where(ok, x, 1.0))


def _distances(positions, pairs):
    """``(..., n, 3)`` → ``(..., m)`` distances of ``pairs (m, 2)``, nm."""
    return _norm(positions[..., pairs[:, 1], :] - positions[..., pairs[:, 0], :])


def _angles(positions, triples):
    """``(..., n, 3)`` → ``(..., m)`` angles i-j-k at j of ``triples (m, 3)``, rad in [0, π]."""
    centre = positions[..., triples[:, 1], :]
    u = positions[..., triples[:, 0], :] - centre
    v = positions[..., triples[:, 2], :] - centre
    return _atan2(_norm(jnp.cross(u, v)), jnp.sum(u * v, axis=-1))


def _torsions(positions, quadruples):
    """``(..., n, 3)`` → ``(..., m)`` dihedrals of ``quadruples (m, 4)``, IUPAC sign, rad in (−π, π]."""
    p0, p1, p2, p3 = (positions[..., quadruples[:, i], :] for i in range(4))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = jnp.cross(b1, b2), jnp.cross(b2, b3)
    angle = _atan2(jnp.sum(b1 * n2, axis=-1) * _norm(b2), jnp.sum(n1 * n2, axis=-1))
    return jnp.where(angle <= -np.pi, angle + 2 * np.pi, angle)  # atan2(−0, −1) = −π


# ---------------------------------------------------------------------------------------------
# NeRF placement.


@dataclass(frozen=True)
class _Stage:
    """Beads placed together: their placement indices ``ks`` and their partners' slots."""

    ks: np.ndarray
    torsion_slots: np.ndarray
    angle_slots: np.ndarray
    bond_slots: np.ndarray


@functools.lru_cache(maxsize=64)
def _stages(zm: ZMatrix) -> tuple[tuple[_Stage, ...], np.ndarray]:
    """Placements ``k ≥ 3`` grouped so that every bead's partners lie in earlier groups.

    NeRF builds the positions as a concatenation of blocks (the first three beads, then one block
    per stage); a bead's slot is its row there. Returns the stages (``ks`` index the placement
    order, so bond ``k − 1``, angle ``k − 2``, torsion ``k − 3`` of the flat blocks) and
    ``(n,)`` the slot of every bead, in bead order.
    """
    level = {bead: 0 for bead in zm.order[:3]}
    for k in range(3, zm.n_beads):
        partners = (zm.bond_partners[k - 1], zm.angle_partners[k - 2], zm.torsion_partners[k - 3])
        level[zm.order[k]] = 1 + max(level[q] for q in partners)
    slot = {bead: i for i, bead in enumerate(zm.order[:3])}
    stages = []
    for value in range(1, max(level.values()) + 1):
        ks = np.array([k for k in range(3, zm.n_beads) if level[zm.order[k]] == value], np.int32)
        rows = zm.torsions[ks - 3]
        stages.append(_Stage(ks, *(np.array([slot[int(q)] for q in rows[:, i]], np.int32)
                                   for i in range(3))))
        for bead in rows[:, 3]:
            slot[int(bead)] = len(slot)
    return tuple(stages), np.array([slot[bead] for bead in range(zm.n_beads)], np.int32)


def _unit(v):
    """``v / |v|`` along the last axis; the tiny floor only guards 0/0 at exactly collinear input."""
    return v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + jnp.finfo(v.dtype).tiny)


def _nerf(t, a, p, bond, angle, torsion):
    """Position of k from ``t, a, p`` (``(..., m, 3)``), |pk| = bond, ∠apk = angle, ∠tapk = torsion."""
    e_ap = _unit(p - a)
    normal = _unit(jnp.cross(a - t, e_ap))
    in_plane = jnp.cross(normal, e_ap)
    sin_angle = jnp.sin(angle)
    local = (-jnp.cos(angle)[..., None] * e_ap
             + (sin_angle * jnp.cos(torsion))[..., None] * in_plane
             + (sin_angle * jnp.sin(torsion))[..., None] * normal)
    return p + bond[..., None] * local


def from_internal(ic, zm: ZMatrix):
    """Bead positions in the canonical frame from internal coordinates (NeRF).

    Args:
        ic: ``(..., 3n − 6)``: bonds (nm, > 0), angles (rad, in (0, π)), torsions (rad, any real:
            periodic).
        zm: The Z-matrix.

    Returns:
        ``(..., n, 3)`` nm, beads in the mapping's order: ``order[0]`` at the origin, ``order[1]``
        at (0, 0, b₁), ``order[2]`` at (b₂ sin θ₂, 0, b₁ − b₂ cos θ₂), with exact zeros in the six
        fixed coordinates; the others placed stage by stage (beads of one stage at once).
    """
    ic = jnp.asarray(ic)
    if ic.shape[-1] != zm.n_internal:
        raise ValueError(f"ic has {ic.shape[-1]} entries; the Z-matrix has {zm.n_internal}")
    bonds, angles, torsions = split_internal(ic, zm)
    zero = jnp.zeros_like(bonds[..., 0])
    b1, b2, theta2 = bonds[..., 0], bonds[..., 1], angles[..., 0]
    x = jnp.stack([jnp.stack([zero, zero, zero], axis=-1), jnp.stack([zero, zero, b1], axis=-1),
                   jnp.stack([b2 * jnp.sin(theta2), zero, b1 - b2 * jnp.cos(theta2)], axis=-1)],
                  axis=-2)
    stages, slot_of_bead = _stages(zm)
    for stage in stages:
        placed = _nerf(x[..., stage.torsion_slots, :], x[..., stage.angle_slots, :],
                       x[..., stage.bond_slots, :], bonds[..., stage.ks - 1],
                       angles[..., stage.ks - 2], torsions[..., stage.ks - 3])
        x = jnp.concatenate([x, placed], axis=-2)
    return x[..., slot_of_bead, :]


# ---------------------------------------------------------------------------------------------
# Volume factors (derivation in the module docstring).


def log_volume_internal(ic, zm: ZMatrix):
    """``Σ 2 log b + Σ log sin θ`` over all n − 1 bonds and n − 2 angles: ``(..., 3n − 6)`` → ``(...)``.

    ``d^{3n}x = d³r₀ dR d(ic) exp(log_volume_internal)`` (bonds in nm, so the log is of nm²).
    """
    bonds, angles, _ = split_internal(jnp.asarray(ic), zm)
    return 2 * jnp.sum(jnp.log(bonds), axis=-1) + jnp.sum(jnp.log(jnp.sin(angles)), axis=-1)


def log_volume_canonical(free, mapping: CGMapping):
    """``2 log z_CA + log x_C`` of canonical-frame free coordinates: ``(..., 3n − 6)`` → ``(...)``.

    ``d^{3n}x = d³r₀ dR dF exp(log_volume_canonical)``; CA = (0, 0, z_CA), C = (x_C, 0, z_C), nm.
    """
    _, ca, c = _frame_beads(mapping)
    free = jnp.asarray(free)
    # Positions of z_CA and x_C in the free vector (bead-major, fixed coordinates skipped).
    z_ca, x_c = (int(i) for i in np.searchsorted(_free_flat_indices(mapping), [3 * ca + 2, 3 * c]))
    return 2 * jnp.log(jnp.abs(free[..., z_ca])) + jnp.log(jnp.abs(free[..., x_c]))


def internal_to_free(ic, zm: ZMatrix, mapping: CGMapping):
    """Free canonical coordinates F of ``ic`` and ``log |det ∂F/∂ic|``.

    Args:
        ic: ``(..., 3n − 6)`` internal coordinates. zm: Built from ``mapping`` (:func:`zmatrix`).

    Returns:
        ``(F (..., 3n − 6) nm, log_det (...))`` with
        ``log_det = log_volume_internal(ic) − log_volume_canonical(F)``.
    """
    free = free_coordinates(from_internal(ic, zm), mapping)
    return free, log_volume_internal(ic, zm) - log_volume_canonical(free, mapping)
