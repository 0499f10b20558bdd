# Figures of the synthetic benchmarks (PNG, with a manifest listing them and their provenance).


rule synthetic_figures:
    input:
        models=model_inputs,
        nuts=NUTS_SAMPLES,
    output:
        FIGURES_MANIFEST,
    log:
        f"{RESULTS}/logs/figures/{{target}}.log",
    params:
        config_hash=config_hash(CONFIG),
        models=models_argument,
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} figures --target {wildcards.target} --models {params.models}"
        " --nuts {input.nuts} --out-dir {RESULTS}/figures 2> {log}"
