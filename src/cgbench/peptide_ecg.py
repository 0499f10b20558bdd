"""Data-free coarse-graining of a peptide (ECG §3.3): the target, the chains, reconstruction.

:class:`PeptideTarget` presents a capped peptide to the ECG trainer (:func:`cgbench.ecg.train_ecg`)
as an energy U(z, x) in kT at the peptide's temperature (β = 1), the same interface as the
synthetic targets:

- **z** (``dim_z``): the heavy-atom backbone chain (``backbone`` resolution: CH3, C, N, CA, C, N,
  CH3 for ala2), its ``3·7 − 6 = 15`` degrees of freedom, as the flow's features u ∈
  [−interval, interval]^dim_z through a :class:`cgbench.cgbg.FlowCoordinates` fixed without data
  (:func:`peptide_coordinates`), in one of two representations (config ``ecg_peptides.coordinates``):

  - ``cartesian`` (ECG's): the free coordinates of ECG's canonical frame, standardised as
    ``(z_nm − z_ref) / length_scale`` with z_ref the built, minimised structure. A basin that needs
    a coordinate to move by d nm sits d / length_scale base standard deviations out: the methyl
    carbons of ala2 move up to 0.45 nm between basins, 4.5 units at 0.1 nm, and about 2 at 0.2 nm,
    where the cpu-preset training stalled (README).
  - ``internal``: the Z-matrix of the chain (:mod:`cgbench.internal_coordinates`: 6 bonds, 5 angles,
    4 torsions φ, ψ, ω for ala2), centred on the minimised structure; each bond, angle and narrow
    torsion scaled by its thermal width at β_0 with the others fixed, 1/√(β_0·∂²(U/kT)/∂y²) at the
    minimum; a torsion whose box would reach past ±π at that width is circular (uniform at the
    flow's identity), its seam at the maximum of a rigid scan of U along it. Moving between
    (φ, ψ) basins is then a change of two coordinates, not a curved path through fifteen.

  Both carry the volume factor of their coordinates: the Boltzmann density over u is
  exp(−βU/kT)·V(u) with log V = :meth:`PeptideTarget.log_volume` (the Cartesian volume element in
  those coordinates, :mod:`cgbench.internal_coordinates`, and the Jacobian of the standardisation),
  which is not tempered.
- **x** (``dim_x``): the other atoms of the representation — every other atom for ``all_atom``
  (target (a), U the all-atom JAX energy in implicit solvent, :mod:`cgbench.energy`), O(ACE), CB,
  O for ``heavy_atom`` (target (b), U a learned PMF, :mod:`cgbench.pmf`) — as nm displacements from
  a *template*: each fast atom's position in the minimised structure, expressed in a local frame
  of three backbone atoms (its nearest backbone atom along bonds and that atom's chain
  neighbours) and carried along with them. x = 0 is therefore the minimised structure's side
  chains and hydrogens on the current backbone, which is where the conditional chains start.

Why the template does not change the target: for fixed z the map x ↦ X = T(z) + x is a
translation, Jacobian 1, so ∫ exp(−βU(z, X)) dX = ∫ exp(−βU(z, T(z) + x)) dx for every z — the
marginal p_β(z) is the same, and its score is the conditional mean of −β ∂/∂z U(z, T(z) + x),
the total derivative that :func:`cgbench.conditional.mean_force` takes.

Conditional chains: HMC (blackjax, Metropolis-adjusted molecular dynamics of x with z fixed)
with the atoms' masses as mass matrix. :func:`sampler_in_chain_units` converts the config's
physical step sizes: with log-density −U/kT, masses in amu and nm, blackjax's leapfrog step is
ε = dt·√kT (dt in ps, kT in kJ/mol) and the mass-preconditioned minimisation step
x ← x − s·M⁻¹∇(U/kT) moves like a step of dt² from rest when s = dt²·kT.

Reconstruction (:func:`reconstruct`): z from the flow, x from the same chains at the model's β,
back to Cartesian positions of every atom of the representation (canonical frame).

Units: nm, kJ/mol, K; energies handed to the trainer in kT at the target temperature.
"""

from __future__ import annotations

