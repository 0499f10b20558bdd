# Helpers shared by every rule: the validated configuration, paths and resources.
import json
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

from cgbench.config import ConfigError, config_hash, resolve, write_resolved
from cgbench.datasets import DATASET_RESOLUTIONS
from cgbench.md import RUNS as MD_RUNS, run_environment, run_is_biased
from cgbench.systems import platform_name
from cgbench.peptides import peptide_from_config
from cgbench.pmf_training import DATA_SOURCES as PMF_DATA_SOURCES, data_run
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
MD_REPLICA = f"{RESULTS}/peptides/{{peptide}}/md/{{run}}/replica{{replica}}"
CG_DATASET = f"{RESULTS}/peptides/{{peptide}}/datasets/{{resolution}}/{{run}}.npz"
SIMULATION_ROWS = f"{RESULTS}/peptides/{{peptide}}/md/{{run}}/simulations.csv"
DIHEDRAL_FIGURE = f"{RESULTS}/figures/{{peptide}}_{{run}}_dihedrals.png"
PEPTIDE_NUTS = f"{RESULTS}/peptides/{{peptide}}/nuts/samples.npz"
NUTS_ROWS = f"{RESULTS}/peptides/{{peptide}}/nuts/simulations.csv"
NUTS_FIGURE = f"{RESULTS}/figures/{{peptide}}_nuts_dihedrals.png"
SIMULATION_TABLES = [f"{RESULTS}/tables/simulations.csv", f"{RESULTS}/tables/simulations.md"]
SYNTHETIC_TABLES = [f"{RESULTS}/tables/{name}" for name in
                    ("synthetic.csv", "synthetic.md", "tempering.csv", "tempering.md")]
JOB_TABLES = [f"{RESULTS}/tables/jobs.csv", f"{RESULTS}/tables/jobs.md"]
PEPTIDE_PMF = f"{RESULTS}/peptides/{{peptide}}/pmf/{{resolution}}/{{data}}"
PEPTIDE_PMF_FIGURE = f"{RESULTS}/figures/{{peptide}}_pmf.png"
MULLER_BROWN_DATA = f"{RESULTS}/muller_brown/data/{{data}}.npz"
MULLER_BROWN_PMF = f"{RESULTS}/muller_brown/pmf/{{data}}"
MULLER_BROWN_PMF_FIGURE = f"{RESULTS}/figures/muller_brown_pmf.png"
PEPTIDE_PMF_CG_MD = f"{PEPTIDE_PMF}/validation/cg_md.npz"
MULLER_BROWN_PMF_CURVES = f"{MULLER_BROWN_PMF}/validation/curves.npz"
PMF_TABLES = [f"{RESULTS}/tables/pmf.csv", f"{RESULTS}/tables/pmf.md"]
# Snakemake benchmark file of every job of the enabled stages (results/benchmarks/<rule>/<job>.tsv):
# each rules file adds its own after the rule; rules/jobs.smk gathers them into jobs.csv.
BENCHMARKS = []


wildcard_constraints:
    target="|".join(TARGETS),
    peptide="|".join(PEPTIDES) or "(?!)",  # (?!) matches nothing: no peptides configured
    solvent="vacuum|obc1|obc2|explicit",
    method="|".join(SCHEDULE_OF_METHOD),
    run="|".join(MD_RUNS),
    replica=r"\d+",
    resolution="|".join(DATASET_RESOLUTIONS),
    data="|".join(PMF_DATA_SOURCES),


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
    settings = peptide_from_config(wildcards.peptide, CONFIG).to_dict()
    settings.pop("md_steps_scale")  # MD length only: no reason to rebuild the structure and systems
    return json.dumps(settings, sort_keys=True)


def md_runs(name):
    """MD runs of a peptide: every run of `md.runs` with steps and replicas, in an environment the
    peptide is simulated in (explicit water, its implicit_solvents), unless its md_steps_scale is 0."""
    peptide = peptide_from_config(name, CONFIG)
    environments = {"explicit", *peptide.implicit_solvents}
    runs = CONFIG["md"]["runs"]
    return [run for run in MD_RUNS if peptide.md_steps_scale > 0 and run_environment(run) in environments
            and runs[run]["steps"] > 0 and runs[run]["replicas"] > 0]


