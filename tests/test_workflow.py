"""Integration: the `smoke` DAG of the synthetic targets runs through Snakemake end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--cores", "2", "--config", "preset=smoke"]
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
def test_smoke_dag_rerun_is_a_no_op(smoke_run):
    workdir, command = smoke_run
    result = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