from collections import deque

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from cgbench.cgbg import ARC, CIRCLE, LINEAR, FlowCoordinates
from cgbench.conditional import ConditionalSampler, sample_conditional
from cgbench.resolutions import (
    SlowFastSplit,
    free_coordinates,
    slow_fast_split,
    to_canonical_frame,
)
from cgbench.units import GAS_CONSTANT

#: Potentials a peptide can be trained on: all-atom JAX energy in implicit solvent, or a PMF.
POTENTIALS = {"obc2": "all_atom", "obc1": "all_atom", "pmf_heavy_atom": "heavy_atom"}


def local_frames(split: SlowFastSplit) -> np.ndarray:
    """For each fast bead, three backbone (z) bead indices (a, b, c) of its template frame.

    a: the backbone bead nearest along bonds (ties: lowest index); b, c: a's two chain
    neighbours, or at a chain end its neighbour and the neighbour's other neighbour.

    Returns:
        ``(n_x, 3)`` int, indices into z's beads.
    """
    topology = split.representation.topology
    neighbours = {i: set() for i in range(topology.n_atoms)}
    for bond in topology.bonds:
        neighbours[bond.atom1.index].add(bond.atom2.index)
        neighbours[bond.atom2.index].add(bond.atom1.index)
    z_of_bead = {bead: k for k, bead in enumerate(split.z_beads)}
    chain = {k: sorted(z_of_bead[n] for n in neighbours[bead] if n in z_of_bead)
             for bead, k in z_of_bead.items()}
    frames = []
    for bead in split.x_beads:
        seen, queue, anchor = {bead}, deque([bead]), None
        while queue and anchor is None:
            level = sorted(queue)
            queue.clear()
            hits = [z_of_bead[b] for b in level if b in z_of_bead]
            if hits:
                anchor = min(hits)
                break
            for b in level:
                for n in neighbours[b] - seen:
                    seen.add(n)
                    queue.append(n)
        if anchor is None:
            raise ValueError(f"bead {bead} is not bonded to the backbone")
        near = chain[anchor]
        if len(near) >= 2:
            b, c = near[0], near[1]
        else:
            b = near[0]
            c = next(n for n in chain[b] if n != anchor)
        frames.append((anchor, b, c))
    return np.asarray(frames, dtype=int)


def _frame_axes(a, b, c):
    """Orthonormal axes (..., 3, 3) (rows) of the frame at a: e1 along b − a, e2 towards c."""
    e1 = b - a
    e1 = e1 / jnp.linalg.norm(e1, axis=-1, keepdims=True)
    v = c - a
    e2 = v - jnp.sum(v * e1, axis=-1, keepdims=True) * e1
    e2 = e2 / jnp.linalg.norm(e2, axis=-1, keepdims=True)
    return jnp.stack([e1, e2, jnp.cross(e1, e2)], axis=-2)


