"""Integration: the `smoke` DAG of the synthetic targets runs through Snakemake end to end.

The run is the README's one command (profiles/local, then the report), in a temporary folder.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--profile", str(REPO / "profiles" / "local"), "--cores", "2",
               "--config", "preset=smoke", "--report", "results/report.html", "--report-after-run"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, command


@pytest.mark.integration
def test_smoke_dag_writes_tables_and_figures(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    table = pd.read_csv(results / "tables" / "synthetic.csv")
    assert list(table.columns[:6]) == ["target", "method", "beta", "metric", "value", "uncertainty"]
    assert set(table["method"]) == {"exact", "nuts", "ecg", "ecg_adaptive", "ecg_no_tempering"}
    assert set(table["target"]) == {"double_well", "gmm_2d", "gmm_10d"}
    assert table.loc[table.method == "ecg_no_tempering", "target"].unique().tolist() == ["gmm_10d"]

    # The double-well mass with x1 > 0, flow alone and reweighted, at every β of every ECG run.
    dw = table[table.target == "double_well"]
    for method in ("ecg", "ecg_adaptive"):
        index = json.loads((results / "double_well" / "ecg" / method / "models.json").read_text())
        betas = sorted(m["beta"] for m in index["models"])
        for metric in ("mass_x1_positive", "mass_x1_positive_reweighted"):
            rows = dw[(dw.method == method) & (dw.metric == metric)]
            assert sorted(rows["beta"]) == pytest.approx(betas)
            assert rows["value"].between(0, 1).all()
    exact = dw[(dw.method == "exact") & (dw.metric == "mass_x1_positive") & (dw.beta == 1.0)]["value"]
    assert exact.item() == pytest.approx(0.0083486, abs=1e-6)

    provenance = json.loads((results / "tables" / "synthetic.csv.provenance.json").read_text())
    assert {"config_hash", "seed", "packages", "platform"} <= set(provenance)
    assert provenance["preset"] == "smoke"
    assert (results / "tables" / "tempering.md").read_text().count("fewer updates") == 3
    for png in ("double_well_tempering", "double_well_histograms", "gmm_2d_samples", "gmm_10d_pairs",
                "gmm_10d_marginals"):
        assert (results / "figures" / f"{png}.png").stat().st_size > 10_000
    assert list((results / "benchmarks").rglob("*.tsv"))


@pytest.mark.integration
def test_smoke_dag_simulates_ala2_and_writes_its_datasets(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    table = pd.read_csv(results / "tables" / "simulations.csv")
    runs = set(zip(table["environment"], table["kind"]))
    assert runs == {("explicit", "unbiased"), ("explicit", "metad"), ("obc1", "unbiased"), ("obc2", "unbiased"),
                    ("obc2", "metad"), ("obc2", "nuts")}
    assert set(table["peptide"]) == {"ala2"}
    pops = table[[c for c in table.columns if c.startswith("pop_") and not c.endswith("_err")]]
    assert np.allclose(pops.sum(axis=1), 1.0)
    assert (table.loc[table.kind != "nuts", "ns"] > 0).all()
    for resolution, beads in (("all_atom", 22), ("heavy_atom", 10), ("core_beta", 6)):
        for run in ("explicit_unbiased", "explicit_metad", "obc1_unbiased", "obc2_unbiased", "obc2_metad"):
            with np.load(results / "peptides" / "ala2" / "datasets" / resolution / f"{run}.npz") as data:
                assert data["positions"].shape[1:] == data["forces"].shape[1:] == (beads, 3)
                assert data["weights"].sum() == pytest.approx(1.0)
    assert (results / "figures" / "ala2_obc2_metad_dihedrals.png").stat().st_size > 10_000
    assert "Reweighted metadynamics" in (results / "tables" / "simulations.md").read_text()


@pytest.mark.integration
def test_smoke_dag_trains_and_checks_every_pmf(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    table = pd.read_csv(results / "tables" / "pmf.csv")
    rows = set(zip(table["system"], table["resolution"], table["data"]))
    assert rows == {("muller_brown", "x", d) for d in ("biased", "unbiased")} | {
        ("ala2", r, d) for r in ("core_beta", "all_atom") for d in ("biased", "unbiased")}
    peptides = table[table.system == "ala2"]
    assert np.isfinite(peptides[["validation_force_rmse", "force_floor_rmse", "cg_md_js"]]).all().all()
    assert ((peptides.cg_md_js > 0) & (peptides.cg_md_js <= np.log(2))).all()
    assert np.isfinite(table.loc[table.system == "muller_brown", "pmf_error"]).all()
    model = results / "peptides" / "ala2" / "pmf" / "core_beta" / "biased" / "model.eqx"
    assert json.loads(model.with_suffix(".json").read_text())["hyperparameters"]["data"]["run"] == "explicit_metad"
    assert (model.parent / "model.eqx.provenance.json").exists()
    for png in ("ala2_pmf", "muller_brown_pmf"):
        assert (results / "figures" / f"{png}.png").stat().st_size > 10_000


@pytest.mark.integration
def test_smoke_dag_writes_the_cgbg_accuracy_and_timing_tables(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    accuracy = pd.read_csv(results / "tables" / "accuracy.csv")
    peptide = accuracy[accuracy.system == "ala2"]
    methods = {f"{kind}-internal" for kind in ("cgbg", "flow-unweighted")}      # smoke: one representation
    assert set(peptide["method"]) == methods | {"obc1", "obc2"}
    cgbg = peptide[peptide.method.str.startswith("cgbg")]
    assert set(zip(cgbg.resolution, cgbg.data, cgbg.pmf)) == {
        (r, d, p) for r in ("core_beta", "all_atom") for d in ("biased", "unbiased")
        for p in ("biased", "unbiased")}
    assert np.isfinite(cgbg[["js", "js_unc", "pmf_error", "ess", "ess_unc"]]).all().all()
    assert (cgbg.ess > 0).all() and (cgbg.ess <= 1).all()
    # CG-BG's published numbers sit beside the method's rows only: PMF_B, whatever data the flow learnt from.
    method = cgbg[(cgbg.pmf == "biased") & (cgbg.resolution == "core_beta")].set_index("data")
    assert (method.loc["biased", "published_js"] == 0.0057) and (method.loc["unbiased", "published_js"] == 0.0052)
    assert cgbg[cgbg.pmf == "unbiased"].published_js.isna().all()
    assert set(accuracy.loc[accuracy.system == "muller_brown", "method"]) == {"cgbg", "flow-unweighted"}
    assert accuracy.config_hash.notna().sum() == len(accuracy) - 2           # the 2 baseline rows: none
    timing = pd.read_csv(results / "tables" / "timing.csv")
    assert len(timing[timing.system == "ala2"]) == 2 * 2                      # resolution × data
    assert (timing.inference_s_per_1e4 > 0).all() and timing.md_decorrelated_per_s.notna().any()
    assert (timing.loc[timing.system == "ala2", "pmf_training_s"] > 0).all()
    for png in ("ala2_cgbg", "cgbg_accuracy_cost"):
        assert (results / "figures" / f"{png}.png").stat().st_size > 10_000


@pytest.mark.integration
def test_smoke_dag_trains_ala2_data_free_and_scores_it(smoke_run):
    """Data-free ECG of ala2 on OBC2: a model at each scored β, reconstructed to all atoms, scored."""
    workdir, _ = smoke_run
    results = workdir / "results"
    table = pd.read_csv(results / "tables" / "ecg_peptides.csv")
    assert set(table.beta) == {1.0} and set(table.target) == {"ala2"} and set(table.potential) == {"obc2"}
    metrics = set(table.metric)
    assert {"js", "pmf_error", "basins_found", "basins_required", "rg_js", "rmsd_js", "d_form_fraction",
            "chain_acceptance", "basin_mass_alpha_R"} <= metrics
    assert (table.energy_evaluations > 0).all() and (table.wall_s > 0).all() and table.config_hash.notna().all()
    assert np.isfinite(table.loc[table.metric == "js", "value"]).all()
    samples = results / "peptides" / "ala2" / "ecg" / "obc2" / "samples"
    import mdtraj as md

    (structures,) = samples.glob("structures_beta_*.xtc")
    trajectory = md.load(str(structures), top=str(samples / "topology.pdb"))
    assert trajectory.n_atoms == 22 and trajectory.n_frames == 100
    assert "every basin found" in (results / "tables" / "ecg_peptides.md").read_text()
    for kind in ("ramachandran", "rg_rmsd"):
        assert (results / "figures" / f"ala2_ecg_obc2_{kind}.png").stat().st_size > 10_000


@pytest.mark.integration
def test_smoke_dag_rerun_is_a_no_op(smoke_run):
    workdir, command = smoke_run
    result = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def _report_objects(html: str) -> dict:
    """The `var NAME = {...}` JSON objects a Snakemake report embeds (results, categories, ...)."""
    decoder, out = json.JSONDecoder(), {}
    for match in re.finditer(r"var (\w+) = (?=\{)", html):
        try:
            out[match[1]] = decoder.raw_decode(html, match.end())[0]
        except ValueError:
            continue
    return out


@pytest.mark.integration
def test_report_shows_every_figure_with_caption_and_the_tables(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    objects = _report_objects((results / "report.html").read_text())
    entries = objects["results"]
    figures = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert len(figures) >= 7
    shown = {Path(path).name: entry for path, entry in entries.items() if entry["mime_type"] == "image/png"}
    assert sorted(shown) == figures
    for name, entry in shown.items():
        assert entry["data_uri"].startswith("data:image/png")
        assert len(re.sub("<[^>]+>", "", entry["caption"])) > 100, name
        assert name.startswith(entry["labels"]["target"] + "_"), name
    for table in ("synthetic.csv", "tempering.csv", "jobs.csv", "simulations.csv", "pmf.csv", "accuracy.csv",
                  "timing.csv", "ecg_peptides.csv"):
        entry = entries[f"results/tables/{table}"]
        assert entry["mime_type"] == "text/csv" and entry["caption"]
    assert {"Synthetic targets", "Simulations", "PMFs", "CG-BG", "Data-free ECG (peptides)",
            "Tables"} <= set(objects["categories"])


@pytest.mark.integration
def test_jobs_table_has_every_job(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    timing = pd.read_csv(results / "tables" / "jobs.csv")
    assert list(timing.columns) == ["rule", "target", "wall_s", "max_rss_mb", "cpu_s"]
    files = sorted(p.relative_to(results / "benchmarks").with_suffix("").as_posix()
                   for p in (results / "benchmarks").rglob("*.tsv"))
    assert sorted(timing["rule"] + "/" + timing["target"]) == files
    counts = timing["rule"].value_counts()
    synthetic = {"ecg_train": 7, "nuts": 3, "evaluate": 3, "synthetic_figures": 3, "synthetic_tables": 1}
    assert counts[list(synthetic)].to_dict() == synthetic
    # ala2, ala3, ala6: a structure each, vacuum + OBC1 + OBC2 systems, and explicit water.
    peptides = {"build_peptide": 3, "peptide_system": 9, "explicit_system": 3}
    assert counts[list(peptides)].to_dict() == peptides
    # MD of ala2 only at smoke: 1 + 1 + 1 + 2 + 1 replicas, a dataset job per run, NUTS in OBC2.
    md = {"md": 6, "cg_dataset": 5, "peptide_nuts": 1}
    assert counts[list(md)].to_dict() == md
    assert (timing["wall_s"] > 0).all() and (timing["max_rss_mb"] > 50).all()

