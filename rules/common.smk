# Helpers shared by every rule: the validated configuration, paths and resources.
import json
import sys

from snakemake.utils import min_version

min_version("9.0")

from cgbench.config import ConfigError, config_hash, resolve, write_resolved
from cgbench.peptides import peptide_from_config
from cgbench.report import synthetic_figure_kinds
from cgbench.tempering import METHOD_OF_SCHEDULE

# Validate before any job runs: a wrong key, value or target name stops here, named.
try:
    CONFIG = resolve(config)
except ConfigError as error:
    sys.exit(f"cgbench: config.yaml is invalid; nothing was run.\n{error}")

RESULTS = "results"
# Jobs read the resolved configuration from this file (its name carries the config hash). Rules
# declare what they depend on as params — the synthetic stages the config hash, the peptide
# stages the peptide's own settings — so Snakemake reruns a job whose configuration changed.
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
PEPTIDES = CONFIG["peptides"]
PEPTIDE_STRUCTURE = f"{RESULTS}/peptides/{{peptide}}/structure.pdb"
PEPTIDE_SYSTEM = f"{RESULTS}/peptides/{{peptide}}/system_{{solvent}}.xml"
PEPTIDE_SOLVATED = f"{RESULTS}/peptides/{{peptide}}/solvated.pdb"
SYNTHETIC_TABLES = [f"{RESULTS}/tables/{name}" for name in
                    ("synthetic.csv", "synthetic.md", "tempering.csv", "tempering.md")]
TIMING_TABLES = [f"{RESULTS}/tables/timing.csv", f"{RESULTS}/tables/timing.md"]
# Snakemake benchmark file of every job of the enabled stages (results/benchmarks/<rule>/<job>.tsv):
# each rules file adds its own after the rule; rules/timing.smk gathers them into timing.csv.
BENCHMARKS = []


wildcard_constraints:
    target="|".join(TARGETS),
    peptide="|".join(PEPTIDES) or "(?!)",  # (?!) matches nothing: no peptides configured
    solvent="vacuum|obc1|obc2|explicit",
    method="|".join(SCHEDULE_OF_METHOD),


def ecg_methods(target):
    """ECG runs of a target: one per configured schedule, plus the no-tempering ablation."""
    methods = [METHOD_OF_SCHEDULE[s] for s in CONFIG["synthetic"]["schedules"]]
    if target in CONFIG["synthetic"]["no_tempering_ablation"]:
        methods.append("ecg_no_tempering")
    return methods


def peptide_solvents(name):
    """Solvents a peptide is simulated in: vacuum, explicit water and its implicit baselines."""
    return ["vacuum", *peptide_from_config(name, CONFIG).implicit_solvents, "explicit"]


def peptide_settings(wildcards):
    """The peptide's own settings (defaults overlaid), as params: changing them reruns its jobs
    (and only its jobs, unlike the whole-config hash of the synthetic rules)."""
    return json.dumps(peptide_from_config(wildcards.peptide, CONFIG).to_dict(), sort_keys=True)


PEPTIDE_SYSTEMS = [PEPTIDE_SYSTEM.format(peptide=name, solvent=solvent)
                   for name in PEPTIDES for solvent in peptide_solvents(name)]


def synthetic_figures(target):
    """{kind: PNG} of the figures drawn for a synthetic target (each an output, for the report)."""
    kinds = synthetic_figure_kinds(target, CONFIG["targets"][target], with_models=bool(ecg_methods(target)))
    return {what: f"{RESULTS}/figures/{target}_{what}.png" for what in kinds}


def model_inputs(wildcards):
    return [ECG_MODELS.format(target=wildcards.target, method=m) for m in ecg_methods(wildcards.target)]


def models_argument(wildcards):
    """`METHOD=DIR ...` for the command line."""
    return " ".join(f"{m}={RESULTS}/{wildcards.target}/ecg/{m}" for m in ecg_methods(wildcards.target))


def rule_resources(name):
    """Cluster resources of a rule from `resources:` in the config (runtime in minutes)."""
    spec = CONFIG["resources"][name]
    return {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"]}
