# Coarse-grained Boltzmann generators (CG-BG): for every data source (biased: the metadynamics run;
# unbiased: all of the unbiased run, as in CG-BG's code), flow proposals of each representation trained
# on its frames, reweighted with every PMF of the same peptide and resolution (CG-BG's method: PMF_B;
# the other PMF on the same proposals: the simulation-free benchmark), scored against the reference MD;
# Müller-Brown's x against its exact PMF. Gathered into results/tables/accuracy.csv|md and
# timing.csv|md (with CG-BG's published numbers) and figures.


rule cgbg_peptide:
    input:
        unpack(lambda w: {f"pmf_{d}": path for d, path in cgbg_pmf_models(w).items()}),
        dataset=pmf_dataset,
        reference=pmf_reference_dataset,
        structure=PEPTIDE_STRUCTURE,
    output:
        scores=f"{PEPTIDE_CGBG}/scores.json",
    log:
        f"{RESULTS}/logs/cgbg/{{peptide}}_{{resolution}}_{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cgbg/{{peptide}}/{{resolution}}_{{data}}.tsv"
    params:
        settings=lambda w: cgbg_settings(w.peptide, w.data),
        pmfs=lambda w: " ".join(f"{d}={path}" for d, path in cgbg_pmf_models(w).items()),
        folder=PEPTIDE_CGBG,
    threads: 1
    resources:
        **rule_resources("cgbg"),
        gpu=GPU,
    shell:
        "{CGBENCH} cgbg --system {wildcards.peptide} --resolution {wildcards.resolution} --data {wildcards.data}"
        " --dataset {input.dataset} --pmfs {params.pmfs} --reference {input.reference}"
        " --structure {input.structure} --out {params.folder} --no-progress 2> {log}"


rule cgbg_muller_brown:
    input:
        unpack(lambda w: {f"pmf_{d}": path for d, path in cgbg_pmf_models(w).items()}),
        dataset=MULLER_BROWN_DATA,
    output:
        scores=f"{MULLER_BROWN_CGBG}/scores.json",
    log:
        f"{RESULTS}/logs/cgbg/muller_brown_{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cgbg/muller_brown/{{data}}.tsv"
    params:
        settings=lambda w: cgbg_settings("muller_brown", w.data),
        pmfs=lambda w: " ".join(f"{d}={path}" for d, path in cgbg_pmf_models(w).items()),
        folder=MULLER_BROWN_CGBG,
    threads: 1
    resources:
        **rule_resources("cgbg"),
        gpu=GPU,
    shell:
        "{CGBENCH} cgbg --system muller_brown --data {wildcards.data} --dataset {input.dataset}"
        " --pmfs {params.pmfs} --out {params.folder} --no-progress 2> {log}"


rule cgbg_tables:
    input:
        scores=[f"{folder}/scores.json" for folder in CGBG_FOLDERS],
        pmf_training=[f"{folder}/training.json" for folder in PMF_FOLDERS],
        baselines=[path for p in PMF_PEPTIDES for path in baseline_datasets(p).values()],
        references=[cgbg_reference_dataset(p) for p in PMF_PEPTIDES],
        md=[path for p in PMF_PEPTIDES for path in reference_md_provenance(p)],
    output:
        accuracy=report(CGBG_TABLES[0], caption="../report/tables/accuracy.rst", category="Tables"),
        accuracy_md=CGBG_TABLES[1],
        timing=report(CGBG_TABLES[2], caption="../report/tables/timing.rst", category="Tables"),
        timing_md=CGBG_TABLES[3],
    log:
        f"{RESULTS}/logs/tables/cgbg.log",
    benchmark:
        f"{RESULTS}/benchmarks/cgbg_tables/cgbg.tsv"
    params:
        baselines=" ".join(f"{p}:{s}={path}" for p in PMF_PEPTIDES for s, path in baseline_datasets(p).items()),
        references=" ".join(f"{p}={cgbg_reference_dataset(p)}" for p in PMF_PEPTIDES),
        md=" ".join(f"{p}={path}" for p in PMF_PEPTIDES for path in reference_md_provenance(p)),
        folders=CGBG_FOLDERS,
        pmf_folders=PMF_FOLDERS,
        out=lambda w, output: os.path.dirname(output.accuracy),
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} cgbg-tables --inputs {params.folders} --pmfs {params.pmf_folders}"
        " --baselines {params.baselines} --references {params.references} --md {params.md}"
        " --out {params.out} 2> {log}"


rule cgbg_figure_peptide:
    input:
        scores=lambda w: [f"{PEPTIDE_CGBG.format(peptide=w.peptide, resolution=r, data=d)}/scores.json"
                          for r, d in pmf_combinations(w.peptide)],
        reference=lambda w: cgbg_reference_dataset(w.peptide),
    output:
        figure=report(CGBG_FIGURE, caption="../report/figures/cgbg.rst", category="CG-BG",
                      labels={"target": "{peptide}", "figure": "Ramachandran and free-energy profiles"}),
    log:
        f"{RESULTS}/logs/cgbg_figure/{{peptide}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cgbg_figure/{{peptide}}.tsv"
    params:
        folders=lambda w: [PEPTIDE_CGBG.format(peptide=w.peptide, resolution=r, data=d)
                           for r, d in pmf_combinations(w.peptide)],
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} cgbg-figure --system {wildcards.peptide} --inputs {params.folders}"
        " --reference {input.reference} --out {output.figure} 2> {log}"


rule cgbg_figure_cost:
    input:
        accuracy=CGBG_TABLES[0],
        timing=CGBG_TABLES[2],
    output:
        figure=report(CGBG_COST_FIGURE, caption="../report/figures/cgbg_cost.rst", category="CG-BG",
                      labels={"target": "cgbg", "figure": "accuracy vs cost"}),
    log:
        f"{RESULTS}/logs/cgbg_figure/cost.log",
    benchmark:
        f"{RESULTS}/benchmarks/cgbg_figure/cost.tsv"
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} cgbg-figure --accuracy {input.accuracy} --timing {input.timing} --out {output.figure} 2> {log}"


BENCHMARKS += [rules.cgbg_muller_brown.benchmark.format(data=d) for d in CONFIG["pmf"]["data"]]
BENCHMARKS += [rules.cgbg_peptide.benchmark.format(peptide=p, resolution=r, data=d) for p in PMF_PEPTIDES
               for r, d in pmf_combinations(p)]
BENCHMARKS += [rules.cgbg_tables.benchmark, rules.cgbg_figure_cost.benchmark] if CGBG_FOLDERS else []
BENCHMARKS += [rules.cgbg_figure_peptide.benchmark.format(peptide=p) for p in PMF_PEPTIDES] if CGBG_FOLDERS else []
