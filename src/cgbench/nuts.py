"""NUTS reference samples (blackjax): a general multi-chain sampler and the synthetic targets.

:func:`run_nuts_chains` samples any log-density from given starting points. Step size and
diagonal mass matrix come from blackjax's window adaptation on the first chain and are shared by
all chains; each chain then gets its own short burn-in (``max(warmup // 10, 1)`` NUTS steps) at
the adapted parameters before its states are recorded. :mod:`cgbench.peptide_nuts` uses it for
all-atom peptides.

:func:`run_nuts` samples the joint Boltzmann density p(z, x) ∝ exp(−β U(z, x)) of a synthetic
target, with chains that start spread over every mode (:meth:`SyntheticTarget.initial_z`, x from
the exact conditional). NUTS does not cross high barriers quickly: for the double well (barrier
≈ 11.6 kT from the deep well) and the well-separated GMM modes, the chain masses reflect mixing,
which is why the evaluation reports NUTS against the exact marginals as a sanity row rather than
as the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import blackjax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from cgbench.targets import SyntheticTarget

#: blackjax's default largest tree depth of NUTS (at most 1023 integration steps per NUTS step).
MAX_NUM_DOUBLINGS = 10


def run_nuts_chains(logdensity: Callable, initial_positions, *, warmup: int, samples: int, key,
                    thin: int = 1, max_num_doublings: int = MAX_NUM_DOUBLINGS) -> dict:
    """Draw ``samples`` recorded NUTS states per chain of the density ``exp(logdensity)``.

    Args:
        logdensity: Scalar log-density (up to a constant) of one flat position ``(dim,)``; it is
            jitted, vmapped over chains and differentiated.
        initial_positions: Starting points, shape ``(chains, dim)``; the first one is where the
            window adaptation runs, every chain's burn-in starts from its own.
        warmup: Steps of window adaptation (step size and diagonal inverse mass matrix); each
            chain then takes ``max(warmup // 10, 1)`` burn-in steps that are not recorded.
        samples: Recorded states per chain.
        key: JAX PRNG key.
        thin: Keep every ``thin``-th state: ``samples · thin`` NUTS steps per chain after burn-in.
        max_num_doublings: Largest NUTS tree depth, in adaptation and sampling: at most
            ``2**max_num_doublings − 1`` integration steps per NUTS step (blackjax's default 10).

    Returns:
        dict with ``positions`` (numpy, ``(chains, samples, dim)``), ``acceptance`` (mean over
        every step after burn-in), ``divergences`` (count after burn-in), ``step_size``,
        ``inverse_mass_matrix`` (numpy, ``(dim,)``), ``wall_s`` (adaptation, compilation and
        sampling), ``energy_evaluations`` (integration steps, i.e. gradient evaluations, of the
        steps after burn-in), ``warmup_energy_evaluations`` (those of adaptation and burn-in),
        ``nuts_steps`` (NUTS steps after burn-in, all chains) and ``chains``.
    """
    adapt_key, sample_key = jr.split(key)
    return _run_chains(logdensity, jnp.asarray(initial_positions), warmup=warmup, samples=samples,
                       thin=thin, adapt_key=adapt_key, sample_key=sample_key,
                       max_num_doublings=max_num_doublings)


def _run_chains(logdensity, positions, *, warmup, samples, thin, adapt_key, sample_key,
                max_num_doublings=MAX_NUM_DOUBLINGS) -> dict:
    """:func:`run_nuts_chains` with the adaptation and sampling keys given separately."""
    if thin < 1:
        raise ValueError(f"thin={thin}: expected a positive integer")
    chains = positions.shape[0]
    started = time.perf_counter()
    adaptation = blackjax.window_adaptation(blackjax.nuts, logdensity, max_num_doublings=max_num_doublings)
    (_, parameters), adaptation_info = adaptation.run(adapt_key, positions[0], num_steps=warmup)
    nuts = blackjax.nuts(logdensity, **parameters)  # parameters include max_num_doublings

    def step(state, key):
        state, info = nuts.step(key, state)
        return state, (state.position, info.acceptance_rate, info.is_divergent,
                       info.num_integration_steps)

    def thinned_step(state, key):  # `thin` steps, the last state recorded
        state, (positions, acceptance, divergent, steps) = jax.lax.scan(step, state, jr.split(key, thin))
        return state, (positions[-1], acceptance.mean(), divergent.sum(), steps.sum())

    record = step if thin == 1 else thinned_step

    # Every chain gets its own short warm-up at the adapted parameters before recording.
    def run_chain(position, key):
        state = nuts.init(position)
        burn_key, keep_key = jr.split(key)
        state, burn = jax.lax.scan(step, state, jr.split(burn_key, max(warmup // 10, 1)))
        _, trace = jax.lax.scan(record, state, jr.split(keep_key, samples))
        return trace, burn[3].sum()

    trace, burn_steps = jax.jit(jax.vmap(run_chain))(positions, jr.split(sample_key, chains))
    states, acceptance, divergent, steps = (np.asarray(t) for t in trace)
    wall = time.perf_counter() - started
    warmup_steps = int(np.asarray(adaptation_info.info.num_integration_steps).sum()) + int(np.asarray(burn_steps).sum())
    return {
        "positions": states, "acceptance": float(acceptance.mean()), "divergences": int(divergent.sum()),
        "step_size": float(parameters["step_size"]),
        "inverse_mass_matrix": np.asarray(parameters["inverse_mass_matrix"]), "wall_s": wall,
        "energy_evaluations": int(steps.sum()), "warmup_energy_evaluations": warmup_steps,
        "nuts_steps": chains * samples * thin, "chains": chains,
    }


def run_nuts(target: SyntheticTarget, *, beta: float, chains: int, warmup: int, samples: int,
             key) -> dict:
    """Draw ``samples`` NUTS states per chain.

    Returns:
        dict with ``z`` (chains·samples, dim_z), ``x`` (chains·samples, dim_x),
        ``acceptance`` (mean), ``divergences`` (count), ``step_size``, ``wall_s``,
        ``energy_evaluations`` (gradient evaluations after warm-up), ``chains``.
    """
    dim_z = target.dim_z

    def logdensity(position):
        return -beta * target.energy(position[:dim_z], position[dim_z:])

    init_key, adapt_key, sample_key = jr.split(key, 3)
    z0 = target.initial_z(chains, key=init_key)
    x0 = jax.vmap(lambda z, k: target.conditional_sample(z, beta, key=k))(z0, jr.split(init_key, chains))
    positions = jnp.concatenate([z0, x0], axis=1)

    result = _run_chains(logdensity, positions, warmup=warmup, samples=samples, thin=1,
                         adapt_key=adapt_key, sample_key=sample_key)
    states = result["positions"].reshape(chains * samples, -1)
    return {
        "z": states[:, :dim_z], "x": states[:, dim_z:],
        **{k: result[k] for k in ("acceptance", "divergences", "step_size", "wall_s",
                                  "energy_evaluations", "chains")},
    }
