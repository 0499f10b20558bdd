"""Profiles: `snakemake --lint` through each, every key commented, and what each selects."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"
JAX_RULES = {"nuts", "ecg_train", "evaluate"}

# Lints accepted by design, with the reason; any other lint fails the test.
ACCEPTED = {
    "Specify a conda environment or container for each rule.":
        "one environment for the whole workflow (pyproject.toml, envs/), chosen by the profile",
    "Mixed rules and functions in same snakefile.":
        "rules/common.smk holds the helpers, as the lint itself advises; its wildcard_constraints count as a rule",
}
# Shell commands may use these globals: the cgbench command (interpreter + resolved config) and
# the results folder; everything else goes through input/output/params.
SHELL_GLOBALS = {"CGBENCH", "RESULTS"}


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _lints(text: str) -> list[tuple[str, str]]:
    """(where, title) of every lint in `snakemake --lint` text output."""
    out, where = [], None
    for line in text.splitlines():
        if line.startswith("Lints for "):
            where = line[len("Lints for "):].rstrip(":")
        elif re.match(r"^    \* ", line):
            out.append((where, line[6:].rstrip(":")))
    return out


@pytest.mark.parametrize("profile", ["local", "slurm-gpu"])
def test_lint_through_profile(tmp_path, profile):
    result = _snakemake(tmp_path, "--lint", "--profile", str(PROFILES / profile))
    text = result.stdout + result.stderr
    # The workflow parsed with this profile and was linted (exit 1 means: lints were printed).
    assert result.returncode in (0, 1) and "Lints for rule nuts" in text, text[-3000:]
    assert not re.search(r"Traceback|WorkflowError|SyntaxError|Exception", text), text[-3000:]
    unexpected = []
    for where, title in _lints(text):
        shell_global = re.fullmatch(r"Shell command directly uses variable (\w+) from outside of the rule", title)
        if title in ACCEPTED or (shell_global and shell_global[1] in SHELL_GLOBALS):
            continue
        unexpected.append(f"{where}: {title}")
    assert not unexpected, "\n".join(unexpected)


def _uncommented_keys(path: Path) -> list[str]:
    """Keys of a profile YAML with neither a comment line just above nor an inline comment."""
    lines = path.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        key = re.match(r"^\s*([\w-]+):", line)
        if not key:
            continue
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if "#" not in line and not above.lstrip().startswith("#"):
            missing.append(f"{path.name}:{i + 1}: {key[1]}")
    return missing


@pytest.mark.parametrize("path", sorted(PROFILES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(PROFILES)))
def test_every_profile_key_is_commented(path):
    assert yaml.safe_load(path.read_text())
    assert _uncommented_keys(path) == []


def test_uncommented_key_is_caught(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("# cores to use\ncores: 2\n\nprintshellcmds: true\nlatency-wait: 5  # seconds\n")
    assert _uncommented_keys(path) == ["config.yaml:4: printshellcmds"]


def _gpu_by_rule(text: str) -> dict[str, set[int]]:
    """Rule name -> the `gpu` resource values of its jobs in a dry run."""
    out: dict[str, set[int]] = {}
    for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S):
        gpu = re.search(r"resources: .*\bgpu=(\d+)", body)
        if gpu:
            out.setdefault(rule, set()).add(int(gpu[1]))
    return out


def test_slurm_gpu_profile_selects_gpu_stack_and_slurm(tmp_path):
    # --config on the command line extends the profile's device-gpu.yaml, it does not replace it.
    result = _snakemake(tmp_path, "--profile", str(PROFILES / "slurm-gpu"), "--dry-run", "--config", "preset=smoke")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert "device-gpu.yaml" in text
    gpu = _gpu_by_rule(text)
    assert {rule: gpu[rule] for rule in JAX_RULES} == {rule: {1} for rule in JAX_RULES}
    settings = yaml.safe_load((PROFILES / "slurm-gpu" / "config.yaml").read_text())
    assert settings["executor"] == "slurm" and settings["slurm-status-command"] == "squeue"
    # The plugin switches back to sacct when MinJobAge (300 s by default) < 3 x the first wait.
    assert 3 * settings["slurm-init-seconds-before-status-checks"] <= 300
    assert "gres" not in str(settings.get("default-resources", {})) + str(settings.get("set-resources", {}))
    partitions = yaml.safe_load((PROFILES / "slurm-gpu" / settings["slurm-partition-config"]).read_text())
    assert partitions["partitions"]["cpu"]["max_gpu"] == 0 < partitions["partitions"]["gpu"]["max_gpu"]


def test_local_profile_runs_on_cpu(tmp_path):
    result = _snakemake(tmp_path, "--profile", str(PROFILES / "local"), "--dry-run")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    gpu = _gpu_by_rule(text)
    assert {rule: gpu[rule] for rule in JAX_RULES} == {rule: {0} for rule in JAX_RULES}
