"""NUTS reference samples of the joint Boltzmann density p(z, x) ∝ exp(−β U(z, x)) (blackjax).

Step size and diagonal mass matrix come from blackjax's window adaptation on the first
chain and are shared by all chains, which start spread over every mode
(:meth:`SyntheticTarget.initial_z`, x from the exact conditional). NUTS does not cross
high barriers quickly: for the double well (barrier ≈ 11.6 kT from the deep well) and the
well-separated GMM modes, the chain masses reflect mixing, which is why the evaluation
reports NUTS against the exact marginals as a sanity row rather than as the reference.
"""

from __future__ import annotations

import time

import blackjax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from cgbench.targets import SyntheticTarget


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

    started = time.perf_counter()
    adaptation = blackjax.window_adaptation(blackjax.nuts, logdensity)
    (_, parameters), _ = adaptation.run(adapt_key, positions[0], num_steps=warmup)
    nuts = blackjax.nuts(logdensity, **parameters)

    # Every chain gets its own short warm-up at the adapted parameters before recording.
    def run_chain(position, key):
        state = nuts.init(position)

        def step(state, key):
            state, info = nuts.step(key, state)
            return state, (state.position, info.acceptance_rate, info.is_divergent,
                           info.num_integration_steps)

        burn_key, keep_key = jr.split(key)
        state, _ = jax.lax.scan(step, state, jr.split(burn_key, max(warmup // 10, 1)))
        _, trace = jax.lax.scan(step, state, jr.split(keep_key, samples))
        return trace

    trace = jax.jit(jax.vmap(run_chain))(positions, jr.split(sample_key, chains))
    states, acceptance, divergent, steps = (np.asarray(t) for t in trace)
    wall = time.perf_counter() - started
    states = states.reshape(chains * samples, -1)
    return {
        "z": states[:, :dim_z], "x": states[:, dim_z:],
        "acceptance": float(acceptance.mean()), "divergences": int(divergent.sum()),
        "step_size": float(parameters["step_size"]), "wall_s": wall,
        "energy_evaluations": int(steps.sum()), "chains": chains,
    }