def md_replica_dirs(peptide, run):
    return [MD_REPLICA.format(peptide=peptide, run=run, replica=r)
            for r in range(CONFIG["md"]["runs"][run]["replicas"])]


def md_run_settings(wildcards):
    """What one MD job depends on, as params (a change reruns that run's jobs only): the peptide's
    settings, the integration keys of `md`, the run's own steps, the bias for metadynamics."""
    md = CONFIG["md"]
    keys = ["timestep", "friction", "report_interval", "chunk_steps", "equilibration_steps", "minimisation_tolerance"]
    settings = {key: md[key] for key in keys}
    settings["run"] = md["runs"][wildcards.run]
    if run_is_biased(wildcards.run):
        settings["metadynamics"] = md["metadynamics"]
    return json.dumps({"peptide": peptide_from_config(wildcards.peptide, CONFIG).to_dict(), "md": settings,
                       "device": CONFIG["device"], "seed": CONFIG["seed"]}, sort_keys=True)


def peptide_nuts_settings(wildcards):
    """What the NUTS reference of a peptide depends on, as params."""
    return json.dumps({"peptide": peptide_from_config(wildcards.peptide, CONFIG).to_dict(),
                       "nuts": CONFIG["peptide_nuts"], "device": CONFIG["device"], "seed": CONFIG["seed"]},
                      sort_keys=True)


def peptide_nuts_enabled(name):
    return CONFIG["peptide_nuts"]["chains"] > 0 and peptide_from_config(name, CONFIG).md_steps_scale > 0


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


MD_OUTPUTS = [out for p in PEPTIDES for run in md_runs(p) for out in
              [CG_DATASET.format(peptide=p, resolution=res, run=run) for res in DATASET_RESOLUTIONS]
              + [DIHEDRAL_FIGURE.format(peptide=p, run=run)]]
MD_OUTPUTS += [NUTS_FIGURE.format(peptide=p) for p in PEPTIDES if peptide_nuts_enabled(p)]
SIMULATION_INPUTS = ([SIMULATION_ROWS.format(peptide=p, run=run) for p in PEPTIDES for run in md_runs(p)]
                     + [NUTS_ROWS.format(peptide=p) for p in PEPTIDES if peptide_nuts_enabled(p)])


# ----------------------------------------------------------------------------- PMFs (rules/pmf.smk)
PMF_ENVIRONMENT = CONFIG["pmf"]["environment"]


def pmf_peptides():
    """Peptides whose MD provides the PMF data and the reference: the PMF environment's runs."""
    needed = {data_run("unbiased", PMF_ENVIRONMENT), *(data_run(d, PMF_ENVIRONMENT) for d in CONFIG["pmf"]["data"])}
    return [p for p in PEPTIDES if CONFIG["pmf"]["resolutions"] and needed <= set(md_runs(p))]


PMF_PEPTIDES = pmf_peptides()


def pmf_combinations(peptide):
    """(resolution, data) of every PMF of a peptide."""
    return [(r, d) for r in CONFIG["pmf"]["resolutions"] for d in CONFIG["pmf"]["data"]]


def pmf_dataset(wildcards):
    """CG dataset of a data source's MD run: its PMF's training data (PMF_U cut by pmf_cut_dataset),
    the start frames of its CG MD and the frames of its CG-BG flows (uncut)."""
    return CG_DATASET.format(peptide=wildcards.peptide, resolution=wildcards.resolution,
                             run=data_run(wildcards.data, PMF_ENVIRONMENT))


def pmf_cut_dataset(wildcards):
    """PMF_U's data are cut to the biased run's length per replica: that run's dataset (or none)."""
    biased = data_run("biased", PMF_ENVIRONMENT)
    if wildcards.data != "unbiased" or biased not in md_runs(wildcards.peptide):
        return []
    return CG_DATASET.format(peptide=wildcards.peptide, resolution=wildcards.resolution, run=biased)


def pmf_reference_dataset(wildcards, resolution=None):
    """The reference MD of the PMF checks: all of the environment's unbiased run."""
    return CG_DATASET.format(peptide=wildcards.peptide, resolution=resolution or wildcards.resolution,
                             run=data_run("unbiased", PMF_ENVIRONMENT))


