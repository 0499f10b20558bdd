"""Potentials of mean force U_η(R) of CG beads: a fitted physical prior plus a SchNet, in JAX.

CG-BG learns the PMF of a peptide's beads by force matching (:mod:`cgbench.force_matching`):
every model here is an equinox Module with ``model(positions) -> energy`` for *one*
configuration, and its trainable leaves are the inexact arrays that are not stop-gradient'ed.

- :func:`bead_graph`: bonds, angles, proper dihedrals and non-bonded pairs (more than 3 bonds
  apart) of a resolution's bead topology (:mod:`cgbench.resolutions`).
- :class:`CGPrior` and :func:`fit_prior`: harmonic bonds ``½ k (r − r₀)²`` and angles
  ``½ k (θ − θ₀)²``, periodic dihedrals ``Σₙ₌₁..₃ aₙ cos nφ + bₙ sin nφ`` on the *signed*
  (IUPAC) dihedral, so the prior keeps the chirality of CA, and a repulsion ``kT (σᵢⱼ/rᵢⱼ)⁶`` on
  the non-bonded pairs, all fitted by Boltzmann inversion of the (weighted) data. Its float
  parameters are wrapped in ``jax.lax.stop_gradient`` inside ``__call__``: force matching
  trains only the network. (They are still inexact leaves, so an optimiser sees zero
  gradients for them: plain Adam leaves them unchanged; weight decay would shrink them, so
  filter them out — ``eqx.partition`` on ``model.network`` — if you add it.)
- :class:`SchNet`: a small E(3)-invariant continuous-filter convolution network (Schütt et al.,
  J. Chem. Phys. 148, 241722, 2018) over all bead pairs within a smooth cutoff; energy in kT.
- :class:`PeptidePMF`: ``prior(R) + kT · network(R)`` in kJ/mol; the network's last layer
  starts at zero, so a fresh model *is* the prior.
- :class:`RBFPotential`: 1-D energies (Müller-Brown's x), Gaussian RBF features on evenly
  spaced centres into an MLP (CG-BG's "RBF-MLP, 100 centres"); energy in kT.
- :func:`energy_and_forces`: ``(B, *shape) -> (E (B,), F = −∂E/∂x (B, *shape))``; with
  ``eqx.Partial(energy_and_forces, model)`` it is a ``forces_fn`` of
  :func:`cgbench.langevin.run_langevin`.
- :func:`save_pmf` / :func:`load_pmf`: ``eqx.tree_serialise_leaves`` plus a JSON sidecar with
  what rebuilds the skeleton and the caller's hyper-parameters, both written atomically.

Design choices.

Why SchNet and not MACE (CG-BG's network): no equivariant-network library is installed —
``pip list`` shows no e3nn-jax, mace-jax, jraph or jax-md — and CG-BG's MACE would need the
spherical-harmonic tensor products of e3nn-jax. An energy only has to be *invariant*, which
SchNet gets from distances alone; its forces, −∇E, are then covariant automatically. It is
simple to run on 2 CPU cores: a peptide has n ≤ ~30 beads, so the network works on the dense
``(n, n)`` pair matrix (diagonal masked) — no neighbour lists, no gathers or scatters, only
matrix products, broadcasts and sums. (Variants over the n(n−1)/2 unordered pairs, which halve
the filter work, were tried — one-hot matrix products, scatter-adds — and were no faster on
XLA's CPU backend within the noise of a shared machine: the batched scatter-adds of their
backward passes cost what the halving saves.) The activation is SiLU rather than
SchNet's shifted softplus: equally smooth, and 2-4× cheaper there (``softplus`` is a
``logaddexp``). Each bead has its own learned embedding (the model is per
peptide and resolution, so bead index = bead type). The filters are a Gaussian radial basis on
``[0, cutoff]`` times the cosine envelope ``½(cos(π r/r_c) + 1)``, whose value *and slope*
vanish at ``r_c``: energy and forces are continuous as a pair crosses the cutoff. Distances use
``sqrt(|Δ|² + ε)`` (ε = 1e-12 nm²) so gradients stay finite even for coincident beads.

Why ``(σ/r)⁶`` for the repulsion (the choice of the CGnet/CGSchNet priors): the prior only has
to stop beads from collapsing where there is no data; an ``r⁻⁶`` wall does that with forces
``∝ r⁻⁷`` instead of ``r⁻¹³``, which keeps float32 and Langevin time steps safe when a sampler
strays. σᵢⱼ = 0.9 × the 0.1th (weighted) percentile of the observed rᵢⱼ (:data:`SIGMA_QUANTILE`,
:data:`SIGMA_SCALE`): at the closest distances ever seen the wall costs ≤ 0.9⁶ kT ≈ 0.5 kT, at
typical ones far less, and the network learns the rest. ``repulsion_power=12`` is an option.

Boltzmann inversion (:func:`fit_prior`): bonds and angles take r₀ (θ₀) = weighted mean and
k = kT / weighted variance — the Gaussian approximation; the Jacobians r² and sin θ of the
distributions are ignored (a relative bias of order σ²/r₀² — negligible for bonds, small for
the stiff angles of a peptide). Dihedrals: a weighted histogram (36 bins on [−π, π)), the
free energy −kT log p(φ) in its populated bins, and a weighted least-squares fit of
``a₀ + Σₙ aₙ cos nφ + bₙ sin nφ`` with bin populations as weights (empty bins weigh nothing) and
a small ridge penalty ``λ Σ (aₙ² + bₙ²)`` (λ = 1e-3 against a data term normalised to weights
summing to 1): a dihedral seen in one or two bins gets a bounded, nearly flat profile instead of
an ill-conditioned one. The Fourier energy is bounded (≤ Σ √(aₙ² + bₙ²)) wherever there is no
data, so a poorly sampled dihedral cannot create an unbounded well.

Speed (XLA CPU, 2 cores shared with another job, load average ≈ 1.8; float32; ala2; batch of
256 frames; SchNet hidden 64, 3 interactions, 32 RBFs, cutoff 0.5 nm; medians of 10 jitted
calls). "Forces": one ``energy_and_forces`` of the PeptidePMF; "training step": value and
gradient w.r.t. the parameters of the force-matching loss mean |F − F_target|² (forces by
autodiff inside, so second order):

    resolution   beads   forces      training step   (compile of the step)
    core_beta      6      36 ms         114 ms          4 s
    heavy_atom    10      99 ms         317 ms          5 s
    all_atom      22     415 ms        1470 ms          6 s

The prior is ≈ 8 ms of the all-atom 415 ms; the cost is the network's ``(B, n², hidden)``
elementwise work (bias adds, activations, envelope products), which XLA's CPU backend does not
fuse into the matrix products — it grows like n², and 256 all-atom frames are ≈ 0.5 GB of such
intermediates per pass. For longer peptides or all-atom training, use the accelerator, a smaller
``hidden``, or fewer ``interactions``.

Units: positions nm, energies kJ/mol (network and :class:`RBFPotential`: kT), forces kJ/mol/nm,
angles rad.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

#: Harmonics n = 1..DIHEDRAL_HARMONICS of the dihedral Fourier series.
DIHEDRAL_HARMONICS = 3
#: Histogram bins on [−π, π) for the dihedral Boltzmann inversion.
DIHEDRAL_BINS = 36
#: Ridge penalty on the dihedral Fourier coefficients (data term weights sum to 1), dimensionless.
DIHEDRAL_RIDGE = 1e-3
#: σᵢⱼ = SIGMA_SCALE × the SIGMA_QUANTILE quantile of the observed rᵢⱼ.
SIGMA_QUANTILE = 1e-3
SIGMA_SCALE = 0.9
#: Exponent of the repulsion kT (σ/r)^p.
REPULSION_POWER = 6
#: Floors of the fitted variances (nm², rad²), so that constant data cannot give k = ∞.
BOND_VARIANCE_FLOOR = 1e-6
ANGLE_VARIANCE_FLOOR = 1e-4
#: Added to squared distances inside square roots, nm²: finite gradients at r = 0.
_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# The bead graph.


@dataclass(frozen=True, eq=False)
class BeadGraph:
    """Bonded structure of a set of beads. All arrays are ``int32`` numpy arrays of bead indices.

    Attributes:
        n_beads: Number of beads.
        bonds: ``(nb, 2)``, ``i < j``, sorted.
        angles: ``(na, 3)`` ``i-j-k`` with ``j`` central, one per pair of bonds sharing an atom.
        dihedrals: ``(nd, 4)`` every proper torsion ``i-j-k-l`` of the bond graph (``j < k``).
        nonbonded: ``(np, 2)`` pairs ``i < j`` more than 3 bonds apart (no 1-2, 1-3, 1-4).
    """

    n_beads: int
    bonds: np.ndarray
    angles: np.ndarray
    dihedrals: np.ndarray
    nonbonded: np.ndarray

    def to_json(self) -> dict:
        return {"n_beads": self.n_beads, "bonds": self.bonds.tolist(), "angles": self.angles.tolist(),
                "dihedrals": self.dihedrals.tolist(), "nonbonded": self.nonbonded.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> BeadGraph:
        return cls(int(data["n_beads"]), *(_index_array(data[name], width)
                                           for name, width in (("bonds", 2), ("angles", 3),
                                                               ("dihedrals", 4), ("nonbonded", 2))))


def _index_array(rows, width: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.int32).reshape(-1, width)


def graph_from_bonds(n_beads: int, bonds) -> BeadGraph:
    """The :class:`BeadGraph` of ``n_beads`` beads joined by ``bonds`` (pairs of bead indices)."""
    bonds = sorted({(min(int(a), int(b)), max(int(a), int(b))) for a, b in bonds})
    if any(a == b or not 0 <= a < n_beads or not 0 <= b < n_beads for a, b in bonds):
        raise ValueError(f"bonds {bonds} are not between distinct beads of 0..{n_beads - 1}")
    neighbours = [set() for _ in range(n_beads)]
    for a, b in bonds:
        neighbours[a].add(b)
        neighbours[b].add(a)
    angles = [(i, j, k) for j in range(n_beads) for i, k in combinations(sorted(neighbours[j]), 2)]
    dihedrals = [(i, j, k, l) for j, k in bonds for i in sorted(neighbours[j] - {k})
                 for l in sorted(neighbours[k] - {j}) if i != l]
    # Shortest-path bond counts (breadth first from every bead; n is small).
    distance = np.full((n_beads, n_beads), n_beads + 1)
    for start in range(n_beads):
        distance[start, start] = 0
        frontier = [start]
        while frontier:
            following = []
            for a in frontier:
                for b in neighbours[a]:
                    if distance[start, b] > distance[start, a] + 1:
                        distance[start, b] = distance[start, a] + 1
                        following.append(b)
            frontier = following
    nonbonded = [(i, j) for i, j in combinations(range(n_beads), 2) if distance[i, j] > 3]
    return BeadGraph(n_beads, _index_array(bonds, 2), _index_array(angles, 3),
                     _index_array(dihedrals, 4), _index_array(nonbonded, 2))


def bead_graph(mapping) -> BeadGraph:
    """The :class:`BeadGraph` of a :class:`cgbench.resolutions.CGMapping` (its topology's bonds).

    ala2: ``core_beta`` 6 beads, 5 bonds, 5 angles, 4 dihedrals, 1 non-bonded pair (C(ACE)–N(NME));
    ``heavy_atom`` 10 beads, 9, 11, 10, 15; ``all_atom`` 22 atoms, 21, 36, 41, 133.
    """
    return graph_from_bonds(mapping.n_beads, [(a.index, b.index) for a, b in mapping.topology.bonds])


# ---------------------------------------------------------------------------------------------
# Internal coordinates (numpy or jax, leading batch axes ``...``), differentiable everywhere.


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def _safe_norm(v, xp):
    return xp.sqrt(xp.sum(v * v, axis=-1) + _EPS)


def _safe_atan2(y, x, xp):
    """``atan2(y, x)`` with a finite gradient at ``x = y = 0`` (returns 0 there)."""
    ok = x * x + y * y > 1e-30
    return xp.arctan2(xp.where(ok, y, 0.0), xp.where(ok, x, 1.0))


def bond_lengths(positions, bonds):
    """``(..., n, 3)`` nm → ``(..., nb)`` nm."""
    xp = _xp(positions)
    return _safe_norm(positions[..., bonds[:, 1], :] - positions[..., bonds[:, 0], :], xp)


def bond_angles(positions, angles):
    """``(..., n, 3)`` → ``(..., na)`` angles i-j-k at j, rad in [0, π]; ``atan2(|u×v|, u·v)``."""
    xp = _xp(positions)
    centre = positions[..., angles[:, 1], :]
    u = positions[..., angles[:, 0], :] - centre
    v = positions[..., angles[:, 2], :] - centre
    return _safe_atan2(_safe_norm(xp.cross(u, v), xp), xp.sum(u * v, axis=-1), xp)


def dihedral_angles(positions, dihedrals):
    """``(..., n, 3)`` → ``(..., nd)`` signed dihedrals, rad in (−π, π], IUPAC sign (as mdtraj)."""
    xp = _xp(positions)
    p0, p1, p2, p3 = (positions[..., dihedrals[:, k], :] for k in range(4))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = xp.cross(b1, b2), xp.cross(b2, b3)
    y = xp.sum(b1 * n2, axis=-1) * _safe_norm(b2, xp)
    x = xp.sum(n1 * n2, axis=-1)
    return _safe_atan2(y, x, xp)


def _pair_distances(positions, pairs):
    return bond_lengths(positions, pairs)


# ---------------------------------------------------------------------------------------------
# The prior.


class CGPrior(eqx.Module):
    """Physical prior on CG beads: bonds, angles, dihedrals and a short-range repulsion, kJ/mol.

    Index arrays are ``int32`` numpy arrays (not inexact, so never trained); float parameters
    are stop-gradient'ed in ``__call__``. Build with :func:`fit_prior`.

    Attributes:
        bonds, bond_r0 (nm), bond_k (kJ/mol/nm²): ``(nb, 2)``, ``(nb,)``, ``(nb,)``.
        angles, angle_theta0 (rad), angle_k (kJ/mol/rad²): ``(na, 3)``, ``(na,)``, ``(na,)``.
        dihedrals, dihedral_cos, dihedral_sin (kJ/mol): ``(nd, 4)``, ``(nd, H)``, ``(nd, H)`` —
            aₙ and bₙ of ``Σₙ aₙ cos nφ + bₙ sin nφ``, n = 1..H.
        pairs, pair_sigma (nm): ``(np, 2)``, ``(np,)``; energy ``kT (σ/r)^repulsion_power``.
        n_beads: Number of beads.
        kT: kJ/mol, the repulsion's energy scale.
        repulsion_power: Exponent of the repulsion (6 by default).
    """

    bonds: np.ndarray
    bond_r0: Float[Array, " nb"]
    bond_k: Float[Array, " nb"]
    angles: np.ndarray
    angle_theta0: Float[Array, " na"]
    angle_k: Float[Array, " na"]
    dihedrals: np.ndarray
    dihedral_cos: Float[Array, "nd H"]
    dihedral_sin: Float[Array, "nd H"]
    pairs: np.ndarray
    pair_sigma: Float[Array, " np"]
    n_beads: int = eqx.field(static=True)
    kT: float = eqx.field(static=True)
    repulsion_power: int = eqx.field(static=True, default=REPULSION_POWER)

    def energy_terms(self, positions: Float[Array, "n 3"]) -> dict[str, Array]:
        """Each term's energy, kJ/mol: ``bonds``, ``angles``, ``dihedrals``, ``repulsion``."""
        positions = jnp.asarray(positions)
        (r0, kb, theta0, ka, a, b, sigma) = jax.lax.stop_gradient(
            (self.bond_r0, self.bond_k, self.angle_theta0, self.angle_k, self.dihedral_cos,
             self.dihedral_sin, self.pair_sigma))
        r = bond_lengths(positions, self.bonds)
        theta = bond_angles(positions, self.angles)
        phi = dihedral_angles(positions, self.dihedrals)
        n_phi = phi[..., :, None] * jnp.arange(1, a.shape[-1] + 1, dtype=phi.dtype)
        d = _pair_distances(positions, self.pairs)
        return {
            "bonds": 0.5 * jnp.sum(kb * (r - r0) ** 2, axis=-1),
            "angles": 0.5 * jnp.sum(ka * (theta - theta0) ** 2, axis=-1),
            "dihedrals": jnp.sum(a * jnp.cos(n_phi) + b * jnp.sin(n_phi), axis=(-2, -1)),
            "repulsion": self.kT * jnp.sum((sigma / d) ** self.repulsion_power, axis=-1),
        }

    def __call__(self, positions: Float[Array, "n 3"]) -> Float[Array, ""]:
        """Energy, kJ/mol, of one configuration ``(n_beads, 3)`` nm (also works batched ``(..., n, 3)``)."""
        return sum(self.energy_terms(positions).values())


def _normalised_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {n} finite non-negative numbers with a positive sum")
    return w / w.sum()


def _weighted_quantile(values: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Per column of ``values (N, m)``: the smallest value whose cumulative weight reaches ``q``."""
    if values.shape[1] == 0:
        return np.zeros(0)
    order = np.argsort(values, axis=0)
    cumulative = np.cumsum(w[order], axis=0)
    # (1 − 1e-9): so that k equal weights reach q = k/N despite rounding in the cumulative sum.
    first = np.argmax(cumulative >= q * cumulative[-1] * (1 - 1e-9), axis=0)
    return np.take_along_axis(values, order, axis=0)[first, np.arange(values.shape[1])]


def fourier_basis(phi, harmonics: int = DIHEDRAL_HARMONICS) -> np.ndarray:
    """``(m,)`` angles → ``(m, 1 + 2H)`` columns ``1, cos φ .. cos Hφ, sin φ .. sin Hφ``."""
    n_phi = np.asarray(phi)[:, None] * np.arange(1, harmonics + 1)
    return np.concatenate([np.ones((len(phi), 1)), np.cos(n_phi), np.sin(n_phi)], axis=1)


def fit_dihedral_profile(phi: np.ndarray, w: np.ndarray, *, kT: float, bins: int = DIHEDRAL_BINS,
                         ridge: float = DIHEDRAL_RIDGE, harmonics: int = DIHEDRAL_HARMONICS):
    """Fourier fit of −kT log p(φ) of one dihedral's samples.

    Args:
        phi: ``(N,)`` rad. w: ``(N,)`` weights summing to 1. kT: kJ/mol.
        bins: Histogram bins on [−π, π). ridge: λ of the penalty on aₙ, bₙ.

    Returns:
        ``(a, b)``, each ``(harmonics,)`` kJ/mol (the constant a₀ is dropped).
    """
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    mass, _ = np.histogram(np.mod(phi + np.pi, 2 * np.pi) - np.pi, bins=edges, weights=w)
    populated = mass > 0
    centres = 0.5 * (edges[:-1] + edges[1:])[populated]
    weight = mass[populated] / mass[populated].sum()
    free_energy = -kT * np.log(mass[populated] / (edges[1] - edges[0]))
    basis = fourier_basis(centres, harmonics)
    penalty = np.sqrt(ridge) * np.eye(1 + 2 * harmonics)[1:]
    design = np.concatenate([np.sqrt(weight)[:, None] * basis, penalty])
    target = np.concatenate([np.sqrt(weight) * free_energy, np.zeros(2 * harmonics)])
    coefficients = np.linalg.lstsq(design, target, rcond=None)[0]
    return coefficients[1:1 + harmonics], coefficients[1 + harmonics:]


def fit_prior(positions: Float[Array, "N n 3"], graph: BeadGraph, *, kT: float, weights=None,
              bins: int = DIHEDRAL_BINS, ridge: float = DIHEDRAL_RIDGE,
              repulsion_power: int = REPULSION_POWER, dtype=None) -> CGPrior:
    """Fit a :class:`CGPrior` by Boltzmann inversion of (weighted) bead configurations.

    Args:
        positions: ``(N, n_beads, 3)`` nm.
        graph: The beads' :class:`BeadGraph`.
        kT: kJ/mol, the temperature of the data.
        weights: Optional ``(N,)`` non-negative frame weights (e.g. reweighting factors).
        bins, ridge: Of the dihedral fit (:func:`fit_dihedral_profile`).
        repulsion_power: Exponent p of ``kT (σ/r)^p``.
        dtype: Of the float parameters (default: JAX's default float).

    Bonds/angles: r₀ = mean, k = kT / variance (variance floored at :data:`BOND_VARIANCE_FLOOR`,
    :data:`ANGLE_VARIANCE_FLOOR`). Dihedrals: :func:`fit_dihedral_profile` on one torsion per
    central bond (:func:`one_torsion_per_bond`). Repulsion:
    σ = :data:`SIGMA_SCALE` × the :data:`SIGMA_QUANTILE` weighted quantile of each pair's distance.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (graph.n_beads, 3):
        raise ValueError(f"positions {positions.shape}: expected (N, {graph.n_beads}, 3)")
    w = _normalised_weights(weights, len(positions))
    r = bond_lengths(positions, graph.bonds)
    r0 = w @ r
    bond_k = kT / np.maximum(w @ (r - r0) ** 2, BOND_VARIANCE_FLOOR)
    theta = bond_angles(positions, graph.angles)
    theta0 = w @ theta
    angle_k = kT / np.maximum(w @ (theta - theta0) ** 2, ANGLE_VARIANCE_FLOOR)
    torsions = one_torsion_per_bond(graph.dihedrals)
    phi = dihedral_angles(positions, torsions)
    profiles = [fit_dihedral_profile(phi[:, d], w, kT=kT, bins=bins, ridge=ridge)
                for d in range(phi.shape[1])]
    a = np.array([p[0] for p in profiles]).reshape(-1, DIHEDRAL_HARMONICS)
    b = np.array([p[1] for p in profiles]).reshape(-1, DIHEDRAL_HARMONICS)
    sigma = SIGMA_SCALE * _weighted_quantile(_pair_distances(positions, graph.nonbonded), w, SIGMA_QUANTILE)
    f = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return CGPrior(graph.bonds, f(r0), f(bond_k), graph.angles, f(theta0), f(angle_k),
                   torsions, f(a), f(b), graph.nonbonded, f(sigma), n_beads=graph.n_beads,
                   kT=float(kT), repulsion_power=int(repulsion_power))


def one_torsion_per_bond(dihedrals: np.ndarray) -> np.ndarray:
    """The first torsion ``i-j-k-l`` (in the graph's order) about each central bond ``j-k``.

    The prior Boltzmann-inverts one torsion per rotatable bond. The torsions about one bond
    (φ = C-N-CA-C and C-N-CA-CB at CA, say) describe the same rotation, so inverting each
    of them counts its free energy again: on ala2 core_beta (OBC2), CG MD with the prior
    alone gave β 0.71 with all four torsions and 0.66 with φ and ψ only (reference 0.62).
    For the backbone the first torsion is φ or ψ (beads are in topology order, C before CB).
    """
    seen, keep = set(), []
    for row in np.asarray(dihedrals).reshape(-1, 4):
        if (int(row[1]), int(row[2])) not in seen:
            seen.add((int(row[1]), int(row[2])))
            keep.append(row)
    return _index_array(keep, 4)


def _empty_prior(graph: BeadGraph, *, kT: float, repulsion_power: int, dtype) -> CGPrior:
    """A prior of the right shapes with zero parameters (a skeleton for :func:`load_pmf`)."""
    z = lambda *shape: jnp.zeros(shape, dtype)  # noqa: E731
    nb, na, nd, npairs = (len(graph.bonds), len(graph.angles), len(graph.dihedrals), len(graph.nonbonded))
    return CGPrior(graph.bonds, z(nb), z(nb), graph.angles, z(na), z(na), graph.dihedrals,
                   z(nd, DIHEDRAL_HARMONICS), z(nd, DIHEDRAL_HARMONICS), graph.nonbonded, z(npairs),
                   n_beads=graph.n_beads, kT=float(kT), repulsion_power=int(repulsion_power))


# ---------------------------------------------------------------------------------------------
# Networks.


def _default_dtype(dtype):
    return jnp.zeros((), dtype if dtype is not None else float).dtype


def activation(x):
    """SiLU ``x σ(x)`` (smooth, like SchNet's shifted softplus, and 2-4× cheaper on XLA CPU)."""
    return jax.nn.silu(x)


class Dense(eqx.Module):
    """``x @ weight + bias`` over any leading axes. LeCun-normal weights, zero bias (or all zero)."""

    weight: Float[Array, "n_in n_out"]
    bias: Float[Array, " n_out"]

    def __init__(self, n_in: int, n_out: int, *, key: PRNGKeyArray, dtype=None, zero: bool = False):
        dtype = _default_dtype(dtype)
        self.weight = (jnp.zeros((n_in, n_out), dtype) if zero else
                       jax.random.normal(key, (n_in, n_out), dtype) / math.sqrt(n_in))
        self.bias = jnp.zeros((n_out,), dtype)

    def __call__(self, x):
        return x @ self.weight + self.bias


class Interaction(eqx.Module):
    """One SchNet interaction block: continuous-filter convolution, residual update."""

    filter_in: Dense
    filter_out: Dense
    atom_to_filter: Dense
    filter_to_atom: Dense
    update: Dense

    def __init__(self, hidden: int, n_rbf: int, *, key: PRNGKeyArray, dtype=None):
        keys = jax.random.split(key, 5)
        self.filter_in = Dense(n_rbf, hidden, key=keys[0], dtype=dtype)
        self.filter_out = Dense(hidden, hidden, key=keys[1], dtype=dtype)
        self.atom_to_filter = Dense(hidden, hidden, key=keys[2], dtype=dtype)
        self.filter_to_atom = Dense(hidden, hidden, key=keys[3], dtype=dtype)
        self.update = Dense(hidden, hidden, key=keys[4], dtype=dtype)

    def __call__(self, h, rbf, envelope):
        """``h (n, F)``; ``rbf (n, n, K)`` and ``envelope (n, n)`` (zero diagonal) on all pairs."""
        filters = self.filter_out(activation(self.filter_in(rbf))) * envelope[..., None]
        messages = jnp.sum(filters * self.atom_to_filter(h)[None, :, :], axis=1)
        return h + self.update(activation(self.filter_to_atom(messages)))


class SchNet(eqx.Module):
    """SchNet energy of one configuration of ``n_beads`` beads, in kT.

    Invariant to rotations, translations and reflections (it sees distances only); not to
    permutations, since every bead has its own embedding.

    Attributes:
        embedding: ``(n_beads, hidden)`` learned per-bead features.
        interactions: The continuous-filter convolution blocks.
        readout_hidden, readout_out: Atomwise MLP ``hidden → hidden/2 → 1``, summed over beads;
            ``readout_out`` starts at zero (``zero_readout=True``), so a fresh network is 0.
        n_beads, hidden, n_rbf, cutoff (nm): Static.
    """

    embedding: Float[Array, "n hidden"]
    interactions: tuple[Interaction, ...]
    readout_hidden: Dense
    readout_out: Dense
    n_beads: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)
    n_rbf: int = eqx.field(static=True)
    cutoff: float = eqx.field(static=True)

    def __init__(self, n_beads: int, *, hidden: int = 64, interactions: int = 3, n_rbf: int = 32,
                 cutoff: float = 0.5, key: PRNGKeyArray, dtype=None, zero_readout: bool = True):
        keys = jax.random.split(key, interactions + 3)
        dtype = _default_dtype(dtype)
        self.embedding = jax.random.normal(keys[0], (n_beads, hidden), dtype)
        self.interactions = tuple(Interaction(hidden, n_rbf, key=k, dtype=dtype) for k in keys[3:])
        self.readout_hidden = Dense(hidden, max(hidden // 2, 1), key=keys[1], dtype=dtype)
        self.readout_out = Dense(max(hidden // 2, 1), 1, key=keys[2], dtype=dtype, zero=zero_readout)
        self.n_beads, self.hidden, self.n_rbf, self.cutoff = int(n_beads), int(hidden), int(n_rbf), float(cutoff)

    def pair_features(self, positions):
        """Distances ``(n, n)`` nm, radial basis ``(n, n, n_rbf)``, envelope ``(n, n)`` (0 on the diagonal)."""
        d = jnp.sqrt(jnp.sum((positions[:, None, :] - positions[None, :, :]) ** 2, axis=-1) + _EPS)
        centres = jnp.linspace(0.0, self.cutoff, self.n_rbf, dtype=d.dtype)
        spacing = self.cutoff / max(self.n_rbf - 1, 1)
        rbf = jnp.exp(-0.5 * ((d[..., None] - centres) / spacing) ** 2)
        off_diagonal = ~np.eye(self.n_beads, dtype=bool)
        envelope = jnp.where((d < self.cutoff) & off_diagonal, 0.5 * (jnp.cos(np.pi * d / self.cutoff) + 1.0), 0.0)
        return d, rbf, envelope

    def __call__(self, positions: Float[Array, "n 3"]) -> Float[Array, ""]:
        """Energy in kT of one configuration ``(n_beads, 3)`` nm."""
        positions = jnp.asarray(positions, self.embedding.dtype)
        _, rbf, envelope = self.pair_features(positions)
        h = self.embedding
        for block in self.interactions:
            h = block(h, rbf, envelope)
        return jnp.sum(self.readout_out(activation(self.readout_hidden(h))))


class PeptidePMF(eqx.Module):
    """``prior(R) + kT · network(R)``, kJ/mol, for one configuration ``R (n_beads, 3)`` nm."""

    prior: CGPrior
    network: SchNet
    kT: float = eqx.field(static=True)

    def __call__(self, positions: Float[Array, "n 3"]) -> Float[Array, ""]:
        return self.prior(positions) + self.kT * self.network(positions)


class RBFPotential(eqx.Module):
    """1-D energy in kT: Gaussian RBFs of x on evenly spaced centres, then an MLP (SiLU).

    ``features_c(x) = exp(−½ ((x − c)/w)²)`` for ``centres`` points c in ``[low, high]``, ``w =
    rbf_width`` (default: the centre spacing); then ``depth`` hidden layers of ``width``, then 1.

    Attributes:
        layers: The MLP's dense layers (standard init: there is no prior to keep).
        low, high, centres, rbf_width, width, depth: Static.
    """

    layers: tuple[Dense, ...]
    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)
    centres: int = eqx.field(static=True)
    rbf_width: float = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    def __init__(self, *, low: float, high: float, centres: int = 100, width: int = 64, depth: int = 2,
                 key: PRNGKeyArray, rbf_width: float | None = None, dtype=None):
        if not high > low or centres < 2:
            raise ValueError(f"need low < high and centres ≥ 2; got {low}, {high}, {centres}")
        sizes = [centres] + [width] * depth + [1]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(Dense(a, b, key=k, dtype=dtype) for a, b, k in zip(sizes[:-1], sizes[1:], keys))
        self.low, self.high, self.centres = float(low), float(high), int(centres)
        self.rbf_width = float(rbf_width) if rbf_width is not None else (self.high - self.low) / (centres - 1)
        self.width, self.depth = int(width), int(depth)

    def features(self, x):
        c = jnp.linspace(self.low, self.high, self.centres, dtype=x.dtype)
        return jnp.exp(-0.5 * ((x - c) / self.rbf_width) ** 2)

    def __call__(self, position: Float[Array, " 1"]) -> Float[Array, ""]:
        position = jnp.asarray(position, self.layers[0].weight.dtype)
        h = self.features(position.reshape(())[None])
        for layer in self.layers[:-1]:
            h = jax.nn.silu(layer(h))
        return self.layers[-1](h)[0]


def energy_and_forces(model, positions):
    """``(energy (B,), forces (B, *shape))`` of a batch ``(B, *shape)``; forces = −∂E/∂positions.

    ``eqx.Partial(energy_and_forces, model)`` is a ``forces_fn`` for
    :func:`cgbench.langevin.run_langevin` (the model's arrays are traced, not baked in).
    """
    energy, gradient = jax.vmap(jax.value_and_grad(model))(positions)
    return energy, -gradient


def cast(model, dtype):
    """``model`` with every inexact array leaf cast to ``dtype`` (index arrays untouched)."""
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model)


# ---------------------------------------------------------------------------------------------
# Serialisation.

FORMAT_VERSION = 1


def _dtype_of(model) -> str:
    leaves = [x for x in jax.tree.leaves(model) if eqx.is_inexact_array(x)]
    return str(leaves[0].dtype) if leaves else "float32"


def _skeleton_json(model) -> dict:
    if isinstance(model, PeptidePMF):
        prior, network = model.prior, model.network
        graph = BeadGraph(prior.n_beads, prior.bonds, prior.angles, prior.dihedrals, prior.pairs)
        return {"kind": "peptide", "n_beads": prior.n_beads, "kT": model.kT, "graph": graph.to_json(),
                "prior": {"kT": prior.kT, "repulsion_power": prior.repulsion_power,
                          "harmonics": int(prior.dihedral_cos.shape[-1])},
                "network": {"n_beads": network.n_beads, "hidden": network.hidden,
                            "interactions": len(network.interactions), "n_rbf": network.n_rbf,
                            "cutoff": network.cutoff}}
    if isinstance(model, RBFPotential):
        return {"kind": "rbf", "constructor": {"low": model.low, "high": model.high, "centres": model.centres,
                                               "width": model.width, "depth": model.depth,
                                               "rbf_width": model.rbf_width}}
    raise TypeError(f"cannot save a {type(model).__name__}; expected PeptidePMF or RBFPotential")


def _skeleton(meta: dict):
    dtype = jnp.dtype(meta["dtype"])
    key = jax.random.key(0)
    if meta["kind"] == "peptide":
        graph = BeadGraph.from_json(meta["graph"])
        prior = _empty_prior(graph, kT=meta["prior"]["kT"], repulsion_power=meta["prior"]["repulsion_power"],
                             dtype=dtype)
        network = SchNet(**meta["network"], key=key, dtype=dtype)
        return PeptidePMF(prior, network, float(meta["kT"]))
    if meta["kind"] == "rbf":
        return RBFPotential(**meta["constructor"], key=key, dtype=dtype)
    raise ValueError(f"unknown PMF kind {meta['kind']!r}")


def sidecar_path(path) -> Path:
    """The JSON sidecar of the leaves file ``path``: ``path.with_suffix('.json')``."""
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: the leaves file must not end in .json (that is the sidecar's name)")
    return path.with_suffix(".json")


def save_pmf(path, model, hyperparameters: dict) -> None:
    """Write ``model``'s arrays to ``path`` and a JSON sidecar ``path.with_suffix('.json')``.

    The sidecar holds ``format``, ``kind`` (``peptide`` | ``rbf``), ``dtype``, the constructor
    arguments (for a peptide: the graph's index arrays, ``n_beads``, ``kT``, the prior's and the
    network's settings) and ``hyperparameters`` verbatim (must be JSON-serialisable). Each file
    is written to a temporary file and moved into place (``os.replace``); the leaves first, so a
    sidecar never describes missing arrays.
    """
    from cgbench.atomic import atomic_write_bytes

    path = Path(path)
    meta = {"format": FORMAT_VERSION, **_skeleton_json(model), "dtype": _dtype_of(model),
            "hyperparameters": hyperparameters}
    text = json.dumps(meta, indent=1)  # fails before anything is written if not serialisable
    sidecar = sidecar_path(path)
    atomic_write_bytes(path, lambda f: eqx.tree_serialise_leaves(f, model))
    atomic_write_bytes(sidecar, lambda f: f.write(text.encode()))


def load_pmf(path):
    """``(model, hyperparameters)`` saved by :func:`save_pmf` at ``path``."""
    path = Path(path)
    meta = json.loads(sidecar_path(path).read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: PMF format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    model = eqx.tree_deserialise_leaves(path, _skeleton(meta))
    return model, meta["hyperparameters"]
