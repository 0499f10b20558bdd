"""PMF force matching and CG MD with a learned PMF (:mod:`cgbench.force_matching`, :mod:`cgbench.cg_md`).

    .venv/bin/python -m pytest benchmarks/test_pmf_speed.py --benchmark-enable

One force-matching step (loss, gradient through the forces, Adam update) on a batch of ala2
frames at each CG resolution with the default SchNet (hidden 64, 3 interactions, 32 RBFs, 0.5 nm),
and STEPS CG Langevin steps of 64 replicas; float32, compiled outside the timing. ``extra_info``
gives frames per second of training and ns/day of CG MD (aggregate over the batch).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgbench.cg_md import bead_masses
from cgbench.force_matching import force_matching_loss
from cgbench.training import TrainingSettings, make_optimizer
from cgbench.langevin import run_langevin
from cgbench.peptides import Peptide, build_peptide
from cgbench.pmf import PeptidePMF, SchNet, bead_graph, energy_and_forces, fit_prior
from cgbench.resolutions import cg_mapping, map_positions

KT = 2.494
BATCH = 256
STEPS = 100


@pytest.fixture(scope="module")
def ala2():
    topology, positions = build_peptide(Peptide("ala2", "A"))
    frames = positions + 0.01 * np.random.default_rng(0).standard_normal((BATCH, *positions.shape))
    return topology, frames


def _model(topology, frames, resolution):
    mapping = cg_mapping(topology, resolution)
    x = np.asarray(map_positions(frames, mapping), np.float32)
    model = PeptidePMF(fit_prior(x, bead_graph(mapping), kT=KT), SchNet(mapping.n_beads, key=jax.random.key(0)), KT)
    return mapping, model, x


@pytest.mark.parametrize("resolution", ["core_beta", "heavy_atom", "all_atom"])
def test_force_matching_step(benchmark, ala2, resolution):
    """One Adam step of force matching on BATCH frames."""
    _, model, x = _model(*ala2, resolution)
    forces = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape) * 500.0, jnp.float32)
    x = jnp.asarray(x)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = make_optimizer(TrainingSettings(), 1000)
    opt_state = optimizer.init(params)

    @eqx.filter_jit
    def step(params, opt_state):
        loss, grads = eqx.filter_value_and_grad(
            lambda p: force_matching_loss(eqx.combine(p, static), x, forces, 1.0 / KT))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    def run():
        return jax.block_until_ready(step(params, opt_state)[2])

    run()  # compile
    benchmark(run)
    benchmark.extra_info["frames_per_s"] = BATCH / benchmark.stats.stats.mean


@pytest.mark.parametrize("resolution, timestep_fs", [("core_beta", 2.0), ("heavy_atom", 2.0), ("all_atom", 0.5)])
def test_cg_md(benchmark, ala2, resolution, timestep_fs):
    """STEPS CG Langevin steps of 64 replicas under a PMF; aggregate ns/day in extra_info."""
    mapping, model, x = _model(*ala2, resolution)
    forces_fn = eqx.Partial(energy_and_forces, model)
    start = jnp.asarray(x[:64])

    def run():
        out = run_langevin(forces_fn, start, steps=STEPS, report_interval=STEPS, dt=timestep_fs * 1e-3, friction=1.0,
                           temperature=300.0, masses=bead_masses(mapping), key=jax.random.key(0))
        return jax.block_until_ready(out["state"])

    run()  # compile
    benchmark(run)
    benchmark.extra_info["ns_per_day_aggregate"] = 64 * STEPS * timestep_fs * 1e-6 / benchmark.stats.stats.mean * 86400
