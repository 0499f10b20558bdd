"""Batched Langevin dynamics in JAX: BAOAB over any force function, OpenMM units.

:func:`baoab_step` advances a batch of ``B`` independent replicas of an ``n``-particle system by
one BAOAB step (Leimkuhler & Matthews, Proc. R. Soc. A 472: 20160138): velocity half-kick (B),
position half-drift (A), Ornstein–Uhlenbeck exchange with the bath (O, ``c = exp(-γ dt)``), A, B.
This is the scheme of OpenMM's ``LangevinMiddleIntegrator``, which merges the two half-kicks into
one leapfrog kick: the *trajectories* are the same; OpenMM's velocities are the ones just after
O (:func:`middle_velocities`), ours are on-step (after the final B). :func:`run_langevin` runs
many steps under ``jax.jit`` (``lax.scan`` over reports, a ``fori_loop`` over the steps between
reports), saves positions, forces, potential and kinetic energy at each report, and returns the
final state and key, so a run continued from them equals, bit for bit, one run of the summed
length.

The force function is anything ``forces_fn(positions (B, n, 3)) -> (energy (B,), forces (B, n, 3))``:
the project's all-atom energy (``eqx.Partial(cgbench.energy.energy_and_forces, energy)``), a
learned CG potential, a conditional energy with some atoms held fixed (``fixed`` mask: those
atoms' positions and velocities never change).

Why hand-written: no maintained JAX library offers batched BAOAB over an arbitrary force function
in these units. blackjax 1.7.1 (installed) has overdamped Langevin (MALA) and the isokinetic
integrators of MCLMC, no underdamped Langevin with friction; jax-md's ``simulate.nvt_langevin``
is BAOAB for one system, but jax-md is not a dependency (see :mod:`cgbench.energy`: 40 extra
packages for a loader in kcal/mol) and has no fixed-atom mask. The integrator is twenty lines;
what makes it trustworthy is ``tests/test_langevin.py``: 3-D harmonic oscillators against the
exact stationary moments of BAOAB (⟨|x|²⟩ = 3kT/k at any stable dt; on-step ⟨|v|²⟩ =
3kT/m·(1 − (ω dt)²/4), O(dt²) biased; middle velocities exact), bit-for-bit continuation and
fixed atoms, and alanine dipeptide in OBC2: mean potential energy against OpenMM's
LangevinMiddleIntegrator, kinetic temperature against 300 K. (ala2 OBC2, 1 fs, 32 replicas ×
40 ps: middle-velocity kinetic temperature 300.4 ± 1.2 K, on-step 293.8 K, the −2 % BAOAB bias
from the stiff modes.)

Units: positions nm, velocities nm/ps, time ps, forces kJ/mol/nm, energies kJ/mol, masses amu
(g/mol; 1 kJ/mol = 1 amu nm²/ps², so F/m is in nm/ps²), friction 1/ps, temperature K; kT is
in kJ/mol (``kT = GAS_CONSTANT * T``).

Speed (ala2 all-atom, 22 atoms, 1 fs, one report per 100 steps; medians of 5 × 100 steps,
measured by hand on the 2-core CPU machine while another job kept it at a load average of 5-7,
so pessimistic and noisy by ~20 %; ``benchmarks/test_langevin_speed.py`` repeats the float32
rows). ns/day per replica / aggregate (B × per replica):

    solvent  dtype     B = 16        B = 64        B = 256
    OBC2     float32   108 / 1730    46 / 2930     12.1 / 3100
    OBC2     float64    83 / 1320    19 / 1220      5.6 / 1440
    OBC1     float32   131 / 2090    61 / 3910     12.1 / 3100
    OBC1     float64    82 / 1300    32 / 2070      6.2 / 1600

OpenMM on this machine, one replica: OBC2 ≈ 1600 ns/day (Reference), OBC1 ≈ 215 ns/day (CPU
platform, 1 thread). In OBC2 a float32 batch matches OpenMM Reference in aggregate at B = 16
and is ≈ 2× faster at B ≥ 64 (float64 stays at 0.8-0.9×); in OBC1 (no native OpenMM force)
the batch is 6-18× faster in aggregate. One JAX replica alone is 15-20× slower than one OpenMM
Reference replica in OBC2: worth it for many short replicas, not for one long trajectory. The
step is the force evaluation (:func:`cgbench.energy.energy_and_forces`) plus the Gaussian noise
(threefry; ≈ 0.06 ms per step at B = 16, ≈ 0.85 ms at B = 256, ~12 % of the step there);
compiling one (system, dtype, B, steps) takes 12-20 s, so reuse the same call shape (continue
from the returned state) rather than varying ``steps``.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from cgbench.units import GAS_CONSTANT


class LangevinState(NamedTuple):
    """Where a batch of ``B`` replicas of ``n`` particles is, on step.

    Attributes:
        positions: nm, shape ``(B, n, 3)``.
        velocities: On-step velocities, nm/ps, shape ``(B, n, 3)``.
        forces: Forces at ``positions``, kJ/mol/nm, shape ``(B, n, 3)``.
        potential_energy: At ``positions``, kJ/mol, shape ``(B,)``.
    """

    positions: Float[Array, "B n 3"]
    velocities: Float[Array, "B n 3"]
    forces: Float[Array, "B n 3"]
    potential_energy: Float[Array, " B"]


def _per_replica(value, dtype) -> Array:
    """A scalar or per-replica ``(B,)`` value (kT, say) broadcastable against ``(B, n, 3)``."""
    value = jnp.asarray(value, dtype)
    return value.reshape(value.shape + (1, 1)) if value.ndim == 1 else value


def _inverse_masses(masses, dtype) -> Array:
    """``1/m``, 1/amu, shape ``(n, 1)``."""
    return 1.0 / jnp.asarray(masses, dtype)[:, None]


def masses_from_system(system) -> np.ndarray:
    """Particle masses of an ``openmm.System``, amu, shape ``(n,)``."""
    import openmm.unit as unit

    return np.array([system.getParticleMass(i).value_in_unit(unit.dalton)
                     for i in range(system.getNumParticles())])


def maxwell_boltzmann(shape: tuple[int, ...], *, kT, masses: Float[Array, " n"], key: PRNGKeyArray,
                      dtype=jnp.float32, fixed: Bool[Array, " n"] | None = None) -> Float[Array, "B n 3"]:
    """Velocities, nm/ps, of shape ``(B, n, 3)`` drawn from N(0, kT/m) per component.

    Args:
        shape: ``(B, n, 3)``.
        kT: kJ/mol, scalar or per replica ``(B,)``.
        masses: amu, shape ``(n,)``.
        key: PRNG key.
        dtype: Of the result.
        fixed: Optional ``(n,)`` mask; those atoms get velocity 0.
    """
    v = jnp.sqrt(_per_replica(kT, dtype) * _inverse_masses(masses, dtype)) * jax.random.normal(key, shape, dtype)
    return v if fixed is None else jnp.where(jnp.asarray(fixed)[:, None], jnp.zeros((), dtype), v)


def kinetic_energy(velocities: Float[Array, "*batch n 3"], masses: Float[Array, " n"]) -> Float[Array, "*batch"]:
    """``Σ ½ m |v|²``, kJ/mol, of velocities in nm/ps and masses in amu."""
    return 0.5 * jnp.sum(jnp.asarray(masses, velocities.dtype)[:, None] * velocities**2, axis=(-2, -1))


def middle_velocities(state: LangevinState, *, dt: float, masses: Float[Array, " n"],
                      fixed: Bool[Array, " n"] | None = None) -> Float[Array, "B n 3"]:
    """The velocities just after the O part of the last step, nm/ps, shape ``(B, n, 3)``.

    ``v − (dt/2) F/m``: undoes the final half-kick. These are the velocities OpenMM's
    ``LangevinMiddleIntegrator`` reports; their kinetic energy is exact for harmonic forces at any
    stable ``dt`` and O(dt²)-accurate in general, the on-step velocities' is biased by
    ``−(ω dt)²/4`` per harmonic mode. Atoms in the optional ``fixed`` mask ``(n,)`` keep their
    (unchanged) velocity.
    """
    v = state.velocities - 0.5 * dt * state.forces * _inverse_masses(masses, state.forces.dtype)
    return v if fixed is None else jnp.where(jnp.asarray(fixed)[:, None], state.velocities, v)


def init_state(forces_fn, positions: Float[Array, "B n 3"], velocities: Float[Array, "B n 3"]) -> LangevinState:
    """A :class:`LangevinState` at ``positions`` (nm) with ``velocities`` (nm/ps): evaluates the forces.

    The state takes the dtype of ``positions``; energies and forces are cast to it.
    """
    positions = jnp.asarray(positions)
    energy, forces = forces_fn(positions)
    return LangevinState(positions, jnp.asarray(velocities, positions.dtype), forces.astype(positions.dtype),
                         energy.astype(positions.dtype))


def baoab_step(forces_fn, state: LangevinState, *, dt: float, friction: float, kT, masses: Float[Array, " n"],
               key: PRNGKeyArray, fixed: Bool[Array, " n"] | None = None) -> LangevinState:
    """One BAOAB step of every replica (OpenMM ``LangevinMiddleIntegrator``'s scheme).

    ``v += dt/2 F/m``; ``x += dt/2 v``; ``v = c v + sqrt((1 − c²) kT/m) ξ`` with
    ``c = exp(−γ dt)``, ξ ~ N(0, 1); ``x += dt/2 v``; new forces; ``v += dt/2 F/m``. One force
    evaluation per step (the forces of ``state`` are reused). ``friction = 0`` is velocity Verlet.

    Args:
        forces_fn: ``positions (B, n, 3) nm -> (energy (B,) kJ/mol, forces (B, n, 3) kJ/mol/nm)``.
        state: Current :class:`LangevinState` (its ``forces`` must be those at its positions).
        dt: Time step, ps.
        friction: Collision rate γ, 1/ps.
        kT: Bath temperature times the molar gas constant, kJ/mol; scalar or per replica ``(B,)``.
        masses: amu, shape ``(n,)``.
        key: PRNG key of this step's noise.
        fixed: Optional ``(n,)`` bool mask of atoms whose positions and velocities are returned
            unchanged (bit for bit); the others feel their forces as usual.

    Returns:
        The :class:`LangevinState` one step later, in the dtype of ``state.positions``.
    """
    dtype = state.positions.dtype
    inverse_mass = _inverse_masses(masses, dtype)
    c = jnp.exp(jnp.asarray(-friction * dt, dtype))
    noise_scale = jnp.sqrt((1 - c * c) * _per_replica(kT, dtype) * inverse_mass)
    v = state.velocities + (0.5 * dt) * state.forces * inverse_mass                    # B
    x = state.positions + (0.5 * dt) * v                                               # A
    v = c * v + noise_scale * jax.random.normal(key, v.shape, dtype)                   # O
    x = x + (0.5 * dt) * v                                                             # A
    if fixed is not None:
        fixed = jnp.asarray(fixed)[:, None]
        x = jnp.where(fixed, state.positions, x)
    energy, forces = forces_fn(x)
    forces = forces.astype(dtype)
    v = v + (0.5 * dt) * forces * inverse_mass                                         # B
    if fixed is not None:
        v = jnp.where(fixed, state.velocities, v)
    return LangevinState(x, v, forces, energy.astype(dtype))


def run_langevin(forces_fn, positions: Float[Array, "B n 3"] | LangevinState, *, steps: int, report_interval: int,
                 dt: float, friction: float, temperature, masses: Float[Array, " n"], key: PRNGKeyArray,
                 velocities: Float[Array, "B n 3"] | None = None, fixed: Bool[Array, " n"] | None = None) -> dict:
    """``steps`` BAOAB steps of a batch of replicas, saving every ``report_interval`` steps (jitted).

    Args:
        forces_fn: ``positions (B, n, 3) nm -> (energy (B,) kJ/mol, forces (B, n, 3) kJ/mol/nm)``.
            Jitted as a static argument: pass the same object again to reuse the compilation;
            an equinox Module (``eqx.Partial(energy_and_forces, energy)``) has its arrays traced.
        positions: Start, nm, ``(B, n, 3)``; the state takes their dtype. Or a
            :class:`LangevinState` (``result["state"]`` of an earlier run) to continue from as it
            is, forces included: with the earlier run's ``result["key"]`` the continuation equals
            one longer run bit for bit.
        steps: Number of steps, a multiple of ``report_interval``.
        report_interval: Steps between saved frames (the start is not saved).
        dt: Time step, ps.
        friction: Collision rate, 1/ps.
        temperature: Bath temperature, K; scalar or per replica ``(B,)`` (kT = GAS_CONSTANT · T kJ/mol).
        masses: amu, shape ``(n,)``.
        key: PRNG key (split once per step; first split for the velocities if they are drawn).
        velocities: nm/ps, ``(B, n, 3)``; drawn from Maxwell–Boltzmann at ``temperature`` if not
            given (fixed atoms get 0). Not with a state.
        fixed: Optional ``(n,)`` bool mask of atoms whose positions and velocities never change.

    Returns:
        A dict with, per report (``n_reports = steps // report_interval``): ``positions``
        ``(n_reports, B, n, 3)`` nm, ``velocities`` (on-step) ``(n_reports, B, n, 3)`` nm/ps,
        ``forces`` ``(n_reports, B, n, 3)`` kJ/mol/nm, ``potential_energy`` ``(n_reports, B)``
        kJ/mol, ``kinetic_energy`` ``(n_reports, B)`` kJ/mol of the :func:`middle_velocities`
        (OpenMM's convention; fixed atoms count with their unchanged velocity, 0 when drawn
        here); ``time`` ``(n_reports,)`` ps since the start of this call; and ``state`` (:class:`LangevinState` after the last step) and ``key`` to continue with.
    """
    if report_interval < 1 or steps < 0 or steps % report_interval:
        raise ValueError(f"steps {steps} must be a non-negative multiple of report_interval {report_interval}")
    kT = GAS_CONSTANT * jnp.asarray(temperature)
    if isinstance(positions, LangevinState):
        if velocities is not None:
            raise ValueError("velocities are taken from the state; do not pass them as well")
        state = positions
    else:
        positions = jnp.asarray(positions)
        if velocities is None:
            key, velocity_key = jax.random.split(key)
            velocities = maxwell_boltzmann(positions.shape, kT=kT, masses=masses, key=velocity_key,
                                           dtype=positions.dtype, fixed=fixed)
        state = _init_state_jit(forces_fn, positions, velocities)
    kT = kT.astype(state.positions.dtype)
    masses = jnp.asarray(masses, state.positions.dtype)
    fixed = None if fixed is None else jnp.asarray(fixed, bool)
    frames, state, key = _run(forces_fn, state, key, kT, masses, fixed, steps // report_interval,
                              report_interval, float(dt), float(friction))
    frames["time"] = dt * report_interval * np.arange(1, steps // report_interval + 1)
    return {**frames, "state": state, "key": key}


_init_state_jit = eqx.filter_jit(init_state)


@eqx.filter_jit
def _run(forces_fn, state, key, kT, masses, fixed, n_reports, report_interval, dt, friction):
    """The jitted loop of :func:`run_langevin`: a scan over reports of a ``fori_loop`` over steps.

    Under ``eqx.filter_jit``: arrays are traced; ``forces_fn`` (but for its array leaves, if it is
    a Module), ``n_reports``, ``report_interval``, ``dt`` and ``friction`` are static.
    """

    def one_step(_, carry):
        state, key = carry
        key, step_key = jax.random.split(key)
        return baoab_step(forces_fn, state, dt=dt, friction=friction, kT=kT, masses=masses, key=step_key,
                          fixed=fixed), key

    def one_report(carry, _):
        state, key = jax.lax.fori_loop(0, report_interval, one_step, carry)
        kinetic = kinetic_energy(middle_velocities(state, dt=dt, masses=masses, fixed=fixed), masses)
        frame = {"positions": state.positions, "velocities": state.velocities, "forces": state.forces,
                 "potential_energy": state.potential_energy, "kinetic_energy": kinetic}
        return (state, key), frame

    (state, key), frames = jax.lax.scan(one_report, (state, key), length=n_reports)
    return frames, state, key
