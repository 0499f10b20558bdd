"""Timing table from Snakemake benchmark files, and the rules that must write those files."""

import re
from pathlib import Path

import pandas as pd
import pytest

from cgbench.timing import COLUMNS, gather_timing, job_of, read_benchmark, write_timing

REPO = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path: Path, *rows: tuple) -> Path:
    """A benchmark file as Snakemake writes it: one row (wall s, max RSS MB, CPU s) per repeat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s}\t0:00:{int(float(s)):02d}\t{rss}\t900.0\t{rss}\t{rss}\t1.0\t0.5\t80.0\t{cpu}\n"
             for s, rss, cpu in rows]
    path.write_text(HEADER + "".join(lines))
    return path


def test_read_benchmark_averages_times_and_keeps_peak_memory(tmp_path):
    path = _bench(tmp_path / "b.tsv", (10.0, 500.0, 8.0), (14.0, 700.0, 12.0))
    assert read_benchmark(path) == pytest.approx({"wall_s": 12.0, "max_rss_mb": 700.0, "cpu_s": 10.0})


def test_unmeasured_values_stay_empty_not_zero(tmp_path):
    path = tmp_path / "short.tsv"
    path.write_text(HEADER + "0.01\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t-\n")
    values = read_benchmark(path)
    assert values["wall_s"] == pytest.approx(0.01)
    assert pd.isna(values["max_rss_mb"]) and pd.isna(values["cpu_s"])


def test_not_a_benchmark_file_is_refused(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark file"):
        read_benchmark(path)


def test_rule_and_target_come_from_the_path(tmp_path):
    root = tmp_path / "benchmarks"
    assert job_of(root / "nuts" / "double_well.tsv", root) == ("nuts", "double_well")
    assert job_of(root / "ecg_train" / "gmm_10d" / "ecg_adaptive.tsv", root) == ("ecg_train", "gmm_10d/ecg_adaptive")
    with pytest.raises(ValueError, match="<rule>/<target>.tsv"):
        job_of(root / "loose.tsv", root)


def test_gather_and_write(tmp_path):
    root = tmp_path / "benchmarks"
    paths = [_bench(root / "nuts" / "gmm_2d.tsv", (3.0, 400.0, 2.5)),
             _bench(root / "ecg_train" / "double_well" / "ecg.tsv", (20.0, 900.0, 30.0)),
             _bench(root / "nuts" / "double_well.tsv", (5.0, 450.0, 4.0))]
    table = gather_timing(paths, root)
    assert list(table.columns) == list(COLUMNS)
    assert table[["rule", "target"]].values.tolist() == [
        ["ecg_train", "double_well/ecg"], ["nuts", "double_well"], ["nuts", "gmm_2d"]]
    assert table["wall_s"].tolist() == [20.0, 5.0, 3.0]

    csv, md = write_timing(paths, root, tmp_path / "tables" / "timing.csv")
    assert pd.read_csv(csv).equals(table)
    text = md.read_text()
    assert "Total: 28 s wall, 36.5 s CPU over 3 jobs." in text
    per_rule = text.split("## Per rule")[1].split("## Per job")[0]
    assert re.search(r"\|\s*nuts\s*\|\s*2\s*\|\s*8\s*\|\s*6\.5\s*\|\s*450\s*\|", per_rule)


def _rules_without_benchmark() -> set[str]:
    """Rules in Snakefile and rules/*.smk whose block has no `benchmark:` directive."""
    missing = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        blocks = re.split(r"^\s*rule\b", path.read_text(), flags=re.M)[1:]
        for block in blocks:
            head = block.split(":", 1)[0].strip()
            name = head or re.search(r"name:\s*\n?\s*f?\"([^\"]+)\"", block).group(1)
            if not re.search(r"^\s+benchmark:", block, flags=re.M):
                missing.add(name)
    return missing


# Rules that have no benchmark file by design: the default target and the gatherer itself.
NO_BENCHMARK = {"all", "jobs"}


def test_every_rule_writes_a_benchmark_file():
    assert _rules_without_benchmark() == NO_BENCHMARK
