# Cost of every job: the benchmark files of all rules (BENCHMARKS, filled by each rules file)
# gathered into results/tables/timing.csv|md. Included last, after every stage has registered.
# It has no benchmark file of its own (it would have to gather itself).


rule timing:
    input:
        BENCHMARKS,
    output:
        csv=report(TIMING_TABLES[0], caption="../report/tables/timing.rst", category="Tables"),
        md=TIMING_TABLES[1],
    log:
        f"{RESULTS}/logs/tables/timing.log",
    localrule: True
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} timing --root {RESULTS}/benchmarks --inputs {input} --out {output.csv} 2> {log}"
