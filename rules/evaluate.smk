# Evaluation of every saved model against exact references and NUTS, then the tables.


rule evaluate:
    input:
        models=model_inputs,
        nuts=NUTS_SAMPLES,
    output:
        EVALUATION,
    log:
        f"{RESULTS}/logs/evaluate/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{target}}.tsv"
    params:
        config_hash=config_hash(CONFIG),
        models=models_argument,
    threads: 1
    resources:
        **rule_resources("evaluate"),
        gpu=GPU,
    shell:
        "{CGBENCH} evaluate --target {wildcards.target} --models {params.models}"
        " --nuts {input.nuts} --out {output} 2> {log}"


BENCHMARKS += expand(rules.evaluate.benchmark, target=TARGETS)


rule synthetic_tables:
    input:
        expand(EVALUATION, target=TARGETS),
    output:
        report(SYNTHETIC_TABLES[0], caption="../report/tables/synthetic.rst", category="Tables"),
        SYNTHETIC_TABLES[1],
        report(SYNTHETIC_TABLES[2], caption="../report/tables/tempering.rst", category="Tables"),
        SYNTHETIC_TABLES[3],
    log:
        f"{RESULTS}/logs/tables/synthetic.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthetic_tables/synthetic.tsv"
    params:
        config_hash=config_hash(CONFIG),
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} tables --inputs {input} --out-dir {RESULTS}/tables 2> {log}"


BENCHMARKS.append(rules.synthetic_tables.benchmark)
