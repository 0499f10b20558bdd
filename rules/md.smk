# Molecular dynamics of every peptide (OpenMM): the explicit-solvent reference, metadynamics on
# (phi, psi), the implicit-solvent baselines; one job per replica. Then the CG datasets (every
# run, at each resolution: positions + unbiased mapped forces + weights), the NUTS reference in implicit
# solvent (JAX energy), and the convergence diagnostics gathered in results/tables/simulations.*


def md_structure(wildcards):
    """Start structure: the solvated box for explicit water, else the built solute."""
    if run_environment(wildcards.run) == "explicit":
        return PEPTIDE_SOLVATED.format(peptide=wildcards.peptide)
    return PEPTIDE_STRUCTURE.format(peptide=wildcards.peptide)


def md_system(wildcards):
    return PEPTIDE_SYSTEM.format(peptide=wildcards.peptide, solvent=run_environment(wildcards.run))


def md_threads(wildcards):
    """Two threads where OpenMM runs on its CPU platform (PME, OBC1's custom GB force), else one
    (the Reference platform is single-threaded; measured ns/day in cgbench.systems)."""
    if CONFIG["device"] == "gpu":
        return 1
    return 2 if platform_name(run_environment(wildcards.run), "cpu") == "CPU" else 1


rule md:
    input:
        structure=md_structure,
        solute=PEPTIDE_STRUCTURE,
        system=md_system,
    output:
        trajectory=f"{MD_REPLICA}/trajectory.h5",
        frames=f"{MD_REPLICA}/frames.npz",
        provenance=f"{MD_REPLICA}/frames.npz.provenance.json",
    log:
        f"{RESULTS}/logs/md/{{peptide}}_{{run}}_{{replica}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/md/{{peptide}}/{{run}}_{{replica}}.tsv"
    params:
        settings=md_run_settings,
        folder=MD_REPLICA,
    threads: md_threads
    resources:
        **rule_resources("md"),
        gpu=GPU,
    shell:
        "{CGBENCH} md --peptide {wildcards.peptide} --run {wildcards.run} --replica {wildcards.replica}"
        " --structure {input.structure} --solute {input.solute} --system {input.system}"
        " --threads {threads} --out {params.folder} --no-progress 2> {log}"


rule cg_dataset:
    input:
        frames=lambda w: [f"{d}/frames.npz" for d in md_replica_dirs(w.peptide, w.run)],
    output:
        datasets=[CG_DATASET.replace("{resolution}", r) for r in DATASET_RESOLUTIONS],
        provenance=[f"{CG_DATASET}.provenance.json".replace("{resolution}", r) for r in DATASET_RESOLUTIONS],
    log:
        f"{RESULTS}/logs/cg_dataset/{{peptide}}_{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cg_dataset/{{peptide}}/{{run}}.tsv"
    params:
        replicas=lambda w: md_replica_dirs(w.peptide, w.run),
        resolutions=" ".join(DATASET_RESOLUTIONS),
        discard=CONFIG["md"]["reweighting_discard"],
        # The force map (cgbench.resolutions.aggregate_forces): datasets from the earlier slice map rebuild.
        force_map="aggregated",
    threads: 1
    resources:
        **rule_resources("cg_dataset"),
    shell:
        "{CGBENCH} cg-dataset --peptide {wildcards.peptide} --run {wildcards.run}"
        " --resolutions {params.resolutions} --replicas {params.replicas} --out {output.datasets} 2> {log}"


rule md_diagnostics:
    input:
        dataset=CG_DATASET.replace("{resolution}", "all_atom"),
        provenance=lambda w: [f"{d}/frames.npz.provenance.json" for d in md_replica_dirs(w.peptide, w.run)],
    output:
        rows=SIMULATION_ROWS,
        figure=report(DIHEDRAL_FIGURE, caption="../report/figures/dihedrals.rst", category="Simulations",
                      subcategory="{peptide}", labels={"target": "{peptide}", "figure": "{run} dihedrals"}),
    log:
        f"{RESULTS}/logs/md_diagnostics/{{peptide}}_{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/md_diagnostics/{{peptide}}/{{run}}.tsv"
    params:
        replicas=lambda w: md_replica_dirs(w.peptide, w.run),
        blocks=CONFIG["md"]["blocks"],
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} simulations --peptide {wildcards.peptide} --run {wildcards.run} --dataset {input.dataset}"
        " --replicas {params.replicas} --out {output.rows} --figure {output.figure} 2> {log}"


rule peptide_nuts:
    input:
        structure=PEPTIDE_STRUCTURE,
        system=PEPTIDE_SYSTEM.replace("{solvent}", CONFIG["peptide_nuts"]["solvent"]),
    output:
        samples=PEPTIDE_NUTS,
        provenance=f"{PEPTIDE_NUTS}.provenance.json",
    log:
        f"{RESULTS}/logs/peptide_nuts/{{peptide}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/peptide_nuts/{{peptide}}.tsv"
    params:
        settings=peptide_nuts_settings,
    threads: 1
    resources:
        **rule_resources("peptide_nuts"),
        gpu=GPU,
    shell:
        "{CGBENCH} peptide-nuts --peptide {wildcards.peptide} --structure {input.structure}"
        " --system {input.system} --out {output.samples} 2> {log}"


rule nuts_diagnostics:
    input:
        samples=PEPTIDE_NUTS,
    output:
        rows=NUTS_ROWS,
        figure=report(NUTS_FIGURE, caption="../report/figures/dihedrals.rst", category="Simulations",
                      subcategory="{peptide}", labels={"target": "{peptide}", "figure": "nuts dihedrals"}),
    log:
        f"{RESULTS}/logs/md_diagnostics/{{peptide}}_nuts.log",
    benchmark:
        f"{RESULTS}/benchmarks/nuts_diagnostics/{{peptide}}.tsv"
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} simulations --peptide {wildcards.peptide} --run nuts --dataset {input.samples}"
        " --out {output.rows} --figure {output.figure} 2> {log}"


rule simulations_table:
    input:
        SIMULATION_INPUTS,
    output:
        csv=report(SIMULATION_TABLES[0], caption="../report/tables/simulations.rst", category="Tables"),
        md=SIMULATION_TABLES[1],
    log:
        f"{RESULTS}/logs/tables/simulations.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulations_table/simulations.tsv"
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} simulations-table --inputs {input} --out {output.csv} 2> {log}"


BENCHMARKS += [rules.md.benchmark.format(peptide=p, run=run, replica=r)
               for p in PEPTIDES for run in md_runs(p) for r in range(CONFIG["md"]["runs"][run]["replicas"])]
BENCHMARKS += [rules.cg_dataset.benchmark.format(peptide=p, run=run) for p in PEPTIDES for run in md_runs(p)]
BENCHMARKS += [rules.md_diagnostics.benchmark.format(peptide=p, run=run) for p in PEPTIDES for run in md_runs(p)]
BENCHMARKS += [b.format(peptide=p) for p in PEPTIDES if peptide_nuts_enabled(p)
               for b in (rules.peptide_nuts.benchmark, rules.nuts_diagnostics.benchmark)]
BENCHMARKS += [rules.simulations_table.benchmark] if SIMULATION_INPUTS else []
