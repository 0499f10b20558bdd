# NUTS reference samples of each synthetic target's joint density (blackjax).


rule nuts:
    output:
        samples=NUTS_SAMPLES,
        provenance=f"{NUTS_SAMPLES}.provenance.json",
    log:
        f"{RESULTS}/logs/nuts/{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/nuts/{{target}}.tsv"
    params:
        config_hash=config_hash(CONFIG),
    threads: 1
    resources:
        **rule_resources("nuts"),
        gpu=GPU,
    shell:
        "{CGBENCH} nuts --target {wildcards.target} --out {output.samples} 2> {log}"


BENCHMARKS += expand(rules.nuts.benchmark, target=TARGETS)
