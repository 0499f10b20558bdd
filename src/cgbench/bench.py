"""Performance-regression tracking: run ``benchmarks/`` with pytest-benchmark, compare, save.

``cgbench bench`` (see the README) runs every benchmark, compares each one's median with the
last run saved for this machine and fails when any is slower by more than ``--fail-above``
percent; then it saves this run, stripped to a small JSON, as the new last one:

    benchmarks/baseline/<machine tag>/<pytest-benchmark platform id>/NNNN_<machine tag>.json

The machine tag (:func:`machine_tag`, e.g. ``x86_64-amd-epyc-7b13-2cpu``) names the hardware
class, not the host, so a run on a fresh CI machine of the same kind is compared with the
committed baseline of that kind. Timings are never asserted in tests: only this command
judges them, and only against the same hardware.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from cgbench.config import REPO_ROOT

BENCHMARK_DIR = REPO_ROOT / "benchmarks"
DEFAULT_STORAGE = BENCHMARK_DIR / "baseline"
DEFAULT_FAIL_ABOVE = 25.0  # percent slowdown of the median; 2-core VMs jitter by ~10 %
_KEPT_STATS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "rounds", "iterations",
               "ops", "outliers", "ld15iqr", "hd15iqr", "total", "iqr_outliers", "stddev_outliers")


def _slug(text: str) -> str:
    text = re.sub(r"\((?:r|tm)\)|cpu @.*$|@.*$|processor", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown-cpu"


def gpu_model() -> str | None:
    """Name of the first NVIDIA GPU, or None when there is none (or no ``nvidia-smi``)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def machine_tag() -> str:
    """Hardware class of this machine: architecture, CPU model, core count and GPU if any."""
    parts = [platform.machine(), _slug(cpu_model()), f"{os.cpu_count()}cpu"]
    gpu = gpu_model()
    if gpu:
        parts.append(_slug(gpu))
    return "-".join(p for p in parts if p)


def saved_runs(storage: Path, tag: str) -> list[Path]:
    """Saved runs of a machine tag, oldest first (pytest-benchmark numbers them 0001, 0002, …)."""
    return sorted((Path(storage) / tag).glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda p: p.name)


def pytest_benchmark_update_machine_info(config, machine_info):
    """pytest-benchmark hook (this module is loaded with ``-p cgbench.bench``): keep the machine
    tag, CPU model and count, system and Python version — what the saved runs are compared on —
    instead of the full CPU flag list, so saved runs stay small and compare equal on equal hardware."""
    cpu = machine_info.get("cpu", {})
    small = {"tag": machine_tag(), "machine": machine_info.get("machine"), "system": machine_info.get("system"),
             "python_version": machine_info.get("python_version"),
             "cpu": {"brand_raw": cpu.get("brand_raw") or cpu_model(), "count": cpu.get("count") or os.cpu_count()}}
    machine_info.clear()
    machine_info.update(small)


def strip_run(path: Path) -> None:
    """Rewrite a saved run keeping only what a comparison and a reader need (a few kB)."""
    doc = json.loads(Path(path).read_text())
    commit = doc.get("commit_info", {})
    doc["commit_info"] = {k: commit.get(k) for k in ("id", "time", "dirty", "branch")}
    doc["benchmarks"] = [
        {**{k: b.get(k) for k in ("group", "name", "fullname", "params", "param", "extra_info")},
         "stats": {k: b["stats"][k] for k in _KEPT_STATS if k in b["stats"]}}
        for b in doc.get("benchmarks", [])
    ]
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def benchmark_command(bench_dir: Path, storage: Path, tag: str, fail_above: float, *, compare: bool,
                   save: bool, extra: list[str] = ()) -> list[str]:
    """The pytest-benchmark command line that :func:`run` executes."""
    command = [sys.executable, "-m", "pytest", str(bench_dir), "-p", "no:cacheprovider", "-p", "cgbench.bench",
               "--benchmark-enable",
               "--benchmark-only", f"--benchmark-storage=file://{Path(storage) / tag}",
               "--benchmark-columns=min,median,max,iqr,rounds", "--benchmark-sort=fullname",
               # ≥ 20 rounds even for the slow ones (pytest-benchmark stops after 1 s by default, 15
               # rounds of the gmm_10d update): their medians jittered by 28 % between runs.
               "--benchmark-min-rounds=20",
               # one process: pyproject's xdist workers (for the tests) would disable the benchmarks
               "-n", "0", "--dist", "no"]
    if save:
        command.append(f"--benchmark-save={tag}")
    if compare:
        command += ["--benchmark-compare", f"--benchmark-compare-fail=median:{fail_above:g}%"]
    return command + list(extra)


def run(bench_dir: Path = BENCHMARK_DIR, storage: Path = DEFAULT_STORAGE, tag: str | None = None,
        fail_above: float = DEFAULT_FAIL_ABOVE, save: bool = True, extra: list[str] = ()) -> int:
    """Run, compare with the last saved run of ``tag`` (if any), save; pytest's exit code.

    A median slower than the saved one by more than ``fail_above`` percent makes pytest-benchmark
    report "Performance has regressed" and the exit code non-zero. Only a run that passes is
    kept as the new last run (stripped by :func:`strip_run`): a regression stays visible on
    every rerun until it is fixed or the saved file is deleted on purpose.
    """
    tag = tag or machine_tag()
    bench_dir, storage = Path(bench_dir).resolve(), Path(storage).resolve()
    previous = saved_runs(storage, tag)
    if previous:
        print(f"cgbench bench: comparing with {previous[-1]} (fail above +{fail_above:g} % median)", flush=True)
    else:
        print(f"cgbench bench: no saved run for {tag!r} in {storage}; this run becomes the first", flush=True)
    command = benchmark_command(bench_dir, storage, tag, fail_above, compare=bool(previous), save=save, extra=extra)
    # pytest-benchmark names the storage relative to the working folder: run where both live.
    process = subprocess.Popen(command, cwd=os.path.commonpath([bench_dir, storage]), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    regressions = []
    for line in process.stdout:
        sys.stdout.write(line)
        if "has failed PercentageRegressionCheck" in line:
            regressions.append(line.strip())
    code = process.wait()
    new = [p for p in saved_runs(storage, tag) if p not in previous]
    for path in new:
        if code == 0:
            strip_run(path)
            print(f"cgbench bench: saved {path}", flush=True)
        else:
            path.unlink()
    if regressions:
        print(f"cgbench bench: REGRESSION (median more than {fail_above:g} % slower than {previous[-1].name}):\n  "
              + "\n  ".join(regressions), flush=True)
    if code != 0:
        print(f"cgbench bench: failed (pytest exit {code}); this run was not saved", flush=True)
    return code