def pmf_settings(system, data, part):
    """What a PMF job depends on, as params: its block of the config (and the peptide's settings)."""
    if system == "muller_brown":
        spec = CONFIG["muller_brown"]["data" if part == "data" else "pmf"]
    else:
        spec = {"peptide": peptide_from_config(system, CONFIG).to_dict(), "environment": PMF_ENVIRONMENT,
                "pmf": {k: v for k, v in CONFIG["pmf"].items() if part == "cg_md" or k != "cg_md"}}
    return json.dumps({"spec": spec, "data": data, "seed": CONFIG["seed"], "device": CONFIG["device"]},
                      sort_keys=True)


PMF_FOLDERS = ([MULLER_BROWN_PMF.format(data=d) for d in CONFIG["pmf"]["data"]]
               + [PEPTIDE_PMF.format(peptide=p, resolution=r, data=d) for p in PMF_PEPTIDES
                  for r, d in pmf_combinations(p)])
PMF_OUTPUTS = (PMF_TABLES + [PEPTIDE_PMF_FIGURE.format(peptide=p) for p in PMF_PEPTIDES]
               + ([MULLER_BROWN_PMF_FIGURE] if CONFIG["pmf"]["data"] else [])) if PMF_FOLDERS else []


# ----------------------------------------------------------------------------- CG-BG (rules/cgbg.smk)
# One job per PMF (peptide, resolution, data): flows of every representation on the PMF's frames,
# proposals reweighted with every PMF of that peptide and resolution.
PEPTIDE_CGBG = f"{RESULTS}/peptides/{{peptide}}/cgbg/{{resolution}}/{{data}}"
MULLER_BROWN_CGBG = f"{RESULTS}/muller_brown/cgbg/{{data}}"
CGBG_TABLES = [f"{RESULTS}/tables/{name}" for name in ("accuracy.csv", "accuracy.md", "timing.csv", "timing.md")]
CGBG_FIGURE = f"{RESULTS}/figures/{{peptide}}_cgbg.png"
CGBG_COST_FIGURE = f"{RESULTS}/figures/cgbg_accuracy_cost.png"


def cgbg_pmf_models(wildcards):
    """``{data: model.eqx}`` of every PMF of the job's peptide and resolution (Müller-Brown: of x)."""
    if "peptide" not in wildcards.keys():
        return {d: f"{MULLER_BROWN_PMF.format(data=d)}/model.eqx" for d in CONFIG["pmf"]["data"]}
    return {d: f"{PEPTIDE_PMF.format(peptide=wildcards.peptide, resolution=wildcards.resolution, data=d)}/model.eqx"
            for d in CONFIG["pmf"]["data"]}


def cgbg_settings(system, data):
    """What a CG-BG job depends on, as params (besides its input files)."""
    if system == "muller_brown":
        spec = {"cgbg": CONFIG["muller_brown"]["cgbg"]}
    else:
        spec = {"cgbg": CONFIG["cgbg"], "training_frames": CONFIG["pmf"]["training_frames"],
                "peptide": peptide_from_config(system, CONFIG).to_dict()}
    return json.dumps({**spec, "data": data, "seed": CONFIG["seed"], "device": CONFIG["device"]}, sort_keys=True)


def cgbg_reference_dataset(peptide):
    """The reference MD of a peptide's CG-BG scores (φ, ψ): the PMF reference run, at core_beta."""
    return CG_DATASET.format(peptide=peptide, resolution="core_beta", run=data_run("unbiased", PMF_ENVIRONMENT))


def baseline_datasets(peptide):
    """``{solvent: dataset}`` of the implicit-solvent baselines and ``explicit``, the reference they are
    scored against (CG-BG's table): unbiased runs of the peptide, at core_beta (only φ, ψ are used)."""
    runs = set(md_runs(peptide))
    solvents = ["explicit"] + list(peptide_from_config(peptide, CONFIG).implicit_solvents)
    out = {s: CG_DATASET.format(peptide=peptide, resolution="core_beta", run=f"{s}_unbiased") for s in solvents
           if f"{s}_unbiased" in runs}
    return out if "explicit" in out and len(out) > 1 else {}


def reference_md_provenance(peptide):
    """Provenance sidecars of the reference MD's replicas (simulated ns and wall s of each)."""
    run = data_run("unbiased", PMF_ENVIRONMENT)
    return [f"{d}/frames.npz.provenance.json" for d in md_replica_dirs(peptide, run)]


