"""Potential energy of an OpenMM ``System`` in JAX: ``jit``/``vmap``/``grad``-able, float64 or float32.

``PotentialEnergy.from_system(system)`` reads the parameters of a non-periodic solute system
(vacuum, OBC1 or OBC2 implicit solvent, see :mod:`cgbench.systems`) into an equinox Module whose
``__call__(positions)`` returns the energy; :func:`energy_and_forces` adds the forces by autodiff
and takes one configuration ``(n_atoms, 3)`` or a batch ``(..., n_atoms, 3)``.

Supported forces (anything else raises :class:`UnsupportedForceError` naming the force):

- ``HarmonicBondForce``: ``½ k (r - r₀)²``; ``HarmonicAngleForce``: ``½ k (θ - θ₀)²``;
  ``PeriodicTorsionForce``: ``k (1 + cos(n φ - φ₀))`` (IUPAC dihedral sign, as OpenMM).
- ``NonbondedForce`` with ``NoCutoff``: Coulomb ``q_i q_j / (4πε₀ r)`` plus Lennard-Jones
  ``4ε((σ/r)¹² - (σ/r)⁶)`` with Lorentz-Berthelot mixing; the exceptions' own
  ``chargeProd, sigma, epsilon`` replace the mixed values (this is how 1-4 scaling and exclusions
  arrive), pairs with both zero are dropped.
- ``GBSAOBCForce`` (OpenMM's native OBC2 with ``NoCutoff``: α = 1, β = 0.8, γ = 4.85, offset
  0.009 nm, ACE surface term with probe radius 0.14 nm, including OpenMM's correction for an atom
  engulfed by a neighbour's descreening sphere).
- amber's OBC ``CustomGBForce`` (``openmm.app.internal.customgbforces.GBSAOBC1Force``, and its
  OBC2 sibling ``GBSAOBC2Force``), recognised by parsing its expressions: the Born radius
  ``1/(1/or-tanh(α*psi-β*psi^2+γ*psi^3)/radius)`` gives α, β, γ (OBC1: 0.8, 0, 2.909125), the
  energy terms give the dielectrics, the Coulomb constant written in them (138.935485, not
  OpenMM's 138.93545764438198) and the ACE constants. Anything else written in a
  ``CustomGBForce`` (GBn, GBn2, a cutoff, salt) is refused rather than guessed.
- ``CMMotionRemover`` is ignored (no energy); constraints are ignored (they do not change the
  energy). Virtual sites and periodic systems are refused.

Why hand-written: no installed library evaluates OpenMM's implicit solvent in JAX. jax-md 0.2.29's
``mm_forcefields`` converts the vacuum terms but raises ``NotImplementedError`` on any GB force.
Decided by measurement (throwaway venv, 2 cores): ``pip install jax-md==0.2.29`` took 44 s and
pulled 40 packages this project does not have (flax, orbax-checkpoint, tensorstore, e3nn-jax,
pymatgen, sympy, plotly, …; the venv reached 1.2 GB) and would move the pinned tabulate 0.9.0 to
0.10.0; its loader also works in kcal/mol. Reusing it would still leave the GB terms (the
hard part) to write here, so it is not used. Parity with OpenMM is what makes the hand-written
terms trustworthy: ``tests/test_energy.py`` compares every force term and the whole system against
OpenMM's Reference platform, and ``cgbench parity`` does it for any sequence.

Precision: float64 (the default) needs JAX's 64-bit mode, which is off by default. Enable it for
the whole program with ``jax.config.update("jax_enable_x64", True)`` before building the module,
or locally with ``with jax.enable_x64(True): ...`` around building *and* calling it (what
``cgbench parity`` and the tests do, so nothing else in the process changes). Asking for float64
without it raises instead of silently computing in float32. ``dtype=jnp.float32`` works either way.

Speed (``benchmarks/test_energy_speed.py``, ala2 in OBC2, batch 1024, 2 idle CPU cores,
medians): JAX float64 11.5 ms per 1024 configurations (≈ 89k/s), float32 5.9 ms (≈ 174k/s),
OpenMM Reference one configuration at a time 61.1 ms (≈ 17k/s): 5.3× and 10.4× OpenMM. With
other jobs on the machine the JAX numbers nearly double while OpenMM's barely move. What it
took, all measured on XLA's CPU backend: the batch-last layout, the pair layout
``(i, j, *batch)``, analytic gradients of the two pair terms (GB and Coulomb/LJ, see
``OBCGeneralizedBorn``), evaluating both in one pass (:func:`_pair_energy_and_gradient`) and a
large batch in chunks whose pair arrays stay in cache (:data:`CHUNK_BYTES`); float64 went from
~330 ms to ~75 ms to ~11.5 ms.

Units: positions nm, energies kJ/mol, forces kJ/mol/nm, charges e, angles rad.
"""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from cgbench.systems import OBC_DIELECTRIC_OFFSET, ONE_4PI_EPS0

#: Probe radius of the ACE surface-area term in GBSAOBCForce, nm.
OBC_PROBE_RADIUS = 0.14


class UnsupportedForceError(ValueError):
    """An OpenMM force (or setting of one) that :class:`PotentialEnergy` cannot evaluate."""


# Layout. Every term takes positions of shape (n_atoms, 3) or, on the batched path that
# `energy_and_forces` uses, (n_atoms, 3, *batch) with the batch axes *last*: gathering atoms then
# copies contiguous rows and its transpose (the scatter-add of the backward pass) adds contiguous
# rows, and the arithmetic is vectorised over the batch. (With the batch first, as under a plain
# vmap, XLA's CPU gathers and scatters were the larger part of the time.) The pair terms
# (Nonbonded, OBCGeneralizedBorn) evaluate *all* pairs as dense arrays (n_atoms, n_atoms, *batch),
# whatever the number of atoms: without a cutoff a pair list holds every pair anyway, so dense
# costs at most 2× the arithmetic and saves every gather and scatter; memory stays bounded
# because `energy_and_forces` evaluates a large batch in chunks (`CHUNK_BYTES`).