class PeptideTarget(eqx.Module):
    """A peptide as an ECG target: U(z, x) in kT at the peptide's temperature (module docstring).

    Attributes:
        potential: positions ``(n_beads, 3)`` nm → kJ/mol (the JAX energy or a PMF).
        kT: kJ/mol at β = 1.
        coordinates: :class:`cgbench.cgbg.FlowCoordinates` between z (the flow's features) and
            the backbone beads (``split.z``), from :func:`peptide_coordinates`.
        template: ``(n_x, 3)`` each fast bead in its local frame, nm.
        frames: ``(n_x, 3)`` local-frame beads (indices into z's beads).
        inverse_mass: ``(dim_x,)`` 1/amu of each fast coordinate.
        split: the z/X split of the representation.
    """

    potential: eqx.Module
    kT: float = eqx.field(static=True)
    coordinates: FlowCoordinates
    template: jax.Array
    frames: tuple[tuple[int, int, int], ...] = eqx.field(static=True, converter=lambda a: tuple(tuple(int(i) for i in row) for row in np.asarray(a)))
    inverse_mass: jax.Array
    split: SlowFastSplit = eqx.field(static=True)

    @property
    def dim_z(self) -> int:
        return self.split.z.n_free

    @property
    def dim_x(self) -> int:
        return 3 * len(self.split.x_beads)

    def backbone(self, z):
        """``(..., dim_z)`` → backbone bead positions ``(..., n_z, 3)`` nm in the canonical frame."""
        y, _ = self.coordinates.from_features(z)  # elementwise: any leading axes
        return self.coordinates.positions(y)

    def log_volume(self, z):
        """log V(z) of one z ``(dim_z,)``: the untempered part of log p_β(z) (module docstring).

        log p_β(z) = −β F(z)/kT + log V(z) + const, with V the Cartesian volume (modulo rigid
        motion) per unit of z: the representation's volume factor over |du/dy|.
        """
        y, log_du = self.coordinates.from_features(z)
        return self.coordinates.log_volume(y) - log_du

    def placed(self, backbone):
        """Template positions ``(..., n_x, 3)`` of the fast beads on ``backbone`` (x = 0)."""
        f = np.asarray(self.frames)
        axes = _frame_axes(backbone[..., f[:, 0], :], backbone[..., f[:, 1], :], backbone[..., f[:, 2], :])
        return backbone[..., f[:, 0], :] + jnp.einsum("...kij,ki->...kj", axes, self.template)

    def positions(self, z, x):
        """Every bead of the representation, ``(..., n_beads, 3)`` nm: z ``(..., dim_z)``, x ``(..., dim_x)``."""
        backbone = self.backbone(z)
        fast = self.placed(backbone) + x.reshape(*x.shape[:-1], -1, 3)
        n = self.split.representation.n_beads
        out = jnp.zeros((*z.shape[:-1], n, 3), backbone.dtype)
        out = out.at[..., np.asarray(self.split.z_beads), :].set(backbone)
        return out.at[..., np.asarray(self.split.x_beads), :].set(fast)

    def energy(self, z, x):
        """U(z, x) / kT for one configuration: z ``(dim_z,)``, x ``(dim_x,)`` → scalar."""
        return self.potential(self.positions(z, x)) / self.kT

    def to_z(self, positions):
        """Inverse of :meth:`backbone` for representation positions ``(..., n_beads, 3)`` → z."""
        y = self.coordinates.coordinates(positions[..., np.asarray(self.split.z_beads), :])
        return self.coordinates.to_features(y)[0]


#: Representations of z (module docstring).
Z_COORDINATES = ("cartesian", "internal")
#: Points of the rigid scan that places a circular torsion's seam.
SEAM_SCAN_POINTS = 72


def peptide_coordinates(target: PeptideTarget, coordinates: str, *, length_scale: float, beta_0: float,
                        interval: float) -> FlowCoordinates:
    """The data-free :class:`cgbench.cgbg.FlowCoordinates` of z (module docstring).

    Args:
        target: a target built with any coordinates; its energy (fast beads at the template,
            x = 0) and minimised structure (z = 0) fix the new ones.
        coordinates: ``cartesian`` (standardised by ``length_scale`` nm) or ``internal``
            (thermal widths at ``beta_0`` from the curvature of U at the minimum).
        interval: the flow's box half-width I (circular torsions: where the scale would reach π).
    """
    from cgbench import internal_coordinates as ic

    if coordinates not in Z_COORDINATES:
        raise ValueError(f"coordinates {coordinates!r}: expected one of {Z_COORDINATES}")
    mapping = target.split.z
    backbone = target.backbone(jnp.zeros(target.dim_z, target.template.dtype))
    dtype = target.template.dtype
    if coordinates == "cartesian":
        shift = free_coordinates(backbone, mapping)
        return FlowCoordinates("cartesian", shift, jnp.full_like(shift, length_scale), (LINEAR,) * len(shift),
                               float(interval), None, mapping)
    zm = ic.zmatrix(mapping)
    y0 = np.asarray(ic.to_internal(backbone, zm), np.float64)
    plain = FlowCoordinates("internal", jnp.asarray(y0, dtype), jnp.ones(len(y0), dtype), (LINEAR,) * len(y0),
                            float(interval), zm, mapping)
    on_plain = eqx.tree_at(lambda t: t.coordinates, target, plain)
    x0 = jnp.zeros(target.dim_x, dtype)
    curvature = np.diag(np.asarray(jax.jit(jax.hessian(lambda dy: on_plain.energy(dy, x0)))(jnp.zeros(len(y0), dtype))))
    width = 1.0 / np.sqrt(beta_0 * np.maximum(curvature, 1e-6))
    kind, shift, scale = np.full(len(y0), LINEAR), y0.copy(), width.copy()
    scan = np.linspace(-np.pi, np.pi, SEAM_SCAN_POINTS, endpoint=False)
    energy_along = jax.jit(jax.vmap(lambda dy: on_plain.energy(dy, x0)))
    for k in range(zm.n_bonds + zm.n_angles, zm.n_internal):
        if interval * width[k] < np.pi:
            kind[k] = ARC
            continue
        dy = np.zeros((len(scan), len(y0)))
        dy[:, k] = scan - y0[k]
        seam = scan[int(np.nanargmax(np.asarray(energy_along(jnp.asarray(dy, dtype)))))]
        kind[k], shift[k], scale[k] = CIRCLE, np.angle(np.exp(1j * (seam + np.pi))), 1.0
    return FlowCoordinates("internal", jnp.asarray(shift, dtype), jnp.asarray(scale, dtype),
                           tuple(int(k) for k in kind), float(interval), zm, mapping)


