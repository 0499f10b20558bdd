# Potentials of mean force by force matching (CG-BG): PMF_B from metadynamics, PMF_U from as much
# unbiased MD, for every peptide with MD at each resolution of `pmf.resolutions`, and for
# Müller-Brown's x; each checked by CG MD against the reference MD (Müller-Brown: the exact PMF),
# gathered in results/tables/pmf.csv|md with figures.


rule muller_brown_data:
    output:
        data=MULLER_BROWN_DATA,
        provenance=f"{MULLER_BROWN_DATA}.provenance.json",
    log:
        f"{RESULTS}/logs/muller_brown_data/{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/muller_brown_data/{{data}}.tsv"
    params:
        settings=lambda w: pmf_settings("muller_brown", w.data, "data"),
    threads: 1
    resources:
        **rule_resources("pmf_train"),
    shell:
        "{CGBENCH} muller-brown-data --data {wildcards.data} --out {output.data} 2> {log}"


rule pmf_muller_brown:
    input:
        data=MULLER_BROWN_DATA,
    output:
        model=f"{MULLER_BROWN_PMF}/model.eqx",
        training=f"{MULLER_BROWN_PMF}/training.json",
        history=f"{MULLER_BROWN_PMF}/history.csv",
    log:
        f"{RESULTS}/logs/pmf_train/muller_brown_{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pmf_train/muller_brown/{{data}}.tsv"
    params:
        settings=lambda w: pmf_settings("muller_brown", w.data, "pmf"),
        folder=MULLER_BROWN_PMF,
    threads: 1
    resources:
        **rule_resources("pmf_train"),
        gpu=GPU,
    shell:
        "{CGBENCH} pmf-train --system muller_brown --data {wildcards.data} --dataset {input.data}"
        " --out {params.folder} --no-progress 2> {log}"


rule pmf_muller_brown_validation:
    input:
        model=f"{MULLER_BROWN_PMF}/model.eqx",
    output:
        validation=f"{MULLER_BROWN_PMF}/validation/validation.json",
        curves=MULLER_BROWN_PMF_CURVES,
    log:
        f"{RESULTS}/logs/pmf_validate/muller_brown_{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pmf_validate/muller_brown/{{data}}.tsv"
    params:
        out=lambda w, output: os.path.dirname(output.validation),
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} pmf-validate --system muller_brown --data {wildcards.data} --model {input.model}"
        " --out {params.out} 2> {log}"


rule pmf_peptide:
    input:
        dataset=pmf_dataset,
        cut_to=pmf_cut_dataset,
        structure=PEPTIDE_STRUCTURE,
    output:
        model=f"{PEPTIDE_PMF}/model.eqx",
        training=f"{PEPTIDE_PMF}/training.json",
        history=f"{PEPTIDE_PMF}/history.csv",
    log:
        f"{RESULTS}/logs/pmf_train/{{peptide}}_{{resolution}}_{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pmf_train/{{peptide}}/{{resolution}}_{{data}}.tsv"
    params:
        settings=lambda w: pmf_settings(w.peptide, w.data, "pmf"),
        folder=PEPTIDE_PMF,
        cut=lambda w: f"--cut-to {pmf_cut_dataset(w)}" if pmf_cut_dataset(w) else "",
    threads: 1
    resources:
        **rule_resources("pmf_train"),
        gpu=GPU,
    shell:
        "{CGBENCH} pmf-train --system {wildcards.peptide} --resolution {wildcards.resolution}"
        " --data {wildcards.data} --dataset {input.dataset} {params.cut} --structure {input.structure}"
        " --out {params.folder} --no-progress 2> {log}"


