"""ECG trainer: schedules, saved models, resume, divergence, and the reverse-KL gradient."""

import json
import shutil
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pandas as pd
import pytest

from cgbench.conditional import ConditionalSampler
from cgbench.checkpoint import load_checkpoint
from cgbench.ecg import TrainingDiverged, load_models, make_optimizer, make_update, train_ecg
from cgbench.flows import flow_from_settings
from cgbench.targets import DoubleWell
from conftest import perturb

SETTINGS = {
    "flow": {"layers": 2, "mlp_depth": 1, "mlp_width": 8, "knots": 4, "interval": 5.0},
    "learning_rate": 1e-3,
    "batch_size": 64,
    "tempering": {"beta_0": 0.5, "beta_target": 1.0, "delta_beta": 0.25, "target_kl_change": 0.3,
                  "updates_at_beta_0": 30, "updates_per_step": 10},
    "conditional_sampler": {"kind": "mala", "step_size": 0.2, "leapfrog_steps": 1, "minimisation_steps": 0,
                            "minimisation_step_size": 0.1, "burn_in": 2, "samples": 2, "thin": 1},
    "gradient_guard": {"window": 5, "skip_factor": 10.0, "clip_factor": 5.0, "max_consecutive_skips": 20},
    "checkpoint_every": 7,
}
SEED = 3
FIXED_BETAS = [0.5, 0.75, 1.0]
FIXED_UPDATES = [30, 40, 50]


def train(out, schedule="fixed", target=None, **kwargs):
    return train_ecg(target or DoubleWell(), SETTINGS, schedule, out, seed=SEED, progress=False, **kwargs)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]


def skeleton():
    flow = flow_from_settings(SETTINGS["flow"], 1, key=jr.key(SEED))
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    return params, static, make_optimizer(SETTINGS).init(params)


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixed_a")
    return out, train(out)


# ---------------------------------------------------------------- (a) saved models

def test_fixed_schedule_models_index(fixed_run):
    out, index = fixed_run
    on_disk = json.loads((out / "models.json").read_text())
    assert on_disk == index
    assert [m["beta"] for m in index["models"]] == pytest.approx(FIXED_BETAS)
    assert [m["updates"] for m in index["models"]] == FIXED_UPDATES
    assert [m["index"] for m in index["models"]] == [0, 1, 2]
    per_update = ConditionalSampler(**SETTINGS["conditional_sampler"]).energy_evaluations(64)
    assert index["energy_evaluations_per_update"] == per_update == 64 * (2 + 2 + 2)
    assert [m["energy_evaluations"] for m in index["models"]] == [u * per_update for u in FIXED_UPDATES]
    wall = [m["wall_s"] for m in index["models"]]
    assert wall == sorted(wall) and wall[0] >= 0
    history = pd.read_csv(out / "history.csv")
    assert history["update"].tolist() == [10, 20, 30, 40, 50]
    assert history["beta"].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.75, 1.0])
    assert np.all(np.isfinite(history["mean_log_q"]))


def test_fixed_schedule_models_load(fixed_run):
    out, index = fixed_run
    loaded_index, flows = load_models(out)
    assert loaded_index == index and len(flows) == 3
    for m in index["models"]:
        assert (out / m["path"]).is_file()
    # the last model is the final state of training (same leaves as the checkpoint)
    params, _, opt_state = skeleton()
    final_params, _ = load_checkpoint(out, (params, opt_state), identity={})[0]
    assert all(np.array_equal(a, b) for a, b in zip(leaves(flows[-1]), leaves(final_params)))
    # models at different β differ (training moved them), and differ from the initial flow
    init = leaves(params)
    for earlier, later in zip(flows[:-1], flows[1:]):
        assert not all(np.array_equal(a, b) for a, b in zip(leaves(earlier), leaves(later)))
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(flows[0]), init))
    z = np.asarray(flows[-1].sample(jr.key(0), (200,)))
    assert z.shape == (200, 1) and np.all(np.abs(z) <= 5.0)