def peptide_target(potential, topology, structure, masses, *, representation: str, temperature: float,
                   coordinates: str = "cartesian", length_scale: float = 0.1, beta_0: float = 1.0,
                   interval: float = 5.0, dtype=jnp.float32) -> PeptideTarget:
    """Build a :class:`PeptideTarget`.

    Args:
        potential: positions of the representation's beads ``(n_beads, 3)`` nm → kJ/mol.
        topology: all-atom topology of the capped peptide (OpenMM or mdtraj).
        structure: ``(n_atoms, 3)`` all-atom positions, nm (the built, minimised structure).
        masses: ``(n_atoms,)`` amu.
        representation: ``all_atom`` or ``heavy_atom``.
        temperature: K (β = 1).
        coordinates, length_scale, beta_0, interval: of z (:func:`peptide_coordinates`).
    """
    split = slow_fast_split(topology, representation)
    atoms = np.asarray(split.representation.atom_indices)
    beads = np.asarray(structure, np.float64)[atoms]
    backbone = np.asarray(to_canonical_frame(jnp.asarray(beads[np.asarray(split.z_beads)]), split.z))
    z_free = jnp.asarray(free_coordinates(backbone, split.z), dtype)
    frames = local_frames(split)
    raw_backbone = beads[np.asarray(split.z_beads)]
    fast = beads[np.asarray(split.x_beads)]  # frame-local, so any orientation of the structure will do
    axes = np.asarray(_frame_axes(*(jnp.asarray(raw_backbone[frames[:, k]]) for k in range(3))))
    template = np.einsum("kij,kj->ki", axes, fast - raw_backbone[frames[:, 0]])
    inverse_mass = np.repeat(1.0 / np.asarray(masses, np.float64)[atoms[np.asarray(split.x_beads)]], 3)
    at_structure = FlowCoordinates("cartesian", z_free, jnp.ones_like(z_free), (LINEAR,) * len(z_free),
                                   float(interval), None, split.z)
    target = PeptideTarget(potential, float(GAS_CONSTANT * temperature), at_structure,
                           jnp.asarray(template, dtype), frames, jnp.asarray(inverse_mass, dtype), split)
    fitted = peptide_coordinates(target, coordinates, length_scale=length_scale, beta_0=beta_0, interval=interval)
    return eqx.tree_at(lambda t: t.coordinates, target, fitted)


def sampler_in_chain_units(settings: dict, kT: float) -> dict:
    """A peptide's ``conditional_sampler`` block (step sizes in fs, fs²) in blackjax's units.

    ``step_size`` fs → ε = dt·√kT; ``minimisation_step_size`` fs² → s = dt²·kT (module docstring).
    """
    out = dict(settings)
    out["step_size"] = settings["step_size"] * 1e-3 * float(np.sqrt(kT))
    out["minimisation_step_size"] = settings["minimisation_step_size"] * 1e-6 * kT
    return out


