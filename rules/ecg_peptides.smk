# Data-free ECG of peptides (ECG §3.3): a flow over the heavy-atom backbone trained from the potential
# alone with tempering; NUTS references at T/beta; every scored model reconstructed to all atoms and
# scored. A killed training job resumes from its checkpoint when rerun.


rule ecg_peptide_train:
    input:
        structure=PEPTIDE_STRUCTURE,
        system=ecg_peptide_system,
        pmf=ecg_peptide_pmf,
    output:
        models=f"{ECG_PEPTIDE}/train/models.json",
    log:
        f"{RESULTS}/logs/ecg_peptide/{{peptide}}_{{potential}}_train.log",
    benchmark:
        f"{RESULTS}/benchmarks/ecg_peptide_train/{{peptide}}/{{potential}}.tsv"
    wildcard_constraints:
        potential="obc1|obc2|pmf_heavy_atom",
    params:
        settings=ecg_peptide_settings,
        folder=lambda wildcards, output: os.path.dirname(output.models),
        pmf=lambda wildcards, input: f"--pmf {input.pmf}" if input.pmf else "",
    threads: 1
    resources:
        **rule_resources("ecg_peptide_train"),
        gpu=GPU,
    shell:
        "{CGBENCH} ecg-peptide-train --peptide {wildcards.peptide} --potential {wildcards.potential}"
        " --structure {input.structure} --system {input.system} {params.pmf} --out {params.folder}"
        " --no-progress 2> {log}"


rule ecg_peptide_reference:
    input:
        structure=PEPTIDE_STRUCTURE,
        system=PEPTIDE_SYSTEM.replace("{solvent}", CONFIG["ecg_peptides"]["reference"]["solvent"]),
    output:
        samples=ECG_PEPTIDE_REFERENCE,
        provenance=f"{ECG_PEPTIDE_REFERENCE}.provenance.json",
    log:
        f"{RESULTS}/logs/ecg_peptide/{{peptide}}_reference_{{beta}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ecg_peptide_reference/{{peptide}}/{{beta}}.tsv"
    wildcard_constraints:
        beta=r"[0-9.e+-]+",
    params:
        settings=lambda wildcards: json.dumps({"reference": CONFIG["ecg_peptides"]["reference"], "seed": CONFIG["seed"],
                                               "peptide": peptide_from_config(wildcards.peptide, CONFIG).to_dict()},
                                              sort_keys=True),
    threads: 1
    resources:
        **rule_resources("peptide_nuts"),
        gpu=GPU,
    shell:
        "{CGBENCH} ecg-peptide-reference --peptide {wildcards.peptide} --beta {wildcards.beta}"
        " --structure {input.structure} --system {input.system} --out {output.samples} 2> {log}"


rule ecg_peptide_evaluate:
    input:
        models=f"{ECG_PEPTIDE}/train/models.json",
        structure=PEPTIDE_STRUCTURE,
        system=ecg_peptide_system,
        pmf=ecg_peptide_pmf,
        references=lambda wildcards: list(ecg_peptide_references(wildcards.peptide).values()),
    output:
        table=f"{ECG_PEPTIDE}/evaluation.csv",
        samples=directory(f"{ECG_PEPTIDE}/samples"),
    log:
        f"{RESULTS}/logs/ecg_peptide/{{peptide}}_{{potential}}_evaluate.log",
    benchmark:
        f"{RESULTS}/benchmarks/ecg_peptide_evaluate/{{peptide}}/{{potential}}.tsv"
    wildcard_constraints:
        potential="obc1|obc2|pmf_heavy_atom",
    params:
        settings=lambda wildcards: json.dumps({"evaluation": CONFIG["ecg_peptides"]["evaluation"], "seed": CONFIG["seed"]},
                                              sort_keys=True),
        folder=lambda wildcards, input: os.path.dirname(input.models),
        pmf=lambda wildcards, input: f"--pmf {input.pmf}" if input.pmf else "",
        references=lambda wildcards: " ".join(f"{b}={path}" for b, path in ecg_peptide_references(wildcards.peptide).items()),
    threads: 1
    resources:
        **rule_resources("ecg_peptide_evaluate"),
        gpu=GPU,
    shell:
        "{CGBENCH} ecg-peptide-evaluate --peptide {wildcards.peptide} --potential {wildcards.potential}"
        " --structure {input.structure} --system {input.system} {params.pmf} --models {params.folder}"
        " --reference {params.references} --out {output.table} --out-dir {output.samples} 2> {log}"


rule ecg_peptide_report:
    input:
        tables=[f"{ECG_PEPTIDE}/evaluation.csv".format(peptide=p, potential=q) for p, q in ECG_PEPTIDE_COMBINATIONS],
    output:
        csv=report(ECG_PEPTIDE_TABLES[0], caption="../report/tables/ecg_peptides.rst", category="Tables"),
        md=ECG_PEPTIDE_TABLES[1],
        figures=[report(f.format(peptide=p, potential=q), caption=f"../report/figures/ecg_peptide_{kind}.rst",
                        category="Data-free ECG (peptides)", subcategory=p,
                        labels={"target": p, "potential": q, "figure": kind})
                 for p, q in ECG_PEPTIDE_COMBINATIONS
                 for f, kind in zip(ECG_PEPTIDE_FIGURES, ("ramachandran", "rg_rmsd"))],
    log:
        f"{RESULTS}/logs/ecg_peptide/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/ecg_peptide_report/all.tsv"
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} ecg-peptide-report --inputs {input.tables} --out-dir {RESULTS}/tables"
        " --figures-dir {RESULTS}/figures 2> {log}"


BENCHMARKS += [rules.ecg_peptide_train.benchmark.format(peptide=p, potential=q) for p, q in ECG_PEPTIDE_COMBINATIONS]
BENCHMARKS += [rules.ecg_peptide_evaluate.benchmark.format(peptide=p, potential=q) for p, q in ECG_PEPTIDE_COMBINATIONS]
BENCHMARKS += [rules.ecg_peptide_reference.benchmark.format(peptide=p, beta=b) for p in {p for p, _ in ECG_PEPTIDE_COMBINATIONS}
               for b, path in ecg_peptide_references(p).items() if "/ecg/reference/" in path]
BENCHMARKS += [rules.ecg_peptide_report.benchmark] if ECG_PEPTIDE_COMBINATIONS else []
