"""CG-BG inference (:mod:`cgbench.cgbg`): 10⁴ proposals with exact log q and their PMF energy.

    .venv/bin/python -m pytest benchmarks/test_cgbg_speed.py --benchmark-enable

CG-BG's "inference time per 10⁴ samples" — sampling, log q and PMF energy — for the config's flow
(8 RQS coupling layers, MLP 2 × 128, 10 knots) at each resolution and representation of ala2, with
the default SchNet PMF; float32, compiled outside the timing. ``extra_info`` gives proposals per second.
"""

import jax
import jax.random as jr
import numpy as np
import pytest

from cgbench import cgbg
from cgbench.peptides import Peptide, build_peptide
from cgbench.pmf import PeptidePMF, SchNet, bead_graph, fit_prior
from cgbench.resolutions import cg_mapping, map_positions

KT = 2.494
N = 10_000
FLOW = {"layers": 8, "mlp_depth": 2, "mlp_width": 128, "knots": 10}


@pytest.fixture(scope="module")
def ala2():
    topology, positions = build_peptide(Peptide("ala2", "A"))
    frames = positions + 0.01 * np.random.default_rng(0).standard_normal((256, *positions.shape))
    return topology, frames


@pytest.mark.parametrize("representation", cgbg.REPRESENTATIONS)
@pytest.mark.parametrize("resolution", ["core_beta", "heavy_atom", "all_atom"])
def test_inference(benchmark, ala2, resolution, representation):
    """N proposals with log q and PMF energy (one jitted call)."""
    topology, frames = ala2
    mapping = cg_mapping(topology, resolution)
    x = np.asarray(map_positions(frames, mapping), np.float32)
    model = PeptidePMF(fit_prior(x, bead_graph(mapping), kT=KT), SchNet(mapping.n_beads, key=jr.key(0)), KT)
    flow = cgbg.new_flow(cgbg.fit_coordinates(x, mapping, representation, interval=5.0), FLOW, key=jr.key(1))
    infer = jax.jit(lambda key: (lambda s: (jax.vmap(model)(s[0]), s[1]))(flow.sample_and_log_proposal(key, N)))

    def run():
        return jax.block_until_ready(infer(jr.key(2)))

    run()  # compile
    benchmark(run)
    benchmark.extra_info["proposals_per_s"] = N / benchmark.stats.stats.mean