def stein_identity_terms(target: PeptideTarget, z, score) -> np.ndarray:
    """Per-state terms of Stein's identity E_p[s·f + f'] = 0, one column per test function.

    If ``score`` is ∇ log p of the density the states ``z`` ``(N, dim_z)`` were drawn from, every
    column of the result ``(N, n_tests)`` has mean zero; a mean many standard errors away from
    zero is a biased score (wrong mean force, temperature, volume factor, or short chains).

    Test functions: f = u − ū on a :data:`LINEAR` or :data:`ARC` feature (E[s(u − ū)] = −1); on a
    :data:`CIRCLE` feature f = g(y)/(dy/du) with g = sin y and cos y of the torsion y (rad). That
    is the identity in y, E[s_y g + g'] = 0 with s_y = (s_u − d log(dy/du)/du)/(dy/du); its boundary
    terms cancel because g is periodic, where f = u would weigh the seam's neighbourhood heavily.
    """
    z = jnp.asarray(z)
    score = np.asarray(score, np.float64)
    kind = np.asarray(target.coordinates.kind)
    y = jax.vmap(lambda u: target.coordinates.from_features(u)[0])(z)
    # d u_k/d y_k (the map is elementwise) and its log-derivative in u, through the forward map
    du_dy = np.asarray(jax.vmap(lambda v: jnp.diag(jax.jacfwd(lambda w: target.coordinates.to_features(w)[0])(v)))(y),
                       np.float64)
    dlog_dy_du = np.asarray(jax.vmap(jax.grad(lambda u: -jnp.sum(jnp.log(jnp.abs(jnp.diag(
        jax.jacfwd(lambda w: target.coordinates.from_features(w)[0])(u)))))))(z), np.float64)
    u, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    columns = []
    for k in range(u.shape[1]):
        if kind[k] == CIRCLE:
            score_y = (score[:, k] + dlog_dy_du[:, k]) * du_dy[:, k]
            columns += [score_y * np.sin(y[:, k]) + np.cos(y[:, k]), score_y * np.cos(y[:, k]) - np.sin(y[:, k])]
        else:
            columns.append(score[:, k] * (u[:, k] - u[:, k].mean()) + 1.0)
    return np.stack(columns, axis=1)


@eqx.filter_jit
def _reconstruct_chunk(target, z, keys, beta, sampler):
    def one(z_i, k):
        xs, acceptance = sample_conditional(target.energy, z_i, beta, target.dim_x, sampler, key=k,
                                            inverse_mass=target.inverse_mass)
        return target.positions(z_i, xs[-1]), acceptance

    return jax.vmap(one)(z, keys)


def reconstruct(target: PeptideTarget, z, beta: float, sampler: ConditionalSampler, *, key,
                chunk: int = 1024):
    """Cartesian structures from flow samples: x from the conditional chains at ``beta``.

    Args:
        z: ``(N, dim_z)`` flow samples.
        beta: inverse temperature relative to the target's (1 = the peptide's temperature).
        sampler: chain settings in chain units (:func:`sampler_in_chain_units`).
        key: PRNG key.

    Returns:
        ``(N, n_beads, 3)`` float32 positions (nm, canonical frame) — the last chain state per z —
        and the mean acceptance.
    """
    z = jnp.asarray(z, target.template.dtype)
    beta = jnp.asarray(beta, z.dtype)  # traced: one compilation serves every β
    keys = jr.split(key, len(z))
    out, acceptance = [], []
    chunk = min(chunk, len(z))
    for start in range(0, len(z), chunk):
        n = min(chunk, len(z) - start)
        take = jnp.minimum(jnp.arange(start, start + chunk), len(z) - 1)  # the last chunk padded: one shape
        pos, acc = _reconstruct_chunk(target, z[take], keys[take], beta, sampler)
        out.append(np.asarray(pos[:n], np.float32))
        acceptance.append(np.asarray(acc[:n]))
    return np.concatenate(out), float(np.concatenate(acceptance).mean())


# ----------------------------------------------------------------------------- the stage

