"""Dynamic gradient skipping and clipping after Midgley et al. (flow annealed IS bootstrap).

Keeps the norms of the last ``window`` accepted gradients. Once the window is full, a
gradient whose global norm exceeds ``skip_factor × median`` is skipped (no parameter or
optimiser-state change) and any other is clipped to ``clip_factor × median``. A gradient
with a non-finite norm is always skipped. Written as an optax ``GradientTransformation``
because optax has only fixed-threshold clipping and skip-if-not-finite, not this
median-relative rule.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class GuardState(NamedTuple):
    """State of :func:`gradient_guard`.

    Attributes:
        inner: state of the wrapped optimiser.
        norms: (window,) ring buffer of accepted gradient norms.
        count: number of accepted gradients so far.
        skipped: whether the last update was skipped.
        consecutive_skips: updates skipped in a row (the trainer stops past a limit).
    """

    inner: optax.OptState
    norms: jax.Array
    count: jax.Array
    skipped: jax.Array
    consecutive_skips: jax.Array


def gradient_guard(inner: optax.GradientTransformation, *, window: int = 50,
                   skip_factor: float = 10.0, clip_factor: float = 5.0) -> optax.GradientTransformation:
    """Wrap ``inner`` with median-relative skip/clip (defaults: ECG code's W=50, S=10, C=5)."""

    def init(params):
        return GuardState(inner.init(params), jnp.zeros(window), jnp.zeros((), jnp.int32),
                          jnp.zeros((), bool), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        norm = optax.tree.norm(grads)
        full = state.count >= window
        median = jnp.median(state.norms)
        finite = jnp.isfinite(norm)
        skip = ~finite | (full & (norm > skip_factor * median))
        limit = jnp.where(full, clip_factor * median, jnp.inf)
        scale = jnp.where(finite & (norm > limit), limit / norm, 1.0)
        safe = jax.tree.map(lambda g: jnp.where(skip, 0.0, g * scale), grads)
        updates, inner_state = inner.update(safe, state.inner, params)
        updates = jax.tree.map(lambda u: jnp.where(skip, jnp.zeros_like(u), u), updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(skip, old, new), inner_state, state.inner)
        norms = jnp.where(skip, state.norms, state.norms.at[state.count % window].set(norm))
        return updates, GuardState(
            inner_state, norms, state.count + (~skip).astype(jnp.int32), skip,
            jnp.where(skip, state.consecutive_skips + 1, 0),
        )

    return optax.GradientTransformation(init, update)


def reset_history(state: GuardState) -> GuardState:
    """Forget the gradient-norm history (e.g. after β changes); the inner state is kept."""
    return state._replace(norms=jnp.zeros_like(state.norms), count=jnp.zeros_like(state.count))