def test_models_load_with_the_permutations_they_were_trained_with(tmp_path):
    """For dim_z ≥ 3 the coupling flow holds integer permutations drawn from the init key; models save
    only the trained (float) leaves. A model loaded into a skeleton of another key is another flow.

    Before 2026-12-07 :func:`load_models` built its skeleton with key 0: every ECG flow of dim_z ≥ 3
    trained with another seed (the workflow's ala2 run: seed 752411102) was evaluated scrambled.
    """
    from cgbench.flows import make_flow
    from cgbench.targets import GaussianMixture

    target = GaussianMixture.from_seed(dim_z=3, dim_x=2, n_modes=2, variance=0.05, seed=0)
    index = train_ecg(target, SETTINGS, "fixed", tmp_path, seed=SEED, progress=False)
    _, flows = load_models(tmp_path)
    trained = make_flow(dim=3, key=jr.key(SEED), **SETTINGS["flow"])  # the trainer's flow, built independently
    params, static = eqx.partition(trained, eqx.is_inexact_array)
    final, _ = load_checkpoint(tmp_path, (params, make_optimizer(SETTINGS).init(params)), identity={})[0]
    trained = eqx.combine(final, static)
    z = jr.uniform(jr.key(1), (50, 3), minval=-3.0, maxval=3.0)
    np.testing.assert_array_equal(np.asarray(jax.vmap(flows[-1].log_prob)(z)), np.asarray(jax.vmap(trained.log_prob)(z)))
    # the test has power: the same trained leaves in a key-0 skeleton are a different density
    other = eqx.combine(final, eqx.partition(make_flow(dim=3, key=jr.key(0), **SETTINGS["flow"]), eqx.is_inexact_array)[1])
    assert np.max(np.abs(np.asarray(jax.vmap(other.log_prob)(z)) - np.asarray(jax.vmap(trained.log_prob)(z)))) > 1e-3
    assert index["seed"] == SEED


# ---------------------------------------------------------------- (b) resume is bitwise

def test_resume_is_bitwise_identical(fixed_run, tmp_path):
    out_a, index_a = fixed_run
    out_b = tmp_path / "b"
    assert train(out_b, max_updates=13) is None
    ckpt = json.loads((out_b / "checkpoint.json").read_text())
    assert ckpt["update"] == 13 and ckpt["beta"] == 0.5
    assert not (out_b / "models.json").exists()
    index_b = train(out_b)
    assert [m["beta"] for m in index_b["models"]] == [m["beta"] for m in index_a["models"]]
    assert [m["updates"] for m in index_b["models"]] == [m["updates"] for m in index_a["models"]]
    assert index_b["run_hash"] == index_a["run_hash"]
    _, flows_a = load_models(out_a)
    _, flows_b = load_models(out_b)
    for fa, fb in zip(flows_a, flows_b):
        la, lb = leaves(fa), leaves(fb)
        assert len(la) == len(lb) > 0
        assert all(np.array_equal(a, b) for a, b in zip(la, lb))
    # the optimiser state (Adam moments, guard window) resumed bitwise too
    params, _, opt_state = skeleton()
    state_a = load_checkpoint(out_a, (params, opt_state), identity={})[0]
    state_b = load_checkpoint(out_b, (params, opt_state), identity={})[0]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)))


# ---------------------------------------------------------------- (c, d) other schedules

def test_no_tempering_trains_at_target_with_same_budget(tmp_path):
    index = train(tmp_path, schedule="none")
    assert [m["beta"] for m in index["models"]] == [1.0]
    assert [m["updates"] for m in index["models"]] == [FIXED_UPDATES[-1]]
    assert pd.read_csv(tmp_path / "history.csv")["beta"].tolist() == [1.0] * 5


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive")
    return out, train(out, schedule="adaptive")


def test_adaptive_schedule_reaches_target(adaptive_run):
    _, index = adaptive_run
    betas = [m["beta"] for m in index["models"]]
    updates = [m["updates"] for m in index["models"]]
    assert betas[0] == 0.5 and betas[-1] == 1.0
    assert np.all(np.diff(betas) > 0)
    assert 2 <= len(betas) <= 20
    assert updates == [30 + 10 * i for i in range(len(betas))]


