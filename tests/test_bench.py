"""`cgbench bench`: a deliberately slowed function fails the comparison, an unchanged one passes.

The benchmark here sleeps for CGBENCH_FAKE_DELAY_S seconds: sleeping is the workload whose duration
depends least on the machine's load. It still depends a little: on a loaded machine (the suite runs on
both cores under xdist) a sleep wakes up late by a few ms. The delays are long enough (20 ms) and the
slow-down large enough (5x) that such a late wake-up moves neither verdict: CI at stop 19 saw a 10 ms
baseline stretched to ~12 ms, which turned a 3x slow-down into +147 %.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from cgbench.bench import benchmark_command, machine_tag, saved_runs

FAKE_BENCHMARK = textwrap.dedent('''
    import os
    import time


    def work():
        time.sleep(float(os.environ["CGBENCH_FAKE_DELAY_S"]))


    def test_work(benchmark):
        benchmark.pedantic(work, rounds=7, iterations=1)
''')


@pytest.fixture
def bench_setup(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "test_fake_speed.py").write_text(FAKE_BENCHMARK)
    storage = tmp_path / "baseline"

    def bench(delay_s: float, *extra: str):
        # Not the xdist worker's variables: pytest-benchmark would take the run for a worker's and disable it.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
               "CGBENCH_FAKE_DELAY_S": str(delay_s)}
        command = [sys.executable, "-m", "cgbench", "bench", "--benchmarks", str(tmp_path / "benchmarks"),
                   "--storage", str(storage), "--tag", "test-machine", "--fail-above", "50", *extra]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    return bench, storage


def test_slowed_function_fails_the_comparison(bench_setup):
    bench, storage = bench_setup
    first = bench(0.02)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "no saved run for 'test-machine'" in first.stdout
    assert [p.name for p in saved_runs(storage, "test-machine")] == ["0001_test-machine.json"]

    unchanged = bench(0.02)
    assert unchanged.returncode == 0, unchanged.stdout[-3000:]
    assert "comparing with" in unchanged.stdout and "0001_test-machine.json" in unchanged.stdout
    assert len(saved_runs(storage, "test-machine")) == 2

    slowed = bench(0.1)  # 5x the median: +400 %, far beyond the 50 % threshold
    assert slowed.returncode != 0
    assert "REGRESSION" in slowed.stdout
    change = float(re.search(r"Field 'median' has failed PercentageRegressionCheck: ([\d.]+)", slowed.stdout)[1])
    assert 150 < change < 600  # +400 %, give or take a late wake-up of ~10 ms on either side
    # A regressed run is not saved: the comparison stays against the last good run.
    assert [p.name for p in saved_runs(storage, "test-machine")] == ["0001_test-machine.json",
                                                                    "0002_test-machine.json"]
    assert bench(0.1, "--no-save").returncode != 0


def test_saved_run_is_small_and_tagged(bench_setup):
    bench, storage = bench_setup
    assert bench(0.002).returncode == 0
    (path,) = saved_runs(storage, "test-machine")
    assert path.stat().st_size < 3000
    doc = json.loads(path.read_text())
    assert doc["machine_info"]["tag"] == machine_tag()
    (entry,) = doc["benchmarks"]
    assert entry["name"] == "test_work"
    assert entry["stats"]["rounds"] == 7
    assert 0.002 <= entry["stats"]["median"] < 0.05
    assert "data" not in entry


def test_command_compares_only_when_asked(tmp_path):
    plain = benchmark_command(tmp_path, tmp_path / "s", "tag", 25, compare=False, save=True)
    assert "--benchmark-save=tag" in plain and not any(a.startswith("--benchmark-compare") for a in plain)
    compared = benchmark_command(tmp_path, tmp_path / "s", "tag", 12.5, compare=True, save=False)
    assert "--benchmark-compare-fail=median:12.5%" in compared
    assert not any(a.startswith("--benchmark-save") for a in compared)


def test_machine_tag_names_the_hardware():
    tag = machine_tag()
    assert re.fullmatch(r"[a-z0-9_]+(-[a-z0-9_]+)+", tag)
    assert f"-{os.cpu_count()}cpu" in tag
