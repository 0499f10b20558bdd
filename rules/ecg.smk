# ECG training: reverse KL with mean forces from conditional chains, tempered in beta.
# A killed job resumes from results/<target>/ecg/<method>/checkpoint* when rerun.


rule ecg_train:
    output:
        ECG_MODELS,
    log:
        f"{RESULTS}/logs/ecg/{{target}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ecg_train/{{target}}/{{method}}.tsv"
    params:
        config_hash=config_hash(CONFIG),
        schedule=lambda wildcards: SCHEDULE_OF_METHOD[wildcards.method],
        folder=lambda wildcards: f"{RESULTS}/{wildcards.target}/ecg/{wildcards.method}",
    threads: 1
    resources:
        **rule_resources("ecg_train"),
        gpu=GPU,
    shell:
        "{CGBENCH} ecg-train --target {wildcards.target} --schedule {params.schedule}"
        " --out {params.folder} 2> {log}"


BENCHMARKS += [rules.ecg_train.benchmark.format(target=t, method=m) for t in TARGETS for m in ecg_methods(t)]
