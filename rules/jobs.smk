# Cost of every job: the benchmark files of all rules (BENCHMARKS, filled by each rules file)
# gathered into results/tables/jobs.csv|md. Included last, after every stage has registered.
# It has no benchmark file of its own (it would have to gather itself).


rule jobs:
    input:
        BENCHMARKS,
    output:
        csv=report(JOB_TABLES[0], caption="../report/tables/jobs.rst", category="Tables"),
        md=JOB_TABLES[1],
    log:
        f"{RESULTS}/logs/tables/jobs.log",
    localrule: True
    threads: 1
    resources:
        **rule_resources("report"),
    shell:
        "{CGBENCH} jobs --root {RESULTS}/benchmarks --inputs {input} --out {output.csv} 2> {log}"