def _per_item(p: Array, positions: Array) -> Array:
    """Parameter of shape ``(m, ...)`` reshaped to broadcast over the trailing batch axes."""
    return p.reshape(p.shape + (1,) * (positions.ndim - 2))


def _pair_axes(positions: Array) -> tuple:
    """Broadcasters of per-atom parameters ``(n,)`` to the pair layout ``(i, j, *batch)``.

    ``positions`` is anything with the batch axes after two leading ones: positions
    ``(n, 3, *batch)`` or a pair array ``(n, n, *batch)``.

    Returns ``(column, row, per_atom)``: shapes ``(n, 1, 1…)`` (index i), ``(1, n, 1…)`` (index j)
    and ``(n, 1…)`` (one value per atom, next to the batch axes).
    """
    trailing = (1,) * (positions.ndim - 2)
    return (lambda p: p.reshape(p.shape + (1,) + trailing), lambda p: p.reshape((1,) + p.shape + trailing),
            lambda p: p.reshape(p.shape + trailing))


def _differences(positions: Array) -> list[Array]:
    """``x_i - x_j`` per Cartesian component, each of shape ``(n_atoms, n_atoms, *batch)``."""
    return [positions[:, None, k] - positions[None, :, k] for k in range(3)]


def _norm(v: Array, axis: int = 1) -> Array:
    """Euclidean norm along ``axis`` with a finite gradient at zero (taken as 0 there)."""
    s = jnp.sum(v * v, axis=axis)
    positive = s > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)


def _dot(u: Array, v: Array) -> Array:
    return jnp.sum(u * v, axis=1)


def _cross(u: Array, v: Array) -> Array:
    return jnp.cross(u, v, axis=1)


