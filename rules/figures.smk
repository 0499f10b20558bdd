# Figures of the synthetic benchmarks (PNG, with a manifest listing them and their provenance).
# Which figures a target gets depends on the target (cgbench.report.synthetic_figure_kinds), and
# the report needs every PNG declared as an output, so there is one rule per target.


for _target in TARGETS:

    rule:
        name:
            f"synthetic_figures_{_target}"
        input:
            models=[ECG_MODELS.format(target=_target, method=m) for m in ecg_methods(_target)],
            nuts=NUTS_SAMPLES.format(target=_target),
        output:
            manifest=FIGURES_MANIFEST.format(target=_target),
            figures=[
                report(
                    figure,
                    caption=f"../report/figures/{what}.rst",
                    category="Synthetic targets",
                    subcategory=_target,
                    labels={"target": _target, "figure": what},
                )
                for what, figure in synthetic_figures(_target).items()
            ],
        log:
            f"{RESULTS}/logs/figures/{_target}.log",
        benchmark:
            f"{RESULTS}/benchmarks/synthetic_figures/{_target}.tsv"
        params:
            config_hash=config_hash(CONFIG),
            target=_target,
            models=" ".join(f"{m}={RESULTS}/{_target}/ecg/{m}" for m in ecg_methods(_target)),
        threads: 1
        resources:
            **rule_resources("report"),
        shell:
            "{CGBENCH} figures --target {params.target} --models {params.models}"
            " --nuts {input.nuts} --out-dir {RESULTS}/figures 2> {log}"

    BENCHMARKS.append(f"{RESULTS}/benchmarks/synthetic_figures/{_target}.tsv")