def training_settings(spec: dict, target: PeptideTarget) -> dict:
    """The :func:`cgbench.ecg.train_ecg` settings of an ``ecg_peptides`` config block for ``target``.

    The scored β values become tempering milestones (every schedule saves a model there), and
    the chain step sizes are converted from fs to chain units (:func:`sampler_in_chain_units`).
    The target's own numbers (coordinates of z, kT, template) are included, so
    that the trainer's run hash — which guards resume and "already trained" — changes with them.
    """
    tempering = dict(spec["tempering"], milestones=sorted(spec["scored_betas"]))
    return {"flow": spec["flow"], "learning_rate": spec["learning_rate"], "batch_size": spec["batch_size"],
            "tempering": tempering,
            "conditional_sampler": sampler_in_chain_units(spec["conditional_sampler"], target.kT),
            "gradient_guard": spec["gradient_guard"], "checkpoint_every": spec["checkpoint_every"],
            "target": {"kT": target.kT, "dim_z": target.dim_z, "dim_x": target.dim_x,
                       "coordinates": target.coordinates.representation,
                       "coordinate_kinds": list(target.coordinates.kind),
                       "coordinate_shift": np.round(np.asarray(target.coordinates.shift, np.float64), 6).tolist(),
                       "coordinate_scale": np.round(np.asarray(target.coordinates.scale, np.float64), 6).tolist(),
                       "template": np.round(np.asarray(target.template, np.float64), 6).tolist()}}


def heavy_atom_beads(split: SlowFastSplit) -> np.ndarray:
    """Indices of the representation's beads that are not hydrogen (Rg and RMSD are on these)."""
    return np.array([i for i, atom in enumerate(split.representation.topology.atoms)
                     if atom.element is None or atom.element.symbol != "H"])


def _histogram_js(model: np.ndarray, reference: np.ndarray, bins: int) -> float:
    from cgbench.evaluate import js_divergence

    edges = np.histogram_bin_edges(np.concatenate([model, reference]), bins=bins)
    return float(js_divergence(np.histogram(model, edges)[0].astype(float),
                               np.histogram(reference, edges)[0].astype(float)))


def structure_observables(positions, split: SlowFastSplit, reference_frame) -> dict:
    """φ, ψ, radius of gyration and RMSD to ``reference_frame`` (heavy atoms; mdtraj).

    Args:
        positions: ``(N, n_beads, 3)`` nm, beads of the representation (model samples or the
            reference mapped to it).
        reference_frame: ``(n_beads, 3)`` nm, the structure RMSD is measured to.

    Returns:
        dict of ``phi``, ``psi`` ``(N, n_residues)`` rad, ``rg`` and ``rmsd`` ``(N,)`` nm.
    """
    import mdtraj as md

    from cgbench.resolutions import phi_psi

    positions = np.asarray(positions, np.float32)
    phi, psi = (np.asarray(a) for a in phi_psi(jnp.asarray(positions), split.representation))
    heavy = heavy_atom_beads(split)
    topology = split.representation.topology.subset(heavy)
    frames = md.Trajectory(positions[:, heavy], topology)
    reference = md.Trajectory(np.asarray(reference_frame, np.float32)[None, heavy], topology)
    return {"phi": phi, "psi": psi, "rg": md.compute_rg(frames), "rmsd": md.rmsd(frames, reference, 0)}


#: A reference basin counts as required at this mass or more (the issue's 1 %).
REQUIRED_BASIN_MASS = 0.01
#: ... and as found when the model gives it at least this fraction of the reference's mass.
FOUND_FRACTION = 0.1


