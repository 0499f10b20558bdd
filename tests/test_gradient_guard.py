"""Median-relative gradient skipping and clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cgbench.gradient_guard import gradient_guard

WINDOW = 5
LR = 0.1
MOMENTUM = 0.9
FILL = [0.9, 1.0, 1.1, 1.0, 0.95]  # median exactly 1.0


def make_guard(momentum=None):
    return gradient_guard(optax.sgd(LR, momentum=momentum), window=WINDOW, skip_factor=10.0, clip_factor=5.0)


@pytest.fixture(scope="module")
def step():
    guards = {m: make_guard(m) for m in (None, MOMENTUM)}
    return {m: jax.jit(g.update) for m, g in guards.items()}, guards


def trace_of(state):
    """The momentum buffer of the wrapped sgd (TraceState)."""
    return float(state.inner[0].trace)


def feed(guard, update, params, grads, state=None):
    state = guard.init(params) if state is None else state
    outs = []
    for g in grads:
        upd, state = update(jnp.asarray(g, jnp.float32), state, params)
        outs.append(float(upd))
    return outs, state


@pytest.mark.parametrize("g", [1.0, -3.0, 100.0, 1e4, 7.0])
def test_updates_pass_unchanged_before_window_is_full(step, g):
    updates, guards = step
    params = jnp.float32(2.0)
    # three gradients of norm ~1, then g: no median yet, so no clip and no skip
    outs, state = feed(guards[None], updates[None], params, [1.0, 1.0, 1.0, g])
    assert outs[-1] == pytest.approx(-LR * g, rel=1e-6)
    assert not bool(state.skipped)
    assert int(state.count) == 4


def full_state(updates, guards, momentum, params, norms=FILL):
    _, state = feed(guards[momentum], updates[momentum], params, norms)
    assert int(state.count) == WINDOW
    return state


@pytest.mark.parametrize("g", [100.0, -100.0, 10.5, 1e30])
def test_outlier_is_skipped_after_window_full(step, g):
    updates, guards = step
    params = jnp.float32(2.0)
    state = full_state(updates, guards, MOMENTUM, params)
    trace_before, norms_before = trace_of(state), np.asarray(state.norms)
    upd, new = updates[MOMENTUM](jnp.float32(g), state, params)
    assert float(upd) == 0.0
    assert bool(new.skipped)
    assert int(new.consecutive_skips) == 1
    assert trace_of(new) == trace_before  # inner (momentum) state unchanged
    assert int(new.count) == WINDOW
    assert np.array_equal(np.asarray(new.norms), norms_before)
    # a second outlier increments the counter; an ordinary gradient resets it
    upd, new = updates[MOMENTUM](jnp.float32(g), new, params)
    assert bool(new.skipped) and int(new.consecutive_skips) == 2 and float(upd) == 0.0
    upd, new = updates[MOMENTUM](jnp.float32(1.0), new, params)
    assert not bool(new.skipped) and int(new.consecutive_skips) == 0
    assert float(upd) == pytest.approx(-LR * (MOMENTUM * trace_before + 1.0), rel=1e-6)


@pytest.mark.parametrize("g, applied", [
    (7.0, 5.0),     # between clip (5×median) and skip (10×median): clipped to norm 5
    (-7.0, -5.0),   # direction kept
    (10.0, 5.0),    # exactly 10×median is not "above" the skip threshold
    (4.9, 4.9),     # below the clip threshold: unchanged
    (1.0, 1.0),
])
def test_clip_between_thresholds(step, g, applied):
    updates, guards = step
    params = jnp.float32(2.0)
    state = full_state(updates, guards, None, params)
    upd, new = updates[None](jnp.float32(g), state, params)
    assert not bool(new.skipped)
    assert float(upd) == pytest.approx(-LR * applied, rel=1e-6)
    # the raw norm (not the clipped one) overwrites the oldest slot of the window
    assert int(new.count) == WINDOW + 1
    np.testing.assert_allclose(np.asarray(new.norms), [abs(g), *FILL[1:]], rtol=1e-6)


def test_clip_uses_global_norm_of_tree():
    guard = make_guard()
    params = {"a": jnp.zeros(2), "b": jnp.float32(0.0)}
    state = guard.init(params)
    for n in FILL:
        _, state = guard.update({"a": jnp.array([n, 0.0]), "b": jnp.float32(0.0)}, state, params)
    grads = {"a": jnp.array([3.0, 4.0]) * 1.4, "b": jnp.float32(0.0)}  # global norm 7
    upd, state = guard.update(grads, state, params)
    np.testing.assert_allclose(np.asarray(upd["a"]), -LR * np.array([3.0, 4.0]), rtol=1e-6)
    # the same global norm spread over two leaves (neither alone above 5) is clipped too
    grads = {"a": jnp.array([0.0, 4.2]), "b": jnp.float32(5.6)}  # global norm 7
    upd, state = guard.update(grads, state, params)
    np.testing.assert_allclose([float(upd["a"][1]), float(upd["b"])], -LR * np.array([3.0, 4.0]), rtol=1e-6)


def test_threshold_is_median_not_mean(step):
    updates, guards = step
    params = jnp.float32(0.0)
    # window [1, 1, 1, 1, 50]: median 1 (mean 10.8), so 20 is an outlier
    state = full_state(updates, guards, None, params, norms=[1.0, 1.0, 50.0, 1.0, 1.0])
    upd, new = updates[None](jnp.float32(20.0), state, params)
    assert bool(new.skipped) and float(upd) == 0.0


def test_window_is_a_ring_buffer(step):
    updates, guards = step
    params = jnp.float32(0.0)
    state = full_state(updates, guards, None, params)
    # five accepted norms of 4 replace the five ~1 norms: median 4, skip above 40, clip at 20
    outs, state = feed(guards[None], updates[None], params, [4.0] * 5, state)
    assert outs == pytest.approx([-LR * 4.0] * 5)
    np.testing.assert_allclose(np.asarray(state.norms), 4.0)
    upd, new = updates[None](jnp.float32(30.0), state, params)
    assert not bool(new.skipped)
    assert float(upd) == pytest.approx(-LR * 20.0, rel=1e-6)
    upd, new = updates[None](jnp.float32(41.0), state, params)
    assert bool(new.skipped)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("filled", [0, 2, WINDOW])
def test_non_finite_gradient_always_skipped(step, bad, filled):
    updates, guards = step
    params = jnp.float32(2.0)
    outs, state = feed(guards[MOMENTUM], updates[MOMENTUM], params, FILL[:filled])
    trace_before = trace_of(state)
    upd, new = updates[MOMENTUM](jnp.float32(bad), state, params)
    assert float(upd) == 0.0  # finite zero, not NaN
    assert bool(new.skipped)
    assert int(new.consecutive_skips) == 1
    assert int(new.count) == filled
    assert trace_of(new) == trace_before
    assert np.all(np.isfinite(np.asarray(new.norms)))
    new_params = optax.apply_updates(params, upd)
    assert float(new_params) == 2.0


def test_reset_history_lets_a_new_scale_through(step):
    """After β changes the gradient scale may jump; reset_history restarts the median."""
    from cgbench.gradient_guard import reset_history

    updates, guards = step
    guard, update = guards[MOMENTUM], updates[MOMENTUM]
    params = jnp.float32(0.0)
    _, state = feed(guard, update, params, FILL)
    _, skipped = feed(guard, update, params, [100.0], state)
    assert bool(skipped.skipped)  # 100 > 10 × median 1: an outlier at the old scale
    fresh = reset_history(state)
    assert int(fresh.count) == 0 and trace_of(fresh) == trace_of(state)  # Adam/momentum kept
    outs, accepted = feed(guard, update, params, [100.0], fresh)
    assert not bool(accepted.skipped) and outs[0] != 0.0