def assert_same_models(out_a, out_b):
    index_a, flows_a = load_models(out_a)
    index_b, flows_b = load_models(out_b)
    assert [m["beta"] for m in index_a["models"]] == [m["beta"] for m in index_b["models"]]
    assert [m["updates"] for m in index_a["models"]] == [m["updates"] for m in index_b["models"]]
    for fa, fb in zip(flows_a, flows_b):
        assert all(np.array_equal(a, b) for a, b in zip(leaves(fa), leaves(fb)))


def test_adaptive_resume_is_bitwise_identical(adaptive_run, tmp_path):
    out_a, _ = adaptive_run
    assert train(tmp_path, schedule="adaptive", max_updates=35) is None  # stopped inside step 1
    train(tmp_path, schedule="adaptive")
    assert_same_models(out_a, tmp_path)


def test_adaptive_resume_after_kill_at_end_of_step(adaptive_run, tmp_path, monkeypatch):
    import cgbench.ecg as ecg

    settings = {**SETTINGS, "checkpoint_every": 10}  # 10 divides 30, the step's last update
    write = ecg.atomic_write_bytes

    def killed_before_model_save(path, payload):
        if path.name.startswith("beta_0000"):
            raise KeyboardInterrupt("simulated kill")
        write(path, payload)

    monkeypatch.setattr(ecg, "atomic_write_bytes", killed_before_model_save)
    with pytest.raises(KeyboardInterrupt):
        train_ecg(DoubleWell(), settings, "adaptive", tmp_path, seed=SEED, progress=False)
    ckpt = json.loads((tmp_path / "checkpoint.json").read_text())
    # No checkpoint at a step's last update: the step's end (model, next β) is redone on resume.
    assert (ckpt["update"], ckpt["done_in_step"]) == (20, 20)
    monkeypatch.setattr(ecg, "atomic_write_bytes", write)
    train_ecg(DoubleWell(), settings, "adaptive", tmp_path, seed=SEED, progress=False)
    # checkpoint_every does not enter the numerics: the same models as the uninterrupted run
    assert_same_models(adaptive_run[0], tmp_path)


def test_rerun_of_finished_run_is_idempotent(fixed_run, tmp_path):
    out, index = fixed_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = train(copy)
    assert [m["beta"] for m in again["models"]] == [m["beta"] for m in index["models"]]
    assert [m["updates"] for m in again["models"]] == FIXED_UPDATES


def test_unknown_schedule_rejected(tmp_path):
    with pytest.raises(ValueError, match="schedule"):
        train(tmp_path, schedule="linear")


# ---------------------------------------------------------------- (e) divergence

class NaNDoubleWell(DoubleWell):
    def energy(self, z, x):
        return jnp.nan * super().energy(z, x)


def test_nan_energy_raises_and_leaves_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="consecutive"):
        train(tmp_path, target=NaNDoubleWell())
    assert (tmp_path / "checkpoint.json").is_file() and len(list(tmp_path.glob("checkpoint-*.eqx"))) == 1
    assert not (tmp_path / "models.json").exists()
    ckpt = json.loads((tmp_path / "checkpoint.json").read_text())
    max_skips = SETTINGS["gradient_guard"]["max_consecutive_skips"]
    assert ckpt["update"] == max_skips + 1
    # every update was skipped: the checkpoint holds the untouched initial parameters
    params, _, opt_state = skeleton()
    saved_params, saved_opt = load_checkpoint(tmp_path, (params, opt_state), identity={})[0]
    assert all(np.array_equal(a, b) for a, b in zip(leaves(saved_params), leaves(params)))
    assert int(saved_opt.consecutive_skips) == max_skips + 1
    assert all(np.all(np.isfinite(a)) for a in leaves(saved_params))


# ---------------------------------------------------------------- (f) the ECG gradient

class Captured(NamedTuple):
    grads: object
    skipped: jax.Array
    consecutive_skips: jax.Array


