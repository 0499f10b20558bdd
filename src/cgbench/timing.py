"""Cost of every workflow job, from the files of Snakemake's ``benchmark:`` directive.

Every rule writes ``results/benchmarks/<rule>/<job>.tsv`` (``<job>`` is the job's wildcard
values, e.g. ``double_well_ecg_adaptive``). Snakemake writes one row per repeat with the
columns ``s, h:m:s, max_rss, max_vms, max_uss, max_pss, io_in, io_out, mean_load, cpu_time``
(seconds, MB). :func:`gather_timing` turns a set of such files into one table:

    rule, target, wall_s, max_rss_mb, cpu_s

with repeats averaged (wall and CPU time) or maximised (memory). A value Snakemake could not
measure (a job too short for its sampler writes ``NA`` or ``-``) is left empty, not zero.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ("rule", "target", "wall_s", "max_rss_mb", "cpu_s")
_SNAKEMAKE = {"s": "wall_s", "max_rss": "max_rss_mb", "cpu_time": "cpu_s"}


def read_benchmark(path: str | Path) -> dict[str, float]:
    """Wall seconds, peak resident memory (MB) and CPU seconds of one Snakemake benchmark file."""
    frame = pd.read_csv(path, sep="\t")
    missing = set(_SNAKEMAKE) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no column {', '.join(sorted(missing))})")
    values = frame[list(_SNAKEMAKE)].apply(pd.to_numeric, errors="coerce").rename(columns=_SNAKEMAKE)
    return {"wall_s": values["wall_s"].mean(), "max_rss_mb": values["max_rss_mb"].max(),
            "cpu_s": values["cpu_s"].mean()}


def job_of(path: str | Path, root: str | Path) -> tuple[str, str]:
    """(rule, target) of ``<root>/<rule>/<target>.tsv``; a nested target keeps its slashes."""
    relative = Path(path).relative_to(root)
    if len(relative.parts) < 2 or relative.suffix != ".tsv":
        raise ValueError(f"{path}: expected {root}/<rule>/<target>.tsv")
    return relative.parts[0], relative.with_suffix("").relative_to(relative.parts[0]).as_posix()


def gather_timing(paths: list[str | Path], root: str | Path) -> pd.DataFrame:
    """One row per benchmark file (sorted by rule, then target) with :data:`COLUMNS`."""
    rows = [{"rule": rule, "target": target, **read_benchmark(p)}
            for p in paths for rule, target in [job_of(p, root)]]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values(["rule", "target"], ignore_index=True)


def write_timing(paths: list[str | Path], root: str | Path, out_csv: str | Path) -> list[Path]:
    """Write the timing table as CSV and, next to it, Markdown with a per-rule total."""
    table = gather_timing(paths, root)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    totals = (table.groupby("rule", sort=True)
              .agg(jobs=("target", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"),
                   max_rss_mb=("max_rss_mb", "max"))
              .reset_index())
    out_md = out_csv.with_suffix(".md")
    out_md.write_text(
        "# Cost of every job\n\nFrom Snakemake's `benchmark:` files (wall and CPU seconds, peak "
        "resident memory in MB).\n\n## Per rule\n\n" + totals.to_markdown(index=False, floatfmt=".4g")
        + f"\n\nTotal: {table['wall_s'].sum():.4g} s wall, {table['cpu_s'].sum():.4g} s CPU over "
        f"{len(table)} jobs.\n\n## Per job\n\n" + table.to_markdown(index=False, floatfmt=".4g") + "\n")
    return [out_csv, out_md]