class HarmonicBonds(eqx.Module):
    """``Σ ½ k (r - r₀)²`` over bonds (OpenMM ``HarmonicBondForce``).

    Attributes:
        atoms: Atom indices, shape ``(n_bonds, 2)``.
        length: r₀, nm, shape ``(n_bonds,)``.
        k: Force constants, kJ/mol/nm², shape ``(n_bonds,)``.
    """

    atoms: Int[Array, "n 2"]
    length: Float[Array, " n"]
    k: Float[Array, " n"]

    def __call__(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        r = _norm(positions[self.atoms[:, 1]] - positions[self.atoms[:, 0]])
        return 0.5 * jnp.sum(_per_item(self.k, positions) * (r - _per_item(self.length, positions)) ** 2, axis=0)


class HarmonicAngles(eqx.Module):
    """``Σ ½ k (θ - θ₀)²`` over angles i-j-k with j the vertex (OpenMM ``HarmonicAngleForce``).

    Attributes:
        atoms: Atom indices, shape ``(n_angles, 3)``.
        angle: θ₀, rad, shape ``(n_angles,)``.
        k: Force constants, kJ/mol/rad², shape ``(n_angles,)``.
    """

    atoms: Int[Array, "n 3"]
    angle: Float[Array, " n"]
    k: Float[Array, " n"]

    def __call__(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        u = positions[self.atoms[:, 0]] - positions[self.atoms[:, 1]]
        v = positions[self.atoms[:, 2]] - positions[self.atoms[:, 1]]
        # atan2 of |u×v| and u·v: accurate near 0 and π, where arccos is not.
        theta = jnp.arctan2(_norm(_cross(u, v)), _dot(u, v))
        return 0.5 * jnp.sum(_per_item(self.k, positions) * (theta - _per_item(self.angle, positions)) ** 2,
                             axis=0)


class PeriodicTorsions(eqx.Module):
    """``Σ k (1 + cos(n φ - φ₀))`` over torsions (OpenMM ``PeriodicTorsionForce``), as Fourier series.

    The terms are grouped by their four atoms; each dihedral φ_d (IUPAC sign, trans = π, as OpenMM)
    contributes ``Σ_n a_dn cos(nφ_d) + b_dn sin(nφ_d)`` with ``a = Σ k cos φ₀`` and
    ``b = Σ k sin φ₀`` over its terms of periodicity n, plus the constant ``Σ k``. This is the same
    energy; it needs no atan2 (cos φ and sin φ come from the geometry, cos nφ and sin nφ from the
    angle-addition recursion) and evaluates each dihedral once however many terms it has.

    Attributes:
        atoms: Atom indices of the distinct dihedrals, shape ``(n_dihedrals, 4)``.
        cos_coefficient: a_dn, kJ/mol, shape ``(n_dihedrals, max_periodicity)`` (column n-1).
        sin_coefficient: b_dn, kJ/mol, same shape.
        constant: ``Σ k`` plus the periodicity-0 terms, kJ/mol.
    """

    atoms: Int[Array, "n 4"]
    cos_coefficient: Float[Array, "n p"]
    sin_coefficient: Float[Array, "n p"]
    constant: Float[Array, ""]

    def __call__(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        x = [positions[self.atoms[:, a]] for a in range(4)]
        b1, b2, b3 = x[1] - x[0], x[2] - x[1], x[3] - x[2]
        n1, n2 = _cross(b1, b2), _cross(b2, b3)
        along, across = _dot(n1, n2), _norm(b2) * _dot(b1, n2)  # ∝ cos φ, sin φ
        length = jnp.sqrt(jnp.maximum(along**2 + across**2, jnp.finfo(along.dtype).tiny))
        cos1, sin1 = along / length, across / length
        cos_n, sin_n = cos1, sin1
        energy = jnp.zeros_like(cos1)
        for n in range(self.cos_coefficient.shape[1]):
            if n:
                cos_n, sin_n = cos_n * cos1 - sin_n * sin1, sin_n * cos1 + cos_n * sin1
            energy = (energy + _per_item(self.cos_coefficient[:, n], positions) * cos_n
                      + _per_item(self.sin_coefficient[:, n], positions) * sin_n)
        return self.constant + jnp.sum(energy, axis=0)


class Nonbonded(eqx.Module):
    """Coulomb plus Lennard-Jones over all pairs, no cutoff (``NonbondedForce``), as dense matrices.

    ``½ Σ_{i≠j} C qq_ij/r_ij + 4ε_ij((σ_ij/r_ij)¹² - (σ_ij/r_ij)⁶)`` with symmetric ``(n, n)``
    parameter matrices: the exceptions' parameters where OpenMM has an exception, zeros for excluded
    pairs and on the diagonal (so every pair is evaluated, with no gather or scatter, in the pair
    layout ``(i, j, *batch)`` of :class:`OBCGeneralizedBorn`). The diagonal's r² = 0 is replaced by 1
    before ``1/r``, so it adds exactly nothing to energy and forces; two distinct atoms at the same
    place give an infinite energy, as in OpenMM.

    Attributes:
        charge_product: C q_i q_j, kJ nm/mol, shape ``(n_atoms, n_atoms)`` (C = 1/(4πε₀)).
        sigma_squared: σ², nm², same shape.
        epsilon: 4ε, kJ/mol, same shape.
    """

    charge_product: Float[Array, "n n"]
    sigma_squared: Float[Array, "n n"]
    epsilon: Float[Array, "n n"]

    def __call__(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        """Energy, kJ/mol, shape ``batch``; its derivative is the analytic one."""
        return _pair_energy(positions, (self,))

    def energy_and_gradient(self, positions: Float[Array, "n_atoms 3 *batch"]
                            ) -> tuple[Float[Array, "*batch"], Float[Array, "n_atoms 3 *batch"]]:
        """Energy and ∂E/∂x_k = Σ_j 2 (∂p_kj/∂r²) (x_k - x_j) with p_kj the pair energy."""
        return _pair_energy_and_gradient(positions, (self,))

    def energy_and_pair_weight(self, r2: Float[Array, "n n *batch"]
                               ) -> tuple[Float[Array, "*batch"], Float[Array, "n n *batch"]]:
        """Energy and the pair weights W_kj = 2 ∂p_kj/∂r² (gradient Σ_j W_kj (x_k - x_j)), from r²."""
        trailing = (1,) * (r2.ndim - 2)
        diagonal = jnp.eye(r2.shape[0], dtype=r2.dtype).reshape(r2.shape[:2] + trailing)
        inverse_r = jax.lax.rsqrt(r2 + diagonal)  # the diagonal's r² is exactly 0: 1 there, zero parameters
        inverse_r2 = inverse_r * inverse_r
        coulomb = self.charge_product.reshape(self.charge_product.shape + trailing) * inverse_r
        epsilon = self.epsilon.reshape(self.epsilon.shape + trailing)
        s6 = (self.sigma_squared.reshape(self.sigma_squared.shape + trailing) * inverse_r2) ** 3
        energy = 0.5 * jnp.sum(coulomb + epsilon * (s6 * s6 - s6), axis=(0, 1))
        return energy, -inverse_r2 * (coulomb + epsilon * (12 * s6 * s6 - 6 * s6))

    def autodiff_energy(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        """The same energy as plain JAX code, differentiated by autodiff (reference of the tests)."""
        return self.energy_and_gradient(positions)[0]


class OBCGeneralizedBorn(eqx.Module):
    """Onufriev-Bashford-Case generalized Born with the ACE surface-area term, no cutoff.

    Born radii (HCT integral I_i over all other atoms j, no exclusions)::

        I_i = ½ Σ_{j≠i, or_i < r+sr_j} [1/L - 1/U + ¼(r - sr_j²/r)(1/U² - 1/L²) + ½ ln(L/U)/r]
              (+ 2(1/or_i - 1/L) if or_i < sr_j - r and ``engulfed_correction``)
        U = r + sr_j,  L = max(or_i, |r - sr_j|),  ψ = I_i or_i
        B_i = 1 / (1/or_i - tanh(αψ - βψ² + γψ³)/ρ_i),  ρ_i = or_i + offset

    Energy::

        ½ Σ_{i,j} prefactor q_i q_j / sqrt(r² + B_i B_j exp(-r²/(4 B_i B_j)))     (i = j: q_i²/B_i)
        + Σ_i surface · (ρ_i + probe)² (ρ_i/B_i)⁶

    with ``prefactor = -C (1/ε_solute - 1/ε_solvent)``. Pairwise quantities are dense
    arrays ``(n_atoms, n_atoms, *batch)`` (see "Layout"); pairs at r = 0 (the diagonal) are masked *before* any division
    or square root, so energies and forces stay finite. (OpenMM divides by r there and returns NaN
    for two distinct atoms at the same place; here such a pair simply adds no descreening, the
    r → 0 limit whenever sr_j ≤ or_i.)

    Attributes:
        charge: e, shape ``(n_atoms,)``.
        offset_radius: or = ρ - offset, nm, shape ``(n_atoms,)``.
        scaled_radius: sr = scale · or, nm, shape ``(n_atoms,)``.
        radius: ρ, nm, shape ``(n_atoms,)``.
        alpha, beta, gamma: OBC coefficients (OBC1 0.8, 0, 2.909125; OBC2 1, 0.8, 4.85).
        prefactor: kJ nm/(mol e²).
        surface: ACE constant, kJ/mol/nm² (4π × surface-area energy; 0 switches the term off).
        probe_radius: nm.
        engulfed_correction: Whether to add OpenMM's native term for an atom inside a
            neighbour's descreening sphere (native ``GBSAOBCForce``: yes; amber's
            ``CustomGBForce``: no).
    """

    charge: Float[Array, " n"]
    offset_radius: Float[Array, " n"]
    scaled_radius: Float[Array, " n"]
    radius: Float[Array, " n"]
    alpha: float = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    gamma: float = eqx.field(static=True)
    prefactor: float = eqx.field(static=True)
    surface: float = eqx.field(static=True)
    probe_radius: float = eqx.field(static=True, default=OBC_PROBE_RADIUS)
    engulfed_correction: bool = eqx.field(static=True, default=True)

    def born_radii(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch n_atoms"]:
        """Born radii B_i, nm, shape ``(*batch, n_atoms)`` (computed as ``(n_atoms, *batch)``)."""
        r2 = sum(d * d for d in _differences(positions))
        return jnp.moveaxis(self._born_radii(r2, *_pair_axes(positions)), 0, -1)

    def _born_radii(self, r2, column, row, per_atom):
        # Pairs at r = 0 (the diagonal, or two atoms on top of each other) are masked before the
        # square root and every 1/r: the values and gradients of the other branch stay finite.
        apart = r2 > 0
        inverse_r = jax.lax.rsqrt(jnp.where(apart, r2, 1.0))
        r = jnp.where(apart, r2, 1.0) * inverse_r
        or_i = column(self.offset_radius)
        sr_j = row(self.scaled_radius)
        upper = r + sr_j
        lower = jnp.maximum(or_i, jnp.abs(r - sr_j))
        inverse_upper, inverse_lower = 1 / upper, 1 / lower
        term = (inverse_lower - inverse_upper
                + 0.25 * (r - sr_j**2 * inverse_r) * (inverse_upper**2 - inverse_lower**2)
                + 0.5 * jnp.log(lower * inverse_upper) * inverse_r)
        if self.engulfed_correction:
            term = term + jnp.where(or_i < sr_j - r, 2 * (1 / or_i - inverse_lower), 0.0)
        integral = 0.5 * jnp.sum(jnp.where(apart & (or_i < upper), term, 0.0), axis=1)
        psi = integral * per_atom(self.offset_radius)
        tanh = jnp.tanh(psi * (self.alpha + psi * (self.gamma * psi - self.beta)))
        return 1 / (1 / per_atom(self.offset_radius) - tanh / per_atom(self.radius))

    def __call__(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        """Energy, kJ/mol, shape ``batch``; its derivative is the analytic one (see below)."""
        return _pair_energy(positions, (self,))

    def energy_and_gradient(self, positions: Float[Array, "n_atoms 3 *batch"]
                            ) -> tuple[Float[Array, "*batch"], Float[Array, "n_atoms 3 *batch"]]:
        """Energy (kJ/mol) and its analytic gradient ∂E/∂x (kJ/mol/nm), written out as OpenMM does.

        Why by hand: reverse-mode autodiff of :meth:`autodiff_energy` on XLA's CPU backend cost
        several times its forward pass (pair-matrix reductions in the backward pass), the largest
        part of a batched energy-and-forces call. The gradient::

            ∂E/∂B_i = Σ_j ∂g_ij/∂(B_iB_j) B_j - 6 E_ACE,i / B_i         (g_ij the polar pair term)
            ∂B_i/∂I_i = B_i² (1 - tanh²) (α - 2βψ + 3γψ²) or_i / ρ_i
            ∂I_i/∂r_ij = -[⅛(1 + sr_j²/r²)(1/L² - 1/U²) + ¼ ln(L/U)/r²]
            ∂E/∂x_k = Σ_j W_kj (x_k - x_j),  W_kj = (c_k ∂I_k/∂r_kj + c_j ∂I_j/∂r_jk)/r + 2 ∂g_kj/∂r²

        with c_i = ∂E/∂B_i ∂B_i/∂I_i. The terms through the limits L and U cancel, and for an
        engulfed atom (L = sr_j - r) the L-derivative (2/L²) cancels that of the correction
        2(1/or_i - 1/L), so ∂I/∂r has one form everywhere. Tested against autodiff of
        :meth:`autodiff_energy`, finite differences and OpenMM.

        Layout: pair arrays are ``(i, j, *batch)``, the batch axes minor, so every elementwise op
        runs along contiguous batch vectors and the pair sums add whole rows (measured faster on
        CPU than ``(*batch, i, j)``, 2× in float32). Divisions are shared where the algebra allows
        (1/U and 1/L from one reciprocal, 1/f from one rsqrt, 1/(B_iB_j) from 1/B).
        """
        return _pair_energy_and_gradient(positions, (self,))

    def energy_and_pair_weight(self, r2: Float[Array, "n n *batch"]
                               ) -> tuple[Float[Array, "*batch"], Float[Array, "n n *batch"]]:
        """Energy and the pair weights W_kj of the gradient Σ_j W_kj (x_k - x_j), from r² (see above)."""
        column, row, per_atom = _pair_axes(r2)
        apart = r2 > 0
        r2_safe = jnp.where(apart, r2, 1.0)
        inverse_r = jax.lax.rsqrt(r2_safe)
        inverse_r2 = inverse_r * inverse_r
        r = r2_safe * inverse_r
        or_i, sr_j, sr2_j = column(self.offset_radius), row(self.scaled_radius), row(self.scaled_radius**2)
        upper = r + sr_j
        lower = jnp.maximum(or_i, jnp.abs(r - sr_j))
        inverse_product = 1 / (upper * lower)
        inverse_upper, inverse_lower = lower * inverse_product, upper * inverse_product
        log_ratio = jnp.log(lower * inverse_upper)
        square_difference = inverse_upper**2 - inverse_lower**2
        include = apart & (or_i < upper)
        term = (inverse_lower - inverse_upper + 0.25 * (r - sr2_j * inverse_r) * square_difference
                + 0.5 * log_ratio * inverse_r)
        d_integral = 0.125 * (1 + sr2_j * inverse_r2) * square_difference - 0.25 * log_ratio * inverse_r2
        if self.engulfed_correction:
            engulfed = or_i < sr_j - r
            term = term + jnp.where(engulfed, 2 * (column(1 / self.offset_radius) - inverse_lower), 0.0)
        integral = 0.5 * jnp.sum(jnp.where(include, term, 0.0), axis=1)  # (n, *batch)
        d_integral = jnp.where(include, d_integral, 0.0)  # ∂I_i/∂r_ij
        psi = integral * per_atom(self.offset_radius)
        tanh = jnp.tanh(psi * (self.alpha + psi * (self.gamma * psi - self.beta)))
        inverse_born = per_atom(1 / self.offset_radius) - tanh * per_atom(1 / self.radius)
        born = 1 / inverse_born
        d_born = (born**2 * (1 - tanh**2) * (self.alpha + psi * (3 * self.gamma * psi - 2 * self.beta))
                  * per_atom(self.offset_radius / self.radius))

        bb = born[:, None] * born[None, :]
        scaled = 0.25 * r2 * (inverse_born[:, None] * inverse_born[None, :])
        decay = jnp.exp(-scaled)
        inverse_f = jax.lax.rsqrt(r2 + bb * decay)
        pair = column(self.prefactor * self.charge) * row(self.charge) * inverse_f  # g_ij
        surface = (per_atom(self.surface * (self.radius + self.probe_radius) ** 2 * self.radius**6)
                   * inverse_born**6)
        energy = 0.5 * jnp.sum(pair, axis=(0, 1)) + jnp.sum(surface, axis=0)

        half_pair_f2 = -0.5 * pair * inverse_f * inverse_f
        d_born_total = (jnp.sum(half_pair_f2 * decay * (1 + scaled) * born[None, :], axis=1)
                        - 6 * surface * inverse_born)  # ∂E/∂B_i
        chain = (d_born_total * d_born)[:, None] * d_integral  # c_i ∂I_i/∂r_ij
        weight = jnp.where(apart, (chain + jnp.swapaxes(chain, 0, 1)) * inverse_r
                           + 2 * half_pair_f2 * (1 - 0.25 * decay), 0.0)
        return energy, weight

    def autodiff_energy(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        """The same energy as plain JAX code, differentiated by autodiff (reference of the tests)."""
        column, row, per_atom = _pair_axes(positions)
        r2 = sum(d * d for d in _differences(positions))
        born = self._born_radii(r2, column, row, per_atom)
        bb = born[:, None] * born[None, :]
        f2 = r2 + bb * jnp.exp(-0.25 * r2 / bb)
        polar = 0.5 * self.prefactor * jnp.sum(column(self.charge) * row(self.charge) * jax.lax.rsqrt(f2),
                                               axis=(0, 1))
        nonpolar = self.surface * jnp.sum(per_atom((self.radius + self.probe_radius) ** 2)
                                          * (per_atom(self.radius) / born) ** 6, axis=0)
        return polar + nonpolar


def _pair_energy_and_gradient(positions: Float[Array, "n_atoms 3 *batch"], terms: tuple
                              ) -> tuple[Float[Array, "*batch"], Float[Array, "n_atoms 3 *batch"]]:
    """Summed energy and gradient of pair terms (modules with ``energy_and_pair_weight``).

    The differences x_i - x_j and r² are computed once for all of them, their pair weights W_ij
    added, and the gradient ``Σ_j W_ij (x_i - x_j)`` reduced once: for a system with both
    ``Nonbonded`` and ``OBCGeneralizedBorn`` this is faster than two separate passes (measured,
    ala2 OBC2, batch 1024, medians of 40 interleaved calls: float64 12.7 → 11.6 ms, float32
    6.8 → 6.6 ms).
    """
    difference = _differences(positions)  # x_i - x_j
    r2 = sum(d * d for d in difference)
    energies, weights = zip(*(term.energy_and_pair_weight(r2) for term in terms))
    weight = sum(weights)
    return sum(energies), jnp.stack([jnp.sum(weight * d, axis=1) for d in difference], axis=1)


@eqx.filter_custom_jvp
def _pair_energy(positions, terms):
    """Summed energy of pair terms whose derivative is their analytic gradient (not autodiff)."""
    return _pair_energy_and_gradient(positions, terms)[0]


@_pair_energy.def_jvp
def _pair_energy_jvp(primals, tangents):
    positions, terms = primals
    positions_tangent, terms_tangent = tangents
    if jax.tree.leaves(terms_tangent):
        raise NotImplementedError(f"derivatives of the {', '.join(type(t).__name__ for t in terms)} energy "
                                  "with respect to its parameters")
    energy, gradient = _pair_energy_and_gradient(positions, terms)
    if positions_tangent is None:
        return energy, jnp.zeros_like(energy)
    return energy, jnp.sum(gradient * positions_tangent, axis=(0, 1))


class PotentialEnergy(eqx.Module):
    """Total potential energy of an OpenMM system: a sum of term modules.

    Attributes:
        terms: One module per supported OpenMM force, in the system's force order.
        force_indices: ``system.getForce(i)`` index each term came from (static).
        n_atoms: Number of particles (static).
        dtype: Floating dtype of every parameter and of the computation (static).
    """

    terms: tuple[eqx.Module, ...]
    force_indices: tuple[int, ...] = eqx.field(static=True)
    n_atoms: int = eqx.field(static=True)
    dtype: np.dtype = eqx.field(static=True)

    def __call__(self, positions: Float[Array, "n_atoms 3"]) -> Float[Array, ""]:
        """Potential energy, kJ/mol, of positions in nm of shape ``(n_atoms, 3)``."""
        positions = jnp.asarray(positions, self.dtype)
        if positions.shape != (self.n_atoms, 3):
            raise ValueError(f"positions of shape {positions.shape}, expected ({self.n_atoms}, 3); "
                             "use energy_and_forces (or vmap) for batches")
        return self.batch_last(positions)

    def batch_last(self, positions: Float[Array, "n_atoms 3 *batch"]) -> Float[Array, "*batch"]:
        """Energies, kJ/mol, of positions laid out ``(n_atoms, 3, *batch)`` (batch axes last, nm).

        The layout of the fast batched path (see "Layout" above); :func:`energy_and_forces`
        transposes to it.
        """
        positions = jnp.asarray(positions, self.dtype)
        is_pair = [isinstance(term, (Nonbonded, OBCGeneralizedBorn)) for term in self.terms]
        pair_terms = tuple(term for term, pair in zip(self.terms, is_pair) if pair)
        energy = sum((term(positions) for term, pair in zip(self.terms, is_pair) if not pair),
                     jnp.zeros(positions.shape[2:], self.dtype))
        return energy + _pair_energy(positions, pair_terms) if pair_terms else energy

    @classmethod
    def from_system(cls, system, *, dtype=jnp.float64) -> PotentialEnergy:
        """Read the parameters of ``system`` (an ``openmm.System``).

        Args:
            system: Non-periodic system without virtual sites whose forces are all supported
                (see the module docstring).
            dtype: ``jnp.float64`` (needs JAX's x64 mode, see the module docstring) or
                ``jnp.float32``.

        Raises:
            UnsupportedForceError: naming the first force (or setting) that is not supported.
            RuntimeError: float64 asked for while JAX's x64 mode is off.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype {dtype}: expected float32 or float64")
        if jax.dtypes.canonicalize_dtype(dtype) != dtype:
            raise RuntimeError(
                "float64 energies need JAX's 64-bit mode: call "
                "jax.config.update('jax_enable_x64', True) first, or build and call the energy "
                "inside `with jax.enable_x64(True):`; or pass dtype=jnp.float32")
        if system.usesPeriodicBoundaryConditions():
            raise UnsupportedForceError("periodic systems are not supported (solute only: vacuum, OBC1, OBC2)")
        n_atoms = system.getNumParticles()
        virtual = [i for i in range(n_atoms) if system.isVirtualSite(i)]
        if virtual:
            raise UnsupportedForceError(f"virtual sites are not supported (particles {virtual[:5]}…)")
        terms, indices = [], []
        for index, force in enumerate(system.getForces()):
            term = _convert(force, n_atoms, dtype)
            if term is not None:
                terms.append(term)
                indices.append(index)
        return cls(tuple(terms), tuple(indices), n_atoms, dtype)


@eqx.filter_jit
def energy_and_forces(energy: PotentialEnergy, positions: Float[Array, "*batch n_atoms 3"]
                      ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch n_atoms 3"]]:
    """Energy (kJ/mol) and forces ``-∂E/∂x`` (kJ/mol/nm) of one configuration or a batch.

    Configurations are independent, so the forces of a batch are minus the gradient of the summed
    energies; they are computed in the batch-last layout (:meth:`PotentialEnergy.batch_last`),
    several times faster on CPU than a ``vmap`` over single configurations. A batch larger than
    one chunk (:func:`_chunk_size`: pair arrays of at most :data:`CHUNK_BYTES`) is evaluated chunk
    after chunk with ``lax.map``, the last chunk padded; results do not depend on the chunking.
    The function may also be vmapped itself.

    Args:
        energy: A :class:`PotentialEnergy`.
        positions: nm, shape ``(n_atoms, 3)`` or ``(*batch, n_atoms, 3)``.

    Returns:
        ``(E, F)`` of shapes ``batch`` and ``(*batch, n_atoms, 3)``, in ``energy.dtype``.
    """
    positions = jnp.asarray(positions, energy.dtype)
    batch_shape = positions.shape[:-2]
    flat = positions.reshape(-1, *positions.shape[-2:])  # (batch, n, 3)
    size = flat.shape[0]
    chunk = _chunk_size(energy.n_atoms, energy.dtype)
    if size <= chunk:
        energies, forces = _energy_and_forces_batch_last(energy, flat)
    else:  # chunks of `chunk` configurations, one after the other (the last one padded)
        count = -(-size // chunk)
        padded = jnp.pad(flat, ((0, count * chunk - size), (0, 0), (0, 0)), mode="edge")
        energies, forces = jax.lax.map(lambda x: _energy_and_forces_batch_last(energy, x),
                                       padded.reshape(count, chunk, *flat.shape[1:]))
        energies, forces = energies.reshape(-1)[:size], forces.reshape(-1, *flat.shape[1:])[:size]
    return energies.reshape(batch_shape), forces.reshape(positions.shape)


#: Working-set target of one chunk of :func:`energy_and_forces`: bytes of one ``(n, n, chunk)`` pair
#: array. Measured (ala2, 1024 configurations, 2 cores) from 64 KiB to unchunked: 512 KiB was
#: fastest in float64 (chunks of 128: 11.4 ms; 256 KiB 12.9, 1 MiB 12.5, unchunked 40-50 ms) and
#: float32 (256: 5.8 ms; 256 KiB 6.5, 1 MiB 7.3, unchunked 17-20 ms); an unrolled Python loop
#: over chunks was slower than ``lax.map``.
CHUNK_BYTES = 2**19


def _chunk_size(n_atoms: int, dtype: np.dtype) -> int:
    """Configurations per chunk: the largest power of two whose ``(n, n, chunk)`` pair array fits
    :data:`CHUNK_BYTES` (at least 1)."""
    fits = CHUNK_BYTES // (n_atoms * n_atoms * np.dtype(dtype).itemsize)
    return 1 << max(int(fits).bit_length() - 1, 0)


def _energy_and_forces_batch_last(energy: PotentialEnergy, positions: Array) -> tuple[Array, Array]:
    """Energies ``(b,)`` and forces ``(b, n, 3)`` of positions ``(b, n, 3)``, in the batch-last layout."""

    def total(x):
        energies = energy.batch_last(x)
        return jnp.sum(energies), energies

    (_, energies), gradient = jax.value_and_grad(total, has_aux=True)(jnp.transpose(positions, (1, 2, 0)))
    return energies, -jnp.transpose(gradient, (2, 0, 1))


# --- conversion from OpenMM -------------------------------------------------------------------

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
#: amber's HCT descreening integral (``customgbforces``), character for character.
_HCT_INTEGRAL = ("select(step(r+sr2-or1),0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))"
                 "+0.5*log(L/U)/r),0);U=r+sr2;L=max(or1,D);D=abs(r-sr2)")
_BORN_RADIUS = re.compile(
    r"1/\(1/or-tanh\((?:" + _NUM + r"\*)?psi(?:-" + _NUM + r"\*psi\^2)?\+" + _NUM
    + r"\*psi\^3\)/radius\);psi=I\*or;radius=or\+offset;offset=" + _NUM)
_PARAMS = r";solventDielectric=" + _NUM + r";soluteDielectric=" + _NUM + r";kappa=0;offset=" + _NUM
_SELF_TERM = re.compile(r"-0\.5\*" + _NUM + r"\*\(1/soluteDielectric-1/solventDielectric\)"
                        r"\*charge\^2/B" + _PARAMS)
_SURFACE_TERM = re.compile(_NUM + r"\*\(radius\+" + _NUM + r"\)\^2\*\(radius/B\)\^6;radius=or\+offset"
                           + _PARAMS)
_PAIR_TERM = re.compile(r"-" + _NUM + r"\*\(1/soluteDielectric-1/solventDielectric\)\*charge1\*charge2/f;"
                        r"f=sqrt\(r\^2\+B1\*B2\*exp\(-r\^2/\(4\*B1\*B2\)\)\)" + _PARAMS)


def _convert(force, n_atoms: int, dtype: np.dtype):
    """The term module of one OpenMM force, ``None`` for forces without energy."""
    import openmm

    def array(values):
        return jnp.asarray(np.asarray(values, dtype=np.float64), dtype)

    def indices(values, width):
        return jnp.asarray(np.asarray(values, dtype=np.int32).reshape(-1, width))

    name = type(force).__name__
    if isinstance(force, openmm.CMMotionRemover):
        return None
    if isinstance(force, openmm.HarmonicBondForce):
        rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
        return HarmonicBonds(indices([r[:2] for r in rows], 2),
                             array([_value(r[2]) for r in rows]),
                             array([_value(r[3]) for r in rows]))
    if isinstance(force, openmm.HarmonicAngleForce):
        rows = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
        return HarmonicAngles(indices([r[:3] for r in rows], 3), array([_value(r[3]) for r in rows]),
                              array([_value(r[4]) for r in rows]))
    if isinstance(force, openmm.PeriodicTorsionForce):
        return _torsions(force, array, indices)
    if isinstance(force, openmm.NonbondedForce):
        return _nonbonded(force, n_atoms, array)
    if isinstance(force, openmm.GBSAOBCForce):
        if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
            raise UnsupportedForceError("GBSAOBCForce with a cutoff: only NoCutoff is supported")
        params = np.array([[_value(v) for v in force.getParticleParameters(i)] for i in range(n_atoms)])
        charge, radius, scale = params.T
        offset_radius = radius - OBC_DIELECTRIC_OFFSET
        solute, solvent = force.getSoluteDielectric(), force.getSolventDielectric()
        prefactor = -ONE_4PI_EPS0 * (1 / solute - 1 / solvent) if solute and solvent else 0.0
        return OBCGeneralizedBorn(array(charge), array(offset_radius), array(scale * offset_radius),
                                  array(radius), alpha=1.0, beta=0.8, gamma=4.85, prefactor=prefactor,
                                  surface=4 * np.pi * _value(force.getSurfaceAreaEnergy()),
                                  probe_radius=OBC_PROBE_RADIUS, engulfed_correction=True)
    if isinstance(force, openmm.CustomGBForce):
        return _amber_obc(force, n_atoms, array)
    raise UnsupportedForceError(f"{name} is not supported by cgbench.energy (supported: HarmonicBondForce, "
                                "HarmonicAngleForce, PeriodicTorsionForce, NonbondedForce, GBSAOBCForce, "
                                "amber's OBC CustomGBForce; CMMotionRemover is ignored)")


def _value(quantity) -> float:
    """A float from an OpenMM ``Quantity`` in its (MD) unit, or from a plain number."""
    return float(getattr(quantity, "_value", quantity))


def _torsions(force, array, indices) -> PeriodicTorsions:
    """Group the torsion terms by their four atoms into Fourier coefficients (see the class)."""
    dihedrals: dict[tuple[int, ...], int] = {}
    rows = []
    for t in range(force.getNumTorsions()):
        *atoms, n, phase, k = force.getTorsionParameters(t)
        rows.append((dihedrals.setdefault(tuple(atoms), len(dihedrals)), int(n), _value(phase), _value(k)))
    max_n = max((n for _, n, _, _ in rows), default=0)
    cos_coefficient = np.zeros((len(dihedrals), max(max_n, 1)))
    sin_coefficient = np.zeros_like(cos_coefficient)
    constant = 0.0
    for d, n, phase, k in rows:
        constant += k
        if n == 0:  # k (1 + cos(-φ₀)): no angle dependence
            constant += k * np.cos(phase)
        else:
            cos_coefficient[d, n - 1] += k * np.cos(phase)
            sin_coefficient[d, n - 1] += k * np.sin(phase)
    return PeriodicTorsions(indices(list(dihedrals), 4), array(cos_coefficient), array(sin_coefficient),
                            array(constant))


def _nonbonded(force, n_atoms, array) -> Nonbonded:
    import openmm

    if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
        raise UnsupportedForceError("NonbondedForce with a cutoff or periodic method: only NoCutoff is supported")
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise UnsupportedForceError("NonbondedForce with parameter offsets is not supported")
    params = np.array([[_value(v) for v in force.getParticleParameters(i)] for i in range(n_atoms)])
    charge, sigma, epsilon = params.T
    qq = np.outer(charge, charge)
    sig = 0.5 * (sigma[:, None] + sigma)
    eps = np.sqrt(np.outer(epsilon, epsilon))
    for e in range(force.getNumExceptions()):
        a, b, q, s, ep = force.getExceptionParameters(e)
        qq[a, b] = qq[b, a] = _value(q)
        sig[a, b] = sig[b, a] = _value(s)
        eps[a, b] = eps[b, a] = _value(ep)
    np.fill_diagonal(qq, 0.0)
    np.fill_diagonal(eps, 0.0)
    return Nonbonded(array(ONE_4PI_EPS0 * qq), array(sig**2), array(4.0 * eps))


def _amber_obc(force, n_atoms, array) -> OBCGeneralizedBorn:
    """amber's OBC1/OBC2 ``CustomGBForce``, recognised by its expressions; anything else raises."""
    import openmm

    def refuse(why):
        raise UnsupportedForceError(f"CustomGBForce is supported only in amber's OBC form "
                                    f"(openmm.app.internal.customgbforces.GBSAOBC1Force/GBSAOBC2Force, "
                                    f"NoCutoff, no salt): {why}")

    def squeeze(text):
        return "".join(text.split())

    if force.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
        refuse("it uses a cutoff")
    names = [force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())]
    if names != ["charge", "or", "sr"]:
        refuse(f"per-particle parameters {names}, expected ['charge', 'or', 'sr']")
    if force.getNumGlobalParameters() or force.getNumTabulatedFunctions() or force.getNumFunctions():
        refuse("it has global parameters or tabulated functions (GBn/GBn2?)")
    values = [force.getComputedValueParameters(i) for i in range(force.getNumComputedValues())]
    terms = [force.getEnergyTermParameters(i) for i in range(force.getNumEnergyTerms())]
    pair, single = openmm.CustomGBForce.ParticlePairNoExclusions, openmm.CustomGBForce.SingleParticle
    if [(n, t) for n, _, t in values] != [("I", pair), ("B", single)] or squeeze(values[0][1]) != _HCT_INTEGRAL:
        refuse("its computed values are not amber's HCT integral I and OBC Born radius B")
    born = _BORN_RADIUS.fullmatch(squeeze(values[1][1]))
    if born is None:
        refuse(f"Born radius expression {values[1][1]!r} not recognised")
    alpha, beta, gamma, offset = (float(v) if v is not None else d for v, d in
                                  zip(born.groups(), (1.0, 0.0, None, None)))
    matched = {}
    for expression, kind in terms:
        for label, pattern, want in (("self", _SELF_TERM, single), ("surface", _SURFACE_TERM, single),
                                     ("pair", _PAIR_TERM, pair)):
            m = pattern.fullmatch(squeeze(expression))
            if m and kind == want and label not in matched:
                matched[label] = [float(v) for v in m.groups()]
                break
        else:
            refuse(f"energy term {expression!r} not recognised")
    if set(matched) not in ({"self", "pair"}, {"self", "pair", "surface"}):
        refuse(f"energy terms {sorted(matched)}: expected self, pair and optionally surface")
    coulomb, solvent, solute, _ = matched["self"]
    if matched["pair"] != matched["self"]:
        refuse("self and pair terms disagree on constants")
    surface, probe = matched["surface"][:2] if "surface" in matched else (0.0, OBC_PROBE_RADIUS)
    if "surface" in matched and matched["surface"][2:4] != [solvent, solute]:
        refuse("surface term disagrees on dielectrics")
    params = np.array([force.getParticleParameters(i) for i in range(n_atoms)], dtype=np.float64)
    charge, offset_radius, scaled_radius = params.T
    # The energy terms' offset (0.008999999999999999) is what their `radius` uses in the SA term;
    # the Born-radius expression carries its own (0.009).
    sa_offset = matched["surface"][4] if "surface" in matched else offset
    if abs(sa_offset - offset) > 1e-12:
        refuse("Born radius and surface term use different offsets")
    return OBCGeneralizedBorn(array(charge), array(offset_radius), array(scaled_radius),
                              array(offset_radius + offset), alpha=alpha, beta=beta, gamma=gamma,
                              prefactor=-coulomb * (1 / solute - 1 / solvent), surface=surface,
                              probe_radius=probe, engulfed_correction=False)