def score_observables(model: dict, reference: dict, *, bins: int, bootstrap: int, seed: int) -> list[dict]:
    """Rows (metric, pair, value, uncertainty, reference_value) of a model against its reference.

    JS divergence and PMF error of every (φ, ψ) pair on ``bins`` × ``bins`` bins over [−π, π)²
    (:func:`cgbench.reweighting.score_histograms`, bootstrap sd); basin masses
    (:func:`cgbench.diagnostics.assign_basins`, binomial sd) with ``basins_required`` (reference
    mass ≥ 1 %) and ``basins_found`` (of those, model mass ≥ 10 % of the reference's); JS of the
    radius-of-gyration and RMSD histograms (``bins`` bins over both samples' range) and their means.
    """
    from cgbench.diagnostics import BASINS, assign_basins
    from cgbench.reweighting import score_histograms

    scores = score_histograms(model["phi"], model["psi"], reference["phi"], reference["psi"],
                              bootstrap=bootstrap, seed=seed, bins=bins)
    rows = []
    for pair in range(model["phi"].shape[1]):
        rows.append({"metric": "js", "pair": pair, "value": scores.js[pair], "uncertainty": scores.js_unc[pair]})
        rows.append({"metric": "pmf_error", "pair": pair, "value": scores.pmf_error[pair],
                     "uncertainty": scores.pmf_error_unc[pair]})
        labels = assign_basins(model["phi"][:, pair], model["psi"][:, pair])
        reference_labels = assign_basins(reference["phi"][:, pair], reference["psi"][:, pair])
        required = found = 0
        for k, name in enumerate(BASINS):
            mass = float(np.mean(labels == k))
            reference_mass = float(np.mean(reference_labels == k))
            rows.append({"metric": f"basin_mass_{name}", "pair": pair, "value": mass,
                         "uncertainty": float(np.sqrt(mass * (1 - mass) / len(labels))),
                         "reference_value": reference_mass})
            if reference_mass >= REQUIRED_BASIN_MASS:
                required += 1
                found += mass >= FOUND_FRACTION * reference_mass
        rows.append({"metric": "basins_required", "pair": pair, "value": required})
        rows.append({"metric": "basins_found", "pair": pair, "value": found})
    for name in ("rg", "rmsd"):
        rows.append({"metric": f"{name}_js", "value": _histogram_js(model[name], reference[name], bins)})
        rows.append({"metric": f"{name}_mean", "value": float(np.mean(model[name])),
                     "uncertainty": float(np.std(model[name]) / np.sqrt(len(model[name]))),
                     "reference_value": float(np.mean(reference[name]))})
    return rows


def evaluate_models(target: PeptideTarget, models_dir, references: dict, *, structure, samples: int,
                    bins: int, bootstrap: int, seed: int, out_dir) -> "pd.DataFrame":
    """Score the saved model at every reference β; write structures and observables.

    Args:
        target: the target the models were trained on.
        models_dir: folder of :func:`cgbench.ecg.train_ecg` (``models.json``).
        references: β → ``(M, n_beads, 3)`` reference positions of the representation's beads (nm).
        structure: ``(n_beads, 3)`` the minimised structure's beads (RMSD reference), nm.
        samples: flow samples (each reconstructed) per model.
        bins, bootstrap: of :func:`score_observables`.
        seed: of the samples, the chains and the bootstrap.
        out_dir: receives ``structures_beta_XXXX.xtc`` (+ ``topology.pdb``) and
            ``observables_beta_XXXX.npz`` (model and reference φ, ψ, Rg, RMSD) per scored β.

    Returns:
        Rows: beta, metric, pair, value, uncertainty, reference_value, d_form per model, with the
        model's updates, energy_evaluations, wall_s and the chains' acceptance and half_difference.
    """
    import json
    from pathlib import Path

    import mdtraj as md
    import pandas as pd

    from cgbench.cgbg import chirality_signs, d_form
    from cgbench.ecg import load_models

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index, flows = load_models(models_dir)
    settings = json.loads((Path(models_dir) / "settings.json").read_text())
    sampler = ConditionalSampler(**settings["conditional_sampler"])
    history = pd.read_csv(Path(models_dir) / "history.csv")
    topology = target.split.representation.topology
    md.Trajectory(np.asarray(structure, np.float32)[None], topology).save_pdb(str(out_dir / "topology.pdb"))
    sign = chirality_signs(np.asarray(structure)[None], target.split.representation)
    rows = []
    for entry, flow in zip(index["models"], flows):
        matches = [b for b in references if np.isclose(b, entry["beta"], rtol=1e-6)]
        if not matches:
            continue
        beta = matches[0]
        key = jr.fold_in(jr.key(seed), entry["index"])
        z = flow.sample(jr.fold_in(key, 0), (samples,))
        positions, acceptance = reconstruct(target, z, beta, sampler, key=jr.fold_in(key, 1))
        tag = f"beta_{entry['index']:04d}"
        md.Trajectory(positions, topology).save_xtc(str(out_dir / f"structures_{tag}.xtc"))
        model = structure_observables(positions, target.split, structure)
        reference = structure_observables(references[beta], target.split, structure)
        np.savez(out_dir / f"observables_{tag}.npz", beta=beta, **{f"model_{k}": v for k, v in model.items()},
                 **{f"reference_{k}": v for k, v in reference.items()})
        at_beta = history[np.isclose(history["beta"], entry["beta"])]
        found = score_observables(model, reference, bins=bins, bootstrap=bootstrap, seed=seed)
        mirror = d_form(positions, target.split.representation, sign)
        found.append({"metric": "d_form_fraction", "value": float(mirror.mean()),
                      "reference_value": float(d_form(references[beta], target.split.representation, sign).mean())})
        found.append({"metric": "chain_acceptance", "value": acceptance})
        if len(at_beta):
            found.append({"metric": "mean_force_half_difference", "value": float(at_beta["half_difference"].mean())})
        for row in found:
            rows.append({"beta": beta, "pair": np.nan, "uncertainty": np.nan, "reference_value": np.nan, **row,
                         "updates": entry["updates"], "energy_evaluations": entry["energy_evaluations"],
                         "wall_s": entry["wall_s"], "samples": samples, "reference_samples": len(references[beta])})
    return pd.DataFrame(rows)


