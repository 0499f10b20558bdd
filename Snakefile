# cgbench — one DAG from configuration to tables and figures.
#
#   snakemake --cores 2                          # default target: every table and figure
#   snakemake --cores 2 --config preset=cpu      # another scale preset
#   snakemake --cores 2 results/double_well/nuts/samples.npz   # one stage
#
# The science is in src/cgbench; every rule is a thin call of the `cgbench` command line.

configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/nuts.smk"
include: "rules/ecg.smk"
include: "rules/evaluate.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        SYNTHETIC_TABLES,
        expand(FIGURES_MANIFEST, target=TARGETS),
