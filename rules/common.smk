# Helpers shared by every rule: the validated configuration, paths and resources.
import sys

from snakemake.utils import min_version

min_version("9.0")

from cgbench.config import ConfigError, config_hash, resolve, write_resolved
from cgbench.tempering import METHOD_OF_SCHEDULE

# Validate before any job runs: a wrong key, value or target name stops here, named.
try:
    CONFIG = resolve(config)
except ConfigError as error:
    sys.exit(f"cgbench: config.yaml is invalid; nothing was run.\n{error}")

RESULTS = "results"
# Jobs read the resolved configuration from this file; its name carries the config hash,
# so a changed configuration changes the jobs' parameters and Snakemake reruns them.
RESOLVED_CONFIG = str(write_resolved(CONFIG, f"{RESULTS}/.config"))
# The interpreter running Snakemake is the one with cgbench installed (no PATH lookup).
CGBENCH = f"{sys.executable} -m cgbench --config {RESOLVED_CONFIG}"

TARGETS = CONFIG["synthetic"]["targets"]
SCHEDULE_OF_METHOD = {method: schedule for schedule, method in METHOD_OF_SCHEDULE.items()}
GPU = 1 if CONFIG["device"] == "gpu" else 0

NUTS_SAMPLES = f"{RESULTS}/{{target}}/nuts/samples.npz"
ECG_MODELS = f"{RESULTS}/{{target}}/ecg/{{method}}/models.json"
EVALUATION = f"{RESULTS}/{{target}}/evaluation.csv"
FIGURES_MANIFEST = f"{RESULTS}/figures/{{target}}.manifest.json"
SYNTHETIC_TABLES = [f"{RESULTS}/tables/{name}" for name in
                    ("synthetic.csv", "synthetic.md", "tempering.csv", "tempering.md")]


wildcard_constraints:
    target="|".join(TARGETS),
    method="|".join(SCHEDULE_OF_METHOD),


def ecg_methods(target):
    """ECG runs of a target: one per configured schedule, plus the no-tempering ablation."""
    methods = [METHOD_OF_SCHEDULE[s] for s in CONFIG["synthetic"]["schedules"]]
    if target in CONFIG["synthetic"]["no_tempering_ablation"]:
        methods.append("ecg_no_tempering")
    return methods


def model_inputs(wildcards):
    return [ECG_MODELS.format(target=wildcards.target, method=m) for m in ecg_methods(wildcards.target)]


def models_argument(wildcards):
    """`METHOD=DIR ...` for the command line."""
    return " ".join(f"{m}={RESULTS}/{wildcards.target}/ecg/{m}" for m in ecg_methods(wildcards.target))


def rule_resources(name):
    """Cluster resources of a rule from `resources:` in the config (runtime in minutes)."""
    spec = CONFIG["resources"][name]
    return {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"]}