CGBG_FOLDERS = ([MULLER_BROWN_CGBG.format(data=d) for d in CONFIG["pmf"]["data"]]
                + [PEPTIDE_CGBG.format(peptide=p, resolution=r, data=d) for p in PMF_PEPTIDES
                   for r, d in pmf_combinations(p)])
CGBG_OUTPUTS = (CGBG_TABLES + [CGBG_FIGURE.format(peptide=p) for p in PMF_PEPTIDES] + [CGBG_COST_FIGURE]
                if CGBG_FOLDERS else [])


# ----------------------------------------------------------------------------- data-free ECG of peptides
# (rules/ecg_peptides.smk): one training job per peptide x potential, NUTS references at T/beta.
ECG_PEPTIDE = f"{RESULTS}/peptides/{{peptide}}/ecg/{{potential}}"
ECG_PEPTIDE_REFERENCE = f"{RESULTS}/peptides/{{peptide}}/ecg/reference/beta_{{beta}}.npz"
ECG_PEPTIDE_TABLES = [f"{RESULTS}/tables/ecg_peptides.csv", f"{RESULTS}/tables/ecg_peptides.md"]
ECG_PEPTIDE_FIGURES = [f"{RESULTS}/figures/{{peptide}}_ecg_{{potential}}_{kind}.png" for kind in ("ramachandran", "rg_rmsd")]


def ecg_peptide_combinations():
    """(peptide, potential) pairs trained data-free; pmf_heavy_atom only where that PMF_B is built."""
    spec = CONFIG["ecg_peptides"]
    pmf_ready = {p for p in PMF_PEPTIDES if ("heavy_atom", "biased") in pmf_combinations(p)}
    return [(p, potential) for p in spec["targets"] for potential in spec["potentials"]
            if potential != "pmf_heavy_atom" or p in pmf_ready]


def ecg_peptide_system(wildcards):
    """The OpenMM system of the potential (energy and masses); the PMF uses the reference's masses."""
    solvent = wildcards.potential if wildcards.potential != "pmf_heavy_atom" else CONFIG["ecg_peptides"]["reference"]["solvent"]
    return PEPTIDE_SYSTEM.format(peptide=wildcards.peptide, solvent=solvent)


def ecg_peptide_pmf(wildcards):
    """The heavy-atom PMF_B model of pmf_heavy_atom (no input for the physical potentials)."""
    if wildcards.potential != "pmf_heavy_atom":
        return []
    return f"{PEPTIDE_PMF.format(peptide=wildcards.peptide, resolution='heavy_atom', data='biased')}/model.eqx"


def ecg_peptide_references(peptide):
    """``{beta: samples.npz}`` at every scored beta: beta = 1 is peptide_nuts when it samples the
    same solvent, every other beta (and beta = 1 otherwise) an ecg_peptide_reference job."""
    spec = CONFIG["ecg_peptides"]
    same = spec["reference"]["solvent"] == CONFIG["peptide_nuts"]["solvent"] and peptide_nuts_enabled(peptide)
    return {beta: (PEPTIDE_NUTS.format(peptide=peptide) if beta == spec["tempering"]["beta_target"] and same
                   else ECG_PEPTIDE_REFERENCE.format(peptide=peptide, beta=beta))
            for beta in spec["scored_betas"]}


def ecg_peptide_settings(wildcards):
    """What a peptide's ECG training depends on, as params."""
    spec = {k: v for k, v in CONFIG["ecg_peptides"].items() if k not in ("targets", "potentials", "reference", "evaluation")}
    return json.dumps({"ecg": spec, "peptide": peptide_from_config(wildcards.peptide, CONFIG).to_dict(),
                       "potential": wildcards.potential, "seed": CONFIG["seed"], "device": CONFIG["device"]},
                      sort_keys=True)


ECG_PEPTIDE_COMBINATIONS = ecg_peptide_combinations()
ECG_PEPTIDE_OUTPUTS = (ECG_PEPTIDE_TABLES + [f.format(peptide=p, potential=q) for p, q in ECG_PEPTIDE_COMBINATIONS
                                             for f in ECG_PEPTIDE_FIGURES]) if ECG_PEPTIDE_COMBINATIONS else []
