"""The CG-BG stage (cgbench.cgbg_stage) and its tables (cgbench.cgbg_tables)."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pandas as pd
import pytest

from cgbench import cgbg
from cgbench import muller_brown as mb
from cgbench.cgbg_stage import (METRICS, load_flow, method_pmf, run_muller_brown_cgbg, run_peptide_cgbg,
                                 train_flow_on_features)
from cgbench.cgbg_tables import (ACCURACY_COLUMNS, TIMING_COLUMNS, accuracy_table, baseline_rows, cost_figure,
                                 peptide_figure, timing_table)
from cgbench.peptides import Peptide, build_peptide
from cgbench.pmf import PeptidePMF, SchNet, bead_graph, fit_prior
from cgbench.resolutions import cg_mapping, map_positions, phi_psi
from cgbench.training import TrainingSettings

KT = 2.494
TINY = {"representations": ["cartesian", "internal"],
        "flow": {"layers": 2, "mlp_depth": 1, "mlp_width": 8, "knots": 4},
        "interval": 5.0, "weighted": True,
        "training": {"epochs": 2, "batch_size": 32, "learning_rate": 1e-3, "final_learning_rate": 0.01, "clip_norm": 10.0,
                     "patience": 5, "validation_fraction": 0.2, "blocks": 4, "max_nonfinite": 20},
        "samples": 1000, "inference_samples": 200, "bootstrap": 5}


@pytest.fixture(scope="module")
def ala2_data():
    """ala2 core_beta: 240 jiggled frames of 2 'replicas' (a stand-in dataset) and a prior-only PMF."""
    topology, positions = build_peptide(Peptide("A", "A"))
    mapping = cg_mapping(topology, "core_beta")
    rng = np.random.default_rng(0)
    x = np.asarray(map_positions(positions + 0.01 * rng.standard_normal((240, *positions.shape)), mapping), np.float32)
    phi, psi = (np.asarray(a) for a in phi_psi(x, mapping))
    data = {"positions": x, "forces": np.zeros_like(x), "weights": np.full(len(x), 1 / len(x)),
            "replica": np.repeat([0, 1], 120), "time_ps": np.tile(np.arange(1, 121) * 0.5, 2), "phi": phi,
            "psi": psi, "kT": KT, "run": "obc2_metad", "peptide": "ala2"}
    pmf = PeptidePMF(fit_prior(x, bead_graph(mapping), kT=KT), SchNet(mapping.n_beads, hidden=8, interactions=1,
                                                                      n_rbf=4, key=jr.key(0)), KT)
    return mapping, data, pmf


@pytest.fixture(scope="module")
def peptide_run(tmp_path_factory, ala2_data):
    mapping, data, pmf = ala2_data
    out = tmp_path_factory.mktemp("cgbg") / "ala2" / "cgbg" / "core_beta" / "biased"
    # A second PMF that differs (bond, angle and torsion terms halved), so rows can tell them apart.
    stiffness = lambda m: (m.prior.bond_k, m.prior.angle_k, m.prior.dihedral_cos, m.prior.dihedral_sin)  # noqa: E731
    softer = eqx.tree_at(stiffness, pmf, tuple(a / 2 for a in stiffness(pmf)))
    scores = run_peptide_cgbg(data, mapping, data="biased", pmfs={"biased": pmf, "unbiased": softer}, reference=data,
                              spec=TINY, training_frames=1000, kT=KT, seed=0, out=out, system="ala2", progress=False)
    return out, scores


def test_peptide_job_writes_every_row_and_artefact(peptide_run, ala2_data):
    out, scores = peptide_run
    mapping, data, _ = ala2_data
    methods = {(r["method"], r["pmf"]) for r in scores["rows"]}
    assert methods == {(f"cgbg-{rep}", pmf) for rep in TINY["representations"] for pmf in ("biased", "unbiased")} | \
        {(f"flow-unweighted-{rep}", "") for rep in TINY["representations"]}
    for row in scores["rows"]:
        assert all(np.isfinite(row[m]) for m in METRICS if not (row["method"].startswith("flow") and "ess" in m))
        assert 0 <= row["js"] <= np.log(2) + 1e-12 and row["samples"] == TINY["samples"]
    assert json.loads((out / "scores.json").read_text()) == json.loads(json.dumps(scores))
    for rep in TINY["representations"]:
        proposals = np.load(out / f"proposals_{rep}.npz")
        assert proposals["phi"].shape == (TINY["samples"], 1)
        assert {"log_q", "log_w_biased", "log_w_unbiased", "d_form"} <= set(proposals.files)
        flow = load_flow(out / rep / "flow.eqx", mapping)
        x = jnp.asarray(data["positions"][:3])
        assert np.isfinite(np.asarray(jax.vmap(flow.log_proposal)(x))).all()
        assert not (out / rep / "checkpoint.json").exists()
    timing = {t["representation"]: t for t in scores["timing"]}
    assert set(timing) == set(TINY["representations"]) and all(t["inference_s"] > 0 for t in timing.values())


@pytest.mark.parametrize("available, expected", [
    ({"biased", "unbiased"}, "biased"),      # CG-BG: PMF_B reweights the proposals of either data source
    ({"biased"}, "biased"),
    ({"unbiased"}, "unbiased"),              # no enhanced-sampling data configured
])
def test_method_pmf(available, expected):
    assert method_pmf(available) == expected


def test_peptide_job_refuses_no_pmf(tmp_path, ala2_data):
    mapping, data, _ = ala2_data
    with pytest.raises(ValueError, match="needs a biased or unbiased PMF"):
        run_peptide_cgbg(data, mapping, data="unbiased", pmfs={}, reference=data, spec=TINY,
                         training_frames=1000, kT=KT, seed=0, out=tmp_path, progress=False)


def test_load_flow_refuses_another_resolution(peptide_run, ala2_data):
    out, _ = peptide_run
    mapping, _, _ = ala2_data
    topology, _ = build_peptide(Peptide("A", "A"))
    with pytest.raises(ValueError, match="a flow of core_beta"):
        load_flow(out / "internal" / "flow.eqx", cg_mapping(topology, "heavy_atom"))


def test_flow_training_resumes_bit_identically(tmp_path, ala2_data):
    mapping, data, _ = ala2_data
    coords = cgbg.fit_coordinates(data["positions"], mapping, "internal", interval=5.0)
    u = cgbg.features(coords, data["positions"])
    settings = TrainingSettings(epochs=3, batch_size=32, patience=10, blocks=4)

    def train(workdir, stop=None):
        flow = cgbg.new_flow(coords, TINY["flow"], key=jr.key(0)).flow
        return train_flow_on_features(flow, u, data["replica"], settings=settings, key=jr.key(1), workdir=workdir,
                                      fingerprint={}, progress=False, **({"stop_after_epochs": stop} if stop else {}))

    whole = train(tmp_path / "a")
    first = train(tmp_path / "b", stop=1)
    assert not first["finished"] and first["epochs"] == 1
    resumed = train(tmp_path / "b")
    assert resumed["epochs"] == 3
    for a, b in zip(jax.tree.leaves(eqx.filter(whole["model"], eqx.is_inexact_array)),
                    jax.tree.leaves(eqx.filter(resumed["model"], eqx.is_inexact_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class ExactMullerBrownPMF(eqx.Module):
    """F(x) = −log ∫₀⁵⁰ exp(−V(x, y)) dy (kT = 1) by a 2001-point rule, in JAX, of x ``(1,)``."""

    def __call__(self, x):
        y = jnp.linspace(0.0, 50.0, 2001)
        return -jax.nn.logsumexp(-mb.potential(jnp.stack([jnp.full_like(y, x[0]), y], -1)))


def test_muller_brown_reweighting_with_the_exact_pmf_recovers_it(tmp_path):
    """Flow proposals from *biased* data reweighted with the exact PMF: CG-BG's PMF error falls from
    that of the biased distribution to sampling noise (negative control: the unweighted proposals)."""
    data = mb.generate_data(biased=True, trajectories=4, frames=2500, key=jr.key(0), equilibration_steps=1000)
    spec = {"flow": {"layers": 3, "mlp_depth": 1, "mlp_width": 16, "knots": 8}, "interval": 5.0,
            "training": {**TINY["training"], "epochs": 15, "batch_size": 128, "learning_rate": 3e-3, "patience": 30},
            "samples": 20000, "bootstrap": 10, "bins": 50}
    scores = run_muller_brown_cgbg(data, data="biased", pmfs={"biased": ExactMullerBrownPMF()}, training_frames=10000,
                                   spec=spec, seed=0, out=tmp_path, progress=False)
    rows = {r["method"]: r for r in scores["rows"]}
    # With every weight kept the reweighted histogram is the exact one (measured 0.001 kT²) ...
    assert rows["cgbg"]["pmf_error_all_weights"] < 0.05, rows["cgbg"]
    assert rows["flow-unweighted"]["pmf_error"] > 0.5, rows["flow-unweighted"]
    assert rows["cgbg"]["js"] < 0.25 * rows["flow-unweighted"]["js"] and rows["cgbg"]["ess"] > 0.3
    # ... CG-BG's 99th-percentile drop empties the tail bins these 10 000 frames hardly reach (7.7 kT²).
    assert rows["cgbg"]["pmf_error"] > rows["cgbg"]["pmf_error_all_weights"]


def test_baseline_rows_score_md_against_explicit():
    rng = np.random.default_rng(0)
    ref = {"phi": rng.normal(-1.5, 0.3, (4000, 1)), "psi": rng.normal(2.5, 0.3, (4000, 1)),
           "weights": np.full(4000, 1 / 4000)}
    same = {k: v.copy() for k, v in ref.items()}
    shifted = dict(same, phi=same["phi"] + 1.0)
    rows = {r["method"]: r for r in baseline_rows("ala2", {"explicit": ref, "obc1": same, "obc2": shifted},
                                                   bootstrap=5, seed=0)}
    assert rows["obc1"]["js"] == pytest.approx(0.0, abs=1e-12) and rows["obc2"]["js"] > 0.3
    assert np.isnan(rows["obc2"]["ess"]) and rows["obc2"]["reference"] == "explicit_unbiased"


TABLE_CONFIG = {"peptides": {"ala2": {"sequence": "A"}}, "pmf": {"environment": "obc2", "data": ["biased", "unbiased"]},
                "seed": 0, "preset": "smoke", "cgbg": {"bootstrap": 5}}


def test_tables_carry_published_numbers_and_efficiency(peptide_run, tmp_path):
    out, scores = peptide_run
    config = TABLE_CONFIG
    baseline = [{"system": "ala2", "resolution": "", "data": "unbiased", "method": "obc2", "pmf": "", "pair": 0,
                 "js": 0.02, "js_unc": 0.001, "pmf_error": 0.4, "pmf_error_unc": 0.01, "ess": np.nan, "ess_unc": np.nan,
                 "samples": 10, "reference": "explicit_unbiased"}]
    accuracy = accuracy_table([out], baselines=baseline, config=config)
    assert list(accuracy.columns) == ACCURACY_COLUMNS
    own = accuracy[(accuracy["method"] == "cgbg-internal") & (accuracy["pmf"] == "biased")].iloc[0]
    assert own["published_js"] == 0.0057 and own["published_ess"] == 0.4818         # ala2 core_beta biased
    other = accuracy[(accuracy["method"] == "cgbg-internal") & (accuracy["pmf"] == "unbiased")].iloc[0]
    assert np.isnan(other["published_js"])                                          # not CG-BG's pairing
    assert accuracy[accuracy["method"] == "obc2"].iloc[0]["published_pmf_error"] == 0.4028
    pmf_dir = tmp_path / "ala2" / "pmf" / "core_beta" / "biased"
    pmf_dir.mkdir(parents=True)
    (pmf_dir / "training.json").write_text(json.dumps({"kind": "peptide", "training_s": 12.5}))
    timing = timing_table([out], accuracy, pmf_folders=[pmf_dir],
                          md={"ala2": {"md_decorrelated_per_s": 2.0}}, config=config)
    assert list(timing.columns) == TIMING_COLUMNS and len(timing) == 2
    row = timing[timing["representation"] == "internal"].iloc[0]
    assert row["pmf_training_s"] == 12.5 and row["published_inference_min_per_1e4"] == 0.95
    t = next(t for t in scores["timing"] if t["representation"] == "internal")
    assert row["effective_samples_per_s"] == pytest.approx(own["ess"] * t["inference_samples"] / t["inference_s"])
    assert row["efficiency_ratio"] == pytest.approx(row["effective_samples_per_s"] / 2.0)
    accuracy.to_csv(tmp_path / "accuracy.csv", index=False)
    timing.to_csv(tmp_path / "timing.csv", index=False)
    assert cost_figure(tmp_path / "accuracy.csv", tmp_path / "timing.csv", tmp_path / "cost.png").stat().st_size > 0


@pytest.mark.parametrize("data, published_js, published_ess", [
    ("biased", 0.0057, 0.4818),     # CG-BG's "Core Beta (Biased)": flow on metadynamics, PMF_B
    ("unbiased", 0.0052, 0.5528),   # "Core Beta": flow on unbiased MD, also PMF_B (their ala2_cb_ub config)
])
def test_published_numbers_stand_beside_the_pmf_b_rows(peptide_run, tmp_path, data, published_js, published_ess):
    """Whatever data the flow learnt from, CG-BG's method reweights with PMF_B: the published numbers
    and the timing table's ESS and PMF training time belong to PMF_B, never to PMF_U (the
    simulation-free benchmark)."""
    out, scores = peptide_run
    folder = tmp_path / "ala2" / "cgbg" / "core_beta" / data
    folder.mkdir(parents=True)
    relabelled = {part: [{**row, "data": data} for row in scores[part]] for part in ("rows", "timing")}
    (folder / "scores.json").write_text(json.dumps(relabelled))
    accuracy = accuracy_table([folder], baselines=[], config=TABLE_CONFIG)
    reweighted = accuracy[accuracy["method"] == "cgbg-internal"].set_index("pmf")
    assert reweighted.loc["biased", "published_js"] == published_js
    assert reweighted.loc["biased", "published_ess"] == published_ess
    assert np.isnan(reweighted.loc["unbiased", "published_js"])
    pmf_folders = []
    for pmf, seconds in (("biased", 12.5), ("unbiased", 99.0)):
        pmf_folders.append(tmp_path / "ala2" / "pmf" / "core_beta" / pmf)
        pmf_folders[-1].mkdir(parents=True)
        (pmf_folders[-1] / "training.json").write_text(json.dumps({"kind": "peptide", "training_s": seconds}))
    timing = timing_table([folder], accuracy, pmf_folders=pmf_folders, md={}, config=TABLE_CONFIG)
    timing = timing.set_index("representation")
    assert timing.loc["internal", "ess"] == reweighted.loc["biased", "ess"]
    assert timing.loc["internal", "pmf_training_s"] == 12.5
    assert reweighted.loc["biased", "ess"] != reweighted.loc["unbiased", "ess"]   # the check can tell them apart


def test_peptide_figure(peptide_run, ala2_data, tmp_path):
    out, _ = peptide_run
    _, data, _ = ala2_data
    assert peptide_figure("ala2", [out], data, tmp_path / "fig.png").stat().st_size > 10_000


def test_a_trained_flow_is_loaded_not_retrained(tmp_path, ala2_data):
    """A job killed after its first representation redoes only the rest: same data, settings and key
    load the flow from its folder; another key trains afresh."""
    from cgbench.cgbg_stage import train_representation

    mapping, data, _ = ala2_data
    first, summary = train_representation(data, mapping, "internal", spec=TINY, key=jr.key(3), out=tmp_path,
                                          progress=False)
    stamp = (tmp_path / "history.csv").stat().st_mtime_ns
    again, summary_again = train_representation(data, mapping, "internal", spec=TINY, key=jr.key(3), out=tmp_path,
                                                progress=False)
    assert (tmp_path / "history.csv").stat().st_mtime_ns == stamp and summary_again == json.loads(json.dumps(summary))
    for a, b in zip(jax.tree.leaves(eqx.filter(first, eqx.is_inexact_array)),
                    jax.tree.leaves(eqx.filter(again, eqx.is_inexact_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    train_representation(data, mapping, "internal", spec=TINY, key=jr.key(4), out=tmp_path, progress=False)
    assert (tmp_path / "history.csv").stat().st_mtime_ns != stamp