rule pmf_cg_md:
    input:
        model=f"{PEPTIDE_PMF}/model.eqx",
        start=pmf_dataset,
        reference=pmf_reference_dataset,
        structure=PEPTIDE_STRUCTURE,
    output:
        validation=f"{PEPTIDE_PMF}/validation/validation.json",
        cg_md=PEPTIDE_PMF_CG_MD,
    log:
        f"{RESULTS}/logs/pmf_validate/{{peptide}}_{{resolution}}_{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pmf_validate/{{peptide}}/{{resolution}}_{{data}}.tsv"
    params:
        settings=lambda w: pmf_settings(w.peptide, w.data, "cg_md"),
        out=lambda w, output: os.path.dirname(output.validation),
    threads: 1
    resources:
        **rule_resources("pmf_cg_md"),
        gpu=GPU,
    shell:
        "{CGBENCH} pmf-validate --system {wildcards.peptide} --resolution {wildcards.resolution}"
        " --data {wildcards.data} --model {input.model} --start {input.start} --reference {input.reference}"
        " --structure {input.structure} --out {params.out} --no-progress 2> {log}"


rule pmf_table:
    input:
        [f"{folder}/validation/validation.json" for folder in PMF_FOLDERS],
    output:
        csv=report(PMF_TABLES[0], caption="../report/tables/pmf.rst", category="Tables"),
        md=PMF_TABLES[1],
    log:
        f"{RESULTS}/logs/tables/pmf.log",
    benchmark:
        f"{RESULTS}/benchmarks/pmf_table/pmf.tsv"
    params:
        folders=PMF_FOLDERS,
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} pmf-table --inputs {params.folders} --out {output.csv} 2> {log}"


rule pmf_figure_peptide:
    input:
        runs=lambda w: [PEPTIDE_PMF_CG_MD.format(peptide=w.peptide, resolution=r, data=d)
                        for r, d in pmf_combinations(w.peptide)],
        reference=lambda w: pmf_reference_dataset(w, resolution="all_atom"),
    output:
        figure=report(PEPTIDE_PMF_FIGURE, caption="../report/figures/pmf.rst", category="PMFs",
                      labels={"target": "{peptide}", "figure": "free energy from CG MD"}),
    log:
        f"{RESULTS}/logs/pmf_figure/{{peptide}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pmf_figure/{{peptide}}.tsv"
    params:
        runs=lambda w: " ".join(f"{r}:{d}={PEPTIDE_PMF_CG_MD.format(peptide=w.peptide, resolution=r, data=d)}"
                                for r, d in pmf_combinations(w.peptide)),
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} pmf-figure --system {wildcards.peptide} --runs {params.runs} --reference {input.reference}"
        " --out {output.figure} 2> {log}"


rule pmf_figure_muller_brown:
    input:
        curves=[MULLER_BROWN_PMF_CURVES.format(data=d) for d in CONFIG["pmf"]["data"]],
    output:
        figure=report(MULLER_BROWN_PMF_FIGURE, caption="../report/figures/pmf_muller_brown.rst", category="PMFs",
                      labels={"target": "muller_brown", "figure": "learned vs exact PMF"}),
    log:
        f"{RESULTS}/logs/pmf_figure/muller_brown.log",
    benchmark:
        f"{RESULTS}/benchmarks/pmf_figure/muller_brown.tsv"
    params:
        runs=" ".join(f"{d}={MULLER_BROWN_PMF_CURVES.format(data=d)}" for d in CONFIG["pmf"]["data"]),
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} pmf-figure --system muller_brown --runs {params.runs} --out {output.figure} 2> {log}"


BENCHMARKS += [rules.muller_brown_data.benchmark.format(data=d) for d in CONFIG["pmf"]["data"]]
BENCHMARKS += [b.format(data=d) for d in CONFIG["pmf"]["data"]
               for b in (rules.pmf_muller_brown.benchmark, rules.pmf_muller_brown_validation.benchmark)]
BENCHMARKS += [b.format(peptide=p, resolution=r, data=d) for p in PMF_PEPTIDES for r, d in pmf_combinations(p)
               for b in (rules.pmf_peptide.benchmark, rules.pmf_cg_md.benchmark)]
BENCHMARKS += [rules.pmf_table.benchmark] if PMF_FOLDERS else []
BENCHMARKS += [rules.pmf_figure_peptide.benchmark.format(peptide=p) for p in PMF_PEPTIDES] if PMF_FOLDERS else []
BENCHMARKS += [rules.pmf_figure_muller_brown.benchmark] if PMF_FOLDERS and CONFIG["pmf"]["data"] else []
