# cgbench — one DAG from configuration to tables and figures.
#
#   snakemake --cores 2                          # default target: every table and figure
#   snakemake --cores 2 --config preset=cpu      # another scale preset
#   snakemake --cores 2 results/double_well/nuts/samples.npz   # one stage
#   snakemake --profile profiles/local           # everything, then results/report.html
#   snakemake --profile profiles/slurm-gpu       # the same on a SLURM cluster with GPUs
#
# The science is in src/cgbench; every rule is a thin call of the `cgbench` command line.

configfile: "config.yaml"


# Front page of the Snakemake report (snakemake --report results/report.html).
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/peptides.smk"
include: "rules/md.smk"
include: "rules/pmf.smk"
include: "rules/cgbg.smk"
include: "rules/nuts.smk"
include: "rules/ecg.smk"
include: "rules/ecg_peptides.smk"
include: "rules/evaluate.smk"
include: "rules/figures.smk"
include: "rules/jobs.smk"  # last: gathers the benchmark files every stage above registered


rule all:
    default_target: True
    input:
        SYNTHETIC_TABLES,
        expand(FIGURES_MANIFEST, target=TARGETS),
        [png for target in TARGETS for png in synthetic_figures(target).values()],
        JOB_TABLES,
        PEPTIDE_SYSTEMS,
        MD_OUTPUTS,
        SIMULATION_TABLES if SIMULATION_INPUTS else [],
        PMF_OUTPUTS,
        CGBG_OUTPUTS,
        ECG_PEPTIDE_OUTPUTS,
