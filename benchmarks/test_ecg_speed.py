"""Speed of the ECG hot paths (pytest-benchmark; never asserted in the test suite).

    .venv/bin/cgbench bench                  # run, compare with the last saved run, save if it passes
    .venv/bin/cgbench bench --no-save -- -k ecg

Sizes are the `cpu` preset's (config.yaml), so numbers are comparable between commits.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from cgbench.config import load_config
from cgbench.ecg import make_optimizer, make_update
from cgbench.flows import flow_from_settings
from cgbench.targets import make_target

CONFIG = load_config(preset="cpu")


def _update_fixture(name):
    settings = CONFIG["ecg"][name]
    target = make_target(name, CONFIG["targets"][name])
    flow = flow_from_settings(settings["flow"], target.dim_z, key=jr.key(0))
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    optimizer = make_optimizer(settings)
    update = make_update(target, settings, static, optimizer)
    return update, params, optimizer.init(params)


@pytest.mark.parametrize("name", ["double_well", "gmm_10d"])
def test_ecg_update(benchmark, name):
    """One ECG update: flow forward + VJP, conditional chains for the mean force, Adam step."""
    update, params, opt_state = _update_fixture(name)
    beta = jnp.float32(0.5)
    jax.block_until_ready(update(params, opt_state, jr.key(0), beta))  # compile outside the timing

    def run():
        return jax.block_until_ready(update(params, opt_state, jr.key(1), beta))

    benchmark(run)


@pytest.mark.parametrize("name", ["double_well", "gmm_10d"])
def test_sample_and_log_prob_10k(benchmark, name):
    """10⁴ flow samples with their exact log-density."""
    settings = CONFIG["ecg"][name]
    flow = flow_from_settings(settings["flow"], CONFIG["targets"][name].get("dim_z", 1), key=jr.key(0))
    draw = eqx.filter_jit(lambda f, key: f.sample_and_log_prob(key, (10_000,)))
    jax.block_until_ready(draw(flow, jr.key(0)))

    benchmark(lambda: jax.block_until_ready(draw(flow, jr.key(1))))


def test_ecg_update_ala2_obc2(benchmark):
    """One data-free ECG update of ala2 (all-atom OBC2, JAX energy) at the cpu preset's sizes: 256 backbones,
    HMC of the 15 other atoms for each (cgbench.peptide_ecg)."""
    from cgbench.peptide_ecg import build_target, training_settings
    from cgbench.peptides import Peptide, build_peptide
    from cgbench.systems import create_system

    peptide = Peptide("ala2", "A")
    topology, positions = build_peptide(peptide)
    system = create_system(topology, "obc2", peptide, constraints="none")
    spec = CONFIG["ecg_peptides"]
    target = build_target("obc2", topology, positions, system, temperature=300.0, spec=spec)
    settings = training_settings(spec, target)
    flow = flow_from_settings(settings["flow"], target.dim_z, key=jr.key(0))
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    optimizer = make_optimizer(settings)
    update = make_update(target, settings, static, optimizer)
    opt_state = optimizer.init(params)
    beta = jnp.float32(0.5)
    jax.block_until_ready(update(params, opt_state, jr.key(0), beta))

    benchmark(lambda: jax.block_until_ready(update(params, opt_state, jr.key(1), beta)))
