# Peptide targets from their sequences: structure (built, protonated, minimised) and the
# serialised OpenMM systems — vacuum, implicit baselines (OBC1, OBC2) and explicit water.


rule build_peptide:
    output:
        structure=PEPTIDE_STRUCTURE,
        provenance=f"{PEPTIDE_STRUCTURE}.provenance.json",
    log:
        f"{RESULTS}/logs/build_peptide/{{peptide}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/build_peptide/{{peptide}}.tsv"
    params:
        settings=peptide_settings,
    threads: 1
    resources:
        **rule_resources("build_peptide"),
    shell:
        "{CGBENCH} build-peptide --peptide {wildcards.peptide} --out {output.structure} 2> {log}"


rule peptide_system:
    input:
        structure=PEPTIDE_STRUCTURE,
    output:
        system=PEPTIDE_SYSTEM,
        provenance=f"{PEPTIDE_SYSTEM}.provenance.json",
    log:
        f"{RESULTS}/logs/peptide_system/{{peptide}}_{{solvent}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/peptide_system/{{peptide}}/{{solvent}}.tsv"
    wildcard_constraints:
        solvent="vacuum|obc1|obc2",
    params:
        settings=peptide_settings,
    threads: 1
    resources:
        **rule_resources("build_peptide"),
    shell:
        "{CGBENCH} peptide-system --peptide {wildcards.peptide} --solvent {wildcards.solvent}"
        " --structure {input.structure} --out {output.system} 2> {log}"


rule explicit_system:
    input:
        structure=PEPTIDE_STRUCTURE,
    output:
        system=f"{RESULTS}/peptides/{{peptide}}/system_explicit.xml",
        provenance=f"{RESULTS}/peptides/{{peptide}}/system_explicit.xml.provenance.json",
        solvated=PEPTIDE_SOLVATED,
        solvated_provenance=f"{PEPTIDE_SOLVATED}.provenance.json",
    log:
        f"{RESULTS}/logs/peptide_system/{{peptide}}_explicit.log",
    benchmark:
        f"{RESULTS}/benchmarks/explicit_system/{{peptide}}.tsv"
    params:
        settings=peptide_settings,
    threads: 1
    resources:
        **rule_resources("build_peptide"),
    shell:
        "{CGBENCH} peptide-system --peptide {wildcards.peptide} --solvent explicit"
        " --structure {input.structure} --out {output.system} --solvated {output.solvated} 2> {log}"


BENCHMARKS += [rules.build_peptide.benchmark.format(peptide=p) for p in PEPTIDES]
BENCHMARKS += [rules.peptide_system.benchmark.format(peptide=p, solvent=s)
               for p in PEPTIDES for s in peptide_solvents(p) if s != "explicit"]
BENCHMARKS += [rules.explicit_system.benchmark.format(peptide=p) for p in PEPTIDES]