def build_target(potential: str, topology, structure, system, *, temperature: float, spec: dict,
                 pmf=None) -> PeptideTarget:
    """The target of a potential name in :data:`POTENTIALS`, z as the ``ecg_peptides`` block says.

    Args:
        potential: ``obc2``/``obc1`` (all-atom JAX energy of ``system``, which must be that
            implicit-solvent system) or ``pmf_heavy_atom`` (``pmf``, a heavy-atom PMF model).
        system: the OpenMM system (energy and masses).
        spec: the ``ecg_peptides`` config block (``coordinates``, ``length_scale``,
            ``tempering.beta_0``, ``flow.interval``).
    """
    from cgbench.energy import PotentialEnergy
    from cgbench.langevin import masses_from_system

    if potential not in POTENTIALS:
        raise ValueError(f"unknown potential {potential!r}; expected one of {sorted(POTENTIALS)}")
    if POTENTIALS[potential] == "all_atom":
        energy = PotentialEnergy.from_system(system, dtype=jnp.float32)
    else:
        if pmf is None:
            raise ValueError(f"potential {potential!r} needs a PMF model")
        from cgbench.pmf import cast

        energy = cast(pmf, jnp.float32)
    return peptide_target(energy, topology, structure, masses_from_system(system),
                          representation=POTENTIALS[potential], temperature=temperature,
                          coordinates=spec["coordinates"], length_scale=spec["length_scale"],
                          beta_0=spec["tempering"]["beta_0"], interval=spec["flow"]["interval"])


def train_peptide(target: PeptideTarget, spec: dict, schedule: str, out_dir, *, seed: int,
                  max_updates: int | None = None, progress: bool = True):
    """ECG training of a peptide target (:func:`cgbench.ecg.train_ecg`); ``settings.json`` beside.

    Resumes from the folder's checkpoint; returns the models index (None if stopped early).
    """
    from pathlib import Path

    from cgbench.atomic import atomic_write_json
    from cgbench.ecg import train_ecg

    settings = training_settings(spec, target)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out_dir) / "settings.json", settings)
    return train_ecg(target, settings, schedule, out_dir, seed=seed, max_updates=max_updates, progress=progress)


def run_reference(system, structure, *, temperature: float, beta: float, spec: dict, key) -> dict:
    """NUTS samples of the all-atom peptide at T/β (:func:`cgbench.peptide_nuts.run_peptide_nuts`).

    ``spec``: chains, warmup, samples, thin, max_tree_depth (the ``ecg_peptides.reference`` block).
    """
    from cgbench.peptide_nuts import run_peptide_nuts

    return run_peptide_nuts(system, structure, temperature=temperature / beta, chains=spec["chains"],
                            warmup=spec["warmup"], samples=spec["samples"], thin=spec["thin"], key=key,
                            max_num_doublings=spec["max_tree_depth"])
