"""Shared fixtures: the configured synthetic targets and a helper that moves a flow off its init.

JAX's persistent compilation cache is pointed at a fresh temporary folder for the session:
every ``train_ecg`` call jits a new closure whose XLA program is identical to the previous
call's, and the cache turns those ~5 s recompilations into a lookup. The jobs that tests start
as subprocesses (the smoke Snakemake DAG, through sbatch too, and ``python -m cgbench``) share it
through the environment: many compile the same programs (PMF_B and PMF_U at one resolution, the
CG-BG and CG MD jobs of each). Measured on the smoke DAG (2 cores, loaded): its jobs' CPU time
751 s → 529 s. The compiled executables are the same, so no result changes; the folder is removed
at exit.

The suite runs on two pytest-xdist workers, whole files per worker (``-n 2 --dist loadfile`` in
pyproject.toml; ``-n 0`` for one process). The workers share the controller's compilation cache
(inherited through the environment; only the controller removes it), the two Snakemake DAG files
are scheduled first so that the rest of the suite fills the other worker around them, and what a
test hands to :func:`ci_log` is printed in the terminal summary by the controller — a worker's own
output never reaches the CI log.
"""

import atexit
import os
import shutil
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgbench.targets import DoubleWell, GaussianMixture

if "PYTEST_XDIST_WORKER" in os.environ and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _JAX_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]  # the controller's; it removes it
else:
    _JAX_CACHE = tempfile.mkdtemp(prefix="cgbench-test-jax-cache-")
    atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


#: Files started first: the Snakemake DAGs, minutes each (collection order is the workers' order).
FIRST_FILES = ("test_workflow.py", "test_slurm.py")
#: user_properties key of the lines :func:`ci_log` collects.
CI_LOG = "ci_log"


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def ci_log(request, text: str) -> None:
    """Print ``text`` in the terminal summary (the CI log), with or without xdist workers."""
    request.node.user_properties.append((CI_LOG, text))


def pytest_terminal_summary(terminalreporter):
    lines = [value for reports in terminalreporter.stats.values() for report in reports
             for key, value in getattr(report, "user_properties", ()) if key == CI_LOG
             and getattr(report, "when", "call") == "call"]
    if lines:
        terminalreporter.section("for the CI log")
        for text in lines:
            terminalreporter.write_line(text)


@pytest.fixture(scope="session")
def double_well():
    return DoubleWell()


@pytest.fixture(scope="session")
def gmm_2d():
    return GaussianMixture.from_seed(dim_z=2, dim_x=2, n_modes=3, variance=0.01, seed=0)


def perturb(module, scale, seed):
    """Add N(0, scale²) noise to every inexact array leaf of an equinox module.

    flowjax initialises splines near the identity, so tests of log-densities on a freshly
    made flow could hardly tell a wrong Jacobian from a right one; this breaks that. The
    noise is drawn with numpy (no per-shape JAX compilation).
    """
    rng = np.random.default_rng(seed)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    params = jax.tree.map(
        lambda a: jnp.asarray(np.asarray(a) + scale * rng.standard_normal(a.shape), a.dtype), params)
    return eqx.combine(params, static)
