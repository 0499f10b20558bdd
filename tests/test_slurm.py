"""Integration: the `smoke` synthetic DAG (every synthetic target) through profiles/slurm-gpu, every job sent with sbatch.

Needs a reachable SLURM with partitions `cpu` and `gpu` and a (fake) GPU on `gpu`, as started
by `.ci/slurm-up`. Skipped when there is none, unless CGBENCH_REQUIRE_SLURM=1 (set by `.ci/run`),
which makes a missing SLURM a failure. The profile is used as it is, with two overrides for a
one-node test cluster: the first status check after 5 s (jobs take seconds, not hours), and
successful jobs' SLURM logs kept for inspection. The run is bounded by `timeout`, since a
Snakemake run waiting on SLURM does not stop on SIGTERM.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ci_log

from cgbench.report import synthetic_figure_kinds

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm-gpu"
TIMEOUT_S = 1500
# Rules whose jobs run JAX: with `device: gpu` (the profile's device-gpu.yaml) each asks for a GPU.
GPU_RULES = {"nuts", "ecg_train", "evaluate"}

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def _slurm_missing() -> str | None:
    """Why no usable SLURM is reachable, or None."""
    if not (shutil.which("sbatch") and shutil.which("sinfo")):
        return "no sbatch/sinfo on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %G %t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()[:200]}"
    partitions = {line.split()[0].rstrip("*"): line for line in out.stdout.splitlines() if line.strip()}
    if not {"cpu", "gpu"} <= set(partitions):
        return f"partitions cpu and gpu needed, found {sorted(partitions)}"
    if "gpu" not in partitions["gpu"].split()[1]:
        return "partition gpu has no GPU (gres)"
    return None


def _squeue(run_id: str) -> pd.DataFrame:
    fields = "JobID:20,Partition:20,tres-per-job:30,State:20,TimeUsed:12,Comment:80"
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id, "-O", fields],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["job", "partition", "tres", "state", "time", "comment"])


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    missing = _slurm_missing()
    if missing:
        if os.environ.get("CGBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"CGBENCH_REQUIRE_SLURM=1 but no usable SLURM: {missing} (start one with .ci/slurm-up)")
        pytest.skip(f"no SLURM: {missing}")
    workdir = tmp_path_factory.mktemp("slurm")
    # The whole synthetic stage (double well, both Gaussian mixtures, both schedules, the
    # no-tempering ablation; GPU and CPU rules): no peptide targets and no PMFs (Müller-Brown's
    # included), so jobs.csv gathers just its jobs. The peptide stages are the same executor path
    # (tests/test_workflow.py runs them all locally).
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    targets = config["synthetic"]["targets"]
    config["peptides"] = {}
    config["ecg_peptides"]["targets"] = []
    config["pmf"]["data"] = []
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = ["timeout", "-k", "30", str(TIMEOUT_S),
               sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--profile", str(PROFILE), "--config", "preset=smoke",
               "--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs",
               # The synthetic stage: its tables and figures, and the table of all its jobs.
               "results/tables/synthetic.csv", "results/tables/tempering.csv", "results/tables/jobs.csv",
               *[f"results/figures/{target}.manifest.json" for target in targets]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S + 120)
    log = result.stdout + result.stderr
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    run_id = run_id[1] if run_id else None
    if result.returncode != 0 and run_id:  # cancel only this run's jobs, if any are left
        subprocess.run(["scancel", "--name", run_id], capture_output=True, timeout=60)
    return result, log, run_id, workdir, config


def test_smoke_dag_completes_through_sbatch(slurm_run, request):
    result, log, run_id, workdir, config = slurm_run
    targets = config["synthetic"]["targets"]
    assert result.returncode == 0, f"exit {result.returncode}\n{log[-6000:]}"
    assert run_id, "the SLURM plugin did not report a run ID"
    jobs = _squeue(run_id)
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    ci_log(request, f"--- SLURM smoke DAG (run {run_id}): {len(submitted)} jobs through sbatch ---\n"
                    + jobs.to_string(index=False) + "\n"
                    + next(line for line in reversed(log.splitlines()) if "steps (100%) done" in line))

    timing = pd.read_csv(workdir / "results" / "tables" / "jobs.csv")
    # Every benchmarked job was submitted with sbatch and completed; only `jobs` ran locally.
    assert len(submitted) == len(timing) == len(jobs)
    assert set(jobs["job"]) == set(submitted)
    assert (jobs["state"] == "COMPLETED").all(), jobs.to_string()
    assert "localrule jobs" in log

    # GPU path: JAX jobs asked for one GPU (--gpus=1) and landed on the GPU partition; the
    # rest (tables, figures) asked for none and went to the CPU partition.
    rule = jobs["comment"].str.extract(r"^rule_(.+?)(?:_wildcards_.*)?$")[0]
    gpu = rule.isin(GPU_RULES)
    assert gpu.sum() == timing["rule"].isin(GPU_RULES).sum() > 0
    assert (jobs.loc[gpu, "partition"] == "gpu").all() and (jobs.loc[gpu, "tres"] == "gres:gpu:1").all()
    assert (jobs.loc[~gpu, "partition"] == "cpu").all() and (jobs.loc[~gpu, "tres"] == "N/A").all()
    assert set(rule[~gpu]) == {"synthetic_tables"} | {f"synthetic_figures_{target}" for target in targets}


def test_outputs_and_timing_of_the_slurm_run(slurm_run):
    result, _, _, workdir, config = slurm_run
    targets = config["synthetic"]["targets"]
    assert result.returncode == 0
    results = workdir / "results"
    table = pd.read_csv(results / "tables" / "synthetic.csv")
    assert set(table["target"]) == set(targets) == {"double_well", "gmm_2d", "gmm_10d"}
    for target in targets:
        kinds = synthetic_figure_kinds(target, config["targets"][target])
        assert kinds
        for kind in kinds:
            assert (results / "figures" / f"{target}_{kind}.png").stat().st_size > 10_000
    timing = pd.read_csv(results / "tables" / "jobs.csv")
    assert set(timing["rule"]) == {"nuts", "ecg_train", "evaluate", "synthetic_tables", "synthetic_figures"}
    assert (timing["wall_s"] > 0).all()
    # The jobs ran under device: gpu and said so: JAX found no real GPU behind the fake one.
    assert "JAX found no GPU" in (results / "logs" / "ecg" / "double_well_ecg.log").read_text()