def capturing_optimizer():
    """Applies no update and stores the gradient it was given (exposes make_update's VJP)."""

    def init(params):
        return Captured(jax.tree.map(jnp.zeros_like, params), jnp.zeros((), bool), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        return jax.tree.map(jnp.zeros_like, grads), Captured(grads, state.skipped, state.consecutive_skips)

    return optax.GradientTransformation(init, update)


@pytest.fixture(scope="module")
def gradient_setup():
    """make_update with a capturing optimiser, and the exact reverse-KL gradient, both jitted once."""
    target = DoubleWell()
    flow = perturb(flow_from_settings(SETTINGS["flow"], 1, key=jr.key(1)), 0.2, 11)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    optimizer = capturing_optimizer()
    update = make_update(target, SETTINGS, static, optimizer)
    batch = SETTINGS["batch_size"]

    @jax.jit
    def exact_grad(p, key, beta, sign):
        sample_key, _ = jr.split(key)

        def loss(p):
            z, log_q = eqx.combine(p, static).sample_and_log_prob(sample_key, (batch,))
            return jnp.mean(log_q + sign * beta * target.free_energy(z[:, 0])), log_q.mean()

        return jax.grad(loss, has_aux=True)(p)

    return params, optimizer, update, exact_grad


def flat(tree):
    return np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])


@pytest.mark.parametrize("beta, seed", [(0.5, 7), (1.0, 8)])
def test_vjp_gradient_equals_grad_of_exact_reverse_kl(gradient_setup, beta, seed):
    """For the double well ∂U/∂z = F'(z) for every x, so the chain estimate of the mean force is
    exact and the VJP must equal ∇_θ mean(log q(z) + βF(z)), z = f_θ(ε), for the same ε."""
    params, optimizer, update, exact_grad = gradient_setup
    key = jr.key(seed)
    new_params, opt_state, diag, energies = update(params, optimizer.init(params), key, jnp.float32(beta))
    got = flat(opt_state.grads)
    want_tree, mean_log_q = exact_grad(params, key, jnp.float32(beta), 1.0)
    want = flat(want_tree)
    wrong = flat(exact_grad(params, key, jnp.float32(beta), -1.0)[0])  # sign of βF flipped
    assert np.linalg.norm(want) > 0
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())
    assert np.linalg.norm(got - wrong) > 0.1 * np.linalg.norm(want)
    # the diagnostics are those of the same batch
    assert float(diag["mean_log_q"]) == pytest.approx(float(mean_log_q), rel=1e-5, abs=1e-5)
    assert float(diag["grad_norm"]) == pytest.approx(float(np.linalg.norm(want)), rel=1e-3)
    assert energies.shape == (SETTINGS["batch_size"], SETTINGS["conditional_sampler"]["samples"])
    # the capturing optimiser applied nothing
    assert all(np.array_equal(a, b) for a, b in zip(leaves(new_params), leaves(params)))


class VolumeDoubleWell(DoubleWell):
    """The double well with an untempered factor V(z) = 1 + z² in its density (a toy volume element)."""

    def log_volume(self, z):
        return jnp.log1p(z[0] ** 2)


def test_vjp_gradient_includes_an_untempered_log_volume():
    """A target with ``log_volume``: the VJP is ∇_θ mean(log q + βF − log V), and not the gradient
    without the volume term (which would be the double well's own)."""
    target = VolumeDoubleWell()
    flow = perturb(flow_from_settings(SETTINGS["flow"], 1, key=jr.key(1)), 0.2, 11)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    optimizer = capturing_optimizer()
    update = make_update(target, SETTINGS, static, optimizer)
    key, beta, batch = jr.key(9), jnp.float32(0.5), SETTINGS["batch_size"]

    def exact(p, volume):
        z, log_q = eqx.combine(p, static).sample_and_log_prob(jr.split(key)[0], (batch,))
        return jnp.mean(log_q + beta * target.free_energy(z[:, 0]) - volume * jnp.log1p(z[:, 0] ** 2))

    got = flat(update(params, optimizer.init(params), key, beta)[1].grads)
    want, without = (flat(jax.grad(exact)(params, v)) for v in (1.0, 0.0))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())
    assert np.linalg.norm(got - without) > 0.1 * np.linalg.norm(want)
