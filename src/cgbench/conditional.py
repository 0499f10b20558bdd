"""Mean force on z from short conditional chains of the fast coordinates x (ECG §2.2).

For each z of a batch, a chain samples x ~ p_β(x | z) ∝ exp(-β U(z, x)) with z held fixed
(blackjax MALA — Metropolis-adjusted Langevin — or HMC, vmapped over the batch). The mean
force is then estimated as

    F̄(z) = −E_{p_β(x|z)}[∇_z U(z, x)] ≈ −(1/S) Σ_s ∇_z U(z, x_s)     (kT at β = 1 per unit z).

Step sizes are given at β = 1 and rescaled with temperature so that a chain's step, measured
in thermal lengths, is the same at every β: MALA uses step_size/β (the Langevin time step dt
turns into blackjax's ε = dt/β for log-density −βU), HMC uses step_size/√β.

Mass matrix. ``inverse_mass`` (dim_x,) preconditions HMC (blackjax's inverse mass matrix) and the
minimisation (x ← x − s·M⁻¹∇U); None is the identity. For molecules M is the atoms' masses, which
makes HMC molecular dynamics with a Metropolis test (see :mod:`cgbench.peptide_ecg` for the
conversion of fs to these units). MALA ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import jax.random as jr


@dataclass(frozen=True)
class ConditionalSampler:
    """Settings of the conditional chains (the ``conditional_sampler:`` config block).

    Attributes:
        kind: ``"mala"`` (Langevin) or ``"hmc"``.
        step_size: Langevin time step or HMC leapfrog step at β = 1.
        leapfrog_steps: HMC integration steps per proposal (ignored by MALA).
        minimisation_steps: gradient-descent steps on U(z, ·) from x = 0 before sampling.
        minimisation_step_size: their step size.
        burn_in: chain steps discarded after the minimisation.
        samples: states kept per chain.
        thin: chain steps between kept states.
        minimisation_max_step: largest change of any coordinate in one minimisation step
            (None: no limit). Molecules need one: overlapping atoms of a flow sample have forces
            that would throw the fast atoms arbitrarily far in a single step.
    """

    kind: str
    step_size: float
    leapfrog_steps: int
    minimisation_steps: int
    minimisation_step_size: float
    burn_in: int
    samples: int
    thin: int
    minimisation_max_step: float | None = None

    def energy_evaluations(self, batch: int) -> int:
        """Evaluations of U or ∇U spent on one mean-force estimate for ``batch`` values of z."""
        per_step = 1 if self.kind == "mala" else self.leapfrog_steps
        chain = self.minimisation_steps + (self.burn_in + self.samples * self.thin) * per_step
        return batch * (chain + self.samples)


class MeanForce(NamedTuple):
    """Output of :func:`mean_force` for a batch of N values of z, with S kept states each.

    Attributes:
        mean_force: (N, dim_z) estimate of F̄(z).
        energies: (N, S) U(z, x_s) along the chains (used by adaptive tempering).
        half_difference: scalar, mean over z of |F̄_first half − F̄_second half| divided by
            the mean |F̄|: a convergence check of the estimate (small is good).
        acceptance: scalar, mean acceptance probability of the chains.
    """

    mean_force: jax.Array
    energies: jax.Array
    half_difference: jax.Array
    acceptance: jax.Array


def _kernel(sampler: ConditionalSampler, logdensity, beta, inverse_mass):
    if sampler.kind == "mala":
        algorithm = blackjax.mala(logdensity, step_size=sampler.step_size / beta)
    elif sampler.kind == "hmc":
        algorithm = blackjax.hmc(logdensity, step_size=sampler.step_size / jnp.sqrt(beta),
                                 inverse_mass_matrix=inverse_mass,
                                 num_integration_steps=sampler.leapfrog_steps)
    else:
        raise ValueError(f"unknown conditional sampler kind {sampler.kind!r}")
    return algorithm


def sample_conditional(energy, z, beta, dim_x: int, sampler: ConditionalSampler, *, key,
                       inverse_mass=None):
    """Chain states x_s ~ p_β(x | z) for one z.

    Args:
        energy: U(z, x) → scalar (kT at β = 1).
        z: (dim_z,), held fixed.
        beta: inverse temperature (scalar, may be traced).
        dim_x: size of x.
        sampler: chain settings.
        key: PRNG key.
        inverse_mass: (dim_x,) diagonal inverse mass matrix, or None for ones.

    Returns:
        x of shape (samples, dim_x) and the mean acceptance probability.
    """
    x0 = jnp.zeros(dim_x, dtype=z.dtype)
    inverse_mass = jnp.ones(dim_x, z.dtype) if inverse_mass is None else jnp.asarray(inverse_mass, z.dtype)
    grad_x = jax.grad(energy, argnums=1)

    def descend(x, _):
        step = sampler.minimisation_step_size * inverse_mass * grad_x(z, x)
        if sampler.minimisation_max_step is not None:
            step = jnp.clip(jnp.nan_to_num(step), -sampler.minimisation_max_step, sampler.minimisation_max_step)
        return x - step, None

    x0, _ = jax.lax.scan(descend, x0, None, length=sampler.minimisation_steps)

    def logdensity(x):
        return -beta * energy(z, x)

    algorithm = _kernel(sampler, logdensity, beta, inverse_mass)
    state = algorithm.init(x0)

    def one_step(state, key):
        state, info = algorithm.step(key, state)
        return state, (state.position, info.acceptance_rate)

    burn_key, sample_key = jr.split(key)
    state, _ = jax.lax.scan(one_step, state, jr.split(burn_key, sampler.burn_in))
    _, (positions, acceptance) = jax.lax.scan(one_step, state,
                                              jr.split(sample_key, sampler.samples * sampler.thin))
    kept = positions[sampler.thin - 1 :: sampler.thin]
    return kept, acceptance.mean()


def mean_force(energy, z, beta, dim_x: int, sampler: ConditionalSampler, *, key,
               inverse_mass=None) -> MeanForce:
    """Batched estimate of the mean force F̄(z) (see module docstring).

    Args:
        energy: U(z, x) → scalar for one configuration.
        z: (N, dim_z) batch of slow coordinates, held fixed.
        beta: inverse temperature.
        dim_x: size of x.
        sampler: chain settings.
        key: PRNG key.
        inverse_mass: (dim_x,) diagonal inverse mass matrix, or None for ones.
    """
    keys = jr.split(key, z.shape[0])
    grad_z = jax.grad(energy, argnums=0)

    def one(z_i, key_i):
        xs, acceptance = sample_conditional(energy, z_i, beta, dim_x, sampler, key=key_i,
                                            inverse_mass=inverse_mass)
        forces = -jax.vmap(grad_z, in_axes=(None, 0))(z_i, xs)  # (S, dim_z)
        energies = jax.vmap(energy, in_axes=(None, 0))(z_i, xs)
        return forces, energies, acceptance

    forces, energies, acceptance = jax.vmap(one)(z, keys)
    half = sampler.samples // 2
    first, second = forces[:, :half].mean(1), forces[:, half:].mean(1)
    estimate = forces.mean(1)
    scale = jnp.mean(jnp.linalg.norm(estimate, axis=-1)) + 1e-12
    half_difference = jnp.mean(jnp.linalg.norm(first - second, axis=-1)) / scale
    return MeanForce(estimate, energies, half_difference, acceptance.mean())
