"""Force matching: time-block split, noise floor, recovery of a known potential, resume, NaN guard."""

import json
import os
import signal
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.signal import lfilter

from cgbench.force_matching import force_noise_floor, mean_squared_force_error, superpose, train_force_matching
from cgbench.training import NonFiniteTrainingError, TrainingSettings, time_block_split


class Mlp1d(eqx.Module):
    """A small energy model of one coordinate, for tests that need no CG geometry."""

    mlp: eqx.nn.MLP

    def __init__(self, *, key):
        self.mlp = eqx.nn.MLP(1, "scalar", 32, 2, activation=jax.nn.silu, key=key)

    def __call__(self, x):
        return self.mlp(x)


def double_well_data(n=4000, noise=0.5, seed=0, replicas=2):
    """x uniform on [-2, 2]; forces of U = x^4 - 3x^2 plus Gaussian noise (the 'fast' part)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 1))
    f = -(4 * x**3 - 6 * x) + rng.normal(size=x.shape) * noise
    return x.astype(np.float32), f.astype(np.float32), np.repeat(np.arange(replicas), n // replicas)


@pytest.mark.parametrize("frames, replicas, blocks, fraction, n_val_blocks", [
    (100, 1, 10, 0.2, 2),
    (100, 2, 10, 0.2, 2),
    (90, 3, 5, 0.2, 1),
    (40, 1, 4, 0.5, 2),
])
def test_time_block_split_holds_out_whole_blocks(frames, replicas, blocks, fraction, n_val_blocks):
    replica = np.repeat(np.arange(replicas), frames // replicas)
    train, val = time_block_split(replica, blocks=blocks, validation_fraction=fraction)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(replica)
    for r in range(replicas):
        frames_r = np.flatnonzero(replica == r)
        held = np.isin(frames_r, val)
        # held-out frames form n_val_blocks contiguous runs inside each replica, none at the start
        runs = np.sum(np.diff(held.astype(int)) == 1) + int(held[0])
        assert runs == n_val_blocks
        assert not held[0]
        assert abs(held.mean() - n_val_blocks / blocks) < 0.05


def test_time_block_split_rejects_too_few_frames():
    with pytest.raises(ValueError, match="too few"):
        time_block_split(np.zeros(1, int), blocks=4, validation_fraction=0.2)


@pytest.mark.parametrize("align", [False, True])
def test_noise_floor_recovers_the_noise_variance(align):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 4, 3)) * 0.3
    if align:  # random orientations: the estimate must superpose them first
        q, _ = np.linalg.qr(rng.normal(size=(len(x), 3, 3)))
        q *= np.sign(np.linalg.det(q))[:, None, None]
        x = np.einsum("bni,bij->bnj", x, q)
    sigma = 0.7
    mean_force = -2.0 * (x - x.mean(1, keepdims=True))            # translation invariant, rotation covariant
    noisy = mean_force + rng.normal(size=x.shape) * sigma
    estimate = force_noise_floor(x, noisy, align=align, min_separation=0)
    assert estimate["floor_mse"] == pytest.approx(sigma**2, rel=0.1)
    clean = force_noise_floor(x, mean_force, align=align, min_separation=0)
    assert clean["floor_mse"] < 0.05 * sigma**2                   # negative control: no noise, no floor
    assert estimate["nearest_mse"] >= estimate["floor_mse"]        # the raw neighbour estimate is an upper bound


def test_noise_floor_skips_time_neighbours():
    """Consecutive frames with correlated noise would fake a low floor; min_separation avoids them.

    Replica 0 sweeps x slowly (each frame's nearest neighbour is the next frame, whose noise is
    95 % correlated); replica 1 covers the same range ten times more sparsely, noise independent.
    """
    rng = np.random.default_rng(2)

    def ar1(n):  # unit variance, correlation 0.95 between consecutive frames
        return lfilter([np.sqrt(1 - 0.95**2)], [1, -0.95], rng.normal(size=n))

    x = np.concatenate([np.linspace(0, 1, 20000), np.sort(rng.uniform(0, 1, 2000))])[:, None]
    replica = np.repeat([0, 1], [20000, 2000])
    f = -x + np.concatenate([ar1(20000), ar1(2000)])[:, None]
    naive = force_noise_floor(x, f, replica, align=False, min_separation=0, queries=3000)
    separated = force_noise_floor(x, f, replica, align=False, min_separation=50, queries=3000)
    assert naive["floor_mse"] < 0.5
    assert separated["floor_mse"] == pytest.approx(1.0, rel=0.15)


def test_superpose_removes_rotation_and_rotates_forces():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(5, 3))
    forces = rng.normal(size=(5, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3, 3)))
    q *= np.sign(np.linalg.det(q))[:, None, None]
    x = np.einsum("ni,bij->bnj", ref, q) + rng.normal(size=(3, 1, 3))
    f = np.einsum("ni,bij->bnj", forces, q)
    xs, fs = superpose(x, f, reference=ref)
    np.testing.assert_allclose(xs, np.broadcast_to(ref - ref.mean(0), xs.shape), atol=1e-10)
    np.testing.assert_allclose(fs, np.broadcast_to(forces, fs.shape), atol=1e-10)


SMALL = TrainingSettings(epochs=30, batch_size=64, learning_rate=3e-3, patience=10)


def test_force_matching_recovers_a_known_potential(tmp_path):
    x, f, replica = double_well_data()
    result = train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica, settings=SMALL, kT=1.0, key=jr.key(1),
                                  workdir=tmp_path, progress=False)
    grid = np.linspace(-1.9, 1.9, 50)[:, None].astype(np.float32)
    learned = np.asarray(jax.vmap(result["model"])(jnp.asarray(grid)))
    exact = grid[:, 0] ** 4 - 3 * grid[:, 0] ** 2
    assert np.std(learned - exact) < 0.1                        # the barrier is 2.25 (units of the noise kT)
    # the validation error approaches the noise floor 0.25 from above
    assert 0.25 < result["validation_mse"] < 0.25 * 1.15
    assert result["history"][-1]["validation_mse"] < result["history"][0]["validation_mse"]


def _leaves(model):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))]


def test_interrupted_training_resumes_to_the_same_model(tmp_path):
    x, f, replica = double_well_data(n=1000)
    settings = TrainingSettings(epochs=5, batch_size=50, patience=100)
    whole = train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica, settings=settings, kT=1.0, key=jr.key(1),
                                 workdir=tmp_path / "whole", progress=False)
    part = train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica, settings=settings, kT=1.0, key=jr.key(1),
                                workdir=tmp_path / "split", progress=False, stop_after_epochs=2)
    assert not part["finished"] and part["epochs"] == 2
    rest = train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica, settings=settings, kT=1.0, key=jr.key(1),
                                workdir=tmp_path / "split", progress=False)
    assert rest["finished"] and rest["epochs"] == 5
    for a, b in zip(_leaves(whole["model"]), _leaves(rest["model"])):
        np.testing.assert_array_equal(a, b)
    assert [h["validation_mse"] for h in whole["history"]] == [h["validation_mse"] for h in rest["history"]]


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path, caplog):
    x, f, replica = double_well_data(n=1000)
    train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica, settings=TrainingSettings(epochs=2, batch_size=50),
                         kT=1.0, key=jr.key(1), workdir=tmp_path, progress=False, stop_after_epochs=1)
    with caplog.at_level("WARNING"):
        out = train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica,
                                   settings=TrainingSettings(epochs=2, batch_size=25), kT=1.0, key=jr.key(1),
                                   workdir=tmp_path, progress=False)
    assert "other settings" in caplog.text and out["epochs"] == 2 and len(out["history"]) == 2


def test_nonfinite_forces_stop_training_with_a_message_and_keep_the_checkpoint(tmp_path):
    x, f, replica = double_well_data(n=1000)
    settings = TrainingSettings(epochs=4, batch_size=50, max_nonfinite=5)
    train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica, settings=settings, kT=1.0, key=jr.key(1),
                         workdir=tmp_path, progress=False, stop_after_epochs=1)
    bad = f.copy()
    bad[:] = np.nan
    with pytest.raises(NonFiniteTrainingError, match="non-finite"):
        # other data: a fresh start (fingerprint), whose every update is non-finite
        train_force_matching(Mlp1d(key=jr.key(0)), x, bad, replica, settings=settings, kT=1.0, key=jr.key(1),
                             workdir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "checkpoint.json").exists()    # nothing good to keep: no checkpoint written
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 1


def test_a_few_nonfinite_frames_are_skipped(tmp_path):
    x, f, replica = double_well_data(n=1000)
    f = f.copy()
    f[::97] = np.nan                                              # ~1 % of frames: some batches skipped
    out = train_force_matching(Mlp1d(key=jr.key(0)), x, f, replica, settings=TrainingSettings(epochs=2, batch_size=50),
                               kT=1.0, key=jr.key(1), workdir=tmp_path, progress=False)
    assert sum(h["skipped"] for h in out["history"]) > 0
    assert all(np.isfinite(leaf).all() for leaf in _leaves(out["model"]))


def test_mean_squared_force_error_pads_the_last_chunk():
    x, f, _ = double_well_data(n=1030)
    model = Mlp1d(key=jr.key(0))
    pred = -np.asarray(jax.vmap(jax.grad(model))(jnp.asarray(x)))
    direct = np.mean((pred - f) ** 2)
    assert mean_squared_force_error(model, x, f, chunk=512) == pytest.approx(direct, rel=1e-5)
